"""collector._metricsjson, a metrics payload straight to line protocol, against the general
path it must agree with (enoc.wire.decode, then lineproto.metrics_chunk): on random
messages, on thousands of damaged payloads, on the forms of JSON it leaves to that path;
its numbers against Python's float(); real servers reading back what it writes."""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from lineprotokit import (
    influxdb1_device_row,
    parse_fields,
    random_message,
    split_line,
    victoria_device_fields,
)

from collector import lineproto
from collector.lineproto import payload_lines
from collector.metrics_in import Metrics, of, read
from enoc.wire import (
    MAX_PAYLOAD,
    BgpSample,
    DeviceSample,
    InterfaceSample,
    MetricsMessage,
    Value,
    WireError,
    decode,
    encode,
    topic,
)
from testbed.servers import InfluxDB1, VictoriaMetrics

SITE, AGENT = "nyc", "nyc-1"
TOPIC = topic(SITE, AGENT, "metrics")
PURE = os.environ.get("ENOC_PURE_PYTHON", "") not in ("", "0")
native = pytest.mark.skipif(
    lineproto._metricsjson is None, reason=f"no extension to call: {lineproto.NATIVE}"
)
T0 = 1_790_000_000.5


def reference(payload: bytes) -> Metrics | WireError:
    """The general path: the message enoc.wire decodes, formatted by metrics_chunk."""
    try:
        message = decode(TOPIC, payload)
    except WireError as exc:
        return exc
    assert isinstance(message, MetricsMessage)
    return of(message)


def values(lines: bytes) -> list[tuple[str, dict[str, tuple[str, str]], int]]:
    """Lines as measurement and tags, each field's type and value (repr: -0.0 is not 0.0),
    and timestamp."""
    out = []
    for line in lines.decode().split("\n")[:-1]:
        head, fields, stamp = split_line(line)
        parsed = parse_fields(fields)
        out.append((head, {k: (type(v).__name__, repr(v)) for k, v in parsed.items()}, stamp))
    return out


def canonical(payload: bytes) -> bool:
    """Whether every float of the payload is written as msgspec and repr write its value
    (then the pass, which copies the tokens, writes the general path's bytes: msgspec's in
    a set of numbers, repr's in a row's set with a string)."""
    for token in re.findall(rb"[:\[,]\s*(-?[0-9][0-9.eE+-]*)", payload):
        try:
            number = float(token)
        except ValueError:
            continue  # not a number (the inside of a string such as "127.0.0.1")
        if (b"." in token or b"e" in token.lower()) and (
            msgspec.json.encode(number) != token or repr(number).encode() != token
        ):
            return False
    return True


def agree(payload: bytes) -> bool:
    """Whether the pass took `payload`; when it did, the general path takes it too and
    writes the same values (byte for byte where every float token is the one msgspec would
    write: the pass copies tokens, the general path formats values) and the same polls."""
    fast = payload_lines(SITE, AGENT, payload)
    ref = reference(payload)
    if fast is None:
        return False
    assert not isinstance(ref, WireError), (ref, payload[:300])
    rtc, lines, points, polls = fast
    assert (rtc, points) == (ref.rtc, ref.points)
    assert values(lines) == values(ref.lines), payload[:300]
    if canonical(payload):
        assert lines == ref.lines
    assert polls == ref.polls
    return True


