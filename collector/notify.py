"""Notifications: incident changes to webhooks (generic JSON or Alertmanager), in order.

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
drop the duplicate. The lease is at least twice the longest webhook timeout
and renewed when half of it is left, so a request always ends before the
lease can pass on (given clocks in step between replicas).

A notification is retried with exponential backoff on connection errors,
timeouts, 5xx and 429; any other 4xx is a configuration problem (bad token,
wrong path) and is not retried. What never got through goes to the
dead-letter file as one JSON line, and is counted: nothing is dropped
silently. On stop, the request in flight may finish; the rest stays in the
change log for the next lease holder.

Which changes are sent:
- opened, and updated when an incident first becomes notifiable (its flapping
  settled, its maintenance ended, its cause resolved): "firing";
- acknowledged, escalated: sent to JSON webhooks; to Alertmanager as a refresh
  of the firing alert with the new annotations;
- resolved: when the receiver was told the incident is open, or it is notifiable now;
- held (flapping, maintenance, suppressed) and below `min_severity`: not sent;
  a duplicate event (updated, already told) is not sent again.

Alertmanager resolves an alert by itself when it is not refreshed within
`resolve_timeout`, so the lease holder re-sends open firing alerts every
`refresh` seconds with `endsAt` four refresh periods ahead, the way
Prometheus does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from collector.config import NotificationsConfig, WebhookConfig
from collector.model import SEVERITY_RANK, IncidentChange
from collector.store import Store, Tx
from enoc import __version__
from enoc.logs import StateLogger, get_logger, redact, strip_login

if TYPE_CHECKING:
    from collector.incidents import Engine

log = get_logger("enoc.collector.notify")

MAX_BACKOFF = 60.0
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


class RetryableError(Exception):
    """The receiver may take it later: connection error, timeout, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RefusedError(Exception):
    """The receiver will never take it (4xx other than 429)."""


@dataclass
class Target:
    """One webhook: its identity in the store, its queue while this replica holds the lease,
    what the receiver was told, its counters."""

    config: WebhookConfig
    name: str
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
        return f"{self.config.format} {strip_login(self.config.url)}"

    @property
    def old_key(self) -> str:
        """The key of schema 3 to 5, with the URL's login: renamed to `key` on open."""
        return f"{self.config.format} {self.config.url}"

    @property
    def alertmanager(self) -> bool:
        return self.config.format == "alertmanager"

    @property
    def endpoint(self) -> str:
        """Where notifications are posted (with the URL's login, if it has one)."""
        if not self.alertmanager:
            return self.config.url
        return self.config.url.rstrip("/") + "/api/v2/alerts"

    @property
    def shown_endpoint(self) -> str:
        """`endpoint` without the URL's user and password: for logs, reasons, dead letters."""
        return strip_login(self.endpoint)

    def drop(self) -> None:
        """Forget what only the lease holder may know."""
        self.owned = False
        self.queue.clear()
        self.told.clear()
        self.lease_until = 0.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def json_payload(
    change: str, incident: dict[str, Any], sent: float, change_id: int = 0
) -> dict[str, Any]:
    """The generic webhook body: the change and the incident as the API shows it.
    `change_id` is the change's id in the store (the stream's event id); 0 for none."""
    return {
        "source": "enoc",
        "version": __version__,
        "change": change,
        "change_id": change_id,
        "sent": sent,
        "incident": incident,
    }


def alertmanager_payload(
    change: str, incident: dict[str, Any], now: float, refresh: float
) -> list[dict[str, Any]]:
    """Alertmanager API v2 `postableAlerts`: labels identify the incident's key."""
    labels = {
        "alertname": f"enoc_{incident['kind']}",
        "site": incident["site"],
        "device": incident["device"],
        "resource": incident["resource"],
        "severity": incident["severity"],
        "rtc": incident["rtc"],
        "incident_id": str(incident["id"]),
    }
    annotations = {
        "summary": incident["title"],
        "state": incident["state"],
        "change": change,
        "count": str(incident["count"]),
        "escalated": str(incident["escalated"]),
        "acknowledged_by": incident["acknowledged_by"],
    }
    alert: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(incident["opened"]),
    }
    if incident["state"] == "resolved":
        alert["endsAt"] = _iso(incident["resolved"] or now)
    else:
        alert["endsAt"] = _iso(now + 4 * refresh)
    return [alert]


