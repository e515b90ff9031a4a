"""Sensors: ENTITY-SENSOR-MIB, CISCO-ENVMON-MIB, JUNIPER-MIB's fan and power-supply
states and HUAWEI-ENTITY-EXTENT-MIB's temperatures, as rows of measurement `sensor` and
conditions on their status.

Every sensor is one row: tags `sensor` (its name) and `class` (temperature, fan,
voltage, current, power, humidity, psu, battery, ...), fields `value` in SI units
(degrees Celsius, volts, amperes, watts, rpm, percent), `status` as the device
judges it (ok, warning, critical, failed, unknown) and the thresholds the device
reports (`high_warning`, `high_critical`, `low_warning`, `low_critical`). Its
condition carries the same, so that the edge (agent.edge, `conditions`) can judge the
value against the device's thresholds, or the configured ones of its class.

The OIDs and enumerations are the MIBs' (RFC 3433; CISCO-ENVMON-MIB revision
201803210000Z; JUNIPER-MIB jnxOperatingTable; HUAWEI-ENTITY-EXTENT-MIB hwEntityStateTable),
looked up, not guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from enoc.snmp.ber import Oid, oid_text
from enoc.wire import Row, Severity, Value

from . import Column, Condition, Derived, MibGroup, Reading

# A sensor's status; the first four are the states of its condition (event kind sensor),
# "unknown" (the device cannot read it) leaves the condition to the value's thresholds.
# "ok" is also the status of a value the device reads and passes no verdict on (a
# Juniper part's temperature, a UPS's runtime): the thresholds judge it.
STATUSES = ("ok", "warning", "critical", "failed", "unknown")
RANK = {"ok": 0, "warning": 1, "critical": 2, "failed": 3}
# the event's severity when a sensor enters a problem status
SEVERITY: dict[str, Severity] = {"warning": "warning", "critical": "critical", "failed": "major"}
THRESHOLDS = ("high_warning", "high_critical", "low_warning", "low_critical")


def label(value: object) -> str:
    """An SNMP string as one printable line (agent.facts.text: devices send NULs,
    newlines, non-UTF-8)."""
    from agent.facts import text  # agent.facts imports this package: taken at first use

    return text(value)


def number(cell: tuple[int, object] | None) -> int | None:
    """A column's integer answer; None when missing or of another type."""
    if cell is None or isinstance(cell[1], bool) or not isinstance(cell[1], int):
        return None
    return cell[1]


def scaled(raw: int, exponent: int) -> float:
    """`raw` x 10^exponent, exactly (0.1 x 3 must read 0.3, not 0.30000000000000004)."""
    return float(Decimal(raw).scaleb(exponent))


@dataclass
class Sensor:
    """One sensor of one poll, before it becomes a row and a condition."""

    name: str
    cls: str
    status: str  # STATUSES
    value: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    index: str = ""  # the row's index, to tell apart sensors of the same name
    message: str = ""  # the event's text, when the status decides (default: name and status)
    severity: Severity | None = None  # default: SEVERITY of the status
    extra: dict[str, Value] = field(default_factory=dict)  # more fields of the row


def derived(sensors: Iterable[Sensor]) -> Derived:
    """Rows and conditions of sensors; a name two sensors share gets their index, so that
    each is a series and a resource of its own."""
    sensors = list(sensors)
    shared = {n for n, c in Counter(s.name for s in sensors).items() if c > 1}
    out = Derived()
    for sensor in sensors:
        name = f"{sensor.name} ({sensor.index})" if sensor.name in shared else sensor.name
        fields: dict[str, Value] = {"status": sensor.status}
        if sensor.value is not None:
            fields["value"] = sensor.value
        fields.update(sensor.thresholds)
        fields.update(sensor.extra)
        out.rows.append(Row("sensor", {"sensor": name, "class": sensor.cls}, fields))
        if sensor.value is None and sensor.status not in RANK:
            continue  # nothing to judge
        words = name if sensor.cls in name.lower() else f"{sensor.cls} {name}"
        if sensor.value is not None:
            words += f" {sensor.value:g}"
        message = sensor.message or f"{words}: {sensor.status}"
        attrs: dict[str, Value] = {"sensor": name, "class": sensor.cls, "status": sensor.status}
        if sensor.value is not None:
            attrs["value"] = sensor.value
        attrs.update(sensor.thresholds)
        severity = sensor.severity or SEVERITY.get(sensor.status, "major")
        out.conditions.append(Condition(f"sensor:{name}", sensor.status, severity, message, attrs))
    return out


