"""The fault drills' processes and constants: the fleet's sizes, the broker tap that records
what was published, and the agent and collector processes a drill starts, kills and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiomqtt
import psutil

from enoc.bench.common import peak_rss_mib
from enoc.lifecycle import start_else_close
from enoc.wire import EventsMessage, MetricsMessage, StatusMessage, WireError, decode
from testbed.servers import (
    PORT_ATTEMPTS,
    PortTakenError,
    PostgreSQL,
    bind_refused,
    free_port,
)

HOST = "127.0.0.1"
ADDRESS_BASE = "127.90.0.1"  # the simulated devices: 127.90.0.1 and up
TOKEN = secrets.token_hex(16)
MAX_INFLIGHT = 100  # Mosquitto's per-client window and the collector's max_unacked
STEADY_PEAK = 0.7  # no interface of the fleet ever runs above this utilization
FLAP_TRANSITIONS = 6  # the collector's default: transitions within flap_window mark flapping

Say = Callable[[str], None]


class Rig:
    """An async context manager over `start()` and `close()`: a start that fails closes
    what it had opened before the error goes up."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await start_else_close(self.start, self.close)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------ sizes


@dataclass(frozen=True)
class Sizing:
    """The fleet of a drill. Time scales with the poll interval: one interval stands for
    one minute of production (the agent's default interval is 60 s)."""

    devices: int
    sites: int
    interfaces: int
    interval: float

    def seconds(self, production_minutes: float) -> float:
        return production_minutes * self.interval


# ------------------------------------------------------------------ the broker tap


