"""Notifications: incident changes to webhooks (generic JSON or Alertmanager), in order.

Each webhook has its own queue and delivery task, so a dead receiver never
delays the others. A notification is retried with exponential backoff on
connection errors, timeouts, 5xx and 429; any other 4xx is a configuration
problem (bad token, wrong path) and is not retried. What never got through
goes to the dead-letter file as one JSON line, and is counted: nothing is
dropped silently.

Which changes are sent:
- opened, and updated when an incident first becomes notifiable (its flapping
  settled, its maintenance ended, its cause resolved): "firing";
- acknowledged, escalated: sent to JSON webhooks; to Alertmanager as a refresh
  of the firing alert with the new annotations;
- resolved: when this notifier sent the incident, or it is notifiable now;
- held (flapping, maintenance, suppressed) and below `min_severity`: not sent;
  a duplicate event (updated, already sent) is not sent again.

Alertmanager resolves an alert by itself when it is not refreshed within
`resolve_timeout`, so open firing alerts are re-sent every `refresh` seconds
with `endsAt` four refresh periods ahead, the way Prometheus does it.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from collector.config import NotificationsConfig, WebhookConfig
from collector.model import SEVERITY_RANK, Incident, IncidentChange
from enoc import __version__
from enoc.logs import StateLogger, get_logger

if TYPE_CHECKING:
    from collector.engine import Engine

log = get_logger("enoc.collector.notify")

MAX_BACKOFF = 60.0
ALERTMANAGER_REFRESH = 60.0
DRAIN_TIMEOUT = 5.0


@dataclass
class Notification:
    change: str
    incident: dict[str, Any]
    queued: float
    attempts: int = 0


class RetryableError(Exception):
    """The receiver may take it later: connection error, timeout, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RefusedError(Exception):
    """The receiver will never take it (4xx other than 429)."""


