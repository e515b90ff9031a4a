"""Hostile input on the collector's lanes (issue 18), against a real Mosquitto and the real
collector: each message of the issue is dead-lettered to `enoc/deadletter/v1/<reason>`,
counted in /metrics, logged once and acknowledged (a restarted collector does not get it
again), and a valid event from another agent still becomes an incident after it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import sqlite3
import subprocess
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import psycopg
import pytest
from aiomqtt.exceptions import MqttConnectError
from collectorkit import TOKENS, collector_config, eventually, running_collector

import collector.ingest as ingest_module
from agent.config import AgentConfig
from agent.publisher import Publisher
from collector.app import Collector
from collector.config import CollectorMqttConfig
from collector.model import IncidentChange
from collector.store import Store, content_refused, store_outage
from enoc.config import parse_config
from enoc.mqtt import AGENT_MAX_PACKET_SIZE, V5, V311, AckedClient, ProtocolChoice, client_args
from enoc.wire import Event, EventsMessage, StatusMessage, encode, topic
from testbed.servers import Mosquitto, PostgreSQL, free_port

pytestmark = pytest.mark.servers
T0 = round(time.time() - 600, 3)
SITE = "lab"
EVIL = "evil-1"
DEEP = "@deep@"


def envelope(kind: str, seq: int = 1, agent: str = EVIL) -> dict[str, Any]:
    return {"v": 1, "agent": agent, "site": SITE, "kind": kind, "rtc": "emea", "seq": seq,
            "sent": T0}  # fmt: skip


def event_body(**changes: object) -> dict[str, Any]:
    event = {"id": "e-1", "ts": T0, "device": "pe-9", "resource": "if:1", "kind": "link",
             "state": "down", "severity": "major", "message": "", "source": "poll",
             "attrs": {}}  # fmt: skip
    return {**envelope("events"), "events": [{**event, **changes}]}


def status_body(**changes: object) -> dict[str, Any]:
    body = {**envelope("status"), "state": "online", "version": "1", "inventory_size": 1,
            "health": {}, "devices": [["pe-9", "127.0.0.9", "pe", ""]]}  # fmt: skip
    return {**body, **changes}


def metrics_body(fields: dict[str, object]) -> dict[str, Any]:
    sample = {"device": "pe-9", "address": "127.0.0.9", "ts": T0, "fields": fields}
    return {**envelope("metrics"), "samples": [sample]}


def text(body: dict[str, Any]) -> bytes:
    """JSON, with a value of DEEP nested 1,000 arrays deep (the issue's 2 KB message)."""
    return json.dumps(body).replace(f'"{DEEP}"', "[" * 1000 + "]" * 1000).encode()


# (what, kind, payload, reason)
HOSTILE = [
    ("events nested 1,000 deep", "events", text(event_body(attrs={"x": DEEP})), "too_deep"),
    ("status nested 1,000 deep", "status", text(status_body(health={"x": DEEP})), "too_deep"),
    ("status seq 2**64", "status", text({**status_body(), "seq": 2**64}), "invalid"),
    ("status inventory_size 2**64", "status", text(status_body(inventory_size=2**64)), "invalid"),
    ("event message NUL", "events", text(event_body(message="a\u0000b")), "invalid"),
    ("event id NUL", "events", text(event_body(id="e\u00001")), "invalid"),
    ("event attrs NUL", "events", text(event_body(attrs={"k": "\u0000"})), "invalid"),
    ("status version NUL", "status", text(status_body(version="1\u0000")), "invalid"),
    ("status device NUL", "status", text(status_body(devices=[["a\u0000", "", "", ""]])),
     "invalid"),
    ("metrics empty field name", "metrics", text(metrics_body({"": 1, "cpu": 2})), "invalid"),
]  # fmt: skip
NUL_CASES = {"event message NUL", "event id NUL", "event attrs NUL", "status version NUL"}


def good_event(agent: str = "good-1", device: str = "pe-1", seq: int = 1) -> EventsMessage:
    """A link-down event of another agent: it opens an incident."""
    event = Event(f"{device}-{seq}", T0 + seq, device, "if:1", "link", "down", "major")
    return EventsMessage(agent, SITE, "emea", seq, T0 + seq, events=[event])


async def publish(url: str, items: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="hostile-publisher") as client:
        for name, payload in items:
            await client.publish(name, payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def dead_letters(url: str) -> AsyncIterator[list[aiomqtt.Message]]:
    """Every dead letter published while inside."""
    host, port = url.removeprefix("mqtt://").split(":")
    received: list[aiomqtt.Message] = []
    async with aiomqtt.Client(host, int(port), identifier="dead-letter-reader") as client:
        await client.subscribe("enoc/deadletter/v1/#", qos=1)

        async def read() -> None:
            async for message in client.messages:
                received.append(message)

        task = asyncio.create_task(read())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def opened_for(coll: Collector, device: str) -> bool:
    return any(i.key.device == device for i in await coll.engine.queries.incidents())


async def scraped(coll: Collector) -> str:
    """/metrics as Prometheus reads it (served on this loop: not a blocking request)."""
    headers = {"Authorization": f"Bearer {TOKENS['viewer1']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{coll.http_port}/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        return await response.text()


_databases = itertools.count()


def pg_database(server: PostgreSQL) -> str:
    name = f"hostile{next(_databases)}"
    with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def hostile_params() -> list[Any]:
    out = []
    for what, kind, payload, reason in HOSTILE:
        stores = ["sqlite", "postgresql"] if what in NUL_CASES else ["sqlite"]
        out += [pytest.param(kind, payload, reason, s, id=f"{what}-{s}") for s in stores]
    return out


@pytest.mark.parametrize(("kind", "payload", "reason", "store"), hostile_params())
async def test_a_hostile_message_is_dead_lettered_and_every_lane_goes_on(
    tmp_path: Path,
    mosquitto: Mosquitto,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    payload: bytes,
    reason: str,
    store: str,
) -> None:
    store_url = pg_database(request.getfixturevalue("pg_server")) if store != "sqlite" else ""
    config = collector_config(tmp_path, mosquitto.url, store_url=store_url)
    hostile = topic(SITE, EVIL, kind)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    async with running_collector(config) as coll, dead_letters(mosquitto.url) as letters:
        await publish(mosquitto.url, [(hostile, payload), (hostile, payload)])
        await eventually(lambda: len(letters) == 2, what="both copies dead-lettered")
        # the lanes go on: another agent's event becomes an incident, its metrics are taken
        good = [(topic(SITE, "good-1", "events"), encode(good_event()))]
        good.append((topic(SITE, "good-1", "metrics"), text(metrics_body({"cpu": 1}) | {
            "agent": "good-1"})))  # fmt: skip
        await publish(mosquitto.url, good)
        await eventually(lambda: opened_for(coll, "pe-1"), what="the good event's incident")
        await eventually(lambda: coll.ingest.stats.received["metrics"] == 1, what="good metrics")
        assert not await opened_for(coll, "pe-9"), "nothing of the hostile message was taken"
        assert all(str(m.topic) == f"enoc/deadletter/v1/{reason}" for m in letters)
        letter = json.loads(letters[0].payload)
        assert (letter["reason"], letter["topic"]) == (reason, hostile)
        assert base64.b64decode(letter["payload_b64"]) == payload
        assert letter["size"] == len(payload)
        assert dict(coll.ingest.stats.rejected) == {reason: 2}
        assert f'enoc_collector_rejected_total{{kind="{reason}"}} 2' in await scraped(coll)
        assert coll.ingest.stats.failed == {}, "nothing held back as if the store were out"
        said = [r for r in caplog.records if r.getMessage().startswith("rejected a message")]
        assert len(said) == 1, "logged once"
        assert reason in said[0].getMessage()
    # acknowledged: a restarted collector (same sessions) does not get them again
    async with running_collector(config) as coll:
        await publish(mosquitto.url, [(topic(SITE, "good-1", "events"), encode(good_event(seq=2)))])
        await eventually(lambda: coll.ingest.stats.received["events"] == 1, what="a new event")
        await asyncio.sleep(0.5)  # time for anything redelivered to come
        assert coll.ingest.stats.rejected == {}


async def test_a_bad_retained_status_is_dead_lettered_at_every_start(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An agent's retained status that the store could never take (seq 2**64, the SQLite
    insert failed forever) is sent to every replica at every start: each start
    dead-letters it and goes on."""
    bad = text({**status_body(), "seq": 2**64})
    await publish(mosquitto.url, [(topic(SITE, EVIL, "status"), bad)], retain=True)
    for start in range(2):
        config = collector_config(tmp_path, mosquitto.url, name=f"replica-{start}")
        async with dead_letters(mosquitto.url) as letters, running_collector(config) as coll:
            await eventually(lambda: len(letters) == 1, what=f"dead-lettered at start {start}")
            assert str(letters[0].topic) == "enoc/deadletter/v1/invalid"
            assert json.loads(letters[0].payload)["topic"] == topic(SITE, EVIL, "status")
            device = f"pe-{start}"
            message = encode(good_event(device=device, seq=start + 1))
            await publish(mosquitto.url, [(topic(SITE, "good-1", "events"), message)])
            await eventually(
                lambda d=device: opened_for(coll, d),
                what="the good event's incident",
            )
            assert coll.ingest.stats.rejected == {"invalid": 1}
            assert coll.ingest.stats.connected == {"metrics": True, "events": True}


async def test_the_store_refusing_a_message_dead_letters_it_and_an_outage_holds_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The lane's rule past the decoder: the store's refusal of a message's content (here
    a real sqlite3.IntegrityError) dead-letters it as `refused`; an outage (OSError) holds
    it back until the store answers."""
    config = collector_config(tmp_path, mosquitto.url)
    coll = Collector.from_file(config)
    commit = coll.engine.on_events
    outages = 0

    async def refusing(message: EventsMessage) -> list[IncidentChange]:
        nonlocal outages
        if message.agent == EVIL:
            raise sqlite3.IntegrityError("NOT NULL constraint failed: events.device")
        if message.agent == "flaky-1" and outages == 0:
            outages += 1
            raise OSError("the incident store is down")
        return await commit(message)

    coll.engine.on_events = refusing  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    try:
        await asyncio.wait_for(coll.ingest.subscribed.wait(), 20)
        async with dead_letters(mosquitto.url) as letters:
            await publish(
                mosquitto.url,
                [
                    (topic(SITE, EVIL, "events"), encode(good_event(EVIL, "pe-9"))),
                    (topic(SITE, "flaky-1", "events"), encode(good_event("flaky-1", "pe-2"))),
                ],
            )
            await eventually(lambda: len(letters) == 1, what="the refused one dead-lettered")
            assert str(letters[0].topic) == "enoc/deadletter/v1/refused"
            assert "IntegrityError" in json.loads(letters[0].payload)["error"]
            await eventually(lambda: opened_for(coll, "pe-2"), what="the held one, redelivered")
        assert outages == 1 and coll.ingest.stats.failed == {"EventsMessage": 1}
        assert coll.ingest.stats.rejected == {"refused": 1}
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# ------------------------------------------------------------------ two sites, one agent id


async def test_two_sites_with_the_same_agent_id_do_not_interfere(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Agent "edge-1" at two sites: each its own status row (one offline does not take
    the other's devices to unknown), and the same event id at each site is two events."""
    config = collector_config(tmp_path, mosquitto.url)
    async with running_collector(config) as coll:
        items = []
        for site in ("nyc", "lon"):
            status = StatusMessage("edge-1", site, "emea", 5, T0, inventory_size=1)
            items.append((topic(site, "edge-1", "status"), encode(status)))
        for site in ("nyc", "lon"):
            event = Event("e-1", T0 + 1, f"{site}-pe", "if:1", "link", "down", "major")
            message = EventsMessage("edge-1", site, "emea", 1, T0 + 1, events=[event])
            items.append((topic(site, "edge-1", "events"), encode(message)))
        await publish(mosquitto.url, items)

        async def both() -> bool:
            incidents = await coll.engine.queries.incidents()
            return {(i.key.site, i.key.device) for i in incidents} == {
                ("nyc", "nyc-pe"),
                ("lon", "lon-pe"),
            }

        await eventually(both, what="an incident at each site from the same event id")
        assert coll.engine.duplicates == 0
        agents = await coll.engine.queries.agents()
        assert sorted((a["site"], a["agent"], a["state"]) for a in agents) == [
            ("lon", "edge-1", "online"),
            ("nyc", "edge-1", "online"),
        ]
        # nyc's agent goes offline (its will, a higher seq): lon's stays online
        will = StatusMessage("edge-1", "nyc", "emea", 6, T0 + 2, state="offline")
        await publish(mosquitto.url, [(topic("nyc", "edge-1", "status"), encode(will))])

        async def states() -> dict[str, str]:
            return {a["site"]: a["state"] for a in await coll.engine.queries.agents()}

        await eventually(
            lambda: states_are(states, {"nyc": "offline", "lon": "online"}), what="nyc offline"
        )
        offline = [
            i for i in await coll.engine.queries.incidents() if i.key.kind == "agent_offline"
        ]
        assert [i.key.site for i in offline] == ["nyc"]


async def states_are(states: Any, expected: dict[str, str]) -> bool:
    return bool(await states() == expected)


# ------------------------------------------------------------------ the store's verdicts


async def test_the_store_says_which_errors_are_the_content_and_which_an_outage(
    tmp_path: Path, pg_server: PostgreSQL
) -> None:
    """Real errors of both stores: what the content caused (no retry changes it) and what
    an unavailable server caused (waiting does)."""
    sqlite_store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    pg_store = Store(pg_database(pg_server))
    try:
        for store in (sqlite_store, pg_store):
            await store.open()
            errors: list[BaseException] = []
            for params in [
                ("a", 2**64),  # beyond the store's integers
                (None, 1),  # a NOT NULL column
                ("a\u0000b", 1),  # PostgreSQL's text cannot hold NUL
            ]:
                try:
                    await store.run(
                        lambda tx, p=params: tx.execute(  # type: ignore[misc]
                            "INSERT INTO agents (agent, site, state, last_seen, status_seq) "
                            "VALUES (?, 'lab', 'online', 0, ?)",
                            p,
                        )
                    )
                except Exception as exc:
                    errors.append(exc)
            assert len(errors) == (2 if store is sqlite_store else 3), errors
            assert all(content_refused(e) and not store_outage(e) for e in errors), errors
        await pg_store.close()
        dead = Store(f"postgresql://enoc@127.0.0.1:{free_port()}/enoc")
        with pytest.raises(psycopg.OperationalError) as refused:
            await dead.run(lambda tx: tx.one("SELECT 1"))
        assert store_outage(refused.value) and not content_refused(refused.value)
        await dead.close()
    finally:
        await sqlite_store.close()
        with contextlib.suppress(Exception):
            await pg_store.close()


# ------------------------------------------------------------------ size


BIG = 23 * 1024 * 1024  # the issue's: the general decode made some 1 GiB of it


def big_message(tmp_path: Path) -> Path:
    """A 23 MB JSON message: a status whose health holds one long string."""
    path = tmp_path / "big.json"
    path.write_bytes(json.dumps(status_body(health={"x": "y" * BIG})).encode())
    return path


def publish_file(mosquitto: Mosquitto, path: Path, name: str) -> None:
    """Published by mosquitto_pub (another process: its copies are not the collector's),
    over 3.1.1: the broker takes it whatever its size."""
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1", "-t", name,
         "-f", str(path), "-i", "big-publisher"],
        check=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_23_mb_message_costs_a_bounded_memory_and_is_not_redelivered(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """MQTT 5: the collector announces its Maximum Packet Size and the broker does not
    send the message at all. 3.1.1 (a broker that cannot be told): it arrives, and is
    dead-lettered as too_large without being decoded. Either way the collector's memory
    grows by the transport's copies at most (tracemalloc's peak: the decode made 45 times
    the message), the message does not come back after a restart and the lane goes on."""
    if protocol == "3.1.1":

        def v311() -> ProtocolChoice:
            choice = ProtocolChoice()
            choice.fall_back(MqttConnectError(1))  # as a broker without 5 refuses it
            return choice

        monkeypatch.setattr(ingest_module, "ProtocolChoice", v311)
    config = collector_config(tmp_path, mosquitto.url)
    name = topic(SITE, EVIL, "status")
    async with running_collector(config) as coll, dead_letters(mosquitto.url) as letters:
        assert coll.ingest.stats.protocol["events"] == (5 if protocol == "5" else 4)
        path = big_message(tmp_path)
        tracemalloc.start()
        try:
            await asyncio.to_thread(publish_file, mosquitto, path, name)
            await publish(mosquitto.url, [(topic(SITE, "good-1", "events"), encode(good_event()))])
            await eventually(lambda: opened_for(coll, "pe-1"), what="the good event's incident")
            if protocol == "3.1.1":
                await eventually(lambda: len(letters) == 1, what="the big one dead-lettered")
            # the dead letter's acknowledgement, then nothing held (a loaded machine takes
            # longer to get there than a quiet one: waited for, not slept)
            await eventually(
                lambda: tracemalloc.get_traced_memory()[0] < 4 * 2**20,
                timeout=10,
                what="the receive buffer back to its size",
            )
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        if protocol == "3.1.1":
            assert coll.ingest.stats.rejected == {"too_large": 1}
            assert str(letters[0].topic) == "enoc/deadletter/v1/too_large"
            letter = json.loads(letters[0].payload)
            assert letter["size"] > BIG and len(base64.b64decode(letter["payload_b64"])) == 65536
        else:
            assert coll.ingest.stats.rejected == {} and letters == []
            assert coll.ingest.stats.received["status"] == 0, "the broker did not send it"
        print(f"MQTT {protocol}: tracemalloc peak {peak / 2**20:.1f} MiB, then {kept / 2**20:.1f}")
        # 3.1.1: the receive buffer and the payload's copy, each the message's size
        assert peak < (3 * BIG if protocol == "3.1.1" else 4 * 2**20), f"{peak / 2**20:.0f} MiB"
        assert kept < 4 * 2**20, "the receive buffer went back to its size"
        assert coll.ingest.stats.connected["events"]
    async with running_collector(config) as coll:
        await publish(mosquitto.url, [(topic(SITE, "good-1", "events"), encode(good_event(seq=2)))])
        await eventually(lambda: coll.ingest.stats.received["events"] == 1, what="a new event")
        await asyncio.sleep(0.5)  # time for anything redelivered to come
        assert coll.ingest.stats.rejected == {} and coll.ingest.stats.received["status"] == 0


def shipped_limit() -> int:
    """deploy/mosquitto/mosquitto.conf's message_size_limit."""
    conf = Path(__file__).parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"
    (value,) = [
        line.split()[1] for line in conf.read_text().splitlines() if line.startswith("message_")
    ]
    return int(value)


async def test_the_shipped_broker_refuses_a_message_over_the_collectors_limit(
    tmp_path: Path,
) -> None:
    """deploy/mosquitto's limit is the collector's default. Mosquitto 2.0.11 drops a 3.1.1
    publisher's larger message (acknowledged, the connection kept) and disconnects an
    MQTT 5 publisher that sends one; a message of the limit goes through."""
    limit = shipped_limit()
    assert limit == CollectorMqttConfig().max_message_size
    extra = f"message_size_limit {limit}\n"
    with Mosquitto(tmp_path / "mosquitto", config_extra=extra) as broker:
        name = topic(SITE, "good-1", "status")
        received: list[int] = []
        async with (
            aiomqtt.Client("127.0.0.1", broker.port, identifier="reader") as reader,
            AckedClient(**client_args(broker.url, identifier="v311-pub")) as v311,
        ):
            await reader.subscribe(name, qos=1)
            await v311.publish_acked(name, b"z" * (limit + 1))
            with pytest.raises(aiomqtt.MqttError):
                async with AckedClient(
                    **client_args(broker.url, identifier="v5", protocol=V5)
                ) as v5:
                    await v5.publish_acked(name, b"x" * (limit + 1))
            async with AckedClient(**client_args(broker.url, identifier="v5", protocol=V5)) as v5:
                assert not (await v5.publish_acked(name, b"y" * limit)).is_failure
            await v311.publish_acked(name, b"end")
            async for message in reader.messages:
                received.append(len(message.payload))
                if message.payload == b"end":
                    break
        assert received == [limit, 3]


def test_the_collector_and_the_agent_announce_a_maximum_packet_size(tmp_path: Path) -> None:
    """Over MQTT 5 (3.1.1 has no such property): the collector its payload limit plus
    room for the topic, the agent 64 KiB (it receives acknowledgements only)."""
    assert "properties" not in client_args("mqtt://127.0.0.1:1", identifier="x")
    config = parse_config(
        f"agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {{url: 'mqtt://127.0.0.1:1'}}\n"
        f"spool: {{path: '{tmp_path / 'spool'}'}}\n",
        AgentConfig,
    )
    publisher = Publisher(config, health=dict, inventory_size=lambda: 0)
    properties = publisher._client_args(V5)["properties"]
    assert properties.MaximumPacketSize == AGENT_MAX_PACKET_SIZE == 65536  # type: ignore[attr-defined]
    assert not hasattr(publisher._client_args(V311).get("properties"), "MaximumPacketSize")


async def test_a_fault_in_a_lane_is_logged_and_the_lane_reconnects(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever escapes the handling of one message (here a RuntimeError from the lane's
    own code) is logged with its traceback and counted, and the lane reconnects: the
    message comes again (it was not acknowledged) and is taken."""
    config = collector_config(tmp_path, mosquitto.url)
    async with running_collector(config) as coll:
        handle = coll.ingest._handle
        faults = 0

        async def faulty(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
            nonlocal faults
            if faults == 0 and str(message.topic).endswith("/events"):
                faults += 1
                raise RuntimeError("a fault of ours")
            await handle(client, message)

        coll.ingest._handle = faulty  # type: ignore[method-assign]
        await publish(mosquitto.url, [(topic(SITE, "good-1", "events"), encode(good_event()))])
        await eventually(lambda: opened_for(coll, "pe-1"), what="the event, after a reconnect")
        assert faults == 1 and coll.ingest.stats.lane_errors == {"events": 1}
        assert coll.ingest.stats.connects["events"] == 2
        assert 'enoc_collector_lane_errors_total{kind="events"} 1' in await scraped(coll)
        (said,) = [r for r in caplog.records if "lane failed" in r.getMessage()]
        assert said.exc_info is not None and "a fault of ours" in str(said.exc_info[1])


def test_max_message_size_is_checked_where_it_is_configured() -> None:
    with pytest.raises(ValueError, match=r"mqtt.max_message_size must be 1024 to \d+ bytes"):
        CollectorMqttConfig(max_message_size=100)
    assert CollectorMqttConfig().max_message_size == 1024 * 1024
