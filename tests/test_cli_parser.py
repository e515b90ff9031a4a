"""`enoc COMMAND`: the parser imports the named command's module only, so an agent or
collector process does not pay for every other command's imports (the simulator's, the
benchmarks', the test rigs'); without a command every module is imported, for --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from enoc.cli import COMMANDS, build_parser

PROBE = """
import sys
from enoc.cli import build_parser
build_parser({argv!r})
print(",".join(sorted(m for m in {modules!r} if m in sys.modules)))
"""


def imported(argv: list[str] | None) -> set[str]:
    """Which command modules building the parser for `argv` imports (in a fresh process)."""
    modules = sorted(module for module, _help in COMMANDS.values())
    code = PROBE.format(argv=argv, modules=modules)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(filter(None, out.strip().split(",")))


def test_a_command_imports_its_module_alone() -> None:
    assert imported(["agent", "--config", "x.yaml"]) == {"agent.command"}
    assert imported(["--version"]) == {module for module, _help in COMMANDS.values()}


def test_every_command_parses_its_own_arguments_and_is_listed_by_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser(["agent", "--config", "a.yaml"]).parse_args(["agent", "--config", "a.yaml"])
    assert args.command == "agent" and callable(args._run)
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)
