"""The incident engine: events in, incidents out (DESIGN: "decide at the centre").

Rules, per incident key (site, device, resource, kind):
- a problem event opens the key's incident, or bumps its count if one is open;
  a problem soon after the key's last incident was resolved reopens that one;
- the clearing event (state up / ok / established) resolves it (auto-resolve);
- an event seen before (same agent and event id: a replay or a redelivery)
  changes nothing;
- `flap_transitions` transitions within `flap_window` mark the incident
  flapping: notifications are held until it has been quiet for `flap_window`;
- correlation: a device incident opened while its site's agent was offline,
  an interface/BGP/threshold incident of an unreachable device, and an
  incident of a device whose inventory parent is unreachable are suppressed
  under their cause;
- maintenance windows mark incidents `maintenance` (notifications held).

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
import time
from collections.abc import Callable
from dataclasses import dataclass
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
            "ON CONFLICT (agent, event_id) DO NOTHING",
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
        key = IncidentKey(message.site, event.device, event.resource, event.kind)
        if event.kind == "reachability":
            tx.execute(
                "INSERT INTO devices (site, device, agent, rtc, reach, updated) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, device) DO UPDATE SET "
                "reach = excluded.reach, updated = excluded.updated, agent = excluded.agent",
                (message.site, event.device, message.agent, message.rtc, event.state, event.ts),
            )
        entry = TimelineEntry(
            event.ts, "event", message.agent, event.message, event.state, event.id
        )
        if event.state in CLEARING_STATES:
            incident = tx.open_incident(key)
            if incident is None:
                return []
            transitions = self._transitions(tx, incident, event.ts)
            incident.state = "resolved"
            incident.resolved = max(event.ts, incident.opened)
            incident.resolved_by = "auto"
            incident.updated = received
            tx.add_timeline(incident.id, entry)
            tx.save_incident(incident, transitions)
            return [IncidentChange("resolved", incident)]
        if event.severity == "info" and event.kind not in ("reachability", "link", "bgp"):
            return []  # informational: kept in the event log, not an incident
        incident = tx.open_incident(key)
        if incident is not None:
            incident.count += 1
            incident.updated = received
            if SEVERITY_RANK[event.severity] > SEVERITY_RANK[incident.severity]:
                incident.severity = event.severity
            tx.add_timeline(incident.id, entry)
            tx.save_incident(incident, tx.transitions(incident.id))
            return [IncidentChange("updated", incident)]
        latest = tx.latest_incident(key)
        if (
            latest is not None
            and latest.resolved is not None
            and event.ts - latest.resolved <= self.config.reopen_within
        ):
            incident = latest
            transitions = self._transitions(tx, incident, event.ts)
            incident.state = "open"
            incident.resolved, incident.resolved_by = None, ""
            incident.acknowledged, incident.acknowledged_by = None, ""
            incident.count += 1
            incident.updated = received
            incident.severity = event.severity
            tx.add_timeline(incident.id, TimelineEntry(event.ts, "reopened", message.agent))
            tx.add_timeline(incident.id, entry)
            tx.save_incident(incident, transitions)
            return [IncidentChange("opened", incident)]
        incident = Incident(
            id=0,
            key=key,
            severity=event.severity,
            state="open",
            title=self._title(event),
            opened=event.ts,
            updated=received,
            rtc=message.rtc,
            attrs=dict(event.attrs),
        )
        incident.suppressed_by = self._cause(tx, key, event.ts)
        incident.maintenance = any(w.covers(key, event.ts) for w in windows)
        tx.create_incident(incident, [event.ts])
        tx.add_timeline(incident.id, entry)
        if incident.suppressed_by is not None:
            tx.add_timeline(
                incident.id,
                TimelineEntry(
                    event.ts, "suppressed", "", f"under incident {incident.suppressed_by}"
                ),
            )
        return [IncidentChange("opened", incident)]

    @staticmethod
    def _title(event: Event) -> str:
        text = event.message or f"{event.kind} {event.state}"
        return f"{event.device}: {text}" if event.device else text

    def _transitions(self, tx: Tx, incident: Incident, at: float) -> list[float]:
        """Record a transition; mark the incident flapping when there were too many."""
        window = self.config.flap_window
        transitions = [t for t in tx.transitions(incident.id) if t > at - window] + [at]
        if not incident.flapping and len(transitions) >= self.config.flap_transitions:
            incident.flapping = True
            tx.add_timeline(
                incident.id,
                TimelineEntry(
                    at,
                    "flapping",
                    "",
                    f"{len(transitions)} transitions within {window:.0f} s: "
                    "notifications held until it settles",
                ),
            )
        return transitions[-64:]

    def _cause(self, tx: Tx, key: IncidentKey, at: float) -> int | None:
        """The incident that explains a new one, if any (see the module docstring)."""
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
            down = tx.open_incident(IncidentKey(key.site, key.device, "device", "reachability"))
            if down is not None:
                return down.id
        parent = tx.one(
            "SELECT parent FROM devices WHERE site = ? AND device = ?", (key.site, key.device)
        )
        if parent is not None and parent[0]:
            down = tx.open_incident(IncidentKey(key.site, parent[0], "device", "reachability"))
            if down is not None:
                return down.id
        return None

    # ---------------------------------------------------------------- agent status

    async def on_status(
        self, message: StatusMessage, *, retained: bool = False
    ) -> list[IncidentChange]:
        received = self.now()
        seen = message.sent if retained else received

        def apply(tx: Tx) -> list[IncidentChange]:
            tx.lock_site(message.site)
            row = tx.one(
                "SELECT last_seen, status_seq FROM agents WHERE agent = ?", (message.agent,)
            )
            if row is not None and stale_status(message, retained, float(row[0]), int(row[1])):
                return []
            # Every replica hears every status; the first to apply a live one streams it.
            first = row is None or message.seq > int(row[1])
            tx.execute(
                "INSERT INTO agents (agent, site, rtc, state, last_seen, version, inventory_size, "
                "health, status_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent) "
                "DO UPDATE SET site = excluded.site, rtc = excluded.rtc, state = excluded.state, "
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
        tx.execute("UPDATE agents SET state = 'offline' WHERE agent = ?", (agent,))
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

        return await self.store.run(apply)

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
        """Open (not resolved, not suppressed) incidents by severity."""
        rows = await self.store.run(
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
                "FROM devices d LEFT JOIN agents a ON a.agent = d.agent "
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
