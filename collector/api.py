"""The collector's HTTP API (DESIGN: "Collector HTTP API") on aiohttp.

Every `/api/v1` route and `/metrics` need `Authorization: Bearer <token>`
(collector/auth.py): viewers read, operators also acknowledge, resolve,
comment and open maintenance windows inside their scope, admins manage any
window. A caller's scope (collector/access.py) filters every answer and the
stream; an incident or device outside it is a 404, as one that does not
exist (collector/api_scope.py has the windows' rules). Errors are JSON
`{"error": "..."}`: 401 without a valid token, 403 for a role too low, 400
for bad input (the message says what is wrong), 404, 409 for an action the
incident's state does not allow, 429 and 503 with Retry-After for limits (login
backoff, password checks at once, event streams at once).

`/healthz` answers anyone with its status code and `{"ok": ...}` only; the links'
details (their errors name internal hosts, and every link serves every region)
are for a logged-in caller without a scope.

`make_app` builds the application from the parts it serves, each under a typed
`web.AppKey`; the clients it opens for itself belong to its `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from collector import api_scope, availability
from collector.access import Principal, Scope
from collector.api_access import USER_KEY, Access, Handler
from collector.api_input import (
    ApiError,
    bad_request,
    int_param,
    json_body,
    path_id,
    retry_later,
    time_param,
)
from collector.api_tables import choice, seconds_param, table_response, time_range
from collector.api_tokens import TokenApi
from collector.auth import Users
from collector.config import CollectorConfig
from collector.exposition import prometheus_text
from collector.incidents import (
    Conflict,
    Maintenance,
    MaintenanceWindow,
    NotFound,
    Operators,
    Queries,
    trends,
)
from collector.model import SEVERITY_RANK, STATES, IncidentChange
from collector.partition import FORWARDED, Partition, ask_owner
from collector.recent import InfluxRecent, RecentValues
from collector.session import Sessions
from collector.store import Store, store_unavailable
from collector.stream import ChangeFeed, Hub, StreamEvent, resume
from enoc.config import Duration
from enoc.logs import StateLogger, get_logger
from enoc.wire import Capabilities

# What the application serves, set by `make_app`; handlers read them from `request.app`.
CONFIG_KEY = web.AppKey("config", CollectorConfig)
STORE_KEY = web.AppKey("store", Store)
QUERIES_KEY = web.AppKey("queries", Queries)
MAINTENANCE_KEY = web.AppKey("maintenance", Maintenance)
OPERATORS_KEY = web.AppKey("operators", Operators)
FEED_KEY = web.AppKey("feed", ChangeFeed)
HUB_KEY = web.AppKey("hub", Hub)
RECENT_KEY = web.AppKey("recent", RecentValues)  # this process's window of polled values
# hands an operator's change to the stream, notifiers and dashboards, as the engine's are
PUBLISH_KEY = web.AppKey[Callable[[list[IncidentChange]], Awaitable[None]]]("publish")
HEALTH_KEY = web.AppKey[Callable[[], dict[str, Any]]]("health")  # each link's state
COUNTERS_KEY = web.AppKey[Callable[[], dict[str, float]]]("counters")  # the collector's own
# by (site, agent): each device's capabilities, from the agent's latest online status
PARTITION_KEY = web.AppKey("partition", Partition)  # set where replicas split the sites
CAPABILITIES_KEY = web.AppKey[Mapping[tuple[str, str], Mapping[str, Capabilities]]]("capabilities")
RECENT_DB_KEY = web.AppKey("recent_db", InfluxRecent)  # set by `cleanup_ctx` when configured
SESSIONS_KEY = web.AppKey("sessions", Sessions)  # the console's, for the users file's watch

log = get_logger("enoc.collector.api")

STATIC = Path(__file__).with_name("static")
CONSOLE_FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}
SSE_HEARTBEAT = 15.0  # seconds between comment lines that keep proxies from closing the stream


def make_app(
    *,
    config: CollectorConfig,
    users: Users | None,
    store: Store,
    queries: Queries,
    maintenance: Maintenance,
    operators: Operators,
    publish: Callable[[list[IncidentChange]], Awaitable[None]],
    feed: ChangeFeed,
    hub: Hub,
    recent: RecentValues,
    health: Callable[[], dict[str, Any]],
    counters: Callable[[], dict[str, float]],
    capabilities: Mapping[tuple[str, str], Mapping[str, Capabilities]] | None = None,
    partition: Partition | None = None,
) -> web.Application:
    """The HTTP API and console over the given parts (nothing else of the collector)."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[QUERIES_KEY] = queries
    app[MAINTENANCE_KEY] = maintenance
    app[OPERATORS_KEY] = operators
    app[PUBLISH_KEY] = publish
    app[FEED_KEY] = feed
    app[HUB_KEY] = hub
    app[RECENT_KEY] = recent
    app[HEALTH_KEY] = health
    app[COUNTERS_KEY] = counters
    app[CAPABILITIES_KEY] = capabilities if capabilities is not None else {}
    if partition is not None:
        app[PARTITION_KEY] = partition
    Api(app, users).routes(app)
    return app


