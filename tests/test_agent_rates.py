"""Rates from counters: wraps are rates, resets are not, impossible rates are refused."""

from __future__ import annotations

from agent.rates import COUNTER32, RateTracker, uptime_was_reset

T0 = 1_800_000_000.0
KEY = ("nyc-pe-1", "if:3", "ifInOctets")


def test_first_reading_gives_no_rate_then_rates_follow() -> None:
    tracker = RateTracker()
    assert tracker.rate(KEY, 1000, T0, bits=64) is None
    assert tracker.rate(KEY, 61000, T0 + 60, bits=64) == 1000.0


def test_32_bit_wrap_is_a_normal_rate() -> None:
    tracker = RateTracker()
    tracker.rate(KEY, COUNTER32 - 1000, T0, bits=32)
    assert tracker.rate(KEY, 59000, T0 + 60, bits=32) == 1000.0


def test_64_bit_counter_going_backwards_is_a_reset_not_a_spike() -> None:
    tracker = RateTracker()
    tracker.rate(KEY, 10**15, T0, bits=64)
    assert tracker.rate(KEY, 5000, T0 + 60, bits=64) is None
    assert tracker.refused["reset"] == 1
    assert tracker.rate(KEY, 65000, T0 + 120, bits=64) == 1000.0  # re-baselined


def test_a_rate_above_the_interface_speed_is_refused() -> None:
    tracker = RateTracker()
    speed_octets = 100e6 / 8  # 100 Mbit/s
    tracker.rate(KEY, 50_000, T0, bits=32, max_rate=speed_octets)
    # An unnoticed reset (50,000 -> 100) reads as a wrap of ~4 GB in 60 s: impossible at 100M.
    assert tracker.rate(KEY, 100, T0 + 60, bits=32, max_rate=speed_octets) is None
    assert tracker.refused["above_speed"] == 1


def test_clock_going_backwards_gives_no_rate() -> None:
    tracker = RateTracker()
    tracker.rate(KEY, 0, T0, bits=64)
    assert tracker.rate(KEY, 10, T0, bits=64) is None
    assert tracker.refused["clock"] == 1


def test_reset_forgets_a_device() -> None:
    tracker = RateTracker()
    tracker.rate(KEY, 0, T0, bits=64)
    tracker.rate(("other", "if:1", "x"), 0, T0, bits=64)
    tracker.reset(("nyc-pe-1",))
    assert list(tracker.last) == [("other", "if:1", "x")]


def test_uptime_reset_versus_uptime_wrap() -> None:
    assert uptime_was_reset(500_000, T0, 300, T0 + 60)  # rebooted
    assert not uptime_was_reset(500_000, T0, 506_000, T0 + 60)  # normal
    # 497 days: sysUpTime wraps at 2^32 ticks; 60 s later it is just past zero.
    assert not uptime_was_reset(2**32 - 3000, T0, 3000, T0 + 60)
    assert uptime_was_reset(2**32 - 3000, T0, 3000, T0 + 3600)
