"""Simulator -> agent -> real Mosquitto -> collector -> real VictoriaMetrics and the API.

Injected faults open the expected incidents and clearing resolves them; the
points in the database equal what the agent published.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from collectorkit import collector_config, eventually, running_collector

from collector.lineproto import lines_for
from enoc.wire import MetricsMessage
from testbed.servers import Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.servers


def numeric_points(messages: list[MetricsMessage]) -> dict[tuple[str, str, int], float]:
    """(series key, field, ms timestamp) -> value, from the line protocol we write."""
    out: dict[tuple[str, str, int], float] = {}
    for message in messages:
        for line in lines_for(message):
            series, fields, stamp = _split_line(line)
            for name, value in fields.items():
                out[(series, name, stamp)] = value
    return out


def _split_line(line: str) -> tuple[str, dict[str, float], int]:
    head, _, rest = line.partition(" ")
    while head.endswith("\\"):  # an escaped space inside a tag
        more, _, rest = rest.partition(" ")
        head += " " + more
    field_text, _, stamp = rest.rpartition(" ")
    fields: dict[str, float] = {}
    for item in field_text.split(","):
        name, _, value = item.partition("=")
        if value.startswith('"'):
            continue  # strings: VictoriaMetrics drops them
        fields[name] = float(value.rstrip("i"))
    return head, fields, int(stamp)


async def test_metrics_land_and_faults_become_incidents(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(
            # the agent's offline status opens its site incident after the grace (the sweep)
            collector_config(
                tmp_path,
                mosquitto.url,
                vm=victoria_metrics,
                extra={"incidents": {"will_grace": "1s"}},
            )
        ) as coll,
    ):
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 3 * len(site.devices))
            names = {d.name for d in site.devices}

            async def listed() -> bool:
                return {d["device"] for d in await coll.engine.queries.devices()} == names

            await eventually(listed, what="every device listed")
            # polled once first: a link down at first sight is the baseline, not an incident
            await eventually(
                lambda: coll.ingest.stats.received["metrics"] >= len(site.devices),
                what="a poll of every device",
            )
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})

            async def link_incident(state: str) -> bool:
                found = await coll.engine.queries.incidents(site="nyc", state=state)
                return any(i.key.device == "nyc-acc-1" and i.key.resource == "if:2" for i in found)

            await eventually(lambda: link_incident("open"), what="link incident opened")
            site.sim.clear("nyc-acc-1")
            await eventually(lambda: link_incident("resolved"), what="link incident resolved")
        # the agent said offline on its way out: one site incident, devices unknown

        async def site_incident() -> bool:
            found = await coll.engine.queries.incidents(state="open")
            return any(i.key.kind == "agent_offline" for i in found)

        await eventually(site_incident, what="site incident for the stopped agent")
        (offline,) = await coll.engine.queries.incidents(state="open")
        assert "said offline (last will)" in offline.title, "opened by its offline status"
        (agent,) = await coll.engine.queries.agents()
        assert offline.opened == agent["last_seen"], "open from when it said so"
        assert {d["state"] for d in await coll.engine.queries.devices()} == {"unknown"}
        published = listener.metrics()
        await eventually(
            lambda: (
                coll.ingest.pending_metrics == 0 and coll.sinks["influxdb"].stats.buffer_points == 0
            ),
            what="everything written",
        )
        links = [i for i in await coll.engine.queries.incidents() if i.key.kind == "link"]
        assert len(links) == 1, "one incident for the fault, not one per poll"
        assert links[0].state == "resolved"
        assert links[0].resolved_by == "auto"
        assert coll.ingest.stats.rejected == {}, "the agent speaks the contract"

    expected = numeric_points(published)
    # VictoriaMetrics makes points searchable within about a second of the write
    await eventually(
        lambda: set(expected) <= set(_vm_points(victoria_metrics)),
        what="every published point in VictoriaMetrics",
        timeout=15,
    )
    landed = _vm_points(victoria_metrics)
    missing = set(expected) - set(landed)
    assert not missing, (
        f"{len(missing)} of {len(expected)} points missing, e.g. {sorted(missing)[:3]}"
    )
    wrong = [k for k, v in expected.items() if not math.isclose(landed[k], v, rel_tol=1e-9)]
    assert not wrong, f"values differ for {wrong[:3]}"
    # every incident change is also a point of `incident`, for dashboard annotations
    incident_points = victoria_metrics.export('{__name__="incident_id",kind="link"}')
    changes = {row["metric"]["change"]: row for row in incident_points}
    assert set(changes) == {"opened", "resolved"}
    assert {row["metric"]["device"] for row in incident_points} == {"nyc-acc-1"}
    assert all(row["values"] == [links[0].id] for row in incident_points)
    (resolved_at,) = changes["resolved"]["timestamps"]
    assert links[0].resolved is not None
    assert resolved_at == round(links[0].resolved * 1000)


def _vm_points(vm: VictoriaMetrics) -> dict[tuple[str, str, int], float]:
    """VictoriaMetrics' export back into (series, field, ms) -> value."""
    out: dict[tuple[str, str, int], float] = {}
    for row in vm.export():
        metric = dict(row["metric"])
        name = metric.pop("__name__")
        measurement, _, field = name.partition("_")
        for known in ("interface", "device", "bgp_peer", "enoc_agent"):
            if name.startswith(known + "_"):
                measurement, field = known, name[len(known) + 1 :]
        tags = ",".join(f"{k}={_escape(v)}" for k, v in sorted(metric.items()))
        series = f"{measurement},{tags}" if tags else measurement
        for value, stamp in zip(row["values"], row["timestamps"], strict=True):
            out[(series, field, int(stamp))] = float(value)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
