"""Line protocol: the template path writes what one value at a time writes, for every kind of
field set, and real servers read back what it writes."""

from __future__ import annotations

import functools
import gzip
import logging
import math
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiomqtt
import pytest
from collectorkit import TOKENS, collector_config, eventually, running_collector
from isal import igzip
from lineprotokit import (
    T0,
    expected,
    influxdb1_device_row,
    message,
    parse_fields,
    random_message,
    split_line,
    victoria_device_fields,
    writable,
)

from collector import lineproto
from collector.lineproto import chunk, lines_for, metrics_chunk
from collector.sinks import influx
from enoc.wire import (
    BgpSample,
    DeviceSample,
    InterfaceSample,
    MetricsMessage,
    Value,
    decode,
    int64_checked,
    topic,
)
from enoc.wire import encode as wire_encode
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics

FIELD_SETS: list[dict[str, Value]] = [
    {"ifHCInOctets": 2**40 + 7, "ifOperStatus": 1, "in_bps": 123456.789, "out_bps": 0.0},
    {"big": 2**63 - 1, "neg": -(2**63), "beyond": 2**64 - 1, "huge": 2**70},
    {"a": 1e20, "b": 1e-7, "c": 5e-324, "d": -0.0, "e": 0.1, "f": 1.7976931348623157e308},
    {"a": 1.5e16, "b": 1e16, "c": 123456789012345678.0, "d": -2.5e-5},
    {"nan": float("nan"), "ok": 1, "inf": float("inf"), "minus": float("-inf"), "x": 2.5},
    {"state": "established", "n": 3},
    {"text": 'say "hi"\nback\\slash, a=b', "x": 1.0},
    {"weird name": 1, "com,ma": 2.5, "eq=ual": 3, "per%cent": 4, "per%%d": 5.5},
    {"flag": True, "other": False, "n": 0},
    {"only_nan": float("nan")},
    {},
]


@pytest.mark.parametrize("fields", FIELD_SETS)
def test_a_field_set_reads_back_as_its_values(fields: dict[str, Value]) -> None:
    sample = DeviceSample(
        "nyc-pe-1",
        "127.0.0.5",
        T0,
        fields=dict(fields),
        interfaces=[InterfaceSample(3, "ge-0/0/3", "Gig 0/0/3", "to gva", dict(fields))],
        bgp=[BgpSample("127.200.0.1", dict(fields))],
    )
    for _ in range(3):  # the first time builds the template, later ones use it
        body, count = metrics_chunk(message(sample))
        lines = lines_for(message(sample))
        assert body.endswith(b"\n") or not body
        assert count == len(lines) == body.count(b"\n")
        want = expected(fields)
        assert count == (3 if want else 0)
        for line in lines:
            assert parse_fields(split_line(line)[1]) == want


def test_types_that_change_between_polls_get_their_own_template() -> None:
    def line(value: Value) -> str:
        sample = DeviceSample(
            "d", "127.0.0.5", T0, interfaces=[InterfaceSample(1, "e1", fields={"v": value})]
        )
        (only,) = lines_for(message(sample))
        return split_line(only)[1]

    assert line(5) == "v=5i"
    assert line(5.0) == "v=5.0"
    assert line("5") == 'v="5"'
    assert line(5) == "v=5i"


def test_tags_are_sorted_escaped_and_empty_ones_left_out() -> None:
    sample = DeviceSample(
        "core 1",
        "127.0.0.5",
        T0,
        fields={"cpu": 12.5},
        interfaces=[InterfaceSample(7, "ge-0/0/7", "", "to=gva, via\nlyon", {"in_bps": 1.0})],
        bgp=[BgpSample("127.200.0.1", {"state": 6})],
    )
    device, interface, bgp = lines_for(message(sample))
    stamp = round(T0 * 1000)
    assert device == (
        f"device,agent_host=127.0.0.5,device=core\\ 1,rtc=americas,site=nyc cpu=12.5 {stamp}"
    )
    assert interface == (
        "interface,agent_host=127.0.0.5,device=core\\ 1,ifAlias=to\\=gva\\,\\ via\\ lyon,"
        f"ifIndex=7,ifName=ge-0/0/7,rtc=americas,site=nyc in_bps=1.0 {stamp}"
    )
    assert bgp == (
        "bgp_peer,agent_host=127.0.0.5,device=core\\ 1,peer=127.200.0.1,rtc=americas,site=nyc "
        f"state=6i {stamp}"
    )


