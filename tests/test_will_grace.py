"""A last will opens its site's agent_offline incident only after `incidents.will_grace`
without a newer status: an agent whose broker node closed its connection and that is back
through another node within the grace leaves no incident behind."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from collectorkit import T0, Clock
from trendkit import new_database

from collector.config import CollectorConfig, IncidentsConfig
from collector.incidents import Engine
from collector.store import Store
from enoc.config import ConfigError, Duration, parse_config
from enoc.wire import DeviceInfo, Event, EventsMessage, StatusMessage

GRACE = 30.0
_seq = itertools.count(100)


def status(state: str) -> StatusMessage:
    """The agent's next status, numbered above the last as the agent numbers them."""
    return StatusMessage(
        "nyc-1",
        "nyc",
        "americas",
        next(_seq),
        T0,
        state=state,  # type: ignore[arg-type]
        devices=[DeviceInfo("nyc-ce-1", "127.0.0.1", "ce-router")],
    )


def config(grace: float) -> IncidentsConfig:
    return IncidentsConfig(agent_timeout=Duration(90), will_grace=Duration(grace))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    return new_database(request.getfixturevalue("pg_server"))


@contextlib.asynccontextmanager
async def replicas(url: str, n: int) -> AsyncIterator[list[Store]]:
    """`n` stores on one database, as `n` collector replicas share it."""
    opened = [Store(url) for _ in range(n)]
    for one in opened:
        await one.open()
    try:
        yield opened
    finally:
        for one in opened:
            await one.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with replicas(store_url, 1) as (one,):
        yield one


async def incident_log(store: Store) -> list[tuple[str, int]]:
    """What the change log holds about incidents: what the stream and notifiers get."""
    rows = await store.run(
        lambda tx: tx.all(
            "SELECT change, incident_id FROM changes WHERE kind = 'incident' ORDER BY id"
        )
    )
    return [(str(change), int(incident)) for change, incident in rows]


async def test_a_birth_within_the_grace_leaves_no_incident(store: Store) -> None:
    clock = Clock()
    engine = Engine(store, config(GRACE), now=clock)
    assert await engine.on_status(status("online")) == []
    clock.t = T0 + 100
    assert await engine.on_status(status("offline")) == [], "a will opens nothing yet"
    (agent,) = await engine.queries.agents()
    assert agent["state"] == "offline", "the agents table says so at once"
    assert {d["state"] for d in await engine.queries.devices(site="nyc")} == {"unknown"}
    clock.t = T0 + 105
    assert await engine.sweep() == []
    clock.t = T0 + 108  # reconnected through another node
    assert await engine.on_status(status("online")) == []
    for t in (T0 + 100 + GRACE, T0 + 108 + 89):  # within agent_timeout of the birth
        clock.t = t
        assert await engine.sweep() == []
    assert await engine.queries.incidents() == []
    assert await incident_log(store) == [], "nothing to notify"


async def test_a_will_without_a_birth_opens_one_incident_from_the_wills_time(
    store: Store,
) -> None:
    clock = Clock()
    engine = Engine(store, config(GRACE), now=clock)
    await engine.on_status(status("online"))
    will_at = T0 + 100
    clock.t = will_at
    assert await engine.on_status(status("offline")) == []
    clock.t = will_at + GRACE - 1
    assert await engine.sweep() == [], "still within the grace"
    clock.t = will_at + GRACE + 4  # the next sweep past the grace
    (opened,) = await engine.sweep()
    incident = opened.incident
    assert (opened.change, incident.key.kind) == ("opened", "agent_offline")
    assert incident.key.resource == "agent:nyc-1"
    assert incident.opened == will_at, "open from the will: its duration is honest"
    assert "said offline (last will)" in incident.title
    full = await engine.queries.incident(incident.id)
    assert [(e.at, e.text) for e in full.timeline] == [(will_at, "said offline (last will)")]
    assert await engine.sweep() == [], "once"
    # what the agent spooled while away comes back under its site incident
    down = Event("e1", will_at + 10, "nyc-ce-1", "if:1", "link", "down", "major")
    replayed = EventsMessage("nyc-1", "nyc", "americas", 1, will_at + 50, events=[down])
    (link,) = await engine.on_events(replayed)
    assert link.incident.suppressed_by == incident.id
    clock.t = will_at + 300
    (back,) = await engine.on_status(status("online"))
    assert (back.change, back.incident.id, back.incident.resolved) == (
        "resolved",
        incident.id,
        will_at + 300,
    )
    assert await incident_log(store) == [
        ("opened", incident.id),
        ("opened", link.incident.id),
        ("resolved", incident.id),
    ]


