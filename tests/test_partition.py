"""Sites partitioned between collector replicas (collector/partition.py): the
highest-random-weight assignment, the handover rules, per-device state kept only for the
sites a replica keeps, and three replicas on one PostgreSQL and one Mosquitto, one of
them stopped: its sites taken over, no message lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
import yaml
from collectorkit import TOKENS, collector_config, eventually, running_collector

from collector import lineproto
from collector.app import Collector
from collector.config import CollectorConfig, CollectorMqttConfig, check_collector
from collector.config_nats import NatsConfig
from collector.config_partition import PartitionConfig
from collector.ingest import Ingest
from collector.metrics_in import read
from collector.partition import MAX_OWNERS_CACHED, Member, Partition, assign, owner
from collector.recent import RecentValues
from collector.sinks import remote_write
from collector.store import Store
from enoc.bench.partition import cache_sizes
from enoc.wire import (
    Capabilities,
    DeviceInfo,
    DeviceSample,
    MetricsMessage,
    StatusMessage,
    encode,
    topic,
)
from testbed.nats import NatsCluster, NatsNode
from testbed.servers import Mosquitto, PostgreSQL, VictoriaMetrics

SITES = [f"site-{n:04d}" for n in range(1000)]
T0 = 1_700_000_000.0


# ------------------------------------------------------------------ assignment


def test_owner_is_the_same_whatever_the_order_of_the_replicas() -> None:
    replicas = ["r1", "r2", "r3", "r4"]
    for site in SITES[:200]:
        assert owner(site, replicas) == owner(site, list(reversed(replicas)))
    assert owner("lab", []) is None


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_sites_are_shared_evenly(count: int) -> None:
    replicas = [f"enoc-collector-{n}" for n in range(count)]
    shares = assign(SITES, replicas)
    assert sorted(s for share in shares.values() for s in share) == sorted(SITES)
    fair = len(SITES) / count
    for replica, share in shares.items():
        # binomial spread over 1,000 sites: 4 standard deviations at most
        assert abs(len(share) - fair) <= max(20, 4 * (fair * (1 - 1 / count)) ** 0.5), replica


def test_a_replica_joining_takes_only_its_own_share_and_one_leaving_gives_only_its_own() -> None:
    three = ["a", "b", "c"]
    before = {s: owner(s, three) for s in SITES}
    joined = {s: owner(s, [*three, "d"]) for s in SITES}
    moved = [s for s in SITES if before[s] != joined[s]]
    assert all(joined[s] == "d" for s in moved)  # nothing moves between the others
    assert 200 <= len(moved) <= 300  # about a quarter
    left = {s: owner(s, ["a", "c"]) for s in SITES}
    moved = [s for s in SITES if before[s] != left[s]]
    assert moved and all(before[s] == "b" for s in moved)  # only b's sites move
    assert Counter(left.values()) == Counter(
        {
            "a": len(SITES) - len(assign(SITES, ["a", "c"])["c"]),
            "c": len(assign(SITES, ["a", "c"])["c"]),
        }
    )


# ------------------------------------------------------------------ handover


def _partition(tmp_path: Path, replica: str, takeover: float = 15) -> Partition:
    store = Store(f"sqlite:///{tmp_path / 'unused.db'}")  # `apply` reads no store
    config = PartitionConfig(takeover=takeover)  # type: ignore[arg-type]
    return Partition(config, store, replica=replica, client_id=replica, url=lambda: "")


def test_a_moving_site_is_kept_until_its_new_owner_has_subscribed(tmp_path: Path) -> None:
    a = _partition(tmp_path, "a")
    a.sites.update(SITES[:100])
    kept: list[set[str]] = []
    a.forgetters.append(lambda keep: kept.append({s for s in SITES[:100] if keep(s)}))
    a.apply([Member("a", "", "a", 100.0, "")], now=100.0)
    assert a.members == ("a",)
    assert a.wanted() == set(SITES[:100])
    # b joins and has not subscribed yet: a keeps every site, b's too
    b_sites = {s for s in SITES[:100] if owner(s, ["a", "b"]) == "b"}
    assert b_sites
    a.apply([Member("a", "", "a", 105.0, "a"), Member("b", "", "b", 105.0, "")], now=105.0)
    assert a.members == tuple("ab")
    assert a.held == b_sites
    assert a.wanted() == set(SITES[:100])
    assert kept[-1] == set(SITES[:100])
    # b says it has subscribed for the members a sees: a lets b's sites go
    a.apply([Member("a", "", "a", 110.0, "a,b"), Member("b", "", "b", 110.0, "a,b")], now=110.0)
    assert a.held == set() and a.released == len(b_sites)
    assert a.wanted() == set(SITES[:100]) - b_sites
    assert kept[-1] == set(SITES[:100]) - b_sites
    # b's heartbeat stops: after `takeover` a owns everything again, at once
    a.apply([Member("a", "", "a", 120.0, "a,b"), Member("b", "", "b", 110.0, "a,b")], now=120.0)
    assert a.members == tuple("ab")
    a.apply([Member("a", "", "a", 126.0, "a,b"), Member("b", "", "b", 110.0, "a,b")], now=126.0)
    assert a.members == tuple("a")
    assert a.wanted() == set(SITES[:100]) and a.left == 1


def test_the_owners_remembered_are_bounded_and_forgotten_with_the_members(tmp_path: Path) -> None:
    a = _partition(tmp_path, "a")
    a.apply([Member("a", "", "a", 100.0, "")], now=100.0)
    for n in range(MAX_OWNERS_CACHED + 10):  # site names from hostile messages
        assert a.owns(f"x{n}")
    assert len(a._owners) <= MAX_OWNERS_CACHED
    assert all(a.owns(s) for s in SITES[:100])  # remembered: a alone owns them
    a.apply([Member("a", "", "a", 101.0, "a"), Member("b", "", "b", 101.0, "")], now=101.0)
    assert {a.owns(s) for s in SITES[:100]} == {True, False}  # asked again of both


async def test_a_clean_stop_hands_its_sites_over_at_the_next_round(tmp_path: Path) -> None:
    """Two replicas on one store: b stops cleanly; a owns every site at its next round,
    not `takeover` later, and b's row stays for its sessions' drain."""
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    now = [T0]
    replicas = {
        name: Partition(
            PartitionConfig(takeover=60),  # type: ignore[arg-type]
            store,
            replica=name,
            client_id=f"enoc-{name}",
            url=lambda: "",
            clock=lambda: now[0],
        )
        for name in "ab"
    }
    a, b = replicas["a"], replicas["b"]
    try:
        a.sites.update(SITES[:50])
        for replica in (a, b, a):
            await replica.round()
        assert a.members == ("a", "b")
        await b.start()
        await b.close()  # its lanes are closed first: the partition last
        now[0] += 2  # a heartbeat later, far less than `takeover`
        await a.round()
        assert list(a.members) == ["a"] and a.left == 1
        assert a.wanted() == set(SITES[:50])
        assert "b" in a.rows, "kept until a survivor has drained b's sessions"
    finally:
        await store.close()


async def test_a_site_first_read_from_the_store_is_subscribed_to_by_its_owner(
    tmp_path: Path,
) -> None:
    # Another replica wrote the site's agent row before this one read the site's status:
    # the status then finds the site known, and only the round can wake the lanes.
    store = Store(f"sqlite:///{tmp_path / 'shared.db'}")
    await store.open()
    try:
        a = Partition(PartitionConfig(), store, replica="a", client_id="a", url=lambda: "")
        lane = a.watch("metrics")
        await a.round()
        assert a.members == ("a",)
        lane.clear()
        await store.run(
            lambda tx: tx.execute(
                "INSERT INTO agents (agent, site, state, last_seen) VALUES (?, ?, ?, ?)",
                ("far-agent", "far", "online", T0),
            )
        )
        await a.round()
        assert a.wanted() == {"far"}
        assert lane.is_set()  # the lane subscribes to it now, not at some later change
        a.saw("far")  # its status, late: nothing more to do
        assert a.wanted() == {"far"}
    finally:
        await store.close()


def _metrics(site: str, seq: int, devices: int = 2) -> MetricsMessage:
    samples = [
        DeviceSample(f"{site}-d{n}", "127.0.0.9", T0 + seq, {"cpu": float(seq)})
        for n in range(devices)
    ]
    return MetricsMessage(f"{site}-agent", site, "emea", seq, T0 + seq, samples=samples)


def test_the_window_and_the_tag_cache_drop_the_sites_kept_elsewhere() -> None:
    window = RecentValues()
    for site in SITES[:40]:
        message = _metrics(site, 1)
        window.add(read(site, message.agent, encode(message)))
        remote_write.encode(lineproto.metrics_chunk(message)[0])
    assert {s for s, _ in window.devices} == set(SITES[:40])
    assert set(SITES[:40]) <= lineproto.cached_device_sites()
    mine = set(assign(SITES[:40], ["a", "b"])["a"])
    assert window.forget(lambda s: s in mine) == 2 * (40 - len(mine))
    lineproto.forget_devices(lambda s: s in mine)
    assert {s for s, _ in window.devices} == mine
    assert lineproto.cached_device_sites() == mine
    # the remote-write sink's labels, by each series' site tag
    assert remote_write.forget_series(lambda s: s in mine) >= 2 * (40 - len(mine))
    assert remote_write.forget_series(lambda s: s in mine) == 0
    # (the cache is the process's: series of other tests on this worker carry no site tag)
    heads = [head for head, _ in remote_write._series if b",site=" in head]
    kept = {head.split(b",site=")[1].decode() for head in heads}
    assert kept == mine


def test_partition_config_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="takeover must be at least 1s"):
        PartitionConfig(takeover=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat must be at most half"):
        PartitionConfig(takeover=10, heartbeat=6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"partition\.url"):
        PartitionConfig(url="127.0.0.1:8080")
    with pytest.raises(ValueError, match="partition through its MQTT gateways instead"):
        CollectorConfig(nats=NatsConfig(), partition=PartitionConfig())
    assert PartitionConfig(takeover=10).interval == 2  # type: ignore[arg-type]


def test_check_config_advises_on_partition(tmp_path: Path) -> None:
    extra = {"partition": {"takeover": "5s"}, "mqtt": {"shared_group": "enoc"}}
    config = collector_config(tmp_path, "mqtt://127.0.0.1:1883", extra=extra)
    checked = check_collector(config)
    assert checked.result().partition == PartitionConfig(takeover=5)  # type: ignore[arg-type]
    said = {w.key: str(w) for w in checked.warnings}
    assert "use PostgreSQL" in said["store.url"]
    assert "not used with partition" in said["mqtt.shared_group"]
    plain = check_collector(collector_config(tmp_path, "mqtt://127.0.0.1:1883", name="plain"))
    assert not any("partition" in str(w) for w in plain.warnings)


def test_memory_per_replica_falls_as_replicas_are_added() -> None:
    sizes = cache_sizes(sites=60, devices=5, replicas=(1, 2, 4))
    assert sizes[1]["devices"] == 300
    assert sizes[2]["devices"] < sizes[1]["devices"] and sizes[4]["devices"] < sizes[2]["devices"]
    assert sizes[4]["bytes"] < sizes[2]["bytes"] < sizes[1]["bytes"]


# ------------------------------------------------------------------ three replicas


FLEET = [f"branch-{n:02d}" for n in range(24)]


async def _status(client: aiomqtt.Client, site: str) -> None:
    message = StatusMessage(
        f"{site}-agent",
        site,
        "emea",
        0,
        T0,
        devices=[DeviceInfo(f"{site}-d0", "127.0.0.9"), DeviceInfo(f"{site}-d1", "127.0.0.9")],
        capabilities={f"{site}-d0": Capabilities(found=["if-mib"])},
    )
    await client.publish(topic(site, message.agent, "status"), encode(message), qos=1, retain=True)


async def _poll(client: aiomqtt.Client, seq: int) -> None:
    for site in FLEET:
        message = _metrics(site, seq)
        await client.publish(topic(site, message.agent, "metrics"), encode(message), qos=1)


def _polls(collectors: list[Collector], site: str) -> set[int]:
    """The polls of the site's first device in the window of its owner(s)."""
    seqs: set[int] = set()
    for c in collectors:
        entry = c.recent.devices.get((site, f"{site}-d0"))
        if entry is not None:
            seqs |= {round(p[0] - T0) for p in entry.polls}
    return seqs


