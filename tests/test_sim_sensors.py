"""A fleet with sensors serves ENTITY-MIB names and ENTITY-SENSOR-MIB readings, read by
net-snmp's snmpbulkwalk; the fan_fail and overheat faults change them, clearing restores."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from simkit import FakeClock, free_udp_port
from test_sim_netsnmp import parse, snmp, v2c

from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.model import attach_views
from simulators.sensors import FANS, OVERHEAT_C, STANDARD_SENSORS
from simulators.server import FaultError, Simulator

pytestmark = pytest.mark.servers

ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.7"
SENSOR = "1.3.6.1.2.1.99.1.1.1"


def fleet(sensors: bool, port: int) -> FleetSpec:
    site = SiteSpec("nyc", "americas", "New York", -5, [DeviceGroup("pe-router", 1)])
    return FleetSpec(sites=[site], port=port, address_base="127.32.0.1", sensors=sensors)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    clock = FakeClock(time.time())
    devices = build_devices(fleet(True, free_udp_port("127.32.0.1")), clock.now)
    attach_views(devices)
    async with Simulator(devices, clock=clock, rng=random.Random(1)) as simulator:
        yield simulator


async def walk(sim: Simulator, oid: str) -> dict[str, str]:
    (device,) = sim.devices.values()
    return parse(await snmp("snmpbulkwalk", *v2c(f"{device.address}:{device.port}"), oid))


def celsius(text: str) -> float:
    return int(text.removeprefix("INTEGER: ")) / 10  # precision 1


async def test_every_sensor_is_named_and_read_in_its_units(sim: Simulator) -> None:
    names = await walk(sim, ENT_NAME)
    sensors = await walk(sim, SENSOR)
    assert names[f"{ENT_NAME}.1"] == 'STRING: "Chassis"'
    for s in STANDARD_SENSORS:
        assert names[f"{ENT_NAME}.{s.index}"] == f'STRING: "{s.name}"'
        assert sensors[f"{SENSOR}.1.{s.index}"] == f"INTEGER: {s.kind}"
        assert sensors[f"{SENSOR}.2.{s.index}"] == "INTEGER: 9"  # units
        assert sensors[f"{SENSOR}.3.{s.index}"] == f"INTEGER: {s.precision}"
        assert sensors[f"{SENSOR}.5.{s.index}"] == "INTEGER: 1"  # ok
        assert sensors[f"{SENSOR}.6.{s.index}"] == f'STRING: "{s.units}"'
        value = int(sensors[f"{SENSOR}.4.{s.index}"].removeprefix("INTEGER: "))
        assert abs(value / 10**s.precision - s.value) <= s.swing + 10**-s.precision
    # six columns per sensor, nothing else in the table
    assert len(sensors) == 6 * len(STANDARD_SENSORS)


async def test_a_failed_fan_and_an_overheat_show_and_clear(sim: Simulator) -> None:
    (device,) = sim.devices.values()
    inlet = next(s for s in STANDARD_SENSORS if s.name == "Inlet temperature")
    fan = FANS[1]
    before = await walk(sim, SENSOR)
    sim.inject(device.name, {"kind": "fan_fail", "fan": fan})
    sim.inject(device.name, {"kind": "overheat"})
    assert {"kind": "fan_fail", "fan": fan} in device.faults.describe()
    during = await walk(sim, SENSOR)
    assert during[f"{SENSOR}.4.{fan}"] == "INTEGER: 0"
    assert during[f"{SENSOR}.5.{fan}"] == "INTEGER: 3"  # nonoperational
    assert during[f"{SENSOR}.5.{FANS[0]}"] == "INTEGER: 1"  # the other fan runs on
    hotter = celsius(during[f"{SENSOR}.4.{inlet.index}"]) - celsius(
        before[f"{SENSOR}.4.{inlet.index}"]
    )
    assert hotter == pytest.approx(OVERHEAT_C, abs=0.11)  # the clock stood still
    assert sim.clear(device.name) == []
    after = await walk(sim, SENSOR)
    assert after == before


async def test_faults_need_a_fan_that_exists_and_a_fleet_with_sensors() -> None:
    spec = fleet(False, free_udp_port("127.32.0.1"))
    plain = build_devices(spec, time.time())
    with_sensors = build_devices(replace(spec, sensors=True), time.time())
    attach_views([*plain, *with_sensors])
    sim = Simulator([*with_sensors])
    (device,) = with_sensors
    with pytest.raises(FaultError, match=r"has no fan 99 \(its fans: 20, 21\)"):
        sim.inject(device.name, {"kind": "fan_fail", "fan": 99})
    bare = Simulator(plain)
    with pytest.raises(FaultError, match="has no sensors"):
        bare.inject(plain[0].name, {"kind": "overheat"})
    with pytest.raises(FaultError, match="start the fleet with sensors"):
        bare.inject(plain[0].name, {"kind": "fan_fail"})
    # a fleet without sensors serves no ENTITY-SENSOR-MIB object
    assert plain[0].view is not None and with_sensors[0].view is not None
    assert len(with_sensors[0].view) - len(plain[0].view) == 3 + 9 * len(STANDARD_SENSORS)
