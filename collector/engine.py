"""The incident engine: events in, incidents out (DESIGN: "decide at the centre").

Rules, per incident key (site, device, resource, kind):
- a problem event opens the key's incident, or bumps its count if one is open;
  a problem soon after the key's last incident was resolved reopens that one;
- the clearing event (state up / ok / established) resolves it (auto-resolve);
- an event seen before (same site, agent and event id: a replay or a redelivery)
  changes nothing;
- `flap_transitions` transitions within `flap_window` mark the incident
  flapping: notifications are held until it has been quiet for `flap_window`;
- correlation: a device incident opened while its site's agent was offline,
  an interface/BGP/threshold incident of an unreachable device, and an
  incident of a device whose inventory parent is unreachable are suppressed
  under their cause;
- maintenance windows mark incidents `maintenance` (notifications held).

Events in any order: replicas take an agent's messages in turns and a redelivery
comes after what followed it, so a key's events may be decided in any order.
Decisions follow the events' own times and the key's history in the `events`
table (`KeyHistory`), so the result is what time order would have made: the
key's latest event says how it is now; an older problem joins the incident of
its time or opens earlier the one it led to, and one that has cleared since
opens and resolves at once (or reopens the previous incident for that time);
an older clearing event resolves its incident earlier, is a pause in it, or
splits it when the problem came back after `reopen_within`. Flapping counts
transitions in event time; suppression looks at the cause as it stood when the
incident opened, and a cause learnt late suppresses (or, cleared late,
releases) what opened during it. docs/collector.md has the rules and what
stays order dependent.

Every decision runs in one store transaction that holds the site's lock, so
replicas sharing a PostgreSQL store agree; it reads the incident after taking
the lock (another replica may have just changed it). The time-driven sweep
and escalation run on every replica: the sweep holds a global lock and locks
the sites it changes, and an escalation locks its site and re-checks the
level, so each happens once. Every change is logged in the same transaction
(`Tx.add_change`): its id orders it among all replicas' changes.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from collector.config import IncidentsConfig
from collector.model import (
    CLEARING_STATES,
    MOMENTARY_KINDS,
    SEVERITY_RANK,
    Change,
    Incident,
    IncidentChange,
    IncidentKey,
    TimelineEntry,
)
from collector.store import INCIDENT_COLUMNS, Store, Tx, incident_from_row
from enoc.wire import Event, EventsMessage, Severity, StatusMessage

AGENT_OFFLINE = "agent_offline"
PRUNE_EVERY = 600.0  # seconds between prunes of old events


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


@dataclass(frozen=True)
class MaintenanceWindow:
    id: int
    site: str
    device: str
    match: str  # glob on "site/device/resource/kind"
    starts: float
    ends: float
    every: float = 0.0  # recurring period in seconds (0: one-off)
    until: float | None = None
    reason: str = ""
    created_by: str = ""

    def active(self, at: float) -> bool:
        if at < self.starts or (self.until is not None and at > self.until):
            return False
        if self.every <= 0:
            return at < self.ends
        return (at - self.starts) % self.every < (self.ends - self.starts)

    def covers(self, key: IncidentKey, at: float) -> bool:
        if self.site and self.site != key.site:
            return False
        if self.device and self.device != key.device:
            return False
        if self.match and not fnmatch.fnmatchcase(str(key), self.match):
            return False
        return self.active(at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site": self.site,
            "device": self.device,
            "match": self.match,
            "starts": self.starts,
            "ends": self.ends,
            "every": self.every,
            "until": self.until,
            "reason": self.reason,
            "created_by": self.created_by,
        }


def _window(row: tuple[Any, ...]) -> MaintenanceWindow:
    id_, site, device, match, starts, ends, every, until, reason, created_by = row
    return MaintenanceWindow(
        int(id_),
        site,
        device,
        match,
        float(starts),
        float(ends),
        float(every),
        None if until is None else float(until),
        reason,
        created_by,
    )


# Kinds whose every event counts, whatever its severity; of the other kinds an "info" event
# that clears nothing is informational: kept in the event log, deciding nothing.
STATE_KINDS = frozenset({"reachability", "link", "bgp"})
_CLEARING_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(CLEARING_STATES)) + ")"
# An event's place in a key's history: by time, and a clearing event after a problem of the
# same time (so that a pair stamped alike reads down-then-up in every arrival order).
_CLEARS = f"CASE WHEN state IN {_CLEARING_SQL} THEN 1 ELSE 0 END"


def decides(event: Event) -> bool:
    """Whether an event takes part in incident decisions."""
    return event.state in CLEARING_STATES or event.severity != "info" or event.kind in STATE_KINDS


@dataclass(frozen=True)
class KeyEvent:
    """A recorded event of a key, as the key's history holds it."""

    at: float
    state: str
    agent: str
    event_id: str
    message: str

    @property
    def clearing(self) -> bool:
        return self.state in CLEARING_STATES

    def entry(self) -> TimelineEntry:
        return TimelineEntry(self.at, "event", self.agent, self.message, self.state, self.event_id)


