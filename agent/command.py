"""`enoc agent --config FILE`: run one site agent until SIGTERM/SIGINT; SIGHUP reloads."""

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

log = logging.getLogger("enoc.agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="agent config (YAML)")


def run(args: argparse.Namespace) -> int:
    from agent.app import Agent
    from agent.spool import SpoolError

    try:
        agent = Agent(args.config)
    except ConfigError as exc:
        print(f"enoc agent: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        print(f"enoc agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(agent.config.log.format, agent.config.log.level)

    async def main() -> int:
        stop = stop_event(reload=agent.reload)
        try:
            # non-zero after a crash of a part whose policy is to exit: systemd restarts it
            return await agent.run(stop)
        except StartError as exc:  # e.g. the trap port is taken or needs privileges
            log.error("agent cannot start: %s", exc)  # noqa: TRY400
            return 1

    return run_loop(main)
