"""Single sign-on for the console: OpenID Connect's authorisation code flow with PKCE.

`GET /login/oidc` sends the browser to the provider (IdP) with a fresh `state`,
`nonce` and PKCE (S256) verifier, kept in a short-lived cookie encrypted and
signed under a key derived from the session key (Fernet), SameSite=Lax so that
the IdP's redirect back carries it. `GET /login/oidc/callback` checks the state,
exchanges the code, validates the ID token (signature against the IdP's JWKS,
fetched again once for a key id it does not hold; iss, aud, azp, exp, iat with
a minute's leeway, nonce), maps the groups claim to the first configured
`Grant` (collector/access.py) and opens a console session like a password login.

Discovery (`<issuer>/.well-known/openid-configuration`) happens at the first
login and again hourly; an IdP that cannot be reached answers 503 for the logins
until it can, with backoff between attempts, and never stops the collector.

An identity stays confirmed by the IdP: its refresh and ID tokens are kept in
the store (`oidc_tokens`, encrypted under the session key, one row per identity),
and each `http.session_recheck` the session's recheck (collector/session.py)
refreshes them and maps the groups again (from the new ID token, else from
userinfo). A refresh the IdP refuses, or groups that no longer map to a role,
end the session on every replica. An IdP that issues no refresh token cannot
confirm anything later: such a session ends when its ID token expires.

Logout revokes the session and answers the IdP's `end_session_endpoint`
(RP-initiated logout with `id_token_hint`, or `client_id`, and
`post_logout_redirect_uri`) for the console to follow.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import random
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.fernet import Fernet, InvalidToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from collector.access import Principal, first_grant
from collector.config import OidcConfig
from collector.store import Tx
from enoc.logs import StateLogger, get_logger

if TYPE_CHECKING:
    from collector.api_access import Access

log = get_logger("enoc.collector.oidc")

STATE_COOKIE = "enoc_oidc"
LEEWAY = 60  # seconds of clock difference allowed with the IdP
METADATA_FRESH = 3600.0  # discovery and JWKS are fetched again after this long
JWKS_REFETCH_MIN = 10.0  # an unknown key id fetches the JWKS at most this often
BACKOFF_MAX = 60.0
REFUSED_SETTLE = 1.0  # a refused refresh looks again after this long before ending
# Asymmetric algorithms only: an HS256 token "signed" with a public key is refused.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
MAX_ERROR_TEXT = 200  # of an IdP's error description shown on the page


class OidcError(Exception):
    """A login that cannot go on: the status, the page's text, the counter it counts in."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # the `kind` label of api_oidc_logins_failed


class IdTokenInvalid(Exception):
    """An ID token that fails a check; the message names the check, never the token."""


class IdpUnavailable(Exception):
    pass


class Refused(Exception):
    """The IdP answered a token request with an OAuth error (invalid_grant...)."""


def validate_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
) -> dict[str, Any]:
    """The claims of an ID token signed by one of `keys`, for `client_id` from `issuer`,
    current (a minute's leeway) and carrying `nonce` when one is given."""
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except InvalidKeyIdError:
        raise
    except (JoseError, ValueError) as exc:
        raise IdTokenInvalid(f"bad signature or form: {type(exc).__name__}") from None
    claims: dict[str, Any] = dict(decoded.claims)
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    try:
        jwt.JWTClaimsRegistry(now=int(now), leeway=LEEWAY, **options).validate(claims)
    except JoseError as exc:
        raise IdTokenInvalid(str(exc) or type(exc).__name__) from None
    audience = claims["aud"]
    # several audiences: OIDC Core 3.1.3.7 wants us named as the authorised party
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise IdTokenInvalid(f"azp is not {client_id} in a token for several audiences")
    return claims


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested claims (Keycloak's
    `realm_access.roles`) when no claim has the whole name."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def groups_of(claims: Mapping[str, Any], path: str) -> list[str]:
    value = claim(claims, path)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


@dataclass
class Provider:
    """What discovery found: the IdP's endpoints and its signing keys."""

    metadata: dict[str, Any]
    keys: KeySet
    fetched: float
    keys_fetched: float

    @property
    def issuer(self) -> str:
        return str(self.metadata["issuer"])

    def endpoint(self, name: str) -> str | None:
        value = self.metadata.get(name)
        return value if isinstance(value, str) and value else None


