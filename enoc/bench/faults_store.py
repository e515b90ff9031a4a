"""The `store-switchover` drill of `enoc bench faults`: the incident store's PostgreSQL
primary switched over by Patroni under load (`testbed.patroni.PatroniCluster`, the
collector on its multi-host URL). Its recovery time is from the switch-over's start to
the first transaction the collector committed on the new primary. Its own module, so
faults.py stays the drills' common frame.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from testbed.drills import Accounting, Harness
from testbed.drills_accounting import Expect

if TYPE_CHECKING:
    from enoc.bench.faults import Plan
    from testbed.patroni import PatroniCluster, PatroniNode


def promoted(cluster: PatroniCluster, node: PatroniNode) -> bool:
    """Whether the node's PostgreSQL has left recovery (it takes writes)."""
    import psycopg

    try:
        with psycopg.connect(cluster.node_url(node, "postgres"), connect_timeout=1) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] is False


def first_commit_after(cluster: PatroniCluster, node: PatroniNode, since: float) -> float | None:
    """When (the collector's clock) it wrote its first commit token (collector/store.py,
    `store_commits`: every writing transaction has one) at or after `since` on the node."""
    import psycopg

    try:
        with psycopg.connect(cluster.node_url(node), connect_timeout=1) as conn:
            row = conn.execute("SELECT min(at) FROM store_commits WHERE at >= %s", (since,))
            found = row.fetchone()
    except psycopg.Error:
        return None
    return float(found[0]) if found and found[0] is not None else None


async def store_switchover(h: Harness) -> Plan:
    """The incident store's PostgreSQL primary switched over (Patroni) under load; a link
    fails and recovers meanwhile. Recovery: from the switch-over's start to the first
    transaction the collector committed on the new primary."""
    from enoc.bench.faults import Plan  # it imports this module

    assert h.collector is not None
    assert h.patroni is not None
    collector, cluster = h.collector, h.patroni
    site = h.sites[0].name
    device, if_index = h.fault_target(site)
    old = await asyncio.to_thread(cluster.primary)
    candidate = next(n for n in cluster.nodes if n is not old and n.running)
    started, started_wall = time.monotonic(), time.time()
    switching = asyncio.create_task(asyncio.to_thread(cluster.switchover))
    # the link fails while the primary steps down: its event meets the switch-over
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    store_down = 0.0  # seconds /healthz said a link (the store's) was down
    # The old primary takes no write once the candidate is promoted: a token written at
    # or after this was committed on the new one (seen within a poll, 0.2 s)
    promoted_wall: float | None = None
    while not switching.done():
        if not await asyncio.to_thread(collector.healthy):
            store_down += 0.2
        if promoted_wall is None and await asyncio.to_thread(promoted, cluster, candidate):
            promoted_wall = time.time()
        await asyncio.sleep(0.2)
    new = await switching
    took = time.monotonic() - started
    promoted_wall = promoted_wall or time.time()
    # the agents' heartbeats are committed every half interval: the first comes soon
    first: float | None = None
    while first is None and time.monotonic() < started + took + 30 + 5 * h.sizing.interval:
        first = await asyncio.to_thread(first_commit_after, cluster, new, promoted_wall)
        if first is None:
            h.say(f"waiting for a commit on the new primary {new.node}")
            await asyncio.sleep(0.2)
    h.recovery_s = round(first - started_wall, 2) if first is not None else None
    h.clear(device)
    await h.until(started + max(3 * h.sizing.interval, took + 2), "link back up on the new primary")
    h.mark()
    first_text = f"{first - started_wall:.2f} s" if first is not None else "never"
    h.notes.append(
        f"PostgreSQL primary switched over from {old.node if old else '?'} to {new.node} "
        f"in {took:.1f} s (the collector unhealthy for about {store_down:.1f} s); the "
        f"collector's first commit on {new.node} {first_text} after the switch-over began; "
        f"{device} if:{if_index} went down meanwhile, up after"
    )

    def check(acc: Accounting) -> list[str]:
        resolved = collector.total("enoc_collector_store_commits_resolved_total")
        rerun = collector.total("enoc_collector_store_commits_rerun_total")
        failed = collector.total('enoc_collector_handler_errors_total{kind="EventsMessage"}')
        failed += collector.total('enoc_collector_handler_errors_total{kind="StatusMessage"}')
        h.notes.append(
            f"{failed:.0f} commits failed during the switch-over and were redelivered; "
            f"{resolved:.0f} COMMITs without answer were found committed, {rerun:.0f} rerun"
        )
        return [] if first is not None else [f"the collector committed nothing on {new.node}"]

    return Plan([Expect("link", site, device, f"if:{if_index}")], check)
