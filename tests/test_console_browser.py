"""The NOC console in real headless Chromium (Debian's), driven by Playwright.

Simulator -> agent -> Mosquitto -> collector; the browser logs in, sees a fault
injected into the simulator appear on the board without a reload, acknowledges
and resolves it, and sees the site tile turn red and back to green. Screenshots
of the overview, the board and a device page go to the test's directory, and to
$ENOC_SCREENSHOTS when it is set (that is how the README's picture is made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentkit import agent_config, running_agent, simulated_site
from collectorkit import collector_config, eventually, running_collector

from collector.auth import hash_password
from enoc.localservers import Mosquitto

pytestmark = pytest.mark.servers

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"


def console_users(tmp_path: Path) -> Path:
    path = tmp_path / "console-users.yaml"
    digest = hash_password(PASSWORD)
    path.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "ops1", "role": "operator", "password_hash": digest},
                    {"name": "watcher", "role": "viewer", "password_hash": digest},
                ]
            }
        )
    )
    return path


@pytest.fixture
def chromium_binary() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium")
    return CHROMIUM


@pytest.fixture
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


def save(shot: Path) -> None:
    target = os.environ.get("ENOC_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


async def test_operator_sees_fault_live_acks_and_resolves(
    tmp_path: Path, mosquitto: Mosquitto, browser: Any
) -> None:
    config = collector_config(
        tmp_path, mosquitto.url, extra={"http": {"users_file": str(console_users(tmp_path))}}
    )
    async with (
        simulated_site(tmp_path) as site,
        running_collector(config) as coll,
        running_agent(agent_config(tmp_path, mosquitto.url, site.inventory)),
    ):
        names = {d.name for d in site.devices}

        async def listed() -> bool:
            devices = await coll.engine.devices()
            return {d["device"] for d in devices} == names and all(
                d["state"] == "up" for d in devices
            )

        await eventually(listed, what="every device listed and up")
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{coll.http_port}/")

        # log in: a wrong password is refused with a message, the right one gets in
        await page.fill("#login-name", "ops1")
        await page.fill("#login-password", "not the password")
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#login-error:has-text('wrong name or password')")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#who:has-text('ops1 (operator)')")
        tile = page.locator(".tile[data-site='nyc']")
        await tile.wait_for()
        assert await tile.get_attribute("data-status") == "green"
        await page.wait_for_selector("#live.on")  # the event stream is connected

        # the board is open before the fault: the row must arrive without a reload
        await page.click("nav a[data-page=board]")
        await page.wait_for_selector("#board-empty:visible")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 2})
        row = page.locator("tr.incident[data-site='nyc']")
        await row.wait_for(timeout=20_000)
        assert await row.count() == 1
        text = await row.inner_text()
        assert "nyc-acc-1" in text
        assert "if:2" in text
        assert await row.get_attribute("data-state") == "open"
        assert not [u for u in navigations if not u.split("#")[0].endswith("/")], navigations
        await page.screenshot(path=str(tmp_path / "console-board.png"), full_page=True)
        save(tmp_path / "console-board.png")

        # the timeline opens under the row
        await row.click()
        await page.wait_for_selector("tr.detail .timeline li:has-text('event')")

        # the overview turns the tile red
        await page.click("nav a[data-page=overview]")
        await page.wait_for_selector(".tile[data-site='nyc'][data-status='red']")
        await page.screenshot(path=str(tmp_path / "console-overview.png"), full_page=True)
        save(tmp_path / "console-overview.png")

        # acknowledge, then resolve, from the board
        await page.click("nav a[data-page=board]")
        await row.locator("button.ack").click()
        await page.wait_for_selector("tr.incident[data-site='nyc'][data-state='acknowledged']")
        assert "ops1" in await row.locator("td.state").inner_text()
        await row.locator("button.resolve").click()
        await page.wait_for_selector("#board-empty:visible")
        (incident,) = [i for i in await coll.engine.incidents(site="nyc") if i.key.kind == "link"]
        assert incident.state == "resolved"
        assert incident.acknowledged_by == "ops1"
        assert incident.resolved_by == "ops1"

        # and the tile is green again
        await page.click("nav a[data-page=overview]")
        await page.wait_for_selector(".tile[data-site='nyc'][data-status='green']")

        # the device page: facts, interfaces with a chart of the recent window, once
        # there is a line to draw (a rate needs two polls, a line two rates)
        def charted() -> bool:
            recent = coll.recent.device("nyc", "nyc-acc-1")
            return recent is not None and all(
                sum(v is not None for v in i["history"].get(name, [])) >= 2
                for i in recent["interfaces"][:1]
                for name in ("in_bps", "out_bps")
            )

        await eventually(charted, what="two rates of nyc-acc-1's first interface")
        await page.goto(f"http://127.0.0.1:{coll.http_port}/#/device/nyc/nyc-acc-1")
        await page.wait_for_selector("#if-rows tr svg.spark polyline")
        assert await page.locator("#if-rows tr").count() == len(
            next(d for d in site.devices if d.name == "nyc-acc-1").interfaces
        )
        assert await page.locator("#device-facts dd.state-up").count() == 1
        await page.screenshot(path=str(tmp_path / "console-device.png"), full_page=True)
        save(tmp_path / "console-device.png")
        assert errors == [], errors


async def test_viewer_sees_no_actions_and_stats_render(
    tmp_path: Path, mosquitto: Mosquitto, browser: Any
) -> None:
    config = collector_config(
        tmp_path, mosquitto.url, extra={"http": {"users_file": str(console_users(tmp_path))}}
    )
    async with (
        simulated_site(tmp_path) as site,
        running_collector(config) as coll,
        running_agent(agent_config(tmp_path, mosquitto.url, site.inventory)),
    ):
        site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 3})

        async def opened() -> bool:
            return any(i.key.kind == "link" for i in await coll.engine.incidents(state="open"))

        await eventually(opened, what="link incident")
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{coll.http_port}/#/board")
        await page.fill("#login-name", "watcher")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        row = page.locator("tr.incident[data-site='nyc']")
        await row.wait_for()
        assert await row.locator("button").count() == 0  # a viewer reads, does not act
        await page.click("nav a[data-page=stats]")
        await page.wait_for_selector("#stats-rows tr:has-text('nyc')")
        # a reload keeps the session (HttpOnly cookie) and lands on the same page
        await page.reload()
        await page.wait_for_selector("#stats-rows tr:has-text('nyc')")
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["enoc_session"]["httpOnly"] is True
        assert cookies["enoc_session"]["sameSite"] == "Strict"
        assert await page.evaluate("document.cookie") == ""  # scripts cannot read it
        await page.click("#logout")
        await page.wait_for_selector("#login-view:visible")
        await page.reload()
        await page.wait_for_selector("#login-view:visible")
