"""Console sessions: signed cookies, CSRF, rate-limited login, audit log, security headers."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml
from collectorkit import Clock, collector_config, eventually, running_collector
from test_collector_api import auth, events, publish, read_sse
from yarl import URL

from collector import api as collector_api
from collector.access import Principal, Scope, ScopeConfig
from collector.app import Collector
from collector.auth import User, Users, hash_password
from collector.session import COOKIE, LoginLimiter, Sessions, load_key
from collector.store import Store, Tx
from enoc.config import Secret
from testbed.servers import Mosquitto, PostgreSQL

PASSWORD = "a long console password"


@pytest.fixture(params=["sqlite", "postgresql"])
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """Two replicas' connections to one store: sessions and login limits on both dialects."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'incidents.db'}"
    else:
        server: PostgreSQL = request.getfixturevalue("pg_server")
        name = f"s{next(_databases)}"
        base = server.url.rsplit("/", 1)[0]
        with psycopg.connect(base + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
    stores = (Store(url), Store(url))
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


_databases = itertools.count(1)


async def test_cookies_are_signed_expire_and_revoke_on_every_replica(
    replicas: tuple[Store, Store],
) -> None:
    users = Users([User("ops1", "operator"), User("bob", "viewer")])
    clock = Clock()
    sessions = Sessions(users, b"k" * 32, replicas[0], lifetime=3600, now=clock)
    other = Sessions(users, b"k" * 32, replicas[1], lifetime=3600, now=clock)  # the replica
    cookie, session = await sessions.issue(users.users[0].principal())
    found = await other.verify(cookie)
    assert found is not None
    assert found.principal.name == "ops1"
    assert found.principal.identity == "local:ops1"
    assert found.csrf(sessions.key) == session.csrf(sessions.key)
    # any change to the cookie breaks the signature
    nonce, signature = cookie.split(".")
    _, bob = await sessions.issue(users.users[1].principal())
    assert await sessions.verify(f"{bob.nonce}.{signature}") is None, "another's nonce"
    assert await sessions.verify(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert await sessions.verify(nonce) is None
    assert await sessions.verify("garbage") is None
    # another key (another deployment) does not accept it
    assert await Sessions(users, b"x" * 32, replicas[0], now=clock).verify(cookie) is None
    # expired
    clock.t += 3601
    assert await sessions.verify(cookie) is None
    clock.t -= 3601
    # logged out on one replica: refused by both
    await sessions.revoke(session)
    assert await sessions.verify(cookie) is None
    assert await other.verify(cookie) is None
    # a user removed from the users file loses the session; one whose role changed in
    # the file has the new role from the next request on
    cookie2, _ = await sessions.issue(users.users[1].principal())
    assert await other.verify(cookie2) is not None
    gone = Sessions(Users([users.users[0]]), b"k" * 32, replicas[1], now=clock)
    assert await gone.verify(cookie2) is None
    promoted = Sessions(
        Users([User("bob", "admin", scope=ScopeConfig(rtc=["emea"]))]),
        b"k" * 32,
        replicas[1],
        now=clock,
    )
    now_admin = await promoted.verify(cookie2)
    assert now_admin is not None
    assert now_admin.principal.role == "admin"
    assert now_admin.principal.scope.as_dict() == {"rtc": ["emea"], "site": []}
    # a session is kept until its cookie would have expired anyway, then pruned
    clock.t += 3601
    _, later = await sessions.issue(users.users[0].principal())
    await other.revoke(later)

    def nonces(tx: Tx) -> list[str]:
        return [str(r[0]) for r in tx.all("SELECT nonce FROM sessions")]

    assert await replicas[0].run(nonces) == [later.nonce], "the earlier ones are gone"


async def test_directory_identities_are_confirmed_again_on_any_replica(
    replicas: tuple[Store, Store],
) -> None:
    """A session of a directory identity is confirmed by its source once `recheck_after`
    has passed: a new role or scope is taken, an identity no longer granted ends the
    session on every replica, and a source that cannot answer keeps it one more period."""
    clock = Clock()
    granted: dict[str, Principal | None] = {}
    asked: list[str] = []

    async def recheck(principal: Principal) -> Principal | None:
        asked.append(principal.subject)
        if principal.subject not in granted:
            raise ConnectionError("directory down")
        return granted[principal.subject]

    def replica(store: Store) -> Sessions:
        return Sessions(
            None, b"k" * 32, store, now=clock, rechecks={"ldap": recheck}, recheck_after=60
        )

    one, two = replica(replicas[0]), replica(replicas[1])
    dn = "uid=ana,ou=people,dc=enoc,dc=test"
    ana = Principal("ana", "operator", Scope.of(ScopeConfig(rtc=["emea"])), "ldap", dn)
    cookie, _ = await one.issue(ana)
    found = await two.verify(cookie)
    assert found is not None and found.principal == ana and asked == [], "fresh: not asked"
    clock.t += 61
    granted[dn] = Principal("ana", "viewer", Scope.of(ScopeConfig(rtc=["emea"])), "ldap", dn)
    found = await two.verify(cookie)
    assert found is not None and found.principal.role == "viewer"
    assert asked == [dn]
    found = await one.verify(cookie)
    assert found is not None and found.principal.role == "viewer", "the other replica too"
    assert asked == [dn], "confirmed 0 s ago on the other replica: not asked again"
    # requests at once on both replicas once it is due: one asks the directory
    clock.t += 61
    asked.clear()
    found_both = await asyncio.gather(*(r.verify(cookie) for r in (one, two, one, two)))
    assert all(f is not None for f in found_both)
    assert asked == [dn], "one recheck for four requests"
    # the directory cannot answer: the session lasts one more period, then ends
    del granted[dn]
    clock.t += 61
    assert await one.verify(cookie) is not None
    clock.t += 60
    assert await two.verify(cookie) is None
    # removed from the group: ended on every replica, even once the directory answers
    cookie2, _ = await one.issue(ana)
    granted[dn] = None
    clock.t += 61
    assert await one.verify(cookie2) is None
    granted[dn] = ana
    assert await two.verify(cookie2) is None
    assert one.ended == 1
    # a second session of the same identity ends by its identity
    # (and so does the first, refused while unconfirmed but not ended: the directory
    # confirming it again would have let it go on)
    cookie3, _ = await two.issue(ana)
    assert await one.end_identity(ana.identity) == 2
    assert await two.verify(cookie3) is None
    # a source no longer configured confirms nothing: its sessions end
    cookie4, _ = await two.issue(ana)
    assert await Sessions(None, b"k" * 32, replicas[0], now=clock).verify(cookie4) is None


async def test_a_stored_session_that_does_not_read_is_refused_alone(
    replicas: tuple[Store, Store],
) -> None:
    users = Users([User("ops1", "operator")])
    sessions = Sessions(users, b"k" * 32, replicas[0])
    bad, _ = await sessions.issue(users.users[0].principal())
    good, _ = await sessions.issue(users.users[0].principal())
    nonce = bad.split(".")[0]
    await replicas[0].run(
        lambda tx: tx.execute(
            "UPDATE sessions SET principal = ? WHERE nonce = ?", ('{"role": "king"}', nonce)
        )
    )
    assert await sessions.verify(bad) is None
    assert sessions.malformed == 1
    assert await sessions.verify(good) is not None
    # a cookie of anything a header may carry is refused, not an error
    assert await sessions.verify(f"{nonce}.\udcff\u00e9") is None


def test_session_key_file(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_key(short)
    good = tmp_path / "key"
    good.write_text("f" * 64 + "\n")
    assert load_key(good) == b"f" * 64
    assert load_key(None) != load_key(None)  # random per process without a file


async def test_login_limits_count_every_replicas_failures(
    replicas: tuple[Store, Store],
) -> None:
    """Failed logins of one address and name pair spread over two replicas (and made at
    once) meet the limit at the same total as on one: an attempt takes its place in the
    store before its password is checked. Past the limit the wait doubles with each
    failure, up to its cap; a success clears the pair, and so does a quiet window once it
    may try again; nothing is kept in clear, nor past its use."""
    clock = Clock()
    one, two = (
        LoginLimiter(store, max_failures=3, window=60, now=clock, backoff=2, backoff_max=16)
        for store in replicas
    )
    pair = LoginLimiter.pair("127.0.0.2", "ops1")
    for limiter in (one, two, one):  # three failures, taken in turns
        assert await limiter.attempt(pair) == 0
        clock.t += 1
    assert await two.attempt(pair) == pytest.approx(1), "2 s after the latest failure"
    assert await one.attempt(pair) == pytest.approx(1), "a refusal does not count"
    # the same name from another address, and another name, are not held back
    assert await two.attempt(LoginLimiter.pair("127.0.0.3", "ops1")) == 0
    assert await two.attempt(LoginLimiter.pair("127.0.0.2", "bob")) == 0
    assert (one.refused, two.refused) == (1, 1)
    waits = []
    for _ in range(5):  # fail as soon as allowed: then wait 4, 8, 16 (the cap), 16, 16 s
        clock.t += await one.attempt(pair)
        assert await two.attempt(pair) == 0
        waits.append(await one.attempt(pair))
    assert waits == [pytest.approx(w) for w in (4, 8, 16, 16, 16)]
    clock.t += 16 + 59
    assert await one.attempt(pair) == 0
    assert await two.attempt(pair) == pytest.approx(16), "allowed 59 s before: not afresh"
    clock.t += 16 + 60
    for _ in range(3):
        assert await two.attempt(pair) == 0, "quiet for a window once allowed: afresh"
    assert await two.attempt(pair) == pytest.approx(2)
    await one.succeeded(pair)
    for _ in range(3):
        assert await two.attempt(pair) == 0, "a success clears the pair"
    assert await two.attempt(pair) > 0
    # made at once, through both replicas: exactly max_failures go ahead
    crowd = LoginLimiter.pair("127.0.0.4", "crowd")
    waits = await asyncio.gather(*(limiter.attempt(crowd) for limiter in (one, two) * 5))
    assert sorted(w == 0 for w in waits) == [False] * 7 + [True] * 3

    def keys(tx: Tx) -> list[tuple[str, int]]:
        return [
            (str(k), int(n))
            for k, n in tx.all("SELECT key, COUNT(*) FROM login_failures GROUP BY key")
        ]

    kept = await replicas[1].run(keys)
    assert all(len(k) == 64 and "crowd" not in k for k, _ in kept), "hashed keys"
    for _ in range(10):  # a pair that keeps failing keeps only what lengthens its wait
        clock.t += await one.attempt(crowd)
        assert await one.attempt(crowd) == 0
    assert max(n for _, n in await replicas[0].run(keys)) <= one.saturated + 1 == 7
    clock.t += 16 + 60
    assert await one.attempt(LoginLimiter.pair("127.0.0.5", "x")) == 0
    assert len(await replicas[0].run(keys)) == 1, "quiet for the longest wait and a window"


@pytest.fixture
async def console(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[tuple[Collector, str]]:
    users = tmp_path / "console-users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "name": "ops1",
                        "role": "operator",
                        "password_hash": hash_password(PASSWORD),
                        "token": "t" * 32,
                    },
                ]
            }
        )
    )
    config = collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "http": {
                "users_file": str(users),
                "audit_file": str(tmp_path / "audit.jsonl"),
                "login_max_failures": 3,
            }
        },
    )
    async with running_collector(config) as collector:
        yield collector, f"http://127.0.0.1:{collector.http_port}"


