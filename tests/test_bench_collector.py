"""`enoc bench collector` at tiny size: every point lands, replicas split, traps open incidents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchkit import bench_processes

pytestmark = pytest.mark.servers


def test_bench_collector_small(tmp_path: Path) -> None:
    # 5,880 points a run: tens of milliseconds of a replica's CPU, where the process's CPU
    # time (10 ms ticks) reads above 0 (300 points read 0.00 once the receive path sped up)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "collector"),
            *("--devices", "40", "--interfaces", "48", "--rounds", "3", "--sites", "2"),
            *("--replicas", "1,2", "--traps", "3", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "points/CPU-s" in proc.stdout and "trap at the agent" in proc.stdout
    (written,) = tmp_path.glob("bench-collector-*.json")
    result = json.loads(written.read_text())
    assert result["warmup"] == 1  # a poll of every device first, not measured
    assert result["devices_per_message"] == 1
    assert "one metrics message per device poll" in proc.stdout
    one, two = result["runs"]
    for run in (one, two):
        assert run["messages"] == 40 * 3
        assert run["points"] == 40 * 3 * (1 + 48)  # a device line and a line per interface
        assert sum(run["per_replica_points"]) == run["points"]
        assert run["cpu_s"] > 0 and run["points_per_cpu_s"] == round(run["points"] / run["cpu_s"])
    assert two["replicas"] == 2 and all(n > 0 for n in two["per_replica_points"])
    latency = result["latency"]
    assert latency["missed"] == 0 and len(latency["open_ms"]) == 3
    assert len(latency["resolve_ms"]) == 3
    # nothing the bench started outlives it (its servers run from its temporary directory)
    left = bench_processes("enoc-bench-collector-")
    assert left == [], left


def test_bench_collector_several_devices_per_message(tmp_path: Path) -> None:
    """As an agent with `publishing.batch_samples: 8` sends them: every point still lands."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "collector"),
            *("--devices", "20", "--interfaces", "4", "--rounds", "3", "--sites", "2"),
            *("--devices-per-message", "8", "--replicas", "1", "--traps", "0"),
            *("--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "8 device polls per metrics message" in proc.stdout
    (written,) = tmp_path.glob("bench-collector-*.json")
    result = json.loads(written.read_text())
    assert result["devices_per_message"] == 8
    (run,) = result["runs"]
    assert run["messages"] == 3 * 2 * 2  # per round and site: 10 devices in 8 + 2
    assert run["points"] == 20 * 3 * (1 + 4)
    assert run["per_replica_points"] == [run["points"]]


def test_the_streams_polls_are_all_in_the_past_however_many_rounds(tmp_path: Path) -> None:
    """The accounting reads what landed up to now: a poll stamped in the future would be
    written and never counted (more than 60 rounds went past the present before)."""
    import argparse
    import time

    from enoc.bench.collector import add_arguments, write_messages
    from enoc.wire import decode

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--devices", "2", "--interfaces", "1", "--sites", "1"])
    args.warmup, args.rounds = 1, 90
    stamps = []
    for name, rounds in (("warm", range(1)), ("measured", range(1, 91))):
        stream = write_messages(tmp_path / name, args, rounds)
        for topic_name, path in stream.files.items():
            for line in path.read_bytes().splitlines():
                stamps += [s.ts for s in decode(topic_name, line).samples]  # type: ignore[union-attr]
    assert len(stamps) == 2 * 91
    assert max(stamps) < time.time()
    assert len(set(stamps)) == len(stamps), "every poll its own time"
