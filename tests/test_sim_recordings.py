"""Real-device recordings (snmpsim's .snmprec files, shipped in its package) served as is,
or with moving traffic counters; `enoc sim --recording DIR` serves a folder of them."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import snmpsim
import yaml
from simkit import FakeClock, free_udp_port, recorded_fleet
from test_sim_command import free_tcp_port, wait_for_http
from test_sim_netsnmp import counter, parse, snmp, v2c

from enoc.snmp import ber
from simulators.command import recording_groups
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
    clock, devices = recorded_fleet({"rec-1": path}, "127.33.0.1", port)
    async with Simulator(devices, clock=clock, rng=random.Random(0)):
        walked = parse(await snmp("snmpbulkwalk", "-Cc", *v2c(f"127.33.0.1:{port}"), "1.3"))
    recorded = recording_lines(path)
    assert set(walked) == set(recorded)  # sysUpTime too: served live only when recorded
    for oid, (tag, value) in recorded.items():
        if tag == "2":
            assert walked[oid] == f"INTEGER: {value}", oid
        elif tag == "65":
            assert walked[oid] == f"Counter32: {value}", oid
        elif tag == "67" and oid != "1.3.6.1.2.1.1.3.0":
            assert walked[oid].startswith(f"Timeticks: ({value})"), oid
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


def recorded_device(path: Path, port: int, address: str, clock: FakeClock) -> Simulator:
    spec = FleetSpec(
        sites=[SiteSpec("lab", "lab", devices=[DeviceGroup(name="rec-1", recording=str(path))])],
        port=port,
        address_base=address,
    )
    devices = build_devices(spec, clock.now)
    attach_views(devices)
    return Simulator(devices, clock=clock, rng=random.Random(0))


async def test_moving_counters_advance_from_the_recording_at_a_share_of_the_speed() -> None:
    path = RECORDED / "linux-full-walk.snmprec"
    recorded = recording_lines(path)
    port = free_udp_port("127.33.0.2")
    clock = FakeClock(time.time())
    hc_in = "1.3.6.1.2.1.31.1.1.1.6.2"  # eth0 of 100 Mbit/s, up
    in_octets = "1.3.6.1.2.1.2.2.1.10.2"
    errors = "1.3.6.1.2.1.2.2.1.14.2"
    oids = (hc_in, in_octets, errors, "1.3.6.1.2.1.1.3.0")
    async with recorded_device(path, port, "127.33.0.2", clock) as sim:
        first = parse(await snmp("snmpget", *v2c(f"127.33.0.2:{port}"), *oids))
        clock.advance(100)
        second = parse(await snmp("snmpget", *v2c(f"127.33.0.2:{port}"), *oids))
        sim.inject("rec-1", {"kind": "reboot"})
        clock.advance(10)
        rebooted = parse(await snmp("snmpget", *v2c(f"127.33.0.2:{port}"), *oids))
    assert counter(first[hc_in]) == int(recorded[hc_in][1])  # served from the recorded value
    assert counter(first[in_octets]) == int(recorded[in_octets][1])
    octets_per_s = (counter(second[hc_in]) - counter(first[hc_in])) / 100
    assert 0.02 * 100e6 / 8 <= octets_per_s <= 0.2 * 100e6 / 8  # 2 to 20 % of ifSpeed
    advance32 = (counter(second[in_octets]) - counter(first[in_octets])) % 2**32
    assert abs(advance32 / 100 - octets_per_s) <= 1  # the 32-bit column at the same rate
    assert first[errors] == second[errors] == f"Counter32: {recorded[errors][1]}"
    uptime = int(recorded["1.3.6.1.2.1.1.3.0"][1])
    assert f"({uptime})" in first["1.3.6.1.2.1.1.3.0"]  # the recorded sysUpTime, then ageing
    assert f"({uptime + 10000})" in second["1.3.6.1.2.1.1.3.0"]
    assert "(1000)" in rebooted["1.3.6.1.2.1.1.3.0"]  # a reboot restarts uptime and counters
    assert abs(counter(rebooted[hc_in]) - octets_per_s * 10) <= 1


def test_anonymised_lines_are_left_out_and_the_rest_served(tmp_path: Path) -> None:
    path = tmp_path / "anonymised.snmprec"
    path.write_text(
        "1.3.6.1.2.1.1.1.0|4|router\n"
        "1.3.6.1.2.1.4.20.1.1.10.xx.xx.1|64|<private>\n"
        "1.3.6.1.4.1.9.9.168.1.2.1.1.3.1|64|<private>\n"
        "1.3.6.1.2.1.2.2.1.8.3|2|1\n"
    )
    device = load_recording_device(path, name="x", site="s", rtc="r", address="127.0.0.2")
    assert device.view is not None
    assert [ber.oid_text(o) for o in device.view.oids] == [
        "1.3.6.1.2.1.1.1.0",
        "1.3.6.1.2.1.2.2.1.8.3",
    ]
    assert device.recorded_interfaces == 1
    assert device.sys_descr == b"router"


def test_a_folder_names_one_device_per_file(tmp_path: Path) -> None:
    for name in ("linux-full-walk.snmprec", "winxp-full-walk.snmprec"):
        (tmp_path / name.replace("-", "_")).write_bytes((RECORDED / name).read_bytes())
    (tmp_path / "README.md").write_text("not a recording\n")
    single = RECORDED / "eaton-9PX-partial-walk.snmprec"
    groups = recording_groups([tmp_path, single, single])
    assert [g.name for g in groups] == [
        "linux-full-walk",
        "winxp-full-walk",
        "eaton-9px-partial-walk",
        "eaton-9px-partial-walk-2",
    ]
    with pytest.raises(RecordingError, match="missing: no such recording or folder"):
        recording_groups([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match=r"empty: no \*.snmprec recordings in this folder"):
        recording_groups([tmp_path / "empty"])


def test_sim_serves_a_folder_each_recording_on_its_own_address(tmp_path: Path) -> None:
    """`enoc sim --recording DIR --recording FILE`: the control API lists each recording as
    a device with its own address, the inventory names them, each answers with its own
    sysDescr, and a trap it sends leaves from its address."""
    folder = tmp_path / "walks"
    folder.mkdir()
    for name in ("linux-full-walk.snmprec", "winxp-full-walk.snmprec"):
        (folder / name).write_bytes((RECORDED / name).read_bytes())
    inventory = tmp_path / "devices.yaml"
    control = free_tcp_port()
    port = free_udp_port("127.35.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as traps:
        traps.bind(("127.0.0.1", 0))
        traps.settimeout(10)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "enoc.cli",
                "sim",
                "--recording",
                str(folder),
                "--recording",
                str(RECORDED / "eaton-9PX-partial-walk.snmprec"),
                "--port",
                str(port),
                "--address-base",
                "127.35.0.1",
                "--control",
                f"127.0.0.1:{control}",
                "--traps-to",
                f"127.0.0.1:{traps.getsockname()[1]}",
                "--inventory-out",
                str(inventory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            devices = wait_for_http(f"http://127.0.0.1:{control}/devices", proc)
            assert isinstance(devices, list)
            assert [(d["name"], d["address"], d["site"]) for d in devices] == [
                ("linux-full-walk", "127.35.0.1", "lab"),
                ("winxp-full-walk", "127.35.0.2", "lab"),
                ("eaton-9px-partial-walk", "127.35.0.3", "lab"),
            ]
            assert devices[0]["interfaces"] == 2
            assert devices[0]["recording"] == str(folder / "linux-full-walk.snmprec")
            written = yaml.safe_load(inventory.read_text())
            assert [(d["name"], d["address"]) for d in written["devices"]] == [
                (d["name"], d["address"]) for d in devices
            ]
            for device in devices:
                recorded = recording_lines(Path(str(device["recording"])))
                device_at = f"{device['address']}:{port}"
                first = min(recorded, key=lambda o: tuple(map(int, o.split("."))))
                out = subprocess.run(
                    ["snmpgetnext", "-On", "-Oq", "-v2c", "-c", "public", device_at, "1.3"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                assert out.startswith(f".{first} "), (device["name"], out)  # its own walk
            served = wait_for_http(f"http://127.0.0.1:{control}/devices", proc)
            assert isinstance(served, list)
            assert [d["served"]["requests"] for d in served] == [1, 1, 1]  # each its own
            assert all(d["served"]["varbinds"] == 1 for d in served)
            request = urllib.request.Request(
                f"http://127.0.0.1:{control}/devices/winxp-full-walk/faults",
                data=json.dumps({"kind": "reboot"}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
            _trap, sender = traps.recvfrom(65535)  # coldStart, from the device's own address
            assert sender[0] == "127.35.0.2"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "serving 3 devices" in stderr


def test_the_demo_fleet_can_include_real_devices() -> None:
    from enoc.demo import demo_fleet_spec

    plain = demo_fleet_spec()
    spec = demo_fleet_spec((RECORDED / "linux-full-walk.snmprec",))
    assert spec.sites[:-1] == plain.sites
    lab = spec.sites[-1]
    assert (lab.name, lab.rtc) == ("lab", "europe")
    assert [g.name for g in lab.devices] == ["linux-full-walk"]
    assert spec.recording_counters == "moving"  # so the demo's rates are not all zero
    devices = build_devices(spec, time.time())
    assert devices[-1].recording == str(RECORDED / "linux-full-walk.snmprec")
    assert devices[-1].users  # the fleet's v3 user, like every simulated device


def test_the_demo_refuses_a_recording_that_is_not_there(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "demo", "--recording", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "enoc demo: --recording:" in proc.stderr and "no such recording" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_absurd_recorded_speed_moves_counters_at_a_plausible_rate(tmp_path: Path) -> None:
    path = tmp_path / "radio.snmprec"
    path.write_text(
        "1.3.6.1.2.1.2.2.1.8.2|2|1\n"
        "1.3.6.1.2.1.31.1.1.1.6.2|70|1000\n"
        "1.3.6.1.2.1.31.1.1.1.15.2|66|194969600\n"  # ifHighSpeed: Mbit/s, written in bit/s
    )
    device = load_recording_device(
        path, name="radio", site="s", rtc="r", address="127.0.0.2", moving=True, now=1000.0
    )
    assert device.view is not None
    getter = device.view.getters[device.view.exact((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 2))]
    start, later = getter(device, 1000.0), getter(device, 1010.0)
    value = ber.decode_unsigned(later, 2, len(later)) - ber.decode_unsigned(start, 2, len(start))
    assert 0 < value / 10 <= 0.2 * 400e9 / 8  # at most a fifth of 400 Gbit/s
