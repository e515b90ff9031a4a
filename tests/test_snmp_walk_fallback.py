"""GETBULK walks on devices that refuse big requests: a device answering tooBig, and one
silently dropping requests above a size, still give the whole table, the same one a
well-behaved device gives, and the size that worked is remembered for the next poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from simkit import free_udp_port, small_fleet

from enoc.snmp import ber
from enoc.snmp.client import GROW_AFTER, SnmpClient, SnmpError, SnmpTimeout, Target, V2c
from enoc.snmp.message import TOO_BIG, encode_pdu, parse_pdu
from simulators.server import Simulator

IF_DESCR = ber.parse_oid_text("1.3.6.1.2.1.2.2.1.2")
IF_HC_IN = ber.parse_oid_text("1.3.6.1.2.1.31.1.1.1.6")


@dataclass
class PickyDevice(asyncio.DatagramProtocol):
    """A UDP front for a simulated device that misbehaves on GETBULK above `limit`."""

    upstream: tuple[str, int]
    limit: int
    mode: str  # "toobig": answers tooBig; "drop": never answers; "always": tooBig at any size
    seen: list[int] = field(default_factory=list)  # max-repetitions of every GETBULK
    transport: asyncio.DatagramTransport | None = None
    pending: dict[int, tuple[str, int]] = field(default_factory=dict)
    relay: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
        _version, pos = ber.read_integer(data, start, end)
        community, pos = ber.read_octets(data, pos, end)
        pdu = parse_pdu(data, pos, end)
        if pdu.tag == ber.GETBULK:
            self.seen.append(pdu.field2)
            if self.mode == "always" or pdu.field2 > self.limit:
                if self.mode == "drop":
                    return
                reply = encode_pdu(ber.RESPONSE, pdu.request_id, TOO_BIG, 0, b"")
                message = ber.tlv(
                    ber.SEQUENCE, ber.encode_integer(1) + ber.encode_octets(community) + reply
                )
                assert self.transport is not None
                self.transport.sendto(message, addr)
                return
        self.pending[pdu.request_id] = addr
        assert self.relay is not None
        self.relay.sendto(data, self.upstream)

    def close(self) -> None:
        for transport in (self.transport, self.relay):
            if transport is not None:
                transport.close()

    def answer(self, data: bytes) -> None:
        start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
        _version, pos = ber.read_integer(data, start, end)
        _community, pos = ber.read_octets(data, pos, end)
        _tag, inner, _stop = ber.read_tlv(data, pos, end)
        request_id, _ = ber.read_integer(data, inner, end)
        addr = self.pending.pop(request_id, None)
        if addr is not None and self.transport is not None:
            self.transport.sendto(data, addr)


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, device: PickyDevice) -> None:
        self.device = device

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.device.answer(data)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, int]]:
    port = free_udp_port("127.44.0.1")
    devices = small_fleet(port=port, address_base="127.44.0.1")
    for device in devices:
        device.users.clear()  # v2c only: the front parses v2c
    simulator = Simulator(devices)
    await simulator.start()
    yield simulator, port
    await simulator.close()


async def picky(upstream: tuple[str, int], limit: int, mode: str) -> PickyDevice:
    loop = asyncio.get_running_loop()
    front = PickyDevice(upstream, limit, mode)
    await loop.create_datagram_endpoint(lambda: front, local_addr=("127.44.1.1", 0))
    relay, _ = await loop.create_datagram_endpoint(
        lambda: _Relay(front), local_addr=("127.44.1.1", 0)
    )
    front.relay = relay
    return front


def address(front: PickyDevice) -> tuple[str, int]:
    assert front.transport is not None
    host, port = front.transport.get_extra_info("sockname")[:2]
    return host, port


@pytest.mark.parametrize("mode", ["toobig", "drop"])
async def test_walk_shrinks_and_remembers(sim: tuple[Simulator, int], mode: str) -> None:
    simulator, port = sim
    switch = next(d for d in simulator.devices.values() if d.name == "nyc-acc-1")
    upstream = (switch.address, port)
    client = SnmpClient(timeout=0.3, retries=0)
    await client.open("127.0.0.1")
    front = await picky(upstream, limit=3, mode=mode)
    try:
        direct = await client.walk(Target(*upstream, V2c(b"public")), [IF_DESCR, IF_HC_IN], 25)
        target = Target(*address(front), V2c(b"public"))
        # as in a poll: the scalar GET first (small: it passes), then the walk
        await client.get(target, [ber.parse_oid_text("1.3.6.1.2.1.1.3.0")])
        got = await client.walk(target, [IF_DESCR, IF_HC_IN], 25)
        # the same table, whole, as from the well-behaved path
        assert [i for i, _t, _v in got[IF_DESCR]] == [i for i, _t, _v in direct[IF_DESCR]]
        assert len(got[IF_DESCR]) == len(switch.interfaces)
        assert [v for _i, _t, v in got[IF_DESCR]] == [v for _i, _t, v in direct[IF_DESCR]]
        # 25 -> 12 -> 6 -> 3: halved until the device took it
        assert front.seen[:4] == [25, 12, 6, 3]
        assert all(r <= 3 for r in front.seen[3:])
        assert client.stats.fallbacks == 3
        # the next poll starts at the size that worked: no refused request at all
        front.seen.clear()
        again = await client.walk(target, [IF_DESCR, IF_HC_IN], 25)
        assert len(again[IF_DESCR]) == len(switch.interfaces)
        assert front.seen and max(front.seen) == 3
        assert client.stats.fallbacks == 3
        # after GROW_AFTER clean walks it tries twice the size once more (6 > 3: refused,
        # back to 3), so a size lost to one dropped packet comes back
        for _ in range(GROW_AFTER - 1):
            await client.walk(target, [IF_DESCR], 25)
        front.seen.clear()
        await client.walk(target, [IF_DESCR], 25)
        assert front.seen[:2] == [6, 3]
        assert client.stats.fallbacks == 4
    finally:
        client.close()
        front.close()


async def test_refusing_every_size_is_an_error_not_a_hang(sim: tuple[Simulator, int]) -> None:
    simulator, port = sim
    switch = next(d for d in simulator.devices.values() if d.name == "nyc-acc-1")
    client = SnmpClient(timeout=0.3, retries=0)
    await client.open("127.0.0.1")
    front = await picky((switch.address, port), limit=0, mode="always")
    try:
        with pytest.raises(SnmpError, match="tooBig even with max-repetitions 1"):
            await client.walk(Target(*address(front), V2c(b"public")), [IF_DESCR], 8)
        assert front.seen == [8, 4, 2, 1]
    finally:
        client.close()
        front.close()


async def test_a_silent_device_times_out_without_shrinking(sim: tuple[Simulator, int]) -> None:
    """Timeouts shrink only once a device has answered: a dead device is not a big table."""
    simulator, port = sim
    switch = next(d for d in simulator.devices.values() if d.name == "nyc-acc-1")
    client = SnmpClient(timeout=0.2, retries=0)
    await client.open("127.0.0.1")
    front = await picky((switch.address, port), limit=0, mode="drop")
    try:
        with pytest.raises(SnmpTimeout):
            await client.walk(Target(*address(front), V2c(b"public")), [IF_DESCR], 25)
        assert front.seen == [25]
        assert client.stats.fallbacks == 0
    finally:
        client.close()
        front.close()
