"""Tickets: the `servicenow` notifier against a stand-in of the Table API on loopback
(testbed/servicenow.py), and the way back (collector/tickets.py).

An incident makes one ticket, whose number the incident carries; its changes update the
ticket and its resolution resolves it; a ticket resolved or taken in progress at the desk
resolves or acknowledges the incident with the desk's user as the actor, and nothing is
sent back. Bad credentials are dead-lettered at once, a 5xx is retried, and a collector
killed between the create and its cursor leaves one ticket per incident."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from collectorkit import T0, TOKENS, Clock, collector_config, eventually, running_collector
from test_collector_notify import delivering, logged, msg, notifier_for
from test_collector_replicas import publish_event, replica_pair, replicas_running

from collector.config import CollectorConfig, IncidentsConfig, ServiceNowConfig, WebhookConfig
from collector.incidents import Engine
from collector.notifiers.servicenow import (
    IMPACT_URGENCY,
    new_ticket,
    servicenow_time,
    ticket_update,
)
from collector.notify import read_dead_letters
from collector.store import Store
from collector.tickets import TicketSync
from enoc.config import ConfigError, Duration, Secret, parse_config
from testbed.servers import Mosquitto, PostgreSQL
from testbed.servicenow import ServiceNowStandIn, select

PASSWORD = "pw-for-the-desk-7f3a"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def desk(clock: Clock) -> AsyncIterator[ServiceNowStandIn]:
    stand_in = ServiceNowStandIn(password=PASSWORD, now=clock)
    await stand_in.start()
    yield stand_in
    await stand_in.close()


@pytest.fixture
async def engine(tmp_path: Path, clock: Clock) -> AsyncIterator[Engine]:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    yield Engine(store, IncidentsConfig(), now=clock)
    await store.close()


def ticket_hook(
    desk: ServiceNowStandIn, password: str = PASSWORD, poll: float = 0.1, **settings: Any
) -> WebhookConfig:
    return WebhookConfig(
        url=desk.url,
        format="servicenow",
        name="desk",
        username="enoc",
        password=Secret(password),
        timeout=Duration(2),
        servicenow=ServiceNowConfig(poll_interval=Duration(poll), **settings),
    )


def only_ticket(desk: ServiceNowStandIn, incident_id: int) -> dict[str, Any]:
    found = desk.by_correlation(f"enoc-{incident_id}")
    assert len(found) == 1, f"one ticket for incident {incident_id}: {found}"
    return found[0]


async def test_a_ticket_follows_its_incident_from_open_to_resolved(
    engine: Engine, desk: ServiceNowStandIn, clock: Clock
) -> None:
    notifier = notifier_for(
        ticket_hook(desk, caller_id="enoc-integration", assignment_group="NOC"),
        clock=clock,
        store=engine.store,
    )
    async with delivering(notifier):
        (opened,) = logged(notifier, await engine.on_events(msg(("nbo-pe-1", "if:3", "down"))))
        incident_id = opened.incident.id
        await eventually(
            lambda: bool(desk.by_correlation(f"enoc-{incident_id}")), what="the ticket"
        )
        ticket = only_ticket(desk, incident_id)
        assert ticket["number"] == "INC0010001"
        assert (
            (ticket["impact"], ticket["urgency"])
            == ("2", "1")
            == tuple(str(v) for v in IMPACT_URGENCY["major"])
        )
        assert ticket["short_description"] == "[major] nairobi: nbo-pe-1: if:3 down"
        assert ticket["caller_id"] == "enoc-integration" and ticket["assignment_group"] == "NOC"
        assert f"enoc incident {incident_id}" in ticket["description"]

        async def kept() -> dict[str, str] | None:
            return (await engine.queries.incident(incident_id)).ticket

        async def is_kept() -> bool:
            return await kept() is not None

        await eventually(is_kept, what="the ticket kept on the incident")
        shown = await kept()
        assert shown is not None
        assert shown["number"] == "INC0010001" and shown["sys_id"] == ticket["sys_id"]
        assert shown["url"].startswith(desk.url + "/nav_to.do?uri=incident.do")

        clock.t += 60
        escalated = await engine.escalate(incident_id, 1)
        assert escalated is not None
        logged(notifier, [escalated])
        clock.t += 60
        logged(notifier, [await engine.operators.act(incident_id, "ack", "ops1")])
        await eventually(lambda: ticket["state"] == "2", what="in progress")
        clock.t += 60
        logged(notifier, await engine.on_events(msg(("nbo-pe-1", "if:3", "up"), ts=clock.t)))
        await eventually(lambda: ticket["state"] == "6", what="resolved")
    assert ticket["close_code"] == "Solution provided"
    assert ticket["close_notes"].startswith("Resolved in enoc by auto")
    notes = [text for kind, _by, text in desk.journal[ticket["sys_id"]] if kind == "work_notes"]
    assert notes[:2] == ["Escalated in enoc to level 1", "Acknowledged in enoc by ops1"]
    assert notes[2].startswith("Resolved") and len(notes) == 3
    assert desk.creates == 1
    # streams hear that the incident has a ticket now; no notifier sends that change on
    changes = await engine.store.changes_after(0, 100, "incident")
    assert [c for _, _, c, _ in changes] == [
        "opened",
        "ticketed",
        "escalated",
        "acknowledged",
        "resolved",
    ]
    ticketed = json.loads(changes[1][3])["incident"]["ticket"]
    assert ticketed["number"] == "INC0010001"


@pytest.mark.parametrize(
    ("severity", "impact", "urgency"),
    [
        ("critical", "1", "1"),
        ("major", "2", "1"),
        ("minor", "2", "2"),
        ("warning", "3", "2"),
        ("info", "3", "3"),
    ],
)
def test_severity_becomes_impact_and_urgency_as_documented(
    severity: str, impact: str, urgency: str
) -> None:
    incident = {
        "id": 7,
        "severity": severity,
        "site": "bkk",
        "device": "bkk-ce-1",
        "resource": "device",
        "kind": "reachability",
        "rtc": "apac",
        "title": "bkk-ce-1 down",
        "opened": T0,
        "state": "open",
        "count": 1,
    }
    made = new_ticket(incident, ServiceNowConfig(), "enoc-7")
    assert (made["impact"], made["urgency"]) == (impact, urgency)
    assert made["correlation_id"] == "enoc-7"
    assert made["short_description"] == f"[{severity}] bkk: bkk-ce-1 down"
    update = ticket_update("updated", incident, ServiceNowConfig())
    assert (update["impact"], update["urgency"]) == (impact, urgency)


async def test_a_resolve_or_an_ack_at_the_desk_comes_back_with_its_actor(
    engine: Engine, desk: ServiceNowStandIn, clock: Clock
) -> None:
    hook = ticket_hook(desk)
    notifier = notifier_for(hook, clock=clock, store=engine.store)
    published: list[str] = []

    async def publish(changes: list[Any]) -> None:
        published.extend(c.change for c in changes)
        logged(notifier, changes)

    sync = TicketSync(notifier.config, engine.store, engine.operators, publish, now=clock)
    async with delivering(notifier), delivering(sync):
        changes = await engine.on_events(
            msg(*[(f"nbo-pe-{n}", f"if:{n}", "down") for n in (1, 2, 3)])
        )
        logged(notifier, changes)
        first, second, third = (c.incident.id for c in changes)
        await eventually(lambda: len(desk.records) == 3, what="three tickets")
        one, two, three = (only_ticket(desk, i) for i in (first, second, third))
        clock.t += 5
        desk.desk_update(
            one["sys_id"],
            "jdoe",
            state="6",
            close_code="Solution provided",
            close_notes="fibre spliced",
        )
        desk.desk_update(two["sys_id"], "asmith", assigned_to="asmith")
        # resolved at the desk, then a work note of enoc's own before the way back reads it
        desk.desk_update(three["sys_id"], "jdoe", state="6", close_notes="power restored")
        desk.desk_update(three["sys_id"], "enoc", work_notes="Escalated in enoc to level 1")

        async def states() -> tuple[str, ...]:
            found = [await engine.queries.incident(i) for i in (first, second, third)]
            return tuple(i.state for i in found)

        await eventually(
            lambda: _is(states(), ("resolved", "acknowledged", "resolved")), what="all came back"
        )
        # another round reads the same tickets again (>= the cursor): nothing happens twice
        await asyncio.sleep(0.5)
    resolved = await engine.queries.incident(first)
    acked = await engine.queries.incident(second)
    assert resolved.resolved_by == "servicenow:jdoe"
    assert acked.acknowledged_by == "servicenow:asmith"
    entry = next(t for t in resolved.timeline if t.what == "resolve")
    assert (entry.actor, entry.text) == (
        "servicenow:jdoe",
        f"ticket {one['number']} in ServiceNow: fibre spliced",
    )
    audit = await engine.store.read(
        lambda tx: tx.all("SELECT actor, action, target FROM audit ORDER BY id")
    )
    assert sorted(audit) == sorted(
        [
            ("servicenow:jdoe", "resolve", f"incident:{first}"),
            ("servicenow:asmith", "ack", f"incident:{second}"),
            ("servicenow:enoc", "resolve", f"incident:{third}"),
        ]
    )
    assert sorted(published) == ["acknowledged", "resolved", "resolved"]
    # no echo: enoc wrote nothing back on the tickets the desk changed
    assert (one["sys_updated_by"], two["sys_updated_by"]) == ("jdoe", "asmith")
    assert one["sys_id"] not in desk.journal and two["sys_id"] not in desk.journal
    assert desk.journal[three["sys_id"]] == [("work_notes", "enoc", "Escalated in enoc to level 1")]
    assert sync.counters() == {"resolved": 2, "acknowledged": 1, "ignored": 0}


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_bad_credentials_are_a_dead_letter_without_retries(
    engine: Engine,
    desk: ServiceNowStandIn,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = tmp_path / "dead.jsonl"
    notifier = notifier_for(
        ticket_hook(desk, password="not-the-password-9"),
        clock=clock,
        store=engine.store,
        dead_letter_file=dead,
    )
    caplog.set_level(logging.DEBUG)
    async with delivering(notifier):
        logged(notifier, await engine.on_events(msg(("nbo-pe-1", "if:3", "down"))))
        await eventually(lambda: bool(read_dead_letters(dead)), what="a dead letter")
    (letter,) = read_dead_letters(dead)
    assert letter["change"] == "opened" and "HTTP 401" in letter["reason"]
    assert letter["url"] == f"{desk.url}/api/now/table/incident"
    assert len(desk.requests) == 1 and not desk.records, "refused: not retried"
    assert notifier.counters()["dead_lettered.desk"] == 1
    assert "not-the-password-9" not in dead.read_text() + caplog.text


async def test_a_5xx_is_retried_and_makes_one_ticket(
    engine: Engine, desk: ServiceNowStandIn, clock: Clock
) -> None:
    notifier = notifier_for(ticket_hook(desk), clock=clock, store=engine.store)
    desk.fail(503, 502)
    async with delivering(notifier):
        (opened,) = logged(notifier, await engine.on_events(msg(("nbo-pe-1", "if:3", "down"))))
        await eventually(lambda: bool(desk.records), what="the ticket after the retries")
        await eventually(lambda: notifier.counters()["sent.desk"] == 1, what="sent")
    assert [m for m, _ in desk.requests] == ["GET", "GET", "GET", "POST"]
    assert notifier.counters()["failed_attempts"] == 2
    only_ticket(desk, opened.incident.id)


async def test_a_create_sent_again_finds_the_ticket_instead_of_making_another(
    engine: Engine, desk: ServiceNowStandIn, clock: Clock
) -> None:
    """The first holder made the ticket but died before keeping it: the next one asks."""
    hook = ticket_hook(desk)
    first = notifier_for(hook, clock=clock, store=engine.store, lease=Duration(4))
    desk.hold_creates = True
    async with delivering(first):
        (opened,) = logged(first, await engine.on_events(msg(("nbo-pe-1", "if:3", "down"))))
        await asyncio.wait_for(desk.create_received.wait(), 10)
    # (closed with the answer held back: the change stays under its cursor)
    assert first.counters()["sent.desk"] == 0
    desk.hold_creates = False
    desk.release.set()
    second = notifier_for(hook, clock=clock, store=engine.store)
    async with delivering(second):
        second.wake()
        await eventually(lambda: second.counters()["sent.desk"] == 1, what="sent again")
    ticket = only_ticket(desk, opened.incident.id)
    assert desk.creates == 1
    incident = await engine.queries.incident(opened.incident.id)
    assert incident.ticket is not None and incident.ticket["number"] == ticket["number"]


def test_the_stand_in_reads_encoded_queries_as_the_table_api() -> None:
    records = [
        {
            "number": f"INC{n}",
            "sys_created_on": f"2026-12-06 10:00:0{n}",
            "sys_updated_on": f"2026-12-06 10:00:0{9 - n}",
            "correlation_id": f"enoc-{n}",
        }
        for n in range(1, 5)
    ] + [
        {
            "number": "INC9",
            "sys_created_on": "2026-12-06 10:00:09",
            "sys_updated_on": "2026-12-06 11:00:00",
            "correlation_id": "other-9",
        }
    ]
    query = (
        "correlation_idSTARTSWITHenoc-^sys_updated_on>=javascript:gs.dateGenerate("
        "'2026-12-06','10:00:06')^ORDERBYsys_updated_on"
    )
    assert [r["number"] for r in select(records, query)] == ["INC3", "INC2", "INC1"]
    assert [r["number"] for r in select(records, "correlation_id=enoc-4")] == ["INC4"]
    with pytest.raises(ValueError, match="cannot read the term"):
        select(records, "correlation_idLIKEenoc")


def test_servicenow_settings_are_checked(tmp_path: Path) -> None:
    def load(hook: dict[str, Any]) -> CollectorConfig:
        text = json.dumps({"notifications": {"webhooks": [hook]}, "store": {}})
        return parse_config(text, CollectorConfig, filename="collector.yaml")

    secret = tmp_path / "desk-password"
    secret.write_text("from-a-file\n")
    config = load(
        {
            "url": "https://acme.service-now.com",
            "format": "servicenow",
            "username": "enoc",
            "password_file": str(secret),
            "servicenow": {"poll_interval": "1m"},
        }
    )
    (hook,) = config.notifications.webhooks
    assert hook.password is not None and hook.password.reveal() == "from-a-file"
    assert hook.servicenow is not None and float(hook.servicenow.poll_interval) == 60
    with pytest.raises(ConfigError, match="format servicenow needs username and password"):
        load({"url": "https://acme.service-now.com", "format": "servicenow"})
    with pytest.raises(ConfigError, match="takes its login as username and password_file"):
        load(
            {
                "url": "https://u:p@acme.service-now.com",
                "format": "servicenow",
                "username": "u",
                "password": "p",
            }
        )
    with pytest.raises(ConfigError, match="settings of format servicenow"):
        load({"url": "https://hooks.example.net/x", "username": "enoc"})
    with pytest.raises(ConfigError, match=r"servicenow\.correlation_prefix"):
        load(
            {
                "url": "https://a.service-now.com",
                "format": "servicenow",
                "username": "u",
                "password": "p",
                "servicenow": {"correlation_prefix": "a^b"},
            }
        )


# ---------------------------------------------------------------- a whole collector


def desk_notifications(desk: ServiceNowStandIn, tmp_path: Path, poll: str) -> dict[str, Any]:
    """A collector config's `notifications` with one servicenow webhook to `desk`."""
    secret = tmp_path / "desk-password"
    secret.write_text(PASSWORD)
    hook = {
        "url": desk.url,
        "format": "servicenow",
        "username": "enoc",
        "password_file": str(secret),
        "timeout": "1s",
        "servicenow": {"poll_interval": poll},
    }
    return {"webhooks": [hook], "lease": "2s", "retry_backoff": "0.1s"}