def _settled(collectors: list[Collector]) -> bool:
    """Every replica sees the same members and every one has subscribed for them."""
    views = {c.partition.view for c in collectors if c.partition}
    applied = {c.partition.applied_view for c in collectors if c.partition}
    held = [c.partition.held for c in collectors if c.partition]
    known = all(c.partition.sites >= set(FLEET) for c in collectors if c.partition)
    return len(views) == 1 and views == applied and not any(held) and known


def _written(vm: VictoriaMetrics) -> set[tuple[str, str, int]]:
    """(site, device, poll) of every device CPU point in VictoriaMetrics."""
    return {
        (row["metric"]["site"], row["metric"]["device"], round(t / 1000 - T0))
        for row in vm.export('{__name__="device_cpu"}')
        for t in row["timestamps"]
    }


def _expected(polls: range) -> set[tuple[str, str, int]]:
    return {(site, f"{site}-d{n}", seq) for site in FLEET for n in (0, 1) for seq in polls}


@contextlib.asynccontextmanager
async def _replicas(
    tmp_path: Path,
    brokers: tuple[Mosquitto | list[str], VictoriaMetrics, PostgreSQL],
    names: list[str],
) -> AsyncIterator[list[Collector]]:
    """Partitioned replicas on one broker, or on a cluster's nodes (`mqtt.urls`)."""
    broker, vm, postgres = brokers
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for name in names:
            config = collector_config(
                tmp_path,
                broker.url if isinstance(broker, Mosquitto) else broker[0],
                vm=vm,
                store_url=postgres.url,
                name=name,
                extra={"partition": {"takeover": "3s", "heartbeat": "0.3s"}},
            )
            if isinstance(broker, list):
                settings = yaml.safe_load(config.read_text())
                settings["mqtt"] = {"urls": broker, "client_id": settings["mqtt"]["client_id"]}
                config.write_text(yaml.safe_dump(settings))
            out.append(await stack.enter_async_context(running_collector(config)))
        yield out


