"""Server-sent events fan-out: incident and state changes to every console and API client.

Each subscriber has a bounded queue. A client too slow to keep up is
disconnected (its browser reconnects with Last-Event-ID and catches up from
the replay ring) rather than making the collector hold an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StreamEvent:
    id: int
    kind: str  # incident | status
    data: dict[str, Any]

    def encode(self) -> bytes:
        body = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


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
    def __init__(self, replay: int = 1000, queue_size: int = 1000) -> None:
        self._ids = itertools.count(1)
        self._ring: deque[StreamEvent] = deque(maxlen=replay)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self.published = 0
        self.dropped_clients = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, data: dict[str, Any]) -> StreamEvent:
        event = StreamEvent(next(self._ids), kind, data)
        self._ring.append(event)
        self.published += 1
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.overflowed:
                self.dropped_clients += 1
                self._subscribers.discard(sub)
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def since(self, last_id: int) -> Iterator[StreamEvent]:
        """Events after `last_id` still in the replay ring (for Last-Event-ID)."""
        return (e for e in list(self._ring) if e.id > last_id)

    def close(self) -> None:
        for sub in list(self._subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)
        self._subscribers.clear()
