"""Serve real-device recordings in snmpsim's `.snmprec` format.

Each line is `OID|TAG|VALUE`: TAG is the BER tag number in decimal, with an
`x` suffix when VALUE is hex (`4x|0a0b`). Lines using snmpsim variation
modules (`4:numeric|...`) are served with their recorded value when it has
one, and skipped otherwise. sysUpTime.0 is served live, so that the device
ages and a `reboot` fault resets it like on a generated device.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from enoc.snmp import ber
from simulators.model import SYS_UPTIME_OID, Device, MibBuilder, engine_id_for, static

TYPES = {
    2: ber.INTEGER,
    4: ber.OCTET_STRING,
    5: ber.NULL,
    6: ber.OBJECT_IDENTIFIER,
    64: ber.IP_ADDRESS,
    65: ber.COUNTER32,
    66: ber.GAUGE32,
    67: ber.TIMETICKS,
    68: ber.OPAQUE,
    70: ber.COUNTER64,
}


class RecordingError(ValueError):
    """A recording line that cannot be served; names the file and line."""


def encode_value(tag: int, text: str, hexed: bool) -> bytes:
    if tag == ber.INTEGER:
        return ber.encode_integer(int(text))
    if tag in (ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64):
        return ber.encode_unsigned(tag, int(text))
    if tag in (ber.OCTET_STRING, ber.OPAQUE):
        raw = bytes.fromhex(text) if hexed else text.encode("utf-8", "surrogateescape")
        return ber.tlv(tag, raw)
    if tag == ber.NULL:
        return ber.NULL_VALUE
    if tag == ber.OBJECT_IDENTIFIER:
        return ber.encode_oid(ber.parse_oid_text(text))
    if tag == ber.IP_ADDRESS:
        if hexed:
            raw = bytes.fromhex(text)
        elif text.count(".") == 3:
            raw = ipaddress.IPv4Address(text).packed
        else:  # snmpsim writes printable addresses as their 4 raw octets
            raw = text.encode("latin-1", "surrogateescape")
        if len(raw) != 4:
            raise ValueError(f"an IpAddress needs 4 octets, got {len(raw)}")
        return ber.encode_ip(raw)
    raise ValueError(f"unsupported tag {tag}")


def load_recording_device(path: Path, *, name: str, site: str, rtc: str, address: str) -> Device:
    try:
        lines = path.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read recording: {exc.strerror}") from None
    builder = MibBuilder()
    sys_descr = b""
    sys_object_id: ber.Oid = (0, 0)
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            oid_text, tag_text, value = line.split("|", 2)
            hexed = tag_text.endswith("x") or (":" in tag_text and "x" in tag_text.split(":")[0])
            tag_number = int(tag_text.split(":")[0].rstrip("x"))
            if ":" in tag_text and not value:
                continue  # a variation module with no recorded value
            oid = ber.parse_oid_text(oid_text)
            tag = TYPES[tag_number]
            encoded = encode_value(tag, value, hexed)
        except (ValueError, KeyError, ber.BerError) as exc:
            raise RecordingError(f"{path}:{number}: cannot serve {line[:80]!r}: {exc}") from None
        builder.scalar(oid, static(encoded))
        if oid == (1, 3, 6, 1, 2, 1, 1, 1, 0):
            sys_descr = bytes.fromhex(value) if hexed else value.encode("utf-8", "surrogateescape")
        elif oid == (1, 3, 6, 1, 2, 1, 1, 2, 0):
            sys_object_id = ber.parse_oid_text(value)
    builder.scalar(
        SYS_UPTIME_OID, lambda d, now: ber.encode_unsigned(ber.TIMETICKS, d.uptime_ticks(now))
    )
    view = builder.build()
    return Device(
        name=name,
        site=site,
        rtc=rtc,
        role="recording",
        address=address,
        port=1161,
        sys_descr=sys_descr,
        sys_object_id=sys_object_id,
        sys_location=b"",
        sys_contact=b"",
        engine_id=engine_id_for(name),
        communities=frozenset(),
        users={},
        interfaces=[],
        view=view,
        recording=str(path),
    )
