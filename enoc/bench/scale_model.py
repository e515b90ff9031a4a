"""What `enoc bench scale`'s runs share: their results, what each replica is given, and
the steps of a run both kinds take (publish, stop and continue the replicas, count what
they wrote, read what ran beside them). enoc/bench/scale.py runs replicas that share the
JetStream consumers, enoc/bench/scale_partitioned.py replicas that split the sites."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from collector.config_nats import NatsConfig
from enoc.bench.cgroups import CpuQuota, Hierarchy, Throttling
from enoc.bench.collector import Stream, count_points, cpu_s, http_port, scrape, start_collector
from enoc.bench.collector import publish as publish_sites
from enoc.bench.common import peak_rss_mib, progress
from testbed.nats import NatsCluster
from testbed.servers import Server, VictoriaMetrics

TARGET = 3.2  # the issue's: 4 replicas at least this many times one
MAX_ACK_PENDING = NatsConfig().max_ack_pending  # the collector's: the window all replicas share


STALLED_S = 120.0  # no point written for this long: the run fails, saying where it stood


@dataclass
class Replica:
    name: str
    points: int  # written by this replica in the measured span
    cpu_s: float
    peak_rss_mib: float
    # with --cpu-per-replica, its cgroup's cpu.stat over the measured span
    throttling: Throttling | None = None
    # with --partitioned: the sites it owns, its resident set settled before any poll
    # and after the last point was written
    sites: int | None = None
    base_rss_mib: float | None = None
    rss_mib: float | None = None

    @property
    def growth_mib(self) -> float | None:
        if self.rss_mib is None or self.base_rss_mib is None:
            return None
        return round(self.rss_mib - self.base_rss_mib, 1)

    @property
    def points_per_cpu_s(self) -> float:
        return self.points / self.cpu_s if self.cpu_s else 0.0


@dataclass
class Beside:
    """What else ran in the measured span: the HTTP writes VictoriaMetrics took, the CPU
    seconds of the broker (the three NATS nodes, or Mosquitto) and of VictoriaMetrics,
    and the share of all the machine's cores busy (whoever used them)."""

    writes: int = 0
    broker_cpu_s: float = 0.0
    vm_cpu_s: float = 0.0
    machine_busy: float = 0.0


@dataclass
class Run:
    replicas: int
    messages: int
    points: int
    wall_s: float
    written: int  # points the replicas wrote in all (exactly `points` when none twice)
    landed: int  # device polls VictoriaMetrics holds, warm-up included
    expected_landed: int
    per_replica: list[Replica] = field(default_factory=list)
    beside: Beside = field(default_factory=Beside)

    @property
    def points_per_write(self) -> float:
        return self.points / self.beside.writes if self.beside.writes else 0.0

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s if self.wall_s else 0.0

    @property
    def exact(self) -> bool:
        return self.written == self.points and self.landed == self.expected_landed


@dataclass
class Result:
    devices: int
    interfaces: int
    sites: int
    rounds: int
    warmup: int
    cores: int
    machine: dict[str, Any]
    flush_interval: float | None = None
    max_ack_pending: int = MAX_ACK_PENDING
    cpu_per_replica: float | None = None  # cores, each replica's cgroup quota
    cgroup_version: int | None = None
    partitioned: bool = False
    broker: str = "nats"  # what the replicas consume from
    runs: list[Run] = field(default_factory=list)
    drills: list[dict[str, Any]] = field(default_factory=list)

    def ratio(self, high: int = 4, low: int = 1) -> float | None:
        rates = {r.replicas: r.points_per_s for r in self.runs}
        if high in rates and rates.get(low):
            return rates[high] / rates[low]
        return None


# ------------------------------------------------------------------ command line


def quota_used(replica: Replica, run: Run, cores: float | None) -> float | None:
    """The share of its quota a replica used over the measured span (1.0: all of it)."""
    if not cores or not run.wall_s:
        return None
    return round(replica.cpu_s / (cores * run.wall_s), 2)


@dataclass(frozen=True)
class Settings:
    """What every replica of a run is given."""

    flush_interval: float | None
    max_ack_pending: int
    cpu_per_replica: float | None = None  # cores
    cgroups: Hierarchy | None = None  # where the quotas are made
    broker: str = "nats"  # with --partitioned: mosquitto or nats


