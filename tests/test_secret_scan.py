"""No secret in any log: full runs of the agent and the collector as processes at debug
level, then every log they and the servers they talk to wrote, the audit file, the
dead-letter file and the spool are searched for every configured secret.

- plain MQTT with passwords, SQLite, VictoriaMetrics with a v2 token, a webhook token,
  API tokens, console logins right and wrong;
- MQTT over TLS with client certificates (the private keys' PEM lines and numbers are
  searched for), PostgreSQL with a password in the store URL, InfluxDB 1.6 with
  authentication, SNMPv3 traps and polls with keys read from files, console sessions;
- the error paths, where secrets leak into exception texts: a wrong MQTT password for
  the agent and the collector, wrong SNMPv3 keys, a wrong PostgreSQL password, a
  PostgreSQL URL libpq cannot parse, InfluxDB answering 401, a webhook answering 401.

A secret counts as leaked when it shows up whole (as written, base64, hex,
percent-encoded or JSON-escaped) or as any 12-character piece of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from aiohttp import web
from collectorkit import TOKENS, collector_config, eventually, running_collector
from cryptography.hazmat.primitives import serialization
from simkit import free_udp_port, small_fleet
from test_collector_api import auth, events, publish
from yarl import URL

from collector.auth import hash_password
from collector.session import COOKIE
from enoc.config import parse_config
from enoc.logs import (
    get_logger,
    redact,
    register_url_secret,
    setup_logging,
    url_password,
)
from enoc.pki import Pki, load_private_key, make_pki
from enoc.snmp.usm import AUTH_PROTOCOLS, LocalizedUser, UsmUser, password_to_key
from simulators.inventory_out import inventory, write_inventory
from simulators.model import Device
from simulators.server import Simulator, TrapReceiver
from testbed.servers import (
    InfluxDB1,
    Mosquitto,
    PostgreSQL,
    TlsFiles,
    VictoriaMetrics,
    free_port,
    influxql_name,
    influxql_string,
)

pytestmark = pytest.mark.servers

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
FRAGMENT = 12  # a piece of a secret this long in a log is a leak too


def secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


# ---------------------------------------------------------------- what a leak looks like


def secret_forms(values: dict[str, str]) -> dict[str, str]:
    """Each secret as a log could show it: as written, base64, hex, percent-encoded and
    JSON-escaped."""
    forms: dict[str, str] = {}
    for name, value in values.items():
        forms[name] = value
        forms[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
        forms[f"{name} (hex)"] = value.encode().hex()
        for label, form in (
            ("percent-encoded", quote(value, safe="")),
            ("JSON-escaped", json.dumps(value)[1:-1]),
        ):
            if form != value:
                forms[f"{name} ({label})"] = form
    return forms


def fragments(values: dict[str, str]) -> dict[str, str]:
    """Every FRAGMENT-long piece of every secret (an error message quoting part of one)."""
    return {
        f"{name} [{i}:{i + FRAGMENT}]": value[i : i + FRAGMENT]
        for name, value in values.items()
        for i in range(len(value) - FRAGMENT + 1)
    }


def key_forms(name: str, pem: Path) -> dict[str, str]:
    """A private key as a log could show it: every base64 line of its PEM body, the whole
    body, its DER bytes in hex, its private number in hex and decimal."""
    lines = [line for line in pem.read_text().splitlines() if not line.startswith("-----")]
    forms = {f"{name} key PEM line {i}": line for i, line in enumerate(lines) if len(line) >= 16}
    forms[f"{name} key PEM body"] = "".join(lines)
    key = load_private_key(pem)
    numbers = key.private_numbers()
    number = numbers.private_value if hasattr(numbers, "private_value") else numbers.d
    forms[f"{name} key number (hex)"] = format(number, "x")
    forms[f"{name} key number"] = str(number)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    forms[f"{name} key DER (hex)"] = der.hex()
    return forms


def usm_key_forms(user: UsmUser, devices: list[Device]) -> dict[str, str]:
    """SNMPv3 keys as the agent computes them: Ku from each passphrase and the keys
    localized to each device's engine, in hex."""
    hash_name = AUTH_PROTOCOLS[user.auth_protocol][0]
    forms = {
        "snmp auth Ku": password_to_key(hash_name, user.auth_key.encode()).hex(),
        "snmp priv Ku": password_to_key(hash_name, user.priv_key.encode()).hex(),
    }
    for device in devices:
        keys = LocalizedUser.localize(user, device.engine_id)
        forms[f"snmp auth Kul {device.name}"] = keys.auth_key.hex()
        forms[f"snmp priv Kul {device.name}"] = keys.priv_key.hex()
    return forms


def read_texts(paths: list[Path]) -> dict[str, str]:
    """Every file named, and every file under a directory named, as text."""
    texts: dict[str, str] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                texts[str(file)] = file.read_bytes().decode("utf-8", "replace")
    return texts


def leaks(texts: dict[str, str], forms: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (form, Path(file).name)
        for form, value in forms.items()
        for file, text in texts.items()
        if value in text
    ]


