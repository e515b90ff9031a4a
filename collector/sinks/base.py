"""The metrics sink seam: the `MetricsSink` protocol, the buffered batching every HTTP sink
shares, and `Sinks`, the fan-out the collector writes through.

A sink takes a message's points as line protocol (`write(lines, points, on_written)`,
each line ending in a newline) and calls `on_written` once it holds them for good:
accepted by its server, or refused for good (counted and logged, for sending them again
could only fail the same way). `Sinks` gives each message to every configured sink and
calls the message's own callback, which acknowledges it over MQTT, only when the last
sink has called back: a message held back by one sink's outage is not acknowledged,
whatever the others did with it.

`BufferedSink` is the batching: a bounded buffer `write` waits on while it is full
(backpressure: the collector stops consuming), one loop (`run`) sending batches by size,
by time or at once on `flush`, and retrying what is worth retrying (`WriteFailed`, a
`RetryableError`) after the server's Retry-After or a capped, jittered backoff, forever:
the batch stays in the buffer meanwhile, so nothing is acknowledged that is not written.
A subclass says how a batch is sent (`_send`) and what a refusal (`WriteRefused`, a
`PermanentError`) costs (`_deliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, SupportsFloat

from enoc.logs import FieldLogger, StateLogger
from enoc.retry import Backoff, PermanentError, RetryableError

# Refusals that say the link itself is wrong (credentials, permissions, bucket or database),
# not one batch's content: the sink is reported unhealthy until a write succeeds.
LINK_REFUSALS = {
    401: "bad credentials",
    403: "not allowed to write",
    404: "no such bucket or database",
}
# The counters of each sink in /metrics, as `sink_<this>.<sink name>` (label `sink`).
SINK_FAMILIES = (
    "points_written",
    "points_dropped",
    "write_batches_refused",
    "incident_points_dropped",
    "write_retries",
    "write_buffer_points",
    "lines_dead_lettered",
    "up",
)
BACKOFF_START = 0.5  # seconds before the first retry of a batch, doubling ...
BACKOFF_CAP = 30.0  # ... up to this


class WriteFailed(RetryableError):
    """A failure worth retrying (connection error, TLS failure, 5xx, 429)."""


class WriteRefused(PermanentError):
    """The server refused a batch for good (4xx other than 429); `dropped` is the number of
    points a partial write says it dropped (None: the whole batch); `body` its answer."""

    def __init__(
        self, status: int, message: str, dropped: int | None = None, body: str = ""
    ) -> None:
        hint = LINK_REFUSALS.get(status)
        super().__init__(f"HTTP {status}{f' ({hint})' if hint else ''}: {message}")
        self.status = status
        self.dropped = dropped
        self.body = body or message


@dataclass
class SinkStats:
    points_written: int = 0
    batches_written: int = 0
    bytes_sent: int = 0
    retries: int = 0
    points_dropped: int = 0
    batches_refused: int = 0
    overflow_dropped: int = 0  # write_nowait points refused by a full buffer
    buffer_points: int = 0
    lines_refused: Counter[str] = field(default_factory=Counter)  # by device
    dead_lettered: int = 0  # refused lines published as dead letters
    isolation_requests: int = 0  # writes spent finding refused lines
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class MetricsSink(Protocol):
    """Where metrics go. The lifecycle of enoc's services: `start` opens the client (and
    raises, leaving nothing open, when it cannot), `run` is the sending loop and returns
    once `close` was called, `close` sends what is buffered within `grace` seconds, is
    idempotent and safe without `start`."""

    name: str  # the sink's name in /healthz and the counters
    healthy: bool  # false while writes fail or the link is refused (/healthz)
    stats: SinkStats

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self, grace: float = 10.0) -> None: ...

    async def write(
        self, lines: bytes, points: int, on_written: Callable[[], None] | None = None
    ) -> None:
        """Take `points` lines (`lines`, each ending in a newline); waits while full;
        `on_written` once they are held for good (written, or refused for good)."""

    def write_nowait(self, lines: bytes, points: int) -> bool:
        """Take lines without waiting (an operator's request must not hang on a slow
        database); refused (False) and counted when the buffer is well over full."""

    def flush(self) -> None:
        """Send what is buffered now, not at the next batch size or flush interval."""


Callback = Callable[[], None] | None


class Batching(Protocol):
    """What a buffered sink's config says of its batches."""

    @property
    def url(self) -> str: ...

    @property
    def batch_size(self) -> int: ...  # lines per write

    @property
    def flush_interval(self) -> SupportsFloat: ...  # seconds: a smaller batch waits this long

    @property
    def max_buffer_points(self) -> int: ...  # then `write` waits (backpressure)


