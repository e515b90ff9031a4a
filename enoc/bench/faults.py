"""`enoc bench faults`: fault drills that break one thing at a time and account for every
point and event.

Each drill starts a steady fleet on loopback (simulated devices -> one real
`enoc agent` per site, each behind a WAN link that can be cut -> real
Mosquitto -> a real `enoc collector` -> real VictoriaMetrics and an SQLite or
PostgreSQL incident store; see `testbed.drills`), breaks one thing, heals
it, waits until the fleet has recovered, and then accounts:

- points *published* (what reached the broker), *written* (in the database
  with the published value), *lost*, *duplicated* (seen twice by a query);
  *redelivered* are metrics messages the collector got again after a restart
  (at-least-once delivery), whose points the database merged: reported, not a fault;
- events published against those the incident store committed;
- incidents opened and resolved against what the faults dictate.

Every drill expects zero points lost, zero duplicates and exactly the
incidents its faults dictate. Time scales with the poll interval: one
interval stands for one production minute (the agent's default interval is
60 s), so "30 minutes of WAN partition" is 30 intervals and the collector's
ten-minute flap window is ten intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from enoc.bench import faults_metrics, faults_nats, faults_store
from enoc.bench.common import add_results_argument, machine, print_header, progress, write_result
from testbed.drills import Accounting, Harness
from testbed.drills_accounting import Expect, incident_label
from testbed.drills_nats import NatsHarness
from testbed.drills_procs import Say, Sizing

SIZES: dict[str, Sizing] = {
    # small: the test suite's fleet, small enough to run every drill there
    "small": Sizing(devices=6, sites=2, interfaces=4, interval=1.0),
    # full: the benchmark's fleet (docs/performance.md has its run time)
    "full": Sizing(devices=48, sites=4, interfaces=48, interval=5.0),
}
OUTAGE_INTERVALS = 5  # broker down, InfluxDB down
PARTITION_MINUTES = 30  # the WAN partition, in production minutes (= poll intervals)
FLAP_MINUTES = 10  # how long the device flaps
FLAP_PERIOD_S = 5.0  # "every few seconds", in production seconds
MIN_FLAP_PERIOD = 0.25  # the simulator toggles at most every 0.2 s; keep a margin
# The garbage drill: the simulator's garbage modes in turn (intervals each). Well-formed
# answers with garbage values first (the device answers: reachable), then answers no client
# can take (the device is unreachable after the agent's unreachable_after = 3 polls).
GARBAGE_PHASES = (("wrong_type", 3), ("absurd", 3), ("truncated", 4), ("request_id", 3))
UNDECODABLE = ("truncated", "request_id")
GARBAGE_INTERVALS = sum(count for _mode, count in GARBAGE_PHASES)


@dataclass
class Plan:
    """What a drill's faults dictate, and what it noted on the way."""

    expected: list[Expect]
    check: Callable[[Accounting], list[str]] | None = None


Drill = Callable[[Harness], Awaitable[Plan]]


@dataclass(frozen=True)
class DrillSpec:
    title: str
    run: Drill
    store: str = "sqlite"
    metrics_pair: bool = False  # also vmagent before two VictoriaMetrics nodes
    rig: Callable[..., Harness] = Harness  # the fleet: Mosquitto's, or a NATS cluster's


@dataclass
class DrillResult:
    name: str
    title: str
    status: str  # PASS, FAIL, ERROR
    wall_s: float = 0.0
    recovery_s: float | None = None  # fault to service again, for the drills that measure it
    figures: dict[str, Any] = field(default_factory=dict)  # Accounting.figures(); none on ERROR
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str) -> Any:
        """One of the accounting's figures; 0 (or nothing) for a drill that ended in error."""
        return self.figures.get(name, 0)

    def as_json(self) -> dict[str, Any]:
        """The drill's JSON: its figures beside its name, status, problems and notes."""
        plain = asdict(self)
        return {**plain.pop("figures"), **plain}

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "ERROR")


