"""Running long-lived commands: uvloop when present, clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main()` on uvloop (plain asyncio where uvloop is missing) and return its exit code.

    Once `main()` has returned the work is done: a further SIGINT (Ctrl-C pressed twice, or
    one that a wrapper such as `uv run` forwards again 200 ms later) no longer raises
    KeyboardInterrupt, which would turn a clean stop into exit 130, but ends the process at
    once with `main()`'s code.
    """
    done: list[int] = []

    async def tracked() -> int:
        code = await main()
        done.append(code)
        return code

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    else:
        runner = uvloop.run
    try:
        code = runner(tracked())
    except KeyboardInterrupt:
        if not done:
            raise
        code = done[0]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, functools.partial(_exit_now, code))
    return code


def _exit_now(code: int, _signum: int, _frame: object) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_event(*, reload: Callable[[], None] | None = None) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; SIGHUP calls `reload` when given."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    if reload is not None and sys.platform != "win32":
        loop.add_signal_handler(signal.SIGHUP, reload)
    return event


def parse_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """'127.0.0.1:8080' (or '[::1]:8080', or a bare host with a default port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host, port_text = text, str(default_port)
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port_text)
