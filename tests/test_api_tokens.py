"""API tokens: hashed at rest, with a role, a scope and an expiry; made, listed and revoked
by `enoc token` and by `/api/v1/tokens`; a revocation holds on every replica."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import yaml
from collectorkit import TOKENS, Clock, collector_config, eventually, running_collector
from test_collector_api import events, parse_prometheus, publish
from test_console_session import replicas
from test_secret_scan import assert_no_leak, read_texts

from collector import api as collector_api
from collector.access import EVERYTHING, Principal, Scope, ScopeConfig
from collector.app import Collector
from collector.auth import Users
from collector.store import Store, Tx
from collector.tokens import TOKEN_RE, Tokens, looks_like_token, parse_expiry
from enoc.cli import main
from enoc.config import ConfigError
from enoc.wire import StatusMessage, encode, topic
from testbed.servers import Mosquitto

__all__ = ["replicas"]  # the fixture: both store dialects

EMEA = Scope.of(ScopeConfig(rtc=["emea"]))


def secret_of(text: str) -> str:
    match = TOKEN_RE.fullmatch(text)
    assert match is not None, text
    return match.group(2)


async def rows(store: Store) -> list[tuple[Any, ...]]:
    def read(tx: Tx) -> list[tuple[Any, ...]]:
        return tx.all("SELECT * FROM api_tokens ORDER BY created")

    return await store.read(read)


async def test_tokens_are_hashed_scoped_expire_and_revoke_on_every_replica(
    replicas: tuple[Store, Store],
) -> None:
    clock = Clock()
    one, two = Tokens(replicas[0], now=clock), Tokens(replicas[1], now=clock)
    text, info = await one.create("grafana", "viewer", EMEA, "local:admin1", 3600)
    assert looks_like_token(text)
    secret = secret_of(text)
    assert text == f"enoc_{info.id}_{secret}"
    principal = await two.authenticate(text)  # the other replica
    assert principal == Principal("grafana", "viewer", EMEA, "token", info.id)
    assert principal.identity == f"token:{info.id}"
    # the store keeps the secret's SHA-256, never the secret
    (row,) = await rows(replicas[0])
    assert hashlib.sha256(secret.encode()).hexdigest() in row
    assert not [v for v in row if isinstance(v, str) and secret[:12] in v]
    # a wrong secret, an unknown id, a malformed token: refused, and counted
    wrong = text[:-1] + ("0" if text[-1] != "0" else "1")
    for bad in (wrong, f"enoc_{'0' * 16}_{secret}", "enoc_x", text + "0", text.upper()):
        assert await two.authenticate(bad) is None, bad
    assert two.refused == 5
    # last used: written at a use, then at most once a minute
    (listed,) = await one.list()
    assert listed.last_used == clock.t
    first_use = clock.t
    clock.t += 30
    assert await two.authenticate(text) is not None
    assert (await one.list())[0].last_used == first_use
    clock.t += 31
    assert await two.authenticate(text) is not None
    assert (await one.list())[0].last_used == clock.t
    # expiry: valid to the second before, refused from then on
    assert info.expires == info.created + 3600
    clock.t = info.expires - 1
    assert await two.authenticate(text) is not None
    clock.t = info.expires
    assert await two.authenticate(text) is None
    # a token that never expires; revoked on one replica, refused by the other
    text2, forever = await one.create("ci", "operator", EVERYTHING, "cli:root", None)
    assert forever.expires is None
    clock.t += 10 * 365 * 86400
    found = await two.authenticate(text2)
    assert found is not None and found.role == "operator" and found.scope.everything
    revoked = await one.revoke(forever.id, "local:admin1")
    assert revoked is not None
    assert (revoked.revoked, revoked.revoked_by) == (clock.t, "local:admin1")
    assert await two.authenticate(text2) is None
    clock.t += 5  # revoking again keeps the first revocation
    again = await two.revoke(forever.id, "local:other")
    assert again is not None and (again.revoked, again.revoked_by) == (
        revoked.revoked,
        "local:admin1",
    )
    assert await one.revoke("f" * 16, "local:admin1") is None
    # listed newest first, revoked and expired ones too, never a secret
    listing = [t.as_dict() for t in await two.list()]
    assert [t["name"] for t in listing] == ["ci", "grafana"]
    assert listing[1]["scope"] == {"rtc": ["emea"], "site": []}
    assert secret not in json.dumps(listing) and secret_of(text2) not in json.dumps(listing)


async def test_a_token_needs_a_name_a_role_and_a_future_expiry(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    tokens = Tokens(store)
    with pytest.raises(ValueError, match="name"):
        await tokens.create(" ", "viewer", EVERYTHING, "cli:root")
    with pytest.raises(ValueError, match="role must be one of"):
        await tokens.create("x", "root", EVERYTHING, "cli:root")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="future"):
        await tokens.create("x", "viewer", EVERYTHING, "cli:root", 0)
    assert await rows(store) == []
    await store.close()
    assert parse_expiry("90d") == 90 * 86400
    assert parse_expiry("12h30m") == 12.5 * 3600
    assert parse_expiry(" Never ") is None
    for bad in ("soon", "0s", "-1d", ""):
        with pytest.raises(ValueError, match="expires"):
            parse_expiry(bad)


async def test_token_command_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = collector_config(
        tmp_path, "mqtt://127.0.0.1:1883", extra={"http": {"audit_file": str(audit)}}
    )

    async def enoc(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["token", *argv, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await enoc(
        "create", "--name", "grafana", "--rtc", "emea", "--site", "lab", "--expires", "30d"
    )
    assert code == 0, err
    text = out.strip()
    token_id = TOKEN_RE.fullmatch(text).group(1)  # type: ignore[union-attr]
    assert "shown only now" in err and text not in err
    code, out, err = await enoc(
        "create", "--name", "ci", "--role", "operator", "--expires", "never"
    )
    assert code == 0, err
    ci_text = out.strip()
    # list: everything but the secrets
    code, out, _ = await enoc("list")
    assert code == 0
    assert text not in out and secret_of(text)[:12] not in out and ci_text not in out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "ROLE", "SCOPE"]
    (grafana,) = [line for line in lines if token_id in line]
    assert "grafana" in grafana and "viewer" in grafana and "rtc:emea site:lab" in grafana
    (ci,) = [line for line in lines if " ci " in line]
    assert "operator" in ci and " all " in ci and "never" in ci
    code, out, _ = await enoc("list", "--json")
    listed = {t["name"]: t for t in map(json.loads, out.splitlines())}
    assert listed["grafana"]["expires"] - listed["grafana"]["created"] == 30 * 86400
    assert listed["grafana"]["scope"] == {"rtc": ["emea"], "site": ["lab"]}
    assert listed["grafana"]["created_by"].startswith("cli:")
    assert listed["ci"]["expires"] is None
    # what it made authenticates against the collector's store
    store = Store(f"sqlite:///{tmp_path / 'collector' / 'incidents.db'}")
    await store.open()
    tokens = Tokens(store)
    principal = await tokens.authenticate(text)
    assert principal is not None and principal.role == "viewer"
    assert principal.scope.as_dict() == {"rtc": ["emea"], "site": ["lab"]}
    # revoke: refused from then on; an unknown id says so
    code, out, _ = await enoc("revoke", token_id)
    assert code == 0 and f"token {token_id} (grafana) revoked" in out
    assert await tokens.authenticate(text) is None
    assert await tokens.authenticate(ci_text) is not None
    code, _, err = await enoc("revoke", "0" * 16)
    assert code == 1 and "no token" in err
    code, out, _ = await enoc("list")
    (grafana,) = [line for line in out.splitlines() if token_id in line]
    assert grafana.count(" by cli:") == 2, "made and revoked by"
    await store.close()
    # bad input names what is wrong
    code, _, err = await enoc("create", "--name", "x", "--expires", "soon")
    assert code == 2 and "expires must be a duration" in err
    with pytest.raises(SystemExit):
        main(["token", "create", "--config", str(config), "--name", "x", "--role", "root"])
    capsys.readouterr()
    # the audit file names the identity; the secrets are nowhere in it
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["action"], r["name"]) for r in records] == [
        ("token_create", "grafana"),
        ("token_create", "ci"),
        ("token_revoke", "grafana"),
    ]
    assert all(r["identity"].startswith("cli:") for r in records)
    assert_no_leak(
        read_texts([audit, tmp_path / "collector"]), {"a": secret_of(text), "b": secret_of(ci_text)}
    )


@pytest.fixture
async def api(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[tuple[Collector, str]]:
    config = collector_config(
        tmp_path, mosquitto.url, extra={"http": {"audit_file": str(tmp_path / "audit.jsonl")}}
    )
    users = yaml.safe_load((tmp_path / "users.yaml").read_text())
    users["users"].append(
        {"name": "emea-admin", "role": "admin", "token": "e" * 32, "scope": {"rtc": ["emea"]}}
    )
    (tmp_path / "users.yaml").write_text(yaml.safe_dump(users))
    async with running_collector(config) as collector:
        yield collector, f"http://127.0.0.1:{collector.http_port}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(TOKENS["admin1"])
EMEA_ADMIN = bearer("e" * 32)


@pytest.mark.servers
async def test_admins_make_list_and_revoke_tokens_over_the_api(
    tmp_path: Path,
    api: tuple[Collector, str],
    mosquitto: Mosquitto,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    collector, base = api
    await publish(mosquitto.url, events(1, ("e1", "r1", "if:1", "down")))  # site lab, rtc emea
    await eventually(lambda: collector.changes >= 1, what="incident opened")
    # a site's RTC is what its agent's status says (an incident's may be from before a move)
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="status-publisher") as client:
        online = StatusMessage("agent-1", "lab", "emea", 2, time.time())
        await client.publish(topic("lab", "agent-1", "status"), encode(online), qos=1)

    async def lab_known() -> bool:
        return "lab" in await collector.engine.queries.site_rtcs()

    await eventually(lab_known, what="the agent's status read")
    (incident,) = await collector.engine.queries.incidents()
    tokens = f"{base}/api/v1/tokens"
    made: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def create(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
            async with http.post(tokens, json=body, headers=headers) as r:
                answer = await r.json()
                if r.status == 201:
                    made.append(answer["token"])
                return r.status, answer

        # admins only
        for user in ("viewer1", "ops1"):
            status, _ = await create(bearer(TOKENS[user]), {"name": "x"})
            assert status == 403
            async with http.get(tokens, headers=bearer(TOKENS[user])) as r:
                assert r.status == 403
        # a viewer token: made by an admin, shown once, 90 days by default
        status, grafana = await create(ADMIN, {"name": "grafana", "role": "viewer"})
        assert status == 201
        assert TOKEN_RE.fullmatch(grafana["token"])
        assert grafana["expires"] - grafana["created"] == 90 * 86400
        assert (grafana["scope"], grafana["created_by"]) == (None, "local:admin1")
        async with http.get(tokens, headers=ADMIN) as r:
            text = await r.text()
            listed = json.loads(text)["tokens"]
        assert [t["id"] for t in listed] == [grafana["id"]]
        assert "token" not in listed[0] and secret_of(grafana["token"]) not in text
        # its role holds: it reads but does not act
        viewer = bearer(grafana["token"])
        async with http.get(f"{base}/api/v1/incidents", headers=viewer) as r:
            assert r.status == 200
        ack = f"{base}/api/v1/incidents/{incident.id}/ack"
        async with http.post(ack, headers=viewer) as r:
            assert r.status == 403
        async with http.get(f"{base}/api/v1/whoami", headers=viewer) as r:
            assert await r.json() == {
                "name": "grafana",
                "role": "viewer",
                "scope": None,
                "identity": f"token:{grafana['id']}",
            }
        # an operator token acts, under its own name
        status, script = await create(
            ADMIN, {"name": "ack-script", "role": "operator", "expires": "1h"}
        )
        assert status == 201 and script["expires"] - script["created"] == 3600
        async with http.post(ack, headers=bearer(script["token"])) as r:
            assert r.status == 200
            acked = await r.json()
        # its name, and the identity behind it: a token may bear anyone's name
        identity = f"token:{script['id']}"
        assert (acked["acknowledged_by"], acked["acknowledged_identity"]) == (
            "ack-script",
            identity,
        )
        async with http.get(f"{base}/api/v1/incidents/{incident.id}", headers=viewer) as r:
            (entry,) = [t for t in (await r.json())["timeline"] if t["what"] == "ack"]
        assert (entry["actor"], entry["identity"]) == ("ack-script", identity)
        # a scoped admin: its tokens stay inside its scope (lab is in emea, as the store knows)
        status, mine = await create(EMEA_ADMIN, {"name": "emea-board"})
        assert status == 201 and mine["scope"] == {"rtc": ["emea"], "site": []}
        status, lab = await create(EMEA_ADMIN, {"name": "lab", "scope": {"site": ["lab"]}})
        assert status == 201 and lab["scope"] == {"rtc": [], "site": ["lab"]}
        for scope in ({"rtc": ["apac"]}, {"site": ["nowhere"]}, {"rtc": ["emea", "apac"]}):
            status, answer = await create(EMEA_ADMIN, {"name": "x", "scope": scope})
            assert status == 403 and "beyond its own scope" in answer["error"], scope
        # it sees and revokes only the tokens inside its scope
        async with http.get(tokens, headers=EMEA_ADMIN) as r:
            assert {t["name"] for t in (await r.json())["tokens"]} == {"emea-board", "lab"}
        async with http.delete(f"{tokens}/{grafana['id']}", headers=EMEA_ADMIN) as r:
            assert r.status == 404
        # bad input names what is wrong
        for body, words in (
            ({"name": "x", "role": "root"}, "role"),
            ({"name": "x", "role": ["admin"]}, "role"),
            ({"name": "x", "role": {"admin": 1}}, "role"),
            ({"name": "x", "expires": "soon"}, "expires"),
            ({"name": "x", "expires": 5}, "expires"),
            ({"role": "viewer"}, "name"),
            ({"name": "nul\u0000"}, "NUL"),
            ({"name": "x" * 201}, "name"),
            ({"name": "x", "owner": "me"}, "unknown fields"),
            ({"name": "x", "scope": {"rtc": []}}, "scope"),
            ({"name": "x", "scope": ["emea"]}, "scope"),
        ):
            status, answer = await create(ADMIN, body)
            assert status == 400 and words in answer["error"], body
        # revoked: refused at the next request
        async with http.delete(f"{tokens}/{script['id']}", headers=ADMIN) as r:
            assert r.status == 200
            revoked = await r.json()
            assert revoked["revoked"] > 0 and revoked["revoked_by"] == "local:admin1"
        async with http.get(f"{base}/api/v1/incidents", headers=bearer(script["token"])) as r:
            assert r.status == 401
        for missing in ("0" * 16, "nope"):
            async with http.delete(f"{tokens}/{missing}", headers=ADMIN) as r:
                assert r.status == 404
        # expired: refused
        status, brief = await create(ADMIN, {"name": "brief", "expires": "1s"})
        assert status == 201

        async def refused() -> bool:
            async with http.get(f"{base}/api/v1/whoami", headers=bearer(brief["token"])) as r:
                return r.status == 401

        await eventually(refused, what="the expired token refused")
        async with http.get(f"{base}/metrics", headers=ADMIN) as r:
            metrics = parse_prometheus(await r.text())
        assert metrics["enoc_collector_api_tokens_refused_total"] >= 2
    # the audit file names who made and revoked which token
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    tokened = [(r["action"], r["identity"], r.get("name")) for r in records if "token" in r]
    assert ("token_create", "local:admin1", "grafana") in tokened
    assert ("token_create", "local:emea-admin", "lab") in tokened
    assert ("token_revoke", "local:admin1", "ack-script") in tokened
    assert ("ack", f"token:{script['id']}", None) in [
        (r["action"], r["identity"], r.get("name")) for r in records
    ]
    # no secret in the logs, the audit file or the store's files
    texts = read_texts([tmp_path / "audit.jsonl", tmp_path / "collector"])
    texts["log"] = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    assert len(made) == 5
    assert_no_leak(texts, {f"token {i}": secret_of(t) for i, t in enumerate(made)})


async def test_a_stream_opened_with_a_token_ends_when_the_token_is_revoked(
    api: tuple[Collector, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event stream is checked as a request at every heartbeat: a revoked token's
    stream ends there, on whichever replica holds it, as its next request would fail."""
    monkeypatch.setattr(collector_api, "SSE_HEARTBEAT", 0.2)
    _collector, base = api
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/tokens", json={"name": "wallboard"}, headers=ADMIN
        ) as r:
            made = await r.json()
        response = await http.get(f"{base}/api/v1/stream", headers=bearer(made["token"]))
        assert response.status == 200
        await asyncio.wait_for(response.content.readline(), 10)  # the stream is open
        async with http.delete(f"{base}/api/v1/tokens/{made['id']}", headers=ADMIN) as r:
            assert r.status == 200

        # the server closes it: reading reaches the end instead of heartbeats forever
        async def drained() -> None:
            async for _ in response.content:
                pass

        await asyncio.wait_for(drained(), 10)  # a TimeoutError: it went on after the revoke
        response.release()


def test_a_users_file_token_cannot_pass_for_a_store_token(tmp_path: Path) -> None:
    """An `enoc_` bearer token is looked up in the store only: one in the users file would
    never match, so the file is refused, naming the key."""
    path = tmp_path / "users.yaml"
    token = "enoc_" + "0" * 16 + "_" + "1" * 64
    path.write_text(yaml.safe_dump({"users": [{"name": "ci", "role": "viewer", "token": token}]}))
    with pytest.raises(ConfigError) as error:
        Users.load(path)
    assert "users[0]" in str(error.value) and "enoc token create" in str(error.value)
