"""Every long-lived part of the agent, the collector and the simulator keeps the lifecycle
contract (enoc.lifecycle): start then close; close without start, twice; a failed start
leaves no socket, file or task open; a loop that crashes is seen and handled by the policy
its application declares.

The parts are the ones each application's `parts()` puts under its supervisor, built from
a minimal loopback config (a real Mosquitto where a part talks to a broker).

TO ADD A SERVICE: add it to its application's `parts()` (agent/app.py `Agent.parts`,
collector/app.py `Collector.parts`, simulators/command.py `parts`), then one line to
`REGISTRY` below: its application, its name and how to make its start fail (a port taken,
a file it cannot use), or `None` with why its start acquires nothing that could fail.
`test_every_part_is_registered` fails until both are done. The metrics sinks are one
part, `sinks` (collector/sinks' fan-out starts, runs and closes every configured sink:
`build_collector` configures InfluxDB and remote write); a notifier kind runs inside the
`notifier` part. A new sink kind joins by appearing in `build_collector`'s config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from enoc.lifecycle import Policy, Service, ServiceBase, Supervisor
from testbed.servers import free_port

HOST = "127.0.0.1"


def free(kind: int) -> int:
    return free_port("tcp" if kind == socket.SOCK_STREAM else "udp", HOST)


@dataclass
class Setting:
    """What an application is built with; a breaker changes it so that one part's start
    fails, and may hold a socket open (a port taken) while it does."""

    tmp: Path
    broker: str
    traps_port: int = field(default_factory=lambda: free(socket.SOCK_DGRAM))
    http_port: int = field(default_factory=lambda: free(socket.SOCK_STREAM))
    sim_port: int = field(default_factory=lambda: free(socket.SOCK_DGRAM))
    control_port: int = field(default_factory=lambda: free(socket.SOCK_STREAM))
    store_url: str = ""
    influx_tls: dict[str, str] | None = None
    held: list[socket.socket] = field(default_factory=list)

    def take(self, kind: int) -> int:
        """A loopback port held open by another socket for the test's length."""
        sock = socket.socket(socket.AF_INET, kind)
        sock.bind((HOST, 0))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        self.held.append(sock)
        port: int = sock.getsockname()[1]
        return port


@dataclass
class App:
    """An application built, its supervisor (its parts in order), and what to close after."""

    supervisor: Supervisor
    owner: Any


def build_agent(s: Setting) -> App:
    from agent.app import Agent

    agent = Agent(agent_config(s))
    return App(agent.parts(), agent)


def agent_config(s: Setting) -> Path:
    inventory = s.tmp / "devices.yaml"
    inventory.write_text(
        "credentials: {c: {version: '2c', community: public}}\n"
        f"devices: [{{name: sw1, address: {HOST}, port: {s.sim_port}, credentials: c}}]\n"
    )
    config = {
        "agent_id": "nyc-1",
        "site": "nyc",
        "rtc": "americas",
        "mqtt": {"url": s.broker, "keepalive": "5s"},
        "spool": {"path": str(s.tmp / "spool")},
        "polling": {"interval": "1s", "timeout": "0.2s", "retries": 0, "source": HOST},
        "inventory": str(inventory),
        "traps": {"listen": f"{HOST}:{s.traps_port}", "communities": ["public"]},
    }
    path = s.tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build_collector(s: Setting) -> App:
    from collector.app import Collector
    from collector.config import CollectorConfig
    from enoc.config import parse_config

    influx: dict[str, Any] = {"url": f"http://{HOST}:9", "api": "v1", "database": "enoc"}
    if s.influx_tls is not None:
        influx.update(url=f"https://{HOST}:9", tls=s.influx_tls)
    users = s.tmp / "users.yaml"  # with one, the collector watches it (`users-file`)
    users.write_text("users: [{name: ops1, role: operator, token: conformance-token-1}]\n")
    config = {
        "mqtt": {"url": s.broker, "client_id": "enoc-conformance"},
        "store": {"url": s.store_url or f"sqlite:///{s.tmp / 'incidents.db'}"},
        "http": {"listen": f"{HOST}:{s.http_port}", "users_file": str(users)},
        "incidents": {"sweep_interval": "0.2s"},
        "influxdb": influx,
        "sinks": [{"remote_write": {"url": f"http://{HOST}:9/api/v1/write"}}],
    }
    # parsed, not checked as a file: a breaker's bad TLS file must reach the start
    collector = Collector(parse_config(yaml.safe_dump(config), CollectorConfig))
    return App(collector.parts(), collector)


def build_sim(s: Setting) -> App:
    from simulators.command import parts
    from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
    from simulators.server import Simulator

    spec = FleetSpec(
        sites=[SiteSpec("nyc", "americas", devices=[DeviceGroup("ce-router", 1, 1)])],
        port=s.sim_port,
        address_base=HOST,
    )
    sim = Simulator(build_devices(spec, 0.0))
    return App(parts(sim, f"{HOST}:{s.control_port}"), sim)


