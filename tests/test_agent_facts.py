"""Raw answers into samples: 32-bit wraps, resets, discontinuities and impossible rates."""

from __future__ import annotations

import pytest

from agent.config import (
    CpuThreshold,
    ErrorsThreshold,
    MemoryThreshold,
    ThresholdsConfig,
    UtilizationThreshold,
)
from agent.edge import EdgeDetector, EdgeSettings
from agent.facts import DeviceTracker, text
from agent.poller import RawPoll
from enoc.inventory import InventoryDevice
from enoc.snmp import ber

C32, C64, G32, INT = ber.COUNTER32, ber.COUNTER64, ber.GAUGE32, ber.INTEGER


def raw(
    at: float,
    uptime: int,
    in32: int,
    *,
    hc: int | None = None,
    marker: int = 0,
    errors: int = 0,
    out32: int = 0,
) -> RawPoll:
    tables: dict[str, dict[ber.Oid, tuple[int, object]]] = {
        "ifOperStatus": {(1,): (INT, 1)},
        "ifAdminStatus": {(1,): (INT, 1)},
        "ifName": {(1,): (ber.OCTET_STRING, b"Gi0/1")},
        "ifSpeed": {(1,): (G32, 100_000_000)},
        "ifHighSpeed": {(1,): (G32, 100)},
        "ifInOctets": {(1,): (C32, in32)},
        "ifOutOctets": {(1,): (C32, out32)},
        "ifInErrors": {(1,): (C32, errors)},
        "ifCounterDiscontinuityTime": {(1,): (ber.TIMETICKS, marker)},
    }
    if hc is not None:
        tables["ifHCInOctets"] = {(1,): (C64, hc)}
    return RawPoll(at=at, response_ms=1.0, scalars={"sysUpTime": uptime}, tables=tables)


def tracker(thresholds: ThresholdsConfig | None = None) -> DeviceTracker:
    device = InventoryDevice(name="r1", address="127.0.0.9", credentials="c")
    settings = EdgeSettings(thresholds=(thresholds or ThresholdsConfig()).rules())
    ids = iter(map(str, range(99)))
    return DeviceTracker(device, EdgeDetector("a1", settings, new_id=ids.__next__))


def in_bps(t: DeviceTracker, poll: RawPoll) -> object:
    sample, _events = t.observe(poll)
    return sample.interfaces[0].fields.get("in_bps")


def test_32_bit_counter_wrap_gives_the_true_rate() -> None:
    t = tracker()
    assert in_bps(t, raw(1000.0, 100_000, 2**32 - 1_000_000)) is None  # first reading
    # 6,000,000 octets in 60 s across the wrap: 800 kbit/s
    assert in_bps(t, raw(1060.0, 106_000, 5_000_000)) == 800_000.0


def test_hc_counters_are_preferred_when_present() -> None:
    t = tracker()
    in_bps(t, raw(1000.0, 100_000, 0, hc=10**12))
    sample, _ = t.observe(raw(1010.0, 101_000, 123, hc=10**12 + 1_250_000))
    fields = sample.interfaces[0].fields
    assert fields["in_bps"] == 1_000_000.0 and fields["in_utilization"] == 1.0
    assert "ifHCInOctets" in fields and "ifInOctets" not in fields


def test_reboot_and_discontinuity_give_no_rate_and_no_spike() -> None:
    t = tracker()
    in_bps(t, raw(1000.0, 500_000, 9_000_000))
    sample, events = t.observe(raw(1060.0, 3_000, 100))  # sysUpTime went back: rebooted
    assert "in_bps" not in sample.interfaces[0].fields
    assert [e.kind for e in events] == ["reboot"]
    assert in_bps(t, raw(1120.0, 9_000, 60_100)) == 8_000.0
    # The interface was reset (ifCounterDiscontinuityTime moved): no rate for that poll.
    assert in_bps(t, raw(1180.0, 15_000, 10, marker=14_000)) is None
    assert in_bps(t, raw(1240.0, 21_000, 60_010, marker=14_000)) == 8_000.0


def test_a_rate_above_the_interface_speed_is_refused() -> None:
    t = tracker()
    in_bps(t, raw(1000.0, 100_000, 0))
    # 1 GB in 10 s on a 100 Mbit/s port: a counter glitch, not traffic
    assert in_bps(t, raw(1010.0, 101_000, 1_000_000_000)) is None
    assert t.rates.refused["above_speed"] == 1


