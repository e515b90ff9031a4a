"""Generate the ENOC Grafana dashboards (JSON) for the DESIGN's InfluxDB schema.

    uv run python -m dashboards.build            # rewrite dashboards/json/*.json
    uv run python -m dashboards.build --check    # exit 1 if the committed JSON is stale

Every query is InfluxQL, so the same dashboards run on InfluxDB 1.x, on 2.x
through a DBRP mapping and on 3.x. Measurements, tags and fields are the ones
`collector/lineproto.py` writes: `device`, `interface`, `bgp_peer` and
`enoc_agent`. Nothing here needs more than the standard library.

Variables: `rtc`, `site` and `interface` are multi-value with an All option
(Grafana regex-escapes multi-value variables and joins several values as
`(a|b)`, so they are used as `"tag" =~ /^$var$/`); `device` is a single value
compared with `=`. Each variable's query is filtered by the ones before it.
"""

# The f-strings below build InfluxQL text for Grafana from this file's constants; nothing
# here runs a query.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
JSON_DIR = HERE / "json"

DATASOURCE_UID = "enoc-influxdb"  # the uid provisioning/datasources.yaml gives the datasource
DATASOURCE_NAME = "ENOC InfluxDB"
DS: Json = {"type": "influxdb", "uid": "${datasource}"}
SCHEMA_VERSION = 39
TAGS = ["enoc"]

# ---------------------------------------------------------------- InfluxQL pieces

RTC = '"rtc" =~ /^$rtc$/'
SITE = '"site" =~ /^$site$/'
DEVICE = "\"device\" = '$device'"
IFACE = '"ifName" =~ /^$interface$/'
WAN = '"ifAlias" =~ /$wan/'
TIME = "$timeFilter"
EVERY = "time($__interval)"

IF_OPER_UP = 1
IF_ADMIN_UP = 1
BGP_ESTABLISHED = 6
BGP_ADMIN_START = 2


def where(*conditions: str) -> str:
    """Conditions joined with AND, always ending with Grafana's time range."""
    return " AND ".join([*conditions, TIME])


def tags(*names: str) -> str:
    return ", ".join(f'"{n}"' for n in names)


def changes(
    measurement: str, field_name: str, scope: Sequence[str], by: Sequence[str], condition: str
) -> str:
    """Points where a field changed (difference between consecutive polls of a series).

    The agent's events are not in InfluxDB; a change of a state field between two polls
    is what the time series can show of them (the collector's incidents are, as the
    `incident` measurement: see event_annotations).
    """
    return (
        f'SELECT "change", {tags(*by)} FROM (SELECT difference("{field_name}") AS "change" '
        f'FROM "{measurement}" WHERE {where(*scope)} GROUP BY {tags(*by)}) '
        f'WHERE "change" {condition}'
    )


def last_reachable(scope: Sequence[str], by: Sequence[str]) -> str:
    """Subquery: each device's last known reachability in the range."""
    return (
        f'(SELECT last("reachable") AS "r" FROM "device" WHERE {where(*scope)} '
        f"GROUP BY {tags(*by, 'device')})"
    )


def interfaces_down(scope: Sequence[str], select: str) -> str:
    """Admin-up interfaces whose last oper status is not up."""
    return (
        f'SELECT {select} FROM (SELECT last("ifOperStatus") AS "oper", '
        f'last("ifAdminStatus") AS "admin" FROM "interface" WHERE {where(*scope)} '
        f'GROUP BY "site", "device", "ifIndex", "ifName", "ifAlias") '
        f'WHERE "admin" = {IF_ADMIN_UP} AND "oper" <> {IF_OPER_UP}'
    )


def bgp_down(scope: Sequence[str]) -> str:
    """Administratively started BGP peers whose last state is not established."""
    return (
        'SELECT count("state") FROM (SELECT last("state") AS "state", last("admin_status") '
        f'AS "admin" FROM "bgp_peer" WHERE {where(*scope)} GROUP BY "device", "peer") '
        f'WHERE "admin" = {BGP_ADMIN_START} AND "state" <> {BGP_ESTABLISHED}'
    )


def top(measurement_fields: str, rank: str, scope: Sequence[str], columns: str) -> str:
    """The `$topn` interface series with the largest `rank` over the range."""
    return (
        f'SELECT top("{rank}", $topn) AS "{rank}", {columns} FROM '
        f'(SELECT {measurement_fields} FROM "interface" WHERE {where(*scope)} '
        f'GROUP BY "rtc", "site", "device", "ifName", "ifAlias")'
    )


def derivative(names: Sequence[str], per: str = "1s") -> str:
    return ", ".join(f'non_negative_derivative(last("{n}"), {per}) AS "{n}"' for n in names)


# ---------------------------------------------------------------- value mappings and colors

REACHABLE = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]
IF_STATUS = [
    {
        "type": "value",
        "options": {
            "1": {"text": "up", "color": "green", "index": 0},
            "2": {"text": "down", "color": "red", "index": 1},
            "3": {"text": "testing", "color": "blue", "index": 2},
            "4": {"text": "unknown", "color": "text", "index": 3},
            "5": {"text": "dormant", "color": "yellow", "index": 4},
            "6": {"text": "notPresent", "color": "text", "index": 5},
            "7": {"text": "lowerLayerDown", "color": "red", "index": 6},
        },
    }
]
BGP_STATE = [
    {
        "type": "value",
        "options": {
            "1": {"text": "idle", "color": "red", "index": 0},
            "2": {"text": "connect", "color": "orange", "index": 1},
            "3": {"text": "active", "color": "orange", "index": 2},
            "4": {"text": "openSent", "color": "yellow", "index": 3},
            "5": {"text": "openConfirm", "color": "yellow", "index": 4},
            "6": {"text": "established", "color": "green", "index": 5},
        },
    }
]


