"""Console logins against a real OpenLDAP (Debian's slapd on loopback): bind, groups, grants,
TLS, and sessions that end on every replica once the directory no longer grants a role."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ldap3
import pytest
import yaml
from collectorkit import collector_config, eventually, running_collector
from cryptography.hazmat.primitives.serialization import Encoding
from yarl import URL

from collector.access import Grant, Principal, Scope, ScopeConfig
from collector.auth import hash_password
from collector.config import check_collector
from collector.config_ldap import LdapConfig
from collector.directory import Directory
from collector.directory_errors import DirectoryUnavailable, LoginRefused, NotGranted
from enoc.config import Duration, Secret
from enoc.pki import make_ca, make_pki
from testbed.servers import Mosquitto, PostgreSQL, TlsFiles, free_port
from testbed.slapd import GROUPS, MEMBERS, PEOPLE, SERVICE_DN, Slapd, user_dn

pytestmark = pytest.mark.servers

GRANTS: list[dict[str, Any]] = [
    {"group": f"cn=noc-admins,{GROUPS}", "role": "admin"},
    {"group": "noc-emea-operators", "role": "operator", "scope": {"rtc": ["emea"]}},
    # spaces and upper case: the directory's DN is compared as a DN
    {
        "group": "CN=noc-amer-operators, OU=groups, DC=enoc, DC=test",
        "role": "operator",
        "scope": {"rtc": ["amer"]},
    },
]


def ldap_settings(slapd: Slapd, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    password = tmp_path / "ldap-bind-password"
    password.write_text(slapd.service_password + "\n")
    settings = {
        "url": slapd.url,
        "start_tls": True,
        "ca_file": str(slapd.tls.ca_file),
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(password),
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "grants": GRANTS,
        "timeout": "3s",
    }
    settings.update(changes)
    return {k: v for k, v in settings.items() if v is not None}


def directory_of(slapd: Slapd, **changes: Any) -> Directory:
    """A Directory (without a collector) of the test directory's settings."""
    settings: dict[str, Any] = {
        "url": slapd.url,
        "start_tls": True,
        "ca_file": slapd.tls.ca_file,
        "bind_dn": SERVICE_DN,
        "bind_password": Secret(slapd.service_password),
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "grants": [
            Grant(g["group"], g["role"], ScopeConfig(**g["scope"]) if "scope" in g else None)
            for g in GRANTS
        ],
        "timeout": Duration(3),
    }
    settings.update(changes)
    return Directory(LdapConfig(**settings))


@pytest.fixture
def restore_groups(slapd: Slapd) -> Iterator[None]:
    yield
    for group, members in MEMBERS.items():
        slapd.set_members(group, members)


@contextlib.asynccontextmanager
async def console(
    tmp_path: Path, mqtt_url: str, ldap: dict[str, Any], **extra: Any
) -> AsyncIterator[str]:
    http = {"ldap": ldap, "audit_file": str(tmp_path / "audit.jsonl"), **extra.pop("http", {})}
    config = collector_config(tmp_path, mqtt_url, extra={"http": http, **extra})
    async with running_collector(config) as collector:
        yield f"http://127.0.0.1:{collector.http_port}"


