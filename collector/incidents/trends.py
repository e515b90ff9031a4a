"""The service desk's numbers over time (DESIGN: "Stats over time").

- `trend`: MTTA and MTTR of the incidents opened in each ISO week (from Monday 00:00
  UTC) or calendar month (UTC), by RTC, site or severity;
- `open_over_time`: how many incidents were open at each step of a range, by severity.

Both read the incidents' own opened, acknowledged and resolved times (the timeline's
ack and resolve set them) and leave out suppressed incidents, as `Queries.stats` does.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.access import EVERYTHING, Scope
from collector.incidents.records import run
from collector.model import SEVERITY_RANK
from collector.store import Row, Store

PERIODS = ("week", "month")
GROUPS = ("rtc", "site", "severity")
MAX_PERIODS = 600  # about eleven years of weeks: a chart's x axis, not a data export
MAX_POINTS = 5000  # steps of an open-incident series
MIN_STEP = 60.0  # seconds
DAY = 86400.0
# what a request without `from` covers: twelve weeks, a year of months, a week of steps
SPAN = {"week": 84 * DAY, "month": 365 * DAY, "open": 7 * DAY}
OPEN_COLUMNS = ("at", "open", *SEVERITY_RANK)


def trend_columns(by: str) -> tuple[str, ...]:
    """A trend row's fields, in CSV order."""
    return ("period", "start", by, "incidents", "acknowledged", "mtta_s", "resolved", "mttr_s")


@dataclass(frozen=True)
class Period:
    label: str  # "2026-W49" or "2026-12"
    start: float
    end: float

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.label, "start": self.start, "end": self.end}


def _period_at(ts: float, period: str) -> Period:
    """The ISO week (Monday 00:00 UTC) or UTC calendar month holding `ts`."""
    day = datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        year, week, _ = start.isocalendar()
        label = f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        label = f"{start.year}-{start.month:02d}"
    return Period(label, start.timestamp(), end.timestamp())


def periods(since: float, until: float, period: str) -> list[Period]:
    """Every week or month that overlaps [since, until), in order."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    out = [_period_at(since, period)]
    while out[-1].end < until:
        if len(out) >= MAX_PERIODS:
            raise ValueError(f"from and to span more than {MAX_PERIODS} {period}s")
        out.append(_period_at(out[-1].end, period))
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def trend(rows: Sequence[Row], period: str, by: str, since: float, until: float) -> dict[str, Any]:
    """`rows` are (opened, acknowledged, resolved, rtc, site, severity): one row per
    period and group with incidents opened in [since, until), its MTTA and MTTR in seconds
    (of those acknowledged, of those resolved: null when none)."""
    if by not in GROUPS:
        raise ValueError(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
    spans = periods(since, until, period)
    starts = [p.start for p in spans]
    column = 3 + GROUPS.index(by)
    cells: dict[tuple[int, str], tuple[list[float], list[float], list[int]]] = {}
    for row in rows:
        opened, acked, resolved = row[0], row[1], row[2]
        if not since <= opened < until:
            continue
        place = bisect.bisect_right(starts, opened) - 1
        ack_times, resolve_times, count = cells.setdefault((place, str(row[column])), ([], [], []))
        count.append(1)
        if acked is not None:
            ack_times.append(float(acked) - opened)
        if resolved is not None:
            resolve_times.append(float(resolved) - opened)
    out = []
    for (place, group), (ack_times, resolve_times, count) in sorted(cells.items()):
        out.append(
            {
                **spans[place].as_dict(),
                by: group,
                "incidents": len(count),
                "acknowledged": len(ack_times),
                "mtta_s": _mean(ack_times),
                "resolved": len(resolve_times),
                "mttr_s": _mean(resolve_times),
            }
        )
    groups = sorted({str(r[by]) for r in out}, key=_group_order(by))
    return {"periods": [p.as_dict() for p in spans], "groups": groups, "rows": out}


def _group_order(by: str) -> Any:
    """Severities most severe first; names alphabetically."""
    if by == "severity":
        return lambda name: -SEVERITY_RANK.get(name, 0)
    return lambda name: name


def check_step(since: float, until: float, step: float) -> None:
    if not step >= MIN_STEP:
        raise ValueError(f"step must be at least {MIN_STEP:.0f} seconds, got {step:g}")
    if (until - since) / step >= MAX_POINTS:
        raise ValueError(f"step is too small: from and to would need over {MAX_POINTS} points")


def open_over_time(
    rows: Sequence[Row], since: float, until: float, step: float
) -> list[dict[str, Any]]:
    """`rows` are (opened, resolved, severity): at each `since + k * step` up to `until`,
    how many had opened and not yet resolved, in all and by severity."""
    check_step(since, until, step)
    opened: dict[str, list[float]] = {s: [] for s in SEVERITY_RANK}
    resolved: dict[str, list[float]] = {s: [] for s in SEVERITY_RANK}
    for start, end, severity in rows:
        opened.setdefault(severity, []).append(float(start))
        resolved.setdefault(severity, [])
        if end is not None:
            resolved[severity].append(float(end))
    for times in (*opened.values(), *resolved.values()):
        times.sort()
    out = []
    at = since
    while at <= until:
        # open at `at`: opened by then and not resolved by then
        counts = {
            s: bisect.bisect_right(opened[s], at) - bisect.bisect_right(resolved[s], at)
            for s in opened
        }
        out.append({"at": at, "open": sum(counts.values()), **counts})
        at += step
    return out


class Trends:
    """The two series, read from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def trend(
        self, period: str, by: str, since: float, until: float, scope: Scope = EVERYTHING
    ) -> dict[str, Any]:
        periods(since, until, period)  # a bad range fails before the store is read
        rows = await run(self.store, lambda db: db.incident_times(since, until, scope))
        # a year of a large fleet's incidents is some 100k rows: grouped off the event loop
        return await asyncio.to_thread(trend, rows, period, by, since, until)

    async def open_over_time(
        self, since: float, until: float, step: float, scope: Scope = EVERYTHING
    ) -> list[dict[str, Any]]:
        check_step(since, until, step)  # a bad step fails before the store is read
        rows = await run(self.store, lambda db: db.incident_times(since, until, scope))
        spans = [(r[0], r[2], r[5]) for r in rows]
        return await asyncio.to_thread(open_over_time, spans, since, until, step)
