"""The interface policy: which interfaces are polled and alerted on, by ifType, by name
regular expression, by role and per device; what first sight of a device raises."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from agent.app import load_agent
from agent.config import AgentConfig
from agent.edge import EdgeDetector
from agent.facts import DeviceTracker
from agent.poller import RawPoll
from collector import lineproto
from enoc.config import ConfigError, load_config
from enoc.ifpolicy import IF_TYPES, VIRTUAL_TYPES, InterfacePolicy, type_number
from enoc.inventory import Inventory, InventoryDevice
from enoc.snmp import ber
from enoc.wire import MetricsMessage, encode

BASE = "agent_id: nyc-1\nsite: nyc\nspool: {path: ./spool}\n"
ETHERNET, LOOPBACK, TUNNEL, L2VLAN, PROP_VIRTUAL = 6, 24, 131, 135, 53
T0 = 1_800_000_000.0


def config(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + text)
    return load_config(path, AgentConfig)


def test_the_numbers_of_the_virtual_types_are_the_iana_ones() -> None:
    # IANAifType-MIB: softwareLoopback(24), propVirtual(53), tunnel(131), l2vlan(135)
    assert [IF_TYPES[n] for n in ("softwareLoopback", "propVirtual", "tunnel", "l2vlan")] == [
        LOOPBACK,
        PROP_VIRTUAL,
        TUNNEL,
        L2VLAN,
    ]
    assert {LOOPBACK, PROP_VIRTUAL, TUNNEL, L2VLAN} <= {IF_TYPES[n] for n in VIRTUAL_TYPES}
    assert IF_TYPES["ethernetCsmacd"] == ETHERNET not in {IF_TYPES[n] for n in VIRTUAL_TYPES}


def test_by_default_everything_is_polled_and_virtual_interfaces_are_not_alerted_on() -> None:
    policy = InterfacePolicy()
    assert policy.classify(ETHERNET, "Gi0/1", "", "GigabitEthernet0/1") == "alert"
    for virtual in (LOOPBACK, PROP_VIRTUAL, TUNNEL, L2VLAN):
        assert policy.classify(virtual, "x", "", "x") == "quiet"
    assert policy.classify(None, "x", "", "x") == "alert", "no ifType: an unknown is alerted"


def test_policy_levels_override_key_by_key(tmp_path: Path) -> None:
    c = config(
        tmp_path,
        """\
interfaces:
  poll:
    exclude: [{ifName: "^(Null|Embedded-Service)"}]
  alert:
    exclude: [{ifAlias: "(?i)unused|spare"}]
    monitored: [{ifAlias: "(?i)^core"}]
  roles:
    access-switch:
      alert:
        include: []
        monitored: [{ifAlias: "(?i)uplink", ifName: "^Te"}]
""",
    )
    router = c.interfaces.for_device("pe-router")
    assert router.classify(ETHERNET, "Null0", "", "") == "skip"
    assert router.classify(ETHERNET, "Gi0/2", "spare", "") == "quiet"
    assert router.classify(ETHERNET, "Gi0/3", "Core to GVA", "") == "monitored"
    assert router.classify(ETHERNET, "Gi0/4", "customer", "") == "alert"
    switch = c.interfaces.for_device("access-switch")
    assert switch.classify(ETHERNET, "Null0", "", "") == "skip", "inherited from the agent"
    assert switch.classify(ETHERNET, "Gi1/0/7", "desk 7", "") == "quiet", "include: [] alerts none"
    assert switch.classify(ETHERNET, "Te1/1/1", "Uplink A", "") == "monitored"
    assert switch.classify(ETHERNET, "Gi1/1/1", "Uplink B", "") == "quiet", "both keys must match"
    assert switch.classify(ETHERNET, "Gi1/0/8", "Core", "") == "quiet", "the role's list replaces"
    # a device's own block, over its role's
    own = load_config(
        _write(
            tmp_path / "devices.yaml",
            """\
devices:
  - name: sw1
    address: 127.0.0.5
    credentials: c
    role: access-switch
    interfaces:
      poll: {exclude_types: [l2vlan, 131]}
      alert: {include: [{ifName: "^Gi1/0/4[0-8]$"}]}
credentials:
  c: {version: "2c", community: public}
