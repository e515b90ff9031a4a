"""Power: UPS-MIB (RFC 1628) and APC PowerNet-MIB: battery charge, runtime, on battery,
input and output voltage, load, alarms, and the temperature and humidity probes of an
APC management card, as rows of measurement `sensor` (agent.mibgroups.sensors) and
conditions.

A UPS is a handful of sensors: `battery` (class battery: charge in percent, status
from the battery's), `battery runtime` (class runtime, seconds), `on battery` (class
source: seconds on battery, status critical while on battery, warning on bypass,
failed with no output), the input and output lines' voltage, current, power,
frequency and load, and `alarms` (UPS-MIB's count of alarms present). A UPS on battery
is a critical condition; the collector names the site in the incident's title
(collector.incidents.rules), since a site on battery is what the NOC must see.
"""

from __future__ import annotations

from collections.abc import Mapping

from enoc.snmp.ber import Oid, oid_text
from enoc.wire import Severity

from . import Derived, MibGroup, Reading, integer
from .sensors import Sensor, derived, label, number, scaled

# ---------------------------------------------------------------- UPS-MIB (RFC 1628)

UPS = (1, 3, 6, 1, 2, 1, 33, 1)  # upsObjects
# upsBatteryStatus: unknown(1), batteryNormal(2), batteryLow(3) (runtime at or below
# upsConfigLowBattTime), batteryDepleted(4) (cannot carry the load if mains fails)
UPS_BATTERY = {1: "unknown", 2: "ok", 3: "critical", 4: "failed"}
# upsOutputSource: other(1), none(2), normal(3), bypass(4), battery(5), booster(6),
# reducer(7); booster and reducer are mains power corrected (AVR)
UPS_SOURCE = {1: "unknown", 2: "failed", 3: "ok", 4: "warning", 5: "critical", 6: "ok", 7: "ok"}
UPS_SOURCE_WORDS = {
    1: "output source unknown",
    2: "no output power",
    3: "on mains",
    4: "on bypass: the load is not protected",
    5: "on battery",
    6: "on mains (boosting)",
    7: "on mains (reducing)",
}
SOURCE_SEVERITY: dict[str, Severity] = {"critical": "critical", "failed": "critical"}


def _source(
    status: str, words: str, seconds: float | None, charge: float | None, runtime: float | None
) -> Sensor:
    """The `on battery` sensor: how the UPS feeds its load; on battery, with how long it
    has been and how long it can last."""
    if words.startswith("on battery"):
        said = [
            f"for {seconds:g} s" if seconds else "",
            f"{charge:g} % charge" if charge is not None else "",
            f"{runtime:g} s left" if runtime is not None else "",
        ]
        detail = ", ".join(s for s in said if s)
        words = f"{words} ({detail})" if detail else words
    return Sensor(
        "on battery",
        "source",
        status,
        seconds,
        message=f"UPS {words}",
        severity=SOURCE_SEVERITY.get(status, "warning"),
    )


def _line_sensors(
    reading: Reading, side: str, columns: Mapping[str, tuple[str, str, int]]
) -> list[Sensor]:
    """One sensor per line and column: `input 1`, `output 2 load` ... `columns` maps a
    column to (the sensor's suffix, class, the power of ten of its unit)."""
    sensors: list[Sensor] = []
    indexes: set[Oid] = set()
    for column in columns:
        indexes.update(reading.tables.get(column, {}))
    for index in sorted(indexes):
        line = oid_text(index)
        for column, (suffix, cls, exponent) in columns.items():
            raw = number(reading.tables.get(column, {}).get(index))
            if raw is not None:
                name = f"{side} {line}{suffix}"
                sensors.append(Sensor(name, cls, "ok", scaled(raw, exponent), index=line))
    return sensors


