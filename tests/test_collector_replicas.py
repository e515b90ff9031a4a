"""Two collector replicas on one shared subscription and one PostgreSQL, and the InfluxDB 1.x
`/write` path against Debian's InfluxDB 1.6: real agent, simulator and Mosquitto throughout.

The replicas behave as one collector: the event stream of either carries every change
once, in one order, with ids that resume on the other; a webhook hears each change once
across both, also when the replica delivering to it is killed and restarted; an incident
escalates once; the device page of either shows every poll (from InfluxDB)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import psycopg
import pytest
import yaml
from agentkit import Listener, agent_config, running_agent, simulated_site
from aiohttp import web
from collectorkit import (
    TOKENS,
    collector_config,
    collector_process_command,
    eventually,
    running_collector,
)
from test_collector_e2e import _vm_points, numeric_points

from collector.app import Collector
from enoc.wire import (
    DeviceSample,
    Event,
    EventsMessage,
    MetricsMessage,
    Severity,
    encode,
    topic,
)
from testbed.servers import InfluxDB1, Mosquitto, PostgreSQL, VictoriaMetrics, free_port

pytestmark = pytest.mark.servers


async def test_two_replicas_split_the_stream_and_keep_one_incident_per_key(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria_metrics: VictoriaMetrics,
    postgres: PostgreSQL,
) -> None:
    shared = {"mqtt": {"shared_group": "enoc-collectors"}}
    configs = [
        collector_config(
            tmp_path,
            mosquitto.url,
            vm=victoria_metrics,
            store_url=postgres.url,
            name=f"replica-{n}",
            extra=shared,
        )
        for n in (1, 2)
    ]
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(configs[0]) as one,
        running_collector(configs[1]) as two,
    ):
        replicas = (one, two)
        agent = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(agent):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 4 * len(site.devices))
            switch = next(d for d in site.devices if d.name == "nyc-acc-1")
            faults = [("nyc-acc-1", i.index) for i in switch.interfaces if i.admin_up][:4]
            for device, if_index in faults:
                site.sim.inject(device, {"kind": "link_down", "ifIndex": if_index})

            expected = {(d, f"if:{i}") for d, i in faults}

            async def links_are(state: str) -> bool:
                found = await one.engine.queries.incidents(site="nyc", state=state)
                keys = {(i.key.device, i.key.resource) for i in found if i.key.kind == "link"}
                return keys == expected

            await eventually(lambda: links_are("open"), what="link incidents")
            # several more polls see the faults still there: counts go up, incidents do not
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 8 * len(site.devices))
            site.sim.clear("nyc-acc-1")
            await eventually(lambda: links_are("resolved"), what="all resolved")
        published = listener.metrics()
        await eventually(lambda: all(_drained(c) for c in replicas), what="both drained")
        received = [c.ingest.stats.received.get("metrics", 0) for c in replicas]
        assert all(n > 0 for n in received), f"the shared subscription splits: {received}"
        assert sum(received) == len(published), "each message to exactly one replica"
        incidents = [i for i in await two.engine.queries.incidents() if i.key.kind == "link"]
        keys = [(i.key.device, i.key.resource) for i in incidents]
        assert sorted(keys) == sorted(expected), "one incident per key across both replicas"
        assert {i.state for i in incidents} == {"resolved"}

    points = numeric_points(published)
    await eventually(
        lambda: set(points) <= set(_vm_points(victoria_metrics)),
        what="every published point in VictoriaMetrics",
        timeout=15,
    )


def _drained(collector: Collector) -> bool:
    writer = collector.sinks["influxdb"]
    return collector.ingest.pending_metrics == 0 and writer.stats.buffer_points == 0


async def test_influxdb_1_6_through_the_v1_write_api(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    influxdb1.create_database("enoc")
    password = tmp_path / "influx-password"
    password.write_text("not-checked-by-an-open-influxdb\n")
    v1 = {
        "influxdb": {
            "url": influxdb1.url,
            "api": "v1",
            "database": "enoc",
            "retention_policy": "autogen",
            "username": "enoc",
            "password_file": str(password),
            "flush_interval": "0.2s",
        }
    }
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(collector_config(tmp_path, mosquitto.url, extra=v1)) as coll,
    ):
        agent = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(agent):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 3 * len(site.devices))
        published = listener.metrics()
        await eventually(lambda: _drained(coll), what="everything written")
        assert coll.sinks["influxdb"].stats.points_dropped == 0

    expected = {
        (series, field, stamp): value
        for (series, field, stamp), value in numeric_points(published).items()
        if series.startswith("interface,")
    }
    landed = _influx_interface_points(influxdb1)
    missing = set(expected) - set(landed)
    assert not missing, f"{len(missing)} of {len(expected)} missing, e.g. {sorted(missing)[:2]}"
    assert len(landed) == len(expected), "nothing doubled or invented"
    wrong = [k for k, v in expected.items() if not math.isclose(landed[k], v, rel_tol=1e-9)]
    assert not wrong, f"values differ for {wrong[:3]}"


def _influx_interface_points(server: InfluxDB1) -> dict[tuple[str, str, int], float]:
    """Every numeric interface field InfluxDB holds, keyed like `numeric_points`."""
    params = urllib.parse.urlencode(
        {"q": 'SELECT * FROM "interface" GROUP BY *', "db": "enoc", "epoch": "ms"}
    )
    with urllib.request.urlopen(f"{server.url}/query?{params}", timeout=10) as response:
        body = json.load(response)
    out: dict[tuple[str, str, int], float] = {}
    for series in body["results"][0].get("series", []):
        tags = ",".join(f"{k}={_escape(v)}" for k, v in sorted(series["tags"].items()) if v)
        head = f"interface,{tags}"
        columns = series["columns"]
        for row in series["values"]:
            stamp = int(row[0])
            for name, value in zip(columns[1:], row[1:], strict=True):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[(head, name, stamp)] = float(value)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


# ------------------------------------------------------------------ one collector of two


@dataclass
class Hook:
    """A webhook receiver on loopback: what it was sent, in order."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    # what a test does after a request arrived and before it is answered
    before_answer: Callable[[], Awaitable[None]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        if self.before_answer is not None:
            await self.before_answer()
        return web.Response(status=204)

    @property
    def change_ids(self) -> list[int]:
        return [r["change_id"] for r in self.received]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    yield receiver
    await runner.cleanup()


class Replica:
    """`enoc collector` as its own process, so that it can be killed with SIGKILL."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        settings = yaml.safe_load(config.read_text())
        self.client_id: str = settings["mqtt"]["client_id"]
        self.port = int(settings["http"]["listen"].rsplit(":", 1)[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                collector_process_command(self.config), stdout=out, stderr=subprocess.STDOUT
            )
        await eventually(self.healthy, what=f"{self.client_id} healthy", timeout=30)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


class Sse:
    """A stream client: every event it received, and a reconnect with Last-Event-ID."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.events: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def connect(self, replica: Replica, last_id: int | None = None) -> None:
        self.connected.clear()
        self._task = asyncio.create_task(self._read(replica, last_id))

    async def _read(self, replica: Replica, last_id: int | None) -> None:
        headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        event: dict[str, Any] = {}
        with contextlib.suppress(aiohttp.ClientError):
            async with self.http.get(f"{replica.base}/api/v1/stream", headers=headers) as r:
                assert r.status == 200
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line == ": connected":
                        self.connected.set()
                    if not line:
                        if "data" in event:
                            self.events.append(event)
                        event = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        event[name] = json.loads(value) if name == "data" else value

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events]


