"""The NOC console in real headless Chromium (Debian's), driven by Playwright.

Simulator -> agent -> Mosquitto -> collector; the browser logs in, sees a fault
injected into the simulator appear on the board without a reload, acknowledges
and resolves it, and sees the site tile turn red and back to green. Screenshots
of the overview, the board and a device page go to the test's directory, and to
$ENOC_SCREENSHOTS when it is set (that is how the README's picture is made).

The board's own features run against one collector for the module, fed over
Mosquitto with the agents' wire messages (a site outage with device incidents
under it, incidents at three RTCs in every severity and state): suppressed
incidents folded under their cause, the filters, comments. Then a console whose
stream was away longer than the collector keeps changes, across a restart.
One Chromium serves the whole module.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import pytest_asyncio
import yaml
from agentkit import agent_config, running_agent, simulated_site
from browserkit import chromium_path, launched
from collectorkit import collector_config, eventually, fed_collector, running_collector

from collector.app import Collector
from collector.auth import hash_password
from collector.notifiers.servicenow import Ticket, save_ticket
from collector.store import Tx
from enoc.wire import DeviceInfo, Event, EventsMessage, Kind, StatusMessage, encode, topic
from simulators.sensors import STANDARD_SENSORS
from testbed.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.asyncio(loop_scope="module")]

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


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    return chromium_path()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium_binary: str) -> AsyncIterator[Any]:
    async with launched(chromium_binary) as chromium:
        yield chromium


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
        simulated_site(tmp_path, sensors=True) as site,
        running_collector(config) as coll,
        running_agent(agent_config(tmp_path, mosquitto.url, site.inventory)),
    ):
        names = {d.name for d in site.devices}

        async def listed() -> bool:
            devices = await coll.engine.queries.devices()
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
        (incident,) = [
            i for i in await coll.engine.queries.incidents(site="nyc") if i.key.kind == "link"
        ]
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
        # the port taken down above, counted; the one shut (admin down) is off, not down
        ports_down = page.locator("#device-facts div:has(dt:text-is('Ports down')) dd")
        assert await ports_down.inner_text() == "1"
        assert await page.locator("#if-rows tr[data-ifindex='2'] td").nth(2).inner_text() == "down"
        assert await page.locator("#if-rows tr[data-ifindex='12'] td").nth(2).inner_text() == "off"

        # sensors: discovery found ENTITY-SENSOR-MIB on the simulated chassis, whose
        # temperatures, fans and supplies are polled; a fan that stops shows failed
        site.sim.inject("nyc-acc-1", {"kind": "fan_fail", "fan": 21})

        def fan_failed() -> bool:
            recent = coll.recent.device("nyc", "nyc-acc-1")
            return recent is not None and any(
                r["tags"].get("sensor") == "Fan 2" and r["fields"].get("status") == "failed"
                for r in recent.get("rows", [])
            )

        await eventually(fan_failed, what="Fan 2 failed in nyc-acc-1's latest poll")
        await page.reload()
        await page.wait_for_selector("#device-sensors:not([hidden]) #sensor-rows tr")
        sensor_rows = page.locator("#sensor-rows tr")
        assert await sensor_rows.count() == len(STANDARD_SENSORS)
        fan = page.locator("#sensor-rows tr:has(td:text-is('Fan 2')) td")
        assert [await fan.nth(i).inner_text() for i in (1, 2, 3)] == ["fan", "0 rpm", "failed"]
        inlet = page.locator("#sensor-rows tr:has(td:text-is('Inlet temperature')) td")
        assert (await inlet.nth(2).inner_text()).endswith(" °C")
        found = page.locator("#device-facts div:has(dt:text-is('MIBs found')) dd")
        assert "entity_sensor" in (await found.inner_text()).split(", ")
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
        # polled once first: a link down at first sight is the baseline, not an incident
        await eventually(
            lambda: coll.ingest.stats.received["metrics"] >= len(site.devices),
            what="a poll of every device",
        )
        site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 3})

        async def opened() -> bool:
            return any(
                i.key.kind == "link" for i in await coll.engine.queries.incidents(state="open")
            )

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


# ---------------------------------------------------------------- the board's features

TOKENS = {"ops1": secrets.token_hex(16), "lead": secrets.token_hex(16)}
RTC = {"ams": "emea", "nbo": "africa", "bkk": "apac", "lis": "emea"}

# The board's incidents: (site, device, resource, severity, state when seeded). A: the
# Amsterdam agent went offline; B and C are its devices' incidents from meanwhile,
# replayed later, so suppressed under A.
SEED = {
    "A": ("ams", "", "agent:ams-1", "critical", "open"),
    "B": ("ams", "ams-sw-1", "if:1", "major", "open"),
    "C": ("ams", "ams-sw-2", "if:2", "major", "open"),
    "D": ("nbo", "nbo-r1", "cpu", "minor", "open"),
    "E": ("nbo", "nbo-r1", "if:3", "major", "acknowledged"),
    "F": ("bkk", "bkk-ce-1", "device", "critical", "open"),
    "G": ("bkk", "bkk-acc-1", "if:5", "warning", "resolved"),
}


def board_users(path: Path) -> Path:
    digest = hash_password(PASSWORD)
    path.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "name": "ops1",
                        "role": "operator",
                        "password_hash": digest,
                        "token": TOKENS["ops1"],
                    },
                    {"name": "lead", "role": "admin", "token": TOKENS["lead"]},
                ]
            }
        )
    )
    return path


@dataclass
class Agents:
    """Site agents' messages into Mosquitto, encoded as enoc.wire does for the real agent."""

    mqtt_url: str
    seqs: dict[tuple[str, str], int] = field(default_factory=dict)

    def _seq(self, agent: str, kind: str) -> int:
        self.seqs[agent, kind] = self.seqs.get((agent, kind), 0) + 1
        return self.seqs[agent, kind]

    async def _publish(self, site: str, kind: Kind, message: StatusMessage | EventsMessage) -> None:
        host, port = self.mqtt_url.removeprefix("mqtt://").split(":")
        async with aiomqtt.Client(host, int(port), identifier=f"test-{site}-1") as client:
            await client.publish(topic(site, f"{site}-1", kind), encode(message), qos=1)

    async def status(self, site: str, state: str, devices: tuple[str, ...] = ()) -> None:
        agent = f"{site}-1"
        message = StatusMessage(
            agent,
            site,
            RTC[site],
            self._seq(agent, "status"),
            time.time(),
            state="online" if state == "online" else "offline",
            devices=[DeviceInfo(d) for d in devices],
        )
        await self._publish(site, "status", message)

    async def event(
        self, site: str, device: str, resource: str, kind: str, state: str, severity: Any, text: str
    ) -> None:
        agent = f"{site}-1"
        seq = self._seq(agent, "events")
        now = time.time()
        event = Event(f"e{seq}", now, device, resource, kind, state, severity, text)
        message = EventsMessage(agent, site, RTC[site], seq, now, [event])
        await self._publish(site, "events", message)


