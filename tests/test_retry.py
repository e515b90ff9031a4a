"""enoc.retry: the one backoff, Retry-After parser and error taxonomy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from enoc.retry import Backoff, http_status_retryable, parse_retry_after, pause


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, rng=lambda low, high: 1.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.next() == 0.5


def test_backoff_jitter_stays_within_its_spread() -> None:
    spreads: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        spreads.append((low, high))
        return high

    backoff = Backoff(1.0, 10.0, jitter=0.2, rng=rng)
    assert backoff.next() == pytest.approx(1.2)
    assert spreads == [(0.8, 1.2)]


@pytest.mark.parametrize(("start", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_backoff_refuses_nonsense(start: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff start"):
        Backoff(start, cap)


def test_retry_after_seconds_dates_and_garbage() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("86400") == 60.0
    assert parse_retry_after("86400", cap=120.0) == 120.0
    now = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 12, 6, 10, 0, 20, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp) == pytest.approx(20.0)
    for garbage in (None, "", "soon", "nan", "Mon, 99 Foo 2026"):
        assert parse_retry_after(garbage) is None


def test_http_statuses() -> None:
    assert [http_status_retryable(s) for s in (0, 200, 400, 404, 429, 500, 503)] == [
        True,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


async def test_pause_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await pause(stop, 30.0) is True
    assert await pause(asyncio.Event(), 0.0) is False