# ------------------------------------------------------------------ the drills


def offline(h: Harness, site: str) -> Expect:
    """The site incident of an agent the broker lost (its last will)."""
    return Expect("agent_offline", site, resource=f"agent:{h.rig(site).agent_id}")


async def broker_down(h: Harness) -> Plan:
    """Mosquitto stopped for 5 poll intervals; a link fails and comes back meanwhile."""
    site = h.sites[0].name
    device, if_index = h.fault_target(site)
    await h.broker_stop()
    down_at = time.monotonic()
    await h.intervals(1, "broker down")
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.intervals(2, f"broker down, {device} if:{if_index} down")
    h.clear(device)
    await h.until(down_at + OUTAGE_INTERVALS * h.sizing.interval, "broker down, link back up")
    await h.broker_start()
    h.mark()
    h.notes.append(
        f"Mosquitto stopped for {time.monotonic() - down_at:.1f} s ({OUTAGE_INTERVALS} "
        f"intervals); {device} if:{if_index} went down and up while it was away"
    )
    h.notes.append(
        "Mosquitto publishes every client's last will when it shuts down, so each site gets "
        "its agent_offline incident, resolved by the agent's birth message after the restart; "
        "whether the link incident lands under it depends on when the collector got the will"
    )

    def check(acc: Accounting) -> list[str]:
        assert h.tap is not None
        h.notes.append(f"largest spool depth reported after the outage: {dict(h.tap.max_spool)}")
        # Each agent reaches the broker through its WAN relay, which accepts and closes
        # while the broker is down: that says nothing of the broker's MQTT version.
        return [
            f"{agent} came back over MQTT 3.1.1 (protocol {level}), not 5"
            for agent, (_at, beat) in sorted(h.tap.heartbeats.items())
            if (level := beat.health.get("mqtt_protocol")) != 5
        ]

    expected = [offline(h, rig.name) for rig in h.sites]
    expected.append(Expect("link", site, device, f"if:{if_index}"))
    return Plan(expected, check)


async def wan_partition(h: Harness) -> Plan:
    """One site's WAN link cut for 30 production minutes; its agent spools and replays."""
    rig = h.sites[0]
    device, if_index = h.fault_target(rig.name)
    minutes = PARTITION_MINUTES
    await rig.link.cut()
    cut_at = time.monotonic()
    cut_wall = time.time()
    await h.intervals(2, f"{rig.name} partitioned")
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.intervals(3, f"{rig.name} partitioned, {device} if:{if_index} down")
    h.clear(device)
    await h.until(cut_at + h.sizing.seconds(minutes), f"{rig.name} partitioned")
    await rig.link.heal()
    healed_wall = time.time()
    h.mark()
    h.notes.append(
        f"{rig.name}'s WAN link cut for {time.monotonic() - cut_at:.0f} s = {minutes} poll "
        f"intervals of {h.sizing.interval:g} s, i.e. {minutes} minutes at the production "
        f"interval of 60 s; a link of {device} failed and recovered during it"
    )

    def check(acc: Accounting) -> list[str]:
        assert h.tap is not None
        during = [
            key
            for key, message in h.tap.metrics.items()
            if key[0] == rig.agent_id and cut_wall < message.sent < healed_wall
        ]
        replayed = [k for k in during if h.tap.arrived[("metrics", *k)] >= healed_wall]
        h.notes.append(
            f"{len(during)} metrics messages polled during the partition reached the broker "
            f"after it healed ({len(replayed)} replayed from the spool)"
        )
        expected_min = (minutes - 2) * len(rig.devices)
        if len(replayed) < expected_min:
            return [f"only {len(replayed)} messages replayed, expected >= {expected_min}"]
        return []

    return Plan(
        [
            offline(h, rig.name),
            # opened while the site was unknown: suppressed under the site incident
            Expect("link", rig.name, device, f"if:{if_index}", suppressed=True),
        ],
        check,
    )


