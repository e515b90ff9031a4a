"""A sample's rows (wire `Row`: sensors, a profile's `tables:`) through the collector:
decoded alike by msgspec's structs and the general path, which names every breach of
the rules (docs/DESIGN.md, "InfluxDB schema"); written as lines of their own measurement
by the Python path and by collector._metricsjson alike; kept for the device page; landing
in a real InfluxDB through a real collector."""

from __future__ import annotations

import json
import math
import random
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from collectorkit import TOKENS, collector_config, eventually, running_collector
from lineprotokit import INT_EDGES, parse_fields, random_number, split_line
from test_collector_metricsjson import (
    AGENT,
    SITE,
    TOPIC,
    agree,
    damaged,
    learned_by,
    native,
    reference,
)

from collector import lineproto
from collector.lineproto import lines_for, payload_lines
from collector.metrics_in import of, read
from collector.recent import RecentValues
from enoc import wire, wire_checked
from enoc.wire import (
    DeviceSample,
    InterfaceSample,
    MetricsMessage,
    Row,
    Value,
    WireError,
    decode,
    encode,
    int64_checked,
)
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics

T0 = 1_790_000_000.5
STATUSES = ["ok", "warning", "critical", "failed", "unknown"]


def sensors(rng: random.Random, count: int = 20) -> list[Row]:
    """What the agent sends for a device's sensors: value, status, thresholds."""
    classes = ["temperature", "fan", "voltage", "current", "power", "psu", "battery"]
    return [
        Row(
            "sensor",
            {"sensor": f"Sensor {n} (slot {n // 4})", "class": rng.choice(classes)},
            {
                "value": round(rng.uniform(-40, 400), rng.randrange(0, 4)),
                "status": rng.choice(STATUSES),
                "high_warning": 70.0,
                "high_critical": rng.choice([85.0, 90.5]),
            },
        )
        for n in range(count)
    ]


def sample(rows: list[Row], device: str = "r1", ts: float = T0) -> DeviceSample:
    ifs = [InterfaceSample(1, "ge-0/0/1", "Gi0/1", "", {"ifOperStatus": 1, "in_bps": 5.5})]
    return DeviceSample(device, "127.0.0.7", ts, {"reachable": 1, "cpu": 12}, ifs, rows=rows)


def payload(*samples: DeviceSample) -> bytes:
    return encode(MetricsMessage(AGENT, SITE, "americas", 1, T0, samples=list(samples)))


# ------------------------------------------------------------------ decoding


def test_rows_decode_alike_on_both_paths() -> None:
    rng = random.Random(1)
    for _ in range(50):
        data = payload(sample(sensors(rng, rng.randrange(0, 30))), sample(sensors(rng), "r2"))
        fast = decode(TOPIC, data)
        general = wire_checked.decode_checked(SITE, AGENT, "metrics", data)
        assert isinstance(fast, MetricsMessage) and isinstance(general, MetricsMessage)
        assert int64_checked(fast), "decoded by msgspec's structs"
        assert fast.samples == general.samples
        assert [len(s.rows) for s in fast.samples] == [len(s.rows) for s in general.samples]


def body_with(row: object) -> bytes:
    body = json.loads(payload(sample(sensors(random.Random(2), 2))))
    body["samples"][0]["rows"][1] = row
    return json.dumps(body).encode()


