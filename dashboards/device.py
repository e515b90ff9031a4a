"""The device detail dashboard: health, interfaces and BGP peers of one device."""

# The f-strings below build InfluxQL text for Grafana; nothing here runs a query.
# ruff: noqa: S608

from __future__ import annotations

from dashboards.panels import (
    BAD_IF_ANY,
    BGP_STATE,
    DEVICE,
    DEVICE_VAR,
    EVERY,
    GREEN,
    IF_STATUS,
    IFACE,
    INTERFACE_VAR,
    REACHABLE,
    RESPONSE,
    RTC_VAR,
    SITE_VAR,
    UTILIZATION,
    Column,
    Dashboard,
    Json,
    datasource_variable,
    event_annotations,
    links_down,
    stat,
    state_timeline,
    steps,
    table,
    target,
    timeseries,
    where,
)


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
    d.place(links_down(dev), 4, 4)
    d.place(
        timeseries(
            "Ports down",
            "The agent's count of polled interfaces that are admin up and oper down, and of "
            "the alerted ones those down since the agent first saw them: a baseline, which "
            "opens no incident. A rise of the first without the second is a new outage.",
            [
                target(
                    'SELECT max("ports_down") AS "down", '
                    'max("ports_down_baseline") AS "down since first seen" FROM "device" '
                    f"WHERE {where(*dev)} GROUP BY {EVERY} fill(null)",
                    alias="$col",
                )
            ],
            unit="none",
            minimum=0,
        ),
        24,
        6,
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
