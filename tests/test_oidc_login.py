"""Single sign-on for the console against a real OpenID provider (oidc-provider-mock) on
loopback: the code flow with PKCE, group-to-role mapping, refusals, re-check, logout."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from collectorkit import TOKENS, collector_config, eventually, running_collector
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet, OctKey, RSAKey

from collector.app import Collector
from collector.config import check_collector
from collector.oidc import IdTokenInvalid, validate_id_token
from collector.session import COOKIE
from testbed.oidc import OidcProvider, oidc_provider
from testbed.servers import Mosquitto, free_port

pytestmark = [
    # the provider's own use of Authlib's older server API, warned in its thread
    pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning"),
]

GRANTS = [
    {"group": "noc-admins", "role": "admin"},
    {"group": "rtc-east-ops", "role": "operator", "scope": {"rtc": ["east"]}},
]


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with oidc_provider() as provider:
        yield provider


def sso_config(tmp_path: Path, mosquitto: Mosquitto, issuer: str, **http: Any) -> Path:
    port = free_port()
    secret = tmp_path / "oidc-secret"
    secret.write_text("an enoc client secret\n")
    return collector_config(
        tmp_path,
        mosquitto.url,
        extra={
            "http": {
                "listen": f"127.0.0.1:{port}",
                "audit_file": str(tmp_path / "audit.jsonl"),
                "oidc": {
                    "issuer": issuer,
                    "client_id": "enoc-console",
                    "client_secret_file": str(secret),
                    "redirect_url": f"http://127.0.0.1:{port}/login/oidc/callback",
                    "grants": GRANTS,
                },
                **http,
            }
        },
    )


@pytest.fixture
async def sso(
    tmp_path: Path, mosquitto: Mosquitto, idp: OidcProvider
) -> AsyncIterator[tuple[Collector, str]]:
    config = sso_config(tmp_path, mosquitto, idp.url, session_recheck="1s")
    async with running_collector(config) as collector:
        yield collector, f"http://127.0.0.1:{collector.http_port}"


async def set_claims(
    http: aiohttp.ClientSession, idp: OidcProvider, sub: str, **claims: Any
) -> None:
    async with http.put(idp.user_url(sub), json=claims) as r:
        assert r.status == 204, await r.text()


async def authorize(
    http: aiohttp.ClientSession, base: str, sub: str | None, *, deny: bool = False
) -> str:
    """Start the login at the console, answer the IdP's form; the callback URL it sends."""
    async with http.get(base + "/login/oidc", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        location = r.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_type"] == ["code"]
    assert query["nonce"] and query["state"]
    form = {"action": "deny"} if deny else {"sub": sub or ""}
    async with http.post(location, data=form, allow_redirects=False) as r:
        assert r.status in (302, 303), await r.text()
        callback = r.headers["Location"]
    assert callback.startswith(base + "/login/oidc/callback?")
    return callback


async def sign_in(
    http: aiohttp.ClientSession, base: str, idp: OidcProvider, sub: str, **claims: Any
) -> aiohttp.ClientResponse:
    await set_claims(http, idp, sub, **claims)
    callback = await authorize(http, base, sub)
    async with http.get(callback, allow_redirects=False) as r:
        await r.read()
        return r


ADMIN = {"Authorization": f"Bearer {TOKENS['admin1']}"}


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies of 127.0.0.1, as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.servers
async def test_sso_login_maps_groups_to_role_and_scope_and_logs_out(
    tmp_path: Path, sso: tuple[Collector, str], idp: OidcProvider
) -> None:
    collector, base = sso
    async with browser() as http:
        async with http.get(base + "/login/methods") as r:
            assert await r.json() == {"password": True, "oidc": True}
        r = await sign_in(
            http, base, idp, "alice", preferred_username="alice", groups=["staff", "rtc-east-ops"]
        )
        assert r.status == 302 and r.headers["Location"] == "/"
        assert r.cookies[COOKIE]["samesite"] == "Strict"
        async with http.get(base + "/api/v1/whoami") as r:
            assert r.status == 200, await r.text()
            me = await r.json()
        assert me["name"] == "alice"
        assert me["role"] == "operator"
        assert me["scope"] == {"rtc": ["east"], "site": []}
        assert me["identity"] == f"oidc:{idp.url}|alice"
        csrf = me["csrf"]
        async with http.get(base + "/metrics") as r:  # it sums every region: not alice's
            assert r.status == 403
        async with http.get(base + "/metrics", headers=ADMIN) as r:
            assert "enoc_collector_api_oidc_logins_total 1" in await r.text()
        # the identity is confirmed again (session_recheck 1s) with the refresh token, the
        # rotated token kept: still alice, still east
        first = await kept_at(collector, me["identity"])

        async def refreshed() -> bool:
            async with http.get(base + "/api/v1/whoami") as r:
                assert (await r.json())["role"] == "operator"
            return await kept_at(collector, me["identity"]) > first

        await eventually(refreshed, what="the identity confirmed with a refresh")
        async with http.post(base + "/logout", headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200
            out = await r.json()
        end = urlsplit(out["end_session_url"])
        assert f"{end.scheme}://{end.netloc}{end.path}" == f"{idp.url}/oauth2/end_session"
        params = parse_qs(end.query)
        assert params["post_logout_redirect_uri"] == [base + "/"]
        assert params["client_id"] == ["enoc-console"]
        assert params["id_token_hint"][0].count(".") == 2
        async with http.get(out["end_session_url"]) as r:  # the IdP's logout page
            assert r.status == 200
        async with http.get(base + "/api/v1/whoami") as r:
            assert r.status == 401
    records = audit(tmp_path)
    login = next(r for r in records if r["action"] == "login")
    assert login["identity"] == f"oidc:{idp.url}|alice" and login["via"] == "oidc"
    assert any(r["action"] == "logout" for r in records)
    # nothing kept once the identity has no session
    rows = await collector.store.read(lambda tx: tx.all("SELECT * FROM oidc_tokens"))
    assert rows == []
    # neither the code nor a token is written to the audit file
    text = (tmp_path / "audit.jsonl").read_text()
    assert "code=" not in text and params["id_token_hint"][0] not in text


async def kept_at(collector: Collector, identity: str) -> float:
    rows = await collector.store.read(
        lambda tx: tx.all("SELECT updated FROM oidc_tokens WHERE identity = ?", (identity,))
    )
    return float(rows[0][0]) if rows else 0.0


@pytest.mark.servers
async def test_sso_refusals_are_clear_pages_and_counted(
    tmp_path: Path, idp: OidcProvider, sso: tuple[Collector, str]
) -> None:
    base = sso[1]
    async with browser() as http:
        # no configured group: refused, and no session
        r = await sign_in(http, base, idp, "mallory", groups=["staff"])
        assert r.status == 403
        assert COOKIE not in r.cookies
        page = await r.text()
        assert "holds no group that enoc maps to a role (groups: staff)" in page
        assert "Traceback" not in page
        # the user denies at the IdP: its error comes back
        callback = await authorize(http, base, None, deny=True)
        async with http.get(callback) as r:
            assert r.status == 403
            assert "refused the login: access_denied" in await r.text()
        # a state that is not the one this browser started with
        await set_claims(http, idp, "alice", groups=["noc-admins"])
        for altered in ("state=x", "state=%C3%A9"):  # a failure ends the attempt: anew
            callback = await authorize(http, base, "alice")
            async with http.get(callback.replace("state=", altered)) as r:
                assert r.status == 400
                assert "state does not match" in await r.text()
        # a callback without the login's cookie (another browser, or cookies off)
        async with aiohttp.ClientSession() as other, other.get(callback) as r:
            assert r.status == 400
            assert "no login in progress" in await r.text()
        # an altered state cookie
        callback = await authorize(http, base, "alice")
        kept = next(c for c in http.cookie_jar if c.key == "enoc_oidc")
        http.cookie_jar.update_cookies(
            {"enoc_oidc": kept.value[:-4] + "AAAA"}, response_url=kept_url(base)
        )
        async with http.get(callback) as r:
            assert r.status == 400
            assert "altered" in await r.text()
        # a code used twice: the IdP refuses the second exchange
        callback = await authorize(http, base, "alice")
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 302
        http.cookie_jar.clear(lambda c: c.key == COOKIE)
        used = parse_qs(urlsplit(callback).query)["code"][0]
        fresh = await authorize(http, base, "alice")  # a fresh login, the old code
        fresh_code = parse_qs(urlsplit(fresh).query)["code"][0]
        async with http.get(fresh.replace(fresh_code, used)) as r:
            assert r.status == 401
            text = await r.text()
            assert "refused the code: invalid_grant" in text
        assert used not in text
        async with browser() as admin:
            r2 = await sign_in(admin, base, idp, "alice", groups=["noc-admins"])
            assert r2.status == 302
            async with admin.get(base + "/metrics") as r:
                metrics = await r.text()
    for reason, count in {"no_role": 1, "idp_refused": 1, "state": 4, "code": 1}.items():
        line = f'enoc_collector_api_oidc_logins_failed_total{{kind="{reason}"}} {count}'
        assert line in metrics, line
    failed = [r for r in audit(tmp_path) if r["action"] == "login_failed"]
    assert len(failed) == 7 and all(r["via"] == "oidc" for r in failed)


def kept_url(base: str) -> Any:
    from yarl import URL

    return URL(base + "/login/oidc/")


@pytest.mark.servers
async def test_a_user_removed_from_its_group_loses_the_session(
    sso: tuple[Collector, str], idp: OidcProvider
) -> None:
    _, base = sso
    async with browser() as http:
        r = await sign_in(http, base, idp, "bob", name="Bob", groups=["noc-admins"])
        assert r.status == 302
        async with http.get(base + "/api/v1/whoami") as r:
            assert (await r.json())["role"] == "admin"
        # moved to a regional group: the next confirmation narrows the session
        await set_claims(http, idp, "bob", groups=["rtc-east-ops"])

        async def narrowed() -> bool:
            async with http.get(base + "/api/v1/whoami") as r:
                return bool((await r.json())["scope"] == {"rtc": ["east"], "site": []})

        await eventually(narrowed, what="the new group's role and scope")
        # out of every mapped group: the session ends on the next confirmation
        await set_claims(http, idp, "bob", groups=[])

        async def ended() -> bool:
            async with http.get(base + "/api/v1/whoami") as r:
                return r.status == 401

        await eventually(ended, what="the session ended")
        # and a user whose tokens the IdP revokes loses it too
        r = await sign_in(http, base, idp, "carol", groups=["noc-admins"])
        assert r.status == 302
        async with http.post(idp.user_url("carol") + "/revoke-tokens") as r:
            assert r.status == 204
        await eventually(ended, what="the session of revoked tokens ended")


@pytest.mark.servers
async def test_idp_down_at_start_then_up(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # the IdP's port, bound but not listening: connections are refused, as by a host
    # whose IdP is down, and no other socket takes the port meanwhile
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    port = down.getsockname()[1]
    config = sso_config(tmp_path, mosquitto, f"http://127.0.0.1:{port}")
    async with (
        running_collector(config) as collector,
        browser() as http,
    ):
        base = f"http://127.0.0.1:{collector.http_port}"
        async with http.get(base + "/login/oidc", allow_redirects=False) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert "cannot be reached" in await r.text()
        async with http.get(base + "/healthz") as r:
            assert r.status == 200
        with down, oidc_provider(sock=down) as idp:

            async def discovered() -> bool:
                async with http.get(base + "/login/oidc", allow_redirects=False) as r:
                    return r.status == 302

            await eventually(discovered, what="discovery once the IdP is up")
            r2 = await sign_in(http, base, idp, "dave", groups=["noc-admins"])
            assert r2.status == 302


@pytest.mark.servers
async def test_id_token_checks_against_the_providers_keys(idp: OidcProvider) -> None:
    async with aiohttp.ClientSession() as http, http.get(idp.url + "/jwks") as r:
        published = KeySet.import_key_set(await r.json())
    (theirs,) = published.keys
    ours = RSAKey.generate_key(2048, parameters={"kid": "ours"})
    now = time.time()
    good: dict[str, Any] = {
        "iss": idp.url,
        "aud": "enoc-console",
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 300,
        "nonce": "n1",
    }
    check: dict[str, Any] = {
        "issuer": idp.url,
        "client_id": "enoc-console",
        "nonce": "n1",
        "now": now,
    }
    keys = KeySet([ours])

    def token(claims: dict[str, Any], key: Any = ours, alg: str = "RS256") -> str:
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)

    assert validate_id_token(token(good), keys, **check)["sub"] == "alice"
    # a key the provider does not publish: its key id is unknown (the JWKS is fetched again)
    with pytest.raises(InvalidKeyIdError):
        validate_id_token(token(good), published, **check)
    # our key under the provider's key id: the signature does not verify
    forged = RSAKey.generate_key(2048, parameters={"kid": str(theirs.kid)})
    with pytest.raises(IdTokenInvalid, match="bad signature"):
        validate_id_token(token(good, forged), published, **check)
    # HS256 keyed with the public key's bytes is not an algorithm we take
    secret = OctKey.import_key(b"x" * 32, parameters={"kid": "ours"})
    with pytest.raises(IdTokenInvalid):
        validate_id_token(token(good, secret, "HS256"), KeySet([secret]), **check)
    wrongs: list[tuple[dict[str, Any], str]] = [
        ({"aud": "another-client"}, "aud"),
        ({"iss": "http://127.0.0.1:1"}, "iss"),
        ({"exp": int(now) - 120}, "expired"),
        ({"nonce": "n2"}, "nonce"),
        ({"aud": ["enoc-console", "other"]}, "azp"),
    ]
    for wrong, match in wrongs:
        with pytest.raises(IdTokenInvalid, match=match):
            validate_id_token(token({**good, **wrong}), keys, **check)
    without = {k: v for k, v in good.items() if k != "nonce"}
    with pytest.raises(IdTokenInvalid, match="nonce"):
        validate_id_token(token(without), keys, **check)
    # a minute's leeway for clocks apart
    assert validate_id_token(token({**good, "exp": int(now) - 30}), keys, **check)


def oidc_section(tmp_path: Path, name: str, **oidc: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    config = {
        "store": {"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
        "http": {"oidc": {"client_id": "enoc", **oidc}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_oidc_section_is_checked(tmp_path: Path) -> None:
    redirect = "https://enoc.example.net/login/oidc/callback"
    missing = tmp_path / "missing.pem"
    bad = oidc_section(
        tmp_path,
        "bad",
        issuer="http://sso.example.net",
        redirect_url=redirect,
        grants=[{"group": "noc", "role": "boss"}],
    )
    errors = [f"{i.key}: {i.message}" for i in check_collector(bad).errors]
    assert any("issuer must be an https:// URL (http:// only on loopback)" in e for e in errors)
    assert any("grants[0].role" in e for e in errors), errors
    good = oidc_section(
        tmp_path,
        "good",
        issuer="https://sso.example.net/realms/noc",
        redirect_url=redirect,
        grants=[{"group": "noc", "role": "admin", "scope": {"rtc": ["emea"]}}],
        ca_file=str(missing),
    )
    checked = check_collector(good)
    assert [f"{i.key}: {i.message}" for i in checked.errors] == [
        f"http.oidc.ca_file: no such file: {missing}"
    ]
    assert checked.value is not None and checked.value.http.oidc is not None
    (grant,) = checked.value.http.oidc.grants
    assert grant.scope is not None and grant.scope.rtc == ["emea"]
    no_openid = oidc_section(
        tmp_path,
        "scopes",
        issuer="https://sso.example.net",
        redirect_url=redirect,
        scopes=["profile"],
        grants=[{"group": "noc"}],
    )
    assert any("scopes must include openid" in i.message for i in check_collector(no_openid).errors)


@pytest.mark.servers
async def test_the_console_signs_in_and_out_through_the_idp_in_chromium(
    tmp_path: Path, idp: OidcProvider, sso: tuple[Collector, str]
) -> None:
    from browserkit import chromium_path, launched
    from playwright.async_api import expect

    base = sso[1]
    async with browser() as http:
        await set_claims(http, idp, "erin", preferred_username="erin", groups=["rtc-east-ops"])
    async with launched(chromium_path()) as chromium:
        page = await chromium.new_page()
        await page.goto(base + "/")
        await expect(page.locator("#sso")).to_be_visible()  # offered: http.oidc is set
        await page.screenshot(path=str(tmp_path / "sso-login.png"))
        await page.get_by_role("link", name="Sign in with single sign-on").click()
        await page.get_by_placeholder("sub").fill("erin")  # the IdP's own form
        await page.get_by_role("button", name="Authorize").click()
        await expect(page.locator("#who")).to_have_text("erin (operator)")
        assert page.url == base + "/"
        await page.screenshot(path=str(tmp_path / "sso-signed-in.png"))
        await page.get_by_role("button", name="Log out").click()
        await page.get_by_role("button", name="End session").click()  # the IdP's logout
        await expect(page.locator("#login-view")).to_be_visible()
        assert page.url.startswith(base + "/")
        await expect(page.locator("#sso")).to_be_visible()
        whoami = await page.request.get(base + "/api/v1/whoami")  # the browser's cookies
        assert whoami.status == 401
