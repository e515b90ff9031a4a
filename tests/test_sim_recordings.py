"""Real-device recordings (snmpsim's .snmprec files, shipped in its package) served as is."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import snmpsim
from simkit import FakeClock, free_udp_port
from test_sim_netsnmp import parse, snmp, v2c

from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
from simulators.model import attach_views
from simulators.server import Simulator
from simulators.snmprec import RecordingError, load_recording_device

RECORDED = Path(snmpsim.__file__).parent / "data" / "recorded"
pytestmark = pytest.mark.servers


def recording_lines(path: Path) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in path.read_text(errors="surrogateescape").splitlines():
        oid, tag, value = line.split("|", 2)
        rows[oid] = (tag, value)
    return rows


@pytest.mark.parametrize(
    "name", ["linux-full-walk.snmprec", "winxp-full-walk.snmprec", "eaton-9PX-partial-walk.snmprec"]
)
async def test_a_whole_recording_walks_back_identically(name: str, tmp_path: Path) -> None:
    path = RECORDED / name
    port = free_udp_port("127.33.0.1")
    spec = FleetSpec(
        sites=[SiteSpec("lab", "lab", devices=[DeviceGroup(name="rec-1", recording=str(path))])],
        port=port,
        address_base="127.33.0.1",
    )
    clock = FakeClock(time.time())
    devices = build_devices(spec, clock.now)
    attach_views(devices)
    async with Simulator(devices, clock=clock, rng=random.Random(0)):
        walked = parse(await snmp("snmpbulkwalk", "-Cc", *v2c(f"127.33.0.1:{port}"), "1.3"))
    recorded = recording_lines(path)
    assert set(walked) == set(recorded) | {"1.3.6.1.2.1.1.3.0"}
    for oid, (tag, value) in recorded.items():
        if tag == "2":
            assert walked[oid] == f"INTEGER: {value}", oid
        elif tag == "65":
            assert walked[oid] == f"Counter32: {value}", oid
        elif tag == "6":
            assert walked[oid] == f"OID: .{value}", oid
        elif tag == "4" and value.isprintable() and not set('"\\') & set(value) and value:
            assert walked[oid] == f'STRING: "{value}"', oid


def test_a_bad_recording_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.snmprec"
    path.write_text("1.3.6.1.2.1.1.1.0|4|fine\n1.3.6.1.2.1.1.2.0|99|what\n")
    with pytest.raises(RecordingError, match=r"broken.snmprec:2: cannot serve"):
        load_recording_device(path, name="x", site="s", rtc="r", address="127.0.0.2")
    with pytest.raises(RecordingError, match="cannot read recording"):
        load_recording_device(
            tmp_path / "missing.snmprec", name="x", site="s", rtc="r", address="127.0.0.2"
        )
