"""`enoc bench console` at tiny size: the fleet loads, the browser renders every row, every
SSE client gets every change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers


def test_bench_console_small(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "console"),
            *("--devices", "60", "--sites", "4", "--incidents", "12"),
            *("--clients", "3", "--changes", "5", "--loads", "1", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SSE fan-out" in proc.stdout
    (written,) = tmp_path.glob("bench-console-*.json")
    result = json.loads(written.read_text())
    assert result["delivered"] == result["expected"] == 3 * 5
    assert len(result["fanout_ms"]) == 15
    assert result["board_rows"] == 12
    assert len(result["board_load_ms"]) == 1
    assert len(result["overview_load_ms"]) == 1
    assert result["api_sites_ms"] > 0
    assert result["api_incidents_ms"] > 0
