"""Tables from MIBs, end to end: a vendor's MIB compiled with `enoc mib compile`, a device
serving its table (a recording the simulator serves), and an agent whose profile names the
table publishing one row of the configured measurement per row of the device's table."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent
from collectorkit import collector_config, eventually, running_collector
from corpuskit import offering, recordings_or_skip
from simkit import FakeClock, free_udp_port, recorded_fleet

from agent.config import check_agent
from agent.mibgroups import Reading
from agent.mibgroups.tables import TableConfig, resolve, split_index, table_group
from agent.profiles import ProfileConfig
from enoc.cli import main
from enoc.mibs import MibIndex
from simulators.inventory_out import write_inventory
from simulators.model import Device
from simulators.server import Simulator
from testbed.servers import InfluxDB1

# A satellite modem's MIB as a vendor would ship it: a signal table indexed by modem, an
# enumerated lock state, and a notification pair that raises and clears on it.
SAT_MODEM_MIB = """\
SATCOM-MODEM-MIB DEFINITIONS ::= BEGIN

IMPORTS
    MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Integer32, enterprises
        FROM SNMPv2-SMI
    DisplayString, TEXTUAL-CONVENTION
        FROM SNMPv2-TC;

satcomModemMIB MODULE-IDENTITY
    LAST-UPDATED "202612060000Z"
    ORGANIZATION "Example Satcom"
    CONTACT-INFO "noc@example.net"
    DESCRIPTION  "Signal of the modems of a VSAT terminal."
    ::= { enterprises 64999 }

SatLockState ::= TEXTUAL-CONVENTION
    STATUS       current
    DESCRIPTION  "Carrier lock of a demodulator."
    SYNTAX       INTEGER { locked(1), searching(2), unlocked(3) }

satObjects       OBJECT IDENTIFIER ::= { satcomModemMIB 1 }
satNotifications OBJECT IDENTIFIER ::= { satcomModemMIB 2 }
satNotifPrefix   OBJECT IDENTIFIER ::= { satNotifications 0 }

satSignalTable OBJECT-TYPE
    SYNTAX      SEQUENCE OF SatSignalEntry
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION "One row per demodulator."
    ::= { satObjects 1 }

satSignalEntry OBJECT-TYPE
    SYNTAX      SatSignalEntry
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION "A demodulator's signal."
    INDEX       { satModemIndex }
    ::= { satSignalTable 1 }

SatSignalEntry ::= SEQUENCE {
    satModemIndex   Integer32,
    satModemName    DisplayString,
    satEbNo         Integer32,
    satSignalLevel  Integer32,
    satLockState    SatLockState
}

satModemIndex OBJECT-TYPE
    SYNTAX      Integer32 (1..64)
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION "The demodulator."
    ::= { satSignalEntry 1 }

satModemName OBJECT-TYPE
    SYNTAX      DisplayString (SIZE (0..32))
    MAX-ACCESS  read-only
    STATUS      current
    DESCRIPTION "The demodulator's name."
    ::= { satSignalEntry 2 }

satEbNo OBJECT-TYPE
    SYNTAX      Integer32
    UNITS       "0.1 dB"
    MAX-ACCESS  read-only
    STATUS      current
    DESCRIPTION "Eb/No of the received carrier."
    ::= { satSignalEntry 3 }

satSignalLevel OBJECT-TYPE
    SYNTAX      Integer32
    UNITS       "dBm"
    MAX-ACCESS  read-only
    STATUS      current
    DESCRIPTION "Received signal level."
    ::= { satSignalEntry 4 }

satLockState OBJECT-TYPE
    SYNTAX      SatLockState
    MAX-ACCESS  read-only
    STATUS      current
    DESCRIPTION "Carrier lock."
    ::= { satSignalEntry 5 }

satLockLost NOTIFICATION-TYPE
    OBJECTS     { satModemName, satLockState }
    STATUS      current
    DESCRIPTION "A demodulator lost its carrier lock.
                 Sent once per loss."
    ::= { satNotifPrefix 1 }

satLockRegained NOTIFICATION-TYPE
    OBJECTS     { satModemName, satLockState }
    STATUS      current
    DESCRIPTION "A demodulator regained its carrier lock."
    ::= { satNotifPrefix 2 }

