"""`enoc bench scale` at a small size: collector replicas sharing the NATS consumers of a
real three-node cluster drain a backlog; every point written exactly once, the output's
shape (never its speed), the drills' recovery times read back, and memory growth refused
until devices are partitioned."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers


def bench(tmp_path: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enoc.cli", "bench", "scale", *args, "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(180)
def test_one_and_two_replicas_write_every_point_once_and_report_per_replica(
    tmp_path: Path,
) -> None:
    drills = tmp_path / "faults.json"
    drills.write_text(
        json.dumps(
            {
                "drills": [
                    {"name": "broker-node-lost", "status": "PASS", "recovery_s": 4.25},
                    {"name": "garbage", "status": "PASS", "recovery_s": None},
                ]
            }
        )
    )
    proc = bench(
        tmp_path,
        *("--devices", "24", "--interfaces", "3", "--rounds", "4", "--sites", "3"),
        *("--replicas", "1,2", "--drills", str(drills), "--flush-interval", "0.2"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (written,) = tmp_path.glob("bench-scale-*.json")
    result = json.loads(written.read_text())
    assert [run["replicas"] for run in result["runs"]] == [1, 2]
    polls = 24 * (4 + 1)  # measured rounds and the warm-up
    for run in result["runs"]:
        # 24 devices x 4 rounds, each a device point and 3 interface points, all once
        assert run["messages"] == 24 * 4
        assert run["points"] == 24 * 4 * (1 + 3)
        assert run["written"] == run["points"], run
        assert run["landed"] == run["expected_landed"] == polls, run
        assert run["exact"] is True
        shares = run["per_replica"]
        assert [s["name"] for s in shares] == [f"r{n + 1}" for n in range(run["replicas"])]
        assert sum(s["points"] for s in shares) == run["points"]
        assert all(s["cpu_s"] >= 0 and s["peak_rss_mib"] > 0 for s in shares)
        row = next(
            line
            for line in proc.stdout.splitlines()
            if re.match(rf" +{run['replicas']} +96 ", line)
        )
        assert "yes" in row.split() and f"{run['points']:,}" in row
    assert result["cores"] >= 1 and f"{result['cores']} core(s) available" in proc.stdout
    assert result["ratio_4_to_1"] is None
    assert result["flush_interval"] == 0.2 and "influxdb.flush_interval 0.2 s" in proc.stdout
    assert "4 replicas / 1: not measured" in proc.stdout
    assert "memory per replica as devices grow: not measured" in proc.stdout
    assert re.search(r"broker-node-lost +PASS +4\.2 s", proc.stdout), proc.stdout
    assert re.search(r"garbage +PASS +not measured", proc.stdout)
    assert [d["recovery_s"] for d in result["drills"]] == [4.25, None]


def test_memory_growth_is_refused_until_devices_are_partitioned(tmp_path: Path) -> None:
    proc = bench(tmp_path, "--memory-growth", timeout=60)
    assert proc.returncode == 2
    assert "needs devices partitioned over the replicas" in proc.stderr
    assert not list(tmp_path.glob("bench-scale-*.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--replicas", "1,x"), "--replicas must be like 1,2,4"),
        (("--replicas", "0"), "counts from 1 to 16"),
        (("--drills", "/nonexistent/faults.json"), "not a bench-faults JSON"),
        (("--flush-interval", "0"), "--flush-interval: 0.01 to 60 s"),
    ],
)
def test_bad_arguments_are_refused_naming_what_is_wrong(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    proc = bench(tmp_path, *args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
