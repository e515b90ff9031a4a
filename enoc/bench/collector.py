"""`enoc bench collector`: points per CPU-second from MQTT to the database, scaling over
replicas, and the latency from a trap at the agent to the incident in the API.

Throughput: metrics messages shaped like the agent's (device samples with
`--interfaces` interfaces each; one device per message, the agent's default, or
`--devices-per-message N` of the same site, as an agent with
`publishing.batch_samples: N` sends them; `--sensors N` sensor rows each, wire rows
of measurement `sensor`) are encoded up front; one `mosquitto_pub -l` per site
(C, not counted) publishes them at QoS 1 into a real Mosquitto while
1 or 2 `enoc collector` processes (sharing `$share/enoc/...`) write them to a
real VictoriaMetrics through the InfluxDB v2 write API. A point is one line
of line protocol (one measurement, its tags and fields at one time). CPU
counts only the collector processes, from their first measured message to
the last point acknowledged by the database; wall time is the same span.

`--warmup N` polls of every device go first and are not counted: a collector
runs for months, so the figure that matters is the steady state, where every
series, tag set and console window already exists (in the collector and in
VictoriaMetrics). `--warmup 0` measures a cold start, first sight of every
series included.

Latency: `enoc sim` sends a linkDown trap the moment a link fault is injected
through its control API; the trap goes to a real `enoc agent`, over Mosquitto
to the collector, which opens the incident and pushes it on `/api/v1/stream`.
The figure is fault injection to the SSE event, per fault, then the same for
the clearing linkUp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from enoc.bench.common import (
    FleetRun,
    add_results_argument,
    add_size_arguments,
    machine,
    peak_rss_mib,
    progress,
    wait_for_fleet,
    write_result,
)
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, Row, encode, topic
from testbed.servers import Mosquitto, Server, VictoriaMetrics, free_port

TOKEN = secrets.token_hex(16)
MAX_INFLIGHT = 100  # the broker's per-client in-flight window, and the collector's max_unacked


@dataclass
class Throughput:
    replicas: int
    messages: int
    points: int
    field_values: int
    cpu_s: float
    wall_s: float
    peak_rss_mib: float
    broker_cpu_s: float
    database_cpu_s: float
    per_replica_points: list[int] = field(default_factory=list)

    @property
    def points_per_cpu_s(self) -> float:
        return self.points / self.cpu_s if self.cpu_s else 0.0

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s if self.wall_s else 0.0


@dataclass
class Latency:
    samples: int
    open_ms: list[float] = field(default_factory=list)
    resolve_ms: list[float] = field(default_factory=list)
    missed: int = 0


@dataclass
class Result(FleetRun):
    rounds: int
    warmup: int = 0
    devices_per_message: int = 1
    sensors: int = 0
    runs: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser, 2000, "devices sending metrics")
    parser.add_argument("--rounds", type=int, default=10, help="polls per device to measure")
    parser.add_argument(
        "--warmup", type=int, default=1, help="polls per device sent first, not measured"
    )
    parser.add_argument("--sites", type=int, default=10, help="sites (one publisher each)")
    parser.add_argument(
        "--devices-per-message",
        type=int,
        default=1,
        help="device samples per metrics message, of one site (the agent's batch_samples)",
    )
    parser.add_argument(
        "--sensors", type=int, default=0, help="sensor rows per device sample (wire rows)"
    )
    parser.add_argument(
        "--replicas", default="1,2", help="collector replica counts to run, e.g. 1,2"
    )
    parser.add_argument("--traps", type=int, default=100, help="trap faults for the latency")
    add_results_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        replicas = [int(r) for r in str(args.replicas).split(",") if r.strip()]
    except ValueError:
        print(f"enoc bench collector: --replicas must be like 1,2; got {args.replicas!r}")
        return 2
    if args.devices_per_message < 1:
        print("enoc bench collector: --devices-per-message must be at least 1")
        return 2
    result = asyncio.run(measure(args, replicas))
    print_table(result)
    payload = asdict(result)
    for item, one in zip(payload["runs"], result.runs, strict=True):
        item["points_per_cpu_s"] = round(one.points_per_cpu_s)
        item["points_per_s"] = round(one.points_per_s)
    if result.latency is not None:
        payload["latency"]["open_p99_ms"] = percentile(result.latency.open_ms, 99)
    write_result(args.results, "collector", payload)
    return 0


async def measure(args: argparse.Namespace, replicas: list[int]) -> Result:
    result = Result(
        args.devices,
        args.interfaces,
        args.rounds,
        machine=machine(),
        warmup=args.warmup,
        devices_per_message=args.devices_per_message,
        sensors=args.sensors,
    )
    with tempfile.TemporaryDirectory(prefix="enoc-bench-collector-") as tmp_name:
        tmp = Path(tmp_name)
        users, warm, stream = prepare(tmp, args)
        for count in replicas:
            run_dir = tmp / f"replicas-{count}"
            run_dir.mkdir()
            result.runs.append(await throughput(run_dir, users, warm, stream, count))
        if args.traps > 0:
            result.latency = await trap_latency(tmp, users, args.traps)
    progress("")
    return result


# ------------------------------------------------------------------ throughput


def prepare(tmp: Path, args: argparse.Namespace) -> tuple[Path, Stream, Stream]:
    """The API's users file, and the warm-up's and the measured rounds' messages."""
    users = tmp / "users.yaml"
    users.write_text(
        yaml.safe_dump({"users": [{"name": "bench", "role": "viewer", "token": TOKEN}]})
    )
    progress("encoding metrics messages...")
    warm = write_messages(tmp / "warmup", args, range(args.warmup))
    stream = write_messages(tmp / "measured", args, range(args.warmup, args.warmup + args.rounds))
    return users, warm, stream


