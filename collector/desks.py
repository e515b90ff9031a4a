"""Follow the sun: service desks, their shifts, and which desk an incident goes to.

A desk works `hours` (local, "08:00-17:00"; "22:00-06:00" runs past midnight) on `days`
(the days a shift starts) in its `timezone`. Shifts are computed in local time with
zoneinfo, so a shift of 08:00-17:00 stays 08:00-17:00 on the wall clock across a
daylight-saving change (and is an hour longer or shorter in UTC that day).

The desk *on shift* at an instant is, of the desks working then, the one whose shift
began first: it keeps the watch until its shift ends, and an overlapping desk takes over
then (the handover, collector/handover.py). When no desk works (a gap between shifts),
the desk on shift is the next one to start, which will find the incident in its
handover summary.

Routes (`notifications.routes`) send an incident to a desk by its RTC, site, severity
and the time of day; the first route that matches wins, `desk: on-shift` names the desk
on shift, and when no route matches the incident goes to the desk on shift. A desk's
`receivers` hear the incidents routed to it; `escalation: {1: [...], 2: [...]}` adds
receivers once the engine has escalated an incident to that level
(`notifications.escalate_after`). A receiver named by no desk hears every incident, as
without desks.

Everything here is a pure function of an injected `now` (Unix seconds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from collector.config import DeskConfig, NotificationsConfig, RouteConfig

ON_SHIFT = "on-shift"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone ("Asia/Bangkok"); ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f'timezone "{name}" is not an IANA time zone like "Europe/Rome"'
        raise ValueError(msg) from None


def parse_hours(text: str) -> tuple[int, int]:
    """ "08:00-17:00" -> (480, 1020), minutes after local midnight; the end may be before
    the start (past midnight) and "24:00" is the day's end."""
    match = _HOURS.match(text)
    if match is None:
        msg = f'hours must be like "08:00-17:00", got "{text}"'
        raise ValueError(msg)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or start == end:
        msg = f'hours must be two different times from 00:00 to 24:00, got "{text}"'
        raise ValueError(msg)
    return start, end


def parse_days(days: str | list[str]) -> frozenset[int]:
    """ "mon-fri", "sat,sun", "fri-mon" (wraps), ["mon", "wed"], "daily" -> weekday
    numbers (Monday 0)."""
    items = days if isinstance(days, list) else days.split(",")
    out: set[int] = set()
    for raw in items:
        item = raw.strip().lower()
        if item in ("daily", "every day"):
            out.update(range(7))
            continue
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            msg = f'days must be like "mon-fri" or [mon, wed] (mon ... sun), got "{raw}"'
            raise ValueError(msg)
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if not out:
        msg = "days must name at least one day"
        raise ValueError(msg)
    return frozenset(out)


@dataclass(frozen=True)
class Window:
    """Local hours on some days in one time zone: a desk's shifts, a route's time of day."""

    zone: ZoneInfo
    start: int  # minutes after local midnight
    end: int
    days: frozenset[int]

    @classmethod
    def parse(cls, timezone: str, hours: str, days: str | list[str]) -> Window:
        start, end = parse_hours(hours)
        return cls(parse_timezone(timezone), start, end, parse_days(days))

    def _local(self, day: date, minutes: int) -> float:
        # Wall-clock arithmetic (an aware datetime plus a timedelta keeps the zone and
        # moves the wall clock); a time the clock skips (spring forward) or repeats (fall
        # back) is taken as its first reading (fold 0).
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return (midnight + timedelta(minutes=minutes)).timestamp()

    def shifts(self, since: float, until: float) -> list[tuple[float, float]]:
        """(start, end) in Unix seconds of every window that overlaps [since, until),
        oldest first."""
        first = datetime.fromtimestamp(since, self.zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(until, self.zone).date()
        out = []
        day = first
        while day <= last:
            if day.weekday() in self.days:
                start = self._local(day, self.start)
                end_day = day + timedelta(days=1) if self.end <= self.start else day
                end = self._local(end_day, self.end)
                if end > since and start < until:
                    out.append((start, end))
            day += timedelta(days=1)
        return out

    def current(self, now: float) -> tuple[float, float] | None:
        """The window containing `now` ([start, end)), if any."""
        for start, end in self.shifts(now, now + 1):
            if start <= now < end:
                return start, end
        return None

    def contains(self, now: float) -> bool:
        return self.current(now) is not None


@dataclass(frozen=True)
class Desk:
    name: str
    window: Window
    receivers: tuple[str, ...]
    escalation: tuple[tuple[int, tuple[str, ...]], ...]  # (level, receivers), ascending

    @classmethod
    def of(cls, config: DeskConfig) -> Desk:
        levels = sorted((int(k), tuple(v)) for k, v in config.escalation.items())
        return cls(
            config.name,
            Window.parse(config.timezone, config.hours, config.days),
            tuple(config.receivers),
            tuple(levels),
        )

    def receivers_at(self, level: int) -> set[str]:
        """Who hears an incident of this desk escalated to `level` (0: not escalated)."""
        out = set(self.receivers)
        for at, names in self.escalation:
            if at <= level:
                out.update(names)
        return out

    @property
    def named(self) -> set[str]:
        return self.receivers_at(10**9)


@dataclass(frozen=True)
class Route:
    rtc: frozenset[str]
    site: frozenset[str]
    severity: frozenset[str]
    window: Window | None
    desk: str

    @classmethod
    def of(cls, config: RouteConfig) -> Route:
        match = config.match
        window = None
        if match.hours:
            window = Window.parse(match.timezone, match.hours, match.days)
        return cls(
            _names(match.rtc), _names(match.site), _names(match.severity), window, config.desk
        )

    def matches(self, incident: Mapping[str, Any], now: float) -> bool:
        return (
            (not self.rtc or incident["rtc"] in self.rtc)
            and (not self.site or incident["site"] in self.site)
            and (not self.severity or incident["severity"] in self.severity)
            and (self.window is None or self.window.contains(now))
        )


def _names(value: str | list[str]) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value) - {""}


