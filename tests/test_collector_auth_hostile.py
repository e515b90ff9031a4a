"""Hostile logins and clients against the collector's API (issue 18): old password hashes,
a name locked out by strangers, a crowd of password checks, a crowd of event streams,
and what `/healthz` tells a caller who has not logged in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import argon2
import pytest
import yaml
from collectorkit import TOKENS, collector_config, eventually, running_collector
from test_collector_api import auth, parse_prometheus

import collector.auth as collector_auth
from collector import api as collector_api
from collector.app import Collector
from collector.auth import (
    HashGate,
    HashingBusy,
    User,
    Users,
    cpus,
    hash_password,
    needs_rehash,
)
from collector.config import CollectorConfig
from enoc.config import ConfigError, parse_config
from testbed.servers import Mosquitto, free_port

PASSWORD = "a long console password"


def scrypt_hash(password: str) -> str:
    """A hash as `enoc passwd` made them before argon2id (scrypt, N=2^15, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32
    )

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=")

    return f"scrypt$32768$8$1${b64(salt)}${b64(digest)}"


def console_users(tmp_path: Path, password_hash: str) -> Path:
    path = tmp_path / "console-users.yaml"
    users: list[dict[str, Any]] = [
        {"name": "ops1", "role": "operator", "password_hash": password_hash},
        *({"name": n, "role": "viewer", "token": t} for n, t in TOKENS.items() if n != "ops1"),
    ]
    path.write_text(yaml.safe_dump({"users": users}))
    return path


@contextlib.asynccontextmanager
async def collector_with(
    tmp_path: Path, mosquitto: Mosquitto, password_hash: str, **http: Any
) -> AsyncIterator[tuple[Collector, str]]:
    users = console_users(tmp_path, password_hash)
    config = collector_config(
        tmp_path, mosquitto.url, extra={"http": {"users_file": str(users), **http}}
    )
    async with running_collector(config) as collector:
        yield collector, f"http://127.0.0.1:{collector.http_port}"


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics", headers=auth("viewer1")) as r:
        assert r.status == 200
        return parse_prometheus(await r.text())


