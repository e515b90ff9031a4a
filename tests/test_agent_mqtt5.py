"""MQTT 5 with a fallback to 3.1.1 (DESIGN, "Protocol"): enoc.mqtt's AckedClient sees the
broker's PUBACK reason codes with the installed aiomqtt and paho, a v5 session outlives its
connection, and the agent falls back to 3.1.1 against the demo's amqtt broker and works.
The shipped ACL refusing an agent's publishes is tested in test_deploy.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import psutil
import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from enoc.demo import start_broker
from enoc.mqtt import V5, V311, AckedClient, ProtocolChoice, client_args
from testbed.servers import HOST, Mosquitto, free_port

NOT_AUTHORIZED = 135
ALLOWED = "enoc/v1/nyc/nyc-1/metrics"
DENIED = "enoc/v1/gva/gva-1/metrics"


@pytest.fixture
def acl_broker(tmp_path: Path) -> Any:
    """Mosquitto whose ACL lets anonymous clients write nyc-1's topics and read enoc/#."""
    acl = tmp_path / "acl"
    acl.write_text("topic write enoc/v1/nyc/nyc-1/#\ntopic read enoc/#\n")
    with Mosquitto(tmp_path / "mosquitto", acl_file=acl) as broker:
        yield broker


def args(
    broker: Mosquitto,
    protocol: aiomqtt.ProtocolVersion,
    identifier: str = "mqtt5-test",
    **kwargs: Any,
) -> dict[str, Any]:
    return client_args(broker.url, identifier=identifier, protocol=protocol, **kwargs)


def test_protocol_choice_offers_5_falls_back_when_refused_and_offers_5_again_later() -> None:
    now = [1000.0]
    choice = ProtocolChoice(recheck=3600, clock=lambda: now[0])
    assert choice.version == V5
    not_authorized = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=135))
    assert not choice.fall_back(not_authorized), "a refused login is not a protocol matter"
    assert not choice.fall_back(aiomqtt.MqttError("[Errno 111] Connection refused"))
    assert choice.version == V5
    # a broker of 3.1.1 answers a v5 CONNECT with its code 1, which paho reads as 132
    no_v5 = MqttConnectError(ReasonCode(PacketTypes.CONNACK, aName="Unsupported protocol version"))
    assert choice.fall_back(no_v5)
    assert choice.version == V311
    assert not choice.fall_back(no_v5), "3.1.1 refused is an ordinary failure: backoff"
    choice.failed()
    assert choice.version == V311, "settled by the refusal itself"
    now[0] += 3599
    assert choice.version == V311
    now[0] += 2
    assert choice.version == V5, "a broker upgraded in place is asked for 5 again"


def test_protocol_choice_tries_3_1_1_when_5_goes_unanswered_and_settles_if_it_connects() -> None:
    now = [1000.0]
    choice = ProtocolChoice(recheck=3600, clock=lambda: now[0])
    unanswered = aiomqtt.MqttError("Operation timed out")  # aiomqtt's, for a missing CONNACK
    assert choice.fall_back(unanswered)
    assert choice.version == V311
    choice.failed()  # 3.1.1 went unanswered too: the broker is down, not old
    assert choice.version == V5
    assert choice.fall_back(unanswered)
    choice.connected()  # 3.1.1 was answered: the broker does not speak 5
    now[0] += 3599
    assert choice.version == V311
    now[0] += 2
    assert choice.version == V5