class KeyHistory:
    """The events the store recorded for one incident key (those that decide), in event
    time: whatever order they arrived in, this is the order they happened in."""

    def __init__(self, tx: Tx, key: IncidentKey) -> None:
        self.tx = tx
        self.where = "site = ? AND device = ? AND resource = ? AND kind = ?"
        if key.kind not in STATE_KINDS:
            self.where += f" AND (state IN {_CLEARING_SQL} OR severity <> 'info')"
        self.params = (key.site, key.device, key.resource, key.kind)

    def _first(self, condition: str, params: tuple[Any, ...], order: str) -> KeyEvent | None:
        row = self.tx.one(
            "SELECT at, state, agent, event_id, message FROM events "
            f"WHERE {self.where} AND {condition} ORDER BY {order} LIMIT 1",
            (*self.params, *params),
        )
        if row is None:
            return None
        return KeyEvent(float(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]))

    def after(self, at: float, clearing: bool) -> KeyEvent | None:
        """The first event after one at `at` (of that kind: clearing or not)."""
        return self._first(
            f"(at > ? OR (at = ? AND {_CLEARS} > ?))", (at, at, int(clearing)), f"at, {_CLEARS}"
        )

    def before(self, at: float, clearing: bool, agent: str, event_id: str) -> KeyEvent | None:
        """The last event before one at `at` (not counting that event itself)."""
        return self._first(
            f"(at < ? OR (at = ? AND {_CLEARS} <= ?)) AND NOT (agent = ? AND event_id = ?)",
            (at, at, int(clearing), agent, event_id),
            f"at DESC, {_CLEARS} DESC",
        )

    def next_clearing(self, at: float) -> KeyEvent | None:
        """The first clearing event after a problem at `at`."""
        return self._first(f"state IN {_CLEARING_SQL} AND at >= ?", (at,), "at")

    def next_problem(self, at: float) -> KeyEvent | None:
        """The first problem after a clearing event at `at`."""
        return self._first(f"state NOT IN {_CLEARING_SQL} AND at > ?", (at,), "at")

    def problems(self, since: float, until: float | None) -> int:
        """How many problem events happened from `since` to `until` (or to now)."""
        row = self.tx.one(
            f"SELECT COUNT(*) FROM events WHERE {self.where} AND state NOT IN {_CLEARING_SQL} "
            "AND at >= ? AND at <= ?",
            (*self.params, since, math.inf if until is None else until),
        )
        return int(row[0]) if row else 0

    def transitions(self, since: float, until: float) -> list[float]:
        """When the key changed state (problem to clear or back) in (since, until]; it
        starts clear, as the agent's edge detector does."""
        last = self._first("at <= ?", (since,), f"at DESC, {_CLEARS} DESC")
        problem = last is not None and not last.clearing
        out = []
        for at, state in self.tx.all(
            f"SELECT at, state FROM events WHERE {self.where} AND at > ? AND at <= ? "
            f"ORDER BY at, {_CLEARS}",
            (*self.params, since, until),
        ):
            if (state not in CLEARING_STATES) != problem:
                problem = not problem
                out.append(float(at))
        return out


@dataclass(frozen=True)
class Step:
    """The event being decided, with what deciding it needs."""

    message: EventsMessage
    event: Event
    key: IncidentKey
    entry: TimelineEntry
    received: float
    windows: list[MaintenanceWindow]


@dataclass
class Outcome:
    """What an event did to the incident it touched."""

    incident: Incident
    changes: list[Change]
    # opened and resolved in one go (the clearing event came first): the "opened" change
    # shows it open, as it was until its resolution
    momentary: bool = False
    # the time it newly made a problem of the key: [since, until or still)
    problem: tuple[float, float | None] | None = None
    extra: list[IncidentChange] = field(default_factory=list)  # of other incidents


def _amended(incident: Incident) -> Change:
    """The change that says an incident's record was amended: "resolved" for a resolved
    one (what it sends again is its resolution, never a firing alert), else "updated"."""
    return "updated" if incident.is_open else "resolved"


def _as_opened(incident: Incident) -> Incident:
    """An incident as it was when it opened, before the resolution that came with it."""
    return replace(
        incident, state="open", resolved=None, resolved_by="", attrs=dict(incident.attrs)
    )


def _within(incident: Incident, at: float) -> bool:
    return incident.opened <= at and (incident.resolved is None or at <= incident.resolved)


def _add_once(tx: Tx, incident_id: int, entry: TimelineEntry) -> None:
    """An event's timeline entry, unless the incident has it (it resolved it before)."""
    if not tx.one(
        "SELECT 1 FROM timeline WHERE incident_id = ? AND event_id = ? AND actor = ?",
        (incident_id, entry.event_id, entry.actor),
    ):
        tx.add_timeline(incident_id, entry)


def _unreachable_at(tx: Tx, site: str, device: str, at: float) -> Incident | None:
    """The device's reachability incident if the device was unreachable at `at`."""
    key = IncidentKey(site, device, "device", "reachability")
    last = KeyHistory(tx, key).before(at, True, "", "")
    if last is None or last.clearing:
        return None
    return tx.incident_at(key, at)


def stale_status(message: StatusMessage, retained: bool, last_seen: float, last_seq: int) -> bool:
    """Whether a status says nothing newer than what the agents table holds.

    An agent numbers its status messages upwards and gives its last will the top
    number of its connection (agent/publisher.py), so a lower `seq` is older news:
    a will or heartbeat of an earlier connection that the broker delivered late (after
    a restart, from a persistent session) must not undo the newer connection's birth.
    A retained copy of the status already applied, delivered again on a resubscribe,
    is old too (its `sent` is earlier than when we took it)."""
    if message.seq < last_seq:
        return True
    return retained and message.seq == last_seq and message.sent <= last_seen