@dataclass
class Stream:
    """Encoded metrics messages: one file per site (topic), one message a line."""

    files: dict[str, Path]
    messages: int
    points: int
    field_values: int
    samples: int  # device polls: one device point each


def write_messages(tmp: Path, args: argparse.Namespace, rounds: range) -> Stream:
    """One file per site of encoded metrics messages, one per line (`mosquitto_pub -l`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7 + rounds.start)
    # polls a minute apart, the last a minute ago: none in the future, where an export up
    # to now would not count it (more than 60 rounds went past it before)
    t0 = time.time() - 60 * (args.warmup + args.rounds + 1)
    files: dict[str, Path] = {}
    handles = {}
    for s in range(args.sites):
        site = f"site-{s:02d}"
        files[topic(site, f"agent-{s:02d}", "metrics")] = path = tmp / f"{site}.jsonl"
        handles[s] = path.open("wb")
    messages = points = values = samples = 0
    per_message = getattr(args, "devices_per_message", 1)
    # per agent, seq goes on from the rounds before these
    seqs = [
        rounds.start * -(-len(range(s, args.devices, args.sites)) // per_message)
        for s in range(args.sites)
    ]
    for r in rounds:
        batches: dict[int, list[DeviceSample]] = {}
        for d in range(args.devices):
            s = d % args.sites
            interfaces = [
                InterfaceSample(
                    i,
                    f"ge-0/0/{i}",
                    f"GigabitEthernet0/0/{i}",
                    f"uplink {d}-{i}",
                    fields={
                        "ifHCInOctets": rng.randrange(2**40),
                        "ifHCOutOctets": rng.randrange(2**40),
                        "ifInErrors": rng.randrange(100),
                        "ifOutErrors": rng.randrange(100),
                        "ifInDiscards": rng.randrange(100),
                        "ifOutDiscards": rng.randrange(100),
                        "ifOperStatus": 1,
                        "ifAdminStatus": 1,
                        "ifHighSpeed": 1000,
                        "in_bps": rng.random() * 1e9,
                        "out_bps": rng.random() * 1e9,
                        "in_utilization": rng.random() * 100,
                        "out_utilization": rng.random() * 100,
                        "in_errors_per_s": rng.random(),
                        "out_errors_per_s": rng.random(),
                    },
                )
                for i in range(1, args.interfaces + 1)
            ]
            device_fields: dict[str, Any] = {
                "sysUpTime": 100 * r + d,
                "reachable": 1,
                "response_ms": rng.random() * 50,
                "cpu": rng.random() * 100,
                "memory_used_pct": rng.random() * 100,
            }
            sample = DeviceSample(
                f"dev-{d:05d}",
                f"127.70.{d // 250}.{d % 250 + 1}",
                t0 + 60 * r + d * 0.001,
                fields=device_fields,
                interfaces=interfaces,
                rows=[
                    Row(
                        "sensor",
                        {"sensor": f"Sensor {k}", "class": ("temperature", "fan", "psu")[k % 3]},
                        {
                            "value": round(rng.random() * 80, 1),
                            "status": "ok",
                            "high_warning": 70.0,
                            "high_critical": 85.0,
                        },
                    )
                    for k in range(getattr(args, "sensors", 0))
                ],
            )
            batch = batches.setdefault(s, [])
            batch.append(sample)
            samples += 1
            points += 1 + len(interfaces) + len(sample.rows)
            values += len(device_fields) + sum(len(i.fields) for i in interfaces)
            values += sum(len(row.fields) for row in sample.rows)
            if len(batch) == per_message or d + args.sites >= args.devices:
                seqs[s] += 1
                message = MetricsMessage(
                    f"agent-{s:02d}", f"site-{s:02d}", "emea", seqs[s], sample.ts, samples=batch
                )
                handles[s].write(encode(message) + b"\n")
                messages += 1
                batches[s] = []
    for handle in handles.values():
        handle.close()
    return Stream(files, messages, points, values, samples)


def collector_yaml(run_dir: Path, name: str, broker: str, vm: str, users: Path, group: str) -> Path:
    token = run_dir / "influx-token"
    token.write_text("bench\n")
    config = {
        "mqtt": {
            "url": broker,
            "client_id": f"enoc-bench-{name}",
            "shared_group": group,
            "max_unacked": MAX_INFLIGHT,
        },
        "influxdb": {
            "url": vm,
            "api": "v2",
            "org": "enoc",
            "bucket": "enoc",
            "token_file": str(token),
        },
        "store": {"url": f"sqlite:///{run_dir / name / 'incidents.db'}"},
        "http": {"listen": f"127.0.0.1:{free_port()}", "users_file": str(users)},
        "log": {"level": "warning"},
    }
    (run_dir / name).mkdir(exist_ok=True)
    path = run_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_collector(config: Path) -> subprocess.Popen[bytes]:
    log = config.with_suffix(".log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enoc.cli", "collector", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def http_port(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """The collector's /metrics, as name{labels} -> value."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http://127.0.0.1
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def wait_healthy(proc: subprocess.Popen[bytes], config: Path) -> None:
    port = http_port(config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited: {config.with_suffix('.log').read_text()}")
        if await asyncio.to_thread(healthz, port):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"collector not healthy within 60 s: {config}")


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def throughput(
    run_dir: Path, users: Path, warm: Stream, stream: Stream, replicas: int
) -> Throughput:
    extra = f"max_inflight_messages {MAX_INFLIGHT}\n"
    with (
        Mosquitto(run_dir / "mosquitto", config_extra=extra) as broker,
        VictoriaMetrics(run_dir / "vm") as vm,
    ):
        group = "enoc" if replicas > 1 else ""
        configs = [
            collector_yaml(run_dir, f"c{i}", broker.url, vm.url, users, group)
            for i in range(replicas)
        ]
        procs = [start_collector(c) for c in configs]
        publishers: list[subprocess.Popen[bytes]] = []
        try:
            for proc, config in zip(procs, configs, strict=True):
                await wait_healthy(proc, config)
            processes = [psutil.Process(p.pid) for p in procs]
            broker_proc = psutil.Process(broker.process.pid) if broker.process else None
            vm_proc = psutil.Process(vm.process.pid) if vm.process else None
            warmed = [0] * replicas
            if warm.messages:
                publishers += publish(broker, warm, "warmup")
                warmed = await written_by(procs, configs, warm.points, "warm-up")
            before = [cpu_s(p) for p in processes]
            side_before = [cpu_s(p) if p else 0.0 for p in (broker_proc, vm_proc)]
            started = time.monotonic()
            publishers += publish(broker, stream, "measured")
            written = await written_by(procs, configs, warm.points + stream.points, "measured")
            wall = time.monotonic() - started
            cpu = sum(cpu_s(p) - b for p, b in zip(processes, before, strict=True))
            side = [
                (cpu_s(p) if p else 0.0) - b
                for p, b in zip((broker_proc, vm_proc), side_before, strict=True)
            ]
            peak = max(peak_rss_mib(p) for p in processes)
            for pub in publishers:
                pub.wait(timeout=60)
                if pub.returncode:
                    error = pub.stderr.read().decode() if pub.stderr else ""
                    raise RuntimeError(f"mosquitto_pub failed: {error}")
        finally:
            for pub in publishers:
                if pub.poll() is None:
                    pub.kill()
                    pub.wait()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        landed = count_points(vm, warm.samples + stream.samples)
        if landed != warm.samples + stream.samples:
            raise RuntimeError(
                f"{landed} device points in the database, expected {warm.samples + stream.samples}"
            )
    return Throughput(
        replicas,
        stream.messages,
        stream.points,
        stream.field_values,
        round(cpu, 3),
        round(wall, 3),
        peak,
        round(side[0], 3),
        round(side[1], 3),
        per_replica_points=[w - b for w, b in zip(written, warmed, strict=True)],
    )