def _index(index: Oid) -> str:
    return oid_text(index)


# ---------------------------------------------------------------- ENTITY-SENSOR-MIB

ENT_PHY_SENSOR_ENTRY = (1, 3, 6, 1, 2, 1, 99, 1, 1, 1)  # entPhySensorTable.1
ENT_PHYSICAL_ENTRY = (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1)  # ENTITY-MIB entPhysicalTable.1
ENT_SENSOR_COLUMNS = {
    "entPhySensorType": (*ENT_PHY_SENSOR_ENTRY, 1),
    "entPhySensorScale": (*ENT_PHY_SENSOR_ENTRY, 2),
    "entPhySensorPrecision": (*ENT_PHY_SENSOR_ENTRY, 3),
    "entPhySensorValue": (*ENT_PHY_SENSOR_ENTRY, 4),
    "entPhySensorOperStatus": (*ENT_PHY_SENSOR_ENTRY, 5),
    "entPhySensorUnitsDisplay": (*ENT_PHY_SENSOR_ENTRY, 6),
}
# EntitySensorDataType -> class. 13 to 15 are not RFC 3433's but CISCO-ENTITY-SENSOR-MIB's
# SensorDataType, which extends it (specialEnum, dBm, dB): some agents serve them here too.
SENSOR_TYPES = {
    1: "other",
    2: "unknown",
    3: "voltage",  # voltsAC
    4: "voltage",  # voltsDC
    5: "current",  # amperes
    6: "power",  # watts
    7: "frequency",  # hertz
    8: "temperature",  # celsius
    9: "humidity",  # percentRH
    10: "fan",  # rpm
    11: "airflow",  # cmm: cubic metres per minute
    12: "state",  # truthvalue: true(1), false(2)
    13: "state",  # specialEnum: the vendor's enumeration
    14: "dbm",  # dB relative to 1 mW
    15: "db",
}
# EntitySensorStatus: ok(1), unavailable(2), nonoperational(3) (the sensor is broken)
SENSOR_STATUS = {1: "ok", 2: "unknown", 3: "failed"}
UNITS_SCALE = 9  # EntitySensorDataScale units(9): 10^0; each step is 10^3 (yocto(1) .. yotta(17))
OVERFLOW = 1_000_000_000  # +-10^9: the sensor's underflow and overflow errors, not readings


def entity_sensor_value(raw: int, scale: int, precision: int) -> float | None:
    """entPhySensorValue in SI units: raw x 10^(3 (scale - 9)) / 10^precision (a precision
    of 1 to 9 is that many decimal places; 0 or below, none). None for the MIB's
    underflow and overflow errors."""
    if abs(raw) >= OVERFLOW:
        return None
    return scaled(raw, 3 * (scale - UNITS_SCALE) - max(precision, 0))


READINGS = ("entPhySensorValue", "entPhySensorOperStatus")  # what changes between polls
# The rest names and scales the readings and changes with the hardware: labels, walked
# again only when a reading's row is new to them (agent.mibgroups.Labels). ENTITY-MIB's
# names cover every entity of the chassis (a thousand on a big one), not only its sensors.
ENTITY_SENSOR_LABELS: dict[str, Oid] = {
    **{n: oid for n, oid in ENT_SENSOR_COLUMNS.items() if n not in READINGS},
    "entPhysicalDescr": (*ENT_PHYSICAL_ENTRY, 2),
    "entPhysicalName": (*ENT_PHYSICAL_ENTRY, 7),
}