class Engine:
    def __init__(
        self,
        store: Store,
        config: IncidentsConfig,
        *,
        now: Callable[[], float] = time.time,
        origin: str = "",
    ) -> None:
        self.store = store
        self.config = config
        self.now = now
        self.origin = origin  # which replica made a change (kept in the change log)
        self.duplicates = 0  # events seen before (replays, redeliveries)
        self.events_pruned = 0
        self._pruned_at = -math.inf  # when this replica last pruned old events

    def _log(self, tx: Tx, changes: list[IncidentChange]) -> list[IncidentChange]:
        """Log `changes` in the change log, in this transaction: call it last."""
        at = self.now()
        for c in changes:
            c.id = tx.add_change(
                "incident",
                c.as_dict(),
                at=at,
                change=c.change,
                incident_id=c.incident.id,
                origin=self.origin,
            )
        return changes

    # ================================================================ ingest

    async def on_events(self, message: EventsMessage) -> list[IncidentChange]:
        received = self.now()

        def apply(tx: Tx) -> tuple[list[IncidentChange], int]:
            tx.lock_site(message.site)
            windows = self._windows(tx)
            changes: list[IncidentChange] = []
            duplicates = 0
            for event in message.events:
                if not self._record(tx, message, event, received):
                    duplicates += 1
                    continue
                changes += self._event(tx, message, event, received, windows)
            return self._log(tx, changes), duplicates

        changes, duplicates = await self.store.run(apply)
        self.duplicates += duplicates
        return changes

    def _record(self, tx: Tx, message: EventsMessage, event: Event, received: float) -> bool:
        """Remember the event; False when it was seen before."""
        inserted = tx.execute(
            "INSERT INTO events (agent, event_id, site, device, resource, kind, state, severity, "
            "at, received, message, source, attrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (site, agent, event_id) DO NOTHING",
            (
                message.agent,
                event.id,
                message.site,
                event.device,
                event.resource,
                event.kind,
                event.state,
                event.severity,
                event.ts,
                received,
                event.message,
                event.source,
                json.dumps(event.attrs),
            ),
        )
        return inserted > 0

    def _event(
        self,
        tx: Tx,
        message: EventsMessage,
        event: Event,
        received: float,
        windows: list[MaintenanceWindow],
    ) -> list[IncidentChange]:
        """Decide about one new event by its own time (`ts`), given what the store has
        recorded for its key (module docstring: "Events in any order")."""
        if not decides(event):
            return []  # informational: kept in the event log, not an incident
        key = IncidentKey(message.site, event.device, event.resource, event.kind)
        history = KeyHistory(tx, key)
        clearing = event.state in CLEARING_STATES
        later = history.after(event.ts, clearing)
        if event.kind == "reachability" and later is None:  # the device's state now
            tx.execute(
                "INSERT INTO devices (site, device, agent, rtc, reach, updated) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, device) DO UPDATE SET "
                "reach = excluded.reach, updated = excluded.updated, agent = excluded.agent",
                (message.site, event.device, message.agent, message.rtc, event.state, event.ts),
            )
        entry = TimelineEntry(
            event.ts, "event", message.agent, event.message, event.state, event.id
        )
        step = Step(message, event, key, entry, received, windows)
        if later is None:
            outcome = self._newest(tx, step)
        elif clearing:
            outcome = self._late_clearing(tx, step, history)
        else:
            outcome = self._late_problem(tx, step, history)
        if outcome is None:
            return []
        incident = outcome.incident
        hi = event.ts if later is None else max(event.ts, later.at)
        tx.save_incident(incident, self._flap(tx, incident, history, event.ts, hi))
        changes = [
            IncidentChange(
                c, _as_opened(incident) if c == "opened" and outcome.momentary else incident
            )
            for c in outcome.changes
        ]
        changes += outcome.extra
        if outcome.problem is not None:
            changes += self._suppress_beneath(tx, incident, *outcome.problem)
        if clearing and incident.resolved is not None:
            changes += self._release_beyond(tx, incident, incident.resolved)
        return changes

    def _newest(self, tx: Tx, step: Step) -> Outcome | None:
        """The event is the latest the key has (the usual case): it says how things are."""
        event, key = step.event, step.key
        if event.state in CLEARING_STATES:
            incident = tx.open_incident(key)
            if incident is None:
                return None
            incident.state = "resolved"
            incident.resolved = max(event.ts, incident.opened)
            incident.resolved_by = "auto"
            incident.updated = step.received
            tx.add_timeline(incident.id, step.entry)
            return Outcome(incident, ["resolved"])
        incident = tx.open_incident(key)
        if incident is not None:
            self._bump(tx, incident, step)
            return Outcome(incident, ["updated"])
        latest = tx.latest_incident(key)
        if (
            latest is not None
            and latest.resolved is not None
            and event.ts - latest.resolved <= self.config.reopen_within
        ):
            incident = latest
            incident.state = "open"
            incident.resolved, incident.resolved_by = None, ""
            incident.acknowledged, incident.acknowledged_by = None, ""
            incident.count += 1
            incident.updated = step.received
            incident.severity = event.severity
            tx.add_timeline(incident.id, TimelineEntry(event.ts, "reopened", step.message.agent))
            tx.add_timeline(incident.id, step.entry)
            return Outcome(incident, ["opened"], problem=(event.ts, None))
        return self._create(tx, step, None)

    def _late_problem(self, tx: Tx, step: Step, history: KeyHistory) -> Outcome | None:
        """A problem older than what the key recorded since: it joins the incident that
        held its time, or moves the opening of the one it led to earlier, or it was a
        problem that has cleared since: a momentary incident (or a reopening) that opens
        and resolves at once, with both times."""
        event, key, at = step.event, step.key, step.event.ts
        incident = tx.incident_at(key, at)
        end = history.next_clearing(at)
        if incident is not None:  # during an incident: one more event of it
            self._bump(tx, incident, step)
            if end is not None and _within(incident, end.at):  # a pause of it, now
                _add_once(tx, incident.id, end.entry())
            return Outcome(incident, [_amended(incident)])
        after = tx.incident_after(key, at)
        if after is not None and (end is None or after.opened <= end.at):
            return self._open_earlier(tx, after, step, end)
        if end is None:  # nothing after it but problems that opened nothing: decide as now
            return self._newest(tx, step)
        before = tx.incident_before(key, at)
        if (
            before is not None
            and before.resolved is not None
            and at - before.resolved <= self.config.reopen_within
        ):  # it reopened the incident before it, until `end`
            before.resolved, before.resolved_by = max(end.at, before.resolved), "auto"
            before.count += 1
            before.updated = step.received
            if SEVERITY_RANK[event.severity] > SEVERITY_RANK[before.severity]:
                before.severity = event.severity
            tx.add_timeline(before.id, TimelineEntry(at, "reopened", step.message.agent))
            tx.add_timeline(before.id, step.entry)
            _add_once(tx, before.id, end.entry())
            return Outcome(before, ["opened", "resolved"], momentary=True, problem=(at, end.at))
        if after is not None and after.opened - end.at <= self.config.reopen_within:
            return self._open_earlier(tx, after, step, end)  # `after` was its reopening
        return self._create(tx, step, end)

    def _late_clearing(self, tx: Tx, step: Step, history: KeyHistory) -> Outcome | None:
        """A clearing event older than what the key recorded since: it ends the incident
        of its time then (an earlier resolution), or it was a pause of a problem that came
        back (a transition: flapping counts it; the incident stays as the later events
        left it)."""
        event, at = step.event, step.event.ts
        before = history.before(at, True, step.message.agent, event.id)
        if before is None or before.clearing:
            return None  # it was clear already: a repeat
        incident = tx.incident_at(step.key, at)
        if incident is None:
            return None
        relapse = history.next_problem(at)
        tx.add_timeline(incident.id, step.entry)
        incident.updated = step.received
        if (
            relapse is not None
            and relapse.at - at > self.config.reopen_within
            and (incident.resolved is None or incident.resolved >= relapse.at)
        ):
            return self._split(tx, incident, step, history, relapse)
        if relapse is None and incident.is_open:
            incident.state = "resolved"
            incident.resolved = max(at, incident.opened)
            incident.resolved_by = "auto"
            return Outcome(incident, ["resolved"])
        if (
            incident.resolved is not None
            and incident.resolved_by == "auto"
            and incident.resolved > at
            and (relapse is None or relapse.at > incident.resolved)
        ):  # it ended earlier: the clearing events after this one were repeats
            incident.resolved = max(at, incident.opened)
            tx.execute(
                "DELETE FROM timeline WHERE incident_id = ? AND what = 'event' AND at > ?",
                (incident.id, incident.resolved),
            )
        return Outcome(incident, [_amended(incident)])

    def _split(
        self, tx: Tx, incident: Incident, step: Step, history: KeyHistory, relapse: KeyEvent
    ) -> Outcome:
        """A late clearing event ended `incident` at its time, and the problem came back (at
        `relapse`) later than `reopen_within`: in event order, that was a new incident.
        `incident` ends at the clearing event; what followed becomes the new incident, as
        it stands now (state, acknowledgement, escalation, flapping, its timeline)."""
        at = step.event.ts
        later = replace(
            incident,
            id=0,
            opened=relapse.at,
            updated=step.received,
            count=max(1, history.problems(relapse.at, incident.resolved)),
            attrs=dict(incident.attrs),
            timeline=[],
        )
        later.suppressed_by = self._cause(tx, incident.key, relapse.at)
        incident.count = max(1, incident.count - later.count)
        incident.state = "resolved"
        incident.resolved, incident.resolved_by = max(at, incident.opened), "auto"
        if incident.acknowledged is not None and incident.acknowledged > incident.resolved:
            incident.acknowledged, incident.acknowledged_by = None, ""  # that was the later one
        stored = tx.transitions(incident.id)
        tx.save_incident(incident, [y for y in stored if y < relapse.at])  # first: one open
        tx.create_incident(later, [])
        tx.save_incident(later, [y for y in stored if y >= relapse.at])
        tx.execute(
            "UPDATE timeline SET incident_id = ? WHERE incident_id = ? AND at >= ?",
            (later.id, incident.id, relapse.at),
        )
        extra = [IncidentChange("opened", later if later.is_open else _as_opened(later))]
        if not later.is_open:
            extra.append(IncidentChange("resolved", later))
        return Outcome(incident, ["resolved"], extra=extra)

    def _bump(self, tx: Tx, incident: Incident, step: Step) -> None:
        incident.count += 1
        incident.updated = step.received
        if SEVERITY_RANK[step.event.severity] > SEVERITY_RANK[incident.severity]:
            incident.severity = step.event.severity
        tx.add_timeline(incident.id, step.entry)

    def _open_earlier(
        self, tx: Tx, incident: Incident, step: Step, end: KeyEvent | None
    ) -> Outcome:
        """`incident` opened later than a problem that led to it: it opened at that problem
        (and, when `end` came between, cleared then and reopened)."""
        at, opened = step.event.ts, incident.opened
        self._bump(tx, incident, step)
        incident.opened = at
        if incident.suppressed_by is None:  # as things stood when it opened, now
            incident.suppressed_by = self._cause(tx, incident.key, at)
            if incident.suppressed_by is not None:
                tx.add_timeline(
                    incident.id,
                    TimelineEntry(at, "suppressed", "", f"under incident {incident.suppressed_by}"),
                )
        until = opened
        if end is not None and end.at < opened:
            _add_once(tx, incident.id, end.entry())
            tx.add_timeline(incident.id, TimelineEntry(opened, "reopened", step.message.agent))
            until = end.at
        elif end is not None and _within(incident, end.at):
            _add_once(tx, incident.id, end.entry())
        return Outcome(incident, [_amended(incident)], problem=(at, until))

    def _create(self, tx: Tx, step: Step, end: KeyEvent | None) -> Outcome:
        """A new incident; resolved at once by `end` when that clearing event came first."""
        event, key = step.event, step.key
        incident = Incident(
            id=0,
            key=key,
            severity=event.severity,
            state="open",
            title=self._title(event),
            opened=event.ts,
            updated=step.received,
            rtc=step.message.rtc,
            attrs=dict(event.attrs),
        )
        if end is not None:  # inserted resolved: another incident of the key may be open
            incident.state = "resolved"
            incident.resolved, incident.resolved_by = end.at, "auto"
        incident.suppressed_by = self._cause(tx, key, event.ts)
        incident.maintenance = any(w.covers(key, event.ts) for w in step.windows)
        tx.create_incident(incident, [])
        tx.add_timeline(incident.id, step.entry)
        if incident.suppressed_by is not None:
            tx.add_timeline(
                incident.id,
                TimelineEntry(
                    event.ts, "suppressed", "", f"under incident {incident.suppressed_by}"
                ),
            )
        if end is None:
            return Outcome(incident, ["opened"], problem=(event.ts, None))
        _add_once(tx, incident.id, end.entry())
        return Outcome(incident, ["opened", "resolved"], momentary=True, problem=(event.ts, end.at))

    @staticmethod
    def _title(event: Event) -> str:
        text = event.message or f"{event.kind} {event.state}"
        return f"{event.device}: {text}" if event.device else text

    def _flap(
        self, tx: Tx, incident: Incident, history: KeyHistory, at: float, hi: float
    ) -> list[float]:
        """The key's transitions by event time, an event at `at` having changed those up
        to `hi`; marks the incident flapping when a window of `flap_window` ending at or
        after `at` holds `flap_transitions` of them. Returns what to store (the sweep
        reads the last to tell when it settled)."""
        window = float(self.config.flap_window)
        near = history.transitions(at - window, hi + window)
        if not incident.flapping:
            for x in (x for x in near if x >= at):
                n = sum(1 for y in near if x - window < y <= x)
                if n >= self.config.flap_transitions:
                    incident.flapping = True
                    tx.add_timeline(
                        incident.id,
                        TimelineEntry(
                            x,
                            "flapping",
                            "",
                            f"{n} transitions within {window:.0f} s: "
                            "notifications held until it settles",
                        ),
                    )
                    break
        kept = [y for y in tx.transitions(incident.id) if y <= at - window or y > hi + window]
        return sorted(kept + near)[-64:]

    def _cause(self, tx: Tx, key: IncidentKey, at: float) -> int | None:
        """The incident that explains one opened at `at`, if any (see the module
        docstring), as things stood at `at`."""
        row = tx.one(
            "SELECT id FROM incidents WHERE site = ? AND device = '' AND kind = ? "
            "AND opened <= ? AND (resolved IS NULL OR resolved >= ?) ORDER BY id DESC LIMIT 1",
            (key.site, AGENT_OFFLINE, at, at),
        )
        if row is not None:
            return int(row[0])
        if not key.device:
            return None
        if key.kind != "reachability":
            down = _unreachable_at(tx, key.site, key.device, at)
            if down is not None:
                return down.id
        parent = tx.one(
            "SELECT parent FROM devices WHERE site = ? AND device = ?", (key.site, key.device)
        )
        if parent is not None and parent[0]:
            down = _unreachable_at(tx, key.site, parent[0], at)
            if down is not None:
                return down.id
        return None

    def _suppress_beneath(
        self, tx: Tx, cause: Incident, since: float, until: float | None
    ) -> list[IncidentChange]:
        """A device's unreachability now known to span [since, until) explains the incidents
        of the device and of its children that opened then, recorded before it was known
        (their events came first): they are suppressed under it as if it had come first."""
        k = cause.key
        if k.kind != "reachability" or k.resource != "device" or not k.device:
            return []
        children = [
            str(r[0])
            for r in tx.all(
                "SELECT device FROM devices WHERE site = ? AND parent = ?", (k.site, k.device)
            )
        ]
        beneath = "(device = ? AND kind <> 'reachability')"
        if children:
            beneath = f"({beneath} OR device IN ({', '.join('?' * len(children))}))"
        where = f"site = ? AND suppressed_by IS NULL AND id <> ? AND opened >= ? AND {beneath}"
        params: list[Any] = [k.site, cause.id, since, k.device, *children]
        if until is not None:
            where += " AND opened < ?"
            params.append(until)
        changes = []
        for incident in tx.incidents(where, params):
            incident.suppressed_by = cause.id
            tx.add_timeline(
                incident.id,
                TimelineEntry(incident.opened, "suppressed", "", f"under incident {cause.id}"),
            )
            tx.save_incident(incident, tx.transitions(incident.id))
            changes.append(IncidentChange(_amended(incident), incident))
        return changes

    def _release_beyond(self, tx: Tx, cause: Incident, since: float) -> list[IncidentChange]:
        """A device now known to be reachable again from `since` explains nothing that opened
        after it: what was suppressed under it then (its events came before the clearing
        event) is decided again, as it would have been had the clearing come first."""
        if cause.key.kind != "reachability" or cause.key.resource != "device":
            return []
        changes = []
        for incident in tx.incidents(
            "site = ? AND suppressed_by = ? AND opened > ?", (cause.key.site, cause.id, since)
        ):
            incident.suppressed_by = self._cause(tx, incident.key, incident.opened)
            if incident.suppressed_by == cause.id:
                continue
            text = (
                f"under incident {incident.suppressed_by}"
                if incident.suppressed_by is not None
                else f"no longer under incident {cause.id}"
            )
            tx.add_timeline(incident.id, TimelineEntry(incident.opened, "suppressed", "", text))
            tx.save_incident(incident, tx.transitions(incident.id))
            changes.append(IncidentChange(_amended(incident), incident))
        return changes

    # ---------------------------------------------------------------- agent status

    async def on_status(
        self, message: StatusMessage, *, retained: bool = False
    ) -> list[IncidentChange]:
        received = self.now()
        seen = message.sent if retained else received

        def apply(tx: Tx) -> list[IncidentChange]:
            tx.lock_site(message.site)
            row = tx.one(
                "SELECT last_seen, status_seq FROM agents WHERE site = ? AND agent = ?",
                (message.site, message.agent),
            )
            if row is not None and stale_status(message, retained, float(row[0]), int(row[1])):
                return []
            # Every replica hears every status; the first to apply a live one streams it.
            first = row is None or message.seq > int(row[1])
            tx.execute(
                "INSERT INTO agents (agent, site, rtc, state, last_seen, version, inventory_size, "
                "health, status_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, agent) "
                "DO UPDATE SET rtc = excluded.rtc, state = excluded.state, "
                "last_seen = excluded.last_seen, version = excluded.version, "
                "inventory_size = excluded.inventory_size, health = excluded.health, "
                "status_seq = excluded.status_seq",
                (
                    message.agent,
                    message.site,
                    message.rtc,
                    message.state,
                    seen,
                    message.version,
                    message.inventory_size,
                    json.dumps(message.health),
                    message.seq,
                ),
            )
            for device in message.devices:
                tx.execute(
                    "INSERT INTO devices (site, device, agent, rtc, address, role, parent, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, device) DO "
                    "UPDATE SET agent = excluded.agent, rtc = excluded.rtc, "
                    "address = excluded.address, role = excluded.role, parent = excluded.parent",
                    (
                        message.site,
                        device.name,
                        message.agent,
                        message.rtc,
                        device.address,
                        device.role,
                        device.parent,
                        seen,
                    ),
                )
            if message.state == "offline":
                changes = self._agent_offline(
                    tx, message.site, message.agent, message.rtc, seen, "said offline (last will)"
                )
            else:
                changes = self._agent_online(tx, message.site, message.agent, seen)
            self._log(tx, changes)
            if first and not retained:
                tx.add_change(
                    "status",
                    {
                        "site": message.site,
                        "agent": message.agent,
                        "rtc": message.rtc,
                        "state": message.state,
                        "ts": message.sent,
                    },
                    at=received,
                    change=message.state,
                    origin=self.origin,
                )
            return changes

        return await self.store.run(apply)

    def _agent_offline(
        self, tx: Tx, site: str, agent: str, rtc: str, at: float, why: str
    ) -> list[IncidentChange]:
        tx.execute(
            "UPDATE agents SET state = 'offline' WHERE site = ? AND agent = ?", (site, agent)
        )
        key = IncidentKey(site, "", f"agent:{agent}", AGENT_OFFLINE)
        if tx.open_incident(key) is not None:
            return []
        incident = Incident(
            id=0,
            key=key,
            severity="critical",
            state="open",
            title=f"site {site}: agent {agent} {why}; its devices are unknown",
            opened=at,
            updated=self.now(),
            rtc=rtc,
        )
        incident.maintenance = any(w.covers(key, at) for w in self._windows(tx))
        tx.create_incident(incident, [at])
        tx.add_timeline(incident.id, TimelineEntry(at, "event", agent, why, "offline"))
        return [IncidentChange("opened", incident)]

    def _agent_online(self, tx: Tx, site: str, agent: str, at: float) -> list[IncidentChange]:
        incident = tx.open_incident(IncidentKey(site, "", f"agent:{agent}", AGENT_OFFLINE))
        if incident is None:
            return []
        incident.state = "resolved"
        incident.resolved = max(at, incident.opened)
        incident.resolved_by = "auto"
        incident.updated = self.now()
        tx.add_timeline(incident.id, TimelineEntry(at, "event", agent, "back online", "online"))
        tx.save_incident(incident, tx.transitions(incident.id))
        return [IncidentChange("resolved", incident)]

    # ================================================================ time-driven rules

    async def sweep(self) -> list[IncidentChange]:
        """Heartbeat timeouts, flapping that settled, expiring one-off incidents, maintenance.

        Replicas sweep together: a global lock lets one sweep at a time, and the sites
        it is about to change are locked (then re-read) so that no event of theirs is
        decided in between."""
        now = self.now()
        c = self.config

        def stale(tx: Tx) -> list[tuple[Any, ...]]:
            return tx.all(
                "SELECT agent, site, rtc FROM agents WHERE state = 'online' AND last_seen < ? "
                "ORDER BY site, agent",
                (now - c.agent_timeout,),
            )

        def apply(tx: Tx) -> list[IncidentChange]:
            tx.lock("sweep")
            windows = self._windows(tx)
            due = [
                incident.id
                for incident, transitions in self._sweepable(tx)
                if self._sweep_one(incident, transitions, windows, now, dry=True)
            ]
            sites = {s for _, s, _ in stale(tx)}
            if due:
                placeholders = ", ".join("?" * len(due))
                sites.update(
                    r[0]
                    for r in tx.all(f"SELECT site FROM incidents WHERE id IN ({placeholders})", due)
                )
            if not sites:
                return []
            for site in sorted(sites):
                tx.lock_site(site)
            # under the locks: what is true now
            changes: list[IncidentChange] = []
            for agent, site, rtc in stale(tx):
                if site in sites:
                    changes += self._agent_offline(
                        tx, site, agent, rtc, now, f"sent no heartbeat for {c.agent_timeout:.0f} s"
                    )
            if due:
                placeholders = ", ".join("?" * len(due))
                for incident, transitions in self._sweepable(tx, f"id IN ({placeholders})", due):
                    changed = self._sweep_one(incident, transitions, windows, now, tx=tx)
                    if changed is not None:
                        tx.save_incident(incident, transitions)
                        changes.append(IncidentChange(changed, incident))
            return self._log(tx, changes)

        changes = await self.store.run(apply)
        await self._prune_events(now)
        return changes

    async def _prune_events(self, now: float) -> None:
        """Events older than `events_retention` go: the incidents and their timelines keep
        what happened; the events table is for deduplication and event-time decisions,
        which no redelivery that old needs. At most every PRUNE_EVERY seconds."""
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        before = now - float(self.config.events_retention)

        def apply(tx: Tx) -> int:
            return tx.execute("DELETE FROM events WHERE received < ?", (before,))

        self.events_pruned += max(0, await self.store.run(apply))

    @staticmethod
    def _sweepable(
        tx: Tx, where: str = "", params: list[int] | None = None
    ) -> list[tuple[Incident, list[float]]]:
        """Open or flapping incidents with their transitions, in one query."""
        sql = (
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE (state <> 'resolved' OR flapping = 1)"
            + (f" AND {where}" if where else "")
            + " ORDER BY id DESC"
        )
        return [
            (incident_from_row(r), [float(t) for t in json.loads(r[20])])
            for r in tx.all(sql, params or [])
        ]

    def _sweep_one(
        self,
        incident: Incident,
        transitions: list[float],
        windows: list[MaintenanceWindow],
        now: float,
        *,
        dry: bool = False,
        tx: Tx | None = None,
    ) -> Change | None:
        """What the sweep changes about `incident`; applied (timeline included) unless dry."""
        c = self.config
        changed: Change | None = None

        def note(entry: TimelineEntry) -> None:
            if tx is not None:
                tx.add_timeline(incident.id, entry)

        if incident.flapping and (not transitions or transitions[-1] < now - c.flap_window):
            if dry:
                return "updated"
            incident.flapping = False
            note(TimelineEntry(now, "settled", "", "stopped flapping"))
            changed = "resolved" if incident.state == "resolved" else "updated"
        if incident.is_open:
            in_maintenance = any(w.covers(incident.key, now) for w in windows)
            if in_maintenance != incident.maintenance:
                if dry:
                    return "updated"
                incident.maintenance = in_maintenance
                word = "entered" if in_maintenance else "left"
                note(TimelineEntry(now, "maintenance", "", word))
                changed = changed or "updated"
            if (
                incident.key.kind in MOMENTARY_KINDS
                and incident.updated < now - c.momentary_resolve_after
            ):
                if dry:
                    return "resolved"
                incident.state = "resolved"
                incident.resolved, incident.resolved_by = now, "auto"
                note(TimelineEntry(now, "resolve", "auto", "one-off event, nothing since"))
                changed = "resolved"
        return changed

    async def escalate(self, incident_id: int, level: int) -> IncidentChange | None:
        """Raise an open, unacknowledged, notifiable incident to `level` (once: every
        replica's sweeper may ask, the first under the site's lock does it)."""

        def apply(tx: Tx) -> IncidentChange | None:
            found = tx.incident(incident_id)
            if found is None:
                return None
            tx.lock_site(found.key.site)
            incident = tx.incident(incident_id)  # under the lock: another replica's level
            if (
                incident is None
                or incident.state != "open"
                or not incident.notifiable
                or incident.escalated >= level
            ):
                return None
            incident.escalated = level
            tx.add_timeline(
                incident_id, TimelineEntry(self.now(), "escalated", "", f"level {level}")
            )
            tx.save_incident(incident, tx.transitions(incident_id))
            return self._log(tx, [IncidentChange("escalated", incident)])[0]

        return await self.store.run(apply)

    # ================================================================ operators

    async def act(
        self, incident_id: int, action: str, actor: str, text: str = ""
    ) -> IncidentChange:
        """ack, resolve or comment, by an operator; audited."""
        now = self.now()

        def apply(tx: Tx) -> IncidentChange:
            found = tx.incident(incident_id)
            if found is None:
                raise NotFound(f"no incident {incident_id}")
            tx.lock_site(found.key.site)
            incident = tx.incident(incident_id)  # under the lock: another replica's action
            assert incident is not None  # incidents are never deleted
            change: Change
            if action == "ack":
                if incident.state != "open":
                    raise Conflict(f"incident {incident_id} is {incident.state}, not open")
                incident.state = "acknowledged"
                incident.acknowledged, incident.acknowledged_by = now, actor
                change = "acknowledged"
            elif action == "resolve":
                if incident.state == "resolved":
                    raise Conflict(f"incident {incident_id} is already resolved")
                incident.state = "resolved"
                incident.resolved, incident.resolved_by = now, actor
                if incident.acknowledged is None:
                    incident.acknowledged, incident.acknowledged_by = now, actor
                change = "resolved"
            elif action == "comment":
                if not text.strip():
                    raise ValueError("a comment needs text")
                change = "commented"
            else:
                raise ValueError(f"unknown action {action!r}")
            incident.updated = now
            tx.add_timeline(incident_id, TimelineEntry(now, action, actor, text))
            tx.save_incident(incident, tx.transitions(incident_id))
            tx.audit(actor, action, f"incident:{incident_id}", text)
            return self._log(tx, [IncidentChange(change, incident)])[0]

        return await self.store.run(apply)

    # ================================================================ maintenance

    @staticmethod
    def _windows(tx: Tx) -> list[MaintenanceWindow]:
        return [
            _window(r)
            for r in tx.all(
                "SELECT id, site, device, match, starts, ends, every, until, reason, created_by "
                "FROM maintenance ORDER BY id"
            )
        ]

    async def windows(self) -> list[MaintenanceWindow]:
        return await self.store.run(self._windows)

    async def add_window(self, window: MaintenanceWindow, actor: str) -> MaintenanceWindow:
        if window.ends <= window.starts:
            raise ValueError("ends must be after starts")
        if window.every and window.every < window.ends - window.starts:
            raise ValueError("every must be at least as long as the window (ends - starts)")
        if not (window.site or window.device or window.match):
            raise ValueError("a maintenance window needs site, device or match")

        def apply(tx: Tx) -> MaintenanceWindow:
            new_id = tx.insert(
                "INSERT INTO maintenance (site, device, match, starts, ends, every, until, "
                "reason, created_by, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    window.site,
                    window.device,
                    window.match,
                    window.starts,
                    window.ends,
                    window.every,
                    window.until,
                    window.reason,
                    actor,
                    self.now(),
                ),
            )
            tx.audit(
                actor, "maintenance.add", f"maintenance:{new_id}", json.dumps(window.as_dict())
            )
            return MaintenanceWindow(**{**window.as_dict(), "id": new_id, "created_by": actor})

        return await self.store.run(apply)

    async def delete_window(self, window_id: int, actor: str) -> None:
        def apply(tx: Tx) -> None:
            if not tx.execute("DELETE FROM maintenance WHERE id = ?", (window_id,)):
                raise NotFound(f"no maintenance window {window_id}")
            tx.audit(actor, "maintenance.delete", f"maintenance:{window_id}")

        await self.store.run(apply)

    # ================================================================ queries

    async def incidents(
        self,
        *,
        state: str = "",
        site: str = "",
        severity: str = "",
        rtc: str = "",
        limit: int = 500,
    ) -> list[Incident]:
        clauses, params = [], []
        if state == "active":
            clauses.append("state <> 'resolved'")
        elif state:
            clauses.append("state = ?")
            params.append(state)
        for column, value in (("site", site), ("severity", severity), ("rtc", rtc)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        return await self.store.run(lambda tx: tx.incidents(where, params, limit=limit))

    async def open_counts(self) -> dict[str, int]:
        """Open (not resolved, not suppressed) incidents by severity (one read, not retried:
        /metrics must answer quickly while the store is away)."""
        rows = await self.store.read(
            lambda tx: tx.all(
                "SELECT severity, COUNT(*) FROM incidents WHERE state <> 'resolved' "
                "AND suppressed_by IS NULL GROUP BY severity"
            )
        )
        return {str(severity): int(count) for severity, count in rows}

    async def incident(self, incident_id: int) -> Incident:
        found = await self.store.run(lambda tx: tx.incident(incident_id, timeline=True))
        if found is None:
            raise NotFound(f"no incident {incident_id}")
        return found

    async def agents(self) -> list[dict[str, Any]]:
        rows = await self.store.run(
            lambda tx: tx.all(
                "SELECT agent, site, rtc, state, last_seen, version, inventory_size, health "
                "FROM agents ORDER BY site, agent"
            )
        )
        return [
            {
                "agent": a,
                "site": s,
                "rtc": r,
                "state": st,
                "last_seen": ls,
                "version": v,
                "inventory_size": n,
                "health": json.loads(h),
            }
            for a, s, r, st, ls, v, n, h in rows
        ]

    async def devices(self, site: str = "") -> list[dict[str, Any]]:
        def query(tx: Tx) -> list[tuple[Any, ...]]:
            return tx.all(
                "SELECT d.site, d.device, d.agent, d.rtc, d.address, d.role, d.parent, d.reach, "
                "COALESCE(a.state, 'unknown'), "
                "(SELECT COUNT(*) FROM incidents i WHERE i.site = d.site AND i.device = d.device "
                " AND i.state <> 'resolved') "
                "FROM devices d LEFT JOIN agents a ON a.site = d.site AND a.agent = d.agent "
                + ("WHERE d.site = ? " if site else "")
                + "ORDER BY d.site, d.device",
                (site,) if site else (),
            )

        out = []
        for (
            s,
            d,
            agent,
            rtc,
            address,
            role,
            parent,
            reach,
            agent_state,
            open_,
        ) in await self.store.run(query):
            state = reach if agent_state == "online" else "unknown"
            out.append(
                {
                    "site": s,
                    "device": d,
                    "agent": agent,
                    "rtc": rtc,
                    "address": address,
                    "role": role,
                    "parent": parent,
                    "state": state,
                    "open_incidents": int(open_),
                }
            )
        return out

    async def sites(self) -> list[dict[str, Any]]:
        devices = await self.devices()
        agents = await self.agents()
        open_rows = await self.store.run(
            lambda tx: tx.all(
                "SELECT site, severity, COUNT(*) FROM incidents WHERE state <> 'resolved' "
                "AND suppressed_by IS NULL GROUP BY site, severity"
            )
        )
        sites: dict[str, dict[str, Any]] = {}

        def site(name: str, rtc: str = "") -> dict[str, Any]:
            entry = sites.setdefault(
                name,
                {
                    "site": name,
                    "rtc": rtc,
                    "devices": {"up": 0, "down": 0, "unknown": 0},
                    "incidents": dict.fromkeys(SEVERITY_RANK, 0),
                    "agents": [],
                    "spool_depth": 0,
                },
            )
            if rtc and not entry["rtc"]:
                entry["rtc"] = rtc
            return entry

        for a in agents:
            entry = site(a["site"], a["rtc"])
            entry["agents"].append({"agent": a["agent"], "state": a["state"]})
            depth = a["health"].get("spool_depth", 0)
            entry["spool_depth"] += depth if isinstance(depth, int | float) else 0
        for d in devices:
            entry = site(d["site"], d["rtc"])
            bucket = d["state"] if d["state"] in ("up", "unknown") else "down"
            entry["devices"][bucket] += 1
        for s, severity, count in open_rows:
            site(s)["incidents"][severity] = int(count)
        for entry in sites.values():
            entry["status"] = _site_status(entry)
        return sorted(sites.values(), key=lambda e: (e["rtc"], e["site"]))

    async def stats(self, since: float, until: float) -> list[dict[str, Any]]:
        """MTTA and MTTR (seconds) of incidents opened in [since, until), by site and severity."""
        rows = await self.store.run(
            lambda tx: tx.all(
                "SELECT site, severity, COUNT(*), "
                "SUM(CASE WHEN acknowledged IS NOT NULL THEN 1 ELSE 0 END), "
                "AVG(CASE WHEN acknowledged IS NOT NULL THEN acknowledged - opened END), "
                "SUM(CASE WHEN resolved IS NOT NULL THEN 1 ELSE 0 END), "
                "AVG(CASE WHEN resolved IS NOT NULL THEN resolved - opened END) "
                "FROM incidents WHERE opened >= ? AND opened < ? AND suppressed_by IS NULL "
                "GROUP BY site, severity ORDER BY site, severity",
                (since, until),
            )
        )
        return [
            {
                "site": site,
                "severity": severity,
                "incidents": int(n),
                "acknowledged": int(acked or 0),
                "mtta_s": None if mtta is None else round(float(mtta), 3),
                "resolved": int(resolved or 0),
                "mttr_s": None if mttr is None else round(float(mttr), 3),
            }
            for site, severity, n, acked, mtta, resolved, mttr in rows
        ]


def _site_status(entry: dict[str, Any]) -> str:
    """green / amber / red / grey (unknown), the console's tile colour."""
    agents = entry["agents"]
    if agents and all(a["state"] != "online" for a in agents):
        return "grey"
    incidents = entry["incidents"]
    if incidents["critical"] or incidents["major"] or entry["devices"]["down"]:
        return "red"
    if incidents["minor"] or incidents["warning"]:
        return "amber"
    return "green"


def severity_of(text: str) -> Severity:
    if text not in SEVERITY_RANK:
        raise ValueError(f"severity must be one of {', '.join(SEVERITY_RANK)}")
    return text  # type: ignore[return-value]