def assert_no_leak(
    texts: dict[str, str], values: dict[str, str], extra: dict[str, str] | None = None
) -> None:
    found = leaks(texts, {**secret_forms(values), **fragments(values), **(extra or {})})
    assert found == [], f"secrets in logs: {found}"


# ---------------------------------------------------------------- processes and servers


class Processes:
    """`enoc agent|collector --config FILE` as child processes, each logging to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Path] = []

    def start(self, name: str, command: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
        path = self.directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = self.directory / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "enoc.cli", command, "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def processes(directory: Path) -> Iterator[Processes]:
    procs = Processes(directory)
    try:
        yield procs
    finally:
        procs.stop()


def password_db(path: Path, users: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True
        )
    return path


def secret_file(directory: Path, name: str, value: str) -> str:
    path = directory / f"{name}.secret"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@contextlib.asynccontextmanager
async def webhook(token: str, status: int = 204) -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver that checks the bearer token it is sent and answers `status`."""
    changes: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {token}"
        changes.append((await request.json())["change"])
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", changes
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def v3_site(
    address_base: str, auth: str, priv: str, *, trap_port: int, trap_version: str = "2c"
) -> AsyncIterator[tuple[Simulator, list[Device], UsmUser]]:
    """Simulated devices that accept only one v3 user, `scan`, with these keys."""
    port = free_udp_port(address_base)
    devices = small_fleet(port=port, address_base=address_base)
    user = UsmUser("scan", "SHA-256", auth, "AES-128", priv)
    for device in devices:
        device.users.clear()
        device.users[b"scan"] = user
        device.communities = frozenset()
    sim = Simulator(
        devices, trap_receivers=[TrapReceiver("127.0.0.1", trap_port)], trap_version=trap_version
    )
    await sim.start()
    try:
        yield sim, devices, user
    finally:
        await sim.close()


def file_inventory(
    path: Path, sim: Simulator, devices: list[Device], auth_file: str, priv_file: str
) -> Path:
    """The simulator's inventory with the v3 keys read from files, as deploy/ ships it."""
    data = inventory(sim, devices)
    data["credentials"] = {
        "scan": {
            "version": "3",
            "user": "scan",
            "auth_protocol": "SHA-256",
            "auth_key_file": auth_file,
            "priv_protocol": "AES-128",
            "priv_key_file": priv_file,
        }
    }
    for row in cast(list[dict[str, Any]], data["devices"]):
        row["credentials"] = "scan"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def agent_config(
    name: str,
    site: str,
    broker: str,
    mqtt: dict[str, Any],
    inventory: Path,
    directory: Path,
    *,
    trap_port: int | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "agent_id": name,
        "site": site,
        "rtc": "americas",
        "mqtt": {"url": broker, "keepalive": "5s", **mqtt},
        "spool": {"path": str(directory / f"{name}-spool")},
        "polling": {"interval": "1s", "timeout": "0.3s", "source": "127.0.0.1"},
        "publishing": {"heartbeat": "1s"},
        "inventory": str(inventory),
        "log": {"level": "debug"},
        # simulated devices live on this host's loopback, whose kernel answers their ping:
        # with ping, devices refusing the agent's credentials read as "SNMP agent silent"
        "ping": {"enabled": False},
    }
    if trap_port is not None:
        config["traps"] = {"listen": f"127.0.0.1:{trap_port}"}
    return config


def influx_users(influx: InfluxDB1, password: str) -> None:
    """The database `enoc` and a user `enoc` that may write to it, as an operator sets up
    InfluxDB 1.x for the collector."""
    influx.create_database("enoc")
    influx.query(f"CREATE USER {influxql_name('enoc')} WITH PASSWORD {influxql_string(password)}")
    influx.query(f"GRANT WRITE ON {influxql_name('enoc')} TO {influxql_name('enoc')}")


def influx_points(influx: InfluxDB1) -> int:
    result = influx.query("SELECT count(ifHCInOctets) FROM interface", db="enoc")
    series = result["results"][0].get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