@dataclass
class Target:
    """One webhook: its queue, what it was sent, its counters."""

    config: WebhookConfig
    name: str
    queue: deque[Notification] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_incidents: set[int] = field(default_factory=set)
    sent: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0

    @property
    def alertmanager(self) -> bool:
        return self.config.format == "alertmanager"

    @property
    def endpoint(self) -> str:
        if not self.alertmanager:
            return self.config.url
        return self.config.url.rstrip("/") + "/api/v2/alerts"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def json_payload(change: str, incident: dict[str, Any], sent: float) -> dict[str, Any]:
    """The generic webhook body: the change and the incident as the API shows it."""
    return {
        "source": "enoc",
        "version": __version__,
        "change": change,
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
        *,
        now: Callable[[], float] = time.time,
        refresh: float = ALERTMANAGER_REFRESH,
    ) -> None:
        self.config = config
        self.now = now
        self.refresh_every = refresh
        self.targets = [
            Target(hook, hook.name or urlsplit(hook.url).netloc) for hook in config.webhooks
        ]
        self.skipped = 0
        self.dead_letter_errors = 0
        self._last_refresh = 0.0
        self._failures = StateLogger(log)
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------- intake

    def notify(self, change: IncidentChange) -> None:
        """Queue `change` for every webhook that should hear of it (a Collector listener)."""
        incident = change.incident
        data: dict[str, Any] | None = None
        for target in self.targets:
            if not self._wanted(target, change.change, incident):
                self.skipped += 1
                continue
            if data is None:
                data = incident.as_dict()
            self._enqueue(target, Notification(change.change, data, self.now()))

    def _wanted(self, target: Target, change: str, incident: Incident) -> bool:
        if SEVERITY_RANK.get(incident.severity, 0) < SEVERITY_RANK[target.config.min_severity]:
            return False
        sent = incident.id in target.sent_incidents
        if change == "resolved":
            wanted = sent or incident.notifiable
            target.sent_incidents.discard(incident.id)
            return wanted
        if not incident.notifiable:
            return False
        if change in ("opened", "updated"):
            if sent:
                return False  # a duplicate event: the receiver already knows
            target.sent_incidents.add(incident.id)
            return True
        if change in ("acknowledged", "escalated"):
            if not sent:
                target.sent_incidents.add(incident.id)
            return True
        return False  # commented: operators see it in the console

    def _enqueue(self, target: Target, item: Notification) -> None:
        while len(target.queue) >= self.config.max_queue:
            self._dead_letter(target, target.queue.popleft(), "queue full")
        target.queue.append(item)
        target.wake.set()

    @property
    def queued(self) -> int:
        return sum(len(t.queue) for t in self.targets)

    # ---------------------------------------------------------------- periodic

    async def escalations(self, engine: Engine) -> list[IncidentChange]:
        """Escalate open, unacknowledged, notifiable incidents past their severity's period.

        The level is how many periods have passed since the incident opened; the
        engine ignores a level already reached, so replicas sweeping together escalate
        an incident once.
        """
        periods = self.config.escalate_after
        if not periods:
            return []
        now = self.now()
        changes: list[IncidentChange] = []
        for incident in await engine.incidents(state="open"):
            period = periods.get(incident.severity)
            if not period or not incident.notifiable:
                continue
            level = math.floor((now - incident.opened) / float(period))
            if level > incident.escalated:
                change = await engine.escalate(incident.id, level)
                if change is not None:
                    changes.append(change)
        return changes

    async def refresh(self, engine: Engine) -> None:
        """Re-send open firing alerts to Alertmanager targets (see the module doc)."""
        targets = [t for t in self.targets if t.alertmanager]
        now = self.now()
        if not targets or now - self._last_refresh < self.refresh_every:
            return
        self._last_refresh = now
        incidents = await engine.incidents(state="active")
        for target in targets:
            minimum = SEVERITY_RANK[target.config.min_severity]
            queued = {q.incident["id"] for q in target.queue}
            for incident in incidents:
                if (
                    incident.notifiable
                    and SEVERITY_RANK.get(incident.severity, 0) >= minimum
                    and incident.id not in queued
                ):
                    target.sent_incidents.add(incident.id)
                    self._enqueue(target, Notification("refresh", incident.as_dict(), now))

    # ---------------------------------------------------------------- delivery

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then try what is queued once more, dead-letter the rest."""
        if not self.targets:
            await stop.wait()
            return
        async with aiohttp.ClientSession() as session:
            self._session = session
            workers = [asyncio.create_task(self._deliver(t, stop)) for t in self.targets]
            await stop.wait()
            for target in self.targets:
                target.wake.set()
            _done, pending = await asyncio.wait(workers, timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for target in self.targets:
                while target.queue:
                    self._dead_letter(target, target.queue.popleft(), "collector stopped")
            self._session = None

    async def _deliver(self, target: Target, stop: asyncio.Event) -> None:
        while True:
            if not target.queue:
                if stop.is_set():
                    return
                target.wake.clear()
                await target.wake.wait()
                continue
            item = target.queue[0]
            try:
                await self._send(target, item)
            except RefusedError as exc:
                self._failures.failed(target.name, exc, webhook=target.name)
                target.queue.popleft()
                self._dead_letter(target, item, str(exc))
                continue
            except RetryableError as exc:
                self._failures.failed(target.name, exc, webhook=target.name)
                target.failed_attempts += 1
                item.attempts += 1
                if item.attempts > self.config.retries or stop.is_set():
                    target.queue.popleft()
                    self._dead_letter(target, item, str(exc))
                    continue
                wait = min(float(self.config.retry_backoff) * 2 ** (item.attempts - 1), MAX_BACKOFF)
                if exc.retry_after is not None:
                    wait = min(max(wait, exc.retry_after), MAX_BACKOFF)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                continue
            self._failures.ok(target.name, webhook=target.name)
            target.queue.popleft()
            target.sent += 1

    async def _send(self, target: Target, item: Notification) -> None:
        assert self._session is not None
        now = self.now()
        body: Any
        if target.alertmanager:
            body = alertmanager_payload(item.change, item.incident, now, self.refresh_every)
        else:
            body = json_payload(item.change, item.incident, now)
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
                reason = f"HTTP {response.status} from {target.endpoint}: {text}"
                if response.status == 429 or response.status >= 500:
                    raise RetryableError(reason, _retry_after(response.headers.get("Retry-After")))
                raise RefusedError(reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(
                f"{type(exc).__name__} posting to {target.endpoint}: {exc}"
            ) from exc

    def _dead_letter(self, target: Target, item: Notification, reason: str) -> None:
        target.dead_lettered += 1
        path = self.config.dead_letter_file
        record = {
            "at": self.now(),
            "webhook": target.name,
            "url": target.endpoint,
            "reason": reason,
            "attempts": item.attempts,
            "change": item.change,
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
        return out


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
