"""Any string a device can send lands in InfluxDB 1.6 (v1 API) and VictoriaMetrics (v2
API): through the three line protocol paths (Python, collector._lineproto,
collector._metricsjson), every line is accepted and every tag value and field key reads
back as `lineproto.sanitise_tag_value` / `sanitise_field_key` say (docs/collector.md,
"What a device's strings become")."""

from __future__ import annotations

import itertools
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import aiomqtt
import pytest
from collectorkit import collector_config, eventually, running_collector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lineprotokit import T0, message, split_line

from collector import lineproto
from collector.lineproto import (
    MAX_TAG_BYTES,
    chunk,
    incident_line,
    metrics_chunk,
    sanitise_field_key,
    sanitise_string_field,
    sanitise_tag_value,
)
from collector.metrics_in import read
from collector.model import Incident, IncidentChange, IncidentKey
from collector.recent import InfluxRecent
from enoc.wire import DeviceSample, InterfaceSample, MetricsMessage, Value, topic
from enoc.wire import encode as wire_encode
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics

NASTY = [
    "\\A EDICION-1\\",  # an Arista's ifAlias, refused by InfluxDB 1.x before
    "\\",
    "\\\\",
    "trailing\\",
    "a\\ b",
    "a\\,b",
    "a\\=b",
    "a\\\\\\b",
    "\\n",
    '"quoted"',
    'a"',
    "a,b",
    "k=v",
    "=",
    ",",
    " ",
    "  leading",
    "trailing  ",
    "\r\n",
    "a\rb",
    "a\nb",
    "a\tb",
    "\x00",
    "nul\x00padded\x00\x00",
    "\x01\x1f\x7f\x85\x9f",
    "\ufffdinvalid UTF-8 as the agent decodes it\ufffd",
    "\u2028\u2029",
    "ünï cödé ✓ 日本語",
    "#not a comment",
    "time",
    "",
    "x" * 65536,
    "é" * 40000,
    '"\\' * 40000,  # escaped, twice as long in a string field
    "a" * (MAX_TAG_BYTES - 1) + "\\" + "b",  # the cut makes the backslash last
]