def publish(cluster: NatsCluster, stream: Stream, name: str) -> list[subprocess.Popen[bytes]]:
    """One `mosquitto_pub -l` per site at QoS 1, sites spread over the nodes' gateways."""
    ports = [node.mqtt_port for node in cluster.nodes]
    return publish_sites(cluster.nodes[0], stream, name, ports)


def replica_names(count: int) -> list[str]:
    return [f"r{n + 1}" for n in range(count)]


def add_quotas(quotas: list[CpuQuota], names: list[str], settings: Settings) -> None:
    """A CPU quota for each replica of `names` when the settings ask for them, added to
    `quotas` one by one: if one fails, those made are in the list to be removed."""
    if settings.cpu_per_replica and settings.cgroups:
        for name in names:
            quotas.append(CpuQuota(name, settings.cpu_per_replica, settings.cgroups))


async def warm_up(
    procs: list[subprocess.Popen[bytes]],
    configs: list[Path],
    warm: Stream,
    publish_stream: Callable[[Stream, str], list[subprocess.Popen[bytes]]],
) -> list[int]:
    """The warm-up polls published and written: what each replica wrote before the
    measured span (0 each without a warm-up)."""
    if not warm.messages:
        return [0] * len(configs)
    await published(publish_stream(warm, "warmup"), "the warm-up")
    return await until_written(procs, configs, warm.points, "warm-up")


async def published(publishers: list[subprocess.Popen[bytes]], what: str) -> None:
    started = time.monotonic()
    while any(p.poll() is None for p in publishers):
        progress(f"publishing {what}: {time.monotonic() - started:.0f} s")
        await asyncio.sleep(0.2)
    for pub in publishers:
        if pub.returncode:
            error = pub.stderr.read().decode() if pub.stderr else ""
            raise RuntimeError(f"mosquitto_pub failed: {error}")


SCRAPE_TIMEOUT = 60.0  # s: a replica held to a small CPU quota answers late while busy


def written(configs: list[Path]) -> list[int]:
    return [
        int(scrape(http_port(c), SCRAPE_TIMEOUT).get("enoc_collector_points_written_total", 0))
        for c in configs
    ]


