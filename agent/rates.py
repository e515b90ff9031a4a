"""Counters into rates: wraps, resets and impossible values.

A counter that went backwards either wrapped (a 32-bit counter passes 2^32
every 34 s at 1 Gbit/s) or was reset (the device rebooted, or the interface's
ifCounterDiscontinuityTime changed). A reset must yield no rate at all, never
a huge false spike; a "rate" above what the interface can carry is rejected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

COUNTER32 = 1 << 32
TIMETICKS_WRAP = 1 << 32  # sysUpTime wraps after 497 days
SPEED_SLACK = 1.05  # timestamps are taken at the agent, not the device: allow 5 %


def uptime_was_reset(prev_ticks: int, prev_at: float, ticks: int, at: float) -> bool:
    """True when sysUpTime restarted between two polls (a reboot), False for a 497-day wrap."""
    if ticks >= prev_ticks:
        return False
    elapsed = max(0.0, at - prev_at) * 100
    wrapped_advance = ticks + TIMETICKS_WRAP - prev_ticks
    return abs(wrapped_advance - elapsed) > max(1000.0, elapsed * 0.1)


@dataclass
class _Last:
    value: int
    at: float


@dataclass
class RateTracker:
    """Per-counter state: the last reading of each key, and counts of what was refused."""

    last: dict[tuple[str, ...], _Last] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)

    def rate(
        self,
        key: tuple[str, ...],
        value: int,
        at: float,
        *,
        bits: int,
        max_rate: float | None = None,
    ) -> float | None:
        """Per-second rate since the previous reading of `key`, or None (first, reset, impossible).

        `max_rate` is in counter units per second (octets/s for octet counters).
        """
        previous = self.last.get(key)
        self.last[key] = _Last(value, at)
        if previous is None:
            return None
        elapsed = at - previous.at
        if elapsed <= 0:
            self.refused["clock"] += 1
            return None
        delta = value - previous.value
        if delta < 0:
            if bits != 32:
                self.refused["reset"] += 1  # 64-bit counters do not wrap in practice: a reset
                return None
            delta += COUNTER32  # one wrap; several would exceed the speed check below
        per_second = delta / elapsed
        if max_rate is not None and per_second > max_rate * SPEED_SLACK:
            self.refused["above_speed"] += 1
            return None
        return per_second

    def reset(self, prefix: tuple[str, ...]) -> None:
        """Forget every counter under `prefix` (a reboot, a discontinuity, a removed device)."""
        size = len(prefix)
        for key in [k for k in self.last if k[:size] == prefix]:
            del self.last[key]
