"""The live surface: hostile payloads through a real Mosquitto to a real `enoc collector`.

Payloads go out in batches at QoS 1 on the topics of a few agents of one site.
After each batch a probe agent of another site sends a valid metrics message and
a valid link event; the batch passes when the device page shows both (the
metrics lane kept the poll, the events lane opened the incident) and VictoriaMetrics
holds the probe's point. A lane whose probe does not arrive in time is counted
stopped; the collector is then restarted on a fresh store and fresh sessions, so
that the rest of the inputs still run. At the end the collector's counters must
account for every message (received or rejected), and every rejected message
must have come out on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiomqtt
import psutil
import yaml

from enoc.bench.common import progress, stop_process
from enoc.bench.fuzz import SurfaceResult, messages
from enoc.bench.fuzz.mutate import JsonMutator, Mutated
from enoc.mqtt import PACKET_HEADROOM
from enoc.wire import KINDS, MAX_PAYLOAD, EventsMessage, WireError, decode, encode, topic
from testbed.servers import VictoriaMetrics, free_port

BATCH = 500
# The collector's default mqtt.max_message_size plus its headroom: what it announces as
# its MQTT 5 Maximum Packet Size. A PUBLISH's bytes beyond topic and payload: at most 16.
COLLECTOR_PACKET_LIMIT = MAX_PAYLOAD + PACKET_HEADROOM
PUBLISH_OVERHEAD = 16
PROBE_SITE = "probe"
PROBE_AGENT = "probe-1"
PROBE_DEVICE = "probe-dev"
PROBE_TIMEOUT = 30.0  # a batch of events is committed one message at a time
RESTARTS = 3  # collectors started again after a stopped lane, before the surface gives up
TOKEN = "f" * 32
AGENTS = [f"fuzz-{i}" for i in range(8)]
_COUNTER = re.compile(r'^enoc_collector_(\w+?)_total(?:\{kind="([^"]*)"\})? (\S+)$', re.M)


@dataclass
class Counters:
    received: int = 0  # decoded and handled, probes included
    rejected: int = 0
    dead_letters: int = 0
    handler_errors: int = 0

    def add(self, other: Counters) -> None:
        self.received += other.received
        self.rejected += other.rejected
        self.dead_letters += other.dead_letters
        self.handler_errors += other.handler_errors


class LiveCollector:
    """One `enoc collector` process (SQLite store, VictoriaMetrics) and its API."""

    def __init__(self, workdir: Path, mqtt_url: str, vm_url: str, generation: int) -> None:
        self.workdir = workdir
        self.client_id = f"enoc-fuzz-live-{generation}"
        workdir.mkdir(parents=True, exist_ok=True)
        users = workdir / "users.yaml"
        users.write_text(
            yaml.safe_dump({"users": [{"name": "fuzz", "role": "viewer", "token": TOKEN}]})
        )
        token = workdir / "influx-token"
        token.write_text("fuzz-token\n")
        self.port = free_port()
        config = {
            "mqtt": {"url": mqtt_url, "client_id": self.client_id, "max_unacked": 100},
            "store": {"url": f"sqlite:///{workdir / 'incidents.db'}"},
            "influxdb": {
                "url": vm_url,
                "api": "v2",
                "org": "enoc",
                "bucket": "enoc",
                "token_file": str(token),
                "flush_interval": "0.2s",
            },
            "incidents": {"sweep_interval": "1s"},
            "http": {"listen": f"127.0.0.1:{self.port}", "users_file": str(users)},
            "log": {"level": "warning"},
        }
        self.config = workdir / "collector.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "collector.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "enoc.cli", "collector", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the collector exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(self.base + "/healthz") as response:
                    health = await response.json(content_type=None)
                    # both lanes subscribed (where /healthz shows them), or just healthy
                    lanes = health.get("mqtt", {}).get("lanes") if response.status == 200 else {}
                    if not isinstance(lanes, dict) or (
                        lanes.get("metrics") and lanes.get("events")
                    ):
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError("the collector did not become healthy within 60 s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mib(self) -> float:
        if not self.alive():
            return 0.0
        assert self.process is not None
        return round(psutil.Process(self.process.pid).memory_info().rss / 2**20, 1)

    async def counters(self, session: aiohttp.ClientSession) -> Counters:
        out = Counters()
        async with session.get(self.base + "/metrics") as response:
            text = await response.text()
        for name, _kind, value in _COUNTER.findall(text):
            number = int(float(value))
            if name == "received":
                out.received += number
            elif name == "rejected":
                out.rejected += number
            elif name == "dead_letters":
                out.dead_letters += number
            elif name == "handler_errors":
                out.handler_errors += number
        return out

    async def health(self, session: aiohttp.ClientSession) -> str:
        with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
            async with session.get(self.base + "/healthz") as response:
                return f"/healthz {response.status}: {(await response.text())[:300]}"
        return "/healthz does not answer"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 30)


async def _drop_sessions(mqtt_url: str, client_id: str) -> None:
    """End a stopped collector's persistent sessions, so that the broker no longer keeps
    (and redelivers to nobody) the messages it held for them."""
    host, port = mqtt_url.split("://", 1)[1].rsplit(":", 1)
    for lane in ("metrics", "events"):
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(
                host, int(port), identifier=f"{client_id}-{lane}", clean_session=True
            ):
                pass


def _probe(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    metrics = json.loads(messages.metrics(rng, PROBE_SITE, PROBE_AGENT, seq=n))
    metrics["samples"] = metrics["samples"][:1]
    metrics["samples"][0]["device"] = PROBE_DEVICE
    metrics["samples"][0]["fields"]["cpu"] = n
    event = messages.event(rng, PROBE_DEVICE, f"if:{n}", "down")
    events = encode(EventsMessage(PROBE_AGENT, PROBE_SITE, "americas", n, time.time(), [event]))
    return [
        (topic(PROBE_SITE, PROBE_AGENT, "metrics"), json.dumps(metrics).encode()),
        (topic(PROBE_SITE, PROBE_AGENT, "events"), events),
    ]


async def _probe_seen(
    session: aiohttp.ClientSession, collector: LiveCollector, vm: VictoriaMetrics, n: int
) -> tuple[bool, bool, bool]:
    """(metrics kept in the recent window, the incident open, the point in the database)."""
    kept = opened = written = False
    with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
        async with session.get(f"{collector.base}/api/v1/devices/{PROBE_SITE}/{PROBE_DEVICE}") as r:
            if r.status == 200:
                page = await r.json()
                recent = page.get("recent") or {}
                kept = json.dumps(recent).find(f'"cpu": {n}') >= 0 or recent.get("cpu") == n
                opened = any(i.get("resource") == f"if:{n}" for i in page.get("incidents", []))
    if kept:
        match = f'{{__name__=~".*cpu.*",device="{PROBE_DEVICE}"}}'
        series = await asyncio.to_thread(vm.export, match)
        written = any(n in s.get("values", []) for s in series)
    return kept, opened, written


async def run_live(workdir: Path, mqtt_url: str, inputs: int, rng: random.Random) -> SurfaceResult:
    out = SurfaceResult("live", memory_of="collector process RSS")
    mutator = JsonMutator(rng)
    vm = VictoriaMetrics(workdir / "vm").start()
    host, port = mqtt_url.split("://", 1)[1].rsplit(":", 1)
    generation = 0
    collector = LiveCollector(workdir / f"collector-{generation}", mqtt_url, vm.url, generation)
    totals = Counters()
    probes = 0  # probe messages sent
    expected_rejected = 0
    expected_accepted = 0
    expected_unsent = 0
    dead_letters_seen = 0
    sent = 0
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with (
            aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as http,
            aiomqtt.Client(host, int(port), identifier="enoc-fuzz-publisher") as publisher,
            aiomqtt.Client(host, int(port), identifier="enoc-fuzz-deadletters") as watcher,
        ):
            await watcher.subscribe("enoc/deadletter/v1/#", qos=1)

            async def count_dead_letters() -> None:
                nonlocal dead_letters_seen
                async for _message in watcher.messages:
                    dead_letters_seen += 1

            watching = asyncio.create_task(count_dead_letters())
            await collector.start(http)
            batch = 0
            while sent < inputs:
                batch += 1
                size = min(BATCH, inputs - sent)
                t0 = time.monotonic()
                notes: list[str] = []
                for _ in range(size):
                    kind = rng.choice(KINDS)
                    agent = rng.choice(AGENTS)
                    valid = json.loads(messages.VALID[kind](rng, messages.SITE, agent, seq=sent))
                    # one in ten goes as it is: good data among the bad must all land
                    if rng.random() < 0.1:
                        mutated = Mutated(json.dumps(valid).encode(), "valid")
                    else:
                        mutated = mutator.mutate(valid)
                    name = topic(messages.SITE, agent, kind)
                    if len(mutated.data) + len(name) + PUBLISH_OVERHEAD > COLLECTOR_PACKET_LIMIT:
                        # over the Maximum Packet Size the collector announces: the broker
                        # never sends it (MQTT 5, 3.1.1 4.1.1), nothing to handle or refuse
                        expected_unsent += 1
                    try:
                        decode(name, mutated.data)
                        expected_accepted += 1
                    except WireError:
                        expected_rejected += 1
                    except Exception as exc:  # the in-process surfaces report it; noted here
                        notes.append(f"{kind}: {mutated.what[:120]} ({type(exc).__name__})")
                    await publisher.publish(name, mutated.data, qos=1)
                    sent += 1
                for name, payload in _probe(rng, batch):
                    await publisher.publish(name, payload, qos=1)
                    probes += 1
                seen = (False, False, False)
                deadline = time.monotonic() + PROBE_TIMEOUT
                while time.monotonic() < deadline and collector.alive():
                    seen = await _probe_seen(http, collector, vm, batch)
                    if all(seen):
                        break
                    await asyncio.sleep(0.2)
                took = time.monotonic() - t0
                if took > out.slowest_s:
                    out.slowest_s = round(took, 3)
                    out.slowest = f"batch {batch} ({size} messages, then the probe)"
                if batch == 1:
                    out.rss_start_mib = collector.rss_mib()
                out.inputs = sent
                progress(
                    f"live: {sent:,}/{inputs:,} messages, batch {batch} in {took:.1f} s, "
                    f"{out.stopped_lanes} lanes stopped"
                )
                if all(seen):
                    continue
                # a lane stopped: say which and why, then go on with a fresh collector
                kept, opened, written = seen
                why = await collector.health(http)
                lanes = [
                    lane
                    for lane, ok in (("metrics", kept), ("events", opened), ("database", written))
                    if not ok
                ]
                if not collector.alive():
                    lanes = ["collector process"]
                if generation >= RESTARTS:
                    out.stopped_lanes += len(lanes)
                    out.stopped.append(
                        f"{', '.join(lanes)} after batch {batch} ({why}); gave up after "
                        f"{RESTARTS} restarts: {inputs - sent:,} inputs not sent"
                    )
                    break
                out.stopped_lanes += len(lanes)
                suspects = "; ".join(notes[:3]) or "no payload of the batch escapes in process"
                out.stopped.append(
                    f"{', '.join(lanes)} after batch {batch} ({why}); suspects: {suspects}"
                )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    counted = await collector.counters(http)
                    totals.add(counted)
                out.rss_end_mib = collector.rss_mib()
                collector.stop()
                await _drop_sessions(mqtt_url, collector.client_id)
                generation += 1
                collector = LiveCollector(
                    workdir / f"collector-{generation}", mqtt_url, vm.url, generation
                )
                await collector.start(http)
            counted = await collector.counters(http)
            totals.add(counted)
            out.rss_end_mib = collector.rss_mib()
            if out.rss_start_mib == 0.0:
                out.rss_start_mib = out.rss_end_mib
            await asyncio.sleep(1)  # the last dead letters on their way to the watcher
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
    finally:
        collector.stop()
        vm.stop()
    # a message neither handled nor refused (the probes of a stopped lane's batch included)
    out.escaped = max(0, sent + probes - totals.received - totals.rejected - expected_unsent)
    out.wall_s = round(time.monotonic() - started, 1)
    out.notes = {
        "messages_sent": sent,
        "received": totals.received - probes,
        "received_expected": expected_accepted,
        "rejected": totals.rejected,
        "rejected_expected": expected_rejected - expected_unsent,
        "over_packet_size": expected_unsent,
        "dead_lettered": totals.dead_letters,
        "dead_letters_seen": dead_letters_seen,
        "handler_errors": totals.handler_errors,
        "collector_restarts": generation,
    }
    # (a collector stopped for a restart takes the dead letters it had not published yet)
    dead_letters_lost = totals.rejected != totals.dead_letters
    if generation == 0 and (dead_letters_lost or dead_letters_seen < totals.dead_letters):
        out.stopped.append(
            f"dead letters: {totals.rejected} rejected, {totals.dead_letters} dead-lettered, "
            f"{dead_letters_seen} seen on the topic"
        )
    return out
