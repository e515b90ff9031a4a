"""Shared pieces of the ENOC Grafana dashboards: InfluxQL fragments, value mappings and
colors, panel, variable and annotation builders, and the grid layout.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

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


def states(first: int, *names: tuple[str, str]) -> list[Json]:
    """Value mappings of an enumeration numbered from `first`: a (text, color) per value."""
    options = {
        str(first + i): {"text": text, "color": color, "index": i}
        for i, (text, color) in enumerate(names)
    }
    return [{"type": "value", "options": options}]


REACHABLE = states(0, ("down", "red"), ("up", "green"))
IF_STATUS = states(
    1,
    ("up", "green"),
    ("down", "red"),
    ("testing", "blue"),
    ("unknown", "text"),
    ("dormant", "yellow"),
    ("notPresent", "text"),
    ("lowerLayerDown", "red"),
)
BGP_STATE = states(
    1,
    ("idle", "red"),
    ("connect", "orange"),
    ("active", "orange"),
    ("openSent", "yellow"),
    ("openConfirm", "yellow"),
    ("established", "green"),
)


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


def links_down(scope: Sequence[str]) -> Json:
    """A stat of the admin-up interfaces within `scope` whose last oper status is not up."""
    return stat(
        "Links down",
        "Admin-up interfaces whose last oper status is not up.",
        [target(interfaces_down(scope, 'count("oper")'))],
        thresholds=BAD_IF_ANY,
        no_value="0",
    )


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
