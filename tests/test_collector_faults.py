"""Collector under fault: garbage on the topics, the database down, kill -9 mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
import yaml
from collectorkit import collector_config, collector_process_command, eventually, running_collector

from collector.app import Collector
from collector.metrics_in import Metrics
from collector.model import IncidentChange
from enoc.wire import (
    DeviceSample,
    Event,
    EventsMessage,
    InterfaceSample,
    MetricsMessage,
    encode,
    topic,
)
from testbed.servers import Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.servers
T0 = time.time() - 3600


def metrics(seq: int, device: str = "dev-1") -> MetricsMessage:
    sample = DeviceSample(
        device,
        "127.0.0.9",
        T0 + seq,
        fields={"cpu": float(seq % 100)},
        interfaces=[InterfaceSample(1, "ge-0/0/1", fields={"in_bps": float(seq) * 10})],
    )
    return MetricsMessage("agent-1", "lab", "emea", seq, T0 + seq, samples=[sample])


def garbage(rng: random.Random, good: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return good[: rng.randrange(len(good))]  # truncated
    if choice == 1:
        return rng.randbytes(rng.randrange(1, 200))  # random bytes
    if choice == 2:
        return good.replace(b'"site":"lab"', b'"site":"elsewhere"')  # misaddressed
    return good.replace(b'"v":1', b'"v":99')  # unknown version


async def publish_all(url: str, items: list[tuple[str, bytes]], pace: float = 0.0) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="test-publisher") as client:
        for name, payload in items:
            await client.publish(name, payload, qos=1)
            if pace:
                await asyncio.sleep(pace)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_ten_thousand_bad_payloads_are_counted_and_good_data_flows(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    rng = random.Random(7)
    good = encode(metrics(1))
    bad_topic = topic("lab", "agent-1", "metrics")
    items = [(bad_topic, garbage(rng, good)) for _ in range(10_000)]
    goods = [(bad_topic, encode(metrics(seq))) for seq in range(2, 12)]
    # good messages interleaved with the garbage
    for i, item in enumerate(goods):
        items.insert(i * 900, item)
    config = collector_config(tmp_path, mosquitto.url, vm=victoria_metrics)
    async with running_collector(config) as coll:
        await publish_all(mosquitto.url, items)
        await eventually(
            lambda: sum(coll.ingest.stats.rejected.values()) == 10_000,
            what="all 10,000 bad payloads counted",
            timeout=60,
        )
        await eventually(
            lambda: coll.ingest.stats.received["metrics"] >= len(goods),
            what=f"the good messages among them ({coll.ingest.stats.received})",
            timeout=60,
        )
        assert set(coll.ingest.stats.rejected) <= {
            "malformed",
            "misaddressed",
            "unknown_version",
            "invalid",
        }
        await eventually(
            lambda: coll.ingest.stats.dead_lettered == 10_000, what="every bad one dead-lettered"
        )
    cpu = [row for row in victoria_metrics.export('{__name__="device_cpu"}') if row["values"]]
    assert sorted(v for row in cpu for v in row["values"]) == sorted(
        float(seq % 100) for seq in range(2, 12)
    )


async def test_database_outage_loses_and_doubles_nothing(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    name = topic("lab", "agent-1", "metrics")
    config = collector_config(
        tmp_path, mosquitto.url, vm=victoria_metrics, extra={"mqtt": {"max_unacked": 20}}
    )
    async with running_collector(config) as coll:
        await publish_all(mosquitto.url, [(name, encode(metrics(s))) for s in range(50)])
        await eventually(lambda: coll.ingest.stats.acked == 50, what="first 50 written")
        victoria_metrics.stop()
        await publish_all(mosquitto.url, [(name, encode(metrics(s))) for s in range(50, 150)])
        await eventually(lambda: coll.sinks["influxdb"].stats.retries > 0)
        await asyncio.sleep(1.0)
        assert coll.ingest.stats.acked < 150, "nothing acknowledged while InfluxDB is down"
        assert not coll.health()["influxdb"]["ok"]
        victoria_metrics.start()
        await eventually(lambda: coll.ingest.stats.acked >= 150, what="all acked", timeout=60)
    await eventually(
        lambda: _cpu_points(victoria_metrics) == 150, what="150 points, once each", timeout=15
    )
    assert sorted(_cpu_stamps(victoria_metrics)) == sorted(
        round((T0 + s) * 1000) for s in range(150)
    )


def _cpu_rows(vm: VictoriaMetrics) -> list[dict[str, list[float]]]:
    return [row for row in vm.export('{__name__="interface_in_bps"}') if row["values"]]


def _cpu_points(vm: VictoriaMetrics) -> int:
    return sum(len(row["values"]) for row in _cpu_rows(vm))


def _incident_count(path: Path) -> int:
    """Incidents committed so far, read beside the running collector (SQLite in WAL)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM incidents").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def _cpu_stamps(vm: VictoriaMetrics) -> list[float]:
    return [t for row in _cpu_rows(vm) for t in row["timestamps"]]


