"""Ping (agent.ping, agent.reach; DESIGN "Ping"): Telegraf's fields, reachability from
ping and SNMP together on an injected clock, the config, and real packets: a measured
round trip and loss and down within 30 s of a dropped address (in a network namespace
of their own: tests/pingns.py), an SNMP agent silent while its host answers, and the
`ping` rows in a real InfluxDB through a real collector."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from collectorkit import Clock, collector_config, eventually, running_collector
from test_collector_rows import payload, sample

from agent.app import Agent
from agent.config import AgentConfig, PingConfig
from agent.edge import EdgeDetector
from agent.ping import Pinger, PingResult, unprivileged_allowed
from agent.reach import PingEdge, PingLimits
from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.metrics_in import of, read
from collector.recent import RecentValues
from collector.store import Store
from enoc import wire
from enoc.config import ConfigError, Duration, load_config
from enoc.wire import DeviceSample, Event, EventsMessage, MetricsMessage, encode
from testbed.servers import InfluxDB1, Mosquitto

HERE = Path(__file__).parent
TELEGRAF_FIELDS = {
    *("average_response_ms", "minimum_response_ms", "maximum_response_ms"),
    *("standard_deviation_ms", "percent_packet_loss", "packets_transmitted"),
    *("packets_received", "result_code"),
}
T0 = 1_790_000_000.0


# ------------------------------------------------------------------ Telegraf's fields


def test_a_round_has_telegrafs_fields() -> None:
    r = PingResult("r1", "127.0.0.5", T0, 4, (1.0, 2.0, 3.0))
    assert r.fields() == {
        "packets_transmitted": 4,
        "packets_received": 3,
        "percent_packet_loss": 25.0,
        "result_code": 0,
        "minimum_response_ms": 1.0,
        "average_response_ms": 2.0,
        "maximum_response_ms": 3.0,
        "standard_deviation_ms": 0.816,  # the population's, as Telegraf computes it
    }
    assert set(r.fields()) == TELEGRAF_FIELDS
    row = r.row()
    assert (row.measurement, row.tags) == ("ping", {"url": "127.0.0.5"})
    # no answer: no round-trip fields; a failed ping: its result_code alone
    assert PingResult("r1", "127.0.0.5", T0, 3).fields() == {
        "packets_transmitted": 3,
        "packets_received": 0,
        "percent_packet_loss": 100.0,
        "result_code": 0,
    }
    assert PingResult("r1", "nowhere.invalid", T0, code=1).fields() == {"result_code": 1}
    assert PingResult("r1", "127.0.0.5", T0, code=2).fields() == {"result_code": 2}


def test_unprivileged_sockets_follow_the_ping_group_range(tmp_path: Path) -> None:
    path = tmp_path / "ping_group_range"
    path.write_text("1\t0\n")  # the kernel's default: nobody
    assert not unprivileged_allowed(path, [0, 100])
    path.write_text("100\t200\n")
    assert unprivileged_allowed(path, [0, 150]) and not unprivileged_allowed(path, [0, 201])
    assert not unprivileged_allowed(tmp_path / "hidden", [0])  # ProcSubset=pid hides it


async def test_a_name_that_does_not_resolve_is_result_code_1() -> None:
    rounds: list[list[PingResult]] = []
    pinger = Pinger(
        PingConfig(timeout=Duration(0.2)), lambda: [("x", "no-such-host.invalid")], rounds.append
    )
    await pinger.open()
    (r,) = await pinger.round()
    assert (r.code, r.fields()) == (1, {"result_code": 1}) and pinger.stats.errors == 1


# ------------------------------------------------------------------ reachability, injected clock


def states(events: list[Event]) -> list[tuple[str, str, float]]:
    return [(e.kind, e.state, e.ts) for e in events]


def test_down_after_two_missed_rounds_with_no_snmp_answer_since() -> None:
    """60 s polls, 10 s rounds: the device goes silent at T0 + 35, down is stamped at the
    first missed round and known at the second, 15 s after; not three polls later."""
    edge = PingEdge("a1")
    edge.pinged("r1")
    out: list[Event] = []
    out += edge.reachability("r1", True, T0)
    known: float | None = None
    for t in range(0, 120, 10):
        answered = not 35 <= t < 100
        new = edge.ping("r1", 3, 3 if answered else 0, 1.0, T0 + t)
        if t % 60 == 0 and t:
            new += edge.reachability("r1", answered, T0 + t)
        if new and known is None:
            known = T0 + t
        out += new
    assert states(out) == [
        ("reachability", "down", T0 + 40),
        ("reachability", "up", T0 + 100),
    ]
    assert known == T0 + 50 and out[0].severity == "critical"
    assert out[0].message == "no answer to ping for 2 rounds, nor to SNMP since"


def test_snmp_silent_while_ping_answers_is_not_down() -> None:
    edge = PingEdge("a1")
    edge.pinged("r1")
    out = edge.ping("r1", 3, 3, 1.0, T0)
    for n in range(1, 4):
        out += edge.reachability("r1", False, T0 + 60 * n)
        out += edge.ping("r1", 3, 3, 1.0, T0 + 60 * n + 5)
    assert states(out) == [("snmp", "silent", T0 + 60)]
    assert out[0].message.startswith("SNMP agent silent, host up") and out[0].resource == "device"
    assert "no SNMP answer for 3 polls" in out[0].message
    out = edge.reachability("r1", True, T0 + 240)
    assert states(out) == [("snmp", "ok", T0 + 240)]
    # then the host dies: ping and SNMP both silent is down
    out = []
    for t in (250, 260):
        out += edge.ping("r1", 3, 0, 0.0, T0 + t)
    assert states(out) == [("reachability", "down", T0 + 250)]


def test_a_host_back_from_down_is_not_called_snmp_silent_before_its_next_poll() -> None:
    edge = PingEdge("a1")
    edge.pinged("r1")
    out = edge.ping("r1", 3, 3, 1.0, T0)
    for t in (10, 20):
        out += edge.ping("r1", 3, 0, 0.0, T0 + t)
    for n in (1, 2, 3):
        out += edge.reachability("r1", False, T0 + 20 + n)
    out += edge.ping("r1", 3, 3, 1.0, T0 + 30)
    assert states(out) == [("reachability", "down", T0 + 10), ("reachability", "up", T0 + 30)]


def test_snmp_without_ping_is_noted_and_decided_by_the_polls_as_before() -> None:
    """ICMP filtered from the start: the polls alone decide, as without ping."""
    edge = PingEdge("a1")
    edge.pinged("r1")
    plain = EdgeDetector("a1", new_id=iter(map(str, range(99))).__next__)
    edge.new_id = iter(map(str, range(99))).__next__
    out: list[Event] = []
    expected: list[Event] = []
    for n, answered in enumerate([True, True, False, False, False, True]):
        t = T0 + 60 * n
        out += edge.ping("r1", 3, 0, 0.0, t)
        out += edge.ping("r1", 3, 0, 0.0, t + 10)
        out += edge.reachability("r1", answered, t + 20)
        expected += plain.reachability("r1", answered, t + 20)
        if n == 1:
            assert edge.signals["r1"].filtered  # noted (the log, the health's ping_filtered)
    assert (
        states(out)
        == states(expected)
        == [
            ("reachability", "down", T0 + 140),
            ("reachability", "up", T0 + 320),
        ]
    )


def test_ping_that_stops_while_snmp_answers_is_icmp_filtered_not_down() -> None:
    edge = PingEdge("a1")
    edge.pinged("r1")
    out = edge.ping("r1", 3, 3, 1.0, T0)
    out += edge.reachability("r1", True, T0 + 1)
    out += edge.ping("r1", 3, 0, 0.0, T0 + 10)
    out += edge.reachability("r1", True, T0 + 15)  # SNMP answers after the first miss
    out += edge.ping("r1", 3, 0, 0.0, T0 + 20)
    assert out == [] and edge.signals["r1"].filtered


def test_a_device_not_pinged_is_judged_as_without_ping() -> None:
    ids = iter(map(str, range(999)))
    edge, plain = PingEdge("a1", new_id=ids.__next__), EdgeDetector("a1", new_id=ids.__next__)
    outcomes = [True, False, False, True, False, False, False, False, True] * 3
    got = [e for n, a in enumerate(outcomes) for e in edge.reachability("r1", a, T0 + 60 * n)]
    want = [e for n, a in enumerate(outcomes) for e in plain.reachability("r1", a, T0 + 60 * n)]
    assert states(got) == states(want) and len(got) == 6


def test_degraded_has_hysteresis_on_loss_and_round_trip() -> None:
    edge = PingEdge("a1", limits=PingLimits(rounds=2))
    edge.pinged("r1")
    rounds = [  # (received of 10, average ms)
        (7, 20.0),  # 30 % loss: degraded once held for two rounds
        (7, 20.0),
        (9, 20.0),  # 10 %: under 20 but not under 5, still degraded
        (9, 20.0),
        (10, 250.0),  # no loss, 250 ms: not under 200, still degraded
        (10, 150.0),
        (10, 150.0),  # both under their clear levels for two rounds: ok
        (10, 320.0),
        (10, 330.0),  # round trip at or above 300 ms: degraded
    ]
    out = [
        e for n, (got, ms) in enumerate(rounds) for e in edge.ping("r1", 10, got, ms, T0 + 10 * n)
    ]
    assert states(out) == [
        ("ping", "degraded", T0),
        ("ping", "ok", T0 + 50),
        ("ping", "degraded", T0 + 70),
    ]
    assert out[0].message == "ping loss 30 % at or above 20 %"
    assert out[2].message == "ping round trip 330.0 ms at or above 300 ms"  # the latest
    assert out[1].severity == "info" and out[0].resource == "ping"


# ------------------------------------------------------------------ config


BASE = "agent_id: nyc-1\nsite: nyc\nspool: {path: ./spool}\n"


def test_ping_config_defaults_and_errors_that_point(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE)
    ping = load_config(path, AgentConfig).ping
    assert ping.enabled and (float(ping.interval), ping.count, float(ping.timeout)) == (10, 3, 1)
    assert ping.limits() == PingLimits(20, 5, 300, 200, 2, 2)
    path.write_text(BASE + "ping:\n  thresholds: {rtt_ms: {degraded: 150, clear: 100}}\n")
    assert load_config(path, AgentConfig).ping.limits().rtt_degraded == 150
    bad = """