def publish(
    broker: Server, stream: Stream, name: str, ports: list[int] | None = None
) -> list[subprocess.Popen[bytes]]:
    """One `mosquitto_pub -l` per site, at QoS 1 (with `ports`, the nodes of a cluster on
    the broker's host: the sites spread over them)."""
    ports = ports or [broker.port]
    return [
        subprocess.Popen(
            [
                *("mosquitto_pub", "-h", broker.host, "-p", str(ports[n % len(ports)])),
                *("-q", "1", "-t", topic_name, "-l", "-i", f"bench-{name}-{n}"),
            ],
            stdin=path.open("rb"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n, (topic_name, path) in enumerate(stream.files.items())
    ]


async def written_by(
    procs: list[subprocess.Popen[bytes]], configs: list[Path], target: int, what: str
) -> list[int]:
    """Wait until the collectors have written `target` points in all; each one's count."""
    started = time.monotonic()
    written = [0] * len(configs)
    while True:
        for i, config in enumerate(configs):
            counters = await asyncio.to_thread(scrape, http_port(config))
            written[i] = int(counters.get("enoc_collector_points_written_total", 0))
            if counters.get("enoc_collector_dead_letters_total"):
                raise RuntimeError(f"the collector rejected messages: {config}")
        done = sum(written)
        progress(
            f"{len(configs)} collector(s), {what}: {done:,} of {target:,} points written, "
            f"{time.monotonic() - started:.0f} s"
        )
        if done >= target:
            return written
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError("a collector exited during the benchmark")
        await asyncio.sleep(0.2)


def count_points(vm: VictoriaMetrics, expected: int) -> int:
    """Device points that landed: one `device_cpu` sample per device poll.

    Under load VictoriaMetrics can take a few seconds, even after a forced
    flush, before the last series it created show in an export: ask again
    for up to 10 s before calling a point missing."""
    deadline = time.monotonic() + 10
    while True:
        rows = vm.export('{__name__="device_cpu"}')
        landed = sum(len(row["values"]) for row in rows)
        if landed >= expected or time.monotonic() > deadline:
            return landed
        time.sleep(0.5)


# ------------------------------------------------------------------ trap latency


async def trap_latency(tmp: Path, users: Path, samples: int) -> Latency:
    run_dir = tmp / "latency"
    run_dir.mkdir()
    # One link fault per device, on its first interface (an uplink, administratively up).
    interfaces = 4
    devices = samples
    latency = Latency(samples)
    port = free_port("udp", "127.61.0.1")
    traps = free_port("udp")
    control = free_port("tcp")
    inventory = run_dir / "devices.yaml"
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "enoc.cli", "sim"),
            *("--devices", str(devices), "--interfaces", str(interfaces), "--sites", "1"),
            *("--port", str(port), "--address-base", "127.61.0.1"),
            *("--control", f"127.0.0.1:{control}", "--inventory-out", str(inventory)),
            *("--traps-to", f"127.0.0.1:{traps}", "--log-level", "warning"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        progress("latency: starting simulator, broker, agent and collector...")
        fleet = await wait_for_fleet(sim, control, port)
        with Mosquitto(run_dir / "mosquitto") as broker:
            collector = collector_yaml(run_dir, "collector", broker.url, "", users, "")
            config = yaml.safe_load(collector.read_text())
            del config["influxdb"]
            config["incidents"] = {"sweep_interval": "1s"}
            collector.write_text(yaml.safe_dump(config))
            procs.append(start_collector(collector))
            await wait_healthy(procs[0], collector)
            agent = run_dir / "agent.yaml"
            agent.write_text(
                yaml.safe_dump(
                    {
                        "agent_id": "lat-1",
                        "site": "lat",
                        "rtc": "emea",
                        "mqtt": {"url": broker.url},
                        "spool": {"path": str(run_dir / "spool")},
                        # Slow polls: every event measured comes from a trap.
                        "polling": {"interval": "600s", "source": "127.0.0.1"},
                        "inventory": str(inventory),
                        "traps": {"listen": f"127.0.0.1:{traps}", "communities": ["public"]},
                        "log": {"level": "warning"},
                    }
                )
            )
            log = (run_dir / "agent.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "enoc.cli", "agent", "--config", str(agent)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            await measure_latency(
                http_port(collector), control, [d["name"] for d in fleet], latency
            )
    finally:
        for proc in [*procs, sim]:
            proc.terminate()
        for proc in [*procs, sim]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return latency


async def measure_latency(api: int, control: int, devices: list[str], latency: Latency) -> None:
    import aiohttp

    seen: dict[tuple[str, str, str], float] = {}
    arrived = asyncio.Event()

    async def listen(response: aiohttp.ClientResponse) -> None:
        data = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data = line[6:]
            elif not line and data:
                body = json.loads(data)
                data = ""
                incident = body.get("incident", {})
                if incident.get("kind") == "link":
                    key = (incident["device"], incident["kind"], body["change"])
                    seen.setdefault(key, time.monotonic())
                arrived.set()

    async def wait_for(key: tuple[str, str, str]) -> float | None:
        deadline = time.monotonic() + 10
        while key not in seen:
            arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), left)
        return seen[key]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{control}"
    async with aiohttp.ClientSession() as http:
        stream = await http.get(
            f"http://127.0.0.1:{api}/api/v1/stream", headers=headers, timeout=None
        )
        reader = asyncio.create_task(listen(stream))
        # the agent is up when its birth status reaches the collector
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{api}/api/v1/agents", headers=headers) as r:
                agents = (await r.json())["agents"]
            if agents and agents[0]["state"] == "online":
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        for n in range(latency.samples):
            device = devices[n % len(devices)]
            progress(f"latency: trap {n + 1} of {latency.samples}")
            started = time.monotonic()
            async with http.post(
                f"{base}/devices/{device}/faults", json={"kind": "link_down"}
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"fault injection failed: {await r.text()}")
            opened = await wait_for((device, "link", "opened"))
            started_clear = time.monotonic()
            async with http.delete(f"{base}/devices/{device}/faults") as r:
                r.raise_for_status()
            resolved = await wait_for((device, "link", "resolved"))
            if opened is None or resolved is None:
                latency.missed += 1
                continue
            latency.open_ms.append(round((opened - started) * 1000, 2))
            latency.resolve_ms.append(round((resolved - started_clear) * 1000, 2))
        reader.cancel()
        stream.close()


