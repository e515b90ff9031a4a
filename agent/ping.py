"""Ping every device from asyncio, with icmplib: a round every `ping.interval`.

A round sends `count` echo requests to each pinged device, `concurrency`
devices at a time, and hands its results to the agent at once: each becomes a
row of measurement `ping` (Telegraf's ping input's fields, DESIGN "InfluxDB
schema") and an observation of the device's reachability (agent.reach). A
round's longest (no answer at all) is shorter than the interval by the config's
check; one that still overruns (a loaded host) skips the ticks it ran into, counted
as overruns, so that rounds never stack. Polls are not touched: they have their own
scheduler and slots.

Sockets: unprivileged ICMP ("ping") sockets where net.ipv4.ping_group_range
holds one of the process's groups, raw sockets (CAP_NET_RAW; the systemd unit
grants it) otherwise. Which one is decided once, at start, and logged; a start
that can open neither fails and names both fixes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import icmplib

from agent.config import PingConfig
from enoc.retry import pause
from enoc.wire import Row, Value

log = logging.getLogger("enoc.agent.ping")

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
MEASUREMENT = "ping"
# Telegraf's ping input's result_code
SUCCESS, NO_SUCH_HOST, PING_ERROR = 0, 1, 2


class PingUnavailable(RuntimeError):
    """Neither an unprivileged ICMP socket nor a raw one can be opened."""


def unprivileged_allowed(path: Path = PING_GROUP_RANGE, gids: Iterable[int] | None = None) -> bool:
    """Whether net.ipv4.ping_group_range (`path`) holds one of the process's groups."""
    try:
        low, high = map(int, path.read_text().split())
    except (OSError, ValueError):
        return False
    groups = {os.getgid(), *os.getgroups()} if gids is None else set(gids)
    return any(low <= g <= high for g in groups)


def _readable(path: Path = PING_GROUP_RANGE) -> bool:
    try:
        path.read_text()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class PingResult:
    """One device's round: `sent` requests, the round trips of those answered (ms)."""

    device: str
    address: str
    at: float  # when the round began
    sent: int = 0
    rtts: tuple[float, ...] = ()
    code: int = SUCCESS  # Telegraf's result_code
    error: str = ""

    @property
    def received(self) -> int:
        return len(self.rtts)

    @property
    def average_ms(self) -> float:
        return statistics.fmean(self.rtts) if self.rtts else 0.0

    def fields(self) -> dict[str, Value]:
        """Telegraf's fields: a failed ping has only its result_code; a round with no
        answer has no round-trip fields."""
        if self.code != SUCCESS:
            return {"result_code": self.code}
        out: dict[str, Value] = {
            "packets_transmitted": self.sent,
            "packets_received": self.received,
            "percent_packet_loss": round(100 * (self.sent - self.received) / self.sent, 3)
            if self.sent
            else 100.0,
            "result_code": SUCCESS,
        }
        if self.rtts:
            out["minimum_response_ms"] = round(min(self.rtts), 3)
            out["average_response_ms"] = round(self.average_ms, 3)
            out["maximum_response_ms"] = round(max(self.rtts), 3)
            out["standard_deviation_ms"] = round(statistics.pstdev(self.rtts), 3)
        return out

    def row(self) -> Row:
        """The sample row: tag `url` (the address) beside the device's own tags."""
        return Row(MEASUREMENT, {"url": self.address}, self.fields())


PingFunction = Callable[..., Awaitable[Any]]


@dataclass
class PingStats:
    rounds: int = 0
    overruns: int = 0  # ticks skipped: a round outlasted its interval
    errors: int = 0  # pings that failed (result_code 1 or 2)


@dataclass
class Pinger:
    """Pings `targets()` (device, address) round after round; `on_round` gets each
    round's results, in the targets' order."""

    settings: PingConfig
    targets: Callable[[], list[tuple[str, str]]]
    on_round: Callable[[list[PingResult]], None]
    clock: Callable[[], float] = time.time
    ping: PingFunction = icmplib.async_ping
    privileged: bool | None = None  # decided by `open`
    stats: PingStats = field(default_factory=PingStats)

    async def open(self) -> None:
        """Decide the socket kind once, and check that it opens: unprivileged where the
        range allows it, tried even where the range cannot be read (the systemd unit hides
        /proc/sys), since raw sockets cost more (each one receives every ICMP packet)."""
        for privileged in (False, True):
            if privileged is False and unprivileged_allowed() is False and _readable():
                continue  # the range says no: no need to try
            try:
                icmplib.ICMPv4Socket(privileged=privileged).close()
            except icmplib.SocketPermissionError:
                continue
            self.privileged = privileged
            log.info(
                "pinging with %s",
                "raw ICMP sockets (CAP_NET_RAW)"
                if privileged
                else "unprivileged ICMP sockets (net.ipv4.ping_group_range)",
            )
            return
        raise PingUnavailable(
            f"ping: cannot open an ICMP socket ({PING_GROUP_RANGE} does not hold the "
            "agent's group, and it lacks CAP_NET_RAW for a raw one): widen "
            "net.ipv4.ping_group_range, grant CAP_NET_RAW (deploy/systemd/enoc-agent.service "
            "does), or set ping.enabled: false"
        )

    async def run(self, stop: asyncio.Event) -> None:
        interval = float(self.settings.interval)
        due = time.monotonic()
        while not stop.is_set():
            self.on_round(await self.round())
            self.stats.rounds += 1
            due += interval
            late = time.monotonic() - due
            if late > 0:  # never stack rounds: the ticks it ran into are skipped
                skipped = int(late // interval) + 1
                self.stats.overruns += skipped
                due += skipped * interval
            await pause(stop, max(0.0, due - time.monotonic()))

    async def round(self) -> list[PingResult]:
        """One round over every target, `concurrency` at a time."""
        at = self.clock()
        slots = asyncio.Semaphore(self.settings.concurrency)

        async def one(device: str, address: str) -> PingResult:
            async with slots:
                return await self.one(device, address, at)

        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(one(device, address), name=f"ping[{device}]")
                for device, address in self.targets()
            ]
        return [t.result() for t in tasks]

    async def one(self, device: str, address: str, at: float) -> PingResult:
        s = self.settings
        try:
            host = await self.ping(
                address,
                count=s.count,
                interval=float(s.packet_interval),
                timeout=float(s.timeout),
                privileged=self.privileged is not False,
            )
        except icmplib.NameLookupError as exc:
            self.stats.errors += 1
            return PingResult(device, address, at, code=NO_SUCH_HOST, error=str(exc))
        except (icmplib.ICMPLibError, OSError) as exc:
            self.stats.errors += 1
            return PingResult(device, address, at, code=PING_ERROR, error=str(exc))
        return PingResult(device, address, at, host.packets_sent, tuple(host.rtts))