@pytest.mark.servers
async def test_the_collector_shows_the_ticket_and_takes_the_desks_resolve(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    desk = ServiceNowStandIn(password=PASSWORD)
    await desk.start()
    settings = {"notifications": desk_notifications(desk, tmp_path, "0.2s")}
    config = collector_config(tmp_path, mosquitto.url, extra=settings)
    try:
        async with running_collector(config) as collector, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{collector.http_port}"
            headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}

            async def incidents() -> list[dict[str, Any]]:
                async with http.get(f"{base}/api/v1/incidents", headers=headers) as r:
                    return list((await r.json())["incidents"])

            await publish_event(mosquitto.url, "nairobi", "nbo-pe-1", "if:3", "down")

            async def ticketed() -> bool:
                return any(i["ticket"] for i in await incidents())

            await eventually(ticketed, what="the ticket number in the incident list")
            (incident,) = await incidents()
            ticket = only_ticket(desk, incident["id"])
            assert incident["ticket"]["number"] == ticket["number"] == "INC0010001"
            async with http.get(f"{base}/api/v1/incidents/{incident['id']}", headers=headers) as r:
                assert (await r.json())["ticket"]["sys_id"] == ticket["sys_id"]

            desk.desk_update(ticket["sys_id"], "jdoe", state="7", close_notes="closed at desk")

            async def resolved() -> bool:
                return any(i["state"] == "resolved" for i in await incidents())

            await eventually(resolved, what="resolved from the desk")
            (incident,) = await incidents()
            assert incident["resolved_by"] == "servicenow:jdoe"
            await asyncio.sleep(1)  # a round or more: enoc must not write it back
            assert ticket["sys_updated_by"] == "jdoe" and ticket["sys_id"] not in desk.journal
            assert collector.counters()["tickets_resolved"] == 1
    finally:
        await desk.close()


