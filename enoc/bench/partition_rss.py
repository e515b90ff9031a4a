"""Memory of real collector replicas that partition the sites (collector/partition.py),
for `enoc bench scale --memory-growth --rss`.

For each replica count: a Mosquitto, a PostgreSQL (the replicas' membership) and a
VictoriaMetrics start afresh; N `enoc collector` processes with `partition` start one
after the other; every site's agent publishes its retained birth status, and once every
replica agrees on the members and knows every site, each site's polls (the messages of
`cache_sizes`, `DEVICES_PER_SITE` devices each) are published one round at a time. The
resident set of each replica is read before the first poll (its base) and after every
point is written; the busiest replica is the one that owns the most sites.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import psutil
import yaml

from enoc.bench.collector import (
    TOKEN,
    collector_yaml,
    http_port,
    scrape,
    start_collector,
    wait_healthy,
)
from enoc.bench.common import progress, stop_process
from enoc.bench.partition import DEVICES_PER_SITE, POLLS, message
from enoc.wire import DeviceInfo, StatusMessage, encode, topic
from testbed.servers import Mosquitto, PostgreSQL, VictoriaMetrics

SETTLE_S = 120.0  # for the replicas to agree on the members and subscribe
WRITE_S = 300.0  # for a round's points to be written


@dataclass(frozen=True)
class RssRow:
    """The busiest of `replicas` real replicas over a fleet of `devices` devices."""

    devices: int
    replicas: int
    busiest_sites: int
    base_mib: float  # its resident set once settled, before any poll
    rss_mib: float  # after every poll of its share was written
    rss_all_mib: list[float]  # each replica's, after

    @property
    def growth_mib(self) -> float:
        return round(self.rss_mib - self.base_mib, 1)


def replica_yaml(run_dir: Path, name: str, servers: tuple[Mosquitto, PostgreSQL, str]) -> Path:
    """`enoc bench collector`'s replica config with `partition` and one PostgreSQL."""
    mosquitto, postgres, vm = servers
    users = run_dir / "users.yaml"
    if not users.exists():
        users.write_text(
            yaml.safe_dump({"users": [{"name": "bench", "role": "viewer", "token": TOKEN}]})
        )
    path = collector_yaml(run_dir, name, mosquitto.url, vm, users, "")
    config = yaml.safe_load(path.read_text())
    config["store"]["url"] = postgres.url
    config["partition"] = {"id": name, "takeover": "5s", "heartbeat": "0.5s"}
    path.write_text(yaml.safe_dump(config))
    return path


def counters(configs: list[Path]) -> list[dict[str, float]]:
    return [scrape(http_port(c)) for c in configs]


async def settled(configs: list[Path], sites: int, within: float = SETTLE_S) -> list[int]:
    """Until every replica sees all of them and every site, none held for another, and
    each has subscribed to its own (`partition_applied`): the sites each owns."""
    deadline = time.monotonic() + within
    while True:
        seen = await asyncio.to_thread(counters, configs)
        owned = [int(c.get("enoc_collector_partition_sites_owned_total", 0)) for c in seen]
        if (
            all(c.get("enoc_collector_partition_replicas_total") == len(configs) for c in seen)
            and all(c.get("enoc_collector_partition_sites_known_total") == sites for c in seen)
            and not any(c.get("enoc_collector_partition_sites_held_total") for c in seen)
            and sum(owned) == sites
            and all(c.get("enoc_collector_partition_applied_total") for c in seen)
        ):
            return owned
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas did not settle within {within:g} s: {seen}")
        progress(f"{len(configs)} replica(s): settling, sites owned {owned}")
        await asyncio.sleep(0.5)


async def until_written(configs: list[Path], target: int) -> None:
    deadline = time.monotonic() + WRITE_S
    while True:
        seen = await asyncio.to_thread(counters, configs)
        done = sum(int(c.get("enoc_collector_points_written_total", 0)) for c in seen)
        progress(f"{len(configs)} replica(s): {done:,} of {target:,} points written")
        if done >= target:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done:,} of {target:,} points written in {WRITE_S:g} s")
        await asyncio.sleep(0.3)


