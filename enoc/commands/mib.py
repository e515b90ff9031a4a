"""`enoc mib compile DIR` and `enoc mib lookup NAME|OID`: the operator's MIBs.

`compile` runs pysmi over every MIB file in a folder (imports resolve to the folder's own
modules, then to the shipped ones and those compiled before into the same output) and
writes one JSON document of facts per module into the folder an agent config's `mibs:`
names. `lookup` answers a name or an OID from the shipped facts and that folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The packaged agent's working folder (deploy/systemd/enoc-agent.service); `mibs:` names it.
DEFAULT_OUT = Path("/var/lib/enoc-agent/mibs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mib_command", metavar="ACTION", required=True)
    compile_ = sub.add_parser(
        "compile", help="compile a folder of MIB files", description="compile MIB files"
    )
    compile_.add_argument("source", type=Path, metavar="DIR", help="folder of MIB files")
    compile_.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where the compiled facts go: the agent config's `mibs:` (default {DEFAULT_OUT})",
    )
    lookup = sub.add_parser(
        "lookup", help="what a MIB name or OID is", description="look a MIB name or OID up"
    )
    lookup.add_argument(
        "what", metavar="NAME|OID", help="ifOperStatus, IF-MIB::ifOperStatus.3, 1.3.6.1..."
    )
    lookup.add_argument(
        "--mibs",
        type=Path,
        action="append",
        default=[],
        help="a folder of compiled MIBs besides the shipped ones (repeatable; default "
        f"{DEFAULT_OUT} when it exists)",
    )


def run(args: argparse.Namespace) -> int:
    if args.mib_command == "compile":
        return _compile(args.source, args.out)
    return _lookup(args.what, args.mibs or ([DEFAULT_OUT] if DEFAULT_OUT.is_dir() else []))


def _compile(source: Path, out: Path) -> int:
    from enoc.mibs import MibIndex
    from enoc.mibs.compile import compile_folder

    if not source.is_dir():
        print(f"enoc mib compile: {source}: no such folder", file=sys.stderr)
        return 2
    try:
        known = MibIndex.load([out] if out.is_dir() else [])
        report = compile_folder(source, out, known=known, progress=print)
    except (OSError, ValueError) as exc:
        print(f"enoc mib compile: {exc}", file=sys.stderr)
        return 2
    for line in report.errors:
        print(f"enoc mib compile: {line}", file=sys.stderr)
    print(f"{len(report.compiled)} modules compiled into {out}, {len(report.errors)} failed")
    return 1 if report.errors else 0


def _lookup(what: str, dirs: list[Path]) -> int:
    from enoc.mibs import MibIndex, UnknownName

    try:
        mibs = MibIndex.load(dirs)
    except ValueError as exc:
        print(f"enoc mib lookup: {exc}", file=sys.stderr)
        return 2
    text = what.strip().lstrip(".")
    try:
        oid = mibs.oid(text)
    except UnknownName as exc:
        print(f"enoc mib lookup: {exc}", file=sys.stderr)
        return 1
    named = mibs.name(oid)
    if named is None:
        print(
            f"enoc mib lookup: no loaded MIB defines {text} or an object above it", file=sys.stderr
        )
        return 1
    obj = mibs.object(f"{named.module}::{named.name}")
    suffix = "." + ".".join(map(str, named.suffix)) if named.suffix else ""
    print(f"{obj.module}::{obj.name}{suffix}")
    print(f"  oid      {'.'.join(map(str, oid))}")
    print(f"  kind     {obj.kind}{f' ({obj.access})' if obj.access else ''}")
    if obj.syntax:
        base = f" ({obj.base})" if obj.base and obj.base != obj.syntax else ""
        print(f"  syntax   {obj.syntax}{base}")
    if obj.units:
        print(f"  units    {obj.units}")
    for title, values in (("enums", obj.enums), ("bits", obj.bits)):
        if values:
            listed = " ".join(f"{k}({v})" for k, v in sorted(values.items(), key=lambda kv: kv[1]))
            print(f"  {title:<8} {listed}")
    if obj.kind == "notification":
        notification = mibs.notification(obj.oid)
        if notification is not None:
            print(f"  objects  {', '.join(notification.objects) or '(none)'}")
            if notification.summary:
                print(f"  summary  {notification.summary}")
    if obj.kind in ("table", "row"):
        table = mibs.table(f"{obj.module}::{obj.name}")
        implied = " (the last IMPLIED)" if table.implied else ""
        print(f"  index    {', '.join(table.index) or '(none)'}{implied}")
        print(f"  columns  {', '.join(table.columns)}")
    return 0
