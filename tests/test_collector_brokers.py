"""A collector that knows several brokers (`mqtt.urls`, the nodes of a cluster): each lane
tries them in an order of its own and moves to the next node when its node goes, the
session resumed there, as the agent does (enoc/brokers.py)."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest
import yaml
from collectorkit import collector_config, eventually, running_collector

from collector.config import CollectorConfig
from enoc.config import ConfigError, parse_config
from enoc.wire import Event, EventsMessage, encode, topic
from testbed.nats import NatsCluster

SITE, AGENT = "lab", "agent-1"


def events(seq: int) -> bytes:
    message = EventsMessage(
        AGENT,
        SITE,
        "emea",
        seq,
        1.7e9 + seq,
        events=[
            Event(f"ev-{seq}", 1.7e9 + seq, "dev-1", f"if:{seq}", "link", "down", message="down")
        ],
    )
    return encode(message)


async def publish_events(url: str, seq: int, tries: int = 4) -> None:
    """As an agent's spool does: again on a new connection until the PUBACK comes (after
    a node's loss the gateway withholds it while the stream elects a new leader)."""
    host, port = url.removeprefix("mqtt://").split(":")
    for left in reversed(range(tries)):
        try:
            async with aiomqtt.Client(
                host, int(port), identifier=AGENT, protocol=aiomqtt.ProtocolVersion.V311
            ) as client:
                await client.publish(topic(SITE, AGENT, "events"), events(seq), qos=1, timeout=10)
                return
        except aiomqtt.MqttError:
            if not left:
                raise


@pytest.mark.servers
async def test_the_collectors_lanes_move_to_another_node_when_theirs_is_lost(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Three NATS nodes' MQTT gateways (a cluster keeping the sessions in JetStream): the
    events lane's node is SIGKILLed; the lane moves to another node, resumes its session
    there, and an events message published after the loss becomes an incident."""
    urls = [node.mqtt_url for node in nats_cluster.nodes]
    config = collector_config(tmp_path, urls[0])
    settings = yaml.safe_load(config.read_text())
    settings["mqtt"] = {"urls": urls, "client_id": "enoc-brokers"}
    config.write_text(yaml.safe_dump(settings))
    async with running_collector(config) as collector:
        stats = collector.ingest.stats
        await eventually(lambda: bool(stats.connected.get("events")), what="the events lane")
        used = stats.broker["events"]
        lost = urls.index(used)
        other = urls[(lost + 1) % 3]
        await publish_events(other, 1)

        async def incident(resource: str) -> bool:
            found = await collector.engine.queries.incidents(state="active")
            return any(i.key.resource == resource for i in found)

        await eventually(lambda: incident("if:1"), what="the first incident")
        nats_cluster.kill(lost)
        await eventually(
            lambda: (
                stats.broker.get("events", used) != used and bool(stats.connected.get("events"))
            ),
            timeout=45,
            what="the events lane on another node",
        )
        assert stats.broker_switches >= 1
        assert collector.counters()["broker_switches"] == stats.broker_switches
        assert collector.health()["mqtt"]["brokers"]["events"] == stats.broker["events"]
        assert stats.session_present["events"], "the cluster kept the lane's session"
        await publish_events(other, 2)
        await eventually(lambda: incident("if:2"), timeout=30, what="the incident after the loss")


def test_urls_are_checked_by_index_and_exclude_url() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.urls\[1\] must start with mqtt://"):
        parse_config(
            "mqtt: {urls: [mqtt://127.0.0.1:1883, http://127.0.0.2]}",
            CollectorConfig,
            filename="c.yaml",
        )
    with pytest.raises(ConfigError, match=r"mqtt\.urls and mqtt\.url are both given"):
        parse_config(
            "mqtt: {url: mqtt://127.0.0.1:1883, urls: [mqtt://127.0.0.2:1883]}",
            CollectorConfig,
            filename="c.yaml",
        )
    config = parse_config(
        "mqtt: {urls: [mqtt://127.0.0.1:1883, mqtts://127.0.0.2:8883]}",
        CollectorConfig,
        filename="c.yaml",
    )
    assert config.mqtt.brokers == ["mqtt://127.0.0.1:1883", "mqtts://127.0.0.2:8883"]
    assert CollectorConfig().mqtt.brokers == ["mqtt://127.0.0.1:1883"]
