"""The schema vocabulary enoc.wire declares once (event kinds with their clearing states,
metric groups) against every place that speaks it: the agent's edge detector and profiles,
the incident engine, the decoders' structs, the line protocol and both C passes."""

from __future__ import annotations

import json
import logging
import os
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
from collectorkit import T0, TOKENS, Clock, collector_config, eventually, running_collector
from lineprotokit import parse_fields, split_line

from agent import profiles
from agent.edge import EdgeDetector
from agent.facts import DeviceTracker
from agent.mibgroups import Condition
from agent.poller import RawPoll
from agent.reach import PingEdge
from collector import lineproto, metrics_in
from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.metrics_in import Metrics, of, read
from collector.model import Incident, IncidentChange, IncidentKey
from collector.store import Store
from enoc import wire
from enoc.config import Duration
from enoc.inventory import InventoryDevice
from enoc.snmp import ber
from enoc.wire import (
    BGP_PEERS,
    DEVICE_FIELDS,
    EVENT_KINDS,
    INTERFACES,
    METRIC_GROUPS,
    POLL_GROUPS,
    ROWS,
    DeviceSample,
    Event,
    EventKindName,
    EventsMessage,
    MetricsMessage,
    Row,
    StatusMessage,
    WireError,
    decode,
    encode,
    topic,
)
from testbed.servers import Mosquitto

SITE, AGENT = "nyc", "nyc-1"
PURE = os.environ.get("ENOC_PURE_PYTHON", "") not in ("", "0")

# ------------------------------------------------------------------ event kinds


def agent_events() -> list[Event]:
    """Every event the agent's edge detector raises: each kind's problem and its clearing,
    from polls and from traps."""
    ids = iter(map(str, range(1000)))
    edge = PingEdge("a1", new_id=ids.__next__)
    out: list[Event] = []
    t = T0
    for answered in (False, False, False, True):  # three failed polls, then an answer
        t += 60
        out += edge.reachability("r1", answered, t)
    for oper_up in (True, False, True):  # the first poll is the baseline
        t += 60
        out += edge.link("r1", 3, "ge-0/0/3", True, oper_up, t)
    out += edge.link_trap("r1", 4, False, t + 1, "ge-0/0/4")
    out += edge.link_trap("r1", 4, True, t + 2, "ge-0/0/4")
    for established in (False, True):
        t += 60
        out += edge.bgp("r1", "192.0.2.1", established, t)
    out += edge.bgp_trap("r1", "192.0.2.2", False, t + 1)
    out += edge.bgp_trap("r1", "192.0.2.2", True, t + 2)
    for cpu in (95, 95, 95, 10, 10, 10):  # sustained for the rule's three polls
        t += 60
        out += edge.threshold("r1", "device", "cpu", cpu, t)
    for status in ("warning", "warning", "critical", "critical", "failed", "failed", "ok", "ok"):
        t += 60  # each held for the edge's two polls
        out += edge.conditions("r1", [Condition("sensor:PSU 1", status)], t)
    out += edge.alarm("r1", "alarm:jnxFan:4.1.0.0", True, t, "major", "jnxFanFailure", {})
    out += edge.alarm("r1", "alarm:jnxFan:4.1.0.0", False, t + 1, "info", "jnxFanOK", {})
    out += edge.reboot("r1", t, 120)
    out += edge.generic_trap("r1", "1.3.6.1.4.1.9.9.41.2.0.1", t, {"text": "fan"})
    # then r1 is pinged: SNMP silent while ping answers, ping degraded and back, then down by ping
    edge.pinged("r1")
    t += 10
    out += edge.ping("r1", 3, 3, 5.0, t)  # it answers ping
    for _ in range(3):  # and its SNMP agent is silent for three polls
        t += 10
        out += edge.reachability("r1", False, t)
    for received in (1, 1, 3, 3):  # 67 % loss for two rounds, then none
        t += 10
        out += edge.ping("r1", 3, received, 5.0, t)
    out += edge.reachability("r1", True, t + 1)  # SNMP answers again
    for received in (0, 0, 3):  # two missed rounds: down; then up
        t += 10
        out += edge.ping("r1", 3, received, 5.0, t)
    return out