async def login(
    http: aiohttp.ClientSession, base: str, name: str, password: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(base + "/login", json={"name": name, "password": password}) as r:
        body = await r.json()
        return r.status, body


async def whoami(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(base + "/api/v1/whoami") as r:
        return r.status, await r.json()


def jar() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_directory_users_log_in_with_the_role_and_scope_of_their_group(
    tmp_path: Path, mosquitto: Mosquitto, slapd: Slapd
) -> None:
    async with console(tmp_path, mosquitto.url, ldap_settings(slapd, tmp_path)) as base:
        async with jar() as http:
            status, body = await login(http, base, "ana", slapd.passwords["ana"])
            assert status == 200, body
            status, me = await whoami(http, base)
            assert status == 200
            assert me["name"] == "ana"
            assert me["role"] == "operator"
            assert me["scope"] == {"rtc": ["emea"], "site": []}
            assert me["identity"] == f"ldap:{user_dn('ana')}"
        async with jar() as http:  # the DN written another way matches too
            assert (await login(http, base, "ben", slapd.passwords["ben"]))[0] == 200
            me = (await whoami(http, base))[1]
            assert (me["role"], me["scope"]) == ("operator", {"rtc": ["amer"], "site": []})
        async with jar() as http:
            assert (await login(http, base, "cat", slapd.passwords["cat"]))[0] == 200
            me = (await whoami(http, base))[1]
            assert (me["role"], me["scope"]) == ("admin", None)

        refused = [
            ("ana", slapd.passwords["ben"], "wrong name or password"),
            ("ana", "", "wrong name or password"),  # never sent: an anonymous bind
            ("nobody", slapd.passwords["ana"], "wrong name or password"),
            # escaped, these are names: unescaped, `an*` finds ana alone and her
            # password would log in
            ("an*", slapd.passwords["ana"], "wrong name or password"),
            ("*)(uid=*", slapd.passwords["ana"], "wrong name or password"),
            ("dan", slapd.passwords["dan"], "not in any group that grants access"),
        ]
        for name, password, why in refused:
            async with jar() as http:
                status, body = await login(http, base, name, password)
                assert (status, body.get("error")) == (401, why), name
                assert (await whoami(http, base))[0] == 401, name
                assert not http.cookie_jar.filter_cookies(URL(base)), name
        # the login limit holds for directory users as for the users file's
        async with jar() as http:
            for _ in range(5):  # login_max_failures
                assert (await login(http, base, "ben", "not ben's"))[0] == 401
            status, body = await login(http, base, "ben", slapd.passwords["ben"])
            assert status == 429, body

    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    logins = [(a["action"], a["identity"] or a["actor"]) for a in audit]
    assert ("login", f"ldap:{user_dn('ana')}") in logins
    assert ("login_failed", "dan") in logins
    assert ("login_failed", "*)(uid=*") in logins


async def test_a_users_file_user_with_a_password_is_never_sent_to_the_directory(
    tmp_path: Path, mosquitto: Mosquitto, slapd: Slapd
) -> None:
    """A local user named like a directory user is the users file's: the directory's
    password does not log it in."""
    users = tmp_path / "local-users.yaml"
    local_password = secrets.token_urlsafe(12)
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "name": "ana",
                        "role": "viewer",
                        "password_hash": hash_password(local_password),
                    }
                ]
            }
        )
    )
    ldap = ldap_settings(slapd, tmp_path)
    async with (
        console(tmp_path, mosquitto.url, ldap, http={"users_file": str(users)}) as base,
        jar() as http,
    ):
        assert (await login(http, base, "ana", slapd.passwords["ana"]))[0] == 401
        assert (await login(http, base, "ana", local_password))[0] == 200
        me = (await whoami(http, base))[1]
        assert (me["role"], me["identity"]) == ("viewer", "local:ana")


