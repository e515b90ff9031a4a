"""`/api/v1/tokens`: an admin lists, makes and revokes API tokens (collector/tokens.py).

A token never reaches beyond the admin who makes it: its scope must be within the
admin's (`Scope.within`, sites placed in their RTCs by what the store knows), and
left out it is the admin's own. An admin sees and revokes only the tokens within
its scope; another's is a 404, as if it did not exist. The answer to a POST carries
the token's text, the only time it is shown.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from collector.access import ROLE_RANK, Principal, Role, Scope, ScopeConfig
from collector.api_access import USER_KEY, Access
from collector.api_input import ApiError, bad_request, json_body, storable
from collector.incidents.records import Records, read
from collector.tokens import DEFAULT_EXPIRY, TOKEN_ID_RE, TokenInfo, parse_expiry

_FIELDS = {"name", "role", "scope", "expires"}


class TokenApi:
    def __init__(self, access: Access) -> None:
        self.access = access
        self.tokens = access.tokens

    def routes(self, router: web.UrlDispatcher) -> None:
        guard = self.access.guard
        router.add_get("/api/v1/tokens", guard("admin", self.list))
        router.add_post("/api/v1/tokens", guard("admin", self.create))
        router.add_delete("/api/v1/tokens/{id}", guard("admin", self.revoke))

    async def _mine(self, caller: Principal, tokens: list[TokenInfo]) -> list[TokenInfo]:
        """The tokens within the caller's scope."""
        if caller.scope.everything:
            return tokens
        rtc_of = await read(self.tokens.store, Records.site_rtcs)
        return [t for t in tokens if t.scope.within(caller.scope, rtc_of)]

    async def list(self, request: web.Request) -> web.Response:
        tokens = await self._mine(request[USER_KEY], await self.tokens.list())
        return web.json_response({"tokens": [t.as_dict() for t in tokens]})

    async def create(self, request: web.Request) -> web.Response:
        caller = request[USER_KEY]
        body = await json_body(request, required=True)
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(unknown)}; known: {sorted(_FIELDS)}")
        name, role, expires = body.get("name"), body.get("role", "viewer"), body.get("expires")
        if not isinstance(name, str) or not name.strip():
            raise bad_request('"name" is required: what the token is for')
        if not storable(name):  # the store takes neither NUL nor a lone surrogate
            raise bad_request('"name" must be text without NUL or lone surrogates')
        if not isinstance(role, str) or role not in ROLE_RANK:
            raise bad_request(f'"role" must be one of {", ".join(ROLE_RANK)}, got {role!r}')
        if expires is not None and not isinstance(expires, str):
            raise bad_request('"expires" must be a duration like "90d", or "never"')
        expires_in = DEFAULT_EXPIRY if expires is None else parse_expiry(expires)
        scope = _scope(body.get("scope"), caller)
        if not scope.within(caller.scope, await read(self.tokens.store, Records.site_rtcs)):
            self.access.forbidden += 1
            raise ApiError(403, f"{caller.name} cannot make a token beyond its own scope")
        granted = cast("Role", role)  # one of ROLE_RANK's, checked above
        text, info = await self.tokens.create(name, granted, scope, caller.identity, expires_in)
        self.access.audit(request, caller, "token_create", **info.audited())
        return web.json_response({**info.as_dict(), "token": text}, status=201)

    async def revoke(self, request: web.Request) -> web.Response:
        caller = request[USER_KEY]
        token_id = request.match_info["id"]
        known = [t for t in await self._mine(caller, await self.tokens.list()) if t.id == token_id]
        if not TOKEN_ID_RE.fullmatch(token_id) or not known:
            raise ApiError(404, f"no token {token_id[:40]!r}")
        info = await self.tokens.revoke(token_id, caller.identity)
        assert info is not None  # tokens are revoked, never deleted
        self.access.audit(request, caller, "token_revoke", token=info.id, name=info.name)
        return web.json_response(info.as_dict())


def _scope(raw: Any, caller: Principal) -> Scope:
    """The body's `scope`: `{rtc: [...], site: [...]}`; left out or null, the caller's."""
    if raw is None:
        return caller.scope
    if not isinstance(raw, dict) or set(raw) - {"rtc", "site"}:
        raise bad_request('"scope" must be {"rtc": [...], "site": [...]}')
    rtc, site = raw.get("rtc", []), raw.get("site", [])
    if not isinstance(rtc, list) or not isinstance(site, list):
        raise bad_request('"scope.rtc" and "scope.site" must be lists of names')
    return Scope.of(ScopeConfig(rtc=rtc, site=site))  # ValueError (400) names what is wrong