async def agent_kill(h: Harness) -> Plan:
    """kill -9 of a site's agent while its WAN link is down; a new agent replays the spool."""
    from testbed.drills_accounting import read_spool

    rig = h.sites[0]
    device, if_index = h.fault_target(rig.name)
    await rig.link.cut()
    await h.intervals(1, f"{rig.name} partitioned")
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.intervals(2, f"{rig.name} partitioned, {device} if:{if_index} down")
    await rig.agent.kill9()
    metrics = await asyncio.to_thread(read_spool, rig.spool / "metrics")
    events = await asyncio.to_thread(read_spool, rig.spool / "events")
    h.clear(device)
    await h.intervals(1, f"{rig.name}'s agent killed, link back up")
    await h.start_agent(rig)
    await h.intervals(2, f"{rig.name} partitioned, agent restarted")
    await rig.link.heal()
    h.mark()
    h.notes.append(
        f"{rig.agent_id} killed with SIGKILL {3 * h.sizing.interval:g} s into a WAN partition, "
        f"holding {len(metrics.pending)} metrics and {len(events.pending)} events messages in "
        "its spool; restarted while the link was still down, then the link healed"
    )

    def check(acc: Accounting) -> list[str]:
        if not metrics.pending or not events.pending:
            return ["the killed agent had nothing spooled: the drill proved nothing"]
        return []

    return Plan(
        [offline(h, rig.name), Expect("link", rig.name, device, f"if:{if_index}", suppressed=True)],
        check,
    )


async def collector_kill(h: Harness) -> Plan:
    """kill -9 of the collector with messages in flight; the broker redelivers them."""
    assert h.collector is not None
    collector = h.collector
    site = h.sites[0].name
    device, if_index = h.fault_target(site)
    deadline = time.monotonic() + 5 * h.sizing.interval
    pending = buffered = 0.0
    while time.monotonic() < deadline:
        counters = await collector.scrape() or {}
        pending = counters.get("enoc_collector_metrics_pending", 0.0)
        buffered = counters.get("enoc_collector_write_buffer_points", 0.0)
        if pending > 0 and buffered > 0:
            break
        h.say("waiting for the collector to hold unacknowledged messages")
        await asyncio.sleep(0.02)
    written_before = collector.counters.get("enoc_collector_points_written_total", 0.0)
    await collector.kill9()
    killed_at = time.monotonic()
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.intervals(1, f"collector killed, {device} if:{if_index} down")
    h.clear(device)
    await h.until(killed_at + 2 * h.sizing.interval, "collector killed, link back up")
    await h.restart_collector()
    h.mark()
    h.notes.append(
        f"the collector was killed with SIGKILL holding {pending:.0f} received, unacknowledged "
        f"metrics messages and {buffered:.0f} points not yet written (after writing "
        f"{written_before:.0f}); it was back {time.monotonic() - killed_at:.1f} s later"
    )

    def check(acc: Accounting) -> list[str]:
        if pending <= 0:
            return ["the collector held nothing unacknowledged when killed: not under load"]
        return []

    return Plan([Expect("link", site, device, f"if:{if_index}")], check)


async def influx_down(h: Harness) -> Plan:
    """VictoriaMetrics (the InfluxDB v2 write API) down for 5 poll intervals."""
    assert h.collector is not None
    collector = h.collector
    await h.vm_stop()
    down_at = time.monotonic()
    await h.until(down_at + OUTAGE_INTERVALS * h.sizing.interval, "VictoriaMetrics down")
    counters = await collector.scrape() or {}
    retries = counters.get("enoc_collector_write_retries_total", 0.0)
    pending = counters.get("enoc_collector_metrics_pending", 0.0)
    await h.vm_start()
    h.mark()
    h.notes.append(
        f"VictoriaMetrics stopped for {time.monotonic() - down_at:.1f} s ({OUTAGE_INTERVALS} "
        f"intervals): {retries:.0f} write retries, {pending:.0f} metrics messages held "
        "unacknowledged by the collector at the end, the rest queued in the broker"
    )

    def check(acc: Accounting) -> list[str]:
        return [] if retries > 0 else ["the collector never retried a write: the outage was missed"]

    return Plan([], check)


