"""`enoc bench scale --partitioned`: replicas that split the sites between them
(collector/partition.py), throughput and memory per replica in one run.

For each replica count: one Mosquitto (or, `--broker nats`, three NATS nodes with
JetStream and MQTT on each, every QoS 1 subscription's window `GATEWAY_WINDOW` as in
deploy/nats/nats.conf), a PostgreSQL (the replicas' membership) and a VictoriaMetrics
start afresh; N `enoc collector` processes with `mqtt.urls` over the broker's nodes and
`partition` start one after the other. Every site's agent publishes its retained birth;
once every replica agrees on the members, knows every site, holds none for another and
has subscribed to its own (`partition_applied`), the warm-up is published and written.
Then, as in the shared run (enoc/bench/scale.py), every replica is stopped, the measured
rounds are published (each PUBACK: stored in the broker) and every replica continued
at once.

`partition.takeover` is long here (`TAKEOVER`): the stopped replicas must not take one
another for dead when they continue. Each replica's resident set is read once it has
settled, before any poll (its base), and after the last point is written: the growth
is its per-device state, which partitioning shares out. Throughput is bound by the
busiest replica: the sites' hashing gives each a share that is even only on average, so
the run prints the bound the shares set (sites / the most one owns) beside the figure.
Mosquitto by default: through NATS's MQTT gateways partitioned replicas lose or wait
for messages under load (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import time
from pathlib import Path

import aiomqtt
import psutil
import yaml

from enoc.bench.cgroups import CpuQuota
from enoc.bench.collector import MAX_INFLIGHT, Stream, wait_healthy
from enoc.bench.collector import collector_yaml as mqtt_collector_yaml
from enoc.bench.collector import publish as publish_sites
from enoc.bench.common import progress
from enoc.bench.partition_rss import rss_mib, settled
from enoc.bench.scale_model import (
    Replica,
    Run,
    Settings,
    add_quotas,
    drain,
    publish,
    published,
    replica_names,
    signal_all,
    start_replicas,
    stop_replicas,
    to_run,
    warm_up,
)
from enoc.wire import StatusMessage, encode, topic
from testbed.nats import NatsCluster
from testbed.servers import Mosquitto, PostgreSQL, Server, VictoriaMetrics

GATEWAY_WINDOW = 20  # deploy/nats/nats.conf's mqtt.max_ack_pending: each site subscription's
SUBSCRIBE_S = 420.0  # for the replicas to settle and subscribe (each NATS site: a Raft group)
TAKEOVER = "600s"  # longer than any stop of the replicas in a run


class Brokers:
    """What the replicas consume from: one Mosquitto, or three NATS nodes' MQTT gateways
    (every QoS 1 subscription's window `GATEWAY_WINDOW`)."""

    def __init__(self, run_dir: Path, kind: str) -> None:
        self.kind = kind
        self.cluster: NatsCluster | None = None
        self.mosquitto: Mosquitto | None = None
        if kind == "nats":
            self.cluster = NatsCluster(run_dir / "nats", mqtt_max_ack_pending=GATEWAY_WINDOW)
        else:
            extra = f"max_inflight_messages {MAX_INFLIGHT}\n"
            self.mosquitto = Mosquitto(run_dir / "mosquitto", config_extra=extra)

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
        elif self.mosquitto is not None:
            self.mosquitto.start()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        elif self.mosquitto is not None:
            self.mosquitto.stop()

    @property
    def servers(self) -> list[Server]:
        if self.cluster is not None:
            return list(self.cluster.nodes)
        return [self.mosquitto] if self.mosquitto is not None else []

    @property
    def urls(self) -> list[str]:
        if self.cluster is not None:
            return [node.mqtt_url for node in self.cluster.nodes]
        return [self.mosquitto.url] if self.mosquitto is not None else []

    @property
    def first(self) -> tuple[str, int]:
        """The host and MQTT port of the first node."""
        if self.cluster is not None:
            return self.cluster.nodes[0].host, self.cluster.nodes[0].mqtt_port
        assert self.mosquitto is not None
        return self.mosquitto.host, self.mosquitto.port

    def publish(self, stream: Stream, name: str) -> list[subprocess.Popen[bytes]]:
        if self.cluster is not None:
            return publish(self.cluster, stream, name)
        assert self.mosquitto is not None
        return publish_sites(self.mosquitto, stream, name)


def collector_yaml(
    run_dir: Path,
    name: str,
    servers: tuple[Brokers, PostgreSQL, str],
    users: Path,
    flush_interval: float | None,
) -> Path:
    """`enoc bench collector`'s replica config, partitioned, over the broker's nodes."""
    brokers, postgres, vm = servers
    path = mqtt_collector_yaml(run_dir, name, brokers.urls[0], vm, users, "")
    config = yaml.safe_load(path.read_text())
    del config["mqtt"]["url"], config["mqtt"]["shared_group"]
    config["mqtt"]["urls"] = brokers.urls
    config["store"]["url"] = postgres.url
    config["partition"] = {"id": name, "takeover": TAKEOVER, "heartbeat": "1s"}
    if flush_interval is not None:
        config["influxdb"]["flush_interval"] = f"{flush_interval:g}s"
    path.write_text(yaml.safe_dump(config))
    return path


async def births(brokers: Brokers, stream: Stream) -> None:
    """Each site's agent's birth, retained: the catalogue of sites the replicas read."""
    host, port = brokers.first
    async with aiomqtt.Client(host, port, identifier="bench-births") as client:
        for name in stream.files:
            _, _, site, agent, _ = name.split("/")
            status = StatusMessage(agent, site, "emea", 0, time.time())
            await client.publish(topic(site, agent, "status"), encode(status), qos=1, retain=True)


async def one_run(
    run_dir: Path,
    users: Path,
    warm: Stream,
    stream: Stream,
    count: int,
    settings: Settings,
) -> Run:
    what = "three NATS nodes" if settings.broker == "nats" else "Mosquitto"
    progress(f"{count} replica(s): starting {what}, PostgreSQL and VictoriaMetrics")
    brokers = Brokers(run_dir, settings.broker)
    await asyncio.to_thread(brokers.start)
    procs: list[subprocess.Popen[bytes]] = []
    quotas: list[CpuQuota] = []
    try:
        with contextlib.ExitStack() as stack:
            postgres = stack.enter_context(PostgreSQL(run_dir / "postgres"))
            vm = stack.enter_context(VictoriaMetrics(run_dir / "vm"))
            stack.callback(stop_replicas, procs)  # before the servers they write to
            configs = [
                collector_yaml(
                    run_dir, name, (brokers, postgres, vm.url), users, settings.flush_interval
                )
                for name in replica_names(count)
            ]
            add_quotas(quotas, replica_names(count), settings)
            for n, config in enumerate(configs):  # one after the other: the first makes the schema
                start_replicas([config], quotas[n : n + 1], procs)
                await wait_healthy(procs[-1], config)
            await births(brokers, stream)
            owned = await settled(configs, len(stream.files), SUBSCRIBE_S)
            for quota in quotas:  # after the start and the subscriptions
                quota.limit()
            processes = [psutil.Process(p.pid) for p in procs]
            base = [rss_mib(p) for p in processes]
            before = await warm_up(procs, configs, warm, brokers.publish)
            signal_all(procs, signal.SIGSTOP)
            await published(brokers.publish(stream, "measured"), "the measured rounds")
            span = await drain(
                procs,
                configs,
                quotas,
                (brokers.servers, vm),
                warm.points + stream.points,
                warm.samples + stream.samples,
            )
    finally:
        try:
            stop_replicas(procs)
        finally:
            for quota in quotas:
                quota.remove()
            await asyncio.to_thread(brokers.stop)
    one = to_run(count, warm, stream, before, span)
    for n, replica in enumerate(one.per_replica):
        replica.sites, replica.base_rss_mib, replica.rss_mib = owned[n], base[n], span.rss[n]
    return one


# ------------------------------------------------------------------ output


def busiest(run: Run) -> Replica:
    """The replica that owns the most sites (the most points on a tie)."""
    return max(run.per_replica, key=lambda r: (r.sites or 0, r.points))


def bound(run: Run) -> float | None:
    """The throughput the shares allow, in times one replica: sites / the most one owns."""
    most = busiest(run).sites
    total = sum(r.sites or 0 for r in run.per_replica)
    return round(total / most, 2) if most else None


def falling(runs: list[Run]) -> bool:
    """Whether the busiest replica's growth falls with each replica count added."""
    ordered = sorted(runs, key=lambda r: r.replicas)
    growth = [busiest(r).growth_mib or 0.0 for r in ordered]
    return len(growth) > 1 and all(b < a for a, b in itertools.pairwise(growth))


def memory_payload(runs: list[Run]) -> dict[str, object]:
    return {
        "measured": "the busiest replica's resident set (the one owning the most sites): "
        "settled before any poll, and after the last point was written",
        "busiest": [
            {
                "replicas": r.replicas,
                "sites": busiest(r).sites,
                "base_mib": busiest(r).base_rss_mib,
                "rss_mib": busiest(r).rss_mib,
                "growth_mib": busiest(r).growth_mib,
                "shares_bound": bound(r),
            }
            for r in runs
        ],
        "falling_with_replicas": falling(runs),
    }


def print_memory(runs: list[Run]) -> None:
    print(
        "\npartitioned: the sites each replica owns, the throughput their shares allow "
        "(sites / the most one owns, in times one replica), and the busiest's resident set "
        "(MiB) settled before any poll and after the last point"
    )
    print(f"{'replicas':>8} {'bound':>6} {'base':>7} {'after':>7} {'growth':>7}  sites owned")
    for r in runs:
        top = busiest(r)
        print(
            f"{r.replicas:>8} {bound(r) or 0:>5.2f}x {top.base_rss_mib or 0:>7.1f} "
            f"{top.rss_mib or 0:>7.1f} {top.growth_mib or 0:>7.1f}  "
            + ", ".join(f"{p.name} {p.sites}" for p in r.per_replica)
        )
    growth = " / ".join(f"{busiest(r).growth_mib or 0:.1f}" for r in runs)
    counts = "/".join(str(r.replicas) for r in runs)
    print(
        f"memory per replica as devices grow: the busiest replica's growth {growth} MiB at "
        f"{counts} replica(s): " + ("falling" if falling(runs) else "NOT falling")
    )
