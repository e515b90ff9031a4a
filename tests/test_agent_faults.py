"""Each simulator fault produces exactly its event, and its clearing event, once."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from agentkit import Listener, Site, agent_config, running_agent, simulated_site
from simkit import free_udp_port

from enoc.snmp.client import V3User
from enoc.wire import DeviceSample, Event
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers


def samples_of(listener: Listener, device: str, after: float = 0.0) -> list[DeviceSample]:
    return [s for m in listener.metrics() for s in m.samples if s.device == device and s.ts > after]


def keyed(events: list[Event], device: str) -> list[tuple[str, str, str]]:
    return [(e.resource, e.kind, e.state) for e in events if e.device == device]


FAULTS: list[tuple[str, dict[str, Any], list[tuple[str, str, str]], list[tuple[str, str, str]]]] = [
    (
        "nyc-acc-1",
        {"kind": "link_down", "ifIndex": 2},
        [("if:2", "link", "down")],
        [("if:2", "link", "up")],
    ),
    (
        "nyc-pe-1",
        {"kind": "bgp_down", "peer": "PEER"},
        [("bgp:PEER", "bgp", "down")],
        [("bgp:PEER", "bgp", "established")],
    ),
    (
        "nyc-fw-1",
        {"kind": "unreachable"},
        [("device", "reachability", "down")],
        [("device", "reachability", "up")],
    ),
    (
        "nyc-acc-1",
        {"kind": "cpu_high"},
        [("cpu", "threshold", "high")],
        [("cpu", "threshold", "ok")],
    ),
]


@pytest.mark.parametrize(
    ("device", "fault", "raised", "cleared"), FAULTS, ids=lambda v: str(v)[:20]
)
async def test_fault_raises_one_event_and_clearing_resolves_it(
    tmp_path: Path,
    mosquitto: Mosquitto,
    device: str,
    fault: dict[str, Any],
    raised: list[tuple[str, str, str]],
    cleared: list[tuple[str, str, str]],
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        sim_device = site.sim.device(device)
        if fault.get("peer") == "PEER":
            peer = sim_device.bgp_peers[0].remote
            fault = {**fault, "peer": peer}
            raised = [(r.replace("PEER", peer), k, s) for r, k, s in raised]
            cleared = [(r.replace("PEER", peer), k, s) for r, k, s in cleared]
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject(device, fault)
            await listener.wait_for(
                lambda lst: keyed(lst.all_events(), device) == raised, what=f"{raised}"
            )
            polls = agent.stats.polls_ok + sum(agent.stats.polls_failed.values())
            await listener.wait_for(
                lambda _l: (
                    agent.stats.polls_ok + sum(agent.stats.polls_failed.values())
                    >= polls + 3 * len(site.devices)
                ),
                what="three more polls of every device",
            )
            assert keyed(listener.all_events(), device) == raised, "raised once, not repeated"
            site.sim.clear(device)
            await listener.wait_for(
                lambda lst: keyed(lst.all_events(), device) == raised + cleared,
                what=f"{cleared}",
            )
            await asyncio.sleep(2.5)
        assert keyed(listener.all_events(), device) == raised + cleared
        others = [e for e in listener.all_events() if e.device != device]
        assert others == [], "no other device raised anything"


async def test_reboot_is_one_event_and_no_rate_spike(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            assert isinstance(agent.targets["nyc-pe-1"].auth, V3User), "polled with v3 authPriv"
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject("nyc-pe-1", {"kind": "reboot"})
            await listener.wait_for(
                lambda lst: ("device", "reboot", "rebooted") in keyed(lst.all_events(), "nyc-pe-1")
            )
            seen = len(listener.metrics())
            await listener.wait_for(lambda lst: len(lst.metrics()) >= seen + 3 * len(site.devices))
            # The new engine boots made the device answer notInTimeWindow once; polling resynced.
            assert agent.client.stats.reports["not_in_time_window"] >= 1
            assert agent.client.stats.rediscoveries >= 1
            assert not agent.stats.polls_failed, "no poll lost to the reboot"
    assert keyed(listener.all_events(), "nyc-pe-1") == [("device", "reboot", "rebooted")]
    samples = [s for m in listener.metrics() for s in m.samples if s.device == "nyc-pe-1"]
    uptimes = [float(s.fields["uptime_s"]) for s in samples]
    reboot_at = next(i for i in range(1, len(uptimes)) if uptimes[i] < uptimes[i - 1])
    after = samples[reboot_at]
    assert all("in_bps" not in i.fields for i in after.interfaces), "no rate across a reset"
    for sample in samples:
        for iface in sample.interfaces:
            speed = float(iface.fields.get("ifHighSpeed", 0)) * 1e6
            if "in_bps" in iface.fields and speed:
                assert float(iface.fields["in_bps"]) <= speed * 1.05
    assert any("in_bps" in i.fields for i in samples[-1].interfaces), "rates resume"


async def test_cpu_high_against_configured_thresholds(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Two agents poll the same router under the cpu_high fault (every processor 95-99 %):
    one whose CPU threshold enters at 95 sustained 2 polls raises it once, at the first high
    poll, after the second, and clears it; one whose threshold enters at 99.5 raises nothing."""
    thresholds = {
        "low": {"cpu": {"enter": 95, "leave": 60, "polls": 2}},
        "high": {"cpu": {"enter": 99.5, "leave": 60}},
    }
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        configs = []
        for agent_id, levels in thresholds.items():
            (tmp_path / agent_id).mkdir()
            configs.append(
                agent_config(
                    tmp_path / agent_id,
                    mosquitto.url,
                    site.inventory,
                    extra={"agent_id": agent_id, "thresholds": levels},
                )
            )
        async with running_agent(configs[0]) as low, running_agent(configs[1]):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * 2 * len(site.devices))
            site.sim.inject("nyc-pe-1", {"kind": "cpu_high"})
            await listener.wait_for(
                lambda lst: len(lst.all_events()) == 1, what="the low threshold's event"
            )
            polls = low.stats.polls_ok
            await listener.wait_for(
                lambda _l: low.stats.polls_ok >= polls + 2 * len(site.devices),
                what="two more polls of every device",
            )
            site.sim.clear("nyc-pe-1")
            await listener.wait_for(lambda lst: len(lst.all_events()) == 2, what="the clearing")
            polls = low.stats.polls_ok
            await listener.wait_for(
                lambda _l: low.stats.polls_ok >= polls + len(site.devices),
                what="one more poll of every device",
            )
    messages = [(m.agent, e) for m in listener.events() for e in m.events]
    assert [(a, e.device, e.resource, e.state) for a, e in messages] == [
        ("low", "nyc-pe-1", "cpu", "high"),
        ("low", "nyc-pe-1", "cpu", "ok"),
    ]
    high, ok = (e for _a, e in messages)
    assert (high.attrs["limit"], ok.attrs["limit"]) == (95, 60)
    assert high.message.startswith("cpu above 95 (")
    cpu = [
        (s.ts, float(s.fields["cpu"]))
        for m in listener.metrics()
        if m.agent == "low"
        for s in m.samples
        if s.device == "nyc-pe-1"
    ]
    first_high = min(ts for ts, value in cpu if value >= 95)
    assert high.ts == first_high, "stamped with the first poll that saw it"
    sent = next(m.sent for m in listener.events() if m.events[0] is high)
    assert len([ts for ts, _v in cpu if first_high <= ts <= sent]) == 2, "after the second"
    assert all(value < 99.5 for _ts, value in cpu), "the other agent had nothing to see"


