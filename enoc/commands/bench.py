"""`enoc bench ...`: the scale and peer benchmarks; each prints a table and writes JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from enoc.cli import add_subcommands

# name -> (module, help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "sim": ("enoc.bench.sim", "varbinds served per CPU-second by the simulator, beside snmpd"),
    "agent": (
        "enoc.bench.agent",
        "varbinds per CPU-second of the agent, beside the Prometheus SNMP exporter",
    ),
    "instructions": (
        "enoc.bench.instructions",
        "instructions (callgrind) a polled varbind costs the agent of each of several checkouts",
    ),
    "collector": (
        "enoc.bench.collector",
        "points per CPU-second from MQTT to the database, replica scaling, trap latency",
    ),
    "scale": (
        "enoc.bench.scale",
        "collector replicas on a NATS cluster: points/s and CPU at 1, 2, 4; drills' recovery",
    ),
    "console": (
        "enoc.bench.console",
        "console load time with a big fleet, and SSE fan-out to many browsers",
    ),
    "fleet": (
        "enoc.bench.fleet",
        "the whole system at fleet size: per-component cost, lag, incidents, peers, growth",
    ),
    "faults": (
        "enoc.bench.faults",
        "fault drills: break one thing, heal it, account for every point and event",
    ),
    "corpus": (
        "enoc.bench.corpus",
        "real devices' walks through the whole system: points written, refused, incidents",
    ),
    "encoding": (
        "enoc.bench.encoding",
        "bytes and agent + collector CPU per point of metrics messages, by samples per message",
    ),
    "fuzz": (
        "enoc.bench.fuzz",
        "hostile generated inputs to every surface: escapes, stopped lanes, memory, slowest",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(parser, "benchmark", BENCHMARKS, "_bench")


def run(args: argparse.Namespace) -> int:
    runner: Callable[[argparse.Namespace], int] = args._bench
    return runner(args)
