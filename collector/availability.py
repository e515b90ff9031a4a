"""Availability per device, site and RTC over a period, from the incident store's history.

Each known device's seconds of the period [from, to) fall in exactly one of four
states, the first that holds:

1. maintenance: a maintenance window that matches the device covers it (planned,
   left out);
2. unknown: its agent's `agent_offline` incident was open (nobody could tell, so never
   down), unless the agent recorded events stamped inside that span, replayed later
   from its spool: then it was a WAN partition, the agent watched throughout, its spool
   keeps every transition, and the device's incidents (which carry the events' own
   times) say how it was;
3. down: a reachability incident of the device that went down was open (from its
   `opened` to its `resolved`, or to now), suppressed or not;
4. up: the rest.

Overlapping spans of one state are merged, never counted twice. `up_pct` is
up / (period - unknown - maintenance) * 100, the share of the time known and due up
(None when no such time). A site's or RTC's figures are device-seconds, summed over
its devices, as Zabbix and LibreNMS aggregate: its `up_pct` is the mean of its
devices' availability weighted by each one's known time (the plain mean when all were
known throughout). Times are Unix seconds; a period's end after now is cut at now.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from collector.access import EVERYTHING, Scope
from collector.api_input import bad_request, time_param
from collector.api_tables import FORMATS, choice
from collector.incidents.model import AGENT_OFFLINE, MaintenanceWindow
from collector.incidents.records import Records, run
from collector.model import IncidentKey
from collector.store import Store

Span = tuple[float, float]
By = Literal["device", "site", "rtc"]
BY: tuple[By, ...] = ("device", "site", "rtc")
FIGURES = ("up_pct", "up_s", "down_s", "unknown_s", "maintenance_s")
KEYS: dict[str, tuple[str, ...]] = {
    "device": ("site", "device", "rtc"),
    "site": ("site", "rtc", "devices"),
    "rtc": ("rtc", "devices"),
}


def merged(spans: Iterable[Span], lo: float, hi: float) -> list[Span]:
    """`spans` cut to [lo, hi), sorted, overlapping and touching ones joined."""
    out: list[Span] = []
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def minus(spans: list[Span], cut: list[Span]) -> list[Span]:
    """Merged `spans` without merged `cut`."""
    out: list[Span] = []
    for start, b in spans:
        a = start
        for c, d in cut:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def total(spans: list[Span]) -> float:
    return sum(b - a for a, b in spans)


@dataclass
class Figures:
    """One device's (or a sum of devices') seconds in each state."""

    up_s: float
    down_s: float
    unknown_s: float
    maintenance_s: float

    @property
    def up_pct(self) -> float | None:
        due = self.up_s + self.down_s
        return None if due <= 0 else self.up_s / due * 100

    def add(self, other: Figures) -> None:
        self.up_s += other.up_s
        self.down_s += other.down_s
        self.unknown_s += other.unknown_s
        self.maintenance_s += other.maintenance_s

    def as_dict(self) -> dict[str, float | None]:
        pct = self.up_pct
        return {
            "up_pct": None if pct is None else round(pct, 3),
            "up_s": round(self.up_s, 3),
            "down_s": round(self.down_s, 3),
            "unknown_s": round(self.unknown_s, 3),
            "maintenance_s": round(self.maintenance_s, 3),
        }


def figures(
    lo: float, hi: float, down: list[Span], unknown: list[Span], maintenance: list[Span]
) -> Figures:
    """One device's four states over [lo, hi), by the precedence in the module doc."""
    held = merged(maintenance, lo, hi)
    blind = minus(merged(unknown, lo, hi), held)
    gone = minus(minus(merged(down, lo, hi), held), blind)
    down_s, unknown_s, maintenance_s = total(gone), total(blind), total(held)
    up_s = max(0.0, (hi - lo) - down_s - unknown_s - maintenance_s)
    return Figures(up_s, down_s, unknown_s, maintenance_s)


def window_spans(window: MaintenanceWindow, lo: float, hi: float) -> list[Span]:
    """When `window` is active within [lo, hi) (as `MaintenanceWindow.active` says)."""
    end = hi if window.until is None else min(hi, window.until)
    length = window.ends - window.starts
    if window.every <= 0:
        return merged([(window.starts, window.ends)], lo, end)
    if window.every <= length:  # each occurrence reaches the next: one span
        return merged([(window.starts, math.inf)], lo, end)
    first = max(0, math.floor((lo - window.starts) / window.every))
    out = []
    start = window.starts + first * window.every
    while start < end:
        out.append((start, start + length))
        start += window.every
    return merged(out, lo, end)


