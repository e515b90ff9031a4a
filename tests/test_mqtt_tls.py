"""MQTT over TLS with per-client certificates and passwords, against the real Mosquitto.

The broker requires a certificate from our private CA (enoc.pki) *and* a
username and password; the agent and the collector each bring their own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from collectorkit import collector_config, eventually, running_collector
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector.app import Collector
from enoc.pki import Pki, PkiError, make_pki
from enoc.wire import decode
from testbed.servers import Mosquitto, TlsFiles

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"  # ships with Debian's mosquitto package
CLIENTS = ["nyc-1", "collector", "listener"]


# ---------------------------------------------------------------- the broker


@dataclass
class TlsBroker:
    mosquitto: Mosquitto
    pki: Pki
    passwords: dict[str, str]
    secrets_dir: Path

    @property
    def url(self) -> str:
        return self.mosquitto.url

    @property
    def port(self) -> int:
        return self.mosquitto.port

    def password_file(self, name: str, password: str | None = None) -> Path:
        path = self.secrets_dir / f"{name}.password"
        path.write_text((self.passwords[name] if password is None else password) + "\n")
        path.chmod(0o600)
        return path

    def context(self, name: str, *, pki: Pki | None = None) -> ssl.SSLContext:
        """Trusting our CA, presenting `name`'s certificate (from `pki`, default ours)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        cert, key = (pki or self.pki).clients[name]
        context.load_cert_chain(str(cert), str(key))
        return context

    def mqtt_config(self, name: str, *, password: str | None = None) -> dict[str, Any]:
        cert, key = self.pki.clients[name]
        return {
            "url": self.url,
            "tls": {"ca_file": str(self.pki.ca_cert), "cert_file": str(cert), "key_file": str(key)},
            "username": name,
            "password_file": str(self.password_file(name, password)),
        }

    def log(self) -> str:
        return self.mosquitto.log_path.read_text(errors="replace")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1", "localhost"], clients=CLIENTS)
    passwords = {name: f"{name}-{os.urandom(8).hex()}" for name in CLIENTS}
    password_db = tmp_path / "mosquitto.passwd"
    password_db.touch(mode=0o600)
    for name, password in passwords.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(password_db), name, password], check=True)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    tls = TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    with Mosquitto(tmp_path / "mosquitto", tls=tls, password_file=password_db) as server:
        yield TlsBroker(server, pki, passwords, secrets_dir)