async def test_an_incident_an_operator_resolved_is_not_opened_again(store: Store) -> None:
    clock = Clock()
    engine = Engine(store, config(GRACE), now=clock)
    await engine.on_status(status("online"))
    await engine.on_status(status("offline"))
    clock.t = T0 + GRACE
    (opened,) = await engine.sweep()
    await engine.operators.act(opened.incident.id, "resolve", "ops1")
    clock.t = T0 + 3 * GRACE
    assert await engine.sweep() == [], "the agent is still away, and that was decided"
    # its next will after a return counts again
    await engine.on_status(status("online"))
    clock.t = T0 + 4 * GRACE
    await engine.on_status(status("offline"))
    clock.t = T0 + 5 * GRACE
    (again,) = await engine.sweep()
    assert again.incident.id != opened.incident.id
    assert again.incident.opened == T0 + 4 * GRACE


async def test_a_retained_will_after_an_earlier_outage_opens_from_when_last_seen(
    store: Store,
) -> None:
    """The collectors were away when the agent died: its will comes retained, dated by
    the connection that left it, which began when its last outage ended."""
    clock = Clock()
    engine = Engine(store, config(GRACE), now=clock)

    def said(state: str, sent: float, seq: int = 0) -> StatusMessage:
        return StatusMessage(
            "nyc-1",
            "nyc",
            "americas",
            seq or next(_seq),
            sent,
            state=state,  # type: ignore[arg-type]
        )

    await engine.on_status(said("online", T0))
    clock.t = T0 + 100
    await engine.on_status(said("offline", T0 + 100))
    clock.t = T0 + 100 + GRACE + 1
    (outage,) = await engine.sweep()
    connected = T0 + 200  # the birth that ends it; the new will is written at that connect
    clock.t = connected
    will = said("offline", connected, seq=10**6)  # the top of its connection's numbers
    (back,) = await engine.on_status(said("online", connected))
    assert back.incident.resolved == connected
    clock.t = T0 + 300
    await engine.on_status(said("online", T0 + 300))  # a heartbeat
    clock.t = T0 + 1000  # a collector restarted: the will, retained
    assert await engine.on_status(will, retained=True) == []
    (opened,) = await engine.sweep()
    assert opened.incident.id != outage.incident.id
    assert opened.incident.opened == T0 + 300, "not before it was last seen"
    assert await engine.sweep() == []


async def test_a_grace_of_zero_opens_at_the_will(store: Store) -> None:
    clock = Clock()
    engine = Engine(store, config(0), now=clock)
    await engine.on_status(status("online"))
    clock.t = T0 + 100
    (opened,) = await engine.on_status(status("offline"))
    assert (opened.change, opened.incident.opened) == ("opened", T0 + 100)
    clock.t = T0 + 1000
    assert await engine.sweep() == [], "the sweep does not open a second one"


async def test_replicas_on_one_store_open_it_once(store_url: str) -> None:
    """Every replica hears the will and every replica sweeps: one incident, logged once."""
    clock = Clock()
    async with replicas(store_url, 2) as stores:
        one, two = (
            Engine(s, config(GRACE), now=clock, origin=f"r{i}") for i, s in enumerate(stores)
        )
        birth, will = status("online"), status("offline")
        for engine in (one, two):
            assert await engine.on_status(birth) == []
            assert await engine.on_status(will) == []
        clock.t = T0 + GRACE
        swept = await asyncio.gather(one.sweep(), two.sweep(), one.sweep(), two.sweep())
        opened = [c for changes in swept for c in changes]
        assert [(c.change, c.incident.key.kind) for c in opened] == [("opened", "agent_offline")]
        assert await incident_log(stores[0]) == [("opened", opened[0].incident.id)]
        assert len(await one.queries.incidents()) == 1


@pytest.mark.parametrize(
    ("incidents", "says"),
    [
        ("{will_grace: -1}", "incidents.will_grace must be 0s or more, got -1s"),
        ("{will_grace: soon}", 'expected a duration like "60s"'),
    ],
)
def test_a_grace_that_makes_no_sense_is_refused_by_name(incidents: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as error:
        parse_config(
            f"mqtt: {{url: 'mqtt://127.0.0.1:1883'}}\nincidents: {incidents}\n",
            CollectorConfig,
            filename="collector.yaml",
        )
    assert "collector.yaml:2: incidents.will_grace:" in str(error.value)


def test_the_grace_defaults_to_30s_below_the_heartbeat_timeout() -> None:
    incidents = parse_config("{}", CollectorConfig).incidents
    assert (float(incidents.will_grace), float(incidents.agent_timeout)) == (30.0, 180.0)


async def test_a_will_waits_no_longer_than_silence_would(store: Store) -> None:
    """A grace longer than `agent_timeout` (a short timeout kept from before the grace
    existed) is cut to it: a will is stronger news than silence."""
    clock = Clock()
    engine = Engine(
        store, IncidentsConfig(agent_timeout=Duration(10), will_grace=Duration(30)), now=clock
    )
    await engine.on_status(status("online"))
    await engine.on_status(status("offline"))
    clock.t = T0 + 9
    assert await engine.sweep() == []
    clock.t = T0 + 10
    (opened,) = await engine.sweep()
    assert opened.incident.opened == T0