_seq = itertools.count(1)


async def publish_event(
    url: str, site: str, device: str, resource: str, state: str, severity: Severity = "major"
) -> None:
    """One events message of agent `<site>-1`: the shared subscription gives it to either."""
    now = time.time()
    event = Event(
        f"ev-{next(_seq)}", now, device, resource, "link", state, severity, f"{resource} {state}"
    )
    message = EventsMessage(f"{site}-1", site, "emea", next(_seq), now, [event])
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier=f"pub-{next(_seq)}") as client:
        await client.publish(topic(site, f"{site}-1", "events"), encode(message), qos=1)


def change_log(url: str) -> list[tuple[int, str, int, str]]:
    """The store's change log: (id, change, incident id, origin) of incident changes."""
    with psycopg.connect(url) as conn:
        return [
            (int(i), c, int(n), o)
            for i, c, n, o in conn.execute(
                "SELECT id, change, incident_id, origin FROM changes "
                "WHERE kind = 'incident' ORDER BY id"
            )
        ]


def lease_owner(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT owner, lease_until FROM notify_cursors").fetchone()
    assert row is not None and row[1] > time.time(), "someone holds the webhook's lease"
    return str(row[0])


def for_the_hook(log: list[tuple[int, str, int, str]]) -> list[int]:
    """What the webhook should hear of this test's changes: all but duplicate events
    (updated) and comments; nothing here is held except incident 4 in maintenance, whose
    only held changes are an update (not sent) and its resolution (sent: it was told)."""
    return [i for i, change, _, _ in log if change not in ("updated", "commented")]


def replica_pair(
    tmp_path: Path, mqtt_url: str, store_url: str, settings: dict[str, Any]
) -> tuple[Replica, Replica]:
    """Two `enoc collector` processes (not started) on one store, with `settings`."""
    one, two = (
        Replica(
            collector_config(tmp_path, mqtt_url, store_url=store_url, name=name, extra=settings),
            tmp_path / f"{name}.log",
        )
        for name in ("replica-1", "replica-2")
    )
    return one, two


@contextlib.contextmanager
def replicas_running(*replicas: Replica) -> Iterator[None]:
    try:
        yield
    finally:
        codes = [r.stop() for r in replicas]
        assert codes == [0] * len(replicas), "SIGTERM stops each replica cleanly"


async def test_two_replicas_stream_notify_and_escalate_as_one(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL, hook: Hook
) -> None:
    settings = {
        "mqtt": {"shared_group": "enoc-collectors"},
        "notifications": {
            "webhooks": [{"url": hook.url, "name": "desk", "timeout": "1s"}],
            "lease": "2s",
            "retry_backoff": "0.1s",
            "escalate_after": {"critical": "3s"},
        },
    }
    one, two = replica_pair(tmp_path, mosquitto.url, postgres.url, settings)
    by_origin = {r.client_id: r for r in (one, two)}
    await one.start()
    await two.start()
    async with aiohttp.ClientSession() as http:

        async def api(replica: Replica, method: str, path: str, **kw: Any) -> Any:
            user = kw.pop("user", "ops1")
            headers = {"Authorization": f"Bearer {TOKENS[user]}"}
            async with http.request(method, replica.base + path, headers=headers, **kw) as r:
                assert r.status < 300, await r.text()
                return await r.json()

        async def incidents() -> dict[str, dict[str, Any]]:
            found = await api(one if one.healthy() else two, "GET", "/api/v1/incidents")
            return {i["device"]: i for i in found["incidents"]}

        async def states(*pairs: tuple[str, str]) -> bool:
            now = await incidents()
            return all(d in now and now[d]["state"] == s for d, s in pairs)

        def hook_caught_up() -> bool:
            return hook.change_ids == for_the_hook(change_log(postgres.url))

        sse_one, sse_two = Sse(http), Sse(http)
        with replicas_running(one, two):
            sse_one.connect(one)
            sse_two.connect(two)
            await asyncio.wait_for(sse_one.connected.wait(), 10)
            await asyncio.wait_for(sse_two.connected.wait(), 10)

            # --- both up: events split between them, operators act on both
            devices = [(f"s{n % 3}", f"dev-{n}") for n in range(1, 7)]
            for site, device in devices:
                await publish_event(mosquitto.url, site, device, "if:1", "down")
            await eventually(
                lambda: states(*[(d, "open") for _, d in devices]), what="six incidents"
            )
            for site, device in devices[:2]:  # duplicates: counts go up, nothing new
                await publish_event(mosquitto.url, site, device, "if:1", "down")
            await eventually(
                lambda: len(change_log(postgres.url)) == 8, what="the duplicates applied"
            )
            ids = {d: i["id"] for d, i in (await incidents()).items()}
            await api(one, "POST", f"/api/v1/incidents/{ids['dev-1']}/ack")
            await api(two, "POST", f"/api/v1/incidents/{ids['dev-2']}/comment", json={"text": "x"})
            await api(two, "POST", f"/api/v1/incidents/{ids['dev-3']}/ack")
            # a critical one escalates every 3 s while nobody acknowledges it
            await publish_event(mosquitto.url, "s0", "core-1", "if:9", "down", "critical")
            await eventually(lambda: states(("core-1", "open")), what="the critical incident")

            async def escalated_twice() -> bool:
                return int((await incidents())["core-1"]["escalated"]) >= 2

            await eventually(escalated_twice, what="two escalations", timeout=30)
            await api(two, "POST", f"/api/v1/incidents/{(await incidents())['core-1']['id']}/ack")
            for site, device in devices[:3]:
                await publish_event(mosquitto.url, site, device, "if:1", "up")
            await eventually(
                lambda: states(*[(d, "resolved") for _, d in devices[:3]]), what="three resolved"
            )
            # dev-4 goes into maintenance: held, but the webhook was told it is open
            await api(
                one,
                "POST",
                "/api/v1/maintenance",
                user="admin1",
                json={
                    "site": "s1",
                    "device": "dev-4",
                    "starts": f"{time.time() - 60}",
                    "ends": "1h",
                },
            )

            async def dev4_held() -> bool:
                return bool((await incidents())["dev-4"]["maintenance"])

            await eventually(dev4_held, what="dev-4 in maintenance")
            await eventually(hook_caught_up, what="the webhook heard everything so far")
            log = change_log(postgres.url)
            assert {o for *_, o in log} == {one.client_id, two.client_id}, "both made changes"
            await eventually(
                lambda: sse_one.ids == sse_two.ids == [i for i, *_ in log],
                what="both streams carry the whole log",
            )

            # --- the replica delivering to the webhook dies with SIGKILL
            owner = by_origin[lease_owner(postgres.url).rsplit(":", 1)[0]]
            survivor = two if owner is one else one
            owner_stream, survivor_stream = (
                (sse_one, sse_two) if owner is one else (sse_two, sse_one)
            )
            owner.kill()
            await owner_stream.close()
            seen_before_kill = owner_stream.ids[-1]
            now = await incidents()
            await api(survivor, "POST", f"/api/v1/incidents/{now['dev-4']['id']}/resolve")
            await api(survivor, "POST", f"/api/v1/incidents/{now['dev-5']['id']}/resolve")
            await api(survivor, "POST", f"/api/v1/incidents/{now['dev-6']['id']}/ack")
            await eventually(hook_caught_up, what="the survivor took the webhook over")
            assert lease_owner(postgres.url).rsplit(":", 1)[0] == survivor.client_id
            # the killed replica's stream client goes on with the survivor
            owner_stream.connect(survivor, last_id=seen_before_kill)
            log = change_log(postgres.url)
            await eventually(
                lambda: owner_stream.ids == [i for i, *_ in log], what="resumed on the other"
            )

            # --- it comes back; a client resumes on it from before it died (the store)
            await owner.start()
            late = Sse(http)
            late.connect(owner, last_id=seen_before_kill)
            for site, device in devices[5:]:
                await publish_event(mosquitto.url, site, device, "if:1", "up")
            await eventually(lambda: states(("dev-6", "resolved")), what="dev-6 resolved")
            await eventually(hook_caught_up, what="the webhook heard the rest")
            log = change_log(postgres.url)
            await eventually(
                lambda: survivor_stream.ids == owner_stream.ids == [i for i, *_ in log],
                what="every stream client has the whole log",
            )
            await eventually(
                lambda: late.ids == [i for i, *_ in log if i > seen_before_kill],
                what="resumed on the restarted replica",
            )
            for client in (sse_one, sse_two, late):
                await client.close()

    # each change once, in log order, on every stream and at the webhook
    for client in (survivor_stream, owner_stream):
        assert len(set(client.ids)) == len(client.ids)
        assert [e["data"]["change"] for e in client.events] == [c for _, c, *_ in log]
    assert hook.change_ids == for_the_hook(log)
    held = [r for r in hook.received if r["incident"]["device"] == "dev-4"]
    assert [(r["change"], r["incident"]["maintenance"]) for r in held] == [
        ("opened", False),
        ("resolved", True),
    ], "told it opened, the receiver hears it resolve, although held and after a kill"
    levels = [
        e["data"]["incident"]["escalated"]
        for e in survivor_stream.events
        if e["data"]["change"] == "escalated"
    ]
    assert len(levels) >= 2 and levels == sorted(set(levels)), f"each level once: {levels}"
    assert [r["incident"]["escalated"] for r in hook.received if r["change"] == "escalated"] == (
        levels
    )


async def test_the_device_page_of_either_replica_shows_every_poll(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1, postgres: PostgreSQL
) -> None:
    """Each replica receives only its share of a device's polls; with `recent.source:
    influxdb` the device page of either reads the last hour from InfluxDB, where both
    write, and shows them all. Its own window is the fallback, and says so."""
    influxdb1.create_database("enoc")
    settings = {
        "mqtt": {"shared_group": "enoc-collectors"},
        "influxdb": {
            "url": influxdb1.url,
            "api": "v1",
            "database": "enoc",
            "flush_interval": "0.2s",
        },
        "recent": {"source": "influxdb"},
    }
    configs = [
        collector_config(
            tmp_path, mosquitto.url, store_url=postgres.url, name=f"replica-{n}", extra=settings
        )
        for n in (1, 2)
    ]
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(configs[0]) as one,
        running_collector(configs[1]) as two,
    ):
        agent = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(agent):
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 6 * len(site.devices))
        await eventually(lambda: _drained(one) and _drained(two), what="both written")
        device = next(d for d in site.devices if d.name == "nyc-acc-1")
        samples = sorted(
            (s for m in listener.metrics() for s in m.samples if s.device == device.name),
            key=lambda s: s.ts,
        )
        polls = [round(s.ts * 1000) / 1000 for s in samples]  # InfluxDB keeps milliseconds
        latest = samples[-1]
        pages = []
        async with aiohttp.ClientSession() as http:
            for replica in (one, two):
                url = f"http://127.0.0.1:{replica.http_port}/api/v1/devices/nyc/{device.name}"
                headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
                async with http.get(url, headers=headers) as r:
                    assert r.status == 200
                    pages.append((await r.json())["recent"])
        # what each replica received itself: its share of the polls only
        published = {
            d.name: {s.ts for m in listener.metrics() for s in m.samples if s.device == d.name}
            for d in site.devices
        }
        local = {
            (n, name): set(w["history"]["t"]) if (w := r.recent.device("nyc", name)) else set()
            for n, r in enumerate((one, two))
            for name in published
        }
        sources = {w["source"] for r in (one, two) if (w := r.recent.device("nyc", device.name))}

    for page in pages:
        assert page["source"] == "influxdb"
        assert page["history"]["t"] == polls, "every poll, whichever replica received it"
        assert page["ts"] == polls[-1]
        assert page["address"] == latest.address
        assert page["agent"] == "nyc-1"
        assert page["fields"]["cpu"] == latest.fields["cpu"]
        assert [i["ifIndex"] for i in page["interfaces"]] == sorted(
            i.if_index for i in latest.interfaces
        )
        for shown in page["interfaces"]:
            assert shown["history"]["t"] == polls
            sample = next(i for i in latest.interfaces if i.if_index == shown["ifIndex"])
            assert shown["ifName"] == sample.name
            assert shown["fields"]["in_bps"] == sample.fields["in_bps"]
    assert pages[0] == pages[1], "the same page from either replica"
    assert sources == {"local"}
    for name, polled in published.items():
        assert local[0, name] | local[1, name] == polled, "each poll reached one replica"
        assert not local[0, name] & local[1, name], "and only one"
    for n in (0, 1):
        assert any(local[n, name] != polled for name, polled in published.items()), (
            f"replica {n + 1}'s own window lacks the other's share"
        )