ping:
  count: 0
  intervall: 5s
  thresholds:
    loss_pct: {degraded: 5, clear: 20}
"""
    path.write_text(BASE + bad.lstrip())
    with pytest.raises(ConfigError) as caught:
        load_config(path, AgentConfig)
    lines = str(caught.value).splitlines()
    assert f"{path}:5: ping: count: expected 1 to 100, got 0" in lines
    assert any(line.startswith(f"{path}:6: ping.intervall: unknown key") for line in lines)
    assert (
        f"{path}:8: ping.thresholds.loss_pct: expected 0 <= clear <= degraded (5), got clear 20"
        in lines
    )
    path.write_text(BASE + "ping: {interval: 2s}\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml:4: ping: count x timeout .*\(3\.4s\)"):
        load_config(path, AgentConfig)


# ------------------------------------------------------------------ the collector's window


def test_a_ping_sample_is_no_poll_for_the_device_page() -> None:
    """A sample of `ping` rows and no device fields leaves the page's latest poll as it
    was, by the C pass and by the general path alike."""
    ping = PingResult("r1", "127.0.0.7", T0 + 10, 3, (1.0,)).row()
    polled = payload(sample([], ts=T0))
    pinged = payload(DeviceSample("r1", "127.0.0.7", T0 + 10, rows=[ping]))
    for general in (False, True):
        window = RecentValues()
        for data in (polled, pinged):
            metrics = read("nyc", "nyc-1", data)
            if general:
                message = wire.decode(wire.topic("nyc", "nyc-1", "metrics"), data)
                assert isinstance(message, MetricsMessage)
                metrics = of(message)
            window.add(metrics)
            assert b"ping,agent_host=127.0.0.7" in metrics.lines or data is polled
        page = window.device("nyc", "r1")
        assert page is not None and page["ts"] == T0 and page["history"]["t"] == [T0]
        assert page["fields"]["cpu"] == 12


# ------------------------------------------------------------------ real packets


@pytest.mark.servers
async def test_an_snmp_agent_silent_on_a_host_that_answers_ping(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The simulator's `unreachable` fault silences a device's SNMP agent; its address
    still answers ping (the kernel): "SNMP agent silent, host up", never down."""
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        ping = {"enabled": True, "interval": "1s", "count": 2, "timeout": "0.3s"}
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval="1s", extra={"ping": ping}
        )
        silent = site.devices[1]
        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda lst: (
                    all(agent.edge.signals[d.name].snmp_at > 0 for d in site.devices)
                    and all(s.answered for s in agent.edge.signals.values())
                ),
                what="every device polled and pinged",
            )
            silent.faults.unreachable = True

            def events(lst: Listener) -> list[Event]:
                return [e for m in lst.events() for e in m.events if e.device == silent.name]

            await listener.wait_for(
                lambda lst: any(e.kind == "snmp" for e in events(lst)), what="snmp silent"
            )
            silent.faults.unreachable = False
            await listener.wait_for(
                lambda lst: [e.state for e in events(lst) if e.kind == "snmp"] == ["silent", "ok"],
                what="snmp ok again",
            )
            health = agent.health()
    (event,) = [e for e in events(listener) if e.state == "silent"]
    assert event.message.startswith("SNMP agent silent, host up (answers ping;")
    assert event.severity == "major"
    assert not [e for e in events(listener) if e.kind == "reachability"]
    rows = [
        (s.address, r)
        for m in listener.metrics()
        for s in m.samples
        if not s.fields
        for r in s.rows
    ]
    assert rows and all(r.measurement == "ping" and r.tags == {"url": a} for a, r in rows)
    assert all(r.fields["result_code"] == 0 for _a, r in rows)
    assert int(health["ping_rounds"]) >= 3 and health["ping_filtered"] == 0