@dataclass
class TlsListener(Listener):
    """agentkit's Listener, connecting over mqtts with a certificate and a password."""

    tls: ssl.SSLContext | None = None
    username: str = ""
    password: str = ""
    port: int = 0

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier="test-tls-listener",
                    clean_session=False,
                    username=self.username,
                    password=self.password,
                    tls_context=self.tls,
                ) as client:
                    await client.subscribe("enoc/v1/#", qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        name = str(message.topic)
                        self.raw.append((name, message.payload))
                        self.messages.append((name, decode(name, message.payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


def listener(broker: TlsBroker) -> TlsListener:
    return TlsListener(
        broker.url,
        tls=broker.context("listener"),
        username="listener",
        password=broker.passwords["listener"],
        port=broker.port,
    )


async def connect_once(broker: TlsBroker, **kwargs: Any) -> None:
    """Connect, publish one QoS 1 message, disconnect; raises aiomqtt.MqttError if refused."""
    async with aiomqtt.Client("127.0.0.1", broker.port, timeout=3, **kwargs) as client:
        await client.publish("enoc/test/probe", b"1", qos=1)


async def refusal(broker: TlsBroker, **kwargs: Any) -> str:
    """What aiomqtt says when the connection fails; fails the test if it succeeds."""
    try:
        await connect_once(broker, **kwargs)
    except aiomqtt.MqttError as exc:
        return str(exc)
    raise AssertionError("connected, but should have been refused")


async def collect_unclosed_sockets() -> None:
    """Garbage-collect until no open SSL socket is left (the executor lets go a bit later)."""
    for _ in range(100):
        gc.collect()
        if not any(isinstance(o, ssl.SSLSocket) and o.fileno() >= 0 for o in gc.get_objects()):
            return
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- agent and collector over TLS


@pytest.mark.servers
async def test_agent_publishes_over_mqtts_with_its_certificate_and_password(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    async with simulated_site(tmp_path) as site, listener(tls_broker) as lst:
        extra = {"mqtt": tls_broker.mqtt_config("nyc-1")}
        config = agent_config(tmp_path, tls_broker.url, site.inventory, extra=extra)
        async with running_agent(config) as agent:
            names = {d.name for d in site.devices}
            await lst.wait_for(
                lambda x: {s.device for m in x.metrics() for s in m.samples} == names,
                what="a sample of every device over TLS",
            )
            assert agent.publisher.connected.is_set()
            assert agent.publisher.stats.connects == 1
    statuses = lst.statuses()
    assert statuses[0].state == "online" and statuses[0].agent == "nyc-1"
    assert statuses[-1].state == "offline"
    assert all(m.agent == "nyc-1" and m.site == "nyc" for m in lst.metrics())
    assert "u'nyc-1'" in tls_broker.log(), "the broker saw the agent's own username"


@pytest.mark.servers
async def test_collector_over_mqtts_turns_the_agents_events_into_incidents(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    collector_extra = {"mqtt": tls_broker.mqtt_config("collector")}
    async with (
        simulated_site(tmp_path) as site,
        running_collector(
            collector_config(tmp_path, tls_broker.url, extra=collector_extra)
        ) as coll,
    ):
        extra = {"mqtt": tls_broker.mqtt_config("nyc-1")}
        config = agent_config(tmp_path, tls_broker.url, site.inventory, extra=extra)
        async with running_agent(config):
            await eventually(
                lambda: coll.ingest.stats.received["metrics"] >= len(site.devices),
                what="metrics received over TLS",
            )
            assert coll.ingest.stats.received["status"] >= 1
            assert coll.ingest.stats.connected == {"metrics": True, "events": True}
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})

            async def link_incident() -> bool:
                found = await coll.engine.queries.incidents(site="nyc", state="open")
                return any(i.key.device == "nyc-acc-1" and i.key.resource == "if:2" for i in found)

            await eventually(link_incident, what="link incident opened from a TLS event")
        assert coll.ingest.stats.received["events"] >= 1
        assert not coll.ingest.stats.rejected
    log = tls_broker.log()
    assert "u'collector'" in log and "u'nyc-1'" in log


# ---------------------------------------------------------------- refusals


@pytest.mark.servers
async def test_broker_refuses_foreign_certificates_wrong_passwords_and_plain_mqtt(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    good = {"username": "nyc-1", "password": tls_broker.passwords["nyc-1"]}
    await connect_once(tls_broker, tls_context=tls_broker.context("nyc-1"), **good)  # control

    foreign = make_pki(tmp_path / "foreign", server_names=["127.0.0.1"], clients=["nyc-1"])
    with pytest.raises(aiomqtt.MqttError):  # a client certificate our CA did not sign
        await connect_once(tls_broker, tls_context=tls_broker.context("nyc-1", pki=foreign), **good)
    assert "certificate verify failed" in tls_broker.log()

    no_cert = ssl.create_default_context(cafile=str(tls_broker.pki.ca_cert))
    with pytest.raises(aiomqtt.MqttError):  # no client certificate at all
        await connect_once(tls_broker, tls_context=no_cert, **good)
    assert "peer did not return a certificate" in tls_broker.log()

    with pytest.raises(aiomqtt.MqttError) as refused:  # the right certificate, a wrong password
        await connect_once(
            tls_broker, tls_context=tls_broker.context("nyc-1"), username="nyc-1", password="nope"
        )
    assert "not auth" in str(refused.value).lower()

    with pytest.raises(aiomqtt.MqttError) as refused:  # another agent's password
        await connect_once(
            tls_broker,
            tls_context=tls_broker.context("nyc-1"),
            username="nyc-1",
            password=tls_broker.passwords["collector"],
        )
    assert "not auth" in str(refused.value).lower()

    with pytest.raises(aiomqtt.MqttError):  # plain MQTT to the TLS listener
        await connect_once(tls_broker, **good)
    assert "wrong version number" in tls_broker.log()

    mistrusting = ssl.create_default_context(cafile=str(foreign.ca_cert))
    cert, key = tls_broker.pki.clients["nyc-1"]
    mistrusting.load_cert_chain(str(cert), str(key))
    with warnings.catch_warnings():
        # paho-mqtt does not close the socket of a failed client-side handshake; the
        # garbage collector does, with a ResourceWarning (an upstream wart, not ours)
        warnings.simplefilter("ignore", ResourceWarning)
        error = await refusal(tls_broker, tls_context=mistrusting, **good)
        await collect_unclosed_sockets()
    assert "certificate verify failed" in error, "the client refuses a broker it cannot verify"

    # after all that, the broker still serves good clients
    await connect_once(tls_broker, tls_context=tls_broker.context("nyc-1"), **good)


@pytest.mark.servers
async def test_agent_with_a_wrong_password_keeps_polling_spools_and_delivers_once_fixed(
    tmp_path: Path, tls_broker: TlsBroker
) -> None:
    async with simulated_site(tmp_path) as site, listener(tls_broker) as lst:
        extra = {"mqtt": tls_broker.mqtt_config("nyc-1", password="not-the-password")}
        config = agent_config(tmp_path, tls_broker.url, site.inventory, extra=extra)
        async with running_agent(config) as agent:
            devices = len(site.devices)
            await eventually(
                lambda: agent.stats.polls_ok >= 2 * devices and agent.stats.events == 0,
                what="two rounds of polls while refused",
            )
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
            await eventually(lambda: agent.stats.events >= 1, what="a link-down event spooled")
            await eventually(
                lambda: tls_broker.log().count("not authorised") >= 2,
                what="at least two refused logins",
            )
            publisher = agent.publisher
            assert not publisher.connected.is_set()
            assert publisher.stats.connects == 0 and publisher.stats.published == 0
            assert "not auth" in publisher.stats.last_error.lower()
            assert publisher.events.depth >= 1
            assert publisher.metrics.depth >= 2 * devices
            assert agent.health()["spool_depth"] == publisher.spool_depth
            last_metric = publisher.metrics.next_seq - 1
            last_event = publisher.events.next_seq - 1
        assert not lst.messages, "nothing got through with the wrong password"

        # the operator fixes the password file; the same spool is delivered in order
        tls_broker.password_file("nyc-1")
        async with running_agent(config):
            await lst.wait_for(
                lambda x: (
                    {m.seq for m in x.metrics()} >= set(range(1, last_metric + 1))
                    and {m.seq for m in x.events()} >= set(range(1, last_event + 1))
                ),
                timeout=30,
                what="everything spooled while refused",
            )
    assert ("nyc-acc-1", "link", "down") in {(e.device, e.kind, e.state) for e in lst.all_events()}
    statuses = lst.statuses()
    assert statuses[0].state == "online" and statuses[-1].state == "offline"


@pytest.mark.servers
async def test_agent_logs_a_refused_login_once_per_streak(
    tmp_path: Path, tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="enoc.agent.publisher")
    async with simulated_site(tmp_path) as site:
        extra = {"mqtt": tls_broker.mqtt_config("nyc-1", password="not-the-password")}
        config = agent_config(tmp_path, tls_broker.url, site.inventory, extra=extra)
        async with running_agent(config):
            await eventually(
                lambda: tls_broker.log().count("not authorised") >= 3,
                what="three refused logins",
            )
    refusals = [r for r in caplog.records if "broker" in r.getMessage()]
    assert refusals, "the refusal is logged"
    assert len(refusals) == 1, f"logged {len(refusals)} times for one streak of refusals"


def mismatched_tls(broker: TlsBroker, name: str, key_of: str) -> dict[str, Any]:
    """`name`'s MQTT settings with the private key of `key_of`: a botched certificate rotation."""
    config = broker.mqtt_config(name)
    config["tls"]["key_file"] = str(broker.pki.clients[key_of][1])
    return config


def tls_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("enoc") and r.levelno >= logging.WARNING
        if "key values mismatch" in r.getMessage().lower()
    ]


@pytest.mark.servers
async def test_agent_with_a_key_that_does_not_match_its_certificate_says_so(
    tmp_path: Path, tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with simulated_site(tmp_path) as site:
        extra = {"mqtt": mismatched_tls(tls_broker, "nyc-1", key_of="collector")}
        config = agent_config(tmp_path, tls_broker.url, site.inventory, extra=extra)
        async with running_agent(config) as agent:
            await eventually(
                lambda: agent.stats.polls_ok >= 2 * len(site.devices), what="two rounds of polls"
            )
            assert agent.publisher.stats.connects == 0
            assert tls_complaints(caplog), "the agent names the broken key while it spools"


@pytest.mark.servers
async def test_collector_with_a_key_that_does_not_match_its_certificate_says_so(
    tmp_path: Path, tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    extra = {"mqtt": mismatched_tls(tls_broker, "collector", key_of="nyc-1")}
    collector = Collector.from_file(collector_config(tmp_path, tls_broker.url, extra=extra))
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        await asyncio.wait_for(collector.ready.wait(), 20)
        await eventually(lambda: bool(tls_complaints(caplog)), timeout=5, what="a TLS complaint")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert not collector.ingest.stats.connected.get("metrics")


# ---------------------------------------------------------------- enoc.pki


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """A TLS handshake through memory buffers; returns the server side's connection."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    finished = {"client": False, "server": False}
    for _ in range(10):
        for name, side, out, peer in (
            ("client", client_side, c_out, s_in),
            ("server", server_side, s_out, c_in),
        ):
            try:
                side.do_handshake()
                finished[name] = True
            except ssl.SSLWantReadError:
                pass
            finally:
                if out.pending:
                    peer.write(out.read())
        if all(finished.values()):
            return server_side
    raise AssertionError("handshake did not finish")


def server_context(pki: Pki, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    if require_client_cert:
        context.load_verify_locations(cafile=str(pki.ca_cert))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: keep us honest
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def test_server_certificate_verifies_for_its_names_and_client_certificates_for_the_server(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path, server_names=["127.0.0.1", "localhost"], clients=["nyc-1"])
    for name in ("127.0.0.1", "localhost"):
        handshake(server_context(pki), client_context(pki.ca_cert), name)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(server_context(pki), client_context(pki.ca_cert), "127.0.0.2")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server_context(pki), client_context(pki.ca_cert), "broker.example.net")

    other = make_pki(tmp_path / "other", server_names=["127.0.0.1"], clients=[])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server_context(pki), client_context(other.ca_cert), "127.0.0.1")

    server = handshake(
        server_context(pki, require_client_cert=True),
        client_context(pki.ca_cert, pki.clients["nyc-1"]),
        "127.0.0.1",
    )
    peer = server.getpeercert()
    assert peer is not None and (("commonName", "nyc-1"),) in peer["subject"]

    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    client = x509.load_pem_x509_certificate(pki.clients["nyc-1"][0].read_bytes())
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nyc-1"


def test_private_keys_are_0600_and_a_second_run_reuses_the_ca_and_existing_certificates(
    tmp_path: Path,
) -> None:
    first = make_pki(tmp_path, server_names=["127.0.0.1"], clients=["nyc-1", "collector"])
    keys = [first.ca_key, first.server_key, *(key for _cert, key in first.clients.values())]
    assert all(key.stat().st_mode & 0o777 == 0o600 for key in keys)
    assert first.ca_cert.stat().st_mode & 0o077 != 0, "certificates are public"
    before = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, *first.clients["nyc-1"])}
    server_before = first.server_cert.read_bytes()

    second = make_pki(tmp_path, server_names=["127.0.0.1", "localhost"], clients=["nyc-1", "gva-1"])
    assert {p: p.read_bytes() for p in before} == before, "CA and nyc-1 untouched"
    assert second.server_cert.read_bytes() != server_before, "re-issued for the new name"
    assert set(second.clients) == {"nyc-1", "gva-1"}
    assert second.clients["gva-1"][1].stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(second.ca_cert.read_bytes())
    for cert_path in (second.server_cert, second.clients["gva-1"][0]):
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(ca)
    handshake(server_context(second), client_context(first.ca_cert), "localhost")

    third = make_pki(tmp_path, server_names=["localhost"], clients=["gva-1"])
    assert third.server_cert.read_bytes() == second.server_cert.read_bytes(), "names covered"


def test_half_a_ca_is_an_error_not_silently_replaced(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, server_names=["127.0.0.1"], clients=[])
    pki.ca_key.unlink()
    with pytest.raises(PkiError, match=r"ca\.key"):
        make_pki(tmp_path, server_names=["127.0.0.1"], clients=["nyc-1"])
    assert not (tmp_path / "clients").exists()
    with pytest.raises(ValueError, match="client name"):
        make_pki(tmp_path / "new", server_names=["127.0.0.1"], clients=["a/b"])


def test_rsa_keys_work_too(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, server_names=["127.0.0.1"], clients=["nyc-1"], key_type="rsa")
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    server = handshake(
        server_context(pki, require_client_cert=True),
        client_context(pki.ca_cert, pki.clients["nyc-1"]),
        "127.0.0.1",
    )
    assert server.getpeercert() is not None
