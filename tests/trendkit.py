"""The API over a store seeded with incidents at set times (an injected clock): opened by
a device-down event, acknowledged or resolved by an operator or cleared by an up event."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
from aiohttp.test_utils import TestServer
from collectorkit import Clock, collector_config, engine_app

from collector.config import check_collector
from collector.incidents import Engine
from collector.store import Store
from enoc.wire import Event, EventsMessage, Severity
from testbed.servers import PostgreSQL, free_port

_databases = itertools.count(1)

# (name, site, rtc, severity, opened, acknowledged after, resolved after, resolved how:
# "cleared" by an up event or "operator")
Incident = tuple[str, str, str, Severity, float, float | None, float | None, str]


async def seed(engine: Engine, clock: Clock, incidents: list[Incident]) -> None:
    """Every step of every incident, in time order, each at its time on `clock`."""
    steps = []
    for name, *_, opened, acked, resolved, how in incidents:
        steps.append((opened, name, "open"))
        if acked is not None:
            steps.append((opened + acked, name, "ack"))
        if resolved is not None:
            steps.append((opened + resolved, name, how))
    ids: dict[str, int] = {}
    seq = 0
    for at, name, what in sorted(steps):
        _, site, rtc, severity, *_ = next(i for i in incidents if i[0] == name)
        clock.t = at
        if what in ("open", "cleared"):
            seq += 1
            state = "down" if what == "open" else "up"
            device = f"r-{name}"
            event = Event(f"{name}-{what}", at, device, "device", "reachability", state, severity)
            changes = await engine.on_events(
                EventsMessage(f"agent-{site}", site, rtc, seq, at, [event])
            )
            ids.setdefault(name, changes[0].incident.id)
        else:
            action = "ack" if what == "ack" else "resolve"
            await engine.operators.act(ids[name], action, "ops1")


def new_database(server: PostgreSQL) -> str:
    """A fresh database on `server` (one server serves a test module): its URL."""
    name = f"trends{next(_databases)}"
    root = server.url.rsplit("/", 1)[0]
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{root}/{name}"


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, incidents: list[Incident], users: Path | None = None, store_url: str = ""
) -> AsyncIterator[str]:
    """The API and console on loopback over a store holding `incidents` (SQLite unless
    `store_url`); its base URL."""
    extra = {"http": {"users_file": str(users)}} if users is not None else None
    mqtt = f"mqtt://127.0.0.1:{free_port()}"  # not connected to: the API alone is served
    path = collector_config(tmp_path, mqtt, store_url=store_url, extra=extra)
    config = check_collector(path).result()
    assert config.http.users_file is not None
    store = Store(config.store.url)
    await store.open()
    clock = Clock(min(i[4] for i in incidents))
    engine = Engine(store, config.incidents, now=clock, origin="trends-test")
    try:
        await seed(engine, clock, incidents)
        app = engine_app(config, store, engine)
        async with TestServer(app, host="127.0.0.1") as server:
            yield f"http://127.0.0.1:{server.port}"
    finally:
        await store.close()