UPS_MIB_SCALARS: dict[str, Oid] = {
    "upsBatteryStatus": (*UPS, 2, 1, 0),
    "upsSecondsOnBattery": (*UPS, 2, 2, 0),
    "upsEstimatedMinutesRemaining": (*UPS, 2, 3, 0),
    "upsEstimatedChargeRemaining": (*UPS, 2, 4, 0),
    "upsBatteryVoltage": (*UPS, 2, 5, 0),
    "upsBatteryCurrent": (*UPS, 2, 6, 0),
    "upsBatteryTemperature": (*UPS, 2, 7, 0),
    "upsOutputSource": (*UPS, 4, 1, 0),
    "upsOutputFrequency": (*UPS, 4, 2, 0),
    "upsAlarmsPresent": (*UPS, 6, 1, 0),
}
UPS_MIB_COLUMNS: dict[str, Oid] = {
    "upsInputFrequency": (*UPS, 3, 3, 1, 2),
    "upsInputVoltage": (*UPS, 3, 3, 1, 3),
    "upsOutputVoltage": (*UPS, 4, 4, 1, 2),
    "upsOutputCurrent": (*UPS, 4, 4, 1, 3),
    "upsOutputPower": (*UPS, 4, 4, 1, 4),
    "upsOutputPercentLoad": (*UPS, 4, 4, 1, 5),
}


def _ups_mib(reading: Reading) -> Derived:
    sensors: list[Sensor] = []
    charge = integer(reading, "upsEstimatedChargeRemaining")
    battery = integer(reading, "upsBatteryStatus")
    if charge is not None or battery is not None:
        # no battery status at all: the charge read, with no verdict (ok)
        status = "ok" if battery is None else UPS_BATTERY.get(battery, "unknown")
        value = None if charge is None else float(charge)
        sensors.append(Sensor("battery", "battery", status, value))
    minutes = integer(reading, "upsEstimatedMinutesRemaining")
    runtime = None if minutes is None else float(minutes * 60)
    if runtime is not None:
        sensors.append(Sensor("battery runtime", "runtime", "ok", runtime))
    for name, cls, column, exponent in (
        ("battery voltage", "voltage", "upsBatteryVoltage", -1),  # 0.1 V DC
        ("battery current", "current", "upsBatteryCurrent", -1),  # 0.1 A DC
        ("battery temperature", "temperature", "upsBatteryTemperature", 0),
        ("output frequency", "frequency", "upsOutputFrequency", -1),  # 0.1 Hz
    ):
        raw = integer(reading, column)
        if raw is not None:
            sensors.append(Sensor(name, cls, "ok", scaled(raw, exponent)))
    seconds = integer(reading, "upsSecondsOnBattery")
    source = integer(reading, "upsOutputSource")
    if source is not None or seconds is not None:
        # The output source says; a UPS without it is on battery while it counts seconds
        # on battery ("zero shall be returned if the unit is not on battery power").
        code = source if source is not None else (5 if seconds else 3)
        status, words = UPS_SOURCE.get(code, "unknown"), UPS_SOURCE_WORDS.get(code, "")
        words = words or f"output source {code}"
        value = None if seconds is None else float(seconds)
        percent = None if charge is None else float(charge)
        sensors.append(_source(status, words, value, percent, runtime))
    alarms = integer(reading, "upsAlarmsPresent")
    if alarms is not None:
        status = "warning" if alarms else "ok"
        message = f"UPS alarms present: {alarms}"
        sensors.append(Sensor("alarms", "alarms", status, float(alarms), message=message))
    sensors += _line_sensors(
        reading,
        "input",
        {
            "upsInputVoltage": ("", "voltage", 0),  # RMS volts
            "upsInputFrequency": (" frequency", "frequency", -1),  # 0.1 Hz
        },
    )
    sensors += _line_sensors(
        reading,
        "output",
        {
            "upsOutputVoltage": ("", "voltage", 0),  # RMS volts
            "upsOutputCurrent": (" current", "current", -1),  # 0.1 RMS A
            "upsOutputPower": (" power", "power", 0),  # watts
            "upsOutputPercentLoad": (" load", "load", 0),  # percent of capacity
        },
    )
    return derived(sensors)


UPS_MIB = MibGroup(
    "ups_mib", "UPS-MIB", UPS, scalars=UPS_MIB_SCALARS, columns=UPS_MIB_COLUMNS, derive=_ups_mib
)


# ---------------------------------------------------------------- PowerNet-MIB (APC)

