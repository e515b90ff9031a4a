"""What ships in deploy/, run for real: the broker's config and ACL, make-certs, the
agent's and collector's configs over TLS, PostgreSQL's pg_hba.conf and the systemd units.

Every program runs with the *shipped* file; a test rewrites only what must differ
on this machine (listen addresses and ports on 127.0.0.1, the container paths of
secrets and data, and the agent's polling interval) and checks that nothing else
needed rewriting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiomqtt
import psycopg
import pytest
import yaml
from agentkit import running_agent, simulated_site
from collectorkit import eventually, running_collector
from deploykit import DEPLOY, load_make_certs
from psycopg import sql

from agent.config import AgentConfig
from collector.config import CollectorConfig
from enoc.config import load_config
from enoc.wire import EventsMessage, MetricsMessage, decode, encode
from testbed.servers import HOST, Mosquitto, PostgreSQL, TlsFiles, VictoriaMetrics, free_port

pytestmark = pytest.mark.servers

MAKE_CERTS = DEPLOY / "make-certs"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
AGENTS = ["nyc/nyc-1", "gva/gva-1"]


# ---------------------------------------------------------------- make-certs and the broker


def make_certs(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The shipped script (bash, then deploy/make_certs.py) with this test's Python."""
    return subprocess.run(
        [str(MAKE_CERTS), "--out", str(out), *args],
        env={**os.environ, "ENOC_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=True,
    )


def shipped_broker_config(secrets: Path, workdir: Path, port: int) -> Path:
    """deploy/mosquitto/mosquitto.conf with only its listener and container paths moved."""
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    replacements = {
        "listener 8883\n": f"listener {port} {HOST}\n",
        "/mosquitto/secrets/": f"{secrets}/mosquitto/",
        "/mosquitto/config/acl": str(DEPLOY / "mosquitto" / "acl"),
        "/mosquitto/data/": f"{workdir}/data/",
    }
    for old, new in replacements.items():
        assert old in text, f"mosquitto.conf no longer has {old!r}"
        text = text.replace(old, new)
    settings = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert not [words for words in settings if words[-1].startswith("/mosquitto/")]
    # In the container mosquitto drops root for its own user, who owns secrets/mosquitto;
    # here that user does not exist, so it stays whoever runs the test.
    text += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(text)
    return conf


@dataclass
class Deployed:
    secrets: Path
    broker: Mosquitto

    @property
    def url(self) -> str:
        return f"mqtts://{HOST}:{self.broker.port}"

    def files(self, who: str) -> tuple[Path, Path, Path]:
        """(certificate, key, password file) of an MQTT login."""
        if who == "collector":
            base = self.secrets / "collector"
            return base / "client.pem", base / "client.key", base / "mqtt-password"
        if who == "healthcheck":
            base = self.secrets / "mosquitto"
            return (
                base / "healthcheck.pem",
                base / "healthcheck.key",
                base / "healthcheck.password",
            )
        base = self.secrets / "agents" / who
        return base / "client.pem", base / "client.key", base / "mqtt-password"

    def password(self, who: str) -> str:
        return self.files(who)[2].read_text().strip()

    def context(self, who: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.secrets / "pki" / "ca.pem"))
        if who is not None:
            cert, key, _ = self.files(who)
            context.load_cert_chain(str(cert), str(key))
        return context

    def login(self, who: str, *, password: str | None = None) -> dict[str, Any]:
        """aiomqtt.Client arguments for `who`: their certificate, username and password."""
        return {
            "hostname": HOST,
            "port": self.broker.port,
            "tls_context": self.context(who),
            "username": who,
            "password": self.password(who) if password is None else password,
            "timeout": 5,
        }

    def log(self) -> str:
        return self.broker.log_tail(100_000)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files."""
        assert self.broker.process is not None
        self.broker.process.send_signal(signal.SIGHUP)


def start_broker(secrets: Path, workdir: Path) -> Mosquitto:
    port = free_port()
    conf = shipped_broker_config(secrets, workdir, port)
    tls = TlsFiles(
        secrets / "mosquitto" / "ca.pem",
        secrets / "mosquitto" / "server.pem",
        secrets / "mosquitto" / "server.key",
        require_certificate=True,
    )  # tells Mosquitto's readiness probe the port speaks TLS; the config file is ours
    broker = Mosquitto(workdir, tls=tls, config_file=conf)
    broker.port = port
    return broker.start()


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[Deployed]:
    secrets = tmp_path / "secrets"
    args = [f"--agent={a}" for a in AGENTS]
    make_certs(
        secrets,
        "--broker-name",
        "127.0.0.1",
        "--postgres-name",
        "127.0.0.1",
        "--influxdb-name",
        "127.0.0.1",
        *args,
    )
    broker = start_broker(secrets, tmp_path / "mosquitto")
    try:
        yield Deployed(secrets, broker)
    finally:
        broker.stop()


@dataclass
class Recorder:
    """A client that subscribes to `filters` and records what arrives, in order."""

    deployed: Deployed
    who: str
    filters: list[str]
    identifier: str = ""
    clean_session: bool = True
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run())
        done, _ = await asyncio.wait(
            {self._task, asyncio.ensure_future(self._ready.wait())},
            timeout=10,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._task in done:
            self._task.result()
        assert self._ready.is_set(), f"{self.who} could not subscribe"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(
            identifier=self.identifier or None,
            clean_session=self.clean_session,
            **self.deployed.login(self.who),
        ) as client:
            for f in self.filters:
                await client.subscribe(f, qos=1)
            self._ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.messages.append((str(message.topic), message.payload, message.retain))

    @property
    def topics(self) -> list[str]:
        return [t for t, _p, _r in self.messages]

    def payloads(self) -> list[bytes]:
        return [p for _t, p, _r in self.messages]


# ---------------------------------------------------------------- the ACL


async def test_an_agent_publishes_only_under_its_own_prefix(deployed: Deployed) -> None:
    own = "enoc/v1/nyc/nyc-1"
    forged = [
        ("enoc/v1/gva/gva-1/metrics", False),  # another site's agent
        ("enoc/v1/nyc/nyc-2/events", False),  # another agent of its own site
        ("enoc/v1/gva/gva-1/status", True),  # a forged retained status
        ("enoc/v1/nyc/nyc-1/metrics/extra", False),  # below its own topics
        ("enoc/v1/nyc/nyc-1x/metrics", False),  # a prefix of its name is not its name
        ("enoc/deadletter/v1/misaddressed", False),  # the collector's topic
    ]
    async with (
        Recorder(deployed, "collector", ["enoc/v1/#", "enoc/deadletter/v1/#"]) as collector,
        Recorder(deployed, "gva/gva-1", ["#", "enoc/v1/#", "enoc/v1/nyc/nyc-1/+"]) as other,
    ):
        async with aiomqtt.Client(**deployed.login("nyc/nyc-1")) as nyc:
            await nyc.publish(f"{own}/metrics", b"own-metrics", qos=1)
            await nyc.publish(f"{own}/status", b"own-status", qos=1, retain=True)
            for topic, retain in forged:
                await nyc.publish(topic, b"forged", qos=1, retain=retain)
            await nyc.publish(f"{own}/events", b"marker", qos=1)  # after everything above
        await eventually(lambda: b"marker" in collector.payloads(), what="the marker")
    assert collector.topics == [f"{own}/metrics", f"{own}/status", f"{own}/events"]
    assert b"forged" not in collector.payloads()
    assert other.messages == [], "an agent reads nothing, not even its neighbours"

    # A retained forgery would mislead every collector that starts later: none was kept.
    async with Recorder(
        deployed, "collector", ["enoc/v1/+/+/status", "enoc/v1/gva/gva-1/events"]
    ) as late:
        async with aiomqtt.Client(**deployed.login("gva/gva-1")) as gva:
            await gva.publish("enoc/v1/gva/gva-1/events", b"marker", qos=1)
        await eventually(lambda: b"marker" in late.payloads(), what="the late marker")
    assert late.messages[0] == (f"{own}/status", b"own-status", True)
    assert [t for t, _p, retained in late.messages if retained] == [f"{own}/status"]


def raw_connect(
    deployed: Deployed, who: str, *, will_topic: str, will: bytes, client_id: str
) -> int:
    """MQTT 3.1.1 CONNECT with a retained QoS 1 last will over TLS; then the connection
    just drops (no DISCONNECT), as when a site's power fails. Returns the CONNACK code."""

    def text(value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return len(raw).to_bytes(2, "big") + raw

    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, retain, QoS 1, will
    variable = text("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big")
    payload = (
        text(client_id) + text(will_topic) + text(will) + text(who) + text(deployed.password(who))
    )
    body = variable + payload
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    with (
        socket.create_connection((HOST, deployed.broker.port), timeout=5) as raw,
        deployed.context(who).wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        sock.sendall(b"\x10" + encoded + body)
        reply = sock.recv(4)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return reply[3] if reply[:2] == b"\x20\x02" else -1


async def test_an_agents_last_will_is_delivered_for_its_own_status_only(
    deployed: Deployed,
) -> None:
    async with Recorder(deployed, "collector", ["enoc/v1/#"]) as collector:
        forged = raw_connect(
            deployed,
            "nyc/nyc-1",
            will_topic="enoc/v1/gva/gva-1/status",
            will=b"forged-will",
            client_id="will-forger",
        )
        own = raw_connect(
            deployed,
            "nyc/nyc-1",
            will_topic="enoc/v1/nyc/nyc-1/status",
            will=b"own-will",
            client_id="will-owner",
        )
        assert own == 0
        assert forged in (0, 5), "accepted (the will is dropped) or refused as not authorised"
        await eventually(lambda: b"own-will" in collector.payloads(), what="the agent's will")
        async with aiomqtt.Client(**deployed.login("nyc/nyc-1")) as nyc:
            await nyc.publish("enoc/v1/nyc/nyc-1/events", b"marker", qos=1)
        await eventually(lambda: b"marker" in collector.payloads(), what="the marker")
    assert collector.topics == ["enoc/v1/nyc/nyc-1/status", "enoc/v1/nyc/nyc-1/events"]
    assert b"forged-will" not in collector.payloads()


async def refused(deployed: Deployed, **kwargs: Any) -> str:
    try:
        async with aiomqtt.Client(**kwargs) as client:
            await client.publish("enoc/v1/nyc/nyc-1/events", b"x", qos=1)
    except aiomqtt.MqttError as exc:
        return str(exc)
    raise AssertionError(f"connected with {sorted(kwargs)}, but should have been refused")


async def test_the_broker_refuses_a_client_without_certificate_or_password(
    deployed: Deployed, tmp_path: Path
) -> None:
    good = deployed.login("nyc/nyc-1")
    async with aiomqtt.Client(**good):
        pass  # control: the agent's own certificate and password

    no_cert = {**good, "tls_context": deployed.context(None)}
    await refused(deployed, **no_cert)
    assert "peer did not return a certificate" in deployed.log()

    no_password = {k: v for k, v in good.items() if k not in ("username", "password")}
    assert "not auth" in (await refused(deployed, **no_password)).lower()

    swapped = {**good, "username": "gva/gva-1"}  # nyc's password for gva's login
    assert "not auth" in (await refused(deployed, **swapped)).lower()

    make_certs(tmp_path / "foreign", "--broker-name", "127.0.0.1", "--agent", "nyc/nyc-1")
    foreign = deployed.context(None)
    bundle = tmp_path / "foreign" / "agents" / "nyc" / "nyc-1"
    foreign.load_cert_chain(str(bundle / "client.pem"), str(bundle / "client.key"))
    await refused(deployed, **{**good, "tls_context": foreign})
    assert "certificate verify failed" in deployed.log()

    plain = {k: v for k, v in good.items() if k != "tls_context"}
    await refused(deployed, **plain)
    assert "wrong version number" in deployed.log()

    async with aiomqtt.Client(**good):
        pass  # and the broker still serves the agent


async def test_a_stopped_collector_replica_keeps_receiving_its_share(
    deployed: Deployed,
) -> None:
    """Why each replica needs a stable client id (compose: ENOC_COLLECTOR_ID; Kubernetes:
    a StatefulSet): the broker goes on dispatching a shared subscription's messages to a
    member whose persistent session is offline, and delivers them only when it returns."""
    shared = ["$share/enoc-collectors/enoc/v1/+/+/metrics"]
    async with Recorder(deployed, "collector", shared, identifier="replica-2", clean_session=False):
        pass  # replica 2 subscribed once, and is now down
    async with Recorder(
        deployed, "collector", shared, identifier="replica-1", clean_session=False
    ) as one:
        async with aiomqtt.Client(**deployed.login("nyc/nyc-1")) as nyc:
            for i in range(20):
                await nyc.publish("enoc/v1/nyc/nyc-1/metrics", f"m{i}".encode(), qos=1)
        # Nothing is published from here on: what replica 2 gets was held for it.
        async with Recorder(
            deployed, "collector", shared, identifier="replica-2", clean_session=False
        ) as two:
            await eventually(
                lambda: len(one.messages) + len(two.messages) == 20, what="all 20 messages"
            )
    assert 0 < len(two.messages) < 20, "the offline replica was given a share and kept it"
    assert sorted(one.payloads() + two.payloads()) == sorted(f"m{i}".encode() for i in range(20))


# ---------------------------------------------------------------- make-certs


def test_make_certs_hashes_like_mosquitto_passwd(tmp_path: Path) -> None:
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip(f"{MOSQUITTO_PASSWD} is not installed")
    make_certs = load_make_certs()
    db = tmp_path / "passwd"
    db.touch(mode=0o600)
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(db), "nyc/nyc-1", "s3cret pass"], check=True)
    user, hashed = db.read_text().strip().split(":", 1)
    assert user == "nyc/nyc-1"
    salt = base64.b64decode(hashed.split("$")[3])
    assert make_certs.mosquitto_hash("s3cret pass", salt=salt) == hashed
    assert make_certs.mosquitto_check("s3cret pass", hashed)
    assert not make_certs.mosquitto_check("s3cret pas", hashed)


