"""The site detail dashboard: devices, reachability, WAN links, interfaces down, BGP."""

# The f-strings below build InfluxQL text for Grafana; nothing here runs a query.
# ruff: noqa: S608

from __future__ import annotations

from dashboards.panels import (
    BAD_IF_ANY,
    BGP_STATE,
    DEVICE_LINK,
    EVERY,
    IF_STATUS,
    REACHABLE,
    RESPONSE,
    RTC,
    RTC_VAR,
    SITE,
    SITE_VAR,
    UTILIZATION,
    WAN,
    WAN_VAR,
    Column,
    Dashboard,
    Json,
    bgp_down,
    datasource_variable,
    event_annotations,
    interfaces_down,
    last_reachable,
    links_down,
    stat,
    state_timeline,
    table,
    target,
    timeseries,
    where,
)


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
    d.place(links_down(scope), 4, 4)
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
