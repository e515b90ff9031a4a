"""Metrics on two VictoriaMetrics nodes: the collector's remote_write sink writes to one
vmagent (Debian's, 1.79) that replicates every sample to both nodes or shards the series
between them (testbed/vmagent.py).

Each test counts exact samples in each node: replicated, both hold every point; a node
stopped while metrics flow gets what it missed from vmagent's queue once it is back, and
the collector's acknowledgements never wait for it; sharded, every series is on exactly
one node and the two together hold every point, and a down node's share waits for it.
deploy/'s compose overlay and Kubernetes manifest for the same path are checked against
the flags the binaries know, and with Compose and kubectl where they are installed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from collectorkit import collector_config, eventually, running_collector
from deploykit import DEPLOY
from test_collector_faults import T0, metrics, publish_all
from test_deploy_files import compose_config

from collector.sinks.remote_write import RemoteWriteSink
from enoc.wire import encode, topic
from testbed.servers import VICTORIA_METRICS, Mosquitto, VictoriaMetrics
from testbed.vmagent import VMAGENT, MetricsPair, shard_relabel

NAME = topic("lab", "agent-1", "metrics")
DEVICES = 16
MATCH = '{__name__=~"device_cpu|interface_in_bps"}'

Point = tuple[str, str, float, float]  # series name, device, seconds, value


def device_of(seq: int) -> str:
    return f"dev-{seq % DEVICES}"


def expected(seqs: range) -> set[Point]:
    """What the messages `seqs` make: a cpu sample and an in_bps sample each."""
    points: set[Point] = set()
    for seq in seqs:
        at = round(T0 + seq, 3)
        points.add(("device_cpu", device_of(seq), at, float(seq % 100)))
        points.add(("interface_in_bps", device_of(seq), at, float(seq) * 10))
    return points


def stored(node: VictoriaMetrics) -> list[Point]:
    """Every sample of the test's series on `node`, as a list: a duplicate would show."""
    return [
        (row["metric"]["__name__"], row["metric"]["device"], round(t / 1000, 3), v)
        for row in node.export(MATCH)
        for t, v in zip(row["timestamps"], row["values"], strict=True)
    ]


def series_of(node: VictoriaMetrics) -> set[tuple[str, str]]:
    return {(row["metric"]["__name__"], row["metric"]["device"]) for row in node.export(MATCH)}


async def publish(url: str, seqs: range) -> None:
    await publish_all(url, [(NAME, encode(metrics(seq, device_of(seq)))) for seq in seqs])


def config(tmp_path: Path, mosquitto: Mosquitto, pair: MetricsPair) -> Path:
    """A collector whose one metrics sink is remote write to the pair's vmagent."""
    return collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "sinks": [
                {
                    "remote_write": {
                        "name": "vmagent",
                        "url": pair.write_url,
                        "flush_interval": "0.2s",
                    }
                }
            ]
        },
    )


async def holds(node: VictoriaMetrics, points: set[Point]) -> bool:
    return set(await asyncio.to_thread(stored, node)) == points


async def together_hold(pair: MetricsPair, points: set[Point]) -> bool:
    """The two nodes of `pair` together hold exactly `points`."""
    both = [await asyncio.to_thread(stored, node) for node in pair.nodes.values()]
    return {p for one in both for p in one} == points


def test_shard_relabel_keeps_one_share_and_drops_its_working_label() -> None:
    rules = shard_relabel(1, 2)
    assert "action: hashmod\n  source_labels: [device]\n  modulus: 2" in rules
    assert "action: keep\n  source_labels: [__shard]\n  regex: '1'" in rules
    assert rules.endswith("- action: labeldrop\n  regex: __shard\n")


