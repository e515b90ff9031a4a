"""Traps of injected faults, received by net-snmp's snmptrapd (v2c and v3 authPriv)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from simkit import V3_AUTH, V3_PRIV, V3_USER, FakeClock, free_udp_port, small_fleet

from simulators.server import Simulator, TrapReceiver
from testbed.netsnmp import SnmpTrapd, TrapUser

pytestmark = pytest.mark.servers
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
COLD_START = "1.3.6.1.6.3.1.1.5.1"


async def wait_for(trapd: SnmpTrapd, count: int) -> list:  # type: ignore[type-arg]
    return await asyncio.to_thread(trapd.wait_for, lambda traps: len(traps) >= count)


async def test_v2c_link_down_and_up_traps_of_an_injected_fault(snmptrapd: SnmpTrapd) -> None:
    clock = FakeClock(time.time())
    devices = small_fleet(
        port=free_udp_port("127.35.0.1"), address_base="127.35.0.1", now=clock.now
    )
    sim = Simulator(
        devices,
        trap_receivers=[TrapReceiver("127.0.0.1", snmptrapd.port)],
        clock=clock,
        rng=random.Random(5),
    )
    switch = next(d for d in devices if d.role == "access-switch")
    if_index = switch.interfaces[2].index
    async with sim:
        sim.inject(switch.name, {"kind": "link_down", "ifIndex": if_index})
        traps = await wait_for(snmptrapd, 1)
        sim.clear(switch.name)
        traps = await wait_for(snmptrapd, 2)
    down, up = traps
    assert (down.source, down.trap_oid) == (switch.address, LINK_DOWN)
    assert down.varbinds[f"1.3.6.1.2.1.2.2.1.1.{if_index}"] == f"INTEGER: {if_index}"
    assert down.varbinds[f"1.3.6.1.2.1.2.2.1.8.{if_index}"] == "INTEGER: 2"
    assert down.varbinds["1.3.6.1.2.1.1.3.0"].startswith("Timeticks:")
    assert up.trap_oid == LINK_UP
    assert up.varbinds[f"1.3.6.1.2.1.2.2.1.8.{if_index}"] == "INTEGER: 1"


async def test_v3_auth_priv_traps_are_decrypted_by_snmptrapd(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    devices = small_fleet(
        port=free_udp_port("127.36.0.1"), address_base="127.36.0.1", now=clock.now
    )
    router = next(d for d in devices if d.role == "ce-router")
    user = TrapUser(V3_USER, router.engine_id.hex(), "SHA-256", V3_AUTH, "AES", V3_PRIV)
    with SnmpTrapd(tmp_path / "trapd", v3_users=[user]) as trapd:
        sim = Simulator(
            devices,
            trap_receivers=[TrapReceiver("127.0.0.1", trapd.port)],
            trap_version="3",
            clock=clock,
            rng=random.Random(6),
        )
        async with sim:
            sim.inject(router.name, {"kind": "reboot"})
            traps = await wait_for(trapd, 1)
    assert (traps[0].source, traps[0].trap_oid) == (router.address, COLD_START)
