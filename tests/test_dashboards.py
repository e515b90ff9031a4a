"""The Grafana dashboards of dashboards/: the committed JSON is what the generator makes, and
every panel, variable and annotation query returns rows from Debian's InfluxDB 1.6 holding
what the simulator, three agents and the collector produced (through Mosquitto and /write).

Queries run the way Grafana sends them: template variables filled in as Grafana formats
them for InfluxDB (multi-value: regex-escaped, several as `(a|b)`, All as `.*`) and the
macros `$timeFilter` and `$__interval` replaced. Each query runs twice: with one RTC, site,
device and two interfaces chosen (every series it returns must stay within that choice), and
with All.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent
from collectorkit import collector_config, eventually, running_collector
from simkit import free_udp_port

from dashboards import build as dash
from dashboards import panels as shared
from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.inventory_out import write_inventory
from simulators.model import Device, attach_views
from simulators.server import Simulator
from testbed.servers import InfluxDB1, Mosquitto

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
DB = "enoc"
ADDRESS_BASE = "127.47.0.1"
INTERVAL = "2s"  # what Grafana would send as $__interval for this short range
SITES = {"nyc": "americas", "bog": "americas", "gva": "europe"}
DEVICE = "nyc-ce-1"  # the device the faults happen to
# Tags of the schema that a dashboard variable selects.
VARIABLE_OF_TAG = {
    "rtc": "rtc",
    "site": "site",
    "device": "device",
    "ifName": "interface",
    "agent": "agent",
}


# ---------------------------------------------------------------- the data


@dataclass
class Story:
    """What happened to the fleet while it was polled, and the window it all fits in."""

    influx: InfluxDB1
    start_ms: int
    end_ms: int
    errored: str = ""  # ifName of nyc-ce-1 with a high error rate all along
    flapped: str = ""  # went down, came back up
    down: str = ""  # went down and stayed down
    peers_flapped: str = ""
    peer_down: str = ""
    interfaces: set[str] = field(default_factory=set)  # every ifName of nyc-ce-1
    devices: dict[str, list[str]] = field(default_factory=dict)  # site -> device names

    def query(self, q: str) -> dict[str, Any]:
        params = urllib.parse.urlencode({"q": q, "db": DB, "epoch": "ms"})
        request = urllib.request.Request(
            f"{self.influx.url}/query", data=params.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
        result: dict[str, Any] = body["results"][0]
        assert "error" not in result, f"{result['error']}\n  in: {q}"
        return result


def _fleet(port: int) -> list[Device]:
    spec = FleetSpec(
        sites=[
            SiteSpec(
                "nyc",
                "americas",
                "New York",
                -5,
                [
                    DeviceGroup("pe-router", 1, 6),
                    DeviceGroup("ce-router", 1),
                    DeviceGroup("access-switch", 1, 8),
                ],
            ),
            SiteSpec("bog", "americas", "Bogota", -5, [DeviceGroup("ce-router", 1)]),
            SiteSpec("gva", "europe", "Geneva", 1, [DeviceGroup("ce-router", 1)]),
        ],
        port=port,
        address_base=ADDRESS_BASE,
    )
    devices = build_devices(spec, time.time())
    attach_views(devices)
    return devices


async def _produce(work: Path, mqtt: Mosquitto, story: Story) -> None:
    devices = _fleet(free_udp_port(ADDRESS_BASE))
    ce = next(d for d in devices if d.name == DEVICE)
    errored = ce.interfaces[1]
    errored.errors_per_s, errored.discards_per_s = 3.0, 2.0
    flapped, down = [i for i in ce.interfaces[2:] if i.admin_up][:2]
    story.errored, story.flapped, story.down = errored.name, flapped.name, down.name
    story.peers_flapped, story.peer_down = ce.bgp_peers[0].remote, ce.bgp_peers[1].remote
    story.interfaces = {i.name for i in ce.interfaces}
    for d in devices:
        story.devices.setdefault(d.site, []).append(d.name)

    password = work / "influx-password"
    password.write_text("not-checked-by-an-open-influxdb\n")
    v1 = {
        "influxdb": {
            "url": story.influx.url,
            "api": "v1",
            "database": DB,
            "retention_policy": "autogen",
            "username": "enoc",
            "password_file": str(password),
            "flush_interval": "0.2s",
        }
    }
    sim = Simulator(devices)
    await sim.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            listener = await stack.enter_async_context(Listener(mqtt.url))
            collector = await stack.enter_async_context(
                running_collector(collector_config(work, mqtt.url, extra=v1))
            )
            for site, rtc in SITES.items():
                home = work / site
                home.mkdir()
                inventory = home / "devices.yaml"
                write_inventory(inventory, sim, [d for d in devices if d.site == site])
                config = agent_config(
                    home,
                    mqtt.url,
                    inventory,
                    extra={"agent_id": f"{site}-1", "site": site, "rtc": rtc},
                )
                await stack.enter_async_context(running_agent(config))

            def reachable(name: str) -> list[object]:
                return [
                    s.fields.get("reachable")
                    for m in listener.metrics()
                    for s in m.samples
                    if s.device == name
                ]

            def polled(times: int) -> bool:
                return all(len(reachable(d.name)) >= times for d in devices)

            async def more_polls(n: int) -> None:
                seen = len(reachable(DEVICE))
                await listener.wait_for(lambda _: len(reachable(DEVICE)) >= seen + n)

            await listener.wait_for(lambda _: polled(3), what="three polls of every device")
            sim.inject(DEVICE, {"kind": "link_down", "ifIndex": flapped.index})
            sim.inject(DEVICE, {"kind": "bgp_down", "peer": story.peers_flapped})
            await more_polls(3)
            sim.clear(DEVICE)  # the link and the BGP session come back
            sim.inject(DEVICE, {"kind": "reboot", "downtime": 2.5})  # unreachable meanwhile
            mark = len(reachable(DEVICE))
            await listener.wait_for(
                lambda _: 0 in reachable(DEVICE)[mark:] and reachable(DEVICE)[-2:] == [1, 1],
                what="the reboot seen and the device back",
            )
            sim.inject(DEVICE, {"kind": "link_down", "ifIndex": down.index})
            sim.inject(DEVICE, {"kind": "bgp_down", "peer": story.peer_down})
            await more_polls(3)
            await listener.wait_for(lambda _: polled(12), what="every device polled 12 times")
            writer = collector.sinks["influxdb"]
            await eventually(
                lambda: collector.ingest.pending_metrics == 0 and writer.stats.buffer_points == 0,
                what="everything written to InfluxDB",
            )
            assert writer.stats.points_dropped == 0
    finally:
        await sim.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    work = tmp_path_factory.mktemp("dashboards")
    with Mosquitto(work / "mosquitto") as mqtt, InfluxDB1(work / "influxdb") as influx:
        influx.create_database(DB)
        story = Story(influx, start_ms=int(time.time() * 1000) - 2000, end_ms=0)
        asyncio.run(_produce(work, mqtt, story))
        story.end_ms = int(time.time() * 1000) + 1000
        yield story


# ---------------------------------------------------------------- Grafana's side of a query

REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # what Grafana's regexEscape escapes
VARIABLE_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def regex_escape(value: str) -> str:
    return REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


@dataclass(frozen=True)
class Selection:
    """Values picked for the query variables; None is All."""

    name: str
    values: dict[str, list[str] | None]


def chosen(story: Story) -> Selection:
    return Selection(
        "chosen",
        {
            "rtc": ["americas"],
            "site": ["nyc"],
            "device": [DEVICE],
            "interface": [story.errored, story.flapped],
            "agent": ["nyc-1"],
        },
    )


def everything() -> Selection:
    names = ("rtc", "site", "interface", "agent")
    return Selection("all", {"device": [DEVICE], **dict.fromkeys(names)})


def formatted(variable: shared.Json, selection: Selection) -> str:
    """A variable's value as Grafana's InfluxDB datasource puts it into a query."""
    if variable["type"] in ("custom", "textbox", "constant"):
        return str(variable["current"]["value"])
    if variable["type"] == "datasource":
        return str(variable["current"]["value"])
    values = selection.values[variable["name"]]
    if values is None:
        assert variable["includeAll"], f"${variable['name']} has no All"
        return str(variable["allValue"])
    if not (variable["multi"] or variable["includeAll"]):
        assert len(values) == 1
        return values[0]
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    query: str, dashboard: shared.Json, selection: Selection, story: Story | None = None
) -> str:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    start, end = (story.start_ms, story.end_ms) if story else (0, 1)
    macros = {
        "timeFilter": f"time >= {start}ms and time <= {end}ms",
        "__interval": INTERVAL,
        "interval": INTERVAL,
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return formatted(variables[name], selection)
        if name in macros:
            return macros[name]
        raise AssertionError(f"${name} is neither a variable of {dashboard['uid']} nor a macro")

    return VARIABLE_REF.sub(value, query)


@dataclass(frozen=True)
class Query:
    dashboard: str  # file name
    kind: str  # panel, variable, annotation
    title: str
    text: str
    columns: frozenset[str] = frozenset()  # that the panel or annotation refers to by name

    @property
    def id(self) -> str:
        return f"{self.dashboard.removesuffix('.json')}:{self.kind}:{self.title}"


def queries(dashboards: dict[str, shared.Json]) -> list[Query]:
    out: list[Query] = []
    for name, dashboard in dashboards.items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                out.append(Query(name, "variable", variable["name"], variable["query"]))
        for annotation in dashboard["annotations"]["list"]:
            if "query" in annotation:
                columns = {annotation["textColumn"], *annotation["tagsColumn"].split(",")}
                out.append(
                    Query(
                        name,
                        "annotation",
                        annotation["name"],
                        annotation["query"],
                        frozenset(columns),
                    )
                )
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                title = f"{panel['title']}/{target['refId']}"
                out.append(Query(name, "panel", title, target["query"], named_columns(panel)))
    return out


def named_columns(panel: shared.Json) -> frozenset[str]:
    """Result columns a panel names: renamed or hidden, given a unit or colors by an override
    (by display name), or read by a data link. Grafana calls InfluxDB's `time` "Time"."""
    organize: shared.Json = next(
        (t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"),
        {"renameByName": {}, "excludeByName": {}},
    )
    renamed = organize["renameByName"]
    names = set(renamed) | set(organize["excludeByName"])
    original = {shown: name for name, shown in renamed.items()}
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"]["id"] == "byName":
            shown = override["matcher"]["options"]
            names.add(original.get(shown, shown))
        for prop in override["properties"]:
            if prop["id"] == "links":
                for link in prop["value"]:
                    names |= set(re.findall(r"__data\.fields\.(\w+)", link["url"]))
    return frozenset(names - {"Time"})


DASHBOARDS = dash.build()
QUERIES = queries(DASHBOARDS)


def _panel_query(dashboard: str, title: str, selection: Selection, story: Story) -> dict[str, Any]:
    board = DASHBOARDS[dashboard]
    panel = next(p for p in board["panels"] if p["title"] == title)
    return story.query(interpolate(panel["targets"][0]["query"], board, selection, story))


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row as {column: value}, the series' tags included."""
    out = []
    for series in result.get("series", []):
        for values in series["values"]:
            out.append(
                {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            )
    return out


# ---------------------------------------------------------------- the generated files


def test_the_committed_json_is_what_the_generator_makes() -> None:
    committed = {p.name for p in dash.JSON_DIR.glob("*.json")}
    assert committed == set(DASHBOARDS), "run `uv run python -m dashboards.build`"
    for name, dashboard in DASHBOARDS.items():
        text = (dash.JSON_DIR / name).read_text(encoding="utf-8")
        assert text == dash.render(dashboard), f"{name} is stale: run python -m dashboards.build"
    assert dash.main(["--check"]) == 0


def test_the_check_mode_catches_a_stale_or_stray_file(tmp_path: Path) -> None:
    assert dash.main(["--out", str(tmp_path)]) == 0
    assert dash.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "enoc-site.json").write_text("{}\n")
    assert dash.main(["--out", str(tmp_path), "--check"]) == 1
    assert dash.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "old.json").write_text("{}\n")
    assert dash.main(["--out", str(tmp_path), "--check"]) == 1