def reference_fields(fields: dict[str, Value]) -> dict[str, Value | bool]:
    """The values the collector wrote before templates (one f-string a value), parsed."""
    parts = []
    for name, value in fields.items():
        stored = lineproto.sanitise_field_key(name)
        if stored is None or not writable(value):
            continue
        key = lineproto._escape(stored)
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}i")
        elif isinstance(value, float):
            parts.append(f"{key}={value!r}")
        else:
            stored_value = lineproto.sanitise_string_field(value)
            escaped = stored_value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
    return parse_fields(",".join(parts))


def test_random_polls_write_what_one_value_at_a_time_wrote() -> None:
    rng = random.Random(11)
    names = ["ifHCInOctets", "ifInErrors", "in_bps", "out_utilization", "state", "x y"]

    def value() -> Value:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randrange(-(2**63), 2**64)
        if kind == 1:
            return rng.randrange(1000)
        if kind == 2:
            return rng.random() * 10.0 ** rng.randrange(-12, 24)
        if kind == 3:
            return -rng.random()
        if kind == 4:
            return rng.choice([float("nan"), float("inf"), 0.0, 1e16, 1e-5])
        return rng.choice(["up", 'a "b"', "x,y=z", ""])

    for _ in range(300):
        interfaces = [
            InterfaceSample(n, f"e{n}", fields={k: value() for k in rng.sample(names, 4)})
            for n in range(1, 6)
        ]
        sample = DeviceSample("d1", "127.0.0.5", T0, {"cpu": value()}, interfaces)
        lines = lines_for(message(sample))
        written = [i for i in [sample.fields, *(i.fields for i in interfaces)] if expected(i)]
        assert len(lines) == len(written)
        for line, fields in zip(lines, written, strict=True):
            assert parse_fields(split_line(line)[1]) == reference_fields(fields)


def test_wire_to_line_protocol_keeps_every_value() -> None:
    fields: dict[str, Value] = {"ifHCInOctets": 2**63 - 1, "in_bps": 987654321.123, "n": -(2**63)}
    sample = DeviceSample(
        "d1", "127.0.0.5", T0, interfaces=[InterfaceSample(1, "e1", fields=fields)]
    )
    decoded = decode("enoc/v1/nyc/nyc-1/metrics", wire_encode(message(sample)))
    assert isinstance(decoded, MetricsMessage)
    assert int64_checked(decoded)  # checked while decoding: the template path trusts it
    (line,) = lines_for(decoded)
    assert parse_fields(split_line(line)[1]) == fields


BEYOND = [2**63, 2**64 - 1, -(2**63) - 1, 2**70]


