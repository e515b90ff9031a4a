"""The collector's NATS JetStream ingest (collector/nats_ingest.py) on a real three-node NATS
cluster (testbed/nats.py): agents publish over MQTT 3.1.1 to a node's MQTT gateway, collector
replicas share the durable consumers of the stream the gateway stores into.

Each replica here is the collector's own ingest (`NatsIngest` over `Ingest.take`) with a
recording metrics sink in place of InfluxDB: every message is accounted for by its
sequence number (0 lost; duplicates, redelivered after a replica's loss, counted).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import nats
import pytest
import yaml
from collectorkit import collector_config, eventually, running_collector
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from collector.config import CollectorConfig, check_collector
from collector.config_nats import MQTT_STREAM, NatsConfig
from collector.ingest import Ingest
from collector.metrics_in import Metrics
from collector.nats_ingest import (
    NatsIngest,
    NatsSetupError,
    covers,
    ensure_stream,
    ingest_config,
    other_takers,
)
from enoc.config import ConfigError, Duration, parse_config
from enoc.wire import (
    DeviceSample,
    Event,
    EventsMessage,
    MetricsMessage,
    StatusMessage,
    encode,
    topic,
)
from testbed.nats import NatsCluster, NatsNode
from testbed.servers import free_port

pytestmark = pytest.mark.servers
SITE, AGENT = "lab", "agent-1"


def payload(seq: int) -> bytes:
    """A metrics message whose one device is named after its sequence number."""
    sample = DeviceSample(f"dev-{seq}", "127.0.0.9", 1.7e9 + seq, fields={"cpu": 1.0})
    return encode(MetricsMessage(AGENT, SITE, "emea", seq, 1.7e9 + seq, samples=[sample]))


@dataclass
class Recorder:
    """A metrics sink: records each message's seq and acknowledges it (or holds it)."""

    name: str
    hold: bool = False  # never acknowledge: a replica that dies before its writes
    seqs: list[int] = field(default_factory=list)
    delay: float = 0.0
    # a sink whose flush interval never ends: it writes (acknowledges) only when the
    # ingest says the source is drained
    buffered: bool = False
    unwritten: list[Callable[[], None]] = field(default_factory=list)

    async def metrics(self, metrics: Metrics, ack: Callable[[], None]) -> None:
        self.seqs.append(int(metrics.polls[0][0].removeprefix("dev-")))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.buffered:
            self.unwritten.append(ack)
        elif not self.hold:
            ack()

    def drained(self) -> None:
        acks, self.unwritten = self.unwritten, []
        for ack in acks:
            ack()


async def _nothing(*_args: object) -> None:
    return None


def replica(cluster: NatsCluster, recorder: Recorder, **settings: object) -> NatsIngest:
    config = NatsConfig(servers=cluster.urls, name=recorder.name, **settings)  # type: ignore[arg-type]
    return replica_of(config, recorder)


def replica_of(config: NatsConfig, recorder: Recorder) -> NatsIngest:
    ingest = Ingest(
        ingest_config(config),
        on_metrics=recorder.metrics,
        on_events=_nothing,
        on_status=_nothing,
        on_drained=recorder.drained,
    )
    return NatsIngest(config, ingest)


@asynccontextmanager
async def running(source: NatsIngest) -> AsyncIterator[NatsIngest]:
    await source.start()
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        await source.close()
        await task


@asynccontextmanager
async def agent(node: NatsNode, name: str = "agent-1") -> AsyncIterator[aiomqtt.Client]:
    """An agent's MQTT 3.1.1 connection (persistent session) to one node's gateway."""
    async with aiomqtt.Client(
        node.host,
        node.mqtt_port,
        identifier=name,
        clean_session=False,
        protocol=aiomqtt.ProtocolVersion.V311,
    ) as client:
        yield client


async def publish(client: aiomqtt.Client, seqs: range) -> None:
    """Each with QoS 1: returns once every PUBACK came (what lets an agent's spool forget)."""
    for seq in seqs:
        await client.publish(topic(SITE, AGENT, "metrics"), payload(seq), qos=1, timeout=10)