class BrokerTap:
    """Every metrics and events message the broker accepted, through a persistent session.

    Keyed by (kind, agent, seq); a second copy with the same payload is a redelivery
    (counted), with another payload a conflict (a bug: one seq, two messages)."""

    def __init__(
        self, port: int, identifier: str = "enoc-drill-tap", *, others: list[int] | None = None
    ) -> None:
        self.port = port
        # the other nodes of a broker cluster: the session is resumed on the next one
        # when the tap's node is lost
        self.ports = [port, *(others or [])]
        self.identifier = identifier
        self.metrics: dict[tuple[str, int], MetricsMessage] = {}
        self.events: dict[tuple[str, int], EventsMessage] = {}
        self.arrived: dict[tuple[str, str, int], float] = {}  # wall time of the first copy
        self.heartbeats: dict[str, tuple[float, StatusMessage]] = {}  # agent -> latest online
        self.max_spool: dict[str, int] = {}
        self.offline: dict[str, list[float]] = {}  # agent -> when its last will came (live)
        self.online: dict[str, list[float]] = {}  # agent -> when each live online status came
        self.redelivered = 0
        self.conflicts: list[str] = []
        self.undecodable = 0
        self._digests: dict[tuple[str, str, int], int] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 20)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        at = 0
        while True:
            try:
                async with aiomqtt.Client(
                    HOST, self.ports[at], identifier=self.identifier, clean_session=False
                ) as client:
                    await client.subscribe("enoc/v1/#", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            self._take(str(message.topic), bytes(payload), bool(message.retain))
            except aiomqtt.MqttError:
                at = (at + 1) % len(self.ports)
                await asyncio.sleep(0.2)

    def _take(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            decoded = decode(topic, payload)
        except WireError:
            self.undecodable += 1
            return
        if isinstance(decoded, StatusMessage):
            if decoded.state == "online" and not retained:
                self.online.setdefault(decoded.agent, []).append(time.time())
            if decoded.state == "online" and decoded.health and not retained:
                self.heartbeats[decoded.agent] = (time.time(), decoded)
                depth = decoded.health.get("spool_depth", 0)
                if isinstance(depth, int):
                    self.max_spool[decoded.agent] = max(self.max_spool.get(decoded.agent, 0), depth)
            elif decoded.state != "online" and not retained:
                self.offline.setdefault(decoded.agent, []).append(time.time())
            return
        kind = "metrics" if isinstance(decoded, MetricsMessage) else "events"
        key = (kind, decoded.agent, decoded.seq)
        digest = zlib.crc32(payload)
        seen = self._digests.get(key)
        if seen is not None:
            if seen == digest:
                self.redelivered += 1
            else:
                self.conflicts.append(f"{kind} seq {decoded.seq} of {decoded.agent}")
            return
        self._digests[key] = digest
        self.arrived[key] = time.time()
        if isinstance(decoded, MetricsMessage):
            self.metrics[(decoded.agent, decoded.seq)] = decoded
        else:
            self.events[(decoded.agent, decoded.seq)] = decoded

    def count(self, agent: str) -> int:
        return sum(1 for a, _ in self.metrics if a == agent)

    def event_ids(self) -> set[tuple[str, str]]:
        return {(m.agent, e.id) for m in self.events.values() for e in m.events}


# ------------------------------------------------------------------ processes


class Proc:
    """One enoc process (agent or collector) over possibly several lives, with its CPU."""

    def __init__(self, name: str, config: Path, command: str) -> None:
        self.name = name
        self.config = config
        self.command = command
        self.log = config.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self.cpu_done = 0.0  # CPU-seconds of finished lives
        self._cpu_now = 0.0
        self.peak_mib = 0.0
        self.lives = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "enoc.cli", self.command, "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ps = psutil.Process(self.process.pid)
        self._cpu_now = 0.0
        self.lives += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample(self) -> None:
        if self._ps is None or not self.alive:
            return
        with contextlib.suppress(psutil.Error):
            times = self._ps.cpu_times()
            self._cpu_now = float(times.user + times.system)
            self.peak_mib = max(self.peak_mib, peak_rss_mib(self._ps))

    @property
    def cpu_s(self) -> float:
        return self.cpu_done + self._cpu_now

    def _ended(self) -> None:
        self.cpu_done += self._cpu_now
        self._cpu_now = 0.0
        self._ps = None

    async def kill9(self) -> None:
        self.sample()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait, 10)
        self.process = None
        self._ended()

    async def terminate(self, within: float = 30) -> int | None:
        """SIGTERM and wait; the exit code (None when it had to be killed)."""
        self.sample()
        process, self.process = self.process, None
        if process is None:
            return None
        code: int | None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(process.wait, within)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
                code = None
        else:
            code = process.returncode
        self._ended()
        return code


def parse_prometheus(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


class CollectorProc(Proc):
    """The collector process, its HTTP API and its counters (kept per life)."""

    def __init__(self, config: Path, http_port: int) -> None:
        super().__init__("collector", config, "collector")
        self.http_port = http_port
        self.counters: dict[str, float] = {}  # the latest scrape of the current life
        self.finished: list[dict[str, float]] = []  # the last scrape of each ended life
        self.killed = False

    def get(self, path: str, timeout: float = 10) -> Any:
        request = urllib.request.Request(
            f"http://{HOST}:{self.http_port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
            body = response.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    async def scrape(self) -> dict[str, float] | None:
        """The collector's /metrics; None while it (or its store) cannot answer."""
        if not self.alive:
            return None
        try:
            text = await asyncio.to_thread(self.get, "/metrics", 5)
        except (OSError, ValueError):
            return None
        self.counters = parse_prometheus(text)
        return self.counters

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{HOST}:{self.http_port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    async def wait_healthy(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"the collector exited: {tail(self.log)}")
            if await asyncio.to_thread(self.healthy):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the collector was not healthy within {within:.0f} s")

    def _end_life(self) -> None:
        self.finished.append(self.counters)
        self.counters = {}

    async def kill9(self) -> None:
        await self.scrape()
        self.killed = True
        await super().kill9()
        self._end_life()

    async def terminate(self, within: float = 30) -> int | None:
        await self.scrape()
        code = await super().terminate(within)
        self._end_life()
        return code

    def total(self, name: str) -> float:
        """A counter summed over the collector's lives (ended ones and the current one)."""
        return sum(c.get(name, 0.0) for c in [*self.finished, self.counters])


async def start_on_free_port(
    proc: Proc,
    listen_on: Callable[[int], None],
    listening: str,
    *,
    kind: str = "tcp",
    within: float = 60.0,
) -> int:
    """Start `proc` on a port chosen free right before (`listen_on(port)` writes it into
    its config) and wait until its log says `listening`; when it exits because another
    program took the port first, start it again on another (PORT_ATTEMPTS at most).
    The port it listens on."""
    tried: list[int] = []
    while True:
        port = free_port(kind)
        tried.append(port)
        listen_on(port)
        offset = proc.log.stat().st_size if proc.log.exists() else 0
        proc.start()
        deadline = time.monotonic() + within
        while True:
            said = read_from(proc.log, offset)
            if listening in said:
                return port
            if not proc.alive:
                await proc.terminate()  # reaped, its CPU counted
                if not bind_refused(said):
                    raise RuntimeError(f"{proc.name} exited: {tail(proc.log)}")
                if len(tried) >= PORT_ATTEMPTS:
                    raise PortTakenError(
                        f"{proc.name}: every port tried was taken before it could bind it "
                        f"({', '.join(map(str, tried))}): {tail(proc.log, 3)}"
                    )
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{proc.name} did not say {listening!r} within {within:.0f} s: {tail(proc.log)}"
                )
            await asyncio.sleep(0.1)


def read_from(path: Path, offset: int) -> str:
    """A log's text after `offset` (a process appends to it over its lives)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_postgres_fast(pg: PostgreSQL) -> None:
    """PostgreSQL's fast shutdown (SIGINT to the postmaster): clients are disconnected at
    once. (`PostgreSQL.stop` sends SIGTERM, a smart shutdown that waits for the collector's
    open connection, and the start after it finds a stale postmaster.pid.)"""
    process = pg.process
    if process is None:
        return
    pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    process.wait(timeout=30)
    pg.process = None