class Notifier:
    def __init__(
        self,
        config: NotificationsConfig,
        store: Store,
        *,
        now: Callable[[], float] = time.time,
        refresh: float = ALERTMANAGER_REFRESH,
        owner: str = "",
    ) -> None:
        self.config = config
        self.store = store
        self.now = now
        self.refresh_every = refresh
        self.lease = float(config.lease)
        # unique per process: a restarted replica waits for its predecessor's lease too
        self.owner = f"{owner or 'enoc-collector'}:{secrets.token_hex(4)}"
        self.targets = [
            Target(hook, name) for hook, name in zip(config.webhooks, _names(config), strict=True)
        ]
        self.skipped = 0
        self.dead_letter_errors = 0
        self._opened = False
        self._failures = StateLogger(log)
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------- intake

    async def open(self) -> None:
        """Register the webhooks in the store; a new one starts at the change log's end.
        Call it before the collector makes changes, or they would precede the cursor."""
        if not self.targets:
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
        self._opened = True

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
        if now - target.last_refresh < self.refresh_every:
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
            if not tx.execute(
                "UPDATE notify_cursors SET owner = ?, lease_until = ?, updated = ? "
                "WHERE webhook = ? AND (owner = ? OR lease_until < ?)",
                (owner, until, now, key, owner, now),
            ):
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

    async def _release(self) -> None:
        owner = self.owner
        with contextlib.suppress(Exception):
            await self.store.run(
                lambda tx: tx.execute(
                    "UPDATE notify_cursors SET lease_until = 0 WHERE owner = ?", (owner,)
                )
            )

    # ---------------------------------------------------------------- delivery

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; the request in flight may finish, the rest stays in the log."""
        if not self.targets:
            await stop.wait()
            return
        if not self._opened:
            await self.open()
        async with aiohttp.ClientSession() as session:
            self._session = session
            workers = [asyncio.create_task(self._deliver(t, stop)) for t in self.targets]
            try:
                await stop.wait()
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
            self._session = None

    async def _deliver(self, target: Target, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if not await self._hold(target):
                    await _pause(stop, self.lease / 3)
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
                    await _pause(stop, min(wait, self.lease / 3))
                    continue
                await self._attempt(target, item, stop)
            except Exception as exc:  # the store is down: start again from what it holds
                self._failures.failed(f"webhook {target.name}", exc, webhook=target.name)
                target.drop()
                await _pause(stop, 1.0)

    async def _fill(self, target: Target) -> bool:
        """Queue what the receiver should hear next: a due refresh, then logged changes."""
        if target.alertmanager and await self._refresh(target):
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

    async def _attempt(self, target: Target, item: Notification, stop: asyncio.Event) -> None:
        if item.overflow:
            target.queue.popleft()
            self._dead_letter(target, item, "queue full")
            await self._commit(target, item)
            return
        try:
            await self._send(target, item)
        except RefusedError as exc:
            self._failures.failed(target.name, exc, webhook=target.name)
            target.queue.popleft()
            self._dead_letter(target, item, str(exc))
            await self._commit(target, item)
            return
        except RetryableError as exc:
            self._failures.failed(target.name, exc, webhook=target.name)
            target.failed_attempts += 1
            item.attempts += 1
            if item.attempts > self.config.retries:
                target.queue.popleft()
                self._dead_letter(target, item, str(exc))
                await self._commit(target, item)
                return
            wait = min(float(self.config.retry_backoff) * 2 ** (item.attempts - 1), MAX_BACKOFF)
            if exc.retry_after is not None:
                wait = min(max(wait, exc.retry_after), MAX_BACKOFF)
            item.not_before = time.monotonic() + wait
            return
        self._failures.ok(target.name, webhook=target.name)
        target.queue.popleft()
        target.sent += 1
        await self._commit(target, item)

    async def _send(self, target: Target, item: Notification) -> None:
        assert self._session is not None
        now = self.now()
        body: Any
        if target.alertmanager:
            body = alertmanager_payload(item.change, item.incident, now, self.refresh_every)
        else:
            body = json_payload(item.change, item.incident, now, item.change_id)
        headers = {"User-Agent": f"enoc-collector/{__version__}"}
        if target.config.token is not None:
            headers["Authorization"] = f"Bearer {target.config.token.reveal()}"
        timeout = aiohttp.ClientTimeout(total=float(target.config.timeout))
        try:
            async with self._session.post(
                target.endpoint, json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status < 300:
                    return
                text = (await response.text(errors="replace"))[:200]
                reason = f"HTTP {response.status} from {target.shown_endpoint}: {text}"
                if response.status == 429 or response.status >= 500:
                    raise RetryableError(reason, _retry_after(response.headers.get("Retry-After")))
                raise RefusedError(reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(
                f"{type(exc).__name__} posting to {target.shown_endpoint}: {redact(str(exc))}"
            ) from exc

    def _dead_letter(self, target: Target, item: Notification, reason: str) -> None:
        target.dead_lettered += 1
        path = self.config.dead_letter_file
        record = {
            "at": self.now(),
            "webhook": target.name,
            "url": target.shown_endpoint,
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
    names = [hook.name or webhook_name(hook.url) for hook in config.webhooks]
    return [
        name if names.count(name) == 1 or hook.name else f"{name} ({hook.format})"
        for name, hook in zip(names, config.webhooks, strict=True)
    ]


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """The dead-letter file's records (for tests and `enoc` tooling)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
