"""The API over a store seeded with incidents at set times (an injected clock): opened by
a device-down event, acknowledged or resolved by an operator or cleared by an up event."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp.test_utils import TestServer
from collectorkit import Clock, collector_config, engine_app

from collector.config import check_collector
from collector.incidents import Engine
from collector.store import Store
from enoc.wire import Event, EventsMessage, Severity
from testbed.servers import free_port

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


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, incidents: list[Incident], users: Path | None = None
) -> AsyncIterator[str]:
    """The API and console on loopback over a store holding `incidents`; its base URL."""
    extra = {"http": {"users_file": str(users)}} if users is not None else None
    path = collector_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", extra=extra)
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
