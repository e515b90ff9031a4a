"""Notifications: webhooks in order with retries and dead letters, escalation, a real
Alertmanager, and the collector sending what its incidents dictate.

The notifier reads the store's change log (what the engine logs with each change), so
these tests make changes with a real engine and wake the notifier the way the
collector's change feed does; a notifier started anew on the same store is a
restarted collector."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from collectorkit import T0, TOKENS, Clock, collector_config, eventually, running_collector

from collector.config import (
    CollectorConfig,
    EmailConfig,
    IncidentsConfig,
    NotificationsConfig,
    WebhookConfig,
)
from collector.config import Receiver as ReceiverConfig
from collector.incidents import Engine, MaintenanceWindow
from collector.model import IncidentChange
from collector.notifiers import (
    NOTIFIERS,
    Delivery,
    DeliveryFailed,
    DeliveryRefused,
    Env,
    Http,
    register,
)
from collector.notifiers.webhook_json import JsonWebhook
from collector.notify import MAX_BACKOFF, Notifications, read_dead_letters, retry_wait
from collector.store import Store, Tx
from enoc.config import ConfigError, Duration, Secret, parse_config
from enoc.lifecycle import Service
from enoc.retry import Backoff
from enoc.wire import Event, EventsMessage, Severity
from testbed.servers import Alertmanager, Mosquitto, free_port

_ids = itertools.count(1)


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records requests and fails on demand."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # statuses to answer with before answering 200, in order
    script: list[int] = field(default_factory=list)
    script_headers: dict[str, str] = field(default_factory=dict)  # sent with the scripted
    attempts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.script:
            status = self.script.pop(0)
            return web.Response(
                status=status, text=f"scripted {status}", headers=self.script_headers
            )
        self.received.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.Response(status=202)

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [(r["change"], r["incident"]["resource"]) for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    hook.url = f"http://127.0.0.1:{port}/hook"
    yield hook
    await runner.cleanup()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[Engine, Clock]]:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    clock = Clock()
    config = IncidentsConfig(flap_transitions=4, flap_window=Duration(300))
    yield Engine(store, config, now=clock), clock
    await store.close()


def msg(
    *items: tuple[str, str, str], severity: Severity = "major", ts: float = T0
) -> EventsMessage:
    """items: (device, resource, state) of kind link."""
    events = [
        Event(
            f"n{next(_ids)}", ts, device, resource, "link", state, severity, f"{resource} {state}"
        )
        for device, resource, state in items
    ]
    return EventsMessage("nbo-1", "nairobi", "emea", next(_ids), ts, events=events)


@contextlib.asynccontextmanager
async def delivering(notifier: Service) -> AsyncIterator[None]:
    """Run a part (the notifier; the way back from tickets) for the block."""
    await notifier.start()  # as the collector does before it makes changes
    task = asyncio.create_task(notifier.run())
    try:
        yield
    finally:
        await asyncio.wait_for(notifier.close(), 15)
        await asyncio.wait_for(task, 15)


def notifier_for(
    *hooks: WebhookConfig, clock: Callable[[], float], store: Store, owner: str = "", **kw: Any
) -> Notifications:
    config = NotificationsConfig(webhooks=list(hooks), retry_backoff=Duration(0.05), **kw)
    return Notifications(config, store, now=clock, owner=owner)


def logged(notifier: Notifications, changes: list[IncidentChange]) -> list[IncidentChange]:
    """The engine logged `changes`: wake the notifier as the change feed would."""
    assert all(c.id > 0 for c in changes)
    notifier.wake()
    return changes


async def test_json_webhook_gets_changes_in_order(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    eng, clock = engine
    token = Secret("hook-token-0123456789")
    notifier = notifier_for(
        WebhookConfig(receiver.url, name="desk", token=token), clock=clock, store=eng.store
    )
    async with delivering(notifier):
        made = []
        for message in (
            msg(("ce-1", "if:1", "down")),
            msg(("ce-1", "if:1", "down"), ts=T0 + 60),  # duplicate: bump
            msg(("ce-1", "if:2", "down")),
            msg(("ce-1", "if:1", "up"), ts=T0 + 120),
        ):
            made += logged(notifier, await eng.on_events(message))
        await eventually(lambda: len(receiver.received) == 3, what="three notifications")
    assert receiver.changes == [("opened", "if:1"), ("opened", "if:2"), ("resolved", "if:1")]
    first = receiver.received[0]
    assert first["source"] == "enoc"
    # each carries its change's id in the store (the stream's event id)
    sent_ids = [r["change_id"] for r in receiver.received]
    assert sent_ids == [made[0].id, made[2].id, made[3].id]
    assert first["incident"]["site"] == "nairobi"
    assert first["incident"]["severity"] == "major"
    assert receiver.received[2]["incident"]["state"] == "resolved"
    assert all(h["Authorization"] == f"Bearer {token.reveal()}" for h in receiver.headers)
    counters = notifier.counters()
    assert counters["sent"] == 3
    assert counters["sent.desk"] == 3
    assert counters["skipped"] == 1  # the duplicate
    assert counters["queued"] == 0


async def test_min_severity_and_held_incidents_are_not_sent(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    eng, clock = engine
    notifier = notifier_for(
        WebhookConfig(receiver.url, min_severity="major"), clock=clock, store=eng.store
    )
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("sw-1", "if:9", "down"), severity="minor")))
        # flapping: down/up four times within the window; held once marked flapping
        for i in range(8):
            clock.t = T0 + 10 * i
            state = "down" if i % 2 == 0 else "up"
            logged(notifier, await eng.on_events(msg(("sw-2", "if:1", state), ts=clock.t)))
        await eventually(lambda: notifier.counters()["skipped"] == 5, what="all decided")
    assert all(r["incident"]["severity"] != "minor" for r in receiver.received)
    # opened/resolved pairs until the incident was marked flapping; the receiver that
    # heard it open hears it resolve; after that the flapping incident is held
    assert [(r["change"], r["incident"]["flapping"]) for r in receiver.received] == [
        ("opened", False),
        ("resolved", False),
        ("opened", False),
        ("resolved", True),
    ]
    assert notifier.counters()["skipped"] == 1 + 4  # the minor one, four held changes


async def test_retries_keep_order_and_dead_letter_what_never_gets_through(
    engine: tuple[Engine, Clock], receiver: Receiver, tmp_path: Path
) -> None:
    eng, clock = engine
    dead = tmp_path / "dead" / "notifications.jsonl"
    receiver.script = [503, 429, 500]  # three failures, then it takes them
    down = free_port()  # nothing listens there: connection refused every time
    notifier = notifier_for(
        WebhookConfig(receiver.url, name="flaky"),
        WebhookConfig(f"http://127.0.0.1:{down}/hook", name="gone"),
        clock=clock,
        store=eng.store,
        retries=3,
        dead_letter_file=dead,
    )
    async with delivering(notifier):
        for resource in ("if:1", "if:2", "if:3"):
            logged(notifier, await eng.on_events(msg(("ce-1", resource, "down"))))
        await eventually(lambda: len(receiver.received) == 3, what="retried notifications")
        await eventually(
            lambda: notifier.counters()["dead_lettered.gone"] == 3, what="dead letters"
        )
    assert receiver.changes == [("opened", "if:1"), ("opened", "if:2"), ("opened", "if:3")]
    assert receiver.attempts == 6
    letters = read_dead_letters(dead)
    assert [(d["webhook"], d["incident"]["resource"]) for d in letters] == [
        ("gone", "if:1"),
        ("gone", "if:2"),
        ("gone", "if:3"),
    ]
    assert all(d["attempts"] == 4 for d in letters)  # first try + 3 retries
    assert "ClientConnectorError" in letters[0]["reason"]
    counters = notifier.counters()
    assert counters["sent.flaky"] == 3
    assert counters["failed_attempts"] == 3 + 3 * 4


async def test_client_errors_are_not_retried(
    engine: tuple[Engine, Clock], receiver: Receiver, tmp_path: Path
) -> None:
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    receiver.script = [401]
    notifier = notifier_for(
        WebhookConfig(receiver.url), clock=clock, store=eng.store, dead_letter_file=dead
    )
    async with delivering(notifier):
        for resource in ("if:1", "if:2"):
            logged(notifier, await eng.on_events(msg(("ce-1", resource, "down"))))
        await eventually(lambda: len(receiver.received) == 1, what="second notification")
    assert receiver.attempts == 2  # the refused one was not tried again
    (letter,) = read_dead_letters(dead)
    assert letter["incident"]["resource"] == "if:1"
    assert letter["attempts"] == 0
    assert "HTTP 401" in letter["reason"]


async def test_stop_leaves_what_is_undelivered_to_the_next_holder(
    engine: tuple[Engine, Clock], receiver: Receiver, tmp_path: Path
) -> None:
    """A collector that stops while its receiver is down dead-letters nothing: the changes
    stay in the store, and the next collector (here, a restarted one) delivers them."""
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    receiver.script = [503] * 1000
    hook = WebhookConfig(receiver.url)
    first = notifier_for(hook, clock=clock, store=eng.store, dead_letter_file=dead, retries=50)
    async with delivering(first):
        for resource in ("if:1", "if:2", "if:3"):
            logged(first, await eng.on_events(msg(("ce-1", resource, "down"))))
        await eventually(lambda: first.counters()["failed_attempts"] >= 2, what="failures")
    assert read_dead_letters(dead) == []
    assert first.counters()["queued"] == 0
    receiver.script = []
    second = notifier_for(hook, clock=clock, store=eng.store, dead_letter_file=dead)
    async with delivering(second):
        await eventually(lambda: len(receiver.received) == 3, what="delivered after restart")
        await asyncio.sleep(0.3)
    assert receiver.changes == [("opened", "if:1"), ("opened", "if:2"), ("opened", "if:3")]
    assert read_dead_letters(dead) == []


async def test_what_a_receiver_was_told_survives_a_restart(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    """Told that an incident opened, the receiver hears it resolve although it was held
    (maintenance) when it resolved and the collector had restarted in between; an
    incident it was never told of (held from the start) resolves silently."""
    eng, clock = engine
    hook = WebhookConfig(receiver.url)
    before = notifier_for(hook, clock=clock, store=eng.store)
    async with delivering(before):
        logged(before, await eng.on_events(msg(("ce-1", "if:1", "down"))))
        await eventually(lambda: receiver.changes == [("opened", "if:1")], what="opened")
    await eng.maintenance.add_window(
        MaintenanceWindow(0, "nairobi", "ce-1", "", T0 - 60, T0 + 3600, reason="carrier"), "ops1"
    )
    (entered,) = await eng.sweep()  # the open one enters maintenance: held
    assert entered.incident.maintenance
    logged(before, await eng.on_events(msg(("ce-1", "if:2", "down"))))  # held from the start
    after = notifier_for(hook, clock=clock, store=eng.store)  # a new process
    async with delivering(after):
        logged(after, await eng.on_events(msg(("ce-1", "if:1", "up"), ts=T0 + 60)))
        logged(after, await eng.on_events(msg(("ce-1", "if:2", "up"), ts=T0 + 60)))
        await eventually(lambda: after.counters()["skipped"] == 3, what="all decided")
    assert receiver.changes == [("opened", "if:1"), ("resolved", "if:1")]
    assert receiver.received[1]["incident"]["maintenance"] is True


async def test_a_webhooks_login_stays_out_of_the_store_and_its_cursor_carries_over(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    """The store names a webhook by format and URL without its login: a password must not
    sit in the incident store (backups, replicas' shared database). A cursor that an
    earlier release stored under the full URL is renamed, keeping its place and what the
    receiver was told."""
    eng, clock = engine
    password = "hook-password-9f3k2"
    url = receiver.url.replace("http://", f"http://enoc:{password}@")
    opened = await eng.on_events(msg(("ce-1", "if:1", "down")))
    incident_id, last = opened[0].incident.id, max(c.id for c in opened)

    def as_before(tx: Tx) -> None:  # what 0.1 left: the full URL as the key
        old = f"json {url}"
        tx.execute(
            "INSERT INTO notify_cursors (webhook, last_id, updated) VALUES (?, ?, ?)",
            (old, last, T0),
        )
        tx.execute(
            "INSERT INTO notify_told (webhook, incident_id) VALUES (?, ?)", (old, incident_id)
        )

    await eng.store.run(as_before)
    notifier = notifier_for(WebhookConfig(url), clock=clock, store=eng.store)
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("ce-1", "if:1", "up"), ts=T0 + 60)))
        await eventually(lambda: receiver.changes == [("resolved", "if:1")], what="resolved")
    assert receiver.headers[0]["Authorization"].startswith("Basic "), "still logs in"

    def stored(tx: Tx) -> list[tuple[Any, ...]]:
        return [
            *tx.all("SELECT webhook, last_id FROM notify_cursors"),
            *tx.all("SELECT webhook, incident_id FROM notify_told"),
        ]

    rows = await eng.store.run(stored)
    assert rows[0] == (f"json {receiver.url}", rows[0][1]) and rows[0][1] > last
    assert all(password not in str(row) for row in rows), rows
    assert len([r for r in rows if r[0].startswith("json")]) == len(rows) == 1, (
        "the receiver was told it resolved: nothing open is remembered for it"
    )


async def test_one_holder_delivers_and_another_takes_over_when_it_dies(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Two collectors on one store (two connections to one SQLite file here; PostgreSQL in
    test_collector_replicas): each change reaches the receiver once. When the holder of
    the webhook's lease dies without a word, the other takes over once the lease has run
    out, from the last change the dead one committed."""
    hook = WebhookConfig(receiver.url, name="desk", timeout=Duration(0.5))
    await holder_dies_and_another_takes_over(tmp_path, hook, lambda: len(receiver.received))
    resources = [resource for _, resource in receiver.changes]
    assert resources == ["if:1", "if:2", "if:3", "if:4", "if:5"], "each once, in order"


async def holder_dies_and_another_takes_over(
    tmp_path: Path, hook: ReceiverConfig, delivered: Callable[[], int]
) -> None:
    """Two replicas' notifiers on one SQLite file deliver five changes (if:1 to if:5
    opened) to `hook` (a webhook or an e-mail receiver, named), whose `delivered()`
    counts what it got; the holder of its lease dies after the third, the other goes on."""
    name = hook.name
    webhooks = [hook] if isinstance(hook, WebhookConfig) else []
    email = [hook] if isinstance(hook, EmailConfig) else []
    config = NotificationsConfig(
        webhooks=webhooks, email=email, retry_backoff=Duration(0.05), lease=Duration(1)
    )
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [Store(url), Store(url)]
    for store in stores:
        await store.open()
    clock = Clock()
    eng = Engine(stores[0], IncidentsConfig(), now=clock)
    one, two = (
        Notifications(config, s, now=clock, owner=f"replica-{n}") for n, s in enumerate(stores)
    )
    await one.start()
    await two.start()
    task_one = asyncio.create_task(one.run())
    task_two = asyncio.create_task(two.run())
    try:
        for resource in ("if:1", "if:2", "if:3"):
            await eng.on_events(msg(("ce-1", resource, "down")))
            one.wake()
            two.wake()
        await eventually(lambda: delivered() == 3, what="three, from either")
        holder, other = (one, two) if one.counters()[f"owned.{name}"] else (two, one)
        assert other.counters()[f"owned.{name}"] == 0
        # the holder dies: no release, no goodbye
        (task_one if holder is one else task_two).cancel()
        await asyncio.sleep(0)
        for resource in ("if:4", "if:5"):
            await eng.on_events(msg(("ce-1", resource, "down")))
            other.wake()
        await eventually(lambda: delivered() == 5, what="taken over")
        assert other.counters()[f"owned.{name}"] == 1
    finally:
        task_one.cancel()
        await asyncio.wait_for(two.close(), 15)
        for task in (task_one, task_two):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        await one.close()
        for store in stores:
            await store.close()


async def test_escalation_levels_per_severity(engine: tuple[Engine, Clock]) -> None:
    eng, clock = engine
    notifier = notifier_for(
        clock=clock,
        store=eng.store,
        escalate_after={"critical": Duration(600), "major": Duration(1800)},
    )
    (crit,) = await eng.on_events(msg(("ce-1", "if:1", "down"), severity="critical"))
    (major,) = await eng.on_events(msg(("ce-1", "if:2", "down"), severity="major"))
    (minor,) = await eng.on_events(msg(("ce-1", "if:3", "down"), severity="minor"))
    (acked,) = await eng.on_events(msg(("ce-1", "if:4", "down"), severity="critical"))
    await eng.operators.act(acked.incident.id, "ack", "ops1")
    clock.t = T0 + 599
    assert await notifier.escalations(eng) == []
    clock.t = T0 + 601
    changes = await notifier.escalations(eng)
    assert [(c.change, c.incident.id, c.incident.escalated) for c in changes] == [
        ("escalated", crit.incident.id, 1)
    ]
    assert await notifier.escalations(eng) == []  # level 1 is reached once
    clock.t = T0 + 1801
    changes = await notifier.escalations(eng)
    assert sorted((c.incident.id, c.incident.escalated) for c in changes) == [
        (crit.incident.id, 3),
        (major.incident.id, 1),
    ]
    full = await eng.queries.incident(crit.incident.id)
    assert [e.text for e in full.timeline if e.what == "escalated"] == ["level 1", "level 3"]
    assert (await eng.queries.incident(minor.incident.id)).escalated == 0
    assert (await eng.queries.incident(acked.incident.id)).escalated == 0


@pytest.mark.servers
async def test_alertmanager_receives_fires_and_resolves(
    engine: tuple[Engine, Clock], alertmanager: Alertmanager
) -> None:
    eng, clock = engine
    clock.t = time.time()  # Alertmanager judges endsAt against its own clock
    notifier = notifier_for(
        WebhookConfig(alertmanager.url, format="alertmanager"), clock=clock, store=eng.store
    )
    async with delivering(notifier):
        down = msg(("bkk-ce-1", "if:7", "down"), ts=clock.t)
        (opened,) = logged(notifier, await eng.on_events(down))
        await eventually(lambda: len(alertmanager.alerts()) == 1, what="alert in Alertmanager")
        (alert,) = alertmanager.alerts()
        assert alert["labels"] == {
            "alertname": "enoc_link",
            "site": "nairobi",
            "device": "bkk-ce-1",
            "resource": "if:7",
            "severity": "major",
            "rtc": "emea",
            "incident_id": str(opened.incident.id),
        }
        assert alert["annotations"]["summary"] == opened.incident.title
        assert alert["status"]["state"] == "active"
        clock.t = time.time()
        logged(notifier, await eng.on_events(msg(("bkk-ce-1", "if:7", "up"), ts=clock.t)))
        await eventually(lambda: alertmanager.alerts() == [], what="alert resolved")
    assert notifier.counters()["sent"] == 2


async def test_alertmanager_refresh_resends_open_alerts(engine: tuple[Engine, Clock]) -> None:
    eng, clock = engine
    received: list[Any] = []

    # the receiver records Alertmanager-format posts at /api/v2/alerts
    async def alerts(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    await eng.on_events(msg(("ce-1", "if:1", "down")))  # opened before this notifier
    notifier = Notifications(
        NotificationsConfig(webhooks=[WebhookConfig(base, format="alertmanager")]),
        eng.store,
        now=clock,
        refresh=60,
    )
    try:
        async with delivering(notifier):
            await eventually(lambda: len(received) == 1, what="refresh on taking the lease")
            notifier.wake()
            await asyncio.sleep(0.3)
            assert len(received) == 1  # within the refresh period: nothing
            clock.t = T0 + 61
            notifier.wake()
            await eventually(lambda: len(received) == 2, what="second refresh")
    finally:
        await runner.cleanup()
    first, second = received[0][0], received[1][0]
    assert first["labels"]["resource"] == "if:1"
    assert first["endsAt"] < second["endsAt"]  # pushed ahead on every refresh
    assert "endsAt" in first and first["annotations"]["state"] == "open"


@pytest.mark.servers
async def test_collector_notifies_and_counts(
    tmp_path: Path, mosquitto: Mosquitto, receiver: Receiver
) -> None:
    import aiomqtt

    from enoc.wire import encode, topic

    config = collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "notifications": {
                "webhooks": [{"url": receiver.url, "name": "desk"}],
                "dead_letter_file": str(tmp_path / "dead.jsonl"),
            }
        },
    )
    async with running_collector(config) as collector:
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        now = time.time()
        async with aiomqtt.Client(host, int(port), identifier="notify-test") as client:
            for state in ("down", "up"):
                event = Event(f"c-{state}", now, "ce-1", "if:1", "link", state, "critical", state)
                message = EventsMessage("nbo-1", "nairobi", "emea", next(_ids), now, [event])
                await client.publish(topic("nairobi", "nbo-1", "events"), encode(message), qos=1)
        await eventually(lambda: len(receiver.received) == 2, what="collector notifications")
        base = f"http://127.0.0.1:{collector.http_port}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {TOKENS['viewer1']}"}
            ) as r,
        ):
            text = await r.text()
    assert receiver.changes == [("opened", "if:1"), ("resolved", "if:1")]
    assert 'enoc_collector_notify_sent_total{kind="desk"} 2' in text
    assert "enoc_collector_notify_queued 0" in text
    assert json.dumps(receiver.received[0]["incident"]["site"]) == '"nairobi"'