END
"""

ENTRY = "1.3.6.1.4.1.64999.1.1.1"
# The modem as a recording: its system group and two demodulators, one locked, one not.
SNMPREC = f"""\
1.3.6.1.2.1.1.1.0|4|VSAT terminal
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.64999.10.1
1.3.6.1.2.1.1.3.0|67|123456
1.3.6.1.2.1.1.5.0|4|vsat-1
{ENTRY}.2.1|4|hub-a
{ENTRY}.2.2|4|hub-b
{ENTRY}.3.1|2|123
{ENTRY}.3.2|2|18
{ENTRY}.4.1|2|-45
{ENTRY}.4.2|2|-71
{ENTRY}.5.1|2|1
{ENTRY}.5.2|2|3
"""

TABLE = {
    "table": "satSignalTable",
    "measurement": "satellite_modem",
    "index": [{"modem": "satModemIndex"}, "satModemName"],
    "fields": ["satEbNo", "satSignalLevel", "satLockState"],
}
EXPECTED_ROWS: list[list[Any]] = [
    [
        "satellite_modem",
        {"modem": "1", "satModemName": "hub-a"},
        {"satEbNo": 123, "satSignalLevel": -45, "satLockState": 1, "satLockState_label": "locked"},
    ],
    [
        "satellite_modem",
        {"modem": "2", "satModemName": "hub-b"},
        {"satEbNo": 18, "satSignalLevel": -71, "satLockState": 3, "satLockState_label": "unlocked"},
    ],
]


def recorded_devices(
    recordings: list[Path], address: str, port: int
) -> tuple[FakeClock, list[Device]]:
    """Simulated devices that serve these recordings (values as recorded), one each."""
    return recorded_fleet({path.stem: path for path in recordings}, address, port)


def compile_sat_mib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    source = tmp_path / "vendor-mibs"
    source.mkdir()
    (source / "satcom-modem.mib").write_text(SAT_MODEM_MIB)
    out = tmp_path / "compiled"
    assert main(["mib", "compile", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "satcom-modem.mib: SATCOM-MODEM-MIB compiled" in printed
    assert (out / "SATCOM-MODEM-MIB.json").is_file()
    return out


def test_the_compiled_vendor_mib_names_its_table_and_notifications(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mibs = MibIndex.load([compile_sat_mib(tmp_path, capsys)])
    table = mibs.table("satSignalTable")
    assert table.index == ("SATCOM-MODEM-MIB::satModemIndex",)
    assert list(table.columns) == [
        "satModemIndex",
        "satModemName",
        "satEbNo",
        "satSignalLevel",
        "satLockState",
    ]
    assert mibs.object("satEbNo").units == "0.1 dB"
    assert mibs.enum_label("satLockState", 3) == "unlocked"
    lost = mibs.notification("1.3.6.1.4.1.64999.2.0.1")
    regained = mibs.notification("SATCOM-MODEM-MIB::satLockRegained")
    assert lost is not None and regained is not None
    assert (lost.name, lost.objects) == ("satLockLost", ("satModemName", "satLockState"))
    assert lost.summary == "A demodulator lost its carrier lock."
    assert regained.oid == (1, 3, 6, 1, 4, 1, 64999, 2, 0, 2)


def test_a_table_group_derives_one_row_per_index_with_enum_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mibs = MibIndex.load([compile_sat_mib(tmp_path, capsys)])
    group = table_group(resolve(TableConfig(**TABLE), mibs))  # type: ignore[arg-type]
    assert group.name == "table:satellite_modem:satSignalTable"
    by_oid = {oid: name for name, oid in group.columns.items()}
    answers: dict[str, dict[tuple[int, ...], tuple[int, object]]] = {}
    for line in SNMPREC.splitlines():
        oid_text, tag, value = line.split("|")
        oid = tuple(int(x) for x in oid_text.split("."))
        name = by_oid.get(oid[:-1])
        if name is not None:
            answers.setdefault(name, {})[oid[-1:]] = (
                int(tag),
                value.encode() if tag == "4" else int(value),
            )
    rows = group.derive(Reading(tables=answers)).rows
    assert [[r.measurement, r.tags, r.fields] for r in rows] == EXPECTED_ROWS


def test_index_suffixes_decode_by_the_index_objects_syntax() -> None:
    mibs = MibIndex.load()
    (if_index,) = (mibs.object("ifIndex"),)
    stack = [mibs.object("ifStackHigherLayer"), mibs.object("ifStackLowerLayer")]
    assert split_index((5,), [if_index], implied=False) == ["5"]
    assert split_index((3, 0), stack, implied=False) == ["3", "0"]
    assert split_index((3,), stack, implied=False) is None  # too short: the raw suffix is used
    peer = [mibs.object("bgpPeerRemoteAddr")]
    assert split_index((192, 0, 2, 7), peer, implied=False) == ["192.0.2.7"]
    # a string index: its length, then its octets
    assert split_index((1, 4, 104, 117, 98, 45), [if_index, mibs.object("sysORDescr")], False) == [
        "1",
        "hub-",
    ]


def test_profile_tables_that_name_unknown_objects_are_config_errors(tmp_path: Path) -> None:
    config = yaml.safe_load(
        agent_config(tmp_path, "mqtt://127.0.0.1:1", tmp_path / "devices.yaml").read_text()
    )
    (tmp_path / "devices.yaml").write_text("devices: []\n")
    config["profiles"] = {
        "modem": {
            "match": ["1.3.6.1.4.1.64999"],
            "tables": [
                {"table": "satSignalTable", "measurement": "satellite_modem"},
                {"table": "ifTable", "measurement": "ports", "fields": ["ifOperStatus", "noSuch"]},
                {"table": "ifTable", "measurement": "ports", "index": ["ifHighSpeed2"]},
                {"table": "ifTable", "measurement": "interface"},
            ],
        }
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    errors = [str(i) for i in check_agent(path).issues if not i.warning]
    assert any(
        "profiles.modem.tables[0].table: no loaded MIB defines 'satSignalTable'" in e
        for e in errors
    ), errors
    assert any(
        "profiles.modem.tables[1].fields[1]: no loaded MIB defines 'noSuch'" in e for e in errors
    )
    assert any(
        "profiles.modem.tables[2].index[0]: 'ifHighSpeed2' is neither an INDEX object of ifTable"
        in e
        for e in errors
    ), errors
    assert any(
        "profiles.modem.tables[3]: measurement: 'interface' is one the agent writes itself" in e
        for e in errors
    ), errors
    assert all(e.startswith(f"{path}:") and f"{path}:0:" not in e for e in errors), errors


def test_a_profile_without_the_compiled_folder_names_what_is_missing(tmp_path: Path) -> None:
    profile = ProfileConfig(tables=[TableConfig(**TABLE)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no loaded MIB defines 'satSignalTable'"):
        profile.build("modem", MibIndex.load())


@pytest.mark.servers
async def test_an_agent_publishes_rows_of_a_vendor_table_from_its_compiled_mib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mosquitto: Any, influxdb1: InfluxDB1
) -> None:
    """The issue's test: an operator's vendor MIB compiled with `enoc mib compile`, its
    table served by the simulator, polled through a profile's `tables:`, and found in
    InfluxDB as the configured measurement, through Mosquitto and the collector."""
    compiled = compile_sat_mib(tmp_path, capsys)
    recording = tmp_path / "vsat-1.snmprec"
    recording.write_text(SNMPREC)
    port = free_udp_port("127.44.0.1")
    clock, devices = recorded_devices([recording], "127.44.0.1", port)
    inventory = tmp_path / "devices.yaml"
    profiles = {
        "vsat": {"match": ["1.3.6.1.4.1.64999"], "groups": [], "tables": [TABLE]},
    }
    config = agent_config(
        tmp_path, mosquitto.url, inventory, extra={"profiles": profiles, "mibs": str(compiled)}
    )
    influxdb1.create_database("enoc")
    influx = {"url": influxdb1.url, "api": "v1", "database": "enoc", "flush_interval": "0.2s"}
    collector = collector_config(tmp_path, mosquitto.url, extra={"influxdb": influx})
    async with Simulator(devices, clock=clock, rng=random.Random(0)) as sim:
        write_inventory(inventory, sim, devices)
        async with (
            running_collector(collector),
            Listener(mosquitto.url) as listener,
            running_agent(config),
        ):
            await listener.wait_for(lambda lis: bool(published_rows(lis)), what="rows")
            await eventually(lambda: len(stored_modems(influxdb1)) == 2, what="InfluxDB rows")
    rows = published_rows(listener)
    assert rows[0]["device"] == "vsat-1"
    assert rows[0]["rows"] == EXPECTED_ROWS
    stored = stored_modems(influxdb1)
    for _measurement, tags, fields in EXPECTED_ROWS:
        point = stored[(tags["modem"], tags["satModemName"])]
        assert point["device"] == "vsat-1"
        assert point["site"] == yaml.safe_load(config.read_text())["site"]  # the agent's
        assert {k: point[k] for k in fields} == fields


def stored_modems(influxdb1: InfluxDB1) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest point of each satellite_modem series in InfluxDB, by its index tags."""
    result = influxdb1.query('SELECT * FROM "satellite_modem" GROUP BY *', "enoc")
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for series in result["results"][0].get("series", []):
        point = dict(zip(series["columns"], series["values"][-1], strict=True))
        point.update(series["tags"])
        out[(point["modem"], point["satModemName"])] = point
    return out


