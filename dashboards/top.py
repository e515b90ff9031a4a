"""The top-N interfaces dashboard: busiest, most erroring and most discarding."""

# The f-strings below build InfluxQL text for Grafana; nothing here runs a query.
# ruff: noqa: S608

from __future__ import annotations

from dashboards.panels import (
    BAD_IF_ANY,
    DEVICE_LINK,
    EVERY,
    RTC,
    RTC_VAR,
    SITE,
    SITE_VAR,
    TIME,
    TOPN_VAR,
    UTILIZATION,
    Column,
    Dashboard,
    Json,
    datasource_variable,
    event_annotations,
    table,
    target,
    timeseries,
    top,
    where,
)


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
