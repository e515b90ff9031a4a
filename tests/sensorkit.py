"""Helpers for the sensor and power tests: recordings of the real-device corpus served by
the simulator and polled by the agent with a profile that pins the sensor and power MIB
groups, and a reading of a recording's own text to count what it holds."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from corpuskit import RECORDINGS, recordings_or_skip
from simkit import free_udp_port, recorded_fleet, snmp_client

from agent.edge import EdgeDetector
from agent.facts import DeviceTracker
from agent.mibgroups import power, sensors
from agent.poller import RawPoll, collect
from agent.profiles import Profile
from enoc.inventory import InventoryDevice
from enoc.snmp.client import SnmpClient, Target, V2c
from enoc.wire import DeviceSample, Event, Row
from simulators.server import Simulator

# Capability discovery is another part's: this profile polls the groups whatever it finds.
PINNED = Profile("sensors", (), pin=tuple(g.name for g in (*sensors.GROUPS, *power.GROUPS)))


def recording(name: str) -> Path:
    """A recording of the corpus by name (skips, or fails under CI, when it is absent)."""
    recordings_or_skip()
    return RECORDINGS / f"{name}.snmprec"


def recorded(path: Path) -> dict[str, tuple[str, str]]:
    """A recording's lines as its text says: OID -> (type, value)."""
    lines: dict[str, tuple[str, str]] = {}
    for line in path.read_bytes().decode("utf-8", "surrogateescape").splitlines():
        oid, _, rest = line.partition("|")
        tag, _, value = rest.partition("|")
        lines[oid] = (tag, value)
    return lines


def indexes(lines: dict[str, tuple[str, str]], *columns: str) -> set[str]:
    """The row indexes of `columns` (dotted OIDs) in a recording's lines."""
    out: set[str] = set()
    for oid in lines:
        for column in columns:
            if oid.startswith(column + "."):
                out.add(oid[len(column) + 1 :])
    return out


def by_name(rows: list[Row]) -> dict[str, Row]:
    """Sensor rows by their `sensor` tag; asserts each name is one row's."""
    out = {r.tags["sensor"]: r for r in rows if r.measurement == "sensor"}
    assert len(out) == len(rows), "two sensor rows share a name"
    return out


@dataclass
class Served:
    """Recordings served on loopback, each a device of the simulator, and the agent's
    client and one tracker per device (at site `lab`)."""

    client: SnmpClient
    port: int
    addresses: dict[str, str]
    edge: EdgeDetector = field(default_factory=lambda: EdgeDetector("lab-1"))
    trackers: dict[str, DeviceTracker] = field(default_factory=dict)

    async def raw(self, name: str) -> RawPoll:
        target = Target(self.addresses[name], self.port, V2c(b"public"))
        return await collect(self.client, target, lambda _oid: PINNED, 25)

    async def poll(
        self, name: str, *, as_device: str = "", at: float | None = None
    ) -> tuple[DeviceSample, list[Event]]:
        """Poll recording `name` and let the tracker of `as_device` (default: the same
        name) take it, at time `at` (default: now)."""
        device = as_device or name
        tracker = self.trackers.get(device)
        if tracker is None:
            inventory = InventoryDevice(device, self.addresses[name], "c", site="lab")
            tracker = self.trackers[device] = DeviceTracker(inventory, self.edge)
        raw = await self.raw(name)
        if at is not None:
            raw.at = at
        return tracker.observe(raw)


@asynccontextmanager
async def served(recordings: dict[str, Path], address: str) -> AsyncIterator[Served]:
    """Serve each recording (by device name) as recorded, on `address` and the next."""
    port = free_udp_port(address)
    clock, devices = recorded_fleet(recordings, address, port)
    async with Simulator(devices, clock=clock, rng=random.Random(0)), snmp_client() as client:
        yield Served(client, port, {d.name: d.address for d in devices})