def _direction(positive: str, negative: str) -> list[Json]:
    """Mappings for a difference: above zero reads `positive`, below zero `negative`."""
    colors = {"up": "green", "down": "red"}
    return [
        {
            "type": "range",
            "options": {"from": lo, "to": hi, "result": {"text": t, "color": colors[t]}},
        }
        for lo, hi, t in ((1, 1e9, positive), (-1e9, -1, negative))
    ]


CHANGE_DIRECTION_DOWN_UP = _direction("down", "up")  # ifOperStatus rises: 1 up -> 2 down
CHANGE_DIRECTION_UP_DOWN = _direction("up", "down")  # `reachable` 0 -> 1, BGP state -> 6


def steps(*levels: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in levels]}


GREEN = steps(("green", None))
UTILIZATION = steps(("green", None), ("orange", 80), ("red", 95))
BAD_IF_ANY = steps(("green", None), ("red", 1))
RESPONSE = steps(("green", None), ("orange", 200), ("red", 1000))


# ---------------------------------------------------------------- panels


def target(query: str, ref: str = "A", *, table: bool = False, alias: str = "") -> Json:
    out: Json = {
        "refId": ref,
        "datasource": DS,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        out["alias"] = alias
    return out


def _field_config(
    unit: str,
    *,
    mappings: list[Json] | None = None,
    thresholds: Json | None = None,
    color: str = "palette-classic",
    custom: Json | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    no_value: str | None = None,
    overrides: list[Json] | None = None,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": color},
        "mappings": mappings or [],
        "thresholds": thresholds or GREEN,
    }
    if custom is not None:
        defaults["custom"] = custom
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if no_value is not None:
        defaults["noValue"] = no_value
    return {"defaults": defaults, "overrides": overrides or []}


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str,
    minimum: float | None = None,
    maximum: float | None = None,
    thresholds: Json | None = None,
    negative: str = "",
) -> Json:
    """A time series; series whose name matches the regex `negative` are drawn below zero."""
    overrides = []
    if negative:
        overrides.append(
            {
                "matcher": {"id": "byRegexp", "options": negative},
                "properties": [{"id": "custom.transform", "value": "negative-Y"}],
            }
        )
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        # Polls are a minute apart: bridge the empty buckets of a short $__interval, show
        # real gaps (an unreachable device, a stopped agent) as gaps.
        "spanNulls": 180000,
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": _field_config(
            unit,
            thresholds=thresholds,
            custom=custom,
            minimum=minimum,
            maximum=maximum,
            overrides=overrides,
        ),
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    targets: list[Json],
    *,
    unit: str = "none",
    mappings: list[Json] | None = None,
    thresholds: Json | None = None,
    no_value: str | None = None,
) -> Json:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": _field_config(
            unit,
            mappings=mappings,
            thresholds=thresholds,
            color="thresholds",
            no_value=no_value,
        ),
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
    }


@dataclass
class Column:
    """How a table shows one column of the query's result."""

    name: str
    rename: str = ""
    unit: str = ""
    mappings: list[Json] = field(default_factory=list)
    thresholds: Json | None = None
    link: Json | None = None
    hidden: bool = False


def table(
    title: str,
    description: str,
    targets: list[Json],
    columns: Sequence[Column] = (),
    *,
    keep_time: str = "",
    sort_by: str = "",
    descending: bool = True,
) -> Json:
    """A table of `resultFormat: table` queries. `keep_time` names the Time column, else it is
    hidden (aggregates over the whole range carry the range's start as their time)."""
    overrides: list[Json] = []
    rename: dict[str, str] = {}
    exclude: dict[str, bool] = {}
    for column in columns:
        properties: list[Json] = []
        if column.unit:
            properties.append({"id": "unit", "value": column.unit})
        if column.mappings:
            properties.append({"id": "mappings", "value": column.mappings})
        if column.thresholds is not None:
            properties.append({"id": "thresholds", "value": column.thresholds})
            properties.append({"id": "custom.cellOptions", "value": {"type": "color-text"}})
        elif column.mappings:
            properties.append({"id": "custom.cellOptions", "value": {"type": "color-text"}})
        if column.link is not None:
            properties.append({"id": "links", "value": [column.link]})
        if properties:  # matched by display name: the renamed one, as every Grafana does
            shown = column.rename or column.name
            overrides.append(
                {"matcher": {"id": "byName", "options": shown}, "properties": properties}
            )
        if column.rename:
            rename[column.name] = column.rename
        if column.hidden:
            exclude[column.name] = True
    if keep_time:
        rename["Time"] = keep_time
    else:
        exclude["Time"] = True
    panel: Json = {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": _field_config("none", color="thresholds", overrides=overrides),
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": [
            {
                "id": "organize",
                "options": {"excludeByName": exclude, "renameByName": rename, "indexByName": {}},
            }
        ],
    }
    if sort_by:
        panel["options"]["sortBy"] = [{"displayName": sort_by, "desc": descending}]
    return panel


