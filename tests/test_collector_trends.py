"""MTTA, MTTR and open incidents over time (collector/incidents/trends.py) through the
HTTP API, with an injected clock and figures computed by hand: ISO weeks from Monday
00:00 UTC, calendar months in UTC, JSON and CSV, and bad parameters named."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from collectorkit import TOKENS
from trendkit import Incident, new_database, serving

from collector.incidents.trends import periods

H, D = 3600.0, 86400.0
W = 1_799_625_600.0  # Monday 2027-01-11 00:00 UTC: ISO week 2027-W02

INCIDENTS: list[Incident] = [
    ("a", "nyc", "amer", "critical", W + 1 * H, 300, 1800, "cleared"),
    ("b", "nyc", "amer", "major", W + 2 * D, 600, 3600, "operator"),
    ("c", "lon", "emea", "major", W + 3 * D, None, None, ""),
    ("f", "lon", "emea", "warning", W + 7 * D - 1, None, None, ""),  # Sunday 23:59:59: W02
    ("d", "nyc", "amer", "minor", W + 7 * D, None, 1200, "operator"),  # Monday 00:00: W03
    ("e", "lon", "emea", "critical", W + 8 * D, 120, 2400, "cleared"),
]


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS['viewer1']}"}


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
async def base(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The API over INCIDENTS, in each store dialect."""
    store_url = ""
    if request.param == "postgresql":
        store_url = new_database(request.getfixturevalue("pg_server"))
    async with serving(tmp_path, INCIDENTS, store_url=store_url) as url:
        yield url


async def get(base: str, path: str, status: int = 200) -> Any:
    async with aiohttp.ClientSession() as http, http.get(base + path, headers=auth()) as r:
        assert r.status == status, await r.text()
        return await r.json() if r.content_type == "application/json" else await r.text()


async def test_weekly_mtta_and_mttr_by_site_split_at_monday_midnight_utc(base: str) -> None:
    got = await get(base, f"/api/v1/stats/trend?period=week&by=site&from={W}&to={W + 14 * D}")
    assert [p["period"] for p in got["periods"]] == ["2027-W02", "2027-W03"]
    assert [p["start"] for p in got["periods"]] == [W, W + 7 * D]
    assert got["groups"] == ["lon", "nyc"]
    table = {(r["period"], r["site"]): r for r in got["rows"]}
    assert set(table) == {("2027-W02", "lon"), ("2027-W02", "nyc"), ("2027-W03", "lon"),
                          ("2027-W03", "nyc")}  # fmt: skip
    # a (ack 300 s, resolved 1800 s) and b (600, 3600)
    nyc = table["2027-W02", "nyc"]
    assert (nyc["incidents"], nyc["acknowledged"], nyc["resolved"]) == (2, 2, 2)
    assert (nyc["mtta_s"], nyc["mttr_s"]) == (450.0, 2700.0)
    # c and f (opened a second before Monday): neither acknowledged nor resolved
    lon = table["2027-W02", "lon"]
    assert (lon["incidents"], lon["acknowledged"], lon["mtta_s"], lon["mttr_s"]) == (
        2,
        0,
        None,
        None,
    )
    # d, resolved without an ack: acknowledged when resolved
    assert (table["2027-W03", "nyc"]["mtta_s"], table["2027-W03", "nyc"]["mttr_s"]) == (1200, 1200)
    assert (table["2027-W03", "lon"]["mtta_s"], table["2027-W03", "lon"]["mttr_s"]) == (120, 2400)


async def test_monthly_by_rtc_and_by_severity(base: str) -> None:
    got = await get(base, f"/api/v1/stats/trend?period=month&by=rtc&from={W}&to={W + 14 * D}")
    assert [p["period"] for p in got["periods"]] == ["2027-01"]
    rows = {r["rtc"]: r for r in got["rows"]}
    # amer: a, b, d: (300 + 600 + 1200) / 3 and (1800 + 3600 + 1200) / 3
    assert (rows["amer"]["incidents"], rows["amer"]["mtta_s"], rows["amer"]["mttr_s"]) == (
        3,
        700,
        2200,
    )
    # emea: c, f open; e acknowledged after 120 s, cleared after 2400 s
    assert (rows["emea"]["incidents"], rows["emea"]["mtta_s"], rows["emea"]["mttr_s"]) == (
        3,
        120,
        2400,
    )
    got = await get(base, f"/api/v1/stats/trend?period=month&by=severity&from={W}&to={W + 14 * D}")
    assert got["groups"] == ["critical", "major", "minor", "warning"]  # most severe first
    critical = next(r for r in got["rows"] if r["severity"] == "critical")
    assert (critical["incidents"], critical["mtta_s"], critical["mttr_s"]) == (2, 210, 2100)
    # the range is what counts: from Tuesday of W02 leaves a (Monday) out
    got = await get(base, f"/api/v1/stats/trend?period=week&by=rtc&from={W + D}&to={W + 7 * D}")
    assert [(r["rtc"], r["incidents"], r["mttr_s"]) for r in got["rows"]] == [
        ("amer", 1, 3600),
        ("emea", 2, None),
    ]


