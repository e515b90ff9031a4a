"""The real-device corpus, end to end: every recording of ../shared/recordings served by
`enoc sim --recording` (values as recorded), polled twice by one `enoc agent`, through
Mosquitto and one `enoc collector` per database into InfluxDB 1.6 (v1 API) and
VictoriaMetrics (v2 API). For every recording (parametrized, so a failure names it):

- every ifIndex of ifTable and ifXTable is stored, tagged with the names the device sent
  (after the agent's one-line text and the documented sanitising: corpuskit.stored_tag);
- the raw fields equal what net-snmp's snmpbulkwalk reads from the same served device;
- every point the agent published is in both databases (nothing refused or dropped);
- a steady device seen for two polls opens no link and no threshold incident;
- no log line about it is an error or an exception.

The whole corpus is run once for the module (one simulator, one agent, two collectors).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import corpuskit
import pytest
from corpuskit import IF_ENTRY, Walk, bulkwalk, corpus_names, offering, recordings_or_skip

from enoc.bench.corpus import CorpusRig, DeviceResult, Stored
from testbed.drills_accounting import Points, SeriesKey, published_points, row_series

pytestmark = [pytest.mark.servers, pytest.mark.timeout(400)]

INTERVAL = 4.0  # seconds: two polls of 48 devices fit in it on two cores
FAILED_LOG = re.compile(r"level=(error|critical)|Traceback|[A-Za-z]+(Error|Exception):")


@dataclass
class Corpus:
    devices: dict[str, dict[str, Any]]  # recording name -> the control API's device
    results: dict[str, DeviceResult]  # by device name
    stored: dict[str, Stored]  # by database
    incidents: dict[str, list[dict[str, Any]]]  # by database
    counters: dict[str, dict[str, float]]  # each collector's /metrics, by database
    published: Points = field(default_factory=dict)  # what the agent published, by series
    rows: set[SeriesKey] = field(default_factory=set)  # every row's series, numeric or not
    walks: dict[str, Walk] = field(default_factory=dict)  # by device name
    logs: dict[str, list[str]] = field(default_factory=dict)  # program -> lines


async def _run(files: list[Path], root: Path) -> Corpus:
    async with CorpusRig(files, root, interval=INTERVAL, polls=2) as rig:
        await rig.run_polls(within=150)
        stored = {
            "influxdb1": await asyncio.to_thread(rig.stored_influx),
            "victoria-metrics": await asyncio.to_thread(rig.stored_vm),
        }
        results = await asyncio.to_thread(rig.results, stored)
        incidents = {name: await asyncio.to_thread(rig.incidents, name) for name in stored}
        counters = {name: dict(c.counters) for name, c in rig.collectors.items()}
        gate = asyncio.Semaphore(4)

        async def walk(device: dict[str, Any]) -> tuple[str, Walk]:
            async with gate:
                tables = ("1.3.6.1.2.1.2.2", "1.3.6.1.2.1.31.1.1")
                return device["name"], await bulkwalk(device["address"], rig.sim_port, *tables)

        walks = dict(await asyncio.gather(*(walk(d) for d in rig.devices)))
        devices = {Path(d["recording"]).name.removesuffix(".snmprec"): d for d in rig.devices}
        corpus = Corpus(devices, {r.device: r for r in results}, stored, incidents, counters)
        corpus.walks = walks
        assert rig.tap is not None
        corpus.published = published_points(rig.tap.metrics.values())[0]
        corpus.rows = {
            (row.measurement, message.site, sample.device, row_series(row.tags))
            for message in rig.tap.metrics.values()
            for sample in message.samples
            for row in sample.rows
        }
    # after close: every program has stopped and written its last lines
    corpus.logs = {
        name: path.read_text(errors="replace").splitlines() for name, path in rig.logs().items()
    }
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    files = recordings_or_skip()
    return asyncio.run(_run(files, tmp_path_factory.mktemp("corpus")))


def device_of(corpus: Corpus, recording: str) -> dict[str, Any]:
    if recording not in corpus.devices:
        recordings_or_skip()  # the placeholder of an absent corpus
    return corpus.devices[recording]


@pytest.mark.parametrize("recording", corpus_names())
def test_every_interface_is_stored_with_the_names_the_device_sent(
    corpus: Corpus, recording: str
) -> None:
    device = device_of(corpus, recording)
    walk = corpus.walks[device["name"]]
    indexes = walk.if_indexes()
    assert len(indexes) == device["interfaces"], "the walk and the simulator disagree"
    problems: list[str] = []
    for database, stored in corpus.stored.items():
        for if_index in sorted(indexes):
            key = ("interface", "lab", device["name"], str(if_index))
            expected = walk.expected_tags(if_index)
            tag_sets = stored.tags.get(key)
            if not tag_sets:
                why = "" if f"{IF_ENTRY}.8.{if_index}" in walk.values else " (no ifOperStatus)"
                problems.append(f"{database}: ifIndex {if_index} {expected} not stored{why}")
                continue
            names = {
                tuple((k, v) for k, v in tags if k in ("ifName", "ifDescr", "ifAlias"))
                for tags in tag_sets
            }
            if names != {tuple(sorted(expected.items()))}:
                problems.append(f"{database}: ifIndex {if_index} stored as {names}, not {expected}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("recording", corpus_names())
def test_raw_counters_equal_what_snmpbulkwalk_reads(corpus: Corpus, recording: str) -> None:
    device = device_of(corpus, recording)
    walk = corpus.walks[device["name"]]
    problems: list[str] = []
    compared = 0
    for database, stored in corpus.stored.items():
        for if_index in sorted(walk.if_indexes()):
            key = ("interface", "lab", device["name"], str(if_index))
            latest = stored.latest.get(key)
            if latest is None:
                continue  # not stored at all: the names test says so
            expected = walk.expected_fields(if_index)
            got = {k: v for k, v in latest.items() if k in expected or k.startswith("if")}
            for name, value in expected.items():
                compared += 1
                if name not in got:
                    problems.append(f"{database}: ifIndex {if_index} {name} missing ({value})")
                elif float(got[name]) != float(value):
                    problems.append(f"{database}: ifIndex {if_index} {name} {got[name]} != {value}")
            extra = set(got) - set(expected) - {"ifSpeed"}
            raw_names = {"ifInOctets", "ifOutOctets", "ifHCInOctets", "ifHCOutOctets"}
            if extra & raw_names:
                problems.append(f"{database}: ifIndex {if_index} {sorted(extra)} not in the walk")
    stored_any = any(
        ("interface", "lab", device["name"], str(i)) in stored.latest
        for stored in corpus.stored.values()
        for i in walk.if_indexes()
    )
    assert compared or not stored_any, "nothing compared: the walk gave no raw field"
    assert not problems, f"{len(problems)} of {compared} differ:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("recording", corpus_names())
def test_every_published_point_is_in_both_databases(corpus: Corpus, recording: str) -> None:
    device = device_of(corpus, recording)
    result = corpus.results[device["name"]]
    assert result.polls >= 2, f"{result.polls} answered polls"
    assert result.published > 0
    for database, count in result.databases.items():
        assert count.missing == 0, f"{database}: {count.missing} points missing {count.examples}"
        assert count.refused == 0, f"{database}: the collector counted {count.refused} refused"
        assert count.written == result.published, database


# Sensors by the MIBs that give them (MANIFEST.tsv's names), and a few values worked out by
# hand in tests/test_agent_sensors.py (raw value, scale, precision), here as stored.
# (PowerNet-MIB is not there: an APC PDU answers it with rPDU tables, which are not read.)
SENSOR_MIBS = ("entSensor", "ciscoEnvMon", "upsMib", "juniperOper")
SENSORS_CHECKED = {
    ("arista_eos_vrf", "class=temperature,sensor=Cpu temp sensor"): 41.8,
    ("arubaos-cx_6300m", "class=temperature,sensor=temperature 107001"): 24.5,
    ("iosxe_c9400-svl", "class=temperature,sensor=Switch 1 Slot 3 Temp: UADP"): 49.0,
    ("xos_sfp", "class=current,sensor=SFP TX Bias Current Sensor (134)"): 0.034,
}


@pytest.mark.parametrize("recording", corpus_names())
def test_every_sensor_is_a_series_in_both_databases(corpus: Corpus, recording: str) -> None:
    """Capability discovery finds the sensor MIBs a recording offers with no profile
    naming them; each sensor the agent publishes is a `sensor` series in both databases."""
    name = device_of(corpus, recording)["name"]
    every = {key for key in corpus.rows if key[0] == "sensor" and key[2] == name}
    numeric = {key for key in corpus.published if key[0] == "sensor" and key[2] == name}
    if recording in offering(*SENSOR_MIBS):
        assert every, f"{recording} offers sensors; the agent published none"
    for database, stored in corpus.stored.items():
        held = {key for key in stored.points if key[0] == "sensor" and key[2] == name}
        # a sensor with only its status (a fan that reports no speed) is a string field,
        # which VictoriaMetrics does not keep
        assert numeric <= held <= every, (
            f"{database}: {sorted((numeric - held) | (held - every))[:5]}"
        )
        for (checked, series), value in SENSORS_CHECKED.items():
            if checked == recording:
                assert stored.latest[("sensor", "lab", name, series)]["value"] == value, database


BGP_PEER_STATE = "1.3.6.1.2.1.15.3.1.2"


@pytest.mark.parametrize("recording", sorted(offering("bgp4")) or ["corpus-absent"])
def test_every_bgp_peer_of_a_recording_is_a_series_in_both_databases(
    corpus: Corpus, recording: str
) -> None:
    """BGP on any device that answers BGP4-MIB, whatever its profile (neither BGP
    recording's sysObjectID is a router profile's): one `bgp_peer` series per peer of the
    recording's bgpPeerTable, by its address, in both databases, its state as recorded."""
    name = device_of(corpus, recording)["name"]
    path = recordings_or_skip()[0].parent / f"{recording}.snmprec"
    recorded = {}
    for line in path.read_text(errors="replace").splitlines():
        oid, _, rest = line.partition("|")
        if oid.startswith(BGP_PEER_STATE + "."):
            recorded[oid.removeprefix(BGP_PEER_STATE + ".")] = float(rest.rpartition("|")[2])
    assert recorded, f"{recording}: its MANIFEST says bgp4, its text has no bgpPeerState"
    for database, stored in corpus.stored.items():
        peers = {
            key[3]: fields["state"]
            for key, fields in stored.latest.items()
            if key[0] == "bgp_peer" and key[2] == name
        }
        assert peers == recorded, database