def state_timeline(title: str, description: str, targets: list[Json], mappings: list[Json]) -> Json:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": _field_config(
            "none",
            mappings=mappings,
            color="thresholds",
            custom={"lineWidth": 0, "fillOpacity": 80, "spanNulls": 180000},
        ),
        "options": {
            "mergeValues": True,
            "showValue": "never",
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def text(title: str, content: str) -> Json:
    return {
        "type": "text",
        "title": title,
        "options": {"mode": "markdown", "content": content},
    }


# ---------------------------------------------------------------- links between dashboards


def _link(title: str, uid: str, var: str) -> Json:
    """A data link opening dashboard `uid` with `var` set to the clicked row's column of that
    name; the variables before it stay at All, so the chained variable queries still offer
    the value. (Only the one column: an organize-hidden column is gone from the frame.)"""
    return {
        "title": title,
        "url": f"/d/{uid}?var-{var}=${{__data.fields.{var}}}&${{__url_time_range}}",
    }


SITE_LINK = _link("Site detail", "enoc-site", "site")
DEVICE_LINK = _link("Device detail", "enoc-device", "device")
DASHBOARD_LINKS = [
    {
        "type": "dashboards",
        "title": "ENOC",
        "tags": TAGS,
        "asDropdown": True,
        "includeVars": False,
        "keepTime": True,
        "icon": "external link",
        "targetBlank": False,
        "tooltip": "",
        "url": "",
    }
]


# ---------------------------------------------------------------- variables


def datasource_variable() -> Json:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "InfluxDB (InfluxQL)",
        "query": "influxdb",
        "current": {"selected": False, "text": DATASOURCE_NAME, "value": DATASOURCE_UID},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
        "skipUrlSync": False,
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = True, sort: int = 1) -> Json:
    """A variable from `SHOW TAG VALUES`. Multi-value ones offer All, sent as `.*`."""
    variable: Json = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 1,
        "regex": "",
        "sort": sort,
        "multi": multi,
        "includeAll": multi,
        "hide": 0,
        "options": [],
        "skipUrlSync": False,
    }
    if multi:
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        variable["current"] = {}
    return variable


def constant_choice(name: str, label: str, kind: str, query: str, default: str) -> Json:
    """A `custom` (comma-separated choices) or `textbox` variable."""
    current = {"selected": True, "text": default, "value": default}
    options = [{"selected": v == default, "text": v, "value": v} for v in query.split(",") if v]
    return {
        "type": kind,
        "name": name,
        "label": label,
        "query": query,
        "current": current,
        "options": options if kind == "custom" else [current],
        "hide": 0,
        "skipUrlSync": False,
    }


RTC_VAR = query_variable("rtc", "RTC", 'SHOW TAG VALUES FROM "device" WITH KEY = "rtc"')
SITE_VAR = query_variable(
    "site", "Site", f'SHOW TAG VALUES FROM "device" WITH KEY = "site" WHERE {RTC}'
)
DEVICE_VAR = query_variable(
    "device",
    "Device",
    f'SHOW TAG VALUES FROM "device" WITH KEY = "device" WHERE {RTC} AND {SITE}',
    multi=False,
)
INTERFACE_VAR = query_variable(
    "interface",
    "Interface",
    f'SHOW TAG VALUES FROM "interface" WITH KEY = "ifName" WHERE {RTC} AND {SITE} AND {DEVICE}',
    sort=3,  # natural order: Gi0/0/2 before Gi0/0/10
)
AGENT_VAR = query_variable(
    "agent",
    "Agent",
    f'SHOW TAG VALUES FROM "enoc_agent" WITH KEY = "agent" WHERE {RTC} AND {SITE}',
)
WAN_VAR = constant_choice("wan", "WAN links (ifAlias regex)", "textbox", "WAN", "WAN")
TOPN_VAR = constant_choice("topn", "Top", "custom", "5,10,20,50", "10")


# ---------------------------------------------------------------- annotations

BUILTIN_ANNOTATION: Json = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def annotation(name: str, query: str, color: str, text_column: str, tag_columns: str) -> Json:
    """An InfluxQL annotation (legacy fields: Grafana 10+ migrates them into its target)."""
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "query": query,
        "textColumn": text_column,
        "tagsColumn": tag_columns,
    }


def event_annotations(
    scope: Sequence[str], only: Sequence[str] = (), links: Sequence[str] = ()
) -> list[Json]:
    """Link, reachability, reboot and BGP changes within `scope` (links within `links` if
    given), from consecutive polls, and the collector's incidents opening and resolving
    (measurement `incident`); `only`: just the ones with these names. Grafana's own
    annotations come first."""
    link = ("site", "device", "ifName")
    link_scope = links or scope
    dev = ("site", "device")
    peer = ("site", "device", "peer")
    events = [
        annotation(
            "Link down",
            changes("interface", "ifOperStatus", link_scope, link, "> 0"),
            "red",
            "ifName",
            "site,device",
        ),
        annotation(
            "Link up",
            changes("interface", "ifOperStatus", link_scope, link, "< 0"),
            "green",
            "ifName",
            "site,device",
        ),
        annotation(
            "Device unreachable",
            changes("device", "reachable", scope, dev, "< 0"),
            "dark-red",
            "device",
            "site,device",
        ),
        annotation(
            "Device reachable again",
            changes("device", "reachable", scope, dev, "> 0"),
            "dark-green",
            "device",
            "site,device",
        ),
        annotation(
            "Reboot (sysUpTime reset)",
            changes("device", "uptime_s", scope, dev, "< 0"),
            "purple",
            "device",
            "site,device",
        ),
        annotation(
            "BGP session change",
            changes("bgp_peer", "state", scope, peer, "<> 0"),
            "orange",
            "peer",
            "site,device",
        ),
    ]
    for change, color in (("opened", "red"), ("resolved", "green")):
        events.append(
            annotation(
                f"Incident {change}",
                f'SELECT "title", "severity", "site", "device" FROM "incident" '
                f"WHERE \"change\" = '{change}' AND {where(*scope)}",
                color,
                "title",
                "site,device,severity",
            )
        )
    return [BUILTIN_ANNOTATION, *(e for e in events if not only or e["name"] in only)]


# ---------------------------------------------------------------- layout


