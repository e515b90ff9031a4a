"""The wire contract: every message kind round-trips; every breach is named by kind."""

from __future__ import annotations

import json

import pytest

from enoc import wire

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
