"""Independent clients agree: net-snmp's tools against the simulator (v2c and v3 authPriv)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator

import pytest
from simkit import V3_AUTH, V3_PRIV, V3_USER, FakeClock, free_udp_port, small_fleet

from simulators.server import Simulator

pytestmark = pytest.mark.servers

IFX = "1.3.6.1.2.1.31.1.1.1"
SYSTEM = "1.3.6.1.2.1.1"
HC_IN = f"{IFX}.6"


async def snmp(tool: str, *args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        f"/usr/bin/{tool}",
        "-On",
        "-Ob",
        "-Oe",
        "-t",
        "2",
        "-r",
        "1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"MIBS": "", "HOME": "/nonexistent", "SNMPCONFPATH": "/nonexistent"},
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
    return out.decode() + err.decode()


def parse(output: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in output.splitlines():
        match = re.match(r"^\.?([\d.]+) = (.*)$", line)
        if match and not match.group(2).startswith("No more variables left"):
            values[match.group(1)] = match.group(2)
    return values


def counter(text: str) -> int:
    return int(text.rsplit(" ", 1)[-1])


def v2c(device_addr: str) -> list[str]:
    return ["-v2c", "-c", "public", device_addr]


def v3(device_addr: str, auth: str = "SHA-256", priv: str = "AES") -> list[str]:
    return [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        V3_USER,
        "-a",
        auth,
        "-A",
        V3_AUTH,
        "-x",
        priv,
        "-X",
        V3_PRIV,
        device_addr,
    ]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    clock = FakeClock(time.time())
    devices = small_fleet(
        port=free_udp_port("127.31.0.1"), address_base="127.31.0.1", now=clock.now
    )
    simulator = Simulator(devices, clock=clock, rng=random.Random(1))
    async with simulator:
        yield simulator


def target(sim: Simulator, role: str) -> str:
    device = next(d for d in sim.devices.values() if d.role == role)
    return f"{device.address}:{device.port}"


async def test_v2c_bulkwalk_of_ifxtable_and_system_group(sim: Simulator) -> None:
    addr = target(sim, "access-switch")
    device = next(d for d in sim.devices.values() if d.role == "access-switch")
    table = parse(await snmp("snmpbulkwalk", *v2c(addr), IFX))
    assert len(table) == 19 * len(device.interfaces)
    for iface in device.interfaces:
        assert table[f"{IFX}.1.{iface.index}"] == f'STRING: "{iface.name}"'
        assert table[f"{IFX}.15.{iface.index}"] == f"Gauge32: {iface.speed_mbps}"
        assert table[f"{IFX}.6.{iface.index}"].startswith("Counter64: ")
    system = parse(await snmp("snmpbulkwalk", *v2c(addr), SYSTEM))
    assert system[f"{SYSTEM}.5.0"] == f'STRING: "{device.name}"'
    assert system[f"{SYSTEM}.2.0"] == "OID: .1.3.6.1.4.1.9.1.2694"
    assert "Timeticks" in system[f"{SYSTEM}.3.0"]


async def test_counters_grow_between_two_walks(sim: Simulator) -> None:
    addr = target(sim, "pe-router")
    first = parse(await snmp("snmpbulkwalk", *v2c(addr), HC_IN))
    assert isinstance(sim.clock, FakeClock)
    sim.clock.advance(5)
    second = parse(await snmp("snmpbulkwalk", *v2c(addr), HC_IN))
    assert first.keys() == second.keys()
    grown = {oid for oid in first if counter(second[oid]) > counter(first[oid])}
    device = next(d for d in sim.devices.values() if d.role == "pe-router")
    carrying = {f"{HC_IN}.{i.index}" for i in device.interfaces if i.admin_up}
    assert carrying and grown == carrying  # admin-down ports stay still


@pytest.mark.parametrize(("auth", "priv"), [("SHA-256", "AES"), ("SHA", "AES"), ("SHA-512", "AES")])
async def test_v3_auth_priv_walks(sim: Simulator, auth: str, priv: str) -> None:
    for device in sim.devices.values():
        from enoc.snmp.usm import UsmUser

        device.users = {V3_USER.encode(): UsmUser(V3_USER, auth, V3_AUTH, "AES-128", V3_PRIV)}  # type: ignore[arg-type]
        device.localized.clear()
    addr = target(sim, "access-switch")
    table = parse(await snmp("snmpbulkwalk", *v3(addr, auth, priv), IFX))
    device = next(d for d in sim.devices.values() if d.role == "access-switch")
    assert len(table) == 19 * len(device.interfaces)
    system = parse(await snmp("snmpget", *v3(addr, auth, priv), f"{SYSTEM}.5.0"))
    assert system[f"{SYSTEM}.5.0"] == f'STRING: "{device.name}"'


async def test_v3_with_wrong_keys_is_refused_and_the_device_keeps_answering(sim: Simulator) -> None:
    addr = target(sim, "firewall")
    bad = [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        V3_USER,
        "-a",
        "SHA-256",
        "-A",
        "wrong-auth-key",
        "-x",
        "AES",
        "-X",
        V3_PRIV,
        addr,
    ]
    out = await snmp("snmpget", *bad, f"{SYSTEM}.5.0", check=False)
    assert "Authentication failure" in out
    unknown = [
        "-v3",
        "-l",
        "authPriv",
        "-u",
        "mallory",
        "-a",
        "SHA",
        "-A",
        "whatever-key",
        "-x",
        "AES",
        "-X",
        "whatever-key",
        addr,
    ]
    out = await snmp("snmpget", *unknown, f"{SYSTEM}.5.0", check=False)
    assert "Unknown user name" in out
    assert sim.stats.reports["wrong_digest"] >= 1
    assert sim.stats.reports["unknown_user"] >= 1
    ok = parse(await snmp("snmpget", *v3(addr), f"{SYSTEM}.5.0"))
    assert ok[f"{SYSTEM}.5.0"].startswith("STRING")


async def test_bgp_peer_table_of_a_router(sim: Simulator) -> None:
    addr = target(sim, "pe-router")
    device = next(d for d in sim.devices.values() if d.role == "pe-router")
    states = parse(await snmp("snmpbulkwalk", *v2c(addr), "1.3.6.1.2.1.15.3.1.2"))
    assert len(states) == len(device.bgp_peers)
    assert set(states.values()) == {"INTEGER: 6"}  # established


async def test_host_resources_cpu_and_memory(sim: Simulator) -> None:
    addr = target(sim, "pe-router")
    loads = parse(await snmp("snmpbulkwalk", *v2c(addr), "1.3.6.1.2.1.25.3.3.1.2"))
    assert len(loads) == 4
    assert all(1 <= int(v.split()[-1]) <= 100 for v in loads.values())
    storage = parse(await snmp("snmpbulkwalk", *v2c(addr), "1.3.6.1.2.1.25.2.3.1"))
    assert storage["1.3.6.1.2.1.25.2.3.1.3.1"] == 'STRING: "Physical memory"'
    used = int(storage["1.3.6.1.2.1.25.2.3.1.6.1"].split()[-1])
    size = int(storage["1.3.6.1.2.1.25.2.3.1.5.1"].split()[-1])
    assert 0 < used < size


# ------------------------------------------------------------------ how real devices misbehave


async def test_firewall_quirks_partial_tables_no_hc_on_tunnels_and_a_64_varbind_cap(
    sim: Simulator,
) -> None:
    device = next(d for d in sim.devices.values() if d.role == "firewall")
    addr = f"{device.address}:{device.port}"
    if_table = parse(await snmp("snmpbulkwalk", *v2c(addr), "1.3.6.1.2.1.2.2.1"))
    columns = {int(oid.split(".")[9]) for oid in if_table}
    assert columns.isdisjoint({1, 5, 10, 16})  # no ifIndex, ifSpeed, 32-bit octets
    assert {2, 7, 8} <= columns
    ifx = parse(await snmp("snmpbulkwalk", *v2c(addr), IFX))
    assert {int(oid.split(".")[10]) for oid in ifx} == {1, 6, 10, 15, 18}
    tunnels = [i for i in device.interfaces if i.if_type == 131]
    assert len(tunnels) == 2
    for iface in tunnels:
        assert f"{HC_IN}.{iface.index}" not in ifx
        assert f"{IFX}.1.{iface.index}" in ifx
    # One GETBULK asking for 200 repetitions gets at most 64 varbinds back.
    out = await snmp("snmpbulkget", "-Cr200", *v2c(addr), "1.3.6.1.2.1.2.2.1.2")
    assert len(parse(out)) == 64


async def test_nexus_style_huge_ifindex_and_multiline_non_utf8_values(sim: Simulator) -> None:
    core_like = next(d for d in small_fleet(address_base="127.31.9.1") if d.role == "pe-router")
    assert core_like.interfaces[0].index == 1000001
    from simulators.fleet import PROFILES

    assert PROFILES["core-switch"].ifindex_base == 436207616
    router = next(d for d in sim.devices.values() if d.role == "ce-router")
    addr = f"{router.address}:{router.port}"
    wan = router.interfaces[0]
    out = await snmp("snmpget", "-Ox", *v2c(addr), f"{IFX}.18.{wan.index}")
    raw = bytes.fromhex("".join(out.split("Hex-STRING:", 1)[1].split()))
    assert (
        b"\r\n" in raw and b"r\xe9f." in raw
    )  # a line break and a latin-1 octet, as real devices send
    descr = await snmp("snmpget", *v2c(addr), f"{SYSTEM}.1.0")
    assert "Technical Support" in descr
