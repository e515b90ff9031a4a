"""Serve real-device recordings in snmpsim's `.snmprec` format.

Each line is `OID|TAG|VALUE`: TAG is the BER tag number in decimal, with an
`x` suffix when VALUE is hex (`4x|0a0b`). Lines using snmpsim variation
modules (`4:numeric|...`) are served with their recorded value when it has
one, and skipped otherwise.

A recording is one instant, so its counters would give every rate as 0. With
`moving` (the default) the traffic counters of an interface that is up (octets,
packets; ifTable and ifXTable) advance from their recorded value at a steady
share of the interface's speed, and start again from 0 after a `reboot` fault;
error and discard counters stay as recorded (a steady device). Without it every
value is served as recorded, so a test can compare a walk with the file.
sysUpTime.0, when the device recorded one, is served live from the recorded
value, so the device ages and a reboot resets it; a device that recorded none
serves none, as it did.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from enoc.snmp import ber
from enoc.snmp.mib import IF_ENTRY, IF_OPER_STATUS, IFX_ENTRY, SYS_UPTIME_0
from simulators.model import (
    COUNTER32,
    COUNTER64,
    Device,
    Getter,
    MibBuilder,
    engine_id_for,
    stable_random,
    static,
)

log = logging.getLogger("enoc.sim")

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


# Traffic columns that move, with the share of the octet rate they advance by: ifInOctets,
# ifInUcastPkts, ifInNUcastPkts, ifOutOctets, ifOutUcastPkts, ifOutNUcastPkts (ifTable);
# the multicast and broadcast packets, HC octets and HC packets (ifXTable). Errors, discards
# and unknown protocols stay as recorded: a steady device does not grow them.
IF_PACKETS = 1 / 700  # packets per octet: a 700-octet average frame
IF_GROUP_PACKETS = 1 / 90000
MOVING_COLUMNS: dict[tuple[int, ...], float] = {
    (*entry, column): share
    for share, entry, columns in (
        (1.0, IF_ENTRY, (10, 16)),  # octets
        (IF_PACKETS, IF_ENTRY, (11, 17)),  # unicast packets
        (IF_GROUP_PACKETS, IF_ENTRY, (12, 18)),  # non-unicast packets
        (1.0, IFX_ENTRY, (6, 10)),  # HC octets
        (IF_PACKETS, IFX_ENTRY, (7, 11)),  # HC unicast packets
        (IF_GROUP_PACKETS, IFX_ENTRY, (2, 3, 4, 5, 8, 9, 12, 13)),  # multicast, broadcast
    )
    for column in columns
}
IF_SPEED = (*IF_ENTRY, 5)
IF_HIGH_SPEED = (*IFX_ENTRY, 15)
FALLBACK_SPEED_BPS = 100_000_000  # an up interface that states no speed
# Devices state absurd speeds too (a radio's ifHighSpeed in bit/s: 195 Tbit/s); traffic
# beyond the fastest Ethernet would wrap a Counter32 several times between two polls.
MAX_SPEED_BPS = 400_000_000_000
IF_INDEX_COLUMNS = (IF_OPER_STATUS, (*IF_ENTRY, 1), (*IF_ENTRY, 2), (*IFX_ENTRY, 1))


@dataclass(frozen=True)
class Row:
    """One served line of a recording: where, what, and its decoded number for counters."""

    oid: ber.Oid
    tag: int
    encoded: bytes
    number: int | None
    text: str  # the recorded value, as the file writes it
    hexed: bool


def recording_files(path: Path) -> list[Path]:
    """The recordings a `--recording` argument names: the file, or a folder's `*.snmprec`
    files in name order."""
    if path.is_dir():
        files = sorted(path.glob("*.snmprec"))
        if not files:
            raise RecordingError(f"{path}: no *.snmprec recordings in this folder")
        return files
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording or folder")
    return [path]


def device_name_for(path: Path) -> str:
    """A recording's device name: its file name, as a DNS-like label (`ios_c3560` ->
    `ios-c3560`)."""
    stem = path.name.removesuffix(".snmprec")
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in stem.lower()).strip("-")
    return cleaned or "recording"


def _rows(path: Path, skipped: list[str]) -> Iterator[Row]:
    """The lines of a recording. An OID or a value that cannot be encoded (LibreNMS writes
    `<private>` and `xx` over what it anonymises) is left out and named in `skipped`; a line
    that is not snmprec at all (no type, an unknown type) is an error."""
    try:
        lines = path.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read recording: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            oid_text, tag_text, value = line.split("|", 2)
            hexed = tag_text.endswith("x") or (":" in tag_text and "x" in tag_text.split(":")[0])
            tag_number = int(tag_text.split(":")[0].rstrip("x"))
            if ":" in tag_text and not value:
                continue  # a variation module with no recorded value
            tag = TYPES[tag_number]
        except (ValueError, KeyError) as exc:
            raise RecordingError(f"{path}:{number}: cannot serve {line[:80]!r}: {exc}") from None
        try:
            oid = ber.parse_oid_text(oid_text)
            encoded = encode_value(tag, value, hexed)
        except (ValueError, ber.BerError) as exc:
            skipped.append(f"{path.name}:{number}: {line[:80]!r}: {exc}")
            continue
        numeric = tag in (ber.INTEGER, ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64)
        yield Row(oid, tag, encoded, int(value) if numeric and not hexed else None, value, hexed)


def _octets_per_second(rows: dict[ber.Oid, Row], if_index: ber.Oid, name: str) -> float:
    """The steady octet rate of an up interface: 2 to 20 % of its speed, stable per device
    and interface (0 when it is not up)."""
    oper = rows.get((*IF_OPER_STATUS, *if_index))
    if oper is None or oper.number != 1:
        return 0.0
    high = rows.get((*IF_HIGH_SPEED, *if_index))
    speed = rows.get((*IF_SPEED, *if_index))
    bps = 0.0
    if high is not None and high.number:
        bps = high.number * 1e6
    elif speed is not None and speed.number and speed.number < 0xFFFFFFFF:
        bps = float(speed.number)
    bps = min(bps or FALLBACK_SPEED_BPS, MAX_SPEED_BPS)
    share = stable_random(name, *if_index).uniform(0.02, 0.2)
    return bps / 8 * share


def _moving(row: Row, per_second: float, loaded_at: float) -> Getter:
    """A counter that advances from its recorded value, and from 0 after a reboot."""
    modulus = COUNTER64 if row.tag == ber.COUNTER64 else COUNTER32
    base = row.number or 0
    tag = row.tag

    def get(device: Device, now: float) -> bytes:
        if device.boot_time > loaded_at:  # rebooted since: counting from zero
            value = per_second * max(0.0, now - device.boot_time)
        else:
            value = base + per_second * max(0.0, now - loaded_at)
        return ber.encode_unsigned(tag, int(value) % modulus)

    return get


def load_recording_device(
    path: Path,
    *,
    name: str,
    site: str,
    rtc: str,
    address: str,
    moving: bool = False,
    now: float = 0.0,
) -> Device:
    """A device serving `path`; `moving` advances its traffic counters from `now` on."""
    skipped: list[str] = []
    rows = {row.oid: row for row in _rows(path, skipped)}
    if skipped:
        log.warning(
            "%s: %d line(s) hold a value their type cannot (left out), the first: %s",
            path,
            len(skipped),
            skipped[0],
        )
    builder = MibBuilder()
    sys_descr = b""
    sys_object_id: ber.Oid = (0, 0)
    uptime: int | None = None
    rates: dict[ber.Oid, float] = {}
    for oid, row in rows.items():
        getter = static(row.encoded)
        column = oid[:10] if oid[:9] == IF_ENTRY else oid[:11]
        share = MOVING_COLUMNS.get(column) if moving else None
        if share is not None and row.tag in (ber.COUNTER32, ber.COUNTER64):
            if_index = oid[len(column) :]
            if if_index not in rates:
                rates[if_index] = _octets_per_second(rows, if_index, name)
            if rates[if_index]:
                getter = _moving(row, rates[if_index] * share, now)
        builder.scalar(oid, getter)
        if oid == (1, 3, 6, 1, 2, 1, 1, 1, 0):
            raw = row.text
            sys_descr = bytes.fromhex(raw) if row.hexed else raw.encode("utf-8", "surrogateescape")
        elif oid == (1, 3, 6, 1, 2, 1, 1, 2, 0) and row.tag == ber.OBJECT_IDENTIFIER:
            sys_object_id = ber.parse_oid_text(row.text)
        elif oid == SYS_UPTIME_0 and row.number is not None:
            uptime = row.number
    if uptime is not None:
        builder.scalar(
            SYS_UPTIME_0, lambda d, now: ber.encode_unsigned(ber.TIMETICKS, d.uptime_ticks(now))
        )
    interfaces = {
        oid[len(column) :]
        for column in IF_INDEX_COLUMNS
        for oid in rows
        if oid[: len(column)] == column and len(oid) == len(column) + 1
    }
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
        view=builder.build(),
        boot_time=now - (uptime or 0) / 100,
        engine_epoch=now - (uptime or 0) / 100,
        recording=str(path),
        recorded_interfaces=len(interfaces),
    )
