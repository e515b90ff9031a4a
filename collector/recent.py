"""The collector's recent-values window: the last hour of each device, for the console.

Per device it keeps the latest sample whole, and a ring of the last `slots`
polls: device fields (CPU, memory, response time) and each interface's
in/out bits per second in compact float arrays (an interface costs about
half a kilobyte an hour at one poll a minute).

With replicas on a shared subscription each one receives only its share of
every device's polls, so its window has gaps (and spans longer than an hour).
`recent.source: influxdb` makes the device page read the last hour from
InfluxDB instead (`InfluxRecent`), where every replica writes; this window is
then only the fallback when InfluxDB cannot answer. The answer says which it
is (`source`: local or influxdb).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from collector.config import InfluxConfig, RecentConfig
from enoc.logs import StateLogger, get_logger
from enoc.wire import DeviceSample, MetricsMessage, Value

log = get_logger("enoc.collector.recent")

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
            "source": "local",
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


# ------------------------------------------------------------------ from InfluxDB

TAGS = frozenset(
    {"agent_host", "device", "rtc", "site", "ifIndex", "ifName", "ifDescr", "ifAlias", "peer"}
)


def _literal(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class _Series:
    tags: dict[str, str]
    columns: list[str]
    rows: list[list[Any]]

    def last(self) -> dict[str, Any]:
        return dict(zip(self.columns, self.rows[-1], strict=True))

    def fields(self) -> dict[str, Value]:
        return {
            k: v
            for k, v in self.last().items()
            if k != "time" and k not in TAGS and v is not None and not isinstance(v, list | dict)
        }

    def history(self, names: tuple[str, ...]) -> dict[str, Any]:
        index = {c: i for i, c in enumerate(self.columns)}
        out: dict[str, Any] = {"t": [r[0] / 1000 for r in self.rows]}
        for name in names:
            if name in index:
                i = index[name]
                out[name] = [
                    round(float(r[i]), 3) if isinstance(r[i], int | float) else None
                    for r in self.rows
                ]
        return out


class InfluxRecent:
    """The device page's last hour from InfluxDB (InfluxQL), where every replica writes.

    One request of three statements per device page: the device's own points,
    its interfaces' grouped by ifIndex and its BGP peers', over the last hour.
    The answer has the shape of `RecentValues.device` (source "influxdb");
    None when InfluxDB has nothing for the device or cannot answer (the caller
    falls back to this process's window).
    """

    def __init__(self, influx: InfluxConfig, recent: RecentConfig, window: float = 3600) -> None:
        self.url = influx.url.rstrip("/") + "/query"
        self.database = recent.database or influx.database or influx.bucket
        self.retention_policy = influx.retention_policy if influx.api == "v1" else ""
        self.window = window
        self.timeout = aiohttp.ClientTimeout(total=float(recent.timeout))
        self.headers: dict[str, str] = {}
        self.auth: aiohttp.BasicAuth | None = None
        if influx.api == "v2" and influx.token is not None:
            self.headers["Authorization"] = f"Token {influx.token.reveal()}"
        elif influx.username:
            password = influx.password.reveal() if influx.password is not None else ""
            self.auth = aiohttp.BasicAuth(influx.username, password)
        self.queries = 0
        self.failures = 0
        self._session: aiohttp.ClientSession | None = None
        self._failing = StateLogger(log)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def device(self, site: str, device: str) -> dict[str, Any] | None:
        where = (
            f'"site" = {_literal(site)} AND "device" = {_literal(device)} '
            f"AND time > now() - {int(self.window)}s"
        )
        # InfluxQL, not SQL: the only inputs are the two literals, quoted and escaped
        query = ";".join(
            [
                f'SELECT * FROM "device" WHERE {where}',  # noqa: S608
                f'SELECT * FROM "interface" WHERE {where} GROUP BY "ifIndex"',  # noqa: S608
                f'SELECT * FROM "bgp_peer" WHERE {where} GROUP BY "peer"',  # noqa: S608
            ]
        )
        form = {"q": query, "db": self.database, "epoch": "ms"}
        if self.retention_policy:
            form["rp"] = self.retention_policy
        self.queries += 1
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with self._session.post(
                self.url, data=form, headers=self.headers, auth=self.auth, timeout=self.timeout
            ) as response:
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:200]
                    raise RuntimeError(f"HTTP {response.status} from {self.url}: {text}")
                body = await response.json(content_type=None)
            results = [_series(r) for r in body["results"]]
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, KeyError) as exc:
            self.failures += 1
            self._failing.failed("recent values from InfluxDB", exc, url=self.url)
            return None
        self._failing.ok("recent values from InfluxDB", url=self.url)
        return _recent(results)


def _series(result: dict[str, Any]) -> list[_Series]:
    if "error" in result:
        raise RuntimeError(f"InfluxQL: {result['error']}")
    return [
        _Series(s.get("tags") or {}, s["columns"], s["values"])
        for s in result.get("series", [])
        if s.get("values")
    ]


def _recent(results: list[list[_Series]]) -> dict[str, Any] | None:
    devices, interfaces, peers = [*results, [], [], []][:3]
    if not devices and not interfaces:
        return None
    # what the latest poll had (an interface removed since then is not shown)
    latest = max(s.rows[-1][0] for s in devices + interfaces)
    head = devices[0].last() if devices else interfaces[0].last()
    current = [s for s in interfaces if s.rows[-1][0] == latest]
    current.sort(key=lambda s: int(s.tags.get("ifIndex", "0") or 0))
    return {
        "source": "influxdb",
        "site": head.get("site", ""),
        "rtc": head.get("rtc") or "",
        "agent": "",
        "device": head.get("device", ""),
        "address": head.get("agent_host") or "",
        "ts": latest / 1000,
        "fields": devices[0].fields() if devices else {},
        "history": devices[0].history(DEVICE_SERIES) if devices else {},
        "interfaces": [
            {
                "ifIndex": int(s.tags.get("ifIndex", "0") or 0),
                "ifName": s.last().get("ifName") or "",
                "ifDescr": s.last().get("ifDescr") or "",
                "ifAlias": s.last().get("ifAlias") or "",
                "fields": s.fields(),
                "history": s.history(("in_bps", "out_bps")),
            }
            for s in current
        ],
        "bgp": [
            {"peer": s.tags.get("peer", ""), "fields": s.fields()}
            for s in peers
            if s.rows[-1][0] == latest
        ],
    }
