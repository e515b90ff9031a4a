"""The MIB knowledge: shipped facts, lookups by name and OID, compiling an operator's
folder (errors that name the file and what is wrong), and `enoc mib`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enoc.cli import main
from enoc.mibs import MibIndex, Named, UnknownName
from enoc.mibs.compile import compile_folder, stub_source
from enoc.mibs.index import DATA

HEADER = """\
IMPORTS MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Integer32, enterprises
    FROM SNMPv2-SMI
"""


def test_every_shipped_module_loads_and_its_oids_are_unique_per_name() -> None:
    mibs = MibIndex.load()
    names = {path.stem for path in DATA.glob("*.json")}
    assert names == set(mibs.modules)
    for module in (
        "SNMPv2-MIB",
        "IF-MIB",
        "ENTITY-MIB",
        "ENTITY-STATE-MIB",
        "UPS-MIB",
        "PowerNet-MIB",
        "CISCO-ENVMON-MIB",
        "CISCO-CONFIG-MAN-MIB",
        "JUNIPER-MIB",
        "FORTINET-FORTIGATE-MIB",
        "BGP4-MIB",
        "UCD-SNMP-MIB",
        "ENTITY-SENSOR-MIB",
        "HOST-RESOURCES-MIB",
        "LLDP-MIB",
        "CISCO-MEMORY-POOL-MIB",
        "CISCO-PROCESS-MIB",
        "CISCO-ENHANCED-MEMPOOL-MIB",
        "HUAWEI-ENTITY-EXTENT-MIB",
        "HH3C-ENTITY-EXT-MIB",
        "TIMETRA-SYSTEM-MIB",
        "ALCATEL-IND1-HEALTH-MIB",
        "JUNIPER-CHASSIS-DEFINES-MIB",
        "HOST-RESOURCES-TYPES",
    ):
        assert module in mibs.modules, module
    for facts in mibs.modules.values():
        for name, node in facts["nodes"].items():
            assert mibs.oid(f"{facts['module']}::{name}") == tuple(
                int(x) for x in node["oid"].split(".")
            )


@pytest.mark.parametrize(
    ("name", "oid"),
    [
        ("sysUpTime", "1.3.6.1.2.1.1.3"),
        ("IF-MIB::ifOperStatus", "1.3.6.1.2.1.2.2.1.8"),
        ("ifHCInOctets", "1.3.6.1.2.1.31.1.1.1.6"),
        ("linkDown", "1.3.6.1.6.3.1.1.5.3"),
        ("entConfigChange", "1.3.6.1.2.1.47.2.0.1"),
        ("upsTrapOnBattery", "1.3.6.1.2.1.33.2.1"),
        ("upsAlarmOnBattery", "1.3.6.1.2.1.33.1.6.3.2"),
        ("ciscoEnvMonSuppStatusChangeNotif", "1.3.6.1.4.1.9.9.13.3.0.9"),
        ("ciscoConfigManEvent", "1.3.6.1.4.1.9.9.43.2.0.1"),
        ("jnxPowerSupplyFailure", "1.3.6.1.4.1.2636.4.1.1"),
        ("jnxPowerSupplyOK", "1.3.6.1.4.1.2636.4.2.1"),
        ("upsOnBattery", "1.3.6.1.4.1.318.0.5"),
        ("powerRestored", "1.3.6.1.4.1.318.0.9"),
        ("fgTrapHaSwitch", "1.3.6.1.4.1.12356.101.2.0.401"),
        ("bgpBackwardTransNotification", "1.3.6.1.2.1.15.0.2"),
        ("ssCpuIdle", "1.3.6.1.4.1.2021.11.11"),
        ("entPhySensorValue", "1.3.6.1.2.1.99.1.1.1.4"),
        ("hrProcessorLoad", "1.3.6.1.2.1.25.3.3.1.2"),
        ("lldpRemSysName", "1.0.8802.1.1.2.1.4.1.1.9"),
        ("cpmCPUTotal5minRev", "1.3.6.1.4.1.9.9.109.1.1.1.1.8"),
        ("ciscoMemoryPoolLowMemoryNotif", "1.3.6.1.4.1.9.9.48.2.0.1"),
        ("cpmCPUMemoryHCFree", "1.3.6.1.4.1.9.9.109.1.1.1.1.19"),
        ("cempMemPoolHCUsed", "1.3.6.1.4.1.9.9.221.1.1.1.1.18"),
        ("hwEntityMemUsage", "1.3.6.1.4.1.2011.5.25.31.1.1.1.1.7"),
        ("hwEntityFanState", "1.3.6.1.4.1.2011.5.25.31.1.1.10.1.7"),
        ("hwEntityExtTemperatureThresholdNotification", "1.3.6.1.4.1.2011.5.25.31.2.0.1"),
        ("hh3cEntityExtCpuUsage", "1.3.6.1.4.1.25506.2.6.1.1.1.1.6"),
        ("sgiKbMemoryAvailable", "1.3.6.1.4.1.6527.3.1.2.1.1.10"),
        ("healthModuleCpu1MinAvg", "1.3.6.1.4.1.6486.801.1.2.1.16.1.1.1.1.1.11"),
        ("healthDeviceCpu1MinAvg", "1.3.6.1.4.1.6486.800.1.2.1.16.1.1.1.14"),
        ("jnxProductNameSRX100", "1.3.6.1.4.1.2636.1.1.1.2.41"),
        ("upsHighPrecBatteryActualVoltage", "1.3.6.1.4.1.318.1.1.1.2.3.4"),
        ("uioSensorStatusAlarmStatus", "1.3.6.1.4.1.318.1.1.25.1.2.1.9"),
        ("fgSysMemUsage", "1.3.6.1.4.1.12356.101.4.1.4"),
        ("lldpRemTablesChange", "1.0.8802.1.1.2.0.0.1"),
        ("hrStorageRam", "1.3.6.1.2.1.25.2.1.2"),
    ],
)
def test_names_and_oids_of_the_shipped_set(name: str, oid: str) -> None:
    mibs = MibIndex.load()
    expected = tuple(int(x) for x in oid.split("."))
    assert mibs.oid(name) == expected
    named = mibs.name(expected)
    assert (
        named is not None and named.name == name.rsplit("::", maxsplit=1)[-1] and named.suffix == ()
    )


def test_an_instance_resolves_to_its_object_and_suffix() -> None:
    mibs = MibIndex.load()
    assert mibs.name((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 42)) == Named("IF-MIB", "ifAlias", (42,))
    assert mibs.name((1, 3, 6, 1, 2, 1, 1, 3, 0)) == Named("SNMPv2-MIB", "sysUpTime", (0,))
    assert mibs.oid("ifAlias.42") == (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 42)
    assert mibs.oid(".1.3.6.1.2") == (1, 3, 6, 1, 2)
    # a vendor OID under a known enterprise: the longest prefix the MIBs know
    assert mibs.name((1, 3, 6, 1, 4, 1, 9, 9, 999, 1)) == Named("CISCO-SMI", "ciscoMgmt", (999, 1))
    assert mibs.name((2, 5, 4)) is None


def test_objects_carry_syntax_enumerations_and_units_through_conventions() -> None:
    mibs = MibIndex.load()
    state = mibs.object("ciscoEnvMonSupplyState")
    assert (state.syntax, state.base) == ("CiscoEnvMonState", "INTEGER")
    assert state.label(3) == "critical"
    assert mibs.enum_label("entStateOper", 2) == "disabled"  # ENTITY-STATE-TC-MIB
    assert mibs.enum_label("ifPromiscuousMode", 1) == "true"  # SNMPv2-TC TruthValue
    assert mibs.enum_label("ifOperStatus", 99) is None
    assert mibs.enum_label("noSuchObject", 1) is None
    assert mibs.object("entStateAlarm").bits == {
        "unknown": 0,
        "underRepair": 1,
        "critical": 2,
        "major": 3,
        "minor": 4,
        "warning": 5,
        "indeterminate": 6,
    }
    assert mibs.object("upsSecondsOnBattery").units == "seconds"
    assert mibs.object("ifIndex").hint == "d"


def test_notifications_name_their_objects() -> None:
    mibs = MibIndex.load()
    added = mibs.notification((1, 3, 6, 1, 2, 1, 33, 2, 3))
    assert added is not None
    assert (added.module, added.name) == ("UPS-MIB", "upsTrapAlarmEntryAdded")
    assert added.objects == ("upsAlarmId", "upsAlarmDescr")
    apc = mibs.notification("upsOnBattery")
    assert apc is not None and apc.objects == ("mtrapargsString",)
    assert apc.summary == "WARNING: The UPS has switched to battery backup power."
    assert mibs.notification("ifOperStatus") is None  # an object, not a notification
    assert mibs.notification((1, 3, 6, 1, 6, 3, 1, 1, 5, 3, 7)) is None  # below one
    assert mibs.notification("nothingOfThatName") is None


def test_tables_follow_augments_to_their_index() -> None:
    mibs = MibIndex.load()
    x = mibs.table("ifXEntry")
    assert (x.name, x.index) == ("ifXTable", ("IF-MIB::ifIndex",))
    assert x.columns["ifHighSpeed"] == (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15)
    contents = mibs.table("1.3.6.1.4.1.2636.3.1.8")
    assert contents.index == (
        "JUNIPER-MIB::jnxContentsContainerIndex",
        "JUNIPER-MIB::jnxContentsL1Index",
        "JUNIPER-MIB::jnxContentsL2Index",
        "JUNIPER-MIB::jnxContentsL3Index",
    )
    with pytest.raises(UnknownName, match="ifDescr is a column, not a table"):
        mibs.table("ifDescr")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("noSuchThing", "no loaded MIB defines 'noSuchThing'"),
        ("NO-SUCH-MIB::ifIndex", "MIB module 'NO-SUCH-MIB' is not loaded"),
        ("IF-MIB::sysName", "IF-MIB defines no 'sysName'"),
        ("ifIndex.x", "the part after the name is not numeric"),
        ("1.3.6.x", "neither a name nor a numeric OID"),
    ],
)
def test_unknown_names_say_what_was_asked(name: str, message: str) -> None:
    with pytest.raises(UnknownName, match=message):
        MibIndex.load().oid(name)


def test_a_folder_that_is_not_compiled_mibs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "X.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"X.json: not a compiled MIB"):
        MibIndex.load([tmp_path])
    (tmp_path / "X.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="no module or nodes"):
        MibIndex.load([tmp_path])


def test_an_operators_folder_overrides_a_shipped_name(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "mine.my").write_text(
        f"MY-MIB DEFINITIONS ::= BEGIN\n{HEADER};\n"
        "myRoot OBJECT IDENTIFIER ::= { enterprises 64998 }\n"
        'linkDown NOTIFICATION-TYPE STATUS current DESCRIPTION "mine" ::= { myRoot 1 }\n'
        "END\n"
    )
    report = compile_folder(source, tmp_path / "out", known=MibIndex.load())
    assert report.errors == [] and set(report.compiled) == {"MY-MIB"}
    mibs = MibIndex.load([tmp_path / "out"])
    assert mibs.oid("linkDown") == (1, 3, 6, 1, 4, 1, 64998, 1)  # the operator's
    assert mibs.oid("IF-MIB::linkDown") == (1, 3, 6, 1, 6, 3, 1, 1, 5, 3)


def test_an_operator_mib_imports_conventions_and_objects_of_shipped_modules(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "port-ext.mib").write_text(
        "PORT-EXT-MIB DEFINITIONS ::= BEGIN\n"
        "IMPORTS OBJECT-TYPE, enterprises FROM SNMPv2-SMI\n"
        "    TruthValue FROM SNMPv2-TC\n"
        "    ifIndex, ifEntry FROM IF-MIB\n"
        "    CiscoEnvMonState FROM CISCO-ENVMON-MIB;\n"
        "portExt OBJECT IDENTIFIER ::= { enterprises 64997 }\n"
        "portExtTable OBJECT-TYPE SYNTAX SEQUENCE OF PortExtEntry MAX-ACCESS not-accessible\n"
        '    STATUS current DESCRIPTION "t" ::= { portExt 1 }\n'
        "portExtEntry OBJECT-TYPE SYNTAX PortExtEntry MAX-ACCESS not-accessible\n"
        '    STATUS current DESCRIPTION "e" AUGMENTS { ifEntry } ::= { portExtTable 1 }\n'
        "PortExtEntry ::= SEQUENCE { portExtHealthy TruthValue, portExtOptics CiscoEnvMonState }\n"
        "portExtHealthy OBJECT-TYPE SYNTAX TruthValue MAX-ACCESS read-only STATUS current\n"
        '    DESCRIPTION "h" ::= { portExtEntry 1 }\n'
        "portExtOptics OBJECT-TYPE SYNTAX CiscoEnvMonState MAX-ACCESS read-only STATUS current\n"
        '    DESCRIPTION "o" ::= { portExtEntry 2 }\n'
        "END\n"
    )
    report = compile_folder(source, tmp_path / "out", known=MibIndex.load())
    assert report.errors == []
    mibs = MibIndex.load([tmp_path / "out"])
    assert mibs.table("portExtTable").index == ("IF-MIB::ifIndex",)  # through AUGMENTS
    assert mibs.enum_label("portExtHealthy", 2) == "false"
    assert mibs.enum_label("portExtOptics", 4) == "shutdown"


def test_a_stub_of_shipped_facts_is_an_smi_module_pysmi_reads(tmp_path: Path) -> None:
    text = stub_source("IF-MIB", MibIndex.load())
    assert text.startswith("IF-MIB DEFINITIONS ::= BEGIN")
    assert "ifOperStatus OBJECT-TYPE SYNTAX INTEGER { up(1), down(2)" in text
    assert (
        'linkDown NOTIFICATION-TYPE STATUS current DESCRIPTION "" ::= { iso 3 6 1 6 3 1 1 5 3 }'
        in text
    )


def test_bad_mib_files_are_reported_by_file_and_reason(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "notes.txt").write_text("these are not MIBs\n")
    (source / "needs.mib").write_text(
        f"NEEDS-MIB DEFINITIONS ::= BEGIN\n{HEADER}    fooState FROM VENDOR-TC-MIB;\n"
        "needs OBJECT IDENTIFIER ::= { enterprises 64996 }\nEND\n"
    )
    (source / "broken.mib").write_text(
        f"BROKEN-MIB DEFINITIONS ::= BEGIN\n{HEADER};\n"
        "broken OBJECT IDENTIFIER ::= { enterprises\nEND\n"
    )
    (source / "fine.mib").write_text(
        f"FINE-MIB DEFINITIONS ::= BEGIN\n{HEADER};\n"
        "fine OBJECT IDENTIFIER ::= { enterprises 64995 }\nEND\n"
    )
    (source / "again.mib").write_text((source / "fine.mib").read_text())
    report = compile_folder(source, tmp_path / "out", known=MibIndex.load())
    assert set(report.compiled) == {"FINE-MIB"}  # the good one is written all the same
    errors = "\n".join(report.errors)
    assert f"{source / 'notes.txt'}: not a MIB module" in errors
    assert (
        f"{source / 'needs.mib'}: NEEDS-MIB imports from VENDOR-TC-MIB, which is neither in "
        f"{source} nor among the shipped MIBs" in errors
    )
    assert f"{source / 'broken.mib'}: BROKEN-MIB: line 6: Bad grammar" in errors
    assert "module FINE-MIB is also defined in" in errors
    assert len(report.errors) == 4


def test_cli_compile_and_lookup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "probe.mib").write_text(
        f"PROBE-MIB DEFINITIONS ::= BEGIN\n{HEADER};\n"
        "probeRoot OBJECT IDENTIFIER ::= { enterprises 64994 }\n"
        'probeState OBJECT-TYPE SYNTAX INTEGER { ok(1), alarm(2) } UNITS "state"\n'
        '    MAX-ACCESS read-only STATUS current DESCRIPTION "s" ::= { probeRoot 1 }\n'
        "END\n"
    )
    out = tmp_path / "out"
    assert main(["mib", "compile", str(source), "--out", str(out)]) == 0
    assert "1 modules compiled into" in capsys.readouterr().out
    assert main(["mib", "lookup", "probeState.0", "--mibs", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "PROBE-MIB::probeState.0"
    assert "  oid      1.3.6.1.4.1.64994.1.0" in printed
    assert "  kind     scalar (read-only)" in printed
    assert "  units    state" in printed
    assert "  enums    ok(1) alarm(2)" in printed
    assert main(["mib", "lookup", "1.3.6.1.4.1.2636.4.1.2"]) == 0
    fan = capsys.readouterr().out
    assert fan.startswith("JUNIPER-MIB::jnxFanFailure\n")
    assert "  objects  jnxContentsContainerIndex" in fan
    assert main(["mib", "lookup", "probeState"]) == 1  # not without its folder
    assert "enoc mib lookup: no loaded MIB defines 'probeState'" in capsys.readouterr().err
    (source / "bad.mib").write_text("BAD-MIB DEFINITIONS ::= BEGIN\nx ::= \nEND\n")
    assert main(["mib", "compile", str(source), "--out", str(out)]) == 1
    assert f"enoc mib compile: {source / 'bad.mib'}: BAD-MIB: line 2" in capsys.readouterr().err
    assert main(["mib", "compile", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