def test_the_kind_type_is_the_declaration() -> None:
    """The agent's `_event` takes an EventKindName (mypy holds it to declared kinds)."""
    assert typing.get_args(EventKindName) == tuple(EVENT_KINDS)
    for name, kind in EVENT_KINDS.items():
        assert kind.name == name
        assert kind.clearing not in kind.problems and len(set(kind.problems)) == len(kind.problems)
    assert {"up", "ok", "established", "cleared"} == wire.CLEARING_STATES
    assert {"reboot", "trap"} == wire.MOMENTARY_KINDS
    assert {"reachability", "link", "bgp", "snmp"} == wire.STATE_KINDS


def test_every_event_the_agent_emits_is_declared_with_its_clearing_state() -> None:
    events = agent_events()
    seen: dict[str, set[str]] = {}
    for e in events:
        assert e.kind in EVENT_KINDS, f"the agent emits kind {e.kind!r}, not declared"
        kind = EVENT_KINDS[e.kind]
        assert e.state == kind.clearing or e.state in kind.problems, (e.kind, e.state)
        seen.setdefault(e.kind, set()).add(e.state)
    # and the declaration holds nothing the agent does not emit
    assert seen == {
        name: {*k.problems, *([k.clearing] if k.clearing else [])}
        for name, k in EVENT_KINDS.items()
    }
    # the detector starts and ends each stateful kind in its declared clearing state
    edge = EdgeDetector("a1")
    for name, kind in EVENT_KINDS.items():
        if kind.clearing is not None:
            assert edge._state("r9", f"x:{name}", kind.name).state == kind.clearing


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[Engine, Clock]]:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    clock = Clock()
    config = IncidentsConfig(reopen_within=Duration(300), momentary_resolve_after=Duration(600))
    yield Engine(store, config, now=clock), clock
    await store.close()


async def test_the_collector_clears_incidents_by_the_declaration(
    engine: tuple[Engine, Clock],
) -> None:
    """Each kind's problem from the agent opens an incident; its declared clearing state
    resolves it, whether it comes after the problem or is decided before it (the history's
    SQL finds it then); a momentary kind's incident is resolved by the sweep."""
    eng, clock = engine
    by_kind: dict[str, list[Event]] = {}
    for e in agent_events():
        if e.source == "poll" or e.kind in ("trap", "alarm"):
            by_kind.setdefault(e.kind, []).append(e)
    assert set(by_kind) == set(EVENT_KINDS)
    for n, (name, events) in enumerate(sorted(by_kind.items())):
        kind = EVENT_KINDS[name]
        if kind.clearing is None:
            (problem,) = events
            changes = await eng.on_events(EventsMessage(f"m{n}-1", f"m{n}", "r", 1, T0, [problem]))
            assert [c.change for c in changes] == ["opened"], name
            continue
        problem, clearing = events[0], events[-1]  # a kind of several problems: the first
        assert (problem.state, clearing.state) == (kind.problems[0], kind.clearing)
        for order, site in (((problem, clearing), f"s{n}"), ((clearing, problem), f"o{n}")):
            changes = []
            for e in order:
                clock.t += 1
                changes += await eng.on_events(EventsMessage(f"{site}-1", site, "r", 1, T0, [e]))
            assert [c.change for c in changes] == ["opened", "resolved"], (name, site)
            (found,) = await eng.queries.incidents(site=site)
            assert (found.state, found.resolved, found.resolved_by) == (
                "resolved",
                clearing.ts,
                "auto",
            ), (name, site)
    clock.t = T0 + 10_000
    swept = await eng.sweep()
    assert sorted(c.incident.key.kind for c in swept if c.change == "resolved") == sorted(
        wire.MOMENTARY_KINDS
    )


# ------------------------------------------------------------------ metric groups


def test_profiles_walk_the_declared_groups() -> None:
    assert profiles.GROUPS == POLL_GROUPS
    assert set(profiles.COLUMNS) == set(POLL_GROUPS)
    filled = {poll for group in METRIC_GROUPS for poll in group.polled}
    assert filled == set(POLL_GROUPS), "every profile group fills a metric group"