def _page(collector: Collector, site: str, device: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{collector.http_port}/api/v1/devices/{site}/{device}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKENS['viewer1']}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


@pytest.mark.servers
async def test_replicas_keep_only_their_sites_and_take_over_a_lost_ones_share(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics, postgres: PostgreSQL
) -> None:
    names = ["r1", "r2", "r3"]
    servers = (mosquitto, victoria_metrics, postgres)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-agents") as agents:
        for site in FLEET:
            await _status(agents, site)
        async with contextlib.AsyncExitStack() as outer:
            first = await outer.enter_async_context(_replicas(tmp_path, servers, names[:2]))
            inner = contextlib.AsyncExitStack()
            third = await inner.enter_async_context(_replicas(tmp_path, servers, names[2:]))
            every = [*first, *third]
            await eventually(lambda: _settled(every), what="three replicas settled")
            ids = [f"enoc-{n}" for n in names]
            shares = assign(FLEET, ids)
            assert all(shares.values())  # 24 sites: each replica owns some
            for seq in (1, 2, 3):
                await _poll(agents, seq)
            await eventually(
                lambda: all(_polls(every, s) == {1, 2, 3} for s in FLEET), what="3 polls"
            )
            for c, replica in zip(every, ids, strict=True):
                # state for its own sites and no other
                assert {site for site, _ in c.recent.devices} == shares[replica]
                assert {site for site, _ in c.capabilities} == shares[replica]
            # a device page asked of a replica that does not own the site: the owner's
            site = sorted(shares["enoc-r2"])[0]
            page = await asyncio.to_thread(_page, every[0], site, f"{site}-d0")
            recent = page["recent"]
            assert isinstance(recent, dict) and recent["source"] == "local"
            assert [round(t - T0) for t in recent["history"]["t"]] == [1, 2, 3]
            assert page["capabilities"] == {"found": ["if-mib"], "sources": {}}
            # r3 stops: its heartbeat ages out, r1 and r2 take its sites within `takeover`
            await inner.aclose()
            await _poll(agents, 4)  # before the takeover: in r3's session
            await eventually(
                lambda: (
                    _settled(first)
                    and all(c.partition and len(c.partition.members) == 2 for c in first)
                ),
                timeout=10,
                what="r3's sites taken over",
            )
            await _poll(agents, 5)
            # nothing lost: every poll of every device written, poll 4 of r3's sites too
            # (taken from r3's sessions by its adopter)
            await eventually(
                lambda: _written(victoria_metrics) >= _expected(range(1, 6)),
                what="every poll written",
            )
            await eventually(  # after its 2 s without a message
                lambda: (
                    sum(c.partition.drained for c in first if c.partition) >= len(shares["enoc-r3"])
                ),
                what="r3's sessions drained",
            )
            await eventually(
                lambda: all(_polls(first, s) >= {5} for s in FLEET), what="poll 5 in the windows"
            )
            two = assign(FLEET, ids[:2])
            for c, replica in zip(first, ids[:2], strict=True):
                await eventually(
                    lambda c=c, r=replica: {site for site, _ in c.recent.devices} == two[r],
                    what="state only for the sites each owns now",
                )


