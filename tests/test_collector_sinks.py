"""The metrics sinks (collector/sinks): the fan-out's acknowledgement over every sink, the
remote-write sink's series, and the `sinks:` config.

With servers: a collector with two sinks, InfluxDB 1.6 (`influxdb` section, v1) and
Prometheus remote write into VictoriaMetrics, writes each message to both; while one is
down nothing is acknowledged, and once it is back every message is in both, once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cramjam
import pytest
import yaml
from collectorkit import collector_config, eventually, running_collector
from test_collector_faults import T0, metrics, publish_all  # two points a message: cpu, in_bps

from collector.config import CollectorConfig, check_collector
from collector.config_sinks import RemoteWriteConfig, SinkConfig
from collector.sinks import SINKS, MetricsSink, Sinks, SinkStats, build
from collector.sinks.remote_write import (
    RemoteWriteSink,
    WriteRequest,
    encode,
    label_name,
    metric_name,
)
from enoc.config import ConfigError, Secret, parse_config
from enoc.wire import encode as wire_encode
from enoc.wire import topic
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics

NAME = topic("lab", "agent-1", "metrics")


# ---------------------------------------------------------------- the fan-out, with fakes


class FakeSink:
    """A MetricsSink that holds what it is given until the test says it is written."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.stats = SinkStats()
        self.held: list[tuple[bytes, Callable[[], None] | None]] = []
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    async def run(self) -> None:
        self.events.append("run")

    async def close(self, grace: float = 10.0) -> None:
        self.events.append("close")

    async def write(
        self, lines: bytes, points: int, on_written: Callable[[], None] | None = None
    ) -> None:
        self.held.append((lines, on_written))

    def write_nowait(self, lines: bytes, points: int) -> bool:
        self.held.append((lines, None))
        return True

    def flush(self) -> None:
        self.events.append("flush")

    def written(self) -> None:
        """Call back every message held, as a sink does once its server has them."""
        for _lines, callback in self.held:
            if callback is not None:
                callback()
        self.held.clear()


async def test_a_message_is_acknowledged_when_the_last_sink_has_it() -> None:
    a, b = FakeSink("a"), FakeSink("b")
    sinks = Sinks([a, b])
    acked: list[int] = []
    for n in range(3):
        await sinks.write(b"m f=1 1\n", 1, functools.partial(acked.append, n))
    assert [len(a.held), len(b.held)] == [3, 3], "each message given to every sink"
    a.written()
    assert acked == [], "one sink of two has them: nothing acknowledged"
    b.written()
    assert acked == [0, 1, 2], "each acknowledged once, when the second has it"
    b.written()
    assert acked == [0, 1, 2]


async def test_one_sink_is_called_back_directly_and_none_acknowledges_at_once() -> None:
    only = FakeSink("only")
    acked: list[str] = []
    await Sinks([only]).write(b"m f=1 1\n", 1, lambda: acked.append("x"))
    assert acked == []
    only.written()
    assert acked == ["x"]
    await Sinks([]).write(b"m f=1 1\n", 1, lambda: acked.append("none"))
    assert acked == ["x", "none"], "no sink: nothing to wait for"


async def test_the_fan_out_starts_runs_flushes_and_closes_every_sink() -> None:
    a, b = FakeSink("a"), FakeSink("b")
    sinks = Sinks([a, b])
    await sinks.start()
    running = asyncio.create_task(sinks.run())
    while not (a.events[-1:] == b.events[-1:] == ["run"]):
        await asyncio.sleep(0)
    sinks.flush()
    sinks.write_nowait(b"incident x=1 1\n", 1)
    assert not running.done(), "run() returns only once closed"
    await sinks.close()
    await asyncio.wait_for(running, 5)
    await sinks.close()  # idempotent
    assert a.events == b.events == ["start", "run", "flush", "close"]
    assert len(a.held) == len(b.held) == 1
    with pytest.raises(ValueError, match="two metrics sinks of one name"):
        Sinks([FakeSink("x"), FakeSink("x")])


async def test_a_sink_that_cannot_start_closes_those_started() -> None:
    class Broken(FakeSink):
        async def start(self) -> None:
            raise OSError("no such file")

    good = FakeSink("good")
    with pytest.raises(OSError, match="no such file"):
        await Sinks([good, Broken("broken")]).start()
    assert good.events == ["start", "close"]


async def test_a_buffered_sink_closes_without_start_twice_and_before_its_loop_ran() -> None:
    config = RemoteWriteConfig(url="http://127.0.0.1:9/api/v1/write")
    never = RemoteWriteSink(config)
    await never.close()
    await never.close()
    sink = RemoteWriteSink(config)
    await sink.start()
    await sink.write(b"m f=1 1\n", 1)
    await sink.close(grace=1)
    await asyncio.wait_for(sink.run(), 5)  # returns at once: closed, nothing sent
    assert sink.stats.retries == 0 and sink.stats.buffer_points == 1


