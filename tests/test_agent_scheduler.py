"""The poll scheduler: each device once per interval at its own offset, bounded concurrency,
overruns skipped and counted (never stacked), deadlines, one slow device delays no other.

On a fake clock that moves only when the test says: every count below is exact, whatever
the load of the machine (no real timer is involved).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent.scheduler import Scheduler

INTERVAL = 60.0
T0 = 1_800_000_000.0  # a multiple of the interval: a key's first due time is T0 + its offset


class FakeClock:
    """The scheduler's Clock on simulated time: `sleep` waits until `advance` passes its
    wake time; between wake-ups the event loop runs until nothing is left to do."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            wake, _n, future = heapq.heappop(self._sleepers)
            if future.done():  # a sleep that was cancelled (a poll finished first)
                continue
            self.now = max(self.now, wake)
            future.set_result(None)
            await settle()
        self.now = end
        await settle()


async def settle() -> None:
    """Let every task that can run, run (a poll started, its slot taken, a sleep begun)."""
    for _ in range(50):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield scheduler
    finally:
        await scheduler.close()
        await asyncio.wait_for(task, 10)


def make(
    clock: FakeClock,
    poll: Callable[[str, float], Awaitable[None]],
    *,
    concurrency: int = 8,
    deadline: float = INTERVAL * 0.9,
    deadlines: list[str] | None = None,
) -> Scheduler:
    return Scheduler(
        INTERVAL,
        poll,
        concurrency=concurrency,
        deadline=deadline,
        on_deadline=lambda key, _due: (deadlines if deadlines is not None else []).append(key),
        clock=clock,
    )


