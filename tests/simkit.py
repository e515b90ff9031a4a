"""Helpers for simulator tests: a fake clock, a small fleet, raw SNMP requests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enoc.snmp import ber
from enoc.snmp.client import SnmpClient
from enoc.snmp.message import build_v3_message, encode_pdu, encode_scoped
from enoc.snmp.usm import LocalizedUser
from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.model import Device, attach_views
from testbed.servers import free_port

V3_USER = "enoc-sim"
V3_AUTH = "enoc-sim-auth-key"
V3_PRIV = "enoc-sim-priv-key"


@dataclass
class FakeClock:
    """Time that moves only when a test says so."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_udp_port(host: str = "127.0.0.1") -> int:
    return free_port("udp", host)


@contextlib.asynccontextmanager
async def snmp_client(timeout: float = 2.0, retries: int = 1) -> AsyncIterator[SnmpClient]:
    """The agent's SNMP client, open on loopback for the test's duration."""
    client = SnmpClient(timeout=timeout, retries=retries)
    await client.open("127.0.0.1")
    try:
        yield client
    finally:
        client.close()


def recorded_fleet(
    recordings: dict[str, Path], address: str, port: int
) -> tuple[FakeClock, list[Device]]:
    """Simulated devices, one per recording (named by the key), that serve it as recorded,
    on `address` and the next ones, at site `lab`; their clock stands still unless moved."""
    groups = [DeviceGroup(name=name, recording=str(path)) for name, path in recordings.items()]
    spec = FleetSpec(
        sites=[SiteSpec("lab", "lab", devices=groups)],
        port=port,
        address_base=address,
        recording_counters="recorded",
    )
    clock = FakeClock(time.time())
    devices = build_devices(spec, clock.now)
    attach_views(devices)
    return clock, devices


def small_fleet(
    *,
    port: int = 1161,
    address_base: str = "127.31.0.1",
    max_message_size: int = 1472,
    now: float | None = None,
    sensors: bool = False,
) -> list[Device]:
    """One RTC with a router, a switch and a firewall, plus a field site; `sensors`: each
    with temperatures, fans and power supplies (simulators/sensors.py)."""
    spec = FleetSpec(
        sites=[
            SiteSpec(
                "nyc",
                "americas",
                "New York",
                -5,
                [
                    DeviceGroup("pe-router", 1),
                    DeviceGroup("access-switch", 1, 12),
                    DeviceGroup("firewall", 1),
                ],
            ),
            SiteSpec("bog", "americas", "Bogota", -5, [DeviceGroup("ce-router", 1)]),
        ],
        port=port,
        address_base=address_base,
        max_message_size=max_message_size,
        sensors=sensors,
    )
    devices = build_devices(spec, time.time() if now is None else now)
    attach_views(devices)
    return devices


def v2c_request(
    tag: int,
    oids: Sequence[ber.Oid],
    *,
    community: bytes = b"public",
    f1: int = 0,
    f2: int = 0,
    request_id: int = 42,
) -> bytes:
    varbinds = b"".join(ber.encode_varbind(ber.encode_oid(o), ber.NULL_VALUE) for o in oids)
    pdu = encode_pdu(tag, request_id, f1, f2, varbinds)
    return ber.tlv(ber.SEQUENCE, ber.encode_integer(1) + ber.encode_octets(community) + pdu)


def decode_v2c_response(data: bytes) -> tuple[int, int, int, list[tuple[ber.Oid, int, object]]]:
    """(request_id, error_status, error_index, varbinds) of a v2c response."""
    start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
    _version, pos = ber.read_integer(data, start, end)
    _community, pos = ber.read_octets(data, pos, end)
    return decode_pdu(data, pos, end)


def decode_pdu(
    data: bytes, pos: int, end: int
) -> tuple[int, int, int, list[tuple[ber.Oid, int, object]]]:
    _tag, start, stop = ber.read_tlv(data, pos, end)
    request_id, p = ber.read_integer(data, start, stop)
    status, p = ber.read_integer(data, p, stop)
    index, p = ber.read_integer(data, p, stop)
    return request_id, status, index, ber.read_varbinds(data, p, stop)


def v3_request(
    device: Device,
    tag: int,
    oids: list[ber.Oid],
    *,
    keys: LocalizedUser | None,
    flags: int,
    engine_id: bytes | None = None,
    boots: int | None = None,
    etime: int | None = None,
    now: float = 0.0,
    user: bytes = V3_USER.encode(),
    context_name: bytes = b"",
    tamper_mac: bool = False,
) -> bytes:
    """A v3 request as a manager would send it (flags: 1 auth, 2 priv, 4 reportable)."""
    engine_id = device.engine_id if engine_id is None else engine_id
    boots = device.engine_boots if boots is None else boots
    etime = device.engine_time(now) if etime is None else etime
    varbinds = b"".join(ber.encode_varbind(ber.encode_oid(o), ber.NULL_VALUE) for o in oids)
    pdu = encode_pdu(tag, 7, 0, 10 if tag == ber.GETBULK else 0, varbinds)
    message = build_v3_message(
        msg_id=99,
        max_size=65507,
        flags=flags,
        engine_id=engine_id,
        boots=boots,
        etime=etime,
        user_name=user,
        scoped=encode_scoped(engine_id, pdu, context_name),
        keys=keys,
    )
    if tamper_mac:
        mac_at = message.index(ber.encode_octets(user)) + len(ber.encode_octets(user)) + 2
        message = message[:mac_at] + bytes([message[mac_at] ^ 0xFF]) + message[mac_at + 1 :]
    return message


def decode_v3(data: bytes, keys: LocalizedUser | None = None) -> dict[str, object]:
    """Decode a v3 response or report (decrypting with `keys` when it is encrypted)."""
    start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
    _v, pos = ber.read_integer(data, start, end)
    g_start, g_end = ber.expect(data, pos, end, ber.SEQUENCE)
    _msg_id, p = ber.read_integer(data, g_start, g_end)
    _max, p = ber.read_integer(data, p, g_end)
    flags, p = ber.read_octets(data, p, g_end)
    sp_start, sp_end = ber.expect(data, g_end, end, ber.OCTET_STRING)
    u_start, u_end = ber.expect(data, sp_start, sp_end, ber.SEQUENCE)
    engine_id, p = ber.read_octets(data, u_start, u_end)
    boots, p = ber.read_integer(data, p, u_end)
    etime, p = ber.read_integer(data, p, u_end)
    _user, p = ber.read_octets(data, p, u_end)
    mac, p = ber.read_octets(data, p, u_end)
    salt, _ = ber.read_octets(data, p, u_end)
    if flags[0] & 2:
        assert keys is not None
        cipher, _ = ber.read_octets(data, sp_end, end)
        plain = keys.decrypt(cipher, boots, etime, salt)
        s_start, s_end = ber.expect(plain, 0, len(plain), ber.SEQUENCE)
        body, pos2, end2 = plain, s_start, s_end
    else:
        s_start, s_end = ber.expect(data, sp_end, end, ber.SEQUENCE)
        body, pos2, end2 = data, s_start, s_end
    _ce, pos2 = ber.read_octets(body, pos2, end2)
    _cn, pos2 = ber.read_octets(body, pos2, end2)
    pdu_tag = body[pos2]
    request_id, status, index, varbinds = decode_pdu(body, pos2, end2)
    return {
        "flags": flags[0],
        "engine_id": engine_id,
        "boots": boots,
        "time": etime,
        "mac": mac,
        "pdu": pdu_tag,
        "request_id": request_id,
        "status": status,
        "index": index,
        "varbinds": varbinds,
    }
