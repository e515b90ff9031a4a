"""`enoc bench fleet`: the whole system at fleet size on this machine, beside its peers.

One `enoc sim` process serves the fleet; one `enoc agent` process per site
polls its devices (the agent has no worker processes: a site is its unit),
publishing to one real Mosquitto; one `enoc collector` process writes to one
real VictoriaMetrics through the InfluxDB v2 write API. Everything listens
on 127.0.0.0/8. After every agent's birth message, the run is measured for
`--duration` seconds:

- CPU-seconds of each component in that window and its peak memory (VmHWM),
  from `psutil` and /proc; the harness itself is not counted;
- varbinds/s, polls and poll overruns from the agents' own heartbeats;
- messages/s and the points the agents published, from a tap subscribed to
  every agent topic (a point is one line of line protocol: a device, an
  interface or a BGP peer at one poll, plus one per agent heartbeat; the
  collector adds one `incident` line per incident change);
- points/s written, from the collector's /metrics (`points_written`);
- end-to-end lag: the poll's own timestamp (taken when the poll *starts*,
  carried in the message and in the point) against (a) the moment the tap
  receives the message from the broker, for every message, and (b) the
  moment the point can be read back from VictoriaMetrics (`/api/v1/export`,
  asked every 0.5 s without forcing a flush), for `--lag-devices` sampled
  devices;
- incident latency: `--faults` link faults injected through the simulator's
  control API, whose linkDown/linkUp traps go to the first site's agent,
  timed until the incident opens and resolves on the collector's
  `/api/v1/stream` (the same code as `enoc bench collector`).

Warm-up (`--warmup`, none by default) runs before the window; the table
also gives each whole poll interval's CPU, because the database works much
harder while the fleet's series are new. After the window the agents are
stopped and the collector drains: every point published must be written,
none twice, and every device sample must be in the database.

Peers, in the same run against the same simulated devices, before the fleet
starts (the simulator otherwise idle): net-snmp `snmpbulkwalk` processes
(`--walkers` at a time) walking the same tables of every device, the
Prometheus SNMP exporter (Debian's, the module of `enoc bench agent`)
scraping every device once, and the enoc agent's own code polling every
device once (`Agent._poll`: SNMP, rates, edge state, encoding and the disk
spool, without MQTT), the second of two passes, the first having learnt each
device's max-repetitions as the agent does in its first interval.

Growth (`--growth 100,1000,5000`): the same fleet measurement, shorter
(`--growth-duration`, one interval by default, after `--growth-warmup`, one
interval by default) and without peers or faults,
at each size with the same number of devices per site; the figure is
CPU-milliseconds per device per poll interval, which stays flat when cost
grows linearly with the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from enoc.bench import plot
from enoc.bench.sim import V2C_ARGS, V3_ARGS, machine, peak_rss_mib, progress, wait_for_fleet
from enoc.localservers import Mosquitto, VictoriaMetrics, free_port

ADDRESS_BASE = "127.80.0.1"
COMPONENTS = ("sim", "agents", "broker", "collector", "database")
# The objects the agent polls, as snmpbulkwalk roots (it walks one root per process).
WALK_ROOTS = (
    "1.3.6.1.2.1.1",  # system group
    "1.3.6.1.2.1.2.2",  # ifTable
    "1.3.6.1.2.1.31.1.1",  # ifXTable
    "1.3.6.1.2.1.25.3.3.1.2",  # hrProcessorLoad
    "1.3.6.1.2.1.25.2.3",  # hrStorageTable
    "1.3.6.1.2.1.15.3",  # bgpPeerTable
)
PROBE_EVERY = 0.5  # seconds between VictoriaMetrics read-backs for the lag


@dataclass
class Component:
    name: str
    processes: int
    cpu_s: float  # in the measured window
    cpu_total_s: float  # from start to the end of the window, startup included
    peak_rss_mib: float  # the largest process's peak resident set
    peak_rss_sum_mib: float  # every process's peak, added (an upper bound at any one time)


@dataclass
class Peer:
    name: str
    devices: int
    varbinds: int
    cpu_s: float
    wall_s: float
    sim_cpu_s: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_cpu_s(self) -> float:
        return self.varbinds / self.cpu_s if self.cpu_s > 0 else 0.0


@dataclass
class FleetResult:
    label: str
    devices: int
    sites: int
    interfaces: int
    interval_s: float
    snmp_version: str
    window_s: float = 0.0
    warmup_s: float = 0.0
    startup_s: dict[str, float] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    cpu_ms_per_device_interval: dict[str, float] = field(default_factory=dict)
    varbinds: int = 0
    varbinds_per_s: float = 0.0
    agent_varbinds_per_cpu_s: float = 0.0
    polls: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    messages_per_s: float = 0.0
    points_written: int = 0
    points_per_s: float = 0.0
    health: dict[str, float] = field(default_factory=dict)
    accounting: dict[str, int] = field(default_factory=dict)
    lag: dict[str, Any] = field(default_factory=dict)
    incidents: dict[str, Any] | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)
    lag_series: list[tuple[float, float]] = field(default_factory=list)
    broker_lag_series: list[tuple[float, float]] = field(default_factory=list)
    harness_cpu_s: float = 0.0


@dataclass
class Result:
    machine: dict[str, Any]
    arguments: dict[str, Any]
    fleet: FleetResult | None = None
    peers: list[Peer] = field(default_factory=list)
    growth: list[dict[str, Any]] = field(default_factory=list)
    runtime_s: float = 0.0
    plot: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices")
    parser.add_argument("--sites", type=int, default=10, help="sites (one agent process each)")
    parser.add_argument("--interfaces", type=int, default=48, help="interfaces per device")
    parser.add_argument("--duration", type=float, default=240.0, help="measured seconds")
    parser.add_argument("--interval", type=float, default=60.0, help="agent poll interval, s")
    parser.add_argument(
        "--growth", default="", help="also measure at these fleet sizes, e.g. 100,1000,5000"
    )
    parser.add_argument(
        "--growth-duration", type=float, help="measured seconds per growth size (one interval)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds run before the measured window"
    )
    parser.add_argument(
        "--growth-warmup", type=float, help="seconds before each growth window (one interval)"
    )
    parser.add_argument("--skip-peers", action="store_true", help="no peer comparison")
    parser.add_argument("--snmp-version", choices=("2c", "3"), default="2c")
    parser.add_argument("--faults", type=int, default=5, help="link faults timed to incidents")
    parser.add_argument("--lag-devices", type=int, default=50, help="devices read back for lag")
    parser.add_argument("--walkers", type=int, default=4, help="concurrent snmpbulkwalk processes")
    parser.add_argument("--scrape-concurrency", type=int, default=16, help="exporter scrapes")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--poll-once", type=Path, help=argparse.SUPPRESS)  # internal: the peer
    parser.add_argument("--poll-concurrency", type=int, default=64, help=argparse.SUPPRESS)


def growth_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if any(size < 1 for size in sizes):
        raise ValueError("sizes must be at least 1")
    return sizes


def run(args: argparse.Namespace) -> int:
    if args.poll_once is not None:
        return poll_once(args.poll_once, args.poll_concurrency)
    try:
        sizes = growth_sizes(args.growth)
    except ValueError:
        print(f"enoc bench fleet: --growth must be like 100,1000,5000; got {args.growth!r}")
        return 2
    if min(args.devices, args.sites, args.interfaces) < 1 or args.sites > args.devices:
        print("enoc bench fleet: --devices, --sites, --interfaces at least 1, sites <= devices")
        return 2
    if args.interval < 1 or args.duration <= 0:
        print("enoc bench fleet: --interval must be at least 1 s and --duration positive")
        return 2
    started = time.monotonic()
    result = asyncio.run(measure(args, sizes))
    result.runtime_s = round(time.monotonic() - started, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"bench-fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    png = stem.with_suffix(".png")
    plot.write(png, panels(result), title=headline(result))
    result.plot = str(png)
    print_table(result)
    payload = asdict(result)
    for item, peer in zip(payload["peers"], result.peers, strict=True):
        item["varbinds_per_cpu_s"] = round(peer.per_cpu_s)
    payload["peer_ratios"] = peer_ratios(result.peers)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {stem.with_suffix('.json')} and {png}")
    fleet = result.fleet
    if fleet is None:
        return 1
    failed = (
        fleet.health.get("overruns", 0) > 0
        or fleet.accounting.get("points_lost", 0) > 0
        or (fleet.incidents is not None and fleet.incidents.get("missed", 0) > 0)
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m enoc.bench.fleet ...`, the same as `enoc bench fleet ...`."""
    parser = argparse.ArgumentParser(
        prog="enoc bench fleet",
        description="the whole system at fleet size on this machine, beside its peers",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


async def measure(args: argparse.Namespace, sizes: list[int]) -> Result:
    arguments = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if not k.startswith("_") and k not in ("poll_once", "poll_concurrency")
    }
    result = Result(machine(), arguments)
    with tempfile.TemporaryDirectory(prefix="enoc-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        main_run = FleetRun(
            args,
            tmp / "main",
            args.devices,
            args.sites,
            args.duration,
            warmup=args.warmup,
            peers=not args.skip_peers,
            faults=args.faults,
        )
        result.fleet, result.peers = await main_run.run()
        per_site = args.devices / args.sites
        window = args.growth_duration or args.interval
        warmup = args.interval if args.growth_warmup is None else args.growth_warmup
        for size in sizes:
            sites = max(1, min(size, round(size / per_site)))
            growth = FleetRun(
                args,
                tmp / f"growth-{size}",
                size,
                sites,
                window,
                warmup=warmup,
                peers=False,
                faults=0,
            )
            measured, _ = await growth.run()
            result.growth.append(growth_row(measured))
    progress("")
    return result


