"""Event rules: what one new event does to its key's incidents, decided by event time.

Per incident key (site, device, resource, kind):
- a problem event opens the key's incident, or bumps its count if one is open;
  a problem soon after the key's last incident was resolved reopens that one;
- the clearing event (state up / ok / established) resolves it (auto-resolve);
- `flap_transitions` transitions within `flap_window` mark the incident
  flapping: notifications are held until it has been quiet for `flap_window`;
- an incident explained by another is suppressed under it (correlation.py);
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
transitions in event time. docs/collector.md has the rules and what stays
order dependent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from collector.config import IncidentsConfig
from collector.incidents.correlation import amended, cause, release_beyond, suppress_beneath
from collector.incidents.model import KeyEvent, MaintenanceWindow, covered
from collector.incidents.records import KeyHistory, Records
from collector.incidents.vocabulary import clears, decides
from collector.model import (
    SEVERITY_RANK,
    Change,
    Incident,
    IncidentChange,
    IncidentKey,
    TimelineEntry,
)
from enoc.wire import Event, EventsMessage


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


def _as_opened(incident: Incident) -> Incident:
    """An incident as it was when it opened, before the resolution that came with it."""
    return replace(
        incident, state="open", resolved=None, resolved_by="", attrs=dict(incident.attrs)
    )


def _within(incident: Incident, at: float) -> bool:
    return incident.opened <= at and (incident.resolved is None or at <= incident.resolved)


def _add_once(db: Records, incident_id: int, entry: TimelineEntry) -> None:
    """An event's timeline entry, unless the incident has it (it resolved it before)."""
    if not db.has_entry(incident_id, entry.event_id, entry.actor):
        db.add_timeline(incident_id, entry)


def _title(event: Event, site: str) -> str:
    text = event.message or f"{event.kind} {event.state}"
    title = f"{event.device}: {text}" if event.device else text
    # A UPS on battery (or with no output) is the site's power, not one device's trouble:
    # its title names the site first (the agent's power sensors, class "source").
    if event.kind == "sensor" and event.attrs.get("class") == "source" and site:
        return f"site {site}: {title}"
    return title


