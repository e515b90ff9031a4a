"""Notifications: incident changes to webhooks, in order, once across replicas.

This is the delivery machinery, the same for every notifier kind; what a receiver's
message looks like and how it travels is the kind's (collector/notifiers: generic JSON,
Alertmanager, and what is registered there), picked by `notifications.webhooks[].format`;
each `notifications.email` entry is a receiver of kind `email`, delivered the same way.

Every replica may deliver, but each webhook is delivered by one replica at a
time: the one holding its lease in the store (`notify_cursors`). The holder
reads the store's change log after the webhook's cursor, decides what the
receiver should hear, sends it, and then advances the cursor together with
what the receiver now knows (`notify_told`: the incidents it was told are
open) in one transaction, fenced by the lease. So a change is delivered once
across replicas; what a receiver was told survives restarts; and when the
holder dies, another replica takes over once the lease (`notifications.lease`)
has run out, from the last change it committed. A holder that dies in the
middle of a request leaves that one notification to be sent again by the next
holder: each carries its change id (`change_id`) for a receiver that wants to
drop the duplicate. A holder whose cursor cannot be advanced because the store
cannot answer (a PostgreSQL primary switching over) keeps trying, with what it
sent in memory, rather than start over from the store's cursor and tell the
receiver twice. The lease is at least twice the longest webhook timeout
and renewed when half of it is left, so a request always ends before the
lease can pass on (given clocks in step between replicas).

A notification is retried with exponential backoff (enoc.retry) when its
notifier raises a RetryableError (connection errors, timeouts, 5xx and 429 for
the HTTP kinds); a PermanentError (any other 4xx: a bad token, a wrong path) is
a configuration problem and is not retried. What never got through goes to the
dead-letter file as one JSON line, and is counted: nothing is dropped
silently. On stop, the request in flight may finish; the rest stays in the
change log for the next lease holder. `Notifications` has the lifecycle of every
long-lived part: `start` registers the webhooks, `run` delivers until `close`.

Which changes are sent:
- opened, and updated when an incident first becomes notifiable (its flapping
  settled, its maintenance ended, its cause resolved): "firing";
- acknowledged, escalated: sent to JSON webhooks; to Alertmanager as a refresh
  of the firing alert with the new annotations;
- resolved: when the receiver was told the incident is open, or it is notifiable now;
- with desks (collector/desks.py), a receiver a desk names hears only the incidents
  routed to that desk (at its escalation level) when the change is decided;
- held (flapping, maintenance, suppressed) and below `min_severity`: not sent;
  a duplicate event (updated, already told) is not sent again.

A kind whose receiver forgets what is not re-sent (Alertmanager resolves an
alert that is not refreshed within `resolve_timeout`) `refreshes`: the lease
holder re-sends its open firing incidents every `refresh` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from collector.config import EmailConfig, NotificationsConfig, Receiver
from collector.desks import Desks
from collector.model import SEVERITY_RANK, IncidentChange
from collector.notifiers import NOTIFIERS, Delivery, Env, Notifier
from collector.notifiers.base import LeasedPart, release_leases, take_lease, target_key
from collector.store import Store, Tx, store_outage
from enoc.logs import StateLogger, get_logger
from enoc.retry import Backoff, PermanentError, RetryableError, pause

if TYPE_CHECKING:
    from collector.incidents import Engine

log = get_logger("enoc.collector.notify")

MAX_BACKOFF = 60.0  # and at most this long for a receiver's Retry-After
ALERTMANAGER_REFRESH = 60.0
DRAIN_TIMEOUT = 5.0
FETCH = 100  # change-log rows read at a time per webhook


@dataclass
class Notification:
    change: str
    incident: dict[str, Any]
    queued: float
    attempts: int = 0
    change_id: int = 0  # the change log's id; 0 for an Alertmanager refresh
    told: bool | None = None  # afterwards the receiver knows it open (True), closed (False)
    not_before: float = 0.0  # monotonic time of the next attempt (retry backoff)
    overflow: bool = False  # beyond max_queue: dead-lettered without an attempt
    backoff: Backoff | None = None  # from the first failure on


def retry_wait(backoff: Backoff, retry_after: float | None) -> float:
    """The wait before the next attempt: the backoff's (doubling, jittered), or longer
    where the receiver asked for longer (Retry-After), never above the backoff's cap."""
    wait = backoff.next()
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, backoff.cap)