async def publish_as_agent(node: NatsNode, seqs: range, *, deadline: float = 40) -> int:
    """As the agent's spool does: a message is kept until its PUBACK and, when that does
    not come (the gateway could not store it), published again on a new connection.
    Returns how many were published more than once."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    pending = list(seqs)
    again = 0
    while pending:
        try:
            async with agent(node) as client:
                while pending:
                    await client.publish(
                        topic(SITE, AGENT, "metrics"), payload(pending[0]), qos=1, timeout=5
                    )
                    pending.pop(0)
        except aiomqtt.MqttError:
            if loop.time() > end:
                raise
            again += 1
            await asyncio.sleep(0.5)
    return again


def node_of(cluster: NatsCluster, source: NatsIngest) -> int:
    assert source.nc is not None and source.nc.connected_url is not None
    port = source.nc.connected_url.port
    return next(i for i, n in enumerate(cluster.nodes) if n.port == port)


def accounted(recorders: list[Recorder], sent: range) -> tuple[set[int], int]:
    """(the seqs lost, the duplicates) over all replicas."""
    counts = Counter(seq for r in recorders for seq in r.seqs)
    return set(sent) - set(counts), sum(c - 1 for c in counts.values())


# ------------------------------------------------------------------ what a PUBACK promises


async def test_a_puback_means_stored_in_the_gateways_stream_not_in_a_stream_of_ours(
    nats_cluster: NatsCluster,
) -> None:
    """The gateway acknowledges a QoS 1 PUBLISH once it is in `$MQTT_msgs`, whatever else
    captures its subject: with no stream of enoc's subjects it is acknowledged all the same,
    and with no consumer interest `$MQTT_msgs` drops it as it stores it. Once the collector
    set up its consumers, what is acknowledged is held until a replica acknowledges it."""
    nc = await nats.connect(nats_cluster.urls)
    js = nc.jetstream()
    try:
        async with agent(nats_cluster.nodes[0]) as client:
            await publish(client, range(3))  # no stream of ours: PUBACKed anyway
            before = await js.stream_info(MQTT_STREAM)
            assert before.state.last_seq >= 3  # stored (and each PUBACK followed that) ...
            assert before.state.messages == 0  # ... and dropped: nobody's interest
            assert before.config.num_replicas == 3
            config = NatsConfig(servers=nats_cluster.urls)
            await ensure_stream(js, config)
            await publish(client, range(3, 8))
            after = await js.stream_info(MQTT_STREAM)
            assert after.state.messages == 5  # held for the collector's consumer
            metrics = await js.consumer_info(MQTT_STREAM, "enoc-collectors-metrics")
            assert metrics.num_pending == 5
            await ensure_stream(js, config)  # a second replica finds it all in place
            assert await other_takers(js, config) == []
            assert metrics.config.max_ack_pending == 1000  # the default: shared by replicas
            # a window changed in the config is applied to the consumers in place
            wider = NatsConfig(servers=nats_cluster.urls, max_ack_pending=1500)
            await ensure_stream(js, wider)
            for lane in ("metrics", "events"):
                info = await js.consumer_info(MQTT_STREAM, f"enoc-collectors-{lane}")
                assert info.config.max_ack_pending == 1500, lane
                assert info.num_pending == (5 if lane == "metrics" else 0), "its position kept"
            with pytest.raises(NatsSetupError, match="replicated on 3 node"):
                await ensure_stream(js, NatsConfig(servers=nats_cluster.urls, replicas=5))
            await js.add_consumer(
                MQTT_STREAM,
                ConsumerConfig(
                    durable_name="other-metrics",
                    filter_subject="$MQTT.msgs.enoc.v1.*.*.events",
                    deliver_policy=DeliverPolicy.ALL,
                ),
            )
            with pytest.raises(NatsSetupError, match=r"other-metrics .* takes"):
                await ensure_stream(js, NatsConfig(servers=nats_cluster.urls, consumer="other"))
            # a consumer beside the replicas' that takes events too: named for the warning
            assert await other_takers(js, config) == ["other-metrics"]
    finally:
        await nc.close()


def test_which_filters_could_take_the_lanes_subjects() -> None:
    """`covers`: what `other_takers` asks of each consumer's filter (`*` on either side)."""
    metrics = "$MQTT.msgs.enoc.v1.*.*.metrics"
    assert covers("$MQTT.msgs.enoc.v1.>", metrics)  # an MQTT session on enoc/v1/#
    assert covers(">", metrics) and covers("$MQTT.msgs.enoc.v1.lab.a1.metrics", metrics)
    assert not covers("$MQTT.msgs.enoc.v1.*.*.status", metrics)  # a replica's own
    assert not covers("$MQTT.msgs.enoc.v1.*.*", metrics)
    assert not covers("$MQTT.msgs.enoc.v1.lab.a1.metrics.x", metrics)


