"""Poll scheduling: every device once per interval, spread by a stable jitter, never stacked.

Each device gets a fixed offset inside the interval (from a hash of its
name), so a thousand devices do not all fire at second zero and a restart
keeps the same rhythm. A poll runs under a deadline that includes its wait
for a concurrency slot; a device whose previous poll is still running when
it is due again is skipped and counted (an overrun), never polled twice at
once. A slow device holds one slot, never the schedule.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass


@dataclass
class SchedulerStats:
    started: int = 0
    overruns: int = 0  # due while the previous poll still ran: skipped
    deadline_exceeded: int = 0  # cancelled at the deadline after it got a slot
    starved: int = 0  # cancelled at the deadline while waiting for a slot (agent overloaded)


class Scheduler:
    def __init__(
        self,
        interval: float,
        poll: Callable[[str, float], Awaitable[None]],
        *,
        concurrency: int,
        deadline: float,
        on_deadline: Callable[[str, float], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        now = self.clock()
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

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if not self._heap:
                    self._changed.clear()
                    await _first(stop.wait(), self._changed.wait(), timeout=None)
                    continue
                due, key = self._heap[0]
                wait = due - self.clock()
                if wait > 0:
                    self._changed.clear()
                    await _first(stop.wait(), self._changed.wait(), timeout=wait)
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
        got_slot = False
        try:
            async with asyncio.timeout(self.deadline):
                async with self._slots:
                    got_slot = True
                    await self.poll(key, due)
        except TimeoutError:
            if got_slot:
                self.stats.deadline_exceeded += 1
                self.on_deadline(key, due)
            else:
                self.stats.starved += 1


async def _first(*waits: Awaitable[object], timeout: float | None) -> None:  # noqa: ASYNC109
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