# ---------------------------------------------------------------- notifier kinds


class Chat:
    """A notifier kind the test adds: one line of text per change. It refuses incidents
    of resource `if:9` itself, with a permanent error of its own."""

    refreshes = False

    def __init__(self, config: WebhookConfig, env: Env) -> None:
        self.config = config
        self.env = env
        self.endpoint = f"chat {config.url}"

    def render(self, delivery: Delivery) -> Any:
        return {"text": f"{delivery.change} {delivery.incident['resource']}"}

    async def send(self, delivery: Delivery) -> None:
        if delivery.incident["resource"] == "if:9":
            raise DeliveryRefused(f"{self.endpoint} takes no if:9")
        await self.env.http.post_json(self.config, self.config.url, self.render(delivery))


@pytest.fixture
def chat_kind() -> Iterator[None]:
    register("chat", Chat)
    yield
    del NOTIFIERS["chat"]


async def test_a_kind_registered_from_outside_gets_the_same_delivery(
    engine: tuple[Engine, Clock], receiver: Receiver, tmp_path: Path, chat_kind: None
) -> None:
    """A kind is its module and a line in the registry: the config accepts it by name,
    and the machinery retries, dead-letters and counts for it as for the built-in ones."""
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    config = parse_config(
        "store: {url: 'sqlite:///x.db'}\n"
        "notifications:\n"
        f"  webhooks: [{{url: '{receiver.url}', format: chat, name: team}}]\n"
        f"  retries: 2\n  retry_backoff: 0.05s\n  dead_letter_file: {dead}\n",
        CollectorConfig,
    )
    receiver.script = [503]  # the first attempt fails: retried
    notifier = Notifications(config.notifications, eng.store, now=clock)
    async with delivering(notifier):
        for resource, state in (("if:1", "down"), ("if:9", "down"), ("if:1", "up")):
            logged(notifier, await eng.on_events(msg(("ce-1", resource, state))))
        await eventually(lambda: len(receiver.received) == 2, what="two chat lines")
        await eventually(lambda: notifier.counters()["dead_lettered.team"] == 1, what="refused")
    assert receiver.received == [{"text": "opened if:1"}, {"text": "resolved if:1"}]
    assert receiver.attempts == 3
    (letter,) = read_dead_letters(dead)
    assert (letter["webhook"], letter["url"], letter["attempts"]) == (
        "team",
        f"chat {receiver.url}",
        0,
    )
    assert letter["incident"]["resource"] == "if:9"
    assert "takes no if:9" in letter["reason"]
    counters = notifier.counters()
    assert (counters["sent.team"], counters["failed_attempts"]) == (2, 1)


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match='"json" is already registered'):
        register("json", Chat)