async def store_restart(h: Harness) -> Plan:
    """PostgreSQL (the incident store) restarted; a link fails and recovers meanwhile."""
    assert h.collector is not None
    collector = h.collector
    site = h.sites[0].name
    device, if_index = h.fault_target(site)
    # A restart takes seconds whatever the poll interval; 5 s at least outlasts the
    # store's own retries (about 1.5 s), so commits really fail and are redelivered.
    down_for = max(3 * h.sizing.interval, 5.0)
    await h.store_stop()
    down_at = time.monotonic()
    down_wall = time.time()
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.until(down_at + down_for / 2, f"PostgreSQL down, {device} if:{if_index} down")
    h.clear(device)
    await h.until(down_at + down_for, "PostgreSQL down, link back up")
    await h.store_start()
    up_wall = time.time()
    h.mark()
    h.notes.append(
        f"PostgreSQL shut down (fast) for {time.monotonic() - down_at:.1f} s; "
        f"{device} if:{if_index} went down and up while it was away"
    )

    def check(acc: Accounting) -> list[str]:
        failed = collector.total('enoc_collector_handler_errors_total{kind="EventsMessage"}')
        failed += collector.total('enoc_collector_handler_errors_total{kind="StatusMessage"}')
        rows = h.query_store("SELECT at, received FROM events")
        held = [r for r in rows if down_wall <= float(r[0]) < up_wall]
        late = [r for r in held if float(r[1]) >= up_wall]
        h.notes.append(
            f"{len(held)} events happened while the store was down, {len(late)} of them "
            f"committed after it came back; {failed:.0f} commits failed and were redelivered"
        )
        return [] if late else ["no event waited for the store: the outage was missed"]

    return Plan([Expect("link", site, device, f"if:{if_index}")], check)


async def flapping(h: Harness) -> Plan:
    """A link flapping every few seconds for ten minutes: one incident, flapping, settled."""
    rig = h.sites[0]
    device, if_index = h.fault_target(rig.name)
    period = max(MIN_FLAP_PERIOD, h.sizing.seconds(FLAP_PERIOD_S / 60))
    started = time.time()
    h.inject(device, {"kind": "flap", "ifIndex": if_index, "period": period})
    await h.intervals(FLAP_MINUTES, f"{device} if:{if_index} flapping every {period:g} s")
    h.clear(device)
    cleared = time.time()
    h.mark()
    h.notes.append(
        f"{device} if:{if_index} flapped every {period:g} s for "
        f"{h.sizing.seconds(FLAP_MINUTES):g} s ({FLAP_MINUTES} min at the production scale of "
        f"a minute per interval; every {FLAP_PERIOD_S:g} s scaled"
        + (", floored at the simulator's pace" if period == MIN_FLAP_PERIOD else "")
        + f"); flap window {h.sizing.seconds(10):g} s, {6} transitions mark flapping"
    )

    def check(acc: Accounting) -> list[str]:
        assert h.tap is not None
        events = [
            e
            for m in h.tap.events.values()
            for e in m.events
            if e.device == device and e.resource == f"if:{if_index}"
        ]
        out: list[str] = []
        links = [i for i in acc.incidents if i["kind"] == "link"]
        h.notes.append(f"{len(events)} link transitions published, {len(links)} link incident(s)")
        if len(events) < 2 * 6:
            out.append(f"only {len(events)} transitions: too few to call it flapping")
        for incident in links:
            timeline = incident.get("timeline", [])
            recorded = [t for t in timeline if t["what"] == "event"]
            if len(recorded) != len(events):
                out.append(f"{len(recorded)} of {len(events)} transitions on the incident")
            resolved = incident.get("resolved") or 0
            if resolved < cleared - 1:
                out.append("the incident was resolved before the link settled")
            flagged = [t["at"] for t in timeline if t["what"] == "flapping"]
            if flagged and flagged[0] < started:
                out.append("marked flapping before the flapping began")
        return out

    return Plan([Expect("link", rig.name, device, f"if:{if_index}", flapping=True)], check)


