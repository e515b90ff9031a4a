"""enoc.lifecycle: the Service contract and the Supervisor's order and crash policies."""

from __future__ import annotations

import asyncio

import pytest

from enoc.lifecycle import Adapter, Policy, Service, ServiceBase, StartError, Supervisor, WebSite
from enoc.retry import Backoff


class Part(ServiceBase):
    """A part that records its lifecycle in a shared journal."""

    def __init__(
        self, name: str, journal: list[str], *, fail_start: bool = False, crash: int = 0
    ) -> None:
        super().__init__()
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.crash = crash  # how many runs raise before one waits for close
        self.runs = 0

    async def _start(self) -> None:
        self.journal.append(f"start {self.name}")
        if self.fail_start:
            raise OSError("port taken")

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crash:
            raise RuntimeError(f"bug {self.runs}")
        await self.closing.wait()

    async def _close(self) -> None:
        self.journal.append(f"close {self.name}")


def quick() -> Backoff:
    return Backoff(0.001, 0.002)


async def test_starts_in_order_and_closes_in_reverse() -> None:
    journal: list[str] = []
    supervisor = Supervisor("agent", backoff=quick)
    for name in ("publisher", "scheduler", "traps"):
        supervisor.add(Part(name, journal))
    stop = asyncio.Event()
    await supervisor.start()
    asyncio.get_running_loop().call_soon(stop.set)
    assert await supervisor.run(stop) == 0
    assert journal == [
        "start publisher",
        "start scheduler",
        "start traps",
        "close traps",
        "close scheduler",
        "close publisher",
    ]
    assert {s.state for s in supervisor.states} == {"closed"}


async def test_a_failed_start_closes_what_started_and_names_the_part() -> None:
    journal: list[str] = []
    supervisor = Supervisor("collector")
    supervisor.add(Part("store", journal))
    supervisor.add(Part("http", journal, fail_start=True))
    supervisor.add(Part("ingest", journal))
    with pytest.raises(StartError, match="http failed to start: port taken"):
        await supervisor.start()
    assert journal == ["start store", "start http", "close http", "close store"]


async def test_restart_policy_runs_a_crashed_part_again() -> None:
    journal: list[str] = []
    part = Part("lane", journal, crash=2)
    supervisor = Supervisor("collector", backoff=quick)
    supervisor.add(part, Policy.RESTART)
    stop = asyncio.Event()
    await supervisor.start()
    task = asyncio.create_task(supervisor.run(stop))
    while part.runs < 3:
        await asyncio.sleep(0.001)
    stop.set()
    assert await task == 0
    assert supervisor.crashes() == {"lane": 2}
    assert supervisor.states[0].last_error == "RuntimeError: bug 2"


async def test_exit_policy_stops_everything_with_a_nonzero_exit() -> None:
    journal: list[str] = []
    supervisor = Supervisor("agent", backoff=quick)
    supervisor.add(Part("publisher", journal))
    supervisor.add(Part("scheduler", journal, crash=1))
    await supervisor.start()
    assert await supervisor.run(asyncio.Event()) == 1
    assert journal[-2:] == ["close scheduler", "close publisher"]
    assert [s.state for s in supervisor.states] == ["closed", "failed"]


async def test_a_run_that_returns_by_itself_is_a_crash() -> None:
    class Quitter(ServiceBase):
        name = "quitter"

        async def run(self) -> None:
            return

    supervisor = Supervisor("sim")
    supervisor.add(Quitter())
    await supervisor.start()
    assert await supervisor.run(asyncio.Event()) == 1
    assert supervisor.states[0].last_error == "returned while running"


async def test_a_part_that_ignores_close_is_cancelled_after_the_grace() -> None:
    class Stubborn(ServiceBase):
        name = "stubborn"

        async def run(self) -> None:
            await asyncio.Event().wait()

    supervisor = Supervisor("sim", grace=0.01)
    supervisor.add(Stubborn())
    stop = asyncio.Event()
    stop.set()
    await supervisor.start()
    assert await supervisor.run(stop) == 0


async def test_close_is_idempotent_and_safe_without_start() -> None:
    journal: list[str] = []
    part = Part("sink", journal)
    assert isinstance(part, Service)
    await part.close()
    await part.close()
    assert journal == ["close sink"]
    await asyncio.wait_for(part.run(), 1)  # a closed part's run returns at once


def test_two_parts_may_not_share_a_name() -> None:
    supervisor = Supervisor("agent")
    supervisor.add(Part("publisher", []))
    with pytest.raises(ValueError, match="two parts named 'publisher'"):
        supervisor.add(Part("publisher", []))


async def test_close_waits_for_the_loop_before_cleaning_up() -> None:
    """What a loop uses (a spool, a socket) is released only once the loop has returned."""
    journal: list[str] = []

    class Looper(ServiceBase):
        name = "looper"

        async def _run(self) -> None:
            await self.closing.wait()
            await asyncio.sleep(0.01)  # a last flush
            journal.append("loop returned")

        async def _close(self) -> None:
            journal.append("cleaned up")

    part = Looper()
    task = asyncio.create_task(part.run())
    await asyncio.sleep(0)
    await part.close()
    await task
    assert journal == ["loop returned", "cleaned up"]


async def test_an_adapter_gives_a_run_stop_loop_the_shape() -> None:
    journal: list[str] = []

    async def loop(stop: asyncio.Event) -> None:
        journal.append("loop")
        await stop.wait()

    async def opened() -> None:
        journal.append("open")

    async def closed() -> None:
        journal.append("close")

    part = Adapter("feed", start=opened, loop=loop, close=closed)
    supervisor = Supervisor("collector")
    supervisor.add(part, Policy.RESTART)
    stop = asyncio.Event()
    await supervisor.start()
    task = asyncio.create_task(supervisor.run(stop))
    while "loop" not in journal:
        await asyncio.sleep(0.001)
    stop.set()
    assert await task == 0
    assert journal == ["open", "loop", "close"]


async def test_a_web_site_that_cannot_bind_fails_its_start_and_holds_nothing() -> None:
    from aiohttp import web

    first = WebSite("http", web.Application(), "127.0.0.1", 0)
    await first.start()
    try:
        taken = WebSite("http", web.Application(), "127.0.0.1", first.port)
        with pytest.raises(OSError, match="in use"):
            await taken.start()
        assert taken._runner is None
    finally:
        await first.close()
        await first.close()
