"""Traps by name, with rules (agent.traprules), and SNMPv1 Trap-PDUs (RFC 3584 3.1).

The rule logic runs on a small MIB catalogue written here (the facts enoc.mibs
compiles, for a made-up module), so each behaviour is pinned independently of the
shipped MIB facts; tests/test_agent_trap_pairs.py sends the shipped pairs end to end.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from collectorkit import T0, Clock
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import FakeClock

from agent.config import check_agent
from agent.trapdefaults import SHIPPED_RULES
from agent.traprules import (
    MAX_VALUE,
    MAX_VARBINDS,
    MibCatalogue,
    RuleError,
    TrapRuleConfig,
    TrapRules,
    compile_rules,
    default_catalogue,
    resolve,
)
from agent.traps import Trap, TrapReceiver, TrapSource
from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.store import Store
from enoc.config import ConfigError, Duration
from enoc.mibs import MibIndex
from enoc.snmp import ber
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.message import (
    TrapV1Pdu,
    build_v1_message,
    encode_pdu,
    encode_trap_v1_pdu,
    parse_trap_v1_pdu,
)
from enoc.wire import Event, EventsMessage

# ---------------------------------------------------------------- a small catalogue

ENT = "1.3.6.1.4.1.99990"  # a made-up enterprise's MIB
FACTS: dict[str, Any] = {
    "module": "TEST-CHASSIS-MIB",
    "types": {
        "TestState": {"syntax": ["", "INTEGER"], "enums": {"ok": 1, "degraded": 2, "dead": 3}}
    },
    "nodes": {
        "testTable": {"oid": f"{ENT}.1.1", "kind": "table"},
        "testEntry": {"oid": f"{ENT}.1.1.1", "kind": "row", "index": []},
        "testDescr": {
            "oid": f"{ENT}.1.1.1.2",
            "kind": "column",
            "syntax": ["SNMPv2-TC", "DisplayString"],
        },
        "testState": {
            "oid": f"{ENT}.1.1.1.3",
            "kind": "column",
            "syntax": ["TEST-CHASSIS-MIB", "TestState"],
        },
        "testCause": {
            "oid": f"{ENT}.1.2",
            "kind": "scalar",
            "syntax": ["", "OBJECT IDENTIFIER"],
        },
        "testCauses": {"oid": f"{ENT}.3", "kind": "node"},
        "testCauseHeat": {"oid": f"{ENT}.3.1", "kind": "node"},
        "testCauseDust": {"oid": f"{ENT}.3.2", "kind": "node"},
        "testFailure": {
            "oid": f"{ENT}.0.1",
            "kind": "notification",
            "objects": [["TEST-CHASSIS-MIB", "testDescr"], ["TEST-CHASSIS-MIB", "testState"]],
        },
        "testRecovered": {
            "oid": f"{ENT}.0.2",
            "kind": "notification",
            "objects": [["TEST-CHASSIS-MIB", "testDescr"], ["TEST-CHASSIS-MIB", "testState"]],
        },
        "testStateChange": {
            "oid": f"{ENT}.0.3",
            "kind": "notification",
            "objects": [["TEST-CHASSIS-MIB", "testState"]],
        },
        "testCauseRaised": {"oid": f"{ENT}.0.4", "kind": "notification", "objects": []},
        "testCauseGone": {"oid": f"{ENT}.0.5", "kind": "notification", "objects": []},
        "testNotice": {"oid": f"{ENT}.0.6", "kind": "notification", "objects": []},
    },
}


def oid(text: str) -> Oid:
    return ber.parse_oid_text(text)


DESCR, STATE, CAUSE = oid(f"{ENT}.1.1.1.2"), oid(f"{ENT}.1.1.1.3"), oid(f"{ENT}.1.2")
FAILURE, RECOVERED, CHANGE = oid(f"{ENT}.0.1"), oid(f"{ENT}.0.2"), oid(f"{ENT}.0.3")
HEAT, DUST = oid(f"{ENT}.3.1"), oid(f"{ENT}.3.2")


@pytest.fixture(scope="module")
def catalogue() -> MibCatalogue:
    return MibCatalogue(MibIndex([*MibIndex.load().modules.values(), FACTS]))


def row(index: Oid, descr: str, state: int) -> list[tuple[Oid, int, object]]:
    return [
        ((*DESCR, *index), ber.OCTET_STRING, descr.encode()),
        ((*STATE, *index), ber.INTEGER, state),
    ]


RULES = [
    TrapRuleConfig("testFailure", alarm="testPart", index_of="testDescr", severity="critical"),
    TrapRuleConfig(
        "TEST-CHASSIS-MIB::testRecovered", alarm="testPart", index_of="testDescr", clear=True
    ),
    TrapRuleConfig(
        f"{ENT}.0.3",  # by its OID
        alarm="testPart",
        index_of="testState",
        state_of="testState",
        states={"ok": "clear", "dead": "major"},
        severity="minor",
    ),
    TrapRuleConfig(
        "testCauseRaised",
        value_of=["testCause"],
        state_of="testCause",
        states={"testCauseHeat": "critical"},
        resolve_after=Duration(600),
    ),
    TrapRuleConfig("testCauseGone", alarm="testCauseRaised", value_of=["testCause"], clear=True),
]


@pytest.fixture(scope="module")
def rules(catalogue: MibCatalogue) -> TrapRules:
    return TrapRules(catalogue, [resolve(r, catalogue, "test") for r in RULES])


# ---------------------------------------------------------------- naming and rules


def test_a_raise_and_its_clear_share_the_resource_and_are_named(rules: TrapRules) -> None:
    raised = rules.decide(FAILURE, row((4, 1, 0, 0), "PEM 0", 3))
    cleared = rules.decide(RECOVERED, row((4, 1, 0, 0), "PEM 0", 1))
    other = rules.decide(FAILURE, row((4, 2, 0, 0), "PEM 1", 3))
    assert raised.alarm and cleared.alarm
    assert raised.resource == cleared.resource == "alarm:testPart:4.1.0.0"
    assert other.resource == "alarm:testPart:4.2.0.0"
    assert (raised.raised, raised.severity) == (True, "critical")
    assert (cleared.raised, cleared.severity) == (False, "info")
    assert raised.attrs == {
        "trap": "testFailure",
        "trap_oid": f"{ENT}.0.1",
        "mib": "TEST-CHASSIS-MIB",
        "testDescr.4.1.0.0": "PEM 0",
        "testState.4.1.0.0": "dead",  # the enumeration's label
        "alarm": "testPart",
    }
    assert raised.message == (
        "testFailure (TEST-CHASSIS-MIB): testDescr.4.1.0.0 PEM 0, testState.4.1.0.0 dead"
    )
    assert cleared.message.startswith("testRecovered (TEST-CHASSIS-MIB): ")


def test_a_state_varbind_decides_raise_or_clear(rules: TrapRules) -> None:
    """By the label, a value the rule does not list raising at the rule's severity."""
    dead, degraded, ok = (
        rules.decide(CHANGE, [((*STATE, 7), ber.INTEGER, value)]) for value in (3, 2, 1)
    )
    assert (dead.raised, dead.severity) == (True, "major")
    assert (degraded.raised, degraded.severity) == (True, "minor")
    assert (ok.raised, ok.severity) == (False, "info")
    assert dead.resource == degraded.resource == ok.resource == "alarm:testPart:7"