async def api_ok(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    try:
        async with http.get(url, headers=headers) as r:
            return await r.json() if r.status == 200 else None
    except aiohttp.ClientError:
        return None


# ---------------------------------------------------------------- the redaction itself


def test_url_passwords_are_redacted_from_log_lines_registered_or_not() -> None:
    out = io.StringIO()
    setup_logging("logfmt", "info", out)
    try:
        log = get_logger("enoc.test")
        log.warning(
            "store failing",
            url="postgresql://enoc:unregistered-pw-1@db:5432/enoc?sslmode=require",
            other="http://u:p%40ss@127.0.0.1:8086/write",
            query="postgresql://db/enoc?user=enoc&password=query-pw-2&sslmode=require",
        )
        # libpq splits a login at the first unencoded @ and quotes the rest as a host:
        # registering the URL's password covers every piece of it
        register_url_secret("postgresql://enoc:p@piece-after-at-3@db/enoc")
        log.warning("cannot connect: failed to resolve host 'piece-after-at-3@db'")
        register_url_secret("postgresql://enoc:with%20space-4@db/enoc")
        log.warning('unexpected spaces found in "with%20space-4", and in "with space-4"')
    finally:
        setup_logging("logfmt", "warning", io.StringIO())
    text = out.getvalue()
    for secret_text in ("unregistered-pw-1", "p%40ss", "query-pw-2", "piece-after-at-3"):
        assert secret_text not in text
    assert "with%20space-4" not in text and "with space-4" not in text
    assert "postgresql://enoc:***@db:5432/enoc?sslmode=require" in text
    assert "password=***&sslmode=require" in text
    assert redact("http://127.0.0.1:8086") == "http://127.0.0.1:8086"
    assert url_password("mqtts://nyc%2Fnyc-1:pw@broker:8883") == "pw"
    assert url_password("postgresql://enoc@db/enoc") is None


def test_the_config_loader_registers_the_password_of_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.config import CollectorConfig

    password = secret("from-env")
    monkeypatch.setenv("ENOC_TEST_PG_PASSWORD", password)
    config = parse_config(
        'store: {url: "postgresql://enoc:${ENOC_TEST_PG_PASSWORD}@127.0.0.1/enoc"}\n',
        CollectorConfig,
    )
    assert password in config.store.url
    assert redact(f"error: {password[3:]} and {password}") == f"error: {password[3:]} and ***"


# ---------------------------------------------------------------- plain MQTT, SQLite, VM


async def test_no_configured_secret_reaches_a_log(tmp_path: Path) -> None:
    s = {
        "snmp_auth": secret("auth"),
        "snmp_priv": secret("priv"),
        "mqtt_agent": secret("mqttagent"),
        "mqtt_collector": secret("mqttcoll"),
        "influx_token": secret("influx"),
        "api_token": secret("apitoken"),
        "console_password": secret("console"),
        "wrong_password": secret("wrongpw"),
        "webhook_token": secret("hook"),
        "session_key": secrets.token_hex(32),
    }
    passwd = password_db(
        tmp_path / "mosquitto.passwd", {"nyc-1": s["mqtt_agent"], "collector": s["mqtt_collector"]}
    )
    files = {
        name: secret_file(tmp_path, name, s[name])
        for name in ("mqtt_agent", "mqtt_collector", "influx_token", "session_key")
    }
    trap_port = free_udp_port()
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "name": "ops1",
                        "role": "operator",
                        "token": s["api_token"],
                        "password_hash": hash_password(s["console_password"]),
                    }
                ]
            }
        )
    )
    http_port = free_port()
    metrics = ""
    async with (
        webhook(s["webhook_token"]) as (hook_url, hooks),
        v3_site("127.43.0.1", s["snmp_auth"], s["snmp_priv"], trap_port=trap_port) as (
            sim,
            devices,
            user,
        ),
    ):
        inventory_path = tmp_path / "devices.yaml"
        write_inventory(inventory_path, sim, devices)
        # the inventory holds the keys themselves; the agent config points at it
        assert s["snmp_auth"] in inventory_path.read_text()
        with (
            Mosquitto(tmp_path / "mosquitto", password_file=passwd) as broker,
            VictoriaMetrics(tmp_path / "vm") as vm,
            processes(tmp_path) as procs,
        ):
            procs.start(
                "collector",
                "collector",
                {
                    "mqtt": {
                        "url": broker.url,
                        "client_id": "enoc-collector",
                        "username": "collector",
                        "password_file": files["mqtt_collector"],
                    },
                    "influxdb": {
                        "url": vm.url,
                        "api": "v2",
                        "org": "enoc",
                        "bucket": "enoc",
                        "token_file": files["influx_token"],
                        "flush_interval": "0.2s",
                    },
                    "store": {"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
                    "http": {
                        "listen": f"127.0.0.1:{http_port}",
                        "users_file": str(users),
                        "session_key_file": files["session_key"],
                        "audit_file": str(tmp_path / "audit.jsonl"),
                    },
                    "notifications": {"webhooks": [{"url": hook_url, "token": s["webhook_token"]}]},
                    "incidents": {"sweep_interval": "0.5s"},
                    "log": {"level": "debug"},
                },
            )
            agent = agent_config(
                "nyc-1",
                "nyc",
                broker.url,
                {"username": "nyc-1", "password_file": files["mqtt_agent"]},
                inventory_path,
                tmp_path,
                trap_port=trap_port,
            )
            agent["traps"]["communities"] = ["public"]
            procs.start("agent", "agent", agent)
            base = f"http://127.0.0.1:{http_port}"
            bearer = {"Authorization": f"Bearer {s['api_token']}"}
            async with aiohttp.ClientSession() as http:

                async def devices_up() -> bool:
                    listed = await api_ok(http, f"{base}/api/v1/devices", bearer)
                    found = listed["devices"] if listed else []
                    return len(found) == len(devices) and all(d["state"] == "up" for d in found)

                await eventually(devices_up, what="devices polled over v3", timeout=60)
                sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
                await eventually(lambda: "opened" in hooks, what="webhook notified")
                async with http.get(f"{base}/api/v1/incidents", headers=bearer) as r:
                    (incident,) = (await r.json())["incidents"]
                async with http.post(
                    f"{base}/api/v1/incidents/{incident['id']}/ack", headers=bearer
                ) as r:
                    assert r.status == 200
                for password, status in ((s["wrong_password"], 401), (s["console_password"], 200)):
                    async with http.post(
                        f"{base}/login", json={"name": "ops1", "password": password}
                    ) as r:
                        assert r.status == status
                async with http.get(f"{base}/metrics", headers=bearer) as r:
                    metrics = await r.text()
                # a bad token is refused and not echoed into the log either
                async with http.get(
                    f"{base}/api/v1/incidents",
                    headers={"Authorization": "Bearer " + s["wrong_password"]},
                ) as r:
                    assert r.status == 401

            async def landed() -> bool:
                return bool(await asyncio.to_thread(vm.export))

            await eventually(landed, what="metrics in VictoriaMetrics (written with the token)")
            procs.stop()
        logs = [
            *procs.logs,
            broker.log_path,
            broker.log_path.with_suffix(".out"),
            vm.log_path.with_suffix(".out"),
            tmp_path / "audit.jsonl",
            tmp_path / "nyc-1-spool",
        ]
        usm = usm_key_forms(user, devices)

    texts = read_texts(logs)
    collector_log, agent_log = texts[str(procs.logs[0])], texts[str(procs.logs[1])]
    assert str(tmp_path / "audit.jsonl") in texts
    # the logs did capture the run: logins, actions, the agent's work
    assert "audit login_failed by ops1" in collector_log
    assert "audit ack by ops1" in collector_log
    assert "receiving traps" in agent_log
    extra = {
        **usm,
        "mqtt basic": base64.b64encode(f"collector:{s['mqtt_collector']}".encode()).decode(),
    }
    assert_no_leak(texts, s, extra)
    assert all(value not in metrics for value in s.values())


# ---------------------------------------------------------------- TLS, PostgreSQL, InfluxDB 1


def tls_mqtt(pki: Pki, name: str, username: str, password_file: str) -> dict[str, Any]:
    cert, key = pki.clients[name]
    return {
        "tls": {"ca_file": str(pki.ca_cert), "cert_file": str(cert), "key_file": str(key)},
        "username": username,
        "password_file": password_file,
    }


async def test_no_secret_reaches_a_log_over_tls_with_postgresql_influxdb1_and_the_console(
    tmp_path: Path,
) -> None:
    s = {
        "snmp_auth": secret("auth"),
        "snmp_priv": secret("priv"),
        "mqtt_agent": secret("mqttagent"),
        "mqtt_collector": secret("mqttcoll"),
        # URL-special characters: the store URL carries it percent-encoded
        "pg_password": secret("pg") + "/@:%?#&=+ ",
        "influx_admin": secret("influxadmin"),
        "influx_password": secret("influx") + "&=+'",
        "api_token": secret("apitoken"),
        "console_password": secret("console"),
        "wrong_password": secret("wrongpw"),
        "webhook_token": secret("hook"),
        "session_key": secrets.token_hex(32),
    }
    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=["nyc-1", "collector"])
    passwd = password_db(
        tmp_path / "mosquitto.passwd",
        {"nyc/nyc-1": s["mqtt_agent"], "collector": s["mqtt_collector"]},
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    files = {
        name: secret_file(secrets_dir, name, s[name])
        for name in (
            "snmp_auth",
            "snmp_priv",
            "mqtt_agent",
            "mqtt_collector",
            "influx_password",
            "webhook_token",
            "session_key",
        )
    }
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "name": "ops1",
                        "role": "operator",
                        "token": s["api_token"],
                        "password_hash": hash_password(s["console_password"]),
                    }
                ]
            }
        )
    )
    trap_port = free_udp_port()
    http_port = free_port()
    session: dict[str, str] = {}
    tls = TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    postgres = PostgreSQL(tmp_path / "postgres", password=s["pg_password"])
    try:
        async with (
            webhook(s["webhook_token"]) as (hook_url, hooks),
            v3_site(
                "127.44.0.1", s["snmp_auth"], s["snmp_priv"], trap_port=trap_port, trap_version="3"
            ) as (sim, devices, user),
        ):
            inventory_path = file_inventory(
                tmp_path / "devices.yaml", sim, devices, files["snmp_auth"], files["snmp_priv"]
            )
            assert s["snmp_auth"] not in inventory_path.read_text()
            with (
                Mosquitto(tmp_path / "mosquitto", tls=tls, password_file=passwd) as broker,
                InfluxDB1(
                    tmp_path / "influxdb", admin=("admin", s["influx_admin"]), log_requests=True
                ) as influx,
                processes(tmp_path) as procs,
            ):
                postgres.start()
                assert quote(s["pg_password"], safe="") in postgres.url
                influx_users(influx, s["influx_password"])
                procs.start(
                    "collector",
                    "collector",
                    {
                        "mqtt": {
                            "url": broker.url,
                            "client_id": "enoc-collector",
                            **tls_mqtt(pki, "collector", "collector", files["mqtt_collector"]),
                        },
                        "influxdb": {
                            "url": influx.url,
                            "api": "v1",
                            "database": "enoc",
                            "username": "enoc",
                            "password_file": files["influx_password"],
                            "flush_interval": "0.2s",
                        },
                        "store": {"url": postgres.url},
                        "http": {
                            "listen": f"127.0.0.1:{http_port}",
                            "users_file": str(users),
                            "session_key_file": files["session_key"],
                            "audit_file": str(tmp_path / "audit.jsonl"),
                        },
                        "notifications": {
                            "webhooks": [{"url": hook_url, "token_file": files["webhook_token"]}],
                            "dead_letter_file": str(tmp_path / "dead-letters.jsonl"),
                        },
                        "incidents": {"sweep_interval": "0.5s"},
                        "log": {"level": "debug", "format": "json"},
                    },
                )
                procs.start(
                    "agent",
                    "agent",
                    agent_config(
                        "nyc-1",
                        "nyc",
                        broker.url,
                        tls_mqtt(pki, "nyc-1", "nyc/nyc-1", files["mqtt_agent"]),
                        inventory_path,
                        tmp_path,
                        trap_port=trap_port,
                    ),
                )
                base = f"http://127.0.0.1:{http_port}"
                bearer = {"Authorization": f"Bearer {s['api_token']}"}
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as http:

                    async def devices_up() -> bool:
                        listed = await api_ok(http, f"{base}/api/v1/devices", bearer)
                        found = listed["devices"] if listed else []
                        return len(found) == len(devices) and all(d["state"] == "up" for d in found)

                    await eventually(devices_up, what="devices polled over v3 and TLS", timeout=60)
                    sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
                    await eventually(lambda: "opened" in hooks, what="a v3 trap, an incident")
                    async with http.get(f"{base}/api/v1/incidents", headers=bearer) as r:
                        (incident,) = (await r.json())["incidents"]
                    # the console: a wrong password, then a session that acts with its
                    # CSRF token and logs out
                    for password, status in (
                        (s["wrong_password"], 401),
                        (s["console_password"], 200),
                    ):
                        async with http.post(
                            f"{base}/login", json={"name": "ops1", "password": password}
                        ) as r:
                            assert r.status == status
                            if status == 200:
                                session["csrf"] = (await r.json())["csrf"]
                    session["cookie"] = jar.filter_cookies(URL(base))[COOKIE].value
                    csrf = {"X-CSRF-Token": session["csrf"]}
                    url = f"{base}/api/v1/incidents/{incident['id']}/ack"
                    async with http.post(url, headers=csrf) as r:
                        assert r.status == 200
                    comment = f"{base}/api/v1/incidents/{incident['id']}/comment"
                    async with http.post(comment, json={"text": "ticket 1"}, headers=bearer) as r:
                        assert r.status == 200
                    async with http.post(f"{base}/logout", headers=csrf) as r:
                        assert r.status == 200
                    sim.clear("nyc-acc-1")
                    await eventually(lambda: "resolved" in hooks, what="resolved, notified")
                    async with http.get(f"{base}/healthz", headers=bearer) as r:
                        health = await r.json()
                    assert health["store"]["ok"] and health["influxdb"]["ok"], health

                await eventually(
                    lambda: influx_points(influx) > 0,
                    what="points in InfluxDB 1.6, written with the password",
                )
                procs.stop()
            logs = [
                *procs.logs,
                broker.log_path,
                broker.log_path.with_suffix(".out"),
                influx.log_path.with_suffix(".out"),
                postgres.log_path.with_suffix(".out"),
                tmp_path / "audit.jsonl",
                tmp_path / "dead-letters.jsonl",
                tmp_path / "nyc-1-spool",
            ]
            usm = usm_key_forms(user, devices)
    finally:
        postgres.remove()

    texts = read_texts(logs)
    collector_log, agent_log = texts[str(procs.logs[0])], texts[str(procs.logs[1])]
    # the run did what it should, and the logs show it
    assert '"msg": "incident store ready"' in collector_log
    assert "audit login_failed by ops1" in collector_log
    assert "audit logout by ops1" in collector_log
    assert "receiving traps" in agent_log
    influx_log = texts[str(influx.log_path.with_suffix(".out"))]
    assert '"POST /write?db=enoc&precision=' in influx_log and "- enoc [" in influx_log
    assert "u'nyc/nyc-1'" in texts[str(broker.log_path)]
    extra = {
        **usm,
        **key_forms("agent", pki.clients["nyc-1"][1]),
        **key_forms("collector", pki.clients["collector"][1]),
        **key_forms("broker", pki.server_key),
        "influx basic": base64.b64encode(f"enoc:{s['influx_password']}".encode()).decode(),
    }
    assert_no_leak(texts, {**s, **session}, extra)


