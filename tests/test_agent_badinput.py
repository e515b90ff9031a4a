"""Bad devices and bad credentials: counted, logged once, never crash the agent or stall others."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import free_udp_port

from agent.spool import Spool
from enoc.snmp import ber
from enoc.snmp.message import build_v2c_message, encode_pdu, parse_pdu
from enoc.wire import DeviceSample
from simulators.model import Device
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers


class Liar(asyncio.DatagramProtocol):
    """A device that answers every request, wrongly, in turn: junk, a wrong request id,
    trailing bytes, and (for GETBULK) OIDs that do not increase."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.turn = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
        _v, pos = ber.read_integer(data, start, end)
        community, pos = ber.read_octets(data, pos, end)
        pdu = parse_pdu(data, pos, end)
        self.turn += 1
        body = b"".join(
            ber.encode_varbind(ber.encode_oid(o), ber.encode_integer(1)) for o in pdu.oids
        )
        good = build_v2c_message(community, encode_pdu(ber.RESPONSE, pdu.request_id, 0, 0, body))
        if pdu.tag == ber.GETBULK:
            self.transport.sendto(good, addr)  # the same OIDs back: not increasing
            return
        answers = [
            b"\x30\x82\xff\xff garbage",
            build_v2c_message(community, encode_pdu(ber.RESPONSE, pdu.request_id ^ 1, 0, 0, body)),
            good + b"\x00\x00",
            good,
        ]
        self.transport.sendto(answers[self.turn % len(answers)], addr)