def _entity_sensors(reading: Reading) -> Derived:
    tables = reading.tables
    indexes: set[Oid] = set()
    for column in READINGS:  # a sensor gone since its labels were walked is no row
        indexes.update(tables.get(column, {}))
    if not indexes:  # a device that serves no reading column: its rows as its labels list them
        for column in ENT_SENSOR_COLUMNS:
            indexes.update(tables.get(column, {}))
    names, descrs = tables.get("entPhysicalName", {}), tables.get("entPhysicalDescr", {})

    def cell(column: str, index: Oid) -> int | None:
        return number(tables.get(column, {}).get(index))

    sensors = []
    for index in sorted(indexes):
        cls = SENSOR_TYPES.get(cell("entPhySensorType", index) or 1, "other")
        raw = cell("entPhySensorValue", index)
        value = None
        if raw is not None:
            scale = cell("entPhySensorScale", index) or UNITS_SCALE
            value = entity_sensor_value(raw, scale, cell("entPhySensorPrecision", index) or 0)
        status = SENSOR_STATUS.get(cell("entPhySensorOperStatus", index) or 0, "unknown")
        name = (
            label(names.get(index, (0, b""))[1])
            or label(descrs.get(index, (0, b""))[1])
            or f"{cls} {_index(index)}"
        )
        extra: dict[str, Value] = {}
        if cls in ("other", "unknown"):  # no unit implied: the device's word for it
            units = label(tables.get("entPhySensorUnitsDisplay", {}).get(index, (0, b""))[1])
            if units:
                extra["units"] = units
        sensor = Sensor(name, cls, status, value, index=_index(index), extra=extra)
        if status == "failed":  # nonoperational: the sensor is broken, not what it watches
            sensor.message, sensor.severity = f"{name}: sensor not operational", "warning"
        sensors.append(sensor)
    return derived(sensors)


ENTITY_SENSOR = MibGroup(
    "entity_sensor",
    "ENTITY-SENSOR-MIB",
    ENT_PHY_SENSOR_ENTRY[:-1],
    columns={n: ENT_SENSOR_COLUMNS[n] for n in READINGS},
    derive=_entity_sensors,
    labels=ENTITY_SENSOR_LABELS,
)


# ---------------------------------------------------------------- CISCO-ENVMON-MIB

ENVMON = (1, 3, 6, 1, 4, 1, 9, 9, 13, 1)  # ciscoEnvMonObjects
VOLTAGE_ENTRY = (*ENVMON, 2, 1)
TEMPERATURE_ENTRY = (*ENVMON, 3, 1)
FAN_ENTRY = (*ENVMON, 4, 1)
SUPPLY_ENTRY = (*ENVMON, 5, 1)
# CiscoEnvMonState: normal(1), warning(2), critical(3), shutdown(4), notPresent(5),
# notFunctioning(6). notPresent rows are no sensor at all (left out). notFunctioning is
# the monitor's failure: of a temperature or voltage testpoint, the reading is unknown;
# of a fan or a power supply, the part itself has failed.
ENVMON_STATES = {1: "ok", 2: "warning", 3: "critical", 4: "failed"}
NOT_PRESENT, NOT_FUNCTIONING = 5, 6


def _envmon_rows(
    reading: Reading, descr: str, state: str, cls: str, broken: str
) -> Iterable[tuple[Oid, str, str]]:
    """(index, name, status) of one of the tables' present rows."""
    names, states = reading.tables.get(descr, {}), reading.tables.get(state, {})
    for index in sorted(set(names) | set(states)):
        code = number(states.get(index))
        if code == NOT_PRESENT:
            continue
        status = broken if code == NOT_FUNCTIONING else ENVMON_STATES.get(code or 0, "unknown")
        name = label(names.get(index, (0, b""))[1]) or f"{cls} {_index(index)}"
        yield index, name, status


