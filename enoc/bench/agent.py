"""`enoc bench agent`: varbinds per CPU-second of the agent, beside the Prometheus SNMP exporter.

Both poll the same simulated devices (one `enoc sim` process, whose CPU is
not counted) for the same objects: ifTable + ifXTable columns, the system
group, HOST-RESOURCES CPU and memory, BGP peers. The exporter (Debian's
`prometheus-snmp-exporter`, Go) is scraped for every device once, with
`--scrape-concurrency` scrapes at a time; its CPU-seconds come from
`psutil`. The enoc agent runs as `enoc agent` for `--intervals` poll
intervals, publishing to a real Mosquitto; its varbinds, polls and overruns
come from its own heartbeat, its CPU and peak memory from `psutil`. The agent
does more per varbind than the exporter (rates, edge state, the disk spool,
MQTT), so the ratio is conservative.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from enoc.bench.common import (
    FleetRun,
    PerCpuSecond,
    add_peer_arguments,
    agent_config,
    get_json,
    machine,
    peak_rss_mib,
    progress,
    run_peer_bench,
    snmp_versions,
    stop_process,
    wait_for_fleet,
)
from testbed.servers import Mosquitto, free_port

COLUMNS = {
    # The objects both pollers collect, as the exporter module lists them.
    "ifDescr": ("1.3.6.1.2.1.2.2.1.2", "DisplayString"),
    "ifSpeed": ("1.3.6.1.2.1.2.2.1.5", "gauge"),
    "ifAdminStatus": ("1.3.6.1.2.1.2.2.1.7", "gauge"),
    "ifOperStatus": ("1.3.6.1.2.1.2.2.1.8", "gauge"),
    "ifInOctets": ("1.3.6.1.2.1.2.2.1.10", "counter"),
    "ifInDiscards": ("1.3.6.1.2.1.2.2.1.13", "counter"),
    "ifInErrors": ("1.3.6.1.2.1.2.2.1.14", "counter"),
    "ifOutOctets": ("1.3.6.1.2.1.2.2.1.16", "counter"),
    "ifOutDiscards": ("1.3.6.1.2.1.2.2.1.19", "counter"),
    "ifOutErrors": ("1.3.6.1.2.1.2.2.1.20", "counter"),
    "ifName": ("1.3.6.1.2.1.31.1.1.1.1", "DisplayString"),
    "ifHCInOctets": ("1.3.6.1.2.1.31.1.1.1.6", "counter"),
    "ifHCOutOctets": ("1.3.6.1.2.1.31.1.1.1.10", "counter"),
    "ifHighSpeed": ("1.3.6.1.2.1.31.1.1.1.15", "gauge"),
    # OctetString: the exporter refuses a DisplayString that is not UTF-8, as real aliases can be.
    "ifAlias": ("1.3.6.1.2.1.31.1.1.1.18", "OctetString"),
    "ifCounterDiscontinuityTime": ("1.3.6.1.2.1.31.1.1.1.19", "gauge"),
    "hrProcessorLoad": ("1.3.6.1.2.1.25.3.3.1.2", "gauge"),
    "hrStorageType": ("1.3.6.1.2.1.25.2.3.1.2", "OctetString"),
    "hrStorageAllocationUnits": ("1.3.6.1.2.1.25.2.3.1.4", "gauge"),
    "hrStorageSize": ("1.3.6.1.2.1.25.2.3.1.5", "gauge"),
    "hrStorageUsed": ("1.3.6.1.2.1.25.2.3.1.6", "gauge"),
    "bgpPeerState": ("1.3.6.1.2.1.15.3.1.2", "gauge"),
    "bgpPeerAdminStatus": ("1.3.6.1.2.1.15.3.1.3", "gauge"),
    "bgpPeerRemoteAs": ("1.3.6.1.2.1.15.3.1.9", "gauge"),
    "bgpPeerInUpdates": ("1.3.6.1.2.1.15.3.1.10", "counter"),
    "bgpPeerOutUpdates": ("1.3.6.1.2.1.15.3.1.11", "counter"),
    "bgpPeerFsmEstablishedTime": ("1.3.6.1.2.1.15.3.1.16", "gauge"),
}
SCALARS = ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0"]
START_TIMEOUT_S = 120  # an agent that has not published its first heartbeat by then is stuck
V3 = {
    "username": "enoc-sim",
    "security_level": "authPriv",
    "password": "enoc-sim-auth-key",
    "auth_protocol": "SHA256",
    "priv_protocol": "AES",
    "priv_password": "enoc-sim-priv-key",
}


@dataclass
class Poller(PerCpuSecond):
    polls: int


@dataclass
class Result(FleetRun):
    interval_s: float
    pollers: list[Poller] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_peer_arguments(parser, 1000)
    parser.add_argument("--interval", type=float, default=60.0, help="agent poll interval, s")
    parser.add_argument("--intervals", type=int, default=2, help="intervals the agent runs")
    parser.add_argument("--scrape-concurrency", type=int, default=16)
    parser.add_argument("--batch-samples", type=int, default=1, help="samples per metrics message")
    parser.add_argument("--skip-exporter", action="store_true")
    parser.add_argument(
        "--discovery",
        choices=("on", "off"),
        default="on",
        help="the agent's capability discovery (discovery.enabled; on by default, as in the agent)",
    )


def run(args: argparse.Namespace) -> int:
    result = run_peer_bench(args, "agent", "pollers", measure, print_table)
    failed = [p for p in result.pollers if p.name.startswith("enoc") and p.extra.get("overruns")]
    return 1 if failed else 0


async def measure(args: argparse.Namespace) -> Result:
    result = Result(args.devices, args.interfaces, args.interval, machine=machine())
    versions = snmp_versions(args)
    with tempfile.TemporaryDirectory(prefix="enoc-bench-agent-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port("udp", "127.60.0.1")
        control = free_port("tcp")
        inventory = tmp / "devices.yaml"
        command = [
            sys.executable,
            "-m",
            "enoc.cli",
            "sim",
            *("--devices", str(args.devices), "--interfaces", str(args.interfaces)),
            *("--sites", "1", "--port", str(port), "--address-base", "127.60.0.1"),
            *("--control", f"127.0.0.1:{control}", "--inventory-out", str(inventory)),
            *("--log-level", "warning"),
        ]
        progress(f"starting {args.devices} simulated devices x {args.interfaces} interfaces...")
        sim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            devices = await wait_for_fleet(sim, control, port)
            targets = [f"{d['address']}:{port}" for d in devices]
            if not args.skip_exporter:
                for version in versions:
                    result.pollers.append(await exporter(tmp, targets, version, args))
            with Mosquitto(tmp / "mosquitto") as broker:
                for version in versions:
                    result.pollers.append(
                        await enoc_agent(tmp, inventory, broker.url, version, args, control)
                    )
        finally:
            stop_process(sim, 15)
    progress("")
    return result


# ------------------------------------------------------------------ the exporter


def exporter_config(version: str) -> dict[str, Any]:
    module: dict[str, Any] = {
        "walk": [oid for oid, _type in COLUMNS.values()],
        "get": SCALARS,
        "max_repetitions": 25,
        "retries": 1,
        "timeout": "5s",
        "metrics": [
            {
                "name": name,
                "oid": oid,
                "type": kind,
                "indexes": [
                    {
                        "labelname": "index",
                        "type": "InetAddressIPv4" if name.startswith("bgp") else "gauge",
                    }
                ],
            }
            for name, (oid, kind) in COLUMNS.items()
        ]
        + [
            {"name": f"scalar{i}", "oid": oid[:-2], "type": "DisplayString"}
            for i, oid in enumerate(SCALARS)
        ],
    }
    if version == "3":
        module.update(version=3, auth=V3)
    else:
        module.update(version=2, auth={"community": "public"})
    return {"enoc": module}


async def exporter(tmp: Path, targets: list[str], version: str, args: argparse.Namespace) -> Poller:
    config = tmp / f"snmp-v{version}.yml"
    config.write_text(yaml.safe_dump(exporter_config(version), sort_keys=False))
    http = free_port("tcp")
    log = (tmp / f"exporter-v{version}.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus-snmp-exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{http}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await asyncio.to_thread(
                    urllib.request.urlopen, f"http://127.0.0.1:{http}/", None, 2
                )
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = (tmp / f"exporter-v{version}.log").read_text()
                    raise RuntimeError(
                        f"prometheus-snmp-exporter did not start: {output}"
                    ) from None
                await asyncio.sleep(0.1)
        process = psutil.Process(proc.pid)
        # One warm-up scrape (config compilation, v3 discovery of one device).
        await asyncio.to_thread(scrape, http, targets[0])
        cpu0 = sum(process.cpu_times()[:2])
        started = time.monotonic()
        queue = list(targets)
        samples = 0
        failed = 0

        async def worker() -> None:
            nonlocal samples, failed
            while queue:
                target = queue.pop()
                count = await asyncio.to_thread(scrape, http, target)
                if count < 0:
                    failed += 1
                else:
                    samples += count
                progress(f"exporter v{version}: {len(targets) - len(queue)}/{len(targets)} devices")

        await asyncio.gather(*(worker() for _ in range(args.scrape_concurrency)))
        wall = time.monotonic() - started
        cpu = sum(process.cpu_times()[:2]) - cpu0
        return Poller(
            f"prometheus-snmp-exporter v{version}",
            samples,
            cpu,
            wall,
            len(targets),
            note=f"one scrape of every device, {args.scrape_concurrency} at a time",
            extra={"failed_scrapes": failed, "peak_rss_mib": peak_rss_mib(process)},
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(http: int, target: str) -> int:
    """Varbinds returned by the device in one scrape, or -1 when the scrape failed."""
    url = f"http://127.0.0.1:{http}/snmp?module=enoc&target={target}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            text = response.read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith("snmp_scrape_pdus_returned "):
            return int(float(line.split()[1]))  # varbinds the devices returned
    return -1


# ------------------------------------------------------------------ the enoc agent


async def enoc_agent(
    tmp: Path,
    inventory: Path,
    broker_url: str,
    version: str,
    args: argparse.Namespace,
    control: int,
) -> Poller:
    run_dir = tmp / f"agent-v{version}"
    run_dir.mkdir()
    data = yaml.safe_load(inventory.read_text())
    if version == "2c":
        data["credentials"] = {"sim": {"version": "2c", "community": "public"}}
    else:
        v3 = next(c for c in data["credentials"].values() if c.get("version") == "3")
        data["credentials"] = {"sim": v3}
    for device in data["devices"]:
        device["credentials"] = "sim"
    (run_dir / "devices.yaml").write_text(yaml.safe_dump(data))
    config = agent_config(
        f"bench-v{version}",
        "bench",
        broker_url,
        run_dir,
        args.interval,
        publishing={"heartbeat": "2s", "batch_samples": args.batch_samples},
        discovery={"enabled": args.discovery == "on"},
    )
    (run_dir / "agent.yaml").write_text(yaml.safe_dump(config))
    log = (run_dir / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enoc.cli", "agent", "--config", str(run_dir / "agent.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    health: list[tuple[float, float, dict[str, Any]]] = []
    try:
        process = psutil.Process(proc.pid)

        def beat(status: dict[str, Any]) -> None:
            health.append((time.monotonic(), sum(process.cpu_times()[:2]), status))

        listener = asyncio.create_task(
            heartbeats(broker_url, config["site"], config["agent_id"], beat)
        )

        # The window opens at the first heartbeat, not at the spawn: an agent's start (its
        # imports, the broker connection) is not polling, and on a loaded machine it alone
        # can outlast a short window. With discovery on it opens once every device was
        # discovered: first contact probes the whole fleet at once, which a day spreads
        # over the discovery interval (its varbinds are reported on their own).
        def started_up() -> bool:
            if not health:
                return False
            discovered = int(health[-1][2].get("discovered", 0))
            return bool(args.discovery == "off" or discovered >= args.devices)

        waited = time.monotonic()
        while not started_up():
            if proc.poll() is not None:
                raise RuntimeError(f"enoc agent exited: {(run_dir / 'agent.log').read_text()}")
            if time.monotonic() - waited > START_TIMEOUT_S:
                raise RuntimeError(
                    f"enoc agent did not start and discover in {START_TIMEOUT_S} s: "
                    f"{health[-1][2] if health else 'no heartbeat'}"
                )
            progress(f"enoc agent v{version}: starting")
            await asyncio.sleep(0.2)
        del health[:-1]  # the window's first heartbeat
        total = args.interval * args.intervals
        started = time.monotonic()
        while time.monotonic() - started < total + 3:
            if proc.poll() is not None:
                raise RuntimeError(f"enoc agent exited: {(run_dir / 'agent.log').read_text()}")
            polled = health[-1][2].get("polls_ok", 0) if health else 0
            progress(
                f"enoc agent v{version}: {polled:,} polls, "
                f"{total + 3 - (time.monotonic() - started):.0f} s left"
            )
            await asyncio.sleep(1)
        listener.cancel()
        peak = peak_rss_mib(process)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if len(health) < 2:
        raise RuntimeError("the agent published fewer than two heartbeats")
    first = health[0]
    last = health[-1]
    varbinds = int(last[2]["varbinds"]) - int(first[2]["varbinds"])
    polls = int(last[2]["polls_ok"]) - int(first[2]["polls_ok"])
    sim_stats = get_json(control, "/stats")
    return Poller(
        f"enoc agent v{version}",
        varbinds,
        last[1] - first[1],
        last[0] - first[0],
        polls,
        note=f"{args.intervals} intervals of {args.interval:g} s, publishing to Mosquitto, "
        f"discovery {args.discovery}",
        extra={
            "overruns": last[2]["overruns"],
            "deadline_exceeded": last[2]["deadline_exceeded"],
            "starved": last[2]["starved"],
            "polls_failed": last[2]["polls_failed"],
            "loop_lag_ms": last[2]["loop_lag_ms"],
            "spool_depth": last[2]["spool_depth"],
            "discovery": args.discovery,
            "discovery_varbinds": last[2].get("discovery_varbinds", 0),
            "peak_rss_mib": peak,
            "sim_requests": sim_stats.get("requests"),
            "devices_per_interval": round(polls / max(1.0, (last[0] - first[0]) / args.interval)),
        },
    )


async def heartbeats(
    broker_url: str, site: str, agent_id: str, on_beat: Callable[[dict[str, Any]], None]
) -> None:
    """`on_beat(health)` at every heartbeat the agent publishes, until cancelled. The
    agent's metrics and events are subscribed to as well (QoS 0, dropped here): a
    publish no one subscribes to is kept in the agent's spool and held back (MQTT 5's
    "No matching subscribers"), which is not the publishing the benchmark measures."""
    import aiomqtt

    from enoc.wire import StatusMessage, decode, topic

    host, port = broker_url.removeprefix("mqtt://").split(":")
    status = topic(site, agent_id, "status")
    while True:
        try:
            async with aiomqtt.Client(host, int(port)) as client:
                await client.subscribe(status, qos=1)
                for data in (topic(site, agent_id, "metrics"), topic(site, agent_id, "events")):
                    await client.subscribe(data, qos=0)
                async for message in client.messages:
                    if str(message.topic) != status:
                        continue
                    assert isinstance(message.payload, bytes)
                    decoded = decode(status, message.payload)
                    if isinstance(decoded, StatusMessage) and decoded.health:
                        on_beat(dict(decoded.health))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


def print_table(result: Result) -> None:
    print(f"machine: {result.machine['cpus']} CPUs, {result.machine['cpu_model']}")
    print(f"fleet: {result.devices} devices x {result.interfaces} interfaces (enoc sim)\n")
    peers = {p.name.rsplit(" ", 1)[-1]: p for p in result.pollers if p.name.startswith("prom")}
    header = (
        f"{'poller':34} {'varbinds':>10} {'CPU s':>8} {'wall s':>7} "
        f"{'varbinds/CPU-s':>15} {'vs exporter':>12}"
    )
    print(header)
    for p in result.pollers:
        peer = peers.get(p.name.rsplit(" ", 1)[-1])
        ratio = f"{p.per_cpu_s / peer.per_cpu_s:.2f}x" if peer and peer.per_cpu_s else "-"
        print(
            f"{p.name:34} {p.varbinds:>10,} {p.cpu_s:>8.2f} {p.wall_s:>7.1f} "
            f"{p.per_cpu_s:>15,.0f} {ratio:>12}"
        )
    for p in result.pollers:
        details = ", ".join(f"{k}={v}" for k, v in p.extra.items())
        print(f"  {p.name}: {p.note}; {details}")
