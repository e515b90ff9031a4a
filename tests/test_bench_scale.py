"""`enoc bench scale` at a small size: collector replicas sharing the NATS consumers of a
real three-node cluster drain a backlog, each under a CPU quota of its own where a cgroup
is writable; every point written exactly once, the output's shape (never its speed), the
drills' recovery times read back, and the busiest replica's memory falling as replicas
are added to a partitioned fleet."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enoc.bench import scale, scale_partitioned
from enoc.bench.cgroups import CgroupError, CpuQuota, hierarchy
from enoc.bench.scale_model import Replica, Run


def quota_refused() -> str | None:
    """Why no CPU quota can be set here (None: it can)."""
    try:
        hierarchy()
    except CgroupError as exc:
        return str(exc)
    return None


def bench(tmp_path: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enoc.cli", "bench", "scale", *args, "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.servers
@pytest.mark.timeout(180)
def test_two_replicas_sharing_the_consumers_write_every_point_once_and_report_each(
    tmp_path: Path,
) -> None:
    # under a quota each where a cgroup can be made (the machine of the suite): the bench
    # is checked either way, the quota's figures where it is set
    refused = quota_refused()
    quota = [] if refused else ["--cpu-per-replica", "0.5"]
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
        *("--replicas", "2", "--drills", str(drills), "--flush-interval", "0.2"),
        *quota,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (written,) = tmp_path.glob("bench-scale-*.json")
    result = json.loads(written.read_text())
    assert [run["replicas"] for run in result["runs"]] == [2]
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
        beside = run["beside"]
        assert beside["writes"] >= 1 and beside["broker_cpu_s"] >= 0
        assert 0 < beside["machine_busy"] <= 1
        for share in shares:
            if refused:
                assert share["throttling"] is None and share["quota_used"] is None
            else:  # the replica ran under its quota in the span: at least one period
                assert share["throttling"]["periods"] >= 1, share
                assert (
                    0 <= share["throttling"]["throttled_periods"] <= share["throttling"]["periods"]
                )
                # /proc counts CPU in clock ticks: a short span's share can read as 0
                assert share["quota_used"] >= 0, share
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
    assert "each keep every device's state; --partitioned or --memory-growth" in proc.stdout
    assert result["partitioned"] is False and "sharing the JetStream consumers" in proc.stdout
    if refused:
        assert result["cpu_per_replica"] is None and "CPU quota" not in proc.stdout
    else:
        assert result["cpu_per_replica"] == 0.5 and result["cgroup_version"] in (1, 2)
        assert "under a CPU quota of 0.5 core(s)" in proc.stdout
        # each replica's cgroup removed (the quota test's, on another worker, is not one)
        assert not list(hierarchy().parent.glob("enoc-bench-*-r[0-9]*"))
    assert re.search(r"broker-node-lost +PASS +4\.2 s", proc.stdout), proc.stdout
    assert re.search(r"garbage +PASS +not measured", proc.stdout)
    assert [d["recovery_s"] for d in result["drills"]] == [4.25, None]


def test_memory_growth_shows_the_busiest_replica_holding_less_with_each_replica_added(
    tmp_path: Path,
) -> None:
    proc = bench(
        tmp_path,
        *("--memory-growth", "--fleets", "400,800", "--replicas", "1,2,4", "--interfaces", "2"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (written,) = tmp_path.glob("bench-scale-*.json")
    growth = json.loads(written.read_text())["memory_growth"]
    rows = {(r["devices"], r["replicas"]): r for r in growth["rows"]}
    assert sorted(rows) == [(d, n) for d in (400, 800) for n in (1, 2, 4)]
    for devices in (400, 800):
        one, two, four = (rows[devices, n] for n in (1, 2, 4))
        assert one["busiest_devices"] == devices and one["sites"] == devices // 20
        assert one["busiest_devices"] > two["busiest_devices"] > four["busiest_devices"]
        assert one["bytes"] > two["bytes"] > four["bytes"] > 0
    assert rows[800, 1]["bytes"] > rows[400, 1]["bytes"]  # and grows with the fleet
    assert growth["falling_with_replicas"] is True
    table = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("800 "))
    assert table.split()[2:] == [f"{rows[800, n]['mb']:.1f}" for n in (1, 2, 4)]
    assert "partitioning routes by MQTT subscription" in proc.stdout


@pytest.mark.servers
@pytest.mark.timeout(180)
def test_partitioned_replicas_split_the_sites_write_every_point_once_and_report_memory(
    tmp_path: Path,
) -> None:
    proc = bench(
        tmp_path,
        *("--partitioned", "--devices", "48", "--interfaces", "3", "--rounds", "3"),
        *("--sites", "8", "--replicas", "1,2", "--flush-interval", "0.2"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (written,) = tmp_path.glob("bench-scale-*.json")
    result = json.loads(written.read_text())
    assert result["partitioned"] is True and result["broker"] == "mosquitto"
    assert "partitioning the sites over one Mosquitto" in proc.stdout
    expected = {1: [8], 2: scale_partitioned_shares(8, 2)}
    for run in result["runs"]:
        assert run["written"] == run["points"] == 48 * 3 * (1 + 3), run
        assert run["landed"] == run["expected_landed"] == 48 * 4 and run["exact"] is True
        shares = run["per_replica"]
        # each replica owns what the product's hashing gives it, and wrote only its sites'
        assert [s["sites"] for s in shares] == expected[run["replicas"]]
        for share in shares:
            assert share["points"] == share["sites"] * 6 * 3 * (1 + 3), share
            assert share["rss_mib"] >= share["base_rss_mib"] > 0
            assert share["growth_mib"] == round(share["rss_mib"] - share["base_rss_mib"], 1)
    memory = result["memory_per_replica"]
    assert [b["replicas"] for b in memory["busiest"]] == [1, 2]
    assert [b["sites"] for b in memory["busiest"]] == [8, max(expected[2])]
    assert memory["busiest"][1]["shares_bound"] == round(8 / max(expected[2]), 2)
    assert "memory per replica as devices grow: the busiest replica's growth" in proc.stdout


def scale_partitioned_shares(sites: int, replicas: int) -> list[int]:
    from collector.partition import assign

    owned = assign([f"site-{s:02d}" for s in range(sites)], [f"r{n + 1}" for n in range(replicas)])
    return [len(owned[f"r{n + 1}"]) for n in range(replicas)]


def test_the_partitioned_memory_verdict_follows_the_busiest_replica() -> None:
    def run(replicas: int, shares: list[tuple[int, float]]) -> Run:
        one = Run(replicas, 1, 1, 1.0, 1, 1, 1)
        for n, (sites, growth) in enumerate(shares):
            replica = Replica(f"r{n + 1}", sites, 1.0, 100.0)
            replica.sites, replica.base_rss_mib, replica.rss_mib = sites, 100.0, 100.0 + growth
            one.per_replica.append(replica)
        return one

    one = run(1, [(8, 20.0)])
    two = run(2, [(3, 15.0), (5, 11.0)])  # the busiest owns 5: its 11 MiB counts
    four = run(4, [(2, 9.0), (2, 1.0), (1, 1.0), (3, 6.0)])
    assert scale_partitioned.busiest(two).name == "r2" and scale_partitioned.bound(two) == 1.6
    assert scale_partitioned.bound(four) == round(8 / 3, 2)
    assert scale_partitioned.falling([one, two, four]) is True
    assert scale_partitioned.falling([four, two, one]) is True  # in replica order, whatever given
    assert scale_partitioned.falling([one, run(2, [(4, 21.0), (4, 3.0)])]) is False
    assert scale_partitioned.falling([one]) is False  # one count shows no fall


def test_a_cpu_quota_throttles_its_process_and_is_removed_even_with_it_running() -> None:
    refused = quota_refused()
    if refused:
        pytest.skip(refused)
    quota = CpuQuota("test", 0.05, hierarchy())
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        quota.add(spin.pid)
        quota.limit()
        assert quota.pids() == [spin.pid]
        before = quota.throttling()
        deadline = time.monotonic() + 10
        while quota.throttling().since(before).throttled_periods < 3:
            assert time.monotonic() < deadline, quota.throttling()
            time.sleep(0.1)
        assert quota.throttling().since(before).throttled_s > 0
    finally:
        quota.remove()  # the process still runs: moved out first
        spin.kill()
        spin.wait()
    assert not quota.path.exists()


def test_no_writable_cpu_cgroup_is_refused_saying_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="neither is mounted"):
        hierarchy(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CgroupError, match="does not list cpu") as raised:
        hierarchy(tmp_path)
    assert "cgroup v2" in str(raised.value) and "cgroup v1" in str(raised.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--replicas", "1,x"), "--replicas must be like 1,2,4"),
        (("--replicas", "0"), "counts from 1 to 16"),
        (("--drills", "/nonexistent/faults.json"), "not a bench-faults JSON"),
        (("--flush-interval", "0"), "--flush-interval: 0.01 to 60 s"),
        (("--cpu-per-replica", "0"), "--cpu-per-replica: 0.01 to 64 cores"),
        (("--memory-growth", "--fleets", "5"), "--fleets: 20 to 200000 devices each"),
        (("--rss",), "--rss: only with --memory-growth"),
        (("--broker", "nats"), "--broker: only with --partitioned"),
        (("--partitioned", "--memory-growth"), "one or the other"),
    ],
)
def test_bad_arguments_are_refused_naming_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert scale.main([*args, "--results", str(tmp_path)]) == 2  # before anything starts
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