@dataclass
class Target:
    """One webhook: its identity in the store, its queue while this replica holds the lease,
    what the receiver was told, its counters."""

    config: Receiver  # a webhook, or an e-mail receiver delivered the same way
    name: str
    notifier: Notifier  # its kind's, from the registry
    queue: deque[Notification] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    told: set[int] = field(default_factory=set)  # incident ids the receiver knows open
    owned: bool = False
    lease_until: float = 0.0  # wall clock, like every replica's view of the lease
    saved: int = 0  # the cursor as committed
    decided: int = 0  # the last change decided (queued or skipped)
    last_refresh: float = -math.inf
    sent: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    takeovers: int = 0

    @property
    def key(self) -> str:
        """How replicas name this webhook in the store: its format and URL without the
        login (a password must not sit in the store; rotating it keeps the cursor)."""
        if isinstance(self.config, EmailConfig):
            return self.config.key
        return target_key(self.config)

    @property
    def old_key(self) -> str:
        """The key of schema 3 to 5, with the URL's login: renamed to `key` on open."""
        if isinstance(self.config, EmailConfig):
            return self.config.key
        return f"{self.config.format} {self.config.url}"

    def drop(self) -> None:
        """Forget what only the lease holder may know."""
        self.owned = False
        self.queue.clear()
        self.told.clear()
        self.lease_until = 0.0


