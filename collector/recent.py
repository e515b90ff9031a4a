"""The collector's recent-values window: the last hour of each device, for the console.

Every metrics message passes through here, so `add` does as little as it can:
per device poll it keeps the poll's time, three device values (CPU, memory,
response time) and each interface's in/out bits per second as 32-bit floats in
one bytes object (`collector.metrics_in` picks them out of the message, in C
where collector._metricsjson is built), in a ring of the last `slots` polls,
and a reference to the latest poll. A chart is computed only when a device
page asks for it.

The latest poll is kept as the payload it came in and decoded again for a page:
one bytes object per device rather than its poll's hundreds of objects, which
the garbage collector would walk and which, freed a poll later from cold
memory, cost more than the rest of the window. A message built in memory
(tests, tools) keeps its sample itself.

An interface's chart covers the device polls in the ring that have it. Values
are kept as 32-bit floats and shown rounded to 3 decimals; a missing or
non-numeric value is null, and a series with no value in the window is left
out (a rate needs two polls: a device's first poll has none).

With replicas on a shared subscription each one receives only its share of
every device's polls, so its window has gaps (and spans longer than an hour).
`recent.source: influxdb` makes the device page read the last hour from
InfluxDB instead (`InfluxRecent`), where every replica writes; this window is
then only the fallback when InfluxDB cannot answer. The answer says which it
is (`source`: local or influxdb).
"""

from __future__ import annotations

import math
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from collector.config import RecentConfig
from collector.config_sinks import InfluxConfig
from collector.lineproto import Poll, sanitise_tag_value
from collector.metrics_in import Metrics, number
from collector.sinks.influx import ssl_context
from enoc.logs import StateLogger, get_logger
from enoc.wire import DEVICE_TAGS, ROWS, DeviceSample, MetricsMessage, Row, Value, decode, topic

log = get_logger("enoc.collector.recent")

DEVICE_SERIES = ("cpu", "memory", "response_ms")
INTERFACE_SERIES = ("in_bps", "out_bps")


class _Device:
    __slots__ = ("agent", "index", "latest", "polls", "rtc", "site", "ts")

    def __init__(self, site: str, rtc: str, agent: str, slots: int) -> None:
        self.site = site
        self.rtc = rtc
        self.agent = agent
        self.ts = -math.inf  # the latest poll's time
        # the latest poll: (payload, its topic, the sample's place in it), or the sample
        self.latest: tuple[bytes, str, int] | DeviceSample | None = None
        self.index: tuple[int, ...] = ()
        # the ring (collector.lineproto.Poll): each poll's time, the device's raw CPU, memory
        # and response time, the ifIndex order (one tuple shared by the polls that have the
        # same) and the interfaces' in/out values in that order, interleaved, as 32-bit floats
        self.polls: deque[Poll] = deque(maxlen=slots)


class RecentValues:
    def __init__(self, slots: int = 60, max_devices: int = 20_000) -> None:
        self.slots = slots
        self.max_devices = max_devices
        self.devices: dict[tuple[str, str], _Device] = {}

    def add(self, metrics: Metrics) -> None:
        site, agent, rtc, latest = metrics.site, metrics.agent, metrics.rtc, metrics.latest
        devices = self.devices
        for n, (device, poll) in enumerate(metrics.polls):
            if poll is None:
                continue  # a ping round's rows: the device page shows its polls
            key = (site, device)
            entry = devices.get(key)
            if entry is None:
                if len(devices) >= self.max_devices:
                    continue
                entry = devices[key] = _Device(site, rtc, agent, self.slots)
            ts = poll[0]
            if ts < entry.ts:
                continue  # a replayed older poll: the window shows the present
            entry.ts = ts
            entry.agent = agent
            entry.rtc = rtc
            entry.latest = (latest, agent, n) if isinstance(latest, bytes) else latest[n]
            index = poll[4]
            if index is entry.index:
                entry.polls.append(poll)
            elif index == entry.index:  # one tuple for every poll of the same interfaces
                entry.polls.append((*poll[:4], entry.index, poll[5]))
            else:
                entry.index = index
                entry.polls.append(poll)

    def forget(self, keep: Callable[[str], bool]) -> int:
        """Drop the window of every device whose site `keep` refuses (a site another
        replica owns now: collector/partition.py); how many were dropped."""
        gone = [key for key in self.devices if not keep(key[0])]
        for key in gone:
            del self.devices[key]
        return len(gone)

    def device(self, site: str, device: str) -> dict[str, Any] | None:
        entry = self.devices.get((site, device))
        if entry is None:
            return None
        latest = _latest(entry, site)
        if latest is None:
            return None
        polls = list(entry.polls)
        times = [p[0] for p in polls]
        history: dict[str, Any] = {"t": times}
        columns = (
            [_shown(number(p[1])) for p in polls],
            [_shown(number(p[2])) for p in polls],
            [_shown(number(p[3])) for p in polls],
        )
        for name, series in zip(DEVICE_SERIES, columns, strict=True):
            if any(v is not None for v in series):
                history[name] = series
        places: dict[int, dict[int, int]] = {}  # per ifIndex tuple (by id): ifIndex -> place
        for p in polls:
            if id(p[4]) not in places:
                places[id(p[4])] = {x: n for n, x in enumerate(p[4])}
        return {
            "source": "local",
            "site": entry.site,
            "rtc": entry.rtc,
            "agent": entry.agent,
            "device": latest.device,
            "address": latest.address,
            "ts": latest.ts,
            "fields": latest.fields,
            "history": history,
            "interfaces": [
                {
                    "ifIndex": i.if_index,
                    "ifName": i.name,
                    "ifDescr": i.descr,
                    "ifAlias": i.alias,
                    "fields": i.fields,
                    "history": _interface_history(i.if_index, polls, places),
                }
                for i in latest.interfaces
            ],
            "bgp": [{"peer": b.peer, "fields": b.fields} for b in latest.bgp],
            "rows": _rows(latest.rows),
        }


