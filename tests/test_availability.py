"""Availability from the incident store's history, the history made by the real engine on a
real SQLite store with an injected clock: every expected figure is computed by hand here.

December 2026 has 31 days: 2 678 400 s. 36 minutes (2 160 s) down is
(2 678 400 - 2 160) / 2 678 400 = 99.919 %.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from collectorkit import TOKENS, Clock, collector_config, running_collector
from test_collector_engine import store_url

from collector import availability
from collector.api_input import ApiError
from collector.api_tables import table_response
from collector.availability import Figures, figures, merged, minus
from collector.config import IncidentsConfig
from collector.incidents import Engine, MaintenanceWindow
from collector.store import Store
from enoc.config import Duration
from enoc.wire import DeviceInfo, Event, EventsMessage, StatusMessage
from testbed.servers import Mosquitto

DEC = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
JAN = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
MONTH = JAN - DEC  # 31 days
H, M = 3600.0, 60.0
_ids = itertools.count(1)
__all__ = ["store_url"]  # a fixture, used by name

# site -> (rtc, agent, devices)
FLEET = {
    "nyc": ("amer", "nyc-1", ("nyc-r1", "nyc-r2")),
    "bos": ("amer", "bos-1", ("bos-r1",)),
    "lon": ("emea", "lon-1", ("lon-r1",)),
}


def day(d: int, hours: float = 0.0) -> float:
    """December `d`, `hours` past midnight UTC."""
    return DEC + (d - 1) * 86400 + hours * H


def pct(up: float, known: float) -> float:
    return round(up / known * 100, 3)


class Site:
    """One site's agent talking to the engine, as its MQTT messages would."""

    def __init__(self, engine: Engine, clock: Clock, site: str) -> None:
        self.engine, self.clock, self.site = engine, clock, site
        self.rtc, self.agent, self.devices = FLEET[site]
        self.seq = 0

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    async def status(self, state: str, at: float) -> None:
        self.clock.t = at
        await self.engine.on_status(
            StatusMessage(
                self.agent,
                self.site,
                self.rtc,
                self._seq(),
                at,
                state=state,  # type: ignore[arg-type]
                devices=[DeviceInfo(d) for d in self.devices] if state == "online" else [],
            )
        )

    async def events(self, *reach: tuple[str, str, float], received: float = 0.0) -> None:
        """(device, up|down, at) events, sent when they happen unless `received` says later."""
        self.clock.t = received or max(at for _, _, at in reach)
        await self.engine.on_events(
            EventsMessage(
                self.agent,
                self.site,
                self.rtc,
                self._seq(),
                min(at for _, _, at in reach),
                events=[
                    Event(
                        id=f"e{next(_ids)}",
                        ts=at,
                        device=device,
                        resource="device",
                        kind="reachability",
                        state=state,
                        severity="critical",
                        message=f"{device} {state}",
                    )
                    for device, state, at in reach
                ],
            )
        )

    async def down(self, device: str, since: float, until: float) -> None:
        await self.events((device, "down", since))
        await self.events((device, "up", until))


async def make_engine(url: str) -> tuple[Engine, Clock, Store]:
    store = Store(url)
    await store.open()
    clock = Clock(DEC)
    # a will opens its incident at once here (its grace: test_will_grace.py)
    config = IncidentsConfig(
        agent_timeout=Duration(90), reopen_within=Duration(300), will_grace=Duration(0)
    )
    return Engine(store, config, now=clock), clock, store


@pytest.fixture
async def fleet(store_url: str) -> AsyncIterator[tuple[Engine, Clock, dict[str, Site]]]:
    """The three sites on SQLite and on PostgreSQL (`store_url`): one code path."""
    engine, clock, store = await make_engine(store_url)
    sites = {name: Site(engine, clock, name) for name in FLEET}
    for s in sites.values():
        await s.status("online", DEC - 86400)
    yield engine, clock, sites
    await store.close()


async def report(engine: Engine, by: str, lo: float = DEC, hi: float = JAN) -> dict[Any, Any]:
    rows = await availability.availability(engine.store, by, lo, hi)  # type: ignore[arg-type]
    key = {"device": "device", "site": "site", "rtc": "rtc"}[by]
    return {row[key]: row for row in rows}


# ---------------------------------------------------------------- spans


def test_merged_and_minus_count_overlaps_once() -> None:
    assert merged([(5, 8), (0, 3), (2, 4), (4, 4.5), (9, 20)], 1, 10) == [(1, 4.5), (5, 8), (9, 10)]
    assert minus([(0, 10), (20, 30)], [(2, 3), (5, 25)]) == [(0, 2), (3, 5), (25, 30)]
    # down 0-40 and 30-60 overlap (60 s), maintenance 50-70, unknown 10-20, period 0-100:
    # maintenance 20, unknown 10, down 0-10 + 20-50 = 40, up 30
    f = figures(0, 100, [(0, 40), (30, 60)], [(10, 20)], [(50, 70), (55, 65)])
    assert (f.maintenance_s, f.unknown_s, f.down_s, f.up_s) == (20, 10, 40, 30)
    assert f.up_pct == pytest.approx(30 / 70 * 100)
    assert Figures(0, 0, 10, 0).up_pct is None  # nothing known: no figure, not 0 or 100


