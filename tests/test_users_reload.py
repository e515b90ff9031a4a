"""The users file reloads on change, without a restart: joiners, leavers, new roles and
scopes hold from the next request; a broken file keeps the users loaded before."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from collectorkit import (
    TOKENS,
    collector_config,
    collector_process_command,
    eventually,
    running_collector,
)
from test_collector_api import parse_prometheus

from collector.auth import hash_password
from collector.store import Row, Tx
from collector.users_watch import UsersWatch
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers

PASSWORD = "a long console password"


def write_users(path: Path, users: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"users": users}))


def token_user(name: str, role: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "token": TOKENS.get(name, name * 16), **more}


async def test_the_api_follows_the_users_file_without_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "users.yaml"
    config = collector_config(tmp_path, mosquitto.url)
    desk = {"name": "desk", "role": "operator", "password_hash": hash_password(PASSWORD)}
    base_users = [token_user("viewer1", "viewer"), token_user("admin1", "admin"), desk]
    write_users(path, base_users)
    async with (
        running_collector(config) as collector,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        base = f"http://127.0.0.1:{collector.http_port}"
        watch = collector.users_watch
        assert isinstance(watch, UsersWatch)

        async def whoami(headers: dict[str, str] | None = None) -> tuple[int, Any]:
            async with http.get(f"{base}/api/v1/whoami", headers=headers) as r:
                return r.status, await r.json()

        def bearer(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {TOKENS.get(name, name * 16)}"}

        async def becomes(headers: dict[str, str] | None, status: int, **fields: Any) -> None:
            async def check() -> bool:
                got, body = await whoami(headers)
                return got == status and all(body.get(k) == v for k, v in fields.items())

            await eventually(check, what=f"whoami {status} {fields}")

        assert (await whoami(bearer("viewer1")))[0] == 200
        assert (await whoami(bearer("newbie")))[0] == 401
        async with http.post(f"{base}/login", json={"name": "desk", "password": PASSWORD}) as r:
            assert r.status == 200
        await becomes(None, 200, name="desk", role="operator", scope=None)
        # a joiner: its token works without a restart
        write_users(path, [*base_users, token_user("newbie", "viewer")])
        await becomes(bearer("newbie"), 200, name="newbie", role="viewer")
        assert watch.reloads == 1
        # a new role and scope for a logged-in user: from its next request
        promoted = {**desk, "role": "admin", "scope": {"rtc": ["emea"]}}
        write_users(
            path, [token_user("viewer1", "viewer"), token_user("admin1", "admin"), promoted]
        )
        await becomes(None, 200, role="admin", scope={"rtc": ["emea"], "site": []})
        assert (await whoami(bearer("newbie")))[0] == 401, "left in the same edit"
        # a broken file keeps the users loaded before; its error names file, line and key
        text = path.read_text()
        path.write_text(text.replace("role: viewer", "role: superuser"))
        await eventually(lambda: watch.failures == 1, what="the broken file refused")
        assert (await whoami(bearer("viewer1")))[0] == 200
        (error,) = [r for r in caplog.records if "not reloaded" in r.getMessage()]
        assert error.levelno == logging.ERROR
        assert f"{path}:" in error.getMessage()
        assert "users[0].role" in error.getMessage() and "superuser" in error.getMessage()
        os.utime(path, (1, 1))  # the same content seen again: not logged again
        await eventually(lambda: watch._stat is not None and watch._stat[2] == 10**9)
        assert watch.failures == 1
        async with http.get(f"{base}/metrics", headers=bearer("admin1")) as r:
            metrics = parse_prometheus(await r.text())
        assert metrics["enoc_collector_users_file_reload_failures_total"] == 1
        assert metrics["enoc_collector_users_file_reloads_total"] == 2
        # a file moved away (mid-edit) keeps the users too, logged once
        path.unlink()
        await eventually(lambda: watch.failures == 2, what="the missing file noticed")
        assert (await whoami(bearer("admin1")))[0] == 200
        # leavers: a removed user's token and console session end at their next request
        write_users(path, [token_user("admin1", "admin")])
        await becomes(bearer("viewer1"), 401)
        assert (await whoami())[0] == 401, "the removed user's session"
        assert (await whoami(bearer("admin1")))[0] == 200
        assert watch.reloads == 3 and watch.failures == 2


async def test_a_leaver_or_a_new_password_ends_the_sessions_in_the_store(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The sessions of a user removed from the file, or whose password changed, are ended
    in the store (the row every replica reads), on a reload and at start (the file
    changed while no collector ran): the user put back, or the password set back, does
    not bring them back; a session made with the new password lasts."""
    path = tmp_path / "users.yaml"
    key = tmp_path / "session.key"
    key.write_text(secrets.token_hex(32))  # a restart keeps the cookies' signatures
    config = collector_config(
        tmp_path, mosquitto.url, extra={"http": {"session_key_file": str(key)}}
    )
    old_hash, new_hash = hash_password(PASSWORD), hash_password("a new password")
    admin = token_user("admin1", "admin")
    desk = {"name": "desk", "role": "operator", "password_hash": old_hash}
    write_users(path, [admin, desk])
    async with contextlib.AsyncExitStack() as clients:  # they outlive a collector
        async with running_collector(config) as collector:
            base = f"http://127.0.0.1:{collector.http_port}"  # the next one's too

            async def console(password: str) -> aiohttp.ClientSession:
                jar = aiohttp.CookieJar(unsafe=True)
                http = await clients.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
                login = {"name": "desk", "password": password}
                async with http.post(f"{base}/login", json=login) as r:
                    assert r.status == 200, await r.text()
                return http

            async def whoami(http: aiohttp.ClientSession) -> int:
                async with http.get(f"{base}/api/v1/whoami") as r:
                    return r.status

            async def ended(count: int) -> None:
                def read(tx: Tx) -> list[Row]:
                    return tx.all("SELECT revoked FROM sessions WHERE identity = 'local:desk'")

                async def done() -> bool:
                    rows = await collector.store.read(read)
                    return sum(1 for (revoked,) in rows if revoked) == count

                await eventually(done, what=f"{count} sessions ended")

            async def load(users: list[dict[str, Any]], reloads: int, count: int) -> None:
                watch = collector.users_watch
                assert isinstance(watch, UsersWatch)
                write_users(path, users)
                watch.poke()
                await eventually(lambda: watch.reloads == reloads, what=f"reload {reloads}")
                await ended(count)

            first, second = await console(PASSWORD), await console(PASSWORD)
            # a new password: both sessions made with the old one end
            await load([admin, {**desk, "password_hash": new_hash}], 1, 2)
            assert (await whoami(first), await whoami(second)) == (401, 401)
            renewed = await console("a new password")
            assert await whoami(renewed) == 200
            # the old password set back: the old sessions stay ended, the newer one ends
            await load([admin, desk], 2, 3)
            assert (await whoami(first), await whoami(renewed)) == (401, 401)
            back = await console(PASSWORD)
            # a leaver put back unchanged: its session stays ended
            await load([admin], 3, 4)
            await load([admin, desk], 4, 4)
            assert await whoami(back) == 401
            last = await console(PASSWORD)
            assert await whoami(last) == 200
        # a leaver while no collector runs: the next one's start ends its session
        write_users(path, [admin])
        async with running_collector(config) as collector:
            await ended(5)
            await load([admin, desk], 1, 5)
            assert await whoami(last) == 401


async def test_sighup_reads_the_users_file_and_the_token_files_it_names(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A token read from a `token_file` changes without the users file changing: SIGHUP
    reads both again (and does not end the collector, as SIGHUP's default would)."""
    config = collector_config(tmp_path, mosquitto.url)
    token_file = tmp_path / "grafana-token"
    token_file.write_text("g" * 32 + "\n")
    write_users(
        tmp_path / "users.yaml",
        [{"name": "grafana", "role": "viewer", "token_file": str(token_file)}],
    )
    port = yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "collector.log").open("wb")
    proc = subprocess.Popen(collector_process_command(config), stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as http:

            async def status(token: str) -> int:
                try:
                    async with http.get(
                        f"{base}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
                    ) as r:
                        return r.status
                except aiohttp.ClientConnectionError:
                    return 0

            async def answers(token: str, code: int) -> bool:
                return await status(token) == code

            await eventually(lambda: answers("g" * 32, 200), timeout=30, what="started")
            token_file.write_text("h" * 32 + "\n")
            proc.send_signal(signal.SIGHUP)
            await eventually(lambda: answers("h" * 32, 200), what="the new token")
            assert await status("g" * 32) == 401
            assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
    assert "users file reloaded" in (tmp_path / "collector.log").read_text()