def test_provisioning_points_at_the_dashboards_datasource() -> None:
    provisioning = ROOT / "dashboards" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards.yaml").read_text())["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"]
    datasources = yaml.safe_load((provisioning / "datasources.yaml").read_text())["datasources"]
    assert len(datasources) == 1
    source = datasources[0]
    assert source["type"] == "influxdb"
    assert source["uid"] == shared.DATASOURCE_UID
    assert source["jsonData"].get("version", "InfluxQL") == "InfluxQL"
    assert source["jsonData"]["dbName"] == DB
    for name, dashboard in DASHBOARDS.items():
        variable = dashboard["templating"]["list"][0]
        assert variable["type"] == "datasource" and variable["query"] == "influxdb", name
        assert variable["current"]["value"] == source["uid"], name


def test_every_panel_uses_the_datasource_variable_and_fits_the_grid() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) == 6
    for name, dashboard in DASHBOARDS.items():
        panels = dashboard["panels"]
        assert [p["id"] for p in panels] == list(range(1, len(panels) + 1)), name
        taken: set[tuple[int, int]] = set()
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            cells = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, f"{name}: {panel['title']} overlaps another panel"
            taken |= cells
            if panel["type"] in ("row", "text"):
                continue
            assert panel["datasource"] == shared.DS, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == shared.DS and target["rawQuery"] is True
        titles = [p["title"] for p in panels if p["type"] != "row"]
        assert len(set(titles)) == len(titles), f"{name}: two panels share a title"


