"""The recent-values window: what a device page shows is what the window before it showed
(a ring of arrays per interface, filled on every poll), now that a poll costs a few
array slots and the chart is made only when a page asks."""

from __future__ import annotations

import json
import random
from array import array
from typing import Any

from collector.metrics_in import of, read
from collector.recent import DEVICE_SERIES, RecentValues
from enoc.wire import (
    BgpSample,
    DeviceSample,
    InterfaceSample,
    MetricsMessage,
    Row,
    Value,
    encode,
)

T0 = 1_790_000_000.0


class ReferenceWindow:
    """The window as it was: per device and per interface a ring of float32 arrays,
    each series created when its first number arrives."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}

    @staticmethod
    def ring() -> dict[str, Any]:
        return {"times": array("d"), "series": {}, "head": 0}

    def ring_add(self, ring: dict[str, Any], ts: float, values: dict[str, float]) -> None:
        times, series = ring["times"], ring["series"]
        if len(times) < self.slots:
            times.append(ts)
            for name, arr in series.items():
                arr.append(values.get(name, float("nan")))
            for name, value in values.items():
                if name not in series:
                    series[name] = array("f", [float("nan")] * (len(times) - 1) + [value])
            return
        i = ring["head"]
        times[i] = ts
        for name, arr in series.items():
            arr[i] = values.get(name, float("nan"))
        ring["head"] = (i + 1) % self.slots

    @staticmethod
    def points(ring: dict[str, Any]) -> dict[str, Any]:
        times, head = ring["times"], ring["head"]
        order = list(range(head, len(times))) + list(range(head))
        return {
            "t": [times[i] for i in order],
            **{
                name: [None if arr[i] != arr[i] else round(arr[i], 3) for i in order]
                for name, arr in ring["series"].items()
            },
        }

    def add(self, message: MetricsMessage) -> None:
        for sample in message.samples:
            key = (message.site, sample.device)
            entry = self.devices.get(key)
            if entry is None:
                entry = self.devices[key] = {
                    "message": message,
                    "latest": sample,
                    "ring": self.ring(),
                    "interfaces": {},
                }
            elif sample.ts < entry["latest"].ts:
                continue
            entry["latest"] = sample
            self.ring_add(entry["ring"], sample.ts, numbers(sample.fields, DEVICE_SERIES))
            for i in sample.interfaces:
                ring = entry["interfaces"].setdefault(i.if_index, self.ring())
                self.ring_add(ring, sample.ts, numbers(i.fields, ("in_bps", "out_bps")))

    def device(self, site: str, name: str) -> dict[str, Any] | None:
        entry = self.devices.get((site, name))
        if entry is None:
            return None
        latest, message = entry["latest"], entry["message"]
        return {
            "source": "local",
            "site": message.site,
            "rtc": message.rtc,
            "agent": message.agent,
            "device": latest.device,
            "address": latest.address,
            "ts": latest.ts,
            "fields": latest.fields,
            "history": self.points(entry["ring"]),
            "interfaces": [
                {
                    "ifIndex": i.if_index,
                    "ifName": i.name,
                    "ifDescr": i.descr,
                    "ifAlias": i.alias,
                    "fields": i.fields,
                    "history": self.points(entry["interfaces"][i.if_index]),
                }
                for i in latest.interfaces
            ],
            "bgp": [{"peer": b.peer, "fields": b.fields} for b in latest.bgp],
            # the latest poll's rows by measurement, then tags
            "rows": [
                {"measurement": r.measurement, "tags": r.tags, "fields": r.fields}
                for r in sorted(latest.rows, key=lambda r: (r.measurement, sorted(r.tags.items())))
            ],
        }


def numbers(fields: dict[str, Value], names: tuple[str, ...]) -> dict[str, float]:
    return {n: float(v) for n in names if isinstance(v := fields.get(n), int | float)}


def poll(rng: random.Random, device: str, ts: float, interfaces: int) -> DeviceSample:
    def maybe(value: Value) -> dict[str, Value]:
        roll = rng.random()
        if roll < 0.05:
            return {}  # missing this poll
        if roll < 0.08:
            return {"x": "n/a"}  # not a number
        return {"x": value}

    fields: dict[str, Value] = {"sysUpTime": int(ts), "reachable": 1}
    for name in DEVICE_SERIES:
        if (v := maybe(rng.choice([rng.random() * 100, rng.randrange(100)]))) and name != "memory":
            fields[name] = v["x"]
    ifs = []
    for n in range(1, interfaces + 1):
        f: dict[str, Value] = {"ifHCInOctets": rng.randrange(2**40), "ifOperStatus": 1}
        for name in ("in_bps", "out_bps"):
            if v := maybe(rng.choice([rng.random() * 1e9, rng.randrange(10**6), 0.1])):
                f[name] = v["x"]
        ifs.append(InterfaceSample(n, f"ge-0/0/{n}", f"Gig {n}", f"to {n}", f))
    return DeviceSample(
        device,
        "127.0.0.9",
        ts,
        fields,
        ifs,
        [BgpSample("127.200.0.1", {"state": 6, "prefixes": rng.randrange(1000)})],
        rng.sample(
            [
                Row(m, {"sensor": f"s{k}"}, {"value": rng.random(), "status": "ok"})
                for m in ("sensor", "ups")
                for k in range(3)
            ],
            rng.randrange(7),
        ),
    )


def message(*samples: DeviceSample, seq: int = 1) -> MetricsMessage:
    return MetricsMessage("nyc-1", "nyc", "americas", seq, samples[0].ts, samples=list(samples))


def as_json(page: dict[str, Any] | None) -> str:
    return json.dumps(page, sort_keys=True)


def test_pages_match_the_window_before_over_random_polls() -> None:
    rng = random.Random(5)
    for slots, polls in ((5, 3), (5, 12), (60, 75)):
        window, reference = RecentValues(slots=slots), ReferenceWindow(slots)
        for n in range(polls):
            samples = [poll(rng, f"sw-{d}", T0 + 60 * n + d, interfaces=6) for d in range(3)]
            if n == 1:  # a rate needs two polls: the first has none
                for s in samples:
                    for i in s.interfaces:
                        i.fields.pop("in_bps", None)
                        i.fields.pop("out_bps", None)
            m = message(*samples, seq=n + 1)
            # half the polls as the collector gets them (from the payload: in C where the
            # extension is built), half built in memory
            window.add(read("nyc", "nyc-1", encode(m)) if n % 2 else of(m))
            reference.add(m)
            for d in range(3):
                assert as_json(window.device("nyc", f"sw-{d}")) == as_json(
                    reference.device("nyc", f"sw-{d}")
                ), (slots, n, d)
    assert window.device("nyc", "nothing") is None
    assert window.device("gva", "sw-0") is None


def test_the_latest_poll_is_kept_as_its_payload() -> None:
    rng = random.Random(6)
    window = RecentValues()
    first = poll(rng, "sw-1", T0, 4)
    second = poll(rng, "sw-1", T0 + 60, 4)
    window.add(of(message(first)))
    payload = encode(message(second, seq=2))
    window.add(read("nyc", "nyc-1", payload))
    entry = window.devices["nyc", "sw-1"]
    assert isinstance(entry.latest, tuple) and entry.latest[0] is payload
    page = window.device("nyc", "sw-1")
    assert page is not None
    assert page["ts"] == second.ts and page["fields"] == second.fields
    assert [i["fields"] for i in page["interfaces"]] == [i.fields for i in second.interfaces]
    assert page["bgp"] == [{"peer": "127.200.0.1", "fields": second.bgp[0].fields}]
    assert page["history"]["t"] == [T0, T0 + 60]


def test_an_older_poll_replayed_changes_nothing() -> None:
    rng = random.Random(7)
    window = RecentValues()
    window.add(of(message(poll(rng, "sw-1", T0 + 60, 2))))
    before = as_json(window.device("nyc", "sw-1"))
    window.add(of(message(poll(rng, "sw-1", T0, 2))))
    assert as_json(window.device("nyc", "sw-1")) == before


def test_an_interface_charts_the_polls_that_have_it() -> None:
    window = RecentValues(slots=4)

    def sample(ts: float, interfaces: list[int]) -> DeviceSample:
        ifs = [InterfaceSample(n, f"e{n}", fields={"in_bps": ts - T0 + n}) for n in interfaces]
        return DeviceSample("sw-1", "127.0.0.9", ts, {"cpu": 5}, ifs)

    for n, present in enumerate([[1, 2], [2, 1], [1], [3, 1], [1, 3]]):
        window.add(of(message(sample(T0 + n, present))))
    page = window.device("nyc", "sw-1")
    assert page is not None
    assert page["history"] == {"t": [T0 + 1, T0 + 2, T0 + 3, T0 + 4], "cpu": [5.0] * 4}
    one, three = page["interfaces"]
    assert one["ifIndex"] == 1 and one["history"] == {
        "t": [T0 + 1, T0 + 2, T0 + 3, T0 + 4],
        "in_bps": [2.0, 3.0, 4.0, 5.0],
    }
    assert three["ifIndex"] == 3 and three["history"] == {
        "t": [T0 + 3, T0 + 4],
        "in_bps": [6.0, 7.0],
    }


def test_values_that_are_not_charted_numbers_are_null() -> None:
    window = RecentValues()
    ifs = [
        InterfaceSample(1, "e1", fields={"in_bps": 10**400, "out_bps": "n/a"}),
        InterfaceSample(2, "e2", fields={"in_bps": 1e39, "out_bps": 2**64 - 1}),
    ]
    window.add(of(message(DeviceSample("sw-1", "127.0.0.9", T0, {"cpu": 10**400}, ifs))))
    page = window.device("nyc", "sw-1")
    assert page is not None
    assert page["history"] == {"t": [T0]}
    first, second = (i["history"] for i in page["interfaces"])
    assert first == {"t": [T0]}
    assert second == {"t": [T0], "out_bps": [float(array("f", [2**64 - 1])[0])]}
    json.dumps(page, allow_nan=False)  # what the API answers is JSON


def test_devices_beyond_the_limit_are_not_kept() -> None:
    rng = random.Random(8)
    window = RecentValues(max_devices=2)
    window.add(of(message(*(poll(rng, f"sw-{d}", T0 + d, 1) for d in range(3)))))
    assert window.device("nyc", "sw-1") is not None
    assert window.device("nyc", "sw-2") is None