@pytest.mark.parametrize("recording", corpus_names())
def test_a_steady_device_opens_no_link_or_threshold_incident(
    corpus: Corpus, recording: str
) -> None:
    device = device_of(corpus, recording)
    for database, incidents in corpus.incidents.items():
        mine = [
            f"{i['kind']} {i['resource']}: {i['title']}"
            for i in incidents
            if i["device"] == device["name"] and i["kind"] in ("link", "threshold")
        ]
        assert not mine, f"{database}: {len(mine)} incidents, {mine[:10]}"


@pytest.mark.parametrize("recording", corpus_names())
def test_no_error_or_exception_is_logged_about_it(corpus: Corpus, recording: str) -> None:
    device = device_of(corpus, recording)
    words = (device["name"], device["address"] + ":", device["address"] + " ")
    bad = [
        f"{program}: {line[:300]}"
        for program, lines in corpus.logs.items()
        for line in lines
        if any(w in line for w in words) and FAILED_LOG.search(line)
    ]
    assert not bad, "\n".join(bad[:10])


def test_no_program_logged_an_error_and_no_collector_refused_a_line(corpus: Corpus) -> None:
    bad = [
        f"{program}: {line[:300]}"
        for program, lines in corpus.logs.items()
        for line in lines
        if FAILED_LOG.search(line)
    ]
    assert not bad, "\n".join(bad[:10])
    for database, counters in corpus.counters.items():
        for name in (
            "enoc_collector_points_dropped_total",
            "enoc_collector_write_batches_refused_total",
            "enoc_collector_dead_letters_total",
            "enoc_collector_fields_out_of_range_total",
        ):
            assert counters.get(name) == 0, f"{database}: {name} = {counters.get(name)}"
        rejected = {k: v for k, v in counters.items() if k.startswith("enoc_collector_rejected")}
        assert not any(rejected.values()), f"{database}: {rejected}"
        assert counters.get("enoc_collector_points_written_total", 0) > 0, database
        # Real devices' messages stay on the C pass: one it declines is read the slow way.
        declined = 'enoc_collector_metrics_slow_path_total{kind="declined"}'
        assert counters.get(declined) == 0, f"{database}: {declined} = {counters.get(declined)}"


def test_an_absent_corpus_skips_outside_ci_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(corpuskit, "RECORDINGS", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"corpus is absent.*\.\./shared/recordings"):
        corpuskit.recordings_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        corpuskit.recordings_or_skip()
    (tmp_path / "absent").mkdir()  # a folder without recordings is absent too
    with pytest.raises(pytest.fail.Exception, match=r"no \*\.snmprec"):
        corpuskit.recordings_or_skip()