# ---------------------------------------------------------------- the error paths


async def test_no_secret_reaches_a_log_when_logins_fail(tmp_path: Path) -> None:
    s = {
        "snmp_auth": secret("auth"),
        "snmp_priv": secret("priv"),
        "snmp_auth_wrong": secret("authwrong"),
        "snmp_priv_wrong": secret("privwrong"),
        "mqtt_agent": secret("mqttagent"),
        "mqtt_agent_wrong": secret("mqttagentwrong"),
        "mqtt_collector": secret("mqttcoll"),
        "mqtt_collector_wrong": secret("mqttcollwrong"),
        "pg_password": secret("pg"),
        "pg_wrong": secret("pgwrong") + "/@:%?#&=+ ",
        # not a URL libpq can parse: an unencoded @ and a space; libpq quotes pieces of it
        "pg_malformed": f"mal@{secrets.token_hex(8)} x{secrets.token_hex(8)}",
        "influx_admin": secret("influxadmin"),
        "influx_password": secret("influx"),
        "influx_wrong": secret("influxwrong"),
        "vm_password": secret("vmpassword"),
        "influx_token_wrong": secret("influxtokenwrong"),
        "webhook_token": secret("hook"),
    }
    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=["nyc-1", "collector"])
    passwd = password_db(
        tmp_path / "mosquitto.passwd",
        {
            "nyc/nyc-1": s["mqtt_agent"],
            "nyc/nyc-2": s["mqtt_agent"],
            "collector": s["mqtt_collector"],
        },
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    files = {name: secret_file(secrets_dir, name, value) for name, value in s.items()}
    trap_port = free_udp_port()
    tls = TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    postgres = PostgreSQL(tmp_path / "postgres", password=s["pg_password"])
    try:
        async with (
            webhook(s["webhook_token"], status=401) as (hook_url, hooks),
            v3_site("127.45.0.1", s["snmp_auth"], s["snmp_priv"], trap_port=trap_port) as (
                sim,
                devices,
                user,
            ),
        ):
            good = file_inventory(
                tmp_path / "good.yaml", sim, devices, files["snmp_auth"], files["snmp_priv"]
            )
            bad = file_inventory(
                tmp_path / "bad.yaml",
                sim,
                devices,
                files["snmp_auth_wrong"],
                files["snmp_priv_wrong"],
            )
            with (
                Mosquitto(tmp_path / "mosquitto", tls=tls, password_file=passwd) as broker,
                InfluxDB1(
                    tmp_path / "influxdb", admin=("admin", s["influx_admin"]), log_requests=True
                ) as influx,
                VictoriaMetrics(tmp_path / "vm", http_auth=("enoc", s["vm_password"])) as vm,
                processes(tmp_path) as procs,
            ):
                postgres.start()
                influx_users(influx, s["influx_password"])

                def collector(
                    name: str, mqtt_password: str, store: str, **extra: Any
                ) -> dict[str, Any]:
                    return {
                        "mqtt": {
                            "url": broker.url,
                            "client_id": f"enoc-{name}",
                            **tls_mqtt(pki, "collector", "collector", files[mqtt_password]),
                        },
                        "store": {"url": store},
                        "http": {"listen": f"127.0.0.1:{free_port()}"},
                        "incidents": {"sweep_interval": "0.5s"},
                        "log": {"level": "debug"},
                        **extra,
                    }

                def sqlite(name: str) -> str:
                    return f"sqlite:///{tmp_path / name / 'incidents.db'}"

                # refused by PostgreSQL; a URL libpq cannot parse: both stop the collector
                wrong_pg = postgres.url_for("enoc", password=s["pg_wrong"])
                procs.start(
                    "collector-pg", "collector", collector("pg", "mqtt_collector", wrong_pg)
                )
                malformed = f"postgresql://enoc:{s['pg_malformed']}@127.0.0.1:{postgres.port}/enoc"
                procs.start(
                    "collector-pg-url", "collector", collector("pgurl", "mqtt_collector", malformed)
                )
                # refused by the broker
                procs.start(
                    "collector-mqtt",
                    "collector",
                    collector("mqtt", "mqtt_collector_wrong", sqlite("mqtt")),
                )
                # refused by InfluxDB (401) and by its webhook (401)
                procs.start(
                    "collector-influx",
                    "collector",
                    collector(
                        "influx",
                        "mqtt_collector",
                        sqlite("influx"),
                        influxdb={
                            "url": influx.url,
                            "api": "v1",
                            "database": "enoc",
                            "username": "enoc",
                            "password_file": files["influx_wrong"],
                            "flush_interval": "0.2s",
                        },
                        notifications={
                            "webhooks": [{"url": hook_url, "token_file": files["webhook_token"]}],
                            "retries": 0,
                            "dead_letter_file": str(tmp_path / "dead-letters.jsonl"),
                        },
                    ),
                )
                # a v2 token refused (401)
                procs.start(
                    "collector-v2",
                    "collector",
                    collector(
                        "v2",
                        "mqtt_collector",
                        sqlite("v2"),
                        influxdb={
                            "url": vm.url,
                            "api": "v2",
                            "org": "enoc",
                            "bucket": "enoc",
                            "token_file": files["influx_token_wrong"],
                            "flush_interval": "0.2s",
                        },
                    ),
                )
                # refused by the broker, and by the devices (wrong v3 keys)
                procs.start(
                    "agent-wrong",
                    "agent",
                    agent_config(
                        "nyc-1",
                        "nyc",
                        broker.url,
                        tls_mqtt(pki, "nyc-1", "nyc/nyc-1", files["mqtt_agent_wrong"]),
                        bad,
                        tmp_path,
                    ),
                )
                # the agent that gets through, and a trap for it with the wrong keys
                procs.start(
                    "agent-good",
                    "agent",
                    agent_config(
                        "nyc-2",
                        "nyc",
                        broker.url,
                        tls_mqtt(pki, "nyc-1", "nyc/nyc-2", files["mqtt_agent"]),
                        good,
                        tmp_path,
                        trap_port=trap_port,
                    ),
                )

                def logged(name: str, text: str) -> bool:
                    return text in procs.log(name)

                await eventually(
                    lambda: (
                        procs.procs["collector-pg"].poll() == 1
                        and procs.procs["collector-pg-url"].poll() == 1
                    ),
                    what="both collectors refused by their store",
                    timeout=30,
                )
                await eventually(
                    lambda: logged("collector-influx", "refused a batch for good"),
                    what="InfluxDB refusing the wrong password",
                    timeout=60,
                )
                await eventually(
                    lambda: logged("collector-v2", "refused a batch for good"),
                    what="the v2 write API refusing the wrong token",
                    timeout=60,
                )
                sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
                await eventually(lambda: bool(hooks), what="the webhook refusing", timeout=30)
                await eventually((tmp_path / "dead-letters.jsonl").exists, what="a dead letter")
                await eventually(
                    lambda: (
                        logged("agent-wrong", "is failing: [code:135] Not authorized")
                        and logged("agent-wrong", "reachability down")
                    ),
                    what="the agent refused by the broker and the devices",
                    timeout=30,
                )
                await eventually(
                    lambda: logged("collector-mqtt", "cannot reach broker"),
                    what="the collector refused by the broker",
                    timeout=30,
                )
                procs.stop()
                # nothing went through with a wrong password or token
                assert influx_points(influx) == 0
                assert vm.export() == []
            logs = [
                *procs.logs,
                broker.log_path,
                broker.log_path.with_suffix(".out"),
                influx.log_path.with_suffix(".out"),
                vm.log_path.with_suffix(".out"),
                postgres.log_path.with_suffix(".out"),
                tmp_path / "dead-letters.jsonl",
                tmp_path / "nyc-1-spool",
                tmp_path / "nyc-2-spool",
            ]
            usm = usm_key_forms(user, devices)
            wrong_usm = usm_key_forms(
                UsmUser("scan", "SHA-256", s["snmp_auth_wrong"], "AES-128", s["snmp_priv_wrong"]),
                devices,
            )
    finally:
        postgres.remove()

    texts = read_texts(logs)
    # each refusal is in its log: the error paths ran
    assert "password authentication failed" in procs.log("collector-pg")
    assert "cannot open the incident store" in procs.log("collector-pg-url")
    for name in ("collector-influx", "collector-v2"):
        assert "InfluxDB refused a batch for good" in procs.log(name)
        assert "for good (HTTP 401 (bad credentials)" in procs.log(name)
    assert "is failing: HTTP 401 from" in procs.log("collector-influx")  # the webhook
    assert "password authentication failed" in texts[str(postgres.log_path.with_suffix(".out"))]
    extra = {
        **usm,
        **{f"wrong {k}": v for k, v in wrong_usm.items()},
        **key_forms("agent", pki.clients["nyc-1"][1]),
        **key_forms("collector", pki.clients["collector"][1]),
        "influx basic": base64.b64encode(f"enoc:{s['influx_wrong']}".encode()).decode(),
    }
    values = dict(s)
    # the pieces libpq quotes of the malformed URL's password
    for i, piece in enumerate(s["pg_malformed"].split("@")):
        if len(piece) >= 8:
            values[f"pg_malformed piece {i}"] = piece
    assert_no_leak(texts, values, extra)


# ---------------------------------------------------------------- a login in a webhook URL


async def test_a_password_in_a_webhook_url_stays_out_of_dead_letters_metrics_and_logs(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    password = secret("hookpw")
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=401)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    dead = tmp_path / "dead-letters.jsonl"
    config = collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "notifications": {
                "webhooks": [{"url": f"http://hook:{password}@127.0.0.1:{port}/hook"}],
                "retries": 0,
                "dead_letter_file": str(dead),
            }
        },
    )
    out = io.StringIO()
    setup_logging("logfmt", "debug", out)
    try:
        async with running_collector(config) as collector:
            await publish(mosquitto.url, events(1, ("e1", "r1", "if:1", "down")))
            await eventually(dead.exists, what="the refused notification dead-lettered")
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"http://127.0.0.1:{collector.http_port}/metrics", headers=auth("viewer1")
                ) as r,
            ):
                metrics = await r.text()
    finally:
        setup_logging("logfmt", "warning", io.StringIO())
        await runner.cleanup()
    # the URL's credentials did reach the receiver: this is a working configuration
    assert seen == ["Basic " + base64.b64encode(f"hook:{password}".encode()).decode()]
    texts = {"log": out.getvalue(), "dead letters": dead.read_text(), "/metrics": metrics}
    assert "is failing" in texts["log"]
    assert_no_leak(texts, {"webhook_password": password})
    # named host:port/path, and the endpoint written without its login
    name = f"127.0.0.1:{port}/hook"
    (letter,) = [json.loads(line) for line in texts["dead letters"].splitlines()]
    assert letter["webhook"] == name and letter["url"] == f"http://127.0.0.1:{port}/hook"
    assert letter["reason"].startswith(f"HTTP 401 from http://127.0.0.1:{port}/hook")
    assert f'enoc_collector_notify_dead_lettered_total{{kind="{name}"}} 1' in metrics
    assert "//hook:" not in texts["dead letters"] + metrics, "nor the user name"