# ---------------------------------------------------------------- through the engine


async def test_36_minutes_down_in_december_is_99_919_percent(
    fleet: tuple[Engine, Clock, dict[str, Site]],
) -> None:
    engine, _, sites = fleet
    await sites["nyc"].down("nyc-r1", day(10, 12), day(10, 12.6))
    rows = await report(engine, "device")
    r1 = rows["nyc-r1"]
    assert r1["down_s"] == 36 * M
    assert r1["up_s"] == MONTH - 36 * M
    assert (r1["unknown_s"], r1["maintenance_s"]) == (0, 0)
    assert r1["up_pct"] == 99.919
    assert rows["nyc-r2"]["up_pct"] == 100.0 and rows["nyc-r2"]["down_s"] == 0
    assert (r1["site"], r1["rtc"]) == ("nyc", "amer")


async def test_agent_offline_is_unknown_never_down(
    fleet: tuple[Engine, Clock, dict[str, Site]],
) -> None:
    engine, _, sites = fleet
    nyc = sites["nyc"]
    # nyc-r1 down at 10:00; the agent gone 11:00-13:00 (its will), the device up at 13:10
    await nyc.events(("nyc-r1", "down", day(5, 10)))
    await nyc.status("offline", day(5, 11))
    await nyc.status("online", day(5, 13))
    await nyc.events(("nyc-r1", "up", day(5, 13 + 10 / 60)))
    rows = await report(engine, "device")
    r1, r2 = rows["nyc-r1"], rows["nyc-r2"]
    assert r1["unknown_s"] == 2 * H  # the device's incident was open, but nobody knew
    assert r1["down_s"] == 1 * H + 10 * M  # 10:00-11:00 and 13:00-13:10
    assert r1["up_s"] == MONTH - 2 * H - 70 * M
    assert r1["up_pct"] == pct(MONTH - 2 * H - 70 * M, MONTH - 2 * H)
    assert (r2["unknown_s"], r2["down_s"], r2["up_pct"]) == (2 * H, 0, 100.0)
    assert rows["bos-r1"]["unknown_s"] == 0  # another site's agent


async def test_maintenance_is_left_out_and_overlapping_windows_count_once(
    fleet: tuple[Engine, Clock, dict[str, Site]],
) -> None:
    engine, _, sites = fleet
    m = engine.maintenance
    await m.add_window(MaintenanceWindow(0, "nyc", "", "", day(20, 2), day(20, 4)), "admin1")
    await m.add_window(MaintenanceWindow(0, "", "nyc-r1", "", day(20, 3), day(20, 5)), "admin1")
    # every day 01:00-01:30 on Dec 1 and 2 (`until` at the 3rd's start: that one never runs)
    await m.add_window(
        MaintenanceWindow(0, "bos", "", "", day(1, 1), day(1, 1.5), every=86400, until=day(3, 1)),
        "admin1",
    )
    await sites["nyc"].down("nyc-r1", day(20, 2.5), day(20, 3.5))  # all inside
    await sites["nyc"].down("nyc-r1", day(20, 4.75), day(20, 5.25))  # half inside
    await sites["nyc"].down("nyc-r2", day(20, 3.75), day(20, 4.25))  # half inside
    await sites["bos"].down("bos-r1", day(2, 1.25), day(2, 2))  # 15 of 45 min inside
    rows = await report(engine, "device")
    r1, r2, b1 = rows["nyc-r1"], rows["nyc-r2"], rows["bos-r1"]
    assert (r1["maintenance_s"], r1["down_s"]) == (3 * H, 15 * M)  # 02:00-05:00 merged
    assert r1["up_pct"] == pct(MONTH - 3 * H - 15 * M, MONTH - 3 * H)
    assert (r2["maintenance_s"], r2["down_s"]) == (2 * H, 15 * M)  # only the site's window
    assert r2["up_pct"] == pct(MONTH - 2 * H - 15 * M, MONTH - 2 * H)
    assert (b1["maintenance_s"], b1["down_s"]) == (60 * M, 30 * M)
    assert rows["lon-r1"]["maintenance_s"] == 0


