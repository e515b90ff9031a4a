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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the arguments, only the named command's module is
    imported (an `enoc agent` process does not pay for every other command's imports)."""
    parser = argparse.ArgumentParser(prog="enoc", description=__doc__.splitlines()[0])
    from enoc import __version__

    parser.add_argument("--version", action="version", version=f"enoc {__version__}")
    add_subcommands(parser, "command", COMMANDS, "_run", only=_named(argv, COMMANDS))
    return parser


def _named(argv: Sequence[str] | None, table: dict[str, tuple[str, str]]) -> str | None:
    """The command the arguments name (their first word), None when they name none."""
    first = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    return first if first in table else None


def add_subcommands(
    parser: argparse.ArgumentParser,
    dest: str,
    table: dict[str, tuple[str, str]],
    runner: str,
    only: str | None = None,
) -> None:
    """One sub-parser per entry of `table` (name -> (module, help)); each module has
    `add_arguments(parser)` and `run(args) -> int`, stored in the namespace as `runner`.
    With `only`, that entry's module alone is imported (the others' sub-parsers are
    bare: the arguments choose `only`)."""
    subparsers = parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)
    for name, (module_name, help_text) in table.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        run: Callable[[argparse.Namespace], int] = module.run
        sub.set_defaults(**{runner: run})


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    runner: Callable[[argparse.Namespace], int] = args._run
    try:
        return runner(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
