"""Incident rules on a real SQLite store: open, dedup, resolve, reopen, flapping,
correlation, maintenance, operator actions and MTTA/MTTR."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest
from collectorkit import T0, Clock

from agent.config import AgentConfig
from agent.publisher import STATUS_BLOCK, Publisher
from collector.config import IncidentsConfig
from collector.incidents import PRUNE_EVERY, Conflict, Engine, MaintenanceWindow, NotFound
from collector.model import IncidentChange
from collector.store import Store, StoreError, Tx
from enoc.config import Duration, parse_config
from enoc.wire import DeviceInfo, Event, EventsMessage, StatusMessage, decode
from testbed.servers import PostgreSQL

_ids = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same rules on both stores: one code path."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    server: PostgreSQL = request.getfixturevalue("pg_server")
    name = f"t{next(_ids)}"
    with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[tuple[Engine, Clock]]:
    store = Store(store_url)
    await store.open()
    clock = Clock()
    config = IncidentsConfig(
        flap_transitions=4,
        flap_window=Duration(300),
        reopen_within=Duration(300),
        agent_timeout=Duration(90),
        will_grace=Duration(0),  # a will decides at once here (its grace: test_will_grace.py)
        momentary_resolve_after=Duration(600),
    )
    yield Engine(store, config, now=clock), clock
    await store.close()


def event(
    device: str,
    resource: str,
    kind: str,
    state: str,
    ts: float,
    *,
    severity: str = "major",
    event_id: str = "",
) -> Event:
    return Event(
        id=event_id or f"e{next(_ids)}",
        ts=ts,
        device=device,
        resource=resource,
        kind=kind,
        state=state,
        severity=severity,  # type: ignore[arg-type]
        message=f"{resource} {state}",
    )


def msg(*events: Event, site: str = "nyc", agent: str = "nyc-1") -> EventsMessage:
    return EventsMessage(agent, site, "americas", 1, T0, events=list(events))


def status(state: str, *, site: str = "nyc", agent: str = "nyc-1") -> StatusMessage:
    return StatusMessage(
        agent,
        site,
        "americas",
        1,
        T0,
        state=state,  # type: ignore[arg-type]
        devices=[
            DeviceInfo("nyc-ce-1", "127.0.0.1", "ce-router"),
            DeviceInfo("nyc-acc-1", "127.0.0.2", "access-switch", parent="nyc-ce-1"),
        ],
    )


async def test_open_bump_resolve(engine: tuple[Engine, Clock]) -> None:
    eng, _ = engine
    down = event("nyc-acc-1", "if:2", "link", "down", T0)
    changes = await eng.on_events(msg(down))
    assert [c.change for c in changes] == ["opened"]
    first = changes[0].incident
    # the same event again (a redelivery) changes nothing; a repeat bumps the count
    assert await eng.on_events(msg(down)) == []
    assert eng.duplicates == 1
    again = await eng.on_events(msg(event("nyc-acc-1", "if:2", "link", "down", T0 + 60)))
    assert again[0].change == "updated"
    assert again[0].incident.id == first.id
    assert again[0].incident.count == 2
    resolved = await eng.on_events(msg(event("nyc-acc-1", "if:2", "link", "up", T0 + 90)))
    assert resolved[0].change == "resolved"
    full = await eng.queries.incident(first.id)
    assert full.state == "resolved"
    assert full.resolved == T0 + 90
    assert full.resolved_by == "auto"
    assert [e.state for e in full.timeline if e.what == "event"] == ["down", "down", "up"]
    # a clearing event without an open incident opens nothing
    assert await eng.on_events(msg(event("nyc-acc-1", "if:3", "link", "up", T0))) == []


async def test_reopen_and_flapping(engine: tuple[Engine, Clock]) -> None:
    eng, _ = engine
    ids: set[int] = set()
    flapping = []
    for i in range(4):
        t = T0 + i * 20
        for state, dt in (("down", 0), ("up", 10)):
            changes = await eng.on_events(msg(event("nyc-acc-1", "if:5", "link", state, t + dt)))
            ids.update(c.incident.id for c in changes)
            flapping.append(changes[0].incident.flapping)
    assert len(ids) == 1, "a problem soon after its clearing reopens the same incident"
    assert flapping[:3] == [False, False, False]
    assert flapping[3:] == [True] * 5
    (incident,) = await eng.queries.incidents()
    assert incident.flapping
    assert not incident.notifiable
    # quiet for the flap window: it settles (sweep), and says so once
    _, clock = engine
    clock.t = T0 + 80 + 301
    settled = await eng.sweep()
    assert [(c.change, c.incident.flapping) for c in settled] == [("resolved", False)]
    assert await eng.sweep() == []


async def test_suppression_by_unreachable_device_and_parent(engine: tuple[Engine, Clock]) -> None:
    eng, _ = engine
    await eng.on_status(status("online"))
    ce_down = await eng.on_events(msg(event("nyc-ce-1", "device", "reachability", "down", T0)))
    cause = ce_down[0].incident
    assert cause.suppressed_by is None
    child = await eng.on_events(msg(event("nyc-acc-1", "device", "reachability", "down", T0 + 5)))
    assert child[0].incident.suppressed_by == cause.id, "the parent CE router explains it"
    link = await eng.on_events(msg(event("nyc-ce-1", "if:1", "link", "down", T0 + 6)))
    assert link[0].incident.suppressed_by == cause.id, "its own device is unreachable"
    assert not link[0].incident.notifiable
    # once the device answers again, new incidents are not suppressed
    await eng.on_events(msg(event("nyc-ce-1", "device", "reachability", "up", T0 + 60)))
    later = await eng.on_events(msg(event("nyc-ce-1", "if:9", "link", "down", T0 + 70)))
    assert later[0].incident.suppressed_by is None
    devices = {d["device"]: d for d in await eng.queries.devices()}
    assert devices["nyc-ce-1"]["state"] == "up"
    assert devices["nyc-acc-1"]["state"] == "down"
    assert devices["nyc-acc-1"]["parent"] == "nyc-ce-1"


async def test_agent_offline_opens_one_site_incident(engine: tuple[Engine, Clock]) -> None:
    eng, clock = engine
    await eng.on_status(status("online"))
    opened = await eng.on_status(status("offline"))
    assert [c.incident.key.kind for c in opened] == ["agent_offline"]
    site_incident = opened[0].incident
    assert await eng.on_status(status("offline")) == [], "one site incident, not two"
    devices = await eng.queries.devices(site="nyc")
    assert {d["state"] for d in devices} == {"unknown"}
    sites = {s["site"]: s for s in await eng.queries.sites()}
    assert sites["nyc"]["status"] == "grey"
    # device incidents of that site that happened meanwhile (replayed later) are suppressed
    replayed = await eng.on_events(msg(event("nyc-acc-1", "if:1", "link", "down", T0 + 1)))
    assert replayed[0].incident.suppressed_by == site_incident.id
    back = await eng.on_status(status("online"))
    assert [c.change for c in back] == ["resolved"]
    # heartbeat timeout: no status for agent_timeout opens the site incident again
    clock.t = T0 + 1000
    timed_out = await eng.sweep()
    assert [c.incident.key.kind for c in timed_out] == ["agent_offline"]
    assert "heartbeat" in timed_out[0].incident.title


def agent_statuses(tmp_path: Path) -> Publisher:
    """The agent's own publisher, numbering status messages as it does on the wire."""
    config = parse_config(
        f"agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {{url: 'mqtt://127.0.0.1:1'}}\n"
        f"spool: {{path: '{tmp_path / 'spool'}'}}\n",
        AgentConfig,
    )
    return Publisher(config, health=lambda: {"spool_depth": 0}, inventory_size=lambda: 0)


