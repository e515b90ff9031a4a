"""Scopes: two RTC-scoped operators and an admin on one collector, over a real Mosquitto.

Each operator's API (every route), event stream and console (in Chromium) show
only its RTC's incidents, sites, devices, agents, stats and availability; acting
on the other RTC is refused as if it did not exist (404) or forbidden (403);
maintenance windows are opened and deleted inside the scope only; the admin
sees everything. Sites: ams and lis (emea), bkk (apac), nbo (africa).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from collectorkit import eventually, fed_collector
from test_console_browser import RTC, Agents, browser, chromium_binary

from collector import api as collector_api
from collector.access import ScopeConfig
from collector.app import Collector
from collector.auth import hash_password
from collector.session import COOKIE

pytestmark = [pytest.mark.servers, pytest.mark.asyncio(loop_scope="module")]
__all__ = ["browser", "chromium_binary"]  # the console test's fixtures, shared

PASSWORD = "scoped horse battery staple"
TOKENS = {
    name: secrets.token_hex(16) for name in ("emea-ops", "apac-ops", "nbo-eye", "lead", "emea-lead")
}
SCOPES: dict[str, dict[str, list[str]] | None] = {
    "emea-ops": {"rtc": ["emea"]},
    "apac-ops": {"rtc": ["apac"]},
    "nbo-eye": {"site": ["nbo"]},
    "lead": None,
    "emea-lead": {"rtc": ["emea"]},  # an admin of one region
}
ROLES = {
    "emea-ops": "operator",
    "apac-ops": "operator",
    "nbo-eye": "viewer",
    "lead": "admin",
    "emea-lead": "admin",
}
DEVICES = {
    "ams": ("ams-sw-1", "ams-sw-2"),
    "lis": ("lis-r1",),
    "bkk": ("bkk-ce-1",),
    "nbo": ("nbo-r1",),
}
# (site, device, resource, kind, severity): one open incident each
SEED = [
    ("ams", "ams-sw-1", "if:1", "link", "major"),
    ("lis", "lis-r1", "cpu", "threshold", "minor"),
    ("bkk", "bkk-ce-1", "if:2", "link", "major"),
    ("nbo", "nbo-r1", "if:3", "link", "major"),
]


def sites_of(user: str) -> set[str]:
    """The sites `user`'s scope reaches, by the fixture's RTCs (None: all of them)."""
    scope = SCOPES[user]
    if scope is None:
        return set(DEVICES)
    return {s for s in DEVICES if RTC[s] in scope.get("rtc", []) or s in scope.get("site", [])}


def users_yaml(path: Path) -> Path:
    digest = hash_password(PASSWORD)
    users = []
    for name, token in TOKENS.items():
        user: dict[str, Any] = {"name": name, "role": ROLES[name], "token": token}
        user["password_hash"] = digest
        if SCOPES[name] is not None:
            user["scope"] = SCOPES[name]
        users.append(user)
    path.write_text(yaml.safe_dump({"users": users}))
    return path


@dataclass
class Scoped:
    collector: Collector
    base: str
    agents: Agents
    ids: dict[str, int]  # the seeded incidents' ids by site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scoped(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scoped]:
    tmp = tmp_path_factory.mktemp("scoped")
    http = {"users_file": str(users_yaml(tmp / "scoped-users.yaml"))}
    async with fed_collector(tmp, http) as (collector, mqtt_url):
        agents = Agents(mqtt_url)
        for site, devices in DEVICES.items():
            await agents.status(site, "online", devices)
        for site, device, resource, kind, severity in SEED:
            await agents.event(site, device, resource, kind, "down", severity, "seeded")

        async def seeded() -> bool:
            found = await collector.engine.queries.incidents(limit=100)
            devices = await collector.engine.queries.devices()
            return len(found) == len(SEED) and len(devices) == 5

        await eventually(seeded, what="every seeded incident and device")
        found = await collector.engine.queries.incidents(limit=100)
        ids = {i.key.site: i.id for i in found}
        yield Scoped(collector, f"http://127.0.0.1:{collector.http_port}", agents, ids)


async def call(base: str, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + path, json=body, headers=headers) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def get(base: str, path: str, user: str) -> Any:
    status, body = await call(base, "GET", path, user)
    assert status == 200, (path, user, status, body)
    return body


@pytest.mark.parametrize("user", ["emea-ops", "apac-ops", "nbo-eye", "lead"])
async def test_every_read_shows_only_the_scope(scoped: Scoped, user: str) -> None:
    base, mine = scoped.base, sites_of(user)
    assert mine and (user == "lead" or mine < set(DEVICES))
    rtcs = {RTC[s] for s in mine}
    me = await get(base, "/api/v1/whoami", user)
    assert me["scope"] == (
        None if SCOPES[user] is None else {"rtc": [], "site": [], **SCOPES[user]}  # type: ignore[dict-item]
    )

    incidents = (await get(base, "/api/v1/incidents?state=", user))["incidents"]
    assert {i["site"] for i in incidents} == mine
    # a filter for another RTC finds nothing rather than the other RTC's incidents
    for rtc in set(RTC.values()) - rtcs:
        assert (await get(base, f"/api/v1/incidents?rtc={rtc}", user))["incidents"] == []
    for site, incident_id in scoped.ids.items():
        status, body = await call(base, "GET", f"/api/v1/incidents/{incident_id}", user)
        if site in mine:
            assert status == 200, body
            assert body["timeline"]
        else:  # not shown: as an incident that does not exist
            assert (status, body) == (404, {"error": f"no incident {incident_id}"})

    sites = (await get(base, "/api/v1/sites", user))["sites"]
    assert {s["site"] for s in sites} == mine
    assert sum(sum(s["incidents"].values()) for s in sites) == len(mine)
    devices = (await get(base, "/api/v1/devices", user))["devices"]
    assert {(d["site"], d["device"]) for d in devices} == {(s, d) for s in mine for d in DEVICES[s]}
    for site, names in DEVICES.items():
        status, body = await call(base, "GET", f"/api/v1/devices/{site}/{names[0]}", user)
        if site in mine:
            assert status == 200, body
            assert {i["site"] for i in body["incidents"]} <= {site}
        else:
            assert status == 404, body
            assert body == {"error": f"no device {names[0]} at site {site}"}
        listed = (await get(base, f"/api/v1/devices?site={site}", user))["devices"]
        assert bool(listed) == (site in mine)
    agents = (await get(base, "/api/v1/agents", user))["agents"]
    assert {a["site"] for a in agents} == mine

    stats = (await get(base, "/api/v1/stats", user))["stats"]
    assert {s["site"] for s in stats} == mine
    trend = await get(base, "/api/v1/stats/trend?by=rtc", user)
    assert set(trend["groups"]) == rtcs
    trend = await get(base, "/api/v1/stats/trend?by=site", user)
    assert set(trend["groups"]) == mine
    now = time.time()
    series = await get(
        base, f"/api/v1/stats/open?from={now - 3600:.0f}&to={now + 60:.0f}&step=60", user
    )
    assert series["rows"][-1]["open"] == len([i for i in incidents if i["state"] != "resolved"])

    by_device = (await get(base, "/api/v1/availability?by=device", user))["rows"]
    assert {(r["site"], r["device"]) for r in by_device} == {
        (s, d) for s in mine for d in DEVICES[s]
    }
    by_site = (await get(base, "/api/v1/availability?by=site", user))["rows"]
    assert {r["site"] for r in by_site} == mine
    by_rtc = (await get(base, "/api/v1/availability?by=rtc", user))["rows"]
    # an RTC's row sums only the devices in scope
    assert {r["rtc"]: r["devices"] for r in by_rtc} == {
        rtc: sum(len(DEVICES[s]) for s in mine if RTC[s] == rtc) for rtc in rtcs
    }
    status, body = await call(base, "GET", "/api/v1/availability?by=site&format=csv", user)
    assert status == 200
    assert {line.split(",")[0] for line in body.splitlines()[1:]} == mine

    # /metrics sums every region: for unscoped callers only
    status, body = await call(base, "GET", "/metrics", user)
    if user == "lead":
        assert status == 200
        assert "enoc_collector_" in body
    else:
        assert status == 403
        assert "scope" in body["error"]


async def test_acting_across_the_boundary_is_refused(scoped: Scoped) -> None:
    base = scoped.base
    ams, bkk = scoped.ids["ams"], scoped.ids["bkk"]
    for action, body in (("comment", {"text": "not mine"}), ("ack", None), ("resolve", None)):
        status, answer = await call(
            base, "POST", f"/api/v1/incidents/{bkk}/{action}", "emea-ops", body
        )
        assert (status, answer) == (404, {"error": f"no incident {bkk}"}), action
        status, answer = await call(
            base, "POST", f"/api/v1/incidents/{ams}/{action}", "apac-ops", body
        )
        assert (status, answer) == (404, {"error": f"no incident {ams}"}), action
    untouched = await scoped.collector.engine.queries.incident(bkk)
    assert untouched.state == "open"
    assert [t.what for t in untouched.timeline] == ["event"]
    # inside the scope the same actions work
    status, answer = await call(
        base, "POST", f"/api/v1/incidents/{ams}/comment", "emea-ops", {"text": "on it"}
    )
    assert status == 200, answer
    status, answer = await call(base, "POST", f"/api/v1/incidents/{bkk}/ack", "apac-ops")
    assert (status, answer["acknowledged_by"]) == (200, "apac-ops")
    # a viewer of nbo acts nowhere (its role), and the admin everywhere
    status, _ = await call(
        base, "POST", f"/api/v1/incidents/{scoped.ids['nbo']}/comment", "nbo-eye", {"text": "x"}
    )
    assert status == 403
    status, answer = await call(
        base, "POST", f"/api/v1/incidents/{scoped.ids['lis']}/comment", "lead", {"text": "seen"}
    )
    assert status == 200, answer


async def test_healthz_details_are_for_callers_without_a_scope(scoped: Scoped) -> None:
    """The links serve every region: a scoped caller (token or session) learns ok or
    not, as anyone does; the unscoped admin learns each link's state."""
    base = scoped.base
    for user in ("emea-ops", "nbo-eye", "emea-lead"):
        assert await call(base, "GET", "/healthz", user) == (200, {"ok": True}), user
    details = await get(base, "/healthz", "lead")
    assert details["store"]["ok"] and details["mqtt"]["ok"], details
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        login = {"name": "apac-ops", "password": PASSWORD}
        async with http.post(base + "/login", json=login) as r:
            assert r.status == 200
        async with http.get(base + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"ok": True})


