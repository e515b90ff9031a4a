"""`enoc check-config` and each program's start give the same verdict, in one pass.

Over every config the suite, the demo, the benches and deploy/ write (tests/configkit.py)
and over broken variants of them: check-config's verdict (its own `run`, as the CLI
calls it) against the program's start (the function `enoc agent`, `enoc collector` and
`enoc sim --fleet` call to load their config), same ok or not, the same error lines,
and every mistake of a file named at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from configkit import Written, suite_configs

import agent.command
import collector.command
import simulators.command
from agent.app import load_agent
from collector.app import Collector
from enoc.commands import check_config
from enoc.config import ConfigError
from simulators.command import fleet_from_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Written]]:
    env: dict[str, str] = {}
    written = suite_configs(tmp_path_factory.mktemp("corpus"), env)
    before = dict(os.environ)
    os.environ.update(env)
    try:
        yield written
    finally:
        os.environ.clear()
        os.environ.update(before)


def checked_by_check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str] | None:
    """None when check-config says ok; else the errors it printed (warnings aside)."""
    code = check_config.run(argparse.Namespace(file=path, kind=None))
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if ": warning: " not in line]
    if code == 0:
        assert out.out.strip().startswith(f"{path}: ok ("), out
        assert not errors, out.err
        return None
    assert code == 1 and errors, (code, out.err)
    return errors


def sim_args(path: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulators.command.add_arguments(parser)
    return parser.parse_args(["--fleet", str(path)])


def started_by_program(kind: str, path: Path, tmp_path: Path) -> list[str] | None:
    """None when the program's start accepts the config; else its error lines."""
    try:
        if kind == "agent":
            load_agent(path)  # what `enoc agent` does first (Agent.__init__), and SIGHUP
        elif kind == "collector":
            Collector.from_file(path)  # what `enoc collector` does first
        elif kind == "fleet":
            fleet_from_args(sim_args(path))  # what `enoc sim --fleet` does first
        else:  # an inventory starts as the file an agent includes
            host = tmp_path / f"includes-{path.stem}.yaml"
            host.write_text(
                yaml.safe_dump(
                    {
                        "agent_id": "nyc-1",
                        "site": "nyc",
                        "spool": {"path": str(tmp_path / "spool")},
                        "inventory": str(path),
                    }
                )
            )
            load_agent(host)
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return None


def test_the_corpus_covers_every_writer(corpus: list[Written]) -> None:
    kinds = {w.kind for w in corpus}
    assert kinds == {"agent", "collector", "inventory", "fleet"}
    labels = " ".join(w.label for w in corpus)
    for source in ("agentkit", "collectorkit", "simkit", "demo", "bench", "drillkit", "deploy"):
        assert source in labels


