"""`enoc bench faults` at small size: every drill breaks one thing on a real fleet
(simulator -> agent processes -> Mosquitto -> collector process -> VictoriaMetrics and an
SQLite or PostgreSQL store), heals it, and accounts: no point lost, none duplicated, every
event committed, and exactly the incidents the fault dictates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from enoc.bench import faults
from enoc.wire import BgpSample, DeviceSample, InterfaceSample, MetricsMessage
from testbed.drills_accounting import Expect, compare_incidents, count_points, published_points

pytestmark = pytest.mark.servers

SMALL = faults.SIZES["small"]

# The incident kinds each drill must end with, whatever the drill itself expects:
# a drill that expected nothing would otherwise pass by seeing nothing.
KINDS = {
    "broker-down": ["agent_offline"] * SMALL.sites + ["link"],
    "wan-partition": ["agent_offline", "link"],
    "agent-kill": ["agent_offline", "link"],
    "collector-kill": ["link"],
    "influx-down": [],
    "store-restart": ["link"],
    "metrics-node-lost": [],
    "store-switchover": ["link"],
    "broker-node-lost": ["link"],
    "collector-replica-lost": ["link"],
    "flapping": ["link"],
    "garbage": ["link", "reachability"],
}
BUILT = list(faults.DRILLS)
# the drills that measure their recovery (DrillResult.recovery_s): from the kill to the
# next message through another node, to the survivor's taking what was in flight, from
# the switch-over's start to the first commit on the new primary, from the node's restart
# to its holding every point
MEASURE_RECOVERY = (
    "broker-node-lost",
    "collector-replica-lost",
    "store-switchover",
    "metrics-node-lost",
)
THROUGH_THE_CLI = "garbage"  # checked below through `enoc bench faults`, not twice


def test_every_built_drill_is_checked_here() -> None:
    assert sorted(BUILT) == sorted(KINDS)


@pytest.mark.parametrize("name", [name for name in BUILT if name != THROUGH_THE_CLI])
@pytest.mark.timeout(300)
async def test_drill_loses_nothing_doubles_nothing_and_opens_what_the_fault_dictates(
    name: str, tmp_path: Path
) -> None:
    result = await faults.run_drill(name, SMALL, say=lambda _text: None, keep_logs=tmp_path)
    report = "\n".join([*result.problems, *result.notes])
    assert result.status == "PASS", report
    fig = result.figures
    # every point that reached the broker is in the database, once, with its value
    assert fig["messages"] > 0
    assert fig["published"] > 10 * SMALL.devices, report
    assert fig["written"] == fig["published"], report
    assert fig["lost"] == 0
    assert fig["wrong"] == 0
    assert fig["duplicated"] == 0
    # no message an agent numbered went missing between the agent and the broker
    assert fig["lost_messages"] == 0
    assert fig["spooled_at_end"] <= SMALL.devices
    # every event the agents published is in the incident store
    assert fig["events_stored"] == fig["events_published"]
    # the incidents are those the fault dictates, and nothing else
    kinds = [label.split()[0] for label in fig["incidents_seen"]]
    if name == "broker-node-lost":  # an agent whose connection a gateway closed: its will
        willed = [label for label in fig["incidents_expected"] if "agent_offline" in label]
        assert len(willed) == kinds.count("agent_offline") <= SMALL.sites, report
        kinds = [kind for kind in kinds if kind != "agent_offline"]
    assert sorted(kinds) == sorted(KINDS[name])
    assert sorted(fig["incidents_seen"]) == sorted(fig["incidents_expected"]), report
    if name in ("broker-down", "wan-partition", "agent-kill", "influx-down", "store-restart"):
        # something was held back during the outage and still arrived
        assert result.notes, report
    if name in MEASURE_RECOVERY:
        # measured from the fault to the service again, and reported
        assert result.recovery_s is not None and result.recovery_s > 0, report
        assert result.as_json()["recovery_s"] == result.recovery_s
    else:
        assert result.recovery_s is None
    if name == "flapping":
        assert fig["events_published"] >= 2 * 6, "the link changed often enough to flap"
    # nothing the drill started outlives it
    left = psutil.Process().children(recursive=True)
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], left


@pytest.mark.timeout(300)
def test_garbage_drill_through_the_cli_prints_its_accounting_and_writes_the_json(
    tmp_path: Path,
) -> None:
    """`enoc bench faults --drills garbage`: the table with the drill's accounting and PASS,
    its notes (what the agent's heartbeat counted), and the same numbers in the JSON."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "faults", "--size", "small"),
            *("--drills", "garbage", "--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if re.match(r"garbage +[\d,]+ ", line)]
    assert row.split()[-2] == "PASS", proc.stdout
    assert row.split()[-3] == "-", "garbage measures no recovery time"
    assert "garbage - a device returning garbage: PASS" in proc.stdout
    (written,) = tmp_path.glob("bench-faults-*.json")
    (drill,) = json.loads(written.read_text())["drills"]
    assert drill["status"] == "PASS" and drill["problems"] == []
    assert drill["recovery_s"] is None
    assert drill["published"] == drill["written"] > 10 * faults.SIZES["small"].devices
    assert drill["lost"] == drill["wrong"] == drill["duplicated"] == drill["lost_messages"] == 0
    assert drill["spooled_at_end"] <= faults.SIZES["small"].devices
    assert drill["events_stored"] == drill["events_published"] > 0
    assert sorted(drill["incidents_seen"]) == sorted(drill["incidents_expected"])
    assert row.split()[1:3] == [f"{drill['published']:,}", f"{drill['written']:,}"]
    assert sorted(label.split()[0] for label in drill["incidents_seen"]) == KINDS["garbage"]
    beat = next(n for n in drill["notes"] if "heartbeat over the drill" in n)
    assert beat in proc.stdout
    rose = {name: int(n) for name, n in re.findall(r"(\w+) \+(\d+)", beat)}
    assert rose["snmp_bad"] > 0 and rose["polls_failed"] > 0, beat
    reachability = next(i for i in drill["incidents"] if i["kind"] == "reachability")
    assert [t["state"] for t in reachability["timeline"] if t["what"] == "event"] == ["down", "up"]


def test_the_table_shows_each_drills_recovery_time(capsys: pytest.CaptureFixture[str]) -> None:
    measured = faults.DrillResult("store-switchover", "t", "PASS", wall_s=41, recovery_s=2.5)
    unmeasured = faults.DrillResult("garbage", "t", "PASS", wall_s=30)
    faults.print_table([measured, unmeasured], SMALL)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("drill "))
    assert header.split()[-5:-3] == ["recov.", "s"]
    for name, shown in (
        ("store-switchover", ["2.50", "PASS", "41"]),
        ("garbage", ["-", "PASS", "30"]),
    ):
        row = next(line.split() for line in lines if line.startswith(f"{name} "))
        assert row[-3:] == shown


def test_unknown_drill_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "enoc.cli", "bench", "faults", "--drills", "broker-down,nope"),
            *("--results", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown drill(s) nope" in proc.stderr


# ------------------------------------------------------------------ the accounting itself


def message(seq: int, ts: float, cpu: float = 10.0) -> MetricsMessage:
    sample = DeviceSample(
        "dev-1",
        "127.0.0.9",
        ts,
        fields={"cpu": cpu, "sysName": "dev-1"},
        interfaces=[InterfaceSample(3, "ge-0/0/3", fields={"in_bps": 1e6, "ifOperStatus": 1})],
        bgp=[BgpSample("127.200.0.1", fields={"state": "established"})],
    )
    return MetricsMessage("a-1", "lab", "emea", seq, ts, samples=[sample])


def test_accounting_finds_lost_wrong_and_duplicated_points() -> None:
    published, twice = published_points([message(1, 1000.0), message(2, 1001.0)])
    # the string-only BGP line is not a point VictoriaMetrics can hold
    assert sum(len(s) for s in published.values()) == 4
    assert twice == 0
    landed = {key: {ts: dict(fields) for ts, fields in s.items()} for key, s in published.items()}
    clean = count_points(published, landed, 0)
    assert (clean.published, clean.written, clean.lost, clean.wrong, clean.duplicated) == (
        4,
        4,
        0,
        0,
        0,
    )
    device = ("device", "lab", "dev-1", "")
    interface = ("interface", "lab", "dev-1", "3")
    landed[device][1_000_000]["cpu"] = 11.0  # a wrong value
    del landed[interface][1_001_000]["in_bps"]  # a field that never arrived: the point is lost
    landed[device][1_002_500] = {"cpu": 10.0}  # a replay written under a new timestamp
    broken = count_points(published, landed, 1)
    assert (broken.written, broken.lost, broken.wrong, broken.duplicated) == (2, 1, 1, 2)
    _, twice = published_points([message(1, 1000.0), message(2, 1000.0)])
    assert twice == 2, "one poll in two messages is seen"


def test_incident_comparison_names_every_difference() -> None:
    def incident(kind: str, state: str = "resolved", **extra: object) -> dict[str, object]:
        return {
            "kind": kind,
            "site": "s1",
            "device": "d1" if kind == "link" else "",
            "resource": "if:3" if kind == "link" else "agent:s1-1",
            "state": state,
            "suppressed_by": None,
            "flapping": False,
            "timeline": [],
            **extra,
        }

    link = Expect("link", "s1", "d1", "if:3")
    offline = Expect("agent_offline", "s1", resource="agent:s1-1")
    assert compare_incidents([link, offline], [incident("agent_offline"), incident("link")]) == []
    problems = compare_incidents(
        [link, Expect("link", "s1", "d1", "if:3", flapping=True)],
        [incident("link", "open", suppressed_by=4), incident("agent_offline")],
    )
    assert problems == [
        "link s1/d1/if:3: open, expected resolved",
        "missing: link s1/d1/if:3 (resolved)",
        "unexpected: agent_offline s1/-/agent:s1-1 (resolved)",
    ]
    suppressed = Expect("link", "s1", "d1", "if:3", suppressed=True)
    assert compare_incidents([suppressed], [incident("link")]) == [
        "link s1/d1/if:3: not suppressed"
    ]
    flapped = incident("link", timeline=[{"what": "flapping"}, {"what": "settled"}])
    assert compare_incidents([Expect("link", "s1", "d1", "if:3", flapping=True)], [flapped]) == []
    assert compare_incidents([link], [flapped]) == ["link s1/d1/if:3: marked flapping"]