APC_UPS = (1, 3, 6, 1, 4, 1, 318, 1, 1, 1)  # apc.products.hardware.ups
# upsBasicBatteryStatus: unknown(1), batteryNormal(2), batteryLow(3),
# batteryInFaultCondition(4), noBatteryPresent(5)
APC_BATTERY = {1: "unknown", 2: "ok", 3: "critical", 4: "failed", 5: "failed"}
NEEDS_REPLACING = 2  # upsAdvBatteryReplaceIndicator batteryNeedsReplacing(2)
# upsBasicOutputStatus, the states a NOC tells apart; the rest (spot modes, self tests of
# newer firmware) are unknown
APC_OUTPUT = {
    2: ("ok", "on line"),
    3: ("critical", "on battery"),
    4: ("ok", "on line (smart boost)"),
    5: ("failed", "output off (timed sleep)"),
    6: ("warning", "on bypass (software)"),
    7: ("failed", "output off"),
    8: ("warning", "rebooting"),
    9: ("warning", "on bypass (switched)"),
    10: ("critical", "on bypass (hardware failure)"),
    11: ("failed", "output off until power returns"),
    12: ("ok", "on line (smart trim)"),
    13: ("ok", "on line (eco mode)"),
    14: ("ok", "hot standby"),
    15: ("warning", "on battery (battery test)"),
}
TICKS = -2  # TimeTicks: hundredths of a second


# Sensors of a value each: (name, class, the objects that give it, first answered first)
APC_VALUES = (
    (
        "battery temperature",
        "temperature",
        ("upsHighPrecBatteryTemperature", "upsAdvBatteryTemperature"),
    ),
    ("battery voltage", "voltage", ("upsHighPrecBatteryActualVoltage",)),
    ("input", "voltage", ("upsHighPrecInputLineVoltage", "upsAdvInputLineVoltage")),
    ("input frequency", "frequency", ("upsHighPrecInputFrequency", "upsAdvInputFrequency")),
    ("output", "voltage", ("upsHighPrecOutputVoltage", "upsAdvOutputVoltage")),
    ("output frequency", "frequency", ("upsHighPrecOutputFrequency", "upsAdvOutputFrequency")),
    ("output current", "current", ("upsHighPrecOutputCurrent", "upsAdvOutputCurrent")),
    ("output load", "load", ("upsHighPrecOutputLoad", "upsAdvOutputLoad")),
)


APC_SCALARS: dict[str, Oid] = {
    "upsBasicBatteryStatus": (*APC_UPS, 2, 1, 1, 0),
    "upsBasicBatteryTimeOnBattery": (*APC_UPS, 2, 1, 2, 0),  # TimeTicks
    "upsAdvBatteryCapacity": (*APC_UPS, 2, 2, 1, 0),  # percent
    "upsAdvBatteryTemperature": (*APC_UPS, 2, 2, 2, 0),  # degrees Celsius
    "upsAdvBatteryRunTimeRemaining": (*APC_UPS, 2, 2, 3, 0),  # TimeTicks
    "upsAdvBatteryReplaceIndicator": (*APC_UPS, 2, 2, 4, 0),
    "upsHighPrecBatteryCapacity": (*APC_UPS, 2, 3, 1, 0),  # tenths of a percent
    "upsHighPrecBatteryTemperature": (*APC_UPS, 2, 3, 2, 0),  # tenths of a degree C
    "upsHighPrecBatteryActualVoltage": (*APC_UPS, 2, 3, 4, 0),  # tenths of a volt DC
    "upsAdvInputLineVoltage": (*APC_UPS, 3, 2, 1, 0),  # volts
    "upsAdvInputFrequency": (*APC_UPS, 3, 2, 4, 0),  # hertz
    "upsHighPrecInputLineVoltage": (*APC_UPS, 3, 3, 1, 0),  # tenths of a volt
    "upsHighPrecInputFrequency": (*APC_UPS, 3, 3, 4, 0),  # tenths of a hertz
    "upsBasicOutputStatus": (*APC_UPS, 4, 1, 1, 0),
    "upsAdvOutputVoltage": (*APC_UPS, 4, 2, 1, 0),  # volts
    "upsAdvOutputFrequency": (*APC_UPS, 4, 2, 2, 0),  # hertz
    "upsAdvOutputLoad": (*APC_UPS, 4, 2, 3, 0),  # percent
    "upsAdvOutputCurrent": (*APC_UPS, 4, 2, 4, 0),  # amperes
    "upsHighPrecOutputVoltage": (*APC_UPS, 4, 3, 1, 0),  # tenths of a volt
    "upsHighPrecOutputFrequency": (*APC_UPS, 4, 3, 2, 0),  # tenths of a hertz
    "upsHighPrecOutputLoad": (*APC_UPS, 4, 3, 3, 0),  # tenths of a percent
    "upsHighPrecOutputCurrent": (*APC_UPS, 4, 3, 4, 0),  # tenths of an ampere
}


