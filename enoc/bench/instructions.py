"""`enoc bench instructions`: the instructions a polled varbind costs the agent of each of
several checkouts, counted by valgrind's callgrind.

CPU-seconds on a shared 2-core machine spread by +-20 % between runs of the same code,
more than the 5 % a change is to be held to; instructions retired do not depend on what
else the machine is doing. One simulator and one Mosquitto (this checkout's) serve every
run; each checkout's own `enoc agent` (its `.venv`) runs under `valgrind
--tool=callgrind --instr-atstart=no`, so that its imports and start run uninstrumented.
After its first full round, instrumentation is switched on; the counters are zeroed at one
heartbeat and dumped at the first heartbeat `--window` intervals later, and the figure is
the instructions (Ir) of the agent's process between the two over the varbinds its
heartbeats counted in between. Runs alternate between the checkouts, `--pairs` times.
Capability discovery is off where a checkout has it (the older code does not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from enoc.bench.agent import heartbeats
from enoc.bench.common import (
    add_results_argument,
    add_size_arguments,
    agent_config,
    machine,
    progress,
    stop_process,
    wait_for_fleet,
    write_result,
)
from testbed.servers import Mosquitto, free_port

HEARTBEAT_TIMEOUT_S = 900  # an agent under callgrind runs about 50 times slower


@dataclass
class Run:
    checkout: str
    instructions: int
    varbinds: int
    polls: int
    polls_failed: int

    @property
    def per_varbind(self) -> float:
        return self.instructions / self.varbinds if self.varbinds else 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkouts",
        nargs="+",
        type=Path,
        help="checkouts to compare, each with its own .venv (git worktree add; uv sync)",
    )
    add_size_arguments(parser, 20)
    parser.set_defaults(interfaces=24)
    parser.add_argument("--interval", type=float, default=20.0, help="agent poll interval, s")
    parser.add_argument("--window", type=int, default=4, help="intervals counted a run")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each checkout")
    add_results_argument(parser)


def run(args: argparse.Namespace) -> int:
    missing = [c for c in args.checkouts if not (c / ".venv/bin/python").exists()]
    if missing:
        print(
            f"enoc bench instructions: no .venv in {', '.join(map(str, missing))}", file=sys.stderr
        )
        return 2
    runs = asyncio.run(measure(args))
    print_table(runs, args)
    write_result(
        args.results,
        "instructions",
        {
            "devices": args.devices,
            "interfaces": args.interfaces,
            "interval_s": args.interval,
            "window": args.window,
            "machine": machine(),
            "runs": [{**vars(r), "per_varbind": round(r.per_varbind)} for r in runs],
        },
    )
    return 0


async def measure(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="enoc-bench-instructions-") as name:
        tmp = Path(name)
        port = free_port("udp", "127.61.0.1")
        control = free_port("tcp")
        inventory = tmp / "devices.yaml"
        sim = subprocess.Popen(
            [
                *(sys.executable, "-m", "enoc.cli", "sim"),
                *("--devices", str(args.devices), "--interfaces", str(args.interfaces)),
                *("--sites", "1", "--port", str(port), "--address-base", "127.61.0.1"),
                *("--control", f"127.0.0.1:{control}", "--inventory-out", str(inventory)),
                *("--log-level", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await wait_for_fleet(sim, control, port)
            with Mosquitto(tmp / "mosquitto") as broker:
                for n in range(args.pairs * len(args.checkouts)):
                    checkout = args.checkouts[n % len(args.checkouts)].resolve()
                    runs.append(
                        await one_run(checkout, tmp / f"run{n}", inventory, broker.url, args)
                    )
        finally:
            stop_process(sim, 15)
    progress("")
    return runs


async def one_run(
    checkout: Path, run_dir: Path, inventory: Path, broker_url: str, args: argparse.Namespace
) -> Run:
    run_dir.mkdir()
    data = yaml.safe_load(inventory.read_text())
    data["credentials"] = {"sim": {"version": "2c", "community": "public"}}
    for device in data["devices"]:
        device["credentials"] = "sim"
    (run_dir / "devices.yaml").write_text(yaml.safe_dump(data))
    agent_id = f"instructions-{run_dir.name}"
    sections: dict[str, Any] = {"publishing": {"heartbeat": "2s"}}
    if (checkout / "agent" / "discovery.py").exists():
        sections["discovery"] = {"enabled": False}
    config = agent_config(agent_id, "bench", broker_url, run_dir, args.interval, **sections)
    # the agent is slow under callgrind, not the devices: (retries + 1) timeouts in 80 %
    config["polling"]["timeout"] = f"{args.interval * 0.4:g}s"
    (run_dir / "agent.yaml").write_text(yaml.safe_dump(config))
    beats: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    listener = asyncio.create_task(heartbeats(broker_url, "bench", agent_id, beats.put_nowait))
    log = (run_dir / "agent.log").open("wb")
    proc = subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={run_dir / 'callgrind.out'}",
            *(str(checkout / ".venv/bin/python"), "-m", "enoc.cli", "agent"),
            *("--config", str(run_dir / "agent.yaml")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=checkout,
    )
    log.close()
    pid = str(proc.pid)

    async def beat() -> dict[str, Any]:
        waited = time.monotonic()
        while time.monotonic() - waited < HEARTBEAT_TIMEOUT_S:
            if proc.poll() is not None:
                log_tail = (run_dir / "agent.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the agent exited: {log_tail}")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(beats.get(), 1)
        raise RuntimeError(f"no heartbeat from the agent in {HEARTBEAT_TIMEOUT_S} s")

    try:
        progress(f"{checkout.name}: starting under callgrind")
        while int((await beat()).get("polls_ok", 0)) < args.devices:
            pass
        callgrind_control("-i", "on", pid)
        await beat()  # instrumentation is on before the heartbeat that zeroes
        first = await beat()
        callgrind_control("-z", pid)
        started = time.monotonic()
        last = first
        while time.monotonic() - started < args.window * args.interval:
            last = await beat()
            progress(f"{checkout.name}: {int(last['polls_ok']) - int(first['polls_ok'])} polls")
        callgrind_control("-d", pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        listener.cancel()
    return Run(
        str(checkout),
        dumped_instructions(run_dir),
        int(last["varbinds"]) - int(first["varbinds"]),
        int(last["polls_ok"]) - int(first["polls_ok"]),
        int(last.get("polls_failed", 0)) - int(first.get("polls_failed", 0)),
    )


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=300)


def dumped_instructions(run_dir: Path) -> int:
    """The Ir total of the dump `callgrind_control -d` wrote (`callgrind.out.1`)."""
    dump = run_dir / "callgrind.out.1"
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary line")


def print_table(runs: list[Run], args: argparse.Namespace) -> None:
    print(
        f"fleet: {args.devices} devices x {args.interfaces} interfaces (enoc sim), v2c, "
        f"interval {args.interval:g} s, {args.window} intervals counted a run\n"
    )
    print(f"{'checkout':40} {'instructions':>15} {'varbinds':>9} {'Ir/varbind':>11}")
    for r in runs:
        print(f"{r.checkout:40} {r.instructions:>15,} {r.varbinds:>9,} {r.per_varbind:>11,.0f}")
    first = args.checkouts[0].resolve()
    base = statistics.median(r.per_varbind for r in runs if r.checkout == str(first))
    print(f"\nmedian Ir per varbind, and its ratio to {first}:")
    for checkout in dict.fromkeys(r.checkout for r in runs):
        median = statistics.median(r.per_varbind for r in runs if r.checkout == checkout)
        print(f"  {checkout:40} {median:>11,.0f}  {median / base:.3f}x")
