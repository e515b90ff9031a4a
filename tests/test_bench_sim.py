"""`enoc bench sim` at tiny size: the figures add up and nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchkit import marked_env, marked_processes

pytestmark = pytest.mark.servers


def test_bench_sim_small_reports_consistent_figures(tmp_path: Path) -> None:
    mark = f"bench-sim-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enoc.cli",
            "bench",
            "sim",
            "--devices",
            "20",
            "--interfaces",
            "8",
            "--walkers",
            "1",
            "--duration",
            "1.5",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=marked_env(mark),
    )
    assert proc.returncode == 0, proc.stderr
    assert "varbinds/CPU-s" in proc.stdout
    (result_file,) = tmp_path.glob("bench-sim-*.json")
    result = json.loads(result_file.read_text())
    served = {m["name"]: m for m in result["served"]}
    assert set(served) == {"enoc sim (v2c)", "enoc sim (v3)", "net-snmp snmpd (v2c)"}
    for measured in served.values():
        assert measured["varbinds"] > 0
        assert measured["walks"] > 0
        assert measured["cpu_s"] > 0
        assert measured["varbinds_per_cpu_s"] == round(measured["varbinds"] / measured["cpu_s"])
    # A walk of ifTable + ifXTable with 8 interfaces is 8 x (22 + 19) varbinds, less on firewalls.
    assert served["enoc sim (v2c)"]["varbinds"] >= served["enoc sim (v2c)"]["walks"] * 8 * 20
    assert result["startup_s"] > 0
    assert result["peak_rss_mib"] > 0
    assert result["hot_path"]["enoc_varbinds_per_cpu_s"] > 0
    assert marked_processes(mark) == [], "the simulator and snmpd are gone"