# ------------------------------------------------------------------ one fleet run


def cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def rss_peak(process: psutil.Process) -> float:
    try:
        return peak_rss_mib(process)
    except psutil.Error:
        return 0.0


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 4)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1], 4)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "samples": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": round(max(values), 4) if values else None,
    }


def credentials(inventory: dict[str, Any], version: str) -> dict[str, Any]:
    if version == "2c":
        return {"sim": {"version": "2c", "community": "public"}}
    v3 = next(c for c in inventory["credentials"].values() if c.get("version") == "3")
    return {"sim": v3}


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class FleetRun:
    """One fleet, start to stop: simulator, peers, broker, database, collector, agents."""

    def __init__(
        self,
        args: argparse.Namespace,
        run_dir: Path,
        devices: int,
        sites: int,
        window: float,
        *,
        warmup: float,
        peers: bool,
        faults: int,
    ) -> None:
        self.args = args
        self.dir = run_dir
        self.dir.mkdir(parents=True)
        self.devices = devices
        self.sites = sites
        self.window = window
        self.warmup = warmup
        self.with_peers = peers
        self.faults = faults
        self.interval = float(args.interval)
        self.heartbeat = max(1.0, min(10.0, self.interval / 6))
        self.label = f"{devices} devices"
        self.result = FleetResult(
            run_dir.name, devices, sites, args.interfaces, self.interval, args.snmp_version
        )
        # processes, by component
        self.procs: dict[str, list[psutil.Process]] = {name: [] for name in COMPONENTS}
        self.agent_procs: dict[str, psutil.Process] = {}
        # what the tap saw
        self.messages: Counter[str] = Counter()
        self.samples_published = 0
        self.points_published = 0
        self.health_points = 0
        self.heartbeats: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
        self.broker_lag: list[tuple[float, float]] = []  # (monotonic, poll -> broker s)
        self.db_lag: list[tuple[float, float]] = []  # (monotonic, poll -> readable s)
        self.lag_devices: set[str] = set()
        self.pending: dict[str, list[float]] = {}
        self.lag_expired = 0
        self.ticks: list[dict[str, Any]] = []
        self.collector_port = 0
        self.t0 = 0.0
        self.finals: dict[int, tuple[float, float]] = {}  # pid -> (CPU s, peak MiB)

    # ---------------------------------------------------------------- the whole run

    async def run(self) -> tuple[FleetResult, list[Peer]]:
        args, res = self.args, self.result
        harness0 = sum(os.times()[:2])
        port = free_port("udp", ADDRESS_BASE)
        control = free_port("tcp")
        traps = free_port("udp")
        inventory = self.dir / "inventory.yaml"
        command = [
            *(sys.executable, "-m", "enoc.cli", "sim"),
            *("--devices", str(self.devices), "--interfaces", str(args.interfaces)),
            *("--sites", str(self.sites), "--port", str(port), "--address-base", ADDRESS_BASE),
            *("--control", f"127.0.0.1:{control}", "--inventory-out", str(inventory)),
            *("--traps-to", f"127.0.0.1:{traps}", "--log-level", "warning"),
        ]
        progress(f"{self.label}: starting the simulator...")
        started = time.monotonic()
        sim_log = (self.dir / "sim.log").open("wb")
        sim = subprocess.Popen(command, stdout=sim_log, stderr=subprocess.STDOUT)
        sim_log.close()
        peers: list[Peer] = []
        try:
            try:
                fleet = await wait_for_fleet(sim, control, port)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{tail(self.dir / 'sim.log')}") from None
            res.startup_s["sim"] = round(time.monotonic() - started, 2)
            sim_proc = psutil.Process(sim.pid)
            self.procs["sim"] = [sim_proc]
            data = yaml.safe_load(inventory.read_text())
            if self.with_peers:
                peers = await self.peers(fleet, port, data, sim_proc)
            await self.steady(data, control, traps)
        finally:
            stop_process(sim, 15)
        res.harness_cpu_s = round(sum(os.times()[:2]) - harness0, 2)
        return res, peers

    async def steady(self, inventory: dict[str, Any], control: int, traps: int) -> None:
        res = self.result
        progress(f"{self.label}: starting Mosquitto, VictoriaMetrics and the collector...")
        started = time.monotonic()
        extra = "max_inflight_messages 100\n"
        with (
            Mosquitto(self.dir / "mosquitto", config_extra=extra) as broker,
            VictoriaMetrics(self.dir / "vm") as vm,
        ):
            assert broker.process is not None
            assert vm.process is not None
            self.procs["broker"] = [psutil.Process(broker.process.pid)]
            self.procs["database"] = [psutil.Process(vm.process.pid)]
            collector = await self.start_collector(broker.url, vm.url)
            res.startup_s["servers"] = round(time.monotonic() - started, 2)
            tap_ready = asyncio.Event()
            background = [
                asyncio.create_task(self.tap(broker.host, broker.port, tap_ready)),
                asyncio.create_task(self.sampler()),
                asyncio.create_task(self.prober(vm.url)),
            ]
            agents: list[subprocess.Popen[bytes]] = []
            try:
                await asyncio.wait_for(tap_ready.wait(), 30)
                agents = self.start_agents(inventory, broker.url, traps)
                await self.window_run(agents, control, inventory)
                await self.drain(agents, collector, vm)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await asyncio.sleep(0.1)  # the MQTT client's last socket callbacks
                for proc in agents:
                    stop_process(proc)
                stop_process(collector)
        self.summarise()

    # ---------------------------------------------------------------- processes

    async def start_collector(self, broker_url: str, vm_url: str) -> subprocess.Popen[bytes]:
        from enoc.bench.collector import (
            TOKEN,
            collector_yaml,
            http_port,
            start_collector,
            wait_healthy,
        )

        users = self.dir / "users.yaml"
        users.write_text(
            yaml.safe_dump({"users": [{"name": "bench", "role": "viewer", "token": TOKEN}]})
        )
        config = collector_yaml(self.dir, "collector", broker_url, vm_url, users, "")
        proc = start_collector(config)
        try:
            await wait_healthy(proc, config)
        except BaseException:
            stop_process(proc)
            raise
        self.procs["collector"] = [psutil.Process(proc.pid)]
        self.collector_port = http_port(config)
        return proc

    def start_agents(
        self, inventory: dict[str, Any], broker_url: str, traps: int
    ) -> list[subprocess.Popen[bytes]]:
        creds = credentials(inventory, self.args.snmp_version)
        by_site: dict[str, list[dict[str, Any]]] = {}
        for device in inventory["devices"]:
            by_site.setdefault(device["site"], []).append({**device, "credentials": "sim"})
        procs = []
        sample_every = max(1, self.devices // max(1, self.args.lag_devices))
        for i, device in enumerate(inventory["devices"]):
            if i % sample_every == 0 and len(self.lag_devices) < self.args.lag_devices:
                self.lag_devices.add(device["name"])
        for n, (site, devices) in enumerate(by_site.items()):
            site_dir = self.dir / "agents" / site
            site_dir.mkdir(parents=True)
            (site_dir / "devices.yaml").write_text(
                yaml.safe_dump({"credentials": creds, "devices": devices})
            )
            config: dict[str, Any] = {
                "agent_id": f"{site}-agent",
                "site": site,
                "rtc": devices[0].get("rtc", ""),
                "mqtt": {"url": broker_url},
                "spool": {"path": str(site_dir / "spool")},
                "polling": {
                    "interval": f"{self.interval:g}s",
                    "timeout": f"{min(5.0, self.interval / 4):g}s",
                    "retries": 1,
                    "source": "127.0.0.1",
                },
                "publishing": {"heartbeat": f"{self.heartbeat:g}s"},
                "inventory": str(site_dir / "devices.yaml"),
                "log": {"level": "warning"},
            }
            if n == 0:  # the simulator's traps all go to the first site's agent
                config["traps"] = {"listen": f"127.0.0.1:{traps}", "communities": ["public"]}
            (site_dir / "agent.yaml").write_text(yaml.safe_dump(config))
            log = (site_dir / "agent.log").open("wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "enoc.cli",
                    "agent",
                    "--config",
                    str(site_dir / "agent.yaml"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            procs.append(proc)
            process = psutil.Process(proc.pid)
            self.procs["agents"].append(process)
            self.agent_procs[config["agent_id"]] = process
        return procs

    def check_agents(self, agents: list[subprocess.Popen[bytes]]) -> None:
        for proc, (agent_id, _p) in zip(agents, self.agent_procs.items(), strict=True):
            if proc.poll() is not None:
                site = agent_id.removesuffix("-agent")
                log = tail(self.dir / "agents" / site / "agent.log")
                raise RuntimeError(f"agent {agent_id} exited with {proc.returncode}:\n{log}")

    # ---------------------------------------------------------------- the measured window

    async def window_run(
        self, agents: list[subprocess.Popen[bytes]], control: int, inventory: dict[str, Any]
    ) -> None:
        res = self.result
        started = time.monotonic()
        deadline = started + 60 + 2 * len(agents)
        while len(self.heartbeats) < len(agents):
            self.check_agents(agents)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(self.heartbeats)} of {len(agents)} agents came online"
                )
            progress(f"{self.label}: {len(self.heartbeats)} of {len(agents)} agents online...")
            await asyncio.sleep(0.2)
        res.startup_s["agents"] = round(time.monotonic() - started, 2)
        res.warmup_s = self.warmup
        self.t0 = time.monotonic() + self.warmup
        while (now := time.monotonic()) < self.t0:
            self.check_agents(agents)
            progress(f"{self.label}: warming up, {self.t0 - now:.0f} s before the window")
            await asyncio.sleep(min(1.0, self.t0 - now))
        self.t0 = time.monotonic()
        self.ticks.append(await self.tick())
        end = self.t0 + self.window
        faults: asyncio.Task[dict[str, Any]] | None = None
        while (now := time.monotonic()) < end:
            self.check_agents(agents)
            if faults is None and self.faults and now >= self.t0 + self.window / 2:
                faults = asyncio.create_task(self.inject_faults(control, inventory))
            self.show_progress(now)
            await asyncio.sleep(min(1.0, max(0.05, end - now)))
        res.window_s = round(time.monotonic() - self.t0, 2)
        self.ticks.append(await self.tick())
        if faults is not None:
            res.incidents = await faults
        # one more heartbeat from every agent: its counters then cover the whole window
        wait_until = time.monotonic() + 2 * self.heartbeat + 5
        while time.monotonic() < wait_until:
            if all(h[-1][0] > self.t0 + self.window for h in self.heartbeats.values()):
                break
            await asyncio.sleep(0.2)
        self.record_finals("sim", "agents")

    def show_progress(self, now: float) -> None:
        done = now - self.t0
        share = min(1.0, done / self.window)
        bar = "#" * round(24 * share) + "-" * (24 - round(24 * share))
        recent = [t for t in self.ticks if t["t"] >= now - 15]
        rates = ""
        if len(recent) >= 2:
            first, last = recent[0], recent[-1]
            span = max(0.1, last["t"] - first["t"])
            rates = (
                f" {(last['varbinds'] - first['varbinds']) / span:,.0f} varbinds/s"
                f" {(last['points'] - first['points']) / span:,.0f} points/s"
            )
        lags = [lag for _t, lag in self.db_lag[-50:]]
        lag = f" lag p50 {statistics.median(lags):.2f} s" if lags else ""
        overruns = sum(int(h[-1][2].get("overruns", 0)) for h in self.heartbeats.values())
        progress(
            f"{self.label} [{bar}] {done:.0f}/{self.window:.0f} s{rates}{lag} overruns {overruns}"
        )

    async def inject_faults(self, control: int, inventory: dict[str, Any]) -> dict[str, Any]:
        from enoc.bench.collector import Latency, measure_latency

        first_site = inventory["devices"][0]["site"]
        candidates = [d for d in inventory["devices"] if d["site"] == first_site]
        candidates.sort(key=lambda d: d.get("role") != "access-switch")
        names = [d["name"] for d in candidates][: self.faults]
        latency = Latency(self.faults)
        await measure_latency(self.collector_port, control, names, latency)
        return {
            "faults": self.faults,
            "devices": names,
            "open_ms": latency.open_ms,
            "resolve_ms": latency.resolve_ms,
            "missed": latency.missed,
            "open": summary(latency.open_ms),
            "resolve": summary(latency.resolve_ms),
        }

    async def drain(
        self,
        agents: list[subprocess.Popen[bytes]],
        collector: subprocess.Popen[bytes],
        vm: VictoriaMetrics,
    ) -> None:
        """Stop the agents, then wait until the collector wrote all they published."""
        res = self.result
        progress(f"{self.label}: stopping the agents, draining the collector...")
        for proc in agents:
            proc.terminate()
        for proc in agents:  # in a thread: the tap keeps reading meanwhile
            await asyncio.to_thread(stop_process, proc)
        await asyncio.sleep(0.5)  # the tap's last messages
        expected = self.points_published + self.health_points
        counters: dict[str, float] = {}
        deadline = time.monotonic() + 60
        last_change, seen = time.monotonic(), (-1.0, -1)
        while time.monotonic() < deadline:
            counters = await self.collector_counters()
            written = counters.get("enoc_collector_points_written_total", 0)
            pending = counters.get("enoc_collector_metrics_pending", 0)
            expected = self.points_published + self.health_points + incident_points(counters)
            if (written, expected) != seen:
                last_change, seen = time.monotonic(), (written, expected)
            if not pending and (
                written == expected or (written > expected and time.monotonic() - last_change > 3)
            ):
                break
            if collector.poll() is not None:
                raise RuntimeError(f"the collector exited: {tail(self.dir / 'collector.log')}")
            progress(f"{self.label}: draining, {written:,.0f} of {expected:,} points written")
            await asyncio.sleep(0.5)
        for _ in range(10):  # the last sampled points become readable
            if not self.pending:
                break
            await asyncio.sleep(PROBE_EVERY)
        written = int(counters.get("enoc_collector_points_written_total", 0))
        rows = await asyncio.to_thread(vm.export, '{__name__="device_reachable"}')
        in_db = sum(len(row["values"]) for row in rows)
        rows = await asyncio.to_thread(vm.export, '{__name__="enoc_agent_polls_ok"}')
        health_in_db = sum(len(row["values"]) for row in rows)
        res.accounting = {
            "device_samples_published": self.samples_published,
            "points_published": self.points_published,
            "health_points_published": self.health_points,
            "incident_points": incident_points(counters),
            "points_written": written,
            "points_lost": max(0, expected - written),
            "points_extra": max(0, written - expected),
            "points_dropped": int(counters.get("enoc_collector_points_dropped_total", 0)),
            "dead_letters": int(counters.get("enoc_collector_dead_letters_total", 0)),
            "device_samples_in_database": in_db,
            "health_points_in_database": health_in_db,
        }
        self.record_finals("collector", "broker", "database")

    def record_finals(self, *components: str) -> None:
        """CPU-seconds since start and peak memory, read while the processes still run."""
        for component in components:
            for process in self.procs[component]:
                self.finals[process.pid] = (cpu_s(process), rss_peak(process))

    # ---------------------------------------------------------------- background tasks

    async def tap(self, host: str, port: int, ready: asyncio.Event) -> None:
        """Every agent message, as the collector gets it: counts, points and lag."""
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(host, port, identifier=f"bench-tap-{os.getpid()}") as c:
                    for kind in ("metrics", "events", "status"):
                        await c.subscribe(f"enoc/v1/+/+/{kind}", qos=1)
                    ready.set()
                    async for message in c.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            self.on_message(message.topic.value, bytes(payload), message.retain)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        from enoc.wire import StatusMessage, WireError, decode

        now_wall, now = time.time(), time.monotonic()
        kind = topic.rsplit("/", 1)[-1]
        self.messages[kind] += 1
        if kind == "metrics":
            body = json.loads(payload)
            for sample in body["samples"]:
                self.samples_published += 1
                self.points_published += (
                    (1 if sample["fields"] else 0)
                    + sum(1 for i in sample["ifs"] if i[4])
                    + sum(1 for b in sample["bgp"] if b[1])
                )
                self.broker_lag.append((now, now_wall - sample["ts"]))
                if sample["device"] in self.lag_devices:
                    self.pending.setdefault(sample["device"], []).append(sample["ts"])
        elif kind == "status":
            try:
                status = decode(topic, payload)
            except WireError:
                return
            if isinstance(status, StatusMessage) and status.state == "online" and status.health:
                if not retained:
                    self.health_points += 1  # the collector writes it as `enoc_agent`
                process = self.agent_procs.get(status.agent)
                cpu = cpu_s(process) if process else 0.0
                self.heartbeats.setdefault(status.agent, []).append((now, cpu, dict(status.health)))

    async def tick(self) -> dict[str, Any]:
        counters = await self.collector_counters()
        return {
            "t": time.monotonic(),
            "varbinds": sum(int(h[-1][2].get("varbinds", 0)) for h in self.heartbeats.values()),
            "points": counters.get("enoc_collector_points_written_total", 0.0),
            "published": self.points_published + self.health_points,
            "messages": sum(self.messages.values()),
            "cpu": {name: sum(cpu_s(p) for p in procs) for name, procs in self.procs.items()},
        }

    async def sampler(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(OSError, ValueError):
                self.ticks.append(await self.tick())

    async def collector_counters(self) -> dict[str, float]:
        from enoc.bench.collector import scrape

        try:
            return await asyncio.to_thread(scrape, self.collector_port)
        except (OSError, ValueError):
            return {}

    async def prober(self, vm_url: str) -> None:
        """When does a sampled device's point become readable in the database?"""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            if not self.pending:
                continue
            start = min(min(stamps) for stamps in self.pending.values()) - 1
            devices = "|".join(sorted(self.pending))
            match = f'{{__name__="device_reachable",device=~"{devices}"}}'
            try:
                rows = await asyncio.to_thread(export, vm_url, match, start)
            except (OSError, ValueError):
                continue
            now_wall, now = time.time(), time.monotonic()
            for row in rows:
                device = row.get("metric", {}).get("device", "")
                stamps = set(row.get("timestamps", []))
                waiting = self.pending.get(device, [])
                for ts in [ts for ts in waiting if round(ts * 1000) in stamps]:
                    self.db_lag.append((now, now_wall - ts))
                    waiting.remove(ts)
            for device in list(self.pending):
                kept = [ts for ts in self.pending[device] if now_wall - ts < 300]
                self.lag_expired += len(self.pending[device]) - len(kept)
                if kept:
                    self.pending[device] = kept
                else:
                    del self.pending[device]

    # ---------------------------------------------------------------- peers

    async def peers(
        self, fleet: list[dict[str, Any]], port: int, inventory: dict[str, Any], sim: psutil.Process
    ) -> list[Peer]:
        targets = [f"{d['address']}:{port}" for d in fleet]
        out = [await self.snmpbulkwalk(targets, sim)]
        out.append(await self.exporter(targets, sim))
        out.append(await self.enoc_once(inventory, sim))
        return out

    async def snmpbulkwalk(self, targets: list[str], sim: psutil.Process) -> Peer:
        version = self.args.snmp_version
        auth = V2C_ARGS if version == "2c" else V3_ARGS
        queue = list(reversed(targets))
        varbinds = walks = failed = 0

        async def walker() -> None:
            nonlocal varbinds, walks, failed
            while queue:
                target = queue.pop()
                for root in WALK_ROOTS:
                    count, ok = await walk(target, auth, root)
                    varbinds += count
                    walks += 1
                    failed += 0 if ok else 1
                done = len(targets) - len(queue)
                progress(f"peers: snmpbulkwalk v{version}, {done}/{len(targets)} devices")

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim0 = cpu_s(sim)
        started = time.monotonic()
        await asyncio.gather(*(walker() for _ in range(self.args.walkers)))
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        return Peer(
            f"net-snmp snmpbulkwalk v{version}",
            len(targets),
            varbinds,
            round(cpu, 3),
            round(wall, 2),
            round(cpu_s(sim) - sim0, 3),
            note=f"{len(WALK_ROOTS)} tables a device, one process each, "
            f"{self.args.walkers} at a time",
            extra={"walks": walks, "failed_walks": failed},
        )

    async def exporter(self, targets: list[str], sim: psutil.Process) -> Peer:
        from enoc.bench.agent import exporter

        sim0 = cpu_s(sim)
        poller = await exporter(self.dir, targets, self.args.snmp_version, self.args)
        # the simulator's CPU includes the exporter's warm-up scrape of one device
        return Peer(
            poller.name,
            len(targets),
            poller.varbinds,
            round(poller.cpu_s, 3),
            round(poller.wall_s, 2),
            round(cpu_s(sim) - sim0, 3),
            note=f"one scrape of every device, {self.args.scrape_concurrency} at a time",
            extra=poller.extra,
        )

    async def enoc_once(self, inventory: dict[str, Any], sim: psutil.Process) -> Peer:
        version = self.args.snmp_version
        once = self.dir / "once"
        once.mkdir()
        devices = [{**d, "credentials": "sim"} for d in inventory["devices"]]
        (once / "devices.yaml").write_text(
            yaml.safe_dump({"credentials": credentials(inventory, version), "devices": devices})
        )
        config = {
            "agent_id": "bench-once",
            "site": "bench",
            "mqtt": {"url": "mqtt://127.0.0.1:1"},  # never connected: the pass ends in the spool
            "spool": {"path": str(once / "spool")},
            "polling": {
                "interval": f"{self.interval:g}s",
                "timeout": f"{min(5.0, self.interval / 4):g}s",
                "retries": 1,
                "source": "127.0.0.1",
            },
            "inventory": str(once / "devices.yaml"),
            "log": {"level": "warning"},
        }
        (once / "agent.yaml").write_text(yaml.safe_dump(config))
        progress(f"peers: enoc agent v{version}, two passes over {len(devices)} devices")
        sim0 = cpu_s(sim)
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "enoc.bench.fleet", "--poll-once", str(once / "agent.yaml")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the enoc poll pass failed: {err.decode(errors='replace')}")
        figures = json.loads(out.decode().strip().splitlines()[-1])
        return Peer(
            f"enoc agent v{version}",
            len(devices),
            int(figures["varbinds"]),
            round(float(figures["cpu_s"]), 3),
            round(float(figures["wall_s"]), 2),
            round(cpu_s(sim) - sim0, 3),  # both passes
            note="the agent's poll code (SNMP, rates, edge state, spool; no MQTT), "
            f"{figures['concurrency']} devices at a time, second pass",
            extra={
                "polls_ok": figures["polls_ok"],
                "polls_failed": figures["polls_failed"],
                "first_pass": figures["first_pass"],
                "peak_rss_mib": figures["peak_rss_mib"],
            },
        )

    # ---------------------------------------------------------------- figures

    def summarise(self) -> None:
        res = self.result
        t0, t1 = self.t0, self.t0 + res.window_s
        first, last = self.window_ticks()
        window = max(0.001, last["t"] - first["t"])
        devices_intervals = self.devices * window / self.interval
        for name in COMPONENTS:
            procs = self.procs[name]
            cpu = last["cpu"][name] - first["cpu"][name]
            finals = [self.finals.get(p.pid, (0.0, 0.0)) for p in procs]
            peaks = [peak for _cpu, peak in finals]
            res.components.append(
                Component(
                    name,
                    len(procs),
                    round(cpu, 2),
                    round(sum(cpu for cpu, _peak in finals), 2),
                    round(max(peaks, default=0.0), 1),
                    round(sum(peaks), 1),
                )
            )
            res.cpu_ms_per_device_interval[name] = round(1000 * cpu / devices_intervals, 3)
        total = sum(c.cpu_s for c in res.components)
        res.cpu_ms_per_device_interval["total"] = round(1000 * total / devices_intervals, 3)
        # heartbeats: varbinds and agent CPU between each agent's first and last in the window
        varbinds = polls = 0
        agent_cpu = 0.0
        for beats in self.heartbeats.values():
            inside = [b for b in beats if t0 <= b[0] <= t1 + 2 * self.heartbeat + 5]
            if len(inside) >= 2:
                varbinds += int(inside[-1][2]["varbinds"]) - int(inside[0][2]["varbinds"])
                polls += int(inside[-1][2]["polls_ok"]) - int(inside[0][2]["polls_ok"])
                agent_cpu += inside[-1][1] - inside[0][1]
        res.agent_varbinds_per_cpu_s = round(varbinds / agent_cpu) if agent_cpu > 0 else 0.0
        res.varbinds = int(last["varbinds"] - first["varbinds"])
        res.varbinds_per_s = round(res.varbinds / window, 1)
        res.polls = polls
        res.points_written = int(last["points"] - first["points"])
        res.points_per_s = round(res.points_written / window, 1)
        res.messages = dict(self.messages)
        res.messages_per_s = round((last["messages"] - first["messages"]) / window, 2)
        last_health = [h[-1][2] for h in self.heartbeats.values()]
        for key in (
            "overruns",
            "starved",
            "deadline_exceeded",
            "polls_failed",
            "snmp_timeouts",
            "spool_dropped",
        ):
            res.health[key] = sum(int(h.get(key, 0)) for h in last_health)
        res.health["polls_ok_total"] = sum(int(h.get("polls_ok", 0)) for h in last_health)
        res.health["loop_lag_ms_max"] = max(
            (float(b[2].get("loop_lag_ms", 0)) for h in self.heartbeats.values() for b in h),
            default=0.0,
        )
        res.health["spool_depth_max"] = max(
            (int(b[2].get("spool_depth", 0)) for h in self.heartbeats.values() for b in h),
            default=0,
        )
        broker = [lag for t, lag in self.broker_lag if t0 <= t <= t1]
        database = [lag for t, lag in self.db_lag if t0 <= t <= t1]
        res.lag = {
            "measured": "poll start (the point's timestamp) to the tap's receipt from the broker, "
            "every message; and to the point being readable through VictoriaMetrics' "
            f"/api/v1/export (asked every {PROBE_EVERY} s), {len(self.lag_devices)} devices; "
            "both for what arrived inside the measured window",
            "poll_to_broker_s": summary(broker),
            "poll_to_database_s": summary(database),
            "database_unread": self.lag_expired + sum(len(v) for v in self.pending.values()),
        }
        res.lag_series = [(round(t - t0, 2), round(lag, 3)) for t, lag in self.db_lag]
        buckets: dict[int, float] = {}
        for t, lag in self.broker_lag:
            bucket = int((t - t0) // 5)
            buckets[bucket] = max(buckets.get(bucket, 0.0), lag)
        res.broker_lag_series = [(k * 5.0 + 2.5, round(v, 3)) for k, v in sorted(buckets.items())]
        res.timeline = self.timeline()
        res.intervals = self.per_interval()

    def window_ticks(self) -> tuple[dict[str, Any], dict[str, Any]]:
        t0, t1 = self.t0, self.t0 + self.result.window_s
        inside = [t for t in self.ticks if t0 - 0.01 <= t["t"] <= t1 + 0.01]
        if len(inside) < 2:
            inside = self.ticks[:1] + self.ticks[-1:]
        return inside[0], inside[-1]

    def varbinds_at(self, t: float) -> float:
        """Every agent's varbinds counter at `t`, interpolated between its heartbeats."""
        total = 0.0
        for beats in self.heartbeats.values():
            before = [b for b in beats if b[0] <= t]
            after = [b for b in beats if b[0] > t]
            if not before:
                continue
            a = before[-1]
            if not after:
                total += float(a[2].get("varbinds", 0))
                continue
            b = after[0]
            va, vb = float(a[2].get("varbinds", 0)), float(b[2].get("varbinds", 0))
            total += va + (vb - va) * (t - a[0]) / max(1e-9, b[0] - a[0])
        return total

    def timeline(self) -> list[dict[str, float]]:
        """Rates over a sliding window; varbinds interpolated between heartbeats."""
        span = 10.0
        ticks = sorted(self.ticks, key=lambda t: t["t"])
        last_beat = min((h[-1][0] for h in self.heartbeats.values()), default=0.0)
        ticks = [tick for tick in ticks if tick["t"] <= last_beat]
        for tick in ticks:
            tick["varbinds_smooth"] = self.varbinds_at(tick["t"])
        out = []
        j = 0
        for tick in ticks:
            while ticks[j]["t"] < tick["t"] - span:
                j += 1
            base = ticks[j]
            dt = tick["t"] - base["t"]
            if dt < span / 2:
                continue
            out.append(
                {
                    "t": round(tick["t"] - self.t0, 2),
                    "varbinds_per_s": round(
                        (tick["varbinds_smooth"] - base["varbinds_smooth"]) / dt, 1
                    ),
                    "points_per_s": round((tick["points"] - base["points"]) / dt, 1),
                    "published_per_s": round((tick["published"] - base["published"]) / dt, 1),
                    "messages_per_s": round((tick["messages"] - base["messages"]) / dt, 2),
                }
            )
        return out

    def per_interval(self) -> list[dict[str, Any]]:
        """CPU-seconds of each component in each whole poll interval of the window."""
        out = []
        k = 0
        while (k + 1) * self.interval <= self.result.window_s + 0.5:
            a = self.nearest(self.t0 + k * self.interval)
            b = self.nearest(self.t0 + (k + 1) * self.interval)
            out.append(
                {
                    "interval": k + 1,
                    "cpu_s": {n: round(b["cpu"][n] - a["cpu"][n], 2) for n in COMPONENTS},
                    "varbinds": int(b["varbinds"] - a["varbinds"]),
                    "points": int(b["points"] - a["points"]),
                }
            )
            k += 1
        return out

    def nearest(self, t: float) -> dict[str, Any]:
        return min(self.ticks, key=lambda tick: abs(tick["t"] - t))


async def walk(target: str, auth: list[str], root: str) -> tuple[int, bool]:
    """Varbinds one snmpbulkwalk returned (lines that start an OID), and whether it succeeded."""
    proc = await asyncio.create_subprocess_exec(
        *("/usr/bin/snmpbulkwalk", "-On", "-Oq", "-Cr25", "-t", "5", "-r", "1"),
        *auth,
        target,
        root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "MIBS": "", "SNMPCONFPATH": "/nonexistent"},
    )
    out, _ = await proc.communicate()
    count = 0
    for line in out.splitlines():
        if (
            line.startswith(b".1.")
            and b" No Such " not in line
            and b"No more variables" not in line
        ):
            count += 1
    return count, proc.returncode == 0


def incident_points(counters: dict[str, float]) -> int:
    """Points the collector writes itself: one `incident` line per incident change."""
    changes = counters.get("enoc_collector_incident_changes_total", 0)
    dropped = counters.get("enoc_collector_incident_points_dropped_total", 0)
    return int(changes - dropped)


def export(vm_url: str, match: str, start: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"match[]": match, "start": f"{start:.3f}"})
    with urllib.request.urlopen(f"{vm_url}/api/v1/export?{query}", timeout=10) as response:  # noqa: S310 - loopback
        body = response.read()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# ------------------------------------------------------------------ the enoc poll pass (peer)


def poll_once(config: Path, concurrency: int) -> int:
    """Poll every device of an agent config twice with the agent's own code; print JSON."""
    from enoc.runtime import run as run_loop

    figures: dict[str, Any] = {"concurrency": concurrency}

    async def passes() -> int:
        from agent.app import Agent

        agent = Agent(config)
        await agent.client.open(agent.config.polling.source)
        slots = asyncio.Semaphore(concurrency)
        names = list(agent.trackers)

        async def one(name: str) -> None:
            async with slots:
                await agent._poll(name, time.time())

        async def one_pass() -> dict[str, Any]:
            varbinds, ok = agent.stats.varbinds, agent.stats.polls_ok
            failed = sum(agent.stats.polls_failed.values())
            cpu, started = time.process_time(), time.monotonic()
            await asyncio.gather(*(one(name) for name in names))
            agent._flush()
            return {
                "varbinds": agent.stats.varbinds - varbinds,
                "cpu_s": round(time.process_time() - cpu, 3),
                "wall_s": round(time.monotonic() - started, 3),
                "polls_ok": agent.stats.polls_ok - ok,
                "polls_failed": sum(agent.stats.polls_failed.values()) - failed,
            }

        try:
            figures["first_pass"] = await one_pass()
            figures.update(await one_pass())
        finally:
            agent.client.close()
            await agent.publisher.close()
        return 0

    code = run_loop(passes)
    figures["peak_rss_mib"] = peak_rss_mib(psutil.Process())
    print(json.dumps(figures))
    return code


# ------------------------------------------------------------------ report


def growth_row(fleet: FleetResult) -> dict[str, Any]:
    agents = next((c for c in fleet.components if c.name == "agents"), None)
    lag = fleet.lag.get("poll_to_database_s", {})
    return {
        "devices": fleet.devices,
        "sites": fleet.sites,
        "agents": agents.processes if agents else 0,
        "window_s": fleet.window_s,
        "cpu_ms_per_device_interval": fleet.cpu_ms_per_device_interval,
        "cpu_s": {c.name: c.cpu_s for c in fleet.components},
        "peak_rss_sum_mib": {c.name: c.peak_rss_sum_mib for c in fleet.components},
        "varbinds_per_s": fleet.varbinds_per_s,
        "points_per_s": fleet.points_per_s,
        "overruns": fleet.health.get("overruns", 0),
        "polls_failed": fleet.health.get("polls_failed", 0),
        "points_lost": fleet.accounting.get("points_lost", 0),
        "lag_p50_s": lag.get("p50"),
        "startup_s": fleet.startup_s,
    }


def peer_ratios(peers: list[Peer]) -> dict[str, dict[str, float]]:
    """Each poller's varbinds per CPU-second and wall time against every other's."""
    out: dict[str, dict[str, float]] = {}
    for a in peers:
        for b in peers:
            if a is not b and b.per_cpu_s and a.wall_s:
                out.setdefault(a.name, {})[f"per_cpu_s_vs_{b.name}"] = round(
                    a.per_cpu_s / b.per_cpu_s, 2
                )
                out[a.name][f"wall_vs_{b.name}"] = round(a.wall_s / b.wall_s, 2)
    return out


def headline(result: Result) -> str:
    fleet = result.fleet
    if fleet is None:
        return "enoc bench fleet"
    return (
        f"enoc bench fleet: {fleet.devices:,} devices x {fleet.interfaces} interfaces, "
        f"{fleet.sites} agents, every {fleet.interval_s:g} s"
    )


def panels(result: Result) -> list[plot.Panel]:
    fleet = result.fleet
    out: list[plot.Panel] = []
    if fleet is not None:
        rows = fleet.timeline
        out.append(
            plot.Panel(
                "Varbinds per second (agents' heartbeats)",
                [plot.Series("varbinds/s", [(r["t"], r["varbinds_per_s"]) for r in rows])],
                x_label="seconds since every agent was online",
            )
        )
        out.append(
            plot.Panel(
                "Points per second",
                [
                    plot.Series("written (collector)", [(r["t"], r["points_per_s"]) for r in rows]),
                    plot.Series(
                        "published (agents)", [(r["t"], r["published_per_s"]) for r in rows]
                    ),
                ],
                x_label="seconds since every agent was online",
            )
        )
        out.append(
            plot.Panel(
                "Lag from poll start",
                [
                    plot.Series("to readable in VictoriaMetrics", fleet.lag_series, style="dots"),
                    plot.Series("to the broker (max per 5 s)", fleet.broker_lag_series),
                ],
                x_label="seconds since every agent was online",
                y_label="seconds",
            )
        )
    if result.growth:
        series = [
            plot.Series(
                name,
                [
                    (float(g["devices"]), g["cpu_ms_per_device_interval"][name])
                    for g in result.growth
                ],
                style="both",
            )
            for name in (*COMPONENTS, "total")
        ]
        out.append(
            plot.Panel(
                "Growth: CPU per device per poll interval",
                series,
                x_label="devices",
                y_label="CPU-ms",
            )
        )
    return out


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def print_table(result: Result) -> None:
    m = result.machine
    print(f"machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB")
    fleet = result.fleet
    if fleet is not None:
        print_fleet(fleet)
    if result.peers:
        print_peers(result.peers)
    if result.growth:
        print_growth(result.growth)
    print(f"\nruntime {result.runtime_s:.0f} s")


def print_fleet(f: FleetResult) -> None:
    agents = next(c for c in f.components if c.name == "agents")
    print(
        f"fleet: {f.devices:,} devices x {f.interfaces} interfaces at {f.sites} sites "
        f"({agents.processes} agent processes), SNMP v{f.snmp_version}, polled every "
        f"{f.interval_s:g} s; measured {f.window_s:.0f} s ({f.window_s / f.interval_s:.1f} "
        f"intervals) after {f.warmup_s:g} s of warm-up; startup "
        f"{', '.join(f'{k} {v:.1f} s' for k, v in f.startup_s.items())}\n"
    )
    print(
        f"{'component':28} {'procs':>5} {'CPU s':>8} {'CPU %':>6} {'ms/device/interval':>19} "
        f"{'peak MiB (max / sum)':>21}"
    )
    names = {
        "sim": "simulator (enoc sim)",
        "agents": "agents (enoc agent)",
        "broker": "broker (Mosquitto)",
        "collector": "collector (enoc collector)",
        "database": "database (VictoriaMetrics)",
    }
    window = max(0.001, f.window_s)
    for c in f.components:
        print(
            f"{names.get(c.name, c.name):28} {c.processes:>5} {c.cpu_s:>8.2f} "
            f"{100 * c.cpu_s / window:>5.1f}% {f.cpu_ms_per_device_interval[c.name]:>19.3f} "
            f"{c.peak_rss_mib:>10.0f} / {c.peak_rss_sum_mib:>8.0f}"
        )
    total = sum(c.cpu_s for c in f.components)
    print(
        f"{'total':28} {'':>5} {total:>8.2f} {100 * total / window:>5.1f}% "
        f"{f.cpu_ms_per_device_interval['total']:>19.3f}"
    )
    if f.intervals:
        print(
            f"\nCPU-seconds per poll interval: {'sim':>7} {'agents':>7} {'broker':>7} "
            f"{'collector':>9} {'database':>8} {'total':>7} {'varbinds':>9} {'points':>8}"
        )
        for row in f.intervals:
            cpu = row["cpu_s"]
            print(
                f"  interval {row['interval']:<19} {cpu['sim']:>7.2f} {cpu['agents']:>7.2f} "
                f"{cpu['broker']:>7.2f} {cpu['collector']:>9.2f} {cpu['database']:>8.2f} "
                f"{sum(cpu.values()):>7.2f} {row['varbinds']:>9,} {row['points']:>8,}"
            )
    h, a = f.health, f.accounting
    print(
        f"\nthroughput   {f.varbinds_per_s:,.0f} varbinds/s, {f.messages_per_s:,.1f} messages/s, "
        f"{f.points_per_s:,.0f} points/s written; agents {f.agent_varbinds_per_cpu_s:,.0f} "
        f"varbinds per CPU-second"
    )
    print(
        f"polls        {h.get('polls_ok_total', 0):,.0f} ok, "
        f"{h.get('polls_failed', 0):.0f} failed, "
        f"overruns {h.get('overruns', 0):.0f}, deadline exceeded "
        f"{h.get('deadline_exceeded', 0):.0f}, starved {h.get('starved', 0):.0f}, "
        f"SNMP timeouts {h.get('snmp_timeouts', 0):.0f}; event-loop lag max "
        f"{h.get('loop_lag_ms_max', 0):.1f} ms"
    )
    print(
        f"accounting   published {a.get('points_published', 0):,} points "
        f"+ {a.get('health_points_published', 0):,} heartbeats + "
        f"{a.get('incident_points', 0):,} incident changes -> written "
        f"{a.get('points_written', 0):,} (lost {a.get('points_lost', 0)}, extra "
        f"{a.get('points_extra', 0)}, dropped {a.get('points_dropped', 0)}); device samples in "
        f"VictoriaMetrics {a.get('device_samples_in_database', 0):,} of "
        f"{a.get('device_samples_published', 0):,}"
    )
    for key, what in (
        ("poll_to_broker_s", "poll -> broker"),
        ("poll_to_database_s", "poll -> readable in VictoriaMetrics"),
    ):
        s = f.lag.get(key, {})
        print(
            f"lag          {what}: p50 {fmt(s.get('p50'), ' s')}, p99 {fmt(s.get('p99'), ' s')}, "
            f"max {fmt(s.get('max'), ' s')} ({s.get('samples', 0):,} samples)"
        )
    inc = f.incidents
    if inc is not None:
        o, r = inc["open"], inc["resolve"]
        print(
            f"incidents    {inc['faults']} link faults, trap -> incident on /api/v1/stream: "
            f"opened p50 {fmt(o['p50'], ' ms', 1)}, max {fmt(o['max'], ' ms', 1)}; resolved p50 "
            f"{fmt(r['p50'], ' ms', 1)}, max {fmt(r['max'], ' ms', 1)}; missed {inc['missed']}"
        )


def print_peers(peers: list[Peer]) -> None:
    print("\none full poll of the fleet, same devices, same objects (before the fleet started)")
    header = f"{'poller':34} {'varbinds':>10} {'CPU s':>8} {'wall s':>7} {'varbinds/CPU-s':>15}"
    header += "".join(f" {'vs ' + short_name(p.name):>16}" for p in peers)
    print(header + f" {'sim CPU s':>10}")
    for p in peers:
        ratios = "".join(
            f" {(p.per_cpu_s / q.per_cpu_s if q.per_cpu_s else 0):>15.2f}x" for q in peers
        )
        print(
            f"{p.name:34} {p.varbinds:>10,} {p.cpu_s:>8.2f} {p.wall_s:>7.1f} "
            f"{p.per_cpu_s:>15,.0f}{ratios} {p.sim_cpu_s:>10.2f}"
        )
    for p in peers:
        details = ", ".join(f"{k}={v}" for k, v in p.extra.items())
        print(f"  {p.name}: {p.note}; {details}")


def short_name(name: str) -> str:
    if name.startswith("net-snmp"):
        return "snmpbulkwalk"
    if name.startswith("prometheus"):
        return "exporter"
    return "enoc agent"


def print_growth(rows: list[dict[str, Any]]) -> None:
    print("\ngrowth: CPU-milliseconds per device per poll interval (flat = linear cost)")
    print(
        f"{'devices':>8} {'agents':>6} {'sim':>7} {'agents':>7} {'broker':>7} {'collector':>9} "
        f"{'database':>8} {'total':>7} {'vs first':>8} {'points/s':>9} {'overruns':>8} "
        f"{'lag p50 s':>9}"
    )
    base = rows[0]["cpu_ms_per_device_interval"]["total"] if rows else 0
    for g in rows:
        ms = g["cpu_ms_per_device_interval"]
        ratio = ms["total"] / base if base else 0.0
        print(
            f"{g['devices']:>8,} {g['agents']:>6} {ms['sim']:>7.2f} {ms['agents']:>7.2f} "
            f"{ms['broker']:>7.2f} {ms['collector']:>9.2f} {ms['database']:>8.2f} "
            f"{ms['total']:>7.2f} {ratio:>7.2f}x {g['points_per_s']:>9,.0f} "
            f"{g['overruns']:>8.0f} {fmt(g['lag_p50_s'], '', 2):>9}"
        )


if __name__ == "__main__":
    sys.exit(main())
