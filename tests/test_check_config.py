"""`enoc check-config` on every kind of file, as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enoc.cli", "check-config", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


AGENT = """\
agent_id: nyc-1
site: nyc
rtc: americas
mqtt: {url: "mqtt://127.0.0.1:1883"}
spool: {path: /var/lib/enoc/spool}
polling: {interval: 60s}
inventory: devices.yaml
traps: {listen: "0.0.0.0:162"}
"""
COLLECTOR = """\
mqtt: {url: "mqtt://127.0.0.1:1883"}
influxdb:
  url: "http://127.0.0.1:8086"
  api: v2
  org: enoc
  bucket: enoc
  token_file: influx-token
store: {url: "sqlite:///var/lib/enoc/incidents.db"}
http: {listen: "127.0.0.1:8080", users_file: /etc/enoc/users.yaml}
"""
INVENTORY = """\
credentials:
  v3: {version: "3", user: noc, auth_protocol: SHA-256, auth_key: "${ENOC_TEST_AUTH}",
       priv_protocol: AES-128, priv_key: "${ENOC_TEST_AUTH}"}
  old: {version: "2c", community: public}
devices:
  - {name: nyc-pe-1, address: 127.16.0.1, port: 1161, credentials: v3}
  - {name: nyc-acc-1, address: 127.16.0.2, credentials: old}
"""
FLEET = """\
sites:
  - name: nbo
    rtc: africa
    devices:
      - {role: pe-router, count: 2}
      - {role: access-switch, count: 3, interfaces: 24}
"""


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("agent.yaml", AGENT, "agent"),
        ("collector.yaml", COLLECTOR, "collector"),
        ("fleet.yaml", FLEET, "fleet"),
    ],
)
def test_the_design_examples_are_valid(tmp_path: Path, name: str, text: str, kind: str) -> None:
    (tmp_path / "influx-token").write_text("tok\n")
    path = tmp_path / name
    path.write_text(text)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok ({kind})"


def test_v2c_is_flagged_but_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENOC_TEST_AUTH", "a-long-enough-key")
    path = tmp_path / "devices.yaml"
    path.write_text(INVENTORY)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "credentials.old: warning: v2c sends data or credentials in clear" in result.stderr
    assert "a-long-enough-key" not in result.stderr + result.stdout


def test_errors_name_file_line_key_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        AGENT.replace("interval: 60s", "interval: sixty").replace("site: nyc", "site: ny/c")
    )
    result = check(path)
    assert result.returncode == 1
    assert (
        f'{path}:6: polling.interval: expected a duration like "60s", got "sixty"' in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_broken_reference_in_an_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENOC_TEST_AUTH", "a-long-enough-key")
    path = tmp_path / "devices.yaml"
    path.write_text(INVENTORY.replace("credentials: old}", "credentials: olde}"))
    result = check(path)
    assert result.returncode == 1
    assert "devices[1].credentials: unknown credentials 'olde' (known: v3, old)" in result.stderr


def test_a_fleet_problem_and_an_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.replace("pe-router", "mainframe"))
    result = check(path)
    assert result.returncode == 1
    assert "sites[0].devices[0].role: expected one of" in result.stderr
    other = tmp_path / "other.yaml"
    other.write_text("hello: world\n")
    result = check(other)
    assert result.returncode == 2
    assert "cannot tell what kind of config" in result.stderr
    assert check(other, "--kind", "fleet").returncode == 1


def test_agent_mqtt_identity_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    base = (
        "agent_id: nyc-1\nsite: nyc\nrtc: americas\nspool: {path: /tmp/spool}\n"
        "devices: []\ncredentials: {}\n"
    )
    path.write_text(base + 'mqtt: {url: "mqtt://127.0.0.1:1883"}\n')
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "mqtt: warning: neither a password nor TLS" in result.stderr
    path.write_text(base + 'mqtt: {url: "mqtt://127.0.0.1:1883", username: nyc-1, password: x}\n')
    result = check(path)
    assert "mqtt.username: warning: is 'nyc-1'" in result.stderr
    assert "'nyc/nyc-1'" in result.stderr
    path.write_text(
        base + 'mqtt: {url: "mqtt://127.0.0.1:1883", username: nyc/nyc-1, password: x}\n'
    )
    result = check(path)
    assert result.returncode == 0
    assert "warning" not in result.stderr
    assert result.stdout.strip().endswith("ok (agent)")
