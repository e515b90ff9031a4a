"""The agent end to end: simulator -> agent -> real Mosquitto -> a subscriber."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from enoc.wire import DeviceSample, MetricsMessage, Value
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers


def samples_of(messages: list[MetricsMessage], device: str) -> list[DeviceSample]:
    return [s for m in messages for s in m.samples if s.device == device]


# docs/agent.md, "Publishing and the spool": the heartbeat's health, each an integer but
# the loop lag (milliseconds, a float) and the broker's URL.
HEALTH = [
    "devices",
    "polls_ok",
    "polls_failed",
    "overruns",
    "deadline_exceeded",
    "starved",
    "varbinds",
    "events",
    "snmp_timeouts",
    "snmp_bad",
    "spool_depth",
    "spool_bytes",
    "spool_dropped",
    "publish_refused",
    "publish_unmatched",
    "metrics_split",
    "metrics_oversize",
    "mqtt_protocol",
    "mqtt_broker",
    "broker_switches",
    "traps",
    "traps_bad",
    "loop_lag_ms",
    "discovered",
    "discovery_failed",
    "discovery_varbinds",
]


def assert_heartbeats(beats: list[dict[str, Value]], *, devices: int) -> None:
    """A healthy run's heartbeats: every field, of its type, with plausible values."""
    assert len(beats) >= 3, "the birth and a heartbeat a second"
    for health in beats:
        assert sorted(health) == sorted(HEALTH)
        assert type(health["loop_lag_ms"]) is float and 0 <= health["loop_lag_ms"] < 10_000
        assert str(health["mqtt_broker"]).startswith("mqtt://127.0.0.1:"), "the broker it is on"
        counts = {k: v for k, v in health.items() if k not in ("loop_lag_ms", "mqtt_broker")}
        assert all(type(v) is int and v >= 0 for v in counts.values()), counts
        assert health["devices"] == devices
        assert health["mqtt_protocol"] == 5, "Mosquitto speaks MQTT 5"
        quiet_ones = (
            "spool_dropped",
            *("publish_refused", "publish_unmatched"),
            *("metrics_oversize", "traps_bad"),
        )
        assert health["broker_switches"] == 0, "one broker: nowhere to switch to"
        for quiet in (*quiet_ones, "overruns", "starved"):
            assert health[quiet] == 0, f"{quiet} in a healthy run"
        assert int(health["spool_depth"]) <= 2 * devices, "the spool drains as it fills"
    polls = [int(h["polls_ok"]) for h in beats]
    assert polls == sorted(polls) and polls[-1] >= polls[0] + devices, "polls_ok rises"
    varbinds = [int(h["varbinds"]) for h in beats]
    assert varbinds == sorted(varbinds) and varbinds[-1] > varbinds[0]
    assert any(h["spool_depth"] == 0 for h in beats[1:]), "a drained spool is 0 deep"


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
            await listener.wait_for(
                lambda lst: len(lst.statuses()) >= 4, what="the birth and three heartbeats"
            )
        statuses = listener.statuses()
        assert statuses[0].state == "online" and statuses[-1].state == "offline"
        assert statuses[0].inventory_size == len(names)
    assert_heartbeats([m.health for m in statuses if m.state == "online"], devices=len(names))
    # MQTT 5 with a persistent session: clean start off (c0); the session expiry is
    # tested in test_agent_mqtt5.py
    assert "as enoc-agent-nyc-nyc-1 (p5, c0," in mosquitto.log_tail(100_000)
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