async def test_the_period_cuts_an_incident_and_an_open_one_runs_to_the_end(
    fleet: tuple[Engine, Clock, dict[str, Site]],
) -> None:
    engine, clock, sites = fleet
    await sites["lon"].down("lon-r1", DEC - 1 * H, DEC + 2 * H)  # Nov 30 23:00 - Dec 1 02:00
    await sites["nyc"].events(("nyc-r1", "down", day(31, 23)))  # still down
    dec = await report(engine, "device")
    assert dec["lon-r1"]["down_s"] == 2 * H
    nov = await report(engine, "device", NOV, DEC)
    assert nov["lon-r1"]["down_s"] == 1 * H
    assert nov["lon-r1"]["up_s"] == DEC - NOV - 1 * H
    assert dec["nyc-r1"]["down_s"] == 1 * H  # open: to the period's end
    # a period from Dec 31 20:00 to now (23:30): the open incident counts to now
    clock.t = day(31, 23.5)
    asked = availability.request({"by": "device", "from": str(day(31, 20))}, clock.t)
    assert (asked.lo, asked.hi) == (day(31, 20), day(31, 23.5))
    rows = await report(engine, "device", asked.lo, asked.hi)
    assert (rows["nyc-r1"]["down_s"], rows["nyc-r1"]["up_s"]) == (30 * M, 3 * H)


async def test_sites_and_rtcs_sum_device_seconds(
    fleet: tuple[Engine, Clock, dict[str, Site]],
) -> None:
    engine, _, sites = fleet
    await sites["nyc"].down("nyc-r1", day(10, 12), day(10, 12.6))  # 36 min
    await sites["bos"].down("bos-r1", day(11, 0), day(11, 1))  # 60 min
    await sites["lon"].down("lon-r1", day(12, 0), day(12, 2))  # 120 min
    await sites["bos"].status("offline", day(15, 0))  # bos unknown for 4 h
    await sites["bos"].status("online", day(15, 4))
    by_site = await report(engine, "site")
    nyc = by_site["nyc"]
    assert (nyc["devices"], nyc["rtc"], nyc["down_s"]) == (2, "amer", 36 * M)
    assert nyc["up_s"] == 2 * MONTH - 36 * M
    # the mean of its devices' availability (both known throughout)
    assert nyc["up_pct"] == round(((MONTH - 36 * M) / MONTH * 100 + 100) / 2, 3)
    assert by_site["bos"]["up_pct"] == pct(MONTH - 4 * H - 1 * H, MONTH - 4 * H)
    by_rtc = await report(engine, "rtc")
    amer = by_rtc["amer"]
    assert amer["devices"] == 3
    assert (amer["down_s"], amer["unknown_s"]) == (36 * M + 1 * H, 4 * H)
    assert amer["up_pct"] == pct(3 * MONTH - 4 * H - 36 * M - 1 * H, 3 * MONTH - 4 * H)
    assert by_rtc["emea"]["up_pct"] == pct(MONTH - 2 * H, MONTH)
    assert set(by_rtc["emea"]) == {"rtc", "devices", *availability.FIGURES}


async def _wan_run(path: Path, *, partition: bool) -> tuple[Engine, Store, dict[Any, Any]]:
    """Dec 10: nyc-r1 down 12:00-12:36. With `partition`, the site's WAN is cut
    11:30-13:00: the broker sends the agent's will, the sweep runs, and at 13:00 the agent
    is back and replays its spool, the events with their own times."""
    engine, clock, store = await make_engine(f"sqlite:///{path}")
    nyc = Site(engine, clock, "nyc")
    await nyc.status("online", DEC - 86400)
    t = day(10, 11)
    while t <= day(10, 13.5):
        cut = partition and day(10, 11.5) <= t < day(10, 13)
        if not cut:
            await nyc.status("online", t)  # a heartbeat (the birth again at 13:00)
            if partition and t == day(10, 13):
                await nyc.events(("nyc-r1", "down", day(10, 12)), received=t)
                await nyc.events(("nyc-r1", "up", day(10, 12.6)), received=t)
        elif t == day(10, 11.5) + 60:
            await nyc.status("offline", t)  # the will, after the keepalive
        if not partition and t == day(10, 12):
            await nyc.events(("nyc-r1", "down", t))
        if not partition and t == day(10, 12.6):
            await nyc.events(("nyc-r1", "up", t))
        clock.t = t
        await engine.sweep()
        t += 30
    return engine, store, await report(engine, "device")


async def test_a_late_replay_after_a_wan_partition_leaves_the_figures(tmp_path: Path) -> None:
    _, plain_store, plain = await _wan_run(tmp_path / "plain.db", partition=False)
    engine, store, replayed = await _wan_run(tmp_path / "cut.db", partition=True)
    try:
        offline = [i for i in await engine.queries.incidents() if i.key.kind == "agent_offline"]
        assert len(offline) == 1  # the partition was seen
        assert (offline[0].opened, offline[0].resolved) == (day(10, 11.5) + 60, day(10, 13))
        (down,) = [i for i in await engine.queries.incidents() if i.key.kind == "reachability"]
        assert (down.opened, down.resolved) == (day(10, 12), day(10, 12.6))  # event times
        assert replayed == plain
        r1 = replayed["nyc-r1"]
        assert (r1["down_s"], r1["unknown_s"], r1["up_pct"]) == (36 * M, 0, 99.919)
    finally:
        await store.close()
        await plain_store.close()