""",
        ),
        Inventory,
    ).devices[0]
    sw1 = c.interfaces.for_device(own.role, own.interfaces)
    assert sw1.classify(L2VLAN, "Vlan10", "", "") == "skip"
    assert sw1.classify(TUNNEL, "Tu1", "", "") == "skip"
    assert sw1.classify(LOOPBACK, "Lo0", "", "") == "quiet", "still polled, still not alerted"
    assert sw1.classify(ETHERNET, "Gi1/0/44", "", "") == "alert"
    assert sw1.classify(ETHERNET, "Gi1/0/7", "", "") == "quiet"
    assert sw1.classify(ETHERNET, "Te1/1/1", "Uplink", "") == "monitored", "the role's"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_poll_include_takes_back_an_excluded_interface(tmp_path: Path) -> None:
    c = config(
        tmp_path,
        "interfaces:\n  poll:\n    exclude_types: [softwareLoopback]\n"
        '    include: [{ifDescr: "^Loopback0$"}]\n',
    )
    policy = c.interfaces.for_device("")
    assert policy.classify(LOOPBACK, "Lo1", "", "Loopback1") == "skip"
    assert policy.classify(LOOPBACK, "Lo0", "", "Loopback0") == "quiet"


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            'interfaces:\n  alert:\n    monitored:\n      - {ifAlias: "(uplink"}\n',
            7,
            "interfaces.alert.monitored[0]",
            "ifAlias: invalid regular expression '(uplink': missing ), unterminated subpattern",
        ),
        (
            "interfaces:\n  poll:\n    exclude_types: [tunel]\n",
            6,
            "interfaces.poll",
            "exclude_types: unknown ifType name 'tunel': did you mean 'tunnel'?",
        ),
        (
            "interfaces:\n  poll:\n    exclude: [{ifname: x}]\n",
            6,
            "interfaces.poll.exclude[0].ifname",
            "unknown key; did you mean 'ifName'?",
        ),
        (
            "interfaces:\n  alert:\n    exclude: [{}]\n",
            6,
            "interfaces.alert.exclude[0]",
            "a matcher needs ifName, ifAlias or ifDescr",
        ),
        (
            'interfaces:\n  roles:\n    core:\n      alert: {exclude: [{ifName: "*"}]}\n',
            7,
            "interfaces.roles.core.alert.exclude[0]",
            "ifName: invalid regular expression '*': nothing to repeat",
        ),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, text)
    issue = caught.value.issues[0]  # a matcher with an unknown key is also left empty
    assert (issue.file, issue.line, issue.key) == (str(tmp_path / "agent.yaml"), line, key)
    assert message in issue.message, issue.message


def test_a_bad_regex_in_the_inventory_names_the_inventory_file(tmp_path: Path) -> None:
    _write(tmp_path / "agent.yaml", BASE + "inventory: devices.yaml\n")
    _write(
        tmp_path / "devices.yaml",
        """\
credentials:
  c: {version: "2c", community: public}
devices:
  - name: r1
    address: 127.0.0.5
    credentials: c
    interfaces:
      alert:
        monitored: [{ifName: "xe-0/0/[0"}]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_agent(tmp_path / "agent.yaml")
    (issue,) = caught.value.issues
    assert issue.file == str(tmp_path / "devices.yaml")
    assert (issue.line, issue.key) == (9, "devices[0].interfaces.alert.monitored[0]")
    assert "ifName: invalid regular expression 'xe-0/0/[0'" in issue.message


def test_a_role_block_no_device_has_is_a_warning(tmp_path: Path) -> None:
    _write(
        tmp_path / "agent.yaml",
        BASE
        + "interfaces:\n  roles:\n    acces-switch: {alert: {include: []}}\n"
        + "credentials: {c: {version: '2c', community: public}}\n"
        + "devices: [{name: sw1, address: 127.0.0.5, credentials: c, role: access-switch}]\n",
    )
    _config, _inventory, warnings = load_agent(tmp_path / "agent.yaml")
    (warning,) = [w for w in warnings if w.key.startswith("interfaces")]
    assert warning.key == "interfaces.roles.acces-switch"
    assert "no device has this role (the inventory's: access-switch)" in warning.message


def test_type_numbers_are_taken_as_they_are_and_names_must_be_known() -> None:
    assert type_number(6) == 6 and type_number("ieee8023adLag") == 161
    with pytest.raises(ValueError, match="IANAifType number"):
        type_number(0)


# ------------------------------------------------------------------ a device's first poll


