"""`enoc bench scale`: collector replicas as one consumer group on a NATS cluster: points
per second at 1, 2 and 4 replicas, CPU per replica, and the fault drills' recovery times.

For each replica count: three NATS nodes (JetStream and MQTT on each, testbed/nats.py)
and a VictoriaMetrics start afresh; N `enoc collector` processes with `nats:` share the
durable consumers of the gateway's `$MQTT_msgs` stream (docs/collector.md, "NATS
JetStream"). The metrics messages are `enoc bench collector`'s (encoded up front: one
device per message, `--interfaces` interfaces each), published at QoS 1 by one
`mosquitto_pub -l` per site (C, not counted) into the nodes' MQTT gateways, sites spread
over the nodes.

`--warmup` polls of every device go first and are written (every series exists, as in
a collector that runs for months). Then every replica is stopped (SIGSTOP), the measured
rounds are published into the stream, and every replica is continued at once: the
figure is the backlog's drain by N replicas from one start, so no replica's start-up
and no publisher's pace is in it. Points per second: points written / wall time from
the continue to the last point written (the replicas' own counters); CPU per replica:
user + system from /proc of each replica process over that span. After each run the
database is read back: every device poll once, and the replicas' written points add up
to exactly the points published (a redelivered message would write its points twice).

`--flush-interval S` sets the replicas' `influxdb.flush_interval`. JetStream's
`max_ack_pending` is the shared consumer's, not each replica's: N replicas hold about
1/N of it each, and each writes what it holds whenever a fetch finds nothing more ready
(collector/nats_ingest.py), so the flush interval bounds only a trickle's writes.

`--cpu-per-replica F` holds each replica to F cores through a cgroup of its own (set
once it is healthy; enoc/bench/cgroups.py), as if each ran on a small node of its own:
on a machine of few cores the replicas would otherwise share them with the NATS nodes,
VictoriaMetrics and each other. Each replica's throttled periods and the share of its
quota it used are in the result, and beside the replicas the write requests
VictoriaMetrics took, its and the NATS nodes' CPU and the machine's busy share: what
bound a run. The issue's target is 4 replicas >= 3.2 times one.

`--partitioned` runs replicas that split the sites between them instead, on one
Mosquitto (or the NATS nodes' MQTT gateways) with their membership in a PostgreSQL
(enoc/bench/scale_partitioned.py): the same backlog, and each replica's resident set
before and after it, in one run.

`--memory-growth` measures instead the busiest replica's per-device state over fleets
of growing size at each replica count (enoc/bench/partition.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import nats
import yaml

from enoc.bench import scale_partitioned
from enoc.bench.cgroups import CgroupError, CpuQuota, Hierarchy, hierarchy
from enoc.bench.collector import (
    Stream,
    prepare,
    wait_healthy,
)
from enoc.bench.collector import (
    collector_yaml as mqtt_collector_yaml,
)
from enoc.bench.common import (
    add_results_argument,
    add_size_arguments,
    machine,
    print_header,
    progress,
    write_result,
)
from enoc.bench.partition import (
    DEVICES_PER_SITE,
    ON_MQTT_ONLY,
    POLLS,
    falling,
    memory_growth,
    print_memory,
)
from enoc.bench.partition_rss import RssRow, measure_rss, print_rss, rss_payload
from enoc.bench.scale_model import (
    MAX_ACK_PENDING,
    TARGET,
    Replica,
    Result,
    Run,
    Settings,
    add_quotas,
    drain,
    keep_logs,
    publish,
    published,
    quota_used,
    replica_names,
    signal_all,
    start_replicas,
    stop_replicas,
    to_run,
    warm_up,
)
from testbed.nats import NatsCluster
from testbed.servers import VictoriaMetrics

MEMORY_ELSEWHERE = (
    "these replicas share the JetStream consumers and each keep every device's state; "
    "--partitioned or --memory-growth measure it falling"
)
PARTITIONED_SITES = 500  # the sites' hashing shares them out evenly only on average


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser, 500, "devices sending metrics")
    parser.set_defaults(interfaces=24)
    parser.add_argument("--rounds", type=int, default=10, help="polls per device to measure")
    parser.add_argument("--warmup", type=int, default=1, help="polls per device sent first")
    parser.add_argument(
        "--sites",
        type=int,
        help=f"sites (one publisher each; default 6, {PARTITIONED_SITES} with --partitioned)",
    )
    parser.add_argument("--replicas", default="1,2,4", help="replica counts to run, e.g. 1,2,4")
    parser.add_argument(
        "--drills",
        type=Path,
        help="a bench-faults-*.json of `enoc bench faults`: its drills' recovery times",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        help="the replicas' influxdb.flush_interval, s (default: the collector's, 1 s)",
    )
    parser.add_argument(
        "--max-ack-pending",
        type=int,
        default=MAX_ACK_PENDING,
        help="the replicas' nats.max_ack_pending (the shared consumer's window)",
    )
    parser.add_argument(
        "--cpu-per-replica",
        type=float,
        metavar="CORES",
        help="each replica under a CPU quota of this many cores (a cgroup each: as if each "
        "ran on a small node of its own)",
    )
    parser.add_argument(
        "--partitioned",
        action="store_true",
        help="replicas that split the sites (mqtt.urls over the nodes' gateways, partition "
        "on a PostgreSQL started here): throughput and each replica's resident set",
    )
    parser.add_argument(
        "--broker",
        choices=("mosquitto", "nats"),
        default="mosquitto",
        help="with --partitioned: one Mosquitto, or three NATS nodes' MQTT gateways "
        "(docs/performance.md says why Mosquitto by default)",
    )
    parser.add_argument(
        "--memory-growth",
        action="store_true",
        help="instead of the throughput runs: the busiest replica's per-device state at "
        "each --replicas count over fleets of --fleets devices (partitioned on MQTT)",
    )
    parser.add_argument(
        "--rss",
        action="store_true",
        help="with --memory-growth: also real replicas partitioned on MQTT over the largest "
        "fleet, their resident set (Mosquitto, PostgreSQL and VictoriaMetrics started here)",
    )
    parser.add_argument(
        "--fleets",
        default="2500,5000,10000,20000",
        help="with --memory-growth: fleet sizes in devices, e.g. 5000,20000",
    )
    add_results_argument(parser)


def parse_replicas(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--replicas must be like 1,2,4; got {text!r}") from None
    if not counts or any(c < 1 or c > 16 for c in counts):
        raise ValueError(f"--replicas: counts from 1 to 16, got {text!r}")
    return counts


def read_drills(path: Path) -> list[dict[str, Any]]:
    """Each drill of an `enoc bench faults` JSON: name, status, recovery_s (None when the
    drill does not measure one)."""
    try:
        data = json.loads(path.read_text())
        drills = data["drills"]
        return [
            {"name": str(d["name"]), "status": str(d["status"]), "recovery_s": d.get("recovery_s")}
            for d in drills
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--drills {path}: not a bench-faults JSON ({exc})") from exc


def parse_fleets(text: str) -> list[int]:
    try:
        fleets = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--fleets must be like 5000,20000; got {text!r}") from None
    if not fleets or any(f < DEVICES_PER_SITE or f > 200_000 for f in fleets):
        raise ValueError(f"--fleets: {DEVICES_PER_SITE} to 200000 devices each, got {text!r}")
    return fleets


def run(args: argparse.Namespace) -> int:
    try:
        counts = parse_replicas(str(args.replicas))
        fleets = parse_fleets(str(args.fleets)) if args.memory_growth else []
        drills = read_drills(args.drills) if args.drills else []
        if args.sites is None:
            args.sites = PARTITIONED_SITES if args.partitioned else 6
        if args.broker != "mosquitto" and not args.partitioned:
            raise ValueError("--broker: only with --partitioned (the shared run is on NATS)")
        if args.partitioned and args.memory_growth:
            raise ValueError("--partitioned and --memory-growth: one or the other")
        if args.flush_interval is not None and not 0.01 <= args.flush_interval <= 60:
            raise ValueError("--flush-interval: 0.01 to 60 s")
        if not 1 <= args.max_ack_pending <= 100_000:
            raise ValueError("--max-ack-pending: 1 to 100000")
        if args.devices < args.sites or args.sites < 1 or args.rounds < 1 or args.warmup < 0:
            raise ValueError("--devices >= --sites >= 1, --rounds >= 1, --warmup >= 0")
        if args.rss and not args.memory_growth:
            raise ValueError("--rss: only with --memory-growth")
        if args.cpu_per_replica is not None and not 0.01 <= args.cpu_per_replica <= 64:
            raise ValueError("--cpu-per-replica: 0.01 to 64 cores")
        where = hierarchy() if args.cpu_per_replica and not args.memory_growth else None
    except (ValueError, CgroupError) as exc:
        print(f"enoc bench scale: {exc}", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    if args.memory_growth:
        return run_memory_growth(args, fleets, counts)
    args.devices_per_message, args.sensors = 1, 0  # what write_messages reads
    try:
        result = asyncio.run(measure(args, counts, where))
    except RuntimeError as exc:
        print(f"\nenoc bench scale: {exc}", file=sys.stderr)
        return 1
    result.drills = drills
    print_table(result)
    payload = asdict(result)
    for item, one in zip(payload["runs"], result.runs, strict=True):
        item["points_per_s"] = round(one.points_per_s)
        item["exact"] = one.exact
        item["points_per_write"] = round(one.points_per_write)
        for rep, replica in zip(item["per_replica"], one.per_replica, strict=True):
            rep["points_per_cpu_s"] = round(replica.points_per_cpu_s)
            rep["quota_used"] = quota_used(replica, one, result.cpu_per_replica)
            rep["growth_mib"] = replica.growth_mib
    payload["ratio_4_to_1"] = result.ratio()
    payload["target"] = TARGET
    payload["memory_per_replica"] = memory_payload(result)
    write_result(args.results, "scale", payload)
    return 0 if all(r.exact for r in result.runs) else 1


def run_memory_growth(args: argparse.Namespace, fleets: list[int], counts: list[int]) -> int:
    rows = memory_growth(fleets, counts, args.interfaces)
    progress("")
    print_memory(rows, args.interfaces)
    real: list[RssRow] = []
    if args.rss:
        with tempfile.TemporaryDirectory(prefix="enoc-bench-scale-") as tmp:
            real = asyncio.run(measure_rss(Path(tmp), max(fleets), args.interfaces, counts))
        print_rss(real, args.interfaces)
    payload = {
        "memory_growth": {
            "measured": "the busiest replica's per-device state (recent window and tag "
            "cache), tracemalloc",
            "devices_per_site": DEVICES_PER_SITE,
            "interfaces": args.interfaces,
            "polls": POLLS,
            "rows": [{**asdict(r), "mb": r.mb} for r in rows],
            "falling_with_replicas": falling(rows),
            "partitioning": ON_MQTT_ONLY,
            "rss": rss_payload(real) if real else None,
        },
        "machine": machine(),
    }
    write_result(args.results, "scale", payload)
    return 0


def memory_payload(result: Result) -> object:
    if not result.partitioned:
        return MEMORY_ELSEWHERE
    return scale_partitioned.memory_payload(result.runs)


def cores() -> int:
    """The cores this process (and the ones it starts) may run on."""
    return len(os.sched_getaffinity(0))


async def measure(
    args: argparse.Namespace, counts: list[int], where: Hierarchy | None = None
) -> Result:
    result = Result(
        args.devices,
        args.interfaces,
        args.sites,
        args.rounds,
        args.warmup,
        cores(),
        machine(),
        args.flush_interval,
        args.max_ack_pending,
        args.cpu_per_replica,
        where.version if where else None,
        args.partitioned,
        args.broker if args.partitioned else "nats",
    )
    runner = scale_partitioned.one_run if args.partitioned else one_run
    settings = Settings(
        args.flush_interval, args.max_ack_pending, args.cpu_per_replica, where, result.broker
    )
    with tempfile.TemporaryDirectory(prefix="enoc-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        users, warm, stream = prepare(tmp, args)
        for count in counts:
            run_dir = tmp / f"replicas-{count}"
            run_dir.mkdir()
            run = await runner(run_dir, users, warm, stream, count, settings)
            result.runs.append(run)
            if not run.exact:  # what the replicas said is gone with the directory else
                kept = keep_logs(run_dir, args.results / f"scale-logs-{count}")
                print(f"\nnot exact at {count} replica(s): their logs in {kept}", file=sys.stderr)
    progress("")
    return result


# ------------------------------------------------------------------ one replica count


def collector_yaml(
    run_dir: Path,
    name: str,
    cluster: NatsCluster,
    vm: str,
    users: Path,
    flush_interval: float | None = None,
    max_ack_pending: int = MAX_ACK_PENDING,
) -> Path:
    """`enoc bench collector`'s replica config (metrics only: each replica's own SQLite
    file will do) with `nats` in place of `mqtt`."""
    path = mqtt_collector_yaml(run_dir, name, "mqtt://127.0.0.1:1", vm, users, "")
    config = yaml.safe_load(path.read_text())
    del config["mqtt"]
    config["nats"] = {
        "servers": cluster.urls,
        "name": f"enoc-bench-{name}",
        "max_ack_pending": max_ack_pending,
    }
    if flush_interval is not None:
        config["influxdb"]["flush_interval"] = f"{flush_interval:g}s"
    path.write_text(yaml.safe_dump(config))
    return path


async def stored(cluster: NatsCluster, messages: int) -> None:
    """Until the metrics consumer has `messages` waiting (all stored, none handed out)."""
    nc = await nats.connect(cluster.urls)
    try:
        deadline = time.monotonic() + 60
        pending = -1
        while time.monotonic() < deadline:
            info = await nc.jetstream().consumer_info("$MQTT_msgs", "enoc-collectors-metrics")
            pending = int(info.num_pending or 0)
            if pending >= messages:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"only {pending} of {messages} messages stored in the stream")
    finally:
        await nc.close()


async def one_run(
    run_dir: Path,
    users: Path,
    warm: Stream,
    stream: Stream,
    count: int,
    settings: Settings,
) -> Run:
    progress(f"{count} replica(s): starting three NATS nodes and VictoriaMetrics")
    cluster = NatsCluster(run_dir / "nats")
    await asyncio.to_thread(cluster.start)
    procs: list[subprocess.Popen[bytes]] = []
    quotas: list[CpuQuota] = []
    try:
        with contextlib.ExitStack() as stack:
            vm = stack.enter_context(VictoriaMetrics(run_dir / "vm"))
            stack.callback(stop_replicas, procs)  # before the server they write to
            configs = [
                collector_yaml(
                    run_dir,
                    name,
                    cluster,
                    vm.url,
                    users,
                    settings.flush_interval,
                    settings.max_ack_pending,
                )
                for name in replica_names(count)
            ]
            add_quotas(quotas, replica_names(count), settings)
            start_replicas(configs, quotas, procs)
            for proc, config in zip(procs, configs, strict=True):
                await wait_healthy(proc, config)
            for quota in quotas:  # after the start, which a small node would not share
                quota.limit()
            before = await warm_up(procs, configs, warm, partial(publish, cluster))
            # every replica stopped while the backlog is stored; their pending fetches
            # expire (1 s) so that none is handed a message meanwhile
            signal_all(procs, signal.SIGSTOP)
            await asyncio.sleep(1.5)
            await published(publish(cluster, stream, "measured"), "the measured rounds")
            await stored(cluster, stream.messages)
            span = await drain(
                procs,
                configs,
                quotas,
                (list(cluster.nodes), vm),
                warm.points + stream.points,
                warm.samples + stream.samples,
            )
    finally:
        try:
            stop_replicas(procs)
        finally:
            for quota in quotas:  # a replica still running is moved out first
                quota.remove()
            await asyncio.to_thread(cluster.stop)
    return to_run(count, warm, stream, before, span)


# ------------------------------------------------------------------ output


def print_table(result: Result) -> None:
    flush = f"{result.flush_interval:g} s" if result.flush_interval else "the default (1 s)"
    print(
        f"\n{result.devices} devices x {result.interfaces} interfaces at {result.sites} sites, "
        f"{result.rounds} measured polls each after {result.warmup} warm-up; "
        f"{where_text(result)} on loopback; {result.cores} core(s) available to all of it "
        f"({result.machine.get('cpu_model', '')}); the replicas' influxdb.flush_interval "
        f"{flush}, nats.max_ack_pending {result.max_ack_pending}"
    )
    quota = result.cpu_per_replica
    if quota:
        print(
            f"each replica under a CPU quota of {quota:g} core(s) (a cgroup v"
            f"{result.cgroup_version} each, as if on a node of its own)"
        )
    header = (
        f"\n{'replicas':>8} {'messages':>9} {'points':>10} {'wall s':>7} {'points/s':>10} "
        f"{'written':>10} {'exact':>5}  per replica: points, CPU s, points/CPU-s, peak MiB"
        + (", [quota used, periods throttled, time throttled]" if quota else "")
    )
    print_header(header)
    for r in result.runs:
        shares = "; ".join(
            f"{p.name} {p.points:,} {p.cpu_s:.1f} {p.points_per_cpu_s:,.0f} {p.peak_rss_mib:.0f}"
            + throttled_text(p, r, quota)
            for p in r.per_replica
        )
        print(
            f"{r.replicas:>8} {r.messages:>9,} {r.points:>10,} {r.wall_s:>7.1f} "
            f"{r.points_per_s:>10,.0f} {r.written:>10,} {'yes' if r.exact else 'NO':>5}  {shares}"
        )
    print(
        f"\n{'replicas':>8} {'writes':>7} {'points/write':>12} {'broker CPU s':>12} "
        f"{'VM CPU s':>8} {'cores busy':>10}   (beside the replicas, in the measured span)"
    )
    for r in result.runs:
        print(
            f"{r.replicas:>8} {r.beside.writes:>7,} {r.points_per_write:>12,.0f} "
            f"{r.beside.broker_cpu_s:>12.1f} {r.beside.vm_cpu_s:>8.1f} "
            f"{r.beside.machine_busy:>10.0%}"
        )
    ratio = result.ratio()
    if ratio is not None and quota:
        print(
            f"\n4 replicas / 1: {ratio:.2f} x the points per second (target {TARGET:g}); "
            f"each replica held to {quota:g} core(s): 4 x {quota:g} = {4 * quota:g} for the "
            f"replicas, the rest of the {result.cores} core(s) for {broker_text(result)}, "
            "VictoriaMetrics, the publishers and this bench"
        )
    elif ratio is not None:
        print(
            f"\n4 replicas / 1: {ratio:.2f} x the points per second (target {TARGET:g}); "
            f"{result.cores} core(s) here run the replicas, {broker_text(result)}, "
            "VictoriaMetrics and the publishers together"
            + (
                ": the target needs at least 4 cores for the replicas alone "
                "(--cpu-per-replica gives each its own small share)"
                if result.cores < 4
                else ""
            )
        )
    else:
        print("\n4 replicas / 1: not measured (give --replicas with 1 and 4)")
    if result.partitioned:
        scale_partitioned.print_memory(result.runs)
    else:
        print(f"memory per replica as devices grow: {MEMORY_ELSEWHERE}")
    print(
        "\nwritten: points the replicas wrote in the measured span, in all (exact: that is "
        "every point published, once, and the database holds every device poll once)"
    )
    if result.drills:
        print("\ndrills (from --drills): recovery, fault to service again")
        for d in result.drills:
            took = d["recovery_s"]
            print(
                f"  {d['name']:24} {d['status']:6} "
                + (f"{took:.1f} s" if isinstance(took, int | float) else "not measured")
            )


def broker_text(result: Result) -> str:
    return "one Mosquitto" if result.broker == "mosquitto" else "the three NATS nodes"


def where_text(result: Result) -> str:
    brokers = broker_text(result)
    if result.partitioned:
        return f"replicas partitioning the sites over {brokers}, their members in PostgreSQL"
    return f"replicas sharing the JetStream consumers of {brokers}"


def throttled_text(replica: Replica, run: Run, quota: float | None) -> str:
    used = quota_used(replica, run, quota)
    t = replica.throttling
    if used is None or t is None:
        return ""
    return f" [{used:.0%}, {t.throttled_periods}/{t.periods}, {t.throttled_s:.1f} s]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enoc bench scale", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
