"""Sensors (issue 17, item 3): every ENTITY-SENSOR-MIB and CISCO-ENVMON-MIB row of the
real-device corpus, and JUNIPER-MIB's fans and power supplies, polled through the
simulator, become rows of measurement `sensor`; hand-checked values; the edge judges a
sensor's status and value with hysteresis; the agent config's `sensors:` limits."""

from __future__ import annotations

import itertools

import pytest
from corpuskit import RECORDINGS
from sensorkit import by_name, indexes, recorded, recording, served

from agent.config import AgentConfig, SensorsConfig
from agent.edge import SENSOR_LIMITS, EdgeDetector, EdgeSettings, SensorLimits
from agent.mibgroups import GROUPS, Condition, Reading
from agent.mibgroups.sensors import CLASSES, SENSOR_TYPES, entity_sensor_value
from enoc.config import ConfigError, parse_config
from enoc.snmp import ber
from enoc.wire import Value

ENT_SENSOR = "1.3.6.1.2.1.99.1.1.1"
ENVMON = "1.3.6.1.4.1.9.9.13.1"
JNX_OPERATING = "1.3.6.1.4.1.2636.3.1.13.1"
HW_STATE = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"
# (table, descr column, state column) of CISCO-ENVMON-MIB's four status tables
ENVMON_TABLES = {"voltage": (2, 2, 7), "temperature": (3, 2, 6), "fan": (4, 2, 3), "psu": (5, 2, 3)}
NOT_PRESENT = "5"


def corpus_with(prefix: str) -> list[str]:
    """The recordings that hold a line under `prefix` (their text says, not the manifest)."""
    if not RECORDINGS.is_dir():
        return ["corpus-absent"]
    return sorted(
        p.name.removesuffix(".snmprec")
        for p in RECORDINGS.glob("*.snmprec")
        if f"\n{prefix}.".encode() in b"\n" + p.read_bytes()
    )


@pytest.mark.servers
@pytest.mark.parametrize("name", corpus_with(ENT_SENSOR))
async def test_every_entity_sensor_row_is_a_sensor(name: str) -> None:
    path = recording(name)
    lines = recorded(path)
    # a row is an index of the table, in whichever of its columns the device answers
    rows = indexes(lines, *(f"{ENT_SENSOR}.{c}" for c in range(1, 7)))
    types = {i: lines.get(f"{ENT_SENSOR}.1.{i}", ("", "1"))[1] for i in rows}
    async with served({name: path}, "127.45.0.1") as sim:
        sample, _ = await sim.poll(name)
    sensors = by_name(sample.rows)
    assert len(sensors) == len(rows) > 0
    expected = sorted(SENSOR_TYPES.get(int(t), "other") for t in types.values())
    assert sorted(r.tags["class"] for r in sensors.values()) == expected
    assert all(r.fields["status"] in ("ok", "unknown", "failed") for r in sensors.values())


@pytest.mark.servers
@pytest.mark.parametrize("name", corpus_with(ENVMON))
async def test_every_present_envmon_row_is_a_sensor(name: str) -> None:
    path = recording(name)
    lines = recorded(path)
    expected: list[str] = []
    for cls, (table, descr, state) in ENVMON_TABLES.items():
        entry = f"{ENVMON}.{table}.1"
        for index in indexes(lines, f"{entry}.{descr}", f"{entry}.{state}"):
            if lines.get(f"{entry}.{state}.{index}", ("", ""))[1] != NOT_PRESENT:
                expected.append(cls)
    async with served({name: path}, "127.45.1.1") as sim:
        sample, _ = await sim.poll(name)
    sensors = by_name(sample.rows)
    assert sorted(r.tags["class"] for r in sensors.values()) == sorted(expected)
    assert len(expected) > 0