def test_check_config_warns_when_replicas_would_not_act_as_one(tmp_path: Path) -> None:
    """A shared subscription with SQLite (each file its replica's share of incidents) or
    with the local recent window (each device page its replica's share of the polls)."""
    from collector.config import CollectorConfig, collector_issues
    from enoc.config import load_config

    path = tmp_path / "collector.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"shared_group": "enoc-collectors"},
                "store": {"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
            }
        )
    )
    warnings = {i.key: i for i in collector_issues(load_config(path, CollectorConfig), "x")}
    assert set(warnings) == {"store.url", "recent.source"}
    assert all(i.warning for i in warnings.values())
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"shared_group": "enoc-collectors"},
                "store": {"url": "postgresql://enoc@127.0.0.1/enoc"},
                "influxdb": {"url": "http://127.0.0.1:8086", "api": "v1", "database": "enoc"},
                "recent": {"source": "influxdb"},
            }
        )
    )
    assert collector_issues(load_config(path, CollectorConfig), "x") == []
    path.write_text(yaml.safe_dump({"recent": {"source": "influxdb"}}))
    (issue,) = collector_issues(load_config(path, CollectorConfig), "x")
    assert (issue.key, issue.warning) == ("recent.source", True)
    assert "without an influxdb section" in issue.message