@dataclass
class Dashboard:
    """Panels flow left to right on Grafana's 24-column grid; `row` starts a new row."""

    uid: str
    title: str
    description: str
    variables: list[Json]
    annotations: list[Json]
    panels: list[Json] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _line: int = 0

    def place(self, panel: Json, w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        placed = {
            "id": len(self.panels) + 1,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            **panel,
        }
        self.panels.append(placed)
        self._x += w
        self._line = max(self._line, h)

    def row(self, title: str, repeat: str = "") -> None:
        self._newline()
        panel: Json = {
            "type": "row",
            "id": len(self.panels) + 1,
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
            "panels": [],
        }
        if repeat:
            panel["repeat"] = repeat
        self.panels.append(panel)
        self._y += 1

    def _newline(self) -> None:
        self._y += self._line
        self._x = 0
        self._line = 0

    def json(self) -> Json:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": TAGS,
            "editable": True,
            "graphTooltip": 1,
            "timezone": "",
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "refresh": "1m",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": DASHBOARD_LINKS,
            "templating": {"list": self.variables},
            "annotations": {"list": self.annotations},
            "panels": self.panels,
        }


# ---------------------------------------------------------------- the dashboards


def wan_overview() -> Json:
    d = Dashboard(
        "enoc-wan",
        "ENOC - WAN overview",
        "Per RTC: its sites, device reachability, WAN link traffic and utilization, agents.",
        [datasource_variable(), RTC_VAR, WAN_VAR],
        event_annotations([RTC], ["Device unreachable", "Device reachable again"]),
    )
    d.row("RTC $rtc", repeat="rtc")
    d.place(
        table(
            "Sites",
            "Devices per site and how many answered their last poll in the range.",
            [
                target(
                    'SELECT count("r") AS "devices", sum("r") AS "reachable", '
                    'count("r") - sum("r") AS "unreachable" '
                    f'FROM {last_reachable([RTC], ["rtc", "site"])} GROUP BY "rtc", "site"',
                    table=True,
                )
            ],
            [
                Column("rtc", hidden=True),
                Column("site", link=SITE_LINK),
                Column("unreachable", thresholds=BAD_IF_ANY),
            ],
            sort_by="unreachable",
        ),
        10,
        8,
    )
    d.place(
        state_timeline(
            "Sites: all devices reachable",
            "Down when any device of the site missed its poll in the interval.",
            [
                target(
                    f'SELECT min("reachable") FROM "device" WHERE {where(RTC)} '
                    f'GROUP BY {EVERY}, "site" fill(null)',
                    alias="$tag_site",
                )
            ],
            REACHABLE,
        ),
        14,
        8,
    )
    d.place(
        timeseries(
            "WAN traffic by site",
            "Sum over each site's WAN links (ifAlias matches $wan); outbound drawn below zero.",
            [
                target(
                    'SELECT sum("in") AS "in", sum("out") AS "out" FROM '
                    '(SELECT mean("in_bps") AS "in", mean("out_bps") AS "out" FROM "interface" '
                    f'WHERE {where(RTC, WAN)} GROUP BY {EVERY}, "site", "device", "ifIndex") '
                    f'WHERE {TIME} GROUP BY {EVERY}, "site" fill(null)',
                    alias="$tag_site $col",
                )
            ],
            unit="bps",
            negative="out$",
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "WAN link utilization",
            "Peak utilization of each WAN link in the interval, inbound and outbound.",
            [
                target(
                    'SELECT max("in_utilization") AS "in", max("out_utilization") AS "out" '
                    f'FROM "interface" WHERE {where(RTC, WAN)} '
                    f'GROUP BY {EVERY}, "site", "device", "ifName" fill(null)',
                    alias="$tag_site $tag_device $tag_ifName $col",
                )
            ],
            unit="percent",
            minimum=0,
            thresholds=UTILIZATION,
        ),
        12,
        8,
    )
    d.place(
        table(
            "WAN links",
            "Last poll of each WAN link in the range.",
            [
                target(
                    'SELECT last("ifOperStatus") AS "oper", last("ifHighSpeed") AS "speed", '
                    'last("in_utilization") AS "in", last("out_utilization") AS "out", '
                    'last("in_errors_per_s") AS "in errors" FROM "interface" '
                    f"WHERE {where(RTC, WAN)} "
                    'GROUP BY "rtc", "site", "device", "ifName", "ifAlias"',
                    table=True,
                )
            ],
            [
                Column("rtc", hidden=True),
                Column("site", link=SITE_LINK),
                Column("device", link=DEVICE_LINK),
                Column("oper", mappings=IF_STATUS),
                Column("speed", unit="Mbits"),
                Column("in", "in %", unit="percent", thresholds=UTILIZATION),
                Column("out", "out %", unit="percent", thresholds=UTILIZATION),
                Column("in errors", "in errors/s", thresholds=BAD_IF_ANY),
            ],
            sort_by="in %",
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "Poll response time by site",
            "Mean SNMP response time of the site's devices.",
            [
                target(
                    f'SELECT mean("response_ms") FROM "device" WHERE {where(RTC)} '
                    f'GROUP BY {EVERY}, "site" fill(null)',
                    alias="$tag_site",
                )
            ],
            unit="ms",
            minimum=0,
            thresholds=RESPONSE,
        ),
        12,
        8,
    )
    return d.json()