@pytest.mark.servers
async def test_juniper_fans_and_power_supplies_and_temperatures() -> None:
    path = recording("junos")
    lines = recorded(path)
    descrs = {i: lines[f"{JNX_OPERATING}.5.{i}"][1] for i in indexes(lines, f"{JNX_OPERATING}.5")}
    fans = {d for d in descrs.values() if "fan" in d.lower()}
    supplies = {d for d in descrs.values() if "power supply" in d.lower()}
    hot = {
        f"{descrs[i]} temperature"
        for i in indexes(lines, f"{JNX_OPERATING}.7")
        if lines[f"{JNX_OPERATING}.7.{i}"][1] != "0"
    }
    async with served({"junos": path}, "127.45.2.1") as sim:
        sample, _ = await sim.poll("junos")
    sensors = by_name(sample.rows)
    assert {n for n, r in sensors.items() if r.tags["class"] == "fan"} == fans
    assert {n for n, r in sensors.items() if r.tags["class"] == "psu"} == supplies
    assert {n for n, r in sensors.items() if r.tags["class"] == "temperature"} == hot
    assert len(fans) == 6 and len(supplies) == 2
    # jnxOperatingState running(2) -> ok; jnxOperatingTemp 33 (FPC 0) in degrees Celsius
    assert sensors["FAN: Fan 1 @ 0/0/0"].fields == {"status": "ok"}
    fpc = sensors["FPC: EX4200-24T, 8 POE @ 0/*/* temperature"]
    assert fpc.fields == {"status": "ok", "value": 33.0}


@pytest.mark.servers
async def test_huawei_temperatures() -> None:
    path = recording("vrp_5720-vrf")
    lines = recorded(path)
    column = f"{HW_STATE}.11"
    hot = {i for i in indexes(lines, column) if lines[f"{column}.{i}"][1] != "0"}
    async with served({"vrp": path}, "127.45.4.1") as sim:
        sample, _ = await sim.poll("vrp")
    sensors = by_name(sample.rows)
    assert len(sensors) == len(hot) == 3
    # 67108873 (entPhysicalName "MPU Board 0"): hwEntityTemperature 44 degrees C,
    # hwEntityTemperatureThreshold 57, hwEntityTemperatureLowThreshold 0 (not set)
    board = sensors["MPU Board 0 temperature"]
    assert board.fields == {"status": "ok", "value": 44.0, "high_critical": 57.0}


@pytest.mark.servers
async def test_hand_checked_values() -> None:
    names = ("arista_eos_vrf", "arubaos-cx_6300m", "xos_sfp", "iosxe_c9400-svl", "ios_c3560")
    async with served({n: recording(n) for n in names}, "127.45.3.1") as sim:
        got = {n: by_name((await sim.poll(n))[0].rows) for n in names}
    arista, aruba, xos = got["arista_eos_vrf"], got["arubaos-cx_6300m"], got["xos_sfp"]
    # Arista 100006001 "Cpu temp sensor" (entPhysicalDescr: its entPhysicalName is empty):
    # celsius(8), units(9), precision 1, raw 418 -> 41.8 degrees C
    assert arista["Cpu temp sensor"].fields == {"status": "ok", "value": 41.8}
    assert arista["Cpu temp sensor"].tags["class"] == "temperature"
    # 100006007 "CpucardPwrCon Rail1 12V standby": voltsAC(3), units(9), precision 2,
    # raw 1233 -> 12.33 V
    assert arista["CpucardPwrCon Rail1 12V standby"].fields["value"] == 12.33
    # 100321212 "DOM TX Power Sensor for Ethernet21": watts(6), milli(8), precision 4,
    # raw 2210 -> 2210 x 10^-3 / 10^4 = 0.000221 W (0.221 mW, an SFP's transmit power)
    tx = arista["DOM TX Power Sensor for Ethernet21"]
    assert (tx.tags["class"], tx.fields["value"]) == ("power", 0.000221)
    # Aruba 107001, no entPhysicalName nor Descr: celsius, milli(8), precision 0, raw 24500
    # -> 24.5 degrees C; named by class and index
    assert aruba["temperature 107001"].fields == {"status": "ok", "value": 24.5}
    # Extreme 134 "SFP TX Bias Current Sensor" (a name many ports share: the index tells
    # them apart): amperes(5), milli(8), precision 0, raw 34 -> 0.034 A
    assert xos["SFP TX Bias Current Sensor (134)"].fields == {"status": "ok", "value": 0.034}
    # Cisco c9400 envmon 3022 "Switch 1 Slot 3 Temp: UADP": ...3.1.7 (Rev1) 49 degrees C,
    # ...3.1.4 threshold 125 (shutdown: high_critical), ...3.1.6 normal(1)
    uadp = got["iosxe_c9400-svl"]["Switch 1 Slot 3 Temp: UADP"]
    assert uadp.fields == {"status": "ok", "value": 49.0, "high_critical": 125.0}
    # c3560: a fan and a supply, normal(1), no value
    c3560 = got["ios_c3560"]
    assert c3560["Switch#1, Fan#1"].fields == {"status": "ok"}
    assert c3560["Sw1, PS1 Normal, RPS NotExist"].tags["class"] == "psu"