@pytest.mark.parametrize("value", BEYOND)
def test_an_integer_beyond_int64_is_left_out_of_its_line_and_counted(
    value: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Decoded from the wire (which accepts it) or built in memory, from a template or not."""
    kept: dict[str, Value] = {"ifInErrors": 3, "in_bps": 1.5}
    fields: dict[str, Value] = {"ifHCInOctets": value, **kept}
    with_text: dict[str, Value] = {**fields, "state": "up"}
    sample = DeviceSample(
        "d1",
        "127.0.0.5",
        T0,
        fields=dict(fields),
        interfaces=[
            InterfaceSample(1, "e1", fields=dict(fields)),
            InterfaceSample(2, "e2", fields=dict(with_text)),
        ],
        bgp=[BgpSample("127.200.0.1", dict(fields))],
    )
    decoded = decode("enoc/v1/nyc/nyc-1/metrics", wire_encode(message(sample)))
    assert isinstance(decoded, MetricsMessage)
    assert decoded == message(sample)  # the contract takes it: the sink leaves it out
    assert not int64_checked(decoded)
    lineproto.out_of_range.clear()
    caplog.clear()
    for built in (decoded, message(sample)):
        lines = lines_for(built)
        assert [parse_fields(split_line(line)[1]) for line in lines] == [
            kept,
            kept,
            {**kept, "state": "up"},
            kept,
        ]
    assert lineproto.out_of_range == {"ifHCInOctets": 8}
    assert lineproto.out_of_range_total() == 8
    warnings = [r for r in caplog.records if "beyond InfluxDB's int64" in r.getMessage()]
    assert len(warnings) == 1, "logged once per field name"
    assert "ifHCInOctets" in warnings[0].getMessage()


def test_a_line_of_nothing_but_integers_beyond_is_not_written() -> None:
    sample = DeviceSample(
        "d1",
        "127.0.0.5",
        T0,
        fields={"cpu": 5},
        interfaces=[InterfaceSample(1, "e1", fields={"x": 2**64})],
    )
    lineproto.out_of_range.clear()
    (line,) = lines_for(message(sample))
    assert line.startswith("device,")
    assert lineproto.out_of_range == {"x": 1}


def test_chunk_ends_every_line() -> None:
    assert chunk(["a x=1i 1", "b y=2.0 2"]) == b"a x=1i 1\nb y=2.0 2\n"
    assert chunk([]) == b""


# ------------------------------------------------------------------ real servers

EDGE_FLOATS = {"a": 1e20, "b": 1e-7, "c": 1.5e16, "d": -2.5e-5, "e": 0.1, "f": 123456.75}
EDGE_INTS = {"g": 2**40 + 1, "h": -5, "i": 0}  # VictoriaMetrics keeps 12 digits or so


def edge_lines() -> bytes:
    sample = DeviceSample(
        "d1",
        "127.0.0.5",
        time.time() - 60,
        fields={**EDGE_FLOATS, **EDGE_INTS},
    )
    body, count = metrics_chunk(message(sample))
    assert count == 1
    return body


@pytest.mark.servers
def test_victoria_metrics_reads_back_the_numbers_written(victoria_metrics: VictoriaMetrics) -> None:
    assert victoria_device_fields(victoria_metrics, edge_lines()) == {
        k: float(v) for k, v in {**EDGE_FLOATS, **EDGE_INTS}.items()
    }


@pytest.mark.servers
def test_influxdb_1_reads_back_the_numbers_and_types_written(influxdb1: InfluxDB1) -> None:
    row = influxdb1_device_row(influxdb1, "lp", edge_lines())
    assert {k: row[k] for k in EDGE_FLOATS} == EDGE_FLOATS
    assert {k: row[k] for k in EDGE_INTS} == EDGE_INTS
    fields = influxdb1.query("SHOW FIELD KEYS FROM device", db="lp")
    types = dict(fields["results"][0]["series"][0]["values"])
    assert {types[k] for k in EDGE_FLOATS} == {"float"}
    assert {types[k] for k in EDGE_INTS} == {"integer"}


def beyond_batch() -> tuple[bytes, bytes, float]:
    """A batch of three device polls, one interface of the second reporting 2**64-1 (an
    unsupported Counter64): as the collector writes it, and as it was written before."""
    ts = round(time.time() - 60, 3)
    samples = [
        DeviceSample(
            f"d{n}",
            f"127.0.0.{n}",
            ts,
            fields={"cpu": 10.0 + n},
            interfaces=[
                InterfaceSample(
                    1,
                    "e1",
                    fields={
                        "ifHCInOctets": 2**64 - 1 if n == 2 else 2**40 + n,
                        "ifInErrors": n,
                        "in_bps": 1000.5 + n,
                    },
                )
            ],
        )
        for n in (1, 2, 3)
    ]
    decoded = decode("enoc/v1/nyc/nyc-1/metrics", wire_encode(message(*samples)))
    assert isinstance(decoded, MetricsMessage)
    body, count = metrics_chunk(decoded)
    assert count == 6
    naive = body.replace(b"ifInErrors=2i", b"ifHCInOctets=18446744073709551615i,ifInErrors=2i")
    assert naive != body
    return body, naive, ts


@pytest.mark.servers
def test_influxdb_1_takes_the_batch_with_an_integer_beyond_int64_left_out(
    influxdb1: InfluxDB1,
) -> None:
    body, naive, _ = beyond_batch()

    def interfaces(db: str) -> dict[str, dict[str, Any]]:
        result = influxdb1.query('SELECT * FROM interface GROUP BY "device"', db=db)
        return {
            s["tags"]["device"]: dict(zip(s["columns"], s["values"][0], strict=True))
            for s in result["results"][0].get("series", [])
        }

    # as it was: the server answers 400 for the batch (which the writer then counts as
    # dropped, every point of it) and loses the poll's whole line
    influxdb1.create_database("before")
    with pytest.raises(urllib.error.HTTPError) as refused:
        influxdb1.write("before", naive.decode(), precision="ms")
    assert refused.value.code == 400
    assert b"out of range" in refused.value.read()
    assert set(interfaces("before")) == {"d1", "d3"}
    # now: every line lands, the one with the field beyond with the rest of its fields
    influxdb1.create_database("now")
    assert influxdb1.write("now", body.decode(), precision="ms") == 204
    rows = interfaces("now")
    assert set(rows) == {"d1", "d2", "d3"}
    assert rows["d2"]["ifHCInOctets"] is None
    assert (rows["d2"]["ifInErrors"], rows["d2"]["in_bps"]) == (2, 1002.5)
    assert (rows["d1"]["ifHCInOctets"], rows["d3"]["ifHCInOctets"]) == (2**40 + 1, 2**40 + 3)
    devices = influxdb1.query("SELECT count(cpu) FROM device", db="now")
    assert devices["results"][0]["series"][0]["values"][0][1] == 3


@pytest.mark.servers
def test_victoria_metrics_takes_the_line_with_an_integer_beyond_int64_left_out(
    victoria_metrics: VictoriaMetrics,
) -> None:
    body, naive, _ = beyond_batch()

    def write(lines: bytes) -> dict[tuple[str, str], float]:
        request = urllib.request.Request(
            f"{victoria_metrics.url}/write?precision=ms", data=lines, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        return {
            (row["metric"]["__name__"], row["metric"]["device"]): row["values"][0]
            for row in victoria_metrics.export('{__name__=~"interface_.*"}')
        }

    ok = {
        **{("interface_ifHCInOctets", f"d{n}"): float(2**40 + n) for n in (1, 3)},
        **{("interface_ifInErrors", f"d{n}"): float(n) for n in (1, 3)},
        **{("interface_in_bps", f"d{n}"): 1000.5 + n for n in (1, 3)},
    }
    # as it was: 204, and the line silently dropped
    assert write(naive) == ok
    # now: the rest of the line lands
    assert write(body) == {
        **ok,
        ("interface_ifInErrors", "d2"): 2.0,
        ("interface_in_bps", "d2"): 1002.5,
    }


@pytest.mark.servers
async def test_the_collector_writes_the_rest_and_counts_what_it_left_out(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria_metrics: VictoriaMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through MQTT and a running collector: the poll lands without the field beyond,
    and /metrics counts it. Its log says once which path formats the line protocol."""
    caplog.set_level(logging.INFO, logger="enoc.collector")
    ts = round(time.time() - 60, 3)
    sample = DeviceSample(
        "d1",
        "127.0.0.5",
        ts,
        fields={"cpu": 12.5},
        interfaces=[InterfaceSample(1, "e1", fields={"ifHCInOctets": 2**64 - 1, "ifInErrors": 4})],
    )
    lineproto.out_of_range.clear()
    config = collector_config(tmp_path, mosquitto.url, vm=victoria_metrics)
    async with running_collector(config) as collector:
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="lineproto-test") as client:
            await client.publish(
                topic("nyc", "nyc-1", "metrics"), wire_encode(message(sample)), qos=1
            )
        writer = collector.sinks["influxdb"]
        await eventually(lambda: writer.stats.points_written >= 2, what="both points written")
        headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{collector.http_port}/metrics", headers=headers) as r,
        ):
            text = await r.text()
    assert "enoc_collector_fields_out_of_range_total 1\n" in text
    (said,) = [r for r in caplog.records if r.getMessage().startswith("line protocol")]
    if PURE:
        assert said.levelno == logging.WARNING and "ENOC_PURE_PYTHON is set" in said.getMessage()
    else:
        assert said.levelno == logging.INFO and "C extension" in said.getMessage()
    assert writer.stats.points_dropped == 0
    got = {
        row["metric"]["__name__"]: row["values"]
        for row in victoria_metrics.export('{__name__=~"(device|interface)_.*"}')
    }
    assert got == {"device_cpu": [12.5], "interface_ifInErrors": [4]}