async def garbage(h: Harness) -> Plan:
    """A device answering garbage in every way the simulator knows, one after the other,
    while one of its links is down; then it answers well again."""
    rig = h.sites[0]
    device, if_index = h.fault_target(rig.name)
    sim_device = h.sim.device(device)
    assert h.tap is not None
    tap = h.tap
    h.inject(device, {"kind": "link_down", "ifIndex": if_index})
    await h.intervals(2, f"{device} if:{if_index} down")
    beat = tap.heartbeats.get(rig.agent_id)
    before = dict(beat[1].health) if beat else {}
    phases: list[tuple[str, float, float]] = []  # mode, wall start, wall end
    for mode, count in GARBAGE_PHASES:
        h.inject(device, {"kind": "garbage", "mode": mode})
        started = time.time()
        await h.intervals(count, f"{device} answering garbage ({mode}), if:{if_index} down")
        phases.append((mode, started, time.time()))
    h.clear(device)
    cleared = time.time()
    h.mark()
    garbled = dict(h.sim.stats.garbled)
    spans = ", ".join(f"{mode} {count}" for mode, count in GARBAGE_PHASES)
    h.notes.append(
        f"{device} answered garbage for {GARBAGE_INTERVALS} poll intervals "
        f"({spans}) while its link if:{if_index} was down, then answered well again; the "
        f"simulator garbled {sum(garbled.values())} answers ({garbled})"
    )
    interval = h.sizing.interval
    undecodable_polls = sum(c - 1 for m, c in GARBAGE_PHASES if m in UNDECODABLE)
    bad_polls = undecodable_polls + sum(c - 1 for m, c in GARBAGE_PHASES if m == "wrong_type")

    def check(acc: Accounting) -> list[str]:
        out: list[str] = []
        # the garbage reached the agent: its heartbeat counted it
        beat = tap.heartbeats.get(rig.agent_id)
        after = dict(beat[1].health) if beat else {}
        rise = {
            k: _number(after, k) - _number(before, k)
            for k in ("snmp_bad", "polls_failed", "snmp_timeouts", "polls_ok")
        }
        h.notes.append(
            f"{rig.agent_id}'s heartbeat over the drill: "
            + ", ".join(f"{k} +{v:.0f}" for k, v in rise.items())
        )
        if not before or not after:
            out.append("no heartbeat of the agent before or after the garbage")
        if rise["snmp_bad"] < bad_polls:
            out.append(f"snmp_bad rose by {rise['snmp_bad']:.0f}, expected >= {bad_polls}")
        if rise["polls_failed"] < undecodable_polls:
            out.append(
                f"polls_failed rose by {rise['polls_failed']:.0f}, expected >= {undecodable_polls}"
            )
        # logged once per kind, counted after that
        log = rig.agent.log.read_text(errors="replace")
        for kind in ("malformed", "wrong_type"):
            logged = log.count(f"snmp {kind} (logged once")
            if logged != 1:
                out.append(f"the agent logged {logged} 'snmp {kind}' warnings, expected 1")
        # what the agent published for the device, phase by phase
        samples = [s for m in tap.metrics.values() for s in m.samples if s.device == device]
        for mode, start, end in phases:
            inside = [s for s in samples if start <= s.ts < end - interval]
            if not inside:
                out.append(f"no poll of {device} inside the {mode} phase")
            answered = mode not in UNDECODABLE
            wrong = [s for s in inside if bool(s.fields.get("reachable")) != answered]
            if wrong:
                out.append(
                    f"{len(wrong)} polls of {device} during {mode} say reachable="
                    f"{int(not answered)}"
                )
            if mode == "wrong_type" and any(i.fields for s in inside for i in s.interfaces):
                out.append(f"{device} published interface values from strings")
        late = [s for s in samples if s.ts > cleared + interval and not s.fields.get("reachable")]
        if late:
            out.append(f"{len(late)} polls of {device} unreachable after the garbage stopped")
        impossible = 0
        for sample in samples:
            for iface in sample.interfaces:
                octets = sim_device.interface(iface.if_index).speed_mbps * 1e6 / 8
                for name, value in iface.fields.items():
                    limit = 8 * octets if name.endswith("_bps") else octets / 64
                    if name.endswith(("_bps", "_per_s")) and float(value) > limit * 1.05:
                        impossible += 1
        if impossible:
            out.append(f"{impossible} rates above what {device}'s interfaces can carry")
        # every other device kept flowing
        start, end = phases[0][1], phases[-1][2]
        others = {d for r in h.sites for d in r.devices if d != device}
        polled: dict[str, int] = dict.fromkeys(others, 0)
        down = 0
        for m in tap.metrics.values():
            for s in m.samples:
                if s.device in others:
                    down += 0 if s.fields.get("reachable") else 1
                    polled[s.device] += 1 if start <= s.ts < end else 0
        expected = int((end - start) / interval) - 2
        starved = sorted(d for d, n in polled.items() if n < expected)
        if down or starved:
            out.append(f"other devices suffered: {down} failed polls, too few polls of {starved}")
        h.notes.append(
            f"{device}: {len(samples)} polls published, none with a rate above its interfaces' "
            f"capacity; {len(others)} other devices: every poll answered, at least "
            f"{min(polled.values())} each during the garbage"
        )
        # the incidents changed when the faults did, not when the garbage said so: one
        # transition down and one up each, the way up after the clear
        undecodable_at = next(start for m, start, _e in phases if m in UNDECODABLE)
        for incident in acc.incidents:
            if incident["device"] != device:
                continue
            label = incident_label(incident)
            timeline = incident.get("timeline", [])
            changes = [(t["state"], float(t["at"])) for t in timeline if t["what"] == "event"]
            if [state for state, _at in changes] != ["down", "up"]:
                out.append(f"{label}: transitions {[c[0] for c in changes]}, expected down, up")
                continue
            if changes[1][1] < cleared - 0.5:
                out.append(f"{label} came back while the device still sent garbage")
            if incident["kind"] == "reachability" and changes[0][1] < undecodable_at - interval:
                out.append("the device was reported unreachable while it answered")
        return out

    return Plan(
        [
            # down before the garbage, up with the clear: strings are neither up nor down
            Expect("link", rig.name, device, f"if:{if_index}", suppressed=False),
            # opened by the answers no client can take, resolved by the first good answer
            Expect("reachability", rig.name, device, "device", suppressed=False),
        ],
        check,
    )