def influx_points(server: InfluxDB1, query: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"q": query, "db": "enoc", "epoch": "ms"})
    with urllib.request.urlopen(f"{server.url}/query?{params}", timeout=10) as response:
        body = json.load(response)
    out = []
    for series in body["results"][0].get("series", []):
        for values in series["values"]:
            out.append(
                {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            )
    return out


@pytest.mark.servers
async def test_ping_rows_land_in_influxdb_with_telegrafs_tags_and_fields(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    """A real round (127.0.0.1 and a name that does not resolve) through MQTT and the
    collector: one `ping` point a device, tagged url, device, site, rtc and agent_host."""
    influxdb1.create_database("enoc")
    v1 = {"url": influxdb1.url, "api": "v1", "database": "enoc", "flush_interval": "0.2s"}
    rounds: list[list[PingResult]] = []
    targets = [("r1", "127.0.0.1"), ("r2", "no-such-host.invalid")]
    pinger = Pinger(
        PingConfig(timeout=Duration(0.5), packet_interval=Duration(0.05)),
        lambda: targets,
        rounds.append,
    )
    await pinger.open()
    results = await pinger.round()
    samples = [DeviceSample(r.device, r.address, r.at, rows=[r.row()]) for r in results]
    message = MetricsMessage("nyc-1", "nyc", "americas", 1, time.time(), samples)
    config = collector_config(tmp_path, mosquitto.url, extra={"influxdb": v1})
    async with running_collector(config):
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="ping-test") as client:
            await client.publish(wire.topic("nyc", "nyc-1", "metrics"), encode(message), qos=1)
        query = 'SELECT * FROM "ping" GROUP BY *'
        await eventually(lambda: len(influx_points(influxdb1, query)) == 2, what="ping points")
    points = {p["device"]: p for p in influx_points(influxdb1, query)}
    tags = {"agent_host", "device", "rtc", "site", "url"}
    up = {k: v for k, v in points["r1"].items() if v is not None}
    assert set(up) == {"time", *tags, *TELEGRAF_FIELDS}
    assert (up["url"], up["agent_host"], up["site"], up["rtc"]) == (
        "127.0.0.1",
        "127.0.0.1",
        "nyc",
        "americas",
    )
    assert (up["packets_transmitted"], up["packets_received"], up["result_code"]) == (3, 3, 0)
    assert up["percent_packet_loss"] == 0 and 0 < up["average_response_ms"] < 500
    assert up["minimum_response_ms"] <= up["average_response_ms"] <= up["maximum_response_ms"]
    assert up["time"] == round(results[0].at * 1000)
    gone = {k: v for k, v in points["r2"].items() if v is not None}
    assert set(gone) == {"time", *tags, "result_code"} and gone["result_code"] == 1


# ------------------------------------------------------------------ a namespace of their own


def in_namespace(scenario: str, tmp_path: Path) -> dict[str, Any]:
    """Run tests/pingns.py `scenario` under `unshare -n`; skip where none can be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("no unshare or ip (util-linux, iproute2): no network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode().strip()}")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(HERE / "pingns.py"), scenario, str(tmp_path)],
        capture_output=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
    return result


@pytest.mark.servers
def test_round_trip_and_loss_are_measured_on_shaped_packets(tmp_path: Path) -> None:
    """60 requests to an address 50 ms away that loses 30 % of them."""
    result = in_namespace("measure", tmp_path)
    fields, expected = result["fields"], result["expected_ms"]
    assert fields["packets_transmitted"] == 60 and fields["result_code"] == 0
    assert 10 <= fields["percent_packet_loss"] <= 55, fields
    assert fields["packets_received"] == round(60 * (1 - fields["percent_packet_loss"] / 100))
    assert expected - 1 <= fields["minimum_response_ms"], fields
    assert abs(fields["average_response_ms"] - expected) <= 15, fields
    # the slowest answer waits on the machine's load too: the bound catches a wrong unit
    assert fields["average_response_ms"] <= fields["maximum_response_ms"] < expected * 20, fields


@pytest.mark.servers
def test_down_within_30_s_of_a_dropped_address_with_60_s_polls(tmp_path: Path) -> None:
    """The agent's defaults (10 s rounds, 3 requests, 1 s timeout) and 60 s polls: the
    device whose answers are dropped is down within 30 s; no other device is."""
    result = in_namespace("down", tmp_path)
    assert result["answered_before"], "the device answered ping and SNMP before the drop"
    dropped, victim = result["dropped"], result["victim"]
    events = [(at, e) for at, e in result["events"] if e["kind"] == "reachability"]
    assert [(e["device"], e["state"]) for _at, e in events] == [(victim, "down")], events
    at, event = events[0]
    assert at - dropped < 30, f"down declared {at - dropped:.1f} s after the drop"
    assert dropped <= event["ts"] < at
    assert event["message"] == "no answer to ping for 2 rounds, nor to SNMP since"


def test_the_ping_part_fails_its_start_without_a_socket(tmp_path: Path) -> None:
    """As a user with no CAP_NET_RAW and outside net.ipv4.ping_group_range, the start
    fails and names the fixes (setpriv drops root here; skipped where it cannot)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another user")
    if unprivileged_allowed(gids=[65534]):
        pytest.skip("net.ipv4.ping_group_range lets nobody ping: no failure to see")
    code = (
        "import asyncio\n"
        "from agent.config import PingConfig\n"
        "from agent.ping import Pinger, PingUnavailable\n"
        "p = Pinger(PingConfig(), lambda: [], lambda r: None)\n"
        "try:\n"
        "    asyncio.run(p.open())\n"
        "except PingUnavailable as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *("--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", code),
        ],
        capture_output=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        cwd=tmp_path,
        timeout=60,
    )
    out = done.stdout.decode()
    assert "cannot open an ICMP socket" in out and "ping.enabled: false" in out, done.stderr


