"""Edge state with hysteresis: one event per transition, at the time it began."""

from __future__ import annotations

import itertools
import json

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
    assert edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=True, at=T0) == []
    assert edge.link("r1", 3, "Gi0/3", admin_up=False, oper_up=False, at=T0 + 60) == []
    (down,) = edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=False, at=T0 + 60)
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


# ------------------------------------------------------------------ first sight (issue 16)


def test_a_link_down_at_first_sight_is_a_baseline_and_only_up_to_down_is_news() -> None:
    edge = detector()
    # an unused access port, and an empty optic: down when first seen, two polls running
    for at in (T0, T0 + 60):
        assert edge.link("r1", 7, "Gi0/7", admin_up=True, oper_up=False, at=at) == []
    assert edge.link_quiet("r1", 7)
    assert edge.bad_states() == [], "a baseline is no open problem to clear after a restart"
    # something plugged in: up is said (an up opens nothing, and clears an incident left
    # open by a run whose state was lost), and from now on down is a transition
    (up,) = edge.link("r1", 7, "Gi0/7", admin_up=True, oper_up=True, at=T0 + 120)
    assert (up.state, up.severity) == ("up", "info")
    assert not edge.link_quiet("r1", 7)
    (down,) = edge.link("r1", 7, "Gi0/7", admin_up=True, oper_up=False, at=T0 + 180)
    assert (down.state, down.severity, down.ts, down.source) == ("down", "major", T0 + 180, "poll")
    assert edge.bad_states() == [["r1", "if:7", "link", "down"]]


def test_a_monitored_link_down_at_first_sight_is_an_incident() -> None:
    edge = detector()
    (down,) = edge.link("r1", 1, "xe-0/0/0", admin_up=True, oper_up=False, at=T0, monitored=True)
    assert (down.state, down.ts, down.resource) == ("down", T0, "if:1")
    assert edge.link("r1", 1, "xe-0/0/0", True, False, T0 + 60, monitored=True) == []
    # a port first seen as a baseline, declared monitored later: said at once
    assert edge.link("r1", 2, "xe-0/0/1", admin_up=True, oper_up=False, at=T0) == []
    (late,) = edge.link("r1", 2, "xe-0/0/1", True, False, T0 + 60, monitored=True)
    assert (late.state, late.ts) == ("down", T0 + 60)
    assert edge.link("r1", 2, "xe-0/0/1", True, False, T0 + 120, monitored=True) == []


def test_a_port_enabled_with_nothing_plugged_in_was_never_up() -> None:
    edge = detector()
    assert edge.link("r1", 5, "Gi0/5", admin_up=False, oper_up=False, at=T0) == []
    assert edge.link("r1", 5, "Gi0/5", admin_up=True, oper_up=False, at=T0 + 60) == []
    assert edge.link_quiet("r1", 5)
    assert edge.link("r1", 5, "Gi0/5", admin_up=True, oper_up=True, at=T0 + 120)  # up: said
    assert edge.link("r1", 5, "Gi0/5", admin_up=False, oper_up=False, at=T0 + 180) == []
    assert edge.link("r1", 5, "Gi0/5", admin_up=True, oper_up=True, at=T0 + 240) == []
    (down,) = edge.link("r1", 5, "Gi0/5", admin_up=True, oper_up=False, at=T0 + 300)
    assert down.state == "down"


def test_an_interface_the_policy_stops_alerting_on_clears_what_it_raised() -> None:
    edge = detector()
    edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=True, at=T0)
    (_down,) = edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=False, at=T0 + 60)
    (cleared,) = edge.link("r1", 4, "Gi0/4", True, False, T0 + 120, alert=False)
    assert (cleared.state, cleared.resource) == ("up", "if:4")
    assert "not alerted" in cleared.message
    assert edge.link("r1", 4, "Gi0/4", True, False, T0 + 180, alert=False) == []
    assert edge.link("r1", 9, "Tu9", True, False, T0, alert=False) == []
    assert ("r1", "if:9", "link") not in edge.states