def _number(health: dict[str, Any], key: str) -> float:
    value = health.get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


DRILLS: dict[str, DrillSpec] = {
    "broker-down": DrillSpec("broker down for 5 poll intervals", broker_down),
    "wan-partition": DrillSpec("WAN partition of one site for 30 minutes", wan_partition),
    "agent-kill": DrillSpec("agent kill -9 during an outage", agent_kill),
    "collector-kill": DrillSpec("collector kill -9 under load", collector_kill),
    "influx-down": DrillSpec("InfluxDB (VictoriaMetrics) down for 5 intervals", influx_down),
    "store-restart": DrillSpec(
        "incident store (PostgreSQL) restart", store_restart, store="postgresql"
    ),
    "metrics-node-lost": DrillSpec(
        "one of two metrics nodes behind vmagent down for 5 intervals",
        faults_metrics.metrics_node_lost,
        metrics_pair=True,
    ),
    "store-switchover": DrillSpec(
        "incident store (PostgreSQL under Patroni) primary switch-over",
        faults_store.store_switchover,
        store="patroni",
    ),
    "broker-node-lost": DrillSpec(
        "the NATS node an agent is connected to killed under load",
        faults_nats.broker_node_lost,
        rig=NatsHarness,
    ),
    "collector-replica-lost": DrillSpec(
        "one of two collector replicas on NATS killed under load",
        faults_nats.collector_replica_lost,
        store="postgresql",
        rig=partial(NatsHarness, replicas=2),
    ),
    "flapping": DrillSpec("a device flapping every few seconds for ten minutes", flapping),
    "garbage": DrillSpec("a device returning garbage", garbage),
}


