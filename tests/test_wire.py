"""The wire contract: every message kind round-trips; every breach is named by kind."""

from __future__ import annotations

import json

import pytest

from enoc import wire, wire_checked

T0 = 1_800_000_000.0


def metrics() -> wire.MetricsMessage:
    return wire.MetricsMessage(
        agent="nyc-1",
        site="nyc",
        rtc="americas",
        seq=7,
        sent=T0 + 1,
        samples=[
            wire.DeviceSample(
                device="nyc-pe-1",
                address="127.16.0.1",
                ts=T0,
                fields={"sysUpTime": 123456, "cpu": 12.5, "reachable": 1},
                interfaces=[
                    wire.InterfaceSample(
                        3,
                        "Gi0/3",
                        "GigabitEthernet0/3",
                        "uplink\r\nr\u00e9f",
                        {"ifHCInOctets": 2**63 + 5, "in_bps": 1.5e6},
                    )
                ],
                bgp=[wire.BgpSample("127.200.0.1", {"state": 6})],
            )
        ],
    )


def events() -> wire.EventsMessage:
    return wire.EventsMessage(
        agent="nyc-1",
        site="nyc",
        rtc="americas",
        seq=1,
        sent=T0,
        events=[
            wire.Event(
                id="nyc-1:42",
                ts=T0,
                device="nyc-pe-1",
                resource="if:3",
                kind="link",
                state="down",
                severity="major",
                message="Gi0/3 down",
                source="trap",
                attrs={"ifName": "Gi0/3"},
            )
        ],
    )


def status() -> wire.StatusMessage:
    return wire.StatusMessage(
        agent="nyc-1",
        site="nyc",
        rtc="americas",
        seq=0,
        sent=T0,
        state="offline",
        version="0.1.0",
        inventory_size=13,
        health={"spool_depth": 0},
    )


@pytest.mark.parametrize("message", [metrics(), events(), status()])
def test_every_kind_round_trips(message: wire.Message) -> None:
    kind = type(message).__name__.removesuffix("Message").lower()
    name = wire.topic("nyc", "nyc-1", kind)  # type: ignore[arg-type]
    assert wire.decode(name, wire.encode(message)) == message


def test_big_counters_and_odd_strings_survive() -> None:
    decoded = wire.decode("enoc/v1/nyc/nyc-1/metrics", wire.encode(metrics()))
    assert isinstance(decoded, wire.MetricsMessage)
    iface = decoded.samples[0].interfaces[0]
    assert iface.fields["ifHCInOctets"] == 2**63 + 5
    assert iface.alias == "uplink\r\nr\u00e9f"


def test_topics_and_subscriptions() -> None:
    assert wire.topic("nyc", "nyc-1", "events") == "enoc/v1/nyc/nyc-1/events"
    assert wire.parse_topic("enoc/v1/nyc/nyc-1/status") == ("nyc", "nyc-1", "status")
    assert wire.subscription("metrics") == "enoc/v1/+/+/metrics"
    assert (
        wire.subscription(share_group="enoc-collectors") == "$share/enoc-collectors/enoc/v1/+/+/+"
    )
    with pytest.raises(ValueError, match="MQTT topic level"):
        wire.check_name("site", "ny/c")
    assert wire.check_name("agent", "nyc-1") == "nyc-1"


