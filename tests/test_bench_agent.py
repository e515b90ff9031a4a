"""`enoc bench agent` at tiny size: both pollers measured, figures consistent, nothing left over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchkit import bench_processes

pytestmark = pytest.mark.servers


def test_bench_agent_small_measures_agent_and_exporter(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enoc.cli",
            "bench",
            "agent",
            *("--devices", "10", "--interfaces", "4", "--interval", "2", "--intervals", "2"),
            *("--version", "3", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prometheus-snmp-exporter v3" in proc.stdout and "enoc agent v3" in proc.stdout
    (written,) = tmp_path.glob("bench-agent-*.json")
    result = json.loads(written.read_text())
    pollers = {p["name"]: p for p in result["pollers"]}
    exporter, agent = pollers["prometheus-snmp-exporter v3"], pollers["enoc agent v3"]
    assert exporter["extra"]["failed_scrapes"] == 0 and exporter["varbinds"] > 10 * 4 * 10
    assert agent["extra"]["overruns"] == 0 and agent["extra"]["polls_failed"] == 0
    assert agent["polls"] >= 10 and agent["varbinds"] >= agent["polls"] * 4 * 10
    assert agent["varbinds_per_cpu_s"] == round(agent["varbinds"] / agent["cpu_s"])
    # nothing the bench started outlives it (its servers run from its temporary directory)
    left = bench_processes("enoc-bench-agent-")
    assert left == [], left