def test_queries_are_influxql_and_use_only_defined_variables() -> None:
    assert len(QUERIES) >= 80
    for query in QUERIES:
        assert query.text.startswith(("SELECT ", "SHOW TAG VALUES ")), query.id
        assert "from(bucket" not in query.text, query.id
        filled = interpolate(query.text, DASHBOARDS[query.dashboard], everything())
        assert not VARIABLE_REF.search(filled.replace("$/", "")), query.id
        if query.kind != "variable":
            assert "time >= 0ms and time <= 1ms" in filled, f"{query.id} has no $timeFilter"


# ---------------------------------------------------------------- the queries against data


@pytest.mark.parametrize("selection_name", ["chosen", "all"])
@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_query_returns_rows(story: Story, query: Query, selection_name: str) -> None:
    selection = chosen(story) if selection_name == "chosen" else everything()
    dashboard = DASHBOARDS[query.dashboard]
    result = story.query(interpolate(query.text, dashboard, selection, story))
    found = rows(result)
    assert found, f"no rows: {query.id}"
    # Every column has a value somewhere: a misspelt field is a column of nulls.
    columns = {key for row in found for key in row} - {"time"}
    empty = sorted(c for c in columns if all(row.get(c) is None for row in found))
    assert columns and not empty, f"{query.id}: no values in {empty or 'any column'}"
    missing = sorted(query.columns - columns)
    assert not missing, f"{query.id}: the panel names columns the query lacks: {missing}"
    if selection.name != "chosen":
        return
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for row in found:
        for tag, variable in VARIABLE_OF_TAG.items():
            picked = selection.values[variable]
            if tag in row and variable in defined and picked is not None:
                assert row[tag] in picked, f"{query.id}: {tag}={row[tag]} outside {picked}"


