"""The events dashboard: state changes between consecutive polls, as tables and annotations."""

from __future__ import annotations

from dashboards.panels import (
    CHANGE_DIRECTION_DOWN_UP,
    CHANGE_DIRECTION_UP_DOWN,
    DEVICE_LINK,
    RTC,
    RTC_VAR,
    SITE,
    SITE_VAR,
    Column,
    Dashboard,
    Json,
    changes,
    datasource_variable,
    event_annotations,
    table,
    target,
    text,
)

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