def _tickets_kept(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(i), str(n))
            for i, n in conn.execute(
                "SELECT incident_id, number FROM incident_tickets ORDER BY incident_id"
            )
        ]


@pytest.mark.servers
async def test_a_replica_killed_after_the_create_leaves_one_ticket_per_incident(
    tmp_path: Path, mosquitto: Mosquitto, postgres: PostgreSQL
) -> None:
    desk = ServiceNowStandIn(password=PASSWORD)
    await desk.start()
    settings = {
        "mqtt": {"shared_group": "enoc-collectors"},
        "notifications": desk_notifications(desk, tmp_path, "0.5s"),
    }
    one, two = replica_pair(tmp_path, mosquitto.url, postgres.url, settings)
    desk.hold_creates = True
    try:
        await one.start()  # alone: it takes the ticket target's lease
        with replicas_running(one, two):
            await publish_event(mosquitto.url, "s1", "dev-1", "if:1", "down")
            await asyncio.wait_for(desk.create_received.wait(), 20)
            # the instance made the ticket; the replica has no answer and its cursor is
            # where it was: it dies now
            one.kill()
            assert _tickets_kept(postgres.url) == []
            desk.hold_creates = False
            desk.release.set()
            await two.start()
            await eventually(
                lambda: bool(_tickets_kept(postgres.url)), what="the survivor keeps it", timeout=30
            )
            await one.start()  # back (its broker session holds its share of the events)
            for n in range(2, 4):  # more incidents after the kill: one ticket each
                await publish_event(mosquitto.url, "s1", f"dev-{n}", "if:1", "down")
            await eventually(lambda: len(_tickets_kept(postgres.url)) == 3, what="three kept")
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
                async with http.get(f"{two.base}/api/v1/incidents", headers=headers) as r:
                    shown = {i["id"]: i["ticket"]["number"] for i in (await r.json())["incidents"]}
    finally:
        await desk.close()
    kept = _tickets_kept(postgres.url)
    assert len(desk.records) == 3 and desk.creates == 3, "no second ticket for the first"
    for incident_id, number in kept:
        assert only_ticket(desk, incident_id)["number"] == number == shown[incident_id]


