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
from pathlib import Path
from typing import Any

import pytest
from collectorkit import Clock, collector_config, running_collector
from test_availability import NOV, Site
from test_console_browser import browser, chromium_binary, console, console_users

from testbed.servers import Mosquitto

__all__ = ["browser", "chromium_binary"]  # fixtures, used by name

# One Chromium for the module, the console tests' own (its fixture lives in their loop).
pytestmark = [pytest.mark.servers, pytest.mark.asyncio(loop_scope="module")]


async def test_availability_view_shows_the_computed_figures(
    tmp_path: Path, mosquitto: Mosquitto, browser: Any
) -> None:
    users = str(console_users(tmp_path))  # ops1 logs in (console() does)
    extra = {"http": {"users_file": users}, "incidents": {"agent_timeout": "1h"}}
    config = collector_config(tmp_path, mosquitto.url, extra=extra)
    async with running_collector(config) as coll:
        nyc = Site(coll.engine, Clock(), "nyc")
        await nyc.status("online", NOV - 86400)
        await nyc.down("nyc-r1", NOV + 9 * 86400, NOV + 9 * 86400 + 36 * 60)
        base = f"http://127.0.0.1:{coll.http_port}"
        async with console(browser, base, "#/availability/2026-11") as page:
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