def site_detail() -> Json:
    scope = [RTC, SITE]
    d = Dashboard(
        "enoc-site",
        "ENOC - Site detail",
        "One site (or several): devices, reachability, CPU and memory, WAN links, interfaces "
        "down and BGP peers.",
        [datasource_variable(), RTC_VAR, SITE_VAR, WAN_VAR],
        event_annotations(scope),
    )
    d.place(
        stat(
            "Devices reporting",
            "Devices that reported in the range.",
            [target(f'SELECT count("r") FROM {last_reachable(scope, ["site"])}')],
        ),
        4,
        4,
    )
    d.place(
        stat(
            "Unreachable",
            "Devices whose last poll in the range got no answer.",
            [target(f'SELECT count("r") - sum("r") FROM {last_reachable(scope, ["site"])}')],
            thresholds=BAD_IF_ANY,
        ),
        4,
        4,
    )
    d.place(
        stat(
            "Links down",
            "Admin-up interfaces whose last oper status is not up.",
            [target(interfaces_down(scope, 'count("oper")'))],
            thresholds=BAD_IF_ANY,
            no_value="0",
        ),
        4,
        4,
    )
    d.place(
        stat(
            "BGP peers down",
            "Started BGP peers whose last state is not established.",
            [target(bgp_down(scope))],
            thresholds=BAD_IF_ANY,
            no_value="0",
        ),
        4,
        4,
    )
    d.place(
        stat(
            "Peak WAN utilization",
            "Highest inbound and outbound utilization of a WAN link in the range.",
            [
                target(
                    'SELECT max("in_utilization") AS "in", max("out_utilization") AS "out" '
                    f'FROM "interface" WHERE {where(*scope, WAN)}'
                )
            ],
            unit="percent",
            thresholds=UTILIZATION,
        ),
        4,
        4,
    )
    d.place(
        stat(
            "Response time",
            "Mean SNMP response time of the site's devices in the range.",
            [target(f'SELECT mean("response_ms") FROM "device" WHERE {where(*scope)}')],
            unit="ms",
            thresholds=RESPONSE,
        ),
        4,
        4,
    )
    d.place(
        table(
            "Devices",
            "Last values of each device in the range; the name opens its device page.",
            [
                target(
                    'SELECT last("reachable") AS "reachable", last("uptime_s") AS "uptime", '
                    'last("cpu") AS "cpu", last("memory") AS "memory", '
                    'last("response_ms") AS "response" FROM "device" '
                    f'WHERE {where(*scope)} GROUP BY "rtc", "site", "device", "agent_host"',
                    table=True,
                )
            ],
            [
                Column("rtc", hidden=True),
                Column("device", link=DEVICE_LINK),
                Column("agent_host", "address"),
                Column("reachable", mappings=REACHABLE),
                Column("uptime", unit="dtdurations"),
                Column("cpu", "cpu %", unit="percent", thresholds=UTILIZATION),
                Column("memory", "memory %", unit="percent", thresholds=UTILIZATION),
                Column("response", unit="ms", thresholds=RESPONSE),
            ],
            sort_by="reachable",
            descending=False,
        ),
        24,
        8,
    )
    d.place(
        state_timeline(
            "Reachability",
            "Each device: answered its polls (up) or not (down).",
            [
                target(
                    f'SELECT last("reachable") FROM "device" WHERE {where(*scope)} '
                    f'GROUP BY {EVERY}, "device" fill(null)',
                    alias="$tag_device",
                )
            ],
            REACHABLE,
        ),
        24,
        6,
    )
    for title, name in (("CPU", "cpu"), ("Memory", "memory")):
        d.place(
            timeseries(
                f"{title} by device",
                f"Mean {title.lower()} use (HOST-RESOURCES-MIB) of each device.",
                [
                    target(
                        f'SELECT mean("{name}") FROM "device" WHERE {where(*scope)} '
                        f'GROUP BY {EVERY}, "device" fill(null)',
                        alias="$tag_device",
                    )
                ],
                unit="percent",
                minimum=0,
                maximum=100,
                thresholds=UTILIZATION,
            ),
            12,
            8,
        )
    d.place(
        timeseries(
            "WAN traffic",
            "Each WAN link of the site (ifAlias matches $wan); outbound drawn below zero.",
            [
                target(
                    'SELECT mean("in_bps") AS "in", mean("out_bps") AS "out" FROM "interface" '
                    f'WHERE {where(*scope, WAN)} GROUP BY {EVERY}, "device", "ifName" fill(null)',
                    alias="$tag_device $tag_ifName $col",
                )
            ],
            unit="bps",
            negative="out$",
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "Poll response time",
            "SNMP response time of each device.",
            [
                target(
                    f'SELECT mean("response_ms") FROM "device" WHERE {where(*scope)} '
                    f'GROUP BY {EVERY}, "device" fill(null)',
                    alias="$tag_device",
                )
            ],
            unit="ms",
            minimum=0,
            thresholds=RESPONSE,
        ),
        12,
        8,
    )
    d.place(
        table(
            "Interfaces down",
            "Admin-up interfaces whose last oper status in the range is not up.",
            [
                target(
                    interfaces_down(scope, '"oper", "site", "device", "ifName", "ifAlias"'),
                    table=True,
                )
            ],
            [Column("oper", mappings=IF_STATUS), Column("device", link=DEVICE_LINK)],
        ),
        12,
        8,
    )
    d.place(
        table(
            "BGP peers",
            "Last state of each BGP peer; established time is how long the session is up.",
            [
                target(
                    'SELECT last("state") AS "state", last("remote_as") AS "remote AS", '
                    'last("established_time") AS "established" FROM "bgp_peer" '
                    f'WHERE {where(*scope)} GROUP BY "rtc", "site", "device", "peer"',
                    table=True,
                )
            ],
            [
                Column("rtc", hidden=True),
                Column("device", link=DEVICE_LINK),
                Column("state", mappings=BGP_STATE),
                Column("established", unit="dtdurations"),
            ],
            sort_by="state",
            descending=False,
        ),
        12,
        8,
    )
    return d.json()