class Oidc:
    """The console's OIDC login, logout and identity re-check, over `access`'s sessions."""

    def __init__(self, config: OidcConfig, access: Access) -> None:
        self.config = config
        self.access = access
        self.sessions = access.sessions
        key = hmac.new(access.sessions.key, b"enoc oidc", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._client = ClientAuth(
            config.client_id,
            config.client_secret.reveal() if config.client_secret else None,
            "client_secret_basic" if config.client_secret else "none",
        )
        self._http: aiohttp.ClientSession | None = None
        self._provider: Provider | None = None
        self._lock = asyncio.Lock()
        self._refreshing: dict[str, asyncio.Lock] = {}  # by identity (as many as log in)
        self._failures = 0
        self._next_try = 0.0
        self._idp = StateLogger(log)
        self.logins = 0
        self.failed: dict[str, int] = {}  # by reason
        self.idp_errors = 0  # failed discoveries
        access.sessions.rechecks["oidc"] = self.recheck

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/login/oidc", self.start)
        router.add_get("/login/oidc/callback", self.callback)

    def counters(self) -> dict[str, float]:
        return {
            "api_oidc_logins": self.logins,
            "api_oidc_idp_errors": self.idp_errors,
            **{f"api_oidc_logins_failed.{k}": v for k, v in self.failed.items()},
        }

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------ the IdP

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            context = ssl.create_default_context(
                cafile=str(self.config.ca_file) if self.config.ca_file else None
            )
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=float(self.config.timeout)),
                connector=aiohttp.TCPConnector(ssl=context),
                headers={"Accept": "application/json"},
            )
        return self._http

    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self._session().get(url, **kwargs) as response:
            if response.status != 200:
                raise IdpUnavailable(f"GET {url}: HTTP {response.status}")
            body = await response.json(content_type=None)
        if not isinstance(body, dict):
            raise IdpUnavailable(f"GET {url}: not a JSON object")
        return body

    async def provider(self) -> Provider:
        """The IdP's discovered metadata and keys; raises IdpUnavailable while it cannot
        be reached (a stale discovery goes on serving meanwhile)."""
        now = time.monotonic()
        known = self._provider
        if known is not None and now - known.fetched < METADATA_FRESH:
            return known
        async with self._lock:
            if self._provider is not None and now - self._provider.fetched < METADATA_FRESH:
                return self._provider
            if now < self._next_try:
                if self._provider is not None:
                    return self._provider
                raise IdpUnavailable("the identity provider could not be reached: retrying")
            try:
                self._provider = await self._discover()
            except (aiohttp.ClientError, TimeoutError, IdpUnavailable, ValueError) as exc:
                self._failures += 1
                self.idp_errors += 1
                wait = min(BACKOFF_MAX, 2.0 ** min(self._failures, 8))
                self._next_try = time.monotonic() + wait * random.uniform(0.5, 1.0)
                self._idp.failed("the OIDC identity provider", exc, issuer=self.config.issuer)
                if self._provider is not None:
                    return self._provider
                raise IdpUnavailable(str(exc)) from None
            self._failures = 0
            self._idp.ok("the OIDC identity provider")
            return self._provider

    async def _discover(self) -> Provider:
        issuer = self.config.issuer.rstrip("/")
        metadata = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        if str(metadata.get("issuer", "")).rstrip("/") != issuer:
            raise IdpUnavailable(
                f"discovery names issuer {metadata.get('issuer')!r}, not {self.config.issuer!r}"
            )
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(name), str):
                raise IdpUnavailable(f"discovery has no {name}")
        keys = await self._keys(metadata["jwks_uri"])
        now = time.monotonic()
        return Provider(metadata, keys, now, now)

    async def _keys(self, url: str) -> KeySet:
        return KeySet.import_key_set(await self._get_json(url))  # type: ignore[arg-type]

    async def _claims(self, token: str, nonce: str | None) -> dict[str, Any]:
        """A validated ID token's claims; an unknown key id fetches the JWKS again once
        (the IdP rotated its keys), at most every JWKS_REFETCH_MIN."""
        provider = await self.provider()

        def check() -> dict[str, Any]:
            return validate_id_token(
                token,
                provider.keys,
                issuer=provider.issuer,
                client_id=self.config.client_id,
                nonce=nonce,
                now=time.time(),
            )

        try:
            return check()
        except InvalidKeyIdError:
            pass
        if time.monotonic() - provider.keys_fetched < JWKS_REFETCH_MIN:
            raise IdTokenInvalid("signed with a key the identity provider does not publish")
        try:
            jwks_uri = str(provider.metadata["jwks_uri"])
            provider.keys, provider.keys_fetched = await self._keys(jwks_uri), time.monotonic()
        except (aiohttp.ClientError, TimeoutError, IdpUnavailable, ValueError) as exc:
            raise IdpUnavailable(f"fetching the JWKS: {exc}") from None
        try:
            return check()
        except InvalidKeyIdError:
            raise IdTokenInvalid(
                "signed with a key the identity provider does not publish"
            ) from None

    async def _token(self, provider: Provider, params: dict[str, str]) -> dict[str, Any]:
        """A token endpoint answer; Refused for an OAuth error, IdpUnavailable otherwise."""
        url = str(provider.metadata["token_endpoint"])
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        _, headers, body = self._client.prepare("POST", url, headers, urlencode(params))
        try:
            async with self._session().post(url, data=body, headers=headers) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdpUnavailable(f"token endpoint: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, dict):
            raise IdpUnavailable(f"token endpoint: HTTP {status}, not a JSON object")
        if status != 200 or "error" in answer:
            error = str(answer.get("error", f"HTTP {status}"))[:MAX_ERROR_TEXT]
            if status in (400, 401):
                raise Refused(error)
            raise IdpUnavailable(f"token endpoint: HTTP {status} {error}")
        return answer

    def principal(self, claims: Mapping[str, Any]) -> Principal | None:
        """The console's principal for an ID token's (or userinfo's) claims; None when
        no group it holds maps to a role."""
        grant = first_grant(self.config.grants, groups_of(claims, self.config.groups_claim))
        if grant is None:
            return None
        name = claim(claims, self.config.name_claim) or claims.get("email") or claims["sub"]
        return Principal.granted(str(name), grant, "oidc", f"{claims['iss']}|{claims['sub']}")

    # ------------------------------------------------------------ login

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Send the browser to the IdP's authorisation endpoint."""
        try:
            provider = await self.provider()
        except IdpUnavailable:
            return self._failed(request, OidcError(503, _IDP_DOWN, "idp_unreachable"))
        state, nonce, verifier = (secrets.token_urlsafe(24), generate_token(32), generate_token(64))
        url = prepare_grant_uri(
            str(provider.metadata["authorization_endpoint"]),
            self.config.client_id,
            "code",
            self.config.redirect_url,
            self.config.scopes,
            state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        kept = json.dumps({"state": state, "nonce": nonce, "verifier": verifier})
        response = web.Response(status=302, headers={"Location": str(url)})
        response.set_cookie(
            STATE_COOKIE,
            self._fernet.encrypt(kept.encode()).decode(),
            max_age=int(self.config.login_timeout),
            path="/login/oidc",
            httponly=True,
            samesite="Lax",  # sent on the IdP's top-level redirect back to us
            secure=self.config.redirect_url.startswith("https://"),
        )
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        try:
            principal, tokens = await self._complete(request)
        except OidcError as exc:
            return self._failed(request, exc)
        try:
            cookie, session = await self.sessions.issue(principal)
            await self._keep(principal.identity, tokens)
        except Exception as exc:
            raise self.access.store_unavailable("login", exc) from None
        self.logins += 1
        response = web.Response(status=302, headers={"Location": "/"})
        self.access.set_session_cookie(request, response, cookie)
        response.del_cookie(STATE_COOKIE, path="/login/oidc")
        self.access.audit(request, session.principal, "login", via="oidc")
        return response

    async def _complete(self, request: web.Request) -> tuple[Principal, dict[str, Any]]:
        """The checked principal of a callback and the tokens that confirm it later."""
        kept = self._kept(request.cookies.get(STATE_COOKIE, ""))
        query = request.query
        # bytes: compare_digest refuses a str that is not ASCII
        same_state = hmac.compare_digest(query.get("state", "").encode(), kept["state"].encode())
        if "error" in query and (same_state or "state" not in query):
            error = query.get("error", "")[:MAX_ERROR_TEXT]
            detail = query.get("error_description", "")[:MAX_ERROR_TEXT]
            raise OidcError(
                403, f"the identity provider refused the login: {error} {detail}", "idp_refused"
            )
        if not same_state:
            raise OidcError(400, "the login's state does not match: start the login again", "state")
        code = query.get("code", "")
        if not code:
            raise OidcError(
                400, "the identity provider sent no code: start the login again", "code"
            )
        try:
            provider = await self.provider()
            tokens = await self._token(
                provider,
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.config.redirect_url,
                    "code_verifier": kept["verifier"],
                },
            )
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise IdTokenInvalid("the token endpoint answered no ID token")
            claims = await self._claims(id_token, kept["nonce"])
        except IdpUnavailable:
            raise OidcError(502, _IDP_DOWN, "idp_unreachable") from None
        except Refused as exc:
            raise OidcError(401, f"the identity provider refused the code: {exc}", "code") from None
        except IdTokenInvalid as exc:
            raise OidcError(401, f"the ID token is not valid: {exc}", "id_token") from None
        principal = self.principal(claims)
        if principal is None:
            held = ", ".join(groups_of(claims, self.config.groups_claim)) or "none"
            raise OidcError(
                403,
                f"{claim(claims, self.config.name_claim) or claims['sub']} holds no group "
                f"that enoc maps to a role (groups: {held}): ask an enoc admin",
                "no_role",
            )
        return principal, {**tokens, "expires_at": float(claims["exp"])}

    def _kept(self, cookie: str) -> dict[str, str]:
        if not cookie:
            raise OidcError(
                400, "no login in progress here (cookies off?): start it again", "state"
            )
        try:
            raw = self._fernet.decrypt(cookie, ttl=int(self.config.login_timeout))
            kept = json.loads(raw)
        except (InvalidToken, ValueError):
            raise OidcError(
                400, "the login took too long or was altered: start it again", "state"
            ) from None
        if not isinstance(kept, dict) or not all(
            isinstance(kept.get(k), str) for k in ("state", "nonce", "verifier")
        ):
            raise OidcError(400, "the login took too long or was altered: start it again", "state")
        return kept

    def _failed(self, request: web.Request, error: OidcError) -> web.Response:
        """The page a failed login shows: the reason, never a token or the code."""
        self.failed[error.reason] = self.failed.get(error.reason, 0) + 1
        log.info("OIDC login failed: %s", error, status=error.status, remote=request.remote)
        self.access.audit(request, "", "login_failed", via="oidc", reason=str(error))
        page = (
            "<!doctype html><meta charset=utf-8><title>enoc: login failed</title>"
            f"<h1>Single sign-on failed</h1><p>{html.escape(str(error))}</p>"
            '<p><a href="/">Back to the console</a></p>'
        )
        response = web.Response(status=error.status, text=page, content_type="text/html")
        if error.status == 503:
            response.headers["Retry-After"] = "5"
        response.del_cookie(STATE_COOKIE, path="/login/oidc")
        return response

    # ------------------------------------------------------------ tokens kept

    async def _keep(self, identity: str, tokens: Mapping[str, Any]) -> None:
        """The identity's latest tokens, encrypted, for the re-check and the logout."""
        kept = {k: tokens[k] for k in ("refresh_token", "id_token", "expires_at") if k in tokens}
        sealed = self._fernet.encrypt(json.dumps(kept).encode()).decode()
        now = time.time()

        def apply(tx: Tx) -> None:
            _prune(tx)  # sessions that expired without a logout leave their tokens behind
            # one statement: two replicas keeping one identity's tokens at once both succeed
            tx.execute(
                "INSERT INTO oidc_tokens (identity, tokens, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET tokens = excluded.tokens, "
                "updated = excluded.updated",
                (identity, sealed, now),
            )

        await self.sessions.store.run(apply)

    async def _kept_tokens(self, identity: str) -> tuple[str, dict[str, Any]] | None:
        def read(tx: Tx) -> str | None:
            row = tx.one("SELECT tokens FROM oidc_tokens WHERE identity = ?", (identity,))
            return None if row is None else str(row[0])

        sealed = await self.sessions.store.read(read)
        if sealed is None:
            return None
        try:
            return sealed, dict(json.loads(self._fernet.decrypt(sealed)))
        except (InvalidToken, ValueError):  # another session key: nothing to confirm with
            return None

    async def recheck(self, principal: Principal) -> Principal | None:
        """`principal` as the IdP sees it now (Sessions' recheck for "oidc")."""
        # one refresh of an identity at a time here: an IdP that rotates refresh tokens
        # refuses the second use of one, which would end its other sessions
        async with self._refreshing.setdefault(principal.identity, asyncio.Lock()):
            return await self._recheck(principal)

    async def _recheck(self, principal: Principal) -> Principal | None:
        found = await self._kept_tokens(principal.identity)
        if found is None:
            return None
        sealed, tokens = found
        refresh = tokens.get("refresh_token")
        if not isinstance(refresh, str):  # nothing to ask the IdP with: the ID token's life
            return principal if time.time() < float(tokens.get("expires_at", 0)) else None
        provider = await self.provider()  # IdpUnavailable: Sessions keeps it a while
        try:
            answer = await self._token(
                provider, {"grant_type": "refresh_token", "refresh_token": refresh}
            )
        except Refused:
            # Another replica may have used it first and not yet kept the new one.
            await asyncio.sleep(REFUSED_SETTLE)
            again = await self._kept_tokens(principal.identity)
            if again is not None and again[0] != sealed:
                return principal  # another replica refreshed it meanwhile: it confirmed
            return None
        id_token = answer.get("id_token")
        if isinstance(id_token, str):
            try:
                claims = await self._claims(id_token, None)
            except IdTokenInvalid as exc:
                raise IdpUnavailable(f"a refreshed ID token is not valid: {exc}") from None
        else:
            claims = await self._userinfo(provider, str(answer.get("access_token", "")))
            claims["iss"] = provider.issuer
        if f"{claims['iss']}|{claims.get('sub')}" != principal.subject:
            raise IdpUnavailable("the refreshed identity is another subject")
        current = self.principal(claims)
        if current is None:
            return None
        kept = {**tokens, **answer, "refresh_token": answer.get("refresh_token", refresh)}
        if isinstance(id_token, str):
            kept["expires_at"] = float(claims["exp"])
        else:
            kept["id_token"] = tokens.get("id_token")
        await self._keep(principal.identity, kept)
        return current

    async def _userinfo(self, provider: Provider, access_token: str) -> dict[str, Any]:
        url = provider.endpoint("userinfo_endpoint")
        if url is None or not access_token:
            raise IdpUnavailable("no ID token on refresh and no userinfo to ask")
        try:
            claims = await self._get_json(url, headers={"Authorization": f"Bearer {access_token}"})
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdpUnavailable(f"userinfo: {type(exc).__name__}: {exc}") from None
        if not isinstance(claims.get("sub"), str):
            raise IdpUnavailable("userinfo has no sub")
        return claims

    # ------------------------------------------------------------ logout

    async def end_session_url(self, principal: Principal) -> str | None:
        """Where the console sends the browser to log out at the IdP too (RP-initiated
        logout), when the IdP offers it; the identity's kept tokens go once it has no
        session left."""
        hint = None
        try:
            found = await self._kept_tokens(principal.identity)
            hint = None if found is None else found[1].get("id_token")
            await self.sessions.store.run(_prune)
        except Exception as exc:  # the logout itself is done: this is tidying
            log.warning("OIDC logout: the store cannot answer: %s", exc)
        provider = self._provider
        endpoint = None if provider is None else provider.endpoint("end_session_endpoint")
        if endpoint is None:
            return None
        after = self.config.post_logout_redirect_url or _origin(self.config.redirect_url) + "/"
        params = {"post_logout_redirect_uri": after, "client_id": self.config.client_id}
        if isinstance(hint, str):
            params["id_token_hint"] = hint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


_IDP_DOWN = "the identity provider cannot be reached now: try again shortly"


def _prune(tx: Tx) -> None:
    """Tokens of identities without a live session go."""
    tx.execute(
        "DELETE FROM oidc_tokens WHERE identity NOT IN "
        "(SELECT identity FROM sessions WHERE revoked = 0 AND expires >= ?)",
        (time.time(),),
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