async def until_written(
    procs: list[subprocess.Popen[bytes]], configs: list[Path], target: int, what: str
) -> list[int]:
    started = moved = time.monotonic()
    last = -1
    while True:
        counts = await asyncio.to_thread(written, configs)
        if sum(counts) != last:
            last, moved = sum(counts), time.monotonic()
        elif time.monotonic() - moved > STALLED_S:
            raise RuntimeError(
                f"{what}: {last:,} of {target:,} points written, none for {STALLED_S:g} s "
                f"(each replica's: {counts})"
            )
        progress(
            f"{len(configs)} replica(s), {what}: {sum(counts):,} of {target:,} points "
            f"written, {time.monotonic() - started:.0f} s"
        )
        if sum(counts) >= target:
            return counts
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a collector replica exited during the benchmark")
        # a scrape costs a replica about 1 ms of CPU (18% of a 0.05-core quota at 10 a
        # second): seldom while far from the end, often near it, where the wall time ends
        await asyncio.sleep(0.5 if target - sum(counts) > target // 10 else 0.05)


def signal_all(procs: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    for proc in procs:
        os.kill(proc.pid, sig)


class Sides:
    """The counters of what runs beside the replicas, read at a start and `since` it."""

    def __init__(self, brokers: list[Server], vm: VictoriaMetrics) -> None:
        self.vm = vm
        self.brokers = [psutil.Process(n.process.pid) for n in brokers if n.process]
        self.vm_process = psutil.Process(vm.process.pid) if vm.process else None
        self.start = self.read()

    def read(self) -> tuple[int, float, float, float, float]:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        # guest time is counted in user time already
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return (
            vm_writes(self.vm),
            sum(cpu_s(p) for p in self.brokers),
            cpu_s(self.vm_process) if self.vm_process else 0.0,
            total - idle,
            total,
        )

    def writes(self) -> int:
        return vm_writes(self.vm) - self.start[0]

    def since(self) -> Beside:
        now = self.read()
        change = (b - a for a, b in zip(self.start, now, strict=True))
        writes, broker_cpu, vm_cpu, busy, total = change
        return Beside(
            int(writes),
            round(broker_cpu, 2),
            round(vm_cpu, 2),
            round(busy / total, 2) if total else 0.0,
        )


def vm_writes(vm: VictoriaMetrics) -> int:
    """The InfluxDB line-protocol writes VictoriaMetrics has taken (its /metrics)."""
    url = f"{vm.url}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1
        text = answer.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith('vm_http_requests_total{path="/influx/')
    )


def start_replicas(
    configs: list[Path], quotas: list[CpuQuota], procs: list[subprocess.Popen[bytes]]
) -> None:
    """Each replica's process, added to `procs` (the caller stops them even when this
    fails half-way) and moved into its quota's cgroup (if any) as it starts."""
    for n, config in enumerate(configs):
        procs.append(start_collector(config))
        if quotas:
            quotas[n].add(procs[-1].pid)


@dataclass
class Span:
    """The measured span of a run, from the replicas' continue to their last point."""

    wall_s: float
    written: list[int]  # each replica's points written, counters at the span's end
    final: list[int]  # ... a second later (a redelivery would show there)
    cpu_s: list[float]
    throttled: list[Throttling]
    peaks: list[float]  # each replica's peak resident set, MiB
    rss: list[float]  # ... its resident set at the end, MiB
    beside: Beside
    landed: int


async def drain(
    procs: list[subprocess.Popen[bytes]],
    configs: list[Path],
    quotas: list[CpuQuota],
    servers: tuple[list[Server], VictoriaMetrics],
    target: int,
    samples: int,
) -> Span:
    """Continue the stopped replicas and measure them until `target` points in all are
    written; then read back the database's `samples` device polls."""
    brokers, vm = servers
    processes = [psutil.Process(p.pid) for p in procs]
    sides = Sides(brokers, vm)
    cpu_before = [cpu_s(p) for p in processes]
    throttled_before = [q.throttling() for q in quotas]
    started = time.monotonic()
    signal_all(procs, signal.SIGCONT)
    after = await until_written(procs, configs, target, "measured")
    wall = time.monotonic() - started
    cpu_after = [cpu_s(p) for p in processes]
    throttled = [q.throttling().since(b) for q, b in zip(quotas, throttled_before, strict=True)]
    side = sides.since()
    peaks = [peak_rss_mib(p) for p in processes]
    await asyncio.sleep(1.0)  # a redelivery (a point written twice) would show now
    rss = [round(p.memory_info().rss / 2**20, 1) for p in processes]
    final = await asyncio.to_thread(written, configs)
    # VictoriaMetrics counts a write as it ends, which may be after its answer
    side.writes = await asyncio.to_thread(sides.writes)
    landed = await asyncio.to_thread(count_points, vm, samples)
    cpu = [round(b - a, 3) for a, b in zip(cpu_before, cpu_after, strict=True)]
    return Span(round(wall, 3), after, final, cpu, throttled, peaks, rss, side, landed)


def to_run(count: int, warm: Stream, stream: Stream, before: list[int], span: Span) -> Run:
    """The run's result: the measured span's points, each replica's share."""
    one = Run(
        count,
        stream.messages,
        stream.points,
        span.wall_s,
        sum(span.final) - sum(before),
        span.landed,
        warm.samples + stream.samples,
        beside=span.beside,
    )
    for n in range(count):
        one.per_replica.append(
            Replica(
                f"r{n + 1}",
                span.written[n] - before[n],
                span.cpu_s[n],
                span.peaks[n],
                span.throttled[n] if span.throttled else None,
            )
        )
    return one


def keep_logs(run_dir: Path, into: Path) -> Path:
    """The replicas' logs and configs of a run, copied out of its temporary directory."""
    into.mkdir(parents=True, exist_ok=True)
    for path in [*run_dir.glob("*.log"), *run_dir.glob("*.yaml")]:
        shutil.copy2(path, into / path.name)
    return into


def stop_replicas(procs: list[subprocess.Popen[bytes]]) -> None:
    """Each replica continued (a stopped process takes no SIGTERM) and stopped; killed
    after 30 s."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
