"""The agent fleet health dashboard, from the agents' heartbeats."""

# The f-strings below build InfluxQL text for Grafana; nothing here runs a query.
# ruff: noqa: S608

from __future__ import annotations

from dashboards.panels import (
    AGENT_VAR,
    BAD_IF_ANY,
    BUILTIN_ANNOTATION,
    EVERY,
    RTC,
    RTC_VAR,
    SITE,
    SITE_LINK,
    SITE_VAR,
    Column,
    Dashboard,
    Json,
    datasource_variable,
    derivative,
    steps,
    table,
    target,
    timeseries,
    where,
)


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