# ---------------------------------------------------------------- parameters


def test_parameters_iso_unix_defaults_and_errors() -> None:
    now = day(6, 15.5)
    iso = availability.request({"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00Z"}, now)
    unix = availability.request({"from": str(int(DEC)), "to": str(int(DEC + 86400))}, now)
    assert (iso.lo, iso.hi) == (unix.lo, unix.hi) == (DEC, DEC + 86400)
    assert (iso.by, iso.csv) == ("site", False)
    default = availability.request({"by": "rtc", "format": "csv"}, now)
    assert (default.lo, default.hi, default.by, default.csv) == (DEC, now, "rtc", True)
    assert availability.request({"to": "2027-03-01T00:00:00Z"}, now).hi == now  # not beyond now
    for query, named in (
        ({"by": "building"}, "by must be one of device, site, rtc"),
        ({"format": "xml"}, "format must be one of json, csv"),
        ({"from": "yesterday-ish"}, "from must be Unix seconds, ISO 8601"),
        ({"to": "2026-12-02T00:00:00"}, "to needs a time zone"),
        ({"from": "2026-12-05T00:00:00Z", "to": "2026-12-04T00:00:00Z"}, "from must be before"),
    ):
        with pytest.raises(ApiError) as raised:
            availability.request(query, now)
        assert raised.value.status == 400
        assert named in (raised.value.text or ""), (query, raised.value.text)


def test_csv_rows_and_name() -> None:
    rows = [
        {"site": "nyc", "rtc": "amer", "devices": 2, **Figures(100, 10, 0, 0).as_dict()},
        {"site": "bos", "rtc": "amer", "devices": 1, **Figures(0, 0, 5, 0).as_dict()},
    ]
    name = availability.csv_name("site", DEC, JAN)
    response = table_response({"format": "csv"}, {}, rows, availability.columns("site"), name)
    text = response.text or ""
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == ["site", "rtc", "devices", *availability.FIGURES]
    assert parsed[0]["up_pct"] == str(round(100 / 110 * 100, 3))
    assert parsed[1]["up_pct"] == "" and parsed[1]["unknown_s"] == "5"
    assert availability.csv_name("site", DEC, JAN) == "availability-site-20261201-20270101.csv"


# ---------------------------------------------------------------- the HTTP API


@pytest.mark.servers
async def test_http_api_json_csv_roles_and_errors(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = collector_config(tmp_path, mosquitto.url, extra={"incidents": {"agent_timeout": "1h"}})
    async with running_collector(config) as coll:
        nyc = Site(coll.engine, Clock(), "nyc")
        await nyc.status("online", NOV - 86400)
        await nyc.events(("nyc-r1", "down", NOV + 9 * 86400))
        await nyc.events(("nyc-r1", "up", NOV + 9 * 86400 + 36 * M))
        base = f"http://127.0.0.1:{coll.http_port}/api/v1/availability"
        auth = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
        days30 = DEC - NOV
        async with aiohttp.ClientSession(headers=auth) as http:
            q = {"by": "device", "from": "2026-11-01T00:00:00Z", "to": str(int(DEC))}
            async with http.get(base, params=q) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert (body["by"], body["from"], body["to"]) == ("device", NOV, DEC)
            rows = {r["device"]: r for r in body["rows"]}
            assert rows["nyc-r1"]["down_s"] == 36 * M
            assert rows["nyc-r1"]["up_pct"] == pct(days30 - 36 * M, days30)  # 99.917
            assert rows["nyc-r2"]["up_pct"] == 100.0
            async with http.get(base, params={**q, "by": "site", "format": "csv"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
                assert resp.headers["Content-Disposition"] == (
                    'attachment; filename="availability-site-20261101-20261201.csv"'
                )
                table = list(csv.DictReader(io.StringIO(await resp.text())))
            assert [(r["site"], r["devices"], r["down_s"]) for r in table] == [
                ("nyc", "2", str(36 * M))
            ]
            for params, named in (
                ({"by": "planet"}, "by must be"),
                ({"from": "soon"}, "from must be"),
                ({"to": "12/01/2026"}, "to must be"),
            ):
                async with http.get(base, params=params) as resp:
                    assert resp.status == 400
                    assert named in (await resp.json())["error"]
        async with aiohttp.ClientSession() as anonymous, anonymous.get(base) as resp:
            assert resp.status == 401