@dataclass(eq=False)
class Notifications(LeasedPart):
    """Delivers incident changes to every configured webhook (see the module doc)."""

    name = "notifier"
    grace = DRAIN_TIMEOUT + 5  # close waits for the drain, which ends the request in flight

    config: NotificationsConfig
    store: Store
    now: Callable[[], float] = field(default=time.time, kw_only=True)
    refresh: float = field(default=ALERTMANAGER_REFRESH, kw_only=True)  # Alertmanager's
    owner: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        super().__init__()
        config, store, now, refresh = self.config, self.store, self.now, self.refresh
        self.hold_leases_as(self.owner, config.lease, now)
        env = Env(self.http, now, refresh, config.console_url, store)
        self.targets = [
            Target(hook, name, NOTIFIERS[hook.format](hook, env))
            for hook, name in zip(config.receivers, _names(config), strict=True)
        ]
        self.desks = Desks.of(config)  # follow the sun: which receivers hear an incident
        self.skipped = 0
        self.dead_letter_errors = 0
        self._started = False
        self._failures = StateLogger(log)

    # ---------------------------------------------------------------- intake

    async def _start(self) -> None:
        """Register the webhooks in the store; a new one starts at the change log's end.
        Call it before the collector makes changes, or they would precede the cursor."""
        if self._started or not self.targets:
            self._started = True
            return
        now = time.time()

        def apply(tx: Tx) -> None:
            last = tx.last_change_id()
            for target in self.targets:
                if target.old_key != target.key:  # a webhook with a login, stored by 0.1
                    _rename_webhook(tx, target.old_key, target.key)
                tx.execute(
                    "INSERT INTO notify_cursors (webhook, last_id, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (webhook) DO NOTHING",
                    (target.key, last, now),
                )

        await self.store.run(apply)
        self._started = True

    def wake(self) -> None:
        """New changes are in the log (the change feed calls this)."""
        for target in self.targets:
            target.wake.set()

    def _decide(self, target: Target, change: str, incident: dict[str, Any]) -> Notification | None:
        """Whether the receiver should hear of `change`, given what it was told; updates
        `target.told` as if it was sent."""
        if SEVERITY_RANK.get(incident["severity"], 0) < SEVERITY_RANK[target.config.min_severity]:
            return None
        incident_id = int(incident["id"])
        told = incident_id in target.told
        if (
            self.desks
            and not (change == "resolved" and told)  # who heard it open hears it resolve
            and not self.desks.hears(target.name, incident, self.now())
        ):
            return None
        notifiable = not (
            incident["flapping"] or incident["maintenance"] or incident["suppressed_by"] is not None
        )
        item = Notification(change, incident, self.now())
        if change == "resolved":
            target.told.discard(incident_id)
            item.told = False
            return item if told or notifiable else None
        if not notifiable:
            return None
        if change in ("opened", "updated"):
            if told:
                return None  # a duplicate event: the receiver already knows
            target.told.add(incident_id)
            item.told = True
            return item
        if change in ("acknowledged", "escalated"):
            if not told:
                target.told.add(incident_id)
                item.told = True
            return item
        return None  # commented: operators see it in the console

    @property
    def queued(self) -> int:
        return sum(len(t.queue) for t in self.targets)

    # ---------------------------------------------------------------- periodic

    async def escalations(self, engine: Engine) -> list[IncidentChange]:
        """Escalate open, unacknowledged, notifiable incidents past their severity's period.

        The level is how many periods have passed since the incident opened; the
        engine re-checks the level under the site's lock, so replicas sweeping
        together escalate an incident once.
        """
        periods = self.config.escalate_after
        if not periods:
            return []
        now = self.now()
        changes: list[IncidentChange] = []
        for incident in await engine.queries.incidents(state="open"):
            period = periods.get(incident.severity)
            if not period or not incident.notifiable:
                continue
            level = math.floor((now - incident.opened) / float(period))
            if level > incident.escalated:
                change = await engine.escalate(incident.id, level)
                if change is not None:
                    changes.append(change)
        return changes

    async def _refresh(self, target: Target) -> bool:
        """Queue the open firing alerts again (Alertmanager targets; see the module doc)."""
        now = self.now()
        if now - target.last_refresh < self.refresh:
            return False
        target.last_refresh = now
        incidents = await self.store.read(lambda tx: tx.incidents("state <> 'resolved'"))
        minimum = SEVERITY_RANK[target.config.min_severity]
        queued = {q.incident["id"] for q in target.queue}
        added = False
        for incident in reversed(incidents):  # oldest first
            if (
                incident.notifiable
                and SEVERITY_RANK.get(incident.severity, 0) >= minimum
                and incident.id not in queued
            ):
                item = Notification("refresh", incident.as_dict(), now)
                if incident.id not in target.told:
                    target.told.add(incident.id)
                    item.told = True
                target.queue.append(item)
                added = True
        return added

    # ---------------------------------------------------------------- the lease

    async def _hold(self, target: Target) -> bool:
        """Take or keep the webhook's lease; on taking it, load its cursor and told set."""
        now = time.time()
        if target.owned and target.lease_until - now > self.lease / 2:
            return True
        key, owner, until = target.key, self.owner, now + self.lease

        def apply(tx: Tx) -> tuple[int, set[int]] | None:
            if not take_lease(tx, "notify_cursors", key, owner, until, now):
                return None
            row = tx.one("SELECT last_id FROM notify_cursors WHERE webhook = ?", (key,))
            told = tx.all("SELECT incident_id FROM notify_told WHERE webhook = ?", (key,))
            return (int(row[0]) if row else 0), {int(r[0]) for r in told}

        held = await self.store.run(apply)
        if held is None:
            if target.owned:
                log.warning("lost the lease of webhook %s", target.name, webhook=target.name)
            target.drop()
            return False
        if not target.owned or held[0] != target.saved:
            # taken now (or taken back after someone else moved on): start from the store
            target.drop()
            target.saved = target.decided = held[0]
            target.told = held[1]
            target.last_refresh = -math.inf
            target.takeovers += 1
            log.info(
                "delivering to webhook %s from change %d", target.name, held[0], webhook=target.name
            )
        target.owned, target.lease_until = True, until
        return True

    async def _commit(self, target: Target, item: Notification | None) -> None:
        """Advance the cursor past `item` (or past every skipped change when None) and save
        what the receiver now knows, if this replica still holds the lease."""
        upto = target.decided if item is None else max(target.saved, item.change_id)
        told = None if item is None else item.told
        if upto == target.saved and told is None:
            return
        now = time.time()
        key, owner, until = target.key, self.owner, now + self.lease
        incident_id = 0 if item is None else int(item.incident["id"])

        def apply(tx: Tx) -> bool:
            if not tx.execute(
                "UPDATE notify_cursors SET last_id = ?, lease_until = ?, updated = ? "
                "WHERE webhook = ? AND owner = ?",
                (upto, until, now, key, owner),
            ):
                return False
            if told is True:
                tx.execute(
                    "INSERT INTO notify_told (webhook, incident_id) VALUES (?, ?) "
                    "ON CONFLICT (webhook, incident_id) DO NOTHING",
                    (key, incident_id),
                )
            elif told is False:
                tx.execute(
                    "DELETE FROM notify_told WHERE webhook = ? AND incident_id = ?",
                    (key, incident_id),
                )
            return True

        if await self.store.run(apply):
            target.saved, target.lease_until = upto, until
        else:
            log.warning("lost the lease of webhook %s", target.name, webhook=target.name)
            target.drop()

    async def _commit_told(self, target: Target, item: Notification) -> None:
        """`_commit` once the receiver was told (or the dead letter written): while the
        store cannot answer (a primary switching over), try again rather than start over
        from the store's cursor, which would tell the receiver twice. Still fenced by the
        lease's owner: should another replica have taken the lease meanwhile, the commit
        is refused and this one lets go (that one tells it again: the case of a holder
        that dies in the middle of a request)."""
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                await self._commit(target, item)
            except Exception as exc:
                if not store_outage(exc):
                    raise
                self._failures.failed(f"webhook {target.name}", exc, webhook=target.name)
                if await pause(self.closing, backoff.next()):
                    raise
            else:
                return

    async def _release(self) -> None:
        await release_leases(self.store, "notify_cursors", self.owner)

    # ---------------------------------------------------------------- delivery

    async def _run(self) -> None:
        """Deliver until `close`; the request in flight may finish, the rest stays in the log."""
        if not self.targets:
            await self.closing.wait()
            return
        if self.closing.is_set():  # closed before it ran: nothing to drain or to open
            return
        if not self._started:
            await self._start()
        # opened here, not in start: a collector whose start fails later leaves no
        # client session behind
        await self.http.start()
        workers = [
            asyncio.create_task(self._deliver(t), name=f"notify[{t.name}]") for t in self.targets
        ]
        try:
            await self.closing.wait()
        except asyncio.CancelledError:  # killed: leases stay held until they run out
            for task in workers:
                task.cancel()
            raise
        for target in self.targets:
            target.wake.set()
        _done, pending = await asyncio.wait(workers, timeout=DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._release()
        for target in self.targets:
            target.drop()

    async def _deliver(self, target: Target) -> None:
        stop = self.closing
        while not stop.is_set():
            try:
                if not await self._hold(target):
                    await pause(stop, self.lease / 3)
                    continue
                if not target.queue:
                    target.wake.clear()  # before reading: a wake from now on is not lost
                    if await self._fill(target):
                        continue
                    await self._commit(target, None)  # past the skipped changes
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(target.wake.wait(), self.lease / 3)
                    continue
                item = target.queue[0]
                wait = item.not_before - time.monotonic()
                if wait > 0:
                    await pause(stop, min(wait, self.lease / 3))
                    continue
                await self._attempt(target, item)
            except Exception as exc:  # the store is down: start again from what it holds
                self._failures.failed(f"webhook {target.name}", exc, webhook=target.name)
                target.drop()
                await pause(stop, 1.0)

    async def _fill(self, target: Target) -> bool:
        """Queue what the receiver should hear next: a due refresh, then logged changes."""
        if target.notifier.refreshes and await self._refresh(target):
            return True
        while True:
            after = target.decided
            rows = await self.store.changes_after(after, FETCH, "incident")
            if not rows:
                return False
            overflow = len(rows) == FETCH and (
                await self.store.changes_count(after, "incident") > self.config.max_queue
            )
            for id_, _kind, change, data in rows:
                item = self._decide(target, change, json.loads(data)["incident"])
                target.decided = id_
                if item is None:
                    self.skipped += 1
                    continue
                item.change_id, item.overflow = id_, overflow
                target.queue.append(item)
            if target.queue:
                return True

    async def _attempt(self, target: Target, item: Notification) -> None:
        if item.overflow:
            target.queue.popleft()
            self._dead_letter(target, item, "queue full")
            await self._commit_told(target, item)
            return
        delivery = Delivery(item.change, item.incident, item.change_id, self.now())
        try:
            await target.notifier.send(delivery)
        except PermanentError as exc:
            self._failures.failed(target.name, exc, webhook=target.name)
            target.queue.popleft()
            self._dead_letter(target, item, str(exc))
            await self._commit_told(target, item)
            return
        except RetryableError as exc:
            self._failures.failed(target.name, exc, webhook=target.name)
            target.failed_attempts += 1
            item.attempts += 1
            if item.attempts > self.config.retries:
                target.queue.popleft()
                self._dead_letter(target, item, str(exc))
                await self._commit_told(target, item)
                return
            if item.backoff is None:
                start = min(float(self.config.retry_backoff), MAX_BACKOFF)
                item.backoff = Backoff(start, MAX_BACKOFF)
            item.not_before = time.monotonic() + retry_wait(item.backoff, exc.retry_after)
            return
        self._failures.ok(target.name, webhook=target.name)
        target.queue.popleft()
        target.sent += 1
        await self._commit_told(target, item)

    def _dead_letter(self, target: Target, item: Notification, reason: str) -> None:
        target.dead_lettered += 1
        path = self.config.dead_letter_file
        record = {
            "at": self.now(),
            "webhook": target.name,
            "url": target.notifier.endpoint,
            "reason": reason,
            "attempts": item.attempts,
            "change": item.change,
            "change_id": item.change_id,
            "incident": item.incident,
        }
        if path is None:
            log.error(
                "notification to %s lost (no notifications.dead_letter_file): %s",
                target.name,
                reason,
                incident=item.incident.get("id"),
            )
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            self.dead_letter_errors += 1
            self._failures.failed("notification dead-letter file", exc, path=str(path))

    # ---------------------------------------------------------------- counters

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = {
            "queued": self.queued,
            "skipped": self.skipped,
            "sent": sum(t.sent for t in self.targets),
            "failed_attempts": sum(t.failed_attempts for t in self.targets),
            "dead_lettered": sum(t.dead_lettered for t in self.targets),
            "dead_letter_errors": self.dead_letter_errors,
        }
        for target in self.targets:
            out[f"sent.{target.name}"] = target.sent
            out[f"dead_lettered.{target.name}"] = target.dead_lettered
            out[f"owned.{target.name}"] = int(target.owned)
        return out


def _rename_webhook(tx: Tx, old: str, new: str) -> None:
    """Move a webhook's cursor and what its receiver was told from `old` to `new`,
    unless `new` is already there; either way nothing stays under `old`."""
    if tx.one("SELECT 1 FROM notify_cursors WHERE webhook = ?", (new,)) is None:
        tx.execute("UPDATE notify_cursors SET webhook = ? WHERE webhook = ?", (new, old))
        tx.execute("UPDATE notify_told SET webhook = ? WHERE webhook = ?", (new, old))
    tx.execute("DELETE FROM notify_cursors WHERE webhook = ?", (old,))
    tx.execute("DELETE FROM notify_told WHERE webhook = ?", (old,))


def webhook_name(url: str) -> str:
    """A webhook's default name in logs and counters: host:port and the path, never the
    URL's user and password (`https://u:pw@hooks.example.net/enoc` ->
    `hooks.example.net:443/enoc`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    return f"{host}:{port}{path}"


def _names(config: NotificationsConfig) -> list[str]:
    """Each webhook's name: its own, or `webhook_name`; the format is added where two
    webhooks would otherwise share one (their counters would add up)."""
    names = [hook.name or webhook_name(hook.url) for hook in config.receivers]
    return [
        name if names.count(name) == 1 or hook.name else f"{name} ({hook.format})"
        for name, hook in zip(names, config.receivers, strict=True)
    ]


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The dead-letter file's records (for tests and `enoc` tooling)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
