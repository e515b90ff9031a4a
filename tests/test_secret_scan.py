"""No secret in any log: a full run (simulator with SNMPv3 authPriv, agent and collector
processes at debug level, Mosquitto with passwords, VictoriaMetrics with a token, a
webhook with a token, API tokens, console logins right and wrong), then every log and the
audit file are searched for every configured secret."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from collectorkit import eventually
from simkit import free_udp_port, small_fleet

from collector.auth import hash_password
from enoc.localservers import Mosquitto, VictoriaMetrics, free_port
from enoc.snmp.usm import UsmUser
from simulators.inventory_out import write_inventory
from simulators.server import Simulator, TrapReceiver

pytestmark = pytest.mark.servers


def secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


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
    # Mosquitto with a password per client
    passwd = tmp_path / "mosquitto.passwd"
    passwd.touch()
    for user, key in (("nyc-1", "mqtt_agent"), ("collector", "mqtt_collector")):
        subprocess.run(
            ["/usr/bin/mosquitto_passwd", "-b", str(passwd), user, s[key]],
            check=True,
            capture_output=True,
        )
    files = {}
    for name in ("mqtt_agent", "mqtt_collector", "influx_token", "session_key"):
        files[name] = tmp_path / f"{name}.secret"
        files[name].write_text(s[name] + "\n")

    # a webhook receiver that checks the token it is sent
    hooks: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {s['webhook_token']}"
        hooks.append((await request.json())["change"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    # simulated devices that accept only our v3 user
    port = free_udp_port("127.43.0.1")
    devices = small_fleet(port=port, address_base="127.43.0.1")
    v3_user = UsmUser("scan", "SHA-256", s["snmp_auth"], "AES-128", s["snmp_priv"])
    for device in devices:
        device.users.clear()
        device.users[b"scan"] = v3_user
        device.communities = frozenset()
    trap_port = free_udp_port()
    sim = Simulator(devices, trap_receivers=[TrapReceiver("127.0.0.1", trap_port)])
    await sim.start()
    inventory = tmp_path / "devices.yaml"
    write_inventory(inventory, sim, devices)
    # the inventory holds the keys themselves; the agent config points at it
    assert s["snmp_auth"] in inventory.read_text()

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
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    with (
        Mosquitto(tmp_path / "mosquitto", password_file=passwd) as broker,
        VictoriaMetrics(tmp_path / "vm") as vm,
    ):
        collector_yaml = tmp_path / "collector.yaml"
        collector_yaml.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {
                        "url": broker.url,
                        "client_id": "enoc-collector",
                        "username": "collector",
                        "password_file": str(files["mqtt_collector"]),
                    },
                    "influxdb": {
                        "url": vm.url,
                        "api": "v2",
                        "org": "enoc",
                        "bucket": "enoc",
                        "token_file": str(files["influx_token"]),
                        "flush_interval": "0.2s",
                    },
                    "store": {"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
                    "http": {
                        "listen": f"127.0.0.1:{http_port}",
                        "users_file": str(users),
                        "session_key_file": str(files["session_key"]),
                        "audit_file": str(tmp_path / "audit.jsonl"),
                    },
                    "notifications": {
                        "webhooks": [
                            {
                                "url": f"http://127.0.0.1:{hook_port}/hook",
                                "token": s["webhook_token"],
                            }
                        ]
                    },
                    "incidents": {"sweep_interval": "0.5s"},
                    "log": {"level": "debug"},
                }
            )
        )
        agent_yaml = tmp_path / "agent.yaml"
        agent_yaml.write_text(
            yaml.safe_dump(
                {
                    "agent_id": "nyc-1",
                    "site": "nyc",
                    "rtc": "americas",
                    "mqtt": {
                        "url": broker.url,
                        "username": "nyc-1",
                        "password_file": str(files["mqtt_agent"]),
                        "keepalive": "5s",
                    },
                    "spool": {"path": str(tmp_path / "spool")},
                    "polling": {"interval": "1s", "timeout": "0.3s", "source": "127.0.0.1"},
                    "publishing": {"heartbeat": "1s"},
                    "traps": {"listen": f"127.0.0.1:{trap_port}", "communities": ["public"]},
                    "inventory": str(inventory),
                    "log": {"level": "debug"},
                }
            )
        )
        try:
            for name, config in (("collector", collector_yaml), ("agent", agent_yaml)):
                log = tmp_path / f"{name}.log"
                logs.append(log)
                with log.open("wb") as out:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "enoc.cli", name, "--config", str(config)],
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
            base = f"http://127.0.0.1:{http_port}"
            bearer = {"Authorization": f"Bearer {s['api_token']}"}
            async with aiohttp.ClientSession() as http:

                async def devices_up() -> bool:
                    try:
                        async with http.get(f"{base}/api/v1/devices", headers=bearer) as r:
                            listed = (await r.json())["devices"] if r.status == 200 else []
                    except aiohttp.ClientError:
                        return False
                    return len(listed) == len(devices) and all(d["state"] == "up" for d in listed)

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
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await sim.stop()
            await runner.cleanup()
        logs += [broker.log_path, broker.log_path.with_suffix(".out"), tmp_path / "audit.jsonl"]

    texts = {path.name: path.read_text(errors="replace") for path in logs if path.exists()}
    assert "collector.log" in texts and "agent.log" in texts and "audit.jsonl" in texts
    # the logs did capture the run: logins, actions, the agent's work
    assert "audit login_failed by ops1" in texts["collector.log"]
    assert "audit ack by ops1" in texts["collector.log"]
    assert "receiving traps" in texts["agent.log"]
    forms = {}
    for name, value in s.items():
        forms[name] = value
        forms[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()
    forms["mqtt basic"] = base64.b64encode(f"collector:{s['mqtt_collector']}".encode()).decode()
    leaks = [
        (form, file)
        for form, value in forms.items()
        for file, text in texts.items()
        if value in text
    ]
    assert leaks == [], f"secrets in logs: {leaks}"
    assert all(value not in metrics for value in s.values())