# ------------------------------------------------------------------ the C extension

PURE = os.environ.get("ENOC_PURE_PYTHON", "") not in ("", "0")
REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def test_the_c_extension_is_built_and_used_unless_enoc_pure_python_is_set() -> None:
    """`uv sync` compiles it (scripts/bootstrap installs gcc and python3-dev): a checkout
    without it would only be testing the Python path. ENOC_PURE_PYTHON=1 turns it off."""
    if PURE:
        assert not lineproto.native_lineproto()
        assert "ENOC_PURE_PYTHON is set" in lineproto.NATIVE
    else:
        assert lineproto.native_lineproto(), lineproto.NATIVE
        assert "C extension" in lineproto.NATIVE


def on_the_python_path(produce: Callable[[], T]) -> T:
    native = lineproto._native
    lineproto._native = None
    try:
        return produce()
    finally:
        lineproto._native = native


class Counting:
    """The extension, counting the calls it answered (not None) and those it left."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.answered = self.left = 0

    def _count(self, result: T) -> T:
        if result is None:
            self.left += 1
        else:
            self.answered += 1
        return result

    def format_fields(self, *args: Any) -> bytes | None:
        result: bytes | None = self.real.format_fields(*args)
        return self._count(result)

    def format_interfaces(self, *args: Any) -> tuple[bytes, int] | None:
        result: tuple[bytes, int] | None = self.real.format_interfaces(*args)
        return self._count(result)


def same_on_both_paths(built: MetricsMessage) -> None:
    lineproto.out_of_range.clear()
    native = [metrics_chunk(built) for _ in range(2)]  # the first caches the tag sets
    native_counted = dict(lineproto.out_of_range)
    lineproto.out_of_range.clear()
    python = on_the_python_path(lambda: metrics_chunk(built))
    assert native == [python, python]
    assert native_counted == {k: 2 * v for k, v in lineproto.out_of_range.items()}


@pytest.mark.skipif(PURE, reason="ENOC_PURE_PYTHON is set: no extension to compare")
def test_the_extension_writes_what_the_python_path_writes_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of random field sets, in memory and decoded from the wire (its integers
    checked in C, as the collector gets them), through the extension and the Python path."""
    counting = Counting(lineproto._native)
    monkeypatch.setattr(lineproto, "_native", counting)
    rng = random.Random(20261201)
    sets = 0
    for n in range(600):
        wire = n % 2 == 1
        built = random_message(rng, wire)
        messages = [built]
        if wire:
            decoded = decode("enoc/v1/nyc/nyc-1/metrics", wire_encode(built))
            assert isinstance(decoded, MetricsMessage)
            assert int64_checked(decoded) or not lineproto._fits(
                [v for s in built.samples for i in s.interfaces for v in i.fields.values()]
                + [v for s in built.samples for v in s.fields.values()]
                + [v for s in built.samples for b in s.bgp for v in b.fields.values()]
            )
            messages.append(decoded)
        for m in messages:
            same_on_both_paths(m)
            for s in m.samples:
                for f in [s.fields, *(i.fields for i in s.interfaces), *(b.fields for b in s.bgp)]:
                    sets += 1
                    python = on_the_python_path(functools.partial(lineproto._fields, f))
                    assert lineproto._fields(f) == python
    assert sets > 5000
    # both ways were taken often: the comparison is not of the Python path with itself
    assert counting.answered > 5000 and counting.left > 1000, vars(counting)