def test_answers_of_the_wrong_type_are_no_value_and_break_nothing() -> None:
    """A device's garbage (an OCTET STRING for a number, a name of NULs and bad UTF-8, a
    column with rows the others lack): rows without the value, never an exception."""
    index = (7,)
    garbage = Reading(
        {"upsEstimatedChargeRemaining": b"91", "upsOutputSource": 5, "upsSecondsOnBattery": True},
        {
            "entPhySensorType": {index: (ber.OCTET_STRING, b"8")},
            "entPhySensorValue": {index: (ber.OCTET_STRING, b"418"), (8,): (ber.INTEGER, 5)},
            "entPhySensorOperStatus": {index: (ber.INTEGER, 99)},
            "entPhysicalName": {index: (ber.OCTET_STRING, b"\x00In\xfflet\n")},
            "ciscoEnvMonFanState": {index: (ber.OCTET_STRING, b"1")},
        },
    )
    rows = {r.tags["sensor"]: r for g in GROUPS.values() for r in g.derive(garbage).rows}
    assert rows["In\ufffdlet"].fields == {"status": "unknown"}  # type 8 unread: class other
    assert rows["In\ufffdlet"].tags["class"] == "other"
    assert rows["other 8"].fields == {"status": "unknown", "value": 5.0}
    assert rows["fan 7"].fields == {"status": "unknown"}
    broken = Reading({}, {"entPhySensorOperStatus": {index: (ber.INTEGER, 3)}})
    (condition,) = GROUPS["entity_sensor"].derive(broken).conditions
    assert (condition.state, condition.severity) == ("failed", "warning")  # nonoperational(3)
    assert condition.message == "other 7: sensor not operational"
    assert rows["on battery"].fields["status"] == "critical"  # upsOutputSource battery(5)
    assert "value" not in rows["on battery"].fields  # a boolean is no number of seconds


def test_entity_sensor_scale_and_precision() -> None:
    assert entity_sensor_value(418, 9, 1) == 41.8
    assert entity_sensor_value(24500, 8, 0) == 24.5
    assert entity_sensor_value(3, 10, 0) == 3000.0  # kilo
    assert entity_sensor_value(-1, 7, 0) == -0.000001  # micro, a negative reading
    assert entity_sensor_value(12, 9, -2) == 12.0  # negative precision: accurate digits
    assert entity_sensor_value(1_000_000_000, 9, 0) is None  # overflow error
    assert entity_sensor_value(-1_000_000_000, 9, 0) is None  # underflow error


# ---------------------------------------------------------------- events


def fan(status: str) -> Condition:
    attrs: dict[str, Value] = {"sensor": "Fan 1", "class": "fan", "status": status}
    return Condition("sensor:Fan 1", status, "major", f"fan Fan 1: {status}", attrs)


def temperature(value: float, **limits: float) -> Condition:
    attrs: dict[str, Value] = {"sensor": "Inlet", "class": "temperature", "value": value}
    attrs.update(limits)
    return Condition("sensor:Inlet", "ok", "critical", f"temperature Inlet {value:g}: ok", attrs)


def detector(**settings: object) -> EdgeDetector:
    ids = itertools.count(1)
    return EdgeDetector("lab-1", EdgeSettings(**settings), new_id=lambda: f"e{next(ids)}")  # type: ignore[arg-type]