async def test_maintenance_windows_inside_and_outside_the_scope(scoped: Scoped) -> None:
    base = scoped.base

    async def open_window(user: str, **fields: str) -> tuple[int, Any]:
        return await call(base, "POST", "/api/v1/maintenance", user, {"ends": "2h", **fields})

    made: dict[str, int] = {}
    for name, user, fields in (
        ("ams", "emea-ops", {"site": "ams"}),
        ("ams-sw-1", "emea-ops", {"device": "ams-sw-1"}),  # pinned to the device's site
        ("lis-glob", "emea-ops", {"match": "lis/*"}),
        ("bkk", "apac-ops", {"site": "bkk"}),
        ("core", "lead", {"match": "*/core-*/*"}),  # reaches every site
        ("nbo", "lead", {"site": "nbo"}),
        ("any-ams-sw-2", "lead", {"device": "ams-sw-2"}),  # that name at any site
    ):
        status, body = await open_window(user, **fields)
        assert status == 201, (name, body)
        assert body["created_by"] == user
        made[name] = body["id"]
    status, body = await call(base, "GET", "/api/v1/maintenance", "lead")
    pinned = next(w for w in body["windows"] if w["id"] == made["ams-sw-1"])
    assert (pinned["site"], pinned["device"]) == ("ams", "ams-sw-1")

    # anything that could reach beyond the scope is forbidden, and says why, to an
    # operator and to an admin of the region alike
    for user, fields in itertools.product(
        ("emea-ops", "emea-lead"),
        (
            {"site": "bkk"},
            {"device": "bkk-ce-1"},  # a device of apac
            {"device": "nowhere-1"},  # known at no site: it could match one anywhere
            {"match": "bkk/*"},
            {"match": "*/ams-sw-1/*"},  # a glob site part reaches every site
            {"match": "am?/*"},
        ),
    ):
        status, body = await open_window(user, **fields)
        assert status == 403, (user, fields)
        assert "only inside its scope (rtc emea)" in body["error"], body
    status, body = await open_window("nbo-eye", site="nbo")
    assert status == 403
    assert "needs operator" in body["error"]

    async def listed(user: str) -> set[int]:
        return {w["id"] for w in (await get(base, "/api/v1/maintenance", user))["windows"]}

    assert await listed("lead") == set(made.values())
    assert await listed("emea-ops") == {
        made[n] for n in ("ams", "ams-sw-1", "lis-glob", "core", "any-ams-sw-2")
    }
    assert await listed("apac-ops") == {made["bkk"], made["core"]}
    assert await listed("nbo-eye") == {made["nbo"], made["core"]}

    # deleting: a window not shown is not found; one shown but reaching beyond the scope
    # is forbidden; one inside goes
    status, body = await call(base, "DELETE", f"/api/v1/maintenance/{made['bkk']}", "emea-ops")
    assert (status, body) == (404, {"error": f"no maintenance window {made['bkk']}"})
    status, body = await call(base, "DELETE", f"/api/v1/maintenance/{made['core']}", "emea-ops")
    assert status == 403, body
    # the admin's device-only window reaches ams-sw-2 wherever it appears: judged as it
    # stands, not pinned to the one site that has the name today
    status, body = await call(
        base, "DELETE", f"/api/v1/maintenance/{made['any-ams-sw-2']}", "emea-ops"
    )
    assert status == 403, body
    for name in ("ams", "ams-sw-1", "lis-glob"):
        status, body = await call(base, "DELETE", f"/api/v1/maintenance/{made[name]}", "emea-ops")
        assert (status, body) == (200, {"deleted": made[name]})
    status, _ = await call(base, "DELETE", f"/api/v1/maintenance/{made['nbo']}", "nbo-eye")
    assert status == 403
    for name in ("bkk", "core", "nbo", "any-ams-sw-2"):
        status, _ = await call(base, "DELETE", f"/api/v1/maintenance/{made[name]}", "lead")
        assert status == 200
    assert await listed("lead") == set()


