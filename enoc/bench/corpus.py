"""`enoc bench corpus --recordings DIR`: real devices' walks through the whole system.

    enoc sim --recording DIR     one process, each recording on its own 127.x address,
      |                          every value as recorded (a steady device)
    enoc agent                   one agent polls them all (SNMP v2c), thresholds on every poll
      |
    Mosquitto --- tap            the tap records what the agent published
      |
      +-- enoc collector --> InfluxDB 1.6 (v1 API)
      +-- enoc collector --> VictoriaMetrics (InfluxDB v2 API)

Per recording: its interfaces, the varbinds one poll of it takes, the poll time the agent
measured, the points the agent published and those each database holds at their
timestamps with their values (the difference is what a database refused or the collector
dropped), and the incidents the collector opened. A steady device seen for the first time
should open none. The same rig is the corpus conformance test's (tests/test_corpus_conformance.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

import yaml

from enoc.bench.common import add_results_argument, print_header, write_result
from testbed.drills_accounting import (
    Points,
    SeriesKey,
    count_points,
    export_points,
    numeric,
    published_points,
    series_key,
)
from testbed.drills_procs import HOST, TOKEN, BrokerTap, CollectorProc, Proc, Rig, tail
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics, free_port

ADDRESS_BASE = "127.60.0.1"  # the recordings: 127.60.0.1 and up
SITE = "lab"  # what `enoc sim --recording` calls their site
DATABASES = ("influxdb1", "victoria-metrics")
INFLUX_DB = "enoc"
POLLED = ("device", "interface", "bgp_peer", "sensor")
ROW_MEASUREMENTS = ("sensor",)  # of POLLED, those of a sample's rows
COUNTED = ("dropped", "refused", "dead_letters", "rejected", "written", "out_of_range")
TagSets = dict[SeriesKey, set[tuple[tuple[str, str], ...]]]
Latest = dict[SeriesKey, dict[str, float]]  # each series' fields at its latest timestamp


@dataclass
class Stored:
    """What one database holds of the polled measurements."""

    points: Points = field(default_factory=dict)
    tags: TagSets = field(default_factory=dict)  # every tag set a series was written with
    latest: Latest = field(default_factory=dict)  # exact integers from InfluxDB 1.x

    def add(self, key: SeriesKey, tags: dict[str, str], stamp: int, fields: dict[str, Any]) -> None:
        values = {k: v for k, v in fields.items() if v is not None}
        self.tags.setdefault(key, set()).add(tuple(sorted((k, v) for k, v in tags.items() if v)))
        series = self.points.setdefault(key, {})
        series.setdefault(stamp, {}).update(numeric(values))
        if stamp >= max(series):
            self.latest[key] = {k: v for k, v in values.items() if not isinstance(v, str)}


@dataclass
class DatabaseCount:
    written: int = 0  # published points the database holds, with every numeric field
    missing: int = 0  # published points it lacks (refused, dropped) or holds wrong
    refused: int = 0  # lines the collector says the database refused (lines_refused)
    examples: list[str] = field(default_factory=list)


@dataclass
class DeviceResult:
    recording: str
    device: str
    address: str
    interfaces: int  # the device's ifIndex rows (control API)
    varbinds: float  # served per poll of the agent (the simulator's count)
    polls: int  # answered polls the agent published
    poll_ms: float  # one poll by the agent's poller, timed (0: it failed)
    published: int  # points (lines) the agent published
    databases: dict[str, DatabaseCount] = field(default_factory=dict)
    incidents: dict[str, int] = field(default_factory=dict)  # opened, by kind
    device_fields: dict[str, float] = field(default_factory=dict)  # cpu, memory, uptime_s
    moving: int = 0  # interfaces the agent published a nonzero in_bps or out_bps for
    rows: int = 0  # of `published`, the points of rows (sensors), which discovery brings

    @property
    def refused(self) -> int:
        """Points missing from a database, or lines the collector counted as refused."""
        return sum(max(c.missing, c.refused) for c in self.databases.values())


class CorpusRig(Rig):
    """The servers, the simulator, the agent and one collector per database."""

    def __init__(
        self,
        recordings: list[Path],
        root: Path,
        *,
        interval: float = 5.0,
        polls: int = 2,
        counters: str = "recorded",
    ) -> None:
        if not recordings:
            raise ValueError("no recordings to serve")
        self.recordings = recordings
        self.root = root
        self.interval = interval
        self.polls = polls
        self.counters = counters  # the simulator's --recording-counters
        self.broker = Mosquitto(root / "mosquitto")
        self.influx = InfluxDB1(root / "influxdb")
        self.vm = VictoriaMetrics(root / "victoria-metrics")
        self.sim_log = root / "sim.log"
        self.sim: subprocess.Popen[bytes] | None = None
        self.sim_port = 0
        self.control = 0
        self.devices: list[dict[str, Any]] = []
        self.collectors: dict[str, CollectorProc] = {}
        self.agent: Proc | None = None
        self.tap: BrokerTap | None = None
        self.served_before: dict[str, int] = {}  # varbinds each device served, at the start
        self.served_after: dict[str, int] = {}  # and once the polls were done
        self.poll_ms: dict[str, float] = {}  # one poll timed, by device
        self.poll_varbinds: dict[str, int] = {}  # the varbinds that poll got

    # ---------------------------------------------------------------- start and stop

    async def start(self) -> None:
        for server in (self.broker, self.influx, self.vm):
            await asyncio.to_thread(server.start)
        await asyncio.to_thread(self.influx.create_database, INFLUX_DB)
        await self._start_sim()
        for name in DATABASES:
            collector = self._collector(name)
            collector.start()
            self.collectors[name] = collector
        for collector in self.collectors.values():
            await collector.wait_healthy()
        self.tap = BrokerTap(self.broker.port, "enoc-corpus-tap")
        await self.tap.start()
        self.agent = Proc("agent", self._agent_config(), "agent")
        self.agent.start()

    async def _start_sim(self) -> None:
        self.sim_port = free_port("udp", ADDRESS_BASE)
        self.control = free_port()
        inventory = self.root / "sim-devices.yaml"
        command = [sys.executable, "-m", "enoc.cli", "sim", "--recording-counters", self.counters]
        for path in self.recordings:
            command += ["--recording", str(path)]
        command += ["--port", str(self.sim_port), "--address-base", ADDRESS_BASE]
        command += ["--control", f"{HOST}:{self.control}", "--inventory-out", str(inventory)]
        with self.sim_log.open("ab") as log:
            self.sim = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.sim.poll() is not None:
                raise RuntimeError(f"enoc sim exited: {tail(self.sim_log)}")
            try:
                self.devices = await asyncio.to_thread(self._control_get, "/devices")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("enoc sim did not serve its control API") from None
                await asyncio.sleep(0.2)
        self.served_before = {d["name"]: d["served"]["varbinds"] for d in self.devices}
        # Real devices are polled with v2c more often than not, and it costs the simulator
        # less CPU than v3 (the agent's v3 path has tests of its own).
        written = yaml.safe_load(inventory.read_text())
        written["credentials"] = {"corpus-v2c": {"version": "2c", "community": "public"}}
        for device in written["devices"]:
            device["credentials"] = "corpus-v2c"
        (self.root / "devices.yaml").write_text(yaml.safe_dump(written, sort_keys=False))

    def _control_get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{HOST}:{self.control}{path}", timeout=5) as response:
            return json.load(response)

    def _agent_config(self) -> Path:
        every_poll = {"polls": 1}  # a steady device must stay below every level at every poll
        config = {
            "agent_id": "corpus-1",
            "site": SITE,
            "rtc": SITE,
            "mqtt": {"url": self.broker.url, "keepalive": "10s"},
            "spool": {"path": str(self.root / "spool")},
            "polling": {
                "interval": f"{self.interval:g}s",
                "timeout": f"{min(2.0, 0.4 * self.interval):g}s",
                "retries": 1,
                "unreachable_after": 2,
                "source": HOST,
            },
            "publishing": {"heartbeat": f"{self.interval:g}s"},
            "thresholds": dict.fromkeys(("utilization", "errors", "cpu", "memory"), every_poll),
            "inventory": str(self.root / "devices.yaml"),
            "log": {"level": "info"},
        }
        path = self.root / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _collector(self, database: str) -> CollectorProc:
        users = self.root / "users.yaml"
        users.write_text(
            yaml.safe_dump({"users": [{"name": "corpus", "role": "viewer", "token": TOKEN}]})
        )
        token = self.root / "influx-token"
        token.write_text("corpus\n")
        influx: dict[str, Any]
        if database == "influxdb1":
            influx = {"url": self.influx.url, "api": "v1", "database": INFLUX_DB}
        else:
            influx = {"url": self.vm.url, "api": "v2", "org": "enoc", "bucket": "enoc"}
            influx["token_file"] = str(token)
        influx["flush_interval"] = "0.5s"
        port = free_port()
        config = {
            "mqtt": {"url": self.broker.url, "client_id": f"enoc-corpus-{database}"},
            "influxdb": influx,
            "store": {"url": f"sqlite:///{self.root / f'incidents-{database}.db'}"},
            "incidents": {"sweep_interval": "1s"},
            "http": {"listen": f"{HOST}:{port}", "users_file": str(users)},
            "log": {"level": "info"},
        }
        path = self.root / f"collector-{database}.yaml"
        path.write_text(yaml.safe_dump(config))
        return CollectorProc(path, port)

    async def close(self) -> None:
        """Stop everything started; safe to call twice."""
        if self.agent is not None:
            await self.agent.terminate()
        if self.tap is not None:
            await self.tap.stop()
            self.tap = None
        for collector in self.collectors.values():
            if collector.alive:
                await collector.terminate()
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.sim.wait, 20)
            if self.sim.poll() is None:
                self.sim.kill()
        for server in (self.vm, self.influx, self.broker):
            await asyncio.to_thread(server.stop)

    # ---------------------------------------------------------------- running

    def answered(self) -> Counter[str]:
        """Answered polls the agent published, by device."""
        assert self.tap is not None
        out: Counter[str] = Counter()
        for message in self.tap.metrics.values():
            for sample in message.samples:
                if sample.fields.get("reachable") == 1:
                    out[sample.device] += 1
        return out

    async def run_polls(self, within: float = 120) -> None:
        """Until every device was polled `polls` times (or `within` seconds passed: the
        results then say which were not), then stop the agent and let the collectors catch
        up with everything it published."""
        names = [d["name"] for d in self.devices]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            answered = self.answered()
            if all(answered[n] >= self.polls for n in names):
                break
            assert self.agent is not None
            if not self.agent.alive:
                raise RuntimeError(f"the agent exited: {tail(self.agent.log)}")
            await asyncio.sleep(0.5)
        self.served_after = {
            d["name"]: d["served"]["varbinds"]
            for d in await asyncio.to_thread(self._control_get, "/devices")
        }
        assert self.agent is not None
        await self.agent.terminate()
        await self._caught_up()
        await self._time_polls()

    async def _time_polls(self) -> None:
        """One poll of each device by the agent's own poller, timed: the agent publishes
        only the round trip of its first GET (response_ms), not the whole poll's."""
        from agent.poller import collect
        from agent.profiles import ProfileSet
        from enoc.snmp.client import SnmpClient, SnmpError, Target, V2c

        client = SnmpClient(timeout=2.0, retries=1)
        await client.open(HOST)
        profiles = ProfileSet()
        try:
            for device in self.devices:
                target = Target(device["address"], self.sim_port, V2c(b"public"))
                try:  # the first poll also finds the profile; the second is a steady one
                    first = await collect(client, target, profiles.choose, 25)
                    oid = first.scalars.get("sysObjectID")
                    guess = profiles.choose(oid if isinstance(oid, tuple) else None)
                    started = time.monotonic()
                    raw = await collect(client, target, profiles.choose, 25, guess)
                except SnmpError:
                    continue
                self.poll_ms[device["name"]] = (time.monotonic() - started) * 1000
                self.poll_varbinds[device["name"]] = raw.varbinds
        finally:
            client.close()

    async def _caught_up(self, within: float = 60) -> None:
        assert self.tap is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            done = True
            for collector in self.collectors.values():
                counters = await collector.scrape() or {}
                received = counters.get('enoc_collector_received_total{kind="metrics"}', 0)
                pending = counters.get("enoc_collector_metrics_pending", 1)
                buffered = counters.get("enoc_collector_write_buffer_points", 1)
                if received < len(self.tap.metrics) or pending or buffered:
                    done = False
            if done:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError("the collectors did not catch up with the agent")

    # ---------------------------------------------------------------- reading back

    def stored_influx(self) -> Stored:
        stored = Stored()
        for measurement in POLLED:
            params = urllib.parse.urlencode(
                {"db": INFLUX_DB, "epoch": "ms", "q": f'SELECT * FROM "{measurement}" GROUP BY *'}  # noqa: S608 - ours
            )
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"{self.influx.url}/query", data=params.encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                body = json.load(response)
            for series in body["results"][0].get("series", []):
                tags: dict[str, str] = series.get("tags", {})
                key = _series_key(measurement, tags)
                columns: list[str] = series["columns"]
                for row in series["values"]:
                    values = dict(zip(columns, row, strict=True))
                    stamp = int(values.pop("time"))
                    stored.add(key, tags, stamp, values)
        return stored

    def stored_vm(self) -> Stored:
        stored = Stored()
        points, _doubled = export_points(self.vm.url)
        labels_of = self._vm_labels()
        for key, series in points.items():
            if key[0] not in POLLED:
                continue
            for stamp, fields in series.items():
                stored.add(key, {}, stamp, fields)
            stored.tags[key] = labels_of.get(key, set())
        return stored

    def _vm_labels(self) -> TagSets:
        params = urllib.parse.urlencode({"match[]": '{site="lab"}', "start": "0"})
        with urllib.request.urlopen(  # noqa: S310 - loopback
            f"{self.vm.url}/api/v1/series?{params}", timeout=60
        ) as response:
            body = json.load(response)
        out: TagSets = {}
        for labels in body["data"]:
            name = labels.pop("__name__", "")
            measurement = next((m for m in POLLED if name.startswith(m + "_")), "")
            if measurement:
                tags = tuple(sorted((k, v) for k, v in labels.items() if v))
                out.setdefault(_series_key(measurement, labels), set()).add(tags)
        return out

    def incidents(self, database: str) -> list[dict[str, Any]]:
        listed: dict[str, Any] = self.collectors[database].get("/api/v1/incidents?limit=5000")
        incidents: list[dict[str, Any]] = listed["incidents"]
        return incidents

    def logs(self) -> dict[str, Path]:
        out = {"sim": self.sim_log}
        if self.agent is not None:
            out["agent"] = self.agent.log
        out.update({f"collector-{n}": c.log for n, c in self.collectors.items()})
        return out

    def results(self, stored: dict[str, Stored]) -> list[DeviceResult]:
        """Per recording: what was served, published, written and opened."""
        assert self.tap is not None
        published, _twice = published_points(self.tap.metrics.values())
        answered = self.answered()
        moving: dict[str, set[int]] = {}
        for message in self.tap.metrics.values():
            for sample in message.samples:
                for iface in sample.interfaces:
                    if iface.fields.get("in_bps") or iface.fields.get("out_bps"):
                        moving.setdefault(sample.device, set()).add(iface.if_index)
        opened = {
            name: Counter((i["device"], i["kind"]) for i in self.incidents(name))
            for name in self.collectors
        }
        out: list[DeviceResult] = []
        for device in self.devices:
            name = device["name"]
            mine = {k: v for k, v in published.items() if k[2] == name}
            polls = answered[name]
            served = self.served_after.get(name, 0) - self.served_before[name]
            result = DeviceResult(
                recording=Path(device.get("recording", name)).name,
                device=name,
                address=device["address"],
                interfaces=int(device["interfaces"]),
                varbinds=round(served / polls, 1) if polls else 0.0,
                polls=polls,
                poll_ms=round(self.poll_ms.get(name, 0.0), 1),
                published=sum(len(series) for series in mine.values()),
                rows=sum(len(series) for key, series in mine.items() if key[0] in ROW_MEASUREMENTS),
                moving=len(moving.get(name, ())),
            )
            for database, held in stored.items():
                landed = {k: v for k, v in held.points.items() if k[2] == name}
                count = count_points(mine, landed, 0)
                counters = self.collectors[database].counters
                refused = counters.get(f'enoc_collector_lines_refused_total{{kind="{name}"}}', 0)
                result.databases[database] = DatabaseCount(
                    count.written, count.lost + count.wrong, int(refused), count.examples[:3]
                )
            device_key = ("device", SITE, name, "")
            for held in stored.values():
                latest = held.latest.get(device_key, {})
                result.device_fields = {
                    k: float(v) for k, v in latest.items() if k in ("cpu", "memory", "uptime_s")
                }
                break
            first = next(iter(opened.values()), Counter())
            result.incidents = {kind: n for (dev, kind), n in first.items() if dev == name}
            out.append(result)
        return out