def test_the_registry_builds_the_influxdb_section_and_each_sink() -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "influxdb": {"url": "http://127.0.0.1:8086", "api": "v1", "database": "enoc"},
                "sinks": [
                    {"remote_write": {"url": "http://127.0.0.1:8428/api/v1/write"}},
                    {
                        "influxdb": {
                            "name": "second",
                            "url": "http://127.0.0.1:9",
                            "api": "v1",
                            "database": "x",
                        }
                    },
                ],
            }
        ),
        CollectorConfig,
    )

    async def nowhere(_reason: str, _letters: list[dict[str, Any]]) -> int:
        return 0

    sinks = build(config, nowhere)
    assert [(s.name, type(s).__name__) for s in sinks.sinks] == [
        ("influxdb", "InfluxWriter"),
        ("remote_write", "RemoteWriteSink"),
        ("second", "InfluxWriter"),
    ]
    assert set(SINKS) == {"influxdb", "remote_write"}
    one: MetricsSink = sinks["remote_write"]  # every sink is a MetricsSink
    assert one.healthy and one.stats.points_written == 0


# ---------------------------------------------------------------- remote write: the series


def decoded(body: bytes) -> list[tuple[dict[str, str], float, int]]:
    request = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        ({label.name: label.value for label in ts.labels}, s.value, s.timestamp)
        for ts in request.timeseries
        for s in ts.samples
    ]


def test_remote_write_names_a_series_measurement_field_with_the_tags_as_labels() -> None:
    lines = (
        b"interface,device=core\\ 1,ifName=ge-0/0/1,site=lab in_bps=12.5,ifHCInOctets=7i,"
        b'up=true,descr="a string" 1700000000000\n'
        b"device,device=core\\ 1 cpu=3i 1700000001000\n"
    )
    body, unread = encode(lines)
    assert unread == []
    base = {"device": "core 1", "ifName": "ge-0/0/1", "site": "lab"}
    expected = [
        ({**base, "__name__": "interface_in_bps"}, 12.5, 1700000000000),
        ({**base, "__name__": "interface_ifHCInOctets"}, 7.0, 1700000000000),
        ({**base, "__name__": "interface_up"}, 1.0, 1700000000000),
        ({"device": "core 1", "__name__": "device_cpu"}, 3.0, 1700000001000),
    ]
    got = decoded(body)
    assert len(got) == len(expected), "one sample a numeric field, none for the string"
    assert all(sample in got for sample in expected), got
    request = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    names = [label.name for label in request.timeseries[0].labels]
    assert names == sorted(names), "labels sorted by name, as the protocol asks"


def test_remote_write_names_follow_prometheus_rules() -> None:
    assert metric_name("interface_ifHCInOctets") == "interface_ifHCInOctets"
    assert metric_name("enoc_agent_polls.ok-rate") == "enoc_agent_polls_ok_rate"
    assert metric_name("9lives_x") == "_9lives_x"
    assert metric_name("a:b") == "a:b"
    assert label_name("if-Name") == "if_Name"
    assert label_name("a:b") == "a_b"
    assert label_name("1st") == "_1st"
    assert label_name("__name__") == "tag__name__", "Prometheus's own names are not taken"
    body, _ = encode(b"m,__name__=x,a-b=1,a_b=2 f=1 1\n")
    ((labels, _, _),) = decoded(body)
    assert labels == {"__name__": "m_f", "tag__name__": "x", "a_b": "1"}, "a-b sorts first"


def test_a_line_that_cannot_be_read_back_is_set_apart_and_the_rest_goes() -> None:
    body, unread = encode(b"m,device=d1 f=1 1\nnot a line\nm,device=d2 f=2 2\n")
    assert unread == [b"not a line"]
    assert [value for _labels, value, _at in decoded(body)] == [1.0, 2.0]


# ---------------------------------------------------------------- config


def parsed(tmp_path: Path, config: dict[str, Any]) -> CollectorConfig:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return check_collector(path).result()