async def test_make_certs_adds_and_revokes_agents_and_keeps_everything_else(
    deployed: Deployed,
) -> None:
    secrets = deployed.secrets
    keys = [p for p in secrets.rglob("*") if p.is_file() and p.suffix == ".key"]
    secret_files = [
        p
        for p in secrets.rglob("*")
        if p.is_file() and (p.suffix == ".key" or "password" in p.name or "token" in p.name)
    ]
    assert keys and all(p.stat().st_mode & 0o777 == 0o600 for p in secret_files)
    for service in ("mosquitto", "collector", "postgres", "grafana", "influxdb"):
        assert (secrets / service).stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:  # as root, each service's directory belongs to its container user
        assert (secrets / "mosquitto" / "server.key").stat().st_uid == 1883
        assert (secrets / "collector" / "client.key").stat().st_uid == 10001
    before = {
        p: p.read_bytes()
        for p in (
            secrets / "pki" / "ca.pem",
            secrets / "pki" / "ca.key",
            secrets / "collector" / "mqtt-password",
            secrets / "collector" / "client.pem",
            secrets / "agents" / "gva" / "gva-1" / "client.key",
            secrets / "agents" / "gva" / "gva-1" / "mqtt-password",
        )
    }
    nyc_login = deployed.login("nyc/nyc-1")

    make_certs(
        secrets, "--broker-name", "127.0.0.1", "--agent", "bkk/bkk-1", "--revoke", "nyc/nyc-1"
    )
    assert {p: p.read_bytes() for p in before} == before, "CA, collector and gva untouched"
    assert not (secrets / "agents" / "nyc" / "nyc-1").exists()
    users = [line.split(":")[0] for line in (secrets / "mosquitto" / "passwd").read_text().split()]
    assert sorted(users) == ["bkk/bkk-1", "collector", "gva/gva-1", "healthcheck"]

    deployed.reload()

    async def nyc_refused() -> bool:
        try:
            async with aiomqtt.Client(**nyc_login):
                return False
        except aiomqtt.MqttError as exc:
            return "not auth" in str(exc).lower()

    await eventually(nyc_refused, what="the revoked agent refused after SIGHUP")
    async with Recorder(deployed, "collector", ["enoc/v1/#"]) as collector:
        for who in ("bkk/bkk-1", "gva/gva-1"):
            async with aiomqtt.Client(**deployed.login(who)) as client:
                await client.publish(f"enoc/v1/{who}/events", who.encode(), qos=1)
        await eventually(lambda: len(collector.messages) == 2, what="both agents")
    assert collector.topics == ["enoc/v1/bkk/bkk-1/events", "enoc/v1/gva/gva-1/events"]

    # Rotation: the same agent gets a new key and password; the old pair stops working.
    old_login, old_key = deployed.login("gva/gva-1"), deployed.files("gva/gva-1")[1].read_bytes()
    make_certs(
        secrets, "--broker-name", "127.0.0.1", "--revoke", "gva/gva-1", "--agent", "gva/gva-1"
    )
    assert deployed.files("gva/gva-1")[1].read_bytes() != old_key
    assert deployed.password("gva/gva-1") != old_login["password"]
    deployed.reload()

    async def old_refused() -> bool:
        try:
            async with aiomqtt.Client(**old_login):
                return False
        except aiomqtt.MqttError:
            return True

    await eventually(old_refused, what="the old gva password refused")
    async with aiomqtt.Client(**deployed.login("gva/gva-1")):
        pass  # the new certificate and password


