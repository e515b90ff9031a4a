"""Two collector replicas on one shared subscription and one PostgreSQL, and the InfluxDB 1.x
`/write` path against Debian's InfluxDB 1.6: real agent, simulator and Mosquitto throughout."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from collectorkit import collector_config, eventually, running_collector
from test_collector_e2e import _vm_points, numeric_points

from collector.app import Collector
from enoc.localservers import InfluxDB1, Mosquitto, PostgreSQL, VictoriaMetrics

pytestmark = pytest.mark.servers


async def test_two_replicas_split_the_stream_and_keep_one_incident_per_key(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria_metrics: VictoriaMetrics,
    postgres: PostgreSQL,
) -> None:
    shared = {"mqtt": {"shared_group": "enoc-collectors"}}
    configs = [
        collector_config(
            tmp_path,
            mosquitto.url,
            vm=victoria_metrics,
            store_url=postgres.url,
            name=f"replica-{n}",
            extra=shared,
        )
        for n in (1, 2)
    ]
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(configs[0]) as one,
        running_collector(configs[1]) as two,
    ):
        replicas = (one, two)
        agent = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(agent):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 4 * len(site.devices))
            switch = next(d for d in site.devices if d.name == "nyc-acc-1")
            faults = [("nyc-acc-1", i.index) for i in switch.interfaces if i.admin_up][:4]
            for device, if_index in faults:
                site.sim.inject(device, {"kind": "link_down", "ifIndex": if_index})

            expected = {(d, f"if:{i}") for d, i in faults}

            async def links_are(state: str) -> bool:
                found = await one.engine.incidents(site="nyc", state=state)
                keys = {(i.key.device, i.key.resource) for i in found if i.key.kind == "link"}
                return keys == expected

            await eventually(lambda: links_are("open"), what="link incidents")
            # several more polls see the faults still there: counts go up, incidents do not
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 8 * len(site.devices))
            site.sim.clear("nyc-acc-1")
            await eventually(lambda: links_are("resolved"), what="all resolved")
        published = listener.metrics()
        await eventually(lambda: all(_drained(c) for c in replicas), what="both drained")
        received = [c.ingest.stats.received.get("metrics", 0) for c in replicas]
        assert all(n > 0 for n in received), f"the shared subscription splits: {received}"
        assert sum(received) == len(published), "each message to exactly one replica"
        incidents = [i for i in await two.engine.incidents() if i.key.kind == "link"]
        keys = [(i.key.device, i.key.resource) for i in incidents]
        assert sorted(keys) == sorted(expected), "one incident per key across both replicas"
        assert {i.state for i in incidents} == {"resolved"}

    points = numeric_points(published)
    await eventually(
        lambda: set(points) <= set(_vm_points(victoria_metrics)),
        what="every published point in VictoriaMetrics",
        timeout=15,
    )


def _drained(collector: Collector) -> bool:
    writer = collector.writer
    return (
        writer is not None
        and collector.ingest.pending_metrics == 0
        and writer.stats.buffer_points == 0
    )


async def test_influxdb_1_6_through_the_v1_write_api(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    influxdb1.create_database("enoc")
    password = tmp_path / "influx-password"
    password.write_text("not-checked-by-an-open-influxdb\n")
    v1 = {
        "influxdb": {
            "url": influxdb1.url,
            "api": "v1",
            "database": "enoc",
            "retention_policy": "autogen",
            "username": "enoc",
            "password_file": str(password),
            "flush_interval": "0.2s",
        }
    }
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(collector_config(tmp_path, mosquitto.url, extra=v1)) as coll,
    ):
        agent = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(agent):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 3 * len(site.devices))
        published = listener.metrics()
        await eventually(lambda: _drained(coll), what="everything written")
        assert coll.writer is not None and coll.writer.stats.points_dropped == 0

    expected = {
        (series, field, stamp): value
        for (series, field, stamp), value in numeric_points(published).items()
        if series.startswith("interface,")
    }
    landed = _influx_interface_points(influxdb1)
    missing = set(expected) - set(landed)
    assert not missing, f"{len(missing)} of {len(expected)} missing, e.g. {sorted(missing)[:2]}"
    assert len(landed) == len(expected), "nothing doubled or invented"
    wrong = [k for k, v in expected.items() if not math.isclose(landed[k], v, rel_tol=1e-9)]
    assert not wrong, f"values differ for {wrong[:3]}"


def _influx_interface_points(server: InfluxDB1) -> dict[tuple[str, str, int], float]:
    """Every numeric interface field InfluxDB holds, keyed like `numeric_points`."""
    params = urllib.parse.urlencode(
        {"q": 'SELECT * FROM "interface" GROUP BY *', "db": "enoc", "epoch": "ms"}
    )
    with urllib.request.urlopen(f"{server.url}/query?{params}", timeout=10) as response:
        body = json.load(response)
    out: dict[tuple[str, str, int], float] = {}
    for series in body["results"][0].get("series", []):
        tags = ",".join(f"{k}={_escape(v)}" for k, v in sorted(series["tags"].items()) if v)
        head = f"interface,{tags}"
        columns = series["columns"]
        for row in series["values"]:
            stamp = int(row[0])
            for name, value in zip(columns[1:], row[1:], strict=True):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[(head, name, stamp)] = float(value)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
