"""Line protocol test helpers: parsing lines back into values, and random metrics
messages (field sets of every kind, integers near and beyond int64, floats of every
magnitude) for the tests that compare one formatting path with another."""

from __future__ import annotations

import math
import random
import struct
import urllib.request

from collector.lineproto import sanitise_field_key, sanitise_string_field
from enoc.wire import BgpSample, DeviceSample, InterfaceSample, MetricsMessage, Value
from testbed.servers import InfluxDB1, VictoriaMetrics

T0 = 1_790_000_000.25


def message(*samples: DeviceSample) -> MetricsMessage:
    return MetricsMessage("nyc-1", "nyc", "americas", 1, T0, samples=list(samples))


def parse_fields(text: str) -> dict[str, Value | bool]:
    """A field set back into values: `i` ints, quoted strings, booleans, else floats."""
    out: dict[str, Value | bool] = {}
    i = 0
    while i < len(text):
        j = i
        while text[j] != "=":
            j += 2 if text[j] == "\\" else 1
        name = text[i:j].replace("\\ ", " ").replace("\\,", ",").replace("\\=", "=")
        k = j + 1
        if text[k] == '"':
            k += 1
            raw = []
            while text[k] != '"':
                if text[k] == "\\":
                    raw.append(text[k + 1])
                    k += 2
                else:
                    raw.append(text[k])
                    k += 1
            out[name] = "".join(raw)
            k += 1
        else:
            end = text.find(",", k)
            end = len(text) if end < 0 else end
            token = text[k:end]
            if token in ("true", "false"):
                out[name] = token == "true"
            elif token.endswith("i"):
                out[name] = int(token[:-1])
            else:
                out[name] = float(token)
            k = end
        i = k + 1
    return out


def split_line(line: str) -> tuple[str, str, int]:
    """measurement+tags, fields, timestamp (field strings here hold no unescaped space)."""
    head, fields, stamp = "", "", ""
    i = 0
    while line[i] != " ":
        i += 2 if line[i] == "\\" else 1
    head, rest = line[:i], line[i + 1 :]
    fields, _, stamp = rest.rpartition(" ")
    return head, fields, int(stamp)