# ------------------------------------------------------------------ a consumer group


async def test_two_replicas_share_the_stream_and_a_malformed_message_is_dead_lettered(
    nats_cluster: NatsCluster,
) -> None:
    """Every message is taken by one replica of two (0 lost, 0 taken twice); a malformed
    one is terminated and dead-lettered, the next ones taken."""
    a, b = Recorder("a", delay=0.002), Recorder("b", delay=0.002)
    letters: list[dict[str, object]] = []
    nc = await nats.connect(nats_cluster.urls)

    async def letter(msg: Msg) -> None:
        letters.append(json.loads(msg.data))

    sub = await nc.subscribe("enoc.deadletter.v1.>", cb=letter)
    try:
        async with (
            running(replica(nats_cluster, a, batch=10, max_ack_pending=20)) as ra,
            running(replica(nats_cluster, b, batch=10, max_ack_pending=20)) as rb,
            agent(nats_cluster.nodes[2]) as client,
        ):
            await publish(client, range(150))
            await client.publish(topic(SITE, AGENT, "metrics"), b'{"v":1,"trunc', qos=1)
            await publish(client, range(150, 200))
            sent = range(200)
            await eventually(lambda: not accounted([a, b], sent)[0], what="all 200 taken")
            lost, duplicates = accounted([a, b], sent)
            assert (lost, duplicates) == (set(), 0)
            assert a.seqs and b.seqs  # both took a share
            assert (
                ra.ingest.stats.rejected["malformed"] + rb.ingest.stats.rejected["malformed"] == 1
            )
            await eventually(lambda: len(letters) == 1, what="the dead letter")
            assert letters[0]["topic"] == "enoc/v1/lab/agent-1/metrics"
            assert letters[0]["reason"] == "malformed"
            js = nc.jetstream()
            info = await js.consumer_info(MQTT_STREAM, "enoc-collectors-metrics")
            await eventually(lambda: _settled(js), what="every message acknowledged or terminated")
            assert info.num_redelivered == 0
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_replicas_write_their_share_of_the_window_without_waiting_for_it_to_fill(
    nats_cluster: NatsCluster,
) -> None:
    """`max_ack_pending` is the shared consumer's: two replicas hold about half of it
    each, so neither's pending metrics reach the full window that writes at once. Each
    writes what it holds when a fetch finds nothing more ready; with sinks that never
    flush by themselves every message is still written, by both replicas."""
    a, b = Recorder("a", buffered=True), Recorder("b", buffered=True)
    settings = {"batch": 10, "max_ack_pending": 10}
    async with (
        running(replica(nats_cluster, a, **settings)),
        running(replica(nats_cluster, b, **settings)),
        agent(nats_cluster.nodes[1]) as client,
    ):
        await publish(client, range(120))
        sent = range(120)
        await eventually(lambda: not accounted([a, b], sent)[0], what="all 120 taken")
        await eventually(lambda: not (a.unwritten or b.unwritten), what="every one written")
    assert accounted([a, b], sent) == (set(), 0)


async def _settled(js: nats.js.JetStreamContext) -> bool:
    info = await js.consumer_info(MQTT_STREAM, "enoc-collectors-metrics")
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def test_a_lost_replicas_unacknowledged_messages_go_to_the_other(
    nats_cluster: NatsCluster,
) -> None:
    """A replica takes messages and dies before writing them: after `ack_wait` the server
    hands them to the other (0 lost; duplicates counted: none here, since the lost one
    never acknowledged)."""
    dying, survivor = Recorder("dying", hold=True), Recorder("survivor")
    settings = {"ack_wait": Duration(2), "batch": 10, "max_ack_pending": 30}
    async with agent(nats_cluster.nodes[0]) as client:
        async with running(replica(nats_cluster, dying, **settings)):
            await publish(client, range(60))
            await eventually(lambda: len(dying.seqs) == 30, what="the window held by one")
        # closed without acknowledging anything (as a killed process)
        async with running(replica(nats_cluster, survivor, **settings)):
            await publish(client, range(60, 100))
            sent = range(100)
            await eventually(lambda: not accounted([survivor], sent)[0], what="all 100")
    lost, duplicates = accounted([survivor], range(100))
    assert lost == set()
    assert duplicates == 0  # the survivor took each once; the dying one wrote none
    assert set(dying.seqs) <= set(survivor.seqs)


