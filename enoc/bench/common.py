"""What the benchmarks share: the machine they ran on, progress on the terminal, a
process's peak memory, the simulator's control API and snmpbulkwalk, and where
each writes its results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

V3_ARGS = [
    "-v3",
    "-l",
    "authPriv",
    "-u",
    "enoc-sim",
    "-a",
    "SHA-256",
    "-A",
    "enoc-sim-auth-key",
    "-x",
    "AES",
    "-X",
    "enoc-sim-priv-key",
]
V2C_ARGS = ["-v2c", "-c", "public"]

R = TypeVar("R")


@dataclass
class FleetRun:
    """A bench's fleet, and the machine it ran on (every bench's result starts so)."""

    devices: int
    interfaces: int
    machine: dict[str, Any] = field(default_factory=dict, kw_only=True)


@dataclass
class PerCpuSecond:
    """A poller's or server's varbinds per CPU-second, the figure every peer table compares."""

    name: str
    varbinds: int
    cpu_s: float
    wall_s: float
    note: str = field(default="", kw_only=True)
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @property
    def per_cpu_s(self) -> float:
        return self.varbinds / self.cpu_s if self.cpu_s > 0 else 0.0


def add_per_cpu_s(rows: list[dict[str, Any]], measured: Sequence[PerCpuSecond]) -> None:
    """Each measured row's varbinds per CPU-second, into its JSON."""
    for row, one in zip(rows, measured, strict=True):
        row["varbinds_per_cpu_s"] = round(one.per_cpu_s)


def per_cpu_payload(result: Any, rows: str) -> dict[str, Any]:
    """A bench's `result` as JSON, each row of its list `rows` with its varbinds per
    CPU-second."""
    payload: dict[str, Any] = asdict(result)
    add_per_cpu_s(payload[rows], getattr(result, rows))
    return payload


def run_peer_bench(
    args: argparse.Namespace,
    bench: str,
    rows: str,
    measure: Callable[[argparse.Namespace], Coroutine[Any, Any, R]],
    print_table: Callable[[R], None],
) -> R:
    """Measure, print the table and write the JSON of a bench whose list `rows` holds the
    peers it compares per CPU-second."""
    result = asyncio.run(measure(args))
    print_table(result)
    write_result(args.results, bench, per_cpu_payload(result, rows))
    return result


def add_peer_arguments(parser: argparse.ArgumentParser, devices: int) -> None:
    """What a bench against a peer (net-snmp, the exporter) takes: the fleet's size, the
    SNMP versions and where its JSON goes."""
    add_size_arguments(parser, devices)
    add_version_argument(parser)
    add_results_argument(parser)


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """`--version`: the SNMP versions a peer bench measures (`snmp_versions`)."""
    parser.add_argument("--version", choices=("2c", "3", "both"), default="both")


def snmp_versions(args: argparse.Namespace) -> list[str]:
    return ["2c", "3"] if args.version == "both" else [args.version]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate `proc` and wait for it; kill it if it outlasts `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def progress(text: str) -> None:
    print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)


async def wait_for_fleet(
    sim: subprocess.Popen[bytes], control: int, port: int
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if sim.poll() is not None:
            error = sim.stderr.read().decode() if sim.stderr else ""
            raise RuntimeError(f"enoc sim exited: {error}")
        try:
            devices: list[dict[str, Any]] = await asyncio.to_thread(get_json, control, "/devices")
        except OSError:
            await asyncio.sleep(0.1)
            continue
        last = f"{devices[-1]['address']}:{port}"
        await snmpbulkwalk(last, V2C_ARGS, "1.3.6.1.2.1.1.5")
        return devices
    raise RuntimeError("the fleet did not start within 300 s")


def get_json(control: int, path: str) -> Any:
    url = f"http://127.0.0.1:{control}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def snmpbulkwalk(
    target: str, auth: list[str], root: str, max_repetitions: int = 25
) -> tuple[bytes, bool]:
    """One net-snmp walk, numeric OIDs and values only, no MIBs loaded: its output and
    whether it succeeded."""
    proc = await asyncio.create_subprocess_exec(
        *("/usr/bin/snmpbulkwalk", "-On", "-Oq", f"-Cr{max_repetitions}", "-t", "5", "-r", "1"),
        *auth,
        target,
        root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "MIBS": "", "SNMPCONFPATH": "/nonexistent"},
    )
    out, _ = await proc.communicate()
    return out, proc.returncode == 0


def peak_rss_mib(process: psutil.Process) -> float:
    """VmHWM (the peak resident set) from /proc, falling back to the current RSS."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(process.memory_info().rss / 2**20, 1)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
    }


def add_size_arguments(
    parser: argparse.ArgumentParser, devices: int, what: str = "simulated devices"
) -> None:
    """`--devices` and `--interfaces`: the fleet a bench measures."""
    parser.add_argument("--devices", type=int, default=devices, help=what)
    parser.add_argument("--interfaces", type=int, default=48, help="interfaces per device")


def add_results_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="where the JSON is written"
    )


def print_header(header: str) -> None:
    """A table's header line, underlined."""
    print(header)
    print("-" * len(header))


def result_stem(results: Path, bench: str) -> Path:
    """`results/bench-NAME-YYYYmmdd-HHMMSS`, the directory made: add the suffix."""
    results.mkdir(parents=True, exist_ok=True)
    return results / f"bench-{bench}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_result(results: Path, bench: str, payload: Any) -> Path:
    """Write a bench's JSON under `results` and say where."""
    path = result_stem(results, bench).with_suffix(".json")
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def agent_config(
    agent_id: str, site: str, mqtt_url: str, run_dir: Path, interval: float, **sections: Any
) -> dict[str, Any]:
    """An `enoc agent` config for a bench: its spool and inventory in `run_dir`, SNMP from
    loopback with one retry and a timeout well inside the interval; `sections` add
    top-level keys or replace them."""
    config: dict[str, Any] = {
        "agent_id": agent_id,
        "site": site,
        "mqtt": {"url": mqtt_url},
        "spool": {"path": str(run_dir / "spool")},
        "polling": {
            "interval": f"{interval:g}s",
            "timeout": f"{min(5.0, interval / 4):g}s",
            "retries": 1,
            "source": "127.0.0.1",
        },
        "inventory": str(run_dir / "devices.yaml"),
        "log": {"level": "warning"},
        # the benches measure polling; a bench of ping turns it on
        "ping": {"enabled": False},
    }
    config.update(sections)
    return config