@pytest.mark.servers
async def test_partitioned_replicas_on_a_nats_clusters_mqtt_gateways(
    tmp_path: Path,
    nats_cluster: NatsCluster,
    victoria_metrics: VictoriaMetrics,
    postgres: PostgreSQL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same partitioning over a cluster: two replicas subscribe by site through the
    three NATS nodes' MQTT gateways (`mqtt.urls`), each keeps only its own sites; one stops
    and the other takes its sites and what its sessions held: every poll written."""
    # 8 sites: each subscription there is a consumer the cluster replicates (slow to make)
    monkeypatch.setattr(sys.modules[__name__], "FLEET", FLEET[:8])
    urls = [node.mqtt_url for node in nats_cluster.nodes]
    servers = (urls, victoria_metrics, postgres)
    node = nats_cluster.nodes[0]
    async with aiomqtt.Client(
        node.host, node.mqtt_port, identifier="test-agents", protocol=aiomqtt.ProtocolVersion.V311
    ) as agents:
        for site in FLEET:
            await _status(agents, site)
        async with _replicas(tmp_path, servers, ["r1"]) as first:
            inner = contextlib.AsyncExitStack()
            second = await inner.enter_async_context(_replicas(tmp_path, servers, ["r2"]))
            every = [*first, *second]
            await eventually(lambda: _settled(every), timeout=30, what="two replicas settled")
            shares = assign(FLEET, ["enoc-r1", "enoc-r2"])
            assert all(shares.values())
            for seq in (1, 2):
                await _poll(agents, seq)
            await eventually(
                lambda: all(_polls(every, s) == {1, 2} for s in FLEET), timeout=30, what="2 polls"
            )
            for c, replica in zip(every, ["enoc-r1", "enoc-r2"], strict=True):
                assert {site for site, _ in c.recent.devices} == shares[replica]
            await inner.aclose()  # r2 stops cleanly: r1 takes its sites
            await _poll(agents, 3)
            await eventually(
                lambda: _written(victoria_metrics) >= _expected(range(1, 4)),
                timeout=45,
                what="every poll written, r2's sites' third too",
            )
            assert first[0].partition is not None and first[0].partition.members == ("enoc-r1",)


class GuardedNats(NatsNode):
    """One NATS node (no cluster) whose only login may not subscribe to site `closed`:
    its MQTT gateway refuses that site's subscriptions in the SUBACK."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, 0, mqtt_replicas=1)

    def config_text(self) -> str:
        text = super().config_text()
        text = text[: text.index("cluster {")] + text[text.index("mqtt {") :]
        return text + (
            "authorization { users: [{user: collector, password: secret-1, permissions: "
            '{subscribe: {allow: [">"], deny: ["enoc.v1.closed.>"]}}}] }\n'
        )

    def ready(self) -> bool:
        return super().ready() and self.healthy()


@pytest.mark.servers
async def test_a_refused_site_subscription_is_counted_and_tried_again(
    tmp_path: Path,
) -> None:
    """A broker that refuses a site's subscription in its SUBACK (here NATS's permissions;
    its gateway under load also fails the consumers it cannot make within 4 s): the site
    is not taken as subscribed, the refusal is counted and logged, it is tried again, and
    the other sites flow meanwhile."""
    with GuardedNats(tmp_path / "nats") as node:
        config = collector_config(
            tmp_path,
            f"mqtt://{node.host}:{node.mqtt_port}",
            extra={
                "mqtt": {"username": "collector", "password": "secret-1"},
                "partition": {"takeover": "3s", "heartbeat": "0.3s"},
            },
        )
        async with (
            running_collector(config) as collector,
            aiomqtt.Client(
                node.host,
                node.mqtt_port,
                identifier="agents",
                username="collector",
                password="secret-1",
                protocol=aiomqtt.ProtocolVersion.V311,
            ) as agents,
        ):
            for site in ("open", "closed"):
                await _status(agents, site)
            stats = collector.ingest.stats
            await eventually(
                lambda: stats.subscriptions_refused["metrics"] >= 2,
                timeout=20,
                what="refused, then again",
            )
            message = _metrics("open", 1)
            await agents.publish(topic("open", message.agent, "metrics"), encode(message), qos=1)
            await eventually(lambda: _polls([collector], "open") == {1}, what="the open site")
            assert collector.counters()["subscriptions_refused.metrics"] >= 2
            health = collector.health()["mqtt"]
            assert health["ok"] is False, "a site it keeps is not subscribed"
            assert health["refused_sites"] == {"metrics": ["closed"], "events": ["closed"]}


@pytest.mark.servers
async def test_a_drain_ends_though_the_dead_replicas_sites_keep_publishing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The dead replica's session keeps its per-site subscriptions, so while its sites
    publish it never falls idle: the drain takes what it holds and ends within `longest`."""

    async def written(_metrics: object, ack: Callable[[], None]) -> None:
        ack()

    async def nothing(*_args: object) -> None:
        return None

    config = CollectorMqttConfig(url=mosquitto.url, client_id="enoc-adopter")
    ingest = Ingest(config, on_metrics=written, on_events=nothing, on_status=nothing)
    dead = "enoc-dead-metrics"
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, identifier=dead, clean_session=False
    ) as c:
        await c.subscribe("enoc/v1/+/+/metrics", qos=1)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="agents") as agents:
        for seq in range(3):  # held by the session while its replica is dead
            message = _metrics("live", seq)
            await agents.publish(topic("live", message.agent, "metrics"), encode(message), qos=1)

        async def publishing() -> None:
            for seq in range(3, 200):
                message = _metrics("live", seq)
                await agents.publish(
                    topic("live", message.agent, "metrics"), encode(message), qos=1
                )
                await asyncio.sleep(0.2)

        feed = asyncio.create_task(publishing())
        try:
            taken = await asyncio.wait_for(ingest.drain(dead, idle=1.0, longest=3.0), 30)
        finally:
            feed.cancel()
    assert taken >= 3, "what the session held came first"
    assert ingest.stats.received["metrics"] == taken


async def test_a_replica_back_before_its_drain_keeps_its_sessions(tmp_path: Path) -> None:
    """A dead replica that heartbeats again (a restart) between its adopter's decision and
    the drain is not drained: both would use its client id."""
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    drained: list[str] = []

    async def drain(client_id: str) -> int:
        drained.append(client_id)
        return 0

    try:
        a = Partition(
            PartitionConfig(takeover=10),  # type: ignore[arg-type]
            store,
            replica="a",
            client_id="enoc-a",
            url=lambda: "",
            clock=lambda: T0,
        )
        a.drain = drain
        await store.run(
            lambda tx: tx.execute(
                "INSERT INTO replicas (id, url, client_id, last_seen, applied) "
                "VALUES ('b', '', 'enoc-b', ?, '')",
                (T0 + 1,),
            )
        )
        await a._drain(Member("b", "", "enoc-b", T0 - 60, ""))  # b came back since
        assert drained == []
        await a._drain(Member("b", "", "enoc-b", T0 + 1, ""))  # still as it was seen
        assert drained == ["enoc-b"]
    finally:
        await store.close()
