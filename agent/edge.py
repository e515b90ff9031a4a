"""State changes detected at the edge, with hysteresis.

Every monitored thing (a device's reachability, an interface's link, a BGP
session, a threshold) is a two-state value that changes only after enough
consecutive observations of the other state, so one lost packet raises
nothing. Each change becomes exactly one event, stamped with the time the new
state was first seen. A trap is authoritative at once; the poll that later
sees the same state adds nothing, and a poll that began before the trap
arrived cannot undo it (what it read may be older than the trap).

Reachability, BGP sessions and thresholds start in their good state, so one
already bad when the agent starts is reported (those are configured to work;
the collector deduplicates a repeat). An interface's link does not: the state
first seen of it (at the agent's first poll, or after a restart that lost the
saved state) is its baseline, and only a transition from up to down is news.
Unused access ports, empty optics and PON ports are down on the day the agent
first sees them, and a board of them is a board nobody reads. An interface
the operator declares monitored is the exception: down at first sight is
reported. A link that is administratively down is "off": off to down (a port
enabled with nothing plugged in) was never up either, and raises nothing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.mibgroups import Condition
from agent.mibgroups.sensors import RANK as SENSOR_RANK
from agent.mibgroups.sensors import SEVERITY as SENSOR_SEVERITY
from agent.mibgroups.sensors import THRESHOLDS
from enoc.wire import EVENT_KINDS, Event, EventKindName, Severity, Source, Value

# The state each stateful kind starts in and returns to (enoc.wire.EVENT_KINDS); reboot and
# trap events are momentary, raised as they come.
GOOD = {name: k.clearing for name, k in EVENT_KINDS.items() if k.clearing is not None}
# What a failed poll's kind means, in an unreachable event's message. A device that answers
# with garbage is not silent, and an operator chasing "no answer" would look at the wrong
# thing (routing, ACLs) instead of the device's SNMP agent.
FAILURES = {
    "timeout": "no SNMP answer",
    "undecodable": "answers undecodable",
    "malformed": "answers undecodable",
    "misaddressed": "answers to other requests",
    "deadline": "poll deadline passed",
    "wrong_digest": "SNMPv3 authentication fails (wrong digest)",
    "unknown_user": "SNMPv3 user unknown to the device",
    "decryption_error": "SNMPv3 answers do not decrypt",
    "unsupported_sec_level": "SNMPv3 security level refused",
    "dns": "its DNS name does not resolve",
    "ipv6": "an IPv6 device and no IPv6 on the agent's host",
}


@dataclass
class Confirmed:
    """A state that flips after `needed` consecutive observations of another state."""

    state: str
    candidate: str | None = None
    streak: int = 0
    first_seen: float = 0.0
    forced_at: float = 0.0  # when a trap last set the state
    quiet: bool = False  # a bad state found at first sight (or never up): not announced

    def stale(self, at: float) -> bool:
        """True for a poll that began before the last trap arrived: what it read may be
        older than the trap, and must not undo it (a flapping link would flap twice)."""
        return at < self.forced_at

    def observe(self, value: str, at: float, needed: int) -> float | None:
        """Feed one observation; return the time the change began when the state flips."""
        if value == self.state:
            self.candidate, self.streak = None, 0
            return None
        if value != self.candidate:
            self.candidate, self.streak, self.first_seen = value, 0, at
        self.streak += 1
        if self.streak < needed:
            return None
        self.state, self.candidate, self.streak = value, None, 0
        return self.first_seen

    def force(self, value: str, at: float) -> bool:
        """Set the state at once (a trap received at `at`); True when it changed."""
        changed = value != self.state
        self.state, self.candidate, self.streak = value, None, 0
        self.forced_at = max(self.forced_at, at)
        return changed


@dataclass(frozen=True)
class ThresholdRule:
    """Enter at or above `enter`, leave below `leave`, each sustained for `polls` observations."""

    metric: str
    enter: float
    leave: float
    polls: int = 3
    severity: Severity = "minor"

    def __post_init__(self) -> None:
        if self.leave > self.enter:
            raise ValueError(f"threshold {self.metric}: leave ({self.leave}) must not exceed enter")


@dataclass(frozen=True)
class SensorLimits:
    """A sensor class's limits (agent.config `sensors:`), or one sensor's own (those its
    device reports): a value at or above a `high_` limit, or at or below a `low_` one, is
    in that status, and leaves it only `hysteresis` back inside the limit."""

    high_warning: float | None = None
    high_critical: float | None = None
    low_warning: float | None = None
    low_critical: float | None = None
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        if self.hysteresis < 0:
            raise ValueError(f"hysteresis must be at least 0, got {self.hysteresis:g}")
        order = [
            (name, v)
            for name in ("low_critical", "low_warning", "high_warning", "high_critical")
            if (v := getattr(self, name)) is not None
        ]
        for (below, low), (above, high) in itertools.pairwise(order):
            if low > high:
                raise ValueError(f"{below} ({low:g}) must not exceed {above} ({high:g})")

    def judge(self, value: float, current: str) -> tuple[str, str, float]:
        """The status of `value` for a sensor now in status `current`, the limit that
        decides it and which one ("" and 0 when ok)."""
        now = SENSOR_RANK.get(current, 0)
        for status in ("critical", "warning"):
            margin = self.hysteresis if now >= SENSOR_RANK[status] else 0.0
            high = getattr(self, f"high_{status}")
            if high is not None and value >= high - margin:
                return status, f"high_{status}", high
            low = getattr(self, f"low_{status}")
            if low is not None and value <= low + margin:
                return status, f"low_{status}", low
        return "ok", "", 0.0


# Limits of the classes whose values mean the same on any device, for sensors whose
# device reports none (the defaults of agent.config `sensors:`). A temperature's is a
# board's or an inlet's; a hot ASIC has its device's own limits.
SENSOR_LIMITS: dict[str, SensorLimits] = {
    "temperature": SensorLimits(high_warning=70, high_critical=85, hysteresis=3),
    "humidity": SensorLimits(high_warning=80, high_critical=90, hysteresis=3),
    "battery": SensorLimits(low_warning=50, low_critical=25, hysteresis=5),  # charge, %
    "runtime": SensorLimits(low_warning=600, low_critical=300, hysteresis=60),  # seconds
    "load": SensorLimits(high_warning=80, high_critical=95, hysteresis=5),  # % of capacity
}


@dataclass
class EdgeSettings:
    unreachable_after: int = 3  # failed polls in a row
    reachable_after: int = 1
    link_polls: int = 1  # oper status is an exact reading: one poll confirms
    bgp_polls: int = 1
    condition_polls: int = 2  # a sensor's status: one odd reading is not a failed fan
    sensors: Mapping[str, SensorLimits] = field(default_factory=lambda: dict(SENSOR_LIMITS))
    # The defaults of agent.config.ThresholdsConfig, which the agent passes in.
    thresholds: tuple[ThresholdRule, ...] = (
        ThresholdRule("in_utilization", 90, 80),
        ThresholdRule("out_utilization", 90, 80),
        ThresholdRule("cpu", 90, 75, severity="major"),
        ThresholdRule("memory", 95, 90),
        ThresholdRule("in_errors_per_s", 10, 1, severity="warning"),
    )


def _default_ids(agent_id: str) -> Callable[[], str]:
    counter = itertools.count(1)
    prefix = f"{agent_id}-{time.time_ns():x}"
    return lambda: f"{prefix}-{next(counter)}"


@dataclass
class EdgeDetector:
    """Turns observations of one agent's devices into events."""

    agent_id: str
    settings: EdgeSettings = field(default_factory=EdgeSettings)
    new_id: Callable[[], str] | None = None
    states: dict[tuple[str, str, str], Confirmed] = field(default_factory=dict)
    links_changed: int = 0  # bumped when `links_up` changes: the agent saves it

    def __post_init__(self) -> None:
        if self.new_id is None:
            self.new_id = _default_ids(self.agent_id)
        self._rules = {r.metric: r for r in self.settings.thresholds}
        # the links in state "up", kept as they change: saving them is then a copy, not a
        # walk of every state (an agent of 2,000 devices has about 100,000)
        self._up: dict[str, set[int]] = {}

    def _mark(self, device: str, if_index: int) -> None:
        state = self.states.get((device, f"if:{if_index}", "link"))
        up = self._up.setdefault(device, set())
        if state is not None and state.state == "up":
            if if_index not in up:
                up.add(if_index)
                self.links_changed += 1
        elif if_index in up:
            up.discard(if_index)
            self.links_changed += 1

    def _state(self, device: str, resource: str, kind: EventKindName) -> Confirmed:
        key = (device, resource, kind)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = Confirmed(GOOD[kind])
        return state

    def _event(
        self,
        device: str,
        resource: str,
        kind: EventKindName,
        state: str,
        at: float,
        severity: Severity,
        message: str,
        source: Source = "poll",
        attrs: dict[str, Value] | None = None,
    ) -> Event:
        assert self.new_id is not None
        return Event(
            id=self.new_id(),
            ts=at,
            device=device,
            resource=resource,
            kind=kind,
            state=state,
            severity=severity,
            message=message,
            source=source,
            attrs=attrs or {},
        )

    def bad_states(self) -> list[list[str]]:
        """Everything announced in a bad state: what a restarted agent must still clear."""
        return [
            [device, resource, kind, state.state]
            for (device, resource, kind), state in self.states.items()
            if state.state not in (GOOD[kind], "off") and not state.quiet
        ]

    def links_up(self) -> dict[str, list[int]]:
        """The interfaces last seen up, by device: after a restart that kept them, one
        found down is a transition to announce, not a baseline."""
        return {device: sorted(up) for device, up in self._up.items() if up}

    def restore(self, saved: object, links_up: object = None) -> None:
        """Load `bad_states` and `links_up` saved by a previous run, so that its clearing
        events are still sent and its links' baseline is kept. Items of another shape
        (a damaged file) are left out."""
        for item in saved if isinstance(saved, list) else ():
            if isinstance(item, list) and len(item) == 4 and item[2] in GOOD:
                device, resource, kind, state = map(str, item)
                self.states[(device, resource, kind)] = Confirmed(state)
        for device, indexes in links_up.items() if isinstance(links_up, dict) else ():
            for if_index in indexes if isinstance(indexes, list) else ():
                if isinstance(if_index, int) and not isinstance(if_index, bool):
                    key = (str(device), f"if:{if_index}", "link")
                    self.states.setdefault(key, Confirmed("up"))
                    self._mark(str(device), if_index)

    def forget(self, device: str) -> None:
        for key in [k for k in self.states if k[0] == device]:
            del self.states[key]
        if self._up.pop(device, None):
            self.links_changed += 1

    # ---------------------------------------------------------------- observations from polls

    def reachability(
        self, device: str, answered: bool, at: float, reason: str = "timeout"
    ) -> list[Event]:
        """One poll's outcome; `reason` is the failure kind of a poll that failed (the
        SnmpError kind: timeout, undecodable, misaddressed, wrong_digest, deadline, ...)."""
        s = self.settings
        state = self._state(device, "device", "reachability")
        value = "up" if answered else "down"
        needed = s.reachable_after if answered else s.unreachable_after
        began = state.observe(value, at, needed)
        if began is None:
            return []
        if answered:
            return [
                self._event(
                    device, "device", "reachability", "up", began, "info", "answers SNMP again"
                )
            ]
        what = FAILURES.get(reason, f"polls fail ({reason})")
        return [
            self._event(
                device,
                "device",
                "reachability",
                "down",
                began,
                "critical",
                f"{what} for {needed} polls",
                attrs={"reason": reason},
            )
        ]

    def reboot(self, device: str, at: float, uptime_s: float) -> list[Event]:
        """sysUpTime went backwards: the device restarted `uptime_s` seconds before `at`."""
        return [
            self._event(
                device,
                "device",
                "reboot",
                "rebooted",
                at - uptime_s,
                "warning",
                f"restarted {uptime_s:.0f} s before the poll",
                attrs={"uptime_s": round(uptime_s, 2)},
            )
        ]

    def link(
        self,
        device: str,
        if_index: int,
        name: str,
        admin_up: bool,
        oper_up: bool,
        at: float,
        *,
        alert: bool = True,
        monitored: bool = False,
    ) -> list[Event]:
        """Oper status of an interface; only admin-up interfaces can be down.

        `alert` False (the interface policy leaves it quiet): no event, and a down already
        announced is cleared. `monitored`: down at first sight is announced too."""
        state = self.states.get((device, f"if:{if_index}", "link"))
        value = "off" if not admin_up else ("up" if oper_up else "down")
        if (
            state is not None
            and alert
            and state.candidate is None
            and value == state.state
            and not (monitored and state.quiet)
        ):
            return []  # the steady case, most interfaces of most polls: nothing changes
        events = self._link(device, if_index, name, state, value, at, alert, monitored)
        self._mark(device, if_index)
        return events

    def _link(
        self,
        device: str,
        if_index: int,
        name: str,
        state: Confirmed | None,
        value: str,
        at: float,
        alert: bool,
        monitored: bool,
    ) -> list[Event]:
        """`link` past its steady case, with the state it looked up and the status now."""
        key = (device, f"if:{if_index}", "link")
        if not alert:
            if state is None:
                return []
            del self.states[key]
            if state.state != "down" or state.quiet:
                return []
            return [self._link_event(device, if_index, name, "up", at, "not alerted on any more")]
        if state is None:
            if value == "down" and monitored:
                state = self.states[key] = Confirmed("up")  # announced below, as a transition
            else:
                self.states[key] = Confirmed(value, quiet=value == "down")
                return []
        if state.stale(at):
            return []
        if monitored and state.quiet and value == state.state == "down":
            state.quiet = False  # declared monitored since it was first seen: news now
            return [self._link_event(device, if_index, name, "down", at, "down")]
        was = state.state
        began = state.observe(value, at, self.settings.link_polls)
        if began is None:
            return []
        if value == "down":
            if was == "off":  # enabled with no link: it was never up
                state.quiet = True
                return []
            state.quiet = False
            return [self._link_event(device, if_index, name, "down", began, "down")]
        state.quiet = False
        if was != "down":
            return []  # up <-> off: nothing to clear
        # A down found at first sight that comes up is still said: an incident left open
        # by a run whose state was lost clears, and an up event opens nothing.
        why = "administratively down" if value == "off" else "up"
        return [self._link_event(device, if_index, name, "up", began, why)]

    def _link_event(
        self,
        device: str,
        if_index: int,
        name: str,
        value: str,
        at: float,
        why: str,
        source: Source = "poll",
    ) -> Event:
        message = f"{name or if_index} {why}"
        attrs: dict[str, Value] = {"ifIndex": if_index, "ifName": name}
        return self._transition(device, f"if:{if_index}", "link", value, at, message, source, attrs)

    def link_quiet(self, device: str, if_index: int) -> bool:
        """True for a link down since it was first seen (its baseline, not announced)."""
        state = self.states.get((device, f"if:{if_index}", "link"))
        return state is not None and state.quiet and state.state == "down"

    def bgp(self, device: str, peer: str, established: bool, at: float) -> list[Event]:
        state = self._state(device, f"bgp:{peer}", "bgp")
        if state.stale(at):
            return []
        value = "established" if established else "down"
        began = state.observe(value, at, self.settings.bgp_polls)
        if began is None:
            return []
        return [self._bgp_event(device, peer, value, began)]

    def _bgp_event(
        self, device: str, peer: str, value: str, at: float, source: Source = "poll"
    ) -> Event:
        message = f"BGP peer {peer} {value}"
        return self._transition(
            device, f"bgp:{peer}", "bgp", value, at, message, source, {"peer": peer}
        )

    def _transition(
        self,
        device: str,
        resource: str,
        kind: EventKindName,
        value: str,
        at: float,
        message: str,
        source: Source,
        attrs: dict[str, Value],
    ) -> Event:
        """A link's or a BGP session's change: info back in its kind's good state, major
        out of it; one a trap told says so."""
        severity: Severity = "info" if value == GOOD[kind] else "major"
        suffix = " (trap)" if source == "trap" else ""
        return self._event(
            device, resource, kind, value, at, severity, message + suffix, source, attrs
        )

    def threshold(
        self, device: str, resource: str, metric: str, value: float, at: float
    ) -> list[Event]:
        rule = self._rules.get(metric)
        if rule is None:
            return []
        key = f"{resource}:{metric}" if resource != "device" else metric
        state = self._state(device, key, "threshold")
        if state.state == "ok":
            observed = "high" if value >= rule.enter else "ok"
        else:
            observed = "ok" if value < rule.leave else "high"
        began = state.observe(observed, at, rule.polls)
        if began is None:
            return []
        limit = rule.enter if observed == "high" else rule.leave
        word = "above" if observed == "high" else "back below"
        return [
            self._event(
                device,
                key,
                "threshold",
                observed,
                began,
                rule.severity if observed == "high" else "info",
                f"{metric} {word} {limit:g} ({value:.1f})",
                attrs={"metric": metric, "value": round(value, 3), "limit": limit},
            )
        ]

    def conditions(self, device: str, conditions: Iterable[Condition], at: float) -> list[Event]:
        """The conditions MIB groups report (agent.mibgroups): an event when one changes,
        after `condition_polls` polls in its new state, info back to ok.

        A sensor's condition (attrs `value` and `class`) is also judged by its value: the
        device's own thresholds where it reports some, else its class's configured
        limits (`settings.sensors`), with their hysteresis; the worse of the device's
        status and the value's is the state. A status the kind has not ("unknown": the
        device cannot read it) leaves the state to the value, or as it was."""
        events: list[Event] = []
        for condition in conditions:
            state = self._state(device, condition.resource, "sensor")
            if state.stale(at):
                continue
            judged = self._judge(condition, state.state)
            if judged is None:
                continue
            observed, severity, message, attrs = judged
            began = state.observe(observed, at, self.settings.condition_polls)
            if began is None:
                continue
            events.append(
                self._event(
                    device,
                    condition.resource,
                    "sensor",
                    observed,
                    began,
                    severity if observed != "ok" else "info",
                    message,
                    attrs=attrs,
                )
            )
        return events

    def _judge(
        self, condition: Condition, current: str
    ) -> tuple[str, Severity, str, dict[str, Value]] | None:
        """A condition's state now: (state, severity, message, attrs); None when neither
        the device's status nor a value says anything."""
        attrs = dict(condition.attrs)
        own = condition.state if condition.state in SENSOR_RANK else None
        value = attrs.get("value")
        if not isinstance(value, int | float):
            if own is None:
                return None
            return own, condition.severity, condition.message, attrs
        configured = self.settings.sensors.get(str(attrs.get("class", "")))
        given = {k: float(v) for k in THRESHOLDS if isinstance(v := attrs.get(k), int | float)}
        limits = configured
        if given:  # the device's own, with its class's hysteresis
            limits = SensorLimits(**given, hysteresis=configured.hysteresis if configured else 0)
        status, which, limit = limits.judge(value, current) if limits else ("ok", "", 0.0)
        if own is not None and SENSOR_RANK[own] >= SENSOR_RANK[status]:
            return own, condition.severity, condition.message, attrs
        if status == "ok":  # within its limits, and the device passes no verdict
            return status, "info", condition.message, attrs
        attrs.update(limit=limit, limit_by="device" if given else "config")
        word = "at or above" if which.startswith("high") else "at or below"
        name, cls = str(attrs.get("sensor", condition.resource)), str(attrs.get("class", ""))
        what = name if cls in name.lower() else f"{cls} {name}"  # "battery", "Inlet" ...
        message = f"{what} {value:g} {word} {limit:g}"
        return status, SENSOR_SEVERITY[status], message, attrs

    # ---------------------------------------------------------------- traps

    def link_trap(
        self,
        device: str,
        if_index: int,
        up: bool,
        at: float,
        name: str = "",
        *,
        admin_up: bool = True,
        alert: bool = True,
    ) -> list[Event]:
        """A linkUp/linkDown trap. A device sends linkDown when a link leaves up, so it is
        news for an interface not yet polled; for one the poll saw down, or off, it is not."""
        if not alert:
            return []
        events = self._link_trap(device, if_index, up, at, name, admin_up)
        self._mark(device, if_index)
        return events

    def _link_trap(
        self, device: str, if_index: int, up: bool, at: float, name: str, admin_up: bool
    ) -> list[Event]:
        key = (device, f"if:{if_index}", "link")
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = Confirmed("up")
        value = "off" if not admin_up else ("up" if up else "down")
        was = state.state
        if not state.force(value, at):
            return []
        state.quiet = value == "down" and was == "off"
        if value == "down" and not state.quiet:
            return [self._link_event(device, if_index, name, "down", at, "down", "trap")]
        if was != "down":
            return []
        why = "administratively down" if value == "off" else "up"
        return [self._link_event(device, if_index, name, "up", at, why, "trap")]

    def bgp_trap(self, device: str, peer: str, established: bool, at: float) -> list[Event]:
        state = self._state(device, f"bgp:{peer}", "bgp")
        value = "established" if established else "down"
        if not state.force(value, at):
            return []
        return [self._bgp_event(device, peer, value, at, "trap")]

    def generic_trap(
        self,
        device: str,
        trap_oid: str,
        at: float,
        varbinds: dict[str, Value],
        severity: Severity = "warning",
        message: str = "",
    ) -> list[Event]:
        return [
            self._event(
                device,
                f"trap:{trap_oid}",
                "trap",
                "received",
                at,
                severity,
                message or f"trap {trap_oid}",
                source="trap",
                attrs=varbinds,
            )
        ]

    def alarm(
        self,
        device: str,
        resource: str,
        raised: bool,
        at: float,
        severity: Severity,
        message: str,
        attrs: dict[str, Value],
    ) -> list[Event]:
        """An alarm a trap raises or clears by rule (agent.traprules). Every trap is an
        event, repeats included: a device repeats a raise while the condition lasts
        (upsTrapOnBattery each minute), which keeps an incident that resolves after a time
        open, and the collector counts the repeats; a clear of nothing open changes
        nothing there."""
        state = "raised" if raised else "cleared"
        return [
            self._event(
                device,
                resource,
                "alarm",
                state,
                at,
                severity if raised else "info",
                message,
                source="trap",
                attrs=attrs,
            )
        ]
