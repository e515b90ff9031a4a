"""Every config the suite, the demo, the benches and deploy/ write, written into one directory.

Each comes from the code that writes it for real (tests/agentkit.py, tests/collectorkit.py,
enoc/demo.py, enoc/bench/*, deploy/), with the files it names (inventories, users files,
secrets, TLS files from enoc.pki), so that check-config and each program's start can be
held to the same verdict on all of them (tests/test_check_config_parity.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from agentkit import agent_config
from collectorkit import collector_config, users_file
from simkit import small_fleet

from enoc.pki import make_pki
from simulators.inventory_out import inventory, write_inventory
from simulators.server import Simulator

ROOT = Path(__file__).resolve().parent.parent
BROKER = "mqtt://127.0.0.1:1883"
VM = "http://127.0.0.1:8428"


@dataclass(frozen=True)
class Written:
    label: str  # where it comes from
    kind: str  # agent, collector, inventory or fleet
    path: Path


def suite_configs(tmp: Path, env: dict[str, str]) -> list[Written]:
    """Write them all under `tmp`; `env` receives the variables they expand."""
    out: list[Written] = []
    out += _tests_kits(tmp / "kits")
    out += _demo(tmp / "demo", env)
    out += _benches(tmp / "bench")
    out += deploy_configs(tmp / "deploy", env)
    out += _fleets(tmp / "fleet")
    return out


def _site_inventory(directory: Path) -> tuple[Path, dict[str, Any]]:
    """What `enoc sim --inventory-out` writes for tests/simkit.py's small fleet."""
    directory.mkdir(parents=True, exist_ok=True)
    devices = small_fleet(port=1161, address_base="127.41.0.1")
    sim = Simulator(devices)
    path = directory / "devices.yaml"
    write_inventory(path, sim, devices)
    return path, inventory(sim, devices)


def _tests_kits(tmp: Path) -> list[Written]:
    out = []
    inv, _ = _site_inventory(tmp / "site")
    out.append(Written("simkit inventory (sim --inventory-out)", "inventory", inv))
    for name, kwargs in {
        "plain": {},
        "traps": {"traps_port": 1162},
        "extra": {"interval": "2s", "extra": {"publishing": {"batch_samples": 4}}},
    }.items():
        directory = tmp / f"agent-{name}"
        directory.mkdir()
        path = agent_config(directory, BROKER, inv, **kwargs)  # type: ignore[arg-type]
        out.append(Written(f"agentkit.agent_config {name}", "agent", path))
    for name, kwargs in {
        "plain": {},
        "vm": {"vm": SimpleNamespace(url=VM)},
        "pg": {"store_url": "postgresql://enoc@127.0.0.1:5432/enoc"},
        "shared": {"extra": {"mqtt": {"shared_group": "g"}, "recent": {"source": "influxdb"}}},
    }.items():
        directory = tmp / f"collector-{name}"
        directory.mkdir()
        path = collector_config(directory, BROKER, **kwargs)  # type: ignore[arg-type]
        out.append(Written(f"collectorkit.collector_config {name}", "collector", path))
    return out


def _demo(tmp: Path, env: dict[str, str]) -> list[Written]:
    from enoc.demo import Demo, DemoOptions

    tmp.mkdir()
    demo = Demo(DemoOptions(password="demo-password-1234", say=lambda _text: None))
    _, full = _site_inventory(tmp / "fleet")
    out = [Written("demo collector", "collector", demo._collector_config(tmp, 1883))]
    demo.options = replace(demo.options, influx_url=VM, influx_api="v2")
    env["INFLUX_TOKEN"] = "demo-influx-token"  # the demo's user gives it this way
    v2 = tmp / "v2"
    v2.mkdir()
    out.append(Written("demo collector influx v2", "collector", demo._collector_config(v2, 1883)))
    for site in ("nyc", "bog"):
        path = demo._agent_config(tmp, site, "americas", full, 1883, 1162)
        out.append(Written(f"demo agent {site}", "agent", path))
        out.append(Written(f"demo inventory {site}", "inventory", tmp / f"{site}-devices.yaml"))
    return out