def body_of(message: wire.Message) -> dict[str, object]:
    result: dict[str, object] = json.loads(wire.encode(message))
    return result


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        ("enoc/v2/nyc/nyc-1/metrics", b"{}", "bad_topic"),
        ("enoc/v1/nyc/nyc-1/other", b"{}", "bad_topic"),
        ("enoc/v1/nyc/nyc-1/metrics", b"\xff\xfe", "malformed"),
        ("enoc/v1/nyc/nyc-1/metrics", b"[1, 2]", "malformed"),
        (
            "enoc/v1/nyc/nyc-1/metrics",
            json.dumps({**body_of(metrics()), "v": 2}).encode(),
            "unknown_version",
        ),
        ("enoc/v1/gva/nyc-1/metrics", wire.encode(metrics()), "misaddressed"),
        ("enoc/v1/nyc/nyc-2/metrics", wire.encode(metrics()), "misaddressed"),
        ("enoc/v1/nyc/nyc-1/events", wire.encode(metrics()), "misaddressed"),
        (
            "enoc/v1/nyc/nyc-1/metrics",
            json.dumps({**body_of(metrics()), "seq": -1}).encode(),
            "invalid",
        ),
        (
            "enoc/v1/nyc/nyc-1/metrics",
            json.dumps({**body_of(metrics()), "sent": "now"}).encode(),
            "invalid",
        ),
        (
            "enoc/v1/nyc/nyc-1/events",
            json.dumps({**body_of(events()), "events": [{"id": "x"}]}).encode(),
            "invalid",
        ),
        (
            "enoc/v1/nyc/nyc-1/status",
            json.dumps({**body_of(status()), "state": "dead"}).encode(),
            "invalid",
        ),
    ],
)
def test_breaches_are_named(topic: str, payload: bytes, kind: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(topic, payload)
    assert caught.value.kind == kind


def test_field_values_must_be_numbers_or_strings() -> None:
    body = body_of(metrics())
    samples = body["samples"]
    assert isinstance(samples, list)
    samples[0]["ifs"][0][4] = {"in_bps": True}
    with pytest.raises(wire.WireError, match=r"samples\[0\].ifs\[0\].fields.in_bps"):
        wire.decode("enoc/v1/nyc/nyc-1/metrics", json.dumps(body).encode())
    with pytest.raises(ValueError, match="Out of range float values"):
        wire.encode(wire.StatusMessage("a", "s", "r", 0, T0, health={"lag": float("nan")}))


# ------------------------------------------------------------------ the metrics fast path

METRICS_TOPIC = "enoc/v1/nyc/nyc-1/metrics"


def general(payload: bytes) -> wire.Message | str:
    """What the general, check-by-check path makes of a metrics payload (or its breach)."""
    try:
        return wire_checked.decode_checked("nyc", "nyc-1", "metrics", payload)
    except wire.WireError as exc:
        return exc.kind


def fast(payload: bytes) -> wire.Message | str:
    try:
        return wire.decode(METRICS_TOPIC, payload)
    except wire.WireError as exc:
        return exc.kind


def mutations() -> list[tuple[str, object]]:
    """(what, body or raw bytes): good and bad variations of a metrics payload."""
    good = body_of(metrics())
    sample = good["samples"][0]  # type: ignore[index]
    row = sample["ifs"][0]

    def with_sample(**changes: object) -> dict[str, object]:
        return {**good, "samples": [{**sample, **changes}]}

    def with_row(i: int, value: object) -> dict[str, object]:
        changed = list(row)
        changed[i] = value
        return with_sample(ifs=[changed])

    def without(key: str) -> dict[str, object]:
        return {k: v for k, v in good.items() if k != key}

    def sample_without(key: str) -> dict[str, object]:
        return {**good, "samples": [{k: v for k, v in sample.items() if k != key}]}

    return [
        ("good", good),
        ("extra keys are ignored", {**good, "extra": [1, {"x": None}]}),
        ("no samples", without("samples")),
        ("empty samples", {**good, "samples": []}),
        ("v 1.0", {**good, "v": 1.0}),
        ("v true", {**good, "v": True}),
        ("v 2", {**good, "v": 2}),
        ("v missing", without("v")),
        ("kind events", {**good, "kind": "events"}),
        ("site elsewhere", {**good, "site": "gva"}),
        ("agent missing", without("agent")),
        ("rtc number", {**good, "rtc": 5}),
        ("seq -1", {**good, "seq": -1}),
        ("seq true", {**good, "seq": True}),
        ("seq 2**70", {**good, "seq": 2**70}),
        ("sent 0", {**good, "sent": 0}),
        ("sent 1e11", {**good, "sent": 1e11}),
        ("sent int", {**good, "sent": 1_800_000_000}),
        ("sent string", {**good, "sent": "now"}),
        ("samples object", {**good, "samples": {"a": 1}}),
        ("sample not object", {**good, "samples": [5]}),
        ("ts true", with_sample(ts=True)),
        ("ts negative", with_sample(ts=-1)),
        ("device missing", sample_without("device")),
        ("address number", with_sample(address=1)),
        ("fields missing", sample_without("fields")),
        ("ifs missing", sample_without("ifs")),
        ("bgp missing", sample_without("bgp")),
        ("ifs null", with_sample(ifs=None)),
        ("fields null", with_sample(fields=None)),
        ("field bool", with_sample(fields={"cpu": True})),
        ("field null", with_sample(fields={"cpu": None})),
        ("field list", with_sample(fields={"cpu": [1]})),
        ("field huge int", with_sample(fields={"c": 2**70})),
        ("field negative", with_sample(fields={"c": -(2**63)})),
        ("row of 4", with_sample(ifs=[row[:4]])),
        ("row of 6", with_sample(ifs=[[*row, 1]])),
        ("row not list", with_sample(ifs=[{"a": 1}])),
        ("ifIndex bool", with_row(0, True)),
        ("ifIndex float", with_row(0, 3.0)),
        ("ifIndex huge", with_row(0, 2**64 + 1)),
        ("name number", with_row(1, 5)),
        ("alias null", with_row(3, None)),
        ("row fields list", with_row(4, [1])),
        ("row field string", with_row(4, {"state": "up"})),
        ("bgp of 1", with_sample(bgp=[["127.0.0.1"]])),
        ("bgp peer number", with_sample(bgp=[[1, {}]])),
        ("bgp field bool", with_sample(bgp=[["127.0.0.1", {"up": False}]])),
        ("NaN literal", json.dumps(with_sample(fields={"cpu": float("nan")})).encode()),
        ("Infinity literal", json.dumps(with_sample(fields={"cpu": float("inf")})).encode()),
        ("beyond a double", wire.encode(metrics()).replace(b"1500000.0", b"1e400")),
        ("lone surrogate", wire.encode(metrics()).replace(b"Gi0/3", b"Gi\\ud8000/3", 1)),
        ("bad UTF-8", wire.encode(metrics()).replace(b"Gi0/3", b"Gi\xff/3", 1)),
        ("truncated", wire.encode(metrics())[:-3]),
        ("not an object", b"[1, 2]"),
        ("empty", b""),
    ]


@pytest.mark.parametrize(("what", "body"), mutations(), ids=[m[0] for m in mutations()])
def test_the_fast_path_decides_as_the_general_checks_do(what: str, body: object) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert fast(payload) == general(payload), what


def test_what_strict_json_refuses_is_malformed() -> None:
    for what, body in mutations():
        if what in ("NaN literal", "Infinity literal", "beyond a double", "lone surrogate"):
            assert isinstance(body, bytes)
            assert fast(body) == "malformed", what


def test_a_good_metrics_message_decodes_to_the_dataclasses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: object) -> wire.Message:
        raise AssertionError("a good metrics message took the general path")

    monkeypatch.setattr(wire, "decode_checked", refuse)
    decoded = wire.decode(METRICS_TOPIC, wire.encode(metrics()))
    assert decoded == metrics()
    assert isinstance(decoded, wire.MetricsMessage)
    sample = decoded.samples[0]
    assert type(sample) is wire.DeviceSample
    assert type(sample.interfaces[0]) is wire.InterfaceSample
    assert type(sample.bgp[0]) is wire.BgpSample
    assert type(sample.ts) is float
    assert wire.SCHEMA_VERSION == 1  # the fast path's struct says Literal[1]