def test_a_webhooks_name_and_shown_endpoint_never_carry_its_login() -> None:
    from collector.config import CollectorConfig
    from collector.notify import webhook_name
    from enoc.config import ConfigError
    from enoc.logs import strip_login

    assert webhook_name("https://u:pw@hooks.example.net/enoc/") == "hooks.example.net:443/enoc"
    assert webhook_name("http://alertmanager:9093") == "alertmanager:9093"
    assert webhook_name("http://u:p@[::1]:8080/x") == "[::1]:8080/x"
    assert strip_login("http://u:p@w@127.0.0.1:81/a?b=1") == "http://127.0.0.1:81/a?b=1"
    assert strip_login("https://hooks.example.net/x") == "https://hooks.example.net/x"
    # and check-config's complaint about a webhook names it without the password
    password = secret("hookpw")
    text = (
        "notifications:\n  lease: 4s\n"
        f"  webhooks: [{{url: 'https://u:{password}@hooks.example.net/x', timeout: 5s}}]\n"
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, CollectorConfig)
    shown = "twice the timeout of json receiver https://u:***@hooks.example.net/x"
    assert shown in str(refused.value)
    assert password not in str(refused.value)


# ---------------------------------------------------------------- /healthz: ok or not to anyone


async def test_healthz_shows_no_secret_even_when_an_error_quotes_one(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An InfluxDB (a stand-in: no real one quotes a token) that refuses the collector's
    token and quotes it back, with a proxy URL and its password: /healthz says InfluxDB is
    down to anyone, and why to a logged-in viewer, with neither secret in it."""
    token = secret("influxtoken")
    proxy_password = secret("proxypw")  # in no config: only the URL's shape gives it away
    seen: list[str] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        message = (
            f"token {request.headers['Authorization'].removeprefix('Token ')} is not valid "
            f"here (through http://relay:{proxy_password}@127.0.0.1:3128/)"
        )
        return web.json_response({"code": "unauthorized", "message": message}, status=401)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token_file = tmp_path / "influx-token"
    config = collector_config(tmp_path, mosquitto.url)
    raw = yaml.safe_load(config.read_text())
    token_file.write_text(token + "\n")
    raw["influxdb"] = {
        "url": f"http://127.0.0.1:{port}",
        "api": "v2",
        "org": "enoc",
        "bucket": "enoc",
        "token_file": str(token_file),
        "flush_interval": "0.1s",
    }
    config.write_text(yaml.safe_dump(raw))
    try:
        async with running_collector(config) as collector:
            collector.sinks["influxdb"].write_nowait(b"device,device=d1 cpu=1 1\n", 1)
            collector.sinks["influxdb"].flush()
            await eventually(lambda: bool(seen), what="a write refused")
            await eventually(lambda: not collector.sinks["influxdb"].healthy, what="InfluxDB down")
            assert token in collector.sinks["influxdb"].stats.last_error, "the error quotes it"
            # the broker lanes' error goes the same way (planted: no real one quotes a secret)
            collector.ingest.stats.last_error = f"metrics: refused with {token}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{collector.http_port}/healthz") as anyone,
                http.get(
                    f"http://127.0.0.1:{collector.http_port}/healthz",
                    headers={"Authorization": f"Bearer {TOKENS['viewer1']}"},
                ) as r,
            ):
                anyone_says = anyone.status, await anyone.json()
                status, text = r.status, await r.text()
    finally:
        await runner.cleanup()
    assert seen == [f"Token {token}"]
    assert anyone_says == (503, {"ok": False}), "without a login: ok or not, no details"
    assert status == 503
    health = json.loads(text)
    assert not health["influxdb"]["ok"]
    assert health["influxdb"]["last_error"].startswith("HTTP 401 (bad credentials): token ***")
    assert "http://relay:***@127.0.0.1:3128/" in health["influxdb"]["last_error"]
    assert health["mqtt"]["last_error"] == "metrics: refused with ***"
    assert_no_leak({"/healthz": text}, {"token": token, "proxy_password": proxy_password})