def poll(at: float, rows: dict[int, tuple[int, str, str, int, int]]) -> RawPoll:
    """rows: ifIndex -> (ifType, ifName, ifAlias, ifAdminStatus, ifOperStatus)."""
    tables: dict[str, dict[ber.Oid, tuple[int, object]]] = {
        "ifType": {},
        "ifName": {},
        "ifAlias": {},
        "ifAdminStatus": {},
        "ifOperStatus": {},
    }
    for index, (if_type, name, alias, admin, oper) in rows.items():
        tables["ifType"][(index,)] = (ber.INTEGER, if_type)
        tables["ifName"][(index,)] = (ber.OCTET_STRING, name.encode())
        tables["ifAlias"][(index,)] = (ber.OCTET_STRING, alias.encode())
        tables["ifAdminStatus"][(index,)] = (ber.INTEGER, admin)
        tables["ifOperStatus"][(index,)] = (ber.INTEGER, oper)
    return RawPoll(at=at, response_ms=1.0, scalars={"sysUpTime": int(at)}, tables=tables)


def test_first_sight_of_a_device_with_unused_ports_raises_only_for_the_monitored(
    tmp_path: Path,
) -> None:
    c = config(
        tmp_path,
        'interfaces:\n  poll: {exclude: [{ifName: "^Null"}]}\n'
        '  alert: {monitored: [{ifAlias: "(?i)uplink"}]}\n',
    )
    device = InventoryDevice(name="sw1", address="127.0.0.9", credentials="c")
    ids = itertools.count(1)
    edge = EdgeDetector("a1", new_id=lambda: f"e{next(ids)}")
    tracker = DeviceTracker(device, edge, policy=c.interfaces.for_device(""))
    rows = {
        1: (ETHERNET, "Gi0/1", "uplink A", 1, 1),
        2: (ETHERNET, "Gi0/2", "uplink B", 1, 2),  # monitored, down at first sight
        **{i: (ETHERNET, f"Gi0/{i}", "", 1, 2) for i in range(3, 11)},  # unused, down
        11: (ETHERNET, "Gi0/11", "", 2, 2),  # shut
        12: (L2VLAN, "Vlan99", "", 1, 2),  # a VLAN with no member up
        13: (ETHERNET, "Null0", "", 1, 2),  # not polled
        14: (ETHERNET, "Gi0/14", "desk", 1, 1),
    }
    sample, events = tracker.observe(poll(T0, rows))
    assert [(e.resource, e.state) for e in events] == [("if:2", "down")]
    assert sample.fields["ports_down"] == 10, "Gi0/2-10 and Vlan99 but not Null0"
    assert sample.fields["ports_down_baseline"] == 8, "Gi0/3-10: down since first seen"
    assert 13 not in [i.if_index for i in sample.interfaces]
    assert len(sample.interfaces) == 13
    # the second poll of a steady device: nothing
    sample, events = tracker.observe(poll(T0 + 60, rows))
    assert events == []
    assert (sample.fields["ports_down"], sample.fields["ports_down_baseline"]) == (10, 8)
    # a port that was up goes down: the incident; a VLAN going down: nothing
    rows[14] = (ETHERNET, "Gi0/14", "desk", 1, 2)
    rows[12] = (L2VLAN, "Vlan99", "", 1, 1)
    _sample, events = tracker.observe(poll(T0 + 120, rows))
    assert [(e.resource, e.state) for e in events] == [("if:14", "down")]
    rows[12] = (L2VLAN, "Vlan99", "", 1, 2)
    _sample, events = tracker.observe(poll(T0 + 180, rows))
    assert events == []
    assert tracker.if_class(12) == "quiet" and tracker.if_class(13) == "skip"
    assert tracker.if_class(99) is None


def test_the_ports_down_counts_take_the_collectors_one_pass_path() -> None:
    """Device fields are a free set of names: the counts ride where the C pass of the
    collector already takes them, and are written to the `device` measurement."""
    if lineproto._metricsjson is None:
        pytest.skip("collector._metricsjson is not built here")
    device = InventoryDevice(name="sw1", address="127.0.0.9", credentials="c")
    ids = itertools.count(1)
    tracker = DeviceTracker(device, EdgeDetector("a1", new_id=lambda: f"e{next(ids)}"))
    rows = {1: (ETHERNET, "Gi0/1", "", 1, 1), 2: (ETHERNET, "Gi0/2", "", 1, 2)}
    sample, _events = tracker.observe(poll(T0, rows))
    payload = encode(MetricsMessage("nyc-1", "nyc", "americas", 1, T0 + 1, samples=[sample]))
    fast = lineproto.payload_lines("nyc", "nyc-1", payload)
    assert fast is not None, "the one-pass path took the message"
    (device_line,) = [line for line in fast[1].split(b"\n") if line.startswith(b"device,")]
    assert b"ports_down=1i" in device_line and b"ports_down_baseline=1i" in device_line


