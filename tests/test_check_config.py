"""`enoc check-config` on every kind of file, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from configkit import deploy_configs


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
def test_the_design_examples_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, kind: str
) -> None:
    # the files the examples name: check-config reads them, as the programs do
    monkeypatch.setenv("ENOC_TEST_AUTH", "a-long-enough-key")
    (tmp_path / "influx-token").write_text("tok\n")
    (tmp_path / "devices.yaml").write_text(INVENTORY)
    (tmp_path / "users.yaml").write_text("users: [{name: ops, token: 0123456789abcdef0123}]\n")
    path = tmp_path / name
    path.write_text(text.replace("/etc/enoc/users.yaml", str(tmp_path / "users.yaml")))
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


def test_agent_mqtt_identity_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.yaml"
    base = (
        "agent_id: nyc-1\nsite: nyc\nrtc: americas\nspool: {path: /tmp/spool}\n"
        "devices: []\ncredentials: {}\n"
    )
    path.write_text(base + 'mqtt: {url: "mqtt://127.0.0.1:1883"}\n')
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "mqtt: warning: neither a password nor TLS" in result.stderr
    # the password from the environment: an inline one has its own warning (below)
    password = 'password: "${ENOC_TEST_MQTT_PASSWORD}"'
    monkeypatch.setenv("ENOC_TEST_MQTT_PASSWORD", "mqtt-password-123")
    path.write_text(base + f'mqtt: {{url: "mqtt://127.0.0.1:1883", username: nyc-1, {password}}}\n')
    result = check(path)
    assert "mqtt.username: warning: is 'nyc-1'" in result.stderr
    assert "'nyc/nyc-1'" in result.stderr
    path.write_text(
        base + f'mqtt: {{url: "mqtt://127.0.0.1:1883", username: nyc/nyc-1, {password}}}\n'
    )
    result = check(path)
    assert result.returncode == 0
    assert "warning" not in result.stderr
    assert result.stdout.strip().endswith("ok (agent)")


# ---------------------------------------------------------------- secrets written inline

INLINE_AGENT = """\
agent_id: nyc-1
site: nyc
rtc: americas
mqtt:
  url: "mqtts://127.0.0.1:8883"
  username: nyc/nyc-1
  password: "mqtt-inline-SECRET"
spool: {path: /var/lib/enoc/spool}
traps: {listen: "127.0.0.1:1162", communities: ["trap-inline-SECRET", "${ENOC_TEST_COMMUNITY}"]}
credentials:
  inline:
    version: "3"
    user: noc
    auth_protocol: SHA-256
    auth_key: "auth-inline-SECRET"
    priv_protocol: AES-128
    priv_key: "${ENOC_TEST_PRIV:-priv-default-SECRET}"
  good:
    version: "3"
    user: noc
    auth_protocol: SHA-256
    auth_key: "${ENOC_TEST_AUTH}"
    priv_protocol: AES-128
    priv_key_file: priv-key
devices:
  - {name: nyc-pe-1, address: 127.16.0.1, credentials: inline}
  - {name: nyc-pe-2, address: 127.16.0.2, credentials: good}
"""
INLINE_COLLECTOR = """\
mqtt: {url: "mqtt://127.0.0.1:1883", username: collector, password_file: mqtt-password}
influxdb:
  url: "http://127.0.0.1:8086"
  api: v1
  database: enoc
  username: enoc
  password: "influx-inline-SECRET"
store: {url: "postgresql://enoc:pg-inline-SECRET@127.0.0.1:5432/enoc?sslmode=require"}
notifications:
  webhooks:
    - {url: "https://hooks.example.net/enoc", token: "hook-inline-SECRET"}
    - {url: "https://hooks.example.net/other", token: "${ENOC_TEST_AUTH}"}
http: {listen: "127.0.0.1:8080"}
"""


def warnings_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`file:line: key` -> message, of each warning check-config printed."""
    out = {}
    for line in result.stderr.splitlines():
        where, sep, message = line.partition(": warning: ")
        if sep:
            out[where] = message
    return out