SEVENTEEN = {f"t{k}": "x" for k in range(17)}
BREACHES: list[tuple[object, str]] = [
    (["Sensor", {}, {"v": 1}], r"rows\[1\]: measurement 'Sensor': expected a name"),
    (["x" * 65, {}, {"v": 1}], "measurement 'x{65}'"),
    (["sen-sor", {}, {"v": 1}], "measurement 'sen-sor'"),
    ([5, {}, {"v": 1}], "measurement 5"),
    (["device", {}, {"v": 1}], "measurement 'device' is the collector's own"),
    (["bgp_peer", {}, {"v": 1}], "measurement 'bgp_peer' is the collector's own"),
    (["incident", {}, {"v": 1}], "measurement 'incident' is the collector's own"),
    (["enoc_collector", {}, {"v": 1}], "measurement 'enoc_collector' is the collector's own"),
    (["sensor", {"site": "x"}, {"v": 1}], "tag 'site' is one of the device's own"),
    (["sensor", {"agent_host": "x"}, {"v": 1}], "tag 'agent_host' is one of the device's"),
    (["sensor", {"": "x"}, {"v": 1}], "tag '': expected a name"),
    (["sensor", {"a b": "x"}, {"v": 1}], "tag 'a b': expected a name"),
    (["sensor", {"time": "x"}, {"v": 1}], "tag 'time': expected a name"),
    (["sensor", {"a": 1}, {"v": 1}], "tag 'a': expected a string"),
    (["sensor", {"a": None}, {"v": 1}], "tag 'a': expected a string"),
    (["sensor", ["a", "b"], {"v": 1}], "tags: expected an object"),
    (["sensor", SEVENTEEN, {"v": 1}], "tags: 17 of them, more than 16"),
    (["sensor", {}, {"": 1}], r"rows\[1\].fields: a field with an empty name"),
    (["sensor", {}, {"v": True}], r"rows\[1\].fields.v: expected a number or a string"),
    (["sensor", {}, {"v": None}], r"rows\[1\].fields.v: expected a number or a string"),
    (["sensor", {}, [1]], r"rows\[1\].fields: expected an object"),
    (["sensor", {}], r"rows\[1\]: expected \[measurement, tags, fields\]"),
    ("sensor", r"rows\[1\]: expected \[measurement, tags, fields\]"),
]


@pytest.mark.parametrize(("row", "says"), BREACHES, ids=lambda x: str(x)[:30])
def test_each_breach_of_a_row_is_named(row: object, says: str) -> None:
    data = body_with(row)
    with pytest.raises(WireError, match=says) as refused:
        decode(TOPIC, data)
    assert refused.value.kind == "invalid"
    assert payload_lines(SITE, AGENT, data) is None, "the C pass leaves it"
    with pytest.raises(WireError, match=says):
        read(SITE, AGENT, data)


def test_rows_not_a_list_is_named() -> None:
    body = json.loads(payload(sample([])))
    body["samples"][0]["rows"] = {"sensor": {}}
    with pytest.raises(WireError, match=r"samples\[0\].rows: expected a list"):
        decode(TOPIC, json.dumps(body).encode())


def test_sixteen_tags_and_names_at_their_limits_are_taken() -> None:
    tags = {f"t{k}": "x" for k in range(15)} | {"A" + "b-_9" * 15 + "xyz": "v"}
    row = Row("a" + "b_9" * 21, tags, {"value": 1})
    message = decode(TOPIC, payload(sample([row])))
    assert isinstance(message, MetricsMessage) and message.samples[0].rows == [row]


def test_an_integer_beyond_int64_in_a_row_is_left_out_and_counted() -> None:
    before = lineproto.out_of_range_total()
    row = Row("sensor", {"sensor": "s"}, {"value": 2**64 - 1, "status": "ok"})
    message = decode(TOPIC, payload(sample([row])))
    assert isinstance(message, MetricsMessage) and not int64_checked(message)
    (line,) = [x for x in lines_for(message) if x.startswith("sensor,")]
    assert line.endswith(' status="ok" 1790000000500')
    assert lineproto.out_of_range_total() == before + 1


# ------------------------------------------------------------------ lines