# ------------------------------------------------------------------ bounds (issue 18)


def refusal(topic: str, payload: bytes, **kwargs: int) -> tuple[str, str]:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(topic, payload, **kwargs)
    return caught.value.kind, str(caught.value)


def test_a_payload_over_the_limit_is_refused_before_it_is_read() -> None:
    # not JSON at all: refused for its size, not for what it holds
    kind, said = refusal(METRICS_TOPIC, b"\xff" * (wire.MAX_PAYLOAD + 1))
    assert kind == "too_large" and str(wire.MAX_PAYLOAD) in said
    small = wire.encode(metrics())
    assert refusal(METRICS_TOPIC, small, max_size=len(small) - 1)[0] == "too_large"
    assert wire.decode(METRICS_TOPIC, small, max_size=len(small)) == metrics()


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def test_nesting_counts_brackets_outside_strings_only() -> None:
    import random

    rng = random.Random(18)
    alphabet = '[]{}"\\ab/u'

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))

    def value(depth: int) -> object:
        if depth > 8 or rng.random() < 0.3:
            return rng.choice([text(), 1, 2.5, None])
        if rng.random() < 0.5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {text(): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(2000):
        body = value(0)
        for ascii_only in (True, False):
            payload = json.dumps(body, ensure_ascii=ascii_only).encode()
            assert wire_checked.nesting(payload) == depth_of(body), payload


@pytest.mark.parametrize("kind", ["metrics", "events", "status"])
def test_json_nested_too_deep_is_refused_whatever_the_kind(kind: str) -> None:
    topic = f"enoc/v1/nyc/nyc-1/{kind}"
    for levels in (wire.MAX_DEPTH + 1, 1000, 100_000):
        payload = b'{"v":1,"x":' + b"[" * levels + b"]" * levels + b"}"
        assert refusal(topic, payload)[0] == "too_deep", levels
    # inside a string, brackets are text
    fine = body_of(metrics())
    fine["rtc"] = "[" * 1000
    assert wire.decode(METRICS_TOPIC, json.dumps(fine).encode()).rtc == "[" * 1000


def status_payload(**changes: object) -> bytes:
    body = body_of(wire.StatusMessage("nyc-1", "nyc", "americas", 3, T0, inventory_size=2))
    return json.dumps({**body, **changes}).encode()


def events_payload(**changes: object) -> bytes:
    event = wire.Event("e-1", T0, "pe-1", "if:1", "link", "down", attrs={"n": 1})
    body = body_of(wire.EventsMessage("nyc-1", "nyc", "americas", 3, T0, events=[event]))
    body["events"][0].update(changes)  # type: ignore[index]
    return json.dumps(body).encode()


STATUS_TOPIC = "enoc/v1/nyc/nyc-1/status"
EVENTS_TOPIC = "enoc/v1/nyc/nyc-1/events"


def test_integers_the_store_takes_are_within_int64() -> None:
    top = 2**63 - 1
    assert wire.decode(STATUS_TOPIC, status_payload(seq=top, inventory_size=top)).seq == top
    for key in ("seq", "inventory_size"):
        kind, said = refusal(STATUS_TOPIC, status_payload(**{key: top + 1}))
        assert kind == "invalid" and key in said and "int64" in said
    assert refusal(STATUS_TOPIC, status_payload(health={"n": -(2**63) - 1}))[0] == "invalid"
    assert refusal(EVENTS_TOPIC, events_payload(attrs={"n": 2**64}))[0] == "invalid"
    body = body_of(metrics())
    body["seq"] = 2**64
    assert refusal(METRICS_TOPIC, json.dumps(body).encode())[0] == "invalid"
    # a metrics field keeps the contract's integers beyond int64 (a Counter64 of 2**64-1)
    assert wire.decode(METRICS_TOPIC, wire.encode(metrics())) == metrics()


@pytest.mark.parametrize(
    ("topic", "payload", "where"),
    [
        (EVENTS_TOPIC, events_payload(message="a\u0000"), "message"),
        (EVENTS_TOPIC, events_payload(id="\u0000"), "id"),
        (EVENTS_TOPIC, events_payload(device="d\u0000"), "device"),
        (EVENTS_TOPIC, events_payload(attrs={"k": "v\u0000"}), "attrs"),
        (EVENTS_TOPIC, events_payload(attrs={"k\u0000": 1}), "attrs"),
        (STATUS_TOPIC, status_payload(version="\u0000"), "version"),
        (STATUS_TOPIC, status_payload(rtc="\u0000"), "rtc"),
        (STATUS_TOPIC, status_payload(health={"k": "\u0000"}), "health"),
        (STATUS_TOPIC, status_payload(devices=[["a", "\u0000", "", ""]]), "devices"),
    ],
)
def test_no_events_or_status_string_holds_nul(topic: str, payload: bytes, where: str) -> None:
    kind, said = refusal(topic, payload)
    assert kind == "invalid" and where in said


@pytest.mark.parametrize("where", ["fields", "ifs", "bgp"])
def test_an_empty_field_name_is_invalid_on_both_paths(where: str) -> None:
    body = body_of(metrics())
    sample = body["samples"][0]  # type: ignore[index]
    if where == "fields":
        sample["fields"][""] = 1
    elif where == "ifs":
        sample["ifs"][0][4][""] = 1
    else:
        sample["bgp"][0][1][""] = 1
    payload = json.dumps(body).encode()
    assert fast(payload) == general(payload) == "invalid"
    assert refusal(STATUS_TOPIC, status_payload(health={"": 1}))[0] == "invalid"


def test_any_exception_decoding_raises_is_a_wire_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> object:
        raise MemoryError("no room")

    monkeypatch.setattr(wire, "decode_checked", broken)
    kind, said = refusal(STATUS_TOPIC, status_payload())
    assert kind == "malformed" and "MemoryError" in said