def _apc(reading: Reading) -> Derived:
    def value(*names: str) -> float | None:
        """The first of the objects the UPS answers, in SI units: the high precision one
        (in tenths) before the older one in whole units."""
        for name in names:
            raw = integer(reading, name)
            if raw is not None:
                return scaled(raw, -1 if "HighPrec" in name else 0)
        return None

    sensors: list[Sensor] = []
    charge = value("upsHighPrecBatteryCapacity", "upsAdvBatteryCapacity")
    battery = integer(reading, "upsBasicBatteryStatus")
    replace = integer(reading, "upsAdvBatteryReplaceIndicator") == NEEDS_REPLACING
    if charge is not None or battery is not None or replace:
        status = "ok" if battery is None else APC_BATTERY.get(battery, "unknown")
        message = ""
        if replace and status in ("ok", "unknown"):
            status, message = "warning", "UPS battery needs replacing"
        sensors.append(Sensor("battery", "battery", status, charge, message=message))
    ticks = integer(reading, "upsAdvBatteryRunTimeRemaining")
    runtime = None if ticks is None else scaled(ticks, TICKS)
    if runtime is not None:
        sensors.append(Sensor("battery runtime", "runtime", "ok", runtime))
    for name, cls, names in APC_VALUES:
        reading_value = value(*names)
        if reading_value is not None:
            sensors.append(Sensor(name, cls, "ok", reading_value))
    output = integer(reading, "upsBasicOutputStatus")
    if output is not None:
        status, words = APC_OUTPUT.get(output, ("unknown", f"output status {output}"))
        on_battery = integer(reading, "upsBasicBatteryTimeOnBattery")
        seconds = None if on_battery is None else scaled(on_battery, TICKS)
        sensors.append(_source(status, words, seconds, charge, runtime))
    return derived(sensors)


APC = MibGroup("apc_ups", "PowerNet-MIB", APC_UPS, scalars=APC_SCALARS, derive=_apc)


# PowerNet-MIB's universal I/O probes (temperature, humidity) on an APC management card:
# a site's room, seen through its UPS or PDU
UIO_SENSOR_TABLE = (1, 3, 6, 1, 4, 1, 318, 1, 1, 25, 1, 2)  # uioSensorStatusTable
UIO_COLUMNS: dict[str, Oid] = {
    "uioSensorStatusSensorName": (*UIO_SENSOR_TABLE, 1, 3),
    "uioSensorStatusTemperatureDegC": (*UIO_SENSOR_TABLE, 1, 6),  # -1: no reading
    "uioSensorStatusHumidity": (*UIO_SENSOR_TABLE, 1, 7),  # % RH; -1: none
    "uioSensorStatusAlarmStatus": (*UIO_SENSOR_TABLE, 1, 9),
}
# uioSensorStatusAlarmStatus: uioNormal(1), uioWarning(2), uioCritical(3),
# sensorStatusNotApplicable(4) (no thresholds set: no verdict)
UIO_ALARM = {1: "ok", 2: "warning", 3: "critical", 4: "ok"}


def _uio(reading: Reading) -> Derived:
    tables = reading.tables
    names = tables.get("uioSensorStatusSensorName", {})
    alarms = tables.get("uioSensorStatusAlarmStatus", {})
    sensors: list[Sensor] = []
    for column, cls in (
        ("uioSensorStatusTemperatureDegC", "temperature"),
        ("uioSensorStatusHumidity", "humidity"),
    ):
        for index, cell in sorted(tables.get(column, {}).items()):
            value = number(cell)
            if value is None or value == -1:
                continue
            line = oid_text(index)  # port.sensor
            name = label(names.get(index, (0, b""))[1]) or f"probe {line}"
            status = UIO_ALARM.get(number(alarms.get(index)) or 4, "unknown")
            sensors.append(Sensor(f"{name} {cls}", cls, status, float(value), index=line))
    return derived(sensors)


APC_PROBES = MibGroup("apc_probes", "PowerNet-MIB", UIO_SENSOR_TABLE, {}, UIO_COLUMNS, _uio)


GROUPS: tuple[MibGroup, ...] = (UPS_MIB, APC, APC_PROBES)
