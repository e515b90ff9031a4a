"""IPv6 transport: a device on ::1 is polled over UDP6 (v2c and v3, beside IPv4 devices on
the same client), net-snmp reaches the simulator there, and the agent's trap listener bound
to [::1] takes the device's traps. Loopback only: ::1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent
from simkit import V3_AUTH, V3_PRIV, V3_USER, free_udp_port, small_fleet
from test_sim_netsnmp import parse, snmp

from agent.app import Agent
from enoc.snmp.client import SnmpClient, Target, V2c, V3User
from enoc.snmp.mib import IF_ENTRY
from enoc.snmp.usm import UsmUser
from simulators.inventory_out import write_inventory
from simulators.model import Device
from simulators.server import Simulator, TrapReceiver
from testbed.servers import Mosquitto

SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
IF_DESCR = (*IF_ENTRY, 2)
V3 = V3User(UsmUser(V3_USER, "SHA-256", V3_AUTH, "AES-128", V3_PRIV))


def free_udp6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port: int = sock.getsockname()[1]
        return port


def fleet_with_one_on_ipv6() -> tuple[list[Device], Device, Device]:
    """The small fleet on 127.36.0.x, its router moved to [::1] on a port of its own."""
    devices = small_fleet(port=free_udp_port("127.36.0.1"), address_base="127.36.0.1")
    router = next(d for d in devices if d.role == "pe-router")
    router.address, router.port = "::1", free_udp6_port()
    switch = next(d for d in devices if d.role == "access-switch")
    return devices, router, switch


@pytest.fixture
async def site() -> AsyncIterator[tuple[Simulator, Device, Device]]:
    devices, router, switch = fleet_with_one_on_ipv6()
    async with Simulator(devices) as sim:
        yield sim, router, switch


async def test_one_client_polls_ipv6_and_ipv4_devices_with_v2c_and_v3(
    site: tuple[Simulator, Device, Device],
) -> None:
    _sim, router, switch = site
    client = SnmpClient(timeout=1.0, retries=1)
    await client.open("127.0.0.1")  # a loopback source: IPv6 leaves from ::1
    try:
        for auth in (V2c(b"public"), V3):
            six = Target("::1", router.port, auth)
            four = Target(switch.address, switch.port, auth)
            assert (await client.get(six, [SYS_NAME]))[0][2] == router.name.encode()
            assert (await client.get(four, [SYS_NAME]))[0][2] == switch.name.encode()
            walked = await client.walk(six, [IF_DESCR])
            assert len(walked[IF_DESCR]) == len(router.interfaces)
        # an address written out in full is the same device: answers match the request
        longhand = Target("0:0:0:0:0:0:0:1", router.port, V2c(b"public"))
        assert (await client.get(longhand, [SYS_NAME]))[0][2] == router.name.encode()
        assert not client.stats.bad
    finally:
        client.close()


@pytest.mark.servers
async def test_net_snmp_reaches_the_simulator_on_ipv6(
    site: tuple[Simulator, Device, Device],
) -> None:
    _sim, router, _switch = site
    name = "1.3.6.1.2.1.1.5.0"
    got = parse(await snmp("snmpget", "-v2c", "-c", "public", f"udp6:[::1]:{router.port}", name))
    assert got == {name: f'STRING: "{router.name}"'}


@pytest.mark.servers
async def test_the_agent_polls_an_ipv6_device_and_takes_its_traps_on_ipv6(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    _devices, router, switch = fleet_with_one_on_ipv6()
    traps_port = free_udp6_port()
    sim = Simulator([router, switch], trap_receivers=[TrapReceiver("::1", traps_port)])
    async with sim, Listener(mosquitto.url) as listener:
        inventory = tmp_path / "devices.yaml"
        write_inventory(inventory, sim, [router, switch])
        traps = {"listen": f"[::1]:{traps_port}", "communities": ["public"]}
        config = agent_config(
            tmp_path, mosquitto.url, inventory, interval="1s", extra={"traps": traps}
        )
        agent: Agent
        async with running_agent(config) as agent:
            assert agent.traps is not None
            assert agent.traps.address == ("::1", traps_port)

            def polled(lst: Listener) -> bool:
                seen = {s.device: s for m in lst.metrics() for s in m.samples if s.interfaces}
                return {router.name, switch.name} <= set(seen)

            await listener.wait_for(polled, what="samples of both devices")
            if_index = router.interfaces[1].index
            sim.inject(router.name, {"kind": "link_down", "ifIndex": if_index})
            await listener.wait_for(
                lambda lst: any(e.source == "trap" for e in lst.all_events()), what="the trap"
            )
            assert agent.stats.polls_ok >= 2
            assert not agent.stats.polls_failed
        traps_seen = [
            (e.device, e.resource, e.kind, e.state)
            for e in listener.all_events()
            if e.source == "trap"
        ]
        assert traps_seen == [(router.name, f"if:{if_index}", "link", "down")]


def test_a_trap_listener_on_an_ipv6_wildcard_knows_ipv4_devices_by_their_mapped_address(
    tmp_path: Path,
) -> None:
    _devices, router, switch = fleet_with_one_on_ipv6()
    inventory = tmp_path / "devices.yaml"
    sim = Simulator([router, switch])
    write_inventory(inventory, sim, [router, switch])
    traps = {"listen": "[::]:16200", "communities": ["public"]}  # never bound: no run
    agent = Agent(agent_config(tmp_path, "mqtt://127.0.0.1:1", inventory, extra={"traps": traps}))
    sources = agent._trap_sources
    assert sources["::1"].device == router.name
    assert sources[switch.address].device == switch.name
    assert sources[f"::ffff:{switch.address}"].device == switch.name
    assert len(sources) == 3
