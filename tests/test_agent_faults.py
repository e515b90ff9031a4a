"""Each simulator fault produces exactly its event, and its clearing event, once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from enoc.localservers import Mosquitto
from enoc.snmp.client import V3User
from enoc.wire import Event

pytestmark = pytest.mark.servers


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
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 4 * len(site.devices))
            site.sim.inject("nyc-pe-1", {"kind": "cpu_high"})
            await listener.wait_for(
                lambda lst: len(lst.all_events()) == 1, what="the low threshold's event"
            )
            polls = low.stats.polls_ok
            await listener.wait_for(
                lambda _l: low.stats.polls_ok >= polls + 3 * len(site.devices),
                what="three more polls of every device",
            )
            site.sim.clear("nyc-pe-1")
            await listener.wait_for(lambda lst: len(lst.all_events()) == 2, what="the clearing")
            polls = low.stats.polls_ok
            await listener.wait_for(
                lambda _l: low.stats.polls_ok >= polls + 3 * len(site.devices),
                what="three more polls of every device",
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