def test_every_written_config_passes_both(
    corpus: list[Written], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    refused = {}
    for written in corpus:
        by_check = checked_by_check_config(written.path, capsys)
        by_program = started_by_program(written.kind, written.path, tmp_path)
        if by_check or by_program:
            refused[written.label] = (by_check, by_program)
    assert not refused


# ---------------------------------------------------------------- broken variants


def _edit(path: Path, change: Callable[[dict[str, object]], None], name: str) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    out = path.with_name(name)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _pick(corpus: list[Written], label: str) -> Path:
    return next(w.path for w in corpus if w.label == label)


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        *parents, last = key.split(".")
        node: dict[str, object] = data
        for part in parents:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[last] = value

    return change


def _all(*changes: Callable[[dict[str, object]], None]) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        for one in changes:
            one(data)

    return change


def _break_inventory(data: dict[str, Any]) -> None:
    data["devices"][0]["address"] = "no address"
    data["devices"][1]["port"] = 70000
    data["devices"][2]["credentials"] = "nowhere"
    credential = next(iter(data["credentials"].values()))
    del credential["auth_key"]
    credential["auth_key_file"] = "/nonexistent/snmp-auth"


AGENT = "agentkit.agent_config traps"
COLLECTOR = "collectorkit.collector_config vm"
DEPLOY_COLLECTOR = "deploy/collector/collector.yaml"
INVENTORY = "simkit inventory (sim --inventory-out)"
FLEET = "fleet file with a recording"

# name -> (the config it breaks, the change, what each mistake's issue must say)
BROKEN: dict[str, tuple[str, Callable[[dict[str, object]], None], list[str]]] = {
    "agent: a missing inventory": (
        AGENT,
        _set("inventory", "/nonexistent/devices.yaml"),
        [": inventory: cannot read /nonexistent/devices.yaml: No such file or directory"],
    ),
    "agent: a password file that is not there": (
        AGENT,
        _set("mqtt.password_file", "/nonexistent/mqtt-password"),
        [": mqtt.password_file: cannot read secret file /nonexistent/mqtt-password"],
    ),
    "agent: a trap port out of range": (
        AGENT,
        _set("traps.listen", "127.0.0.1:70000"),
        [': traps.listen: expected HOST:PORT like "127.0.0.1:8080", got "127.0.0.1:70000"'],
    ),
    "agent: mqtt.url and mqtt.urls both given": (
        AGENT,
        _set("mqtt.urls", ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.2:1883"]),
        [": mqtt.urls: mqtt.urls and mqtt.url are both given"],
    ),
    "agent: brokers of mqtt.urls without a port or a host": (
        AGENT,
        _all(
            lambda data: data["mqtt"].pop("url"),  # type: ignore[attr-defined]
            _set("mqtt.urls", ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.2:99999", "mqtt://"]),
        ),
        [
            ": mqtt.urls[1]: expected a port from 1 to 65535 after the host",
            ': mqtt.urls[2]: expected a host after "mqtt://"',
        ],
    ),
    "agent: a broker port out of range": (
        AGENT,
        _set("mqtt.url", "mqtt://127.0.0.1:99999"),
        [": mqtt.url: expected a port from 1 to 65535 after the host"],
    ),
    "agent: a bad agent_id": (
        AGENT,
        _set("agent_id", "nyc/1"),
        [": agent_id: agent_id 'nyc/1' must be 1-64 letters"],
    ),
    "agent: a TLS CA file that is not there": (
        AGENT,
        _set("mqtt.tls", {"ca_file": "/nonexistent/ca.pem"}),
        [": mqtt.tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory"],
    ),
    "agent: several mistakes at once": (
        AGENT,
        _all(
            _set("agent_id", "nyc/1"),
            _set("polling.interval", "sixty"),
            _set("mqtt.url", "mqtt://127.0.0.1:99999"),
            _set("mqtt.keepalive", "soon"),
            _set("traps.listen", "127.0.0.1:70000"),
            _set("inventory", "/nonexistent/devices.yaml"),
            _set("mqtt.password", "${ENOC_PARITY_NOT_SET}"),
            _set("thresholds.cpu", {"enter": 50, "leave": 70}),
            _set("polling.source", "::1"),
        ),
        [
            ": agent_id: agent_id 'nyc/1' must be",
            ': polling.interval: expected a duration like "60s", got "sixty"',
            ": mqtt.url: expected a port from 1 to 65535",
            ': mqtt.keepalive: expected a duration like "60s", got "soon"',
            ": traps.listen: expected HOST:PORT",
            ": inventory: cannot read /nonexistent/devices.yaml",
            ": mqtt.password: environment variable ENOC_PARITY_NOT_SET is not set",
            ": thresholds.cpu: expected leave at or below enter (50), got 70",
            ': polling.source: expected a local IPv4 address like "0.0.0.0", got "::1"',
        ],
    ),
    "inventory: a bad address, port, key file and reference": (
        INVENTORY,
        _break_inventory,
        [
            ": devices[0].address: address 'no address' is neither an IP address nor a DNS name",
            ": devices[1].port: port 70000 is not a UDP port",
            ": devices[2].credentials: unknown credentials 'nowhere'",
            ".auth_key_file: cannot read secret file /nonexistent/snmp-auth",
        ],
    ),
    "collector: a missing users file": (
        COLLECTOR,
        _set("http.users_file", "/nonexistent/users.yaml"),
        [": http.users_file: cannot read /nonexistent/users.yaml: No such file or directory"],
    ),
    "collector: a token file that is not there": (
        COLLECTOR,
        _set("influxdb.token_file", "/nonexistent/influx-token"),
        [": influxdb.token_file: cannot read secret file /nonexistent/influx-token"],
    ),
    "collector: a session key too short": (
        DEPLOY_COLLECTOR,
        _set("http.session_key_file", "secrets/mqtt-password"),  # 24 bytes, not a key
        [],  # the line is checked below: the message names the file
    ),
    "collector: several mistakes at once": (
        COLLECTOR,
        _all(
            _set("http.listen", "127.0.0.1:0x"),
            _set("http.users_file", "/nonexistent/users.yaml"),
            _set("influxdb.url", "http://127.0.0.1:123456"),
            _set("influxdb.token_file", "/nonexistent/influx-token"),
            _set("store.url", "mysql://db/enoc"),
            _set("incidents.flap_transitions", 1),
            _set("mqtt.tls", {"cert_file": "/nonexistent/client.pem"}),
            _set("log.level", "loud"),
        ),
        [
            ": http.listen: expected HOST:PORT",
            ": http.users_file: cannot read /nonexistent/users.yaml",
            ": influxdb.url: expected a port from 1 to 65535",
            ": influxdb.token_file: cannot read secret file /nonexistent/influx-token",
            ": store.url: store.url must be sqlite:///PATH or postgresql://",
            ": incidents.flap_transitions: incidents.flap_transitions must be at least 2",
            ": mqtt.tls.cert_file: cannot read /nonexistent/client.pem",
            ': log.level: expected one of "debug", "info", "warning", "error", got \'loud\'',
        ],
    ),
    "fleet: a missing recording": (
        FLEET,
        lambda data: data["sites"][0]["devices"][2].update(  # type: ignore[index]
            recording="recordings/gone.snmprec"
        ),
        [": sites[0].devices[2].recording: cannot read "],
    ),
    "fleet: several mistakes at once": (
        FLEET,
        _all(
            lambda data: data["sites"][0]["devices"][0].update(count="lots"),  # type: ignore[index]
            lambda data: data["sites"][0]["devices"][1].update(role="mainframe"),  # type: ignore[index]
            lambda data: data["sites"][0]["devices"][2].update(  # type: ignore[index]
                recording="recordings/gone.snmprec"
            ),
            _set("port", 0),
            _set("trap_receivers", ["127.0.0.1"]),
        ),
        [
            ': sites[0].devices[0].count: expected an integer, got "lots"',
            ": sites[0].devices[1].role: expected one of",
            ": sites[0].devices[2].recording: cannot read ",
            ": port: expected a UDP port from 1 to 65535, got 0",
            ": trap_receivers[0]: expected HOST:PORT",
        ],
    ),
}


def _broken(corpus: list[Written], name: str) -> tuple[Written, list[str]]:
    source, change, expected = BROKEN[name]
    base = next(w for w in corpus if w.label == source)
    slug = "".join(c if c.isalnum() else "-" for c in name)
    path = _edit(base.path, change, f"broken-{slug}.yaml")
    return Written(name, base.kind, path), expected


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_config_is_refused_by_both_naming_every_mistake(
    corpus: list[Written], capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    written, expected = _broken(corpus, name)
    by_check = checked_by_check_config(written.path, capsys)
    by_program = started_by_program(written.kind, written.path, tmp_path)
    assert by_check is not None, "check-config passed it"
    assert by_program is not None, "the program started with it"
    # the inventory's issues also reach the agent that includes it; the rest is the same
    assert by_check == [line for line in by_program if line.startswith(str(written.path))]
    for fragment in expected:
        assert any(fragment in line for line in by_check), (fragment, by_check)
    if written.kind != "inventory":
        assert len(by_check) == len(expected) or not expected, by_check
    for line in by_check:
        # file:line: key: what was expected
        where, _, rest = line.partition(": ")
        assert where.rpartition(":")[2].isdigit() and int(where.rpartition(":")[2]) > 0, line
        assert rest.split(": ", 1)[0], line
    if name == "collector: a session key too short":
        assert any(
            ": http.session_key_file: " in line and "at least 32 bytes" in line for line in by_check
        ), by_check


COMMANDS = {
    "agent": lambda path: agent.command.run(argparse.Namespace(config=path)),
    "collector": lambda path: collector.command.run(argparse.Namespace(config=path)),
    "fleet": lambda path: simulators.command.run(sim_args(path)),
}


@pytest.mark.parametrize(
    "name", [n for n in BROKEN if not n.startswith("inventory") and "several" in n]
)
def test_each_command_prints_check_configs_lines_and_exits_2(
    corpus: list[Written],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """The commands' own `run`, as `enoc agent|collector|sim` call it: the same lines."""
    monkeypatch.setattr(simulators.command, "setup_logging", lambda *_a: None)
    written, _ = _broken(corpus, name)
    by_check = checked_by_check_config(written.path, capsys)
    assert COMMANDS[written.kind](written.path) == 2
    printed = capsys.readouterr().err.splitlines()
    assert by_check is not None and [p for p in printed if p.startswith(str(written.path))] == (
        by_check
    )
    assert "Traceback" not in "\n".join(printed)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("agent: several mistakes at once", "agent"),
        ("collector: several mistakes at once", "collector"),
        ("fleet: several mistakes at once", "sim"),
    ],
)
def test_the_cli_says_the_same_and_no_traceback(
    corpus: list[Written], name: str, command: str
) -> None:
    written, expected = _broken(corpus, name)
    flag = "--fleet" if command == "sim" else "--config"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "enoc.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    check = cli("check-config", str(written.path))
    start = cli(command, flag, str(written.path))
    assert check.returncode == 1 and start.returncode == 2, (check.stderr, start.stderr)
    errors = [line for line in check.stderr.splitlines() if ": warning: " not in line]
    assert [line for line in start.stderr.splitlines() if line.startswith(str(written.path))] == (
        errors
    )
    assert len(errors) == len(expected), errors
    assert "Traceback" not in start.stderr + check.stderr


def test_a_starting_agent_keeps_the_inventorys_warnings_and_leaves_advice_to_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v2c in the inventory is logged at start; an MQTT login without TLS and an inline
    secret (what the demo and the tests write on purpose) only check-config prints."""
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(
        "credentials: {old: {version: '2c', community: public}}\n"
        "devices: [{name: a, address: 127.0.0.2, credentials: old}]\n"
    )
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"agent_id: nyc-1\nsite: nyc\nspool: {{path: {tmp_path / 'spool'}}}\n"
        f"inventory: {inventory}\n"
    )
    _config, _inventory, warnings = load_agent(path)
    assert [str(w) for w in warnings] == [
        f"{inventory}:1: credentials.old: warning: v2c sends data or credentials in clear; "
        "SNMPv3 authPriv is the default to use"
    ]
    assert checked_by_check_config(path, capsys) is None
    code = check_config.run(argparse.Namespace(file=path, kind=None))
    printed = capsys.readouterr().err
    assert code == 0
    assert f"{path}: mqtt: warning: neither a password nor TLS" in printed  # no mqtt: line
    assert f"{inventory}:1: credentials.old.community: warning: a secret written inline" in (
        printed
    )
    assert str(warnings[0]) in printed


def test_a_botched_certificate_rotation_is_a_warning_to_both(
    corpus: list[Written], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MQTT TLS files that are there but do not go together: the agent starts, spools and
    connects once they are fixed (it builds its context at each attempt); check-config
    and the agent's start say so in the same words, neither refuses."""
    from enoc.pki import make_pki

    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=["a", "b"])
    tls = {
        "ca_file": str(pki.ca_cert),
        "cert_file": str(pki.clients["a"][0]),
        "key_file": str(pki.clients["b"][1]),  # b's key with a's certificate
    }
    path = _edit(_pick(corpus, AGENT), _set("mqtt.tls", tls), "botched-rotation.yaml")
    assert checked_by_check_config(path, capsys) is None  # ok: warnings only
    check_config.run(argparse.Namespace(file=path, kind=None))
    printed = [line for line in capsys.readouterr().err.splitlines() if ": mqtt.tls: " in line]
    _config, _inventory, warnings = load_agent(path)
    assert [str(w) for w in warnings if w.key == "mqtt.tls"] == printed
    assert len(printed) == 1 and "key values mismatch" in printed[0].lower(), printed
