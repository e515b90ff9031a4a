"""The peers of `enoc bench fleet`, against the same simulated devices: net-snmp
`snmpbulkwalk`, the Prometheus SNMP exporter and the enoc agent's own poll code."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from enoc.bench.common import V2C_ARGS, V3_ARGS, agent_config, peak_rss_mib, progress, snmpbulkwalk
from enoc.bench.fleet_results import Peer, cpu_s, credentials

# The objects the agent polls, as snmpbulkwalk roots (it walks one root per process).
WALK_ROOTS = (
    "1.3.6.1.2.1.1",  # system group
    "1.3.6.1.2.1.2.2",  # ifTable
    "1.3.6.1.2.1.31.1.1",  # ifXTable
    "1.3.6.1.2.1.25.3.3.1.2",  # hrProcessorLoad
    "1.3.6.1.2.1.25.2.3",  # hrStorageTable
    "1.3.6.1.2.1.15.3",  # bgpPeerTable
)


async def measure_peers(
    args: argparse.Namespace,
    run_dir: Path,
    fleet: list[dict[str, Any]],
    port: int,
    inventory: dict[str, Any],
    sim: psutil.Process,
) -> list[Peer]:
    targets = [f"{d['address']}:{port}" for d in fleet]
    out = [await bulkwalk_peer(args, run_dir, targets, sim)]
    out.append(await exporter(args, run_dir, targets, sim))
    out.append(await enoc_once(args, run_dir, inventory, sim))
    return out


async def bulkwalk_peer(
    args: argparse.Namespace, run_dir: Path, targets: list[str], sim: psutil.Process
) -> Peer:
    version = args.snmp_version
    auth = V2C_ARGS if version == "2c" else V3_ARGS
    queue = list(reversed(targets))
    varbinds = walks = failed = 0

    async def walker() -> None:
        nonlocal varbinds, walks, failed
        while queue:
            target = queue.pop()
            for root in WALK_ROOTS:
                count, ok = await walk(target, auth, root)
                varbinds += count
                walks += 1
                failed += 0 if ok else 1
            done = len(targets) - len(queue)
            progress(f"peers: snmpbulkwalk v{version}, {done}/{len(targets)} devices")

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sim0 = cpu_s(sim)
    started = time.monotonic()
    await asyncio.gather(*(walker() for _ in range(args.walkers)))
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Peer(
        f"net-snmp snmpbulkwalk v{version}",
        varbinds,
        round(cpu, 3),
        round(wall, 2),
        len(targets),
        round(cpu_s(sim) - sim0, 3),
        note=f"{len(WALK_ROOTS)} tables a device, one process each, {args.walkers} at a time",
        extra={"walks": walks, "failed_walks": failed},
    )


async def exporter(
    args: argparse.Namespace, run_dir: Path, targets: list[str], sim: psutil.Process
) -> Peer:
    from enoc.bench.agent import exporter

    sim0 = cpu_s(sim)
    poller = await exporter(run_dir, targets, args.snmp_version, args)
    # the simulator's CPU includes the exporter's warm-up scrape of one device
    return Peer(
        poller.name,
        poller.varbinds,
        round(poller.cpu_s, 3),
        round(poller.wall_s, 2),
        len(targets),
        round(cpu_s(sim) - sim0, 3),
        note=f"one scrape of every device, {args.scrape_concurrency} at a time",
        extra=poller.extra,
    )


async def enoc_once(
    args: argparse.Namespace, run_dir: Path, inventory: dict[str, Any], sim: psutil.Process
) -> Peer:
    version = args.snmp_version
    once = run_dir / "once"
    once.mkdir()
    devices = [{**d, "credentials": "sim"} for d in inventory["devices"]]
    (once / "devices.yaml").write_text(
        yaml.safe_dump({"credentials": credentials(inventory, version), "devices": devices})
    )
    # never connected to a broker: the pass ends in the spool
    config = agent_config("bench-once", "bench", "mqtt://127.0.0.1:1", once, args.interval)
    (once / "agent.yaml").write_text(yaml.safe_dump(config))
    progress(f"peers: enoc agent v{version}, two passes over {len(devices)} devices")
    sim0 = cpu_s(sim)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "enoc.bench.fleet", "--poll-once", str(once / "agent.yaml")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the enoc poll pass failed: {err.decode(errors='replace')}")
    figures = json.loads(out.decode().strip().splitlines()[-1])
    return Peer(
        f"enoc agent v{version}",
        int(figures["varbinds"]),
        round(float(figures["cpu_s"]), 3),
        round(float(figures["wall_s"]), 2),
        len(devices),
        round(cpu_s(sim) - sim0, 3),  # both passes
        note="the agent's poll code (SNMP, rates, edge state, spool; no MQTT), "
        f"{figures['concurrency']} devices at a time, second pass",
        extra={
            "polls_ok": figures["polls_ok"],
            "polls_failed": figures["polls_failed"],
            "first_pass": figures["first_pass"],
            "peak_rss_mib": figures["peak_rss_mib"],
        },
    )


# ---------------------------------------------------------------- figures


async def walk(target: str, auth: list[str], root: str) -> tuple[int, bool]:
    """Varbinds one snmpbulkwalk returned (lines that start an OID), and whether it succeeded."""
    out, ok = await snmpbulkwalk(target, auth, root)
    count = 0
    for line in out.splitlines():
        if (
            line.startswith(b".1.")
            and b" No Such " not in line
            and b"No more variables" not in line
        ):
            count += 1
    return count, ok


def poll_once(config: Path, concurrency: int) -> int:
    """Poll every device of an agent config twice with the agent's own code; print JSON."""
    from enoc.runtime import run as run_loop

    figures: dict[str, Any] = {"concurrency": concurrency}

    async def passes() -> int:
        from agent.app import Agent

        agent = Agent(config)
        await agent.client.open(agent.config.polling.source)
        slots = asyncio.Semaphore(concurrency)
        names = list(agent.trackers)

        async def one(name: str) -> None:
            async with slots:
                await agent._poll(name, time.time())

        async def one_pass() -> dict[str, Any]:
            varbinds, ok = agent.stats.varbinds, agent.stats.polls_ok
            failed = sum(agent.stats.polls_failed.values())
            cpu, started = time.process_time(), time.monotonic()
            await asyncio.gather(*(one(name) for name in names))
            agent._flush()
            return {
                "varbinds": agent.stats.varbinds - varbinds,
                "cpu_s": round(time.process_time() - cpu, 3),
                "wall_s": round(time.monotonic() - started, 3),
                "polls_ok": agent.stats.polls_ok - ok,
                "polls_failed": sum(agent.stats.polls_failed.values()) - failed,
            }

        try:
            figures["first_pass"] = await one_pass()
            figures.update(await one_pass())
        finally:
            agent.client.close()
            await agent.publisher.close()
        return 0

    code = run_loop(passes)
    figures["peak_rss_mib"] = peak_rss_mib(psutil.Process())
    print(json.dumps(figures))
    return code