BUILDERS: dict[str, Callable[[Setting], App]] = {
    "agent": build_agent,
    "collector": build_collector,
    "sim": build_sim,
}


def take_traps(s: Setting) -> None:
    s.traps_port = s.take(socket.SOCK_DGRAM)


def take_http(s: Setting) -> None:
    s.http_port = s.take(socket.SOCK_STREAM)


def take_control(s: Setting) -> None:
    s.control_port = s.take(socket.SOCK_STREAM)


def take_device_port(s: Setting) -> None:
    s.sim_port = s.take(socket.SOCK_DGRAM)


def unusable_store(s: Setting) -> None:
    (s.tmp / "a-file").write_text("not a directory")
    s.store_url = f"sqlite:///{s.tmp / 'a-file' / 'incidents.db'}"


def missing_tls_file(s: Setting) -> None:
    s.influx_tls = {"ca_file": str(s.tmp / "no-such-ca.pem")}


NOTHING = "its start acquires nothing that can fail"


@dataclass(frozen=True)
class Case:
    app: str
    part: str
    breaker: Callable[[Setting], None] | str  # or why its start cannot fail

    def __str__(self) -> str:
        return f"{self.app}.{self.part}"


# Every part of every application, in the order its supervisor starts them.
REGISTRY = [
    Case("agent", "publisher", "the spools open with the publisher, before any start"),
    Case("agent", "watch", NOTHING),
    Case("agent", "snmp", "a loopback source address always binds"),
    Case("agent", "discovery", NOTHING),
    # it fails where no ICMP socket opens: as root (these tests) one always does; the
    # failure is tested as another user in tests/test_agent_ping.py
    Case("agent", "ping", "as root an ICMP socket always opens"),
    Case("agent", "scheduler", NOTHING),
    Case("agent", "traps", take_traps),
    Case("collector", "store", unusable_store),
    Case("collector", "dead-letters", "it connects when it first has a line to send"),
    Case("collector", "sinks", missing_tls_file),
    Case("collector", "feed", "it reads the store, already open"),
    Case("collector", "notifier", "it writes the store, already open"),
    Case("collector", "handover", "it reads and writes the store, already open"),
    Case("collector", "tickets", "it reads the store, already open; its client opens in run"),
    Case("collector", "users-file", "it reads the file in its loop; a bad one is logged"),
    Case("collector", "http", take_http),
    Case("collector", "sweeper", NOTHING),
    Case("collector", "ingest.metrics", "it connects in its loop, retried with a backoff"),
    Case("collector", "ingest.events", "it connects in its loop, retried with a backoff"),
    Case("sim", "simulator", take_device_port),
    Case("sim", "control", take_control),
]
BREAKABLE = [c for c in REGISTRY if callable(c.breaker)]


def open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in _fds()}


def _fds() -> list[str]:
    listed = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            os.readlink(f"/proc/self/fd/{fd}")
            listed.append(fd)
    return listed


def tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def settled() -> None:
    """A transport lets its socket go on the loop's next turn; a thread pool a little later."""
    for _ in range(20):
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def built(case: Case, tmp: Path, broker: str, breaker: bool = False) -> AsyncIterator[App]:
    setting = Setting(tmp, broker)
    try:
        if breaker:
            assert callable(case.breaker)
            case.breaker(setting)
        app = BUILDERS[case.app](setting)
        try:
            yield app
        finally:
            for state in reversed(app.supervisor.states):
                assert state.service is not None
                await state.service.close()
    finally:
        for sock in setting.held:
            sock.close()


def part_of(app: App, name: str) -> tuple[Service, list[Service], Policy]:
    """The part, the parts before it (what it needs started first), its declared policy."""
    states = app.supervisor.states
    index = [s.name for s in states].index(name)
    before = [s.service for s in states[:index] if s.service is not None]
    service = states[index].service
    assert service is not None
    return service, before, states[index].policy


@pytest.fixture
def broker(mosquitto: Any) -> str:
    url: str = mosquitto.url
    return url


@pytest.mark.servers
async def test_every_part_is_registered(tmp_path: Path, broker: str) -> None:
    for app_name, build in BUILDERS.items():
        setting = Setting(tmp_path / app_name, broker)
        setting.tmp.mkdir()
        app = build(setting)
        try:
            names = [s.name for s in app.supervisor.states]
            assert names == [c.part for c in REGISTRY if c.app == app_name], app_name
            for state in app.supervisor.states:
                assert isinstance(state.service, Service), state.name
        finally:
            for state in reversed(app.supervisor.states):
                assert state.service is not None
                await state.service.close()