def test_device_strings_become_one_printable_line() -> None:
    assert text(b"uplink to\r\nnbo-pe-1 \xff") == "uplink to nbo-pe-1 \ufffd"
    assert text(None) == ""


def test_counter32_error_counters_wrap_like_octets() -> None:
    """ifInErrors is a Counter32: past 2^32 it wraps, it was not reset (it used to be read as
    64 bits, and every wrap of it was refused as a reset)."""
    t = tracker()
    t.observe(raw(1000.0, 100_000, 0, errors=2**32 - 100))
    sample, _ = t.observe(raw(1010.0, 101_000, 0, errors=500))
    assert sample.interfaces[0].fields["in_errors_per_s"] == 60.0
    assert not t.rates.refused


def memory_poll(at: float, used_percent: float) -> RawPoll:
    ram = (1, 3, 6, 1, 2, 1, 25, 2, 1, 2)
    tables: dict[str, dict[ber.Oid, tuple[int, object]]] = {
        "hrStorageType": {(1,): (ber.OBJECT_IDENTIFIER, ram)},
        "hrStorageSize": {(1,): (INT, 1000)},
        "hrStorageUsed": {(1,): (INT, round(used_percent * 10))},
    }
    return RawPoll(at=at, response_ms=1.0, scalars={"sysUpTime": int(at * 100)}, tables=tables)


def states(t: DeviceTracker, polls: list[RawPoll]) -> list[tuple[float, str, str]]:
    """(timestamp, resource, state) of every threshold event the polls raise."""
    return [
        (e.ts, e.resource, e.state)
        for poll in polls
        for e in t.observe(poll)[1]
        if e.kind == "threshold"
    ]


def test_memory_threshold_levels_and_sustain_come_from_the_config() -> None:
    config = ThresholdsConfig(memory=MemoryThreshold(enter=70, leave=60, polls=2))
    used = [65, 72, 50, 71, 75, 65, 62, 55, 58]  # % of RAM, one poll a minute
    polls = [memory_poll(1000.0 + 60 * i, u) for i, u in enumerate(used)]
    assert states(tracker(config), polls) == [
        (1180.0, "memory", "high"),  # 71, 75: two polls at or above 70, stamped at the first
        (1420.0, "memory", "ok"),  # 65 and 62 are above 60: still high; 55, 58 leave
    ]
    # the same polls with the default levels (95 / 90) raise nothing
    assert states(tracker(), polls) == []


def test_utilization_and_error_thresholds_come_from_the_config() -> None:
    config = ThresholdsConfig(
        utilization=UtilizationThreshold(enter=50, leave=40, polls=1),
        errors=ErrorsThreshold(enter=2, leave=0.5, polls=2),
    )
    t = tracker(config)
    # 100 Mbit/s port, 10 s polls: 62.5 MB in 10 s is 50 %
    octets = [0, 62_500_000, 112_500_000, 175_000_000, 200_000_000]  # 50, 40, 50, 20 %
    errors = [0, 30, 60, 65, 70]  # 3, 3, 0.5, 0.5 per second
    polls = [
        raw(1000.0 + 10 * i, 100_000 + 1000 * i, o, errors=e, out32=0)
        for i, (o, e) in enumerate(zip(octets, errors, strict=True))
    ]
    assert states(t, polls) == [
        (1010.0, "if:1:in_utilization", "high"),
        (1010.0, "if:1:in_errors_per_s", "high"),  # two polls at 3/s, stamped at the first
        (1040.0, "if:1:in_utilization", "ok"),  # 40 % is not below 40: it waits for 20 %
        # 0.5/s is not below 0.5 either: errors stay high
    ]
    assert states(tracker(), polls) == [], "none of it crosses the default levels"


@pytest.mark.parametrize(
    ("kind", "values", "message"),
    [
        (CpuThreshold, {"enter": 80, "leave": 85}, "expected leave at or below enter (80), got 85"),
        (MemoryThreshold, {"enter": 120}, "expected enter between 0 and 100"),
        (ErrorsThreshold, {"enter": -1, "leave": -2}, "expected enter at least 0, got -1"),
        (UtilizationThreshold, {"polls": 0}, "expected polls of at least 1, got 0"),
    ],
)
def test_threshold_levels_are_validated(
    kind: type[CpuThreshold], values: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kind(**values)  # type: ignore[arg-type]