def applies(window: MaintenanceWindow, site: str, device: str) -> bool:
    """Whether `window` covers the device's reachability (at some time)."""
    key = IncidentKey(site, device, "device", "reachability")
    return window.covers(key, window.starts)


@dataclass(frozen=True)
class Device:
    site: str
    device: str
    agent: str
    rtc: str


def compute(
    db: Records, lo: float, hi: float, scope: Scope = EVERYTHING
) -> list[tuple[Device, Figures]]:
    """Every known device's figures over [lo, hi) (of those inside `scope`), in one read
    of the store."""
    every = [Device(*row) for row in db.device_agents()]
    devices = [d for d in every if scope.covers(d.rtc, d.site)]
    down: dict[tuple[str, str], list[Span]] = {}
    for site, device, _, opened, resolved in db.spans("reachability", lo, hi):
        down.setdefault((site, device), []).append((opened, hi if resolved is None else resolved))
    offline: dict[tuple[str, str], list[Span]] = {}
    for site, _, resource, opened, resolved in db.spans(AGENT_OFFLINE, lo, hi):
        agent = resource.removeprefix("agent:")
        span = (opened, hi if resolved is None else resolved)
        if not db.recorded_within(site, agent, *span):  # not a partition it replayed
            offline.setdefault((site, agent), []).append(span)
    windows = db.windows()
    out = []
    for d in devices:
        held = [s for w in windows if applies(w, d.site, d.device) for s in window_spans(w, lo, hi)]
        out.append(
            (
                d,
                figures(
                    lo,
                    hi,
                    down.get((d.site, d.device), []),
                    offline.get((d.site, d.agent), []),
                    held,
                ),
            )
        )
    return out


def rows(per_device: list[tuple[Device, Figures]], by: By) -> list[dict[str, Any]]:
    """The figures per device, or summed in device-seconds per site or RTC."""
    if by == "device":
        return [
            {"site": d.site, "device": d.device, "rtc": d.rtc, **f.as_dict()} for d, f in per_device
        ]
    groups: dict[tuple[str, ...], tuple[Figures, list[int]]] = {}
    for d, f in per_device:
        key: tuple[str, ...] = (d.site, d.rtc) if by == "site" else (d.rtc,)
        sums, count = groups.setdefault(key, (Figures(0, 0, 0, 0), [0]))
        sums.add(f)
        count[0] += 1
    out = []
    for names_of, (sums, count) in sorted(groups.items()):
        names = dict(zip(KEYS[by][: len(names_of)], names_of, strict=True))
        out.append({**names, "devices": count[0], **sums.as_dict()})
    return out


async def availability(
    store: Store, by: By, lo: float, hi: float, scope: Scope = EVERYTHING
) -> list[dict[str, Any]]:
    """The API's rows: availability `by` device, site or RTC over [lo, hi), of the devices
    inside `scope` (an RTC's row sums only those)."""
    return rows(await run(store, lambda db: compute(db, lo, hi, scope)), by)


@dataclass(frozen=True)
class Request:
    by: By
    csv: bool
    lo: float
    hi: float


def request(query: Mapping[str, str], now: float) -> Request:
    """The API's parameters: `by` (device, site or rtc; site by default), `from` and `to`
    (Unix seconds or ISO 8601; the current month so far by default; an end after now is
    cut at now) and `format` (json or csv); a 400 naming the parameter otherwise."""
    by = cast(By, choice(query, "by", BY, "site"))
    csv = choice(query, "format", FORMATS, "json") == "csv"
    lo = time_param(query.get("from", ""), "from", month_start(now), now)
    hi = min(now, time_param(query.get("to", ""), "to", now, now))
    if lo >= hi:
        raise bad_request("from must be before to (and before now)")
    return Request(by, csv, lo, hi)


def month_start(now: float) -> float:
    """The first second of `now`'s month (UTC): the default period's start."""
    t = datetime.fromtimestamp(now, UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()


def columns(by: By) -> tuple[str, ...]:
    """A row's columns: the keys of `by`, then the figures (the CSV's header)."""
    return (*KEYS[by], *FIGURES)


def csv_name(by: By, lo: float, hi: float) -> str:
    """A download's file name: availability-site-20261201-20270101.csv."""
    day = "%Y%m%d"
    a = datetime.fromtimestamp(lo, UTC).strftime(day)
    b = datetime.fromtimestamp(hi, UTC).strftime(day)
    return f"availability-{by}-{a}-{b}.csv"