def test_make_certs_refuses_a_malformed_agent_name(tmp_path: Path) -> None:
    for bad in ("nyc", "nyc/", "nyc/nyc 1", "ny+c/nyc-1", "nyc/nyc-1/x"):
        result = subprocess.run(
            [str(MAKE_CERTS), "--out", str(tmp_path / "s"), "--broker-name", "x", "--agent", bad],
            env={**os.environ, "ENOC_PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2, bad
        assert "make-certs:" in result.stderr
    assert not (tmp_path / "s" / "agents").exists()


# ---------------------------------------------------------------- agent and collector


def shipped_collector_config(
    deployed: Deployed, tmp_path: Path, *, influx_url: str, store_url: str | None = None
) -> Path:
    """deploy/collector/collector.yaml with the container paths and addresses moved."""
    text = (DEPLOY / "collector" / "collector.yaml").read_text()
    replacements = {
        "/run/secrets/enoc/": f"{deployed.secrets}/collector/",
        "/var/lib/enoc/": f"{tmp_path}/collector-data/",
        "mqtts://mosquitto:8883": deployed.url,
        "https://influxdb:8086": influx_url,
        '"0.0.0.0:8080"': f'"{HOST}:{free_port()}"',
    }
    for old, new in replacements.items():
        assert old in text, f"collector.yaml no longer has {old!r}"
        text = text.replace(old, new)
    config = yaml.safe_load(text)
    if store_url is None:  # PostgreSQL has its own test below
        config["store"]["url"] = f"sqlite:///{tmp_path}/incidents.db"
    else:
        config["store"]["url"] = config["store"]["url"].replace("postgres:5432", store_url)
    (tmp_path / "collector-data").mkdir(exist_ok=True)
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def admin_token(deployed: Deployed) -> str:
    """The API token make-certs wrote for the users file's admin."""
    return (deployed.secrets / "collector" / "api-admin-token").read_text().strip()


def shipped_agent_config(deployed: Deployed, tmp_path: Path, inventory: Path) -> Path:
    """deploy/agent/agent.yaml for nyc/nyc-1: the broker's address, the spool and inventory
    paths, a loopback trap port, and a 1 s polling interval instead of 60 s."""
    config = yaml.safe_load((DEPLOY / "agent" / "agent.yaml").read_text())
    assert (config["agent_id"], config["site"], config["mqtt"]["username"]) == (
        "nyc-1",
        "nyc",
        "nyc/nyc-1",
    )
    config["mqtt"]["url"] = deployed.url
    config["spool"]["path"] = str(tmp_path / "spool")
    config["inventory"] = str(inventory)
    config["traps"]["listen"] = f"{HOST}:{free_port('udp')}"
    config["polling"].update(
        {"interval": "1s", "timeout": "0.2s", "unreachable_after": 2, "source": HOST}
    )
    config["publishing"].update({"heartbeat": "1s", "replay_rate": 200})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def http_get(url: str, token: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url)
    if token:  # /healthz details are for a logged-in caller
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def tls_victoria_metrics(deployed: Deployed, tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics (InfluxDB's write API) serving https with the certificate and key
    make-certs wrote for InfluxDB, as compose.yaml gives them to InfluxDB."""
    influx = deployed.secrets / "influxdb"
    tls = TlsFiles(influx / "ca.pem", influx / "server.pem", influx / "server.key")
    with VictoriaMetrics(tmp_path / "victoria-metrics", tls=tls) as server:
        yield server


async def test_the_shipped_agent_and_collector_run_over_tls_through_the_shipped_acl(
    deployed: Deployed,
    tmp_path: Path,
    tls_victoria_metrics: VictoriaMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What systemd (LoadCredential=) and compose (environment:) give the two programs.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(deployed.secrets / "agents" / "nyc" / "nyc-1"))
    monkeypatch.setenv("ENOC_COLLECTOR_ID", "collector-1")
    victoria_metrics = tls_victoria_metrics
    assert victoria_metrics.url.startswith("https://")
    collector_yaml = shipped_collector_config(deployed, tmp_path, influx_url=victoria_metrics.url)
    coll_config = load_config(collector_yaml, CollectorConfig)
    assert coll_config.mqtt.client_id == "enoc-collector-1"
    assert coll_config.mqtt.shared_group and coll_config.mqtt.max_unacked == 100
    assert coll_config.influxdb is not None and coll_config.influxdb.token is not None
    assert coll_config.influxdb.token.reveal() == (
        (deployed.secrets / "influxdb" / "admin-token").read_text().strip()
    )
    # https, InfluxDB's certificate checked against the CA make-certs gave the collectors
    assert coll_config.influxdb.tls is not None
    assert coll_config.influxdb.tls.ca_file == deployed.secrets / "collector" / "ca.pem"

    async with (
        Recorder(deployed, "collector", ["enoc/deadletter/v1/#"]) as dead_letters,
        simulated_site(tmp_path) as site,
        running_collector(collector_yaml) as collector,
    ):
        agent_yaml = shipped_agent_config(deployed, tmp_path, site.inventory)
        agent_config = load_config(agent_yaml, AgentConfig)
        assert agent_config.mqtt.tls is not None
        assert agent_config.mqtt.tls.key_file == deployed.files("nyc/nyc-1")[1]
        async with running_agent(agent_yaml) as agent:
            await eventually(
                lambda: collector.ingest.stats.received["metrics"] >= len(site.devices),
                what="metrics from the agent over TLS",
            )
            assert agent.publisher.stats.connects == 1
            # the link seen up first (a link down at first sight is a baseline, no event):
            # a poll of each, counted by polls, since ping rounds publish metrics messages
            await eventually(
                lambda: agent.stats.polls_ok > len(site.devices), what="a poll of each"
            )
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})

            async def link_incident() -> bool:
                found = await collector.engine.queries.incidents(site="nyc", state="open")
                return any(i.key.device == "nyc-acc-1" and i.key.resource == "if:2" for i in found)

            await eventually(link_incident, what="a link incident from the agent's event")

            # gva's own topic, so the ACL lets it through, with nyc's name in the payload:
            # the collector refuses it and dead-letters it (the ACL lets it do that too).
            forged = encode(MetricsMessage("nyc-1", "nyc", "americas", 1, time.time()))
            async with aiomqtt.Client(**deployed.login("gva/gva-1")) as gva:
                await gva.publish("enoc/v1/gva/gva-1/metrics", forged, qos=1)
            await eventually(
                lambda: collector.ingest.stats.rejected["misaddressed"] == 1,
                what="the forged message rejected",
            )
            await eventually(lambda: bool(dead_letters.messages), what="a dead letter")

            status, health = await asyncio.to_thread(
                http_get, f"http://{HOST}:{collector.http_port}/healthz", admin_token(deployed)
            )
            assert status == 200, health
            assert health["mqtt"]["ok"] and health["store"]["ok"] and health["influxdb"]["ok"]
    topic, payload, _ = dead_letters.messages[0]
    assert topic == "enoc/deadletter/v1/misaddressed"
    assert json.loads(payload)["topic"] == "enoc/v1/gva/gva-1/metrics"
    assert not collector.ingest.stats.rejected.keys() - {"misaddressed"}
    assert victoria_metrics.export('{__name__=~"interface_.*",site="nyc"}'), "points written"
    log = deployed.log()
    assert "u'collector'" in log and "u'nyc/nyc-1'" in log


async def test_publishes_the_shipped_acl_refuses_stay_in_the_agents_spool_until_delivered(
    deployed: Deployed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nyc-1 logged in as gva/gva-1 (a real login, the wrong one): over MQTT 5 the broker
    answers its publishes "not authorized", so nothing leaves its spool; the refusals are
    counted and logged once per topic, retried with backoff. Run again with its own login,
    the same spool delivers everything."""
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    async with (
        Recorder(deployed, "collector", ["enoc/v1/#"]) as collector,
        simulated_site(tmp_path) as site,
    ):
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(deployed.secrets / "agents/gva/gva-1"))
        wrong = shipped_agent_config(deployed, tmp_path, site.inventory)
        config = yaml.safe_load(wrong.read_text())
        config["mqtt"]["username"] = "gva/gva-1"
        wrong.write_text(yaml.safe_dump(config))
        async with running_agent(wrong) as agent:
            publisher = agent.publisher
            # the link is seen up first: a link down at first sight is a baseline, no event
            # polls, not metrics messages: a ping round publishes samples of its own
            await eventually(
                lambda: agent.stats.polls_ok > len(site.devices), what="a poll of each"
            )
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
            await eventually(lambda: publisher.events.next_seq > 1, what="link down spooled")
            site.sim.clear("nyc-acc-1")
            await eventually(
                lambda: (
                    publisher.events.next_seq > 2
                    and publisher.metrics.next_seq > 3 * len(site.devices)
                ),
                what="link up and three polls spooled",
            )
            await asyncio.sleep(3)  # some retries of the refused lanes
            health = agent.health()
            assert health["mqtt_protocol"] == 5 and publisher.stats.connects == 1
            assert publisher.stats.published == 0
            assert publisher.metrics.depth == publisher.metrics.next_seq - 1, "nothing left"
            assert publisher.events.depth == publisher.events.next_seq - 1 >= 2
            refused = int(health["publish_refused"])
            assert refused == publisher.stats.refused > 0, "counted, in the heartbeat too"
            # never hot: the first window, a probe per lane per backoff step, a status a second
            spooled = publisher.metrics.next_seq + publisher.events.next_seq
            assert refused <= spooled + 30, f"{refused} refusals in a few seconds"
            spooled_metrics = publisher.metrics.next_seq - 1
        assert collector.messages == [], "the broker let nothing of nyc's through"
        logged = [m for m in caplog.messages if "the broker refused it" in m]
        for kind in ("metrics", "events", "status"):
            lines = [m for m in logged if m.startswith(f"publishing to enoc/v1/nyc/nyc-1/{kind} ")]
            assert len(lines) == 1, f"{kind}: logged once, not per refusal: {lines}"
            assert "Not authorized (reason code 135)" in lines[0]

        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(deployed.secrets / "agents/nyc/nyc-1"))
        right = shipped_agent_config(deployed, tmp_path, site.inventory)  # the same spool
        async with running_agent(right) as agent:
            metrics, events = agent.publisher.metrics, agent.publisher.events

            def delivered(kind: str) -> set[int]:
                return {
                    decode(t, p).seq
                    for t, p, _r in collector.messages
                    if t == f"enoc/v1/nyc/nyc-1/{kind}"
                }

            await eventually(
                lambda: (
                    set(range(1, spooled_metrics + 1)) <= delivered("metrics")
                    and set(range(1, events.next_seq)) <= delivered("events")
                ),
                timeout=30,
                what="everything the broker had refused",
            )
            assert agent.health()["publish_refused"] == 0 and metrics.dropped == 0
    link = [
        (e.resource, e.state)
        for t, p, _r in collector.messages
        if t.endswith("/events")
        for e in cast("EventsMessage", decode(t, p)).events
    ]
    assert link == [("if:2", "down"), ("if:2", "up")], "the refused events, in order"


class TlsPostgreSQL(PostgreSQL):
    """Debian's PostgreSQL with deploy/postgres/pg_hba.conf, TLS from make-certs and a
    password for `enoc`, as compose.yaml starts the image."""

    def __init__(self, workdir: Path, secrets: Path) -> None:
        super().__init__(workdir)
        self.secrets = secrets
        self.password = (secrets / "postgres" / "password").read_text().strip()

    def command(self) -> list[str]:
        base = self.datadir.parent
        for name in ("server.pem", "server.key"):
            shutil.copy(self.secrets / "postgres" / name, base / name)
            (base / name).chmod(0o600)
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(base / name, owner.pw_uid, owner.pw_gid)
        hba = base / "pg_hba.conf"  # the shipped file, where the server's user can read it
        shutil.copy(DEPLOY / "postgres" / "pg_hba.conf", hba)
        hba.chmod(0o644)
        options = {
            "ssl": "on",
            "ssl_cert_file": base / "server.pem",
            "ssl_key_file": base / "server.key",
            "ssl_min_protocol_version": "TLSv1.2",
            "password_encryption": "scram-sha-256",
            "hba_file": hba,
        }
        extra = [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]
        return super().command() + extra

    def ready(self) -> bool:  # over the local socket (trust), as the image's init does
        try:
            with psycopg.connect(
                host=str(self.datadir.parent), port=self.port, user="enoc", dbname="postgres"
            ) as conn:
                conn.autocommit = True
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'enoc'").fetchone():
                    conn.execute('CREATE DATABASE "enoc"')
                conn.execute(
                    sql.SQL("ALTER ROLE enoc PASSWORD {}").format(sql.Literal(self.password))
                )
        except psycopg.OperationalError:
            return False
        return True


@pytest.mark.skipif(not Path("/usr/lib/postgresql").exists(), reason="no PostgreSQL server")
async def test_the_collector_reaches_postgresql_over_tls_with_its_password_file(
    deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = TlsPostgreSQL(tmp_path / "postgres", deployed.secrets)
    try:
        server.start()
        monkeypatch.setenv("ENOC_COLLECTOR_ID", "collector-1")
        monkeypatch.setenv("PGPASSFILE", str(deployed.secrets / "collector" / "pgpass"))
        config = shipped_collector_config(
            deployed, tmp_path, influx_url="https://127.0.0.1:9", store_url=f"{HOST}:{server.port}"
        )
        store_url = load_config(config, CollectorConfig).store.url
        assert "sslmode=verify-full" in store_url and "@" in store_url
        assert server.password not in store_url, "the password is in PGPASSFILE, not the URL"

        raw = yaml.safe_load(config.read_text())
        del raw["influxdb"]
        config.write_text(yaml.safe_dump(raw))
        async with running_collector(config) as collector:
            assert collector.store.healthy
            status, health = await asyncio.to_thread(
                http_get, f"http://{HOST}:{collector.http_port}/healthz", admin_token(deployed)
            )
            assert status == 200 and health["store"]["ok"], health

        with psycopg.connect(store_url, connect_timeout=5) as conn:
            assert conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone() == (True,)
        plain = store_url.replace("sslmode=verify-full", "sslmode=disable")
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            psycopg.connect(plain, connect_timeout=5)
        monkeypatch.setenv("PGPASSWORD", "not-the-password")
        monkeypatch.delenv("PGPASSFILE")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(store_url, connect_timeout=5)
        # A name not in its certificate, still reached on 127.0.0.1 (hostaddr): libpq
        # verifies the certificate against `host` and connects to `hostaddr`, so no
        # resolver and no ::1 (which "localhost" gives first here) is involved.
        wrong_name = store_url.replace(f"{HOST}:", "localhost:") + f"&hostaddr={HOST}"
        with pytest.raises(psycopg.OperationalError, match="does not match host name"):
            psycopg.connect(wrong_name, connect_timeout=5)
    finally:
        server.remove()


# ---------------------------------------------------------------- systemd


@pytest.mark.parametrize("unit", ["enoc-agent.service", "enoc-collector.service"])
def test_systemd_units_verify_and_score_as_hardened(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed (tests/test_deploy_files.py parses the units)"
        )
    enoc = Path(sys.executable).parent / "enoc"
    text = (DEPLOY / "systemd" / unit).read_text()
    assert text.count("/opt/enoc/bin/enoc ") == 1
    # The real enoc of this environment in place of /opt/enoc's: verify checks it exists.
    (tmp_path / unit).write_text(text.replace("/opt/enoc/bin/enoc ", f"{enoc} "))
    verify = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [
            analyze,
            "security",
            "--offline=true",
            "--no-pager",
            "--threshold=20",
            str(tmp_path / unit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stdout + security.stderr
    score = float(security.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert score <= 2.0, f"{unit}: exposure {score} (systemd calls up to 2.0 'OK')"