def test_a_row_is_a_line_of_its_measurement_with_the_device_tags_and_its_own() -> None:
    rows = [
        Row("sensor", {"sensor": "CPU temp, die 0", "class": "temperature"}, {"value": 41.5}),
        Row("sensor", {"sensor": "PSU 1\\", "class": "", "z": "x=y"}, {"status": 'say "ok"'}),
        Row("modem_signal", {"ifIndex": "3"}, {"snr": 12, "lock": "locked"}),
        Row("sensor", {"sensor": "nothing"}, {}),  # no fields: no line
    ]
    message = decode(TOPIC, payload(sample(rows)))
    assert isinstance(message, MetricsMessage)
    assert [x for x in lines_for(message) if not x.startswith(("device,", "interface,"))] == [
        "sensor,agent_host=127.0.0.7,class=temperature,device=r1,rtc=americas,"
        "sensor=CPU\\ temp\\,\\ die\\ 0,site=nyc value=41.5 1790000000500",
        "sensor,agent_host=127.0.0.7,device=r1,rtc=americas,sensor=PSU\\ 1/,site=nyc,"
        'z=x\\=y status="say \\"ok\\"" 1790000000500',
        "modem_signal,agent_host=127.0.0.7,device=r1,ifIndex=3,rtc=americas,site=nyc "
        'snr=12i,lock="locked" 1790000000500',
    ]


def random_tag(rng: random.Random) -> str:
    return rng.choice(["CPU temp", "", "a,b=c d", "end\\", "zürich", "new\nline", "x" * 1100])


def random_rows(rng: random.Random) -> list[Row]:
    """Rows of every kind of name, tag and value: most the pass takes, some it leaves."""
    rows = []
    for _ in range(rng.randrange(0, 12)):
        tags = {k: random_tag(rng) for k in rng.sample(["sensor", "class", "idx", "a-b"], 2)}
        fields: dict[str, Value] = {}
        names = rng.sample(["value", "status", "high", "unit", "scale"], 3)
        for name in names + ([rng.choice(["x y", "time", "é"])] if rng.random() < 0.05 else []):
            if rng.random() < 0.4:
                strings = [*STATUSES, "", "back\\slash", 'q"q', "zürich", "\x7f", "x" * 70_000]
                fields[name] = rng.choice(strings) if rng.random() < 0.05 else rng.choice(STATUSES)
            else:
                value = random_number(rng)
                if type(value) is int and not -(2**63) <= value < 2**63 and rng.random() < 0.9:
                    value %= 2**63  # mostly within int64: the pass's
                fields[name] = (
                    value if not isinstance(value, float) or math.isfinite(value) else 0.5
                )
        rows.append(Row(rng.choice(["sensor", "modem_signal", "ups"]), tags, fields))
    return rows


@native
def test_the_pass_writes_the_rows_the_general_path_writes() -> None:
    rng = random.Random(17)
    taken = sum(
        agree(payload(*(sample(random_rows(rng), f"d{d}") for d in range(rng.randrange(1, 4)))))
        for _ in range(600)
    )
    assert 100 < taken < 500, "some taken, some left to the general path"


@native
def test_every_sensor_row_the_agent_sends_goes_through_the_pass() -> None:
    rng = random.Random(5)
    for _ in range(100):
        assert agree(payload(*(sample(sensors(rng), f"d{d}") for d in range(3))))


@native
def test_damaged_rows_are_taken_only_where_the_general_path_takes_them() -> None:
    rng = random.Random(23)
    bases = [payload(sample(sensors(rng, 4))) for _ in range(20)]
    taken = refused = 0
    for n in range(6000):
        data = damaged(rng, bases[n % len(bases)])
        if agree(data):
            taken += 1
        elif isinstance(reference(data), WireError):
            refused += 1
    assert taken > 500 and refused > 1500, (taken, refused)


@native
def test_a_row_identity_is_learned_once_and_compared_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    learned = learned_by(monkeypatch, "learn_row")
    rows = sensors(random.Random(3), 5)
    assert agree(payload(sample(rows)))
    assert len(learned) == 5
    assert agree(payload(sample(rows))) and len(learned) == 5  # compared, not learned
    rows[2].tags["class"] = "fan"
    assert agree(payload(sample(rows)))
    assert learned[5:] == [b'"sensor",{"sensor":"Sensor 2 (slot 0)","class":"fan"}']


