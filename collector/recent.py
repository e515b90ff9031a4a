"""The collector's recent-values window: the last hour of each device, for the console.

Per device it keeps the latest sample whole, and a ring of the last `slots`
polls: device fields (CPU, memory, response time) and each interface's
in/out bits per second in compact float arrays (an interface costs about
half a kilobyte an hour at one poll a minute). With shared subscriptions a
replica sees only the devices whose messages it received; the console reads
InfluxDB when one is configured.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from enoc.wire import DeviceSample, MetricsMessage, Value

DEVICE_SERIES = ("cpu", "memory", "response_ms")


@dataclass
class _Ring:
    slots: int
    times: array[float] = field(default_factory=lambda: array("d"))
    series: dict[str, array[float]] = field(default_factory=dict)
    head: int = 0  # next slot to write, once full

    def add(self, ts: float, values: dict[str, float]) -> None:
        if len(self.times) < self.slots:
            self.times.append(ts)
            for name, arr in self.series.items():
                arr.append(values.get(name, float("nan")))
            for name, value in values.items():
                if name not in self.series:
                    arr = array("f", [float("nan")] * (len(self.times) - 1))
                    arr.append(value)
                    self.series[name] = arr
            return
        i = self.head
        self.times[i] = ts
        for name, arr in self.series.items():
            arr[i] = values.get(name, float("nan"))
        self.head = (i + 1) % self.slots

    def points(self) -> dict[str, Any]:
        order = list(range(self.head, len(self.times))) + list(range(self.head))
        return {
            "t": [self.times[i] for i in order],
            **{
                name: [None if arr[i] != arr[i] else round(arr[i], 3) for i in order]
                for name, arr in self.series.items()
            },
        }


@dataclass
class _Device:
    site: str
    rtc: str
    agent: str
    latest: DeviceSample
    ring: _Ring
    interfaces: dict[int, _Ring] = field(default_factory=dict)


class RecentValues:
    def __init__(self, slots: int = 60, max_devices: int = 20_000) -> None:
        self.slots = slots
        self.max_devices = max_devices
        self.devices: dict[tuple[str, str], _Device] = {}

    def add(self, message: MetricsMessage) -> None:
        for sample in message.samples:
            key = (message.site, sample.device)
            entry = self.devices.get(key)
            if entry is None:
                if len(self.devices) >= self.max_devices:
                    continue
                entry = self.devices[key] = _Device(
                    message.site, message.rtc, message.agent, sample, _Ring(self.slots)
                )
            elif sample.ts < entry.latest.ts:
                continue  # a replayed older poll: the window shows the present
            entry.latest = sample
            entry.ring.add(sample.ts, _numbers(sample.fields, DEVICE_SERIES))
            for i in sample.interfaces:
                ring = entry.interfaces.get(i.if_index)
                if ring is None:
                    ring = entry.interfaces[i.if_index] = _Ring(self.slots)
                ring.add(sample.ts, _numbers(i.fields, ("in_bps", "out_bps")))

    def device(self, site: str, device: str) -> dict[str, Any] | None:
        entry = self.devices.get((site, device))
        if entry is None:
            return None
        latest = entry.latest
        return {
            "site": entry.site,
            "rtc": entry.rtc,
            "agent": entry.agent,
            "device": latest.device,
            "address": latest.address,
            "ts": latest.ts,
            "fields": latest.fields,
            "history": entry.ring.points(),
            "interfaces": [
                {
                    "ifIndex": i.if_index,
                    "ifName": i.name,
                    "ifDescr": i.descr,
                    "ifAlias": i.alias,
                    "fields": i.fields,
                    "history": entry.interfaces[i.if_index].points()
                    if i.if_index in entry.interfaces
                    else {},
                }
                for i in latest.interfaces
            ],
            "bgp": [{"peer": b.peer, "fields": b.fields} for b in latest.bgp],
        }


def _numbers(fields: dict[str, Value], names: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for name in names:
        value = fields.get(name)
        if isinstance(value, int | float):
            out[name] = float(value)
    return out
