"""Memory per collector replica as replicas are added (collector/partition.py): the
per-device state (the recent window and the device tag cache) of the busiest replica
of 1, 2, 4 ... over fleets of growing size, measured with tracemalloc. For `enoc bench
scale --memory-growth`."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from collector import lineproto
from collector.metrics_in import read
from collector.partition import assign
from collector.recent import RecentValues
from enoc.bench.common import progress
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, encode

T0 = 1_700_000_000.0
DEVICES_PER_SITE = 20
POLLS = 3  # each device's polls in the window
ON_MQTT_ONLY = (
    "partitioning routes by MQTT subscription (collector/partition.py: each replica "
    "subscribes to its own sites, on a broker that routes them itself: Mosquitto, EMQX; "
    "NATS's MQTT gateways lose or hold such messages under load); replicas on the "
    "JetStream ingest (nats) each take a share of every site and keep state for all"
)


def message(
    site: str, seq: int, devices: int, interfaces: int, *, t0: float = T0
) -> MetricsMessage:
    """Poll `seq` of a site's devices, one message."""
    samples = [
        DeviceSample(
            f"{site}-d{n}",
            "127.0.0.9",
            t0 + 60 * seq,
            {"cpu": float(seq % 100), "memory": 40.0, "response_ms": 1.5},
            [
                InterfaceSample(i, f"ge-0/0/{i}", f"port {i}", "", {"in_bps": 1e6 * seq + i})
                for i in range(1, interfaces + 1)
            ],
        )
        for n in range(devices)
    ]
    return MetricsMessage(f"{site}-agent", site, "emea", seq, t0 + 60 * seq, samples=samples)


def cache_sizes(
    *,
    sites: int = 1000,
    devices: int = 20,
    interfaces: int = 8,
    polls: int = 3,
    replicas: Iterable[int] = (1, 2, 4),
) -> dict[int, dict[str, int]]:
    """For each replica count: the busiest replica's devices held and the bytes its
    window and tag cache take after `polls` polls of its share of the fleet."""
    names = [f"site-{n:05d}" for n in range(sites)]
    out: dict[int, dict[str, int]] = {}
    for count in replicas:
        shares = assign(names, [f"enoc-collector-{n}" for n in range(count)])
        busiest: set[str] = max(shares.values(), key=len)
        share = sorted(busiest)
        payloads = [
            (site, m.agent, encode(m))
            for seq in range(1, polls + 1)
            for site in share
            for m in [message(site, seq, devices, interfaces)]
        ]
        lineproto.forget_devices(lambda _site: False)  # the tag cache starts empty
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            window = RecentValues(max_devices=10**7)
            for site, agent, payload in payloads:
                window.add(read(site, agent, payload))  # the tag cache fills as it reads
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        out[count] = {"sites": len(share), "devices": len(window.devices), "bytes": used}
        lineproto.forget_devices(lambda _site: False)
    return out


@dataclass(frozen=True)
class MemoryRow:
    """The busiest of `replicas` replicas over a fleet of `devices` devices."""

    devices: int
    sites: int
    replicas: int
    busiest_sites: int
    busiest_devices: int
    bytes: int

    @property
    def mb(self) -> float:
        return round(self.bytes / 1e6, 1)


def memory_growth(
    fleets: Sequence[int], replicas: Sequence[int], interfaces: int
) -> list[MemoryRow]:
    """`cache_sizes` of each fleet (devices, `DEVICES_PER_SITE` a site) for each replica
    count."""
    rows: list[MemoryRow] = []
    for devices in fleets:
        sites = max(1, devices // DEVICES_PER_SITE)
        progress(f"memory growth: {sites * DEVICES_PER_SITE:,} devices")
        sizes = cache_sizes(
            sites=sites,
            devices=DEVICES_PER_SITE,
            interfaces=interfaces,
            polls=POLLS,
            replicas=replicas,
        )
        rows.extend(
            MemoryRow(
                sites * DEVICES_PER_SITE,
                sites,
                count,
                size["sites"],
                size["devices"],
                size["bytes"],
            )
            for count, size in sizes.items()
        )
    return rows


def falling(rows: Sequence[MemoryRow]) -> bool:
    """Whether, in every fleet, the busiest replica holds less with each replica added."""
    fleets: dict[int, list[MemoryRow]] = {}
    for row in rows:
        fleets.setdefault(row.devices, []).append(row)
    return all(
        later.bytes < earlier.bytes
        for group in fleets.values()
        for earlier, later in pairwise(sorted(group, key=lambda r: r.replicas))
    )


def print_memory(rows: Sequence[MemoryRow], interfaces: int) -> None:
    """The table devices x replicas -> MB of the busiest replica."""
    counts = sorted({r.replicas for r in rows})
    print(
        f"\nmemory per replica as the fleet grows: the per-device state (recent window "
        f"and tag cache, tracemalloc) of the busiest replica, {DEVICES_PER_SITE} devices "
        f"a site, {interfaces} interfaces a device, {POLLS} polls each; MB\n"
    )
    print(f"{'devices':>8} {'sites':>6} " + " ".join(f"{f'{c} replica(s)':>13}" for c in counts))
    for devices in sorted({r.devices for r in rows}):
        cells = {r.replicas: r for r in rows if r.devices == devices}
        sites = next(iter(cells.values())).sites
        print(
            f"{devices:>8,} {sites:>6,} "
            + " ".join(f"{cells[c].mb:>13,.1f}" if c in cells else f"{'':>13}" for c in counts)
        )
    print(f"\n{ON_MQTT_ONLY}")