def connect(publisher: Publisher) -> StatusMessage:
    """A new connection: the last will it leaves with the broker."""
    will = publisher._client_args()["will"]
    message = decode("enoc/v1/nyc/nyc-1/status", will.payload)  # type: ignore[attr-defined]
    assert isinstance(message, StatusMessage)
    return message


def said(publisher: Publisher, state: str = "online") -> StatusMessage:
    message = decode("enoc/v1/nyc/nyc-1/status", publisher._status(state))
    assert isinstance(message, StatusMessage)
    return message


def test_an_agents_last_will_sorts_after_its_connection_and_before_the_next(
    tmp_path: Path,
) -> None:
    publisher = agent_statuses(tmp_path)
    will_1 = connect(publisher)
    birth_1, beat_1 = said(publisher), said(publisher)
    will_2 = connect(publisher)  # reconnected within the same millisecond, even
    birth_2 = said(publisher)
    goodbye = said(publisher, "offline")  # a clean stop
    seqs = [m.seq for m in (birth_1, beat_1, will_1, birth_2, goodbye, will_2)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert will_1.state == will_2.state == goodbye.state == "offline"
    # a restarted agent (a new process, started more than a millisecond later: its clock
    # has moved on) numbers above its earlier life
    time.sleep(0.002)
    restarted = agent_statuses(tmp_path / "again")
    assert said_after_connect(restarted).seq > will_2.seq
    # a connection that outlives its block keeps its last seq below its will
    publisher._status_n = STATUS_BLOCK - 3
    assert said(publisher).seq == said(publisher).seq < will_2.seq
    asyncio.run(publisher.close())
    asyncio.run(restarted.close())


def said_after_connect(publisher: Publisher) -> StatusMessage:
    connect(publisher)
    return said(publisher)


async def test_a_late_status_of_an_earlier_connection_changes_nothing(
    engine: tuple[Engine, Clock], tmp_path: Path
) -> None:
    """A broker restart can deliver an old connection's will (or heartbeat) after the new
    connection's birth; it must not re-open the site incident the birth resolved."""
    eng, clock = engine
    publisher = agent_statuses(tmp_path)
    will_1 = connect(publisher)
    birth_1, beat_1 = said(publisher), said(publisher)
    assert await eng.on_status(birth_1) == []
    assert await eng.on_status(beat_1) == []
    opened = await eng.on_status(will_1)
    assert [c.change for c in opened] == ["opened"]
    will_2 = connect(publisher)
    clock.t = T0 + 10
    assert [c.change for c in await eng.on_status(said(publisher))] == ["resolved"]
    clock.t = T0 + 11
    assert await eng.on_status(will_1) == [], "the old will, redelivered late"
    assert await eng.on_status(beat_1) == [], "the old heartbeat, redelivered late"
    assert await eng.on_status(birth_1, retained=True) == []
    (agent,) = await eng.queries.agents()
    assert agent["state"] == "online"
    assert [i.state for i in await eng.queries.incidents()] == ["resolved"]
    # the newer connection's own will still counts
    assert [c.change for c in await eng.on_status(will_2)] == ["opened"]
    await publisher.close()


async def test_maintenance_window_marks_and_releases(engine: tuple[Engine, Clock]) -> None:
    eng, clock = engine
    window = await eng.maintenance.add_window(
        MaintenanceWindow(0, "nyc", "", "", T0 - 10, T0 + 100, reason="upgrade"), "admin1"
    )
    assert window.id > 0
    opened = await eng.on_events(msg(event("nyc-acc-1", "if:2", "link", "down", T0)))
    assert opened[0].incident.maintenance
    other_site = await eng.on_events(
        msg(event("gva-acc-1", "if:2", "link", "down", T0), site="gva", agent="gva-1")
    )
    assert not other_site[0].incident.maintenance
    clock.t = T0 + 200
    left = await eng.sweep()
    assert [(c.incident.key.site, c.incident.maintenance) for c in left] == [("nyc", False)]
    recurring = MaintenanceWindow(0, "", "", "*/if:*/link", T0, T0 + 60, every=3600)
    assert recurring.active(T0 + 3600 * 5 + 30)
    assert not recurring.active(T0 + 3600 * 5 + 90)
    with pytest.raises(ValueError, match="needs site, device or match"):
        await eng.maintenance.add_window(MaintenanceWindow(0, "", "", "", T0, T0 + 1), "admin1")
    await eng.maintenance.delete_window(window.id, "admin1")
    with pytest.raises(NotFound):
        await eng.maintenance.delete_window(window.id, "admin1")


async def test_operator_actions_and_stats(engine: tuple[Engine, Clock]) -> None:
    eng, clock = engine
    opened = await eng.on_events(
        msg(event("nyc-ce-1", "cpu", "threshold", "high", T0, severity="major"))
    )
    incident_id = opened[0].incident.id
    clock.t = T0 + 120
    acked = await eng.operators.act(incident_id, "ack", "ops1")
    assert acked.incident.state == "acknowledged"
    assert acked.incident.acknowledged_by == "ops1"
    with pytest.raises(Conflict):
        await eng.operators.act(incident_id, "ack", "ops1")
    await eng.operators.act(incident_id, "comment", "ops1", "looking at the route map")
    clock.t = T0 + 600
    resolved = await eng.operators.act(incident_id, "resolve", "ops2", "fixed")
    assert resolved.incident.resolved_by == "ops2"
    with pytest.raises(NotFound):
        await eng.operators.act(999, "ack", "ops1")
    full = await eng.queries.incident(incident_id)
    assert [(e.what, e.actor) for e in full.timeline][1:] == [
        ("ack", "ops1"),
        ("comment", "ops1"),
        ("resolve", "ops2"),
    ]
    stats = await eng.queries.stats(T0 - 1, T0 + 1)
    assert stats == [
        {
            "site": "nyc",
            "severity": "major",
            "incidents": 1,
            "acknowledged": 1,
            "mtta_s": 120.0,
            "resolved": 1,
            "mttr_s": 600.0,
        }
    ]


async def test_momentary_incidents_expire_and_info_events_open_nothing(
    engine: tuple[Engine, Clock],
) -> None:
    eng, clock = engine
    reboot = await eng.on_events(
        msg(event("nyc-ce-1", "device", "reboot", "rebooted", T0, severity="warning"))
    )
    assert reboot[0].change == "opened"
    info = await eng.on_events(
        msg(event("nyc-ce-1", "trap:1.3.6.1.4.1.9.9", "trap", "received", T0, severity="info"))
    )
    assert info == []
    clock.t = T0 + 601
    expired = await eng.sweep()
    assert [(c.change, c.incident.key.kind) for c in expired] == [("resolved", "reboot")]


async def test_two_replicas_on_postgresql_keep_one_incident_per_key(
    pg_server: PostgreSQL,
) -> None:
    name = f"t{next(_ids)}"
    with psycopg.connect(pg_server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.url.rsplit("/", 1)[0] + f"/{name}"
    stores = [Store(url), Store(url)]
    for store in stores:
        await store.open()
    engines = [Engine(store, IncidentsConfig()) for store in stores]
    keys = [("nyc-acc-1", f"if:{i}") for i in range(5)]

    async def replica(engine: Engine, n: int) -> None:
        for round_ in range(20):
            for device, resource in keys:
                ev = event(
                    device,
                    resource,
                    "link",
                    "down",
                    T0 + round_,
                    event_id=f"r{n}-{round_}-{resource}",
                )
                await engine.on_events(msg(ev))

    await asyncio.gather(replica(engines[0], 0), replica(engines[1], 1))
    incidents = await engines[0].queries.incidents()
    assert sorted(i.key.resource for i in incidents) == sorted(r for _, r in keys)
    assert all(i.count == 40 for i in incidents), [i.count for i in incidents]
    # the same events delivered again to the other replica change nothing
    again = event("nyc-acc-1", "if:0", "link", "down", T0, event_id="r0-0-if:0")
    assert await engines[1].on_events(msg(again)) == []
    for store in stores:
        await store.close()


async def test_a_store_of_the_first_schema_is_migrated_in_place(store_url: str) -> None:
    """A store written by the first release (schema 1) gains the status order column, the
    change log and the notifiers' tables, the events' key index, the sessions' tables, the
    agents and events keyed by site and agent, the handovers' table, and keeps its rows; a
    store newer than this enoc is refused with a message saying so."""
    import collector.schema as schema_module

    first = schema_module.MIGRATIONS[:1]
    original = schema_module.MIGRATIONS
    schema_module.MIGRATIONS = first
    try:
        old = Store(store_url)
        assert await old.open() == 1
        await old.run(
            lambda tx: tx.execute(
                "INSERT INTO agents (agent, site, state, last_seen) VALUES (?, ?, ?, ?)",
                ("nyc-1", "nyc", "online", T0),
            )
        )
        await old.run(
            lambda tx: tx.execute(
                "INSERT INTO events (agent, event_id, site, device, resource, kind, state, "
                "severity, at, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("nyc-1", "e-1", "nyc", "pe-1", "device", "reachability", "down", "major", T0, T0),
            )
        )
        await old.close()
    finally:
        schema_module.MIGRATIONS = original
    store = Store(store_url)
    assert await store.open() == len(original) == 14
    rows = await store.run(lambda tx: tx.all("SELECT agent, state, status_seq FROM agents"))
    assert rows == [("nyc-1", "online", 0)]
    # schema 6: an agent and its events are known by site and agent id
    await store.run(
        lambda tx: tx.execute(
            "INSERT INTO agents (agent, site, state, last_seen, inventory_size) "
            "VALUES (?, ?, ?, ?, ?)",
            ("nyc-1", "lon", "online", T0, 2**40),
        )
    )
    await store.run(
        lambda tx: tx.execute(
            "INSERT INTO events (agent, event_id, site, device, resource, kind, state, "
            "severity, at, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("nyc-1", "e-1", "lon", "pe-1", "device", "reachability", "down", "major", T0, T0),
        )
    )
    rows = await store.run(
        lambda tx: tx.all("SELECT site, agent, event_id FROM events ORDER BY site")
    )
    assert rows == [("lon", "nyc-1", "e-1"), ("nyc", "nyc-1", "e-1")]
    rows = await store.run(
        lambda tx: tx.all("SELECT site, inventory_size FROM agents ORDER BY site")
    )
    assert rows == [("lon", 2**40), ("nyc", 0)]
    # schema 3: the change log and the notifiers' state, empty
    assert await store.run(lambda tx: tx.last_change_id()) == 0
    assert await store.run(lambda tx: tx.all("SELECT * FROM notify_cursors")) == []
    assert await store.run(lambda tx: tx.all("SELECT * FROM notify_told")) == []
    # schema 5: failed logins, empty
    assert await store.run(lambda tx: tx.all("SELECT * FROM login_failures")) == []
    # schema 7: the handovers sent at shift changes, empty
    assert await store.run(lambda tx: tx.all("SELECT * FROM handovers")) == []
    # schema 8: the tickets a service desk holds, and the way back's cursor, empty
    assert await store.run(lambda tx: tx.all("SELECT * FROM incident_tickets")) == []
    assert await store.run(lambda tx: tx.all("SELECT * FROM ticket_sync")) == []
    # schema 9: console sessions, kept whole (session_revocations, of schema 5, is gone)
    assert await store.run(lambda tx: tx.all("SELECT * FROM sessions")) == []
    with pytest.raises(Exception, match="session_revocations"):
        await store.run(lambda tx: tx.all("SELECT * FROM session_revocations"))
    # schema 10: API tokens, empty
    assert await store.run(lambda tx: tx.all("SELECT * FROM api_tokens")) == []
    # schema 11: the tokens that confirm single-sign-on identities again, empty
    assert await store.run(lambda tx: tx.all("SELECT * FROM oidc_tokens")) == []
    await store.run(lambda tx: tx.execute("UPDATE enoc_schema SET version = 99"))
    await store.close()
    newer = Store(store_url)
    with pytest.raises(StoreError, match="schema version 99, newer than this enoc"):
        await newer.open()
    await newer.close()


def _pg_database(server: PostgreSQL) -> str:
    name = f"t{next(_ids)}"
    with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


async def test_the_change_log_hands_out_ids_in_commit_order(pg_server: PostgreSQL) -> None:
    """Two replicas change incidents of different sites at once (no site lock between
    them) while a follower reads the log after the last id it saw: it never finds a
    smaller id committed later, so following by id loses nothing."""
    url = _pg_database(pg_server)
    stores = [Store(url), Store(url), Store(url)]
    for store in stores:
        await store.open()
    engines = [
        Engine(s, IncidentsConfig(), origin=f"replica-{n}") for n, s in enumerate(stores[:2])
    ]
    follower = stores[2]
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            for id_, _kind, _change, _data in await follower.changes_after(cursor, 1000):
                seen.append(id_)
                cursor = id_
            if finished:
                return

    async def replica(engine: Engine, n: int) -> list[int]:
        ids = []
        for round_ in range(15):
            for site in ("nyc", "gva", "nbo", "bkk"):
                ev = event(f"{site}-ce-{n}", f"if:{round_}", "link", "down", T0 + round_)
                changes = await engine.on_events(msg(ev, site=site, agent=f"{site}-{n}"))
                ids += [c.id for c in changes]
        return ids

    reader = asyncio.create_task(follow())
    made = await asyncio.gather(replica(engines[0], 0), replica(engines[1], 1))
    done.set()
    await reader
    logged = await follower.run(
        lambda tx: [int(r[0]) for r in tx.all("SELECT id FROM changes ORDER BY id")]
    )
    assert len(logged) == 2 * 15 * 4
    assert sorted(made[0] + made[1]) == logged, "every change carries its log id"
    assert seen == logged, "the follower saw every id, in order, none late"
    origins = await follower.run(lambda tx: tx.all("SELECT DISTINCT origin FROM changes"))
    assert sorted(o for (o,) in origins) == ["replica-0", "replica-1"]
    for store in stores:
        await store.close()


async def test_replicas_escalate_sweep_and_act_once(pg_server: PostgreSQL) -> None:
    """What every replica's sweeper or any operator may try at the same moment happens
    once: an escalation to a level, a one-off incident expiring, an acknowledgement."""
    url = _pg_database(pg_server)
    stores = [Store(url), Store(url)]
    for store in stores:
        await store.open()
    clock = Clock()
    config = IncidentsConfig(momentary_resolve_after=Duration(600))
    one, two = (Engine(s, config, now=clock) for s in stores)
    (crit,) = await one.on_events(
        msg(event("nyc-pe-1", "device", "reachability", "down", T0, severity="critical"))
    )
    (boot,) = await two.on_events(
        msg(event("nyc-pe-2", "device", "reboot", "rebooted", T0, severity="warning"))
    )
    escalated: list[IncidentChange | None] = []
    for _ in range(5):
        escalated += await asyncio.gather(
            one.escalate(crit.incident.id, 1), two.escalate(crit.incident.id, 1)
        )
    assert [c.incident.escalated for c in escalated if c is not None] == [1]
    clock.t = T0 + 601
    swept = await asyncio.gather(one.sweep(), two.sweep(), one.sweep(), two.sweep())
    assert [(c.change, c.incident.id) for s in swept for c in s] == [("resolved", boot.incident.id)]
    acks = await asyncio.gather(
        one.operators.act(crit.incident.id, "ack", "ops1"),
        two.operators.act(crit.incident.id, "ack", "ops2"),
        return_exceptions=True,
    )
    assert sorted(type(a).__name__ for a in acks) == ["Conflict", "IncidentChange"]
    log = await one.store.run(
        lambda tx: tx.all(
            "SELECT change, incident_id FROM changes WHERE kind = 'incident' ORDER BY id"
        )
    )
    assert log == [
        ("opened", crit.incident.id),
        ("opened", boot.incident.id),
        ("escalated", crit.incident.id),
        ("resolved", boot.incident.id),
        ("acknowledged", crit.incident.id),
    ]
    full = await one.queries.incident(crit.incident.id)
    assert [e.text for e in full.timeline if e.what == "escalated"] == ["level 1"]
    for store in stores:
        await store.close()


async def test_statuses_reach_the_log_once_whichever_replica_hears_them(
    store_url: str,
) -> None:
    """Every replica hears every status: the first to apply a live one logs it for the
    stream; the other, and a retained copy on resubscribe, log nothing."""
    stores = [Store(store_url), Store(store_url)]
    for store in stores:
        await store.open()
    one, two = (Engine(s, IncidentsConfig()) for s in stores)
    birth = status("online")
    birth.seq = 10
    for engine in (one, two):
        await engine.on_status(birth)
    await two.on_status(birth, retained=True)
    heartbeat = status("online")
    heartbeat.seq = 11
    for engine in (two, one):
        await engine.on_status(heartbeat)
    rows = await one.store.run(
        lambda tx: tx.all("SELECT kind, change, data FROM changes ORDER BY id")
    )
    assert [(k, c) for k, c, _ in rows] == [("status", "online"), ("status", "online")]
    assert json.loads(rows[0][2]) == {
        "site": "nyc",
        "agent": "nyc-1",
        "rtc": "americas",
        "state": "online",
        "ts": birth.sent,
    }
    for store in stores:
        await store.close()


# ------------------------------------------------------------------ events in any order
#
# Replicas on one shared subscription take an agent's messages in turns, and a redelivery
# after kill -9 brings a message back after the ones that followed it: a key's events can be
# decided in any order. What the store ends with must be what the events' own times say.


def on_site(n: int, *events: Event) -> EventsMessage:
    return msg(*events, site=f"p{n}", agent=f"p{n}-1")


Summary = tuple[str, float, float | None, str, int, bool, list[tuple[float, str]]]


async def incidents_of(eng: Engine, site: str) -> list[Summary]:
    """Each incident of a site as (state, opened, resolved, by, count, flapping, the events of
    its timeline in order), oldest first."""
    out: list[Summary] = []
    for found in sorted(await eng.queries.incidents(site=site), key=lambda i: i.opened):
        full = await eng.queries.incident(found.id)
        events = [(e.at, e.state) for e in full.timeline if e.what == "event"]
        out.append(
            (
                full.state,
                full.opened,
                full.resolved,
                full.resolved_by,
                full.count,
                full.flapping,
                events,
            )
        )
    return out


def reach_of(site: str) -> Callable[[Tx], list[tuple[object, ...]]]:
    return lambda tx: tx.all("SELECT reach FROM devices WHERE site = ?", (site,))


async def test_a_down_and_its_up_make_one_resolved_incident_in_either_order(
    engine: tuple[Engine, Clock],
) -> None:
    """The up decided before its down (the other replica was quicker, or the down was
    redelivered after a kill -9) must not leave an incident open for good: either way the
    down opens and the up resolves, with their own times, in the log as opened then
    resolved (the "opened" as it was: open), and MTTR counts it."""
    eng, clock = engine
    down_at, up_at = T0 + 5, T0 + 35
    cases = list(itertools.product(("link", "reachability"), ("in order", "up first")))
    for n, (kind, order) in enumerate(cases):
        resource = "device" if kind == "reachability" else "if:3"
        down = event("dev-1", resource, kind, "down", down_at)
        up = event("dev-1", resource, kind, "up", up_at)
        changes: list[IncidentChange] = []
        for e in (down, up) if order == "in order" else (up, down):
            clock.t += 1
            changes += await eng.on_events(on_site(n, e))
        assert await incidents_of(eng, f"p{n}") == [
            ("resolved", down_at, up_at, "auto", 1, False, [(down_at, "down"), (up_at, "up")])
        ], (kind, order)
        assert [(c.change, c.incident.state, c.incident.resolved) for c in changes] == [
            ("opened", "open", None),
            ("resolved", "resolved", up_at),
        ], (kind, order)

        ids = [c.id for c in changes]
        rows = await eng.store.run(
            lambda tx: tx.all("SELECT id, change, data FROM changes ORDER BY id")
        )
        logged = [(c, json.loads(d)["incident"]["state"]) for i, c, d in rows if i in ids]
        assert logged == [("opened", "open"), ("resolved", "resolved")], "as each was"
        if kind == "reachability":
            reach = await eng.store.run(reach_of(f"p{n}"))
            assert reach == [("up",)], f"the device is up now ({order})"
    stats = await eng.queries.stats(T0, T0 + 10)
    assert [(s["incidents"], s["resolved"], s["mttr_s"]) for s in stats] == [(1, 1, 30.0)] * 4


# (state, seconds after T0) of one key's events, and what they make in event order:
# (state, opened, resolved, count, flapping) of each incident
FLAP_SEQUENCES: dict[
    str, tuple[list[tuple[str, int]], list[tuple[str, int, int | None, int, bool]]]
] = {
    "flapping, then clear": (
        [("down", 0), ("up", 10), ("down", 20), ("up", 30)],
        [("resolved", 0, 30, 2, True)],
    ),
    "flapping, still down": (
        [("down", 0), ("up", 10), ("down", 20), ("up", 30), ("down", 40)],
        [("open", 0, None, 3, True)],
    ),
    "four transitions, not within the window": (
        [("down", 0), ("up", 10), ("down", 20), ("up", 400)],
        [("resolved", 0, 400, 2, False)],
    ),
    "back after longer than reopen_within: two incidents": (
        [("down", 0), ("up", 10), ("down", 400), ("up", 410)],
        [("resolved", 0, 10, 1, False), ("resolved", 400, 410, 1, False)],
    ),
}


@pytest.mark.parametrize("name", list(FLAP_SEQUENCES))
async def test_a_flap_sequence_decides_alike_in_every_order(
    engine: tuple[Engine, Clock], name: str
) -> None:
    """Every arrival order of one key's sequence (on a site of its own) ends with the
    incidents the sequence makes in event order: reopened or not by the events' times
    (reopen_within 300 s), flapping by transitions within flap_window (4 in 300 s), each
    incident's events in its timeline in event order, and once quiet, settled."""
    eng, clock = engine
    sequence, expected = FLAP_SEQUENCES[name]
    events = [event("dev-1", "if:7", "link", state, T0 + dt) for state, dt in sequence]
    by_incident = [
        (s, T0 + o, None if r is None else T0 + r, "" if r is None else "auto", c, f)
        for s, o, r, c, f in expected
    ]
    for n, order in enumerate(itertools.permutations(events)):
        for e in order:
            clock.t += 1
            await eng.on_events(on_site(n, e))
        found = await incidents_of(eng, f"p{n}")
        assert [i[:6] for i in found] == by_incident, [e.ts - T0 for e in order]
        timelines = [t for i in found for t in i[6]]
        assert timelines == [(e.ts, e.state) for e in events], [e.ts - T0 for e in order]
    clock.t += 10_000
    await eng.sweep()
    assert not [i for i in await eng.queries.incidents(limit=5000) if i.flapping], "all settled"


async def test_suppression_follows_the_events_times_in_every_order(
    engine: tuple[Engine, Clock],
) -> None:
    """A CE router unreachable from 0 to 50 s explains its own link going down at 30 s and
    its access switch (inventory child) becoming unreachable at 40 s, not its link going
    down at 100 s, when it answered again: in every order the four events arrive in."""
    eng, clock = engine
    sequence = [
        ("nyc-ce-1", "device", "reachability", "down", 0),
        ("nyc-ce-1", "if:1", "link", "down", 30),
        ("nyc-acc-1", "device", "reachability", "down", 40),
        ("nyc-ce-1", "device", "reachability", "up", 50),
        ("nyc-ce-1", "if:2", "link", "down", 100),
    ]
    events = [event(d, r, k, s, T0 + dt) for d, r, k, s, dt in sequence]
    for n, order in enumerate(itertools.permutations(events)):
        await eng.on_status(status("online", site=f"p{n}", agent=f"p{n}-1"))
        for e in order:
            clock.t += 1
            await eng.on_events(on_site(n, e))
        found = {
            (i.key.device, i.key.resource): i for i in await eng.queries.incidents(site=f"p{n}")
        }
        cause = found["nyc-ce-1", "device"]
        assert (cause.state, cause.opened, cause.resolved) == ("resolved", T0, T0 + 50)
        suppressed = {k: i.suppressed_by for k, i in found.items()}
        assert suppressed == {
            ("nyc-ce-1", "device"): None,
            ("nyc-ce-1", "if:1"): cause.id,
            ("nyc-acc-1", "device"): cause.id,
            ("nyc-ce-1", "if:2"): None,
        }, [e.ts - T0 for e in order]


async def test_old_events_are_pruned_and_incidents_keep_their_history(
    engine: tuple[Engine, Clock],
) -> None:
    """The events table would grow for good: events past incidents.events_retention go
    (at most every PRUNE_EVERY s), their incidents and timelines stay."""
    eng, clock = engine
    retention = float(eng.config.events_retention)
    await eng.on_events(msg(event("nyc-ce-1", "if:1", "link", "down", T0)))
    await eng.on_events(msg(event("nyc-ce-1", "if:1", "link", "up", T0 + 30)))

    def count(tx: Tx) -> int:
        row = tx.one("SELECT COUNT(*) FROM events")
        assert row is not None
        return int(row[0])

    await eng.sweep()
    assert await eng.store.run(count) == 2 and eng.events_pruned == 0, "young events stay"
    clock.t = T0 + retention / 2
    await eng.on_events(msg(event("nyc-ce-1", "if:2", "link", "down", clock.t)))
    clock.t = T0 + retention + 60 + PRUNE_EVERY
    await eng.sweep()
    assert eng.events_pruned == 2 and await eng.store.run(count) == 1, "only the old ones"
    (resolved,) = await eng.queries.incidents(state="resolved")
    first = await eng.queries.incident(resolved.id)
    assert [e.what for e in first.timeline].count("event") == 2, "history kept"
    await eng.on_events(msg(event("nyc-ce-1", "if:3", "link", "down", clock.t)))
    clock.t += 1
    await eng.sweep()
    assert eng.events_pruned == 2, "not again before PRUNE_EVERY"


def test_events_retention_must_outlast_the_flap_window() -> None:
    with pytest.raises(ValueError, match="events_retention must be at least twice"):
        IncidentsConfig(flap_window=Duration(3600), events_retention=Duration(3600))


def test_only_sqlite_errors_of_an_unavailable_database_read_as_an_outage(tmp_path: Path) -> None:
    """The API answers 503 (try again) for a store that cannot answer now: a locked or
    unopenable SQLite file. A statement SQLite refuses (no such table: a bug, not an
    outage) stays an error of its own, and so does a PostgreSQL constraint violation."""
    import sqlite3

    from collector.store import _retryable, store_unavailable

    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    errors: dict[str, sqlite3.Error] = {}
    actions: dict[str, Callable[[], object]] = {
        "locked": lambda: other.execute("SELECT * FROM t"),
        "cannot open": lambda: sqlite3.connect(tmp_path / "missing" / "x.db"),
        "no such table": lambda: holder.execute("SELECT * FROM nowhere"),
        "syntax": lambda: holder.execute("SELEKT 1"),
    }
    for name, act in actions.items():
        with pytest.raises(sqlite3.OperationalError) as caught:
            act()
        errors[name] = caught.value
    holder.close()
    other.close()
    assert {name: store_unavailable(exc) for name, exc in errors.items()} == {
        "locked": True,
        "cannot open": True,
        "no such table": False,
        "syntax": False,
    }
    # and a transaction is retried for a busy or locked file only (the same result codes)
    assert [name for name, exc in errors.items() if _retryable(exc)] == ["locked"]
    assert not store_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
    assert store_unavailable(psycopg.OperationalError("connection refused"))
