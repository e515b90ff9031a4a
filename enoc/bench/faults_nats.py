"""The drills of `enoc bench faults` on a NATS cluster (`testbed.drills_nats.NatsHarness`):
`broker-node-lost` kills (SIGKILL) the node an agent is connected to, `collector-replica-lost`
kills one of two collector replicas sharing the stream's consumers. Both under load, both
accounted as every drill is: 0 points lost, 0 duplicates, every event committed. Each
sets the harness's `recovery_s` (what `enoc bench scale --drills` reports). Their own
module, so faults.py stays the drills' common frame.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from testbed.drills import Accounting, Harness
from testbed.drills_accounting import Expect
from testbed.drills_nats import NatsHarness

if TYPE_CHECKING:
    from enoc.bench.faults import Plan


def _nats(h: Harness) -> NatsHarness:
    if not isinstance(h, NatsHarness):
        raise TypeError("this drill runs on the NATS rig (DrillSpec.rig)")
    return h


async def broker_node_lost(h: Harness) -> Plan:
    """The NATS node a site's agent is connected to killed (SIGKILL) under load and
    brought back 5 intervals later; a link fails and recovers meanwhile."""
    from enoc.bench.faults import OUTAGE_INTERVALS, Plan  # it imports this module

    n = _nats(h)
    assert n.tap is not None
    tap, rig = n.tap, n.sites[0]
    device, if_index = n.fault_target(rig.name)
    index = n.node_of(rig)
    if index is None:
        raise RuntimeError(f"{rig.agent_id} is connected to no NATS node")
    node = n.cluster.nodes[index]
    others = {r.agent_id: n.node_of(r) for r in n.sites[1:]}
    sent_before = max((seq for a, seq in tap.metrics if a == rig.agent_id), default=0)
    await asyncio.to_thread(n.cluster.kill, index)
    killed_at, killed_wall = time.monotonic(), time.time()
    n.inject(device, {"kind": "link_down", "ifIndex": if_index})
    moved_to: int | None = None
    recovered: float | None = None
    deadline = killed_at + OUTAGE_INTERVALS * n.sizing.interval
    cleared = False
    while time.monotonic() < deadline or recovered is None:
        if recovered is None:
            fresh = [
                key
                for key, message in tap.metrics.items()
                if key[0] == rig.agent_id and key[1] > sent_before and message.sent > killed_wall
            ]
            if fresh:
                recovered = time.monotonic() - killed_at
                moved_to = n.node_of(rig)
        if not cleared and time.monotonic() > killed_at + 2 * n.sizing.interval:
            n.clear(device)
            cleared = True
        if time.monotonic() > killed_at + 60 + 10 * n.sizing.interval:
            break  # never recovered: the accounting says what was lost
        n.say(f"node {node.server_name} killed, {device} if:{if_index} down")
        await asyncio.sleep(0.1)
    if not cleared:
        n.clear(device)
    # back on its ports with its store; not waited for until current (its replicas catch
    # up with the stream while the fleet goes on: more than a minute on a loaded machine)
    await asyncio.to_thread(node.start)
    # A gateway that cannot store a PUBLISH while the stream's leader is re-elected closes
    # that agent's connection after 4 s: an abnormal end, so it publishes the agent's
    # last will; the agent is back through another node within seconds, so the collector
    # opens agent_offline only for an agent the tap heard nothing from within the grace
    # (and then from the will on, resolved by its birth).
    grace = float(n.will_grace.rstrip("s"))
    willed = sorted(
        r.name
        for r in n.sites
        if any(
            t > killed_wall
            and not any(t < back <= t + grace for back in tap.online.get(r.agent_id, []))
            for t in tap.offline.get(r.agent_id, [])
        )
    )
    n.mark()
    n.recovery_s = round(recovered, 2) if recovered is not None else None
    names = [node.server_name for node in n.cluster.nodes]
    where = names[moved_to] if moved_to is not None else "?"
    spread = {a: names[i] if i is not None else "-" for a, i in others.items()}
    n.notes.append(
        f"node {node.server_name}, which {rig.agent_id} was connected to, killed with SIGKILL "
        f"under load and restarted {time.monotonic() - killed_at:.1f} s later; the agent's "
        f"first metrics message polled after the kill reached the cluster "
        f"{recovered if recovered is not None else float('nan'):.2f} s after it, through "
        f"node {where}; the other agents were on nodes "
        f"{spread}"
    )

    def check(acc: Accounting) -> list[str]:
        current = node.healthy()
        n.notes.append(
            f"node {node.server_name} {'was' if current else 'was not yet'} current again "
            "(its /healthz) at the end"
        )
        n.notes.append(
            f"copies of a message the cluster delivered twice (re-sent by an agent whose "
            f"PUBACK never came, or redelivered to the tap): {tap.redelivered}"
        )
        if recovered is None:
            return [f"{rig.agent_id} published nothing new after its node was killed"]
        if moved_to == index:
            return [f"{rig.agent_id} was back on the killed node before it published again"]
        return []

    if willed:
        n.notes.append(
            f"the last will of the agents of {', '.join(willed)} was published during the "
            f"loss (a gateway closed their connection) and no birth followed within the "
            f"{grace:g} s grace: agent_offline, resolved by their birth"
        )
    expected = [Expect("link", rig.name, device, f"if:{if_index}", suppressed=None)]
    expected += [Expect("agent_offline", s, resource=f"agent:{n.rig(s).agent_id}") for s in willed]
    return Plan(expected, check)


async def collector_replica_lost(h: Harness) -> Plan:
    """One of two collector replicas sharing the NATS consumers killed (SIGKILL) while it
    holds unacknowledged messages (frozen first until it does: a replica writes within
    milliseconds, so a kill at a random moment mostly finds it holding nothing); the
    other takes its share and, after `ack_wait`, what it held. Not restarted."""
    n = _nats(h)
    from enoc.bench.faults import Plan  # it imports this module

    if not n.others:
        raise RuntimeError("this drill needs two collector replicas")
    victim, survivor = n.others[0], n.collectors[0]
    site = n.sites[0].name
    device, if_index = n.fault_target(site)
    await victim.scrape()
    acked_by_victim = victim.counters.get("enoc_collector_acked_total", 0.0)
    pending = await n.freeze_holding(victim, survivor, 10 * n.sizing.interval)
    await n.kill_frozen(victim)
    killed_at = time.monotonic()
    delivered = {lane: (await n.consumer_state(lane))[0] for lane in ("metrics", "events")}
    n.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await n.intervals(1, f"{victim.name} killed, {device} if:{if_index} down")
    n.clear(device)
    ack_wait = n.ack_wait
    within = ack_wait + 30 + 5 * n.sizing.interval
    took = await n.until_acknowledged(delivered, within - (time.monotonic() - killed_at))
    recovered = time.monotonic() - killed_at if took is not None else None
    await n.until(killed_at + 2 * n.sizing.interval, f"{victim.name} killed, link back up")
    n.mark()
    n.recovery_s = round(recovered, 2) if recovered is not None else None
    n.notes.append(
        f"{victim.name} frozen (SIGSTOP) until it held {pending} messages of the metrics "
        f"consumer unacknowledged, then killed with SIGKILL (after acknowledging "
        f"{acked_by_victim:.0f}); every message the "
        f"consumers had handed out by then was acknowledged "
        f"{recovered if recovered is not None else float('nan'):.1f} s later (ack_wait "
        f"{ack_wait:g} s), by {survivor.name}, which went on alone; the tap read the core "
        "NATS copies, not through an MQTT session, whose acknowledgements let nats-server "
        "2.9 delete messages the replicas still needed"
    )

    def check(acc: Accounting) -> list[str]:
        out = []
        if pending <= 0:
            out.append(f"{victim.name} held nothing unacknowledged when killed: not under load")
        if recovered is None:
            out.append(f"what {victim.name} held was not acknowledged within {within:.0f} s")
        return out

    return Plan([Expect("link", site, device, f"if:{if_index}")], check)
