"""`enoc bench sim`: how fast the simulator serves, beside net-snmp's snmpd in the same run.

Walkers are net-snmp `snmpbulkwalk` processes (C, cheap), so the figure is
the *server's* CPU: varbinds served per CPU-second of the simulator process,
measured from its own counters and `psutil`, against snmpd walked the same way.
It also reports how long the fleet takes to start and its peak memory, and an
in-process comparison of the simulator's hand-written BER path with pyasn1.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from enoc.bench import common
from enoc.bench.common import (
    V2C_ARGS,
    V3_ARGS,
    FleetRun,
    PerCpuSecond,
    add_peer_arguments,
    machine,
    peak_rss_mib,
    progress,
    snmpbulkwalk,
)
from testbed.netsnmp import SnmpD
from testbed.servers import free_port

TABLES = ("1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1")  # ifTable and ifXTable


@dataclass
class Measured(PerCpuSecond):
    walks: int


@dataclass
class Result(FleetRun):
    walkers: int
    duration: float
    startup_s: float = 0.0
    peak_rss_mib: float = 0.0
    served: list[Measured] = field(default_factory=list)
    hot_path: dict[str, float] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_peer_arguments(parser, 2000)
    parser.add_argument("--walkers", type=int, default=4, help="concurrent snmpbulkwalk processes")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--max-repetitions", type=int, default=25)


def run(args: argparse.Namespace) -> int:
    common.run_peer_bench(args, "sim", "served", measure, print_table)
    return 0


async def measure(args: argparse.Namespace) -> Result:
    result = Result(args.devices, args.interfaces, args.walkers, args.duration, machine=machine())
    port = free_port("udp", "127.50.0.1")
    control = free_port("tcp")
    command = [
        sys.executable,
        "-m",
        "enoc.cli",
        "sim",
        "--devices",
        str(args.devices),
        "--interfaces",
        str(args.interfaces),
        "--sites",
        str(max(1, args.devices // 20)),
        "--port",
        str(port),
        "--address-base",
        "127.50.0.1",
        "--control",
        f"127.0.0.1:{control}",
        "--log-level",
        "warning",
    ]
    progress(f"starting a fleet of {args.devices} devices x {args.interfaces} interfaces...")
    started = time.monotonic()
    sim = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        devices = await common.wait_for_fleet(sim, control, port)
        result.startup_s = time.monotonic() - started
        process = psutil.Process(sim.pid)
        versions = common.snmp_versions(args)
        for version in versions:
            auth = V2C_ARGS if version == "2c" else V3_ARGS
            targets = [f"{d['address']}:{port}" for d in devices]
            result.served.append(
                await served_by(
                    f"enoc sim (v{version})",
                    process,
                    targets,
                    auth,
                    TABLES,
                    args,
                    counter=lambda: stats(control)["varbinds"],
                    note="ifTable + ifXTable of random devices",
                )
            )
        result.peak_rss_mib = peak_rss_mib(process)
    finally:
        common.stop_process(sim, 15)
    with tempfile.TemporaryDirectory() as tmp, SnmpD(Path(tmp)) as snmpd:
        assert snmpd.process is not None
        process = psutil.Process(snmpd.process.pid)
        result.served.append(
            await served_by(
                "net-snmp snmpd (v2c)",
                process,
                [f"127.0.0.1:{snmpd.port}"],
                V2C_ARGS,
                (".1",),
                args,
                counter=None,
                note="its whole MIB tree (~7,300 varbinds)",
            )
        )
    progress("measuring the hot path in process...")
    result.hot_path = hot_path()
    progress("")
    return result


def stats(control: int) -> dict[str, Any]:
    result: dict[str, Any] = common.get_json(control, "/stats")
    return result


async def served_by(
    name: str,
    process: psutil.Process,
    targets: list[str],
    auth: list[str],
    roots: tuple[str, ...],
    args: argparse.Namespace,
    *,
    counter: Any,
    note: str,
) -> Measured:
    rng = random.Random(42)
    walked = 0
    walks = 0
    before_count = counter() if counter else 0
    cpu = process.cpu_times()
    start = time.monotonic()
    stop_at = start + args.duration

    async def walker() -> None:
        nonlocal walked, walks
        while time.monotonic() < stop_at:
            target = rng.choice(targets)
            for root in roots:
                out, _ = await snmpbulkwalk(target, auth, root, args.max_repetitions)
                walked += out.count(b"\n")
            walks += 1

    async def report() -> None:
        while time.monotonic() < stop_at:
            progress(f"{name}: {walked:,} varbinds walked, {stop_at - time.monotonic():.0f} s left")
            await asyncio.sleep(0.5)

    await asyncio.gather(report(), *(walker() for _ in range(args.walkers)))
    wall = time.monotonic() - start
    after = process.cpu_times()
    cpu_s = (after.user - cpu.user) + (after.system - cpu.system)
    served = counter() - before_count if counter else walked
    return Measured(name, served, round(cpu_s, 3), round(wall, 2), walks, note=note)


def hot_path(rounds: int = 2000) -> dict[str, float]:
    """Varbinds per CPU-second: the simulator's GETBULK answer, and the same through pyasn1."""
    from pyasn1.codec.ber import encoder
    from pysnmp.proto import api

    from enoc.snmp import ber
    from enoc.snmp.message import encode_pdu
    from enoc.snmp.mib import IFX_ENTRY
    from simulators.engine import Engine
    from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
    from simulators.model import attach_views

    now = time.time()
    spec = FleetSpec(sites=[SiteSpec("b", "b", devices=[DeviceGroup("access-switch", 1, 48)])])
    device = build_devices(spec, now)[0]
    attach_views([device])
    engine = Engine()
    varbinds = ber.encode_varbind(ber.encode_oid((*IFX_ENTRY, 6)), ber.NULL_VALUE)
    request = ber.tlv(
        ber.SEQUENCE,
        ber.encode_integer(1)
        + ber.encode_octets(b"public")
        + encode_pdu(ber.GETBULK, 1, 0, 40, varbinds),
    )
    reply = engine.handle(device, request, now)
    assert reply is not None
    count = 40
    t0 = time.process_time()
    for _ in range(rounds):
        engine.handle(device, request, time.time())  # a new time: counters are computed afresh
    ours = count * rounds / (time.process_time() - t0)

    v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    values = [(f"1.3.6.1.2.1.31.1.1.1.6.{i + 1}", v2c.Counter64(10**12 + i)) for i in range(count)]
    t0 = time.process_time()
    for _ in range(rounds // 10):
        pdu = v2c.GetResponsePDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, values)
        message = v2c.Message()
        v2c.apiMessage.set_defaults(message)
        v2c.apiMessage.set_community(message, "public")
        v2c.apiMessage.set_pdu(message, pdu)
        encoder.encode(message)
    theirs = count * (rounds // 10) / (time.process_time() - t0)
    return {
        "enoc_varbinds_per_cpu_s": round(ours),
        "pyasn1_varbinds_per_cpu_s": round(theirs),
        "ratio": round(ours / theirs, 1),
    }


def print_table(result: Result) -> None:
    peer = next((m for m in result.served if m.name.startswith("net-snmp")), None)
    print(f"machine: {result.machine['cpus']} CPUs, {result.machine['cpu_model']}")
    print(
        f"fleet: {result.devices} devices x {result.interfaces} interfaces, started in "
        f"{result.startup_s:.1f} s, peak RSS {result.peak_rss_mib:.0f} MiB"
    )
    print(f"walkers: {result.walkers} concurrent snmpbulkwalk, {result.duration:.0f} s each\n")
    header = f"{'server':24} {'varbinds':>10} {'CPU s':>7} {'varbinds/CPU-s':>15} {'vs snmpd':>9}"
    print(f"{header}  what was walked")
    for m in result.served:
        ratio = f"{m.per_cpu_s / peer.per_cpu_s:.2f}x" if peer and peer.per_cpu_s else "-"
        figures = f"{m.varbinds:>10,} {m.cpu_s:>7.2f} {m.per_cpu_s:>15,.0f} {ratio:>9}"
        print(f"{m.name:24} {figures}  {m.note}")
    hot = result.hot_path
    ours, theirs = hot["enoc_varbinds_per_cpu_s"], hot["pyasn1_varbinds_per_cpu_s"]
    print(
        f"\nhot path in process (GETBULK answer of 40 varbinds): enoc {ours:,.0f} varbinds/CPU-s, "
        f"pyasn1 encoding alone {theirs:,.0f} ({hot['ratio']}x)"
    )