def test_an_oid_valued_key_by_its_name_and_resolve_after(rules: TrapRules) -> None:
    heat = rules.decide(oid(f"{ENT}.0.4"), [((*CAUSE, 0), ber.OBJECT_IDENTIFIER, HEAT)])
    dust = rules.decide(oid(f"{ENT}.0.4"), [((*CAUSE, 0), ber.OBJECT_IDENTIFIER, DUST)])
    gone = rules.decide(oid(f"{ENT}.0.5"), [((*CAUSE, 0), ber.OBJECT_IDENTIFIER, HEAT)])
    assert heat.resource == gone.resource == "alarm:testCauseRaised:testCauseHeat"
    assert dust.resource == "alarm:testCauseRaised:testCauseDust"
    assert (heat.severity, dust.severity) == ("critical", "major")
    assert heat.attrs["resolve_after"] == 600.0 and "resolve_after" not in gone.attrs
    assert heat.attrs["testCause.0"] == "testCauseHeat"


def test_a_trap_without_a_rule_is_named_where_known_and_numeric_where_not(
    rules: TrapRules,
) -> None:
    notice = rules.decide(oid(f"{ENT}.0.6"), row((9,), "fan tray", 2))
    assert not notice.alarm
    assert (
        notice.message
        == "testNotice (TEST-CHASSIS-MIB): testDescr.9 fan tray, testState.9 degraded"
    )
    unknown = rules.decide(oid("1.3.6.1.4.1.99999.0.7"), [(oid("1.3.6.1.4.1.99999.1.1"), 4, b"x")])
    assert not unknown.alarm
    assert unknown.attrs == {
        "trap_oid": "1.3.6.1.4.1.99999.0.7",
        "1.3.6.1.4.1.99999.1.1": "x",
    }
    assert unknown.message == "trap 1.3.6.1.4.1.99999.0.7: 1.3.6.1.4.1.99999.1.1 x"