def device_detail() -> Json:
    dev = [DEVICE]
    ifs = [DEVICE, IFACE]
    d = Dashboard(
        "enoc-device",
        "ENOC - Device detail",
        "One device: health, and traffic, utilization, errors, discards and status of its "
        "interfaces; BGP peers.",
        [datasource_variable(), RTC_VAR, SITE_VAR, DEVICE_VAR, INTERFACE_VAR],
        event_annotations(dev, links=ifs),
    )
    d.place(
        stat(
            "Reachable",
            "Whether the last poll in the range got an answer.",
            [target(f'SELECT last("reachable") FROM "device" WHERE {where(*dev)}')],
            mappings=REACHABLE,
            thresholds=steps(("red", None), ("green", 1)),
        ),
        4,
        4,
    )
    for title, name, unit, levels in (
        ("Uptime", "uptime_s", "dtdurations", GREEN),
        ("CPU", "cpu", "percent", UTILIZATION),
        ("Memory", "memory", "percent", UTILIZATION),
        ("Response time", "response_ms", "ms", RESPONSE),
    ):
        d.place(
            stat(
                title,
                f"Last {name} in the range.",
                [target(f'SELECT last("{name}") FROM "device" WHERE {where(*dev)}')],
                unit=unit,
                thresholds=levels,
            ),
            4,
            4,
        )
    d.place(
        stat(
            "Links down",
            "Admin-up interfaces whose last oper status is not up.",
            [target(interfaces_down(dev, 'count("oper")'))],
            thresholds=BAD_IF_ANY,
            no_value="0",
        ),
        4,
        4,
    )
    d.place(
        timeseries(
            "CPU and memory",
            "HOST-RESOURCES-MIB: mean processor load and RAM in use.",
            [
                target(
                    'SELECT mean("cpu") AS "cpu", mean("memory") AS "memory" FROM "device" '
                    f"WHERE {where(*dev)} GROUP BY {EVERY} fill(null)",
                    alias="$col",
                )
            ],
            unit="percent",
            minimum=0,
            maximum=100,
            thresholds=UTILIZATION,
        ),
        12,
        7,
    )
    d.place(
        timeseries(
            "Poll response time",
            "SNMP response time; gaps are polls that got no answer.",
            [
                target(
                    f'SELECT mean("response_ms") AS "response" FROM "device" '
                    f"WHERE {where(*dev)} GROUP BY {EVERY} fill(null)",
                    alias="$col",
                )
            ],
            unit="ms",
            minimum=0,
            thresholds=RESPONSE,
        ),
        12,
        7,
    )
    d.place(
        timeseries(
            "Interface traffic",
            "Bits per second from the HC octet counters; outbound drawn below zero.",
            [
                target(
                    'SELECT mean("in_bps") AS "in", mean("out_bps") AS "out" FROM "interface" '
                    f'WHERE {where(*ifs)} GROUP BY {EVERY}, "ifName" fill(null)',
                    alias="$tag_ifName $col",
                )
            ],
            unit="bps",
            negative="out$",
        ),
        24,
        9,
    )
    d.place(
        timeseries(
            "Interface utilization",
            "Percent of ifHighSpeed, inbound and outbound.",
            [
                target(
                    'SELECT mean("in_utilization") AS "in", mean("out_utilization") AS "out" '
                    f'FROM "interface" WHERE {where(*ifs)} '
                    f'GROUP BY {EVERY}, "ifName" fill(null)',
                    alias="$tag_ifName $col",
                )
            ],
            unit="percent",
            minimum=0,
            thresholds=UTILIZATION,
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "Interface errors",
            "ifInErrors and ifOutErrors per second; outbound drawn below zero.",
            [
                target(
                    'SELECT mean("in_errors_per_s") AS "in", mean("out_errors_per_s") AS "out" '
                    f'FROM "interface" WHERE {where(*ifs)} '
                    f'GROUP BY {EVERY}, "ifName" fill(null)',
                    alias="$tag_ifName $col",
                )
            ],
            unit="short",
            negative="out$",
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "Interface discards",
            "ifInDiscards and ifOutDiscards per second; outbound drawn below zero.",
            [
                target(
                    'SELECT mean("in_discards_per_s") AS "in", '
                    'mean("out_discards_per_s") AS "out" FROM "interface" '
                    f'WHERE {where(*ifs)} GROUP BY {EVERY}, "ifName" fill(null)',
                    alias="$tag_ifName $col",
                )
            ],
            unit="short",
            negative="out$",
        ),
        12,
        8,
    )
    d.place(
        state_timeline(
            "Interface status",
            "ifOperStatus of each interface.",
            [
                target(
                    f'SELECT last("ifOperStatus") FROM "interface" WHERE {where(*ifs)} '
                    f'GROUP BY {EVERY}, "ifName" fill(null)',
                    alias="$tag_ifName",
                )
            ],
            IF_STATUS,
        ),
        12,
        8,
    )
    d.place(
        table(
            "Interfaces",
            "Last poll of each interface in the range.",
            [
                target(
                    'SELECT last("ifOperStatus") AS "oper", last("ifAdminStatus") AS "admin", '
                    'last("ifHighSpeed") AS "speed", last("in_bps") AS "in", '
                    'last("out_bps") AS "out", last("in_utilization") AS "in %", '
                    'last("out_utilization") AS "out %", last("in_errors_per_s") AS "in errors", '
                    'last("out_errors_per_s") AS "out errors", '
                    'last("in_discards_per_s") AS "in discards", '
                    'last("out_discards_per_s") AS "out discards" FROM "interface" '
                    f'WHERE {where(*ifs)} GROUP BY "ifIndex", "ifName", "ifAlias"',
                    table=True,
                )
            ],
            [
                Column("oper", mappings=IF_STATUS),
                Column("admin", mappings=IF_STATUS),
                Column("speed", unit="Mbits"),
                Column("in", unit="bps"),
                Column("out", unit="bps"),
                Column("in %", unit="percent", thresholds=UTILIZATION),
                Column("out %", unit="percent", thresholds=UTILIZATION),
                Column("in errors", thresholds=BAD_IF_ANY),
                Column("out errors", thresholds=BAD_IF_ANY),
            ],
            sort_by="in %",
        ),
        24,
        10,
    )
    d.place(
        state_timeline(
            "BGP sessions",
            "BGP4-MIB bgpPeerState of each peer.",
            [
                target(
                    f'SELECT last("state") FROM "bgp_peer" WHERE {where(*dev)} '
                    f'GROUP BY {EVERY}, "peer" fill(null)',
                    alias="$tag_peer",
                )
            ],
            BGP_STATE,
        ),
        12,
        7,
    )
    d.place(
        table(
            "BGP peers",
            "Last state, remote AS and session time of each peer.",
            [
                target(
                    'SELECT last("state") AS "state", last("remote_as") AS "remote AS", '
                    'last("established_time") AS "established", '
                    'last("in_updates") AS "in updates", '
                    'last("out_updates") AS "out updates" FROM "bgp_peer" '
                    f'WHERE {where(*dev)} GROUP BY "peer"',
                    table=True,
                )
            ],
            [Column("state", mappings=BGP_STATE), Column("established", unit="dtdurations")],
            sort_by="state",
            descending=False,
        ),
        12,
        7,
    )
    return d.json()


