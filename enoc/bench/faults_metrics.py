"""The `metrics-node-lost` drill of `enoc bench faults`: the collector also writes, with a
`remote_write` sink, to vmagent in front of two VictoriaMetrics nodes
(`testbed.vmagent.MetricsPair`, replicated); one node is stopped for a while (cleanly: a
killed node loses its last seconds, docs/collector.md) and both must end with every
published point, once. Its recovery time is from the node's restart to its catching up
(every point published before the restart present on it). Its own module, so
faults.py stays the drills' common frame.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from testbed.drills import Accounting, Harness
from testbed.drills_accounting import count_points, export_points, published_points

if TYPE_CHECKING:
    from enoc.bench.faults import Plan


async def metrics_node_lost(h: Harness) -> Plan:
    """One of the two VictoriaMetrics nodes behind vmagent stopped for 5 poll intervals;
    the collector keeps acknowledging, and the node ends with every point, once."""
    from enoc.bench.faults import OUTAGE_INTERVALS, Plan  # it imports this module

    assert h.collector is not None
    assert h.pair is not None
    assert h.pair.agent is not None
    assert h.tap is not None
    collector, pair, agent, tap = h.collector, h.pair, h.pair.agent, h.tap
    node = pair.nodes["b"]
    before = await collector.scrape() or {}
    published_before = len(tap.metrics)
    await asyncio.to_thread(node.stop)
    down_at = time.monotonic()
    await h.until(down_at + OUTAGE_INTERVALS * h.sizing.interval, "metrics node b down")
    errors = (await asyncio.to_thread(agent.by_target, "vmagent_remotewrite_errors_total"))[1]
    after = await collector.scrape() or {}
    acked = after.get("enoc_collector_acked_total", 0) - before.get("enoc_collector_acked_total", 0)
    published = len(tap.metrics) - published_before
    sunk = 'enoc_collector_sink_points_written_total{sink="pair"}'
    to_vmagent = after.get(sunk, 0) - before.get(sunk, 0)
    await asyncio.to_thread(node.start)
    back_at = time.monotonic()
    # b has caught up when it holds what was published while it was down: every retrying
    # vmagent queue has delivered (its backoff reaches a minute), before the accounting
    before_back, _twice = published_points(list(tap.metrics.values()))
    lagging = -1
    while time.monotonic() < back_at + 90 + 5 * h.sizing.interval:
        landed = await asyncio.to_thread(export_points, node.url)
        lagging = count_points(before_back, *landed).lost
        if lagging == 0:
            break
        h.say(f"metrics node b back, {lagging} points still to come from vmagent")
        await asyncio.sleep(1)
    caught_up = time.monotonic() - back_at
    # recovery: from the restart to the first export that found every point on b (one
    # export a second: it is late by up to that and the export's own time)
    h.recovery_s = round(caught_up, 2) if lagging == 0 else None
    h.mark()
    if lagging:
        h.failures.append(
            f"node b still lacks {lagging} points {caught_up:.0f} s after its restart"
        )
    h.notes.append(
        f"node b had what it missed {caught_up:.1f} s after its restart; it was stopped "
        f"for {back_at - down_at:.1f} s ({OUTAGE_INTERVALS} "
        f"intervals): {published} metrics messages published meanwhile, {acked:.0f} "
        f"acknowledgements by the collector, {to_vmagent:.0f} points written to vmagent, "
        f"{errors:.0f} vmagent writes to b failed"
    )

    def check(acc: Accounting) -> list[str]:
        out = [] if errors > 0 else ["vmagent never failed a write to b: the outage was missed"]
        # one interval's messages may be in flight when the outage ends
        if acked < published - h.sizing.devices or to_vmagent <= 0:
            out.append(f"the collector waited for node b: {acked:.0f} of {published} acked")
        sent, _twice = published_points(tap.metrics.values())
        for name, one in pair.nodes.items():
            counted = count_points(sent, *export_points(one.url))
            h.notes.append(f"node {name}: {counted.written} of {counted.published} points")
            for n, what in (
                (counted.lost, "lost"),
                (counted.wrong, "wrong"),
                (counted.duplicated, "duplicated"),
            ):
                if n:
                    out.append(f"node {name}: {n} points {what} ({counted.examples[:2]})")
        return out

    return Plan([], check)