async def call(base: str, method: str, path: str, user: str = "lead", body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, (response.status, await response.text())
        return await response.json()


def keyed(incidents: list[Any]) -> dict[tuple[str, str, str], Any]:
    return {(i.key.site, i.key.device, i.key.resource): i for i in incidents}


async def seed(collector: Collector, agents: Agents, base: str) -> dict[str, int]:
    """The incidents of SEED, made the way the collector makes them; their ids by letter."""
    await agents.status("ams", "online", ("ams-sw-1", "ams-sw-2"))
    await agents.status("nbo", "online", ("nbo-r1",))
    await agents.status("bkk", "online", ("bkk-ce-1", "bkk-acc-1"))
    await agents.status("ams", "offline")  # its last will: the WAN link to Amsterdam is down

    async def have(*keys: tuple[str, str, str]) -> bool:
        return set(keys) <= set(keyed(await collector.engine.queries.incidents(limit=100)))

    key = {letter: row[:3] for letter, row in SEED.items()}
    await eventually(lambda: have(key["A"]), what="the Amsterdam site incident")
    await agents.event("ams", "ams-sw-1", "if:1", "link", "down", "major", "Gi1/0/1 down")
    await agents.event("ams", "ams-sw-2", "if:2", "link", "down", "major", "Gi1/0/2 down")
    await agents.event("nbo", "nbo-r1", "cpu", "threshold", "high", "minor", "cpu above 90 (94)")
    await agents.event("nbo", "nbo-r1", "if:3", "link", "down", "major", "Te0/0/3 down")
    await agents.event(
        "bkk", "bkk-ce-1", "device", "reachability", "down", "critical", "no SNMP answer"
    )
    await agents.event("bkk", "bkk-acc-1", "if:5", "link", "down", "warning", "Gi1/0/5 down")
    await eventually(lambda: have(*key.values()), what="every seeded incident")
    await agents.event("bkk", "bkk-acc-1", "if:5", "link", "up", "warning", "Gi1/0/5 up")
    found = keyed(await collector.engine.queries.incidents(limit=100))
    ids = {letter: found[k].id for letter, k in key.items()}
    await call(base, "POST", f"/api/v1/incidents/{ids['E']}/ack", user="ops1")

    async def as_seeded() -> bool:
        now = keyed(await collector.engine.queries.incidents(limit=100))
        return all(now[row[:3]].state == row[4] for row in SEED.values())

    await eventually(as_seeded, what="the seeded states")
    now = keyed(await collector.engine.queries.incidents(limit=100))
    assert len(now) == len(SEED)
    assert {letter: now[k].severity for letter, k in key.items()} == {
        letter: row[3] for letter, row in SEED.items()
    }
    suppressed = {letter: now[k].suppressed_by for letter, k in key.items()}
    assert suppressed == {letter: ids["A"] if letter in "BC" else None for letter in SEED}
    return ids


@dataclass
class Board:
    collector: Collector
    base: str
    audit: Path
    ids: dict[str, int]

    def of(self, letters: str) -> set[int]:
        return {self.ids[letter] for letter in letters}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def board(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Board]:
    tmp = tmp_path_factory.mktemp("board")
    http = {
        "users_file": str(board_users(tmp / "board-users.yaml")),
        "audit_file": str(tmp / "audit.jsonl"),
    }
    async with fed_collector(tmp, http) as (collector, mqtt_url):
        base = f"http://127.0.0.1:{collector.http_port}"
        ids = await seed(collector, Agents(mqtt_url), base)
        yield Board(collector, base, tmp / "audit.jsonl", ids)


@contextlib.asynccontextmanager
async def console(
    browser: Any, base: str, path: str = "#/board", before: Callable[[Any], Any] | None = None
) -> AsyncIterator[Any]:
    """A page logged in as ops1 (its own cookies); no script error on it by the end."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if before is not None:
            await before(page)
        await page.goto(f"{base}/{path}")
        await page.fill("#login-name", "ops1")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#who:has-text('ops1 (operator)')")
        await page.wait_for_selector("#live.on")
        yield page
        assert errors == [], errors
    finally:
        await context.close()


async def rows(page: Any) -> list[int]:
    """The board's incident rows, top to bottom."""
    ids: list[str] = await page.eval_on_selector_all(
        "tr.incident", "rows => rows.map((r) => r.dataset.id)"
    )
    return [int(i) for i in ids]


async def rows_become(page: Any, expected: set[int], what: str) -> None:
    async def match() -> bool:
        return set(await rows(page)) == expected

    with contextlib.suppress(AssertionError):
        await eventually(match, timeout=10, what=what)
    assert set(await rows(page)) == expected, what


async def test_site_outage_folds_its_suppressed_device_incidents(
    board: Board, browser: Any, tmp_path: Path
) -> None:
    a, b, c = (board.ids[x] for x in "ABC")
    async with console(browser, board.base) as page:
        await rows_become(page, board.of("ADEF"), "the active incidents, B and C folded")
        # the outage is one row; its devices' incidents are folded under it
        assert await page.locator("tr.incident[data-site='ams']").count() == 1
        cause = page.locator(f"tr.incident[data-id='{a}']")
        fold = cause.locator("a.fold")
        assert await fold.inner_text() == "+2 suppressed"
        assert await page.locator("#board-count").inner_text() == "6 shown, 5 open"

        # unfolded: both right under their cause, marked suppressed
        await fold.click()
        await rows_become(page, board.of("ABCDEF"), "unfolded")
        order = await rows(page)
        at = order.index(a)
        assert order[at + 1 : at + 3] == [c, b]  # same state and severity: newest first
        for child in (b, c):
            row = page.locator(f"tr.incident[data-id='{child}']")
            assert "suppressed" in (await row.get_attribute("class") or "").split()
        assert await fold.inner_text() == "hide 2 suppressed"
        # a child's timeline says what it is suppressed under
        await page.locator(f"tr.incident[data-id='{b}']").click()
        await page.wait_for_selector(
            f"tr.detail[data-id='{b}'] .timeline li:has-text('under incident {a}')"
        )
        await page.screenshot(path=str(tmp_path / "console-board-folded.png"), full_page=True)
        save(tmp_path / "console-board-folded.png")

        # and folded again
        await fold.click()
        await rows_become(page, board.of("ADEF"), "folded again")
        assert await fold.inner_text() == "+2 suppressed"


# (filter, value, the incidents shown); the state filter is "open + acknowledged" unless
# set. B and C are folded under A where A is shown, and rows of their own where it is not.
FILTERS = [
    ("#f-rtc", "emea", "ABC"),
    ("#f-rtc", "africa", "DE"),
    ("#f-rtc", "apac", "F"),
    ("#f-site", "ams", "ABC"),
    ("#f-site", "bkk", "F"),
    ("#f-severity", "critical", "AF"),
    ("#f-severity", "major", "BCE"),
    ("#f-severity", "minor", "D"),
    ("#f-state", "open", "ABCDF"),
    ("#f-state", "acknowledged", "E"),
    ("#f-state", "resolved", "G"),
]
CLEARED = {"#f-rtc": "", "#f-site": "", "#f-severity": "", "#f-state": "active"}


async def test_each_filter_narrows_the_board_to_the_matching_incidents(
    board: Board, browser: Any
) -> None:
    async with console(browser, board.base) as page:
        await rows_become(page, board.of("ADEF"), "the active incidents")
        await page.locator(f"tr.incident[data-id='{board.ids['A']}'] a.fold").click()
        everything = board.of("ABCDEF")
        await rows_become(page, everything, "unfolded")
        for select, value, letters in FILTERS:
            what = f"{select} = {value}"
            await page.select_option(select, value)
            await rows_become(page, board.of(letters), what)
            assert (await page.locator("#board-count").inner_text()).startswith(
                f"{len(letters)} shown"
            ), what
            await page.select_option(select, CLEARED[select])
            await rows_become(page, everything, f"{what} cleared")
        # filters combine
        await page.select_option("#f-rtc", "africa")
        await page.select_option("#f-severity", "major")
        await rows_become(page, board.of("E"), "africa and major")
        await page.select_option("#f-state", "")
        await page.select_option("#f-rtc", "")
        await page.select_option("#f-severity", "")
        await rows_become(page, board.of("ABCDEFG"), "every state")
        # a suppressed incident whose cause is filtered out says what it is under
        await page.select_option("#f-severity", "major")
        badge = page.locator(f"tr.incident[data-id='{board.ids['B']}'] .badge.suppressed")
        assert await badge.inner_text() == f"suppressed under #{board.ids['A']}"


async def test_comment_on_the_board_names_the_operator_and_is_audited(
    board: Board, browser: Any
) -> None:
    d = board.ids["D"]
    async with console(browser, board.base) as page:
        await page.locator(f"tr.incident[data-id='{d}']").click()
        detail = page.locator(f"tr.detail[data-id='{d}']")
        await detail.locator(".timeline li:has-text('event')").first.wait_for()
        box = detail.locator(".comment-box input")
        await box.fill("carrier ticket 81723")
        # meanwhile someone else comments: the stream renders the board again, the
        # timeline shows it, and what ops1 is typing stays
        await call(board.base, "POST", f"/api/v1/incidents/{d}/comment", body={"text": "on it"})
        await detail.locator(".timeline li:has-text('by lead — on it')").wait_for()
        assert await box.input_value() == "carrier ticket 81723"
        await detail.locator(".comment-box button").click()
        await detail.locator(".timeline li:has-text('by ops1 — carrier ticket 81723')").wait_for()
        assert await box.input_value() == ""
    full = await call(board.base, "GET", f"/api/v1/incidents/{d}")
    comments = [(t["actor"], t["text"]) for t in full["timeline"] if t["what"] == "comment"]
    assert comments == [("lead", "on it"), ("ops1", "carrier ticket 81723")]
    records = [json.loads(line) for line in board.audit.read_text().splitlines()]
    audited = [r for r in records if r["action"] == "comment" and r["incident"] == d]
    assert [(r["actor"], r["text"]) for r in audited] == comments
    assert audited[1]["remote"] == "127.0.0.1"


async def test_a_ticket_number_appears_on_the_board_live_and_links_to_the_ticket(
    board: Board, browser: Any
) -> None:
    f = board.ids["F"]
    url = "https://acme.service-now.com/nav_to.do?uri=incident.do%3Fsys_id%3Dab12"
    ticket = Ticket("INC0010042", "ab12", url)
    async with console(browser, board.base) as page:
        await page.locator(f"tr.incident[data-id='{f}']").wait_for()
        # kept as the servicenow notifier keeps it: the stream's `ticketed` change shows it
        await board.collector.store.run(
            lambda tx: save_ticket(tx, "servicenow https://acme", f, ticket, time.time())
        )
        badge = page.locator(f"tr.incident[data-id='{f}'] a.badge.ticket")
        await badge.wait_for()
        assert await badge.inner_text() == "INC0010042"
        assert await badge.get_attribute("href") == url
        assert await page.locator("a.badge.ticket").count() == 1, "on its own incident only"
    shown = await call(board.base, "GET", f"/api/v1/incidents/{f}")
    assert shown["ticket"] == {"number": "INC0010042", "sys_id": "ab12", "url": url}


async def test_board_is_current_after_a_stream_outage_longer_than_the_retention(
    tmp_path: Path, mosquitto: Mosquitto, browser: Any
) -> None:
    """The console's stream is cut; while it is away the incidents change, the collector
    restarts (its replay ring is gone) and the log passes store.changes_retention. On
    reconnect the collector cannot replay: it says `reset`, and the board reloads."""
    key = tmp_path / "session-key"
    key.write_text(secrets.token_hex(32))  # the session outlives the restart
    config = collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "http": {
                "users_file": str(board_users(tmp_path / "board-users.yaml")),
                "session_key_file": str(key),
            },
            "incidents": {"agent_timeout": "1h"},
        },
    )
    agents = Agents(mosquitto.url)
    streams: list[str] = []  # the stream requests let through
    gate = {"mode": "pass"}

    async def stream_gate(route: Any) -> None:
        mode = gate["mode"]
        if mode == "abort":  # the network is gone: the browser retries by itself
            await route.abort()
        elif mode == "502":  # a proxy while the collector restarts: the browser gives up
            gate["mode"] = "pass"
            await route.fulfill(status=502, body="bad gateway")
        else:
            streams.append(route.request.url)
            await route.continue_()

    async def gated(page: Any) -> None:
        await page.route("**/api/v1/stream*", stream_gate)

    async def incident(coll: Collector, device: str) -> Any:
        return keyed(await coll.engine.queries.incidents(limit=100)).get(("lis", device, "if:1"))

    first = contextlib.AsyncExitStack()
    coll = await first.enter_async_context(running_collector(config))
    base = f"http://127.0.0.1:{coll.http_port}"
    try:
        await agents.event("lis", "lis-r1", "if:1", "link", "down", "major", "Gi0/1 down")
        await eventually(lambda: incident(coll, "lis-r1"), what="lis-r1's incident")
        x = (await incident(coll, "lis-r1")).id
        async with console(browser, base, before=gated) as page:
            await rows_become(page, {x}, "lis-r1 on the board")
            # the stream is cut and stays away
            gate["mode"] = "abort"
            coll.hub.close()
            await page.wait_for_selector("#live.off")
            # meanwhile: lis-r1 is resolved, lis-r2 goes down, the collector restarts
            await call(base, "POST", f"/api/v1/incidents/{x}/resolve")
            await agents.event("lis", "lis-r2", "if:1", "link", "down", "major", "Gi0/1 down")
            await eventually(lambda: incident(coll, "lis-r2"), what="lis-r2's incident")
            y = (await incident(coll, "lis-r2")).id
            await first.aclose()
            async with running_collector(config) as coll:
                # ... and the changes pass the retention (as if two hours old): pruned
                def age(tx: Tx) -> int:
                    return tx.execute("UPDATE changes SET at = at - 7200")

                assert await coll.store.run(age) >= 3
                await coll.feed.prune()
                assert await coll.store.read(lambda tx: tx.one("SELECT COUNT(*) FROM changes")) == (
                    0,
                )
                # the network is back: the browser resumes (Last-Event-ID) from where it
                # was told it starts, which the log no longer holds; only a resumed
                # stream is ever reset (Chromium adds the header below interception)
                gate["mode"] = "pass"
                await page.wait_for_selector("#toast:has-text('away too long')", timeout=20_000)
                await rows_become(page, {y}, "the current incidents after the reset")
                await page.wait_for_selector("#live.on")
                resumes_from = coll.hub.last_id  # the reset's id

                # a proxy answers 502 (EventSource gives up for good): the console opens a
                # new stream from the reset's id, and the board gets what happened since
                gate["mode"] = "502"
                reconnects = len(streams)
                coll.hub.close()
                await page.wait_for_selector("#live.off")
                await agents.event("lis", "lis-r3", "if:1", "link", "down", "major", "Gi0/1 down")
                await eventually(lambda: incident(coll, "lis-r3"), what="lis-r3's incident")
                z = (await incident(coll, "lis-r3")).id
                await rows_become(page, {y, z}, "lis-r3 after the new stream")
                await page.wait_for_selector("#live.on")
                assert gate["mode"] == "pass", "the 502 was served"
                assert len(streams) == reconnects + 1
                assert streams[-1].endswith(f"/api/v1/stream?last_id={resumes_from}")
    finally:
        await first.aclose()
