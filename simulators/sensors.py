"""The sensors of a generated device: ENTITY-MIB names and ENTITY-SENSOR-MIB readings.

Every generated device of a fleet with `sensors: true` gets the same chassis: two
temperatures, two fans and two power supplies, as most routers and switches of the corpus
report them (ENTITY-SENSOR-MIB rows indexed by entPhysicalIndex, each named in
entPhysicalTable). Readings wobble slowly around their typical value; the faults
`fan_fail` (a fan stops: 0 rpm, nonoperational) and `overheat` (+35 degrees C) change them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from enoc.snmp import ber
from enoc.snmp.mib import ENT_PHY_SENSOR_ENTRY, ENT_PHYSICAL_ENTRY

from .model import Sensor, static

if TYPE_CHECKING:
    from .model import Device, MibBuilder

# ENTITY-MIB PhysicalClass
CHASSIS, POWER_SUPPLY, FAN, SENSOR = 3, 6, 7, 8
# ENTITY-SENSOR-MIB EntitySensorDataType, EntitySensorDataScale, EntitySensorStatus
VOLTS_DC, WATTS, CELSIUS, RPM = 4, 6, 8, 10
UNITS = 9
OK, NONOPERATIONAL = 1, 3
OVERHEAT_C = 35.0
WOBBLE_S = 1800.0

STANDARD_SENSORS = (
    Sensor(10, "Inlet temperature", SENSOR, CELSIUS, 1, 24.0, 1.5, "C"),
    Sensor(11, "CPU temperature", SENSOR, CELSIUS, 1, 48.0, 4.0, "C"),
    Sensor(20, "Fan 1", FAN, RPM, 0, 7200.0, 150.0, "rpm"),
    Sensor(21, "Fan 2", FAN, RPM, 0, 7100.0, 150.0, "rpm"),
    Sensor(30, "PSU 1", POWER_SUPPLY, VOLTS_DC, 2, 12.05, 0.04, "V"),
    Sensor(31, "PSU 2", POWER_SUPPLY, VOLTS_DC, 2, 12.02, 0.04, "V"),
    Sensor(32, "PSU 1 input power", SENSOR, WATTS, 0, 180.0, 30.0, "W"),
)
FANS = tuple(s.index for s in STANDARD_SENSORS if s.kind == RPM)


def reading(device: Device, sensor: Sensor, now: float) -> tuple[int, int]:
    """(entPhySensorOperStatus, entPhySensorValue) of a sensor now."""
    if sensor.kind == RPM and sensor.index in device.faults.fans_failed:
        return NONOPERATIONAL, 0
    value = sensor.value + sensor.swing * math.sin(
        2 * math.pi * now / WOBBLE_S + sensor.index + device.seed % 97
    )
    if sensor.kind == CELSIUS and device.faults.overheat:
        value += OVERHEAT_C
    return OK, round(value * 10**sensor.precision)


def add_columns(b: MibBuilder, device: Device) -> None:
    """The device's entPhysicalTable (its chassis and each sensor) and entPhySensorTable."""
    chassis = (1,)
    b.column(ENT_PHYSICAL_ENTRY, 2, chassis, static(ber.encode_octets(device.sys_descr)))
    b.column(ENT_PHYSICAL_ENTRY, 5, chassis, static(ber.encode_integer(CHASSIS)))
    b.column(ENT_PHYSICAL_ENTRY, 7, chassis, static(ber.encode_octets(b"Chassis")))
    for row, sensor in enumerate(device.sensors):
        idx = (sensor.index,)
        name = ber.encode_octets(sensor.name.encode())
        b.column(ENT_PHYSICAL_ENTRY, 2, idx, static(name))
        b.column(ENT_PHYSICAL_ENTRY, 5, idx, static(ber.encode_integer(sensor.entity_class)))
        b.column(ENT_PHYSICAL_ENTRY, 7, idx, static(name))
        b.column(ENT_PHY_SENSOR_ENTRY, 1, idx, static(ber.encode_integer(sensor.kind)))
        b.column(ENT_PHY_SENSOR_ENTRY, 2, idx, static(ber.encode_integer(UNITS)))
        b.column(ENT_PHY_SENSOR_ENTRY, 3, idx, static(ber.encode_integer(sensor.precision)))
        b.column(ENT_PHY_SENSOR_ENTRY, 4, idx, _value(row))
        b.column(ENT_PHY_SENSOR_ENTRY, 5, idx, _status(row))
        b.column(ENT_PHY_SENSOR_ENTRY, 6, idx, static(ber.encode_octets(sensor.units.encode())))


def _value(row: int) -> Callable[[Device, float], bytes]:
    return lambda d, now: ber.encode_integer(reading(d, d.sensors[row], now)[1])


def _status(row: int) -> Callable[[Device, float], bytes]:
    return lambda d, now: ber.encode_integer(reading(d, d.sensors[row], now)[0])
