"""One lifecycle for every long-lived part, and a supervisor that watches them.

The contract (after the OpenTelemetry Collector's component lifecycle):

- `start()` acquires what the part needs (sockets, files, connections) and raises if it
  cannot, leaving nothing open: the process fails fast at start-up.
- `run()` is the part's long-lived loop. It returns once `close()` has been called; a part
  with no loop of its own waits for that.
- `close()` is idempotent, safe without `start()` and safe twice; it flushes what the part
  holds and makes `run()` return.

The supervisor starts its parts in the order they were added and closes them in the
reverse order. Add the downstream parts first (sinks, the publisher) and the inputs last
(pollers, MQTT lanes): the inputs then stop first and the sinks flush last, so what was in
flight drains instead of being cut off.

Each part runs in a named task of one TaskGroup, under a declared policy for a crash (an
exception out of `run()`, or `run()` returning while nobody closed it): `RESTART` runs it
again after a capped, jittered backoff; `EXIT` stops the process with a non-zero exit so
systemd or Kubernetes restarts it. Either way the crash is logged with its traceback and
counted, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from enoc.retry import Backoff, pause

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "Adapter",
    "Policy",
    "Service",
    "ServiceBase",
    "ServiceState",
    "StartError",
    "Supervisor",
    "WebSite",
]

log = logging.getLogger(__name__)

STABLE_AFTER = 60.0  # a run this long counts as recovered: the next crash backs off from the start


@runtime_checkable
class Service(Protocol):
    """A long-lived part of the agent, the collector or the simulator."""

    name: str

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


async def start_else_close(
    start: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[object]]
) -> None:
    """`start()`; when it fails, `close()` what it had opened before the error goes up."""
    try:
        await start()
    except BaseException:
        await close()
        raise


class ServiceBase:
    """The contract's bookkeeping for a part: `closing` is set by the first `close()`,
    which then waits (at most `grace`) for a `run()` in progress to return before
    `_close()` (the part's own clean-up) runs, once: a loop never finds what it uses
    closed under it. `run()` by default waits for close.

    Subclasses override `_start`, `_close` and, where they have a loop, `_run` (the
    loop, which returns once `closing` is set)."""

    name = "service"
    grace = 10.0  # how long close() waits for a running loop before it cleans up anyway

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self._closed = False
        self._idle = asyncio.Event()  # no run() in progress
        self._idle.set()

    async def start(self) -> None:
        await start_else_close(self._start, self.close)

    async def run(self) -> None:
        self._idle.clear()
        try:
            await self._run()
        finally:
            self._idle.set()

    async def close(self) -> None:
        self.closing.set()
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.grace)
        await self._close()

    async def _start(self) -> None:
        """Acquire what the part needs; what it opened before raising is closed by `close`."""

    async def _run(self) -> None:
        """The part's loop; returns once `closing` is set. Without one: wait for close."""
        await self.closing.wait()

    async def _close(self) -> None:
        """Release what `_start` acquired and flush; called once, after the loop returned."""


class Adapter(ServiceBase):
    """A Service made of callables, for a part whose own class has another shape (an
    `open`/`close` pair, a `run(stop)` loop): `loop` gets the `closing` event as its stop."""

    def __init__(
        self,
        name: str,
        *,
        start: Callable[[], Awaitable[object]] | None = None,
        loop: Callable[[asyncio.Event], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._start_fn = start
        self._loop_fn = loop
        self._close_fn = close

    async def _start(self) -> None:
        if self._start_fn is not None:
            await self._start_fn()

    async def _run(self) -> None:
        if self._loop_fn is None:
            await self.closing.wait()
        else:
            await self._loop_fn(self.closing)

    async def _close(self) -> None:
        if self._close_fn is not None:
            await self._close_fn()


class WebSite(ServiceBase):
    """An aiohttp application served on a TCP address: bound by `start` (a port taken
    fails the start), its connections closed by `close`. `port` is the bound one (a
    configured 0 picks a free port)."""

    def __init__(self, name: str, app: web.Application, host: str, port: int) -> None:
        super().__init__()
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _start(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Policy(enum.Enum):
    RESTART = "restart"  # run it again after a backoff
    EXIT = "exit"  # stop the process with a non-zero exit


class StartError(RuntimeError):
    """A part failed to start; the parts started before it were closed again."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"{name} failed to start: {cause}")
        self.name = name
        self.cause = cause


@dataclass
class ServiceState:
    """What the supervisor knows of one part (for health endpoints and heartbeats)."""

    name: str
    policy: Policy
    state: str = "new"  # new, starting, running, restarting, failed, closing, closed
    crashes: int = 0
    last_error: str = ""
    service: Service | None = field(default=None, repr=False)


class Supervisor:
    """Starts parts in order, runs each in a named task, applies its crash policy, and on
    `stop` (or an `EXIT` crash) closes them in reverse order."""

    def __init__(
        self,
        name: str,
        *,
        backoff: Callable[[], Backoff] = lambda: Backoff(1.0, 60.0),
        grace: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.backoff = backoff  # a fresh one for each part
        self.grace = grace  # how long a closed part's run() may take to return
        self._log = logger or log
        self._states: list[ServiceState] = []
        self._stopping = asyncio.Event()
        self.exit_code = 0

    def add(self, service: Service, policy: Policy = Policy.EXIT) -> None:
        if any(s.name == service.name for s in self._states):
            msg = f"{self.name}: two parts named {service.name!r}"
            raise ValueError(msg)
        self._states.append(ServiceState(service.name, policy, service=service))

    @property
    def states(self) -> list[ServiceState]:
        return list(self._states)

    def crashes(self) -> dict[str, int]:
        return {s.name: s.crashes for s in self._states}

    async def start(self) -> None:
        """Start every part in order; on a failure close those started (and the failing
        one, which may hold half of what it opened) in reverse, then raise StartError."""
        started: list[ServiceState] = []
        for state in self._states:
            assert state.service is not None
            state.state = "starting"
            try:
                await state.service.start()
            except Exception as exc:
                state.state = "failed"
                state.last_error = str(exc)
                for done in [state, *reversed(started)]:
                    await self._close_quietly(done)
                raise StartError(state.name, exc) from exc
            started.append(state)
            state.state = "running"

    async def run(self, stop: asyncio.Event) -> int:
        """Run the started parts until `stop` is set or an `EXIT` part crashes; close them
        in reverse order and return the process's exit code (0, or 1 after a crash)."""
        async with asyncio.TaskGroup() as group:
            watchers = [
                group.create_task(self._watch(state), name=f"{self.name}:{state.name}")
                for state in self._states
            ]
            stopped = group.create_task(stop.wait(), name=f"{self.name}:stop")
            stopping = group.create_task(self._stopping.wait(), name=f"{self.name}:crash")
            await asyncio.wait({stopped, stopping}, return_when=asyncio.FIRST_COMPLETED)
            self._stopping.set()
            stopped.cancel()
            for state, watcher in reversed(list(zip(self._states, watchers, strict=True))):
                await self._close_part(state, watcher)
        return self.exit_code

    async def serve(self, stop: asyncio.Event) -> int:
        """`start()` then `run(stop)`."""
        await self.start()
        return await self.run(stop)

    async def _watch(self, state: ServiceState) -> None:
        service = state.service
        assert service is not None
        backoff = self.backoff()
        while True:
            began = time.monotonic()
            try:
                await service.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    return
                state.last_error = f"{type(exc).__name__}: {exc}"
                self._log.exception("%s: %s crashed", self.name, state.name)
            else:
                if self._stopping.is_set():
                    return
                state.last_error = "returned while running"
                self._log.error("%s: %s stopped on its own", self.name, state.name)
            state.crashes += 1
            if state.policy is Policy.EXIT:
                state.state = "failed"
                self.exit_code = 1
                self._stopping.set()
                return
            if time.monotonic() - began >= STABLE_AFTER:
                backoff.reset()
            state.state = "restarting"
            if await pause(self._stopping, backoff.next()):
                return
            state.state = "running"
            self._log.info("%s: %s restarted", self.name, state.name)

    async def _close_part(self, state: ServiceState, watcher: asyncio.Task[None]) -> None:
        if state.state != "failed":
            state.state = "closing"
        await self._close_quietly(state)
        if not watcher.done():
            done, _ = await asyncio.wait({watcher}, timeout=self.grace)
            if not done:
                self._log.warning(
                    "%s: %s did not stop within %gs; cancelled", self.name, state.name, self.grace
                )
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _close_quietly(self, state: ServiceState) -> None:
        assert state.service is not None
        try:
            await state.service.close()
        except Exception:
            self._log.exception("%s: closing %s failed", self.name, state.name)
        if state.state != "failed":
            state.state = "closed"
