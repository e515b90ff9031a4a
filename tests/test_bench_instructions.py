"""`enoc bench instructions` at tiny size on this checkout: callgrind counts the agent's
instructions between two heartbeats, and the figure is those over the varbinds polled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchkit import bench_processes

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_bench_instructions_counts_the_agents_instructions_per_varbind(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "instructions", str(ROOT)),
            *("--devices", "2", "--interfaces", "4", "--interval", "6", "--window", "1"),
            *("--pairs", "1", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (written,) = tmp_path.glob("bench-instructions-*.json")
    (run,) = json.loads(written.read_text())["runs"]
    assert run["checkout"] == str(ROOT) and run["polls_failed"] == 0
    assert run["polls"] >= 2 and run["varbinds"] >= run["polls"] * 4 * 10
    # a poll of a 4-interface device is thousands of instructions a varbind, not zero and
    # not the whole interpreter's start (which runs uninstrumented)
    assert 1_000 < run["per_varbind"] < 10_000_000, run
    assert run["per_varbind"] == round(run["instructions"] / run["varbinds"])
    assert f"{run['per_varbind']:,}" in proc.stdout and "1.000x" in proc.stdout
    assert bench_processes("enoc-bench-instructions-") == []
