"""`enoc collector --config FILE`: run the collector, its API and the console until
SIGTERM/SIGINT; SIGHUP reads the users file again."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from enoc.config import ConfigError
from enoc.lifecycle import StartError
from enoc.logs import setup_logging
from enoc.runtime import run as run_loop
from enoc.runtime import stop_event

log = logging.getLogger("enoc.collector")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="collector config (YAML)")


def run(args: argparse.Namespace) -> int:
    from collector.app import Collector

    try:
        collector = Collector.from_file(args.config)
    except ConfigError as exc:
        print(f"enoc collector: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(collector.config.log.format, collector.config.log.level)

    async def main() -> int:
        stop = stop_event(reload=collector.reload_users)  # SIGHUP: the users file
        try:
            # non-zero after a crash of a part whose policy is to exit: systemd restarts it
            return await collector.run(stop)
        except StartError as exc:  # port taken, store unreachable or too new, TLS files
            log.error("collector cannot start: %s", exc)  # noqa: TRY400
            return 1

    return run_loop(main)