CISCO_ENVMON_COLUMNS: dict[str, Oid] = {
    "ciscoEnvMonVoltageStatusDescr": (*VOLTAGE_ENTRY, 2),
    "ciscoEnvMonVoltageStatusValue": (*VOLTAGE_ENTRY, 3),  # millivolts
    "ciscoEnvMonVoltageThresholdLow": (*VOLTAGE_ENTRY, 4),
    "ciscoEnvMonVoltageThresholdHigh": (*VOLTAGE_ENTRY, 5),
    "ciscoEnvMonVoltageState": (*VOLTAGE_ENTRY, 7),
    "ciscoEnvMonTemperatureStatusDescr": (*TEMPERATURE_ENTRY, 2),
    "ciscoEnvMonTemperatureStatusValue": (*TEMPERATURE_ENTRY, 3),  # deprecated, Gauge32
    "ciscoEnvMonTemperatureThreshold": (*TEMPERATURE_ENTRY, 4),
    "ciscoEnvMonTemperatureState": (*TEMPERATURE_ENTRY, 6),
    "ciscoEnvMonTemperatureStatusValueRev1": (*TEMPERATURE_ENTRY, 7),
    "ciscoEnvMonFanStatusDescr": (*FAN_ENTRY, 2),
    "ciscoEnvMonFanState": (*FAN_ENTRY, 3),
    "ciscoEnvMonSupplyStatusDescr": (*SUPPLY_ENTRY, 2),
    "ciscoEnvMonSupplyState": (*SUPPLY_ENTRY, 3),
}


def _envmon(reading: Reading) -> Derived:
    tables = reading.tables
    sensors: list[Sensor] = []

    def cell(column: str, index: Oid) -> int | None:
        return number(tables.get(column, {}).get(index))

    rows = _envmon_rows(
        reading, "ciscoEnvMonVoltageStatusDescr", "ciscoEnvMonVoltageState", "voltage", "unknown"
    )
    for index, name, status in rows:
        millivolts = cell("ciscoEnvMonVoltageStatusValue", index)
        value = None if millivolts is None else scaled(millivolts, -3)
        # the limits beyond which the device shuts itself down
        limits = {
            key: scaled(mv, -3)
            for key, column in (
                ("low_critical", "ciscoEnvMonVoltageThresholdLow"),
                ("high_critical", "ciscoEnvMonVoltageThresholdHigh"),
            )
            if (mv := cell(column, index))
        }
        sensors.append(Sensor(name, "voltage", status, value, limits, _index(index)))
    rows = _envmon_rows(
        reading,
        "ciscoEnvMonTemperatureStatusDescr",
        "ciscoEnvMonTemperatureState",
        "temperature",
        "unknown",
    )
    for index, name, status in rows:
        # Rev1 is the current object (it carries negative temperatures); the deprecated
        # Gauge32 where a device has no Rev1
        celsius = cell("ciscoEnvMonTemperatureStatusValueRev1", index)
        if celsius is None:
            celsius = cell("ciscoEnvMonTemperatureStatusValue", index)
        shutdown = cell("ciscoEnvMonTemperatureThreshold", index)
        limits = {"high_critical": float(shutdown)} if shutdown else {}
        value = None if celsius is None else float(celsius)
        sensors.append(Sensor(name, "temperature", status, value, limits, _index(index)))
    for cls, descr, state in (
        ("fan", "ciscoEnvMonFanStatusDescr", "ciscoEnvMonFanState"),
        ("psu", "ciscoEnvMonSupplyStatusDescr", "ciscoEnvMonSupplyState"),
    ):
        for index, name, status in _envmon_rows(reading, descr, state, cls, "failed"):
            sensors.append(Sensor(name, cls, status, index=_index(index)))
    return derived(sensors)


CISCO_ENVMON = MibGroup(
    "cisco_envmon", "CISCO-ENVMON-MIB", ENVMON, columns=CISCO_ENVMON_COLUMNS, derive=_envmon
)


# ---------------------------------------------------------------- JUNIPER-MIB

JNX_TABLE = (1, 3, 6, 1, 4, 1, 2636, 3, 1, 13)  # jnxOperatingTable
JNX_OPERATING_ENTRY = (*JNX_TABLE, 1)
# jnxOperatingState: unknown(1), running(2), ready(3), reset(4), runningAtFullSpeed(5),
# down(6), standby(7). A fan at full speed makes up for another fan or for heat.
JNX_STATES = {1: "unknown", 2: "ok", 3: "ok", 4: "warning", 5: "warning", 6: "failed", 7: "ok"}