class BufferedSink:
    """A bounded buffer and one sending loop (see the module's docstring). Subclasses set
    `what` and `link` (for logs), `url` and `log`, and implement `_open`, `_shut`,
    `_send` and, for their own refusal rules, `_deliver`."""

    what = "the sink"  # who refuses or accepts, in logs
    link = "the sink's writes"  # what fails and recovers, in logs

    def __init__(self, name: str, config: Batching, log: FieldLogger) -> None:
        self.name = name
        self.url = config.url
        self.log = log
        self.batch_size = config.batch_size
        self.flush_interval = float(config.flush_interval)
        self.stats = SinkStats()
        self.max_buffer = max(config.max_buffer_points, config.batch_size)
        self.healthy = True
        self._buffer: deque[tuple[bytes, int, Callback]] = deque()
        self._space = asyncio.Condition()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = StateLogger(log)
        self._refusals = 0  # batches refused since the last accepted write
        self._refused_status = 0  # the status of the last refusal logged

    # ---------------------------------------------------------------- producers

    async def write(self, lines: bytes, points: int, on_written: Callback = None) -> None:
        if not points:
            if on_written is not None:
                on_written()
            return
        stats = self.stats
        if stats.buffer_points + points > self.max_buffer and self._buffer:
            async with self._space:
                await self._space.wait_for(
                    lambda: stats.buffer_points + points <= self.max_buffer or not self._buffer
                )
        self._buffer.append((lines, points, on_written))
        stats.buffer_points += points
        if stats.buffer_points >= self.batch_size:
            self._wake.set()

    def write_nowait(self, lines: bytes, points: int) -> bool:
        """Refused and counted beyond 10 % over the buffer's limit."""
        if self.stats.buffer_points + points > self.max_buffer * 1.1:
            self.stats.overflow_dropped += points
            return False
        self._buffer.append((lines, points, None))
        self.stats.buffer_points += points
        if self.stats.buffer_points >= self.batch_size:
            self._wake.set()
        return True

    def flush(self) -> None:
        self._wake.set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self._open()

    async def close(self, grace: float = 10.0) -> None:
        """Write what is buffered (within `grace` seconds), then stop the loop and the
        client."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), grace)
            if not self._closed.is_set():
                task.cancel()  # a batch still retried: it stays unacknowledged
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), 1.0)
        await self._shut()

    async def run(self) -> None:
        """The sending loop, until `close` (after its grace, cancelled there)."""
        if self._closing:  # closed before it ran: the client is gone
            self._closed.set()
            return
        self._task = asyncio.current_task()
        try:
            await self._loop()
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            self._closed.set()

    async def _open(self) -> None:
        """Make the client; raise when that cannot be done."""

    async def _shut(self) -> None:
        """Close the client (idempotent)."""

    async def _send(self, body: bytes) -> None:
        """Send one prepared batch; raise WriteFailed or WriteRefused."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        interval = self.flush_interval
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                if not self._buffer:
                    continue
            elif not self._closing and self.stats.buffer_points < self.batch_size:
                # wait for more, up to the flush interval, unless woken
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
            await self._write_batch()

    def _take(self) -> tuple[list[bytes], int, list[Callback]]:
        chunks: list[bytes] = []
        points = 0
        callbacks: list[Callback] = []
        limit = self.batch_size
        for chunk, count, callback in self._buffer:
            if chunks and points + count > limit:
                break
            chunks.append(chunk)
            points += count
            callbacks.append(callback)
        return chunks, points, callbacks

    async def _write_batch(self) -> None:
        chunks, points, callbacks = self._take()
        await self._deliver(b"".join(chunks), points)
        for _ in callbacks:
            self._buffer.popleft()
        self.stats.buffer_points -= points
        for callback in callbacks:
            if callback is not None:
                callback()
        async with self._space:
            self._space.notify_all()

    async def _deliver(self, data: bytes, points: int) -> None:
        """Write one batch until it is written or refused for good."""
        try:
            await self._send_until_answered(data)
            self._accepted(points)
            self.stats.batches_written += 1
        except WriteRefused as exc:
            self._refused(exc, points)

    async def _send_until_answered(self, body: bytes) -> None:
        """Send `body` until the server accepts it (returns) or refuses it for good (raises
        WriteRefused); what is worth retrying is retried with backoff, or after the
        server's Retry-After (at most a minute: enoc.retry.parse_retry_after)."""
        backoff = Backoff(BACKOFF_START, BACKOFF_CAP)
        while True:
            try:
                await self._send(body)
            except WriteFailed as exc:
                self.healthy = False
                self.stats.retries += 1
                self.stats.errors["retryable"] += 1
                self.stats.last_error = str(exc)
                self._outage.failed(self.link, exc, url=self.url)
                wait = exc.retry_after if exc.retry_after is not None else backoff.next()
                await asyncio.sleep(wait)
            else:
                return

    def _accepted(self, points: int) -> None:
        self.stats.points_written += points
        self.healthy = True
        self._outage.ok(self.link, url=self.url)
        if self._refusals:
            self.log.info(
                "%s accepts writes again, after %d refused batches",
                self.what,
                self._refusals,
                url=self.url,
            )
            self._refusals = self._refused_status = 0

    def _count_refusal(self, exc: WriteRefused) -> bool:
        """Count a refusal; True when it is the first of its status in a streak (log it)."""
        self.stats.batches_refused += 1
        self.stats.errors[f"http_{exc.status}"] += 1
        self.stats.last_error = str(exc)
        if exc.status in LINK_REFUSALS:
            self.healthy = False
        self._refusals += 1
        first = exc.status != self._refused_status
        self._refused_status = exc.status
        return first

    def _refused(self, exc: WriteRefused, points: int) -> None:
        """A batch refused for good: count, log once per streak (and per new status)."""
        dropped = points if exc.dropped is None else min(points, exc.dropped)
        self.stats.points_dropped += dropped
        self.stats.points_written += points - dropped  # a partial write's rest
        if self._count_refusal(exc):
            self.log.error(
                "%s refused a batch for good (%s): %d of its %d points dropped and "
                "acknowledged, not retried; further refusals are only counted until a write "
                "is accepted",
                self.what,
                exc,
                dropped,
                points,
                url=self.url,
                status=exc.status,
            )


