"""Capability discovery (agent/discovery.py; issue 17 items 1 and 4).

What a device answers is learned with batched GETNEXTs and checked against the recordings
themselves; a device that refuses or drops big requests is still probed; when to probe
again; the findings survive a restart and a corrupt file; the agent end to end: vendor CPU
and BGP on a device whose profile does not poll it, the capabilities in the status message,
no second discovery after a restart; the contract (wire, config); and what it costs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent
from collectorkit import collector_config
from test_agent_health_mibs import RECORDINGS, served

import agent.discovery as discovery_module
from agent.app import STATUS_CAPABILITIES, Agent
from agent.config import check_agent
from agent.discovery import (
    BATCH,
    Discovery,
    Findings,
    Outcome,
    Probe,
    day_share,
    known_probes,
    probe,
)
from agent.mibgroups import GROUPS
from agent.poller import collect
from agent.profiles import ProfileSet
from collector.app import Collector
from collector.config import check_collector
from enoc.snmp.ber import Oid, oid_text
from enoc.snmp.client import SnmpClient, SnmpTimeout, Target, V2c
from enoc.snmp.message import ResponsePdu
from enoc.wire import (
    Capabilities,
    DeviceInfo,
    StatusMessage,
    Value,
    WireError,
    decode,
    encode,
    topic,
)
from testbed.servers import Mosquitto

ALL = sorted(p.stem for p in RECORDINGS.glob("*.snmprec"))


def answered(name: str, probes: Sequence[Probe]) -> set[str]:
    """What a recording holds under each probe: the oracle, read from the file itself."""
    lines = (RECORDINGS / f"{name}.snmprec").read_text(errors="surrogateescape").splitlines()
    prefixes = {line.partition("|")[0] for line in lines}
    return {p.name for p in probes if any(o.startswith(f"{oid_text(p.oid)}.") for o in prefixes)}


def test_every_group_has_a_probe_and_the_other_mibs_are_known() -> None:
    probes = known_probes()
    names = [p.name for p in probes]
    assert len(names) == len(set(names))
    assert set(GROUPS) <= set(names)  # the sensors and power groups too, whatever they are
    # BGP anywhere, HOST-RESOURCES, and the MIBs named before a group polls them
    mibs = {p.mib for p in probes}
    assert {"BGP4-MIB", "HOST-RESOURCES-MIB", "ENTITY-MIB", "LLDP-MIB"} <= mibs
    assert {"ENTITY-SENSOR-MIB", "UPS-MIB", "PowerNet-MIB"} <= mibs


@pytest.mark.servers
async def test_discovery_finds_what_each_recording_answers_in_few_requests() -> None:
    if not ALL:
        pytest.skip(f"no recordings at {RECORDINGS}")
    probes = known_probes()
    client = SnmpClient(timeout=2.0, retries=1)
    await client.open("127.0.0.1")
    try:
        async with served(ALL, "127.46.0.1") as devices:
            for device in devices:
                target = Target(device.address, device.port, V2c(b"public"))
                outcome = await probe(client, target, probes)
                assert outcome.found == answered(device.name, probes), device.name
                assert outcome.requests == math.ceil(len(probes) / BATCH), device.name
    finally:
        client.close()
    # what the corpus holds: the test cannot pass on devices answering nothing
    assert answered("vrp_5720-vrf", probes) >= {"bgp", "huawei_entity", "entity"}
    assert answered("ios_c3560", probes) >= {"cisco_process", "cisco_memory_pool"}


@pytest.mark.servers
async def test_a_device_refusing_big_responses_is_probed_in_halves() -> None:
    probes = known_probes()
    client = SnmpClient(timeout=2.0, retries=1)
    await client.open("127.0.0.1")
    try:
        async with served(["vrp_5720-vrf"], "127.47.0.1") as devices:
            devices[0].max_message_size = 400  # tooBig for a full batch's answer
            target = Target(devices[0].address, devices[0].port, V2c(b"public"))
            outcome = await probe(client, target, probes)
    finally:
        client.close()
    assert outcome.found == answered("vrp_5720-vrf", probes)
    assert outcome.requests > math.ceil(len(probes) / BATCH)


class DropsBigRequests(SnmpClient):
    """A device (behind a firewall, an old agent) that never answers a request of more
    than `limit` varbinds: lost, not refused. The simulator answers everything it can."""

    def __init__(self, limit: int) -> None:
        super().__init__(timeout=0.5, retries=0)
        self.limit = limit
        self.sizes: list[int] = []

    async def request(
        self, target: Target, tag: int, oids: Sequence[Oid], *rest: int, **named: int
    ) -> ResponsePdu:
        self.sizes.append(len(oids))
        if len(oids) > self.limit:
            raise SnmpTimeout
        return await super().request(target, tag, oids, *rest, **named)


@pytest.mark.servers
async def test_a_device_dropping_big_requests_is_probed_in_halves_and_a_silent_one_fails() -> None:
    probes = known_probes()
    client = DropsBigRequests(limit=3)
    await client.open("127.0.0.1")
    try:
        async with served(["junos"], "127.48.0.1") as devices:
            target = Target(devices[0].address, devices[0].port, V2c(b"public"))
            outcome = await probe(client, target, probes)
            assert outcome.found == answered("junos", probes)
            assert "juniper_operating" in outcome.found
            assert max(client.sizes) == BATCH and min(client.sizes) <= 3
            client.limit = 0  # silent even to one probe: the device went away
            with pytest.raises(SnmpTimeout):
                await probe(client, target, probes)
    finally:
        client.close()


# ---------------------------------------------------------------- when, and what is kept

CISCO = (1, 3, 6, 1, 4, 1, 9, 1, 634)
JUNIPER = (1, 3, 6, 1, 4, 1, 2636, 1, 1, 1, 2, 41)


def discovery(tmp_path: Path) -> Discovery:
    return Discovery(SnmpClient(), tmp_path / "state" / "discovery.json", interval=6 * 3600)


async def run_on(d: Discovery, found: frozenset[str], oid: Oid, ticks: int, at: float) -> None:
    """Record a discovery's findings as `run` does after a device answered them."""
    with pytest.MonkeyPatch.context() as patch:

        async def answered_with(*_args: object) -> Outcome:
            return Outcome(found, 2, len(d.probes))

        patch.setattr(discovery_module, "probe", answered_with)
        await d.run("pe-1", Target("127.0.0.1", 161, V2c(b"x")), oid, ticks, at)