def top_interfaces() -> Json:
    scope = [RTC, SITE]
    d = Dashboard(
        "enoc-top",
        "ENOC - Top interfaces",
        "The $topn busiest and most erroring interfaces of the selected RTCs and sites.",
        [datasource_variable(), RTC_VAR, SITE_VAR, TOPN_VAR],
        event_annotations(scope, ["Link down"]),
    )
    columns = '"site", "device", "ifName", "ifAlias"'
    links = [Column("rtc", hidden=True), Column("device", link=DEVICE_LINK)]
    for direction in ("in", "out"):
        d.place(
            table(
                f"Busiest interfaces, {direction}bound",
                f"Mean {direction}bound utilization over the range, with its peak.",
                [
                    target(
                        top(
                            f'mean("{direction}_utilization") AS "mean", '
                            f'max("{direction}_utilization") AS "peak", '
                            f'mean("{direction}_bps") AS "bps"',
                            "mean",
                            scope,
                            f'"peak", "bps", "rtc", {columns}',
                        ),
                        table=True,
                    )
                ],
                [
                    *links,
                    Column("mean", "mean %", unit="percent", thresholds=UTILIZATION),
                    Column("peak", "peak %", unit="percent", thresholds=UTILIZATION),
                    Column("bps", "mean bps", unit="bps"),
                ],
                sort_by="mean %",
            ),
            12,
            10,
        )
    for kind in ("errors", "discards"):
        d.place(
            table(
                f"Most {kind}",
                f"Mean {kind} per second over the range, inbound plus outbound.",
                [
                    target(
                        top(
                            f'mean("in_{kind}_per_s") + mean("out_{kind}_per_s") AS "{kind}", '
                            f'mean("in_{kind}_per_s") AS "in", mean("out_{kind}_per_s") AS "out"',
                            kind,
                            scope,
                            f'"in", "out", "rtc", {columns}',
                        ),
                        table=True,
                    )
                ],
                [
                    *links,
                    Column(kind, f"{kind}/s", thresholds=BAD_IF_ANY),
                    Column("in", "in/s"),
                    Column("out", "out/s"),
                ],
                sort_by=f"{kind}/s",
            ),
            12,
            10,
        )
    d.place(
        timeseries(
            "Interface errors by site",
            "Errors per second summed over every interface of each site.",
            [
                target(
                    'SELECT sum("errors") FROM (SELECT mean("in_errors_per_s") + '
                    'mean("out_errors_per_s") AS "errors" FROM "interface" '
                    f'WHERE {where(*scope)} GROUP BY {EVERY}, "site", "device", "ifIndex") '
                    f'WHERE {TIME} GROUP BY {EVERY}, "site" fill(null)',
                    alias="$tag_site",
                )
            ],
            unit="short",
            minimum=0,
        ),
        24,
        8,
    )
    return d.json()