def published_rows(listener: Listener) -> list[dict[str, Any]]:
    out = []
    for topic, payload in listener.raw:
        if topic.endswith("/metrics"):
            for sample in json.loads(payload)["samples"]:
                if sample.get("rows"):
                    out.append(sample)
    return out


LLDP_REM = "1.0.8802.1.1.2.1.4.1.1"
LLDP_TABLE = {
    "table": "lldpRemTable",
    "measurement": "lldp_neighbor",
    "index": [{"port": "lldpRemLocalPortNum"}, "lldpRemIndex"],
    "fields": ["lldpRemSysName", "lldpRemPortIdSubtype"],
}


def lldp_recordings() -> list[Path]:
    """The corpus's recordings that answer LLDP-MIB's remote table (MANIFEST: lldpRem)."""
    offered = offering("lldpRem")
    return [f for f in recordings_or_skip() if f.name.removesuffix(".snmprec") in offered]


def recorded_neighbors(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(port, index) -> the fields the table should give, read from the recording: the
    columns' instances are lldpRemTimeMark.port.index."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text(errors="surrogateescape").splitlines():
        parts = line.split("|", 2)
        if len(parts) != 3:
            continue  # the rest of a value that spans lines
        oid, tag, value = parts
        for column, name in ((9, "lldpRemSysName"), (6, "lldpRemPortIdSubtype")):
            prefix = f"{LLDP_REM}.{column}."
            if oid.startswith(prefix):
                suffix = oid.removeprefix(prefix)
                arcs = suffix.split(".")
                # An index that is not timeMark.port.index (a PMP 450m serves one arc) does
                # not decode: each tag then carries the suffix as it came.
                key = (arcs[1], arcs[2]) if len(arcs) == 3 else (suffix, suffix)
                fields = out.setdefault(key, {})
                if tag == "2":
                    fields[name] = int(value)
                elif tag == "4" and value.isprintable():
                    fields[name] = value
    return out


@pytest.mark.servers
async def test_the_lldp_remote_table_of_every_corpus_recording_that_has_one(
    tmp_path: Path, mosquitto: Any
) -> None:
    """A shipped MIB's table on real devices: one row per neighbour, tagged by local port
    and index, the neighbour's name and port-id subtype as the device recorded them."""
    recordings = lldp_recordings()
    assert recordings, "the corpus lists no recording with lldpRem"
    port = free_udp_port("127.45.0.1")
    clock, devices = recorded_devices(recordings, "127.45.0.1", port)
    inventory = tmp_path / "devices.yaml"
    profiles = {"lldp": {"groups": [], "tables": [LLDP_TABLE]}}
    config = agent_config(tmp_path, mosquitto.url, inventory, extra={"profiles": profiles})
    async with Simulator(devices, clock=clock, rng=random.Random(0)) as sim:
        write_inventory(inventory, sim, devices)
        listed = yaml.safe_load(inventory.read_text())
        for device in listed["devices"]:
            device["profile"] = "lldp"
        inventory.write_text(yaml.safe_dump(listed))
        names = {f.stem for f in recordings}
        async with Listener(mosquitto.url) as listener, running_agent(config):
            await listener.wait_for(
                lambda lis: {s["device"] for s in published_rows(lis)} >= names,
                timeout=60,
                what="rows of every LLDP recording",
            )
    latest = {s["device"]: s["rows"] for s in published_rows(listener)}
    mibs = MibIndex.load()
    for path in recordings:
        expected = recorded_neighbors(path)
        rows = latest[path.stem]
        got = {(r[1]["port"], r[1]["lldpRemIndex"]): r for r in rows}
        assert set(got) == set(expected), path.name
        for key, fields in expected.items():
            measurement, _tags, published = got[key]
            assert measurement == "lldp_neighbor"
            for name, value in fields.items():
                assert published[name] == value, (path.name, key, name)
            if "lldpRemPortIdSubtype" in fields:
                value = fields["lldpRemPortIdSubtype"]
                label = mibs.enum_label("lldpRemPortIdSubtype", value) or str(value)  # 0: none
                assert published["lldpRemPortIdSubtype_label"] == label


def test_a_missing_mibs_folder_is_an_error_only_when_a_table_needs_it(tmp_path: Path) -> None:
    (tmp_path / "devices.yaml").write_text("devices: []\n")
    config = yaml.safe_load(
        agent_config(tmp_path, "mqtt://127.0.0.1:1", tmp_path / "devices.yaml").read_text()
    )
    config["mibs"] = str(tmp_path / "never-compiled")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    issues = [i for i in check_agent(path).report() if i.key == "mibs"]
    assert [(i.warning, "no such folder" in i.message) for i in issues] == [(True, True)]
    config["profiles"] = {"modem": {"tables": [TABLE]}}
    path.write_text(yaml.safe_dump(config))
    issues = [i for i in check_agent(path).report() if i.key == "mibs"]
    assert [(i.warning, "no such folder" in i.message) for i in issues] == [(False, True)]