async def test_ldaps_and_a_checked_certificate(
    slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ldaps:// with the directory's CA logs in; another CA, or a host name the
    certificate does not name, fails closed: no login, a log line that says why."""
    ana = directory_of(slapd, url=slapd.ldaps_url, start_tls=False)
    try:
        principal = await ana.login("ana", slapd.passwords["ana"])
        assert principal is not None
        assert principal.identity == f"ldap:{user_dn('ana')}"
    finally:
        ana.close()
    other = make_pki(tmp_path / "other", server_names=["127.0.0.1"], clients=[], ca_name="other")
    for changes in (
        {"ca_file": other.ca_cert},  # StartTLS, another CA
        {"url": slapd.ldaps_url, "start_tls": False, "ca_file": other.ca_cert},
        {"url": f"ldap://localhost:{slapd.port}"},  # the certificate names 127.0.0.1 only
    ):
        caplog.clear()
        directory = directory_of(slapd, **changes)
        try:
            with pytest.raises(DirectoryUnavailable, match="certificate verify failed"):
                await directory.login("ana", slapd.passwords["ana"])
        finally:
            directory.close()
        (line,) = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
        assert "certificate verify failed" in line, line
    assert "Hostname mismatch" in line, "the last: a certificate for another name"


async def test_the_directory_answers_rechecks(slapd: Slapd, restore_groups: None) -> None:
    directory = directory_of(slapd)
    try:
        ben = await directory.login("ben", slapd.passwords["ben"])
        assert ben is not None
        assert ben.scope == Scope.of(ScopeConfig(rtc=["amer"]))
        assert await directory.recheck(ben) == ben
        slapd.set_members("noc-amer-operators", [])
        slapd.set_members("noc-emea-operators", ["ana", "ben"])
        moved = await directory.recheck(ben)
        assert moved is not None
        assert (moved.role, moved.scope, moved.subject) == (
            "operator",
            Scope.of(ScopeConfig(rtc=["emea"])),
            user_dn("ben"),
        )
        slapd.set_members("noc-emea-operators", ["ana"])
        assert await directory.recheck(ben) is None, "in no granting group"
        with pytest.raises(NotGranted):
            await directory.login("ben", slapd.passwords["ben"])
        gone = Principal("zed", "admin", Scope.of(None), "ldap", f"uid=zed,{PEOPLE}")
        assert await directory.recheck(gone) is None, "a deleted entry"
        # the groups from the user's entry (as Active Directory's memberOf) instead
        by_attribute = directory_of(slapd, group_attribute="seeAlso", group_base="")
        try:
            cat = await by_attribute.login("cat", slapd.passwords["cat"])
            assert cat is not None
            assert (cat.role, cat.scope) == ("admin", Scope.of(None))
            with pytest.raises(NotGranted):  # lab-users: no grant
                await by_attribute.login("dan", slapd.passwords["dan"])
        finally:
            by_attribute.close()
        nothing = directory_of(slapd, group_attribute="description", group_base="")
        try:
            with pytest.raises(NotGranted):  # an attribute the entry lacks: no group
                await nothing.login("cat", slapd.passwords["cat"])
        finally:
            nothing.close()
    finally:
        directory.close()


async def test_a_directory_that_cannot_answer(
    slapd: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    """Down, or refusing the service account: a login and a recheck raise (503 for the
    login, the session code keeps the session one more period), logged once."""
    caplog.set_level(logging.INFO, logger="enoc.collector.directory")
    down = directory_of(slapd, url=f"ldap://127.0.0.1:{free_port()}")
    try:
        for _ in range(3):
            with pytest.raises(DirectoryUnavailable):
                await down.login("ana", slapd.passwords["ana"])
        ana = Principal("ana", "operator", Scope.of(None), "ldap", user_dn("ana"))
        with pytest.raises(DirectoryUnavailable):
            await down.recheck(ana)
    finally:
        down.close()
    failing = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing) == 1, failing
    assert down.unavailable == 4
    refused = directory_of(slapd, bind_password=Secret("not the service password"))
    try:
        with pytest.raises(DirectoryUnavailable, match="service account"):
            await refused.login("ana", slapd.passwords["ana"])
    finally:
        refused.close()


async def test_a_login_while_the_directory_is_down_is_503(
    tmp_path: Path, mosquitto: Mosquitto, slapd: Slapd
) -> None:
    ldap = ldap_settings(slapd, tmp_path, url=f"ldap://127.0.0.1:{free_port()}")
    async with console(tmp_path, mosquitto.url, ldap) as base, jar() as http:
        async with http.post(base + "/login", json={"name": "ana", "password": "x1"}) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0
        assert (await whoami(http, base))[0] == 401


class RefusingSlapd(Slapd):
    """A directory that answers every simple bind by a DN with 53 (unwillingToPerform,
    `olcDisallows: bind_simple`: as 389-ds answers an inactivated account's) and lets
    anyone read: the service account searches anonymously, the user's bind is refused."""

    def _config_ldif(self, data: Path) -> str:
        text = super()._config_ldif(data)
        acl = "read by self read by * none"
        assert "olcPidFile:" in text and acl in text, "testbed/slapd.py's config changed"
        text = text.replace("olcPidFile:", "olcDisallows: bind_simple\nolcPidFile:", 1)
        return text.replace(acl, "read by self read by anonymous read by * none")

    def ready(self) -> bool:
        """Bound anonymously: the root DN's simple bind is refused here too."""
        with socket.create_connection((self.host, self.ldaps_port), timeout=1):
            pass  # both listeners are up (ldap3 leaves the socket of a failed open open)
        server = ldap3.Server(self.host, self.port, get_info=ldap3.NONE, connect_timeout=5)
        ldap3.Connection(server, auto_bind=ldap3.AUTO_BIND_NO_TLS, raise_exceptions=True).unbind()
        return True


async def test_a_bind_refused_for_the_account_is_a_refused_login_not_an_outage(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A user's bind answered with a code that means "this account may not log in" is a
    401 (told as a wrong password), logged and audited with the code; not a 503."""
    pki = make_pki(tmp_path / "pki", server_names=["127.0.0.1"], clients=[])
    workdir = tmp_path / "slapd"
    workdir.mkdir()
    tls = TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key)
    with RefusingSlapd(workdir, tls=tls) as slapd:
        anonymous = {"bind_dn": None, "bind_password_file": None}
        directory = directory_of(slapd, bind_dn="", bind_password=None)
        try:
            with pytest.raises(LoginRefused) as refused:
                await directory.login("ana", slapd.passwords["ana"])
            assert (refused.value.code, refused.value.dn) == (53, user_dn("ana"))
            assert directory.unavailable == 0
            # 53 may be a policy against every user's simple bind: counted apart
            assert directory.counters()["api_directory_policy_refusals"] == 1
        finally:
            directory.close()
        ldap = ldap_settings(slapd, tmp_path, **anonymous)
        async with console(tmp_path, mosquitto.url, ldap) as base, jar() as http:
            status, body = await login(http, base, "ana", slapd.passwords["ana"])
            assert (status, body) == (401, {"error": "wrong name or password"})
            assert (await whoami(http, base))[0] == 401
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (failed,) = [a for a in audit if a["action"] == "login_failed"]
    assert failed["actor"] == "ana"
    assert failed["reason"].startswith("directory refused: 53 unwillingToPerform"), failed


async def test_a_user_moved_or_removed_in_the_directory_on_both_replicas(
    tmp_path: Path,
    mosquitto: Mosquitto,
    postgres: PostgreSQL,
    slapd: Slapd,
    restore_groups: None,
) -> None:
    """Issue 21's done-when: two replicas on one PostgreSQL, a session of a directory user
    logged in through one; moved to another group, both show its new role and scope at the
    next recheck; removed from every granting group, both end its session."""
    recheck = 2.0
    key = tmp_path / "session.key"
    key.write_text(secrets.token_hex(32))
    http = {
        "ldap": ldap_settings(slapd, tmp_path),
        "session_recheck": f"{recheck:g}s",
        "session_key_file": str(key),
    }
    configs = [
        collector_config(
            tmp_path,
            mosquitto.url,
            store_url=postgres.url,
            name=f"replica-{n}",
            extra={"http": http},
        )
        for n in (1, 2)
    ]
    async with running_collector(configs[0]) as one, running_collector(configs[1]) as two:
        bases = [f"http://127.0.0.1:{c.http_port}" for c in (one, two)]
        async with jar() as http_a:
            assert (await login(http_a, bases[0], "ben", slapd.passwords["ben"]))[0] == 200
            cookie = http_a.cookie_jar.filter_cookies(URL(bases[0]))
            # the cookie alone, on each replica
            sessions = [aiohttp.ClientSession(cookies=cookie) for _ in bases]
            try:
                for session, base in zip(sessions, bases, strict=True):
                    me = (await whoami(session, base))[1]
                    assert (me["role"], me["scope"]) == ("operator", {"rtc": ["amer"], "site": []})

                slapd.set_members("noc-amer-operators", [])
                slapd.set_members("noc-admins", ["cat", "ben"])
                for session, base in zip(sessions, bases, strict=True):

                    async def promoted(
                        session: aiohttp.ClientSession = session, base: str = base
                    ) -> bool:
                        status, me = await whoami(session, base)
                        assert status == 200, me
                        return me["role"] == "admin" and me["scope"] is None

                    # an upper bound with a generous margin: the assertion is that it happens
                    await eventually(promoted, timeout=recheck + 30, what=f"admin on {base}")

                slapd.set_members("noc-admins", ["cat"])
                for session, base in zip(sessions, bases, strict=True):

                    async def ended(
                        session: aiohttp.ClientSession = session, base: str = base
                    ) -> bool:
                        return (await whoami(session, base))[0] == 401

                    await eventually(ended, timeout=recheck + 30, what=f"session ended on {base}")
                # ended for good: a later recheck does not bring it back
                slapd.set_members("noc-admins", ["cat", "ben"])
                for session, base in zip(sessions, bases, strict=True):
                    assert (await whoami(session, base))[0] == 401
            finally:
                for session in sessions:
                    await session.close()


class Unstarted:
    """What `ldap_settings` reads of a Slapd, for config checks that start none."""

    url = "ldap://127.0.0.1:389"
    service_password = "service password"

    def __init__(self, tmp_path: Path) -> None:
        ca = tmp_path / "ca.pem"
        ca.write_bytes(make_ca().cert.public_bytes(Encoding.PEM))
        self.tls = TlsFiles(ca, ca, ca)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "ldap://127.0.0.1:389", "start_tls": False}, "sends passwords in clear"),
        ({"url": "http://127.0.0.1"}, "must be ldaps://HOST"),
        ({"url": "ldaps://127.0.0.1:636"}, "start_tls is for ldap://"),
        ({"bind_password_file": None}, "bind_dn and bind_password"),
        ({"grants": []}, "at least one"),
        ({"user_filter": "(uid=ana)"}, "user_filter must contain {name}"),
        ({"user_filter": "(&(uid={name})"}, "balanced parentheses"),
        ({"group_base": None}, "group_base must name"),
        ({"grants": [{"group": "g", "role": "root"}]}, "root"),
    ],
)
def test_ldap_config_errors_name_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    ldap = ldap_settings(Unstarted(tmp_path), tmp_path, **changes)  # type: ignore[arg-type]
    config = collector_config(tmp_path, "mqtt://127.0.0.1:1883", extra={"http": {"ldap": ldap}})
    errors = [str(e) for e in check_collector(config).errors]
    assert any("http.ldap" in e and message in e for e in errors), errors


def test_check_config_warns_of_a_plaintext_directory(tmp_path: Path) -> None:
    directory = Unstarted(tmp_path)
    ldap = ldap_settings(
        directory,  # type: ignore[arg-type]
        tmp_path,
        start_tls=False,
        ca_file=None,
        insecure_plaintext=True,
    )
    config = collector_config(tmp_path, "mqtt://127.0.0.1:1883", extra={"http": {"ldap": ldap}})
    checked = check_collector(config)
    assert not checked.errors, checked.errors
    (warning,) = [w for w in checked.notes if "ldap" in w.key]
    assert "in clear" in warning.message
    missing = ldap_settings(
        directory,  # type: ignore[arg-type]
        tmp_path,
        ca_file=str(tmp_path / "no-ca.pem"),
    )
    config = collector_config(tmp_path, "mqtt://127.0.0.1:1883", extra={"http": {"ldap": missing}})
    errors = [str(e) for e in check_collector(config).errors]
    assert any("http.ldap.ca_file" in e and "cannot read" in e for e in errors), errors


def test_a_collector_imports_ldap3_only_for_a_directory() -> None:
    """ldap3 takes about a third of a second to import, at every collector start: the
    API loads it only when `http.ldap` makes a Directory."""
    probe = (
        "import sys, collector.app; print('ldap3' in sys.modules); "
        "import collector.directory; print('ldap3' in sys.modules)"
    )
    said = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert said.stdout.split() == ["False", "True"], said.stdout + said.stderr