async def run_drill(
    name: str, sizing: Sizing, *, say: Say = progress, keep_logs: Path | None = None
) -> DrillResult:
    """One drill on a fleet of its own; never raises (an error is the drill's result)."""
    spec = DRILLS[name]
    started = time.monotonic()
    result = DrillResult(name, spec.title, "ERROR")
    with tempfile.TemporaryDirectory(prefix=f"enoc-drill-{name}-") as tmp:
        harness = spec.rig(
            Path(tmp), sizing, store=spec.store, say=say, label=name, metrics_pair=spec.metrics_pair
        )
        try:
            async with harness as h:
                plan = await spec.run(h)
                accounting = await h.finish(plan.expected)
                extra = plan.check(accounting) if plan.check else []
            result.figures = accounting.figures()
            result.recovery_s = harness.recovery_s
            result.problems = [*h.failures, *extra, *accounting.problems(spool_slack(sizing))]
            result.status = "FAIL" if result.problems else "PASS"
        except Exception as exc:
            result.problems = [*harness.failures, f"{type(exc).__name__}: {exc}"]
        result.notes = list(harness.notes)
        if result.failed and keep_logs is not None:
            harness.keep_logs(keep_logs / f"faults-{name}-logs")
            result.notes.append(f"logs kept in {keep_logs / f'faults-{name}-logs'}")
    result.wall_s = round(time.monotonic() - started, 1)
    return result


def spool_slack(sizing: Sizing) -> int:
    """Messages an agent may leave in its spool when SIGTERM stops it mid-interval."""
    return sizing.devices


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drills",
        default="all",
        help=f"comma-separated drills, or all: {', '.join(DRILLS)}",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="small: the test suite's fleet and times; full: the benchmark's",
    )
    parser.add_argument("--devices", type=int, help="simulated devices (all sites)")
    parser.add_argument("--sites", type=int, help="sites, one agent each")
    parser.add_argument("--interfaces", type=int, help="interfaces per device")
    parser.add_argument(
        "--interval", type=float, help="poll interval, s (one interval = one production minute)"
    )
    add_results_argument(parser)


def sizing_from(args: argparse.Namespace) -> Sizing:
    base = SIZES[args.size]
    sizing = Sizing(
        devices=args.devices or base.devices,
        sites=args.sites or base.sites,
        interfaces=args.interfaces or base.interfaces,
        interval=args.interval or base.interval,
    )
    if sizing.sites < 2 or sizing.devices < 2 * sizing.sites:
        raise ValueError("the drills need at least 2 sites of at least 2 devices")
    if sizing.interval < 1:
        raise ValueError("--interval must be at least 1 s")
    return sizing


