"""The WAN overview: per RTC, its sites, reachability, WAN link traffic and utilization."""

# The f-strings below build InfluxQL text for Grafana; nothing here runs a query.
# ruff: noqa: S608

from __future__ import annotations

from dashboards.panels import (
    BAD_IF_ANY,
    DEVICE_LINK,
    EVERY,
    IF_STATUS,
    REACHABLE,
    RESPONSE,
    RTC,
    RTC_VAR,
    SITE_LINK,
    TIME,
    UTILIZATION,
    WAN,
    WAN_VAR,
    Column,
    Dashboard,
    Json,
    datasource_variable,
    event_annotations,
    last_reachable,
    state_timeline,
    table,
    target,
    timeseries,
    where,
)


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
