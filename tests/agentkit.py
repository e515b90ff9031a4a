"""Helpers for agent tests: an in-process simulator, an agent config, an MQTT listener."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from simkit import free_udp_port, small_fleet

from agent.app import Agent
from enoc.wire import EventsMessage, Message, MetricsMessage, StatusMessage, decode
from simulators.inventory_out import write_inventory
from simulators.model import Device
from simulators.server import Simulator, TrapReceiver


def agent_config(
    tmp_path: Path,
    broker_url: str,
    inventory: Path,
    *,
    interval: str = "1s",
    traps_port: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    config: dict[str, Any] = {
        "agent_id": "nyc-1",
        "site": "nyc",
        "rtc": "americas",
        "mqtt": {"url": broker_url, "keepalive": "5s"},
        "spool": {"path": str(tmp_path / "spool")},
        "polling": {
            "interval": interval,
            "timeout": "0.2s",
            "retries": 1,
            "unreachable_after": 2,
            "source": "127.0.0.1",
        },
        "publishing": {"heartbeat": "1s", "replay_rate": 200},
        "inventory": str(inventory),
        "log": {"level": "debug"},
        # these tests count polls and their samples; the ping tests turn it on
        "ping": {"enabled": False},
    }
    if traps_port is not None:
        config["traps"] = {"listen": f"127.0.0.1:{traps_port}", "communities": ["public"]}
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Listener:
    """Everything published under enoc/v1/#, decoded, in arrival order."""

    url: str
    messages: list[tuple[str, Message]] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        host, port = self.url.removeprefix("mqtt://").split(":")
        while True:
            try:
                async with aiomqtt.Client(
                    host, int(port), identifier="test-listener", clean_session=False
                ) as client:
                    await client.subscribe("enoc/v1/#", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        payload = message.payload
                        self.raw.append((str(message.topic), payload))
                        self.messages.append(
                            (str(message.topic), decode(str(message.topic), payload))
                        )
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def metrics(self) -> list[MetricsMessage]:
        return [m for _t, m in self.messages if isinstance(m, MetricsMessage)]

    def events(self) -> list[EventsMessage]:
        return [m for _t, m in self.messages if isinstance(m, EventsMessage)]

    def statuses(self) -> list[StatusMessage]:
        return [m for _t, m in self.messages if isinstance(m, StatusMessage)]

    def all_events(self) -> list[Any]:
        return [e for m in self.events() for e in m.events]

    async def wait_for(
        self, predicate: Callable[[Listener], bool], timeout: float = 15, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            await asyncio.sleep(0.05)


@dataclass
class Site:
    sim: Simulator
    devices: list[Device]
    port: int
    inventory: Path


@contextlib.asynccontextmanager
async def simulated_site(
    tmp_path: Path,
    *,
    traps_port: int | None = None,
    trap_version: str = "2c",
    v2c: bool = False,
    sensors: bool = False,
) -> AsyncIterator[Site]:
    port = free_udp_port("127.41.0.1")
    devices = small_fleet(port=port, address_base="127.41.0.1", sensors=sensors)
    if v2c:
        for device in devices:
            device.users.clear()
    receivers = [TrapReceiver("127.0.0.1", traps_port)] if traps_port else []
    sim = Simulator(devices, trap_receivers=receivers, trap_version=trap_version)
    await sim.start()
    inventory = tmp_path / "devices.yaml"
    write_inventory(inventory, sim, devices)
    try:
        yield Site(sim, devices, port, inventory)
    finally:
        await sim.close()


@contextlib.asynccontextmanager
async def running_agent(config: Path) -> AsyncIterator[Agent]:
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait(
        [task, asyncio.ensure_future(agent.ready.wait())],
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task.done():
        task.result()  # raises what made the agent stop
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
