"""The collector's HTTP API against a real Mosquitto: roles, errors, SSE, stats, /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import argon2
import pytest
import yaml
from collectorkit import TOKENS, collector_config, eventually, running_collector

from collector.app import Collector
from collector.auth import Users, hash_password, verify_password
from collector.exposition import prometheus_text
from enoc.config import ConfigError
from enoc.wire import Event, EventsMessage, encode, topic
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers


def events(seq: int, *items: tuple[str, str, str, str]) -> EventsMessage:
    """items: (event id, device, resource, state) for kind link."""
    now = time.time()
    return EventsMessage(
        "agent-1",
        "lab",
        "emea",
        seq,
        now,
        events=[
            Event(eid, now, device, resource, "link", state, "major", f"{resource} {state}")
            for eid, device, resource, state in items
        ],
    )


async def publish(url: str, message: EventsMessage) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="api-test-publisher") as client:
        await client.publish(topic("lab", "agent-1", "events"), encode(message), qos=1)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture
async def api(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[tuple[Collector, str]]:
    async with running_collector(collector_config(tmp_path, mosquitto.url)) as collector:
        yield collector, f"http://127.0.0.1:{collector.http_port}"


async def test_tokens_and_roles(api: tuple[Collector, str], mosquitto: Mosquitto) -> None:
    collector, base = api
    await publish(mosquitto.url, events(1, ("e1", "r1", "if:1", "down")))
    await eventually(lambda: collector.changes >= 1, what="incident opened")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/incidents") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in (await r.json())["error"]
        bad = {"Authorization": "Bearer " + "x" * 32}
        async with http.get(f"{base}/api/v1/incidents", headers=bad) as r:
            assert r.status == 401
        async with http.get(f"{base}/api/v1/incidents", headers=auth("viewer1")) as r:
            assert r.status == 200
            (incident,) = (await r.json())["incidents"]
        # a viewer reads but does not act
        url = f"{base}/api/v1/incidents/{incident['id']}/ack"
        async with http.post(url, headers=auth("viewer1")) as r:
            assert r.status == 403
            assert "operator" in (await r.json())["error"]
        async with http.post(url, headers=auth("ops1")) as r:
            assert r.status == 200
            body = await r.json()
            assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "ops1")
        async with http.post(url, headers=auth("ops1")) as r:
            assert r.status == 409  # already acknowledged
        # maintenance is for operators (inside their scope: ops1's is everything) and admins
        window = {"site": "lab", "ends": "2h", "reason": "fibre work"}
        async with http.post(
            f"{base}/api/v1/maintenance", json=window, headers=auth("viewer1")
        ) as r:
            assert r.status == 403
            assert "needs operator" in (await r.json())["error"]
        async with http.post(
            f"{base}/api/v1/maintenance", json=window, headers=auth("admin1")
        ) as r:
            assert r.status == 201
            created = await r.json()
            assert created["created_by"] == "admin1"
            assert created["ends"] - created["starts"] == pytest.approx(7200, abs=5)
        async with http.get(f"{base}/api/v1/maintenance", headers=auth("viewer1")) as r:
            assert [w["id"] for w in (await r.json())["windows"]] == [created["id"]]
        async with http.delete(
            f"{base}/api/v1/maintenance/{created['id']}", headers=auth("admin1")
        ) as r:
            assert r.status == 200
        async with http.delete(
            f"{base}/api/v1/maintenance/{created['id']}", headers=auth("admin1")
        ) as r:
            assert r.status == 404
        # security headers on every answer, errors included
        async with http.get(f"{base}/api/v1/sites") as r:
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    # operator actions are audited with who, what and when
    rows = await collector.store.run(lambda tx: tx.all("SELECT actor, action, target FROM audit"))
    assert ("ops1", "ack", f"incident:{incident['id']}") in rows
    assert ("admin1", "maintenance.add", f"maintenance:{created['id']}") in rows


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("GET", "/api/v1/incidents?limit=lots", None, 400, "limit must be an integer"),
        ("GET", "/api/v1/incidents?state=sleeping", None, 400, "state must be one of"),
        ("GET", "/api/v1/incidents?severity=huge", None, 400, "severity must be one of"),
        ("GET", "/api/v1/incidents/abc", None, 400, "id must be a positive integer"),
        ("GET", "/api/v1/incidents/999", None, 404, "no incident 999"),
        # found by enoc bench fuzz: beyond int64 was a 500 (the store's integer)
        ("POST", f"/api/v1/incidents/{10**30}/resolve", None, 404, f"no such id: {10**30}"),
        ("GET", "/api/v1/incidents/%C2%B2", None, 400, "id must be a positive integer"),
        ("DELETE", f"/api/v1/maintenance/{2**63}", None, 404, "no such id"),
        # a lone surrogate in a login name was a 503: the limiter's row could not be stored
        ("POST", "/login", b'{"name": "\\ud800x", "password": "p"}', 400, "lone surrogates"),
        ("POST", "/login", {"name": "n\u0000", "password": "p"}, 400, "without NUL"),
        ("POST", "/login", {"name": "n" * 257, "password": "p"}, 400, "at most 256"),
        ("POST", "/api/v1/incidents/999/ack", None, 404, "no incident 999"),
        ("POST", "/api/v1/incidents/1/comment", None, 400, "JSON object body is required"),
        ("POST", "/api/v1/incidents/1/comment", b"{not json", 400, "not valid JSON"),
        ("POST", "/api/v1/incidents/1/comment", b"[1]", 400, "must be a JSON object"),
        # found by enoc bench fuzz: json recursed into a RecursionError, answered 500
        ("POST", "/api/v1/incidents/1/comment", b"[" * 2000 + b"]" * 2000, 400, "nested deeper"),
        ("POST", "/login", b'{"a":' * 2000 + b"1" + b"}" * 2000, 400, "nested deeper"),
        ("POST", "/api/v1/maintenance", {"site": "lab"}, 400, '"ends" is required'),
        ("POST", "/api/v1/maintenance", {"ends": "1h"}, 400, "needs site, device or match"),
        ("POST", "/api/v1/maintenance", {"site": "x", "ends": "1h", "colour": 1}, 400, "colour"),
        ("POST", "/api/v1/maintenance", {"site": "x", "ends": "soon"}, 400, "ends must be"),
        ("GET", "/api/v1/stats?since=yesterday", None, 400, "since must be"),
        ("GET", "/api/v1/stats?since=1h&until=2h", None, 400, "since must be before until"),
        ("GET", "/api/v1/devices/lab/nothing", None, 404, "no device nothing"),
        ("GET", "/api/v1/nowhere", None, 404, "Not Found"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    api: tuple[Collector, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    says: str,
) -> None:
    _, base = api
    kwargs: dict[str, Any] = {"headers": auth("admin1")}
    if isinstance(body, bytes):
        kwargs["data"] = body
        kwargs["headers"] = {**auth("admin1"), "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    async with aiohttp.ClientSession() as http, http.request(method, base + path, **kwargs) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        assert says in (await r.json())["error"]


async def read_sse(response: aiohttp.ClientResponse, queue: asyncio.Queue[dict[str, Any]]) -> None:
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in event:
                await queue.put(event)
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


async def test_stream_pushes_incident_changes_and_resumes(
    api: tuple[Collector, str], mosquitto: Mosquitto
) -> None:
    collector, base = api
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/stream") as r:
            assert r.status == 401
        response = await http.get(f"{base}/api/v1/stream", headers=auth("viewer1"))
        assert response.headers["Content-Type"] == "text/event-stream"
        reader = asyncio.create_task(read_sse(response, queue))
        await eventually(lambda: collector.hub.clients == 1, what="subscribed")
        await publish(mosquitto.url, events(1, ("e1", "r1", "if:1", "down")))
        opened = await asyncio.wait_for(queue.get(), 10)
        assert opened["event"] == "incident"
        assert opened["data"]["change"] == "opened"
        incident = opened["data"]["incident"]
        assert (incident["site"], incident["device"], incident["resource"]) == (
            "lab",
            "r1",
            "if:1",
        )
        async with http.post(
            f"{base}/api/v1/incidents/{incident['id']}/comment",
            json={"text": "field team on the way"},
            headers=auth("ops1"),
        ) as r:
            assert r.status == 200
        commented = await asyncio.wait_for(queue.get(), 10)
        assert commented["data"]["change"] == "commented"
        await publish(mosquitto.url, events(2, ("e2", "r1", "if:1", "up")))
        resolved = await asyncio.wait_for(queue.get(), 10)
        assert resolved["data"]["change"] == "resolved"
        assert resolved["data"]["incident"]["resolved_by"] == "auto"
        reader.cancel()
        response.close()
        # a reconnecting client with Last-Event-ID gets what it missed, in order
        headers = {**auth("viewer1"), "Last-Event-ID": opened["id"]}
        async with http.get(f"{base}/api/v1/stream", headers=headers) as again:
            resumed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            reader = asyncio.create_task(read_sse(again, resumed))
            first = await asyncio.wait_for(resumed.get(), 10)
            second = await asyncio.wait_for(resumed.get(), 10)
            reader.cancel()
        assert [first["id"], second["id"]] == [commented["id"], resolved["id"]]
    # the timeline holds the event, the comment and the clearing event
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/v1/incidents/{incident['id']}", headers=auth("viewer1")) as r,
    ):
        detail = await r.json()
    assert [(t["what"], t["actor"]) for t in detail["timeline"]] == [
        ("event", "agent-1"),
        ("comment", "ops1"),
        ("event", "agent-1"),
    ]


async def test_stats_fleet_and_metrics(api: tuple[Collector, str], mosquitto: Mosquitto) -> None:
    collector, base = api
    await publish(
        mosquitto.url,
        events(1, ("e1", "r1", "if:1", "down"), ("e2", "r2", "if:2", "down")),
    )
    await eventually(lambda: collector.changes >= 2, what="two incidents")
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{base}/api/v1/incidents?state=open&site=lab", headers=auth("viewer1")
        ) as r:
            ids = sorted(i["id"] for i in (await r.json())["incidents"])
        assert len(ids) == 2
        for incident_id in ids:
            async with http.post(
                f"{base}/api/v1/incidents/{incident_id}/resolve", headers=auth("ops1")
            ) as r:
                assert r.status == 200
        async with http.get(f"{base}/api/v1/stats?since=1h", headers=auth("viewer1")) as r:
            (row,) = (await r.json())["stats"]
        assert (row["site"], row["severity"], row["incidents"], row["resolved"]) == (
            "lab",
            "major",
            2,
            2,
        )
        assert row["mttr_s"] is not None and row["mttr_s"] >= 0
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 401
        async with http.get(f"{base}/metrics", headers=auth("viewer1")) as r:
            assert r.content_type == "text/plain"
            text = await r.text()
    samples = parse_prometheus(text)
    assert samples['enoc_collector_received_total{kind="events"}'] == 1
    assert samples["enoc_collector_incident_changes_total"] == 4
    assert samples['enoc_collector_incidents_open{severity="major"}'] == 0
    assert samples["enoc_collector_dead_letters_total"] == 0
    assert "# TYPE enoc_collector_metrics_pending gauge" in text


def parse_prometheus(text: str) -> dict[str, float]:
    """Strict enough to catch malformed exposition: every line a TYPE comment or a sample."""
    samples: dict[str, float] = {}
    sample = re.compile(r'^([a-z_:][a-z0-9_:]*(?:\{[a-z_]+="[^"]*"\})?) (-?[0-9.e+]+)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            assert line.split()[3] in ("counter", "gauge"), line
            continue
        match = sample.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1)] = float(match.group(2))
    return samples


def test_users_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump({"users": [{"name": "ops1", "role": "boss", "token": "t"}]}))
    with pytest.raises(ConfigError) as error:
        Users.load(path)
    assert str(path) in str(error.value)
    assert "users[0].role" in str(error.value)
    path.write_text(yaml.safe_dump({"users": [{"name": "a", "token": "x" * 16}, {"name": "a"}]}))
    with pytest.raises(ConfigError, match="duplicate user names: a"):
        Users.load(path)


def test_tokens_and_passwords() -> None:
    users = Users(
        [
            _user("ops1", "operator", "t" * 20, "pw-ops1-long"),
            _user("view", "viewer", "v" * 20, ""),
        ]
    )
    found = users.by_token("t" * 20)
    assert found is not None and found.name == "ops1"
    assert users.by_token("t" * 19) is None
    assert users.by_password("ops1", "pw-ops1-long") is found
    assert users.by_password("ops1", "wrong") is None
    assert users.by_password("view", "") is None  # no password hash: no console login
    assert users.by_password("nobody", "pw-ops1-long") is None
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("x", "scrypt$garbage")
    assert not verify_password("x", "$argon2id$garbage")


def _user(name: str, role: str, token: str, password: str) -> Any:
    from collector.auth import User
    from enoc.config import Secret

    return User(
        name,
        role,  # type: ignore[arg-type]
        Secret(token),
        hash_password(password) if password else "",
    )


def test_passwd_command_prints_a_verifiable_hash() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "passwd", "--stdin"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        check=True,
    )
    printed = result.stdout.strip()
    assert verify_password("a long enough password", printed)
    # argon2id at or above OWASP's Password Storage Cheat Sheet: 19 MiB, 2 passes, 1 lane
    params = argon2.extract_parameters(printed)
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19 * 1024 and params.time_cost >= 2
    short = subprocess.run(
        [sys.executable, "-m", "enoc.cli", "passwd", "--stdin"],
        input="short\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert short.returncode == 2 and "12 characters" in short.stderr


def test_metrics_name_the_device_of_refused_lines_in_a_device_label() -> None:
    """A refused line is counted by the device it belongs to: `device="..."`, not the
    `kind` label the other families use, which would read as a kind of refusal."""
    text = prometheus_text({"lines_refused.arista-1": 2, "rejected.too_deep": 1}, None)
    assert 'enoc_collector_lines_refused_total{device="arista-1"} 2' in text.splitlines()
    assert 'enoc_collector_rejected_total{kind="too_deep"} 1' in text.splitlines()


def test_metrics_name_the_part_of_a_crash_in_a_part_label() -> None:
    text = prometheus_text({"part_crashes.ingest.events": 1, "part_crashes.sweeper": 0}, None)
    lines = text.splitlines()
    assert 'enoc_collector_part_crashes_total{part="ingest.events"} 1' in lines
    assert 'enoc_collector_part_crashes_total{part="sweeper"} 0' in lines
