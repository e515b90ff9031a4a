"""`enoc bench encoding` at tiny size: every point arrives, and the figures add up."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchkit import bench_processes

pytestmark = pytest.mark.servers


def test_bench_encoding_small_measures_every_batch_size_consistently(tmp_path: Path) -> None:
    samples, interfaces = 30, 4
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enoc.cli",
            "bench",
            "encoding",
            *("--devices", "6", "--interfaces", str(interfaces), "--samples", str(samples)),
            *("--batches", "1,10", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "samples/msg" in proc.stdout and "collector us/pt" in proc.stdout
    (written,) = tmp_path.glob("bench-encoding-*.json")
    result = json.loads(written.read_text())
    # access switches: the device, its interfaces, no BGP peers
    assert result["points_per_sample"] == 1 + interfaces
    one, ten = result["rows"]
    for row in (one, ten):
        assert row["messages"] == math.ceil(samples / row["batch"])
        assert row["points"] == samples * (1 + interfaces)
        assert row["received_points"] == row["points"], "every point went through the broker"
        assert row["bytes_per_point"] == pytest.approx(
            row["bytes_per_message"] * row["messages"] / row["points"]
        )
        assert 0 < row["zlib_bytes_per_point"] < row["bytes_per_point"]
        for cpu in ("agent_cpu_s", "encode_cpu_s", "collector_cpu_s", "decode_cpu_s"):
            assert row[cpu] > 0, cpu
        assert row["agent_us_per_point"] == round(1e6 * row["agent_cpu_s"] / row["points"], 3)
        assert row["collector_us_per_point"] == round(
            1e6 * row["collector_cpu_s"] / row["points"], 3
        )
    # ten samples a message: the same samples in a tenth of the messages, each envelope
    # shared by ten samples, so a little less per point
    assert ten["bytes_per_message"] > 5 * one["bytes_per_message"]
    assert ten["bytes_per_point"] < one["bytes_per_point"]
    left = bench_processes("enoc-bench-encoding-")
    assert left == [], left