def test_link_traps_at_and_after_first_sight() -> None:
    edge = detector()
    # linkDown for an interface no poll has seen: the device says it just left up
    (down,) = edge.link_trap("r1", 3, up=False, at=T0, name="Gi0/3")
    assert (down.state, down.source) == ("down", "trap")
    # linkDown for a port the poll found down at first sight: nothing new
    assert edge.link("r1", 4, "Gi0/4", admin_up=True, oper_up=False, at=T0) == []
    assert edge.link_trap("r1", 4, up=False, at=T0 + 1) == []
    # linkDown for a port that was up: the transition
    assert edge.link("r1", 5, "Gi0/5", admin_up=True, oper_up=True, at=T0) == []
    (trapped,) = edge.link_trap("r1", 5, up=False, at=T0 + 2)
    assert (trapped.resource, trapped.state) == ("if:5", "down")
    # a port switched off (the trap's ifAdminStatus says down): no incident, a clear
    (off,) = edge.link_trap("r1", 5, up=False, at=T0 + 3, admin_up=False)
    assert (off.state, "administratively down" in off.message) == ("up", True)
    # an interface the policy leaves quiet: nothing
    assert edge.link_trap("r1", 6, up=False, at=T0 + 4, alert=False) == []


def test_bgp_and_reachability_stay_incidents_at_first_sight() -> None:
    """Configured to work: a peer admin-started but not established, and a device that
    never answered, are problems the first time they are seen."""
    edge = detector(unreachable_after=2)
    (peer,) = edge.bgp("r1", "127.200.0.9", established=False, at=T0)
    assert (peer.state, peer.severity) == ("down", "major")
    assert edge.reachability("r2", False, T0) == []
    (unreachable,) = edge.reachability("r2", False, T0 + 60)
    assert (unreachable.state, unreachable.ts) == ("down", T0)


def test_the_saved_state_keeps_open_problems_and_the_links_seen_up() -> None:
    edge = detector()
    edge.link("r1", 1, "a", admin_up=True, oper_up=True, at=T0)
    edge.link("r1", 2, "b", admin_up=True, oper_up=True, at=T0)
    edge.link("r1", 3, "c", admin_up=True, oper_up=False, at=T0)  # baseline
    edge.link("r1", 4, "d", admin_up=False, oper_up=False, at=T0)  # off
    changed = edge.links_changed
    edge.link("r1", 2, "b", admin_up=True, oper_up=False, at=T0 + 60)  # announced
    assert edge.links_changed > changed, "the links up changed: to be saved"
    changed = edge.links_changed
    edge.link("r1", 3, "c", admin_up=True, oper_up=False, at=T0 + 60)
    assert edge.links_changed == changed, "nothing new to save"
    problems = json.loads(json.dumps(edge.bad_states()))
    links = json.loads(json.dumps(edge.links_up()))
    assert (problems, links) == ([["r1", "if:2", "link", "down"]], {"r1": [1]})
    later = detector()
    later.restore(problems, links)
    # up before the restart, down after it: a transition, not a baseline
    (down,) = later.link("r1", 1, "a", admin_up=True, oper_up=False, at=T0 + 120)
    assert down.state == "down"
    (up,) = later.link("r1", 2, "b", admin_up=True, oper_up=True, at=T0 + 120)
    assert up.state == "up", "the clearing event of what the last run announced"
    assert later.link("r1", 3, "c", admin_up=True, oper_up=False, at=T0 + 120) == []
    assert later.links_up() == {"r1": [2]}
    # a damaged file: what has the wrong shape is left out
    damaged = detector()
    damaged.restore({"r1": 1}, {"r1": [1, "2", True], "r2": 3})
    assert damaged.links_up() == {"r1": [1]}
    # a restart that lost it all: every link found down is a baseline again
    lost = detector()
    assert lost.link("r1", 1, "a", admin_up=True, oper_up=False, at=T0 + 120) == []
    assert lost.link("r1", 2, "b", admin_up=True, oper_up=False, at=T0 + 120) == []
