"""The HTTP API built from the parts it serves (`make_app`), without a Collector: typed
app keys in, the clients it opens owned by its `cleanup_ctx`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from collectorkit import TOKENS, collector_config, engine_app

from collector.api import QUERIES_KEY, RECENT_DB_KEY
from collector.config import check_collector
from collector.incidents import Engine
from collector.model import IncidentChange
from collector.store import Store
from enoc.wire import Capabilities, Event, EventsMessage
from testbed.servers import free_port


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


async def test_the_api_serves_the_parts_it_is_given_and_closes_its_own_clients(
    tmp_path: Path,
) -> None:
    """Incidents read through the queries given, an operator's ack made by the operators
    given and handed to `publish`, /metrics from `counters`; the device page's InfluxDB
    reader opens at start-up and is closed at clean-up."""
    influx = {"url": f"http://127.0.0.1:{free_port()}", "api": "v1", "database": "enoc"}
    path = collector_config(
        tmp_path,
        f"mqtt://127.0.0.1:{free_port()}",
        extra={"influxdb": influx, "recent": {"source": "influxdb", "timeout": "1s"}},
    )
    config = check_collector(path).result()
    assert config.http.users_file is not None
    store = Store(config.store.url)
    await store.open()
    engine = Engine(store, config.incidents, origin="api-test")
    published: list[IncidentChange] = []

    async def publish(changes: list[IncidentChange]) -> None:
        published.extend(changes)

    app = engine_app(
        config,
        store,
        engine,
        publish=publish,
        health=lambda: {"store": {"ok": store.healthy, "last_error": ""}},
        counters=lambda: {"acked": 7},
        capabilities={("lab", "agent-1"): {"r1": Capabilities(["bgp"], {"cpu": "JUNIPER-MIB"})}},
    )
    assert app[QUERIES_KEY] is engine.queries
    now = time.time()
    down = Event("e1", now, "r1", "device", "reachability", "down", "major", "r1 down")
    (opened,) = await engine.on_events(EventsMessage("agent-1", "lab", "emea", 1, now, [down]))
    session: Any = None
    try:
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            reader = app[RECENT_DB_KEY]  # opened at start-up, when recent.source is influxdb
            base = f"http://127.0.0.1:{server.port}"
            async with http.get(f"{base}/api/v1/incidents", headers=auth("viewer1")) as r:
                assert r.status == 200
                assert [i["id"] for i in (await r.json())["incidents"]] == [opened.incident.id]
            url = f"{base}/api/v1/incidents/{opened.incident.id}/ack"
            async with http.post(url, headers=auth("ops1")) as r:
                assert r.status == 200, await r.text()
            assert [(c.change, c.incident.acknowledged_by) for c in published] == [
                ("acknowledged", "ops1")
            ]
            # InfluxDB does not answer: the page falls back to this process's window
            async with http.get(f"{base}/api/v1/devices/lab/r1", headers=auth("viewer1")) as r:
                assert r.status == 200
                page = await r.json()
                assert [i["id"] for i in page["incidents"]] == [opened.incident.id]
                # from its agent's status message (agent.discovery)
                assert page["capabilities"] == {"found": ["bgp"], "sources": {"cpu": "JUNIPER-MIB"}}
            session = reader._session
            assert session is not None and not session.closed
            async with http.get(f"{base}/metrics", headers=auth("viewer1")) as r:
                assert "enoc_collector_acked_total 7" in await r.text()
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
        assert session.closed  # the app's clean-up closed the client it opened
    finally:
        await store.close()