# ------------------------------------------------------------------ events split between replicas


async def test_a_pair_split_between_replicas_resolves_whichever_decides_first(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL
) -> None:
    """The shared subscription hands an agent's messages to the replicas in turns: a key's
    down goes to one and its up to the other. In a first burst each replica holding a down
    waits until the other has committed its up (as when it is slower, or was killed and
    gets the down redelivered); in a second the up waits for the down. Every incident ends
    resolved with the events' own times, whichever replica decided first, and both
    replicas' APIs say so."""
    shared = {"mqtt": {"shared_group": "enoc-collectors"}}
    configs = [
        collector_config(
            tmp_path, mosquitto.url, store_url=postgres.url, name=f"replica-{n}", extra=shared
        )
        for n in (1, 2)
    ]
    handled: dict[str, str] = {}  # event id -> the replica that decided it
    committed: list[str] = []  # event ids in the order their decisions committed
    done: dict[str, asyncio.Event] = {}
    waits_for: dict[str, str] = {}  # event id -> the event id committed before it is decided
    stuck: list[str] = []

    def gate(name: str, collector: Collector) -> None:
        decide = collector.engine.on_events

        async def on_events(message: EventsMessage) -> Any:
            for e in message.events:
                handled[e.id] = name
                first = waits_for.get(e.id)
                if first is not None:
                    try:  # the other replica decides it, unless the broker gave both to us
                        await asyncio.wait_for(done.setdefault(first, asyncio.Event()).wait(), 5)
                    except TimeoutError:
                        stuck.append(e.id)
            changes = await decide(message)
            for e in message.events:
                committed.append(e.id)
                done.setdefault(e.id, asyncio.Event()).set()
            return changes

        collector.engine.on_events = on_events  # type: ignore[method-assign]

    base = time.time() - 3600
    pairs = []  # (down, up) of one key each
    for n in range(24):
        down_at = base + 60 * n
        pairs.append(
            tuple(
                Event(f"split-{n}-{s}", at, f"dev-{n}", "if:1", "link", s, "major", f"if:1 {s}")
                for s, at in (("down", down_at), ("up", down_at + 7.5))
            )
        )
    up_first, down_first = pairs[:12], pairs[12:]
    for down, up in up_first:
        waits_for[down.id] = up.id
    for down, up in down_first:
        waits_for[up.id] = down.id

    async with running_collector(configs[0]) as one, running_collector(configs[1]) as two:
        gate("one", one)
        gate("two", two)
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="split-publisher") as client:
            for pair in pairs:
                for e in pair:  # in order, each its own message: one to each replica
                    message = EventsMessage("s1-1", "s1", "emea", next(_seq), time.time(), [e])
                    await client.publish(topic("s1", "s1-1", "events"), encode(message), qos=1)
        await eventually(lambda: len(committed) == 2 * len(pairs), what="every event decided")
        assert not stuck, f"the broker gave both of a pair to one replica: {stuck}"
        for down, up in pairs:
            assert handled[down.id] != handled[up.id], "each of a pair to another replica"
        position = {e: n for n, e in enumerate(committed)}
        assert all(position[up.id] < position[down.id] for down, up in up_first)
        assert all(position[down.id] < position[up.id] for down, up in down_first)
        seen = []
        async with aiohttp.ClientSession() as http:
            for replica in (one, two):
                url = f"http://127.0.0.1:{replica.http_port}/api/v1/incidents?site=s1"
                headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
                async with http.get(url, headers=headers) as r:
                    assert r.status == 200
                    seen.append(
                        sorted(
                            (i["device"], i["state"], i["opened"], i["resolved"], i["count"])
                            for i in (await r.json())["incidents"]
                        )
                    )
        stats = await one.engine.queries.stats(base - 1, base + 3600)
    expected = sorted((down.device, "resolved", down.ts, up.ts, 1) for down, up in pairs)
    assert seen[0] == expected, "every incident resolved, opened and resolved at its events"
    assert seen[1] == seen[0], "the same on either replica"
    assert [(s["incidents"], s["resolved"], s["mttr_s"]) for s in stats] == [(24, 24, 7.5)]