async def read_blocks(
    response: aiohttp.ClientResponse, queue: asyncio.Queue[dict[str, Any]]
) -> None:
    """Every block of the stream with an id or data (an id alone moves Last-Event-ID)."""
    block: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "id" in block or "data" in block:
                await queue.put(block)
            block = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            block[name] = json.loads(value) if name == "data" else value


@contextlib.asynccontextmanager
async def stream(
    base: str, user: str, last_id: str = "", cookie: str = ""
) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    if not cookie:
        headers["Authorization"] = f"Bearer {TOKENS[user]}"
    if last_id:
        headers["Last-Event-ID"] = last_id
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/stream", headers=headers) as response,
    ):
        assert response.status == 200
        reader = asyncio.create_task(read_blocks(response, queue))
        try:
            yield queue
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def until(queue: asyncio.Queue[dict[str, Any]], done: Any) -> list[dict[str, Any]]:
    """The blocks up to and including the first for which `done(block)` holds."""
    got = []
    while True:
        block = await asyncio.wait_for(queue.get(), 20)
        got.append(block)
        if done(block):
            return got


def place(block: dict[str, Any]) -> str:
    data = block.get("data", {})
    return str((data.get("incident") or data).get("site", ""))


def data(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event, site) of the blocks that are events, in order."""
    return [(b["event"], place(b)) for b in blocks if "data" in b]


async def test_streams_carry_only_the_scope_and_resume_alike(
    scoped: Scoped, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_api, "SSE_HEARTBEAT", 0.3)  # the id of what was left out
    base, agents = scoped.base, scoped.agents
    async with (
        stream(base, "emea-ops") as emea,
        stream(base, "apac-ops") as apac,
        stream(base, "lead") as lead,
    ):
        # each is told where it starts: the same place
        (start,) = {(await asyncio.wait_for(q.get(), 20))["id"] for q in (emea, apac, lead)}
        await agents.status("bkk", "online", DEVICES["bkk"])
        await agents.status("ams", "online", DEVICES["ams"])
        await agents.event("bkk", "bkk-ce-1", "if:7", "link", "down", "major", "live bkk")
        await agents.event("ams", "ams-sw-2", "if:7", "link", "down", "major", "live ams")
        seen: list[dict[str, Any]] = []
        while len(data(seen)) < 4:
            seen.append(await asyncio.wait_for(lead.get(), 20))
        # last, one neither operator may see: each must still be told its id
        await agents.event("nbo", "nbo-r1", "if:7", "link", "down", "major", "live nbo")
        seen += await until(lead, lambda b: "data" in b)
        assert sorted(data(seen)) == [
            ("incident", "ams"),
            ("incident", "bkk"),
            ("incident", "nbo"),
            ("status", "ams"),
            ("status", "bkk"),
        ]
        final = seen[-1]["id"]
        assert data(seen[-1:]) == [("incident", "nbo")]
        for q, site in ((emea, "ams"), (apac, "bkk")):
            got = await until(q, lambda b: int(b["id"]) >= int(final))
            assert sorted(data(got)) == [("incident", site), ("status", site)]
            assert got[-1] == {"id": final}  # the rest left out, its id alone
    # a resume replays the same way: only the scope's events, from where it was
    for user, sites in (("emea-ops", ["ams"]), ("apac-ops", ["bkk"]), ("nbo-eye", [])):
        async with stream(base, user, last_id=start) as q:
            got = await until(q, lambda b: int(b["id"]) >= int(final))
            expected = [("incident", s) for s in sites] + [("status", s) for s in sites]
            if user == "nbo-eye":
                expected = [("incident", "nbo")]
            assert sorted(data(got)) == expected, user


async def test_a_stream_follows_the_scope_its_session_has_now(
    scoped: Scoped, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_api, "SSE_HEARTBEAT", 0.3)  # the session is checked as often
    base, users = scoped.base, scoped.collector.users
    assert users is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/login", json={"name": "emea-ops", "password": PASSWORD}) as r,
    ):
        assert r.status == 200
        cookie = r.cookies[COOKIE].value
    before = users.users
    try:
        async with stream(base, "emea-ops", cookie=cookie) as q:
            await asyncio.wait_for(q.get(), 20)  # connected
            await scoped.agents.event("bkk", "bkk-ce-1", "if:8", "link", "down", "major", "a")
            await scoped.agents.event("ams", "ams-sw-2", "if:8", "link", "down", "major", "b")
            got = await until(q, lambda b: place(b) == "ams")
            assert [place(b) for b in got if "data" in b] == ["ams"]
            # the users file now gives emea-ops apac instead (as a reload would)
            users.users = [
                replace(u, scope=ScopeConfig(rtc=["apac"])) if u.name == "emea-ops" else u
                for u in before
            ]
            await asyncio.sleep(1)  # a few session checks
            await scoped.agents.event("ams", "ams-sw-2", "if:9", "link", "down", "major", "c")
            await scoped.agents.event("bkk", "bkk-ce-1", "if:9", "link", "down", "major", "d")
            got = await until(q, lambda b: place(b) == "bkk")
            assert [place(b) for b in got if "data" in b] == ["bkk"]
    finally:
        users.users = before


# ---------------------------------------------------------------- the console


async def board_sites(page: Any) -> set[str]:
    found: list[str] = await page.eval_on_selector_all(
        "tr.incident", "rows => rows.map((r) => r.dataset.site)"
    )
    return set(found)


async def board_is(page: Any, sites: set[str]) -> bool:
    return await board_sites(page) == sites


async def acted_as_by_a_token(
    scoped: Scoped, page: Any, user: str, site: str, resource: str
) -> None:
    """A store token bearing `user`'s name acknowledges and comments `site`'s incident on
    `resource`: the console names it with its identity, the user's own comment without."""
    status, token = await call(
        scoped.base,
        "POST",
        "/api/v1/tokens",
        "lead",
        {"name": user, "role": "operator", "scope": SCOPES[user], "expires": "1h"},
    )
    assert status == 201, token
    found = await scoped.collector.engine.queries.incidents(limit=100)
    (incident,) = [i for i in found if (i.key.site, i.key.resource) == (site, resource)]
    path = f"/api/v1/incidents/{incident.id}"
    headers = {"Authorization": f"Bearer {token['token']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for action, body in (("ack", None), ("comment", {"text": "by the script"})):
            async with http.post(f"{scoped.base}{path}/{action}", json=body) as r:
                assert r.status == 200, await r.text()
    assert (await call(scoped.base, "POST", f"{path}/comment", user, {"text": "me"}))[0] == 200
    shown = f"{user} (token:{token['id']})"
    row = page.locator(f"tr.incident[data-id='{incident.id}']")
    state = row.locator(f"td.state:has-text('acknowledged ({shown})')")
    await state.wait_for()
    await state.click()  # not the row's middle: the device's link is there
    timeline = page.locator(f"tr.detail[data-id='{incident.id}'] .timeline")
    await timeline.locator(f"li:has-text('by {shown} — by the script')").wait_for()
    await timeline.locator(f"li:has-text('by {user} — me')").wait_for()
    await state.click()  # folded again


async def test_each_operator_console_shows_only_its_rtc(scoped: Scoped, browser: Any) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{scoped.base}/#/board")
        for user, rtc in (("emea-ops", "emea"), ("apac-ops", "apac")):
            mine = sites_of(user)
            await page.fill("#login-name", user)
            await page.fill("#login-password", PASSWORD)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector(f"#who:has-text('{user} (operator)')")
            assert await page.locator("#scope").inner_text() == f"RTC {rtc}"
            await page.wait_for_selector("#live.on")
            await eventually(partial(board_is, page, mine), timeout=10, what=f"{user}'s board")
            options = await page.eval_on_selector_all(
                "#f-rtc option", "options => options.map((o) => o.value)"
            )
            assert options == ["", rtc]
            sites = await page.eval_on_selector_all(
                "#f-site option", "options => options.map((o) => o.value)"
            )
            assert set(sites) == {"", *mine}
            # live: another RTC's new incident first, then one of its own; only its own
            # arrives (the stream is in order: the other's would have come before)
            other = next(s for s in DEVICES if s not in mine and RTC[s] != "africa")
            own = sorted(mine)[0]
            await scoped.agents.event(
                other, DEVICES[other][0], f"if:{rtc}", "link", "down", "major", "x"
            )
            await scoped.agents.event(
                own, DEVICES[own][0], f"if:{rtc}", "link", "down", "major", "y"
            )
            await page.wait_for_selector(f"tr.incident[data-site='{own}'] >> text=if:{rtc}")
            assert await board_sites(page) == mine
            if user == "emea-ops":
                await acted_as_by_a_token(scoped, page, user, own, f"if:{rtc}")
            await page.click("nav a[data-page=overview]")
            await page.wait_for_selector(".tile")
            tiles = await page.eval_on_selector_all(
                ".tile", "tiles => tiles.map((t) => t.dataset.site)"
            )
            assert set(tiles) == mine
            # the site column of the stats and the availability tables
            for page_name, table in (("stats", "#stats-rows"), ("availability", "#avail-rows")):
                await page.click(f"nav a[data-page={page_name}]")
                await page.wait_for_selector(f"{table} tr")
                cells = await page.eval_on_selector_all(
                    f"{table} tr td:first-child", "cells => cells.map((c) => c.textContent)"
                )
                assert {c.strip(" ▸▾") for c in cells} == mine, page_name
            await page.click("nav a[data-page=board]")
            await page.click("#logout")
            await page.wait_for_selector("#login-view:visible")
            # nothing of this login's scope stays in the page for the next one
            for shown in ("#board-rows", "#tiles", "#stats-rows", "#avail-rows"):
                assert await page.eval_on_selector(shown, "n => n.children.length") == 0, shown
        assert errors == [], errors
    finally:
        await context.close()