class _Countdown:
    """Calls `done` once `count` sinks have called back."""

    __slots__ = ("done", "left")

    def __init__(self, count: int, done: Callable[[], None]) -> None:
        self.left = count
        self.done = done

    def __call__(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done()


class Sinks:
    """Every configured sink as one: a message is given to each and acknowledged (its
    `on_written`) when the last has it; `flush`, `start`, `run` and `close` go to all."""

    name = "sinks"

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"two metrics sinks of one name: {names}")
        self.sinks = list(sinks)
        self._by_name = {s.name: s for s in sinks}
        self._started: list[MetricsSink] = []
        self._closing = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def __getitem__(self, name: str) -> MetricsSink:
        return self._by_name[name]

    async def write(self, lines: bytes, points: int, on_written: Callback = None) -> None:
        sinks = self.sinks
        if len(sinks) == 1:  # the common case, and the benchmark's: no countdown
            await sinks[0].write(lines, points, on_written)
            return
        if not sinks:
            if on_written is not None:
                on_written()
            return
        done = None if on_written is None else _Countdown(len(sinks), on_written)
        for sink in sinks:  # each may wait for room: the slowest holds the collector back
            await sink.write(lines, points, done)

    def write_nowait(self, lines: bytes, points: int) -> None:
        for sink in self.sinks:
            sink.write_nowait(lines, points)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def counters(self) -> dict[str, float]:
        """The sinks' counters for /metrics: today's names summed over every sink (with one
        sink, that sink's), and each sink's own as `sink_<counter>.<name>`."""
        out: dict[str, float] = {}
        if not self.sinks:
            return out
        for sink in self.sinks:
            s = sink.stats
            own = {
                "points_written": s.points_written,
                "points_dropped": s.points_dropped,
                "write_batches_refused": s.batches_refused,
                "incident_points_dropped": s.overflow_dropped,
                "write_retries": s.retries,
                "write_buffer_points": s.buffer_points,
                "lines_dead_lettered": s.dead_lettered,
            }
            for key, value in own.items():
                out[key] = out.get(key, 0) + value
                out[f"sink_{key}.{sink.name}"] = value
            out[f"sink_up.{sink.name}"] = int(sink.healthy)
            # by device: enoc_collector_lines_refused_total{device="<device>"}
            for device, count in s.lines_refused.items():
                key = f"lines_refused.{device}"
                out[key] = out.get(key, 0) + count
        return out

    async def start(self) -> None:
        """Start every sink; when one cannot start, close those started and raise."""
        try:
            for sink in self.sinks:
                await sink.start()
                self._started.append(sink)
        except BaseException:
            await self.close()
            raise

    async def run(self) -> None:
        """Every started sink's loop, until `close` (also with no sink configured: the
        part's loop returning by itself would read as a crash)."""
        async with asyncio.TaskGroup() as group:
            for sink in self._started:
                group.create_task(sink.run(), name=f"sink[{sink.name}]")
            group.create_task(self._closing.wait(), name="sinks:closing")

    async def close(self, grace: float = 10.0) -> None:
        self._closing.set()
        started, self._started = self._started, []
        await asyncio.gather(*(sink.close(grace) for sink in started))
