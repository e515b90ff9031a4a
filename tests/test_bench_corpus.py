"""`enoc bench corpus` on three recordings of the corpus: its JSON accounts for every point.

Counters move (`--counters moving`, the simulator's default for recordings): every
interface that is up in its walk has a rate, and none crosses a threshold.

The three have a full ifTable (every interface has ifOperStatus), so each answered poll is
one `device` point and one `interface` point per interface of MANIFEST.tsv, and the
sensors capability discovery finds (the Arista's): the published count is known but for
the sensors' points, which only the Arista has, and each database must hold all of it.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from corpuskit import RECORDINGS, offering, recordings_or_skip

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

CHOSEN = ("arista_eos_vrf", "ciena-saos_saos", "linux_powermon")
DATABASES = ("influxdb1", "victoria-metrics")


# an octet counter (ifInOctets, ifOutOctets, ifHCInOctets, ifHCOutOctets) of a Counter type
OCTETS = re.compile(
    r"1\.3\.6\.1\.2\.1\.(?:2\.2\.1\.(?:10|16)|31\.1\.1\.1\.(?:6|10))\.(\d+)\|(?:65|70)\|"
)
UP = re.compile(r"1\.3\.6\.1\.2\.1\.2\.2\.1\.8\.(\d+)\|2\|1$")


def up_interfaces(name: str) -> int:
    """Interfaces up (ifOperStatus 1) in the walk that have an octet counter."""
    lines = (RECORDINGS / f"{name}.snmprec").read_text(errors="replace").splitlines()
    up = {m.group(1) for line in lines if (m := UP.match(line))}
    counted = {m.group(1) for line in lines if (m := OCTETS.match(line))}
    return len(up & counted)


def test_bench_corpus_accounts_for_every_point(tmp_path: Path) -> None:
    recordings_or_skip()
    with (RECORDINGS / "MANIFEST.tsv").open() as manifest:
        interfaces = {
            row["file"].removesuffix(".snmprec"): int(row["interfaces"])
            for row in csv.DictReader(manifest, delimiter="\t")
        }
    command = [sys.executable, "-m", "enoc.cli", "bench", "corpus"]
    command += ["--recordings", str(RECORDINGS), "--interval", "3", "--results", str(tmp_path)]
    command += ["--counters", "moving"]
    command += [arg for name in CHOSEN for arg in ("--only", name)]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("bench-corpus-*.json")
    report = json.loads(path.read_text())
    rows = {r["recording"].removesuffix(".snmprec"): r for r in report["recordings"]}
    assert sorted(rows) == sorted(CHOSEN)
    for name, row in rows.items():
        assert row["interfaces"] == interfaces[name], name
        assert row["polls"] >= 2, name
        assert row["published"] == row["polls"] * (1 + interfaces[name]) + row["rows"], name
        assert (row["rows"] > 0) == (name in offering("entSensor")), name
        assert row["varbinds"] > 0 and row["poll_ms"] > 0, name
        assert row["moving"] == up_interfaces(name), name  # rates are not all zero
        assert "threshold" not in row["incidents"], name
        for database in DATABASES:
            count = row["databases"][database]
            assert count["written"] + count["missing"] == row["published"], (name, database)
            assert count["missing"] == 0, (name, database, count["examples"])
        assert row["refused"] == sum(
            max(row["databases"][d]["missing"], row["databases"][d]["refused"]) for d in DATABASES
        )
        assert f"\n{name} " in proc.stdout  # the table has a row for it
    totals = report["totals"]
    assert totals["recordings"] == 3
    assert totals["interfaces"] == sum(interfaces[n] for n in CHOSEN)
    assert totals["published"] == sum(r["published"] for r in rows.values())
    for database in DATABASES:
        assert totals["written"][database] == totals["published"]
        assert totals["refused"][database] == 0
        assert report["collectors"][database]["points_dropped_total"] == 0
    assert totals["incidents"] == sum(sum(r["incidents"].values()) for r in rows.values())
