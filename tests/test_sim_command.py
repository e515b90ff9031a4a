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
