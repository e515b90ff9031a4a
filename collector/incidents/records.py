"""The engine's store interface: every SQL statement the incident engine runs.

`Records` is a store transaction (`collector.store.Tx`, whose incident rows it
keeps) with the engine's reads and writes as methods: the rules, liveness,
sweeps, maintenance and queries modules say what they need in these terms and
hold no SQL of their own. SQL is written once with `?` placeholders for SQLite
and PostgreSQL alike, values always bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from collector.access import EVERYTHING, Scope
from collector.incidents.model import AGENT_OFFLINE, KeyEvent, MaintenanceWindow
from collector.incidents.vocabulary import CLEARING_SQL, STATE_KINDS, clears
from collector.model import Incident, IncidentChange, IncidentKey
from collector.store import INCIDENT_COLUMNS, Row, Store, Tx, incident_from_row
from enoc.wire import Event, EventsMessage, StatusMessage

T = TypeVar("T")

# An event's place in a key's history: by time, and a clearing event after a problem of the
# same time (so that a pair stamped alike reads down-then-up in every arrival order).
_CLEARS = f"CASE WHEN state IN {CLEARING_SQL} THEN 1 ELSE 0 END"
_WINDOW_COLUMNS = "id, site, device, match, starts, ends, every, until, reason, created_by"


def within(scope: Scope, rtc: str = "rtc", site: str = "site") -> tuple[str, list[Any]]:
    """An SQL condition on the `rtc` and `site` columns that holds for rows inside `scope`,
    with its parameters."""
    if scope.everything:
        return "1 = 1", []
    parts, params = [], []
    for column, names in ((rtc, scope.rtc), (site, scope.site)):
        if names:
            parts.append(f"{column} IN ({', '.join('?' * len(names))})")
            params.extend(sorted(names))
    return f"({' OR '.join(parts) or '1 = 0'})", params


async def run(store: Store, fn: Callable[[Records], T]) -> T:
    """`fn` in one store transaction (retried on conflicts), given the engine's records."""
    return await store.run(lambda tx: fn(Records.of(tx)))


async def read(store: Store, fn: Callable[[Records], T]) -> T:
    """`fn` as a read without a transaction (not retried: /metrics answers quickly)."""
    return await store.read(lambda tx: fn(Records.of(tx)))