# ------------------------------------------------------------------ report


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1], 2)


def print_table(result: Result) -> None:
    print(f"machine: {result.machine['cpus']} CPUs, {result.machine['cpu_model']}")
    per_message = (
        "one metrics message per device poll"
        if result.devices_per_message == 1
        else f"{result.devices_per_message} device polls per metrics message"
    )
    print(
        f"stream: {result.devices} devices x {result.interfaces} interfaces x {result.rounds} "
        f"polls measured after {result.warmup} of warm-up, {per_message}"
        f"{f', {result.sensors} sensor rows a device' if result.sensors else ''}\n"
    )
    print(
        f"{'collectors':>10} {'points':>10} {'CPU s':>7} {'wall s':>7} {'points/CPU-s':>13} "
        f"{'points/s':>10} {'scaling':>8} {'peak MiB':>9} {'broker CPU s':>13} {'VM CPU s':>9}"
    )
    base = result.runs[0].points_per_s if result.runs else 0.0
    for one in result.runs:
        scaling = f"{one.points_per_s / base:.2f}x" if base else "-"
        print(
            f"{one.replicas:>10} {one.points:>10,} {one.cpu_s:>7.2f} {one.wall_s:>7.2f} "
            f"{one.points_per_cpu_s:>13,.0f} {one.points_per_s:>10,.0f} {scaling:>8} "
            f"{one.peak_rss_mib:>9.0f} {one.broker_cpu_s:>13.2f} {one.database_cpu_s:>9.2f}"
        )
        if one.replicas > 1:
            print(f"{'':>10} split between replicas: {one.per_replica_points}")
    lat = result.latency
    if lat is not None:
        print(f"\ntrap at the agent -> incident on /api/v1/stream ({lat.samples} link faults)")
        for name, values in (("opened", lat.open_ms), ("resolved", lat.resolve_ms)):
            if values:
                print(
                    f"  {name:9} p50 {percentile(values, 50)} ms, p99 {percentile(values, 99)} ms,"
                    f" max {max(values)} ms"
                )
        if lat.missed:
            print(f"  missed (no incident within 10 s): {lat.missed}")
