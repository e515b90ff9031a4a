"""The fault drills' harness: a steady fleet on loopback that a drill breaks and heals,
and the accounting of every point and event that went through it.

The fleet, all real programs but the simulator:

    simulated devices (in this process, one socket per device, traps per site)
      -> one `enoc agent` process per site, each through its own WAN link
         (a TCP relay in this process, `enoc.demo.WanLink`, that a drill can cut)
      -> Mosquitto -> one `enoc collector` process -> VictoriaMetrics (InfluxDB v2 API)
                                                    -> SQLite or PostgreSQL (incidents)
                        with `metrics_pair`, also   -> vmagent -> two VictoriaMetrics nodes
                                                       (remote write, replicated)

A *tap* holds a persistent QoS 1 session on the broker and records every
metrics and events message the agents got to the broker: that is what was
*published*. The agents number their messages (`seq`, per agent and kind,
kept across restarts), so a message that never reached the broker shows up as
a gap unless it is still in the agent's spool at the end.

Accounting, once the agents have stopped and the collector has caught up:

- a *point* is one line of line protocol (a device, an interface or a BGP
  peer at one poll time). It is *written* when VictoriaMetrics holds every
  numeric field of it at its timestamp with the published value, *lost* when
  any is missing;
- *duplicated* counts what a query would see twice: a sample of a series at
  a timestamp no published point has (a replay re-stamped, or a series
  written twice under different tags), or two samples at one timestamp. A
  rewrite of the same point (a redelivery after a `kill -9`) is not a
  duplicate in the database: VictoriaMetrics runs with
  `-dedup.minScrapeInterval=1ms` and merges it, as InfluxDB overwrites a
  point with the same series and timestamp. Those redeliveries are counted
  apart (*redelivered*): the metrics messages the collector received
  (`received_total`, summed over its lives) beyond those published;
- *events*: the (agent, event id) pairs published against the incident
  store's `events` table;
- *incidents*: everything the collector's API lists, with timelines, against
  what the drill says its faults dictate.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from enoc.demo import WanLink
from testbed.drills_accounting import (
    Expect,
    PointCount,
    compare_incidents,
    count_points,
    export_points,
    incident_label,
    published_points,
    read_spool,
)
from testbed.drills_procs import (
    ADDRESS_BASE,
    FLAP_TRANSITIONS,
    HOST,
    MAX_INFLIGHT,
    STEADY_PEAK,
    TOKEN,
    BrokerTap,
    CollectorProc,
    Proc,
    Rig,
    Say,
    Sizing,
    start_on_free_port,
    stop_postgres_fast,
    tail,
)
from testbed.patroni import PatroniCluster
from testbed.servers import Mosquitto, PostgreSQL, VictoriaMetrics, free_port
from testbed.vmagent import MetricsPair

# ------------------------------------------------------------------ the fleet


def steady(devices: list[Any]) -> None:
    """No interface of the fleet may cross a utilization threshold on its own: a drill's
    incidents must come from its faults only. Busy interfaces are slowed to STEADY_PEAK
    at the top of their daily curve and bursts."""
    for device in devices:
        for iface in device.interfaces:
            capacity = iface.speed_mbps * 1_000_000 / 8
            peak = max(iface.avg_in, iface.avg_out) * (1 + iface.amplitude + 0.15) / capacity
            if peak > STEADY_PEAK:
                scale = STEADY_PEAK / peak
                iface.avg_in *= scale
                iface.avg_out *= scale


@dataclass
class SiteRig:
    name: str
    rtc: str
    agent_id: str
    devices: list[str]
    link: WanLink
    agent: Proc
    spool: Path
    links: list[WanLink] = field(default_factory=list)  # one per broker node (link: the first)
    trap_port: int = 0  # chosen right before each start of the agent (`Harness.start_agent`)


class Harness(Rig):
    """Start the fleet, let drills break and heal it, account for what went through."""

    # A will opens its incident at once: the drills on one broker expect one wherever their
    # tap saw a will (the grace is tested in tests/test_will_grace.py)
    will_grace = "0s"

    def __init__(
        self,
        root: Path,
        sizing: Sizing,
        *,
        store: str = "sqlite",
        say: Say = lambda _text: None,
        label: str = "",
        metrics_pair: bool = False,
    ) -> None:
        self.root = root
        self.sizing = sizing
        self.store = store
        self.label = label
        self._say = say
        self.broker = Mosquitto(
            root / "mosquitto", config_extra=f"max_inflight_messages {MAX_INFLIGHT}\n"
        )
        self.vm = VictoriaMetrics(root / "victoria-metrics")
        self.pg: PostgreSQL | None = None
        # a second metrics path, a remote_write sink to vmagent before two nodes
        self.pair = MetricsPair(root / "metrics-pair") if metrics_pair else None
        self.patroni: PatroniCluster | None = None  # store "patroni": a failover pair
        self.tap: BrokerTap | None = None
        self.sim: Any = None
        self.sites: list[SiteRig] = []
        self.collector: CollectorProc | None = None
        self.others: list[CollectorProc] = []  # more replicas sharing the collector's consumer
        self.notes: list[str] = []  # what the drill did, for the report
        self.failures: list[str] = []  # checks of the drill that did not hold
        self.recovery_s: float | None = None  # from the fault to service again, if measured
        self.since = 0.0  # heartbeats after this show a drained spool
        self.started = time.monotonic()
        self._sampler: asyncio.Task[None] | None = None
        self._status = ""

    # ---------------------------------------------------------------- progress

    def say(self, text: str) -> None:
        self._status = text
        self._progress()

    def _progress(self) -> None:
        tap = self.tap
        published = f"{len(tap.metrics):,} metrics msgs" if tap else ""
        elapsed = time.monotonic() - self.started
        self._say(f"[{self.label}] {elapsed:5.1f} s  {self._status}  ({published})")

    # ---------------------------------------------------------------- start and stop

    async def start(self) -> None:
        await self._start_broker()
        await asyncio.to_thread(self.vm.start)
        if self.store == "postgresql":
            self.say("starting PostgreSQL")
            self.pg = PostgreSQL(self.root / "postgres")
            await asyncio.to_thread(self.pg.start)
        if self.pair is not None:
            self.say("starting vmagent and two VictoriaMetrics nodes")
            await asyncio.to_thread(self.pair.start)
        if self.store == "patroni":
            self.say("starting etcd and two PostgreSQL under Patroni")
            self.patroni = PatroniCluster(self.root / "patroni")
            await asyncio.to_thread(self.patroni.start)
        self.tap = BrokerTap(self.broker_ports()[0], others=self.broker_ports()[1:])
        await self.tap.start()
        await self._start_fleet()
        await self._start_collectors()
        self.say("starting the agents")
        await asyncio.gather(*(self.start_agent(rig) for rig in self.sites))
        self._sampler = asyncio.create_task(self._sample())
        await self.wait_steady()

    async def _start_broker(self) -> None:
        self.say("starting Mosquitto and VictoriaMetrics")
        await asyncio.to_thread(self.broker.start)

    def broker_ports(self) -> list[int]:
        """The MQTT port of every broker node (one per WAN link of each site)."""
        return [self.broker.port]

    async def _start_collectors(self) -> None:
        self.collector = self._collector_config()
        self.say("starting the collector")
        await self.start_collector(self.collector)

    @property
    def collectors(self) -> list[CollectorProc]:
        return [c for c in [self.collector, *self.others] if c is not None]

    async def _start_fleet(self) -> None:
        from simulators.fleet import build_devices, generated_fleet_spec
        from simulators.inventory_out import inventory
        from simulators.server import Simulator

        s = self.sizing
        spec = generated_fleet_spec(s.devices, s.interfaces, s.sites)
        spec = replace(spec, port=free_port("udp", ADDRESS_BASE), address_base=ADDRESS_BASE)
        devices = build_devices(spec, time.time())
        steady(devices)
        # each site's trap receiver is added once its agent listens (start_agent)
        self.sim = Simulator(devices)
        self.say(f"starting {len(devices)} simulated devices")
        await self.sim.start()
        full = inventory(self.sim, devices)
        for site in spec.sites:
            links = [WanLink(site.name, (HOST, port)) for port in self.broker_ports()]
            for link in links:
                await link.start()
            rows = [d for d in full["devices"] if d["site"] == site.name]  # type: ignore[attr-defined]
            used = {d["credentials"] for d in rows}
            path = self.root / f"{site.name}-devices.yaml"
            credentials = full["credentials"]
            assert isinstance(credentials, dict)
            path.write_text(
                yaml.safe_dump(
                    {
                        "credentials": {k: v for k, v in credentials.items() if k in used},
                        "devices": rows,
                    },
                    sort_keys=False,
                )
            )
            agent_id = f"{site.name}-1"
            spool = self.root / "spool" / site.name
            path = self.root / f"agent-{site.name}.yaml"  # written by start_agent
            self.sites.append(
                SiteRig(
                    site.name,
                    site.rtc,
                    agent_id,
                    [str(d["name"]) for d in rows],
                    links[0],
                    Proc(f"agent {site.name}", path, "agent"),
                    spool,
                    links,
                )
            )

    def _agent_config(
        self,
        site: str,
        rtc: str,
        agent_id: str,
        wan_port: int,
        traps: dict[str, int],
        spool: Path,
        others: Sequence[int] = (),
    ) -> Path:
        interval = self.sizing.interval
        config = {
            "agent_id": agent_id,
            "site": site,
            "rtc": rtc,
            "mqtt": {"url": f"mqtt://{HOST}:{wan_port}", "keepalive": "10s"},
            "spool": {"path": str(spool)},
            "polling": {
                "interval": f"{interval:g}s",
                "timeout": f"{min(2.0, 0.3 * interval):g}s",
                "retries": 1,
                "unreachable_after": 3,
                "source": HOST,
            },
            # the production ratio: a heartbeat every half interval
            "publishing": {"heartbeat": f"{interval / 2:g}s", "replay_rate": 50},
            "traps": {"listen": f"{HOST}:{traps[site]}", "communities": ["public"]},
            "inventory": str(self.root / f"{site}-devices.yaml"),
            "log": {"level": "info"},
            # the drills' devices live on this host's loopback, whose kernel answers their
            # ping whatever a drill breaks: they account for SNMP reachability alone
            "ping": {"enabled": False},
        }
        if others:  # the other nodes of a broker cluster, one WAN link each
            config["mqtt"] = {
                "urls": [f"mqtt://{HOST}:{port}" for port in [wan_port, *others]],
                "keepalive": "10s",
            }
        path = self.root / f"agent-{site}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _collector_config(self) -> CollectorProc:
        interval = self.sizing.interval
        users = self.root / "users.yaml"
        users.write_text(
            yaml.safe_dump({"users": [{"name": "drill", "role": "viewer", "token": TOKEN}]})
        )
        token = self.root / "influx-token"
        token.write_text("drill\n")
        store = self.store_url or f"sqlite:///{self.root / 'incidents.db'}"
        port = free_port()  # chosen again right before each start (start_collector)
        config = {
            "mqtt": {
                "url": self.broker.url,
                "client_id": "enoc-drill-collector",
                "max_unacked": MAX_INFLIGHT,
            },
            "influxdb": {
                "url": self.vm.url,
                "api": "v2",
                "org": "enoc",
                "bucket": "enoc",
                "token_file": str(token),
            },
            "store": {"url": store},
            "incidents": {
                # ten minutes, scaled like every other duration of the drills
                "flap_window": f"{self.sizing.seconds(10):g}s",
                "flap_transitions": FLAP_TRANSITIONS,
                "sweep_interval": f"{min(5.0, interval):g}s",
                "will_grace": self.will_grace,
            },
            "http": {"listen": f"{HOST}:{port}", "users_file": str(users)},
            "log": {"level": "info"},
        }
        if self.pair is not None:
            config["sinks"] = [{"remote_write": {"name": "pair", "url": self.pair.write_url}}]
        path = self.root / "collector.yaml"
        path.write_text(yaml.safe_dump(config))
        return CollectorProc(path, port)

    async def _sample(self) -> None:
        """CPU and memory of every process, and the collector's counters, twice a second."""
        while True:
            for rig in self.sites:
                rig.agent.sample()
            for collector in self.collectors:
                collector.sample()
                await collector.scrape()
            self._progress()
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        # all at once: each waits seconds for its process to flush and exit
        await asyncio.gather(
            *(rig.agent.terminate(within=15) for rig in self.sites), return_exceptions=True
        )
        await asyncio.gather(
            *(one.terminate(within=15) for one in self.collectors), return_exceptions=True
        )
        for rig in self.sites:
            for link in rig.links:
                with contextlib.suppress(Exception):
                    await link.cut()
        if self.sim is not None:
            await self.sim.close()
        if self.tap is not None:
            await self.tap.stop()
        # nothing uses the servers any more: stopped side by side
        stops = [self._stop_broker(), asyncio.to_thread(self.vm.stop)]
        if self.pair is not None:
            stops.append(asyncio.to_thread(self.pair.stop))
        if self.pg is not None:
            stops.append(asyncio.to_thread(self._remove_pg, self.pg))
        if self.patroni is not None:
            stops.append(asyncio.to_thread(self.patroni.stop))
        await asyncio.gather(*stops)

    async def _stop_broker(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    @staticmethod
    def _remove_pg(pg: PostgreSQL) -> None:
        with contextlib.suppress(Exception):
            stop_postgres_fast(pg)
        pg.remove()

    def keep_logs(self, into: Path) -> None:
        """Copy every log of the run (for a drill that failed)."""
        into.mkdir(parents=True, exist_ok=True)
        for path in [
            *self.root.glob("*.log"),
            *self.root.glob("*/*.log"),
            *self.root.glob("metrics-pair/*/*.out"),
            *self.root.glob("*.yaml"),
        ]:
            if "devices" not in path.name:  # inventories hold the SNMP keys
                shutil.copy(path, into / f"{path.parent.name}-{path.name}")

    # ---------------------------------------------------------------- waiting

    async def intervals(self, count: float, what: str) -> None:
        await self.until(time.monotonic() + count * self.sizing.interval, what)

    async def until(self, deadline: float, what: str) -> None:
        """Sleep until `deadline` (monotonic), saying what is going on."""
        start = time.monotonic()
        total = max(deadline - start, 0.0) / self.sizing.interval
        while (left := deadline - time.monotonic()) > 0:
            done = (time.monotonic() - start) / self.sizing.interval
            self.say(f"{what} ({done:.0f}/{total:.0f} intervals)")
            await asyncio.sleep(min(left, 0.5))

    async def wait_steady(self) -> None:
        """Every agent published two rounds, the collector lists every device."""
        assert self.tap is not None
        assert self.collector is not None
        tap, collector = self.tap, self.collector
        total = sum(len(rig.devices) for rig in self.sites)
        deadline = time.monotonic() + max(60.0, 10 * self.sizing.interval)
        while True:
            rounds = all(tap.count(r.agent_id) >= 2 * len(r.devices) for r in self.sites)
            listed = 0
            if rounds:
                with contextlib.suppress(OSError, ValueError):
                    answer = await asyncio.to_thread(collector.get, "/api/v1/devices")
                    listed = len(answer["devices"])
            if rounds and listed == total:
                break
            for rig in self.sites:
                if not rig.agent.alive:
                    raise RuntimeError(f"{rig.agent.name} exited: {tail(rig.agent.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the fleet did not settle: {listed}/{total} devices listed, "
                    f"metrics per agent {[tap.count(r.agent_id) for r in self.sites]}"
                )
            self.say(f"warming up: {listed}/{total} devices at the collector")
            await asyncio.sleep(0.2)
        self.since = time.time()
        baseline = await self.incidents()
        if baseline:
            self.failures.append(
                "incidents before any fault: " + ", ".join(incident_label(i) for i in baseline)
            )

    # ---------------------------------------------------------------- the parts

    def rig(self, site: str) -> SiteRig:
        return next(r for r in self.sites if r.name == site)

    def fault_target(self, site: str) -> tuple[str, int]:
        """A device of the site that is not its CE router (every other device hangs off it),
        and the ifIndex of its first interface (an uplink, administratively up)."""
        rig = self.rig(site)
        for name in rig.devices:
            device = self.sim.device(name)
            if device.role != "ce-router" and device.interfaces:
                return name, int(device.interfaces[0].index)
        raise RuntimeError(f"site {site} has no device to break")

    def inject(self, device: str, fault: dict[str, Any]) -> None:
        self.sim.inject(device, fault)

    def clear(self, device: str) -> None:
        self.sim.clear(device)

    async def broker_stop(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def broker_start(self) -> None:
        # not restart(): that waits for the port to look free, which a TIME_WAIT delays
        await asyncio.to_thread(self.broker.start)

    async def vm_stop(self) -> None:
        await asyncio.to_thread(self.vm.stop)

    async def vm_start(self) -> None:
        await asyncio.to_thread(self.vm.start)

    async def store_stop(self) -> None:
        assert self.pg is not None
        await asyncio.to_thread(stop_postgres_fast, self.pg)

    async def store_start(self) -> None:
        assert self.pg is not None
        await asyncio.to_thread(self.pg.start)

    async def restart_collector(self) -> None:
        assert self.collector is not None
        await self.start_collector(self.collector)

    async def start_agent(self, rig: SiteRig) -> None:
        """Start (or start again) the site's agent, on a trap port chosen just before;
        then send the site's traps there."""

        def listen_on(port: int) -> None:
            ports = [link.port for link in rig.links]
            traps = {rig.name: port}
            self._agent_config(
                rig.name, rig.rtc, rig.agent_id, ports[0], traps, rig.spool, ports[1:]
            )

        rig.trap_port = await start_on_free_port(
            rig.agent, listen_on, "receiving traps on", kind="udp"
        )
        from simulators.server import TrapReceiver

        others = [r for r in self.sim.trap_receivers if r.site != rig.name]
        self.sim.trap_receivers = [*others, TrapReceiver(HOST, rig.trap_port, site=rig.name)]

    async def start_collector(self, proc: CollectorProc) -> None:
        """Start (or start again) a collector on an HTTP port chosen just before, and wait
        until it is healthy."""

        def listen_on(port: int) -> None:
            settings = yaml.safe_load(proc.config.read_text())
            settings["http"]["listen"] = f"{HOST}:{port}"
            proc.config.write_text(yaml.safe_dump(settings))
            proc.http_port = port

        await start_on_free_port(proc, listen_on, "serving http://")
        await proc.wait_healthy()

    def mark(self) -> None:
        """From now on, an agent's heartbeat says whether its spool has drained."""
        self.since = time.time()

    # ---------------------------------------------------------------- the end of a drill

    async def incidents(self) -> list[dict[str, Any]]:
        """Every incident the collector's API lists, each with its timeline."""
        assert self.collector is not None
        get = self.collector.get
        listed = await asyncio.to_thread(get, "/api/v1/incidents?limit=5000")
        out = []
        for item in listed["incidents"]:
            out.append(await asyncio.to_thread(get, f"/api/v1/incidents/{item['id']}"))
        return sorted(out, key=lambda i: int(i["id"]))

    def drained(self) -> list[str]:
        """Agents whose latest heartbeat (since the mark) does not show an empty spool."""
        assert self.tap is not None
        busy = []
        for rig in self.sites:
            beat = self.tap.heartbeats.get(rig.agent_id)
            if beat is None or beat[0] < self.since:
                busy.append(f"{rig.agent_id}: no heartbeat yet")
                continue
            depth = beat[1].health.get("spool_depth", 0)
            if not isinstance(depth, int) or depth > 2:
                busy.append(f"{rig.agent_id}: {depth} messages spooled")
        return busy

    async def converge(self, expected: list[Expect]) -> tuple[list[dict[str, Any]], list[str]]:
        """Wait until every spool drained and the incidents are as expected (or time out)."""
        deadline = time.monotonic() + 20 * self.sizing.interval + 30
        while True:
            busy = self.drained()
            problems: list[str] = []
            try:
                seen = await self.incidents()
            except (OSError, ValueError) as exc:
                seen, problems = [], [f"the API did not answer: {exc}"]
            problems = problems or compare_incidents(expected, seen)
            if not busy and not problems:
                return seen, []
            if time.monotonic() > deadline:
                return seen, busy + problems
            self.say(f"waiting for the fleet to recover: {(busy + problems)[0]}")
            await asyncio.sleep(0.5)

    def why_not_converged(self) -> list[str]:
        """What tells a status the collector did not apply from one it never got: each
        agent's latest status at the tap against the store's agents row, and the
        collector's lanes as its log and counters tell them."""
        assert self.tap is not None
        notes = []
        rows = {
            (str(site), str(agent)): (str(state), int(seq), float(seen))
            for site, agent, state, seq, seen in self.query_store(
                "SELECT site, agent, state, status_seq, last_seen FROM agents"
            )
        }
        now = time.time()
        for rig in self.sites:
            beat = self.tap.heartbeats.get(rig.agent_id)
            tapped = f"seq {beat[1].seq} {now - beat[0]:.1f} s ago" if beat else "none"
            row = rows.get((rig.name, rig.agent_id))
            held = f"{row[0]}, seq {row[1]}, seen {now - row[2]:.1f} s ago" if row else "no row"
            notes.append(f"{rig.agent_id}: latest heartbeat at the tap {tapped}; store: {held}")
            wills = [f"{now - t:.1f}" for t in self.tap.offline.get(rig.agent_id, [])[-3:]]
            births = [f"{now - t:.1f}" for t in self.tap.online.get(rig.agent_id, [])[-3:]]
            notes.append(f"{rig.agent_id}: wills at the tap {wills} s ago, onlines {births} s ago")
        for one in self.collectors:
            counters = one.counters
            received = {
                k: v for k, v in counters.items() if k.startswith("enoc_collector_received_total")
            }
            acked = counters.get("enoc_collector_acked_total")
            notes.append(f"{one.name}: {received}, acked {acked}")
            if one.log.exists():
                lines = one.log.read_text(errors="replace").splitlines()
                lanes = [
                    line[:240]
                    for line in lines
                    if any(w in line for w in ("consuming", "connection lost", "lane", "broker"))
                ]
                notes += [f"{one.name} log: {line}" for line in lanes[-8:]]
        return notes

    async def quiesce(self, published_events: set[tuple[str, str]]) -> None:
        """The agents are gone: wait until the collectors wrote and committed all they got."""
        assert self.collector is not None
        deadline = time.monotonic() + 60 + 5 * self.sizing.interval
        last_acked: list[float] = []
        while time.monotonic() < deadline:
            scraped = [await c.scrape() or {} for c in self.collectors if c.alive]
            acked = [counters.get("enoc_collector_acked_total", -2.0) for counters in scraped]
            idle = acked == last_acked and all(
                counters.get("enoc_collector_metrics_pending", 1) == 0
                and counters.get("enoc_collector_write_buffer_points", 1) == 0
                for counters in scraped
            )
            last_acked = acked
            if idle and published_events <= await asyncio.to_thread(self.stored_events):
                break
            self.say("waiting for the collector to write everything")
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # VictoriaMetrics makes new series searchable within a second

    def stored_events(self) -> set[tuple[str, str]]:
        """(agent, event id) of every event the incident store committed."""
        return {(str(a), str(e)) for a, e in self.query_store("SELECT agent, event_id FROM events")}

    @property
    def store_url(self) -> str:
        """The PostgreSQL store's URL (several hosts for a Patroni pair); "" for SQLite."""
        if self.patroni is not None:
            return self.patroni.url
        return self.pg.url if self.pg is not None else ""

    def query_store(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of the incident store, read beside the collector ([] while it is down)."""
        if self.store_url:
            import psycopg

            try:
                with psycopg.connect(self.store_url, connect_timeout=5) as conn:
                    return [tuple(row) for row in conn.execute(sql).fetchall()]
            except psycopg.OperationalError:
                return []
        path = self.root / "incidents.db"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(row) for row in db.execute(sql).fetchall()]
        except sqlite3.Error:
            return []
        finally:
            db.close()

    async def finish(self, expected: list[Expect]) -> Accounting:
        """Converge, stop the agents, let the collector catch up, and account."""
        assert self.tap is not None
        assert self.collector is not None
        tap = self.tap
        seen, problems = await self.converge(expected)
        if problems:
            try:
                self.notes += await asyncio.to_thread(self.why_not_converged)
            except Exception as exc:  # a diagnosis must not turn the drill's FAIL into ERROR
                self.notes.append(f"no diagnosis: {type(exc).__name__}: {exc}")
        self.say("stopping the agents")
        codes = await asyncio.gather(*(rig.agent.terminate() for rig in self.sites))
        for rig, code in zip(self.sites, codes, strict=True):
            if code != 0:
                self.failures.append(f"{rig.agent.name} did not stop cleanly (exit {code})")
        published_events = tap.event_ids()
        await self.quiesce(published_events)
        # messages: what each agent numbered, what reached the broker, what is still spooled
        lost_messages: list[str] = []
        spooled = 0
        for rig in self.sites:
            for kind, at_broker in (
                ("metrics", {seq for a, seq in tap.metrics if a == rig.agent_id}),
                ("events", {seq for a, seq in tap.events if a == rig.agent_id}),
            ):
                state = await asyncio.to_thread(read_spool, rig.spool / kind)
                spooled += len(state.pending)
                missing = set(range(1, state.next_seq)) - at_broker - set(state.pending)
                if missing:
                    lost_messages.append(
                        f"{rig.agent_id} {kind}: {len(missing)} never reached the broker "
                        f"(seq {sorted(missing)[:5]})"
                    )
        self.say("reading the database back")
        published, twice = published_points(tap.metrics.values())
        counted = PointCount()
        for attempt in range(4):
            landed, doubled = await asyncio.to_thread(export_points, self.vm.url)
            counted = count_points(published, landed, doubled)
            if counted.lost == 0 or attempt == 3:
                break
            await asyncio.sleep(2)  # a write may still be on its way into a searchable part
        counted.published_twice = twice
        stored = await asyncio.to_thread(self.stored_events)
        self.say("stopping the collector")
        collectors = self.collectors
        lines_written = sum(c.total("enoc_collector_points_written_total") for c in collectors)
        received = sum(c.total('enoc_collector_received_total{kind="metrics"}') for c in collectors)
        dropped = sum(c.total("enoc_collector_points_dropped_total") for c in collectors)
        rejected = sum(
            v
            for c in collectors
            for life in [*c.finished, c.counters]
            for k, v in life.items()
            if k.startswith("enoc_collector_rejected_total")
        )
        for one in [c for c in collectors if c.process is not None]:  # not one killed for good
            code = await one.terminate()
            if code != 0:
                self.failures.append(f"{one.name} did not stop cleanly (exit {code})")
        return Accounting(
            points=counted,
            messages=len(tap.metrics),
            event_messages=len(tap.events),
            lost_messages=lost_messages,
            spooled_at_end=spooled,
            redelivered_to_tap=tap.redelivered,
            conflicts=list(tap.conflicts),
            events_published=len(published_events),
            events_stored=len(published_events & stored),
            events_unpublished=len(stored - published_events),
            lines_written=int(lines_written),
            redelivered=max(0, int(received) - len(tap.metrics)),
            redelivered_exact=not any(c.killed for c in collectors),
            points_dropped=int(dropped),
            rejected=int(rejected),
            incidents_expected=[e.label() for e in expected],
            incidents_seen=[incident_label(i) for i in seen],
            incident_problems=problems,
            incidents=seen,
            cpu_s={
                "collector": round(sum(c.cpu_s for c in collectors), 2),
                "agents": round(sum(r.agent.cpu_s for r in self.sites), 2),
            },
            peak_mib={
                "collector": max(c.peak_mib for c in collectors),
                "agent": max((r.agent.peak_mib for r in self.sites), default=0.0),
            },
        )


@dataclass
class Accounting:
    points: PointCount
    messages: int
    event_messages: int
    lost_messages: list[str]
    spooled_at_end: int
    redelivered_to_tap: int
    conflicts: list[str]
    events_published: int
    events_stored: int
    events_unpublished: int
    lines_written: int
    redelivered: int
    redelivered_exact: bool
    points_dropped: int
    rejected: int
    incidents_expected: list[str]
    incidents_seen: list[str]
    incident_problems: list[str]
    incidents: list[dict[str, Any]]
    cpu_s: dict[str, float]
    peak_mib: dict[str, float]

    def figures(self) -> dict[str, Any]:
        """What a drill reports of its accounting (`enoc bench faults`' table and JSON):
        the points' counts, the messages and events, the incidents and the CPU."""
        points = ("published", "written", "lost", "duplicated", "wrong", "lines_in_db")
        figures = {name: getattr(self.points, name) for name in points}
        mine = (
            *("redelivered", "redelivered_exact", "lines_written", "messages", "spooled_at_end"),
            *("redelivered_to_tap", "events_published", "events_stored", "incidents_expected"),
            *("incidents_seen", "incidents", "cpu_s", "peak_mib"),
        )
        figures |= {name: getattr(self, name) for name in mine}
        figures["lost_messages"] = len(self.lost_messages)
        return figures

    def problems(self, spool_slack: int) -> list[str]:
        """Every way this accounting breaks the drills' promise."""
        p = self.points
        counted = (
            (p.lost, "{} points lost"),
            (p.wrong, "{} points with a wrong value"),
            (p.duplicated, "{} duplicate points in the database"),
        )
        out = [text.format(n) for n, text in counted if n]
        out += self.lost_messages
        out += [f"two different messages with one seq: {c}" for c in self.conflicts[:5]]
        later = (
            (
                self.spooled_at_end if self.spooled_at_end > spool_slack else 0,
                "{} messages still spooled at the end",
            ),
            (max(0, self.events_published - self.events_stored), "{} events not in the store"),
            (self.points_dropped, "the collector dropped {} points"),
            (self.rejected, "the collector rejected {} messages"),
        )
        out += [text.format(n) for n, text in later if n]
        out += self.incident_problems
        if p.examples and (p.lost or p.wrong or p.duplicated):
            out += p.examples[:3]
        return out