@pytest.mark.servers
async def test_login_csrf_rate_limit_and_audit(
    tmp_path: Path, console: tuple[Collector, str], mosquitto: Mosquitto
) -> None:
    collector, base = console
    await publish(mosquitto.url, events(1, ("e1", "r1", "if:1", "down")))
    await eventually(lambda: collector.changes >= 1, what="incident opened")
    (incident,) = await collector.engine.queries.incidents()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # the console page and its assets carry the security headers
        for path in ("/", "/console/app.js", "/console/app.css"):
            async with http.get(base + path) as r:
                assert r.status == 200, path
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(base + "/console/../app.py") as r:
            assert r.status in (403, 404)
        # a name too long for the file system was a 500 (found by enoc bench fuzz)
        for name in ("x" * 300, "%2e%2e/app.py", "app.js/", "nothing.js"):
            async with http.get(base + "/console/" + name) as r:
                assert r.status == 404, name
        async with http.get(base + "/console/app.js") as r:
            assert r.content_type in ("text/javascript", "application/javascript")
            assert "enoc NOC console" in await r.text()
        # a form post (what a cross-site page can send) is refused
        async with http.post(base + "/login", data={"name": "ops1", "password": PASSWORD}) as r:
            assert r.status == 415
        async with http.post(base + "/login", json={"name": "ops1", "password": "nope"}) as r:
            assert r.status == 401
            assert (await r.json())["error"] == "wrong name or password"
        async with http.post(base + "/login", json={"name": "ops1", "password": PASSWORD}) as r:
            assert r.status == 200
            login = await r.json()
            header = r.headers["Set-Cookie"]
        assert "HttpOnly" in header
        assert "SameSite=Strict" in header
        assert login["role"] == "operator"
        assert PASSWORD not in header
        # the cookie authenticates reads; writes also need the CSRF token
        async with http.get(base + "/api/v1/whoami") as r:
            assert (await r.json())["csrf"] == login["csrf"]
        url = f"{base}/api/v1/incidents/{incident.id}/ack"
        async with http.post(url) as r:
            assert r.status == 403
            assert "X-CSRF-Token" in (await r.json())["error"]
        async with http.post(url, headers={"X-CSRF-Token": "0" * 64}) as r:
            assert r.status == 403
        async with http.post(url, headers={"X-CSRF-Token": login["csrf"]}) as r:
            assert r.status == 200
            assert (await r.json())["acknowledged_by"] == "ops1"
        # a bearer token needs no CSRF token (no cookie is involved)
        async with aiohttp.ClientSession() as bare:
            comment = f"{base}/api/v1/incidents/{incident.id}/comment"
            async with bare.post(
                comment,
                json={"text": "carrier ticket"},
                headers={"Authorization": "Bearer " + "t" * 32},
            ) as r:
                assert r.status == 200
        # logout revokes the cookie even if a copy of it is replayed
        stolen = http.cookie_jar.filter_cookies(URL(base))[COOKIE].value
        async with http.post(base + "/logout", headers={"X-CSRF-Token": login["csrf"]}) as r:
            assert r.status == 200
        async with (
            aiohttp.ClientSession() as other,
            other.get(base + "/api/v1/whoami", headers={"Cookie": f"{COOKIE}={stolen}"}) as r,
        ):
            assert r.status == 401
        # failed logins: after 3 this address waits for this name, right password or not
        for _ in range(3):  # the successful login above cleared the earlier failure
            async with http.post(base + "/login", json={"name": "ops1", "password": "x"}) as r:
                assert r.status == 401
        async with http.post(base + "/login", json={"name": "ops1", "password": PASSWORD}) as r:
            assert r.status == 429
            assert int(r.headers["Retry-After"]) > 0
            assert "too many failed logins" in (await r.json())["error"]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    actions = [(r["actor"], r["action"]) for r in records]
    assert actions == [
        ("ops1", "login_failed"),
        ("ops1", "login"),
        ("ops1", "ack"),
        ("ops1", "comment"),
        ("ops1", "logout"),
        ("ops1", "login_failed"),
        ("ops1", "login_failed"),
        ("ops1", "login_failed"),
    ]
    assert records[2]["incident"] == incident.id
    assert records[3]["text"] == "carrier ticket"
    assert all(r["remote"] == "127.0.0.1" and r["at"] > 0 for r in records)
    assert all(PASSWORD not in json.dumps(r) for r in records)


