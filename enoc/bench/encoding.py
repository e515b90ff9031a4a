"""`enoc bench encoding`: what a metrics message costs, by how many device samples it batches.

The samples are real: the agent's own poller and facts (`agent.poller.collect`,
`agent.facts.DeviceTracker`) poll in-process simulated 48-interface switches
twice, so every sample carries counters, rates and utilizations as in
production. For each batch size the same samples are grouped into metrics
messages of that many samples, then:

- bytes per message and per point, JSON as `enoc.wire.encode` writes it, and
  zlib-compressed (level 6) for comparison: what a WAN link would carry;
- agent CPU per point: `enoc.wire.encode` plus an MQTT QoS 1 publish (aiomqtt,
  100 in flight, as the agent's default `mqtt.max_inflight`) into a real
  Mosquitto, awaiting every PUBACK; and encoding alone;
- collector CPU per point: a separate process subscribed at QoS 1 that
  receives every message and decodes it with `enoc.wire.decode`, as the
  collector does before writing (the database write is `enoc bench collector`'s);
  and decoding alone.

A point is an InfluxDB point: one per device sample, one per interface, one
per BGP peer. CPU is process CPU time (user + system), so other load on the
machine adds less to it than to wall time; still, each batch size runs
`--repeat` times, interleaved, and the least CPU of each side is kept.
The agent's disk spool (one append per message) is not included: it would
favour batching further.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt

from agent.edge import EdgeDetector
from agent.facts import DeviceTracker
from agent.poller import collect
from agent.profiles import ProfileSet
from enoc.bench.common import (
    add_results_argument,
    add_size_arguments,
    machine,
    progress,
    write_result,
)
from enoc.inventory import InventoryDevice
from enoc.snmp.client import SnmpClient, Target, V2c
from enoc.wire import DeviceSample, MetricsMessage, decode, encode, topic
from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.server import Simulator
from testbed.servers import Mosquitto, free_port

SITE, AGENT = "bench", "bench-1"
IN_FLIGHT = 100  # the agent's default mqtt.max_inflight


@dataclass
class Row:
    batch: int  # device samples per message
    messages: int
    samples: int
    points: int
    bytes_per_message: float
    bytes_per_point: float
    zlib_bytes_per_point: float
    agent_cpu_s: float  # encode + publish
    encode_cpu_s: float
    collector_cpu_s: float  # receive + decode
    decode_cpu_s: float
    received_points: int

    @property
    def agent_us_per_point(self) -> float:
        return 1e6 * self.agent_cpu_s / self.points

    @property
    def collector_us_per_point(self) -> float:
        return 1e6 * self.collector_cpu_s / self.points


@dataclass
class Result:
    devices: int
    interfaces: int
    points_per_sample: float
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser, 100, "distinct devices polled")
    parser.add_argument("--samples", type=int, default=2000, help="device samples per batch size")
    parser.add_argument(
        "--batches", default="1,10,100", help="samples per message to compare (comma-separated)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per batch size; the least CPU is kept"
    )
    add_results_argument(parser)


def run(args: argparse.Namespace) -> int:
    batches = [int(b) for b in str(args.batches).split(",") if b.strip()]
    if not batches or min(batches) < 1 or args.samples < max(batches) or args.repeat < 1:
        print("--batches must be positive and at most --samples; --repeat >= 1", file=sys.stderr)
        return 2
    result = asyncio.run(measure(args, batches))
    print_table(result)
    payload = asdict(result)
    for item, row in zip(payload["rows"], result.rows, strict=True):
        item["agent_us_per_point"] = round(row.agent_us_per_point, 3)
        item["collector_us_per_point"] = round(row.collector_us_per_point, 3)
    write_result(args.results, "encoding", payload)
    lost = [r for r in result.rows if r.received_points != r.points]
    return 1 if lost else 0


async def measure(args: argparse.Namespace, batches: list[int]) -> Result:
    progress(f"polling {args.devices} simulated devices x {args.interfaces} interfaces...")
    pool = await real_samples(args.devices, args.interfaces)
    per_sample = sum(points(s) for s in pool) / len(pool)
    result = Result(args.devices, args.interfaces, per_sample, machine())
    samples = [
        replace(pool[i % len(pool)], ts=pool[i % len(pool)].ts + i // len(pool))
        for i in range(args.samples)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="enoc-bench-encoding-") as tmp,
        Mosquitto(Path(tmp) / "mosquitto") as broker,
    ):
        runs: dict[int, list[Row]] = {batch: [] for batch in batches}
        for repeat in range(args.repeat):  # interleaved, so that drift hits every size alike
            for batch in batches:
                progress(f"{batch} samples per message, run {repeat + 1} of {args.repeat}...")
                runs[batch].append(await measure_batch(broker.url, samples, batch))
        result.rows = [fastest(rows) for rows in runs.values()]
    progress("")
    return result


def fastest(rows: list[Row]) -> Row:
    """The least CPU each side needed over the runs: on a shared machine other load only
    ever adds to a measurement, so the minimum is the least disturbed one."""
    return replace(
        rows[0],
        agent_cpu_s=min(r.agent_cpu_s for r in rows),
        encode_cpu_s=min(r.encode_cpu_s for r in rows),
        collector_cpu_s=min(r.collector_cpu_s for r in rows),
        decode_cpu_s=min(r.decode_cpu_s for r in rows),
        received_points=min(r.received_points for r in rows),
    )


def points(sample: DeviceSample) -> int:
    """InfluxDB points of a sample: the device, each interface, each BGP peer."""
    return 1 + len(sample.interfaces) + len(sample.bgp)


async def real_samples(count: int, interfaces: int) -> list[DeviceSample]:
    """One sample per device, as the agent makes them: polled twice, so with rates."""
    port = free_port("udp", "127.62.0.1")
    spec = FleetSpec(
        sites=[SiteSpec(SITE, "bench", devices=[DeviceGroup("access-switch", count, interfaces)])],
        port=port,
        address_base="127.62.0.1",
    )
    devices = build_devices(spec, time.time())
    profiles = ProfileSet()
    edge = EdgeDetector(AGENT)
    client = SnmpClient(timeout=2.0, retries=2)
    async with Simulator(devices):
        await client.open("127.0.0.1")
        try:
            trackers = [
                DeviceTracker(InventoryDevice(d.name, d.address, "v2c", port=port), edge)
                for d in devices
            ]
            targets = [Target(d.address, port, V2c(b"public")) for d in devices]
            samples: list[DeviceSample] = []
            for round_ in range(2):
                if round_:
                    await asyncio.sleep(1.0)  # rates over a second
                polls = await asyncio.gather(
                    *(collect(client, t, profiles.choose, 25) for t in targets)
                )
                samples = [
                    tracker.observe(raw)[0] for tracker, raw in zip(trackers, polls, strict=True)
                ]
        finally:
            client.close()
    return samples


async def measure_batch(url: str, samples: list[DeviceSample], batch: int) -> Row:
    messages = [
        MetricsMessage(AGENT, SITE, "bench", n, time.time(), samples=samples[i : i + batch])
        for n, i in enumerate(range(0, len(samples), batch))
    ]
    total_points = sum(points(s) for s in samples)
    payloads = [encode(m) for m in messages]
    size = sum(len(p) for p in payloads)
    compressed = sum(len(zlib.compress(p, 6)) for p in payloads)
    # encoding and decoding alone, in this process. Its heap holds every sample and payload
    # of the run, which a garbage collection pass would scan again and again: frozen, so
    # that only what encode and decode allocate is collected, as in a steady agent.
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for message in messages:
        encode(message)
    encode_cpu = time.process_time() - started
    name = topic(SITE, AGENT, "metrics")
    started = time.process_time()
    for payload in payloads:
        decode(name, payload)
    decode_cpu = time.process_time() - started
    # through the broker: this process is the agent, a child process the collector
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    collector = subprocess.Popen(
        [sys.executable, "-m", "enoc.bench.encoding", "--collect", url, name, str(len(messages))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert collector.stdout is not None
        ready = await asyncio.to_thread(collector.stdout.readline)
        if ready.strip() != "ready":
            raise RuntimeError(f"the collector process did not start: {ready!r}")
        slots = asyncio.Semaphore(IN_FLIGHT)
        async with aiomqtt.Client(
            host, int(port), identifier=f"bench-agent-{batch}", max_inflight_messages=IN_FLIGHT
        ) as client:
            client.pending_calls_threshold = IN_FLIGHT  # in flight by design, not a backlog

            async def publish(message: MetricsMessage) -> None:
                try:
                    await client.publish(name, encode(message), qos=1)
                finally:
                    slots.release()

            started = time.process_time()
            async with asyncio.TaskGroup() as group:
                for message in messages:
                    await slots.acquire()
                    group.create_task(publish(message))
            agent_cpu = time.process_time() - started
        out, _ = await asyncio.to_thread(collector.communicate, timeout=120)
    finally:
        gc.unfreeze()
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    if collector.returncode != 0:
        raise RuntimeError(f"the collector process failed ({collector.returncode})")
    received = json.loads(out)
    return Row(
        batch=batch,
        messages=len(messages),
        samples=len(samples),
        points=total_points,
        bytes_per_message=size / len(messages),
        bytes_per_point=size / total_points,
        zlib_bytes_per_point=compressed / total_points,
        agent_cpu_s=agent_cpu,
        encode_cpu_s=encode_cpu,
        collector_cpu_s=received["cpu_s"],
        decode_cpu_s=decode_cpu,
        received_points=received["points"],
    )


async def collect_messages(url: str, name: str, count: int) -> dict[str, float]:
    """The collector's side: receive `count` messages at QoS 1 and decode each; the CPU from
    the first message to the last decoded one."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    received = total_points = 0
    started = 0.0
    async with aiomqtt.Client(host, int(port), identifier="bench-collector") as client:
        await client.subscribe(name, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            if not received:
                started = time.process_time()
            assert isinstance(message.payload, bytes)
            decoded = decode(str(message.topic), message.payload)
            assert isinstance(decoded, MetricsMessage)
            total_points += sum(points(s) for s in decoded.samples)
            received += 1
            if received == count:
                break
    return {"cpu_s": time.process_time() - started, "points": total_points}


def print_table(result: Result) -> None:
    print(f"machine: {result.machine['cpus']} CPUs, {result.machine['cpu_model']}")
    print(
        f"samples: {result.devices} simulated devices x {result.interfaces} interfaces, "
        f"{result.points_per_sample:.1f} points per sample; JSON (enoc.wire), MQTT QoS 1 "
        "through Mosquitto\n"
    )
    print(
        f"{'samples/msg':>11} {'messages':>8} {'bytes/msg':>10} {'bytes/pt':>8} "
        f"{'zlib B/pt':>9} {'agent us/pt':>11} {'(encode)':>9} "
        f"{'collector us/pt':>15} {'(decode)':>9}"
    )
    for r in result.rows:
        print(
            f"{r.batch:>11} {r.messages:>8,} {r.bytes_per_message:>10,.0f} "
            f"{r.bytes_per_point:>8.1f} {r.zlib_bytes_per_point:>9.1f} "
            f"{r.agent_us_per_point:>11.2f} {1e6 * r.encode_cpu_s / r.points:>9.2f} "
            f"{r.collector_us_per_point:>15.2f} {1e6 * r.decode_cpu_s / r.points:>9.2f}"
        )


def _collect_main(argv: list[str]) -> int:
    url, name, count = argv
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(collect_messages(url, name, int(count)))), flush=True)
        return 0
    return 1


if __name__ == "__main__" and sys.argv[1:2] == ["--collect"]:
    sys.exit(_collect_main(sys.argv[2:]))
