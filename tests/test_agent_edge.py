"""Edge state with hysteresis: one event per transition, at the time it began."""

from __future__ import annotations

import itertools

import pytest

from agent.edge import EdgeDetector, EdgeSettings, ThresholdRule

T0 = 1_800_000_000.0


def detector(**settings: object) -> EdgeDetector:
    ids = itertools.count(1)
    return EdgeDetector("nyc-1", EdgeSettings(**settings), new_id=lambda: f"e{next(ids)}")  # type: ignore[arg-type]


def test_one_lost_poll_raises_nothing_three_do_and_recovery_is_one_event() -> None:
    edge = detector()
    assert edge.reachability("r1", True, T0) == []
    assert edge.reachability("r1", False, T0 + 60) == []
    assert edge.reachability("r1", True, T0 + 120) == []  # the blip is forgotten
    assert edge.reachability("r1", False, T0 + 180) == []
    assert edge.reachability("r1", False, T0 + 240) == []
    (down,) = edge.reachability("r1", False, T0 + 300)
    assert (down.state, down.ts, down.severity, down.kind) == (
        "down",
        T0 + 180,
        "critical",
        "reachability",
    )
    assert edge.reachability("r1", False, T0 + 360) == []
    (up,) = edge.reachability("r1", True, T0 + 420)
    assert (up.state, up.ts) == ("up", T0 + 420)
    assert down.id != up.id


def test_link_down_only_on_admin_up_interfaces() -> None:
    edge = detector()
    assert edge.link("r1", 3, "Gi0/3", admin_up=False, oper_up=False, at=T0) == []
    (down,) = edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=False, at=T0)
    assert (down.resource, down.state, down.attrs["ifName"]) == ("if:4", "down", "Gi0/4")
    (cleared,) = edge.link("r1", 4, "Gi0/4", admin_up=False, oper_up=False, at=T0 + 60)
    assert cleared.state == "up" and "administratively down" in cleared.message


def test_a_trap_is_authoritative_and_the_poll_that_agrees_adds_nothing() -> None:
    edge = detector()
    (trap,) = edge.link_trap("r1", 3, up=False, at=T0, name="Gi0/3")
    assert (trap.source, trap.state) == ("trap", "down")
    assert edge.link("r1", 3, "Gi0/3", admin_up=True, oper_up=False, at=T0 + 30) == []
    assert edge.link_trap("r1", 3, up=False, at=T0 + 31) == []  # a repeated trap
    (up,) = edge.link("r1", 3, "Gi0/3", admin_up=True, oper_up=True, at=T0 + 90)
    assert up.source == "poll"


def test_thresholds_need_sustained_values_and_leave_below_a_lower_level() -> None:
    edge = detector(thresholds=(ThresholdRule("cpu", 90, 75, polls=3, severity="major"),))
    seq = [95, 96, 80, 95, 97, 99]
    events = [
        e for i, v in enumerate(seq) for e in edge.threshold("r1", "device", "cpu", v, T0 + 60 * i)
    ]
    (high,) = events
    assert (high.state, high.ts, high.severity) == ("high", T0 + 180, "major")
    # 85 is below enter but above leave: still high.
    assert edge.threshold("r1", "device", "cpu", 85, T0 + 400) == []
    out = [
        e for i in range(3) for e in edge.threshold("r1", "device", "cpu", 50, T0 + 500 + 60 * i)
    ]
    assert [e.state for e in out] == ["ok"]
    assert out[0].ts == T0 + 500


def test_bgp_and_reboot_and_generic_traps() -> None:
    edge = detector()
    (down,) = edge.bgp("r1", "127.200.0.1", established=False, at=T0)
    assert down.resource == "bgp:127.200.0.1"
    (up,) = edge.bgp_trap("r1", "127.200.0.1", established=True, at=T0 + 5)
    assert up.state == "established"
    (reboot,) = edge.reboot("r1", T0 + 100, uptime_s=40)
    assert (reboot.kind, reboot.ts) == ("reboot", T0 + 60)
    (generic,) = edge.generic_trap("r1", "1.3.6.1.4.1.9.9.1", T0, {"1.3.6.1.2.1.1.5.0": "r1"})
    assert generic.attrs == {"1.3.6.1.2.1.1.5.0": "r1"}


def test_a_threshold_rule_must_leave_below_where_it_enters() -> None:
    with pytest.raises(ValueError, match="leave"):
        ThresholdRule("cpu", 80, 90)


def test_forget_drops_a_devices_state() -> None:
    edge = detector()
    edge.link("r1", 1, "a", admin_up=True, oper_up=False, at=T0)
    edge.forget("r1")
    assert edge.states == {}


def test_a_poll_that_began_before_a_trap_cannot_undo_it() -> None:
    """A flapping link: the trap says down while a poll that read "up" a moment before is
    still on its way. That reading is older than the trap; taking it would report the
    link up, then down again at the next poll: two false events."""
    edge = detector()
    (down,) = edge.link_trap("r1", 3, up=False, at=T0 + 10.0)
    assert edge.link("r1", 3, "Gi0/3", admin_up=True, oper_up=True, at=T0 + 9.99) == []
    assert edge.bgp_trap("r1", "127.200.0.1", established=False, at=T0 + 10.0)
    assert edge.bgp("r1", "127.200.0.1", established=True, at=T0 + 9.99) == []
    # a poll that began after the trap is news again
    (up,) = edge.link("r1", 3, "Gi0/3", admin_up=True, oper_up=True, at=T0 + 11.0)
    assert (down.state, up.state, up.source) == ("down", "up", "poll")


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("timeout", "no SNMP answer for 2 polls"),
        ("undecodable", "answers undecodable for 2 polls"),
        ("misaddressed", "answers to other requests for 2 polls"),
        ("deadline", "poll deadline passed for 2 polls"),
        ("error_status", "polls fail (error_status) for 2 polls"),
    ],
)
def test_unreachable_says_why_the_polls_failed(reason: str, message: str) -> None:
    edge = detector(unreachable_after=2)
    assert edge.reachability("r1", False, T0, reason=reason) == []
    (down,) = edge.reachability("r1", False, T0 + 60, reason=reason)
    assert (down.message, down.attrs, down.ts) == (message, {"reason": reason}, T0)