# ---------------------------------------------------------------- flap, packet loss, latency


def link_events(listener: Listener, device: str, if_index: int) -> list[Event]:
    return [
        e for e in listener.all_events() if e.device == device and e.resource == f"if:{if_index}"
    ]


def flapping_port(site: Site) -> tuple[str, int]:
    switch = site.sim.device("nyc-acc-1")
    return switch.name, next(i.index for i in switch.interfaces[2:] if i.oper_up)


async def test_flap_with_traps_is_one_event_per_toggle_alternating(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The link toggles faster than the agent polls, a trap each time: every toggle is one
    event, down and up alternating, and no poll adds one (a poll that began before a trap
    cannot undo it), ending up when the fault is cleared."""
    traps_port = free_udp_port()
    async with (
        simulated_site(tmp_path, traps_port=traps_port) as site,
        Listener(mosquitto.url) as listener,
    ):
        device, if_index = flapping_port(site)
        config = agent_config(tmp_path, mosquitto.url, site.inventory, traps_port=traps_port)
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject(device, {"kind": "flap", "ifIndex": if_index, "period": 0.4})
            await asyncio.sleep(4)
            site.sim.clear(device)
            toggles = site.sim.stats.traps  # every trap of the test is one of this link's
            assert toggles >= 8
            await listener.wait_for(
                lambda lst: len(link_events(lst, device, if_index)) >= toggles,
                what=f"{toggles} link events",
            )
            polls = agent.stats.polls_ok
            await listener.wait_for(
                lambda _l: agent.stats.polls_ok >= polls + 2 * len(site.devices),
                what="two more polls of every device",
            )
            assert agent.traps is not None and agent.traps.stats.received == toggles
    events = link_events(listener, device, if_index)
    states = [e.state for e in events]
    assert states == ["down", "up"] * (toggles // 2), states
    assert len({e.id for e in events}) == len(events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert [e for e in listener.all_events() if e not in events] == []


async def test_flap_without_traps_is_one_event_per_change_the_polls_saw(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Without traps the agent knows only what its polls read: toggles between two polls
    merge. Every change between two consecutive polls' ifOperStatus is one event, stamped
    with the poll that saw it, and nothing else is."""
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        device, if_index = flapping_port(site)
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject(device, {"kind": "flap", "ifIndex": if_index, "period": 0.7})
            polls = agent.stats.polls_ok
            await listener.wait_for(
                lambda _l: agent.stats.polls_ok >= polls + 6 * len(site.devices),
                what="six polls of every device while it flaps",
            )
            site.sim.clear(device)
            polls = agent.stats.polls_ok
            await listener.wait_for(
                lambda _l: agent.stats.polls_ok >= polls + 2 * len(site.devices),
                what="two more polls of every device",
            )
    seen = sorted(
        (s.ts, i.fields["ifOperStatus"])
        for m in listener.metrics()
        for s in m.samples
        if s.device == device
        for i in s.interfaces
        if i.if_index == if_index
    )
    changes = [
        (ts, "up" if status == 1 else "down")
        for (_t0, before), (ts, status) in itertools.pairwise(seen)
        if status != before
    ]
    assert len(changes) >= 2, "the polls saw it flap"
    events = link_events(listener, device, if_index)
    assert [(e.ts, e.state) for e in events] == changes
    assert all(e.source == "poll" for e in events)
    assert [e for e in listener.all_events() if e not in events] == []


async def test_moderate_packet_loss_raises_nothing_and_most_polls_succeed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            site.inventory,
            extra={"polling": {"retries": 2, "unreachable_after": 3}},
        )
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject("nyc-acc-1", {"kind": "packet_loss", "ratio": 0.15})
            lossy_at = time.time()
            await listener.wait_for(
                lambda lst: len(samples_of(lst, "nyc-acc-1", lossy_at)) >= 8,
                timeout=30,
                what="eight polls of the lossy device",
            )
            retries = agent.client.stats.retries
    polled = samples_of(listener, "nyc-acc-1", lossy_at)
    answered = sum(int(s.fields["reachable"]) for s in polled)
    assert site.sim.stats.dropped["packet_loss"] >= 3, "the fault dropped requests"
    assert retries >= 3, "and the retries made up for them"
    assert answered >= 0.75 * len(polled), f"{answered} of {len(polled)} polls answered"
    assert listener.all_events() == [], "no reachability event for lost packets"


