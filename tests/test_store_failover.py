"""The incident store fails over: a collector on a PostgreSQL pair under Patroni (etcd, two
nodes, a synchronous standby) takes a steady stream of events, operator comments and webhook
deliveries while the primary switches over, or dies with `kill -9` and the standby takes
over, and afterwards every event is in the store once, every comment and its audit line
once, every notification delivered once, and /healthz shows the store link up again."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from collectorkit import collector_config, eventually, running_collector
from test_collector_replicas import Hook, for_the_hook, hook  # noqa: F401 - a fixture

from collector.app import Collector
from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.store import Store, store_outage
from enoc.wire import Event, EventsMessage, encode, topic
from testbed.patroni import PatroniCluster, PatroniNode
from testbed.servers import Mosquitto, PostgreSQL

pytestmark = pytest.mark.servers

SITE, AGENT = "lab", "lab-1"
DEVICES = [f"dev-{n}" for n in range(4)]


class Stream:
    """Events at a steady rate from one agent: a link down, then up again, then the next
    link: an incident opens and resolves every two events (none flaps, none is held)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[str] = []
        self.stop = asyncio.Event()
        self._seq = itertools.count(1)

    async def run(self, rate: float = 20.0) -> None:
        host, port = self.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="failover-agent") as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                link, state = n // 2, "up" if n % 2 else "down"
                device = DEVICES[link % len(DEVICES)]
                now = time.time()
                event = Event(f"ev-{n}", now, device, f"if:{link}", "link", state, "major", state)
                seq = next(self._seq)
                message = EventsMessage(AGENT, SITE, "emea", seq, now, [event])
                await client.publish(topic(SITE, AGENT, "events"), encode(message), qos=1)
                self.sent.append(event.id)
                await asyncio.sleep(1 / rate)