async def statuses(client: aiomqtt.Client, names: list[str]) -> None:
    """Each site's birth status, retained: the catalogue of sites every replica reads."""
    for site in names:
        status = StatusMessage(
            f"{site}-agent",
            site,
            "emea",
            0,
            time.time(),
            devices=[DeviceInfo(f"{site}-d{n}", "127.0.0.9") for n in range(DEVICES_PER_SITE)],
        )
        await client.publish(
            topic(site, status.agent, "status"), encode(status), qos=1, retain=True
        )


async def one_count(run_dir: Path, sites: int, interfaces: int, count: int) -> RssRow:
    names = [f"site-{n:05d}" for n in range(sites)]
    per_message = DEVICES_PER_SITE * (1 + interfaces)  # a device point and its interfaces'
    t0 = time.time() - 60 * (POLLS + 1)  # polls a minute apart, the last a minute ago
    procs = []
    with (
        Mosquitto(run_dir / "mosquitto") as mosquitto,
        PostgreSQL(run_dir / "postgres") as postgres,
        VictoriaMetrics(run_dir / "vm") as vm,
    ):
        try:
            configs = [
                replica_yaml(run_dir, f"r{n + 1}", (mosquitto, postgres, vm.url))
                for n in range(count)
            ]
            for config in configs:  # one after the other: the first makes the schema
                procs.append(start_collector(config))
                await wait_healthy(procs[-1], config)
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, identifier="bench-agents"
            ) as client:
                await statuses(client, names)
                owned = await settled(configs, sites)
                processes = [psutil.Process(p.pid) for p in procs]
                base = [rss_mib(p) for p in processes]
                for seq in range(1, POLLS + 1):
                    for site in names:
                        m = message(site, seq, DEVICES_PER_SITE, interfaces, t0=t0)
                        await client.publish(topic(site, m.agent, "metrics"), encode(m), qos=1)
                    await until_written(configs, seq * sites * per_message)
            await asyncio.sleep(1.0)
            after = [rss_mib(p) for p in processes]
        finally:
            for proc in procs:
                stop_process(proc)
    busiest = max(range(count), key=lambda n: owned[n])
    return RssRow(
        sites * DEVICES_PER_SITE, count, owned[busiest], base[busiest], after[busiest], after
    )


def rss_mib(process: psutil.Process) -> float:
    return round(process.memory_info().rss / 2**20, 1)


async def measure_rss(tmp: Path, devices: int, interfaces: int, counts: list[int]) -> list[RssRow]:
    """One fleet of `devices` devices, partitioned over each of `counts` replicas."""
    rows = []
    sites = max(1, devices // DEVICES_PER_SITE)
    for count in counts:
        run_dir = tmp / f"rss-{count}"
        run_dir.mkdir()
        progress(f"{count} replica(s): starting Mosquitto, PostgreSQL and VictoriaMetrics")
        rows.append(await one_count(run_dir, sites, interfaces, count))
    progress("")
    return rows


def print_rss(rows: list[RssRow], interfaces: int) -> None:
    print(
        f"\nreal replicas partitioned on MQTT (one Mosquitto, PostgreSQL, VictoriaMetrics): "
        f"the busiest replica's resident set, {DEVICES_PER_SITE} devices a site, "
        f"{interfaces} interfaces a device, {POLLS} polls each; MiB\n"
    )
    print(f"{'devices':>8} {'replicas':>8} {'its sites':>9} {'base':>7} {'after':>7} {'growth':>7}")
    for r in rows:
        print(
            f"{r.devices:>8,} {r.replicas:>8} {r.busiest_sites:>9,} {r.base_mib:>7.1f} "
            f"{r.rss_mib:>7.1f} {r.growth_mib:>7.1f}"
        )


def rss_payload(rows: list[RssRow]) -> list[dict[str, Any]]:
    return [{**r.__dict__, "growth_mib": r.growth_mib} for r in rows]
