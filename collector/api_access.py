"""Who calls the API: bearer tokens, console sessions and logins, the role guard, the audit.

Every way in ends as a `Principal` (collector/access.py) under `USER_KEY` of the
request; the session behind a cookie under `SESSION_KEY`. Logins by name and
password are checked against the users file with argon2id on `HashGate`'s
threads and limited per client address and name pair (collector/session.py).
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from collector.access import Principal, Role
from collector.api_input import (
    MAX_NAME,
    MAX_PASSWORD,
    ApiError,
    bad_request,
    json_body,
    retry_later,
    storable,
)
from collector.auth import HashGate, HashingBusy, Users, cpus
from collector.config import HttpConfig
from collector.directory_errors import (
    RETRY_AFTER,
    DirectoryUnavailable,
    LoginRefused,
    NotGranted,
)
from collector.session import COOKIE, CSRF_HEADER, LoginLimiter, Session, Sessions, load_key
from collector.store import Store
from collector.tokens import Tokens, looks_like_token
from enoc.logs import StateLogger, get_logger

if TYPE_CHECKING:
    from collector.directory import Directory
    from collector.oidc import Oidc

log = get_logger("enoc.collector.api")
audit_log = get_logger("enoc.audit")

USER_KEY = web.RequestKey("user", Principal)
SESSION_KEY = web.RequestKey("session", Session)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# the API's 503 for a store that cannot answer, logged once per outage
StoreUnavailable = Callable[[str, Exception], ApiError]


class Access:
    def __init__(
        self,
        http: HttpConfig,
        users: Users | None,
        store: Store,
        store_unavailable: StoreUnavailable,
    ) -> None:
        self.users = users
        self._store_unavailable = store_unavailable
        self.store_unavailable = store_unavailable
        self.unauthorized = 0
        self.forbidden = 0
        self.logins_failed = 0
        # sessions and failed logins are kept in the store: every replica agrees
        self.sessions = Sessions(
            users,
            load_key(http.session_key_file),
            store,
            lifetime=float(http.session_lifetime),
            recheck_after=float(http.session_recheck),
        )
        self.limiter = LoginLimiter(
            store,
            http.login_max_failures,
            float(http.login_window),
            backoff=float(http.login_backoff),
            backoff_max=float(http.login_backoff_max),
        )
        self.hashing = HashGate(http.login_hash_workers or cpus(), http.login_hash_queue)
        # logins by name and password of users not in the users file, and their sessions
        self.directory: Directory | None = None
        if http.ldap is not None:
            from collector.directory import Directory  # ldap3 only where it is used

            self.directory = Directory(http.ldap, queue=http.login_hash_queue)
            self.sessions.rechecks["ldap"] = self.directory.recheck
        self.audit_file = http.audit_file
        self.tokens = Tokens(store)  # API tokens (collector/tokens.py), read per request
        self._audit_failures = StateLogger(log)
        self.oidc: Oidc | None = None
        if http.oidc is not None:  # registers its session recheck
            from collector.oidc import Oidc

            self.oidc = Oidc(http.oidc, self)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/whoami", self.guard("viewer", self.whoami))
        router.add_post("/login", self.login)
        router.add_post("/logout", self.guard("viewer", self.logout))
        router.add_get("/login/methods", self.login_methods)
        if self.oidc is not None:
            self.oidc.routes(router)

    def close(self) -> None:
        self.hashing.close()
        if self.directory is not None:
            self.directory.close()

    def counters(self) -> dict[str, float]:
        return {
            "api_unauthorized": self.unauthorized,
            "api_forbidden": self.forbidden,
            "api_logins_failed": self.logins_failed,
            "api_logins_refused": self.limiter.refused,
            "api_logins_busy": self.hashing.refused,
            "api_password_hashes_upgraded": self.users.upgraded if self.users else 0,
            "api_tokens_refused": self.tokens.refused,
            **(self.oidc.counters() if self.oidc else {}),
            **(self.directory.counters() if self.directory else {}),
        }

    async def authenticate(self, request: web.Request) -> tuple[Principal, Session | None] | None:
        """The caller: a bearer token, else a console session cookie (not logged out on any
        replica: 503 when the store cannot say)."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and looks_like_token(token.strip()):
                try:  # the store's row, so that a revocation holds on every replica
                    principal = await self.tokens.authenticate(token.strip())
                except Exception as exc:
                    raise self._store_unavailable("token check", exc) from None
                return None if principal is None else (principal, None)
            if scheme.lower() != "bearer" or not token.strip() or self.users is None:
                return None
            user = self.users.by_token(token.strip())
            return None if user is None else (user.principal(), None)
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            return None
        try:
            session = await self.sessions.verify(cookie)
        except Exception as exc:
            raise self._store_unavailable("session check", exc) from None
        return None if session is None else (session.principal, session)

    def guard(self, role: Role, handler: Handler) -> Handler:
        """`handler` for callers of at least `role`: 401 for no caller, 403 below it (or
        an unsafe method without the session's CSRF token)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            found = await self.authenticate(request)
            if found is None:
                self.unauthorized += 1
                error = ApiError(401, "missing or invalid bearer token or session")
                error.headers["WWW-Authenticate"] = 'Bearer realm="enoc"'
                raise error
            user, session = found
            if session is not None and request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                expected = session.csrf(self.sessions.key).encode()
                if not hmac.compare_digest(sent.encode(errors="replace"), expected):
                    self.forbidden += 1
                    raise ApiError(403, f"missing or wrong {CSRF_HEADER} header")
            if not user.may(role):
                self.forbidden += 1
                raise ApiError(403, f"{user.name} is a {user.role}; this needs {role}")
            request[USER_KEY] = user
            if session is not None:
                request[SESSION_KEY] = session
            return await handler(request)

        return guarded

    def audit(
        self, request: web.Request, who: Principal | str, action: str, **details: Any
    ) -> None:
        """Who did what, when, from where: the log, and the audit file when configured.
        `who` is the caller, or the name a failed login gave; `identity` names the
        account behind the action (`local:alice`, `ldap:<DN>`, `oidc:<issuer>|<sub>`)."""
        actor = who if isinstance(who, str) else who.name
        identity = "" if isinstance(who, str) else who.identity
        record = {
            "at": time.time(),
            "actor": actor,
            "identity": identity,
            "action": action,
            "remote": request.remote or "",
            **details,
        }
        audit_log.info("audit %s by %s", action, actor, identity=identity, **details)
        if self.audit_file is None:
            return
        try:
            with self.audit_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            self._audit_failures.failed("audit file", exc, path=str(self.audit_file))
        else:
            self._audit_failures.ok("audit file")

    async def login(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise ApiError(415, 'login takes a JSON body: {"name": ..., "password": ...}')
        body = await json_body(request, required=True)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name:
            raise bad_request('"name" and "password" are required strings')
        # What the store and the hash take: a lone surrogate (JSON's "\ud800") cannot be
        # stored as UTF-8, and the limiter's row would read as a store outage.
        if not (storable(name) and storable(password)):
            raise bad_request('"name" and "password" must be text without NUL or lone surrogates')
        if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
            raise bad_request(
                f'"name" takes at most {MAX_NAME} characters, "password" {MAX_PASSWORD}'
            )
        key = self.limiter.pair(request.remote or "", name)
        directory = self.directory
        if directory is not None and not directory.takes(name, self.users):
            directory = None
        # the place is taken before the attempt is counted: a login refused for load
        # is not a failed login
        try:
            with (self.hashing if directory is None else directory.gate).place():
                principal, password_hash = await self._check_password(
                    key, name, password, directory
                )
        except HashingBusy as exc:
            raise retry_later(503, str(exc), 1) from None
        except DirectoryUnavailable:
            raise retry_later(
                503, "the directory cannot answer: try again later", RETRY_AFTER
            ) from None
        except LoginRefused as exc:
            # Told as a wrong password: a different answer would tell a guesser that the
            # name exists (and is locked); the log and the audit say why.
            self.logins_failed += 1
            log.warning("%s", exc, user=name, code=exc.code)
            why = f"directory refused: {exc.code} {exc.description}"
            self.audit(request, name, "login_failed", reason=why)
            raise ApiError(401, "wrong name or password") from None
        except NotGranted:
            self.logins_failed += 1
            self.audit(request, name, "login_failed", reason="no group grants access")
            raise ApiError(401, "not in any group that grants access") from None
        if principal is None:
            self.logins_failed += 1
            self.audit(request, name, "login_failed")
            raise ApiError(401, "wrong name or password")
        try:
            await self.limiter.succeeded(key)
        except Exception as exc:
            raise self._store_unavailable("login limit", exc) from None
        try:
            cookie, session = await self.sessions.issue(principal, password_hash=password_hash)
        except Exception as exc:
            raise self._store_unavailable("login", exc) from None
        response = web.json_response(
            {
                **_whoami(session.principal),
                "csrf": session.csrf(self.sessions.key),
                "expires": session.expires,
            }
        )
        self.set_session_cookie(request, response, cookie)
        self.audit(request, session.principal, "login")
        return response

    def set_session_cookie(
        self, request: web.Request, response: web.StreamResponse, cookie: str
    ) -> None:
        """The console's session cookie on `response`, whatever way the login came."""
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.sessions.lifetime),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=_https(request),
        )

    async def login_methods(self, request: web.Request) -> web.Response:
        """How the console offers to log in (public: it asks before anyone has)."""
        password = self.users is not None or self.directory is not None
        return web.json_response({"password": password, "oidc": bool(self.oidc)})

    async def _check_password(
        self, key: str, name: str, password: str, directory: Directory | None
    ) -> tuple[Principal | None, str]:
        """Who the password is of (None: nobody), with the users-file hash it was checked
        against ("" for the directory's)."""
        try:  # counted as a failure, on every replica, unless the password is right
            wait = await self.limiter.attempt(key)
        except Exception as exc:
            raise self._store_unavailable("login limit", exc) from None
        if wait > 0:
            seconds = math.ceil(wait)
            raise retry_later(429, f"too many failed logins: try again in {seconds} s", seconds)
        if directory is not None:
            return await directory.login(name, password), ""
        if self.users is None:
            return None, ""
        user = await self.hashing.run(self.users.by_password, name, password)
        return (None, "") if user is None else (user.principal(), user.password_hash)

    async def logout(self, request: web.Request) -> web.Response:
        session = request.get(SESSION_KEY)
        if session is not None:
            try:
                await self.sessions.revoke(session)
            except Exception as exc:
                raise self._store_unavailable("logout", exc) from None
        self.audit(request, request[USER_KEY], "logout")
        out: dict[str, Any] = {"logged_out": True}
        if session is not None and self.oidc is not None and session.principal.source == "oidc":
            url = await self.oidc.end_session_url(session.principal)
            if url is not None:  # the console sends the browser there: out of the IdP too
                out["end_session_url"] = url
        response = web.json_response(out)
        response.del_cookie(COOKIE, path="/")
        return response

    async def whoami(self, request: web.Request) -> web.Response:
        out = _whoami(request[USER_KEY])
        session = request.get(SESSION_KEY)
        if session is not None:  # the console reloaded: it needs its CSRF token again
            out["csrf"] = session.csrf(self.sessions.key)
            out["expires"] = session.expires
        return web.json_response(out)

    async def session_lasts(self, request: web.Request) -> Principal | None:
        """Who a stream goes on for (its role and scope as its session's last check, or
        its token's row, or the users file found them), or None to end it: after a
        logout or a token's revocation on any replica, past the cookie's or token's
        expiry, once its user left the users file. A store that cannot answer now is no
        reason to cut a console off: the next check decides."""
        try:
            found = await self.authenticate(request)
        except ApiError:  # the store is down
            return request[USER_KEY]
        return None if found is None else found[0]


def _https(request: web.Request) -> bool:
    """Whether the browser talks HTTPS to us (directly or through a TLS proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def _whoami(principal: Principal) -> dict[str, Any]:
    """Who the console shows as logged in, with the scope it hides the rest by."""
    return {
        "name": principal.name,
        "role": principal.role,
        "scope": principal.scope.as_dict(),
        "identity": principal.identity,
    }
