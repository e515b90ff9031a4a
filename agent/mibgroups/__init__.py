"""What the agent knows of MIBs beyond IF-MIB: groups it can find on a device and poll.

A `MibGroup` is one MIB's contribution (CISCO-PROCESS-MIB's CPU, ENTITY-SENSOR-MIB's
sensors, UPS-MIB's battery): the OID capability discovery probes to learn whether a
device answers it, the scalars and table columns a poll then fetches (riding in the
poll's one GET and one GETBULK walk), and `derive`, which turns what the device
answered into device fields (`cpu`, `memory`), rows of a measurement of their own
(`sensor`) and conditions (a sensor's status) that the edge turns into events.

Names of scalars and columns are the MIB's object names, unique across MIBs, so that
the groups of one poll never collide. `GROUPS` holds every group, in precedence order:
where two give the same device field (a Cisco answers CISCO-PROCESS-MIB and
HOST-RESOURCES-MIB), the first one's value is taken and its MIB recorded (shown with
the device's capabilities, not written per poll).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from enoc.snmp.ber import Oid
from enoc.wire import Row, Severity, Value

# A column's answers, as the poller keeps them: index -> (BER tag, decoded value).
Column = Mapping[Oid, tuple[int, object]]


@dataclass(frozen=True)
class Reading:
    """What one poll got for one group: scalars by name, columns by name."""

    scalars: Mapping[str, object] = field(default_factory=dict)
    tables: Mapping[str, Column] = field(default_factory=dict)


def integer(reading: Reading, name: str) -> int | None:
    """A scalar's integer answer; None when missing or of another type (a device's
    garbage: an OCTET STRING where a Gauge32 belongs)."""
    value = reading.scalars.get(name)
    return value if type(value) is int else None


@dataclass(frozen=True)
class Condition:
    """A state of something on the device that the edge follows (a sensor's status, a UPS
    on battery): an event each time it changes, with hysteresis."""

    resource: str  # the event's resource: "sensor:<name>", "power:battery", ...
    state: str  # "ok" ends a problem; any other state is one
    severity: Severity = "major"
    message: str = ""
    attrs: Mapping[str, Value] = field(default_factory=dict)


@dataclass
class Derived:
    """What a group makes of its reading."""

    fields: dict[str, Value] = field(default_factory=dict)  # device fields: cpu, memory, ...
    rows: list[Row] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # device field -> the MIB it is from


def _nothing(_reading: Reading) -> Derived:
    return Derived()


@dataclass(frozen=True)
class MibGroup:
    name: str  # in profiles (pin, exclude), the discovery state, the heartbeat
    mib: str  # the MIB module, recorded with the values it gives (cpu_mib, memory_mib)
    probe: Oid  # discovery: a GETNEXT from here that answers inside it means "has it"
    scalars: Mapping[str, Oid] = field(default_factory=dict)  # instances (ending .0), by GET
    columns: Mapping[str, Oid] = field(default_factory=dict)  # walked with the poll
    derive: Callable[[Reading], Derived] = _nothing
    # Columns that name and describe the rows (entPhysicalName, a sensor's type and scale):
    # they change with the hardware, not between polls, so a poll walks them only when the
    # device's `Labels` say so; `derive` reads them with the columns, as one table.
    labels: Mapping[str, Oid] = field(default_factory=dict)


@dataclass
class Labels:
    """A device's label columns (MibGroup.labels) from their last walk, and when to walk
    them again: when it has none of them (the first poll, after a reboot), when they are
    older than `max_age`, or when one of a group's rows appears that they did not cover.
    On a chassis of a thousand entities this is most of what a sensor poll would walk."""

    max_age: float = 6 * 3600.0
    columns: dict[str, Column] = field(default_factory=dict)
    walked_at: float = 0.0
    covered: dict[str, frozenset[Oid]] = field(default_factory=dict)  # group -> its rows

    def due(self, names: Iterable[str], at: float) -> set[str]:
        """Which of these label columns a poll at `at` must walk."""
        if at - self.walked_at > self.max_age:
            self.columns.clear()
            self.covered.clear()
        return {n for n in names if n not in self.columns}

    def keep(self, walked: Mapping[str, Column], at: float) -> None:
        if walked and not self.columns:
            self.walked_at = at
        self.columns.update(walked)

    def clear(self) -> None:
        self.columns.clear()
        self.covered.clear()


def _registry() -> dict[str, MibGroup]:
    from . import health, power, sensors

    groups: dict[str, MibGroup] = {}
    for group in (*health.GROUPS, *sensors.GROUPS, *power.GROUPS):
        if group.name in groups:
            raise ValueError(f"two MIB groups named {group.name!r}")
        groups[group.name] = group
    return groups


GROUPS: dict[str, MibGroup] = _registry()


def derive_all(groups: Iterable[MibGroup], readings: Mapping[str, Reading]) -> Derived:
    """Every group's derivation, merged: a device field from the first group that gives it
    (`sources` names that group's MIB), rows and conditions of all."""
    out = Derived()
    for group in groups:
        reading = readings.get(group.name)
        if reading is None:
            continue
        derived = group.derive(reading)
        for name, value in derived.fields.items():
            if name not in out.fields:
                out.fields[name] = value
                out.sources[name] = group.mib
        out.rows += derived.rows
        out.conditions += derived.conditions
    return out
