"""`enoc check-config FILE`: validate any enoc config; errors name file, line and key.

It runs the very function the program runs at its start (`ConfigKind.check_path`:
`check_agent` for `enoc agent`, `check_collector` for `enoc collector`,
`check_fleet` for `enoc sim --fleet`): included files read and checked, secrets
read, URLs, ports and TLS files checked, every mistake named in one pass. What
check-config passes, the program starts with; what it refuses, the program
refuses with the same lines.

Warnings (exit 0) name file, line and key too: weak SNMP security levels, an
MQTT login without password or TLS, and every secret written inline in the
file instead of read from a `KEY_file` or `${VAR}`; the secret itself is never
printed."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from enoc.config import KINDS, ConfigError, ConfigIssue, compose, to_python

# Modules whose import registers a config kind.
KIND_MODULES = ("agent.config", "collector.config", "enoc.inventory", "simulators.fleet_file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="an agent, collector, inventory or fleet file")
    parser.add_argument("--kind", help="the kind of file, when it cannot be guessed")


def run(args: argparse.Namespace) -> int:
    for module in KIND_MODULES:
        importlib.import_module(module)
    path: Path = args.file
    try:
        kind = args.kind or guess_kind(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if kind is None:
        print(
            f"{path}: cannot tell what kind of config this is (looked for agent_id, store/http/"
            "influxdb, sites, devices at the top level); say it with --kind "
            f"{{{','.join(KINDS)}}}",
            file=sys.stderr,
        )
        return 2
    if kind not in KINDS:
        print(f"--kind must be one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    checked = KINDS[kind].check_path(path)
    for issue in checked.report():
        print(issue, file=sys.stderr)
    if checked.errors or checked.value is None:
        return 1
    print(f"{path}: ok ({kind})")
    return 0


def guess_kind(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "", f"cannot read: {exc.strerror}")]) from None
    top = to_python(compose(text, str(path)))
    if not isinstance(top, dict):
        return None
    for name, spec in KINDS.items():
        if spec.detect(top):
            return name
    return None
