"""Regenerate the shipped MIB facts (enoc/mibs/data) from a folder of MIB sources.

    python -m enoc.mibs.build_shipped /tmp/mibsrc

No MIB file is shipped: the sources are read elsewhere (docs/agent.md, "MIBs", says
where they came from) and only the facts pysmi compiles from them are kept here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .compile import compile_folder
from .index import DATA


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m enoc.mibs.build_shipped SOURCES_DIR", file=sys.stderr)
        return 2
    for old in DATA.glob("*.json"):
        old.unlink()
    report = compile_folder(Path(argv[0]), DATA, progress=print)
    for line in report.errors:
        print(line, file=sys.stderr)
    print(f"{len(report.compiled)} modules written to {DATA}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