async def test_open_incidents_over_time(base: str) -> None:
    got = await get(base, f"/api/v1/stats/open?from={W}&to={W + 9 * D}&step=1d")
    assert got["step"] == D
    assert [r["at"] for r in got["rows"]] == [W + k * D for k in range(10)]
    # open at t: opened by t and not resolved by t
    assert [r["open"] for r in got["rows"]] == [0, 0, 1, 1, 1, 1, 1, 3, 3, 2]
    day8 = got["rows"][8]  # c, f and e
    assert (day8["critical"], day8["major"], day8["minor"], day8["warning"]) == (1, 1, 0, 1)
    # b, at its opening and at its resolution an hour later: no longer open then
    got = await get(base, f"/api/v1/stats/open?from={W + 2 * D}&to={W + 2 * D + H}&step=1h")
    assert [r["open"] for r in got["rows"]] == [1, 0]


async def test_csv_of_each(base: str) -> None:
    text = await get(
        base, f"/api/v1/stats/trend?period=week&by=site&from={W}&to={W + 14 * D}&format=csv"
    )
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["period", "start", "site", "incidents", "acknowledged", "mtta_s",
                        "resolved", "mttr_s"]  # fmt: skip
    assert table[1:] == [
        ["2027-W02", str(W), "lon", "2", "0", "", "0", ""],
        ["2027-W02", str(W), "nyc", "2", "2", "450.0", "2", "2700.0"],
        ["2027-W03", str(W + 7 * D), "lon", "1", "1", "120.0", "1", "2400.0"],
        ["2027-W03", str(W + 7 * D), "nyc", "1", "1", "1200.0", "1", "1200.0"],
    ]
    text = await get(base, f"/api/v1/stats/open?from={W}&to={W + 2 * D}&step=86400&format=csv")
    assert list(csv.reader(io.StringIO(text))) == [
        ["at", "open", "critical", "major", "minor", "warning", "info"],
        [str(W), "0", "0", "0", "0", "0", "0"],
        [str(W + D), "0", "0", "0", "0", "0", "0"],
        [str(W + 2 * D), "1", "0", "1", "0", "0", "0"],
    ]


async def test_bad_parameters_are_named(base: str) -> None:
    cases = [
        ("/api/v1/stats/trend?period=day", "period must be one of week, month"),
        ("/api/v1/stats/trend?by=device", "by must be one of rtc, site, severity"),
        ("/api/v1/stats/trend?from=yesterday", "from must be Unix seconds"),
        (f"/api/v1/stats/trend?from={W}&to={W - D}", "from must be before to"),
        ("/api/v1/stats/trend?period=week&from=100000000.5", "more than 600 weeks"),
        ("/api/v1/stats/trend?format=xml", "format must be one of json, csv"),
        ("/api/v1/stats/open?step=10", "step must be at least 60 seconds"),
        ("/api/v1/stats/open?step=often", "step must be seconds or a duration"),
        ("/api/v1/stats/open?step=-5", "step must be a positive number"),
        ("/api/v1/stats/open?from=30d&step=60", "step is too small"),
        ("/api/v1/stats/open?to=soon", "to must be Unix seconds"),
    ]
    for path, message in cases:
        got = await get(base, path, 400)
        assert message in got["error"], (path, got)


def test_periods_follow_iso_weeks_and_utc_months_across_a_year() -> None:
    dec31 = 1_798_675_200.0  # Thursday 2026-12-31 00:00 UTC, in ISO week 2026-W53
    weeks = periods(dec31, dec31 + 5 * D, "week")
    assert [w.label for w in weeks] == ["2026-W53", "2027-W01"]
    assert weeks[0].start == dec31 - 3 * D and weeks[1].start == dec31 + 4 * D
    months = periods(dec31, dec31 + 1, "month")
    assert [(m.label, m.end) for m in months] == [("2026-12", dec31 + D)]