async def test_a_connection_closed_before_the_connack_fails_at_once_and_keeps_5() -> None:
    """A relay or load balancer whose broker is down accepts the connection and closes it:
    that says nothing of the broker's MQTT version (it used to wait out the CONNACK timeout
    and read as a broker that leaves v5 unanswered: every agent on 3.1.1 for an hour)."""
    accepted = asyncio.Event()

    async def close_at_once(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.transport.abort()

    relay = await asyncio.start_server(close_at_once, HOST, 0)
    port = relay.sockets[0].getsockname()[1]
    choice = ProtocolChoice()
    try:
        client = AckedClient(
            **client_args(f"mqtt://{HOST}:{port}", identifier="relay", protocol=V5, timeout=30)
        )
        with pytest.raises(aiomqtt.MqttError) as failed:
            await client.__aenter__()
        assert accepted.is_set()
        assert "connection closed before the broker answered" in str(failed.value)
        assert not choice.fall_back(failed.value)
        assert choice.version == V5
    finally:
        relay.close()
        await relay.wait_closed()


async def test_a_connect_left_unanswered_times_out_even_past_the_keepalive() -> None:
    """A broker that reads a v5 CONNECT and never answers (amqtt) is the one that does not
    speak 5: paho closing the silent connection at its keepalive, before the CONNACK
    timeout, must not pass for a connection the other end closed."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AckedClient(
            **client_args(
                f"mqtt://{HOST}:{port}", identifier="silent", protocol=V5, keepalive=1, timeout=3
            )
        )
        with pytest.raises(aiomqtt.MqttError) as failed:
            await client.__aenter__()
        assert held, "the server took the connection"
        assert str(failed.value) == "Operation timed out"
        assert ProtocolChoice().fall_back(failed.value), "3.1.1 is tried next"
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


def test_client_args_make_a_persistent_session_in_either_version() -> None:
    v311 = client_args("mqtt://127.0.0.1:1883", identifier="x")
    assert v311["clean_session"] is False and v311["protocol"] == V311
    assert "clean_start" not in v311 and "properties" not in v311
    v5 = client_args("mqtt://127.0.0.1:1883", identifier="x", protocol=V5, session_expiry=60)
    assert "clean_session" not in v5, "paho refuses clean_session on a v5 client"
    assert v5["clean_start"] is False
    assert v5["properties"].SessionExpiryInterval == 60


@pytest.mark.servers
async def test_acked_client_returns_the_pubacks_reason_code(acl_broker: Mosquitto) -> None:
    received: list[bytes] = []

    async def record(subscriber: aiomqtt.Client) -> None:
        async for message in subscriber.messages:
            assert isinstance(message.payload, bytes)
            received.append(message.payload)

    async with (
        aiomqtt.Client(HOST, acl_broker.port, identifier="mqtt5-subscriber") as subscriber,
        AckedClient(**args(acl_broker, V5)) as v5,
    ):
        await subscriber.subscribe("enoc/#", qos=1)
        recorder = asyncio.create_task(record(subscriber))
        allowed = await v5.publish_acked(ALLOWED, b"allowed")
        denied = await v5.publish_acked(DENIED, b"denied")
        assert not allowed.is_failure
        assert denied.is_failure and denied.value == NOT_AUTHORIZED
        await v5.publish(ALLOWED, b"plain", qos=1)  # aiomqtt's own publish still works
        topics = [DENIED, ALLOWED] * 20
        codes = await asyncio.gather(*(v5.publish_acked(t, b"many") for t in topics))
        assert [c.value == NOT_AUTHORIZED for c in codes] == [True, False] * 20, "by message id"
        await v5.publish_acked(ALLOWED, b"last")
        async with asyncio.timeout(10):
            while b"last" not in received:
                await asyncio.sleep(0.05)
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    assert received.count(b"many") == 20 and b"denied" not in received
    assert received[:2] == [b"allowed", b"plain"]
    # Over 3.1.1 the same refusal is acknowledged as if delivered: why the agent prefers 5.
    async with AckedClient(**args(acl_broker, V311)) as v311:
        assert (await v311.publish_acked(DENIED, b"lost")).value == 0


@pytest.mark.servers
async def test_a_v5_session_outlives_its_connection_by_its_expiry(acl_broker: Mosquitto) -> None:
    for expiry, kept in ((3600, True), (0, False)):
        name = f"session-{expiry}"
        first = AckedClient(**args(acl_broker, V5, name, session_expiry=expiry))
        async with first:
            assert not first.session_present, "a new client id has no session yet"
            await first.subscribe("enoc/#", qos=1)
        again = AckedClient(**args(acl_broker, V5, name, session_expiry=expiry))
        async with again:
            assert again.session_present is kept, f"session expiry {expiry}"
            await again.publish_acked(ALLOWED, b"x")


@pytest.mark.servers
async def test_a_publish_on_a_lost_connection_fails_instead_of_waiting(
    acl_broker: Mosquitto,
) -> None:
    async with AckedClient(**args(acl_broker, V5, timeout=60)) as client:
        await asyncio.to_thread(acl_broker.stop)

        async def publish_until_it_fails() -> None:
            async with asyncio.timeout(30):  # well inside the client's own 60 s
                for _ in range(100):  # the first may be written before the reset is seen
                    await client.publish_acked(ALLOWED, b"x")
                    await asyncio.sleep(0.1)

        with pytest.raises(aiomqtt.MqttError):
            await publish_until_it_fails()


async def test_the_agent_falls_back_to_3_1_1_with_the_demos_amqtt_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # as the demo does
    port = free_port()
    broker = await start_broker(port)
    url = f"mqtt://{HOST}:{port}"
    try:
        async with simulated_site(tmp_path) as site, Listener(url) as listener:
            config = agent_config(tmp_path, url, site.inventory)
            async with running_agent(config) as agent:
                await listener.wait_for(
                    lambda lst: (
                        len(lst.metrics()) >= 2 * len(site.devices) and len(lst.statuses()) >= 2
                    ),
                    what="metrics and a heartbeat over 3.1.1",
                )
                assert agent.publisher.stats.connects == 1
                assert agent.health()["mqtt_protocol"] == 4
                # the unanswered v5 attempt left no socket behind (aiomqtt keeps it open):
                # the broker has two clients here, the listener and the agent's 3.1.1 one
                to_broker = [
                    c
                    for c in psutil.Process().net_connections("tcp")
                    if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                ]
                assert len(to_broker) == 2, to_broker
                assert agent.health()["publish_refused"] == 0
            beat = listener.statuses()[-2]
            assert beat.state == "online" and beat.health["mqtt_protocol"] == 4
            assert listener.statuses()[-1].state == "offline", "a clean stop over 3.1.1 too"
    finally:
        await broker.shutdown()
    fallbacks = [r for r in caplog.records if "does not speak MQTT 5" in r.getMessage()]
    assert len(fallbacks) == 1
    assert not [r for r in caplog.records if "is failing" in r.getMessage()], "no backoff"
    # the unanswered v5 attempt left nothing running (aiomqtt keeps its socket and a task)
    await asyncio.sleep(0.2)
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not left, left


def test_a_writer_asked_for_by_a_lost_connection_is_not_added() -> None:
    """paho asks for the socket's writer from its thread and the loop adds it later: a
    connection lost in between (the demo's WAN cut) must not leave asyncio adding a closed
    descriptor (uvloop: EBADF, a traceback in the log). An open one still gets its writer."""
    import socket

    import uvloop

    errors: list[dict[str, Any]] = []
    writes: list[str] = []

    class Paho:  # what the writer calls: paho's loop_write
        def __init__(self, name: str) -> None:
            self.name = name

        def loop_write(self) -> int:
            writes.append(self.name)
            return 0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        client = AckedClient(hostname=HOST)
        lost, peer = socket.socketpair()
        client._on_socket_register_write(Paho("lost"), None, lost)  # type: ignore[arg-type]
        lost.close()
        peer.close()
        for _ in range(3):
            await asyncio.sleep(0)  # the loop runs what paho asked for, the socket gone
        kept, other = socket.socketpair()
        client._on_socket_register_write(Paho("kept"), None, kept)  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0)  # the loop runs what paho asked for; kept is writable
        loop.remove_writer(kept.fileno())
        kept.close()
        other.close()

    uvloop.run(main())
    assert errors == [], errors
    assert "kept" in writes and "lost" not in writes


@pytest.mark.servers
async def test_a_publish_no_one_subscribes_to_stays_in_the_spool_until_one_does(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto answers a v5 publish that matches no subscription "No matching
    subscribers" (16) and forgets it: a new site before its partitioned collector replica
    subscribes. The agent keeps such messages and sends them once a consumer subscribes."""
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    async with simulated_site(tmp_path) as site:
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            deadline = asyncio.get_running_loop().time() + 20
            while not (
                int(agent.health()["publish_unmatched"]) >= 1
                and agent.publisher.spool_depth >= 2 * len(site.devices)
            ):
                assert asyncio.get_running_loop().time() < deadline, agent.health()
                await asyncio.sleep(0.1)
            assert agent.health()["publish_refused"] == 0, "not a refusal"
            held = agent.publisher.metrics.next_seq - 1
            async with Listener(mosquitto.url) as listener:
                await listener.wait_for(
                    lambda lst: {m.seq for m in lst.metrics()} >= set(range(1, held + 1)),
                    timeout=30,
                    what=f"the {held} metrics messages published before anyone subscribed",
                )
    unmatched = [r for r in caplog.records if "no consumer subscribes" in r.getMessage()]
    assert len(unmatched) == 1, "once per streak"
    assert any("recovered" in r.getMessage() for r in caplog.records)