def _series_key(measurement: str, tags: dict[str, str]) -> SeriesKey:
    if measurement == "sensor":
        return series_key(measurement, tags)
    sub = tags.get("ifIndex") or tags.get("peer") or ""
    return (measurement, tags.get("site", ""), tags.get("device", ""), sub)


# ------------------------------------------------------------------ the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recordings",
        type=Path,
        required=True,
        help="a folder of snmpsim .snmprec recordings (or one file; repeatable)",
        action="append",
    )
    parser.add_argument(
        "--only", action="append", default=[], help="only recordings whose file name has this"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="polling interval, seconds")
    parser.add_argument("--polls", type=int, default=2, help="polls of every device")
    parser.add_argument(
        "--counters",
        choices=("recorded", "moving"),
        default="recorded",
        help="recorded (default): a steady device, values as in the walks; moving: traffic "
        "counters advance (enoc sim --recording-counters), so rates are not zero",
    )
    add_results_argument(parser)
    parser.add_argument(
        "--workdir", type=Path, help="keep the servers' data and every program's log here"
    )


def select(recordings: list[Path], only: list[str]) -> list[Path]:
    from simulators.snmprec import recording_files

    files = [f for path in recordings for f in recording_files(path)]
    return [f for f in files if not only or any(o in f.name for o in only)]