async def test_lying_silent_and_wrongly_keyed_devices_are_counted_and_others_keep_flowing(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    liar_port = free_udp_port("127.41.0.20")
    loop = asyncio.get_running_loop()
    transport, liar = await loop.create_datagram_endpoint(
        Liar, local_addr=("127.41.0.20", liar_port)
    )
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        inventory = yaml.safe_load(site.inventory.read_text())
        wrong = dict(inventory["credentials"]["sim-v3"], auth_key="not-the-right-key")
        inventory["credentials"]["wrong-key"] = wrong
        inventory["credentials"]["liar"] = {"version": "2c", "community": "public"}
        sim_port = inventory["devices"][0]["port"]
        inventory["devices"] += [
            {"name": "liar-1", "address": "127.41.0.20", "port": liar_port, "credentials": "liar"},
            {
                "name": "silent-1",
                "address": "127.41.0.21",
                "port": sim_port,
                "credentials": "sim-v3",
            },
            {
                "name": "wrongkey-1",
                "address": inventory["devices"][0]["address"],
                "port": sim_port,
                "credentials": "wrong-key",
            },
        ]
        site.inventory.write_text(yaml.safe_dump(inventory))
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            healthy = [d.name for d in site.devices]
            await listener.wait_for(
                lambda lst: all(
                    sum(1 for m in lst.metrics() for s in m.samples if s.device == n) >= 4
                    for n in healthy
                ),
                what="four polls of every healthy device",
            )
            await listener.wait_for(
                lambda lst: {e.device for e in lst.all_events()} >= {"silent-1", "wrongkey-1"},
                what="unreachable events",
            )
            stats = agent.client.stats
            assert stats.bad["malformed"] >= 1
            assert stats.bad["stray"] >= 1  # the answer with the wrong request id
            assert stats.bad["oid_not_increasing"] >= 1
            assert stats.reports["wrong_digest"] >= 1
            assert agent.stats.polls_failed["timeout"] >= 1
            assert agent.stats.polls_failed["wrong_digest"] >= 1
    transport.close()
    assert liar.turn > 0
    events = {(e.device, e.kind, e.state) for e in listener.all_events()}
    assert ("silent-1", "reachability", "down") in events
    assert ("wrongkey-1", "reachability", "down") in events
    assert not [e for e in listener.all_events() if e.device in healthy]
    once = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(once) == 1, "logged once per kind, counted after that"


def samples_of(listener: Listener, device: str, after: float = 0.0) -> list[DeviceSample]:
    return [s for m in listener.metrics() for s in m.samples if s.device == device and s.ts > after]


def health(listener: Listener, name: str) -> float:
    """A number of the latest heartbeat's health fields."""
    value = next((s.health for s in reversed(listener.statuses()) if s.health), {}).get(name, 0)
    assert isinstance(value, int | float)
    return value


@pytest.mark.parametrize(
    ("mode", "counted", "failure", "message"),
    [
        ("truncated", "malformed", "undecodable", "answers undecodable for 2 polls"),
        ("request_id", "stray", "misaddressed", "answers to other requests for 2 polls"),
    ],
)
async def test_a_device_answering_undecodable_or_misaddressed_garbage_is_unreachable_until_cleared(
    mode: str,
    counted: str,
    failure: str,
    message: str,
    tmp_path: Path,
    mosquitto: Mosquitto,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The simulator's garbage fault (an answer cut short, or one carrying another request's
    id): every such datagram is counted and its kind logged once, the polls fail for that
    reason (not as timeouts: the device did answer), the device is reported unreachable once
    with the reason in the event, every other device keeps flowing, and it comes back when
    the garbage stops."""
    caplog.set_level(logging.WARNING)
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        target = next(d for d in site.devices if d.role == "access-switch")
        others = [d.name for d in site.devices if d is not target]
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda lst: all(len(samples_of(lst, d.name)) >= 2 for d in site.devices),
                what="two polls of every device",
            )
            bad_before = agent.client.stats.bad[counted]
            failed_before = sum(agent.stats.polls_failed.values())
            site.sim.inject(target.name, {"kind": "garbage", "mode": mode})
            garbage_at = time.time()
            await listener.wait_for(
                lambda lst: (
                    ("reachability", "down") in {(e.kind, e.state) for e in lst.all_events()}
                ),
                what="the device reported unreachable",
            )
            assert agent.client.stats.bad[counted] >= bad_before + 2
            assert sum(agent.stats.polls_failed.values()) >= failed_before + 2
            assert agent.stats.polls_failed[failure] >= 2
            assert agent.stats.polls_failed["timeout"] == 0, "it answered: not a timeout"
            await listener.wait_for(
                lambda lst: health(lst, "snmp_bad") >= bad_before + 2,
                what="the heartbeat counting the bad answers",
            )
            site.sim.clear(target.name)
            cleared_at = time.time()
            await listener.wait_for(
                lambda lst: (
                    len(
                        [
                            s
                            for s in samples_of(lst, target.name, cleared_at)
                            if s.fields["reachable"]
                        ]
                    )
                    >= 2
                ),
                what="two good polls after the garbage stopped",
            )
    assert site.sim.stats.garbled[mode] >= 2
    events = [(e.device, e.kind, e.state) for e in listener.all_events()]
    assert events == [
        (target.name, "reachability", "down"),
        (target.name, "reachability", "up"),
    ]
    down = listener.all_events()[0]
    assert (down.message, down.attrs) == (message, {"reason": failure})
    during = [s for s in samples_of(listener, target.name, garbage_at) if s.ts < cleared_at - 1]
    assert during and not any(s.fields["reachable"] for s in during)
    for name in others:  # one device's garbage costs the others nothing
        polled = samples_of(listener, name, garbage_at)
        assert len(polled) >= 3 and all(s.fields["reachable"] == 1 for s in polled), name
    once = [r.getMessage() for r in caplog.records if f"snmp {counted} " in r.getMessage()]
    assert len(once) == 1, "logged once, counted after that"


def capacity(device: Device, if_index: int) -> tuple[float, float]:
    """Octets and packets per second the interface can carry at most (64-octet frames)."""
    octets = device.interface(if_index).speed_mbps * 1e6 / 8
    return octets, octets / 64


@pytest.mark.parametrize("mode", ["wrong_type", "absurd"])
async def test_a_device_answering_wrong_types_or_absurd_counters_raises_nothing_false(
    mode: str, tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Well-formed answers with garbage values: numbers sent as strings, or counters that
    jump anywhere. The device answers, so it stays reachable; what the values say is not
    taken for news: a link that was down is not reported up because its status came as a
    string, no rate above what an interface can carry is published, no threshold fires;
    the wrong types are counted and logged once. Rates resume once the garbage stops."""
    caplog.set_level(logging.WARNING)
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        target = next(d for d in site.devices if d.role == "access-switch")
        down = target.interfaces[0].index
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda lst: all(len(samples_of(lst, d.name)) >= 2 for d in site.devices),
                what="two polls of every device",
            )
            site.sim.inject(target.name, {"kind": "link_down", "ifIndex": down})
            await listener.wait_for(
                lambda lst: [(e.kind, e.state) for e in lst.all_events()] == [("link", "down")],
                what="the link reported down",
            )
            site.sim.inject(target.name, {"kind": "garbage", "mode": mode})
            garbage_at = time.time()
            await listener.wait_for(
                lambda lst: len(samples_of(lst, target.name, garbage_at)) >= 5,
                what="five polls of the garbage",
            )
            site.sim.clear(target.name)
            cleared_at = time.time()
            await listener.wait_for(
                lambda lst: len(samples_of(lst, target.name, cleared_at)) >= 3,
                what="three polls after the garbage stopped",
            )
            wrong_types = agent.client.stats.bad["wrong_type"]
            refused = agent.trackers[target.name].rates.refused
    assert site.sim.stats.garbled[mode] >= 5
    events = [(e.device, e.resource, e.kind, e.state) for e in listener.all_events()]
    assert events == [
        (target.name, f"if:{down}", "link", "down"),
        (target.name, f"if:{down}", "link", "up"),  # after the clear, not before
    ]
    up = next(e for e in listener.all_events() if e.state == "up")
    assert up.ts >= cleared_at - 0.01
    during = [s for s in samples_of(listener, target.name, garbage_at) if s.ts < cleared_at]
    assert len(during) >= 4 and all(s.fields["reachable"] == 1 for s in during)
    for sample in samples_of(listener, target.name):
        for iface in sample.interfaces:
            octets, packets = capacity(target, iface.if_index)
            for name, value in iface.fields.items():
                assert isinstance(value, int | float)
                if name.endswith("_bps"):
                    assert value <= 8 * octets * 1.05, (name, value)
                elif name.endswith("_per_s"):
                    assert value <= packets * 1.05, (name, value)
    if mode == "wrong_type":
        assert wrong_types >= 4, "every poll of the strings is counted"
        assert all(not i.fields for s in during for i in s.interfaces)
        assert all("sysUpTime" not in s.fields for s in during)
        once = [r.getMessage() for r in caplog.records if "snmp wrong_type" in r.getMessage()]
        assert len(once) == 1, "logged once, counted after that"
    else:
        assert wrong_types == 0
        assert refused["above_speed"] + refused["reset"] >= 4
    after = samples_of(listener, target.name, cleared_at)
    rates = [i.fields.get("in_bps") for s in after[1:] for i in s.interfaces if i.if_index != down]
    assert rates and all(isinstance(r, float) for r in rates), "rates resume after the garbage"


def test_full_metrics_spool_drops_oldest_metrics_and_never_events(tmp_path: Path) -> None:
    metrics = Spool(tmp_path / "metrics", max_bytes=64 * 1024, segment_bytes=8 * 1024)
    events = Spool(
        tmp_path / "events", max_bytes=8 * 1024, segment_bytes=4 * 1024, drop_oldest=False
    )
    for i in range(400):
        metrics.append("m", b"x" * 500 + str(i).encode())
        events.append("e", b"y" * 200 + str(i).encode())
    assert metrics.dropped > 0 and metrics.size_bytes <= 64 * 1024 + 8 * 1024
    kept = metrics.take(1000)
    assert kept[-1].payload.endswith(b"399"), "the newest metrics are kept"
    assert kept[0].seq > 1, "the oldest went first"
    assert events.dropped == 0 and events.depth == 400, "events are never dropped"
    metrics.close()
    events.close()