def _variable_values(story: Story, board: str, name: str, selection: Selection) -> set[str]:
    dashboard = DASHBOARDS[board]
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
    result = story.query(interpolate(variable["query"], dashboard, selection, story))
    return {str(row["value"]) for row in rows(result)}


def test_variables_chain_rtc_site_device_interface(story: Story) -> None:
    board = "enoc-device.json"
    picked = chosen(story)
    assert _variable_values(story, board, "rtc", picked) == {"americas", "europe"}
    assert _variable_values(story, board, "site", picked) == {"nyc", "bog"}
    assert _variable_values(story, board, "site", everything()) == {"nyc", "bog", "gva"}
    assert _variable_values(story, board, "device", picked) == set(story.devices["nyc"])
    assert _variable_values(story, board, "interface", picked) == story.interfaces
    agents = _variable_values(story, "enoc-agents.json", "agent", picked)
    assert agents == {"nyc-1"}


def test_top_errors_and_busiest_rank_the_interfaces(story: Story) -> None:
    for selection in (chosen(story), everything()):
        found = rows(_panel_query("enoc-top.json", "Most errors", selection, story))
        assert len(found) == 10, "the $topn default"
        worst = max(found, key=lambda r: float(r["errors"]))
        assert (worst["device"], worst["ifName"]) == (DEVICE, story.errored)
        assert worst["errors"] > 2.0, "the simulator makes 3 in-errors per second"
        busiest = rows(
            _panel_query("enoc-top.json", "Busiest interfaces, inbound", selection, story)
        )
        assert busiest and all(0 <= r["mean"] <= r["peak"] + 1e-9 <= 100 for r in busiest)