def test_a_fan_failure_is_an_event_after_two_polls_and_clears() -> None:
    edge = detector()
    states = ["ok", "ok", "failed", "ok", "failed", "failed", "failed", "ok", "ok"]
    events = {t: edge.conditions("sw1", [fan(s)], float(t)) for t, s in enumerate(states)}
    raised = [(t, e.state, e.severity, e.ts) for t, es in events.items() for e in es]
    # one odd poll (t=2) raises nothing; failed held two polls (t=4, 5) does, stamped t=4
    assert raised == [(5, "failed", "major", 4.0), (8, "ok", "info", 7.0)]


def test_a_temperature_against_the_configured_limits_with_hysteresis() -> None:
    edge = detector()  # temperature: warning 70, critical 85, hysteresis 3
    values = [60, 72, 72, 69, 68, 86, 86, 84, 66, 66]
    got = []
    for t, value in enumerate(values):
        got += [(t, e.state, e.severity) for e in edge.conditions("sw1", [temperature(value)], t)]
    # 69 and 68 stay warning (it leaves below 70 - 3), 84 stays critical (below 82)
    assert got == [(2, "warning", "warning"), (6, "critical", "critical"), (9, "ok", "info")]


def test_the_device_thresholds_replace_the_configured_ones() -> None:
    edge = detector()
    events = []
    for t in range(2):  # 90: above the configured 85, below the device's own 112
        events += edge.conditions("sw1", [temperature(90, high_critical=112)], t)
    assert events == []
    for t in range(2, 4):
        events += edge.conditions("sw1", [temperature(113, high_critical=112)], t)
    (event,) = events
    assert (event.state, event.severity) == ("critical", "critical")
    assert event.message == "temperature Inlet 113 at or above 112"
    assert (event.attrs["limit"], event.attrs["limit_by"]) == (112, "device")


def test_the_worse_of_status_and_value_and_unknown_statuses() -> None:
    edge = detector()
    broken = Condition(
        "sensor:Inlet", "unknown", "major", "", {"sensor": "Inlet", "class": "temperature"}
    )
    assert edge.conditions("sw1", [broken], 0) + edge.conditions("sw1", [broken], 1) == []
    hot = Condition(
        "sensor:Inlet",
        "warning",
        "warning",
        "temperature Inlet warning",
        {"sensor": "Inlet", "class": "temperature", "value": 90},
    )
    events = edge.conditions("sw1", [hot], 2) + edge.conditions("sw1", [hot], 3)
    assert [(e.state, e.attrs["limit_by"]) for e in events] == [("critical", "config")]


def test_limits_validate_and_the_config_section_replaces_a_class() -> None:
    with pytest.raises(ValueError, match=r"high_warning \(90\) must not exceed high_critical"):
        SensorLimits(high_warning=90, high_critical=80)
    with pytest.raises(ValueError, match="hysteresis must be at least 0"):
        SensorLimits(hysteresis=-1)
    base = "agent_id: a\nsite: s\nspool: {path: /tmp/x}\n"
    config = parse_config(
        base + "sensors:\n  temperature: {high_warning: 60}\n  fan: {low_critical: 1000}\n",
        AgentConfig,
    )
    limits = config.sensor_limits()
    assert limits["temperature"] == SensorLimits(high_warning=60, hysteresis=3)
    assert limits["fan"] == SensorLimits(low_critical=1000)
    assert limits["battery"] == SENSOR_LIMITS["battery"]
    edge = detector(sensors=limits)
    events = edge.conditions("sw1", [temperature(65)], 0) + edge.conditions(
        "sw1", [temperature(65)], 1
    )
    assert [e.state for e in events] == ["warning"]
    with pytest.raises(ConfigError, match=r"<string>:5: sensors.temprature: unknown key"):
        parse_config(base + "sensors:\n  temprature: {high_warning: 60}\n", AgentConfig)
    with pytest.raises(ConfigError, match=r"sensors\.humidity.+must not exceed"):
        parse_config(
            base + "sensors:\n  humidity: {low_warning: 90, high_warning: 80}\n", AgentConfig
        )


def test_every_sensor_class_has_its_config_key() -> None:
    assert set(SensorsConfig.__dataclass_fields__) == CLASSES
