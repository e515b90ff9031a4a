"""`enoc agent`: not built yet (see the open issues)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file")


def run(args: argparse.Namespace) -> int:
    print("enoc agent: not yet: this part lands with a later issue", file=sys.stderr)
    return 2