def test_secrets_written_inline_are_warnings_naming_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENOC_TEST_COMMUNITY", "community-from-env")
    monkeypatch.setenv("ENOC_TEST_AUTH", "auth-from-the-environment")
    monkeypatch.delenv("ENOC_TEST_PRIV", raising=False)
    (tmp_path / "priv-key").write_text("priv-from-a-file\n")
    (tmp_path / "mqtt-password").write_text("mqtt-from-a-file\n")
    agent, collector = tmp_path / "agent.yaml", tmp_path / "collector.yaml"
    agent.write_text(INLINE_AGENT)
    collector.write_text(INLINE_COLLECTOR)

    result = check(agent)
    assert result.returncode == 0, result.stderr  # warnings, not errors
    assert result.stdout.strip() == f"{agent}: ok (agent)"
    found = warnings_of(result)
    inline = {where: m for where, m in found.items() if "written inline" in m}
    assert set(inline) == {
        f"{agent}:7: mqtt.password",
        f"{agent}:9: traps.communities[0]",
        f"{agent}:15: credentials.inline.auth_key",
        f"{agent}:17: credentials.inline.priv_key",
    }, result.stderr
    assert inline[f"{agent}:7: mqtt.password"] == (
        "a secret written inline in the file; read it from a file "
        '(password_file: /etc/enoc/...) or the environment (password: "${VAR}")'
    )
    assert "auth_key_file:" in inline[f"{agent}:15: credentials.inline.auth_key"]
    assert "default of ${VAR:-...}" in inline[f"{agent}:17: credentials.inline.priv_key"]
    assert '"${VAR}"' in inline[f"{agent}:9: traps.communities[0]"]

    result = check(collector)
    assert result.returncode == 0, result.stderr
    inline = {w: m for w, m in warnings_of(result).items() if "written inline" in m}
    assert set(inline) == {
        f"{collector}:7: influxdb.password",
        f"{collector}:8: store.url",
        f"{collector}:11: notifications.webhooks[0].token",
    }, result.stderr
    assert inline[f"{collector}:8: store.url"].startswith(
        "a password written inline in the URL; leave it out of the URL and give it to libpq "
        "in a password file (PGPASSFILE"
    )
    # never the secrets themselves, inline or not
    for result in (check(agent), check(collector)):
        shown = result.stdout + result.stderr
        assert "SECRET" not in shown and "from-the-environment" not in shown
        assert "from-a-file" not in shown and "from-env" not in shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://enoc@127.0.0.1:5432/enoc",
        "postgresql://enoc:${ENOC_TEST_AUTH}@127.0.0.1:5432/enoc",
        "postgresql://127.0.0.1:5432/enoc?user=enoc&sslmode=verify-full",
        "postgres://enoc:@127.0.0.1/enoc",
        "sqlite:///var/lib/enoc/incidents.db",
        # a failover pair, libpq's several hosts (docs/collector.md)
        "postgresql://enoc@127.0.0.1:5432,127.0.0.2:5433/enoc?target_session_attrs=read-write",
    ],
)
def test_a_store_url_without_an_inline_password_is_not_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ENOC_TEST_AUTH", "auth-from-the-environment")
    path = tmp_path / "collector.yaml"
    path.write_text(f'store: {{url: "{url}"}}\n')
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://enoc:hunter2@127.0.0.1:5432/enoc",
        "postgres://enoc:p%40ss@db/enoc",
        "postgresql://enoc@127.0.0.1/enoc?sslmode=require&password=hunter2",
        "postgresql://enoc:${ENOC_NOT_SET:-hunter2}@127.0.0.1/enoc",
    ],
)
def test_a_store_url_with_an_inline_password_is_flagged(tmp_path: Path, url: str) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(f'http: {{listen: "127.0.0.1:8080"}}\nstore: {{url: "{url}"}}\n')
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}:2: store.url: warning: a password written inline in the URL" in result.stderr
    assert "hunter2" not in result.stderr and "p%40ss" not in result.stderr


def test_a_store_url_of_several_hosts_has_each_port_checked(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    url = "postgresql://enoc@127.0.0.1:5432,127.0.0.2:99999/enoc?target_session_attrs=read-write"
    path.write_text(f'store: {{url: "{url}"}}\n')
    result = check(path)
    assert result.returncode != 0
    assert (
        f"{path}:1: store.url: expected a port from 1 to 65535 after the host, got "
        '"postgresql://127.0.0.2:99999"'
    ) in result.stderr


def test_the_shipped_configs_write_no_secret_inline(tmp_path: Path) -> None:
    """deploy/ reads every secret from a file: check-config has nothing to say about them
    (given the files they name: inventory, secrets, users, TLS files from make-certs)."""
    env: dict[str, str] = {}
    shipped = deploy_configs(tmp_path, env)
    assert {w.kind for w in shipped} == {"agent", "inventory", "collector"}
    env_before = dict(os.environ)
    try:
        os.environ.update(env)
        for written in shipped:
            result = check(written.path)
            assert result.returncode == 0, result.stderr
            assert "written inline" not in result.stderr, result.stderr
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def test_an_error_about_a_url_never_shows_its_password(tmp_path: Path) -> None:
    """collector/config.py quotes a bad store URL in its error; the loader redacts it."""
    path = tmp_path / "collector.yaml"
    path.write_text('store: {url: "postgresq://enoc:typo-hunter2-pw@127.0.0.1/enoc"}\n')
    result = check(path)
    assert result.returncode == 1
    expected = f"{path}:1: store.url: store.url must be sqlite:///PATH or postgresql://"
    assert expected in result.stderr
    assert "postgresq://enoc:***@127.0.0.1/enoc" in result.stderr
    assert "typo-hunter2-pw" not in result.stderr + result.stdout


def test_a_dot_in_an_agents_names_is_flagged_for_nats(tmp_path: Path) -> None:
    """nats-server 2.9's MQTT gateway closes a connection that publishes to a topic with a
    '.': an agent named so would publish nothing on a NATS cluster."""
    path = tmp_path / "agent.yaml"
    body = (
        "agent_id: {agent}\nsite: {site}\nrtc: americas\nspool: {{path: /tmp/spool}}\n"
        'devices: []\ncredentials: {{}}\nmqtt: {{url: "mqtt://127.0.0.1:1883"}}\n'
    )
    path.write_text(body.format(agent="nyc.1", site="nyc"))
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "agent_id: warning: 'nyc.1' has a '.': NATS's MQTT gateway" in result.stderr
    assert "site: warning" not in result.stderr
    path.write_text(body.format(agent="nyc-1", site="nyc"))
    assert "NATS's MQTT gateway" not in check(path).stderr