def issues(tmp_path: Path, config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parsed(tmp_path, config)
    return [str(issue) for issue in caught.value.issues]


def test_sinks_config_is_read_by_kind(tmp_path: Path) -> None:
    config = parsed(
        tmp_path,
        {
            "sinks": [
                {
                    "remote_write": {
                        "name": "vm",
                        "url": "http://127.0.0.1:8428/api/v1/write",
                        "batch_size": 100,
                    }
                }
            ]
        },
    )
    vm = RemoteWriteConfig(url="http://127.0.0.1:8428/api/v1/write", name="vm", batch_size=100)
    assert config.sinks == [SinkConfig(remote_write=vm)]
    assert config.sinks[0].kind == "remote_write" and config.sinks[0].settings == vm
    assert config.influxdb is None


def test_sinks_config_errors_name_the_file_the_key_and_what_is_expected(tmp_path: Path) -> None:
    url = {"url": "http://127.0.0.1:8428/api/v1/write"}
    rw = {"remote_write": url}
    influx = {"url": "http://x", "api": "v1", "database": "d"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sinks": [{"kafka": url}]}, "sinks[0].kafka: unknown key (known keys: influxdb, remo"),
        ({"sinks": [{}]}, "sinks[0]: a sinks entry names one kind (influxdb, remote_write), got"),
        ({"sinks": [{**rw, "influxdb": influx}]}, "got influxdb, remote_write"),
        (
            {"sinks": [{"remote_write": {**url, "batch_sise": 1}}]},
            "sinks[0].remote_write.batch_sise: unknown key; did you mean 'batch_size'?",
        ),
        (
            {"sinks": [{"remote_write": {"url": "ftp://x"}}]},
            "sinks[0].remote_write.url: url must start with http://",
        ),
        ({"sinks": [rw, rw]}, 'sinks: two sinks named "remote_write"'),
        ({"sinks": [{"remote_write": {**url, "name": "store"}}]}, '"store" is a link of /healthz'),
        (
            {"sinks": [{"remote_write": {**url, "token": "t", "username": "u"}}]},
            "sinks[0].remote_write.token: token is a login of its own",
        ),
        (
            {"sinks": [{"influxdb": influx}], "influxdb": influx},
            'sinks: two sinks named "influxdb"',
        ),
    ]
    for config, expected in cases:
        found = issues(tmp_path, config)
        assert any("collector.yaml:" in i and expected in i for i in found), (expected, found)


def test_check_config_checks_a_sinks_tls_files(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        {
            "sinks": [
                {
                    "remote_write": {
                        "url": "https://127.0.0.1:8428/api/v1/write",
                        "tls": {"ca_file": str(tmp_path / "missing-ca.pem")},
                    }
                }
            ]
        },
    )
    assert any("sinks[0].remote_write.tls.ca_file: cannot read" in i for i in found), found


# ---------------------------------------------------------------- with servers


async def publish(url: str, seqs: range) -> None:
    await publish_all(url, [(NAME, wire_encode(metrics(seq))) for seq in seqs])


def two_sinks(
    tmp_path: Path, mqtt_url: str, influx: InfluxDB1, vm: VictoriaMetrics, **extra: Any
) -> Path:
    return collector_config(
        tmp_path,
        mqtt_url,
        extra={
            "influxdb": {
                "url": influx.url,
                "api": "v1",
                "database": "enoc",
                "flush_interval": "0.2s",
            },
            "sinks": [
                {
                    "remote_write": {
                        "name": "vm",
                        "url": f"{vm.url}/api/v1/write",
                        "flush_interval": "0.2s",
                    }
                }
            ],
            **extra,
        },
    )


def vm_query(vm: VictoriaMetrics, query: str, at: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}", "step": "1s"})
    with urllib.request.urlopen(f"{vm.url}/api/v1/query?{params}", timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def vm_cpu(vm: VictoriaMetrics) -> list[tuple[float, float]]:
    """device_cpu of dev-1 in VictoriaMetrics: (seconds, value), sorted."""
    rows = vm.export('{__name__="device_cpu",device="dev-1"}')
    return sorted(
        (t / 1000, v) for row in rows for t, v in zip(row["timestamps"], row["values"], strict=True)
    )


def influx_cpu(influx: InfluxDB1) -> list[tuple[float, float]]:
    answer = influx.query("SELECT cpu FROM device WHERE device = 'dev-1'", db="enoc")
    series = answer["results"][0].get("series", [])
    return sorted((float(t), float(v)) for s in series for t, v in s["values"])


def expected_cpu(seqs: range) -> list[tuple[float, float]]:
    return sorted((round(T0 + s, 3), float(s % 100)) for s in seqs)


def in_seconds(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """As InfluxDB answers with `epoch=s`: the time cut to the second."""
    return [(float(math.floor(t)), v) for t, v in points]


@pytest.mark.servers
async def test_metrics_go_to_influxdb_and_through_remote_write_to_victoriametrics(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1, victoria_metrics: VictoriaMetrics
) -> None:
    influxdb1.create_database("enoc")
    config = two_sinks(tmp_path, mosquitto.url, influxdb1, victoria_metrics)
    async with running_collector(config) as coll:
        await publish(mosquitto.url, range(10))
        await eventually(lambda: coll.ingest.stats.acked == 10, what="all ten acknowledged")
        influx, vm = coll.sinks["influxdb"], coll.sinks["vm"]
        assert isinstance(vm, RemoteWriteSink)
        assert influx.stats.points_written == vm.stats.points_written == 20
        assert influx.stats.points_dropped == vm.stats.points_dropped == 0
        health = coll.health()
        assert health["influxdb"]["ok"] and health["vm"]["ok"]
        counters = coll.counters()
        assert counters["sink_points_written.vm"] == 20
        assert counters["sink_points_written.influxdb"] == 20
    assert vm_cpu(victoria_metrics) == expected_cpu(range(10))  # (export flushes VM's buffers)
    # the series as a Prometheus user asks for it, with the tags as labels
    result = vm_query(victoria_metrics, 'interface_in_bps{device="dev-1"}', T0 + 9)
    ((series,),) = [result]
    assert series["metric"] == {
        "__name__": "interface_in_bps",
        "agent_host": "127.0.0.9",
        "device": "dev-1",
        "ifName": "ge-0/0/1",
        "ifIndex": "1",
        "rtc": "emea",
        "site": "lab",
    }
    assert float(series["value"][1]) == 90.0
    assert vm_cpu(victoria_metrics) == expected_cpu(range(10))
    assert influx_cpu(influxdb1) == in_seconds(expected_cpu(range(10)))


@pytest.mark.servers
async def test_a_message_waits_for_a_sink_that_is_down_and_nothing_is_lost(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1, victoria_metrics: VictoriaMetrics
) -> None:
    influxdb1.create_database("enoc")
    config = two_sinks(
        tmp_path, mosquitto.url, influxdb1, victoria_metrics, mqtt={"max_unacked": 20}
    )
    async with running_collector(config) as coll:
        await publish(mosquitto.url, range(20))
        await eventually(lambda: coll.ingest.stats.acked == 20, what="first 20 in both")
        victoria_metrics.stop()
        await publish(mosquitto.url, range(20, 60))
        vm, influx = coll.sinks["vm"], coll.sinks["influxdb"]
        await eventually(lambda: vm.stats.retries >= 2, what="remote writes failing")
        await eventually(lambda: influx.stats.points_written > 40, what="InfluxDB still written")
        assert coll.ingest.stats.acked == 20, "nothing acknowledged while one sink is down"
        assert not coll.health()["vm"]["ok"] and coll.health()["influxdb"]["ok"]
        await asyncio.sleep(0.5)
        assert coll.ingest.stats.acked == 20
        victoria_metrics.start()
        await eventually(lambda: coll.ingest.stats.acked >= 60, what="all acked", timeout=60)
        assert vm.stats.points_dropped == influx.stats.points_dropped == 0
        assert coll.health()["vm"]["ok"]
    assert vm_cpu(victoria_metrics) == expected_cpu(range(60)), "every point, once"
    assert influx_cpu(influxdb1) == in_seconds(expected_cpu(range(60))), "once each"


async def write_one(url: str, password: str) -> RemoteWriteSink:
    """One line through a remote-write sink logging in with `password`, until called back."""
    sink = RemoteWriteSink(RemoteWriteConfig(url=url, username="enoc", password=Secret(password)))
    await sink.start()
    loop = asyncio.create_task(sink.run())
    acked: list[int] = []
    try:
        await sink.write(b"device,device=d1 cpu=5i 1700000000000\n", 1, lambda: acked.append(1))
        sink.flush()
        await eventually(lambda: acked == [1], what="called back")
    finally:
        await sink.close(grace=5)
        await loop
    return sink


@pytest.mark.servers
async def test_remote_write_refused_for_bad_credentials_drops_and_says_so(tmp_path: Path) -> None:
    """VictoriaMetrics with basic authentication: without the password each batch is refused
    for good (401: dropped, counted, the sink unhealthy, acknowledged all the same); with it,
    written and healthy again."""
    with VictoriaMetrics(tmp_path / "vm", http_auth=("enoc", "vm-pw-1")) as vm:
        url = f"{vm.url}/api/v1/write"
        for password, written in (("wrong", False), ("vm-pw-1", True)):
            sink = await write_one(url, password)
            assert sink.healthy is written
            assert sink.stats.points_written == int(written)
            assert sink.stats.points_dropped == int(not written)
            assert sink.stats.retries == 0, "a refusal is not retried"
            if not written:
                assert sink.stats.errors["http_401"] == 1
                assert "HTTP 401 (bad credentials)" in sink.stats.last_error
        rows = vm.export('{__name__="device_cpu"}')
        assert [row["values"] for row in rows] == [[5.0]], "written once, with the password"