@pytest.mark.skipif(PURE, reason="ENOC_PURE_PYTHON is set: no extension to call")
def test_the_extension_leaves_what_it_does_not_write_to_the_python_path() -> None:
    native = lineproto._native
    assert native is not None
    prefixes = {"a": b"a=", "b": b"b="}
    encode = lineproto._encode

    class Flag(int):
        pass

    class Name(str):
        pass

    assert native.format_fields({"a": 1, "b": 2.5}, prefixes, encode) == b"a=1i,b=2.5"
    assert native.format_fields({}, prefixes, encode) == b""
    for odd in [
        {"a": True},
        {"a": "text"},
        {"a": 2**63},
        {"a": -(2**63) - 1},
        {"a": math.nan},
        {"a": -math.inf},
        {"a": Flag(3)},
        {"a": None},
        {"c": 1},  # no prefix for it yet
        {Name("a"): 1},
        {1: 1},
    ]:
        assert native.format_fields(odd, prefixes, encode) is None, odd
    assert native.format_fields([("a", 1)], prefixes, encode) is None
    assert native.format_fields({"a": 1}, {"a": "a="}, encode) is None
    # an encoder that does not give one token per value
    for wrong in [b"[1]", b"[1,2,3]", b"1,2.5", b"[1,,]", b"[,2.5]", "[1,2.5]", b""]:
        assert native.format_fields({"a": 1, "b": 2.5}, prefixes, lambda _v, w=wrong: w) is None
    with pytest.raises(ZeroDivisionError):
        native.format_fields({"a": 1}, prefixes, lambda _v: 1 / 0)
    with pytest.raises(TypeError):
        native.format_fields({"a": 1}, [], encode)
    with pytest.raises(TypeError):
        native.format_fields({"a": 1}, prefixes)
    heads = {(1, "e1", "", ""): b"interface,x=1 "}
    stamp = b" 5\n"
    one = InterfaceSample(1, "e1", fields={"a": 1, "b": 2.5})
    assert native.format_interfaces([one], heads, prefixes, stamp, encode) == (
        b"interface,x=1 a=1i,b=2.5 5\n",
        1,
    )
    assert native.format_interfaces([], heads, prefixes, stamp, encode) == (b"", 0)
    empty = InterfaceSample(9, "e9")  # no fields: no line, and no tag set needed
    assert native.format_interfaces([empty, one], heads, prefixes, stamp, encode) == (
        b"interface,x=1 a=1i,b=2.5 5\n",
        1,
    )
    unknown = InterfaceSample(2, "e2", fields={"a": 1})
    assert native.format_interfaces([one, unknown], heads, prefixes, stamp, encode) is None
    odd_tags = InterfaceSample(Flag(1), "e1", fields={"a": 1})
    assert native.format_interfaces([odd_tags], heads, prefixes, stamp, encode) is None
    with pytest.raises(AttributeError):
        native.format_interfaces([object()], heads, prefixes, stamp, encode)
    with pytest.raises(TypeError):
        native.format_interfaces(5, heads, prefixes, stamp, encode)
    with pytest.raises(TypeError):
        native.format_interfaces([one], heads, prefixes, "5", encode)


