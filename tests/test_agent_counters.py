"""Wraps, resets and discontinuities end to end: the real agent polling the simulator.

A 32-bit counter that wraps gives the true rate; an interface whose counters
restart (ifCounterDiscontinuityTime moved) gives no rate for that poll and is
not counted as refused; a 64-bit counter that went back without a
discontinuity gives no rate either and is counted as a reset; nothing anywhere
is a spike; and every rate published after the faults is what the
simulator's traffic model says the interface carried.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent
from simkit import free_udp_port, small_fleet

from enoc.wire import DeviceSample, InterfaceSample
from simulators.inventory_out import write_inventory
from simulators.model import Device, Interface, attach_views
from simulators.server import Simulator
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers

DEVICE = "nyc-acc-1"
RATES = ("in_bps", "out_bps")
ALL_RATES = (*RATES, "in_errors_per_s", "out_errors_per_s", "in_discards_per_s")
MODEL_TOLERANCE = 0.1


@contextlib.asynccontextmanager
async def switch_with_a_32_bit_port(tmp_path: Path) -> AsyncIterator[tuple[Simulator, Path]]:
    """The small fleet's access switch, one of whose ports has no HC counters (real devices
    have such interfaces, SNMP-NOTES.md): the agent must rate it from ifInOctets."""
    port = free_udp_port("127.43.0.1")
    devices = small_fleet(port=port, address_base="127.43.0.1")
    switch = next(d for d in devices if d.name == DEVICE)
    ports(switch)[0].has_hc = False
    for device in devices:
        device.view = None  # the shape changed: build the views again
    attach_views(devices)
    sim = Simulator(devices)
    await sim.start()
    inventory = tmp_path / "devices.yaml"
    write_inventory(inventory, sim, [switch])
    try:
        yield sim, inventory
    finally:
        await sim.close()


def ports(device: Device) -> list[Interface]:
    """Admin-up 1 Gbit/s ports: 3 s of their traffic is far below 2^32 octets."""
    return [i for i in device.interfaces if i.admin_up and i.speed_mbps == 1000][:3]


def samples(listener: Listener) -> list[DeviceSample]:
    found = [s for m in listener.metrics() for s in m.samples if s.device == DEVICE]
    return sorted(found, key=lambda s: s.ts)


def row(sample: DeviceSample, if_index: int) -> InterfaceSample:
    return next(i for i in sample.interfaces if i.if_index == if_index)


async def after_a_poll(listener: Listener) -> float:
    """Wait for the next published poll of the switch; return the time right after it, when
    no poll of it is in flight (the next is an interval away)."""
    seen = len(samples(listener))
    await listener.wait_for(lambda lst: len(samples(lst)) > seen, what="a poll of the switch")
    return time.time()


async def polls_after(listener: Listener, at: float, count: int) -> list[DeviceSample]:
    await listener.wait_for(
        lambda lst: len([s for s in samples(lst) if s.ts > at]) >= count,
        what=f"{count} polls after {at}",
    )
    return [s for s in samples(listener) if s.ts > at][:count]


def agrees_with_the_model(device: Device, iface: Interface, polls: list[DeviceSample]) -> None:
    """Every poll after the first has an input rate, exactly the published counters' delta
    over the poll's interval, and over the polls the agent's rates carry what the
    simulator's traffic model counted (within MODEL_TOLERANCE: the agent
    stamps a poll when it starts, the device counts when it answers; over several polls
    that jitter matters little)."""
    carried = 0.0
    for a, b in itertools.pairwise(polls):
        then, now = row(a, iface.index).fields, row(b, iface.index).fields
        rate = float(now["in_bps"])
        # exactly what the published counters say, a 32-bit one modulo its wrap
        counter, width = ("ifHCInOctets", 64) if "ifHCInOctets" in now else ("ifInOctets", 32)
        delta = (int(now[counter]) - int(then[counter])) % 2**width
        assert rate == pytest.approx(delta * 8 / (b.ts - a.ts), rel=1e-6), (iface.index, b.ts)
        carried += rate * (b.ts - a.ts)
    first, last = polls[0].ts, polls[-1].ts
    counted = 8 * (iface.counters(device, last)[0] - iface.counters(device, first)[0])
    assert carried == pytest.approx(counted, rel=MODEL_TOLERANCE), iface.index


async def test_wraps_resets_and_discontinuities_give_true_rates_and_no_spike(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with (
        switch_with_a_32_bit_port(tmp_path) as (sim, inventory),
        Listener(mosquitto.url) as listener,
    ):
        device = sim.device(DEVICE)
        wrap, marked, unmarked = ports(device)
        async with running_agent(agent_config(tmp_path, mosquitto.url, inventory)) as agent:
            refused = agent.trackers[DEVICE].rates.refused
            await listener.wait_for(lambda lst: len(samples(lst)) >= 3, what="three polls")
            assert not refused, "nothing refused in normal traffic"

            # All at once, each on its own port, right after a poll (none is in flight):
            # 1. a reset that moves ifCounterDiscontinuityTime: known, not refused;
            # 2. a 64-bit counter that goes back without a discontinuity: a reset, refused;
            # 3. 32-bit octet counters 3 s of traffic below 2^32: they wrap a few polls on.
            at = await after_a_poll(listener)
            sim.inject(DEVICE, {"kind": "counter_reset", "ifIndex": marked.index})
            sim.inject(
                DEVICE,
                {"kind": "counter_reset", "ifIndex": unmarked.index, "discontinuity": False},
            )
            sim.inject(DEVICE, {"kind": "counter_wrap", "ifIndex": wrap.index, "seconds": 3})
            after = await polls_after(listener, at, 6)
            refused_after = dict(refused)

    # 1. no rate of any kind across the reset, then true rates
    first = after[0]
    previous = [s for s in samples(listener) if s.ts < first.ts][-1]
    assert int(row(first, marked.index).fields["ifHCInOctets"]) < int(
        row(previous, marked.index).fields["ifHCInOctets"]
    ), "the counter did restart"
    assert not set(ALL_RATES) & set(row(first, marked.index).fields)
    agrees_with_the_model(device, marked, after)

    # 2. no octet rate across the unmarked reset; counted as a reset of each HC counter
    assert not set(RATES) & set(row(first, unmarked.index).fields)
    # ifHCInOctets and ifHCOutOctets of the unmarked port, nothing of the marked one (nor
    # of the wrapping one); the unmarked port's Counter32 errors and discards read as a
    # wrap it could not have carried (refused above its packet capacity)
    assert refused_after.get("reset", 0) == 2
    agrees_with_the_model(device, unmarked, after)

    # 3. the jump is a discontinuity (no rate); the wrap that follows gives the true rate
    assert "ifHCInOctets" not in row(after[0], wrap.index).fields, "rated from 32 bits"
    assert not set(RATES) & set(row(after[0], wrap.index).fields)
    wraps = 0
    for a, b in itertools.pairwise(after):
        for counter, rate in (("ifInOctets", "in_bps"), ("ifOutOctets", "out_bps")):
            before = int(row(a, wrap.index).fields[counter])
            now = int(row(b, wrap.index).fields[counter])
            got = float(row(b, wrap.index).fields[rate])
            expected = (now - before) % 2**32 * 8 / (b.ts - a.ts)
            assert got == pytest.approx(expected, rel=1e-6), (counter, before, now)
            wraps += now < before
    assert wraps == 2, "both 32-bit octet counters wrapped once while polled"
    agrees_with_the_model(device, wrap, after)

    # nowhere a spike: every rate of every interface within what the interface can carry
    for sample in samples(listener):
        for iface in sample.interfaces:
            speed = device.interface(iface.if_index).speed_mbps * 1e6
            for rate in RATES:
                if rate in iface.fields:
                    assert float(iface.fields[rate]) <= speed * 1.05, (sample.ts, iface.if_index)