def dues(scheduler: Scheduler, key: str, start: float, end: float) -> list[float]:
    """The due times of `key` in [start, end]: its offset, then every interval."""
    first = math.floor(start / INTERVAL) * INTERVAL + scheduler.offset(key)
    if first < start:
        first += INTERVAL
    return [first + INTERVAL * k for k in range(int((end - first) // INTERVAL) + 1)]


def test_offsets_are_stable_and_spread() -> None:
    async def poll(_key: str, _due: float) -> None:
        return None

    scheduler = Scheduler(60, poll, concurrency=1, deadline=54, on_deadline=lambda k, d: None)
    offsets = [scheduler.offset(f"dev-{i}") for i in range(1000)]
    assert all(0 <= o < 60 for o in offsets)
    assert offsets == [scheduler.offset(f"dev-{i}") for i in range(1000)]  # a restart keeps them
    per_second = collections.Counter(int(o) for o in offsets)
    assert len(per_second) == 60  # every second of the interval gets some
    assert max(per_second.values()) < 40  # and none gets a pile (mean 16.7)


async def test_every_device_once_per_interval_at_its_due_time() -> None:
    clock = FakeClock()
    polls: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)

    async def poll(key: str, due: float) -> None:
        polls[key].append((due, clock.time()))

    scheduler = make(clock, poll)
    keys = [f"d{i}" for i in range(20)]
    scheduler.set_keys(keys)
    async with running(scheduler):
        await clock.advance(INTERVAL * 5.5)
    for key in keys:
        expected = dues(scheduler, key, T0, T0 + INTERVAL * 5.5)
        # exactly one interval apart, at the key's own offset: never twice, never skipped,
        # and started at the moment it was due
        assert polls[key] == [(due, due) for due in expected], key
    assert scheduler.stats.started == sum(len(p) for p in polls.values())
    assert scheduler.stats.overruns == 0


async def test_overrun_is_skipped_and_counted_never_stacked() -> None:
    clock = FakeClock()
    started: list[tuple[str, float]] = []
    running_now: collections.Counter[str] = collections.Counter()
    most = 0

    async def poll(key: str, due: float) -> None:
        nonlocal most
        running_now[key] += 1
        most = max(most, running_now[key])
        started.append((key, due))
        try:
            if key == "slow":
                await clock.sleep(INTERVAL * 2.5)  # overruns two of its intervals
        finally:
            running_now[key] -= 1

    scheduler = make(clock, poll, deadline=INTERVAL * 10)
    scheduler.set_keys(["slow", "fast"])
    end = T0 + INTERVAL * 6.5
    async with running(scheduler):
        await clock.advance(end - T0)
    assert most == 1, "a device is never polled twice at once"
    # the slow device: due every interval, busy 2.5 intervals a poll, so every third due
    slow = dues(scheduler, "slow", T0, end)
    assert [d for k, d in started if k == "slow"] == slow[::3]
    assert scheduler.stats.overruns == len(slow) - len(slow[::3])
    # the slow device did not hold the fast one back: it ran at every one of its dues
    assert [d for k, d in started if k == "fast"] == dues(scheduler, "fast", T0, end)


async def test_deadline_cancels_and_reports() -> None:
    clock = FakeClock()
    deadlines: list[str] = []
    cancelled: list[tuple[str, float]] = []

    async def poll(key: str, _due: float) -> None:
        try:
            await clock.sleep(INTERVAL * 10 if key == "hung" else 0)
        except asyncio.CancelledError:
            cancelled.append((key, clock.time()))
            raise

    scheduler = make(clock, poll, deadline=INTERVAL / 2, deadlines=deadlines)
    scheduler.set_keys(["hung", "ok"])
    end = T0 + INTERVAL * 3.5
    async with running(scheduler):
        await clock.advance(end - T0)
    # every hung poll that reached its deadline was cancelled at it, and reported
    cut = [d for d in dues(scheduler, "hung", T0, end) if d + INTERVAL / 2 <= end]
    assert deadlines == ["hung"] * len(cut)
    assert cancelled[: len(cut)] == [("hung", d + INTERVAL / 2) for d in cut]
    # stopping may cancel one more hung poll in flight; never the healthy device's
    assert [k for k, _t in cancelled[len(cut) :]] in ([], ["hung"])
    assert scheduler.stats.deadline_exceeded == len(cut)
    assert scheduler.stats.overruns == 0  # cancelled in time for its next turn


async def test_concurrency_is_bounded_and_starved_polls_counted() -> None:
    clock = FakeClock()
    active = 0
    most = 0
    done = 0

    async def poll(_key: str, _due: float) -> None:
        nonlocal active, most, done
        active += 1
        most = max(most, active)
        try:
            await clock.sleep(INTERVAL * 0.3)
            done += 1
        finally:
            active -= 1

    scheduler = make(clock, poll, concurrency=3, deadline=INTERVAL * 0.5)
    scheduler.set_keys([f"d{i}" for i in range(30)])
    async with running(scheduler):
        await clock.advance(INTERVAL * 3.5)
        stats, finished, in_flight = scheduler.stats, done, scheduler.running
        accounted = finished + stats.starved + stats.deadline_exceeded
        # every poll started is accounted for: finished, starved waiting for a slot, cut at
        # its deadline, or still running
        assert accounted + in_flight == stats.started
    assert most == 3
    # 30 polls of 0.3 interval through 3 slots cannot all fit in one: the overload is
    # counted (cut at the deadline after a late slot, or starved waiting for one)
    assert stats.starved + stats.deadline_exceeded > 0
    assert finished > 0


@pytest.mark.parametrize("change", ["add", "remove"])
async def test_inventory_changes_take_effect(change: str) -> None:
    clock = FakeClock()
    polls: dict[str, list[float]] = collections.defaultdict(list)

    async def poll(key: str, due: float) -> None:
        polls[key].append(due)

    scheduler = make(clock, poll)
    scheduler.set_keys(["a", "b"])
    changed = T0 + INTERVAL * 2.2
    end = changed + INTERVAL * 3.2
    async with running(scheduler):
        await clock.advance(changed - T0)
        scheduler.set_keys(["a", "b", "c"] if change == "add" else ["a"])
        await clock.advance(end - changed)
    assert polls["a"] == dues(scheduler, "a", T0, end)
    if change == "add":
        # the new device joins at its own offset in the coming interval
        assert polls["c"] == dues(scheduler, "c", changed, end)
        assert polls["b"] == dues(scheduler, "b", T0, end)
    else:
        assert polls["b"] == dues(scheduler, "b", T0, changed), "none after its removal"