def test_link_traps_follow_the_policy_and_the_admin_status_they_carry(tmp_path: Path) -> None:
    from agent.app import Agent
    from agent.traps import Trap
    from enoc.snmp.mib import IF_ADMIN_STATUS, IF_INDEX, LINK_DOWN, LINK_UP

    _write(
        tmp_path / "agent.yaml",
        BASE
        + "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        + "traps: {listen: '127.0.0.1:10162'}\n"  # traps need a trap config
        + "credentials: {c: {version: '2c', community: public}}\n"
        + "devices: [{name: sw1, address: 127.0.0.5, credentials: c}]\n",
    )
    agent = Agent(tmp_path / "agent.yaml")
    try:
        rows = {1: (ETHERNET, "Gi0/1", "", 1, 1), 2: (L2VLAN, "Vlan2", "", 1, 1)}
        assert agent.trackers["sw1"].observe(poll(T0, rows))[1] == []

        def trap(oid: ber.Oid, if_index: int, admin: int | None = None) -> list[tuple[str, str]]:
            varbinds: list[tuple[ber.Oid, int, object]] = [
                ((*IF_INDEX, if_index), ber.INTEGER, if_index)
            ]
            if admin is not None:
                varbinds.append(((*IF_ADMIN_STATUS, if_index), ber.INTEGER, admin))
            events = agent._trap_events("sw1", Trap("127.0.0.5", "2c", oid, varbinds, False, T0))
            return [(e.resource, e.state) for e in events]

        assert trap(LINK_DOWN, 2) == [], "a VLAN: polled, not alerted on"
        assert trap(LINK_DOWN, 1) == [("if:1", "down")]
        assert trap(LINK_DOWN, 1, admin=2) == [("if:1", "up")], "shut: cleared, not a fault"
        assert trap(LINK_UP, 1) == []
        assert trap(LINK_DOWN, 7) == [("if:7", "down")], "no poll saw it yet: news"
        # without an ifIndex a linkDown is still an event, a generic one
        bare = agent._trap_events("sw1", Trap("127.0.0.5", "2c", LINK_DOWN, [], False, T0))
        assert [e.kind for e in bare] == ["trap"]
    finally:
        asyncio.run(agent.publisher.close())


def test_a_reload_takes_a_devices_new_policy_afresh(tmp_path: Path) -> None:
    from agent.app import Agent

    def inventory(monitored: str) -> None:
        _write(
            tmp_path / "devices.yaml",
            "credentials: {c: {version: '2c', community: public}}\n"
            "devices:\n"
            "  - {name: sw1, address: 127.0.0.5, credentials: c,\n"
            f"     interfaces: {{alert: {{monitored: [{{ifName: '{monitored}'}}]}}}}}}\n"
            "  - {name: sw2, address: 127.0.0.6, credentials: c}\n",
        )

    inventory("^Gi0/1$")
    _write(
        tmp_path / "agent.yaml",
        BASE + "mqtt: {url: 'mqtt://127.0.0.1:1'}\ninventory: devices.yaml\n",
    )
    agent = Agent(tmp_path / "agent.yaml")
    try:
        rows = {1: (ETHERNET, "Gi0/1", "", 1, 2), 2: (ETHERNET, "Gi0/2", "", 1, 2)}
        _sample, events = agent.trackers["sw1"].observe(poll(T0, rows))
        assert [e.resource for e in events] == ["if:1"]
        kept = agent.trackers["sw2"]
        inventory("^Gi0/2$")
        agent._do_reload()
        assert agent.trackers["sw2"] is kept, "an unchanged device keeps its state"
        _sample, events = agent.trackers["sw1"].observe(poll(T0 + 60, rows))
        assert [e.resource for e in events] == ["if:2"], "taken afresh, under its new policy"
    finally:
        asyncio.run(agent.publisher.close())
