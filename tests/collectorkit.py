"""Helpers for collector tests: a config, an in-process collector, a users file, polling."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from collector.api import make_app
from collector.app import Collector
from collector.auth import Users
from collector.config import CollectorConfig
from collector.incidents import Engine
from collector.model import IncidentChange
from collector.recent import RecentValues
from collector.store import Store
from collector.stream import ChangeFeed, Hub
from testbed.servers import Mosquitto, VictoriaMetrics, free_port

TOKENS = {
    "viewer1": secrets.token_hex(16),
    "ops1": secrets.token_hex(16),
    "admin1": secrets.token_hex(16),
}
ROLES = {"viewer1": "viewer", "ops1": "operator", "admin1": "admin"}


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text(
        yaml.safe_dump(
            {"users": [{"name": n, "role": ROLES[n], "token": t} for n, t in TOKENS.items()]}
        )
    )
    return path


def collector_config(
    tmp_path: Path,
    mqtt_url: str,
    *,
    vm: VictoriaMetrics | None = None,
    store_url: str = "",
    name: str = "collector",
    extra: dict[str, Any] | None = None,
) -> Path:
    token = tmp_path / "influx-token"
    token.write_text("test-token\n")
    config: dict[str, Any] = {
        "mqtt": {"url": mqtt_url, "client_id": f"enoc-{name}"},
        "store": {"url": store_url or f"sqlite:///{tmp_path / name / 'incidents.db'}"},
        "http": {"listen": f"127.0.0.1:{free_port()}", "users_file": str(users_file(tmp_path))},
        # a will opens its incident at once: tests that send one decide by it (the grace is
        # tested in test_will_grace.py and, through a real agent, test_collector_e2e.py)
        "incidents": {"sweep_interval": "0.5s", "agent_timeout": "10s", "will_grace": "0s"},
        "log": {"level": "debug"},
    }
    if vm is not None:
        config["influxdb"] = {
            "url": vm.url,
            "api": "v2",
            "org": "enoc",
            "bucket": "enoc",
            "token_file": str(token),
            "flush_interval": "0.2s",
        }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def running_collector(config: Path) -> AsyncIterator[Collector]:
    collector = Collector.from_file(config)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    await asyncio.wait(
        [task, asyncio.ensure_future(collector.ready.wait())],
        timeout=20,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task.done():
        task.result()
    # subscribed: from here on the broker keeps everything for the collector's sessions
    await asyncio.wait_for(collector.ingest.subscribed.wait(), 20)
    try:
        yield collector
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def fed_collector(tmp: Path, http: dict[str, Any]) -> AsyncIterator[tuple[Collector, str]]:
    """A collector on a Mosquitto of its own, fed by the test with agents' messages (those
    agents send no heartbeat: `agent_timeout` is an hour); `http` adds to its config (its
    `users_file`). Yields the collector and the broker's URL."""
    with Mosquitto(tmp / "mosquitto") as mosquitto:
        extra = {"http": http, "incidents": {"agent_timeout": "1h"}}
        async with running_collector(collector_config(tmp, mosquitto.url, extra=extra)) as c:
            yield c, mosquitto.url


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 20,
    what: str = "",
) -> None:
    """Wait until `check()` is true (it may be async)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


def collector_process_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "enoc.cli", "collector", "--config", str(config)]


T0 = 1_800_000_000.0  # a fixed "now" for tests with an injected clock


class Clock:
    """An injected clock the test moves by setting `t`."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


async def _publish_nowhere(_changes: list[IncidentChange]) -> None:
    return None


def engine_app(
    config: CollectorConfig,
    store: Store,
    engine: Engine,
    *,
    publish: Callable[[list[IncidentChange]], Awaitable[None]] = _publish_nowhere,
    health: Callable[[], dict[str, Any]] = dict,
    counters: Callable[[], dict[str, float]] = dict,
    capabilities: Any = None,
) -> web.Application:
    """The HTTP API (`make_app`) over an engine's parts, without a Collector."""
    assert config.http.users_file is not None
    hub = Hub()
    return make_app(
        config=config,
        users=Users.load(config.http.users_file),
        store=store,
        queries=engine.queries,
        maintenance=engine.maintenance,
        operators=engine.operators,
        publish=publish,
        feed=ChangeFeed(config.store, hub),
        hub=hub,
        recent=RecentValues(),
        health=health,
        counters=counters,
        capabilities=capabilities,
    )