def test_the_decoders_and_the_encoder_hold_the_declared_groups() -> None:
    members = ["device", "address", "ts", *(g.member for g in METRIC_GROUPS), ROWS.member]
    assert list(wire._MetricsSample.__struct_fields__) == members
    sample = DeviceSample("d", "127.0.0.9", T0, rows=[Row("sensor", {"sensor": "t"})])
    body = json.loads(encode(MetricsMessage(AGENT, SITE, "r", 1, T0, samples=[sample])))
    assert list(body["samples"][0]) == members, "encoded in the order the C pass takes"
    assert lineproto._identity.decode(b'[1,"a","b","c"]') == (1, "a", "b", "c")
    assert tuple(t for _n, t in INTERFACES.identity) == (int, str, str, str)
    assert tuple(t for _n, t in BGP_PEERS.identity) == (str,)


def declared_payload(rows: int = 2) -> tuple[bytes, dict[str, list[list[object]]]]:
    """A metrics payload with every declared group, each row holding every declared field
    (integers and floats in turn), built from the declaration alone; and each group's
    rows' identities."""
    sample: dict[str, object] = {"device": "d1", "address": "127.0.0.9", "ts": T0 + 0.25}
    identities: dict[str, list[list[object]]] = {}
    for g, group in enumerate(METRIC_GROUPS):

        def fields(r: int, g: int = g, group: wire.MetricGroup = group) -> dict[str, object]:
            return {
                name: (100 * g + 10 * r + k) if k % 2 == 0 else (100 * g + r + k + 0.5)
                for k, name in enumerate(group.fields)
            }

        if not group.identity:
            sample[group.member] = fields(0)
            identities[group.member] = [[]]
            continue
        ids: list[list[object]] = [
            [r + 1 if kind is int else f"{name}-{r}" for name, kind in group.identity]
            for r in range(rows)
        ]
        sample[group.member] = [[*ids[r], fields(r)] for r in range(rows)]
        identities[group.member] = ids
    # rows of two measurements of their own, after the groups: numbers and a string
    sample[ROWS.member] = [
        [m, {"sensor": f"{m}-{r}", "class": "temperature"}, {"value": r + 0.5, "status": "ok"}]
        for m in ("sensor", "modem_signal")
        for r in range(rows)
    ]
    body = {
        "v": 1,
        "agent": AGENT,
        "site": SITE,
        "kind": "metrics",
        "rtc": "americas",
        "seq": 7,
        "sent": T0 + 1,
        "samples": [sample],
    }
    return json.dumps(body, separators=(",", ":")).encode(), identities


def general(payload: bytes, monkeypatch: pytest.MonkeyPatch, *, native: bool) -> Metrics:
    message = decode(topic(SITE, AGENT, "metrics"), payload)
    assert isinstance(message, MetricsMessage)
    if native:
        return of(message)
    with monkeypatch.context() as m:
        m.setattr(lineproto, "_native", None)  # the pure Python formatting, the reference
        return of(message)


def test_every_declared_group_is_written_whole_by_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload, identities = declared_payload()
    written = general(payload, monkeypatch, native=False)
    by_measurement: dict[str, list[tuple[dict[str, str], set[str]]]] = {}
    for line in written.lines.decode().split("\n")[:-1]:
        head, fields, _stamp = split_line(line)
        measurement, *tags = head.split(",")
        by_measurement.setdefault(measurement, []).append(
            (dict(t.split("=", 1) for t in tags), set(parse_fields(fields)))
        )
    own = {g.measurement for g in METRIC_GROUPS}
    assert set(by_measurement) == own | {"sensor", "modem_signal"}
    for measurement in ("sensor", "modem_signal"):
        assert [(t["sensor"], t["class"], f) for t, f in by_measurement[measurement]] == [
            (f"{measurement}-{r}", "temperature", {"value", "status"})
            for r in range(len(identities[INTERFACES.member]))
        ]
    for group in METRIC_GROUPS:
        lines = by_measurement[group.measurement]
        assert len(lines) == len(identities[group.member]), group.member
        for (tag_set, names), ids in zip(lines, identities[group.member], strict=True):
            assert names == set(group.fields), group.member
            for (tag, _kind), value in zip(group.identity, ids, strict=True):
                assert tag_set[tag] == str(value), (group.member, tag)