class Comments:
    """An operator commenting on incident 1 again and again, as a client would: a comment
    whose request failed (the store could not answer) is sent again until it is taken."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.taken: list[str] = []
        self.failed = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        operators = self.collector.engine.operators
        for n in itertools.count():
            text = f"note {n}"
            while not self.stop.is_set():
                try:
                    await operators.act(1, "comment", "ops1", text)
                except Exception as exc:
                    if not store_outage(exc):
                        raise
                    self.failed += 1
                    await asyncio.sleep(0.2)
                else:
                    self.taken.append(text)
                    break
            if self.stop.is_set():
                return
            await asyncio.sleep(0.1)


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


async def ride(
    tmp_path: Path,
    mosquitto: Mosquitto,
    cluster: PatroniCluster,
    hook: Hook,  # noqa: F811 - the fixture
    fault: Callable[[], PatroniNode],
) -> None:
    """Stream, comment and notify through `fault` (run in a thread), then account."""
    extra = {
        "incidents": {"agent_timeout": "1h"},
        "notifications": {"webhooks": [{"url": hook.url, "format": "json"}], "lease": "15s"},
    }
    config = collector_config(tmp_path, mosquitto.url, store_url=cluster.url, extra=extra)
    async with running_collector(config) as collector:
        stream = Stream(mosquitto.url)
        sending = asyncio.create_task(stream.run())
        await eventually(lambda: len(stream.sent) > 8, what="the stream under way")
        comments = Comments(collector)
        commenting = asyncio.create_task(comments.run())
        await eventually(lambda: len(comments.taken) >= 3, what="comments under way")
        store_down = False

        async def watch() -> None:
            nonlocal store_down
            while True:
                store_down = store_down or not collector.health()["store"]["ok"]
                await asyncio.sleep(0.05)

        watching = asyncio.create_task(watch())
        old = cluster.primary()
        new = await asyncio.to_thread(fault)
        assert new is not old
        await asyncio.sleep(2)  # more of the stream on the new primary
        stream.stop.set()
        comments.stop.set()
        await asyncio.gather(sending, commenting)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

        # every event once: in the store, and once on the incidents' timelines
        sent = set(stream.sent)
        await eventually(
            lambda: {r[0] for r in rows(cluster.url, "SELECT event_id FROM events")} == sent,
            timeout=40,
            what="every event in the store",
        )
        on_timelines = Counter(
            str(r[0]) for r in rows(cluster.url, "SELECT event_id FROM timeline")
        )
        del on_timelines[""]
        assert set(on_timelines) == sent
        assert [e for e, n in on_timelines.items() if n > 1] == []
        # one incident per link, opened once, resolved when its link came up
        incidents = rows(cluster.url, "SELECT resource, state, count FROM incidents")
        assert sorted(str(r) for r, _, _ in incidents) == sorted(
            f"if:{n}" for n in range((len(stream.sent) + 1) // 2)
        )
        up = {f"if:{n // 2}" for n in range(1, len(stream.sent), 2)}
        assert {r: (s, c) for r, s, c in incidents} == {
            r: ("resolved" if r in up else "open", 1) for r, _, _ in incidents
        }
        # every comment taken once, with its audit line once; none of another's
        audited = Counter(
            str(r[0])
            for r in rows(cluster.url, "SELECT detail FROM audit WHERE action = 'comment'")
        )
        noted = Counter(
            str(r[0]) for r in rows(cluster.url, "SELECT text FROM timeline WHERE what = 'comment'")
        )
        assert audited == noted == Counter(comments.taken)
        # every notification once, none lost
        log = rows(
            cluster.url,
            "SELECT id, change, incident_id, origin FROM changes WHERE kind = 'incident' "
            "ORDER BY id",
        )
        expected = for_the_hook([(int(i), str(c), int(n), str(o)) for i, c, n, o in log])
        await eventually(
            lambda: set(hook.change_ids) >= set(expected), timeout=30, what="every notification"
        )
        assert [i for i, n in Counter(hook.change_ids).items() if n > 1] == []
        # nothing refused or dead-lettered: the outage only held messages back
        assert collector.ingest.stats.rejected == Counter()
        assert collector.ingest.stats.dead_lettered == 0
        # the fault reached the collector, and its store link is back
        assert store_down or comments.failed or collector.store.commits_resolved
        await eventually(lambda: collector.health()["store"]["ok"], what="the store link up")


async def test_a_switchover_loses_and_doubles_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    patroni: PatroniCluster,
    hook: Hook,  # noqa: F811 - the fixture
) -> None:
    await ride(tmp_path, mosquitto, patroni, hook, patroni.switchover)


async def test_a_killed_primary_loses_and_doubles_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    patroni: PatroniCluster,
    hook: Hook,  # noqa: F811 - the fixture
) -> None:
    def kill() -> PatroniNode:
        patroni.kill_primary()
        return patroni.wait_promoted()

    await ride(tmp_path, mosquitto, patroni, hook, kill)


def _admin(server: PostgreSQL, *statements: str) -> None:
    with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)


async def test_a_read_only_primary_holds_messages_back_and_refuses_none(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL
) -> None:
    """Writes refused as read-only (SQLSTATE 25006, what a demoted primary answers) are an
    outage of the store: the events wait for it, none is dead-lettered."""
    url = postgres.url + "?target_session_attrs=read-write"
    config = collector_config(
        tmp_path, mosquitto.url, store_url=url, extra={"incidents": {"agent_timeout": "1h"}}
    )
    async with running_collector(config) as collector:
        _admin(
            postgres,
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        )
        stream = Stream(mosquitto.url)
        sending = asyncio.create_task(stream.run(rate=10))
        await eventually(
            lambda: bool(collector.ingest.stats.failed) and not collector.store.healthy,
            what="the store seen out",
        )
        assert "ReadOnlySqlTransaction" in collector.store.last_error or (
            "read-only" in collector.store.last_error
        )
        stream.stop.set()
        await sending
        _admin(
            postgres, "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"
        )
        sent = set(stream.sent)
        await eventually(
            lambda: {r[0] for r in rows(postgres.url, "SELECT event_id FROM events")} == sent,
            timeout=30,
            what="every event in the store",
        )
        assert collector.ingest.stats.rejected == Counter()
        assert collector.ingest.stats.dead_lettered == 0
        await eventually(lambda: collector.health()["store"]["ok"], what="the store link up")


async def test_a_commit_without_answer_is_looked_up_not_run_twice(
    tmp_path: Path, postgres: PostgreSQL
) -> None:
    """A COMMIT whose connection dies before the answer (here: committed locally, waiting
    for a synchronous standby that never answers, then terminated, as a primary that dies
    at that moment) is found by its token: the comment and its audit line are there once."""
    store = Store(postgres.url)
    await store.open()
    try:
        engine = Engine(store, IncidentsConfig())
        message = EventsMessage(
            AGENT,
            SITE,
            "emea",
            1,
            time.time(),
            [Event("ev-1", time.time(), "dev-0", "if:1", "link", "down", "major", "down")],
        )
        (opened,) = await engine.on_events(message)
        _admin(
            postgres,
            "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
            "SELECT pg_reload_conf()",
        )

        def cut_the_commit() -> None:
            """Terminate the backend once its COMMIT waits for the standby, then let
            commits through again."""
            deadline = time.monotonic() + 20
            with psycopg.connect(postgres.url, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    row = conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                    ).fetchone()
                    if row:
                        conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                        break
                    time.sleep(0.01)
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("SELECT pg_reload_conf()")

        cutting = asyncio.create_task(asyncio.to_thread(cut_the_commit))
        change = await engine.operators.act(opened.incident.id, "comment", "ops1", "once")
        await cutting
        assert change.change == "commented"
        assert rows(postgres.url, "SELECT actor, detail FROM audit WHERE action = 'comment'") == [
            ("ops1", "once")
        ]
        assert rows(postgres.url, "SELECT text FROM timeline WHERE what = 'comment'") == [("once",)]
        logged = rows(postgres.url, "SELECT id FROM changes WHERE change = 'commented'")
        assert logged == [(change.id,)]
        assert store.commits_resolved == 1
    finally:
        await store.close()


async def test_a_notification_sent_while_the_store_is_out_is_sent_once(
    tmp_path: Path,
    mosquitto: Mosquitto,
    postgres: PostgreSQL,
    hook: Hook,  # noqa: F811 - the fixture
) -> None:
    """The store stops taking writes between a notification's delivery and the commit of
    its cursor (a primary switching over): the notifier commits it once the store is back,
    and the receiver is not told again."""

    async def step_down() -> None:
        if len(hook.received) == 1:  # the primary steps down before the first answer
            await asyncio.to_thread(
                _admin,
                postgres,
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'enoc' AND pid <> pg_backend_pid()",
            )

    hook.before_answer = step_down
    extra = {
        "incidents": {"agent_timeout": "1h"},
        "notifications": {"webhooks": [{"url": hook.url}]},
    }
    url = postgres.url + "?target_session_attrs=read-write"
    config = collector_config(tmp_path, mosquitto.url, store_url=url, extra=extra)
    async with running_collector(config) as collector:
        stream = Stream(mosquitto.url)
        sending = asyncio.create_task(stream.run(rate=10))
        await eventually(lambda: len(stream.sent) >= 1)
        stream.stop.set()
        await sending
        await eventually(
            lambda: bool(hook.received) and not collector.store.healthy, what="store out"
        )
        await asyncio.sleep(2)  # the notifier tries to commit its cursor meanwhile
        _admin(
            postgres, "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"
        )
        sent = set(stream.sent)
        await eventually(
            lambda: {r[0] for r in rows(postgres.url, "SELECT event_id FROM events")} == sent,
            what="every event in the store",
        )
        log = rows(postgres.url, "SELECT id FROM changes WHERE kind = 'incident' ORDER BY id")
        await eventually(
            lambda: (
                rows(postgres.url, "SELECT last_id FROM notify_cursors")
                == [(max(r[0] for r in log),)]
            ),
            what="the cursor past every change",
        )
        await asyncio.sleep(1)  # time to tell it again, were it to
        assert hook.change_ids == [r[0] for r in log]
