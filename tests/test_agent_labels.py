"""Label columns (agent.mibgroups.Labels): the names, types and scales of a device's
sensors are walked on the first poll, then kept, and walked again when a sensor appears
that they do not name, when they grow old, or after a reboot; the rows stay the same."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from simkit import FakeClock, free_udp_port, snmp_client

from agent.mibgroups import Labels
from agent.poller import RawPoll, collect
from agent.profiles import Profile
from enoc.snmp.client import SnmpClient, Target, V2c
from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.model import Device, attach_views
from simulators.sensors import FAN, RPM, STANDARD_SENSORS
from simulators.server import Simulator

pytestmark = pytest.mark.servers

ADDRESS = "127.46.0.1"
SENSORS_ONLY = Profile("sensors-only", ())  # no poll group: the walk is the sensors' alone
# The label columns' rows: entPhysicalName and Descr of the chassis and each sensor, and
# each sensor's type, scale, precision and units.
LABEL_ROWS = 2 * (1 + len(STANDARD_SENSORS)) + 4 * len(STANDARD_SENSORS)


class Rig:
    def __init__(self, sim: Simulator, device: Device, client: SnmpClient) -> None:
        self.sim, self.device, self.client = sim, device, client
        self.target = Target(device.address, device.port, V2c(b"public"))

    async def poll(self, labels: Labels | None) -> RawPoll:
        return await collect(
            self.client,
            self.target,
            lambda _oid: SENSORS_ONLY,
            25,
            found=frozenset({"entity_sensor"}),
            labels=labels,
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    site = SiteSpec("nyc", "americas", devices=[DeviceGroup("pe-router", 1)])
    spec = FleetSpec(sites=[site], port=free_udp_port(ADDRESS), address_base=ADDRESS, sensors=True)
    clock = FakeClock(time.time())
    (device,) = build_devices(spec, clock.now)
    attach_views([device])
    async with Simulator([device], clock=clock, rng=random.Random(0)) as sim, snmp_client() as c:
        yield Rig(sim, device, c)


def sensors(raw: RawPoll) -> dict[str, object]:
    """The sensor rows the poll's reading derives, by name, with their fields."""
    (group,) = raw.mib_groups
    derived = group.derive(raw.readings[group.name])
    return {row.tags["sensor"]: (row.tags["class"], row.fields) for row in derived.rows}


async def test_labels_are_walked_once_and_the_rows_stay_named(rig: Rig) -> None:
    labels = Labels()
    first = await rig.poll(labels)
    second = await rig.poll(labels)
    uncached = await rig.poll(None)  # without a cache: every poll walks them
    assert first.varbinds - second.varbinds == LABEL_ROWS
    assert uncached.varbinds == first.varbinds
    assert sensors(second) == sensors(first) == sensors(uncached)
    assert set(sensors(second)) == {s.name for s in STANDARD_SENSORS}


async def test_a_new_sensor_walks_the_labels_again_in_the_same_poll(rig: Rig) -> None:
    labels = Labels()
    await rig.poll(labels)
    steady = await rig.poll(labels)
    fan = replace(next(s for s in STANDARD_SENSORS if s.kind == RPM), index=22, name="Fan 3")
    assert fan.entity_class == FAN
    rig.device.sensors = (*STANDARD_SENSORS, fan)  # a fan tray inserted
    rig.device.view = None
    attach_views([rig.device])
    grown = await rig.poll(labels)
    assert "Fan 3" in sensors(grown)
    # its two readings, then every label column again (now one row longer each)
    assert grown.varbinds == steady.varbinds + 2 + LABEL_ROWS + 6
    assert (await rig.poll(labels)).varbinds == steady.varbinds + 2


async def test_old_labels_and_a_reboot_walk_them_again(rig: Rig) -> None:
    labels = Labels(max_age=3600)
    first = await rig.poll(labels)
    steady = await rig.poll(labels)
    labels.walked_at -= 3601  # an hour and a second later
    assert (await rig.poll(labels)).varbinds == first.varbinds
    assert (await rig.poll(labels)).varbinds == steady.varbinds
    labels.clear()  # what the tracker does when sysUpTime went back
    assert (await rig.poll(labels)).varbinds == first.varbinds