async def test_a_logout_ends_the_event_stream_of_its_session(
    console: tuple[Collector, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console left open on a stream must not keep receiving incidents after its session
    was logged out (here, or on another replica: the store says); a token's stream goes on."""
    _, base = console
    monkeypatch.setattr(collector_api, "SSE_HEARTBEAT", 0.2)  # the check runs this often
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiohttp.ClientSession() as bare,
    ):
        async with http.post(base + "/login", json={"name": "ops1", "password": PASSWORD}) as r:
            csrf = (await r.json())["csrf"]
        cookie_stream = await http.get(base + "/api/v1/stream")
        token_stream = await bare.get(
            base + "/api/v1/stream", headers={"Authorization": "Bearer " + "t" * 32}
        )
        assert cookie_stream.status == token_stream.status == 200
        for stream in (cookie_stream, token_stream):
            assert await asyncio.wait_for(stream.content.readline(), 5) == b"retry: 2000\n"
        await asyncio.sleep(0.5)  # several checks pass while the session lasts
        assert not cookie_stream.content.at_eof()
        async with http.post(base + "/logout", headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200

        async def to_the_end(stream: aiohttp.ClientResponse) -> None:
            while await stream.content.readline():
                pass

        await asyncio.wait_for(to_the_end(cookie_stream), 10)
        keepalives = 0
        while keepalives < 3:  # the token's stream is still alive
            line = await asyncio.wait_for(token_stream.content.readline(), 5)
            assert line, "the bearer token's stream ended too"
            keepalives += line == b": keepalive\n"
        cookie_stream.close()
        token_stream.close()


def test_secret_in_user_is_not_in_repr() -> None:
    user = User("ops1", "operator", token=Secret("s" * 20))
    assert "s" * 20 not in repr(user)


async def stream_events(
    http: aiohttp.ClientSession, base: str, last_id: int, count: int
) -> list[dict[str, Any]]:
    """The first `count` events of a stream resumed after `last_id`."""
    headers = {**auth("viewer1"), "Last-Event-ID": str(last_id)}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with http.get(f"{base}/api/v1/stream", headers=headers) as response:
        reader = asyncio.create_task(read_sse(response, queue))
        try:
            return [await asyncio.wait_for(queue.get(), 10) for _ in range(count)]
        finally:
            reader.cancel()


@pytest.mark.servers
async def test_stream_resets_a_client_it_cannot_replay(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A console away longer than `store.changes_retention` (its changes pruned from the
    log) or holding an id the store never gave gets a `reset` event, not a silent gap."""
    config = collector_config(tmp_path, mosquitto.url)
    async with running_collector(config) as collector:
        for n in (1, 2, 3):
            await publish(mosquitto.url, events(n, (f"e{n}", f"r{n}", "if:1", "down")))
        await eventually(lambda: collector.changes >= 3, what="three incidents opened")
    # restarted: the hub's replay ring is empty, so a resume reads the store's log
    async with running_collector(config) as collector:
        base = f"http://127.0.0.1:{collector.http_port}"

        async def logged() -> list[int]:
            rows = await collector.store.read(lambda tx: tx.all("SELECT id FROM changes"))
            return sorted(int(r[0]) for r in rows)

        ids = await logged()
        assert len(ids) == 3
        async with aiohttp.ClientSession() as http:
            # everything after the client's id is still logged: replayed, no reset
            replayed = await stream_events(http, base, ids[0], 2)
            assert [(e["event"], int(e["id"])) for e in replayed] == [
                ("incident", ids[1]),
                ("incident", ids[2]),
            ]

            # the two oldest changes pass the retention (as if two hours old) and are pruned
            def age(tx: Tx) -> int:
                return tx.execute("UPDATE changes SET at = at - 7200 WHERE id <= ?", (ids[1],))

            assert await collector.store.run(age) == 2
            await collector.feed.prune()
            assert await logged() == ids[2:]
            # a client that saw ids[1] misses only ids[2], which is still there
            (only,) = await stream_events(http, base, ids[1], 1)
            assert (only["event"], int(only["id"])) == ("incident", ids[2])

            # a client that saw only ids[0] missed ids[1], which is gone: reset, and the
            # stream goes on from the reset's id (the newest change this replica streamed)
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            headers = {**auth("viewer1"), "Last-Event-ID": str(ids[0])}
            async with http.get(f"{base}/api/v1/stream", headers=headers) as response:
                reader = asyncio.create_task(read_sse(response, queue))
                first = await asyncio.wait_for(queue.get(), 10)
                assert first["event"] == "reset"
                assert int(first["id"]) == ids[2] == collector.hub.last_id
                assert first["data"] == {
                    "reason": "expired",
                    "last_event_id": ids[0],
                    "resume_id": ids[2],
                }
                await publish(mosquitto.url, events(4, ("e4", "r4", "if:1", "down")))
                live = await asyncio.wait_for(queue.get(), 10)
                reader.cancel()
            assert live["event"] == "incident"
            assert live["data"]["incident"]["device"] == "r4"
            assert int(live["id"]) > ids[2]

            # an id this store never gave (another store, a restored backup): reset too
            (unknown,) = await stream_events(http, base, 10**9, 1)
            assert unknown["event"] == "reset"
            assert unknown["data"]["reason"] == "unknown"
            assert int(unknown["id"]) == collector.hub.last_id == int(live["id"])
            # and a client that resumes from a reset's id gets what followed it
            (after,) = await stream_events(http, base, ids[2], 1)
            assert int(after["id"]) == int(live["id"])

            # a new client is told its place (an id line, no event), so that a reconnect
            # after an outage resumes from there even when no event reached it before
            async def until_an_id(response: aiohttp.ClientResponse) -> list[str]:
                lines: list[str] = []
                async for raw in response.content:
                    lines.append(raw.decode().rstrip("\n"))
                    if lines[-1].startswith("id: "):
                        break
                return lines

            async with http.get(f"{base}/api/v1/stream", headers=auth("viewer1")) as response:
                lines = await asyncio.wait_for(until_an_id(response), 10)
            assert lines[-1] == f"id: {live['id']}"
            assert not [line for line in lines if line.startswith(("event:", "data:"))]
            await publish(mosquitto.url, events(5, ("e5", "r5", "if:1", "down")))
            (missed,) = await stream_events(http, base, int(live["id"]), 1)
            assert missed["data"]["incident"]["device"] == "r5"