async def test_probed_at_first_contact_every_interval_on_a_new_model_and_a_reboot(
    tmp_path: Path,
) -> None:
    d = discovery(tmp_path)
    t0 = 1_800_000_000.0
    assert d.due("pe-1", CISCO, 360_000, t0) == "first contact"
    await run_on(d, frozenset({"cisco_process"}), CISCO, 360_000, t0)  # booted an hour ago
    assert d.found("pe-1") == {"cisco_process"}
    assert d.due("pe-1", CISCO, 360_000 + 6000, t0 + 60) == ""
    assert d.due("pe-1", CISCO, 360_000 + 6 * 360_000, t0 + 6 * 3600) == "interval"
    assert d.due("pe-1", JUNIPER, 360_000 + 6000, t0 + 60) == "sysObjectID changed"
    assert d.due("pe-1", CISCO, 500, t0 + 60) == "reboot"  # up 5 s, a minute later
    assert d.due("pe-1", CISCO, None, t0 + 60) == ""  # no sysUpTime: no reboot known
    d.enabled = False
    assert d.due("pe-1", CISCO, 500, t0 + 60) == "" and d.found("pe-1") == frozenset()


async def test_a_failed_discovery_is_no_poll_failure_and_is_tried_again_later(
    tmp_path: Path,
) -> None:
    client = DropsBigRequests(limit=0)  # answers nothing
    await client.open("127.0.0.1")
    d = Discovery(client, tmp_path / "discovery.json")
    t0 = 1_800_000_000.0
    try:
        # nothing listens there: the probe times out
        result = await d.run("pe-1", Target("127.0.0.1", 9, V2c(b"x")), CISCO, 100, t0)
    finally:
        client.close()
    assert result is None and d.stats["failed"] == 1 and d.found("pe-1") == frozenset()
    assert d.due("pe-1", CISCO, 100 + 6000, t0 + 60) == ""  # not at every poll
    assert d.due("pe-1", CISCO, 100 + 60000, t0 + 600) == "first contact"


async def test_findings_survive_a_restart_and_a_corrupt_file_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = discovery(tmp_path)
    t0 = 1_800_000_000.0
    await run_on(d, frozenset({"bgp", "juniper_operating"}), JUNIPER, 100, t0)
    assert d.dirty
    d.save()
    again = discovery(tmp_path)
    again.load()
    assert again.found("pe-1") == {"bgp", "juniper_operating"}
    assert again.due("pe-1", JUNIPER, 100 + 6000, t0 + 60) == ""  # not probed again
    again.forget(["pe-1"])
    assert again.dirty
    again.save()
    assert json.loads(d.path.read_text()) == {}
    for garbage in ("{not json", '{"pe-1": {"found": "bgp"}}', "[1, 2]"):
        d.path.write_text(garbage)
        fresh = discovery(tmp_path)
        with caplog.at_level(logging.ERROR, "enoc.agent.discovery"):
            fresh.load()
        assert fresh.devices == {}
        assert str(d.path) in caplog.records[-1].getMessage()