class Records(Tx):
    """One store transaction, in the engine's terms."""

    @classmethod
    def of(cls, tx: Tx) -> Records:
        return tx if isinstance(tx, Records) else cls(tx.conn, tx.dialect)

    # ---------------------------------------------------------------- change log

    def log(self, changes: list[IncidentChange], *, at: float, origin: str) -> None:
        """Log `changes` in the change log, in this transaction: call it last."""
        for c in changes:
            c.id = self.add_change(
                "incident",
                c.as_dict(),
                at=at,
                change=c.change,
                incident_id=c.incident.id,
                origin=origin,
            )

    def log_status(self, message: StatusMessage, *, at: float, origin: str) -> None:
        """Log a live agent status in the change log (the stream sends it once)."""
        self.add_change(
            "status",
            {
                "site": message.site,
                "agent": message.agent,
                "rtc": message.rtc,
                "state": message.state,
                "ts": message.sent,
            },
            at=at,
            change=message.state,
            origin=origin,
        )

    # ---------------------------------------------------------------- events

    def record_event(self, message: EventsMessage, event: Event, received: float) -> bool:
        """Remember the event; False when it was seen before."""
        inserted = self.execute(
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

    def prune_events(self, before: float) -> int:
        """Forget the events received before `before`; how many went."""
        return max(0, self.execute("DELETE FROM events WHERE received < ?", (before,)))

    def history(self, key: IncidentKey) -> KeyHistory:
        return KeyHistory(self, key)

    # ---------------------------------------------------------------- timelines

    def has_entry(self, incident_id: int, event_id: str, actor: str) -> bool:
        return bool(
            self.one(
                "SELECT 1 FROM timeline WHERE incident_id = ? AND event_id = ? AND actor = ?",
                (incident_id, event_id, actor),
            )
        )

    def drop_events_after(self, incident_id: int, at: float) -> None:
        """Drop the incident's event entries after `at` (repeats of an earlier clearing)."""
        self.execute(
            "DELETE FROM timeline WHERE incident_id = ? AND what = 'event' AND at > ?",
            (incident_id, at),
        )

    def move_timeline(self, source: int, target: int, since: float) -> None:
        """Move `source`'s timeline entries from `since` on to incident `target`."""
        self.execute(
            "UPDATE timeline SET incident_id = ? WHERE incident_id = ? AND at >= ?",
            (target, source, since),
        )

    # ---------------------------------------------------------------- incidents

    def agent_offline_at(self, site: str, at: float) -> int | None:
        """The site's agent-offline incident that spanned `at`, if any."""
        row = self.one(
            "SELECT id FROM incidents WHERE site = ? AND device = '' AND kind = ? "
            "AND opened <= ? AND (resolved IS NULL OR resolved >= ?) ORDER BY id DESC LIMIT 1",
            (site, AGENT_OFFLINE, at, at),
        )
        return None if row is None else int(row[0])

    def beneath(
        self, cause: Incident, children: list[str], since: float, until: float | None
    ) -> list[Incident]:
        """The unsuppressed incidents of `cause`'s device (but its reachability) and of its
        `children` that opened in [since, until)."""
        k = cause.key
        under = "(device = ? AND kind <> 'reachability')"
        if children:
            under = f"({under} OR device IN ({', '.join('?' * len(children))}))"
        where = f"site = ? AND suppressed_by IS NULL AND id <> ? AND opened >= ? AND {under}"
        params: list[Any] = [k.site, cause.id, since, k.device, *children]
        if until is not None:
            where += " AND opened < ?"
            params.append(until)
        return self.incidents(where, params)

    def suppressed_under(self, cause: Incident, since: float) -> list[Incident]:
        """The incidents suppressed under `cause` that opened after `since`."""
        return self.incidents(
            "site = ? AND suppressed_by = ? AND opened > ?", (cause.key.site, cause.id, since)
        )

    def sweepable(self, ids: Sequence[int] | None = None) -> list[tuple[Incident, list[float]]]:
        """Open or flapping incidents (of `ids`, if given) with their transitions."""
        sql = (
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE (state <> 'resolved' OR flapping = 1)"
        )
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
        return [
            (incident_from_row(r), [float(t) for t in json.loads(r[20])])
            for r in self.all(sql + " ORDER BY id DESC", list(ids or ()))
        ]

    def sites_of(self, ids: Sequence[int]) -> set[str]:
        placeholders = ", ".join("?" * len(ids))
        return {
            str(r[0])
            for r in self.all(f"SELECT site FROM incidents WHERE id IN ({placeholders})", ids)
        }

    def find_incidents(
        self,
        *,
        state: str,
        site: str,
        severity: str,
        rtc: str,
        limit: int,
        scope: Scope = EVERYTHING,
    ) -> list[Incident]:
        """Incidents by state ("active": not resolved), site, severity and RTC, inside
        `scope`; newest first."""
        inside, params = within(scope)
        clauses = [inside]
        if state == "active":
            clauses.append("state <> 'resolved'")
        elif state:
            clauses.append("state = ?")
            params.append(state)
        for column, value in (("site", site), ("severity", severity), ("rtc", rtc)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self.incidents(" AND ".join(clauses), params, limit=limit)

    def open_counts(self, *, by_site: bool = False, scope: Scope = EVERYTHING) -> list[Row]:
        """(site,) severity, count of open, unsuppressed incidents (inside `scope`)."""
        group = "site, severity" if by_site else "severity"
        inside, params = within(scope)
        return self.all(
            f"SELECT {group}, COUNT(*) FROM incidents WHERE state <> 'resolved' "
            f"AND suppressed_by IS NULL AND {inside} GROUP BY {group}",
            params,
        )

    def stats(self, since: float, until: float, scope: Scope = EVERYTHING) -> list[Row]:
        """Per site and severity of incidents opened in [since, until) inside `scope`: how
        many, how many acknowledged and their mean time to it, how many resolved and their
        mean time."""
        inside, params = within(scope)
        return self.all(
            "SELECT site, severity, COUNT(*), "
            "SUM(CASE WHEN acknowledged IS NOT NULL THEN 1 ELSE 0 END), "
            "AVG(CASE WHEN acknowledged IS NOT NULL THEN acknowledged - opened END), "
            "SUM(CASE WHEN resolved IS NOT NULL THEN 1 ELSE 0 END), "
            "AVG(CASE WHEN resolved IS NOT NULL THEN resolved - opened END) "
            "FROM incidents WHERE opened >= ? AND opened < ? AND suppressed_by IS NULL "
            f"AND {inside} GROUP BY site, severity ORDER BY site, severity",
            (since, until, *params),
        )

    def incident_times(self, since: float, until: float, scope: Scope = EVERYTHING) -> list[Row]:
        """(opened, acknowledged, resolved, rtc, site, severity) of the unsuppressed
        incidents inside `scope` open at some time in [since, until] (incidents/trends.py)."""
        inside, params = within(scope)
        return self.all(
            "SELECT opened, acknowledged, resolved, rtc, site, severity FROM incidents "
            "WHERE opened <= ? AND (resolved IS NULL OR resolved >= ?) "
            f"AND suppressed_by IS NULL AND {inside} ORDER BY opened",
            (until, since, *params),
        )

    # ---------------------------------------------------------------- agents and devices

    def agent_seen(self, site: str, agent: str) -> tuple[float, int] | None:
        """When the agent was last heard of and the seq of its last status applied."""
        row = self.one(
            "SELECT last_seen, status_seq FROM agents WHERE site = ? AND agent = ?", (site, agent)
        )
        return None if row is None else (float(row[0]), int(row[1]))

    def save_status(self, message: StatusMessage, seen: float) -> None:
        """The agent's status and the devices it announces."""
        self.execute(
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
            self.execute(
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

    def agent_offline(self, site: str, agent: str) -> None:
        self.execute(
            "UPDATE agents SET state = 'offline' WHERE site = ? AND agent = ?", (site, agent)
        )

    def silent_agents(self, since: float) -> list[tuple[str, str, str]]:
        """(agent, site, rtc) of the agents online but not heard of since `since`."""
        return [
            (str(a), str(s), str(r))
            for a, s, r in self.all(
                "SELECT agent, site, rtc FROM agents WHERE state = 'online' AND last_seen < ? "
                "ORDER BY site, agent",
                (since,),
            )
        ]

    def willed_agents(self, before: float) -> list[tuple[str, str, str, float]]:
        """(agent, site, rtc, when) of the agents that said offline at `when`, before `before`,
        and said nothing since, whose site incident is not decided: none is open, none
        opened at or after `when` (this will's, then resolved by an operator). An older
        outage's incident does not count, even one its birth resolved after `when`: a
        retained will is dated by the connection that left it."""
        rows = self.all(
            "SELECT a.agent, a.site, a.rtc, a.last_seen FROM agents a "
            "WHERE a.state = 'offline' AND a.last_seen <= ? AND NOT EXISTS ("
            "SELECT 1 FROM incidents i WHERE i.site = a.site AND i.device = '' "
            "AND i.resource = 'agent:' || a.agent AND i.kind = ? "
            "AND (i.resolved IS NULL OR i.opened >= a.last_seen)) "
            "ORDER BY a.site, a.agent",
            (before, AGENT_OFFLINE),
        )
        return [(str(a), str(s), str(r), float(w)) for a, s, r, w in rows]

    def agents(self, scope: Scope = EVERYTHING) -> list[Row]:
        inside, params = within(scope)
        return self.all(
            "SELECT agent, site, rtc, state, last_seen, version, inventory_size, health "
            f"FROM agents WHERE {inside} ORDER BY site, agent",
            params,
        )

    def set_reach(self, message: EventsMessage, event: Event) -> None:
        """The device's reachability as its latest event says."""
        self.execute(
            "INSERT INTO devices (site, device, agent, rtc, reach, updated) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, device) DO UPDATE SET "
            "reach = excluded.reach, updated = excluded.updated, agent = excluded.agent",
            (message.site, event.device, message.agent, message.rtc, event.state, event.ts),
        )

    def parent(self, site: str, device: str) -> str:
        """The device's inventory parent ("" for none or an unknown device)."""
        row = self.one("SELECT parent FROM devices WHERE site = ? AND device = ?", (site, device))
        return str(row[0]) if row is not None and row[0] else ""

    def children(self, site: str, device: str) -> list[str]:
        return [
            str(r[0])
            for r in self.all(
                "SELECT device FROM devices WHERE site = ? AND parent = ?", (site, device)
            )
        ]

    def devices(self, site: str = "", scope: Scope = EVERYTHING) -> list[Row]:
        """The devices (of `site`, inside `scope`) with their agent's state and their open
        incidents."""
        inside, params = within(scope, "d.rtc", "d.site")
        clauses = ["d.site = ?", inside] if site else [inside]
        return self.all(
            "SELECT d.site, d.device, d.agent, d.rtc, d.address, d.role, d.parent, d.reach, "
            "COALESCE(a.state, 'unknown'), "
            "(SELECT COUNT(*) FROM incidents i WHERE i.site = d.site AND i.device = d.device "
            " AND i.state <> 'resolved') "
            "FROM devices d LEFT JOIN agents a ON a.site = d.site AND a.agent = d.agent "
            + f"WHERE {' AND '.join(clauses)} "
            + "ORDER BY d.site, d.device",
            [*((site,) if site else ()), *params],
        )

    def site_rtcs(self) -> dict[str, frozenset[str]]:
        """Each known site's RTCs, as its agents and devices report them (more than one
        while a site moves between RTCs, or where two RTCs share it)."""
        found: dict[str, set[str]] = {}
        for site, rtc in self.all(
            "SELECT site, rtc FROM agents WHERE rtc <> '' "
            "UNION SELECT site, rtc FROM devices WHERE rtc <> ''"
        ):
            found.setdefault(str(site), set()).add(str(rtc))
        return {site: frozenset(rtcs) for site, rtcs in found.items()}

    # ---------------------------------------------------------------- maintenance

    def windows(self) -> list[MaintenanceWindow]:
        return [
            _window(r) for r in self.all(f"SELECT {_WINDOW_COLUMNS} FROM maintenance ORDER BY id")
        ]

    def add_window(self, window: MaintenanceWindow, actor: str, created: float) -> int:
        return self.insert(
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
                created,
            ),
        )

    def delete_window(self, window_id: int) -> bool:
        return self.execute("DELETE FROM maintenance WHERE id = ?", (window_id,)) > 0

    # ---------------------------------------------------------------- availability

    def device_agents(self) -> list[tuple[str, str, str, str]]:
        """(site, device, agent, rtc) of every known device; the RTC its agent's when the
        device row has none."""
        return [
            (str(s), str(d), str(a), str(r))
            for s, d, a, r in self.all(
                "SELECT d.site, d.device, d.agent, "
                "COALESCE(NULLIF(d.rtc, ''), a.rtc, '') FROM devices d "
                "LEFT JOIN agents a ON a.site = d.site AND a.agent = d.agent "
                "ORDER BY d.site, d.device"
            )
        ]

    def spans(
        self, kind: str, since: float, until: float
    ) -> list[tuple[str, str, str, float, float | None]]:
        """(site, device, resource, opened, resolved) of the incidents of `kind` that
        overlap [since, until); a reachability incident only if it was down."""
        down = (
            " AND EXISTS (SELECT 1 FROM timeline t WHERE t.incident_id = i.id AND t.state = 'down')"
            if kind == "reachability"
            else ""
        )
        return [
            (str(s), str(d), str(r), float(o), None if z is None else float(z))
            for s, d, r, o, z in self.all(
                "SELECT i.site, i.device, i.resource, i.opened, i.resolved FROM incidents i "
                f"WHERE i.kind = ? AND i.opened < ? AND (i.resolved IS NULL OR i.resolved > ?)"
                f"{down} ORDER BY i.site, i.device, i.opened",
                (kind, until, since),
            )
        ]

    def recorded_within(self, site: str, agent: str, since: float, until: float) -> bool:
        """Whether the store holds an event of the agent stamped in [since, until)."""
        return (
            self.one(
                "SELECT 1 FROM events WHERE site = ? AND agent = ? AND at >= ? AND at < ? LIMIT 1",
                (site, agent, since, until),
            )
            is not None
        )


def _window(row: Row) -> MaintenanceWindow:
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


class KeyHistory:
    """The events the store recorded for one incident key (those that decide), in event
    time: whatever order they arrived in, this is the order they happened in."""

    def __init__(self, tx: Tx, key: IncidentKey) -> None:
        self.tx = tx
        self.where = "site = ? AND device = ? AND resource = ? AND kind = ?"
        if key.kind not in STATE_KINDS:
            self.where += f" AND (state IN {CLEARING_SQL} OR severity <> 'info')"
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
        return self._first(f"state IN {CLEARING_SQL} AND at >= ?", (at,), "at")

    def next_problem(self, at: float) -> KeyEvent | None:
        """The first problem after a clearing event at `at`."""
        return self._first(f"state NOT IN {CLEARING_SQL} AND at > ?", (at,), "at")

    def problems(self, since: float, until: float | None) -> int:
        """How many problem events happened from `since` to `until` (or to now)."""
        row = self.tx.one(
            f"SELECT COUNT(*) FROM events WHERE {self.where} AND state NOT IN {CLEARING_SQL} "
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
            if clears(state) == problem:
                problem = not problem
                out.append(float(at))
        return out
