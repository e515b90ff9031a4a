"""One fleet run of `enoc bench fleet`, start to stop: simulator, peers, broker, database,
collector and agents, and the figures of its measured window."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import yaml

from enoc.bench.common import agent_config, progress, stop_process, wait_for_fleet
from enoc.bench.fleet_peers import measure_peers
from enoc.bench.fleet_results import (
    COMPONENTS,
    Component,
    FleetResult,
    Peer,
    cpu_s,
    credentials,
    rss_peak,
    summary,
    tail,
)
from testbed.servers import Mosquitto, VictoriaMetrics, free_port

ADDRESS_BASE = "127.80.0.1"
PROBE_EVERY = 0.5  # seconds between VictoriaMetrics read-backs for the lag


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
                peers = await measure_peers(self.args, self.dir, fleet, port, data, sim_proc)
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
            config = agent_config(
                f"{site}-agent",
                site,
                broker_url,
                site_dir,
                self.interval,
                rtc=devices[0].get("rtc", ""),
                publishing={"heartbeat": f"{self.heartbeat:g}s"},
            )
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
