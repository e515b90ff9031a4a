"""Bad devices and bad credentials: counted, logged once, never crash the agent or stall others."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import free_udp_port

from agent.spool import Spool
from enoc.localservers import Mosquitto
from enoc.snmp import ber
from enoc.snmp.message import build_v2c_message, encode_pdu, parse_pdu

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
