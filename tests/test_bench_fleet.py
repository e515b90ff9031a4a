"""`enoc bench fleet` at tiny size: every component measured, every point accounted for,
peers compared, growth rows written, and a PNG that is a PNG."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from benchkit import marked_env, marked_processes

from enoc.bench.plot import Panel, Series, nice_ticks, render

pytestmark = pytest.mark.servers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from IHDR, after checking the signature, chunk CRCs and pixel data."""
    assert data[:8] == PNG_SIGNATURE
    offset, chunks, idat = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 2)  # 8-bit RGB
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


def test_plot_writes_a_valid_png() -> None:
    panel = Panel("points/s", [Series("a", [(0, 1), (10, 5)]), Series("b", [(5, 2)], style="dots")])
    assert png_size(render([panel, panel], width=400, panel_height=200, title="t")) == (400, 430)
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]


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
    width, height = png_size(image.read_bytes())
    assert width == 960 and height == 30 + 4 * 280  # title, throughput x2, lag, growth

    assert marked_processes(mark) == [], "the exporter, broker, database, agents are gone"
