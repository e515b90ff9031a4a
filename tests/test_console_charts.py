"""The stats page's charts (collector/static/charts.js, uPlot) in real headless Chromium.

The API is served over a store seeded with incidents of the last weeks; the browser logs
in, opens the stats page and must draw each chart with one series per group, link each
chart's CSV, log no error and ask no host but the collector's loopback address. The
availability endpoint is another part of the API: the browser is given a stand-in of it
here (its JSON contract), and a 404 in its place, which must read "No data".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
import yaml
from browserkit import chromium_path, launched
from trendkit import Incident, serving

from collector.auth import hash_password

pytestmark = [pytest.mark.servers]

PASSWORD = "correct horse battery staple"
H, D = 3600.0, 86400.0
NOW = time.time()

# three sites at two RTCs, in three severities; two still open (the open chart's range)
INCIDENTS: list[Incident] = [
    ("a", "nyc", "amer", "critical", NOW - 20 * D, 300, 1800, "cleared"),
    ("b", "lon", "emea", "major", NOW - 13 * D, 600, 7200, "operator"),
    ("c", "bkk", "apac", "major", NOW - 5 * D, 900, None, ""),
    ("d", "nyc", "amer", "minor", NOW - 2 * D, None, 3600, "operator"),
    ("e", "lon", "emea", "critical", NOW - 1 * D, None, None, ""),
]
SITES = ["bkk", "lon", "nyc"]
AVAILABILITY_SITES = ["ams", "nbo"]  # the stand-in's: not the incidents' sites


def users(tmp_path: Path) -> Path:
    path = tmp_path / "console-users.yaml"
    user = {"name": "watcher", "role": "viewer", "password_hash": hash_password(PASSWORD)}
    path.write_text(yaml.safe_dump({"users": [user]}))
    return path


@pytest.fixture
def chromium_binary() -> str:
    return chromium_path()


@pytest_asyncio.fixture
async def browser(chromium_binary: str) -> AsyncIterator[Any]:
    async with launched(chromium_binary) as chromium:
        yield chromium


async def availability_stand_in(route: Any) -> None:
    """`GET /api/v1/availability?by=site`: one row per site, a month's up_pct by its start."""
    query = parse_qs(urlsplit(route.request.url).query)
    assert query["by"] == ["site"]
    start = float(query["from"][0])
    rows = [
        {
            "site": s,
            "rtc": "emea",
            "up_pct": 99.0 + (start % 7 + i) / 10,
            "up_s": 1.0,
            "down_s": 0.0,
            "unknown_s": 0.0,
            "maintenance_s": 0.0,
        }
        for i, s in enumerate(AVAILABILITY_SITES)
    ]
    await route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"rows": rows})
    )


async def not_served(route: Any) -> None:
    await route.fulfill(status=404, content_type="application/json", body='{"error": "Not Found"}')


@contextlib.asynccontextmanager
async def stats_page(
    browser: Any, base: str, availability: Any, allowed: tuple[str, ...] = ()
) -> AsyncIterator[Any]:
    """The stats page, logged in, its charts drawn; after the test: every request went to
    the collector, and no error was logged but the `allowed` ones."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await context.new_page()
        errors: list[str] = []
        requested: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: requested.append(r.url))
        await page.route("**/api/v1/availability?*", availability)
        await page.goto(f"{base}/#/stats")
        # errors from here on: the console's first question (whoami) is answered 401 then
        await page.wait_for_selector("#login-view:visible")
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.fill("#login-name", "watcher")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#stats-charts[data-drawn]")
        yield page
        assert [e for e in errors if e not in allowed] == []
        assert requested, "the page made requests"
        hosts = {urlsplit(u).hostname for u in requested if not u.startswith(("data:", "blob:"))}
        assert hosts == {"127.0.0.1"}, requested
    finally:
        await context.close()


async def legend(page: Any, chart: str) -> list[str]:
    """The series a chart draws, as its uPlot legend names them (the x series left out)."""
    labels: list[str] = await page.eval_on_selector_all(
        f"#chart-{chart} .u-legend tr.u-series th",
        "cells => cells.map((c) => c.textContent.trim())",
    )
    return labels[1:]


async def legend_becomes(page: Any, chart: str, labels: list[str]) -> None:
    """Wait for the chart's redraw (a select changed), then check its series."""
    with contextlib.suppress(Exception):
        await page.wait_for_function(
            """([chart, first]) => {
                const th = document.querySelectorAll(`#chart-${chart} .u-legend tr.u-series th`);
                return th.length > 1 && th[1].textContent.trim() === first;
            }""",
            arg=[chart, labels[0]],
            timeout=10_000,
        )
    assert await legend(page, chart) == labels
    assert await page.get_attribute(f"#chart-{chart}", "data-series") == str(len(labels))
    assert await canvases(page, chart) == 1  # the old chart was taken down