async def test_latency_below_the_timeout_is_nothing_above_it_unreachable_then_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A 200 ms latency with a 400 ms timeout: polls take longer and succeed. A 1 s latency,
    beyond the 400 ms timeout and its retry (a late answer to the first try would still
    answer the retry, which carries the same id): every request gives up, the device is
    unreachable after two polls, for want of an answer (its late answers are strays), and
    back at the first poll after the latency is cleared. The other devices go on."""
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            site.inventory,
            interval="2s",
            extra={"polling": {"timeout": "0.4s", "retries": 1, "unreachable_after": 2}},
        )
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            site.sim.inject("bog-ce-1", {"kind": "latency", "ms": 200})
            slow_at = time.time()
            await listener.wait_for(
                lambda lst: len(samples_of(lst, "bog-ce-1", slow_at)) >= 3,
                what="three polls at 200 ms",
            )
            slow = samples_of(listener, "bog-ce-1", slow_at)
            assert listener.all_events() == []
            site.sim.inject("bog-ce-1", {"kind": "latency", "ms": 1000})
            await listener.wait_for(
                lambda lst: [e.state for e in lst.all_events()] == ["down"],
                what="the device unreachable",
            )
            site.sim.clear("bog-ce-1")
            await listener.wait_for(
                lambda lst: [e.state for e in lst.all_events()] == ["down", "up"],
                what="the device back",
            )
            failed = dict(agent.stats.polls_failed)
            strays = agent.client.stats.bad["stray"]
    assert all(s.fields["reachable"] == 1 for s in slow)
    assert all(float(s.fields["response_ms"]) >= 200 for s in slow)
    down, up = listener.all_events()
    assert (down.device, down.kind, down.message) == (
        "bog-ce-1",
        "reachability",
        "no SNMP answer for 2 polls",
    )
    assert up.device == "bog-ce-1"
    assert failed == {"timeout": failed["timeout"]} and failed["timeout"] >= 2
    assert strays >= 2, "its answers came, too late"
    for other in ("nyc-pe-1", "nyc-acc-1", "nyc-fw-1"):
        polled = samples_of(listener, other, slow_at)
        assert len(polled) >= 4 and all(s.fields["reachable"] == 1 for s in polled), other