def chosen(text: str) -> list[str]:
    names = list(DRILLS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise ValueError(f"unknown drill(s) {', '.join(unknown)}; choose from {', '.join(DRILLS)}")
    return names


def run(args: argparse.Namespace) -> int:
    try:
        names = chosen(args.drills)
        sizing = sizing_from(args)
    except ValueError as exc:
        print(f"enoc bench faults: {exc}", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run_all(names, sizing, args.results))
    print_table(results, sizing)
    payload = {
        "size": args.size,
        "sizing": asdict(sizing),
        "machine": machine(),
        "scale": scale_text(sizing),
        "drills": [r.as_json() for r in results],
    }
    write_result(args.results, "faults", payload)
    return 1 if any(r.failed for r in results) else 0


async def run_all(names: list[str], sizing: Sizing, results: Path) -> list[DrillResult]:
    out = []
    for n, name in enumerate(names, 1):
        progress(f"drill {n} of {len(names)}: {name}")
        result = await run_drill(name, sizing, keep_logs=results)
        progress("")
        print(
            f"{name}: {result.status} in {result.wall_s:.0f} s"
            + (f" - {result.problems[0]}" if result.problems else ""),
            flush=True,
        )
        out.append(result)
    return out


def scale_text(sizing: Sizing) -> str:
    i = sizing.interval
    return (
        f"one poll interval ({i:g} s) stands for one production minute: broker and InfluxDB "
        f"down {OUTAGE_INTERVALS} intervals ({OUTAGE_INTERVALS * i:g} s), WAN partition "
        f"{PARTITION_MINUTES} intervals ({PARTITION_MINUTES * i:g} s = 30 min), flapping "
        f"{FLAP_MINUTES} intervals ({FLAP_MINUTES * i:g} s = 10 min) against the collector's "
        f"flap window of 10 min scaled to {10 * i:g} s, garbage {GARBAGE_INTERVALS} intervals "
        f"({GARBAGE_INTERVALS * i:g} s)"
    )


def print_table(results: list[DrillResult], sizing: Sizing) -> None:
    print(
        f"\nfleet: {sizing.devices} simulated devices x {sizing.interfaces} interfaces at "
        f"{sizing.sites} sites (one agent each), poll interval {sizing.interval:g} s"
    )
    print(f"scale: {scale_text(sizing)}\n")
    print(f"{'':66}{'pub/stored':>10} {'exp/seen':>10}")
    header = (
        f"{'drill':22} {'published':>10} {'written':>10} {'lost':>5} {'dup':>4} "
        f"{'redeliv.':>9} {'events':>10} {'incidents':>10} {'recov. s':>8}  {'result':6} "
        f"{'wall s':>6}"
    )
    print_header(header)
    for r in results:
        f = r.figure
        events = f"{f('events_published')}/{f('events_stored')}"
        incidents = f"{len(f('incidents_expected') or [])}/{len(f('incidents_seen') or [])}"
        redelivered = f"{f('redelivered'):,}" + (
            "" if r.figures.get("redelivered_exact", True) else "+"
        )
        recovery = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "-"
        print(
            f"{r.name:22} {f('published'):>10,} {f('written'):>10,} {f('lost'):>5} "
            f"{f('duplicated'):>4} {redelivered:>9} {events:>10} {incidents:>10} "
            f"{recovery:>8}  {r.status:6} {r.wall_s:>6.0f}"
        )
    print(
        "\npublished: points (lines: a device, interface or BGP peer at one poll) that reached "
        "the broker; written: in VictoriaMetrics with the published value; dup: samples a "
        "query sees twice; redeliv.: metrics messages the collector received again after a "
        "restart (at-least-once), their points rewritten and merged by the database, so not "
        "duplicates (+: at least, the collector was killed between two reads of its "
        "counters); events: published/committed to the incident store; incidents: "
        "expected/seen (each matched by kind, site, device and resource, final state, "
        "suppression and flapping); recov. s: from the fault to service again, for the "
        "drills that measure it (each drill's notes say from what to what)"
    )
    for r in results:
        print(f"\n{r.name} - {r.title}: {r.status}")
        for note in r.notes:
            print(f"  {note}")
        expected, seen = r.figure("incidents_expected") or [], r.figure("incidents_seen") or []
        if expected or seen:
            print(f"  incidents expected: {', '.join(expected) or 'none'}")
            print(f"  incidents seen:     {', '.join(seen) or 'none'}")
        for problem in r.problems:
            print(f"  FAIL: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enoc bench faults", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