def test_a_missing_key_varbind_and_binary_octets(rules: TrapRules) -> None:
    bare = rules.decide(FAILURE, [])
    assert bare.resource == "alarm:testPart:-"
    mac = rules.decide(oid(f"{ENT}.0.6"), [((*DESCR, 1), 4, b"\x00\x1a\xff")])
    assert mac.attrs["testDescr.1"] == "00:1a:ff"
    padded = rules.decide(oid(f"{ENT}.0.6"), [((*DESCR, 1), 4, b"PSU 1\x00\x00")])
    assert padded.attrs["testDescr.1"] == "PSU 1"


def test_every_shipped_rule_resolves_against_the_shipped_mib_facts() -> None:
    catalogue = default_catalogue()
    missing = []
    for rule in SHIPPED_RULES:
        try:
            resolve(rule, catalogue, "shipped")
        except RuleError as exc:
            missing.append(f"{rule.notification}: {exc}")
    assert not missing


# ---------------------------------------------------------------- rule files


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_rule_file_adds_rules_and_replaces_shipped_ones(
    tmp_path: Path, catalogue: MibCatalogue
) -> None:
    path = write(
        tmp_path,
        """\
        rules:
          - notification: testFailure
            alarm: testPart
            index_of: testDescr
            severity: warning
          - notification: testNotice
            resolve_after: 10m
        """,
    )
    rules = compile_rules(catalogue, RULES, path)
    failure = rules.decide(FAILURE, row((1,), "PSU", 3))
    assert (failure.raised, failure.severity) == (True, "warning")  # replaced
    notice = rules.decide(oid(f"{ENT}.0.6"), [])
    assert notice.resource == "alarm:testNotice" and notice.attrs["resolve_after"] == 600.0
    assert rules.rules[RECOVERED].clear  # the shipped rest stays
    assert rules.rules[FAILURE].origin == str(path)