def test_an_unknown_kind_is_a_config_error_naming_file_key_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        "store: {url: 'sqlite:///x.db'}\n"
        "notifications:\n"
        "  webhooks:\n"
        "    - url: http://127.0.0.1:9/hook\n"
        "      format: emial\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert (
        f'{path}:5: notifications.webhooks[0].format: format "emial" is not a notifier kind; '
        'the kinds are "alertmanager", "json"'
    ) in result.stdout + result.stderr


def test_a_retry_backoff_of_zero_is_a_config_error() -> None:
    """It would retry a failing receiver back to back (enoc.retry.Backoff starts above 0)."""
    with pytest.raises(ConfigError) as refused:
        parse_config(
            "store: {url: 'sqlite:///x.db'}\nnotifications:\n  retry_backoff: 0s\n",
            CollectorConfig,
            filename="collector.yaml",
        )
    assert "collector.yaml:3: notifications.retry_backoff: notifications.retry_backoff must be" in (
        str(refused.value)
    )


def test_the_retry_wait_doubles_to_its_cap_and_honours_a_longer_retry_after() -> None:
    backoff = Backoff(1.0, MAX_BACKOFF, rng=lambda low, high: 1.0)  # no jitter
    assert [retry_wait(backoff, None) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert retry_wait(backoff, 10.0) == 10  # the receiver asks for longer
    assert retry_wait(backoff, 0.5) == 2  # but never shortens the backoff
    assert retry_wait(backoff, 600.0) == MAX_BACKOFF


async def test_a_retry_after_given_as_an_http_date_is_honoured(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    """RFC 9110 allows Retry-After as a date: 30 s after the notifier's clock here."""
    eng, clock = engine
    receiver.script = [503]
    receiver.script_headers = {"Retry-After": formatdate(T0 + 30, usegmt=True)}
    hook = WebhookConfig(receiver.url)
    # the kind's own answer: a retryable failure that carries the receiver's wait
    http = Http(now=clock)
    await http.start()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await JsonWebhook(hook, Env(http, clock, 60)).send(Delivery("opened", {}, 1, T0))
    finally:
        await http.close()
    assert failed.value.retry_after == 30
    assert "HTTP 503 from" in str(failed.value)
    # and the machinery waits that long (its own backoff would be 0.05 s)
    receiver.script = [503]
    notifier = notifier_for(hook, clock=clock, store=eng.store)
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("ce-1", "if:1", "down"))))
        await eventually(lambda: notifier.counters()["failed_attempts"] == 1, what="a failure")
        (item,) = notifier.targets[0].queue
        assert item.not_before - time.monotonic() > 20
        assert receiver.attempts == 2 and receiver.received == []


async def test_close_is_safe_without_start_and_twice_and_leaves_no_task(
    engine: tuple[Engine, Clock], receiver: Receiver
) -> None:
    eng, clock = engine
    unstarted = notifier_for(WebhookConfig(receiver.url), clock=clock, store=eng.store)
    await unstarted.close()
    await unstarted.close()
    await asyncio.wait_for(unstarted.run(), 5)  # closed: returns at once
    notifier = notifier_for(WebhookConfig(receiver.url), clock=clock, store=eng.store)
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("ce-1", "if:1", "down"))))
        await eventually(lambda: len(receiver.received) == 1, what="delivered")
        assert any(t.get_name().startswith("notify[") for t in asyncio.all_tasks())
    await notifier.close()
    assert notifier.http.session is None
    assert not any(t.get_name().startswith("notify[") for t in asyncio.all_tasks())
