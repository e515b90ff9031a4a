"""Power (issue 17, item 3): the UPS recordings of the real-device corpus (UPS-MIB and APC
PowerNet-MIB) polled through the simulator give battery charge, runtime, on battery,
input and output lines and load; a UPS that goes on battery, and a fan that fails, are
events after two polls, and the on-battery incident is critical and names the site."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from collectorkit import T0, Clock
from sensorkit import by_name, recording, served

from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.store import Store
from enoc.config import Duration
from enoc.wire import Event, EventsMessage, Row, Value

pytestmark = pytest.mark.servers

UPS_BATTERY = "1.3.6.1.2.1.33.1.2"
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"


def values(rows: dict[str, Row]) -> dict[str, Value | None]:
    return {name: row.fields.get("value") for name, row in rows.items()}


async def test_ups_mib_values() -> None:
    names = ("eaton-mgeups_9pxle", "generex-ups_cs141")
    async with served({n: recording(n) for n in names}, "127.46.0.1") as sim:
        eaton = by_name((await sim.poll(names[0]))[0].rows)
        generex = by_name((await sim.poll(names[1]))[0].rows)
    # Eaton 9PX: upsEstimatedChargeRemaining 91 %, upsEstimatedMinutesRemaining 18 (1080 s),
    # upsBatteryVoltage 550 (0.1 V: 55.0 V), input line 1 228 V at 500 (0.1 Hz: 50.0 Hz),
    # output line 1 230 V, 17 (0.1 A: 1.7 A), 360 W, 40 % load; upsOutputSource normal(3)
    assert values(eaton) == {
        "battery": 91.0,
        "battery runtime": 1080.0,
        "battery voltage": 55.0,
        "battery current": 0.0,
        "battery temperature": 0.0,
        "output frequency": 50.0,
        "on battery": 0.0,
        "alarms": 0.0,
        "input 1": 228.0,
        "input 1 frequency": 50.0,
        "output 1": 230.0,
        "output 1 current": 1.7,
        "output 1 power": 360.0,
        "output 1 load": 40.0,
    }
    assert eaton["battery"].fields["status"] == "ok"  # upsBatteryStatus batteryNormal(2)
    assert eaton["on battery"].tags["class"] == "source"
    assert eaton["on battery"].fields["status"] == "ok"
    assert eaton["output 1 load"].tags["class"] == "load"
    # Generex CS141: three lines; upsOutputSource bypass(4): the load is not protected
    assert generex["on battery"].fields["status"] == "warning"
    assert [generex[f"input {n}"].fields["value"] for n in (1, 2, 3)] == [233.0, 233.0, 235.0]
    assert generex["output 2 power"].fields["value"] == 469.0
    assert generex["output 2 load"].fields["value"] == 14.0
    assert generex["battery runtime"].fields["value"] == 544 * 60


async def test_apc_powernet_values() -> None:
    name = "apc_smt750x-nmc2"
    async with served({name: recording(name)}, "127.46.1.1") as sim:
        apc = by_name((await sim.poll(name))[0].rows)
    # upsHighPrecBatteryCapacity 1000 (tenths of a percent), upsAdvBatteryRunTimeRemaining
    # 10976200 TimeTicks (hundredths: 109762 s), upsHighPrecBatteryTemperature 234 (23.4 C),
    # upsHighPrecBatteryActualVoltage 547 (54.7 V), upsHighPrecInputLineVoltage 1191
    # (119.1 V), upsHighPrecInputFrequency 600 (60.0 Hz), upsHighPrecOutputLoad 0
    assert values(apc) == {
        "battery": 100.0,
        "battery runtime": 109762.0,
        "battery temperature": 23.4,
        "battery voltage": 54.7,
        "input": 119.1,
        "input frequency": 60.0,
        "output": 119.1,
        "output frequency": 60.0,
        "output current": 0.0,
        "output load": 0.0,
        "on battery": None,  # upsBasicBatteryTimeOnBattery: not recorded
        # its management card's probe, uioSensorStatusTable 1.1: "Equipment Room",
        # uioSensorStatusTemperatureDegC 20, uioSensorStatusHumidity -1 (none)
        "Equipment Room temperature": 20.0,
    }
    # upsBasicOutputStatus onLine(2); upsAdvBatteryReplaceIndicator noBatteryNeedsReplacing(1)
    assert apc["on battery"].fields["status"] == "ok"
    assert apc["battery"].fields["status"] == "ok"
    # uioSensorStatusAlarmStatus uioNormal(1)
    assert apc["Equipment Room temperature"].fields["status"] == "ok"


def variant(path: Path, tmp_path: Path, changes: dict[str, str]) -> Path:
    """A copy of a recording with some lines' values changed (OID -> value)."""
    out = []
    for line in path.read_bytes().decode("utf-8", "surrogateescape").splitlines():
        oid, _, rest = line.partition("|")
        out.append(f"{oid}|{rest.partition('|')[0]}|{changes[oid]}" if oid in changes else line)
    copy = tmp_path / f"variant-{path.name}"
    copy.write_bytes("\n".join(out).encode("utf-8", "surrogateescape") + b"\n")
    return copy


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    config = IncidentsConfig(reopen_within=Duration(300), momentary_resolve_after=Duration(600))
    yield Engine(store, config, now=Clock())
    await store.close()