@pytest.mark.skipif(lineproto._metricsjson is None, reason=f"no C pass: {lineproto.NATIVE}")
def test_the_c_passes_and_python_agree_on_every_declared_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """collector._metricsjson takes a payload of every declared group (a group it does not
    know sends the payload the slow way, and this fails) and writes the points and polls the
    general path writes, formatted by collector._lineproto and by Python alike."""
    for rows in (1, 2, 5):
        payload, _ = declared_payload(rows)
        fast = lineproto.payload_lines(SITE, AGENT, payload)
        assert fast is not None, "the C pass leaves a payload of the declared groups"
        rtc, lines, points, polls = fast
        with_c = general(payload, monkeypatch, native=True)
        python = general(payload, monkeypatch, native=False)
        assert lines == with_c.lines == python.lines
        assert points == with_c.points == python.points == 1 + 4 * rows
        assert rtc == python.rtc
        assert polls == python.polls


def test_no_row_may_name_a_measurement_the_collector_writes() -> None:
    """Every measurement of the collector's own lines is reserved: a row naming one is
    refused, whatever else it holds."""
    payload, _ = declared_payload()
    lines = of_payload(payload).lines.decode().splitlines()
    lines += lineproto.agent_health(StatusMessage(AGENT, SITE, "r", 1, T0, health={"q": 1}))
    key = IncidentKey(SITE, "d1", "device", "reachability")
    incident = Incident(1, key, "major", "open", "down", T0, T0, rtc="r")
    lines.append(lineproto.incident_line(IncidentChange("opened", incident)))
    written = {line.split(",", 1)[0] for line in lines}
    own = written - {"sensor", "modem_signal"}
    assert own == {*(g.measurement for g in METRIC_GROUPS), "enoc_agent", "incident"}
    assert own <= set(ROWS.reserved)
    for measurement in sorted(own):
        body = json.loads(payload)
        body["samples"][0][ROWS.member][0][0] = measurement
        with pytest.raises(WireError, match=f"measurement '{measurement}'"):
            decode(topic(SITE, AGENT, "metrics"), json.dumps(body).encode())


def of_payload(payload: bytes) -> Metrics:
    message = decode(topic(SITE, AGENT, "metrics"), payload)
    assert isinstance(message, MetricsMessage)
    return of(message)


# ------------------------------------------------------------------ the agent's fields


def full_poll(at: float, step: int) -> RawPoll:
    """Every column of every profile group, for two interfaces (one a partial row) and a
    BGP peer; counters grow by `step` a poll."""
    ints = ber.INTEGER
    c32, c64, g32 = ber.COUNTER32, ber.COUNTER64, ber.GAUGE32
    row = {
        "ifDescr": (ber.OCTET_STRING, b"Gi0/1"),
        "ifType": (ints, 6),
        "ifSpeed": (g32, 1_000_000_000),
        "ifAdminStatus": (ints, 1),
        "ifOperStatus": (ints, 1),
        "ifInOctets": (c32, step),
        "ifInDiscards": (c32, step),
        "ifInErrors": (c32, step),
        "ifOutOctets": (c32, step),
        "ifOutDiscards": (c32, step),
        "ifOutErrors": (c32, step),
        "ifName": (ber.OCTET_STRING, b"Gi0/1"),
        "ifHCInOctets": (c64, step * 1000),
        "ifHCOutOctets": (c64, step * 1000),
        "ifHighSpeed": (g32, 1000),
        "ifAlias": (ber.OCTET_STRING, b"uplink"),
        "ifCounterDiscontinuityTime": (ber.TIMETICKS, 0),
    }
    assert set(row) == set(profiles.COLUMNS["interfaces"])
    tables: dict[str, dict[ber.Oid, tuple[int, object]]] = {
        name: {(1,): cell} for name, cell in row.items()
    }
    tables["ifDescr"][(2,)] = (ber.OCTET_STRING, b"listed only")
    ram = (ber.OBJECT_IDENTIFIER, profiles.HR_STORAGE_RAM)
    tables.update(
        hrProcessorLoad={(1,): (ints, 97)},
        hrStorageType={(1,): ram},
        hrStorageAllocationUnits={(1,): (ints, 1024)},
        hrStorageSize={(1,): (ints, 1000)},
        hrStorageUsed={(1,): (ints, 500)},
    )
    peer = (192, 0, 2, 1)
    for name, value in zip(profiles.COLUMNS["bgp"], (6, 2, 65001, step, step, 3600), strict=True):
        tables[name] = {peer: (ints if name != "bgpPeerInUpdates" else c32, value)}
    return RawPoll(at=at, response_ms=1.5, scalars={"sysUpTime": 100_000 + step}, tables=tables)


