"""DNS names in the inventory: resolved through the cache (TTL, stale fallback, one log line
per failing spell), a device at `localhost` polled end to end, and a name that does not
resolve failing its polls with the kind `dns`. The machine's resolver would send a `.invalid`
query (RFC 6761) to a network server, so that name's lookup is injected."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent
from simkit import FakeClock, free_udp_port, small_fleet

from agent.edge import FAILURES
from enoc.inventory import InventoryDevice
from enoc.snmp.client import SnmpClient, SnmpUnresolved, Target, V2c
from enoc.snmp.resolve import DnsCache, DnsSettings, ResolveError, getaddrinfo
from simulators.inventory_out import write_inventory
from simulators.model import Device
from simulators.server import Simulator
from testbed.servers import Mosquitto

NOWHERE = "nowhere.invalid"
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


class Zone:
    """An injected lookup: names to addresses, changeable; unknown names fail as getaddrinfo
    fails (socket.gaierror); localhost goes to the system resolver."""

    def __init__(self, **names: str) -> None:
        self.names = dict(names)
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host == "localhost":
            return await getaddrinfo(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [self.names[host]]


def cache(zone: Zone, clock: FakeClock, **settings: float) -> DnsCache:
    return DnsCache(DnsSettings(**settings), lookup=zone, clock=clock)


# ---------------------------------------------------------------- the cache


async def test_literals_pass_through_canonical_and_never_ask_dns() -> None:
    zone = Zone()
    dns = cache(zone, FakeClock(0.0))
    assert await dns.resolve("127.0.0.1") == "127.0.0.1"
    assert await dns.resolve("0:0:0:0:0:0:0:1") == "::1"
    assert dns.cached("::1") == "::1"
    assert zone.asked == []


async def test_a_name_is_cached_for_its_ttl_then_asked_again() -> None:
    zone = Zone(**{"pe1.example": "127.0.0.7"})
    clock = FakeClock(0.0)
    changes: list[tuple[str, str]] = []
    dns = DnsCache(
        DnsSettings(ttl=300), lookup=zone, clock=clock, on_change=lambda *c: changes.append(c)
    )
    assert await dns.resolve("pe1.example") == "127.0.0.7"
    clock.advance(299)
    assert dns.cached("pe1.example") == "127.0.0.7"
    assert await dns.resolve("pe1.example") == "127.0.0.7"
    assert zone.asked == ["pe1.example"]
    zone.names["pe1.example"] = "127.0.0.8"  # renumbered
    clock.advance(2)
    assert dns.cached("pe1.example") is None  # expired: a lookup is due
    assert await dns.resolve("pe1.example") == "127.0.0.8"
    assert zone.asked == ["pe1.example"] * 2
    assert changes == [("pe1.example", "127.0.0.7"), ("pe1.example", "127.0.0.8")]


async def test_a_failing_name_keeps_its_last_address_for_a_while_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    zone = Zone(**{"pe1.example": "127.0.0.7"})
    clock = FakeClock(0.0)
    dns = cache(zone, clock, ttl=300, stale_for=600, retry_after=30)
    assert await dns.resolve("pe1.example") == "127.0.0.7"
    del zone.names["pe1.example"]  # the DNS server lost the record
    caplog.set_level(logging.INFO, "enoc.snmp.resolve")
    clock.advance(300)
    for _ in range(20):  # 10 minutes of polls every 30 s: the last good address
        assert await dns.resolve("pe1.example") == "127.0.0.7"
        clock.advance(15)
        assert await dns.resolve("pe1.example") == "127.0.0.7"  # not asked again yet
        clock.advance(15)
    assert len(zone.asked) == 1 + 20
    with pytest.raises(ResolveError, match=r"pe1\.example does not resolve"):
        await dns.resolve("pe1.example")
    failing = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing) == 1
    assert "resolving pe1.example" in failing[0].getMessage()
    zone.names["pe1.example"] = "127.0.0.9"
    clock.advance(30)
    assert await dns.resolve("pe1.example") == "127.0.0.9"
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert dns.failures == 21


async def test_a_name_that_never_resolved_fails_and_a_stuck_lookup_times_out() -> None:
    dns = cache(Zone(), FakeClock(0.0))
    with pytest.raises(ResolveError, match=NOWHERE):
        await dns.resolve(NOWHERE)

    async def stuck(_host: str) -> list[str]:
        await asyncio.Event().wait()
        return []

    slow = DnsCache(DnsSettings(timeout=0.05), lookup=stuck)
    with pytest.raises(ResolveError, match="does not resolve"):
        await slow.resolve("pe1.example")


async def test_localhost_resolves_through_the_system_resolver() -> None:
    dns = DnsCache()
    assert await dns.resolve("localhost") == (await getaddrinfo("localhost"))[0]
    assert dns.cached("localhost") in ("127.0.0.1", "::1")


def test_the_inventory_takes_names_and_refuses_what_is_neither_name_nor_address() -> None:
    for host in ("localhost", "pe1.nyc.example.net", "::1", "fe80::1%lo"):
        assert InventoryDevice("d", host, "c").address == host
    for host in ("999.1.1.1", "pe1..example", "-pe1.example", "pe 1", "a" * 64 + ".example"):
        with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
            InventoryDevice("d", host, "c")


# ---------------------------------------------------------------- polls


@pytest.fixture
async def local_switch() -> AsyncIterator[Device]:
    """The access switch at 127.0.0.1, where `localhost` points."""
    devices = small_fleet(port=free_udp_port("127.0.0.1"), address_base="127.0.0.1")
    devices = [d for d in devices if d.address == "127.0.0.1"]
    async with Simulator(devices):
        yield devices[0]


async def test_the_client_polls_localhost_and_fails_an_unresolvable_name_as_dns(
    local_switch: Device,
) -> None:
    zone = Zone()
    client = SnmpClient(timeout=0.5, retries=0, resolver=DnsCache(lookup=zone))
    await client.open("127.0.0.1")
    try:
        got = await client.get(Target("localhost", local_switch.port, V2c(b"public")), [SYS_NAME])
        assert got[0][2] == local_switch.name.encode()
        with pytest.raises(SnmpUnresolved) as failed:
            await client.get(Target(NOWHERE, local_switch.port, V2c(b"public")), [SYS_NAME])
        assert failed.value.kind == "dns"
        assert client.stats.requests == 1  # the unresolvable name sent nothing
    finally:
        client.close()


@pytest.mark.servers
async def test_the_agent_polls_by_name_and_counts_a_name_that_does_not_resolve(
    tmp_path: Path, mosquitto: Mosquitto, local_switch: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = Zone()  # the .invalid name must not reach a DNS server
    monkeypatch.setattr("enoc.snmp.resolve.getaddrinfo", zone)
    inventory = tmp_path / "devices.yaml"
    sim = Simulator([local_switch])
    write_inventory(inventory, sim, [local_switch])
    data = yaml.safe_load(inventory.read_text())
    named = dict(data["devices"][0], address="localhost")
    data["devices"] = [named, dict(named, name="lost-1", address=NOWHERE)]
    inventory.write_text(yaml.safe_dump(data))
    async with Listener(mosquitto.url) as listener:
        config = agent_config(tmp_path, mosquitto.url, inventory, interval="1s")
        async with running_agent(config) as agent:

            def down(lst: Listener) -> bool:
                return any(e.device == "lost-1" and e.state == "down" for e in lst.all_events())

            await listener.wait_for(down, what="lost-1 down")

            def counted(lst: Listener) -> bool:
                failed = [s.health.get("polls_failed") for s in lst.statuses()]
                return any(isinstance(n, int) and n >= 2 for n in failed)

            await listener.wait_for(counted, what="a heartbeat counting the failures")
            assert agent.stats.polls_failed.keys() == {"dns"}
            assert agent.stats.polls_ok >= 1
            assert NOWHERE in zone.asked
        samples = [s for m in listener.metrics() for s in m.samples]
        switch = [s for s in samples if s.device == local_switch.name]
        assert any(s.fields.get("reachable") == 1 and s.interfaces for s in switch)
        assert {s.fields.get("reachable") for s in samples if s.device == "lost-1"} == {0}
        event = next(e for e in listener.all_events() if e.device == "lost-1")
        assert event.attrs == {"reason": "dns"}
        assert event.message.startswith(FAILURES["dns"])