async def test_a_ups_on_battery_is_a_critical_incident_that_names_the_site(
    tmp_path: Path, engine: Engine
) -> None:
    eaton = recording("eaton-mgeups_9pxle")
    on_battery = variant(
        eaton,
        tmp_path,
        {
            UPS_OUTPUT_SOURCE: "5",  # battery(5)
            f"{UPS_BATTERY}.2.0": "240",  # upsSecondsOnBattery
            f"{UPS_BATTERY}.4.0": "60",  # upsEstimatedChargeRemaining
        },
    )
    served_as = {"mains": eaton, "battery": on_battery}
    events: list[Event] = []
    async with served(served_as, "127.46.2.1") as sim:
        for t, feed in enumerate(["mains", "mains", "battery", "battery", "mains", "mains"]):
            _, new = await sim.poll(feed, as_device="ups-1", at=T0 + 60 * t)
            events += [e for e in new if e.kind == "sensor"]
    assert [(e.resource, e.state, e.severity, e.ts) for e in events] == [
        ("sensor:on battery", "critical", "critical", T0 + 120),
        ("sensor:on battery", "ok", "info", T0 + 240),
    ]
    assert events[0].message == "UPS on battery (for 240 s, 60 % charge, 1080 s left)"
    assert events[0].attrs["class"] == "source"
    opened = await engine.on_events(EventsMessage("lab-1", "lab", "emea", 1, T0, events[:1]))
    (change,) = opened
    assert change.change == "opened"
    assert change.incident.severity == "critical"
    assert (
        change.incident.title
        == "site lab: ups-1: UPS on battery (for 240 s, 60 % charge, 1080 s left)"
    )
    resolved = await engine.on_events(EventsMessage("lab-1", "lab", "emea", 2, T0, events[1:]))
    assert [c.change for c in resolved] == ["resolved"]


async def test_a_fan_that_fails_is_an_event_and_clears(tmp_path: Path) -> None:
    c3560 = recording("ios_c3560")
    failed = variant(c3560, tmp_path, {"1.3.6.1.4.1.9.9.13.1.4.1.3.1004": "6"})  # notFunctioning
    async with served({"ok": c3560, "failed": failed}, "127.46.3.1") as sim:
        events: list[Event] = []
        for t, feed in enumerate(["ok", "failed", "ok", "failed", "failed", "ok", "ok"]):
            sample, new = await sim.poll(feed, as_device="sw-1", at=T0 + 60 * t)
            events += new
        assert by_name(sample.rows)["Switch#1, Fan#1"].fields == {"status": "ok"}
    assert [(e.resource, e.state, e.severity, e.ts) for e in events if e.kind == "sensor"] == [
        ("sensor:Switch#1, Fan#1", "failed", "major", T0 + 180),
        ("sensor:Switch#1, Fan#1", "ok", "info", T0 + 300),
    ]


async def test_a_battery_low_by_the_configured_limits(tmp_path: Path) -> None:
    eaton = recording("eaton-mgeups_9pxle")
    low = variant(eaton, tmp_path, {f"{UPS_BATTERY}.4.0": "20"})  # 20 % charge
    async with served({"low": low}, "127.46.4.1") as sim:
        events: list[Event] = []
        for t in range(2):
            events += (await sim.poll("low", at=T0 + 60 * t))[1]
    # upsBatteryStatus still batteryNormal(2): the class's limit (low_critical 25) decides
    (event,) = events
    assert (event.resource, event.state, event.severity) == (
        "sensor:battery",
        "critical",
        "critical",
    )
    assert event.message == "battery 20 at or below 25"
    assert (event.attrs["limit"], event.attrs["limit_by"]) == (25, "config")