async def test_kill_9_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    config = collector_config(tmp_path, mosquitto.url, vm=victoria_metrics)
    name = topic("lab", "agent-1", "metrics")
    events_topic = topic("lab", "agent-1", "events")
    log = (tmp_path / "collector.out").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            collector_process_command(config), stdout=log, stderr=subprocess.STDOUT
        )

    port = int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])
    process = start()
    try:
        # up and subscribed: the persistent session exists before we publish
        await eventually(lambda: healthy(port), what="collector healthy", timeout=30)
        events = [
            EventsMessage(
                "agent-1",
                "lab",
                "emea",
                s,
                T0 + s,
                events=[
                    Event(f"ev-{s}", T0 + s, "dev-1", f"if:{s}", "link", "down", message="down")
                ],
            )
            for s in range(40)
        ]
        items = [(name, encode(metrics(s))) for s in range(400)]
        items += [(events_topic, encode(e)) for e in events]
        random.Random(3).shuffle(items)
        publisher = asyncio.create_task(publish_all(mosquitto.url, items, pace=0.005))
        await eventually(lambda: _cpu_points(victoria_metrics) >= 50, what="some points written")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not publisher.done(), "killed mid-stream"
        await publisher
        process = start()
        await eventually(lambda: healthy(port), what="restarted collector healthy", timeout=30)
        await eventually(
            lambda: _cpu_points(victoria_metrics) == 400, what="400 points", timeout=60
        )
        assert len(set(_cpu_stamps(victoria_metrics))) == 400
        # The events lane resumes a session of its own: its redelivered events may still
        # be on their way when every point has landed (a SIGTERM then leaves them with the
        # broker, not the loss this test looks for). An event lost stays missing.
        await eventually(
            lambda: _incident_count(tmp_path / "collector" / "incidents.db") >= 40,
            what="an incident for each of the 40 events",
            timeout=60,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
    assert process.returncode == 0, "SIGTERM stops the collector cleanly"
    # one incident per event key, no doubles after the redelivery
    from collector.store import Store

    store = Store(f"sqlite:///{tmp_path / 'collector' / 'incidents.db'}")
    await store.open()
    rows = await store.run(lambda tx: tx.all("SELECT resource, count FROM incidents"))
    await store.close()
    assert sorted(rows) == sorted((f"if:{s}", 1) for s in range(40))


async def test_messages_queued_for_a_resumed_session_survive_a_failed_first_commit(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Events waiting in the collector's session are sent by the broker right after its
    CONNACK. The first commit fails (the store is down): the lane drops its connection
    and the broker redelivers what was not acknowledged. Every message behind the failed
    one must be unacknowledged too, so none may be acknowledged before the collector took
    charge of acknowledgements (paho acknowledges by itself until told otherwise)."""
    config = collector_config(tmp_path, mosquitto.url)
    async with running_collector(config):
        pass  # the sessions exist: from now on the broker keeps the collector's messages
    count = 40
    items = [
        (
            topic("lab", "agent-1", "events"),
            encode(
                EventsMessage(
                    "agent-1",
                    "lab",
                    "emea",
                    seq,
                    T0 + seq,
                    events=[Event(f"ev-{seq}", T0 + seq, "dev-1", "cpu", "trap", "info")],
                )
            ),
        )
        for seq in range(count)
    ]
    await publish_all(mosquitto.url, items)

    collector = Collector.from_file(config)
    commit = collector.engine.on_events
    failures = 0

    async def store_down_once(message: EventsMessage) -> list[IncidentChange]:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError("the incident store is down")
        return await commit(message)

    collector.engine.on_events = store_down_once  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:

        async def stored() -> set[str]:
            rows = await collector.store.read(lambda tx: tx.all("SELECT event_id FROM events"))
            return {str(row[0]) for row in rows}

        async def all_stored() -> bool:
            return len(await stored()) == count or task.done()

        await eventually(all_stored, what="every queued event committed", timeout=30)
        assert failures == 1 and collector.ingest.stats.failed["EventsMessage"] == 1
        assert await stored() == {f"ev-{seq}" for seq in range(count)}, "nothing lost"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_the_metrics_lane_holds_no_more_than_max_unacked_whatever_the_broker_sends(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's Mosquitto 2.0.11 keeps a consumer's in-flight window only until the first
    acknowledgement (one PUBACK lets a window's worth more in). The metrics lane stops
    reading while it holds `max_unacked` messages not yet written, so a burst stays with
    the broker: after 50 of 100 are acknowledged it holds at most 100 and one read more
    (it held all 1,000 before), a paused lane still reads now and then (the keepalive
    needs it) and stays connected, and once everything is acknowledged as it comes,
    every message arrives exactly once."""
    from collector import mqtt_receive
    from collector.config import CollectorMqttConfig
    from collector.ingest import Ingest

    monkeypatch.setattr(mqtt_receive, "MAX_PAUSE", 0.5)
    sample = DeviceSample(
        "dev-1",
        "127.0.0.2",
        T0,
        {"cpu": 1.0},
        [InterfaceSample(i, f"ge-{i}", "", "", {"in_bps": 1.5}) for i in range(100)],
    )
    lines = b"".join(
        encode(
            MetricsMessage(
                "agent-1", "lab", "emea", seq, T0, samples=[replace(sample, ts=T0 + seq)]
            )
        )
        + b"\n"
        for seq in range(1000)
    )
    size = len(lines) // 1000
    held: list[tuple[int, Callable[[], None]]] = []

    async def on_metrics(metrics: Metrics, ack: Callable[[], None]) -> None:
        ((_device, poll),) = metrics.polls
        assert poll is not None
        ts = poll[0]
        held.append((round(ts - T0), ack))  # which message: its poll's time

    async def ignore(*_: object) -> None:
        return None

    config = CollectorMqttConfig(url=mosquitto.url, client_id="bounded", max_unacked=100)
    ingest = Ingest(config, on_metrics=on_metrics, on_events=ignore, on_status=ignore)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))
    try:
        await asyncio.wait_for(ingest.subscribed.wait(), 30)
        publisher = subprocess.run(
            [
                *("mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port)),
                *("-q", "1", "-t", topic("lab", "agent-1", "metrics"), "-l", "-i", "pub"),
            ],
            input=lines,
            timeout=60,
            check=True,
        )
        assert publisher.returncode == 0
        await eventually(lambda: len(held) == 100, what="the broker's first window")
        await asyncio.sleep(0.5)
        assert len(held) == 100
        for _, ack in held[:50]:
            ack()
        await asyncio.sleep(0.3)
        one_read = mqtt_receive.READ_SIZE // size + 1
        assert 100 < len(held) <= 150 + one_read, "50 acknowledged: at most 100 held, and one read"
        paused_at = len(held)
        await asyncio.sleep(2.0)  # a few reads of MAX_PAUSE while the lane stays full
        assert len(held) > paused_at, "a paused lane still reads"
        assert ingest.stats.connects["metrics"] == 1 and ingest.stats.connected["metrics"]

        async def all_acknowledged() -> bool:
            for _, ack in held:
                ack()
            await asyncio.sleep(0.05)
            return len(held) == 1000

        deadline = time.monotonic() + 60
        while not await all_acknowledged():
            assert time.monotonic() < deadline, f"{len(held)} of 1000 arrived"
        assert sorted(seq for seq, _ in held) == list(range(1000))
        assert ingest.stats.connects["metrics"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