# ---------------------------------------------------------------- the agent end to end

SITE = ["ios_c3560", "junos", "dnos_bgp"]


@pytest.mark.servers
async def test_the_agent_discovers_polls_and_reports_capabilities(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with served(SITE, "127.49.0.1") as devices, Listener(mosquitto.url) as listener:
        inventory = tmp_path / "devices.yaml"
        rows = [
            {
                "name": d.name,
                "address": d.address,
                "port": d.port,
                "credentials": "lab",
            }
            for d in devices
        ]
        inventory.write_text(
            yaml.safe_dump(
                {"credentials": {"lab": {"version": "2c", "community": "public"}}, "devices": rows}
            )
        )
        config = agent_config(tmp_path, mosquitto.url, inventory)

        def polled(lst: Listener, name: str) -> list[dict[str, Value]]:
            return [s.fields for m in lst.metrics() for s in m.samples if s.device == name]

        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda lst: (
                    all(any("cpu" in f for f in polled(lst, n)) for n in ("ios_c3560", "junos"))
                    and any(
                        s.bgp for m in lst.metrics() for s in m.samples if s.device == "dnos_bgp"
                    )
                ),
                timeout=30,
                what="vendor CPU and BGP after discovery",
            )
            await listener.wait_for(
                lambda lst: any(
                    len(s.capabilities) == len(SITE)
                    and all(s.capabilities[n].sources for n in ("ios_c3560", "junos"))
                    for s in lst.statuses()
                ),
                what="a heartbeat with every device's capabilities and the source of its cpu",
            )
            runs = agent.discovery.stats["runs"]
            assert agent.stats.polls_failed == {}
        status = next(
            s
            for s in listener.statuses()
            if len(s.capabilities) == len(SITE)
            and all(s.capabilities[n].sources for n in ("ios_c3560", "junos"))
        )
        caps = status.capabilities
        assert status.health["discovered"] == len(SITE)
        assert {"cisco_process", "cisco_memory_pool"} <= set(caps["ios_c3560"].found)
        assert caps["ios_c3560"].sources == {
            "cpu": "CISCO-PROCESS-MIB",
            "memory": "CISCO-MEMORY-POOL-MIB",
        }
        assert caps["junos"].sources["cpu"] == "JUNIPER-MIB"
        # BGP wherever BGP4-MIB has peers: the generic profile does not poll it
        assert ProfileSet().choose(None).name == "generic"
        assert "bgp" in caps["dnos_bgp"].found
        assert runs == len(SITE)
        saved = json.loads((tmp_path / "spool" / "discovery.json").read_text())
        assert set(saved) == set(SITE)
        # a restart: the findings are read back, nothing is probed again
        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda _lst: agent.stats.polls_ok >= 2 * len(SITE),
                what="two polls of every device after the restart",
            )
            assert agent.discovery.stats["runs"] == 0
            assert agent.discovery.found("junos") == set(caps["junos"].found)


@pytest.mark.servers
async def test_a_profile_excluding_a_discovered_group_still_decides(tmp_path: Path) -> None:
    client = SnmpClient(timeout=2.0, retries=1)
    await client.open("127.0.0.1")
    extra = {"no-cisco-cpu": {"exclude": ["cisco_process"]}}
    config = yaml.safe_load(
        agent_config(tmp_path, "mqtt://127.0.0.1:1", tmp_path / "x").read_text()
    )
    config["profiles"] = extra
    del config["inventory"]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    profiles = ProfileSet(p.build(n) for n, p in check_agent(path).result()[0].profiles.items())
    try:
        async with served(["ios_c3560"], "127.50.0.1") as devices:
            target = Target(devices[0].address, devices[0].port, V2c(b"public"))
            found = (await probe(client, target, known_probes())).found
            plain = await collect(client, target, profiles.choose, 25, None, found)
            excluded = profiles.named("no-cisco-cpu")
            raw = await collect(client, target, lambda _o: excluded, 25, None, found)
    finally:
        client.close()
    assert "cisco_process" in found
    assert "cisco_process" in plain.readings and "cisco_process" not in raw.readings
    assert "cisco_memory_pool" in raw.readings


# ---------------------------------------------------------------- the contract


def test_capabilities_travel_in_the_status_message_and_bad_ones_are_refused() -> None:
    status = StatusMessage(
        "nyc-1",
        "nyc",
        "americas",
        1,
        1_800_000_000.0,
        capabilities={"pe-1": Capabilities(["bgp", "cisco_process"], {"cpu": "CISCO-PROCESS-MIB"})},
    )
    name = topic("nyc", "nyc-1", "status")
    assert decode(name, encode(status)) == status
    assert b"capabilities" not in encode(StatusMessage("nyc-1", "nyc", "americas", 1, 1.0))
    body = json.loads(encode(status))
    for bad in ({"pe-1": ["bgp"]}, {"pe-1": [[1], {}]}, {"pe-1": [[], {"cpu": 5}]}, [1]):
        body["capabilities"] = bad
        with pytest.raises(WireError, match="capabilities"):
            decode(name, json.dumps(body).encode())