# ------------------------------------------------------------------ MQTT 5, and 3.1.1 for amqtt


def _poll(seq: int) -> bytes:
    sample = DeviceSample("dev-1", "127.0.0.9", _T0 + seq, fields={"cpu": float(seq)})
    return encode(MetricsMessage("agent-1", "lab", "emea", seq, _T0 + seq, samples=[sample]))


_T0 = time.time() - 3600


async def _publish_polls(url: str, seqs: range) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="mqtt5-publisher") as client:
        for seq in seqs:
            await client.publish(topic("lab", "agent-1", "metrics"), _poll(seq), qos=1)


async def test_replicas_speak_mqtt_5_to_mosquitto_split_the_stream_and_keep_their_sessions(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    """Both lanes of both replicas connect with MQTT 5 (Mosquitto's log: p5, clean start
    off). The shared subscription splits the stream between them; a replica that stops
    keeps its v5 session (session expiry), the broker queues its share in it, and the
    restarted replica resumes it and writes that share: every poll once."""
    shared = {"mqtt": {"shared_group": "enoc-collectors"}}
    configs = [
        collector_config(tmp_path, mosquitto.url, vm=victoria_metrics, name=f"v5-{n}", extra=shared)
        for n in (1, 2)
    ]
    async with running_collector(configs[0]) as one:
        async with running_collector(configs[1]) as two:
            for replica in (one, two):
                assert replica.ingest.stats.protocol == {"metrics": 5, "events": 5}
                assert replica.health()["mqtt"]["protocol"] == {"metrics": "5", "events": "5"}
                assert replica.ingest.stats.session_present == {"metrics": False, "events": False}
            log = mosquitto.log_tail(100_000)
            for name in ("v5-1", "v5-2"):
                for lane in ("metrics", "events"):
                    assert f"as enoc-{name}-{lane} (p5, c0, k30)" in log, f"{name} {lane}"
            await _publish_polls(mosquitto.url, range(40))
            await eventually(
                lambda: one.ingest.stats.acked + two.ingest.stats.acked == 40, what="40 written"
            )
            first = [r.ingest.stats.received["metrics"] for r in (one, two)]
            assert all(first) and sum(first) == 40, f"split between the replicas: {first}"
        # replica 2 is down; the broker goes on giving it a share, into its v5 session
        await _publish_polls(mosquitto.url, range(40, 80))
        await eventually(lambda: one.ingest.stats.acked >= first[0] + 1, what="replica 1 on")
        async with running_collector(configs[1]) as two:
            assert two.ingest.stats.session_present == {"metrics": True, "events": True}
            assert two.ingest.stats.protocol == {"metrics": 5, "events": 5}
            await eventually(
                lambda: one.ingest.stats.acked + two.ingest.stats.acked == 80 - first[1],
                what="the rest written",
            )
            held = two.ingest.stats.received["metrics"]
    assert 0 < held < 40, f"the stopped replica was kept its share ({held}) and got it"
    stamps = [
        t for row in victoria_metrics.export('{__name__="device_cpu"}') for t in row["timestamps"]
    ]
    assert sorted(stamps) == [round((_T0 + s) * 1000) for s in range(80)], "every poll once"


async def test_the_collector_falls_back_to_3_1_1_with_the_demos_amqtt_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """amqtt leaves a v5 CONNECT unanswered: each lane tries 3.1.1 after the CONNACK
    timeout, says so once, and consumes metrics and events with manual acks."""
    from enoc.demo import start_broker

    caplog.set_level(logging.INFO, logger="enoc.collector.ingest")
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # as the demo does
    port = free_port()
    broker = await start_broker(port)
    url = f"mqtt://127.0.0.1:{port}"
    try:
        async with running_collector(collector_config(tmp_path, url, name="amqtt")) as coll:
            assert coll.ingest.stats.protocol == {"metrics": 4, "events": 4}
            assert coll.health()["mqtt"]["protocol"] == {"metrics": "3.1.1", "events": "3.1.1"}
            await _publish_polls(url, range(5))
            host = "127.0.0.1"
            async with aiomqtt.Client(host, port, identifier="amqtt-events") as client:
                down = Event("e1", time.time(), "dev-1", "if:1", "link", "down", "major", "down")
                message = EventsMessage("agent-1", "lab", "emea", 1, time.time(), [down])
                await client.publish(topic("lab", "agent-1", "events"), encode(message), qos=1)
            await eventually(lambda: coll.ingest.stats.acked == 6, what="metrics and events")
            (incident,) = await coll.engine.queries.incidents(state="open")
            assert incident.key.resource == "if:1"
            assert coll.health()["mqtt"]["ok"]
    finally:
        await broker.shutdown()
    said = [r.getMessage() for r in caplog.records if "does not speak MQTT 5" in r.getMessage()]
    assert len(said) == 2, "once per lane"
    # the unanswered v5 attempts left nothing running (nor a socket for a later test's
    # garbage collection to complain about)
    await asyncio.sleep(0.2)
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not left, left
    assert not [r for r in caplog.records if "cannot reach broker" in r.getMessage()]


# ------------------------------------------------------------------ console sessions, two replicas


async def test_a_logout_and_failed_logins_count_on_both_replicas(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL
) -> None:
    """Behind a load balancer a console's requests reach either replica. A cookie logged out
    on one is refused by the other at once; failed logins spread over both meet the limit
    at the same total as on one (3 here): the fourth gets 429 with Retry-After on either,
    right password or not; and attempts made at once through both let exactly 3 through."""
    from yarl import URL

    from collector.auth import hash_password
    from collector.session import COOKIE

    password = "a long console password"
    users = tmp_path / "console-users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": name, "role": "operator", "password_hash": hash_password(password)}
                    for name in ("ops1", "ops2")
                ]
            }
        )
    )
    key = tmp_path / "session-key"
    key.write_text("k" * 64)
    settings = {
        "mqtt": {"shared_group": "enoc-collectors"},
        "http": {
            "users_file": str(users),
            "session_key_file": str(key),
            "login_max_failures": 3,
        },
    }
    configs = [
        collector_config(
            tmp_path, mosquitto.url, store_url=postgres.url, name=f"replica-{n}", extra=settings
        )
        for n in (1, 2)
    ]

    def client(address: str) -> aiohttp.ClientSession:
        """A browser at its own loopback address (the limit counts per address and name)."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )

    async with running_collector(configs[0]) as one, running_collector(configs[1]) as two:
        bases = [f"http://127.0.0.1:{c.http_port}" for c in (one, two)]

        async def login(http: aiohttp.ClientSession, base: str, name: str, pw: str) -> Any:
            async with http.post(f"{base}/login", json={"name": name, "password": pw}) as r:
                body = await r.json()
                return r.status, r.headers.get("Retry-After"), body

        async def whoami(cookie: str, base: str) -> int:
            async with (
                aiohttp.ClientSession() as bare,
                bare.get(f"{base}/api/v1/whoami", headers={"Cookie": f"{COOKIE}={cookie}"}) as r,
            ):
                return r.status

        # --- logged in on one, the cookie works on both; logged out on one, on neither
        async with client("127.0.0.2") as http:
            status, _, answer = await login(http, bases[0], "ops1", password)
            assert status == 200
            cookie = http.cookie_jar.filter_cookies(URL(bases[0]))[COOKIE].value
            assert [await whoami(cookie, b) for b in bases] == [200, 200]
            async with http.post(
                f"{bases[0]}/logout", headers={"X-CSRF-Token": answer["csrf"]}
            ) as r:
                assert r.status == 200
        assert [await whoami(cookie, b) for b in reversed(bases)] == [401, 401]

        # --- failed logins in turns on both replicas: the fourth is refused by either
        async with client("127.0.0.3") as http:
            tries = [await login(http, bases[n % 2], "ops1", "wrong") for n in range(3)]
            assert [status for status, _, _ in tries] == [401, 401, 401]
            for base in (bases[1], bases[0]):
                status, retry_after, _ = await login(http, base, "ops1", password)
                assert status == 429, "the right password too, once locked out"
                assert retry_after is not None and int(retry_after) > 0
        async with client("127.0.0.4") as http:  # another address: not held back
            status, _, _ = await login(http, bases[1], "ops1", password)
            assert status == 200, "a stranger's failures do not lock the name out"
        async with client("127.0.0.3") as http:  # and the failing address still waits
            status, _, _ = await login(http, bases[0], "ops1", password)
            assert status == 429

        # --- eight at once, four through each replica: three are tried, five refused
        async with client("127.0.0.5") as http:
            at_once = await asyncio.gather(
                *(login(http, bases[n % 2], "ops2", "wrong") for n in range(8))
            )
        assert sorted(status for status, _, _ in at_once) == [401] * 3 + [429] * 5
    with psycopg.connect(postgres.url) as conn:
        kept = conn.execute("SELECT COUNT(*) FROM sessions WHERE revoked > 0").fetchone()
    assert kept == (1,), "the logout is in the store"


async def test_over_mqtt_5_the_broker_holds_back_what_the_collector_has_not_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    """The collector's Receive Maximum is `mqtt.max_unacked` (30 here, above Mosquitto's
    own limit of 20 for 3.1.1 clients): with the database down it holds exactly that many
    unacknowledged, the broker keeps the rest, and all are written once it is back."""
    extra = {"mqtt": {"max_unacked": 30}}
    config = collector_config(tmp_path, mosquitto.url, vm=victoria_metrics, extra=extra)
    async with running_collector(config) as coll:
        assert coll.ingest.stats.protocol["metrics"] == 5
        await asyncio.to_thread(victoria_metrics.stop)
        await _publish_polls(mosquitto.url, range(60))
        await eventually(lambda: coll.ingest.pending_metrics == 30, what="30 in flight")
        await asyncio.sleep(1.0)
        assert coll.ingest.pending_metrics == 30 and coll.ingest.stats.acked == 0
        assert coll.ingest.stats.received["metrics"] == 30, "the broker sent no more"
        await asyncio.to_thread(victoria_metrics.start)
        await eventually(lambda: coll.ingest.stats.acked == 60, what="all written", timeout=60)
    stamps = [
        t for row in victoria_metrics.export('{__name__="device_cpu"}') for t in row["timestamps"]
    ]
    assert sorted(stamps) == [round((_T0 + s) * 1000) for s in range(60)]


async def test_while_postgresql_is_down_the_api_answers_503_and_logs_it_once(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request that needs the store gets 503 with Retry-After and a JSON error while
    PostgreSQL is away (it was a 500 with a traceback logged per request), one warning for
    the outage and one line when it is over; then the same request answers 200. /metrics
    answers throughout, saying whether the store is up."""
    caplog.set_level(logging.INFO)
    config = collector_config(tmp_path, mosquitto.url, store_url=postgres.url)
    headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
    async with running_collector(config) as coll, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{coll.http_port}/api/v1/incidents?state=active"

        async def get() -> tuple[int, str | None, Any]:
            async with http.get(url, headers=headers) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        async def scrape() -> tuple[int, str]:
            metrics = f"http://127.0.0.1:{coll.http_port}/metrics"
            async with http.get(metrics, headers=headers) as r:
                return r.status, await r.text()

        assert (await get())[0] == 200
        postgres.stop()
        try:
            answers = [await get() for _ in range(4)]
            # the counters still answer: they are what the outage is diagnosed with
            status, text = await scrape()
        finally:
            postgres.start()
        assert status == 200 and "\nenoc_collector_store_up 0\n" in text
        assert "enoc_collector_incidents_open" not in text
        assert "\nenoc_collector_acked_total 0\n" in text
        assert [(s, retry) for s, retry, _ in answers] == [(503, "5")] * 4
        assert all("incident store is unavailable" in body["error"] for _, _, body in answers)

        async def answers_again() -> bool:
            return (await get())[0] == 200

        await eventually(answers_again, what="the API after PostgreSQL came back")
        status, text = await scrape()
        assert "\nenoc_collector_store_up 1\n" in text
        assert 'enoc_collector_incidents_open{severity="critical"} 0' in text
    lines = [r.getMessage() for r in caplog.records if r.name == "enoc.collector.api"]
    assert len([m for m in lines if "the incident store, for the API is failing" in m]) == 1
    assert len([m for m in lines if "the incident store, for the API recovered" in m]) == 1
    assert not [r for r in caplog.records if r.name == "aiohttp.server"], "no traceback"
