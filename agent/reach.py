"""Reachability from ping and SNMP together, and ping's own thresholds.

`PingEdge` is the edge detector (agent.edge) of an agent that pings
(agent.ping). A device it pings has two signals: its ping rounds and its polls.
Until ping has answered once, the polls alone decide its reachability as they
do without ping (three failed polls: down). Once ping has answered:

- no answer to `down_after` rounds in a row, and no SNMP answer since, is
  **down**, stamped with the first missed round (two 10 s rounds: down within
  about 20 s, long before three 60 s polls);
- ping answering while the polls fail (`unreachable_after` of them) is up, and
  kind `snmp` state `silent`: "SNMP agent silent, host up";
- SNMP answering while ping does not is up: ICMP is filtered on the way,
  noted in the log, no incident.

A round with answers is judged against `PingLimits` (loss and average round
trip, with hysteresis): kind `ping`, "degraded" or "ok". A device not pinged
(`ping.enabled: false`, or its inventory entry's `ping: false`) is judged as
EdgeDetector judges it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.edge import FAILURES, Confirmed, EdgeDetector
from enoc.wire import Event, Value

log = logging.getLogger("enoc.agent")


@dataclass(frozen=True)
class PingLimits:
    """ping's degraded state: loss (%) or the average round trip (ms) at or above its
    `_degraded` level enters it; both below their `_clear` level leave it; each sustained
    for `rounds` rounds (agent.config `ping.thresholds`)."""

    loss_degraded: float = 20
    loss_clear: float = 5
    rtt_degraded: float = 300
    rtt_clear: float = 200
    rounds: int = 2
    down_after: int = 2  # missed rounds, with no SNMP answer since, are down

    def __post_init__(self) -> None:
        for what, enter, leave in (
            ("loss", self.loss_degraded, self.loss_clear),
            ("rtt", self.rtt_degraded, self.rtt_clear),
        ):
            if leave > enter:
                raise ValueError(f"{what}: clear ({leave:g}) must not exceed degraded ({enter:g})")
        if self.rounds < 1 or self.down_after < 1:
            raise ValueError("rounds and down_after must be at least 1")

    def judge(self, loss: float, rtt: float, degraded: bool) -> str:
        if degraded:
            return "ok" if loss < self.loss_clear and rtt < self.rtt_clear else "degraded"
        return "degraded" if loss >= self.loss_degraded or rtt >= self.rtt_degraded else "ok"


@dataclass
class Signals:
    """What ping and the polls say of one pinged device (agent.ping): reachability is
    decided from both once ping has answered (DESIGN "Ping")."""

    ping: Confirmed = field(default_factory=lambda: Confirmed("up"))
    snmp: Confirmed = field(default_factory=lambda: Confirmed("up"))
    answered: bool = False  # ping has answered: ICMP reaches the device
    ping_down_at: float = 0.0  # when the missed rounds that made ping "down" began
    snmp_at: float = float("-inf")  # the last poll it answered
    snmp_down_at: float = 0.0
    silent_at: float = 0.0  # when its "SNMP agent silent" was announced
    reason: str = "timeout"  # the last failed poll's
    filtered: bool = False  # SNMP answers and ping does not: ICMP filtered (noted)


@dataclass
class PingEdge(EdgeDetector):
    """An EdgeDetector that also takes ping rounds (see the module's docstring)."""

    limits: PingLimits = field(default_factory=PingLimits)
    signals: dict[str, Signals] = field(default_factory=dict)  # of the pinged devices

    def forget(self, device: str) -> None:
        self.signals.pop(device, None)
        super().forget(device)

    def reachability(
        self, device: str, answered: bool, at: float, reason: str = "timeout"
    ) -> list[Event]:
        s = self.settings
        needed = s.reachable_after if answered else s.unreachable_after
        signals = self.signals.get(device)
        if signals is not None:
            began = signals.snmp.observe("up" if answered else "down", at, needed)
            if answered:
                signals.snmp_at = at
            else:
                signals.reason = reason
                if began is not None:
                    signals.snmp_down_at = began
            self._note_filtered(device, signals)
            if signals.answered:
                return self._combined(device, signals, at)
        return super().reachability(device, answered, at, reason)

    def pinged(self, device: str) -> None:
        """Follow `device`'s ping rounds beside its polls (ping enabled for it)."""
        self.signals.setdefault(device, Signals())

    def ping(
        self, device: str, sent: int, received: int, average_ms: float, at: float
    ) -> list[Event]:
        """One ping round: `received` of `sent` echo requests answered. Once ping has
        answered, the device's reachability is decided from ping and the polls together;
        a round that got answers is judged by `limits` (loss, round trip)."""
        signals = self.signals.setdefault(device, Signals())
        answered = received > 0
        needed = 1 if answered else self.limits.down_after
        began = signals.ping.observe("up" if answered else "down", at, needed)
        if began is not None and not answered:
            signals.ping_down_at = began
        signals.answered = signals.answered or answered
        events = self._combined(device, signals, at) if signals.answered else []
        if answered and sent > 0:
            loss = 100 * (sent - received) / sent
            events += self._ping_quality(device, loss, average_ms, at)
        self._note_filtered(device, signals)
        return events

    def _combined(self, device: str, signals: Signals, at: float) -> list[Event]:
        """Reachability from both signals: no ping (for `limits.down_after` rounds) and no
        SNMP answer since is down; ping without SNMP is up, its SNMP agent silent."""
        events: list[Event] = []
        ping_up = signals.ping.state == "up"
        state = self._state(device, "device", "reachability")
        down = not ping_up and signals.snmp_at < signals.ping_down_at
        want = "down" if down else "up"
        if want != state.state:
            state.state, state.candidate, state.streak = want, None, 0
            if down:
                n = self.limits.down_after
                message = f"no answer to ping for {n} rounds, nor to SNMP since"
                events.append(
                    self._event(
                        device,
                        "device",
                        "reachability",
                        "down",
                        signals.ping_down_at,
                        "critical",
                        message,
                        attrs={"reason": "ping"},
                    )
                )
            else:
                # back from down: its SNMP agent is judged afresh, or each device that
                # comes back would be "silent" until its next poll
                signals.snmp = Confirmed("up")
                what = "ping" if ping_up else "SNMP"
                message = f"answers {what} again"
                events.append(
                    self._event(device, "device", "reachability", "up", at, "info", message)
                )
        snmp = self._state(device, "device", "snmp")
        if snmp.state == "silent" and signals.snmp_at > signals.silent_at:
            snmp.state = "ok"
            events.append(
                self._event(device, "device", "snmp", "ok", at, "info", "answers SNMP again")
            )
        elif snmp.state != "silent" and ping_up and signals.snmp.state == "down":
            snmp.state, signals.silent_at = "silent", at
            what = FAILURES.get(signals.reason, f"polls fail ({signals.reason})")
            n = self.settings.unreachable_after
            message = f"SNMP agent silent, host up (answers ping; {what} for {n} polls)"
            attrs: dict[str, Value] = {"reason": signals.reason}
            events.append(
                self._event(
                    device,
                    "device",
                    "snmp",
                    "silent",
                    signals.snmp_down_at,
                    "major",
                    message,
                    attrs=attrs,
                )
            )
        return events

    def _note_filtered(self, device: str, signals: Signals) -> None:
        """SNMP answering since ping stopped (or never did): ICMP is filtered on the way.
        Noted in the log when it changes, not an incident: the device is monitored."""
        filtered = signals.ping.state == "down" and signals.snmp_at >= signals.ping_down_at
        if filtered != signals.filtered:
            signals.filtered = filtered
            if filtered:
                log.info("%s answers SNMP and not ping: ICMP filtered on the way", device)
            else:
                log.info("%s answers ping (again)", device)

    def _ping_quality(self, device: str, loss: float, rtt: float, at: float) -> list[Event]:
        limits = self.limits
        state = self._state(device, "ping", "ping")
        observed = limits.judge(loss, rtt, state.state == "degraded")
        began = state.observe(observed, at, limits.rounds)
        if began is None:
            return []
        attrs: dict[str, Value] = {"loss_pct": round(loss, 1), "rtt_ms": round(rtt, 3)}
        if observed == "ok":
            message = (
                f"ping loss {loss:.0f} % and round trip {rtt:.1f} ms back below "
                f"{limits.loss_clear:g} % and {limits.rtt_clear:g} ms"
            )
            return [self._event(device, "ping", "ping", "ok", began, "info", message, attrs=attrs)]
        if loss >= limits.loss_degraded:
            message = f"ping loss {loss:.0f} % at or above {limits.loss_degraded:g} %"
        else:
            message = f"ping round trip {rtt:.1f} ms at or above {limits.rtt_degraded:g} ms"
        return [
            self._event(device, "ping", "ping", "degraded", began, "minor", message, attrs=attrs)
        ]