async def test_hostile_desk_answers_are_refused_and_the_good_ones_still_land(
    engine: Engine,
    desk: ServiceNowStandIn,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers that are not the Table API's (no `result`, a `result` of the wrong shape, a
    record without its number) refuse the create that got them (a dead letter naming
    why) or the round of the way back (logged once, the cursor kept); a ticket whose
    fields are of the wrong kinds, or whose correlation names no incident this store
    could hold, is passed over; the tickets after them still come back."""
    dead = tmp_path / "dead.jsonl"
    hook = ticket_hook(desk)
    notifier = notifier_for(hook, clock=clock, store=engine.store, dead_letter_file=dead)
    sync = TicketSync(notifier.config, engine.store, engine.operators, _ignore, now=clock)
    caplog.set_level(logging.INFO)
    async with delivering(notifier):
        # the way out: the lookup before the create, then the create, answered with garbage
        desk.garble("GET", '{"result": {"sys_id": "x"}}')
        logged(notifier, await engine.on_events(msg(("nbo-pe-1", "if:1", "down"))))
        bodies = ('{"result": []}', '{"result": {"number": "INC1"}}', "[1]", "not json")
        desk.garble("POST", *bodies)
        for n in range(len(bodies)):
            logged(notifier, await engine.on_events(msg((f"nbo-pe-{n + 2}", "if:2", "down"))))
        # a body that is not JSON at all reads as a broken answer on the way (retried: the
        # retry made its ticket); JSON of the wrong shape is the desk's word, refused
        await eventually(lambda: len(desk.records) == 1, what="the retried create's ticket")
        reasons = [letter["reason"] for letter in read_dead_letters(dead)]
        assert len(reasons) == 4
        assert "answered without a list of records in `result`" in reasons[0]
        assert all("answered without a record (sys_id, number)" in r for r in reasons[1:])
        assert notifier.counters()["failed_attempts"] == 1
        (good,) = logged(notifier, await engine.on_events(msg(("nbo-pe-9", "if:3", "down"))))
        await eventually(lambda: len(desk.records) == 2, what="the next incident's ticket")
        ticket = only_ticket(desk, good.incident.id)
    async with delivering(notifier), delivering(sync):
        # the way back: rounds answered with garbage, then tickets of the wrong kinds
        desk.garble("GET", '{"result": {"sys_id": "x"}}', '{"result": [1]}', "{}")
        clock.t += 5
        stamp = servicenow_time(clock.t)  # changed since the way back's cursor
        odd = {"sys_created_on": stamp, "number": "INC0", "sys_updated_on": stamp}
        desk.records["odd-1"] = {**odd, "correlation_id": "enoc-" + "9" * 40, "state": "6"}
        desk.records["odd-2"] = {**odd, "correlation_id": "enoc-", "state": ["6"]}
        desk.records["odd-3"] = {**odd, "correlation_id": "enoc-1x", "sys_updated_by": 7}
        desk.records["odd-4"] = {**odd, "correlation_id": "enoc-12", "state": {"6": 1}}
        desk.desk_update(ticket["sys_id"], "jdoe", state="6", close_notes="fixed")

        async def resolved() -> bool:
            return (await engine.queries.incident(good.incident.id)).state == "resolved"

        await eventually(resolved, what="the good ticket's resolve, past the odd ones")
    assert sync.counters()["resolved"] == 1
    # an id too long for the store, none, not a number: passed over (in each round)
    assert sync.counters()["ignored"] >= 3
    refusals = [
        r
        for r in caplog.records
        if r.name == "enoc.collector.tickets" and "without a list of records" in r.getMessage()
    ]
    assert len(refusals) == 1, "a failing way back is logged once, not once per round"


async def _ignore(_changes: list[Any]) -> None:
    return None