async def measure(
    files: list[Path], root: Path, *, interval: float, polls: int, counters: str = "recorded"
) -> tuple[list[DeviceResult], dict[str, Any]]:
    started = time.monotonic()
    async with CorpusRig(files, root, interval=interval, polls=polls, counters=counters) as rig:
        await rig.run_polls()
        stored = {
            "influxdb1": await asyncio.to_thread(rig.stored_influx),
            "victoria-metrics": await asyncio.to_thread(rig.stored_vm),
        }
        results = await asyncio.to_thread(rig.results, stored)
        collector_counters = {
            name: {
                k.removeprefix("enoc_collector_"): v
                for k, v in c.counters.items()
                if any(w in k for w in COUNTED)
            }
            for name, c in rig.collectors.items()
        }
    wall_s = round(time.monotonic() - started, 1)
    return results, {"collectors": collector_counters, "wall_s": wall_s}


def run(args: argparse.Namespace) -> int:
    try:
        files = select(args.recordings, args.only)
    except ValueError as exc:
        print(f"enoc bench corpus: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("enoc bench corpus: no recording matches --only", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="enoc-corpus-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        run_it = measure(
            files, root, interval=args.interval, polls=args.polls, counters=args.counters
        )
        results, extra = asyncio.run(run_it)
    print_table(results)
    write_result(args.results, "corpus", report(results, extra, args))
    return 0


def report(results: list[DeviceResult], extra: dict[str, Any], args: Any) -> dict[str, Any]:
    rows = []
    for r in results:
        row = asdict(r)
        row["refused"] = r.refused
        rows.append(row)
    return {
        "benchmark": "corpus",
        "interval_s": args.interval,
        "counters": args.counters,
        "polls": args.polls,
        "recordings": rows,
        "totals": {
            "recordings": len(results),
            "interfaces": sum(r.interfaces for r in results),
            "published": sum(r.published for r in results),
            "written": {db: sum(r.databases[db].written for r in results) for db in DATABASES},
            "refused": {db: sum(r.databases[db].missing for r in results) for db in DATABASES},
            "incidents": sum(sum(r.incidents.values()) for r in results),
            "moving_interfaces": sum(r.moving for r in results),
        },
        **extra,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def print_table(results: list[DeviceResult]) -> None:
    head = (
        f"{'recording':34} {'ifaces':>6} {'varbinds':>8} {'poll ms':>8} {'points':>7} "
        f"{'influx1':>8} {'vm':>8} {'refused':>7} {'incidents':>9}  kinds"
    )
    print_header(head)
    for r in results:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.incidents.items()))
        print(
            f"{r.recording.removesuffix('.snmprec')[:34]:34} {r.interfaces:6d} "
            f"{r.varbinds:8.0f} {r.poll_ms:8.1f} {r.published:7d} "
            f"{r.databases['influxdb1'].written:8d} {r.databases['victoria-metrics'].written:8d} "
            f"{r.refused:7d} {sum(r.incidents.values()):9d}  {kinds}"
        )
    print("-" * len(head))
    print(
        f"{'total':34} {sum(r.interfaces for r in results):6d} {'':8} {'':8} "
        f"{sum(r.published for r in results):7d} "
        f"{sum(r.databases['influxdb1'].written for r in results):8d} "
        f"{sum(r.databases['victoria-metrics'].written for r in results):8d} "
        f"{sum(r.refused for r in results):7d} "
        f"{sum(sum(r.incidents.values()) for r in results):9d}"
    )
