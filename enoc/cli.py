"""The `enoc` command line: one entry point, one sub-command per part of the system.

Sub-command modules are imported lazily so that `enoc sim` does not pay for the
collector's imports and a broken optional part cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# name -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("enoc.commands.demo", "run the whole system on this machine"),
    "sim": ("simulators.command", "serve a simulated SNMP device fleet"),
    "agent": ("agent.command", "run one site agent"),
    "collector": ("collector.command", "run the collector, its API and the console"),
    "check-config": ("enoc.commands.check_config", "validate an enoc config file"),
    "passwd": ("enoc.commands.passwd", "print a password hash for the users file"),
    "token": ("enoc.commands.token", "create, list and revoke the collector's API tokens"),
    "tail": ("enoc.commands.tail", "print decoded enoc MQTT messages"),
    "bench": ("enoc.commands.bench", "scale and peer benchmarks"),
    "mib": ("enoc.commands.mib", "compile MIB files and look names and OIDs up"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enoc", description=__doc__.splitlines()[0])
    from enoc import __version__

    parser.add_argument("--version", action="version", version=f"enoc {__version__}")
    add_subcommands(parser, "command", COMMANDS, "_run")
    return parser


def add_subcommands(
    parser: argparse.ArgumentParser, dest: str, table: dict[str, tuple[str, str]], runner: str
) -> None:
    """One sub-parser per entry of `table` (name -> (module, help)); each module has
    `add_arguments(parser)` and `run(args) -> int`, stored in the namespace as `runner`."""
    subparsers = parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)
    for name, (module_name, help_text) in table.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        run: Callable[[argparse.Namespace], int] = module.run
        sub.set_defaults(**{runner: run})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runner: Callable[[argparse.Namespace], int] = args._run
    try:
        return runner(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