def from_address(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from `address` (another loopback address)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


# ---------------------------------------------------------------- password hashes


def test_an_old_scrypt_hash_verifies_and_is_upgraded_in_memory_at_login(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = scrypt_hash(PASSWORD)
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    users = Users([User("ops1", "operator", password_hash=old), User("bob", password_hash=weak)])
    ops1, bob = users.users
    assert needs_rehash(old) and needs_rehash(weak) and not needs_rehash(hash_password("x"))
    assert users.by_password("ops1", "not the password") is None
    assert users.current_hash(ops1) == old, "a wrong password upgrades nothing"
    with caplog.at_level(logging.WARNING, logger="enoc.collector.auth"):
        assert users.by_password("ops1", PASSWORD) is ops1
        upgraded = users.current_hash(ops1)
        assert upgraded.startswith("$argon2id$") and not needs_rehash(upgraded)
        assert users.by_password("ops1", PASSWORD) is ops1, "checked against the new hash"
        assert users.current_hash(ops1) == upgraded
        assert users.by_password("ops1", "not the password") is None
        assert users.by_password("bob", PASSWORD) is bob  # argon2id below today's cost
    assert not needs_rehash(users.current_hash(bob))
    assert users.upgraded == 2
    advice = [r.getMessage() for r in caplog.records if "enoc passwd" in r.getMessage()]
    assert len(advice) == 2, "once per user, not once per login"
    assert "ops1" in advice[0] and PASSWORD not in " ".join(advice)
    # a users file whose hash changed (a new `enoc passwd`) is not overridden by the upgrade
    renewed = User("ops1", "operator", password_hash=hash_password("another long password"))
    users.users[0] = renewed
    assert users.current_hash(renewed) == renewed.password_hash
    assert users.by_password("ops1", PASSWORD) is None


def test_a_garbled_hash_is_refused_when_the_users_file_loads(tmp_path: Path) -> None:
    for garbled in ("$argon2id$v=19$m=19456", "md5$abc", "scrypt$1$2"):
        with pytest.raises(ValueError, match="enoc passwd"):
            User("ops1", password_hash=garbled)


@pytest.mark.servers
async def test_a_login_with_an_old_hash_succeeds_and_counts_its_upgrade(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with (
        collector_with(tmp_path, mosquitto, scrypt_hash(PASSWORD)) as (_, base),
        aiohttp.ClientSession() as http,
    ):
        for _ in range(2):
            async with http.post(f"{base}/login", json={"name": "ops1", "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
        assert (await metrics(http, base))["enoc_collector_api_password_hashes_upgraded_total"] == 1


# ---------------------------------------------------------------- login throttling


@pytest.mark.servers
async def test_failures_from_one_address_do_not_stop_the_right_password_from_another(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Anyone who knows a user name used to lock it out from everywhere; now only the
    failing address waits, with backoff, for that name."""
    async with (
        collector_with(
            tmp_path, mosquitto, hash_password(PASSWORD), login_max_failures=3, login_backoff="60s"
        ) as (_, base),
        from_address("127.0.0.2") as stranger,
        from_address("127.0.0.3") as operator,
    ):
        wrong = {"name": "ops1", "password": "guessed wrong"}
        for _ in range(3):
            async with stranger.post(f"{base}/login", json=wrong) as r:
                assert r.status == 401
        for login in (wrong, {"name": "ops1", "password": PASSWORD}):
            async with stranger.post(f"{base}/login", json=login) as r:
                assert r.status == 429, "the pair waits, right password or not"
                assert 0 < int(r.headers["Retry-After"]) <= 60
                assert "too many failed logins" in (await r.json())["error"]
        async with operator.post(f"{base}/login", json={"name": "ops1", "password": PASSWORD}) as r:
            assert r.status == 200, "the same name from another address logs in"
            assert (await r.json())["name"] == "ops1"
        async with stranger.post(f"{base}/login", json=wrong) as r:
            assert r.status == 429, "and the stranger still waits"
        counters = await metrics(operator, base)
        assert counters["enoc_collector_api_logins_refused_total"] == 3
        assert counters["enoc_collector_api_logins_failed_total"] == 3


# ---------------------------------------------------------------- concurrent hashing


class CountingCheck:
    """Wraps the password check: counts the checks running at once (in threads) and holds
    each until released, so that a test sees the most that ever ran together."""

    def __init__(self, check: Callable[[str, str], bool]) -> None:
        self.check = check
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.inside = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, password: str, stored: str) -> bool:
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.peak = max(self.peak, self.inside)
        try:
            self.release.wait(30)
            return self.check(password, stored)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.mark.servers
async def test_concurrent_logins_never_hash_more_than_the_bound_at_once(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight logins at once with two hashing workers and a queue of three: two checks run,
    three wait, three are refused at once with 503 and Retry-After (not counted as failed
    logins); released, the five that waited all log in."""
    counting = CountingCheck(collector_auth.verify_password)
    async with collector_with(
        tmp_path,
        mosquitto,
        hash_password(PASSWORD),
        login_hash_workers=2,
        login_hash_queue=3,
        login_max_failures=100,
    ) as (_, base):
        monkeypatch.setattr(collector_auth, "verify_password", counting)
        answers: list[tuple[int, dict[str, str], dict[str, Any]]] = []

        async def login(http: aiohttp.ClientSession) -> None:
            async with http.post(f"{base}/login", json={"name": "ops1", "password": PASSWORD}) as r:
                answers.append((r.status, dict(r.headers), await r.json()))

        async with aiohttp.ClientSession() as http:
            try:
                tasks = [asyncio.create_task(login(http)) for _ in range(8)]
                await eventually(
                    lambda: counting.inside == 2 and len(answers) == 3,
                    what="two checks running, three logins refused",
                )
                assert counting.peak == 2
                for status, headers, body in answers:
                    assert status == 503
                    assert int(headers["Retry-After"]) > 0
                    assert "try again" in body["error"]
            finally:
                counting.release.set()
            await asyncio.gather(*tasks)
            assert sorted(status for status, _, _ in answers) == [200] * 5 + [503] * 3
            assert counting.peak == 2 and counting.calls == 5
            counters = await metrics(http, base)
        assert counters["enoc_collector_api_logins_busy_total"] == 3
        assert counters["enoc_collector_api_logins_failed_total"] == 0


async def test_a_cancelled_check_keeps_its_worker_until_it_ends() -> None:
    """A login whose client went away cannot free its worker while its hash still runs:
    the workers, not the requests, bound the checks running."""
    gate = HashGate(workers=1, queue=1)
    counting = CountingCheck(lambda _p, _s: True)
    try:
        with gate.place():
            first = asyncio.ensure_future(gate.run(counting, "p", "s"))
            await eventually(lambda: counting.inside == 1, what="the first check running")
            with gate.place(), pytest.raises(HashingBusy, match="try again"), gate.place():
                pass  # the worker's place and the queue's are taken
            first.cancel()
        with gate.place():  # its place is free again, its worker is not
            second = asyncio.ensure_future(gate.run(counting, "p", "s"))
            await asyncio.sleep(0)
            assert counting.calls == 1 and counting.inside == 1
            counting.release.set()
            assert await second
        assert counting.peak == 1 and counting.calls == 2
        assert gate.refused == 1 and gate.admitted == 0
    finally:
        counting.release.set()
        gate.close()


# ---------------------------------------------------------------- event streams


@pytest.mark.servers
async def test_event_streams_are_capped_per_user_and_in_all(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector_api, "SSE_HEARTBEAT", 0.2)  # a closed client is seen soon
    async with (
        collector_with(
            tmp_path,
            mosquitto,
            hash_password(PASSWORD),
            stream_max_clients_per_user=2,
            stream_max_clients=3,
        ) as (_, base),
        aiohttp.ClientSession() as http,
    ):
        opened: list[aiohttp.ClientResponse] = []

        async def stream(user: str) -> aiohttp.ClientResponse:
            response = await http.get(f"{base}/api/v1/stream", headers=auth(user))
            if response.status == 200:
                assert await asyncio.wait_for(response.content.readline(), 5) == b"retry: 2000\n"
                opened.append(response)
            return response

        try:
            for _ in range(2):
                assert (await stream("viewer1")).status == 200
            refused = await stream("viewer1")
            assert refused.status == 429
            assert refused.content_type == "application/json"
            assert "viewer1 has 2 event streams open" in (await refused.json())["error"]
            assert int(refused.headers["Retry-After"]) > 0
            assert (await stream("admin1")).status == 200, "another user has its own share"
            full = await stream("admin1")
            assert full.status == 503
            assert "3 event streams are open" in (await full.json())["error"]
            assert int(full.headers["Retry-After"]) > 0
            # a stream that ends gives its place back
            opened.pop(0).close()

            async def reopened() -> bool:
                response = await stream("viewer1")
                response.release()
                return response.status == 200

            await eventually(reopened, what="viewer1's closed stream's place given back")
            counters = await metrics(http, base)
            assert counters["enoc_collector_stream_clients_refused_total"] >= 2
        finally:
            for response in opened:
                response.close()


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("http", "says"),
    [
        ("{login_backoff: 0s}", "login_backoff must be above 0"),
        ("{login_backoff: 1h, login_backoff_max: 1m}", "got 3600 s and 60 s"),
        ("{login_hash_workers: -1}", "login_hash_workers must be 0 or more, got -1"),
        ("{login_hash_queue: -2}", "login_hash_queue must be 0 or more, got -2"),
        ("{stream_max_clients: 0}", "stream_max_clients must be at least 1, got 0"),
        ("{stream_max_clients_per_user: 0}", "stream_max_clients_per_user must be at least 1"),
        ("{stream_max_client: 5}", "http.stream_max_client: unknown key"),
    ],
)
def test_limit_settings_that_make_no_sense_are_refused_by_name(http: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as error:
        parse_config(f"http: {http}\n", CollectorConfig, filename="collector.yaml")
    assert "collector.yaml:1" in str(error.value)


def test_the_limits_default_to_sane_values() -> None:
    http = parse_config("{}", CollectorConfig).http
    assert http.login_hash_workers == 0 and cpus() >= 1  # 0: one worker per CPU
    assert (http.stream_max_clients_per_user, http.stream_max_clients) == (20, 500)
    assert (float(http.login_backoff), float(http.login_backoff_max)) == (1.0, 900.0)


# ---------------------------------------------------------------- /healthz


@pytest.mark.servers
async def test_healthz_says_only_ok_or_not_without_a_login(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An InfluxDB link that is down (nothing listens on its port): anyone learns 503 and
    `{"ok": false}`; a logged-in viewer (token or session cookie) learns which link and
    why, with its internal address."""
    influx_port = free_port()
    token_file = tmp_path / "influx-token"
    token_file.write_text("influx-token-for-the-test\n")
    influx = {
        "url": f"http://127.0.0.1:{influx_port}",
        "api": "v2",
        "org": "enoc",
        "bucket": "enoc",
        "token_file": str(token_file),
        "flush_interval": "0.1s",
    }
    users = console_users(tmp_path, hash_password(PASSWORD))
    config = collector_config(
        tmp_path, mosquitto.url, extra={"influxdb": influx, "http": {"users_file": str(users)}}
    )
    async with running_collector(config) as collector:
        base = f"http://127.0.0.1:{collector.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as r:
                assert (r.status, await r.json()) == (200, {"ok": True})
            async with http.get(f"{base}/healthz", headers=auth("viewer1")) as r:
                details = await r.json()
                assert r.status == 200 and details["mqtt"]["ok"] and details["influxdb"]["ok"]
            collector.sinks["influxdb"].write_nowait(b"device,device=d1 cpu=1 1\n", 1)
            collector.sinks["influxdb"].flush()
            await eventually(lambda: not collector.sinks["influxdb"].healthy, what="InfluxDB down")
            for headers in ({}, {"Authorization": "Bearer " + "x" * 32}):
                async with http.get(f"{base}/healthz", headers=headers) as r:
                    text = await r.text()
                    assert (r.status, await r.json()) == (503, {"ok": False}), text
                    assert str(influx_port) not in text and "influxdb" not in text
            async with http.get(f"{base}/healthz", headers=auth("viewer1")) as r:
                details = await r.json()
                assert r.status == 503 and not details["influxdb"]["ok"]
                assert str(influx_port) in details["influxdb"]["last_error"]
                assert details["store"]["ok"] and details["mqtt"]["ok"]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as console:
            async with console.post(
                f"{base}/login", json={"name": "ops1", "password": PASSWORD}
            ) as r:
                assert r.status == 200
            async with console.get(f"{base}/healthz") as r:
                details = await r.json()
                assert r.status == 503 and not details["influxdb"]["ok"], "the cookie shows"