def agent_message(rng: random.Random, devices: int = 2, interfaces: int = 6) -> MetricsMessage:
    """What the agent sends: IF-MIB names, counters, rounded rates, BGP peers."""
    samples = []
    for d in range(devices):
        ifs = [
            InterfaceSample(
                n,
                f"ge-0/0/{n}",
                f"GigabitEthernet0/0/{n}",
                rng.choice(["", f"to gva {n}", "zürich uplink", 'say "hi"', "a\\b\nc"]),
                {
                    "ifOperStatus": rng.choice([1, 2]),
                    "ifHighSpeed": 1000,
                    "ifHCInOctets": rng.randrange(2**63) if rng.random() < 0.9 else 0,
                    "ifInErrors": rng.randrange(2**32),
                    "in_bps": round(rng.random() * 1e9, 3),
                    "out_bps": rng.random() * 10.0 ** rng.randrange(-6, 12),
                    "in_utilization": round(rng.random() * 100, 3),
                    "in_errors_per_s": round(rng.random(), 4),
                },
            )
            for n in range(1, interfaces + 1)
        ]
        fields: dict[str, Value] = {"reachable": 1, "response_ms": round(rng.random() * 9, 2)}
        if rng.random() < 0.8:
            fields |= {"cpu": rng.choice([rng.randrange(100), rng.random() * 100]), "memory": 5.5}
        samples.append(
            DeviceSample(
                f"dev-{d}",
                f"127.0.{d}.1",
                T0 + rng.random() * 1000,
                fields,
                ifs,
                [BgpSample(f"127.200.0.{b}", {"state": 6, "in_updates": b}) for b in range(2)],
            )
        )
    return MetricsMessage(AGENT, SITE, "americas", rng.randrange(10**6), T0, samples=samples)


# ------------------------------------------------------------------ agreement


def plain(rng: random.Random, message: MetricsMessage) -> MetricsMessage:
    """`message` with the names the pass writes as they are (no space, comma, equals sign,
    backslash or non-ASCII), most of its strings numbers and most of its integers within
    int64: its values stay random."""
    for sample in message.samples:
        for fields in [
            sample.fields,
            *(i.fields for i in sample.interfaces),
            *(b.fields for b in sample.bgp),
        ]:
            items = list(fields.items())
            fields.clear()
            for name, value in items:
                clean = re.sub(r"[^A-Za-z0-9_%]", "_", name)
                number = value
                if isinstance(value, str) and rng.random() < 0.9:
                    number = rng.randrange(10**6)
                elif isinstance(value, int) and not -(2**63) <= value < 2**63:
                    number = value % 2**63 if rng.random() < 0.9 else value
                fields.setdefault(clean, number)
    return message


@native
def test_the_pass_writes_what_the_general_path_writes() -> None:
    """Random messages: values of every kind and magnitude, integers near and beyond int64;
    those with a name or a value the pass does not write go the general way."""
    rng = random.Random(20261205)
    taken = left = 0
    for n in range(1200):
        built = random_message(rng, wire=True)
        if n % 3:
            built = plain(rng, built)
        if agree(encode(built)):
            taken += 1
        else:
            left += 1
    assert taken > 300 and left > 300, (taken, left)


@native
def test_every_agent_message_goes_through_the_pass() -> None:
    rng = random.Random(7)
    for _ in range(200):
        assert agree(encode(agent_message(rng, devices=rng.randrange(0, 4))))


NUMBERS = [
    "0", "-1", "1.0", "-0.0", "0.5", "1e5", "1e-05", "1e+16", "2.5e-7", "5e-324",
    "1.7976931348623157e+308", "9223372036854775807", "-9223372036854775808", "123.456e2",
    "1E5", "-0", "01", "1.", ".5", "1e", "+1", "1e400", "-1e400", "1e-400", "NaN",
    "Infinity", "true", "false", "null", '"5"', "[]", "{}", "9223372036854775808",
    "-9223372036854775809", "18446744073709551615", "0.1e1", "1" * 40, "1" * 30 + ".5",
    "0." + "0" * 30 + "1", "123456789012345678901234567890e-10",
]  # fmt: skip
STRINGS = [
    '"a"', '""', '"a\\u00e9"', '"\\ud800"', '"\\x"', '"\\u12"', '"z\\u00fcrich"',
    '"\\n"', '"\\/"', '"a\\"b"', '"tab\tinside"', '"nul\u0000"', '"\u00e9"',
]  # fmt: skip
CHARS = b'"\\,:}]{[ e.E-0\x00\xff\xc3\x80\t\n'