async def test_the_node_a_replica_uses_is_lost_and_it_goes_on(
    nats_cluster: NatsCluster,
) -> None:
    """Kill (SIGKILL) the node a replica is connected to: the client reconnects to another,
    the R3 consumers elect new leaders, and every message is taken (0 lost)."""
    recorder = Recorder("r1")
    async with running(replica(nats_cluster, recorder)) as source:
        used = node_of(nats_cluster, source)
        publisher = nats_cluster.nodes[(used + 1) % 3]
        await publish_as_agent(publisher, range(50))
        await eventually(lambda: len(set(recorder.seqs)) == 50, what="the first 50")
        nats_cluster.kill(used)
        # the gateway withholds PUBACKs while the stream elects a new leader: sent again
        again = await publish_as_agent(publisher, range(50, 100))
        await eventually(
            lambda: not accounted([recorder], range(100))[0],
            timeout=45,
            what="all 100 after the node's loss",
        )
        assert node_of(nats_cluster, source) != used
        assert source.ingest.stats.connects["nats"] >= 2
    lost, duplicates = accounted([recorder], range(100))
    assert lost == set()
    assert duplicates <= again  # only what the agent sent again (deduplicated by seq)


async def test_events_wait_out_a_store_outage(nats_cluster: NatsCluster) -> None:
    """While the store is down an events message is nak'ed (with the rest of its batch)
    and comes again after `nak_delay`; once the store is back each is committed once
    (in whatever order: the engine decides by the events' own times)."""
    committed: list[int] = []
    outage = {"left": 3}  # the store fails the next three commits

    async def on_events(message: EventsMessage) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise ConnectionRefusedError("store down")  # an OSError: an outage
        committed.append(message.seq)

    config = NatsConfig(servers=nats_cluster.urls, nak_delay=Duration(0.5), batch=5)
    ingest = Ingest(
        ingest_config(config),
        on_metrics=Recorder("m").metrics,
        on_events=on_events,
        on_status=_nothing,
    )
    async with running(NatsIngest(config, ingest)), agent(nats_cluster.nodes[0]) as client:
        for seq in range(10):
            message = EventsMessage(
                AGENT,
                SITE,
                "emea",
                seq,
                1.7e9 + seq,
                events=[Event(f"ev-{seq}", 1.7e9, "dev-1", "if:1", "link", "down")],
            )
            await client.publish(topic(SITE, AGENT, "events"), encode(message), qos=1)
        await eventually(lambda: len(committed) == 10, what="all ten committed")
    assert sorted(committed) == list(range(10))
    assert ingest.stats.failed["EventsMessage"] == 3
    assert ingest.stats.acked == 10


async def test_each_replica_sees_every_status_the_retained_ones_first(
    nats_cluster: NatsCluster,
) -> None:
    """A replica starting takes each agent's retained status (marked retained, as an MQTT
    subscription gives it), then every live status: each replica, not one of the group."""
    seen: dict[str, list[tuple[str, int, bool]]] = {"a": [], "b": []}

    def replica_seeing(name: str) -> NatsIngest:
        async def on_status(message: StatusMessage, retained: bool) -> None:
            seen[name].append((message.agent, message.seq, retained))

        config = NatsConfig(servers=nats_cluster.urls, name=name)
        ingest = Ingest(
            ingest_config(config),
            on_metrics=Recorder(name).metrics,
            on_events=_nothing,
            on_status=on_status,
        )
        return NatsIngest(config, ingest)

    def status(agent_name: str, seq: int) -> bytes:
        return encode(StatusMessage(agent_name, SITE, "emea", seq, 1.7e9 + seq))

    async with agent(nats_cluster.nodes[0]) as client:
        for name, seq in (("agent-1", 1), ("agent-1", 2), ("agent-2", 1)):
            await client.publish(topic(SITE, name, "status"), status(name, seq), qos=1, retain=True)
        async with running(replica_seeing("a")), running(replica_seeing("b")):
            await eventually(lambda: len(seen["a"]) == len(seen["b"]) == 2, what="retained")
            await client.publish(topic(SITE, "agent-2", "status"), status("agent-2", 2), qos=1)
            await eventually(lambda: len(seen["a"]) == len(seen["b"]) == 3, what="the live one")
    for name in ("a", "b"):
        assert sorted(seen[name][:2]) == [("agent-1", 2, True), ("agent-2", 1, True)]
        assert seen[name][2] == ("agent-2", 2, False)