@dataclass(frozen=True)
class Shift:
    """One shift of one desk: [start, end) in Unix seconds."""

    desk: str
    start: float
    end: float


class Desks:
    """The desks and routes of `notifications`: who is on shift, where an incident goes,
    which receivers hear it. Empty (no desks) routes nothing: every receiver hears all."""

    def __init__(self, desks: Iterable[Desk], routes: Iterable[Route]) -> None:
        self.desks = {desk.name: desk for desk in desks}
        self.routes = list(routes)
        self.managed: set[str] = set()  # receivers some desk names
        self._minute: tuple[int, str | None] | None = None  # on_shift's last answer
        for desk in self.desks.values():
            self.managed |= desk.named

    @classmethod
    def of(cls, config: NotificationsConfig) -> Desks:
        return cls((Desk.of(d) for d in config.desks), (Route.of(r) for r in config.routes))

    def __bool__(self) -> bool:
        return bool(self.desks)

    def shifts(self, since: float, until: float) -> list[Shift]:
        """Every desk's shifts overlapping [since, until), by start then config order."""
        out = [
            Shift(desk.name, start, end)
            for desk in self.desks.values()
            for start, end in desk.window.shifts(since, until)
        ]
        order = list(self.desks)
        return sorted(out, key=lambda s: (s.start, order.index(s.desk)))

    def on_shift(self, now: float) -> str | None:
        """The desk on shift at `now` (see the module doc); None without desks."""
        # Shifts begin and end on whole minutes (every zone's offset is whole minutes),
        # so the answer holds for the minute: a burst of changes asks once.
        minute = math.floor(now / 60)
        if self._minute is None or self._minute[0] != minute:
            self._minute = (minute, self._on_shift(minute * 60.0))
        return self._minute[1]

    def _on_shift(self, now: float) -> str | None:
        working = [s for s in self.shifts(now, now + 1) if s.start <= now < s.end]
        if working:
            return working[0].desk  # began first; config order on a tie
        ahead = [s for s in self.shifts(now, now + 8 * 86400) if s.start > now]
        return ahead[0].desk if ahead else None

    def desk_for(self, incident: Mapping[str, Any], now: float) -> str | None:
        """The desk `incident` goes to at `now`: the first matching route's, else the desk
        on shift."""
        for route in self.routes:
            if route.matches(incident, now):
                return route.desk if route.desk != ON_SHIFT else self.on_shift(now)
        return self.on_shift(now)

    def hears(self, receiver: str, incident: Mapping[str, Any], now: float) -> bool:
        """Whether `receiver` should hear of `incident` at `now`."""
        if receiver not in self.managed:
            return True
        desk = self.desk_for(incident, now)
        if desk is None:
            return False
        return receiver in self.desks[desk].receivers_at(int(incident.get("escalated") or 0))

    def handovers(self, since: float, until: float) -> list[tuple[Shift, str]]:
        """The shift changes in (since, until]: each ending shift of the desk on shift
        until then, with the desk that takes the watch (on shift as it ends)."""
        out = []
        for shift in self.shifts(since - 86400, until):
            if not since < shift.end <= until or self.on_shift(shift.end - 1) != shift.desk:
                continue  # an overlapping desk that never had the watch hands nothing over
            after = self.on_shift(shift.end)
            if after is not None and after != shift.desk:
                out.append((shift, after))
        return sorted(out, key=lambda pair: (pair[0].end, pair[0].desk))
