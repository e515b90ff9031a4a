"""The console's Availability view in real headless Chromium (Debian's), driven by Playwright:
a viewer picks a month and reads each site's and device's figures, as the API computes them
from the incidents the real engine made; the CSV link downloads the same figures.

November 2026 has 30 days: 2 592 000 s. nyc-r1 down 36 minutes (2 160 s) is
(2 592 000 - 2 160) / 2 592 000 = 99.917 %; nyc-r2 never down, 100 %; the site's
device-seconds (5 184 000 - 2 160) / 5 184 000 = 99.958 %.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from collectorkit import Clock, collector_config, running_collector
from test_availability import NOV, Site

from collector.auth import hash_password
from testbed.servers import Mosquitto

pytestmark = [pytest.mark.servers]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def chromium_binary() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium")
    return CHROMIUM


@pytest_asyncio.fixture
async def browser(chromium_binary: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=chromium_binary, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_availability_view_shows_the_computed_figures(
    tmp_path: Path, mosquitto: Mosquitto, browser: Any
) -> None:
    users = tmp_path / "console-users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "watcher", "role": "viewer", "password_hash": hash_password(PASSWORD)}
                ]
            }
        )
    )
    config = collector_config(
        tmp_path,
        mosquitto.url,
        extra={"http": {"users_file": str(users)}, "incidents": {"agent_timeout": "1h"}},
    )
    async with running_collector(config) as coll:
        nyc = Site(coll.engine, Clock(), "nyc")
        await nyc.status("online", NOV - 86400)
        await nyc.down("nyc-r1", NOV + 9 * 86400, NOV + 9 * 86400 + 36 * 60)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{coll.http_port}/#/availability/2026-11")
        await page.fill("#login-name", "watcher")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        site = page.locator("tr.avail-site[data-site='nyc']")
        await site.wait_for()
        assert await page.input_value("#avail-month") == "2026-11"
        cells = await site.locator("td").all_inner_texts()
        assert cells == ["▸ nyc", "amer", "2", "99.958 %", "36 min", "0", "0"]
        await site.click()
        device = page.locator("tr.avail-device[data-device='nyc-r1']")
        await device.wait_for()
        assert (await device.locator("td").all_inner_texts())[3:5] == ["99.917 %", "36 min"]
        other = page.locator("tr.avail-device[data-device='nyc-r2'] td.up-pct")
        assert await other.inner_text() == "100.000 %"
        await page.screenshot(path=str(tmp_path / "availability.png"))

        # the CSV link downloads the same figures, with the session's cookie
        href = await page.get_attribute("#avail-csv-devices", "href")
        assert href is not None and "format=csv" in href and "by=device" in href
        text = await page.evaluate("async (u) => (await fetch(u)).text()", href)
        table = {r["device"]: r for r in csv.DictReader(io.StringIO(text))}
        assert (table["nyc-r1"]["up_pct"], table["nyc-r1"]["down_s"]) == ("99.917", "2160.0")

        # another month: October had no incident
        await page.fill("#avail-month", "2026-10")
        await page.wait_for_selector(
            "tr.avail-site[data-site='nyc'] td.up-pct:has-text('100.000 %')"
        )
        assert page.url.endswith("#/availability/2026-10")
        assert errors == [], errors
