"""Server-sent events: every replica streams every incident and status change, in one order.

The store's change log (`changes`, collector/store.py) is the stream. Each
replica's `ChangeFeed` follows it: woken at once by this replica's own
commits, by PostgreSQL's NOTIFY for the other replicas' commits, and polling
every `store.poll_interval` whatever happens (a lost notification costs at most
that). It hands each row to the `Hub` in id order; the row's id is the SSE
event id, the same on every replica, so a client that reconnects anywhere with
`Last-Event-ID` resumes where it was. The hub keeps the latest events in a
replay ring; older ones are read from the store, back to
`store.changes_retention`. A client whose `Last-Event-ID` is older than what
can be replayed (its changes were pruned) or that the store never gave gets one
`reset` event instead (`resume`): reload the state, then follow the stream.

Each subscriber has a bounded queue. A client too slow to keep up is
disconnected (its browser reconnects with Last-Event-ID and catches up)
rather than making the collector hold an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property

from collector.config import StoreConfig
from collector.store import Store, Tx
from enoc.lifecycle import ServiceBase
from enoc.logs import StateLogger, get_logger

log = get_logger("enoc.collector.stream")

PAGE = 500  # change-log rows per read
PRUNE_EVERY = 60.0  # seconds between prunes of the change log (by each replica)


@dataclass(frozen=True)
class StreamEvent:
    id: int  # the change log's id: global across replicas
    kind: str  # incident | status
    body: str  # the event's JSON data, as logged

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {self.body}\n\n".encode()

    @cached_property
    def place(self) -> tuple[str, str] | None:
        """(rtc, site) of the incident or agent the event is about; None for an event
        about no place (`reset`). Read once per event, however many streams filter it."""
        if self.kind not in ("incident", "status"):
            return None
        try:
            data = json.loads(self.body)
            about = data["incident"] if self.kind == "incident" else data
            return str(about.get("rtc", "")), str(about.get("site", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return "", ""  # unreadable: inside no scope but everything


def reset(resume_id: int, reason: str, last_id: int) -> StreamEvent:
    """The `reset` event: what the client missed cannot be replayed; it reloads the state
    and goes on from `resume_id` (the event's id, so a later reconnect resumes there)."""
    body = json.dumps({"reason": reason, "last_event_id": last_id, "resume_id": resume_id})
    return StreamEvent(resume_id, "reset", body)


class Subscription:
    def __init__(self, hub: Hub, size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(size)
        self.overflowed = False

    def offer(self, event: StreamEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the reader sees None and ends the response
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class Hub:
    """Fan-out of the change log to this replica's stream clients, with a replay ring."""

    def __init__(self, replay: int = 1000, queue_size: int = 1000) -> None:
        self._ring: deque[StreamEvent] = deque(maxlen=replay)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self.last_id = 0  # the newest event published
        self.floor = 0  # every event with an id above this is in the ring
        self.published = 0
        self.dropped_clients = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def start(self, last_id: int) -> None:
        """Begin after change `last_id` (the log's end when the feed started)."""
        self.last_id = self.floor = last_id

    def publish(self, event: StreamEvent) -> None:
        if event.id <= self.last_id:
            return  # the feed reads in id order; never go back
        if len(self._ring) == self._ring.maxlen:
            self.floor = self._ring[0].id
        self._ring.append(event)
        self.last_id = event.id
        self.published += 1
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.overflowed:
                self.dropped_clients += 1
                self._subscribers.discard(sub)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def since(self, last_id: int) -> list[StreamEvent] | None:
        """The events after `last_id` if the ring holds them all, else None (read the store)."""
        if last_id < self.floor:
            return None
        return [e for e in self._ring if e.id > last_id]

    def close(self) -> None:
        for sub in list(self._subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self._subscribers.clear()


class ChangeFeed(ServiceBase):
    """Follows the store's change log into the hub; prunes the log; wakes the notifier.

    It reads through its own store connection (and thread), so that following
    never queues behind the engine's writes, nor they behind it: `start` opens it
    at the log's end, `run` follows until `close`, which closes it."""

    name = "feed"

    def __init__(self, config: StoreConfig, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.poll_interval = float(config.poll_interval)
        self.retention = float(config.changes_retention)
        self.reader = Store(config.url)
        self.listeners: list[Callable[[], None]] = []  # called after new rows were read
        self.cursor = 0
        self.reads = 0
        self.rows = 0
        self.wakeups = 0
        self.pruned = 0
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._failures = StateLogger(log)

    @property
    def listening(self) -> bool:
        return self.reader.listening

    def wake(self) -> None:
        """Something was committed (here, or elsewhere as NOTIFY says): read now."""
        self.wakeups += 1
        self._wake.set()

    async def _start(self) -> None:
        """Begin at the log's end: the stream carries what happens from now on."""
        self.cursor = await self.reader.read(lambda tx: tx.last_change_id())
        self.hub.start(self.cursor)

    async def _run(self) -> None:
        stop = self.closing
        listener = asyncio.create_task(self.reader.listen(self.wake, stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()
                if stop.is_set():
                    break
                try:
                    await self.catch_up()
                    if time.time() - self._last_prune >= PRUNE_EVERY:
                        await self.prune()
                except Exception as exc:  # the store is down: the next round retries
                    self._failures.failed("change feed", exc)
                else:
                    self._failures.ok("change feed")
        finally:
            await asyncio.wait({listener}, timeout=5)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _close(self) -> None:
        await self.reader.close()

    async def catch_up(self) -> None:
        """Publish every logged change after the cursor, in order."""
        new = False
        while True:
            cursor = self.cursor
            rows = await self.reader.changes_after(cursor, PAGE)
            self.reads += 1
            for id_, kind, _change, body in rows:
                self.hub.publish(StreamEvent(id_, kind, body))
                self.cursor = id_
            self.rows += len(rows)
            new = new or bool(rows)
            if len(rows) < PAGE:
                break
        if new:
            for listener in self.listeners:
                listener()

    async def history(self, last_id: int) -> AsyncIterator[StreamEvent]:
        """The logged events after `last_id`, from the store, oldest first."""
        while True:
            after = last_id
            rows = await self.reader.changes_after(after, PAGE)
            for id_, kind, _change, body in rows:
                yield StreamEvent(id_, kind, body)
                last_id = id_
            if len(rows) < PAGE:
                return

    async def last_logged(self) -> int:
        return await self.reader.read(lambda tx: tx.last_change_id())

    async def oldest_logged(self) -> int | None:
        """The oldest change still in the log (None when it is empty)."""
        row = await self.reader.read(lambda tx: tx.one("SELECT MIN(id) FROM changes"))
        return None if row is None or row[0] is None else int(row[0])

    async def prune(self) -> None:
        """Drop changes older than the retention that every live webhook has passed."""
        self._last_prune = now = time.time()
        cutoff = now - self.retention

        def delete(tx: Tx) -> int:
            # a webhook no replica has touched for a day no longer holds the log back
            row = tx.one(
                "SELECT MIN(last_id) FROM notify_cursors WHERE updated > ?", (now - 86400,)
            )
            keep_from = int(row[0]) if row and row[0] is not None else tx.last_change_id()
            return tx.execute("DELETE FROM changes WHERE at < ? AND id <= ?", (cutoff, keep_from))

        self.pruned += await self.reader.read(delete)


async def resume(hub: Hub, feed: ChangeFeed, last_id: int) -> AsyncIterator[StreamEvent]:
    """What a client that saw every change up to `last_id` missed, oldest first: from the
    hub's ring, else from the store's log. When that cannot be complete, one `reset`
    event instead, whose id is where the stream goes on from:

    - `unknown`: an id the store never gave (another store, a restored backup);
    - `expired`: the log no longer holds the change after `last_id` (pruned after
      `store.changes_retention`). The log's ids are consecutive but for rare gaps (a
      rolled-back PostgreSQL transaction, a crash): one there costs a needless reset.

    The store may be read (and fail) here: the caller ends the response, the client
    retries."""
    if last_id <= 0:
        return
    if last_id > hub.last_id and last_id > await feed.last_logged():
        yield reset(hub.last_id, "unknown", last_id)
        return
    missed = hub.since(last_id)
    if missed is not None:
        for event in missed:
            yield event
        return
    oldest = await feed.oldest_logged()
    if oldest is None or oldest > last_id + 1:
        yield reset(hub.last_id, "expired", last_id)
        return
    async for event in feed.history(last_id):
        yield event
