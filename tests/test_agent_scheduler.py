"""The poll scheduler: each device once per interval at its own offset, bounded concurrency,
overruns skipped and counted (never stacked), deadlines, one slow device delays no other."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent.scheduler import Scheduler

INTERVAL = 0.2


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def make(
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
    )


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
    polls: dict[str, list[float]] = collections.defaultdict(list)

    async def poll(key: str, due: float) -> None:
        polls[key].append(due)

    scheduler = make(poll)
    keys = [f"d{i}" for i in range(20)]
    scheduler.set_keys(keys)
    async with running(scheduler):
        await asyncio.sleep(INTERVAL * 5.5)
    assert set(polls) == set(keys)
    for key, dues in polls.items():
        assert len(dues) >= 4
        # exactly one interval apart, at the key's own offset: never twice, never skipped
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(dues)]
        assert gaps == [INTERVAL] * len(gaps), (key, gaps)
        phase = (dues[0] - scheduler.offset(key)) % INTERVAL
        assert min(phase, INTERVAL - phase) < 1e-6
    assert scheduler.stats.overruns == 0


async def test_overrun_is_skipped_and_counted_never_stacked() -> None:
    running_now: collections.Counter[str] = collections.Counter()
    most = 0
    started: list[str] = []

    async def poll(key: str, _due: float) -> None:
        nonlocal most
        running_now[key] += 1
        most = max(most, running_now[key])
        started.append(key)
        try:
            if key == "slow":
                await asyncio.sleep(INTERVAL * 2.5)  # overruns two of its intervals
        finally:
            running_now[key] -= 1

    scheduler = make(poll, deadline=INTERVAL * 10)
    scheduler.set_keys(["slow", "fast"])
    async with running(scheduler):
        await asyncio.sleep(INTERVAL * 6.5)
    assert most == 1, "a device is never polled twice at once"
    assert scheduler.stats.overruns >= 2
    # the slow device did not hold the fast one back
    assert started.count("fast") >= 6
    assert started.count("slow") <= 3


async def test_deadline_cancels_and_reports() -> None:
    deadlines: list[str] = []
    cancelled: list[str] = []

    async def poll(key: str, _due: float) -> None:
        try:
            await asyncio.sleep(10 if key == "hung" else 0)
        except asyncio.CancelledError:
            cancelled.append(key)
            raise

    scheduler = make(poll, deadline=INTERVAL / 2, deadlines=deadlines)
    scheduler.set_keys(["hung", "ok"])
    async with running(scheduler):
        await asyncio.sleep(INTERVAL * 3.5)
    assert deadlines and set(deadlines) == {"hung"}
    # each deadline cancelled the poll; stopping may cancel one more in flight
    assert len(deadlines) <= cancelled.count("hung") <= len(deadlines) + 1
    assert "ok" not in cancelled
    assert scheduler.stats.deadline_exceeded == len(deadlines)
    assert scheduler.stats.overruns == 0  # cancelled in time for its next turn


async def test_concurrency_is_bounded_and_starved_polls_counted() -> None:
    active = 0
    most = 0
    done = 0

    async def poll(_key: str, _due: float) -> None:
        nonlocal active, most, done
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(INTERVAL * 0.3)
            done += 1
        finally:
            active -= 1

    scheduler = make(poll, concurrency=3, deadline=INTERVAL * 0.5)
    scheduler.set_keys([f"d{i}" for i in range(30)])
    async with running(scheduler):
        await asyncio.sleep(INTERVAL * 3.5)
        # a snapshot while it runs (stopping cancels what is in flight)
        stats = dataclasses.replace(scheduler.stats)
        finished, in_flight = done, scheduler.running
    assert most == 3
    # 30 polls of 0.3 interval through 3 slots cannot all fit: the overload is counted
    # (cut at the deadline after a late slot, or starved waiting for one)
    assert scheduler.stats.starved + scheduler.stats.deadline_exceeded > 0
    # every poll started is accounted for: finished, starved, cut at its deadline, or
    # still running
    assert finished > 0
    accounted = finished + stats.starved + stats.deadline_exceeded
    assert accounted <= stats.started <= accounted + in_flight


@pytest.mark.parametrize("change", ["add", "remove"])
async def test_inventory_changes_take_effect(change: str) -> None:
    polls: collections.Counter[str] = collections.Counter()

    async def poll(key: str, _due: float) -> None:
        polls[key] += 1

    scheduler = make(poll)
    scheduler.set_keys(["a", "b"])
    async with running(scheduler):
        await asyncio.sleep(INTERVAL * 2.2)
        if change == "add":
            scheduler.set_keys(["a", "b", "c"])
        else:
            scheduler.set_keys(["a"])
        before = dict(polls)
        await asyncio.sleep(INTERVAL * 3.2)
    if change == "add":
        assert polls["c"] >= 2
    else:
        assert polls["b"] <= before["b"] + 1  # at most the one already due
        assert polls["a"] >= before["a"] + 2