@pytest.mark.servers
async def test_replicated_both_nodes_hold_every_point(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with MetricsPair(tmp_path / "metrics", "replicate") as pair:
        async with running_collector(config(tmp_path, mosquitto, pair)) as coll:
            await publish(mosquitto.url, range(200))
            await eventually(lambda: coll.ingest.stats.acked == 200, what="all acknowledged")
            sink = coll.sinks["vmagent"]
            assert isinstance(sink, RemoteWriteSink)
            assert sink.stats.points_written == 400
            assert sink.stats.points_dropped == sink.stats.retries == 0
        want = expected(range(200))
        for name, node in pair.nodes.items():
            await eventually(lambda node=node: holds(node, want), what=f"every point in {name}")
            points = stored(node)
            assert len(points) == len(want) == 400, f"{name}: each point once"
            assert len(series_of(node)) == 2 * DEVICES


@pytest.mark.servers
async def test_a_node_stopped_while_metrics_flow_gets_what_it_missed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Node b stops after 100 messages; 200 more flow while it is down: the collector
    acknowledges each (vmagent takes them), node a has them, vmagent retries b's share;
    b started again ends with all 300 messages' points, once each."""
    with MetricsPair(tmp_path / "metrics", "replicate") as pair:
        a, b = pair.nodes["a"], pair.nodes["b"]
        assert pair.agent is not None
        async with running_collector(config(tmp_path, mosquitto, pair)) as coll:
            await publish(mosquitto.url, range(100))
            await eventually(lambda: coll.ingest.stats.acked == 100, what="first 100 acked")
            await eventually(lambda: holds(b, expected(range(100))), what="b has the first 100")
            b.stop()
            await publish(mosquitto.url, range(100, 300))
            await eventually(
                lambda: coll.ingest.stats.acked == 300, what="acknowledged with b down"
            )
            await eventually(lambda: holds(a, expected(range(300))), what="a has all 300")
            agent = pair.agent
            errors = "vmagent_remotewrite_errors_total"
            await eventually(lambda: agent.by_target(errors)[1] > 0, what="vmagent retrying b")
            assert agent.by_target(errors)[0] == 0, "a is written at once"
            assert not b.running
            b.start()
            await eventually(
                lambda: holds(b, expected(range(300))), what="b gets what it missed", timeout=45
            )
            await eventually(lambda: agent.pending_bytes() == 0, what="vmagent's queue empty")
            sink = coll.sinks["vmagent"]
            assert sink.stats.points_written == 600
            assert sink.stats.points_dropped == sink.stats.retries == 0, "never a failed write"
            assert coll.health()["vmagent"]["ok"]
        for name, node in pair.nodes.items():
            assert len(stored(node)) == 600, f"{name}: every point once, 0 lost"


@pytest.mark.servers
async def test_sharded_every_series_is_on_exactly_one_node(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with MetricsPair(tmp_path / "metrics", "shard") as pair:
        async with running_collector(config(tmp_path, mosquitto, pair)) as coll:
            await publish(mosquitto.url, range(160))
            await eventually(lambda: coll.ingest.stats.acked == 160, what="all acknowledged")
        want = expected(range(160))
        await eventually(
            lambda: together_hold(pair, want), what="every point on one node or the other"
        )
        a, b = (stored(node) for node in pair.nodes.values())
        assert len(a) + len(b) == len(want) == 320, "each point once over both nodes"
        assert a and b, "both nodes have a share"
        series_a, series_b = series_of(pair.nodes["a"]), series_of(pair.nodes["b"])
        assert not series_a & series_b, "no series on both"
        assert len(series_a | series_b) == 2 * DEVICES
        # a device's series stay together (the shard key is the device)
        assert not {d for _, d in series_a} & {d for _, d in series_b}
        assert all("__shard" not in row["metric"] for row in pair.nodes["a"].export(MATCH))


@pytest.mark.servers
async def test_sharded_a_down_node_keeps_its_share_waiting_and_the_other_goes_on(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Sharded, node b stopped: a gets its share at once, b's share waits in vmagent and
    arrives when b is back; no series moves to the other node."""
    with MetricsPair(tmp_path / "metrics", "shard") as pair:
        a, b = pair.nodes["a"], pair.nodes["b"]
        async with running_collector(config(tmp_path, mosquitto, pair)) as coll:
            await publish(mosquitto.url, range(64))
            await eventually(lambda: coll.ingest.stats.acked == 64, what="first 64 acked")
            first = expected(range(64))
            await eventually(lambda: together_hold(pair, first), what="the first 64 stored")
            b.stop()
            await publish(mosquitto.url, range(64, 160))
            await eventually(lambda: coll.ingest.stats.acked == 160, what="acked with b down")
            want = expected(range(160))
            devices_a = {d for _, d in series_of(a)}
            share_a = {p for p in want if p[1] in devices_a}
            await eventually(lambda: holds(a, share_a), what="a has all of its share")
            b.start()
            await eventually(lambda: holds(b, want - share_a), what="b's share", timeout=45)
        assert 0 < len(share_a) < len(want) == 320
        assert len(stored(a)) + len(stored(b)) == 320, "each point once over both nodes"


@pytest.mark.servers
async def test_what_a_down_node_missed_outlives_a_vmagent_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """vmagent restarted while node b is down keeps b's share in its on-disk queue
    (`-remoteWrite.tmpDataPath`) and delivers it once b is back: 0 lost."""
    with MetricsPair(tmp_path / "metrics", "replicate") as pair:
        a, b = pair.nodes["a"], pair.nodes["b"]
        assert pair.agent is not None
        async with running_collector(config(tmp_path, mosquitto, pair)) as coll:
            b.stop()
            await publish(mosquitto.url, range(120))
            await eventually(lambda: coll.ingest.stats.acked == 120, what="acked with b down")
            await eventually(lambda: holds(a, expected(range(120))), what="a has all 120")
            agent = pair.agent
            await asyncio.to_thread(agent.stop)
            assert agent.queued_on_disk()[1] > 0, "b's share waits in vmagent's files"
            assert agent.queued_on_disk()[0] == 0, "a has had its share"
            await asyncio.to_thread(agent.start)  # on the same port: the sink reconnects
            b.start()
            await eventually(
                lambda: holds(b, expected(range(120))), what="b gets what it missed", timeout=45
            )
        for name, node in pair.nodes.items():
            assert len(stored(node)) == 240, f"{name}: every point once"


# ---------------------------------------------------------------- deploy/


def known_flags(binary: str) -> set[str]:
    """The flags Debian's `binary` (1.79) lists in its -help."""
    text = subprocess.run([binary, "-help"], capture_output=True, text=True, check=False)
    return set(re.findall(r"^  -(\S+)", text.stdout + text.stderr, re.MULTILINE))


def flag_names(args: list[str]) -> set[str]:
    return {arg.removeprefix("-").split("=", 1)[0] for arg in args}


def remote_write_urls(args: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith("-remoteWrite.url=")]


@pytest.mark.servers
def test_the_compose_overlay_puts_vmagent_before_two_nodes_with_flags_they_know() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.metrics.yaml").read_text())
    services = compose["services"]
    agent, node_a, node_b = (
        services[n] for n in ("vmagent", "victoria-metrics-a", "victoria-metrics-b")
    )
    assert remote_write_urls(agent["command"]) == [
        "http://victoria-metrics-a:8428/api/v1/write",
        "http://victoria-metrics-b:8428/api/v1/write",
    ]
    assert "-remoteWrite.tmpDataPath=/queue" in agent["command"]
    assert agent["volumes"] == ["vmagent-queue:/queue"], "the queue outlives the container"
    assert flag_names(agent["command"]) <= known_flags(VMAGENT)
    assert flag_names(node_a["command"]) <= known_flags(VICTORIA_METRICS)
    assert node_a["volumes"] != node_b["volumes"], "each node its own storage"
    for name, service in services.items():
        assert service["networks"] == ["backend"], f"{name}: internal network only"
        assert "ports" not in service, f"{name}: no published port"
        assert "healthcheck" in service


def test_the_compose_overlay_validates_over_the_central_stack(tmp_path: Path) -> None:
    services = compose_config(tmp_path, "compose.metrics.yaml")["services"]
    assert {"vmagent", "victoria-metrics-a", "victoria-metrics-b", "collector-1"} <= set(services)
    assert services["victoria-metrics-b"]["image"].startswith("victoriametrics/victoria-metrics:")


@pytest.mark.servers
def test_the_kubernetes_manifest_replicates_to_both_pods_of_the_statefulset() -> None:
    docs = [
        d
        for d in yaml.safe_load_all((DEPLOY / "k8s" / "metrics" / "metrics.yaml").read_text())
        if d
    ]
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    nodes, agent = sets["victoria-metrics"], sets["vmagent"]
    assert nodes["spec"]["replicas"] == 2
    service = nodes["spec"]["serviceName"]
    ((container,),) = [agent["spec"]["template"]["spec"]["containers"]]
    assert remote_write_urls(container["args"]) == [
        f"http://victoria-metrics-{i}.{service}.enoc.svc.cluster.local:8428/api/v1/write"
        for i in range(2)
    ]
    assert flag_names(container["args"]) <= known_flags(VMAGENT)
    ((node,),) = [nodes["spec"]["template"]["spec"]["containers"]]
    assert flag_names(node["args"]) <= known_flags(VICTORIA_METRICS)
    queue = [c["metadata"]["name"] for c in agent["spec"]["volumeClaimTemplates"]]
    assert queue == ["queue"] and "-remoteWrite.tmpDataPath=/queue" in container["args"]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # its own kustomization renders them all, in enoc's namespace
        rendered = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "k8s" / "metrics")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out = [d for d in yaml.safe_load_all(rendered) if d]
        assert {(d["kind"], d["metadata"]["name"]) for d in out} == {
            (d["kind"], d["metadata"]["name"]) for d in docs
        }
        assert {d["metadata"]["namespace"] for d in out} == {"enoc"}