BAD_FILES = {
    "unknown notification": (
        """\
        rules:
          - notification: testFailure
          - notification: testFailur
        """,
        "rules.yaml:3: rules[1].notification: no MIB of the catalogue defines 'testFailur'",
    ),
    "unknown object": (
        """\
        rules:
          - notification: testFailure
            index_of: testDescription
        """,
        "rules.yaml:3: rules[0].index_of: no MIB of the catalogue defines the object "
        "'testDescription'",
    ),
    "unknown state": (
        """\
        rules:
          - notification: testStateChange
            state_of: testState
            states: {ok: clear, ded: major}
        """,
        "rules.yaml:4: rules[0].states.ded: not a value of testState; did you mean 'dead'? "
        "(its labels: ok, degraded, dead)",
    ),
    "states without state_of": (
        """\
        rules:
          - notification: testStateChange
            states: {ok: clear}
        """,
        "rules.yaml:2: rules[0]: states: give state_of and states together",
    ),
    "bad outcome": (
        """\
        rules:
          - notification: testStateChange
            state_of: testState
            states: {ok: fine}
        """,
        "rules.yaml:2: rules[0]: states: ok: expected one of clear, critical, major, minor, "
        "warning, info, got 'fine'",
    ),
    "bad severity": (
        """\
        rules:
          - notification: testFailure
            severity: dire
        """,
        'rules.yaml:3: rules[0].severity: expected one of "critical", "major", "minor", '
        '"warning", "info", got \'dire\'',
    ),
    "typo in a key": (
        """\
        rules:
          - notification: testFailure
            sevrity: minor
        """,
        "rules.yaml:3: rules[0].sevrity: unknown key; did you mean 'severity'?",
    ),
    "twice": (
        """\
        rules:
          - notification: testFailure
          - notification: TEST-CHASSIS-MIB::testFailure
        """,
        "rules.yaml:3: rules[1].notification: testFailure has a rule already (rules[0])",
    ),
    "clear resolving at once": (
        """\
        rules:
          - notification: testRecovered
            clear: true
            resolve_after: 1h
        """,
        "rules.yaml:2: rules[0]: resolve_after: a clearing rule resolves at once",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_rule_file_names_file_line_rule_and_key(
    tmp_path: Path, catalogue: MibCatalogue, case: str
) -> None:
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        compile_rules(catalogue, RULES, path)
    lines = [str(issue).replace(str(tmp_path) + "/", "") for issue in refused.value.issues]
    assert any(line.startswith(expected) for line in lines), lines


def test_a_clear_of_nothing_raised_is_a_warning(tmp_path: Path, catalogue: MibCatalogue) -> None:
    path = write(
        tmp_path,
        """\
        rules:
          - notification: testNotice
            alarm: nothingRaisesThis
            clear: true
        """,
    )
    rules = compile_rules(catalogue, [], path)  # a warning: it still loads
    assert rules.rules[oid(f"{ENT}.0.6")].clear


def test_check_config_names_the_rule_file_of_an_agent_config(tmp_path: Path) -> None:
    """`traps.rules` is read as the agent starts, with the shipped MIB facts: an unknown
    notification names the rule file, its line and the rule; a missing file, the key."""
    rules = write(tmp_path, "rules:\n  - notification: noSuchTrapAnywhere\n")
    inventory = write(tmp_path, "devices: []\ncredentials: {}\n", "devices.yaml")
    base = f"agent_id: a1\nsite: s1\nspool: {{path: {tmp_path}/spool}}\ninventory: {inventory}\n"
    config = write(tmp_path, base + f"traps: {{rules: {rules}}}\n", "agent.yaml")
    checked = check_agent(config)
    errors = [str(e) for e in checked.errors]
    assert errors == [
        f"{rules}:2: rules[0].notification: no MIB of the catalogue defines 'noSuchTrapAnywhere'"
    ]
    missing = write(tmp_path, base + "traps: {rules: nowhere.yaml}\n", "agent2.yaml")
    (error,) = check_agent(missing).errors
    assert error.key == "traps.rules" and "cannot read" in error.message
    # traps are named from the compiled folder too: one that does not read is the config's
    (tmp_path / "compiled").mkdir()
    (tmp_path / "compiled" / "BROKEN-MIB.json").write_text("{not json")
    broken = write(tmp_path, base + "mibs: compiled\ntraps: {}\n", "agent3.yaml")
    (error,) = check_agent(broken).errors
    assert error.key == "mibs" and "BROKEN-MIB.json: not a compiled MIB" in error.message


# ---------------------------------------------------------------- SNMPv1 Trap-PDUs

LINK_DOWN = (1, 3, 6, 1, 6, 3, 1, 1, 5, 3)
STANDARD = [(1, 3, 6, 1, 6, 3, 1, 1, 5, n) for n in range(1, 7)]


def v1_pdu(generic: int, specific: int = 0) -> bytes:
    header = TrapV1Pdu(oid(ENT), "192.0.2.7", generic, specific, 4242, [])
    varbind = ber.encode_varbind(
        ber.encode_oid((1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 3)), ber.encode_integer(3)
    )
    return encode_trap_v1_pdu(header, varbind)


@pytest.mark.parametrize("generic", range(7))
def test_v1_traps_map_to_notification_oids_as_rfc_3584_says(generic: int) -> None:
    data = v1_pdu(generic, 17)
    pdu = parse_trap_v1_pdu(data, 0, len(data))
    assert (pdu.enterprise, pdu.agent_addr, pdu.time_stamp) == (oid(ENT), "192.0.2.7", 4242)
    expected = (*oid(ENT), 0, 17) if generic == 6 else STANDARD[generic]
    assert pdu.notification_oid() == expected
    assert pdu.notification_varbinds() == [
        ((1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 3), ber.INTEGER, 3),
        ((1, 3, 6, 1, 6, 3, 18, 1, 3, 0), ber.IP_ADDRESS, "192.0.2.7"),  # snmpTrapAddress.0
        ((1, 3, 6, 1, 6, 3, 1, 1, 4, 3, 0), ber.OBJECT_IDENTIFIER, oid(ENT)),  # ...Enterprise
    ]


def test_bad_v1_trap_pdus_are_refused() -> None:
    data = v1_pdu(7)
    pdu = parse_trap_v1_pdu(data, 0, len(data))
    with pytest.raises(BerError, match="generic-trap 7"):
        pdu.notification_oid()
    data = v1_pdu(6)
    with pytest.raises(BerError, match="trailing"):
        parse_trap_v1_pdu(data + b"\x00", 0, len(data) + 1)
    # an agent-addr of 16 octets
    long_addr = data.replace(
        bytes((ber.IP_ADDRESS, 4)) + bytes((192, 0, 2, 7)), b"\x40\x10" + bytes(16)
    )
    fixed = bytes((ber.TRAP_V1, len(long_addr) - 2)) + long_addr[2:]
    with pytest.raises(BerError, match="agent-addr of 16 octets"):
        parse_trap_v1_pdu(fixed, 0, len(fixed))


def test_the_receiver_takes_v1_traps_with_the_devices_communities() -> None:
    got: list[Trap] = []
    rx = TrapReceiver(
        sources={"127.41.0.9": TrapSource("ups-1", frozenset({b"site-ro"}))},
        on_trap=got.append,
        clock=FakeClock(1000.0),
    )
    rx.datagram_received(build_v1_message(b"site-ro", v1_pdu(2)), ("127.41.0.9", 162))
    rx.datagram_received(build_v1_message(b"site-ro", v1_pdu(6, 5)), ("127.41.0.9", 162))
    rx.datagram_received(build_v1_message(b"public", v1_pdu(2)), ("127.41.0.9", 162))
    get = encode_pdu(ber.GET, 1, 0, 0, b"")
    rx.datagram_received(build_v1_message(b"site-ro", get), ("127.41.0.9", 162))
    rx.datagram_received(build_v1_message(b"site-ro", v1_pdu(9)), ("127.41.0.9", 162))
    assert [(t.device, t.version, t.trap_oid, t.inform) for t in got] == [
        ("ups-1", "1", LINK_DOWN, False),
        ("ups-1", "1", (*oid(ENT), 0, 5), False),
    ]
    assert got[0].varbinds[0] == ((1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 3), ber.INTEGER, 3)
    assert rx.stats.received == 2
    assert rx.stats.bad == {"unknown_community": 1, "unsupported_pdu": 1, "malformed": 1}


# ---------------------------------------------------------------- resolve_after


async def test_an_alarm_with_resolve_after_is_resolved_by_the_sweep_after_its_last_trap(
    tmp_path: Path,
) -> None:
    """A repeat keeps it open; silence for `resolve_after` resolves it; an alarm without
    the attr waits for its clear."""
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    clock = Clock()
    engine = Engine(store, IncidentsConfig(momentary_resolve_after=Duration(60)), now=clock)
    try:

        def raised(resource: str, n: int, attrs: dict[str, Any]) -> EventsMessage:
            event = Event(
                f"e{resource}{n}",
                clock.t,
                "ups-1",
                resource,
                "alarm",
                "raised",
                "critical",
                "upsTrapOnBattery (UPS-MIB)",
                "trap",
                attrs,
            )
            return EventsMessage("a1", "s1", "r", 1, clock.t, [event])

        await engine.on_events(raised("alarm:upsTrapOnBattery", 1, {"resolve_after": 300}))
        await engine.on_events(raised("alarm:jnxFan:4.1.0.0", 1, {}))
        clock.t = T0 + 240
        await engine.on_events(raised("alarm:upsTrapOnBattery", 2, {"resolve_after": 300}))
        clock.t = T0 + 500  # 260 s after the repeat
        assert await engine.sweep() == []
        clock.t = T0 + 541
        swept = await engine.sweep()
        assert [(c.change, c.incident.key.resource) for c in swept] == [
            ("resolved", "alarm:upsTrapOnBattery")
        ]
        assert swept[0].incident.resolved_by == "auto"
        (still,) = await engine.queries.incidents(state="open")
        assert still.key.resource == "alarm:jnxFan:4.1.0.0"
    finally:
        await store.close()


# ---------------------------------------------------------------- any varbinds

VALUES = st.one_of(
    st.integers(-(2**63), 2**64),
    st.binary(max_size=300),
    st.tuples(st.integers(0, 2), st.integers(0, 39)).flatmap(
        lambda head: st.lists(st.integers(0, 2**32), max_size=12).map(lambda t: (*head, *t))
    ),
    st.none(),
    st.text(max_size=20),
)
ROOTS = [DESCR, STATE, CAUSE, FAILURE, oid("1.3.6.1.2.1.33.1.6.2.1.2"), oid("1.3.6.1.4.1")]


@settings(max_examples=150, deadline=None)
@given(
    trap=st.sampled_from([FAILURE, RECOVERED, CHANGE, oid(f"{ENT}.0.4"), oid("1.3.6.1.4.1.9")]),
    varbinds=st.lists(
        st.tuples(
            st.sampled_from(ROOTS),
            st.lists(st.integers(0, 2**32), max_size=6),
            st.sampled_from([ber.INTEGER, ber.OCTET_STRING, ber.OBJECT_IDENTIFIER]),
            VALUES,
        ),
        max_size=40,
    ),
)
def test_any_varbinds_are_named_within_bounds(
    rules: TrapRules, trap: Oid, varbinds: list[tuple[Oid, list[int], int, object]]
) -> None:
    """Whatever a device sends, deciding never fails, and attrs stay wire values, at most
    MAX_VARBINDS varbinds and MAX_VALUE characters each."""
    decision = rules.decide(trap, [((*root, *rest), tag, v) for root, rest, tag, v in varbinds])
    assert all(isinstance(v, int | float | str) for v in decision.attrs.values())
    # beside the varbinds: what the trap is, and what its rule makes of it
    head = {"trap_oid", "trap", "mib", "alarm", "resolve_after"}
    assert len(decision.attrs.keys() - head) <= MAX_VARBINDS
    assert all(len(v) <= MAX_VALUE for v in decision.attrs.values() if isinstance(v, str))
    assert decision.alarm == (trap in rules.rules)


def test_a_reload_reads_the_rule_file_again_and_keeps_the_rules_on_a_mistake(
    tmp_path: Path,
) -> None:
    """SIGHUP's reload takes the rule file as it is now; a file with a mistake is refused
    and the rules in use stay (the agent keeps deciding traps as before)."""
    from agent.app import Agent

    rules_file = tmp_path / "trap-rules.yaml"

    def rule(resolve_after: str) -> None:
        rules_file.write_text(
            f"rules:\n  - {{notification: upsTrapOnBattery, resolve_after: {resolve_after}}}\n"
        )

    rule("10m")
    (tmp_path / "agent.yaml").write_text(
        "agent_id: nyc-1\nsite: nyc\nspool: {path: ./spool}\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"traps: {{listen: '127.0.0.1:10162', rules: {rules_file}}}\n"
        "credentials: {c: {version: '2c', community: public}}\n"
        "devices: [{name: ups1, address: 127.0.0.5, credentials: c}]\n"
    )
    agent = Agent(tmp_path / "agent.yaml")
    try:
        assert agent.trap_rules is not None
        found = agent.trap_rules.catalogue.notification("upsTrapOnBattery")
        assert found is not None
        on_battery = found.oid

        def resolve_after() -> object:
            assert agent.trap_rules is not None
            return agent.trap_rules.decide(on_battery, []).attrs["resolve_after"]

        assert resolve_after() == 600.0
        rule("20m")
        agent._do_reload()
        assert resolve_after() == 1200.0, "the file as it is now"
        rule("twenty minutes")
        agent._do_reload()
        assert resolve_after() == 1200.0, "a mistake keeps the rules in use"
    finally:
        asyncio.run(agent.publisher.close())