def agent_fleet() -> Json:
    scope = [RTC, SITE, '"agent" =~ /^$agent$/']
    d = Dashboard(
        "enoc-agents",
        "ENOC - Agent fleet health",
        "The site agents' own health from their heartbeats (measurement enoc_agent).",
        [datasource_variable(), RTC_VAR, SITE_VAR, AGENT_VAR],
        [BUILTIN_ANNOTATION],
    )
    d.place(
        table(
            "Last heartbeat",
            "When each agent's last heartbeat reached InfluxDB. The collector writes heartbeats "
            "of online agents only: a stale time here is an agent that stopped or lost MQTT.",
            [
                target(
                    'SELECT last("devices") AS "devices" FROM "enoc_agent" '
                    f'WHERE {where(*scope)} GROUP BY "rtc", "site", "agent"',
                    table=True,
                )
            ],
            [Column("site", link=SITE_LINK)],
            keep_time="last heartbeat",
            sort_by="last heartbeat",
            descending=False,
        ),
        10,
        8,
    )
    d.place(
        table(
            "Agents",
            "Counters are totals since the agent started.",
            [
                target(
                    'SELECT last("spool_depth") AS "spool", last("spool_dropped") AS "dropped", '
                    'last("loop_lag_ms") AS "loop lag", last("polls_ok") AS "polls ok", '
                    'last("polls_failed") AS "polls failed", '
                    'last("snmp_timeouts") AS "timeouts", last("overruns") AS "overruns", '
                    'last("deadline_exceeded") AS "deadline exceeded" FROM "enoc_agent" '
                    f'WHERE {where(*scope)} GROUP BY "rtc", "site", "agent"',
                    table=True,
                )
            ],
            [
                Column("rtc", hidden=True),
                Column("spool", thresholds=steps(("green", None), ("orange", 1000))),
                Column("dropped", thresholds=BAD_IF_ANY),
                Column("loop lag", unit="ms", thresholds=steps(("green", None), ("red", 100))),
                Column("overruns", thresholds=BAD_IF_ANY),
                Column("deadline exceeded", thresholds=BAD_IF_ANY),
            ],
            sort_by="spool",
        ),
        14,
        8,
    )
    rates = (
        ("Polls per second", ["polls_ok", "polls_failed"], "1s", "SNMP polls done and failed."),
        (
            "SNMP timeouts and bad answers per second",
            ["snmp_timeouts", "snmp_bad"],
            "1s",
            "Requests that timed out and answers that could not be used.",
        ),
        (
            "Scheduler trouble per minute",
            ["overruns", "deadline_exceeded", "starved"],
            "1m",
            "Polls skipped because the previous one overran, polls past their deadline, "
            "and polls that waited too long for a concurrency slot.",
        ),
        (
            "Events and traps per second",
            ["events", "traps", "traps_bad"],
            "1s",
            "Edge events published, traps received and traps refused.",
        ),
        ("Varbinds per second", ["varbinds"], "1s", "SNMP values received."),
        (
            "Spool drops per second",
            ["spool_dropped"],
            "1s",
            "Messages the spool dropped because it was full: data lost for good.",
        ),
    )
    for title, names, per, description in rates:
        d.place(
            timeseries(
                title,
                description + " Derivatives of the heartbeat's counters.",
                [
                    target(
                        f'SELECT {derivative(names, per)} FROM "enoc_agent" '
                        f'WHERE {where(*scope)} GROUP BY {EVERY}, "agent" fill(null)',
                        alias="$tag_agent $col",
                    )
                ],
                unit="short",
                minimum=0,
            ),
            12,
            8,
        )
    d.place(
        timeseries(
            "Spool depth",
            "Messages waiting in the agent's disk spool for the broker.",
            [
                target(
                    f'SELECT max("spool_depth") FROM "enoc_agent" WHERE {where(*scope)} '
                    f'GROUP BY {EVERY}, "agent" fill(null)',
                    alias="$tag_agent",
                )
            ],
            unit="short",
            minimum=0,
        ),
        12,
        8,
    )
    d.place(
        timeseries(
            "Event loop lag",
            "How late the agent's event loop wakes up: a busy or starved agent.",
            [
                target(
                    f'SELECT max("loop_lag_ms") FROM "enoc_agent" WHERE {where(*scope)} '
                    f'GROUP BY {EVERY}, "agent" fill(null)',
                    alias="$tag_agent",
                )
            ],
            unit="ms",
            minimum=0,
        ),
        12,
        8,
    )
    return d.json()


EVENTS_NOTE = """\
Incidents (with severity, acknowledgement and comments) live in the collector's store:
see the NOC console and the collector's API. InfluxDB holds metrics only, so this
dashboard shows what the metrics tell of the events: the polls where an interface's
ifOperStatus, a device's reachability or sysUpTime, or a BGP peer's state changed.
The same queries are annotations on the site and device dashboards."""


def events() -> Json:
    scope = [RTC, SITE]
    d = Dashboard(
        "enoc-events",
        "ENOC - Events and incident annotations",
        "State changes seen between consecutive polls, as tables and annotations.",
        [datasource_variable(), RTC_VAR, SITE_VAR],
        event_annotations(scope),
    )
    d.place(text("About these events", EVENTS_NOTE), 24, 4)
    lists: tuple[tuple[str, str, list[Json]], ...] = (
        (
            "Link changes",
            changes("interface", "ifOperStatus", scope, ("site", "device", "ifName"), "<> 0"),
            CHANGE_DIRECTION_DOWN_UP,
        ),
        (
            "Reachability changes",
            changes("device", "reachable", scope, ("site", "device"), "<> 0"),
            CHANGE_DIRECTION_UP_DOWN,
        ),
        (
            "Reboots",
            changes("device", "uptime_s", scope, ("site", "device"), "< 0"),
            [],
        ),
        (
            "BGP session changes",
            changes("bgp_peer", "state", scope, ("site", "device", "peer"), "<> 0"),
            CHANGE_DIRECTION_UP_DOWN,
        ),
    )
    for title, query, mappings in lists:
        columns = [Column("device", link=DEVICE_LINK)]
        if mappings:
            columns.append(Column("change", "went", mappings=mappings))
        else:
            columns.append(Column("change", "uptime lost", unit="s"))
        d.place(
            table(
                title,
                "Polls where the state differs from the poll before.",
                [target(query, table=True)],
                columns,
                keep_time="time",
                sort_by="time",
            ),
            12,
            9,
        )
    return d.json()


BUILDERS = (wan_overview, site_detail, device_detail, top_interfaces, agent_fleet, events)


def build() -> dict[str, Json]:
    """Every dashboard by file name."""
    out: dict[str, Json] = {}
    for builder in BUILDERS:
        dashboard = builder()
        out[f"{dashboard['uid']}.json"] = dashboard
    return out


def render(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="where the JSON files go")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    wanted = {name: render(d) for name, d in build().items()}
    stale = sorted(
        name
        for name, content in wanted.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != content
    )
    extra = sorted(p.name for p in out.glob("*.json") if p.name not in wanted)
    if args.check:
        for name in stale:
            print(f"stale: {out / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated: {out / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(wanted[name], encoding="utf-8")
        print(f"wrote {out / name}")
    for name in extra:
        print(f"not generated (left alone): {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
