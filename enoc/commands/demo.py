"""`enoc demo`: simulated RTC sites, an agent per site, embedded broker, collector, console."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enoc.runtime import parse_host_port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        default="127.0.0.1:8080",
        help="where the console listens (default 127.0.0.1:8080; port 0 picks a free one)",
    )
    parser.add_argument(
        "--influx-url",
        default="",
        help="also write metrics to this InfluxDB (e.g. http://127.0.0.1:8086)",
    )
    parser.add_argument(
        "--influx-api",
        choices=("v1", "v2"),
        default="v1",
        help="v1: /write into --influx-db (InfluxDB 1.x); v2: org/bucket with $INFLUX_TOKEN",
    )
    parser.add_argument("--influx-db", default="enoc", help="v1 database (default enoc)")
    parser.add_argument("--influx-org", default="enoc", help="v2 organisation")
    parser.add_argument("--influx-bucket", default="enoc", help="v2 bucket")
    parser.add_argument(
        "--quiet-fleet", action="store_true", help="no scripted faults: a calm network"
    )
    parser.add_argument(
        "--interval", type=float, default=10.0, help="agent poll interval in seconds (default 10)"
    )
    parser.add_argument(
        "--story-start", type=float, default=30.0, help="seconds before the first fault"
    )
    parser.add_argument(
        "--story-scale",
        type=float,
        default=1.0,
        help="play the story faster (0.1: ten times faster; for tests)",
    )
    parser.add_argument(
        "--recording",
        type=Path,
        action="append",
        default=[],
        help="also serve this snmprec walk, or every *.snmprec of this folder, as real "
        "devices of a 'lab' site (repeatable)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep configs, spools and the incident database here (default: a temporary "
        "directory removed on exit)",
    )


def run(args: argparse.Namespace) -> int:
    from enoc.demo import DemoOptions, main_sync

    host = args.http.rpartition(":")[0]
    if args.http.endswith(":0") and host:
        http = (host, 0)  # a free port, printed at start
    else:
        try:
            http = parse_host_port(args.http)
        except ValueError as exc:
            print(f"enoc demo: --http: {exc}", file=sys.stderr)
            return 2
    if args.story_scale <= 0 or args.story_start < 0:
        print("enoc demo: --story-scale must be > 0 and --story-start >= 0", file=sys.stderr)
        return 2
    if args.interval < 1:
        print("enoc demo: --interval must be at least 1 second", file=sys.stderr)
        return 2
    if args.recording:
        from simulators.command import recording_groups

        try:
            recording_groups(args.recording)
        except ValueError as exc:
            print(f"enoc demo: --recording: {exc}", file=sys.stderr)
            return 2
    options = DemoOptions(
        http=http,
        state_dir=args.state_dir,
        influx_url=args.influx_url,
        influx_api=args.influx_api,
        influx_database=args.influx_db,
        influx_org=args.influx_org,
        influx_bucket=args.influx_bucket,
        quiet_fleet=args.quiet_fleet,
        interval=args.interval,
        story_start=args.story_start,
        story_scale=args.story_scale,
        recordings=tuple(args.recording),
    )
    return main_sync(options)
