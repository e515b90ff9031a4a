"""The way back from the service desk: a ticket resolved or acknowledged in ServiceNow
resolves or acknowledges its enoc incident.

For each `format: servicenow` webhook with a `servicenow.poll_interval`, one replica at a
time (the holder of the target's lease in `ticket_sync`, as the notifier's lease in
collector/notify.py) asks the Table API every interval for the tickets enoc made
(`correlation_id` starting with the prefix) changed since its cursor, oldest first:

    correlation_idSTARTSWITH<prefix>^sys_updated_on>=javascript:gs.dateGenerate('<date>','<time>')
        ^ORDERBYsys_updated_on

A ticket in state 6, 7 or 8 (Resolved, Closed, Canceled) resolves the incident; one in
state 2 (In Progress), or with `assigned_to` set by someone other than enoc's user,
acknowledges it. The action goes through the engine's operators, as an operator's API call
does: timeline, audit and change log, the actor `servicenow:<sys_updated_by>`. An incident
already in that state changes nothing (what enoc itself wrote on a ticket is so already),
and the notifier sends nothing back for a change whose actor is the desk: no loop.

The cursor is the last `sys_updated_on` read (the instance's UTC, at one-second
resolution); reading from `>=` the cursor again reads a ticket twice at worst, and the
actions are idempotent. The integration user's time zone must be UTC, as gs.dateGenerate
reads its date in the user's zone.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from collector.config import NotificationsConfig, WebhookConfig
from collector.incidents import Conflict, NotFound, Operators
from collector.model import IncidentChange
from collector.notifiers.base import (
    LeasedPart,
    release_leases,
    take_lease,
    target_key,
)
from collector.notifiers.servicenow import (
    ACTOR_PREFIX,
    CLOSED_STATES,
    IN_PROGRESS,
    PAGE,
    TableApi,
    servicenow_time,
    settings_of,
)
from collector.store import Store, Tx
from enoc.logs import StateLogger, get_logger
from enoc.retry import pause

log = get_logger("enoc.collector.tickets")

FIELDS = "sys_id,number,state,assigned_to,correlation_id,sys_updated_on,sys_updated_by,close_notes"
MAX_INCIDENT_ID = 2**63 - 1  # the store's BIGINT
_UPDATED_ON = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@dataclass
class Follow:
    """One ServiceNow target read back: its API, its key in the store, its counters."""

    hook: WebhookConfig
    api: TableApi
    key: str
    interval: float
    prefix: str
    resolved: int = 0
    acknowledged: int = 0
    ignored: int = 0  # records without an enoc incident id, or with an unreadable time


@dataclass(eq=False)
class TicketSync(LeasedPart):
    """Follows every ServiceNow target's tickets back into enoc (see the module doc)."""

    name = "tickets"

    config: NotificationsConfig
    store: Store
    operators: Operators
    publish: Callable[[list[IncidentChange]], Awaitable[None]]
    now: Callable[[], float] = field(default=time.time, kw_only=True)
    owner: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        super().__init__()
        config = self.config
        self.hold_leases_as(self.owner, config.lease, self.now)
        self.follows = [
            Follow(
                hook,
                TableApi(hook, self.http),
                target_key(hook),
                float(settings_of(hook).poll_interval),
                settings_of(hook).correlation_prefix,
            )
            for hook in config.webhooks
            if hook.format == "servicenow" and float(settings_of(hook).poll_interval) > 0
        ]
        self._failures = StateLogger(log)

    async def _run(self) -> None:
        if not self.follows:
            await self.closing.wait()
            return
        try:
            await self.http.start()
            async with asyncio.TaskGroup() as group:
                for follow in self.follows:
                    group.create_task(self._follow(follow), name=f"tickets[{follow.key}]")
        finally:
            await release_leases(self.store, "ticket_sync", self.owner)

    async def _follow(self, follow: Follow) -> None:
        stop = self.closing
        while not stop.is_set():
            try:
                cursor = await self._hold(follow)
                if cursor is not None:
                    await self.poll(follow, cursor)
                    self._failures.ok(f"tickets of {follow.api.endpoint}")
            except Exception as exc:  # the desk or the store is away: the next round retries
                self._failures.failed(f"tickets of {follow.api.endpoint}", exc)
            await pause(stop, follow.interval)

    async def _hold(self, follow: Follow) -> str | None:
        """Take or keep the target's lease; its cursor when this replica holds it. A new
        target's cursor starts now: tickets changed before enoc followed them are left."""
        now = time.time()
        key, owner, until, start = follow.key, self.owner, now + self.lease, self.now()

        def apply(tx: Tx) -> str | None:
            tx.execute(
                "INSERT INTO ticket_sync (target, cursor, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (target) DO NOTHING",
                (key, servicenow_time(start), now),
            )
            if not take_lease(tx, "ticket_sync", key, owner, until, now):
                return None
            row = tx.one("SELECT cursor FROM ticket_sync WHERE target = ?", (key,))
            return None if row is None else str(row[0])

        return await self.store.run(apply)

    async def poll(self, follow: Follow, cursor: str) -> None:
        """One round: read the changed tickets page by page, act on each, move the cursor."""
        day, clock = cursor.split(" ")
        query = (
            f"correlation_idSTARTSWITH{follow.prefix}"
            f"^sys_updated_on>=javascript:gs.dateGenerate('{day}','{clock}')"
            "^ORDERBYsys_updated_on"
        )
        offset, last = 0, cursor
        while True:
            records = await follow.api.query(query, FIELDS, offset)
            for record in records:
                await self._apply(follow, record)
                updated = str(record.get("sys_updated_on", ""))
                if _UPDATED_ON.fullmatch(updated) and updated > last:
                    last = updated
            if len(records) < PAGE:
                break
            offset += len(records)
        if last != cursor:
            await self._advance(follow, last)

    async def _advance(self, follow: Follow, cursor: str) -> None:
        key, owner, now = follow.key, self.owner, time.time()
        await self.store.run(
            lambda tx: tx.execute(
                "UPDATE ticket_sync SET cursor = ?, lease_until = ?, updated = ? "
                "WHERE target = ? AND owner = ?",
                (cursor, now + self.lease, now, key, owner),
            )
        )

    async def _apply(self, follow: Follow, record: dict[str, Any]) -> None:
        """Resolve or acknowledge the ticket's incident, when the desk did."""
        correlation = str(record.get("correlation_id", ""))
        number = correlation.removeprefix(follow.prefix)
        # an id the store could not hold would fail every round from here on
        if not (number.isascii() and number.isdigit()) or int(number) > MAX_INCIDENT_ID:
            follow.ignored += 1
            return
        by = str(record.get("sys_updated_by", ""))
        # Read by state, whoever changed the ticket last: enoc's own work note may follow a
        # resolve at the desk before this round. What enoc itself did is already so here.
        state = str(record.get("state", ""))
        if state in CLOSED_STATES:
            action, text = "resolve", str(record.get("close_notes", ""))
        elif state == IN_PROGRESS or (record.get("assigned_to") and by != follow.hook.username):
            action, text = "ack", ""  # an assignment enoc's own create made is no one's ack
        else:
            return
        ticket = str(record.get("number", ""))
        note = f"ticket {ticket} in ServiceNow" + (f": {text}" if text else "")
        try:
            change = await self.operators.act(int(number), action, f"{ACTOR_PREFIX}{by}", note)
        except (Conflict, NotFound):
            return  # already so (or not this store's incident)
        if action == "resolve":
            follow.resolved += 1
        else:
            follow.acknowledged += 1
        log.info("%s %s from ServiceNow ticket %s", action, number, ticket, actor=by)
        await self.publish([change])

    def counters(self) -> dict[str, float]:
        return {
            "resolved": sum(f.resolved for f in self.follows),
            "acknowledged": sum(f.acknowledged for f in self.follows),
            "ignored": sum(f.ignored for f in self.follows),
        }