class Api:
    def __init__(self, app: web.Application, users: Users | None) -> None:
        self.hub = app[HUB_KEY]
        self.store = app[STORE_KEY]
        self.requests = 0
        http = app[CONFIG_KEY].http
        self.access = Access(http, users, self.store, self._store_unavailable)
        app[SESSIONS_KEY] = self.access.sessions
        self._role = self.access.guard
        self.stream_max_per_user = http.stream_max_clients_per_user
        self.stream_max = http.stream_max_clients
        self.streams: dict[str, int] = {}  # open event streams by identity
        self.streams_refused = 0
        self._store_failing = StateLogger(log)

    async def _clients(self, app: web.Application) -> AsyncIterator[None]:
        """The clients the API holds open: the password checks' threads, and the device
        page's InfluxDB reader where the recent values come from InfluxDB."""
        config = app[CONFIG_KEY]
        if config.recent.source == "influxdb" and config.influxdb is not None:
            app[RECENT_DB_KEY] = InfluxRecent(config.influxdb, config.recent)
        yield
        self.access.close()
        if self.access.oidc is not None:
            await self.access.oidc.close()
        if RECENT_DB_KEY in app:
            await app[RECENT_DB_KEY].close()

    # ---------------------------------------------------------------- app

    def routes(self, app: web.Application) -> None:
        app.middlewares.extend([self._errors, self._headers])
        app.cleanup_ctx.append(self._clients)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self._role("viewer", self.metrics))
        r.add_get("/api/v1/incidents", self._role("viewer", self.list_incidents))
        r.add_get("/api/v1/incidents/{id}", self._role("viewer", self.get_incident))
        for action in ("ack", "resolve", "comment"):
            r.add_post(
                f"/api/v1/incidents/{{id}}/{action}",
                self._role("operator", self._action(action)),
            )
        r.add_get("/api/v1/sites", self._role("viewer", self.sites))
        r.add_get("/api/v1/devices", self._role("viewer", self.devices))
        r.add_get("/api/v1/devices/{site}/{device}", self._role("viewer", self.device))
        r.add_get("/api/v1/agents", self._role("viewer", self.agents))
        r.add_get("/api/v1/stats", self._role("viewer", self.stats))
        r.add_get("/api/v1/availability", self._role("viewer", self.availability))
        r.add_get("/api/v1/stats/trend", self._role("viewer", self.stats_trend))
        r.add_get("/api/v1/stats/open", self._role("viewer", self.stats_open))
        r.add_get("/api/v1/stream", self._role("viewer", self.stream))
        r.add_get("/api/v1/maintenance", self._role("viewer", self.list_windows))
        r.add_post("/api/v1/maintenance", self._role("operator", self.add_window))
        r.add_delete("/api/v1/maintenance/{id}", self._role("operator", self.delete_window))
        self.access.routes(r)
        TokenApi(self.access).routes(r)
        r.add_get("/", self.console)
        r.add_get("/console/{name:.+}", self.console_file)

    def _store_unavailable(self, what: str, exc: Exception) -> ApiError:
        """Without the store (sessions, login limits, incidents) a request is refused with
        503 and Retry-After, logged once per outage, not once per request."""
        self._store_failing.failed("the incident store, for the API", f"{what}: {exc}")
        error = ApiError(503, "the incident store is unavailable: try again shortly")
        error.headers["Retry-After"] = "5"
        return error

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if isinstance(exc, ApiError) or exc.status < 400:
                raise
            raise ApiError(exc.status, exc.reason) from None
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            raise self._store_unavailable(request.path, exc) from None
        if self._store_failing.failing and self.store.healthy:
            self._store_failing.ok("the incident store, for the API")
        return response

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        if not response.prepared:
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    # ---------------------------------------------------------------- console and login

    async def console(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def console_file(self, request: web.Request) -> web.FileResponse:
        """One of the console's own files, by its name only: nothing else on disk is
        looked up (aiohttp's static route asked the file system for any name, and one
        too long for it answered 500)."""
        path = CONSOLE_FILES.get(request.match_info["name"])
        if path is None:
            raise ApiError(404, "Not Found")
        return web.FileResponse(path)

    # ---------------------------------------------------------------- health and metrics

    async def healthz(self, request: web.Request) -> web.Response:
        """200 or 503 to anyone (load balancers call it without a login), with
        `{"ok": ...}`; each link's state and last error only to a logged-in caller
        without a scope: the links serve every region, none is a scope's own."""
        health = request.app[HEALTH_KEY]()
        ok = all(part["ok"] for part in health.values())
        status = 200 if ok else 503
        try:
            viewer = await self.access.authenticate(request)
        except ApiError:  # the store cannot check a cookie: the caller is not known
            viewer = None
        if viewer is None or not viewer[0].scope.everything:
            return web.json_response({"ok": ok}, status=status)
        return web.json_response(health, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        user = request[USER_KEY]
        if not user.scope.everything:  # its counters and gauges sum every region
            self.access.forbidden += 1
            raise ApiError(403, f"{user.name} is limited to a scope; /metrics covers every one")
        counters = dict(request.app[COUNTERS_KEY]())
        feed = request.app[FEED_KEY]
        counters.update(
            {
                "stream_last_id": self.hub.last_id,
                "stream_feed_reads": feed.reads,
                "stream_feed_listening": int(feed.listening),
                "stream_changes_pruned": feed.pruned,
                "api_requests": self.requests,
                **self.access.counters(),
                "stream_clients_refused": self.streams_refused,
                "stream_clients": self.hub.clients,
                "stream_events": self.hub.published,
                "stream_dropped_clients": self.hub.dropped_clients,
            }
        )
        # The counters are what an outage is diagnosed with: a store that cannot answer
        # leaves out the open-incident gauges and says so, it does not fail the scrape.
        open_counts: dict[str, int] | None = None
        try:
            open_counts = await request.app[QUERIES_KEY].open_counts()
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            self._store_failing.failed("the incident store, for the API", f"/metrics: {exc}")
        counters["store_up"] = int(open_counts is not None)
        return web.Response(
            text=prometheus_text(counters, open_counts),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    # ---------------------------------------------------------------- incidents

    async def list_incidents(self, request: web.Request) -> web.Response:
        q = request.query
        state = q.get("state", "")
        if state and state not in (*STATES, "active"):
            raise bad_request(f"state must be one of {', '.join((*STATES, 'active'))}")
        severity = q.get("severity", "")
        if severity and severity not in SEVERITY_RANK:
            raise bad_request(f"severity must be one of {', '.join(SEVERITY_RANK)}")
        limit = int_param(q.get("limit", "500"), "limit", 1, 5000)
        incidents = await request.app[QUERIES_KEY].incidents(
            state=state,
            site=q.get("site", ""),
            severity=severity,
            rtc=q.get("rtc", ""),
            limit=limit,
            scope=_scope(request),
        )
        return web.json_response({"incidents": [i.as_dict() for i in incidents]})

    async def get_incident(self, request: web.Request) -> web.Response:
        incident = await request.app[QUERIES_KEY].incident(path_id(request), _scope(request))
        return web.json_response(incident.as_dict(timeline=True))

    def _action(self, action: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            incident_id = path_id(request)
            body = await json_body(request, required=action == "comment")
            text = body.get("text", "")
            if not isinstance(text, str):
                raise bad_request('"text" must be a string')
            if len(text) > 4000:
                raise bad_request('"text" must be at most 4000 characters')
            user = request[USER_KEY]
            change = await request.app[OPERATORS_KEY].act(
                incident_id, action, user.name, text, user.scope, user.identity
            )
            self.access.audit(request, user, action, incident=incident_id, text=text)
            await request.app[PUBLISH_KEY]([change])
            return web.json_response(change.incident.as_dict())

        return handler

    # ---------------------------------------------------------------- fleet

    async def sites(self, request: web.Request) -> web.Response:
        sites = await request.app[QUERIES_KEY].sites(_scope(request))
        return web.json_response({"sites": sites})

    async def devices(self, request: web.Request) -> web.Response:
        site = request.query.get("site", "")
        devices = await request.app[QUERIES_KEY].devices(site, _scope(request))
        return web.json_response({"devices": devices})

    async def device(self, request: web.Request) -> web.Response:
        site, name = request.match_info["site"], request.match_info["device"]
        owner = request.app[PARTITION_KEY].owner_url(site) if PARTITION_KEY in request.app else None
        if owner is not None and FORWARDED not in request.headers:  # its window is there
            answer = await ask_owner(request, owner)
            if answer is not None:
                return answer
        queries = request.app[QUERIES_KEY]
        scope = _scope(request)
        known = [d for d in await queries.devices(site) if d["device"] == name]
        if not scope.everything:  # outside the scope is as unknown: its being there not shown
            if known:
                inside = scope.covers(known[0]["rtc"], site)
            else:
                inside = scope.covers_site(site, await queries.site_rtcs())
            if not inside:
                raise NotFound(f"no device {name} at site {site}")
        recent = None
        if RECENT_DB_KEY in request.app:  # every replica's polls
            recent = await request.app[RECENT_DB_KEY].device(site, name)
            if recent is not None and known:
                recent["agent"] = known[0]["agent"]
        if recent is None:
            recent = request.app[RECENT_KEY].device(site, name)
        if not known and recent is None:
            raise NotFound(f"no device {name} at site {site}")
        out: dict[str, Any] = dict(known[0]) if known else {"site": site, "device": name}
        out["recent"] = recent
        agent = out.get("agent") or (recent or {}).get("agent", "")
        found = request.app[CAPABILITIES_KEY].get((site, agent), {}).get(name)
        out["capabilities"] = (
            None if found is None else {"found": found.found, "sources": found.sources}
        )
        out["incidents"] = [
            i.as_dict()
            for i in await queries.incidents(site=site, limit=5000, scope=scope)
            if i.key.device == name
        ][:100]
        return web.json_response(out)

    async def agents(self, request: web.Request) -> web.Response:
        agents = await request.app[QUERIES_KEY].agents(_scope(request))
        return web.json_response({"agents": agents})

    async def stats(self, request: web.Request) -> web.Response:
        now = time.time()
        until = time_param(request.query.get("until", ""), "until", now, now)
        since = time_param(request.query.get("since", ""), "since", now - 30 * 86400, now)
        if since >= until:
            raise bad_request("since must be before until")
        stats = await request.app[QUERIES_KEY].stats(since, until, _scope(request))
        return web.json_response({"since": since, "until": until, "stats": stats})

    async def availability(self, request: web.Request) -> web.Response:
        q = request.query
        asked = availability.request(q, time.time())
        rows = await availability.availability(
            self.store, asked.by, asked.lo, asked.hi, _scope(request)
        )
        body = {"by": asked.by, "from": asked.lo, "to": asked.hi, "rows": rows}
        name = availability.csv_name(asked.by, asked.lo, asked.hi)
        return table_response(q, body, rows, availability.columns(asked.by), name)

    async def stats_trend(self, request: web.Request) -> web.Response:
        """MTTA and MTTR per ISO week or month, by RTC, site or severity."""
        q = request.query
        period = choice(q, "period", trends.PERIODS, "week")
        by = choice(q, "by", trends.GROUPS, "site")
        since, until = time_range(q, trends.SPAN[period], time.time())
        trends_ = request.app[QUERIES_KEY].trends
        found = await trends_.trend(period, by, since, until, _scope(request))
        body = {"period": period, "by": by, "from": since, "to": until, **found}
        name = f"enoc-mtta-mttr-{period}-{by}.csv"
        return table_response(q, body, found["rows"], trends.trend_columns(by), name)

    async def stats_open(self, request: web.Request) -> web.Response:
        """The open-incident count at each step of a range, in all and by severity."""
        q = request.query
        since, until = time_range(q, trends.SPAN["open"], time.time())
        step = seconds_param(q, "step", max(trends.MIN_STEP, math.ceil((until - since) / 500)))
        rows = await request.app[QUERIES_KEY].trends.open_over_time(
            since, until, step, _scope(request)
        )
        body = {"from": since, "to": until, "step": step, "rows": rows}
        return table_response(q, body, rows, trends.OPEN_COLUMNS, "enoc-open-incidents.csv")

    # ---------------------------------------------------------------- maintenance

    async def list_windows(self, request: web.Request) -> web.Response:
        """The windows that may reach something inside the caller's scope."""
        scope = _scope(request)
        windows = await request.app[MAINTENANCE_KEY].windows()
        if not scope.everything:
            rtc_of, devices = await self._places(request)
            windows = [w for w in windows if api_scope.touches(w, scope, rtc_of, devices)]
        return web.json_response({"windows": [w.as_dict() for w in windows]})

    async def _places(
        self, request: web.Request
    ) -> tuple[dict[str, frozenset[str]], list[tuple[str, str]]]:
        """Each known site's RTCs, and the known (site, device) pairs."""
        queries = request.app[QUERIES_KEY]
        devices = [(d["site"], d["device"]) for d in await queries.devices()]
        return await queries.site_rtcs(), devices

    async def _may_manage(
        self, request: web.Request, window: MaintenanceWindow, *, stored: bool = False
    ) -> MaintenanceWindow:
        """`window` as the caller may open it (a scoped caller's device-only window pinned
        to its device's site) or delete it (`stored`: judged as it stands, since a
        device-only window of an unscoped caller's reaches that device at any site), or
        403 when it could reach outside the scope: an unscoped admin or operator manages
        any window, a scoped one those inside its scope."""
        user = request[USER_KEY]
        if user.scope.everything:
            return window
        rtc_of, devices = await self._places(request)
        if not stored:
            window = api_scope.pin(window, devices)
        if not api_scope.inside(window, user.scope, rtc_of):
            self.access.forbidden += 1
            raise ApiError(
                403,
                f"{user.name} may manage maintenance windows only inside its scope "
                f"({_scope_text(user)}): give a site of it, a device known at one site of "
                "it, or a match that starts with a site of it (no glob in the site part)",
            )
        return window

    async def add_window(self, request: web.Request) -> web.Response:
        body = await json_body(request, required=True)
        known = {"site", "device", "match", "starts", "ends", "every", "until", "reason"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(unknown)}; known: {sorted(known)}")
        now = time.time()
        for name in ("site", "device", "match", "reason"):
            if not isinstance(body.get(name, ""), str):
                raise bad_request(f'"{name}" must be a string')
        starts = time_param(str(body.get("starts", "")), "starts", now, now)
        ends_raw = str(body.get("ends", ""))
        if not ends_raw:
            raise bad_request('"ends" is required (a time, or a duration like "2h")')
        ends = time_param(ends_raw, "ends", 0, starts, future=True)
        every_raw = body.get("every", 0)
        try:
            every = float(Duration.parse(str(every_raw))) if every_raw else 0.0
        except ValueError:
            raise bad_request(f'"every" must be a duration like "7d", got {every_raw!r}') from None
        until_raw = body.get("until")
        until = time_param(str(until_raw), "until", 0, starts, future=True) if until_raw else None
        window = MaintenanceWindow(
            0,
            body.get("site", ""),
            body.get("device", ""),
            body.get("match", ""),
            starts,
            ends,
            every,
            until,
            body.get("reason", ""),
        )
        window = await self._may_manage(request, window)
        created = await request.app[MAINTENANCE_KEY].add_window(window, request[USER_KEY].name)
        self.access.audit(request, request[USER_KEY], "maintenance_add", **created.as_dict())
        return web.json_response(created.as_dict(), status=201)

    async def delete_window(self, request: web.Request) -> web.Response:
        window_id = path_id(request)
        maintenance = request.app[MAINTENANCE_KEY]
        user = request[USER_KEY]
        if not user.scope.everything:
            # a window the caller does not see is not found; one it sees but could not
            # have opened (it reaches beyond the scope) is forbidden
            found = [w for w in await maintenance.windows() if w.id == window_id]
            rtc_of, devices = await self._places(request)
            if not (found and api_scope.touches(found[0], user.scope, rtc_of, devices)):
                raise NotFound(f"no maintenance window {window_id}")
            await self._may_manage(request, found[0], stored=True)
        await maintenance.delete_window(window_id, user.name)
        self.access.audit(request, request[USER_KEY], "maintenance_delete", window=window_id)
        return web.json_response({"deleted": window_id})

    # ---------------------------------------------------------------- stream

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of the store's change log (ids global across replicas);
        `Last-Event-ID` resumes from the replay ring, or from the store when older, or
        gets a `reset` event when it cannot (collector/stream.py `resume`)."""
        # counted by identity: a display name (a token's, an SSO user's) may be anyone's
        name = request[USER_KEY].identity
        self._stream_place(name)
        try:
            return await self._stream(request)
        finally:
            self.streams[name] -= 1
            if not self.streams[name]:
                del self.streams[name]

    def _stream_place(self, name: str) -> None:
        """Count a new stream of `name`'s, or refuse it: each holds a connection, a queue
        and a task for as long as the client stays."""
        mine = self.streams.get(name, 0)
        if mine >= self.stream_max_per_user:
            self.streams_refused += 1
            raise retry_later(
                429, f"{name} has {mine} event streams open, the most allowed: close one", 5
            )
        if sum(self.streams.values()) >= self.stream_max:
            self.streams_refused += 1
            raise retry_later(
                503, f"{self.stream_max} event streams are open, the most allowed here", 5
            )
        self.streams[name] = mine + 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID", "") or request.query.get("last_id", "")
        scope = _scope(request)
        sub = self.hub.subscribe()  # before replaying, so nothing falls between the two
        here = self.hub.last_id  # what came before the subscription (it holds what follows)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                **{k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"},
            }
        )
        feed = request.app[FEED_KEY]
        try:
            await response.prepare(request)
            sent = int(last) if last.isdigit() else 0
            # a new client is told where it starts (an id without data is no event), so
            # that even its first reconnect resumes from there
            place = "" if sent else f"id: {here}\n\n"
            await response.write(f"retry: 2000\n: connected\n\n{place}".encode())
            told = sent  # the newest id the client was given
            try:  # what the client missed, or a `reset` when that cannot be replayed
                async for event in resume(self.hub, feed, sent):
                    if api_scope.shown(event, scope):
                        await response.write(event.encode())
                        told = event.id
                    sent = event.id
            except ConnectionResetError:
                raise
            except Exception as exc:  # the store is down: the client retries from `sent`
                log.warning("stream replay from the store failed: %s", exc)
                return response
            if sent > told:  # the events left out move the client's Last-Event-ID on too
                await response.write(f"id: {sent}\n\n".encode())
            sent = told = sent or here
            checked = beat = time.monotonic()
            while True:
                item: StreamEvent | bytes | None
                try:  # a keepalive after a quiet heartbeat, whatever was left out meanwhile
                    wait = max(0.0, beat + SSE_HEARTBEAT - time.monotonic())
                    item = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    item = b": keepalive\n\n"
                if time.monotonic() - checked >= SSE_HEARTBEAT:
                    checked = time.monotonic()
                    user = await self.access.session_lasts(request)
                    if user is None:
                        break  # logged out (on any replica) or expired: the stream ends too
                    scope = _follow(request, user)
                if item is None:
                    break
                if isinstance(item, bytes):
                    # the events left out still move the client's Last-Event-ID on (an id
                    # without data is no event), so a reconnect does not replay them
                    moved = f"id: {sent}\n\n".encode() if sent > told else b""
                    await response.write(moved + item)
                    told, beat = sent, time.monotonic()
                elif item.id > sent:
                    if api_scope.shown(item, scope):
                        await response.write(item.encode())
                        told, beat = item.id, time.monotonic()
                    sent = item.id
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _scope(request: web.Request) -> Scope:
    return request[USER_KEY].scope


def _follow(request: web.Request, user: Principal) -> Scope:
    """The stream's caller as its session now says (a recheck may change the scope)."""
    request[USER_KEY] = user
    return user.scope


def _scope_text(user: Principal) -> str:
    parts = [f"rtc {', '.join(sorted(user.scope.rtc))}"] if user.scope.rtc else []
    if user.scope.site:
        parts.append(f"site {', '.join(sorted(user.scope.site))}")
    return "; ".join(parts)
