"""`enoc sim`: serve a simulated fleet, its control API, and its traps."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from enoc.config import ConfigError
from enoc.lifecycle import StartError, Supervisor
from enoc.logs import setup_logging
from enoc.runtime import parse_host_port, stop_event
from enoc.runtime import run as run_loop
from simulators.control import control_site
from simulators.fleet import (
    DeviceGroup,
    FleetSpec,
    SiteSpec,
    build_devices,
    default_fleet_spec,
    generated_fleet_spec,
)
from simulators.model import attach_views
from simulators.server import Simulator, TrapReceiver
from simulators.snmprec import device_name_for, recording_files

log = logging.getLogger("enoc.sim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("fleet (default: the RTC sites of the DESIGN)")
    source.add_argument("--fleet", type=Path, help="fleet file (YAML)")
    source.add_argument("--devices", type=int, help="generate N devices")
    source.add_argument(
        "--interfaces", type=int, default=48, help="interfaces per generated device"
    )
    source.add_argument(
        "--sites", type=int, default=10, help="sites to spread generated devices over"
    )
    source.add_argument(
        "--recording",
        type=Path,
        action="append",
        default=[],
        help="serve this snmpsim .snmprec recording, or every *.snmprec of this folder, each as "
        "its own device of site 'lab' named after its file, on its own address (repeatable; "
        "beside --fleet or --devices when given, else alone)",
    )
    source.add_argument(
        "--recording-counters",
        choices=("moving", "recorded"),
        help="moving (default): a recording's traffic counters advance at a steady share of "
        "the interface speed; recorded: every value as in the file",
    )
    parser.add_argument("--port", type=int, help="UDP port of every device (default 1161)")
    parser.add_argument("--address-base", help="first device address (default 127.16.0.1)")
    parser.add_argument("--max-message-size", type=int, help="largest SNMP message (default 1472)")
    parser.add_argument("--control", metavar="HOST:PORT", help="serve the fault-injection API")
    parser.add_argument(
        "--traps-to",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="trap receiver (repeatable)",
    )
    parser.add_argument("--trap-version", choices=("2c", "3"), help="trap version (default 2c)")
    parser.add_argument(
        "--sensors",
        action="store_true",
        help="generated devices serve ENTITY-SENSOR-MIB temperatures, fans and power supplies",
    )
    parser.add_argument("--inventory-out", type=Path, help="write the agent inventory here")
    parser.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt")
    parser.add_argument("--log-level", default="info")


def fleet_from_args(args: argparse.Namespace) -> FleetSpec:
    if args.fleet is not None and args.devices is not None:
        raise ValueError("give either --fleet FILE or --devices N, not both")
    if args.fleet is not None:
        from simulators.fleet_file import load_fleet

        spec = load_fleet(args.fleet)
    elif args.devices is not None:
        spec = generated_fleet_spec(args.devices, args.interfaces, args.sites)
    elif args.recording:  # recordings alone: the real devices, without the default fleet
        spec = FleetSpec(sites=[])
    else:
        spec = default_fleet_spec()
    changes: dict[str, Any] = {}
    if args.recording:
        recorded = recording_groups(args.recording)
        changes["sites"] = [*spec.sites, SiteSpec("lab", "lab", "Recordings", 0.0, recorded)]
    if args.recording_counters:
        changes["recording_counters"] = args.recording_counters
    if args.port is not None:
        changes["port"] = args.port
    if args.address_base:
        changes["address_base"] = args.address_base
    if args.max_message_size is not None:
        if not 484 <= args.max_message_size <= 65507:
            raise ValueError("--max-message-size must be from 484 to 65507")
        changes["max_message_size"] = args.max_message_size
    if args.traps_to:
        for target in args.traps_to:
            parse_host_port(target)
        changes["trap_receivers"] = [*spec.trap_receivers, *args.traps_to]
    if args.trap_version:
        changes["trap_version"] = args.trap_version
    if args.sensors:
        changes["sensors"] = True
    updated: FleetSpec = replace(spec, **changes)
    return updated


def recording_groups(paths: list[Path]) -> list[DeviceGroup]:
    """One device per recording file (a folder gives each of its `*.snmprec`), named after
    the file; a name taken twice gets a number."""
    groups: list[DeviceGroup] = []
    taken: set[str] = set()
    for path in paths:
        for file in recording_files(path):
            base = name = device_name_for(file)
            n = 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
            taken.add(name)
            groups.append(DeviceGroup(name=name, recording=str(file.resolve())))
    return groups


def parts(sim: Simulator, control: str | None) -> Supervisor:
    """The simulator's parts: the devices' sockets, then the control API that drives them."""
    supervisor = Supervisor("sim")
    # EXIT (each): no loop of their own; should one end, the simulator is broken
    supervisor.add(sim)
    if control:
        supervisor.add(control_site(sim, *parse_host_port(control)))
    return supervisor


async def serve(args: argparse.Namespace) -> int:
    started = time.monotonic()
    spec = fleet_from_args(args)
    devices = build_devices(spec, time.time())
    views = attach_views(devices)
    receivers = [TrapReceiver(*parse_host_port(t)) for t in spec.trap_receivers]
    sim = Simulator(devices, trap_receivers=receivers, trap_version=spec.trap_version)
    supervisor = parts(sim, args.control)
    stop = stop_event()
    try:
        await supervisor.start()
    except StartError as exc:
        print(f"enoc sim: {exc}", file=sys.stderr)
        return 2
    if args.inventory_out:
        from simulators.inventory_out import write_inventory

        write_inventory(args.inventory_out, sim, devices)
    rss = psutil.Process().memory_info().rss / 2**20
    interfaces = sum(len(d.interfaces) or d.recorded_interfaces for d in devices)
    first, last = devices[0].address, devices[-1].address
    log.info(
        "serving %d devices (%d interfaces, %d OID layouts) on %s..%s port %d "
        "in %.1f s, RSS %.0f MiB%s",
        len(devices),
        interfaces,
        views,
        first,
        last,
        spec.port,
        time.monotonic() - started,
        rss,
        f"; control API on http://{args.control}" if args.control else "",
    )
    code = await supervisor.run(stop)
    log.info("stopped: %s", sim.stats.as_dict())
    return code


def run(args: argparse.Namespace) -> int:
    try:
        setup_logging(args.log_format, args.log_level)
        return run_loop(lambda: serve(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"enoc sim: {exc}", file=sys.stderr)
        return 2
