"""`enoc bench fuzz`: generated hostile inputs against every surface that takes input.

Each surface gets `--inputs` inputs from a seeded generator (`--seed`): valid
messages, datagrams, requests and config files mutated in their structure
(deep nesting, integers beyond int64 and beyond a double, NUL, huge strings,
wrong types, cut bytes; enoc.bench.fuzz.mutate), and random bytes. In process:

- wire: metrics, events and status payloads through enoc.wire.decode and its
  validation (then the metrics lane's line protocol);
- fastpath: metrics payloads through collector._metricsjson, which must agree
  with the general path or leave the payload to it;
- incidents: events and status payloads that decode, on to the incident engine
  and its SQLite store (what the events lane does with them);
- snmp: the agent's SNMP client (enoc.snmp) polling a simulated device whose
  answers are mutated, over loopback UDP;
- traps: v1, v2c and v3 trap datagrams to the agent's receiver (agent/traps.py);
- config: random YAML to the config loader (agent and collector schemas);
- http: random requests to a real collector's API (SQLite store, loopback);
- control: random requests to the simulator's control API.

And live: payloads published through a real Mosquitto to a real `enoc collector`
process (SQLite store); after each batch a valid event from another agent must
open its incident and a valid metrics message must reach the device page, and
every message the contract refuses must have been counted and dead-lettered.

An input *escapes* when its handler neither accepts it nor refuses it with the
surface's documented error (WireError, SnmpError, a counted bad trap,
ConfigError, an HTTP 4xx). The report gives per surface: inputs, escapes (with a
reproducer of each kind), lanes stopped, memory growth (RSS after the first
tenth of the inputs to the end) and the slowest input; JSON goes to --results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from enoc.bench.common import add_results_argument, machine, print_header, progress, write_result

if TYPE_CHECKING:
    from enoc.bench.fuzz.surfaces import Surface

IN_PROCESS = ("wire", "fastpath", "incidents", "snmp", "traps", "config", "http", "control")
SURFACES = (*IN_PROCESS, "live")
REPRODUCERS = 5  # kept per kind of escape


@dataclass
class Escape:
    error: str  # what came out, e.g. "RecursionError: maximum recursion depth exceeded"
    count: int
    what: str  # the first input's description
    input_b64: str  # its first 4 KiB


@dataclass
class SurfaceResult:
    name: str
    inputs: int = 0
    escaped: int = 0
    stopped_lanes: int = 0
    wall_s: float = 0.0
    rss_start_mib: float = 0.0  # after the first tenth of the inputs (caches warm)
    rss_end_mib: float = 0.0
    memory_of: str = "bench process RSS"
    slowest_s: float = 0.0
    slowest: str = ""
    escapes: list[Escape] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # which lane, after which batch, why
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_growth_mib(self) -> float:
        return round(self.rss_end_mib - self.rss_start_mib, 1)

    def escape(self, error: str, item: Any) -> None:
        self.escaped += 1
        key = error.split(":", 1)[0] + ":" + error.split(":", 1)[-1][:60]
        for known in self.escapes:
            if known.error.split(":", 1)[0] + ":" + known.error.split(":", 1)[-1][:60] == key:
                known.count += 1
                return
        data: bytes = getattr(item, "data", b"")
        self.escapes.append(
            Escape(error, 1, str(item.what)[:300], base64.b64encode(data[:4096]).decode())
        )


@dataclass
class Result:
    inputs: int
    seed: int
    machine: dict[str, Any]
    surfaces: list[SurfaceResult] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", type=int, default=100_000, help="generated inputs per surface")
    parser.add_argument(
        "--surfaces",
        default=",".join(SURFACES),
        help=f"comma-separated, of: {', '.join(SURFACES)}",
    )
    parser.add_argument("--seed", type=int, default=1, help="the generators' seed")
    add_results_argument(parser)


def run(args: argparse.Namespace) -> int:
    names = [s.strip() for s in str(args.surfaces).split(",") if s.strip()]
    unknown = [n for n in names if n not in SURFACES]
    if unknown or not names:
        print(
            f"enoc bench fuzz: unknown surface {', '.join(unknown)}; known: {', '.join(SURFACES)}"
        )
        return 2
    if args.inputs < 1:
        print("enoc bench fuzz: --inputs must be at least 1")
        return 2
    result = asyncio.run(measure(names, args.inputs, args.seed))
    print_table(result)
    payload = asdict(result)
    for item, one in zip(payload["surfaces"], result.surfaces, strict=True):
        item["memory_growth_mib"] = one.memory_growth_mib
    payload["escaped"] = sum(s.escaped for s in result.surfaces)
    payload["stopped_lanes"] = sum(s.stopped_lanes for s in result.surfaces)
    write_result(args.results, "fuzz", payload)
    return 0


def rss_mib() -> float:
    gc.collect()
    return round(psutil.Process().memory_info().rss / 2**20, 1)


async def measure(names: list[str], inputs: int, seed: int) -> Result:
    result = Result(inputs, seed, machine())
    needs_broker = any(n in ("http", "live") for n in names)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enoc-bench-fuzz-")))
        mqtt_url = ""
        if needs_broker:
            from testbed.servers import Mosquitto

            progress("starting mosquitto...")
            broker = stack.enter_context(Mosquitto(tmp / "mosquitto").start())
            mqtt_url = broker.url
        for name in names:
            rng = random.Random(f"{seed}-{name}")
            if name == "live":
                from enoc.bench.fuzz.live import run_live

                result.surfaces.append(await run_live(tmp / "live", mqtt_url, inputs, rng))
            else:
                result.surfaces.append(await run_in_process(name, inputs, rng, mqtt_url))
    progress("")
    return result


async def run_in_process(
    name: str, inputs: int, rng: random.Random, mqtt_url: str = "", surface: Surface | None = None
) -> SurfaceResult:
    """`inputs` generated inputs through the surface called `name` (or `surface`)."""
    from enoc.bench.fuzz.surfaces import in_process  # on use: the CLI imports every bench

    out = SurfaceResult(name)
    surface = surface or in_process(name, rng, mqtt_url)
    # the handlers log the first bad input of each kind; the report counts them all
    logging.disable(logging.CRITICAL)
    await surface.open()
    warm = max(1, inputs // 10)
    started = last_shown = time.monotonic()
    try:
        for i in range(inputs):
            if i == warm:
                out.rss_start_mib = rss_mib()
            item = surface.generate(rng)
            t0 = time.perf_counter()
            escaped = await surface.feed(item)
            took = time.perf_counter() - t0
            out.inputs += 1
            if took > out.slowest_s:
                out.slowest_s, out.slowest = took, f"{item.what}"[:200]
            if escaped is not None:
                out.escape(escaped, item)
            now = time.monotonic()
            if now - last_shown > 1:
                last_shown = now
                progress(f"{name}: {i + 1:,}/{inputs:,} inputs, {out.escaped:,} escaped")
    finally:
        await surface.close()
        logging.disable(logging.NOTSET)
    out.rss_end_mib = rss_mib()
    if inputs <= warm:
        out.rss_start_mib = out.rss_end_mib
    out.wall_s = round(time.monotonic() - started, 1)
    out.slowest_s = round(out.slowest_s, 4)
    return out


def print_table(result: Result) -> None:
    print(f"\nenoc bench fuzz: {result.inputs:,} inputs per surface, seed {result.seed}\n")
    header = (
        f"{'surface':<10} {'inputs':>9} {'escaped':>8} {'lanes stopped':>14} "
        f"{'memory growth':>14} {'slowest input':>14}  wall"
    )
    print_header(header)
    for s in result.surfaces:
        print(
            f"{s.name:<10} {s.inputs:>9,} {s.escaped:>8,} {s.stopped_lanes:>14} "
            f"{s.memory_growth_mib:>+10.1f} MiB {s.slowest_s * 1000:>11.1f} ms  {s.wall_s:.0f} s"
        )
    for s in result.surfaces:
        for e in s.escapes:
            print(f"\n{s.name}: {e.count:,} x {e.error}\n  e.g. {e.what}")
        for stop in s.stopped:
            print(f"\n{s.name}: lane stopped: {stop}")
        if s.slowest:
            print(f"\n{s.name}: slowest input ({s.slowest_s * 1000:.1f} ms): {s.slowest}")
