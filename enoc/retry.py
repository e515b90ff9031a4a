"""Retrying, said once: a capped, jittered exponential backoff, the Retry-After header,
and the two kinds of failure every outbound stage tells apart.

A failure is *retryable* when the same request may succeed later (a connection refused or
reset, a timeout, HTTP 5xx or 429, a broker that is away) and *permanent* when sending it
again can only fail the same way (HTTP 4xx other than 429, a payload the server refuses).
The publisher, the ingest lanes, the metrics sinks, the notifiers and the store raise
these two classes, or subclasses of them, so one rule decides what a loop does next:
retry after a wait, or count the item and move on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_RETRY_AFTER",
    "Backoff",
    "PermanentError",
    "RetryableError",
    "http_status_retryable",
    "parse_retry_after",
    "pause",
]

MAX_RETRY_AFTER = 60.0  # a server asking for longer is retried after this anyway


class RetryableError(Exception):
    """The request may succeed later; `retry_after` is the server's own wait, if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Sending the same request again can only fail the same way."""


def http_status_retryable(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 5xx, 429, and 0 (no answer at all)."""
    return status in {0, 429} or status >= 500


class Backoff:
    """Exponential backoff with a cap and +-`jitter` spread, so that a thousand agents or
    replicas cut off together do not come back together.

    `next()` gives the wait before the next attempt and doubles the base for the one
    after; `reset()` after a success. The random source is injectable for tests."""

    def __init__(
        self,
        start: float,
        cap: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < start <= cap:
            msg = f"backoff start must be above 0 and at most its cap, got {start} and {cap}"
            raise ValueError(msg)
        if factor < 1 or not 0 <= jitter < 1:
            msg = f"backoff factor must be at least 1 and jitter in [0, 1), got {factor}, {jitter}"
            raise ValueError(msg)
        self.start = start
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        self.current = start  # the base of the next wait, before jitter
        self.attempts = 0  # failures since the last reset

    def next(self) -> float:
        """The wait before the next attempt (jittered); doubles the base, up to the cap."""
        wait = self.current * self._rng(1 - self.jitter, 1 + self.jitter)
        self.current = min(self.cap, self.current * self.factor)
        self.attempts += 1
        return wait

    def reset(self) -> None:
        self.current = self.start
        self.attempts = 0

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep the next wait, or less if `stop` is set first; True when stopped."""
        return await pause(stop, self.next())


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if `stop` is set first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def parse_retry_after(
    value: str | None, now: Callable[[], float] = time.time, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110: delay-seconds or an HTTP date),
    at most `cap`; None without a usable one (absent, garbled, NaN)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(cap, max(0.0, seconds))