def test_every_field_the_agent_writes_is_declared_in_its_group() -> None:
    device = InventoryDevice(name="r1", address="127.0.0.9", credentials="c")
    tracker = DeviceTracker(device, EdgeDetector("a1"))
    tracker.observe(full_poll(T0, 1000))
    sample, _events = tracker.observe(full_poll(T0 + 60, 2000))
    written = {
        DEVICE_FIELDS.member: set(sample.fields),
        INTERFACES.member: {n for i in sample.interfaces for n in i.fields},
        BGP_PEERS.member: {n for b in sample.bgp for n in b.fields},
    }
    assert set(written) == {g.member for g in METRIC_GROUPS}
    for group in METRIC_GROUPS:
        undeclared = written[group.member] - set(group.fields)
        assert not undeclared, f"{group.member}: written but not declared: {undeclared}"
    # a full poll writes nearly all of them (the 32-bit octets give way to the HC ones)
    assert set(INTERFACES.fields) - written[INTERFACES.member] == {"ifInOctets", "ifOutOctets"}
    assert written[DEVICE_FIELDS.member] == set(DEVICE_FIELDS.fields)
    assert written[BGP_PEERS.member] == set(BGP_PEERS.fields)


# ------------------------------------------------------------------ the slow path counted


def test_a_payload_the_c_pass_leaves_is_counted_and_a_normal_one_is_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.collector")
    for kind in metrics_in.slow_path:
        monkeypatch.setitem(metrics_in.slow_path, kind, 0)
    payload, _ = declared_payload()
    body = json.loads(payload)
    body["samples"][0]["fields"]["model"] = "ASR-1001"  # a string: the general path's
    declined = json.dumps(body).encode()
    refused = payload.replace(b'"seq":7', b'"seq":-7')
    before = dict(metrics_in.slow_path)

    def grew() -> dict[str, int]:
        return {k: v - before[k] for k, v in metrics_in.slow_path.items() if v != before[k]}

    read(SITE, AGENT, payload)
    assert grew() == ({"no_extension": 1} if lineproto._metricsjson is None else {})
    before = dict(metrics_in.slow_path)
    taken = read(SITE, AGENT, declined)
    assert taken.points == 9  # the string written too
    assert grew() == {"declined" if lineproto._metricsjson is not None else "no_extension": 1}
    read(SITE, AGENT, declined)
    said = [r for r in caplog.records if "the C pass leaves" in r.getMessage()]
    assert len(said) == (1 if lineproto._metricsjson is not None else 0), "logged once"
    before = dict(metrics_in.slow_path)
    with pytest.raises(WireError, match="seq"):
        read(SITE, AGENT, refused)
    assert grew() == {"refused": 1}


@pytest.mark.servers
async def test_metrics_counts_the_payloads_the_c_pass_leaves(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    payload, _ = declared_payload()
    body = json.loads(payload)
    body["samples"][0]["fields"]["model"] = "ASR-1001"
    declined = json.dumps(body).encode()
    kind = "declined" if lineproto._metricsjson is not None else "no_extension"
    before = metrics_in.slow_path[kind]
    async with running_collector(collector_config(tmp_path, mosquitto.url)) as collector:
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="vocab-test") as client:
            for one in (payload, declined):
                await client.publish(topic(SITE, AGENT, "metrics"), one, qos=1)
        stats = collector.ingest.stats
        await eventually(lambda: stats.received["metrics"] >= 2, what="both read")
        headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{collector.http_port}/metrics", headers=headers) as r,
        ):
            text = await r.text()
    expected = before + (1 if kind == "declined" else 2)
    assert f'enoc_collector_metrics_slow_path_total{{kind="{kind}"}} {expected}\n' in text
