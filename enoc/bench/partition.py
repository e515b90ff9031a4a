"""Memory per collector replica as replicas are added (collector/partition.py): the
per-device state (the recent window and the device tag cache) of the busiest replica
of 1, 2, 4 ... over one fleet, measured with tracemalloc. For `enoc bench scale`."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterable

from collector import lineproto
from collector.metrics_in import read
from collector.partition import assign
from collector.recent import RecentValues
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, encode

T0 = 1_700_000_000.0


def _message(site: str, seq: int, devices: int, interfaces: int) -> MetricsMessage:
    samples = [
        DeviceSample(
            f"{site}-d{n}",
            "127.0.0.9",
            T0 + 60 * seq,
            {"cpu": float(seq % 100), "memory": 40.0, "response_ms": 1.5},
            [
                InterfaceSample(i, f"ge-0/0/{i}", f"port {i}", "", {"in_bps": 1e6 * seq + i})
                for i in range(1, interfaces + 1)
            ],
        )
        for n in range(devices)
    ]
    return MetricsMessage(f"{site}-agent", site, "emea", seq, T0 + 60 * seq, samples=samples)


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
            for m in [_message(site, seq, devices, interfaces)]
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