def test_site_tables_show_the_faults_left_standing(story: Story) -> None:
    picked = chosen(story)
    down = rows(_panel_query("enoc-site.json", "Interfaces down", picked, story))
    assert [(r["device"], r["ifName"], r["oper"]) for r in down] == [(DEVICE, story.down, 2)]
    peers = rows(_panel_query("enoc-site.json", "BGP peers down", picked, story))
    assert [r["count"] for r in peers] == [1]
    bgp = rows(_panel_query("enoc-site.json", "BGP peers", picked, story))
    states = {r["peer"]: r["state"] for r in bgp if r["device"] == DEVICE}
    assert states[story.peer_down] == 1 and states[story.peers_flapped] == 6
    devices = rows(_panel_query("enoc-site.json", "Devices", picked, story))
    assert sorted(r["device"] for r in devices) == sorted(story.devices["nyc"])
    assert all(r["reachable"] == 1 for r in devices)


def test_wan_overview_counts_devices_per_site(story: Story) -> None:
    sites = rows(_panel_query("enoc-wan.json", "Sites", everything(), story))
    assert {(r["rtc"], r["site"], r["devices"], r["reachable"]) for r in sites} == {
        ("americas", "nyc", 3, 3),
        ("americas", "bog", 1, 1),
        ("europe", "gva", 1, 1),
    }
    links = rows(_panel_query("enoc-wan.json", "WAN links", everything(), story))
    assert {r["device"] for r in links} == {"nyc-ce-1", "bog-ce-1", "gva-ce-1"}
    assert all("WAN" in r["ifAlias"] for r in links)


def test_agent_heartbeats_per_agent(story: Story) -> None:
    found = rows(_panel_query("enoc-agents.json", "Last heartbeat", everything(), story))
    assert {(r["agent"], r["site"], r["devices"]) for r in found} == {
        ("nyc-1", "nyc", 3),
        ("bog-1", "bog", 1),
        ("gva-1", "gva", 1),
    }
    assert all(story.start_ms <= r["time"] <= story.end_ms for r in found)


def test_events_are_the_injected_faults(story: Story) -> None:
    picked = chosen(story)

    def changes(title: str, *columns: str) -> set[tuple[Any, ...]]:
        found = rows(_panel_query("enoc-events.json", title, picked, story))
        return {(*(r[c] for c in columns), r["change"] > 0) for r in found}

    assert changes("Link changes", "device", "ifName") == {
        (DEVICE, story.flapped, True),  # 1 up -> 2 down
        (DEVICE, story.flapped, False),
        (DEVICE, story.down, True),
    }
    assert changes("Reachability changes", "device") == {(DEVICE, False), (DEVICE, True)}
    assert changes("Reboots", "device") == {(DEVICE, False)}
    assert changes("BGP session changes", "device", "peer") == {
        (DEVICE, story.peers_flapped, False),
        (DEVICE, story.peers_flapped, True),
        (DEVICE, story.peer_down, False),
    }


def test_device_ports_down_follows_the_agents_counts(story: Story) -> None:
    found = rows(_panel_query("enoc-device.json", "Ports down", chosen(story), story))
    down = [r["down"] for r in found if r["down"] is not None]
    baseline = {r["down since first seen"] for r in found} - {None}
    changes = [v for i, v in enumerate(down) if i == 0 or down[i - 1] != v]
    # Up at first sight, then the flap (one down), back up, then one down to the end.
    assert changes == [0, 1, 0, 1], down
    assert baseline == {0}, "every port of the story went down after the agent saw it up"