# ------------------------------------------------------------------ the whole collector


async def test_a_collector_with_nats_instead_of_mqtt(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """`enoc collector` with a `nats` section: an agent's events over the gateway become an
    incident in the store (committed, then acknowledged), its metrics are acknowledged,
    and /healthz names the `nats` link."""
    config = collector_config(tmp_path, "mqtt://127.0.0.1:1", name="nats-collector")
    settings = yaml.safe_load(config.read_text())
    del settings["mqtt"]
    settings["nats"] = {"servers": nats_cluster.urls, "name": "collector-1", "ack_wait": "5s"}
    config.write_text(yaml.safe_dump(settings))
    events = EventsMessage(
        AGENT,
        SITE,
        "emea",
        1,
        1.7e9,
        events=[Event("ev-1", 1.7e9, "dev-1", "if:1", "link", "down", message="down")],
    )
    async with running_collector(config) as collector:
        assert collector.nats is not None
        async with agent(nats_cluster.nodes[1]) as client:
            await publish(client, range(5))
            await client.publish(topic(SITE, AGENT, "events"), encode(events), qos=1)

        async def opened() -> bool:
            found = await collector.engine.queries.incidents(state="active")
            return any(i.key.resource == "if:1" for i in found)

        await eventually(opened, what="the incident of the events message")
        stats = collector.ingest.stats
        await eventually(lambda: stats.acked == 6, what="all six acknowledged")
        assert stats.received == Counter({"metrics": 5, "events": 1})
        assert collector.health()["nats"]["ok"] is True
        nc = await nats.connect(nats_cluster.urls)
        try:
            for lane in ("metrics", "events"):
                info = await nc.jetstream().consumer_info(MQTT_STREAM, f"enoc-collectors-{lane}")
                assert (info.num_pending, info.num_ack_pending) == (0, 0), lane
        finally:
            await nc.close()


async def test_a_replica_that_reaches_no_server_refuses_to_start(tmp_path: Path) -> None:
    """Nothing listens: the start fails within a few tries, naming the servers (nats-py's
    first connection would otherwise retry for ever, the collector never saying why)."""
    closed = [f"nats://127.0.0.1:{free_port()}", f"nats://127.0.0.1:{free_port()}"]
    source = replica_of(NatsConfig(servers=closed), Recorder("r"))
    with pytest.raises(NatsSetupError, match=re.escape(", ".join(closed))):
        await asyncio.wait_for(source.start(), 30)


# ------------------------------------------------------------------ configuration


def test_nats_replaces_mqtt_and_both_are_refused(tmp_path: Path) -> None:
    base = "store: {url: 'sqlite:///%s'}\n" % (tmp_path / "s.db")
    both = tmp_path / "both.yaml"
    both.write_text(
        base + "nats: {servers: ['nats://127.0.0.1:4222']}\nmqtt: {url: 'mqtt://127.0.0.1:1'}\n"
    )
    with pytest.raises(ConfigError, match="give nats or mqtt, not both"):
        check_collector(both).result()
    one = tmp_path / "one.yaml"
    one.write_text(base + "nats: {servers: ['nats://127.0.0.1:4222'], replicas: 3}\n")
    checked = check_collector(one)
    config = checked.result()
    advice = {issue.key: issue.message for issue in checked.notes if issue.warning}
    assert "one PostgreSQL" in advice["store.url"]  # replicas share through the store
    assert "set it to influxdb" in advice["recent.source"]
    assert config.nats is not None and config.nats.stream == MQTT_STREAM
    with pytest.raises(ConfigError, match=r"nats\.servers: expected nats://HOST:PORT"):
        parse_config("nats: {servers: ['http://x:1']}\n", CollectorConfig)
    with pytest.raises(ConfigError, match=r"nats\.batch"):
        parse_config("nats: {batch: 500, max_ack_pending: 100}\n", CollectorConfig)