@native
def test_a_string_the_pass_does_not_copy_is_left_to_the_general_path() -> None:
    for value, takes in [
        ("ok", True),
        ("", True),
        ("x" * 65_536, True),
        ("x" * 65_537, False),
        ("zürich \u2028 °C", True),
        ("\x7f", False),
        ("next \x85 line", False),
        ('q"q', False),
    ]:
        data = payload(sample([Row("sensor", {"sensor": "s"}, {"status": value})]))
        assert (payload_lines(SITE, AGENT, data) is not None) is takes, value[:10]
        assert agree(data) is takes
        written = read(SITE, AGENT, data).lines.decode().split("\n")
        (line,) = [x for x in written if x.startswith("sensor,")]
        expected = lineproto.sanitise_string_field(value)
        assert parse_fields(split_line(line)[1]) == {"status": expected}


@native
def test_a_string_not_utf8_is_left_to_the_general_path_which_refuses_it() -> None:
    good = payload(sample([Row("sensor", {"sensor": "s"}, {"status": "zürich"})]))
    for bad in (b"z\xfcrich", b"z\xc3", b"\xed\xa0\x80", b"\xc2"):
        data = good.replace("zürich".encode(), bad)
        assert payload_lines(SITE, AGENT, data) is None
        with pytest.raises(WireError, match="malformed"):
            read(SITE, AGENT, data)


@native
def test_string_values_elsewhere_still_take_the_general_path() -> None:
    """Only a row's field set takes strings in the pass (a device's or an interface's
    string goes the general way, as before)."""
    device = sample([])
    device.fields["model"] = "ASR"
    assert payload_lines(SITE, AGENT, payload(device)) is None


# ------------------------------------------------------------------ the device page


def test_the_recent_window_shows_the_latest_rows() -> None:
    rng = random.Random(8)
    window = RecentValues()
    first, latest = sensors(rng, 3), sensors(rng, 4)
    for ts, rows in ((T0, first), (T0 + 60, latest)):
        window.add(read(SITE, AGENT, payload(sample(rows, ts=ts))))
    page = window.device(SITE, "r1")
    assert page is not None
    assert page["rows"] == [
        {"measurement": r.measurement, "tags": r.tags, "fields": r.fields}
        for r in sorted(latest, key=lambda r: (r.measurement, sorted(r.tags.items())))
    ]
    window.add(read(SITE, AGENT, payload(sample([], ts=T0 + 120))))
    again = window.device(SITE, "r1")
    assert again is not None and again["rows"] == []


# ------------------------------------------------------------------ real servers


def influx_rows(server: InfluxDB1, measurement: str) -> dict[tuple[str, ...], dict[str, Any]]:
    query = f'SELECT * FROM "{measurement}" GROUP BY *'
    params = urllib.parse.urlencode({"q": query, "db": "enoc", "epoch": "ms"})
    with urllib.request.urlopen(f"{server.url}/query?{params}", timeout=10) as response:
        body = json.load(response)
    out = {}
    for series in body["results"][0].get("series", []):
        for values in series["values"]:
            key = tuple(f"{k}={v}" for k, v in sorted(series["tags"].items()) if v)
            out[key] = dict(zip(series["columns"], values, strict=True))
    return out


