"""`enoc sim` as an operator runs it: a real process, stopped by a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from simkit import free_udp_port

pytestmark = pytest.mark.servers


def free_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"enoc sim exited early: {proc.communicate()[1]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return json.load(response)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_sim_serves_writes_its_inventory_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    control = free_tcp_port()
    port = free_udp_port("127.34.0.1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "enoc.cli",
            "sim",
            "--devices",
            "12",
            "--interfaces",
            "4",
            "--sites",
            "3",
            "--port",
            str(port),
            "--address-base",
            "127.34.0.1",
            "--control",
            f"127.0.0.1:{control}",
            "--inventory-out",
            str(inventory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        devices = wait_for_http(f"http://127.0.0.1:{control}/devices", proc)
        assert isinstance(devices, list) and len(devices) == 12
        assert {d["site"] for d in devices} == {"site001", "site002", "site003"}
        written = yaml.safe_load(inventory.read_text())
        assert [d["name"] for d in written["devices"]] == [d["name"] for d in devices]
        cred = written["credentials"][written["devices"][0]["credentials"]]
        assert cred["version"] == "3" and cred["priv_protocol"] == "AES-128"
        out = subprocess.run(
            [
                "snmpget",
                "-On",
                "-v2c",
                "-c",
                "public",
                f"{devices[-1]['address']}:{port}",
                "1.3.6.1.2.1.1.5.0",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert devices[-1]["name"] in out
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "serving 12 devices" in stderr
    assert "stopped" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "0"], "must be at least 1"),
        (["--address-base", "10.0.0.1", "--devices", "1"], "loopback only"),
        (["--traps-to", "nowhere", "--devices", "1"], "expected HOST:PORT"),
        (["--max-message-size", "100", "--devices", "1"], "--max-message-size must be from 484"),
        (["--fleet", "x.yaml", "--devices", "3"], "either --fleet FILE or --devices N"),
    ],
)
def test_bad_arguments_get_a_clear_error_and_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "sim", *args], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fleet_file_with_v3_credentials_from_env_and_a_recording(tmp_path: Path) -> None:
    import shutil

    import snmpsim

    from simulators.fleet import build_devices
    from simulators.fleet_file import load_fleet

    recorded = Path(snmpsim.__file__).parent / "data" / "recorded" / "linksys-system.snmprec"
    (tmp_path / "recordings").mkdir()
    shutil.copy(recorded, tmp_path / "recordings" / "linksys.snmprec")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "snmp:\n"
        '  - {version: "3", user: noc, auth_protocol: SHA, auth_key: "${ENOC_SIM_KEY}",\n'
        '     priv_protocol: AES-128, priv_key: "${ENOC_SIM_KEY}"}\n'
        'trap_receivers: ["127.0.0.1:10162"]\n'
        "sites:\n"
        "  - {name: nbo, rtc: africa, utc_offset: 3, devices: [{role: ce-router, count: 2},\n"
        "     {name: nbo-old-1, recording: recordings/linksys.snmprec}]}\n"
    )
    import os

    os.environ["ENOC_SIM_KEY"] = "fleet-file-key"
    try:
        spec = load_fleet(fleet)
    finally:
        del os.environ["ENOC_SIM_KEY"]
    devices = build_devices(spec, time.time())
    assert [d.name for d in devices] == ["nbo-ce-1", "nbo-ce-2", "nbo-old-1"]
    assert devices[2].recording == str(tmp_path / "recordings" / "linksys.snmprec")
    assert devices[0].users[b"noc"].auth_key == "fleet-file-key"
    assert devices[0].communities == frozenset()


def test_a_bad_fleet_file_names_file_line_and_key(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "sites:\n  - name: nbo\n    rtc: africa\n    devices:\n"
        "      - {role: pe-router, count: lots}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "sim", "--fleet", str(fleet)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f'{fleet}:5: sites[0].devices[0].count: expected an integer, got "lots"' in proc.stderr