async def canvases(page: Any, chart: str) -> int:
    count: int = await page.locator(f"#chart-{chart} canvas").count()
    return count


async def test_stats_page_draws_each_chart_with_a_series_per_group(
    tmp_path: Path, browser: Any
) -> None:
    async with (
        serving(tmp_path, INCIDENTS, users(tmp_path)) as base,
        stats_page(browser, base, availability_stand_in) as page,
    ):
        for chart in ("mtta", "mttr", "open", "availability"):
            assert await canvases(page, chart) == 1, chart
        assert await legend(page, "mtta") == SITES  # by site, the page's default
        assert await legend(page, "mttr") == SITES
        assert await legend(page, "open") == [
            "all",
            "critical",
            "major",
            "minor",
            "warning",
            "info",
        ]
        assert await legend(page, "availability") == AVAILABILITY_SITES
        await page.screenshot(path=str(tmp_path / "stats-charts.png"), full_page=True)

        drawn = await page.get_attribute("#stats-charts", "data-drawn")
        await page.select_option("#chart-by", "severity")
        await legend_becomes(page, "mtta", ["critical", "major", "minor"])
        await page.select_option("#chart-by", "rtc")
        await page.select_option("#chart-period", "month")
        await legend_becomes(page, "mttr", ["amer", "apac", "emea"])
        assert await page.get_attribute("#stats-charts", "data-drawn") == drawn  # no reload

        # each CSV link answers the chart's rows (with the page's session cookie)
        for chart, header in [
            ("mtta", "period,start,rtc,incidents,acknowledged,mtta_s,resolved,mttr_s"),
            ("open", "at,open,critical,major,minor,warning,info"),
        ]:
            href = await page.get_attribute(f"#chart-{chart} a.csv", "href")
            text: str = await page.evaluate("(href) => fetch(href).then((r) => r.text())", href)
            lines = text.strip().splitlines()
            assert lines[0] == header, chart
            assert len(lines) > 1, chart
        # availability's is made in the page, one row per site and month: a download
        async with page.expect_download() as event:
            await page.click("#chart-availability a.csv")
        download = await event.value
        assert download.suggested_filename == "enoc-availability-site-month.csv"
        text = await asyncio.to_thread(Path(await download.path()).read_text)
        lines = text.strip().splitlines()
        assert lines[0] == "month,site,rtc,up_pct,up_s,down_s,unknown_s,maintenance_s"
        assert len(lines) == 1 + 12 * len(AVAILABILITY_SITES)
        assert [line.split(",")[1] for line in lines[1:3]] == AVAILABILITY_SITES
        # the open-incident chart at its last step: c and e are open, one major, one critical
        text = await page.evaluate(
            "(href) => fetch(href).then((r) => r.text())",
            await page.get_attribute("#chart-open a.csv", "href"),
        )
        assert text.strip().splitlines()[-1].split(",")[1:] == ["2", "1", "1", "0", "0", "0"]


# how the browser reports the stand-in's 404: the only error allowed in the test below
FAILED_LOAD = "Failed to load resource: the server responded with a status of 404 (Not Found)"


async def test_availability_chart_reads_no_data_where_the_endpoint_is_not_served(
    tmp_path: Path, browser: Any
) -> None:
    async with (
        serving(tmp_path, INCIDENTS, users(tmp_path)) as base,
        stats_page(browser, base, not_served, (FAILED_LOAD,)) as page,
    ):
        assert await canvases(page, "availability") == 0
        assert await page.locator("#chart-availability .nodata").is_visible()
        assert await page.locator("#chart-availability .nodata").text_content() == "No data"
        assert await legend(page, "mtta") == SITES  # the other charts are drawn all the same
        assert await canvases(page, "open") == 1