# --------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("\\A EDICION-1\\", "\\A EDICION-1/"),
        ("C:\\Program Files", "C:\\Program Files"),
        ("a\\ b", "a/ b"),
        ("a\\\\b", "a/\\b"),
        ("\\", "/"),
        ("a\r\nb", "a  b"),
        ("\x00", " "),
        ("", None),
        ("x" * 2000, "x" * MAX_TAG_BYTES),
        ("é" * 1000, "é" * (MAX_TAG_BYTES // 2)),
        ("€" * 400, "€" * (MAX_TAG_BYTES // 3)),  # cut back to a whole character
        ("a\ud800b", "a\ufffdb"),
        ('say "hi"', 'say "hi"'),
    ],
)
def test_a_tag_value_is_sanitised_as_documented(value: str, stored: str | None) -> None:
    assert sanitise_tag_value(value) == stored


def test_a_field_key_is_never_empty_nor_one_influxdb_refuses() -> None:
    assert sanitise_field_key("") is None
    assert sanitise_field_key("time") == "time_"
    assert sanitise_field_key('a\\"b') == "a\\'b"
    assert sanitise_field_key("in_bps") == "in_bps"
    assert sanitise_string_field("two\nlines") == "two lines"


def test_no_line_written_holds_an_empty_tag_value_or_field_key() -> None:
    sample = DeviceSample(
        "dev",
        "127.0.0.9",
        T0,
        fields={"": 1, "cpu": 2.0},
        interfaces=[InterfaceSample(1, "", "", "", {"": 1.0, "in_bps": 1.0})],
    )
    for line in lineproto.lines_for(message(sample)):
        assert "=," not in line and "= " not in line and ",=" not in line and " =" not in line
        assert "cpu=2.0" in line or "in_bps=1.0" in line


# --------------------------------------------------------------------- the paths


PATHS = ["python", "lineproto_c", "metricsjson_c"]


def lines_of(path: str, msg: MetricsMessage, monkeypatch: pytest.MonkeyPatch) -> bytes:
    if path == "python":
        with monkeypatch.context() as m:
            m.setattr(lineproto, "_native", None)
            return metrics_chunk(msg)[0]
    if path == "lineproto_c":
        if lineproto._native is None:
            pytest.skip(f"the C extension is not in use: {lineproto.NATIVE}")
        return metrics_chunk(msg)[0]
    if not lineproto.native_lineproto():
        pytest.skip(f"the C extensions are not in use: {lineproto.NATIVE}")
    # What the collector does with a payload: the C pass, or the general path after it.
    # One payload a sample: a field name the pass leaves to the general path leaves its
    # whole payload, and the interfaces' names must go through the pass.
    body = b""
    for sample in msg.samples:
        alone = MetricsMessage(msg.agent, msg.site, msg.rtc, msg.seq, msg.sent, [sample])
        payload = wire_encode(alone)
        plain = all(pass_takes(name) for name in sample.fields)
        assert (lineproto.payload_lines(msg.site, msg.agent, payload) is not None) is plain
        body += read(msg.site, msg.agent, payload).lines
    return body


def pass_takes(name: str) -> bool:
    """Whether collector._metricsjson writes a field name itself: printable ASCII but for
    the quote, backslash, comma and equals sign, at most MAX_TAG_BYTES, not `time`."""
    printable = all(0x21 <= ord(c) < 0x7F and c not in '"\\,=' for c in name)
    return printable and 0 < len(name) <= MAX_TAG_BYTES and name != "time"


def wire_safe(value: str) -> str:
    """What the wire can carry of a string (JSON is UTF-8: no lone surrogate)."""
    return value.encode("utf-8", "replace").decode()


def nasty_message(strings: list[str], device: str) -> MetricsMessage:
    """One interface per string (ifIndex = position + 1), the string as its ifName, ifDescr
    and ifAlias; one device per string, the string as a field name (`device-N`)."""
    samples = [
        DeviceSample(
            device,
            "127.0.0.9",
            T0,
            fields={"cpu": 1.0},
            interfaces=[
                InterfaceSample(n + 1, s, "d" + s, s + "a", {"in_bps": float(n)})
                for n, s in enumerate(strings)
            ],
        )
    ]
    samples += [
        DeviceSample(f"{device}-{n}", "127.0.0.9", T0, fields={"cpu": 1.0, s: n})
        for n, s in enumerate(strings)
        if sanitise_field_key(s) not in ("cpu", None)
    ]
    return message(*samples)


def expected_interfaces(strings: list[str]) -> dict[str, dict[str, str]]:
    """ifIndex -> the tags stored (a tag left out is absent)."""
    out = {}
    for n, s in enumerate(strings):
        tags = {"ifName": sanitise_tag_value(s), "ifDescr": sanitise_tag_value("d" + s)}
        tags["ifAlias"] = sanitise_tag_value(s + "a")
        out[str(n + 1)] = {k: v for k, v in tags.items() if v is not None}
    return out


def expected_fields(strings: list[str], device: str) -> dict[str, tuple[str, int]]:
    """device -> (its field key as stored, its value), per string."""
    return {
        f"{device}-{n}": (key, n)
        for n, s in enumerate(strings)
        if (key := sanitise_field_key(s)) not in ("cpu", None)
    }


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def influxdb1_read_back(
    server: InfluxDB1, db: str, device: str
) -> tuple[dict[str, dict[str, str]], dict[str, tuple[str, int]]]:
    """The interfaces' tags by ifIndex, and each `device-N`'s field other than cpu."""
    where = f"WHERE device = '{device}'"
    result = server.query(f'SELECT * FROM "interface" {where}', db=db)
    series = result["results"][0].get("series", [])
    interfaces: dict[str, dict[str, str]] = {}
    for s in series:
        columns = s["columns"]
        for row in s["values"]:
            got = dict(zip(columns, row, strict=True))
            interfaces[got["ifIndex"]] = {
                k: got[k] for k in ("ifName", "ifDescr", "ifAlias") if got.get(k) is not None
            }
    result = server.query(f'SELECT * FROM "device" WHERE device =~ /^{device}-/', db=db)
    fields: dict[str, tuple[str, int]] = {}
    for s in result["results"][0].get("series", []):
        columns = s["columns"]
        for row in s["values"]:
            got = dict(zip(columns, row, strict=True))
            rest = {
                k: v
                for k, v in got.items()
                if v is not None and k not in ("time", "cpu", "device", "agent_host", "rtc", "site")
            }
            assert len(rest) == 1, got
            fields[got["device"]] = next(iter(rest.items()))
    return interfaces, fields


def victoria_read_back(
    server: VictoriaMetrics, device: str
) -> tuple[dict[str, dict[str, str]], dict[str, tuple[str, int]]]:
    interfaces: dict[str, dict[str, str]] = {}
    for row in server.export(f'{{__name__="interface_in_bps",device="{device}"}}'):
        labels = row["metric"]
        interfaces[labels["ifIndex"]] = {
            k: labels[k] for k in ("ifName", "ifDescr", "ifAlias") if k in labels
        }
    fields: dict[str, tuple[str, int]] = {}
    for row in server.export(f'{{device=~"{device}-.*",__name__!="device_cpu"}}'):
        labels = row["metric"]
        fields[labels["device"]] = (labels["__name__"].removeprefix("device_"), row["values"][0])
    return interfaces, fields


_devices = (f"case{n}" for n in itertools.count())


def check_both(
    strings: list[str],
    path: str,
    influxdb1: InfluxDB1,
    victoria_metrics: VictoriaMetrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path == "metricsjson_c":
        strings = [wire_safe(s) for s in strings]
    device = next(_devices)
    body = lines_of(path, nasty_message(strings, device), monkeypatch)
    want = (expected_interfaces(strings), expected_fields(strings, device))
    status, answer = post(f"{influxdb1.url}/write?db=enoc&precision=ms", body)
    assert (status, answer) == (204, "")
    assert influxdb1_read_back(influxdb1, "enoc", device) == want
    status, answer = post(f"{victoria_metrics.url}/api/v2/write?precision=ms", body)
    assert (status, answer) == (204, "")
    # VictoriaMetrics answers 204 and skips a line it cannot parse: reading back finds it
    assert victoria_read_back(victoria_metrics, device) == want


@pytest.fixture
def servers(
    influxdb1: InfluxDB1, victoria_metrics: VictoriaMetrics
) -> tuple[InfluxDB1, VictoriaMetrics]:
    influxdb1.create_database("enoc")
    return influxdb1, victoria_metrics


@pytest.mark.servers
@pytest.mark.parametrize("path", PATHS)
def test_the_nasty_strings_land_in_both_databases(
    path: str,
    servers: tuple[InfluxDB1, VictoriaMetrics],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_both([*NASTY, "\ud800 lone"], path, *servers, monkeypatch)


# What devices send, and what breaks line protocol, mixed at random.
PIECES = st.sampled_from(["\\", " ", ",", "=", '"', "\n", "\r", "\t", "\x00", "\x7f", "#", "'"])
STRINGS = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=12).map("".join)


@pytest.mark.servers
@pytest.mark.parametrize("path", PATHS)
def test_random_strings_land_in_both_databases(
    path: str,
    servers: tuple[InfluxDB1, VictoriaMetrics],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(STRINGS, min_size=1, max_size=6))
    def check(strings: list[str]) -> None:
        check_both(strings, path, *servers, monkeypatch)

    check()


@pytest.mark.servers
def test_incident_titles_and_resources_land_in_influxdb_1_6_as_documented(
    servers: tuple[InfluxDB1, VictoriaMetrics],
) -> None:
    """The `incident` measurement: a device's string in the title, resource and device
    (string fields and a tag); VictoriaMetrics keeps only its numbers."""
    influxdb1, victoria_metrics = servers
    strings = [s for s in NASTY if s] + ['\'single\' and "double" \\" quotes']
    changes = [
        IncidentChange(
            "opened",
            Incident(
                n + 1,
                IncidentKey("nyc", s, f"ifAlias {s}", "link"),
                "major",
                "open",
                f"link down: {s}",
                T0 + n,
                T0 + n,
                rtc="americas",
            ),
        )
        for n, s in enumerate(strings)
    ]
    body = chunk([incident_line(c) for c in changes])
    status, answer = post(f"{influxdb1.url}/write?db=enoc&precision=ms", body)
    assert (status, answer) == (204, "")
    result = influxdb1.query('SELECT "id", "title", "resource", "device" FROM incident', "enoc")
    rows = {row[1]: row[2:] for row in result["results"][0]["series"][0]["values"]}
    assert rows == {
        n + 1: [
            sanitise_string_field(f"link down: {s}"),
            sanitise_string_field(f"ifAlias {s}"),
            sanitise_tag_value(s),
        ]
        for n, s in enumerate(strings)
    }
    status, answer = post(f"{victoria_metrics.url}/api/v2/write?precision=ms", body)
    assert (status, answer) == (204, "")
    ids = victoria_metrics.export('{__name__="incident_id"}')
    # (devices that sanitise alike, such as "a\rb" and "a\nb", are one series)
    assert sorted(v for row in ids for v in row["values"]) == list(range(1, len(strings) + 1))


@pytest.mark.parametrize("path", ["python", "lineproto_c"])
def test_names_that_sanitise_alike_write_one_key(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`a\\n` and `a\\r` are both stored as `a `: a line with both would be refused by
    InfluxDB 1.x when their types differ. The first is written, on every path, each
    name first met alone (so that it is known to the C extension's cache)."""
    alone: list[dict[str, Value]] = [{"a\n": 1}, {"a\r": 2.5}, {"time": 1}, {"time_": 2}]
    for fields in alone:
        lines_of(path, message(DeviceSample("d", "127.0.0.9", T0, fields=fields)), monkeypatch)
    together: list[tuple[dict[str, Value], str]] = [
        ({"a\n": 1, "a\r": 2.5, "cpu": 3.0}, "a\\ =1i,cpu=3.0"),
        ({"time": 1, "time_": 2}, "time_=1i"),
    ]
    for fields, written in together:
        body = lines_of(
            path, message(DeviceSample("d", "127.0.0.9", T0, fields=fields)), monkeypatch
        )
        assert split_line(body.decode().rstrip("\n"))[1] == written


@pytest.mark.servers
async def test_an_aristas_interfaces_land_whole_through_the_collector(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1
) -> None:
    """The first-contact report: 14 of an Arista's 55 interfaces refused on every poll for
    their ifAlias. Through Mosquitto and the collector into InfluxDB 1.6 (v1 API), every
    interface is stored, its ifAlias as documented, nothing refused."""
    influxdb1.create_database("enoc")
    aliases = ["\\A EDICION-1\\", "\\\\srv\\share\\", "uplink", "", "a\\ b", 'say "hi"']
    name = "arista-1\\"  # a device's name that line protocol cannot carry as is either
    sample = DeviceSample(
        name,
        "127.0.0.9",
        T0,
        fields={"cpu": 1.0},
        interfaces=[
            InterfaceSample(n + 1, f"Ethernet{n + 1}", "", alias, {"in_bps": float(n)})
            for n, alias in enumerate(aliases)
        ],
    )
    v1 = {"influxdb": {"url": influxdb1.url, "api": "v1", "database": "enoc"}}
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    async with running_collector(collector_config(tmp_path, mosquitto.url, extra=v1)) as coll:
        async with aiomqtt.Client(host, int(port), identifier="agent-1") as agent:
            msg = MetricsMessage("agent-1", "lab", "emea", 1, T0, samples=[sample])
            await agent.publish(topic("lab", "agent-1", "metrics"), wire_encode(msg), qos=1)
        await eventually(lambda: coll.ingest.stats.acked == 1, what="the message written")
        assert (
            coll.sinks["influxdb"].stats.points_dropped == 0
            and not coll.sinks["influxdb"].stats.lines_refused
        )
        assert coll.sinks["influxdb"].stats.points_written == 1 + len(aliases)
        # The device page asks by the name the agent sent; InfluxDB holds it sanitised.
        assert coll.config.influxdb is not None
        reads = InfluxRecent(coll.config.influxdb, coll.config.recent, window=10 * 365 * 86400)
        try:
            page = await reads.device("lab", name)
        finally:
            await reads.close()
        assert page is not None and page["source"] == "influxdb", reads.failures
        assert len(page["interfaces"]) == len(aliases), page
    result = influxdb1.query('SELECT "in_bps", "ifAlias", "ifIndex" FROM "interface"', "enoc")
    rows = result["results"][0]["series"][0]["values"]
    assert sorted((row[3], row[2]) for row in rows) == sorted(
        (str(n + 1), sanitise_tag_value(alias)) for n, alias in enumerate(aliases)
    )