def test_a_device_with_ping_false_is_not_pinged(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(
        "credentials:\n  c: {version: '2c', community: public}\n"
        "devices:\n"
        "  - {name: a, address: 127.0.0.5, credentials: c}\n"
        "  - {name: b, address: 127.0.0.6, credentials: c, ping: false}\n"
    )
    config = agent_config(
        tmp_path, "mqtt://127.0.0.1:1", inventory, extra={"ping": {"enabled": True}}
    )
    agent = Agent(config)
    assert agent._ping_targets() == [("a", "127.0.0.5")]
    # a reload that turns it the other way round: a device's `ping` is part of the device
    inventory.write_text(
        "credentials:\n  c: {version: '2c', community: public}\n"
        "devices:\n"
        "  - {name: a, address: 127.0.0.5, credentials: c, ping: false}\n"
        "  - {name: b, address: 127.0.0.6, credentials: c}\n"
    )
    agent._do_reload()
    assert agent._ping_targets() == [("b", "127.0.0.6")]
    assert set(agent.edge.signals) == {"b"}
    off = agent_config(tmp_path, "mqtt://127.0.0.1:1", inventory)  # the kit's: ping off
    quiet = Agent(off)
    assert quiet.pinger is None and not quiet.edge.signals
    assert "ping" not in [s.name for s in quiet.parts().states]


# ------------------------------------------------------------------ the collector's incidents


async def test_incidents_say_down_snmp_silent_and_degraded_and_correlate(tmp_path: Path) -> None:
    """The collector's incident engine (a real SQLite store) opens one incident a kind,
    titled by the event's message; the device's other incidents are suppressed under a
    ping-made down, not under an SNMP agent silent (its host is up)."""
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    clock = Clock(T0)
    engine = Engine(store, IncidentsConfig(), now=clock)
    edge = PingEdge("nyc-1")
    for device in ("r1", "r2"):
        edge.pinged(device)
    events = edge.ping("r1", 3, 3, 1.0, T0) + edge.ping("r2", 3, 3, 1.0, T0)
    events += edge.ping("r1", 3, 0, 0.0, T0 + 10) + edge.ping("r1", 3, 0, 0.0, T0 + 20)
    events += edge.link("r1", 5, "ge-0/0/5", True, True, T0 + 21)
    events += edge.link("r1", 5, "ge-0/0/5", True, False, T0 + 22)  # while down: suppressed
    for n in range(3):
        events += edge.reachability("r2", False, T0 + 30 + n)
    events += edge.link("r2", 5, "ge-0/0/5", True, True, T0 + 40)
    events += edge.link("r2", 5, "ge-0/0/5", True, False, T0 + 41)  # host up: its own
    for n in range(2):
        events += edge.ping("r2", 10, 6, 20.0, T0 + 50 + n)
    try:
        for e in events:
            clock.t = e.ts + 1
            await engine.on_events(EventsMessage("nyc-1", "nyc", "americas", 1, clock.t, [e]))
        found = {(i.key.device, i.key.kind): i for i in await engine.queries.incidents(site="nyc")}
    finally:
        await store.close()
    assert sorted(found) == [
        ("r1", "link"),
        ("r1", "reachability"),
        ("r2", "link"),
        ("r2", "ping"),
        ("r2", "snmp"),
    ]
    down, silent = found[("r1", "reachability")], found[("r2", "snmp")]
    assert down.title == "r1: no answer to ping for 2 rounds, nor to SNMP since"
    assert down.severity == "critical" and down.opened == T0 + 10
    assert silent.title.startswith("r2: SNMP agent silent, host up (answers ping;")
    assert silent.severity == "major"
    assert found[("r2", "ping")].title == "r2: ping loss 40 % at or above 20 %"
    assert found[("r1", "link")].suppressed_by == down.id
    assert found[("r2", "link")].suppressed_by is None
