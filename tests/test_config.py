"""The one config loader: every error names file, line, key path and what was expected."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from enoc.config import (
    Checked,
    ConfigError,
    ConfigIssue,
    Duration,
    HostPort,
    Secret,
    check_file,
    check_tls_files,
    check_url,
    load_config,
    parse_config,
)


@dataclass(frozen=True)
class Inner:
    interval: Duration = Duration(60)
    retries: int = 1
    enabled: bool = True


@dataclass(frozen=True)
class Schema:
    name: str
    inner: Inner = field(default_factory=Inner)
    mode: Literal["fast", "safe"] = "safe"
    listen: HostPort | None = None
    token: Secret | None = None
    ratio: float = 0.5
    items: list[int] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Schema, filename="agent.yaml", base_dir=Path("/etc/enoc"))
    return [str(i) for i in caught.value.issues]


def test_a_valid_file_gives_typed_values() -> None:
    config = parse_config(
        "name: nyc\ninner: {interval: 1h30m, retries: 3, enabled: false}\nmode: fast\n"
        'listen: "127.0.0.1:8080"\nratio: 2\nitems: [1, 2]\ntags: {a: b}\npath: sub/x.yaml\n',
        Schema,
        base_dir=Path("/etc/enoc"),
    )
    assert config.inner == Inner(Duration(5400), 3, False)
    assert config.mode == "fast"
    assert config.listen == HostPort("127.0.0.1", 8080)
    assert config.ratio == 2.0
    assert config.items == [1, 2]
    assert config.tags == {"a": "b"}
    assert config.path == Path("/etc/enoc/sub/x.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\ninner:\n  interval: sixty\n",
            'agent.yaml:3: inner.interval: expected a duration like "60s", got "sixty"',
        ),
        (
            "name: x\ninner:\n  retrys: 2\n",
            "agent.yaml:3: inner.retrys: unknown key; did you mean 'retries'?",
        ),
        (
            "name: x\nmode: quick\n",
            'agent.yaml:2: mode: expected one of "fast", "safe", got \'quick\'',
        ),
        (
            "name: x\ninner: {retries: true}\n",
            'agent.yaml:2: inner.retries: expected an integer, got "true"',
        ),
        (
            'name: x\ninner: {enabled: "yes"}\n',
            'agent.yaml:2: inner.enabled: expected true or false, got "yes"',
        ),
        (
            'name: x\nlisten: "nowhere"\n',
            'agent.yaml:2: listen: expected HOST:PORT like "127.0.0.1:8080", got "nowhere"',
        ),
        ('name: x\nlisten: "127.0.0.1:70000"\n', "agent.yaml:2: listen: expected HOST:PORT"),
        ("name: x\nitems: [1, two]\n", 'agent.yaml:2: items[1]: expected an integer, got "two"'),
        ("name: x\ninner: [1]\n", "agent.yaml:2: inner: expected a mapping, got a list"),
        ("inner: {}\n", "agent.yaml:1: name: missing required key (expected a string)"),
        ("name: [x\n", "agent.yaml:2: not valid YAML"),
        ("name: x\nname: y\n", "agent.yaml:2: name: given twice"),
    ],
)
def test_each_error_points_at_its_line_and_key(text: str, expected: str) -> None:
    found = issues(text)
    assert any(line.startswith(expected) for line in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = issues("name: x\ninner:\n  interval: sixty\n  retries: many\nmode: quick\nextra: 1\n")
    assert len(found) == 4
    assert [line.split(":")[1] for line in found] == ["3", "4", "5", "6"]


def test_environment_variables_expand_and_missing_ones_are_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENOC_SITE", "nbo")
    config = parse_config('name: "${ENOC_SITE}-1"\nmode: "${ENOC_MODE:-fast}"\n', Schema)
    assert (config.name, config.mode) == ("nbo-1", "fast")
    assert parse_config('name: "cost $${HOME}"\n', Schema).name == "cost ${HOME}"
    monkeypatch.delenv("ENOC_NOPE", raising=False)
    assert issues('name: "${ENOC_NOPE}"\n') == [
        "agent.yaml:1: name: environment variable ENOC_NOPE is not set"
    ]


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t-t0ken\n")
    config_file = tmp_path / "agent.yaml"
    config_file.write_text("name: x\ntoken_file: token\n")
    config = load_config(config_file, Schema)
    assert config.token is not None
    assert config.token.reveal() == "s3cr3t-t0ken"
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.token)
    config_file.write_text("name: x\ntoken: a\ntoken_file: token\n")
    with pytest.raises(ConfigError, match="give either token or token_file"):
        load_config(config_file, Schema)
    config_file.write_text("name: x\ntoken_file: missing\n")
    with pytest.raises(
        ConfigError, match=r"agent.yaml:2: token_file: cannot read secret file .*missing"
    ):
        load_config(config_file, Schema)


def test_a_secret_is_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    from enoc.logs import LogfmtFormatter

    config = parse_config('name: x\ntoken: "hunter2-abc"\n', Schema)
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "connecting with %s", ("hunter2-abc",), None
    )
    assert config.token is not None
    assert "hunter2-abc" not in LogfmtFormatter().format(record)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(tmp_path / "nope.yaml", Schema)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("250ms", 0.25),
        ("1h30m", 5400),
        ("45", 45),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "sixty", "5 m", "1x", "s", "5m3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(text.strip())}$"):
        Duration.parse(text)


# ---------------------------------------------------------------- one pass: rules on what was read


@dataclass(frozen=True)
class Ruled:
    name: str
    inner: Inner = field(default_factory=Inner)
    low: int = 0
    high: int = 10
    token: Secret | None = None

    def __post_init__(self) -> None:
        if "/" in self.name:
            raise ValueError(f"name {self.name!r} must have no '/'")
        if self.low > self.high:
            raise ValueError("expected low at most high")
        if self.token is not None and len(self.token.reveal()) < 8:
            raise ValueError("token of at least 8 characters is needed")


@dataclass(frozen=True)
class Holder:
    items: list[Ruled] = field(default_factory=list)


def ruled_issues(text: str, schema: type = Ruled, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, schema, filename="a.yaml", base_dir=base_dir)
    return [str(i) for i in caught.value.issues]


def test_a_schemas_rules_run_though_another_field_is_unreadable() -> None:
    """A bad name is named with the bad duration and integer, in one pass; the rule that
    needs the unreadable `low` is skipped rather than guessed at."""
    found = ruled_issues("name: a/b\ninner: {interval: sixty}\nlow: many\nhigh: 5\n")
    assert found == [
        "a.yaml:1: name: name 'a/b' must have no '/'",
        'a.yaml:2: inner.interval: expected a duration like "60s", got "sixty"',
        'a.yaml:3: low: expected an integer, got "many"',
    ]
    # once readable, the rule on low and high runs (at the dataclass's line: no field first)
    assert ruled_issues("name: a\nlow: 6\nhigh: 5\n") == [
        "a.yaml:1: (top level): expected low at most high"
    ]


def test_rules_run_in_every_list_item_and_keep_their_index() -> None:
    found = ruled_issues(
        "items:\n  - {name: ok, low: x}\n  - {name: b/c}\n  - {name: d/e, inner: {retries: y}}\n",
        Holder,
    )
    assert found == [
        'a.yaml:2: items[0].low: expected an integer, got "x"',
        "a.yaml:3: items[1].name: name 'b/c' must have no '/'",
        'a.yaml:4: items[2].inner.retries: expected an integer, got "y"',
        "a.yaml:4: items[2].name: name 'd/e' must have no '/'",
    ]


def test_a_secret_file_that_cannot_be_read_is_one_mistake(tmp_path: Path) -> None:
    found = ruled_issues("name: x\ntoken_file: missing\n", base_dir=tmp_path)
    assert len(found) == 1 and "a.yaml:2: token_file: cannot read secret file" in found[0]


def test_check_file_places_a_later_rules_issues_at_their_keys_line(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("# items\nitems:\n  - {name: a}\n  - name: b\n    high: 3\n")

    def rule(holder: Holder, filename: str) -> list[ConfigIssue]:
        return [ConfigIssue(filename, 0, "items[1].high", f"{holder.items[1].high} is low")]

    checked = check_file(path, Holder, rule)
    assert [str(i) for i in checked.errors] == [f"{path}:5: items[1].high: 3 is low"]
    with pytest.raises(ConfigError, match=r"items\[1\]\.high: 3 is low"):
        checked.result()
    # and a rule that meets an unreadable value stops alone, quietly
    path.write_text("items:\n  - {name: a}\n  - {name: b, high: z}\n")
    checked = check_file(path, Holder, rule)
    assert [str(i) for i in checked.errors] == [
        f'{path}:3: items[1].high: expected an integer, got "z"'
    ]
    missing = check_file(tmp_path / "none.yaml", Holder, rule)
    assert [str(i) for i in missing.errors] == [f"{tmp_path / 'none.yaml'}: file not found"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", None),
        ("mqtts://[::1]:8883", None),
        ("postgresql://enoc@db/enoc", None),
        ("postgresql:///enoc?host=/run/postgresql", None),
        ("sqlite:///var/lib/enoc/incidents.db", None),
        ("mqtt://127.0.0.1:99999", "expected a port from 1 to 65535 after the host"),
        ("mqtt://127.0.0.1:0", "expected a port from 1 to 65535 after the host"),
        ("http://u:p@host:8o86/", "expected a port from 1 to 65535 after the host"),
        ("mqtt://:1883", 'expected a host after "mqtt://"'),
    ],
)
def test_urls_are_checked_for_a_host_and_a_port(url: str, expected: str | None) -> None:
    checked: Checked[None] = Checked("c.yaml", None, lines={"mqtt.url": 4})
    check_url(checked, "mqtt.url", url)
    found = [str(i) for i in checked.issues]
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(f"c.yaml:4: mqtt.url: {expected}")


def test_tls_files_are_read_and_loaded_as_the_client_loads_them(tmp_path: Path) -> None:
    from enoc.config import TlsConfig
    from enoc.pki import make_pki

    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=["a"])
    cert, key = pki.clients["a"]

    def tls_issues(tls: TlsConfig) -> list[str]:
        checked: Checked[None] = Checked("c.yaml", None)
        check_tls_files(checked, "mqtt.tls", tls, "MQTT")
        return [str(i) for i in checked.issues]

    assert tls_issues(TlsConfig(pki.ca_cert, cert, key)) == []
    assert tls_issues(TlsConfig(tmp_path / "no-ca.pem")) == [
        f"c.yaml: mqtt.tls.ca_file: cannot read {tmp_path / 'no-ca.pem'}: No such file or directory"
    ]
    assert tls_issues(TlsConfig(key_file=key)) == [
        "c.yaml: mqtt.tls.key_file: needs cert_file (the certificate of this key)"
    ]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    (found,) = tls_issues(TlsConfig(pki.ca_cert, tmp_path / "junk.pem", key))
    assert found.startswith("c.yaml: mqtt.tls: cannot use the MQTT TLS files")
    # a certificate with another's key
    other = make_pki(tmp_path / "other", server_names=["127.0.0.1"], clients=["b"])
    botched = TlsConfig(pki.ca_cert, cert, other.clients["b"][1])
    (found,) = tls_issues(botched)
    assert found.startswith("c.yaml: mqtt.tls: cannot use the MQTT TLS files")
    assert "key values mismatch" in found.lower()
    # for a link that builds its context at each attempt, the contents are a warning: the
    # program starts, keeps its data and connects once they are fixed; a path is an error
    checked: Checked[None] = Checked("c.yaml", None)
    check_tls_files(checked, "mqtt.tls", botched, "MQTT", retried=True)
    assert not checked.errors
    (warning,) = [str(i) for i in checked.warnings]
    assert warning.startswith("c.yaml: mqtt.tls: warning: cannot use the MQTT TLS files")
    assert warning.endswith("it starts, and connects once they can be used")
    checked = Checked("c.yaml", None)
    check_tls_files(checked, "mqtt.tls", TlsConfig(tmp_path / "no-ca.pem"), "MQTT", retried=True)
    assert [i.key for i in checked.errors] == ["mqtt.tls.ca_file"]


def test_deep_nesting_and_huge_integers_are_config_errors() -> None:
    """Found by enoc bench fuzz: 600 levels of flow nesting raised RecursionError out of
    PyYAML, and `retries: 10**400` OverflowError out of a rule comparing it with a float;
    both are the file's mistakes, named as such."""
    from agent.config import AgentConfig

    head = "agent_id: a\nsite: s\nrtc: r\nmqtt: {url: 'mqtt://127.0.0.1:1883'}\nspool: {path: /x}\n"
    for depth in (65, 600, 5000):
        text = head + "polling: " + "[" * depth + "]" * depth + "\n"
        with pytest.raises(ConfigError) as error:
            parse_config(text, AgentConfig, filename="deep.yaml")
        assert "nested deeper than 64 levels" in str(error.value), depth
    with pytest.raises(ConfigError) as error:
        parse_config(head + "polling: {retries: 1" + "0" * 400 + "}\n", AgentConfig)
    assert "polling.retries: expected an integer" in str(error.value)
