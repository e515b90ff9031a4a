"""Poll scheduling: every device once per interval, spread by a stable jitter, never stacked.

Each device gets a fixed offset inside the interval (from a hash of its
name), so a thousand devices do not all fire at second zero and a restart
keeps the same rhythm. A poll runs under a deadline that includes its wait
for a concurrency slot; a device whose previous poll is still running when
it is due again is skipped and counted (an overrun), never polled twice at
once. A slow device holds one slot, never the schedule.

Time comes from an injected `Clock` (its `time` and `sleep`): waits for the
next due poll and poll deadlines both run on it, so tests drive the schedule
on a fake clock and count exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from enoc.lifecycle import ServiceBase


class Clock(Protocol):
    """Where the scheduler reads the time and waits: the system's, or a test's fake that
    moves only when the test says (STYLE.md practice 9)."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time (poll timestamps, offsets within the interval) and asyncio sleeps."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass
class SchedulerStats:
    started: int = 0
    overruns: int = 0  # due while the previous poll still ran: skipped
    deadline_exceeded: int = 0  # cancelled at the deadline after it got a slot
    starved: int = 0  # cancelled at the deadline while waiting for a slot (agent overloaded)


class Scheduler(ServiceBase):
    """Starts each key's poll when due until `close`, which cancels the polls in flight."""

    name = "scheduler"

    def __init__(
        self,
        interval: float,
        poll: Callable[[str, float], Awaitable[None]],
        *,
        concurrency: int,
        deadline: float,
        on_deadline: Callable[[str, float], None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.poll = poll
        self.deadline = deadline
        self.on_deadline = on_deadline
        self.clock = clock
        self.stats = SchedulerStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._heap: list[tuple[float, str]] = []
        self._keys: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()

    def offset(self, key: str) -> float:
        return zlib.crc32(key.encode()) / 2**32 * self.interval

    def set_keys(self, keys: Iterable[str]) -> None:
        """Add new keys at their offset in the coming interval; removed keys drop out when due."""
        wanted = set(keys)
        now = self.clock.time()
        for key in wanted - self._keys:
            start = math.floor(now / self.interval) * self.interval + self.offset(key)
            if start < now:
                start += self.interval
            heapq.heappush(self._heap, (start, key))
        self._keys = wanted
        self._changed.set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def _run(self) -> None:
        stop = self.closing
        try:
            while not stop.is_set():
                if not self._heap:
                    self._changed.clear()
                    await _first(stop.wait(), self._changed.wait())
                    continue
                due, key = self._heap[0]
                wait = due - self.clock.time()
                if wait > 0:
                    self._changed.clear()
                    await _first(stop.wait(), self._changed.wait(), self.clock.sleep(wait))
                    continue
                heapq.heappop(self._heap)
                if key not in self._keys:
                    continue
                heapq.heappush(self._heap, (due + self.interval, key))
                if key in self._running:
                    self.stats.overruns += 1
                    continue
                self.stats.started += 1
                task = asyncio.create_task(self._one(key, due), name=f"poll {key}")
                self._running[key] = task
                task.add_done_callback(self._finished)
        finally:
            for task in list(self._running.values()):
                task.cancel()
            if self._running:
                await asyncio.wait(list(self._running.values()), timeout=5)

    def _finished(self, task: asyncio.Task[None]) -> None:
        key = task.get_name().removeprefix("poll ")
        if self._running.get(key) is task:
            del self._running[key]

    async def _one(self, key: str, due: float) -> None:
        """One poll under its deadline (which includes the wait for a slot). The deadline is
        a watchdog on the scheduler's clock that cancels this task, as asyncio.timeout
        would on the loop's clock."""
        task = asyncio.current_task()
        assert task is not None
        expired = False

        async def watchdog() -> None:
            nonlocal expired
            await self.clock.sleep(self.deadline)
            expired = True
            task.cancel()

        guard = asyncio.create_task(watchdog(), name=f"deadline {key}")
        got_slot = False
        try:
            async with self._slots:
                got_slot = True
                await self.poll(key, due)
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise  # stopped from outside, not by the deadline
            if got_slot:
                self.stats.deadline_exceeded += 1
                self.on_deadline(key, due)
            else:
                self.stats.starved += 1
        finally:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
