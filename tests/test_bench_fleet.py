"""`enoc bench fleet` at tiny size: every component measured, every point accounted for,
peers compared, growth rows written, and its chart a valid PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchkit import marked_env, marked_processes, png_size

from enoc.bench import plot

pytestmark = pytest.mark.servers


def test_bench_fleet_small(tmp_path: Path) -> None:
    mark = f"bench-fleet-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "fleet"),
            *("--devices", "20", "--sites", "2", "--interfaces", "4"),
            *("--interval", "2", "--duration", "10", "--growth", "10,20", "--faults", "3"),
            *("--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        env=marked_env(mark),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "one full poll of the fleet" in proc.stdout and "growth:" in proc.stdout
    (written,) = tmp_path.glob("bench-fleet-*.json")
    result = json.loads(written.read_text())
    fleet = result["fleet"]

    components = {c["name"]: c for c in fleet["components"]}
    assert set(components) == {"sim", "agents", "broker", "collector", "database"}
    assert components["agents"]["processes"] == 2
    for name, component in components.items():
        assert component["cpu_total_s"] > 0, name
        assert component["peak_rss_mib"] > 0, name
        if name != "broker":  # a few hundred messages in 10 s can round to 0.00 CPU-s
            assert component["cpu_s"] > 0, name

    # The collector wrote exactly what the agents published: a line per device, interface and
    # BGP peer of every poll, one `enoc_agent` line per heartbeat; and one `incident` line per
    # incident change it made itself (the faults, and the sites going offline at the end).
    acc = fleet["accounting"]
    assert acc["points_written"] > 0
    assert acc["incident_points"] >= 2 * 3
    assert acc["points_written"] == (
        acc["points_published"] + acc["health_points_published"] + acc["incident_points"]
    )
    assert acc["health_points_in_database"] == acc["health_points_published"]
    assert acc["points_lost"] == acc["points_extra"] == acc["dead_letters"] == 0
    assert acc["device_samples_in_database"] == acc["device_samples_published"] > 0
    assert fleet["points_per_s"] > 0 and fleet["varbinds_per_s"] > 0
    assert fleet["messages_per_s"] > 0

    assert fleet["health"]["overruns"] == 0
    assert fleet["health"]["polls_ok_total"] >= 20
    assert fleet["lag"]["poll_to_broker_s"]["samples"] > 0
    assert fleet["lag"]["poll_to_database_s"]["samples"] > 0
    assert fleet["incidents"]["missed"] == 0 and len(fleet["incidents"]["open_ms"]) == 3

    peers = {p["name"]: p for p in result["peers"]}
    assert set(peers) == {
        "net-snmp snmpbulkwalk v2c",
        "prometheus-snmp-exporter v2c",
        "enoc agent v2c",
    }
    for name, peer in peers.items():
        assert peer["devices"] == 20 and peer["varbinds"] > 20 * 4 * 10, name
        assert peer["cpu_s"] > 0 and peer["varbinds_per_cpu_s"] > 0, name
    assert peers["enoc agent v2c"]["extra"]["polls_failed"] == 0
    ratios = result["peer_ratios"]["enoc agent v2c"]
    assert ratios["per_cpu_s_vs_prometheus-snmp-exporter v2c"] > 0
    assert ratios["per_cpu_s_vs_net-snmp snmpbulkwalk v2c"] > 0

    growth = result["growth"]
    assert [g["devices"] for g in growth] == [10, 20]
    for row in growth:
        assert row["cpu_ms_per_device_interval"]["total"] > 0
        assert row["overruns"] == 0 and row["points_lost"] == 0

    image = Path(result["plot"])
    assert image.parent == tmp_path and image.suffix == ".png"
    # title, then throughput x2, lag, peers and growth
    assert png_size(image.read_bytes()) == (960, plot.TITLE_HEIGHT + 5 * 280)

    assert marked_processes(mark) == [], "the exporter, broker, database, agents are gone"
