"""The agent end to end: simulator -> agent -> real Mosquitto -> a subscriber."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from enoc.localservers import Mosquitto
from enoc.wire import DeviceSample, MetricsMessage

pytestmark = pytest.mark.servers


def samples_of(messages: list[MetricsMessage], device: str) -> list[DeviceSample]:
    return [s for m in messages for s in m.samples if s.device == device]


async def test_every_device_reports_each_interval_with_values_snmpbulkwalk_agrees_with(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            names = [d.name for d in site.devices]
            await listener.wait_for(
                lambda lst: all(len(samples_of(lst.metrics(), n)) >= 3 for n in names),
                what="three polls of every device",
            )
            assert agent.stats.polls_ok >= 3 * len(names)
        statuses = listener.statuses()
        assert statuses[0].state == "online" and statuses[-1].state == "offline"
        assert statuses[0].inventory_size == len(names)
    pe = samples_of(listener.metrics(), "nyc-pe-1")
    latest = pe[-1]
    assert latest.fields["reachable"] == 1
    assert 0 <= float(latest.fields["cpu"]) <= 100
    assert 0 < float(latest.fields["memory"]) < 100
    assert latest.bgp and all("state" in b.fields for b in latest.bgp)
    up = [i for i in latest.interfaces if i.fields["ifOperStatus"] == 1]
    assert up and all("in_bps" in i.fields and "in_utilization" in i.fields for i in up)
    assert all(float(i.fields["in_bps"]) >= 0 for i in up)
    assert not listener.all_events(), "a healthy fleet raises nothing"
