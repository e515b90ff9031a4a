"""`enoc bench fleet`: the whole system at fleet size on this machine, beside its peers.

One `enoc sim` process serves the fleet; one `enoc agent` process per site
polls its devices (the agent has no worker processes: a site is its unit),
publishing to one real Mosquitto; one `enoc collector` process writes to one
real VictoriaMetrics through the InfluxDB v2 write API. Everything listens
on 127.0.0.0/8. After every agent's birth message, the run is measured for
`--duration` seconds:

- CPU-seconds of each component in that window and its peak memory (VmHWM),
  from `psutil` and /proc; the harness itself is not counted;
- varbinds/s, polls and poll overruns from the agents' own heartbeats;
- messages/s and the points the agents published, from a tap subscribed to
  every agent topic (a point is one line of line protocol: a device, an
  interface or a BGP peer at one poll, plus one per agent heartbeat; the
  collector adds one `incident` line per incident change);
- points/s written, from the collector's /metrics (`points_written`);
- end-to-end lag: the poll's own timestamp (taken when the poll *starts*,
  carried in the message and in the point) against (a) the moment the tap
  receives the message from the broker, for every message, and (b) the
  moment the point can be read back from VictoriaMetrics (`/api/v1/export`,
  asked every 0.5 s without forcing a flush), for `--lag-devices` sampled
  devices;
- incident latency: `--faults` link faults injected through the simulator's
  control API, whose linkDown/linkUp traps go to the first site's agent,
  timed until the incident opens and resolves on the collector's
  `/api/v1/stream` (the same code as `enoc bench collector`).

Warm-up (`--warmup`, none by default) runs before the window; the table
also gives each whole poll interval's CPU, because the database works much
harder while the fleet's series are new. After the window the agents are
stopped and the collector drains: every point published must be written,
none twice, and every device sample must be in the database.

Peers, in the same run against the same simulated devices, before the fleet
starts (the simulator otherwise idle): net-snmp `snmpbulkwalk` processes
(`--walkers` at a time) walking the same tables of every device, the
Prometheus SNMP exporter (Debian's, the module of `enoc bench agent`)
scraping every device once, and the enoc agent's own code polling every
device once (`Agent._poll`: SNMP, rates, edge state, encoding and the disk
spool, without MQTT), the second of two passes, the first having learnt each
device's max-repetitions as the agent does in its first interval.

Growth (`--growth 100,1000,5000`): the same fleet measurement, shorter
(`--growth-duration`, one interval by default, after `--growth-warmup`, one
interval by default) and without peers or faults,
at each size with the same number of devices per site; the figure is
CPU-milliseconds per device per poll interval, which stays flat when cost
grows linearly with the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from enoc.bench import plot
from enoc.bench.common import (
    add_results_argument,
    add_size_arguments,
    machine,
    per_cpu_payload,
    progress,
    result_stem,
)
from enoc.bench.fleet_peers import poll_once
from enoc.bench.fleet_results import (
    Result,
    growth_row,
    headline,
    panels,
    peer_ratios,
    print_table,
)
from enoc.bench.fleet_run import FleetRun


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_size_arguments(parser, 1000)
    parser.add_argument("--sites", type=int, default=10, help="sites (one agent process each)")
    parser.add_argument("--duration", type=float, default=240.0, help="measured seconds")
    parser.add_argument("--interval", type=float, default=60.0, help="agent poll interval, s")
    parser.add_argument(
        "--growth", default="", help="also measure at these fleet sizes, e.g. 100,1000,5000"
    )
    parser.add_argument(
        "--growth-duration", type=float, help="measured seconds per growth size (one interval)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds run before the measured window"
    )
    parser.add_argument(
        "--growth-warmup", type=float, help="seconds before each growth window (one interval)"
    )
    parser.add_argument("--skip-peers", action="store_true", help="no peer comparison")
    parser.add_argument("--snmp-version", choices=("2c", "3"), default="2c")
    parser.add_argument("--faults", type=int, default=5, help="link faults timed to incidents")
    parser.add_argument("--lag-devices", type=int, default=50, help="devices read back for lag")
    parser.add_argument("--walkers", type=int, default=4, help="concurrent snmpbulkwalk processes")
    parser.add_argument("--scrape-concurrency", type=int, default=16, help="exporter scrapes")
    add_results_argument(parser)
    parser.add_argument("--poll-once", type=Path, help=argparse.SUPPRESS)  # internal: the peer
    parser.add_argument("--poll-concurrency", type=int, default=64, help=argparse.SUPPRESS)


def growth_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if any(size < 1 for size in sizes):
        raise ValueError("sizes must be at least 1")
    return sizes


def run(args: argparse.Namespace) -> int:
    if args.poll_once is not None:
        return poll_once(args.poll_once, args.poll_concurrency)
    try:
        sizes = growth_sizes(args.growth)
    except ValueError:
        print(f"enoc bench fleet: --growth must be like 100,1000,5000; got {args.growth!r}")
        return 2
    if min(args.devices, args.sites, args.interfaces) < 1 or args.sites > args.devices:
        print("enoc bench fleet: --devices, --sites, --interfaces at least 1, sites <= devices")
        return 2
    if args.interval < 1 or args.duration <= 0:
        print("enoc bench fleet: --interval must be at least 1 s and --duration positive")
        return 2
    try:
        plot.require()
    except plot.PlotUnavailable as exc:
        print(f"enoc bench fleet: {exc}")
        return 2
    started = time.monotonic()
    result = asyncio.run(measure(args, sizes))
    result.runtime_s = round(time.monotonic() - started, 1)
    stem = result_stem(args.results, "fleet")
    png = stem.with_suffix(".png")
    plot.write(png, panels(result), title=headline(result))
    result.plot = str(png)
    print_table(result)
    payload = per_cpu_payload(result, "peers")
    payload["peer_ratios"] = peer_ratios(result.peers)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {stem.with_suffix('.json')} and {png}")
    fleet = result.fleet
    if fleet is None:
        return 1
    failed = (
        fleet.health.get("overruns", 0) > 0
        or fleet.accounting.get("points_lost", 0) > 0
        or (fleet.incidents is not None and fleet.incidents.get("missed", 0) > 0)
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m enoc.bench.fleet ...`, the same as `enoc bench fleet ...`."""
    parser = argparse.ArgumentParser(
        prog="enoc bench fleet",
        description="the whole system at fleet size on this machine, beside its peers",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


async def measure(args: argparse.Namespace, sizes: list[int]) -> Result:
    arguments = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if not k.startswith("_") and k not in ("poll_once", "poll_concurrency")
    }
    result = Result(machine(), arguments)
    with tempfile.TemporaryDirectory(prefix="enoc-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        main_run = FleetRun(
            args,
            tmp / "main",
            args.devices,
            args.sites,
            args.duration,
            warmup=args.warmup,
            peers=not args.skip_peers,
            faults=args.faults,
        )
        result.fleet, result.peers = await main_run.run()
        per_site = args.devices / args.sites
        window = args.growth_duration or args.interval
        warmup = args.interval if args.growth_warmup is None else args.growth_warmup
        for size in sizes:
            sites = max(1, min(size, round(size / per_site)))
            growth = FleetRun(
                args,
                tmp / f"growth-{size}",
                size,
                sites,
                window,
                warmup=warmup,
                peers=False,
                faults=0,
            )
            measured, _ = await growth.run()
            result.growth.append(growth_row(measured))
    progress("")
    return result


if __name__ == "__main__":
    sys.exit(main())