@pytest.mark.servers
@pytest.mark.parametrize("case", REGISTRY, ids=str)
async def test_start_then_close_leaves_nothing_open(
    case: Case, tmp_path: Path, broker: str
) -> None:
    fds, running = open_fds(), tasks()
    async with built(case, tmp_path, broker) as app:
        service, before, _policy = part_of(app, case.part)
        for needed in before:
            await needed.start()
        await service.start()
        loop = asyncio.create_task(service.run())
        await asyncio.sleep(0.05)
        assert not loop.done(), f"{case}: run() returned before close"
        await service.close()
        await asyncio.wait_for(loop, 15)  # close() makes run() return
        await service.close()  # and again: nothing happens
    await settled()
    assert tasks() <= running, f"{case}: tasks left running"
    assert open_fds() <= fds, f"{case}: descriptors left open"


@pytest.mark.servers
@pytest.mark.parametrize("case", REGISTRY, ids=str)
async def test_close_without_start_twice(case: Case, tmp_path: Path, broker: str) -> None:
    async with built(case, tmp_path, broker) as app:
        service, _before, _policy = part_of(app, case.part)
        await service.close()
        await service.close()
        await asyncio.wait_for(service.run(), 5)  # a closed part's loop returns at once


@pytest.mark.servers
@pytest.mark.parametrize("case", BREAKABLE, ids=str)
async def test_a_failed_start_leaves_no_socket_file_or_task(
    case: Case, tmp_path: Path, broker: str
) -> None:
    async with built(case, tmp_path, broker, breaker=True) as app:
        service, before, _policy = part_of(app, case.part)
        for needed in before:
            await needed.start()
        await settled()
        fds, running = open_fds(), tasks()
        with pytest.raises(Exception) as failed:  # noqa: PT011 - each part has its own error
            await service.start()
        await settled()
        assert str(failed.value), f"{case}: the error names nothing"
        assert tasks() <= running, f"{case}: tasks left running"
        assert open_fds() <= fds, f"{case}: descriptors left open"


@pytest.mark.servers
@pytest.mark.parametrize("case", REGISTRY, ids=str)
async def test_a_crashing_loop_is_seen_and_handled_by_its_policy(
    case: Case, tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with built(case, tmp_path, broker) as app:
        service, _before, policy = part_of(app, case.part)
        # a ServiceBase's loop is its `_run`; a part written to the shape directly (the
        # sinks' fan-out, the notifier) has only `run`
        name = "_run" if isinstance(service, ServiceBase) else "run"
        runs = 0
        loop = getattr(service, name)

        async def crashing() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise RuntimeError("a bug in the loop")
            await loop()

        monkeypatch.setattr(service, name, crashing)
        supervisor = app.supervisor
        supervisor.backoff = _quick  # the restart comes at once
        stop = asyncio.Event()
        await supervisor.start()
        running = asyncio.create_task(supervisor.run(stop))
        state = next(s for s in supervisor.states if s.name == case.part)
        if policy is Policy.EXIT:
            assert await asyncio.wait_for(running, 30) == 1, "a non-zero exit"
            assert state.state == "failed"
        else:
            for _ in range(500):
                if runs >= 2:
                    break
                await asyncio.sleep(0.01)
            assert runs == 2, "restarted"
            assert state.state == "running"
            stop.set()
            assert await asyncio.wait_for(running, 30) == 0
        assert state.crashes == 1
        assert state.last_error == "RuntimeError: a bug in the loop"
        if case.app == "collector":  # counted where an operator sees it
            assert app.owner.counters()[f"part_crashes.{case.part}"] == 1


def _quick() -> Any:
    from enoc.retry import Backoff

    return Backoff(0.001, 0.002)


def test_a_command_says_which_part_failed_to_start_in_one_line(tmp_path: Path) -> None:
    """`enoc collector` with its API port taken: exit 1, one line naming the part and why."""
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = {
            "mqtt": {"url": f"mqtt://{HOST}:9", "client_id": "enoc-conformance"},
            "store": {"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
            "http": {"listen": f"{HOST}:{port}"},
        }
        path = tmp_path / "collector.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.run(
            [sys.executable, "-m", "enoc.cli", "collector", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "cannot start" in line]
    assert len(said) == 1 and "http failed to start" in said[0], proc.stderr
    assert "in use" in said[0] and "Traceback" not in proc.stderr


def test_enoc_agent_exits_non_zero_when_a_part_it_cannot_do_without_crashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler's policy is to exit: its crash stops the agent with exit 1 (systemd
    restarts it), after closing every part, where before the process went on polling
    nothing."""
    import argparse

    from agent import command
    from agent.scheduler import Scheduler

    async def broken(self: Scheduler) -> None:
        raise RuntimeError("a bug in the scheduler")

    monkeypatch.setattr(Scheduler, "_run", broken)
    monkeypatch.setattr(command, "setup_logging", lambda *_a, **_k: None)  # keep pytest's
    path = agent_config(Setting(tmp_path, f"mqtt://{HOST}:9"))
    assert command.run(argparse.Namespace(config=path)) == 1