def _benches(tmp: Path) -> list[Written]:
    from enoc.bench import collector as bench_collector
    from enoc.bench import console
    from testbed.drills import Harness
    from testbed.drills_procs import Sizing

    tmp.mkdir()
    out = []
    users = users_file(tmp)
    path = bench_collector.collector_yaml(tmp, "collector", BROKER, VM, users, "enoc-collectors")
    out.append(Written("bench collector collector_yaml", "collector", path))
    (tmp / "console").mkdir()
    path = console.collector_config(tmp / "console", BROKER)
    out.append(Written("bench console collector_config", "collector", path))
    drill = tmp / "drill"
    drill.mkdir()
    _site_inventory(drill)
    (drill / "devices.yaml").rename(drill / "nyc-devices.yaml")
    rig: Any = SimpleNamespace(
        root=drill,
        sizing=Sizing(devices=10, sites=1, interfaces=8, interval=2.0),
        broker=SimpleNamespace(url=BROKER),
        vm=SimpleNamespace(url=VM),
        pg=None,
        pair=None,
        store_url="",
        will_grace=Harness.will_grace,
    )
    path = Harness._agent_config(rig, "nyc", "americas", "nyc-1", 1883, {"nyc": 1162}, drill / "s")
    out.append(Written("drillkit agent", "agent", path))
    out.append(Written("drillkit collector", "collector", Harness._collector_config(rig).config))
    return out


def deploy_configs(tmp: Path, env: dict[str, str]) -> list[Written]:
    """deploy/'s files with their paths moved under `tmp`, and the secrets and TLS files
    deploy/make-certs would put there."""
    secrets = tmp / "secrets"
    pki = make_pki(tmp / "pki", server_names=["127.0.0.1"], clients=["collector"])
    secrets.mkdir(parents=True)
    cert, key = pki.clients["collector"]
    for name, source in {"ca.pem": pki.ca_cert, "client.pem": cert, "client.key": key}.items():
        (secrets / name).write_bytes(source.read_bytes())
    for name in ("mqtt-password", "snmp-auth", "snmp-priv", "influx-token"):
        (secrets / name).write_text(f"{name}-0123456789\n")
    (secrets / "session-key").write_text("k" * 64 + "\n")
    users = users_file(tmp)
    (secrets / "users.yaml").write_text(users.read_text())
    env["CREDENTIALS_DIRECTORY"] = str(secrets)
    env.setdefault("ENOC_COLLECTOR_ID", "collector-1")
    deploy = ROOT / "deploy"
    devices = tmp / "devices.yaml"
    devices.write_text((deploy / "agent" / "devices.yaml").read_text())
    agent = tmp / "agent.yaml"
    agent.write_text(
        (deploy / "agent" / "agent.yaml")
        .read_text()
        .replace("/etc/enoc/devices.yaml", str(devices))
    )
    collector = tmp / "collector.yaml"
    collector.write_text(
        (deploy / "collector" / "collector.yaml")
        .read_text()
        .replace("/run/secrets/enoc/", f"{secrets}/")
    )
    k8s = tmp / "k8s-collector.yaml"
    for document in yaml.safe_load_all((deploy / "k8s" / "collector.yaml").read_text()):
        if document and document.get("kind") == "ConfigMap":
            text = document["data"]["collector.yaml"]
            k8s.write_text(text.replace("/run/secrets/enoc/", f"{secrets}/"))
    return [
        Written("deploy/agent/agent.yaml", "agent", agent),
        Written("deploy/agent/devices.yaml", "inventory", devices),
        Written("deploy/collector/collector.yaml", "collector", collector),
        Written("deploy/k8s/collector.yaml (ConfigMap)", "collector", k8s),
    ]


def _fleets(tmp: Path) -> list[Written]:
    """A fleet file as tests/test_sim_command.py writes one, with a recording."""
    import snmpsim

    recordings = tmp / "recordings"
    recordings.mkdir(parents=True)
    recorded = Path(snmpsim.__file__).parent / "data" / "recorded" / "linksys-system.snmprec"
    (recordings / "linksys.snmprec").write_bytes(recorded.read_bytes())
    path = tmp / "fleet.yaml"
    path.write_text(
        'snmp: [{version: "2c", community: public}]\n'
        'trap_receivers: ["127.0.0.1:10162"]\n'
        "sites:\n"
        "  - {name: nbo, rtc: africa, utc_offset: 3, devices: [{role: ce-router, count: 2},\n"
        "     {role: access-switch, count: 3, interfaces: 24},\n"
        "     {name: nbo-old-1, recording: recordings/linksys.snmprec}]}\n"
    )
    return [Written("fleet file with a recording", "fleet", path)]