def test_a_bad_discovery_section_names_the_file_key_and_what_is_expected(tmp_path: Path) -> None:
    base = {"agent_id": "a1", "site": "s1", "spool": {"path": str(tmp_path / "spool")}}
    for section, expected in (
        ({"interval": "30s"}, 'at least "1m"'),
        ({"interval": "often"}, "duration"),
        ({"enabled": "maybe"}, "true or false"),
        ({"intervall": "1h"}, "did you mean 'interval'"),
    ):
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump({**base, "discovery": section}))
        issues = check_agent(path).errors
        assert issues, section
        assert issues[0].file == str(path) and issues[0].key.startswith("discovery")
        assert expected in issues[0].message, issues[0]


# ---------------------------------------------------------------- what it costs


@pytest.mark.servers
async def test_discovery_costs_well_under_5_percent_of_a_days_varbinds() -> None:
    """For each of a few real devices: the varbinds of one discovery against those of a
    day of polls at the default interval (60 s), discovered every 6 hours and once more."""
    client = SnmpClient(timeout=2.0, retries=1)
    await client.open("127.0.0.1")
    shares = {}
    try:
        names = ["ios_c3560", "junos", "pmp_450m", "apc_smt750x-nmc2"]
        async with served(names, "127.51.0.1") as devices:
            for device in devices:
                target = Target(device.address, device.port, V2c(b"public"))
                outcome = await probe(client, target, known_probes())
                raw = await collect(client, target, ProfileSet().choose, 25, None, outcome.found)
                raw = await collect(client, target, ProfileSet().choose, 25, None, outcome.found)
                shares[device.name] = day_share(outcome.varbinds, raw.varbinds, 60, 6 * 3600)
    finally:
        client.close()
    print("discovery's share of a day's varbinds:", {k: f"{v:.4%}" for k, v in shares.items()})
    assert all(0 < share <= 0.05 for share in shares.values()), shares


def test_a_large_inventorys_capabilities_take_turns_in_the_status_message(
    tmp_path: Path,
) -> None:
    """The status message stays bounded: STATUS_CAPABILITIES devices a message, in turn."""
    inventory = tmp_path / "devices.yaml"
    rows = [
        {"name": f"sw-{i}", "address": f"127.52.{i // 250}.{i % 250 + 1}", "credentials": "lab"}
        for i in range(2 * STATUS_CAPABILITIES + 500)
    ]
    credentials = {"lab": {"version": "2c", "community": "public"}}
    inventory.write_text(yaml.safe_dump({"credentials": credentials, "devices": rows}))
    agent = Agent(agent_config(tmp_path, "mqtt://127.0.0.1:1", inventory))
    for row in rows:
        agent.discovery.devices[row["name"]] = Findings(frozenset({"bgp"}), 1.0)
    turns = [agent.capabilities() for _ in range(4)]
    assert [len(t) for t in turns] == [STATUS_CAPABILITIES, STATUS_CAPABILITIES, 500, 1000]
    assert set().union(*turns[:3]) == {row["name"] for row in rows}
    assert turns[3] == turns[0]  # round again
    assert turns[0]["sw-0"] == Capabilities(["bgp"], {})


async def test_the_collector_keeps_each_agents_capabilities_in_turn_and_forgets_gone_devices(
    tmp_path: Path,
) -> None:
    config = check_collector(collector_config(tmp_path, "mqtt://127.0.0.1:1")).result()
    collector = Collector(config)
    await collector.store.open()
    cisco = Capabilities(["cisco_process"], {"cpu": "CISCO-PROCESS-MIB"})
    devices = [DeviceInfo("a"), DeviceInfo("b")]

    async def status(seq: int, listed: list[DeviceInfo], caps: dict[str, Capabilities]) -> None:
        message = StatusMessage(
            "nyc-1", "nyc", "americas", seq, 1_800_000_000.0 + seq, devices=listed
        )
        message.capabilities = caps
        await collector._status(message, retained=True)

    try:
        await status(1, devices, {"a": cisco})
        await status(2, devices, {"b": Capabilities(["bgp"], {})})  # the next turn
        assert set(collector.capabilities[("nyc", "nyc-1")]) == {"a", "b"}
        await status(3, devices[1:], {})  # "a" left the agent's inventory
        assert set(collector.capabilities[("nyc", "nyc-1")]) == {"b"}
    finally:
        await collector.store.close()