@pytest.mark.skipif(PURE, reason="ENOC_PURE_PYTHON is set: no extension to call")
def test_python_code_changing_the_caches_during_a_call_does_not_break_it() -> None:
    """A cached name whose comparison runs Python code that empties the caches, the field
    set and the interface list while the extension walks them: an answer or None, no crash
    (run under `python -X dev` / PYTHONMALLOC=debug to see a use after free)."""
    native = lineproto._native
    assert native is not None
    interfaces: list[InterfaceSample] = []
    prefixes: dict[Any, bytes] = {}
    heads: dict[tuple[int, str, str, str], bytes] = {}

    class Meddling(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            prefixes.clear()
            heads.clear()
            for i in interfaces:
                i.fields.clear()
            interfaces.clear()
            return str.__eq__(self, other)

    for round_ in range(50):
        prefixes.clear()
        prefixes[Meddling("a")] = b"a="
        prefixes["b"] = b"b="
        interfaces[:] = [
            InterfaceSample(n, f"e{n}", fields={"b": 1.5, "a" + "": n, f"x{round_}": 1})
            for n in range(5)
        ]
        for n in range(5):
            heads[(n, f"e{n}", "", "")] = b"interface "
        result = native.format_interfaces(
            list(interfaces), heads, prefixes, b" 1\n", lineproto._encode
        )
        assert result is None or isinstance(result[0], bytes)


@pytest.mark.skipif(PURE, reason="ENOC_PURE_PYTHON is set: no extension to call")
def test_the_writers_gzip_leaves_the_avx_registers_upper_halves_clear() -> None:
    """ISA-L returns from its AVX deflate with the AVX registers' upper halves in use
    (intel/isa-l#24); every legacy SSE instruction after that pays for it (the metrics pass
    ran 3.4x slower on the Xeon of 2026-12-05). The writer's gzip clears them: the
    processor's XINUSE bits (XGETBV with ECX=1) say so."""
    native = lineproto._native
    assert native is not None
    if native.avx_upper_in_use() is None:
        pytest.skip("this processor does not say which register state is in use")
    data = b"".join(b"interface,device=d%d in_bps=%d.5 1\n" % (n, n) for n in range(20_000))
    native.zero_upper()
    assert native.avx_upper_in_use() is False
    igzip.compress(data, compresslevel=1)
    dirty = native.avx_upper_in_use()  # True where ISA-L takes its AVX code (AVX2, AVX-512)
    body = influx.gzip(data)
    assert native.avx_upper_in_use() is False, f"ISA-L left them in use: {dirty}"
    assert gzip.decompress(body) == data


@pytest.mark.servers
@pytest.mark.skipif(PURE, reason="this is the run with ENOC_PURE_PYTHON set")
def test_this_file_passes_on_the_pure_python_path_too() -> None:
    """The same tests with ENOC_PURE_PYTHON=1, as a collector without the extension runs
    (its log says so at start): the Python path is the fallback, and the reference."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=REPO,
        env={**os.environ, "ENOC_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    assert "skipped" in result.stdout  # the comparisons, which need the extension