@pytest.mark.servers
async def test_sensor_rows_land_in_influxdb_and_on_the_device_page(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    influxdb1.create_database("enoc")
    v1 = {"url": influxdb1.url, "api": "v1", "database": "enoc", "flush_interval": "0.2s"}
    settings = {"influxdb": v1, "recent": {"source": "influxdb"}}
    rng = random.Random(9)
    rows = [*sensors(rng), Row("modem_signal", {"ifIndex": "3"}, {"snr": 12.5, "lock": "ok"})]
    ts = round(time.time() - 30, 3)
    data = payload(sample(rows, ts=ts))
    config = collector_config(tmp_path, mosquitto.url, extra=settings)
    async with running_collector(config) as collector:
        host, port = mosquitto.url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier="rows-test") as client:
            await client.publish(wire.topic(SITE, AGENT, "metrics"), data, qos=1)

        def landed() -> bool:
            return len(influx_rows(influxdb1, "sensor")) == 20

        await eventually(landed, what="the sensor rows in InfluxDB")
        headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
        url = f"http://127.0.0.1:{collector.http_port}/api/v1/devices/{SITE}/r1"
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
            assert r.status == 200
            page = (await r.json())["recent"]
        local = collector.recent.device(SITE, "r1")
    stored = influx_rows(influxdb1, "sensor")
    for row in rows[:-1]:
        key = (
            "agent_host=127.0.0.7",
            f"class={row.tags['class']}",
            "device=r1",
            "rtc=americas",
            f"sensor={row.tags['sensor']}",
            f"site={SITE}",
        )
        point = stored[key]
        assert point["time"] == round(ts * 1000)
        assert {k: point[k] for k in row.fields} == row.fields
    (modem,) = influx_rows(influxdb1, "modem_signal").values()
    assert (modem["snr"], modem["lock"]) == (12.5, "ok")
    assert page["source"] == "influxdb"
    assert local is not None and local["source"] == "local"
    assert len(page["rows"]) == 21
    assert page["rows"] == local["rows"], "both sources give the same rows"


def test_a_message_built_in_memory_keeps_its_rows_for_the_page() -> None:
    rows = sensors(random.Random(4), 2)
    message = MetricsMessage(AGENT, SITE, "americas", 1, T0, samples=[sample(rows)])
    window = RecentValues()
    window.add(of(message))
    page = window.device(SITE, "r1")
    assert page is not None and [r["tags"]["sensor"] for r in page["rows"]] == [
        "Sensor 0 (slot 0)",
        "Sensor 1 (slot 0)",
    ]


def test_int_edges_in_rows_decode_as_they_are() -> None:
    row = Row("sensor", {}, {f"v{n}": v for n, v in enumerate(INT_EDGES)})
    message = decode(TOPIC, payload(sample([row])))
    assert isinstance(message, MetricsMessage) and message.samples[0].rows == [row]


NASTY = ["CPU temp", "a,b=c d", "end\\", "zürich", "new\nline", "x" * 1100, 'q"q', "tab\there"]


@pytest.mark.servers
def test_row_tags_read_back_sanitised_from_both_databases(
    influxdb1: InfluxDB1, victoria_metrics: VictoriaMetrics
) -> None:
    """A row's tag values (a device's sensor names) as the pass and the general path write
    them: InfluxDB 1.6 and VictoriaMetrics read each back as `sanitise_tag_value` says."""
    rows = [
        Row("sensor", {"sensor": name, "class": "temperature"}, {"value": n + 0.5, "status": "ok"})
        for n, name in enumerate(NASTY)
    ]
    lines = read(SITE, AGENT, payload(sample(rows, ts=round(time.time() - 60, 3)))).lines
    want = {lineproto.sanitise_tag_value(name): n + 0.5 for n, name in enumerate(NASTY)}
    influxdb1.create_database("rowtags")
    assert influxdb1.write("rowtags", lines.decode(), precision="ms") == 204
    result = influxdb1.query('SELECT "sensor", "value", "status" FROM "sensor"', "rowtags")
    stored = result["results"][0]["series"][0]["values"]
    assert {row[1]: row[2] for row in stored} == want
    assert {row[3] for row in stored} == {"ok"}
    request = urllib.request.Request(
        f"{victoria_metrics.url}/write?precision=ms", data=lines, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    exported = victoria_metrics.export('{__name__="sensor_value"}')
    assert {r["metric"]["sensor"]: r["values"][0] for r in exported} == want