def _jnx_class(descr: str) -> str | None:
    """A chassis part's class by its description ("FAN: Fan 1 @ 0/0/0", "PEM 0",
    "Power Supply: Power Supply 0 @ 0/0/*"); None for the others (FPCs, PICs, REs)."""
    words = descr.lower()
    if "fan" in words:
        return "fan"
    if "power supply" in words or "pem" in words.split() or "psu" in words:
        return "psu"
    return None


JNX_COLUMNS: dict[str, Oid] = {
    "jnxOperatingDescr": (*JNX_OPERATING_ENTRY, 5),
    "jnxOperatingState": (*JNX_OPERATING_ENTRY, 6),
    "jnxOperatingTemp": (*JNX_OPERATING_ENTRY, 7),  # degrees Celsius; 0: none
}


def _juniper(reading: Reading) -> Derived:
    tables = reading.tables
    descrs: Column = tables.get("jnxOperatingDescr", {})
    states, temps = tables.get("jnxOperatingState", {}), tables.get("jnxOperatingTemp", {})
    sensors: list[Sensor] = []
    for index in sorted(set(descrs) | set(states)):
        descr = label(descrs.get(index, (0, b""))[1])
        cls = _jnx_class(descr)
        code = number(states.get(index))
        name = descr or f"component {_index(index)}"
        if cls is not None and code is not None:
            sensors.append(Sensor(name, cls, JNX_STATES.get(code, "unknown"), index=_index(index)))
        celsius = number(temps.get(index))
        if celsius:  # zero: the part has no sensor
            sensors.append(Sensor(f"{name} temperature", "temperature", "ok", float(celsius)))
    return derived(sensors)


JUNIPER_CHASSIS = MibGroup("juniper_chassis", "JUNIPER-MIB", JNX_TABLE, {}, JNX_COLUMNS, _juniper)


# ---------------------------------------------------------------- HUAWEI-ENTITY-EXTENT-MIB

HW_STATE_TABLE = (1, 3, 6, 1, 4, 1, 2011, 5, 25, 31, 1, 1, 1)  # hwEntityStateTable
HW_COLUMNS: dict[str, Oid] = {
    "hwEntityTemperature": (*HW_STATE_TABLE, 1, 11),  # degrees Celsius; 0: none
    "hwEntityTemperatureThreshold": (*HW_STATE_TABLE, 1, 12),  # the upper alarm threshold
    "hwEntityTemperatureLowThreshold": (*HW_STATE_TABLE, 1, 16),
}
HW_LABELS = {"entPhysicalName": (*ENT_PHYSICAL_ENTRY, 7)}  # the table's index is entPhysicalIndex


def _huawei(reading: Reading) -> Derived:
    tables = reading.tables
    names = tables.get("entPhysicalName", {})
    sensors: list[Sensor] = []
    for index, cell in sorted(tables.get("hwEntityTemperature", {}).items()):
        celsius = number(cell)
        if not celsius:  # zero: the entity (a port, a card without a sensor) has none
            continue
        # the device alarms beyond its thresholds; 0 is a threshold not set
        limits = {
            key: float(limit)
            for key, column in (
                ("high_critical", "hwEntityTemperatureThreshold"),
                ("low_critical", "hwEntityTemperatureLowThreshold"),
            )
            if (limit := number(tables.get(column, {}).get(index)))
        }
        name = label(names.get(index, (0, b""))[1]) or f"entity {_index(index)}"
        sensors.append(
            Sensor(
                f"{name} temperature", "temperature", "ok", float(celsius), limits, _index(index)
            )
        )
    return derived(sensors)


HUAWEI = MibGroup(
    "huawei_temperature",
    "HUAWEI-ENTITY-EXTENT-MIB",
    HW_STATE_TABLE,
    columns=HW_COLUMNS,
    derive=_huawei,
    labels=HW_LABELS,
)


GROUPS: tuple[MibGroup, ...] = (ENTITY_SENSOR, CISCO_ENVMON, JUNIPER_CHASSIS, HUAWEI)

# Every class a sensor may have, these groups' and agent.mibgroups.power's (UPS): what
# the agent config's `sensors:` may give limits for.
CLASSES = frozenset(
    {*SENSOR_TYPES.values(), "psu", "battery", "runtime", "source", "load", "alarms"}
)