def damaged(rng: random.Random, payload: bytes) -> bytes:
    """One payload damaged one way: cut, a byte changed, white space or a span inserted, a
    number or a string replaced by one of the odd ones above, keys reordered or repeated."""
    if not payload:
        return b"{"
    kind = rng.randrange(8)
    at = rng.randrange(len(payload))
    if kind == 0:
        return payload[:at]
    if kind == 1:
        return payload[:at] + bytes([rng.choice(CHARS)]) + payload[at + 1 :]
    if kind == 2:
        return payload[:at] + rng.choice([b" ", b"\n", b"\t ", b"\r\n"]) + payload[at:]
    if kind == 3:
        end = min(len(payload), at + rng.randrange(1, 40))
        return payload[:end] + payload[at:end] + payload[end:]
    if kind in (4, 5):
        pattern = rb"-?[0-9][0-9.eE+-]*" if kind == 4 else rb'"(?:[^"\\]|\\.)*"'
        found = list(re.finditer(pattern, payload))
        if not found:
            return payload
        m = rng.choice(found)
        odd = rng.choice(NUMBERS if kind == 4 else STRINGS).encode()
        return payload[: m.start()] + odd + payload[m.end() :]
    try:
        body = json.loads(payload)
    except ValueError:  # damaged already
        return payload[: len(payload) // 2]
    samples = body.get("samples") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(samples, list):
        return payload
    target = body if kind == 6 or not samples else rng.choice(samples)
    if not isinstance(target, dict):
        return payload
    items = list(target.items())
    if rng.random() < 0.5:
        rng.shuffle(items)
        return json.dumps(dict(items), separators=(",", ":")).encode()
    key, value = rng.choice(list(body.items()))  # a key twice: a dict cannot hold it
    text = json.dumps(body, separators=(",", ":"))
    return (text[:-1] + "," + json.dumps({key: value})[1:-1] + "}").encode()


@native
def test_damaged_payloads_are_taken_only_where_the_general_path_takes_them() -> None:
    """The pass says None, or what the general path says; it never takes what that path
    refuses, and never crashes."""
    rng = random.Random(99)
    bases = [encode(agent_message(rng, devices=1, interfaces=3)) for _ in range(40)]
    taken = refused = 0
    for n in range(12_000):
        payload = damaged(rng, bases[n % len(bases)])
        if rng.random() < 0.2:
            payload = damaged(rng, payload)  # and once more
        if agree(payload):
            taken += 1
        elif isinstance(reference(payload), WireError):
            refused += 1
    assert taken > 1500 and refused > 3000, (taken, refused)


def forms() -> Iterator[tuple[str, bytes, bool]]:
    """(what, payload, whether the pass takes it): the forms of JSON it leaves to the
    general path, and some it takes."""
    rng = random.Random(3)
    base = agent_message(rng, devices=1, interfaces=3)
    body = json.loads(encode(base))
    compact = json.dumps(body, separators=(",", ":"))

    def edit(change: Callable[[dict[str, Any]], None]) -> bytes:
        copy = json.loads(compact)
        change(copy)
        return json.dumps(copy, separators=(",", ":"), ensure_ascii=False).encode()

    def field(name: str, value: object) -> Callable[[dict[str, Any]], None]:
        return lambda b: b["samples"][0]["ifs"][0][4].update({name: value})

    yield "compact, as the agent writes", compact.encode(), True
    yield "pretty, with white space everywhere", json.dumps(body, indent=2).encode(), True
    yield "ASCII only, \\u escapes", json.dumps(body, ensure_ascii=True).encode(), True
    yield "members in another order", json.dumps(dict(reversed(body.items()))).encode(), False
    reordered = edit(lambda b: b["samples"].__setitem__(0, dict(reversed(b["samples"][0].items()))))
    yield "a sample's members reversed", reordered, False
    yield "a member unknown to the contract", edit(lambda b: b.update(extra=[1, {}])), False
    yield "a member twice", compact.replace('"seq":', '"seq":1,"seq":').encode(), False
    yield "a name escaped", compact.replace('"in_bps"', '"in\\u005fbps"', 1).encode(), False
    yield "a name with a space", edit(field("in bps", 1)), False
    yield "the name InfluxDB 1.x refuses", edit(field("time", 1)), False
    yield "a name that only starts as that one", edit(field("timer", 1)), True
    yield "a name of 1,024 bytes", edit(field("x" * 1024, 1)), True
    yield "a name of 1,025 bytes", edit(field("x" * 1025, 1)), False
    yield (
        "an alias with backslashes",
        edit(lambda b: b["samples"][0]["ifs"][0].__setitem__(3, "\\A EDICION-1\\")),
        True,
    )
    yield (
        "a name twice in a set",
        compact.replace('{"ifOperStatus":', '{"x":1,"x":', 1).encode(),
        False,
    )
    yield "an upper-case exponent", edit(field("x", 0)).replace(b'"x":0', b'"x":1E5'), False
    yield "an integer -0", edit(field("x", 0)).replace(b'"x":0', b'"x":-0'), False
    yield "an integer beyond int64", edit(field("x", 2**64 - 1)), False
    yield "the least int64", edit(field("x", -(2**63))), True
    yield "a string value", edit(field("x", "up")), False
    yield "a boolean value", edit(field("x", True)), False
    yield "a null value", edit(field("x", None)), False
    yield "a float beyond a double", edit(field("x", 0)).replace(b'"x":0', b'"x":1e999'), False
    yield (
        "a float below a double's least",
        edit(field("x", 0)).replace(b'"x":0', b'"x":1e-999'),
        True,
    )
    yield "a subnormal float", edit(field("x", 5e-324)), True
    yield "an rtc escaped", edit(lambda b: b.update(rtc="a\nb")), False
    yield "a device not ASCII", edit(lambda b: b["samples"][0].update(device="zürich")), True
    yield "a device not UTF-8", compact.replace('"dev-0"', '"dev-\\u00ff"').encode(), False
    yield "bytes not UTF-8", compact.encode().replace(b'"dev-0"', b'"dev-\xff"'), False
    yield (
        "an alias not UTF-8",
        compact.encode().replace(b'"GigabitEthernet0/0/1"', b'"G\xc3"'),
        False,
    )
    yield "another site", edit(lambda b: b.update(site="gva")), False
    yield "another agent", edit(lambda b: b.update(agent="gva-1")), False
    yield "another kind", edit(lambda b: b.update(kind="events")), False
    yield "another version", edit(lambda b: b.update(v=2)), False
    yield "a time beyond the contract's", edit(lambda b: b["samples"][0].update(ts=1e12)), False
    yield "a time as an integer", edit(lambda b: b["samples"][0].update(ts=1790000000)), True
    yield "a negative seq", edit(lambda b: b.update(seq=-1)), False
    yield "a float seq", edit(lambda b: b.update(seq=1.5)), False
    yield "no samples", edit(lambda b: b.pop("samples")), True
    yield "no rtc", edit(lambda b: b.pop("rtc")), False
    yield (
        "a sample with nothing but its identity",
        edit(lambda b: b.update(samples=[{"device": "d", "address": "a", "ts": T0}])),
        True,
    )
    yield "a sample without ts", edit(lambda b: b["samples"][0].pop("ts")), False
    yield (
        "an interface without fields",
        edit(lambda b: b["samples"][0]["ifs"][0].__setitem__(4, {})),
        True,
    )
    yield "an interface row too short", edit(lambda b: b["samples"][0]["ifs"][0].pop()), False
    yield (
        "an ifIndex that is a float",
        edit(lambda b: b["samples"][0]["ifs"][0].__setitem__(0, 1.0)),
        False,
    )
    many = {f"f{k}": k for k in range(65)}
    yield "65 fields in a set", edit(lambda b: b["samples"][0].update(fields=many)), False
    yield "trailing garbage", compact.encode() + b"x", False
    yield "trailing white space", compact.encode() + b" \n", True
    yield "not an object", b"[1]", False
    yield "empty", b"", False


@native
@pytest.mark.parametrize(("what", "payload", "takes"), list(forms()), ids=lambda x: str(x)[:40])
def test_what_the_pass_leaves_to_the_general_path(what: str, payload: bytes, takes: bool) -> None:
    assert agree(payload) is takes, what
    ref = reference(payload)
    try:
        got: Metrics | WireError = read(SITE, AGENT, payload)
    except WireError as exc:
        got = exc
    if isinstance(ref, WireError):
        assert isinstance(got, WireError) and got.kind == ref.kind and str(got) == str(ref)
    else:
        assert isinstance(got, Metrics)
        assert values(got.lines) == values(ref.lines) and got.polls == ref.polls


def test_read_is_the_general_path_where_the_pass_is_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the extension (or with ENOC_PURE_PYTHON set) every payload goes the general
    way, with the same result."""
    monkeypatch.setattr(lineproto, "_metricsjson", None)
    rng = random.Random(11)
    message = agent_message(rng)
    payload = encode(message)
    assert payload_lines(SITE, AGENT, payload) is None
    got, ref = read(SITE, AGENT, payload), reference(payload)
    assert isinstance(ref, Metrics)
    assert (got.lines, got.points, got.polls, got.latest) == (
        ref.lines,
        ref.points,
        ref.polls,
        payload,
    )
    with pytest.raises(WireError, match="misaddressed"):
        read("gva", AGENT, payload)


# ------------------------------------------------------------------ numbers


def paper_power_of_five(q: int) -> int:
    """The 128-bit approximation of 5**q of the Eisel-Lemire algorithm, as Lemire's paper
    defines it (Number Parsing at a Gigabyte per Second, Appendix B)."""
    if q >= 0:
        power: int = 5**q
        while power < 1 << 127:
            power *= 2
        while power >= 1 << 128:
            power //= 2
        return power
    power = 5**-q
    z = power.bit_length()
    if q >= -27:
        nearest: int = 2 ** (z + 127) // power + 1
        return nearest
    c: int = 2 ** (2 * z + 128) // power + 1
    while c >= 1 << 128:
        c //= 2
    return c


@native
def test_the_powers_of_five_are_the_papers() -> None:
    assert lineproto._metricsjson is not None
    table = lineproto._metricsjson.powers_of_five()
    if not table:
        pytest.skip("Eisel-Lemire not compiled in (no 128-bit integers): strtod only")
    want = b"".join(paper_power_of_five(q).to_bytes(16, "big") for q in range(-342, 309))
    assert table == want


def halfway(rng: random.Random) -> str:
    """A decimal exactly halfway between two neighbouring doubles (rounds to the even one)."""
    x = rng.choice([rng.uniform(1, 2**53), rng.uniform(2**53, 2**64), rng.random()])
    after = math.nextafter(x, math.inf)
    return format((Decimal(x) + Decimal(after)) / 2, "f")


def tokens(rng: random.Random) -> Iterator[str]:
    yield from ["9007199254740993", "9007199254740993.0", "1e23", "8.5e-323", "2.5e-324"]
    yield from ["2.2250738585072011e-308", "2.2250738585072014e-308", "0.1", "-0.0"]
    yield from ["4.9406564584124654e-324", "1.7976931348623157e308", "1.7976931348623159e308"]
    for _ in range(60_000):
        kind = rng.randrange(6)
        if kind == 0:  # any double
            x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if math.isfinite(x):
                yield repr(x)
        elif kind == 1:  # 1 to 19 digits, every exponent
            digits = rng.randrange(1, 20)
            yield f"{rng.randrange(10 ** (digits - 1), 10**digits)}e{rng.randrange(-345, 312)}"
        elif kind == 2:
            yield repr(rng.random() * 10.0 ** rng.randrange(-5, 17))
        elif kind == 3:
            yield halfway(rng)
        elif kind == 4:
            yield f"{rng.randrange(10**19)}.{rng.randrange(10**5):05d}"
        else:
            yield f"{rng.random() * 10.0 ** rng.randrange(-300, 300):.17g}"


@native
def test_numbers_read_as_pythons_float_reads_them() -> None:
    module = lineproto._metricsjson
    assert module is not None
    rng = random.Random(5)
    checked = 0
    for token in tokens(rng):
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-]?[0-9]+)?", token):
            continue  # not a JSON number (repr writes inf, and 1e+16 is one)
        got = module.number(token.encode())
        assert got is not None, token
        assert struct.pack("<d", got) == struct.pack("<d", float(token)), token
        checked += 1
    assert checked > 55_000
    for odd in ["", "-", "1.", ".5", "01", "1e", "+1", "1E5", "NaN", "1 ", "0x10"]:
        assert module.number(odd.encode()) is None, odd


# ------------------------------------------------------------------ the tag caches


def learned_by(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bytes]:
    """Each raw identity `_DeviceTags.<name>` (a learn_*) is called with, from now on, with
    the tag caches emptied."""
    learned: list[bytes] = []
    learn = getattr(lineproto._DeviceTags, name)

    def counting(self: Any, position: int, raw: bytes) -> Any:
        learned.append(raw)
        return learn(self, position, raw)

    monkeypatch.setattr(lineproto._DeviceTags, name, counting)
    lineproto._devices.clear()
    return learned


@native
def test_an_interface_identity_is_learned_once_and_compared_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    learned = learned_by(monkeypatch, "learn_interface")
    rng = random.Random(1)
    message = agent_message(rng, devices=1, interfaces=5)
    assert agree(encode(message))
    assert len(learned) == 5
    first = payload_lines(SITE, AGENT, encode(message))
    assert first is not None and len(learned) == 5  # known: compared, not learned
    message.samples[0].interfaces[2].alias = "new alias"
    assert agree(encode(message))
    assert learned[5:] == [b'3,"ge-0/0/3","GigabitEthernet0/0/3","new alias"']
    again = payload_lines(SITE, AGENT, encode(message))
    assert again is not None and b"ifAlias=new\\ alias" in again[1] and len(learned) == 6
    poll = again[3][0][1]
    assert poll is not None
    index = poll[4]
    third = payload_lines(SITE, AGENT, encode(message))
    assert index == (1, 2, 3, 4, 5) and third is not None
    poll = third[3][0][1]
    assert poll is not None and poll[4] is index
    del message.samples[0].interfaces[3:]
    fewer = payload_lines(SITE, AGENT, encode(message))
    assert fewer is not None and len(learned) == 6
    poll = fewer[3][0][1]
    assert poll is not None and poll[4] == (1, 2, 3)
    assert agree(encode(message))


@native
def test_an_identity_the_contract_refuses_is_left_to_the_general_path() -> None:
    message = agent_message(random.Random(2), devices=1, interfaces=2)
    good = encode(message)
    assert payload_lines(SITE, AGENT, good) is not None  # learned
    for bad in [
        good.replace(b'[1,"ge-0/0/1"', b'[1.5,"ge-0/0/1"'),
        good.replace(b'[1,"ge-0/0/1"', b'[1,"ge-0/0/1\\q"'),
        good.replace(b'[1,"ge-0/0/1"', b'[1,"ge-0/0/1\xff"'),
        good.replace(b'"127.200.0.0"', b'"127.200.\\u00"'),
    ]:
        assert bad != good
        assert payload_lines(SITE, AGENT, bad) is None
        with pytest.raises(WireError):
            read(SITE, AGENT, bad)
    assert agree(good)


@native
def test_misbehaving_callbacks_raise_and_do_not_crash() -> None:
    module = lineproto._metricsjson
    assert module is not None
    payload = encode(agent_message(random.Random(4), devices=1, interfaces=2))
    with pytest.raises(AttributeError):
        module.lines(payload, SITE, AGENT, lambda *_: object())

    class Wrong(lineproto._DeviceTags):
        def learn_interface(self, position: int, raw: bytes) -> Any:
            return "not an entry"

    with pytest.raises(TypeError, match="learn_"):
        module.lines(payload, SITE, AGENT, Wrong)
    with pytest.raises(ZeroDivisionError):
        module.lines(payload, SITE, AGENT, lambda *_: 1 / 0)
    with pytest.raises(TypeError):
        module.lines(payload, SITE, 5, lineproto._device_tags)
    assert module.lines(bytearray(payload), SITE, AGENT, lineproto._device_tags) is None


@native
def test_python_code_emptying_the_caches_during_a_pass_does_not_break_it() -> None:
    """Every learn empties every device's shape lists and the device cache while the pass
    walks them: the answer is still the general path's (run under `python -X dev` /
    PYTHONMALLOC=debug to see a use after free)."""

    class Meddling(lineproto._DeviceTags):
        __slots__ = ()

        def learn_interface(self, position: int, raw: bytes) -> Any:
            entry = super().learn_interface(position, raw)
            for tags in list(lineproto._devices.values()):
                tags.if_shape.clear()
                tags.bgp_shape.clear()
                tags.index = None
            lineproto._devices.clear()
            return entry

    module = lineproto._metricsjson
    assert module is not None
    rng = random.Random(6)
    for _ in range(50):
        payload = encode(agent_message(rng, devices=3, interfaces=4))
        fast = module.lines(payload, SITE, AGENT, Meddling)
        ref = reference(payload)
        assert fast is not None and isinstance(ref, Metrics)
        assert values(fast[1]) == values(ref.lines) and fast[3] == ref.polls


# ------------------------------------------------------------------ real servers

EXPONENTS: dict[str, Value] = {
    "a": 1e-05,
    "b": 1e16,
    "c": 2.5e-07,
    "d": -3.25e20,
    "e": 1.5e-05,
    "f": 123.5,
}


def exponent_lines() -> bytes:
    """A poll whose floats Python's JSON writes with exponents (1e-05, 1e+16: the pass
    copies those tokens as they are), through the pass."""
    sample = DeviceSample("d1", "127.0.0.5", round(time.time() - 60, 3), fields=EXPONENTS)
    payload = encode(MetricsMessage(AGENT, SITE, "americas", 1, T0, samples=[sample]))
    assert b"1e-05" in payload and b"1e+16" in payload
    fast = payload_lines(SITE, AGENT, payload)
    assert fast is not None
    assert b"a=1e-05" in fast[1] and b"b=1e+16" in fast[1]
    return fast[1]


@native
@pytest.mark.servers
def test_victoria_metrics_reads_exponents_as_their_values(
    victoria_metrics: VictoriaMetrics,
) -> None:
    assert victoria_device_fields(victoria_metrics, exponent_lines()) == EXPONENTS


@native
@pytest.mark.servers
def test_influxdb_1_reads_exponents_as_their_values(influxdb1: InfluxDB1) -> None:
    row = influxdb1_device_row(influxdb1, "exp", exponent_lines())
    assert {k: row[k] for k in EXPONENTS} == EXPONENTS


def test_a_payload_the_pass_leaves_is_held_to_the_configured_size_not_the_default() -> None:
    """mqtt.max_message_size above 1 MiB: a large payload in a form the C pass leaves to the
    general path (keys in another order) is decoded up to the configured size, and refused
    beyond it, as the ingest's own size check does."""
    sample = DeviceSample(
        "big-1",
        "127.0.0.1",
        1_790_000_000.0,
        {"cpu": 1.0},
        interfaces=[
            InterfaceSample(i, f"Gi{i}", "d" * 200, "a" * 200, {"ifOperStatus": 1})
            for i in range(1, 3001)
        ],
    )
    message = MetricsMessage("agent-1", "lab", "emea", 1, 1_790_000_000.0, samples=[sample])
    payload = json.dumps(json.loads(encode(message)), sort_keys=True).encode()
    assert MAX_PAYLOAD < len(payload) < 2 * MAX_PAYLOAD
    assert payload_lines("lab", "agent-1", payload) is None, "the C pass leaves it"
    with pytest.raises(WireError) as refused:
        read("lab", "agent-1", payload)
    assert refused.value.kind == "too_large"
    taken = read("lab", "agent-1", payload, max_size=2 * MAX_PAYLOAD)
    assert taken.points == 1 + 3000