class Rules:
    """Decides events inside the caller's transaction (which holds the site's lock)."""

    def __init__(self, config: IncidentsConfig) -> None:
        self.config = config

    def decide(
        self,
        db: Records,
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
        history = db.history(key)
        clearing = clears(event.state)
        later = history.after(event.ts, clearing)
        if event.kind == "reachability" and later is None:  # the device's state now
            db.set_reach(message, event)
        entry = TimelineEntry(
            event.ts, "event", message.agent, event.message, event.state, event.id
        )
        step = Step(message, event, key, entry, received, windows)
        if later is None:
            outcome = self._newest(db, step)
        elif clearing:
            outcome = self._late_clearing(db, step, history)
        else:
            outcome = self._late_problem(db, step, history)
        if outcome is None:
            return []
        incident = outcome.incident
        hi = event.ts if later is None else max(event.ts, later.at)
        db.save_incident(incident, self._flap(db, incident, history, event.ts, hi))
        changes = [
            IncidentChange(
                c, _as_opened(incident) if c == "opened" and outcome.momentary else incident
            )
            for c in outcome.changes
        ]
        changes += outcome.extra
        if outcome.problem is not None:
            changes += suppress_beneath(db, incident, *outcome.problem)
        if clearing and incident.resolved is not None:
            changes += release_beyond(db, incident, incident.resolved)
        return changes

    def _newest(self, db: Records, step: Step) -> Outcome | None:
        """The event is the latest the key has (the usual case): it says how things are."""
        event, key = step.event, step.key
        if clears(event.state):
            incident = db.open_incident(key)
            if incident is None:
                return None
            incident.state = "resolved"
            incident.resolved = max(event.ts, incident.opened)
            incident.resolved_by = "auto"
            incident.updated = step.received
            db.add_timeline(incident.id, step.entry)
            return Outcome(incident, ["resolved"])
        incident = db.open_incident(key)
        if incident is not None:
            self._bump(db, incident, step)
            return Outcome(incident, ["updated"])
        latest = db.latest_incident(key)
        if (
            latest is not None
            and latest.resolved is not None
            and event.ts - latest.resolved <= self.config.reopen_within
        ):
            incident = latest
            incident.state = "open"
            incident.resolved, incident.resolved_by = None, ""
            incident.acknowledged, incident.acknowledged_by = None, ""
            incident.acknowledged_identity = ""
            incident.count += 1
            incident.updated = step.received
            incident.severity = event.severity
            db.add_timeline(incident.id, TimelineEntry(event.ts, "reopened", step.message.agent))
            db.add_timeline(incident.id, step.entry)
            return Outcome(incident, ["opened"], problem=(event.ts, None))
        return self._create(db, step, None)

    def _late_problem(self, db: Records, step: Step, history: KeyHistory) -> Outcome | None:
        """A problem older than what the key recorded since: it joins the incident that
        held its time, or moves the opening of the one it led to earlier, or it was a
        problem that has cleared since: a momentary incident (or a reopening) that opens
        and resolves at once, with both times."""
        event, key, at = step.event, step.key, step.event.ts
        incident = db.incident_at(key, at)
        end = history.next_clearing(at)
        if incident is not None:  # during an incident: one more event of it
            self._bump(db, incident, step)
            if end is not None and _within(incident, end.at):  # a pause of it, now
                _add_once(db, incident.id, end.entry())
            return Outcome(incident, [amended(incident)])
        after = db.incident_after(key, at)
        if after is not None and (end is None or after.opened <= end.at):
            return self._open_earlier(db, after, step, end)
        if end is None:  # nothing after it but problems that opened nothing: decide as now
            return self._newest(db, step)
        before = db.incident_before(key, at)
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
            db.add_timeline(before.id, TimelineEntry(at, "reopened", step.message.agent))
            db.add_timeline(before.id, step.entry)
            _add_once(db, before.id, end.entry())
            return Outcome(before, ["opened", "resolved"], momentary=True, problem=(at, end.at))
        if after is not None and after.opened - end.at <= self.config.reopen_within:
            return self._open_earlier(db, after, step, end)  # `after` was its reopening
        return self._create(db, step, end)

    def _late_clearing(self, db: Records, step: Step, history: KeyHistory) -> Outcome | None:
        """A clearing event older than what the key recorded since: it ends the incident
        of its time then (an earlier resolution), or it was a pause of a problem that came
        back (a transition: flapping counts it; the incident stays as the later events
        left it)."""
        event, at = step.event, step.event.ts
        before = history.before(at, True, step.message.agent, event.id)
        if before is None or before.clearing:
            return None  # it was clear already: a repeat
        incident = db.incident_at(step.key, at)
        if incident is None:
            return None
        relapse = history.next_problem(at)
        db.add_timeline(incident.id, step.entry)
        incident.updated = step.received
        if (
            relapse is not None
            and relapse.at - at > self.config.reopen_within
            and (incident.resolved is None or incident.resolved >= relapse.at)
        ):
            return self._split(db, incident, step, history, relapse)
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
            db.drop_events_after(incident.id, incident.resolved)
        return Outcome(incident, [amended(incident)])

    def _split(
        self, db: Records, incident: Incident, step: Step, history: KeyHistory, relapse: KeyEvent
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
        later.suppressed_by = cause(db, incident.key, relapse.at)
        incident.count = max(1, incident.count - later.count)
        incident.state = "resolved"
        incident.resolved, incident.resolved_by = max(at, incident.opened), "auto"
        if incident.acknowledged is not None and incident.acknowledged > incident.resolved:
            incident.acknowledged, incident.acknowledged_by = None, ""  # that was the later one
            incident.acknowledged_identity = ""
        stored = db.transitions(incident.id)
        db.save_incident(incident, [y for y in stored if y < relapse.at])  # first: one open
        db.create_incident(later, [])
        db.save_incident(later, [y for y in stored if y >= relapse.at])
        db.move_timeline(incident.id, later.id, relapse.at)
        extra = [IncidentChange("opened", later if later.is_open else _as_opened(later))]
        if not later.is_open:
            extra.append(IncidentChange("resolved", later))
        return Outcome(incident, ["resolved"], extra=extra)

    @staticmethod
    def _bump(db: Records, incident: Incident, step: Step) -> None:
        incident.count += 1
        incident.updated = step.received
        if SEVERITY_RANK[step.event.severity] > SEVERITY_RANK[incident.severity]:
            incident.severity = step.event.severity
        db.add_timeline(incident.id, step.entry)

    def _open_earlier(
        self, db: Records, incident: Incident, step: Step, end: KeyEvent | None
    ) -> Outcome:
        """`incident` opened later than a problem that led to it: it opened at that problem
        (and, when `end` came between, cleared then and reopened)."""
        at, opened = step.event.ts, incident.opened
        self._bump(db, incident, step)
        incident.opened = at
        if incident.suppressed_by is None:  # as things stood when it opened, now
            incident.suppressed_by = cause(db, incident.key, at)
            if incident.suppressed_by is not None:
                db.add_timeline(
                    incident.id,
                    TimelineEntry(at, "suppressed", "", f"under incident {incident.suppressed_by}"),
                )
        until = opened
        if end is not None and end.at < opened:
            _add_once(db, incident.id, end.entry())
            db.add_timeline(incident.id, TimelineEntry(opened, "reopened", step.message.agent))
            until = end.at
        elif end is not None and _within(incident, end.at):
            _add_once(db, incident.id, end.entry())
        return Outcome(incident, [amended(incident)], problem=(at, until))

    @staticmethod
    def _create(db: Records, step: Step, end: KeyEvent | None) -> Outcome:
        """A new incident; resolved at once by `end` when that clearing event came first."""
        event, key = step.event, step.key
        incident = Incident(
            id=0,
            key=key,
            severity=event.severity,
            state="open",
            title=_title(event, step.message.site),
            opened=event.ts,
            updated=step.received,
            rtc=step.message.rtc,
            attrs=dict(event.attrs),
        )
        if end is not None:  # inserted resolved: another incident of the key may be open
            incident.state = "resolved"
            incident.resolved, incident.resolved_by = end.at, "auto"
        incident.suppressed_by = cause(db, key, event.ts)
        incident.maintenance = covered(step.windows, key, event.ts)
        db.create_incident(incident, [])
        db.add_timeline(incident.id, step.entry)
        if incident.suppressed_by is not None:
            db.add_timeline(
                incident.id,
                TimelineEntry(
                    event.ts, "suppressed", "", f"under incident {incident.suppressed_by}"
                ),
            )
        if end is None:
            return Outcome(incident, ["opened"], problem=(event.ts, None))
        _add_once(db, incident.id, end.entry())
        return Outcome(incident, ["opened", "resolved"], momentary=True, problem=(event.ts, end.at))

    def _flap(
        self, db: Records, incident: Incident, history: KeyHistory, at: float, hi: float
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
                    db.add_timeline(
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
        kept = [y for y in db.transitions(incident.id) if y <= at - window or y > hi + window]
        return sorted(kept + near)[-64:]