def _rows(rows: list[Row]) -> list[dict[str, Any]]:
    """The latest poll's rows (sensors, a profile's tables), ordered by measurement and
    tags, as both sources give them."""
    out = [{"measurement": r.measurement, "tags": r.tags, "fields": r.fields} for r in rows]
    return sorted(out, key=lambda r: (r["measurement"], sorted(r["tags"].items())))


def _latest(entry: _Device, site: str) -> DeviceSample | None:
    latest = entry.latest
    if latest is None or isinstance(latest, DeviceSample):
        return latest
    payload, agent, n = latest
    message = decode(topic(site, agent, "metrics"), payload)
    assert isinstance(message, MetricsMessage)
    return message.samples[n]


def _interface_history(
    if_index: int, polls: list[Poll], places: dict[int, dict[int, int]]
) -> dict[str, Any]:
    times: list[float] = []
    ins: list[float | None] = []
    outs: list[float | None] = []
    for ts, _cpu, _memory, _response, index, rates in polls:
        place = places[id(index)].get(if_index)
        if place is None:
            continue  # not in that poll
        values = memoryview(rates).cast("f")
        times.append(ts)
        ins.append(_shown(values[2 * place]))
        outs.append(_shown(values[2 * place + 1]))
    history: dict[str, Any] = {"t": times}
    for name, series in zip(INTERFACE_SERIES, (ins, outs), strict=True):
        if any(v is not None for v in series):
            history[name] = series
    return history


def _shown(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


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
    name: str = ""  # the measurement

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

    One request of four statements per device page: the device's own points,
    its interfaces' grouped by ifIndex and its BGP peers', over the last hour, and
    the latest point of each series of every measurement (for the rows of the
    measurements of their own: sensors, a profile's tables).
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
        # the writer's TLS context: an https:// InfluxDB with its own CA is read as written
        self.ssl: ssl.SSLContext | bool = ssl_context(influx) or True
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
        # The tags as the writer stored them: a device's name may hold what line protocol
        # cannot carry as is (docs/collector.md, "What a device's strings become").
        device = sanitise_tag_value(device) or ""
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
                f"SELECT * FROM /.*/ WHERE {where} GROUP BY * ORDER BY time DESC LIMIT 1",  # noqa: S608
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
                self.url,
                data=form,
                headers=self.headers,
                auth=self.auth,
                timeout=self.timeout,
                ssl=self.ssl,
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
        _Series(s.get("tags") or {}, s["columns"], s["values"], s.get("name", ""))
        for s in result.get("series", [])
        if s.get("values")
    ]


def _recent(results: list[list[_Series]]) -> dict[str, Any] | None:
    devices, interfaces, peers, every = [*results, [], [], [], []][:4]
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
        "rows": _rows(
            [
                Row(
                    s.name,
                    {k: v for k, v in s.tags.items() if v and k not in DEVICE_TAGS},
                    s.fields(),
                )
                for s in every
                if s.name not in ROWS.reserved and s.rows[-1][0] == latest
            ]
        ),
    }
