"""Generate the ENOC Grafana dashboards (JSON) for the DESIGN's InfluxDB schema.

    uv run python -m dashboards.build            # rewrite dashboards/json/*.json
    uv run python -m dashboards.build --check    # exit 1 if the committed JSON is stale

The shared panel, query and variable builders are in `dashboards.panels`; each dashboard is
its own module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.agents import agent_fleet
from dashboards.device import device_detail
from dashboards.events import events
from dashboards.panels import Json
from dashboards.site import site_detail
from dashboards.top import top_interfaces
from dashboards.wan import wan_overview

JSON_DIR = Path(__file__).resolve().parent / "json"

BUILDERS = (wan_overview, site_detail, device_detail, top_interfaces, agent_fleet, events)


def build() -> dict[str, Json]:
    """Every dashboard by file name."""
    out: dict[str, Json] = {}
    for builder in BUILDERS:
        dashboard = builder()
        out[f"{dashboard['uid']}.json"] = dashboard
    return out


def render(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="where the JSON files go")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    wanted = {name: render(d) for name, d in build().items()}
    stale = sorted(
        name
        for name, content in wanted.items()
        if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != content
    )
    extra = sorted(p.name for p in out.glob("*.json") if p.name not in wanted)
    if args.check:
        for name in stale:
            print(f"stale: {out / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated: {out / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(wanted[name], encoding="utf-8")
        print(f"wrote {out / name}")
    for name in extra:
        print(f"not generated (left alone): {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