def writable(value: Value | bool) -> bool:
    """What InfluxDB can store: not a float that is not finite, nor an integer beyond int64."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return True


def expected(fields: dict[str, Value]) -> dict[str, Value | bool]:
    """What InfluxDB can store of a field set: its keys and strings sanitised."""
    out: dict[str, Value | bool] = {}
    for name, value in fields.items():
        key = sanitise_field_key(name)
        if key is not None and writable(value):
            out[key] = sanitise_string_field(value) if isinstance(value, str) else value
    return out


EDGE_CASE_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
EDGE_CASE_FLOATS += [-1.7976931348623157e308, math.nan, math.inf, -math.inf, 1e16, 1e-4, 1e-5]
EDGE_CASE_FLOATS += [9.999999999999998e15, 9.999999999999999e-5, 1e-7, 0.1, 1.0, 1e22, 1e23]


def random_float(rng: random.Random) -> float:
    kind = rng.randrange(8)
    if kind == 0:  # any bit pattern: every exponent, nan and inf included
        return float(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
    if kind == 1:  # subnormal
        bits = rng.getrandbits(1) << 63 | rng.randrange(1, 2**52)
        return float(struct.unpack("<d", bits.to_bytes(8, "little"))[0])
    if kind == 2:
        return rng.choice(EDGE_CASE_FLOATS)
    if kind == 3:
        return rng.choice([1, -1]) * rng.random() * 10.0 ** rng.randrange(-320, 308)
    if kind == 4:  # what the agent sends: rounded rates
        return round(rng.random() * 10.0 ** rng.randrange(0, 10), rng.randrange(0, 5))
    if kind == 5:
        return float(rng.randrange(-(2**60), 2**60))
    return rng.uniform(-1e9, 1e9)


INT_EDGES = [0, 1, -1, 2**31 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63 - 2, -(2**63)]
INT_EDGES += [-(2**63) + 1, 2**63, 2**64 - 1, -(2**63) - 1, 2**64, 2**100, -(2**100)]
STRINGS = ["", "up", 'a "quoted" one', "back\\slash", "new\nline", "x,y=z w", "ünï cödé", "100%"]
NAMES = ["ifHCInOctets", "in_bps", "x y", "a,b", "k=v", "per%cent", "%%d", "back\\slash"]
NAMES += ["new\nline", "ünï", "cpu", "state", "ifOperStatus", "out_utilization", "n"]


def random_number(rng: random.Random) -> Value:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(INT_EDGES)
    if kind == 1:
        return rng.randrange(-(2**63), 2**63)
    if kind == 2:
        return rng.randrange(1000)
    return random_float(rng)


def random_value(rng: random.Random) -> Value | bool:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.random() < 0.5
    if kind == 1:
        return rng.choice(STRINGS)
    return random_number(rng)


def random_fields(rng: random.Random, wire: bool) -> dict[str, Value]:
    """Most sets numbers only (the extension's), some with a bool or a string, some empty;
    integers near and beyond int64, floats of every magnitude; `wire`: what the wire
    carries (no bool, no float that is not finite)."""
    names = rng.sample(NAMES, rng.choice([0, 1, 2, 5, 8, 15]))
    mixed = rng.random() < 0.25
    fields: dict[str, Value] = {}
    for name in names:
        value = random_value(rng) if mixed else random_number(rng)
        while wire and (isinstance(value, bool) or (type(value) is float and not writable(value))):
            value = random_number(rng)
        fields[name] = value  # bools too (in memory; the wire has none)
    return fields


def random_message(rng: random.Random, wire: bool) -> MetricsMessage:
    shapes = [random_fields(rng, wire) for _ in range(3)]  # polls repeat their name sets

    def fields() -> dict[str, Value]:
        if rng.random() < 0.7:
            shape = rng.choice(shapes)
            return {k: random_number(rng) for k in shape} if rng.random() < 0.5 else dict(shape)
        return random_fields(rng, wire)

    samples = [
        DeviceSample(
            f"dev {d}",
            f"127.0.0.{d + 1}",
            T0 + rng.random() * 100,
            fields=fields(),
            interfaces=[
                InterfaceSample(n, f"e{n}", rng.choice(["", "Gig 0/0"]), "to=gva, x", fields())
                for n in range(rng.randrange(0, 6))
            ],
            bgp=[BgpSample(f"127.200.0.{b}", fields()) for b in range(rng.randrange(0, 2))],
        )
        for d in range(rng.randrange(1, 4))
    ]
    for sample in samples:  # JSON has no float that is not finite
        for f in [
            sample.fields,
            *(i.fields for i in sample.interfaces),
            *(b.fields for b in sample.bgp),
        ]:
            for k, v in f.items():
                if wire and type(v) is float and not math.isfinite(v):
                    f[k] = 0.5
    return message(*samples)


def victoria_device_fields(victoria_metrics: VictoriaMetrics, body: bytes) -> dict[str, float]:
    """Lines of measurement `device` written to VictoriaMetrics (InfluxDB line protocol,
    ms), read back: each field's first value by name."""
    request = urllib.request.Request(
        f"{victoria_metrics.url}/write?precision=ms", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    return {
        row["metric"]["__name__"].removeprefix("device_"): row["values"][0]
        for row in victoria_metrics.export('{__name__=~"device_.*"}')
    }


def influxdb1_device_row(influxdb1: InfluxDB1, db: str, body: bytes) -> dict[str, object]:
    """Lines of measurement `device` (one point) written to a new database of InfluxDB 1.6,
    read back as its row: column name to value."""
    influxdb1.create_database(db)
    assert influxdb1.write(db, body.decode(), precision="ms") == 204
    result = influxdb1.query("SELECT * FROM device", db=db)
    series = result["results"][0]["series"][0]
    return dict(zip(series["columns"], series["values"][0], strict=True))
