"""A stand-in of ServiceNow's Table API on loopback, for the tests of the `servicenow`
notifier and the way back (collector/notifiers/servicenow.py, collector/tickets.py).

It keeps one table's records in memory and answers as the Table API does: `POST
/api/now/table/<table>` (201, the record made, numbers INC0010001 up), `GET` with
`sysparm_query` (the operators the notifier and the sync use: `=`, `STARTSWITH`, `>=`
and `>` on `sys_updated_on` with a `javascript:gs.dateGenerate('D','T')` value, `^`
between terms, `ORDERBY` and `ORDERBYDESC`), `sysparm_limit`, `sysparm_offset` and
`sysparm_fields`, `GET` and `PATCH` of `<table>/<sys_id>`; HTTP basic authentication (401
with the Table API's error body otherwise). Work notes are journal entries, kept in
`journal` and not returned as a field, as on an instance.

A test makes the desk act (`desk_update`), fails requests on demand (`fail`), or holds
the answer to a create after the record is made (`hold_creates`), to kill a collector
between the two.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from testbed.servers import HOST, free_port

_TERM = re.compile(r"^([a-z_]+?)(STARTSWITH|>=|<=|!=|=|>|<)(.*)$")
_DATE = re.compile(r"^javascript:gs\.dateGenerate\('(\d{4}-\d\d-\d\d)','(\d\d:\d\d:\d\d)'\)$")
JOURNAL_FIELDS = ("work_notes", "comments")


def _error(status: int, message: str, detail: str = "") -> web.Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return web.json_response(body, status=status)


@dataclass
class ServiceNowStandIn:
    """The stand-in's state: records by sys_id, the requests seen, the failures to give."""

    username: str = "enoc"
    password: str = "stand-in"  # noqa: S105 (the stand-in's own, on loopback)
    table: str = "incident"
    now: Callable[[], float] = time.time
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    journal: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    failures: list[int] = field(default_factory=list)  # statuses the next requests get
    garbled: dict[str, list[str]] = field(default_factory=dict)  # by method: 200s' bodies
    hold_creates: bool = False
    create_received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _next_number: int = 10001
    _runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- for tests

    def fail(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, one each, before the real ones."""
        self.failures.extend(statuses)

    def garble(self, method: str, *bodies: str) -> None:
        """Answer the next requests of `method` with these bodies and 200 OK, one each:
        what a proxy, a half-upgraded instance or a scripted REST endpoint in front of the
        desk might."""
        self.garbled.setdefault(method, []).extend(bodies)

    def by_correlation(self, correlation_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["correlation_id"] == correlation_id]

    def desk_update(self, sys_id: str, by: str, **fields: Any) -> dict[str, Any]:
        """A person at the desk changes a ticket (resolves it, takes it in progress)."""
        return self._update(self.records[sys_id], {k: str(v) for k, v in fields.items()}, by)

    @property
    def creates(self) -> int:
        return sum(1 for method, _ in self.requests if method == "POST")

    # ---------------------------------------------------------------- the server

    async def start(self) -> None:
        app = web.Application()
        base = f"/api/now/table/{self.table}"
        app.router.add_post(base, self._create)
        app.router.add_get(base, self._query)
        app.router.add_get(base + "/{sys_id}", self._get)
        app.router.add_patch(base + "/{sys_id}", self._patch)
        app.middlewares.append(self._gate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, HOST, port).start()
        self.url = f"http://{HOST}:{port}"

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.failures:
            status = self.failures.pop(0)
            return _error(status, f"scripted {status}")
        garbled = self.garbled.get(request.method)
        if garbled:
            return web.Response(text=garbled.pop(0), content_type="application/json")
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return _error(401, "User Not Authenticated", "Required to provide Auth information")
        response: web.StreamResponse = await handler(request)
        return response

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.now(), UTC).strftime("%Y-%m-%d %H:%M:%S")

    def _update(self, record: dict[str, Any], fields: dict[str, Any], by: str) -> dict[str, Any]:
        for name in JOURNAL_FIELDS:
            if fields.get(name):
                self.journal.setdefault(record["sys_id"], []).append((name, by, fields[name]))
        record.update({k: str(v) for k, v in fields.items() if k not in JOURNAL_FIELDS})
        record["sys_updated_on"] = self._stamp()
        record["sys_updated_by"] = by
        record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
        return record

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "not a JSON object")
        sys_id = uuid.uuid4().hex
        number = f"INC{self._next_number:07d}"
        self._next_number += 1
        stamp = self._stamp()
        record: dict[str, Any] = {
            "sys_id": sys_id,
            "number": number,
            "state": "1",
            "impact": "3",
            "urgency": "3",
            "correlation_id": "",
            "assigned_to": "",
            "close_code": "",
            "close_notes": "",
            "sys_created_on": stamp,
            "sys_created_by": self.username,
            "sys_updated_on": stamp,
            "sys_updated_by": self.username,
            "sys_mod_count": "0",
        }
        for name in JOURNAL_FIELDS:
            if body.get(name):
                self.journal.setdefault(sys_id, []).append((name, self.username, body[name]))
        record.update({k: str(v) for k, v in body.items() if k not in JOURNAL_FIELDS})
        record["sys_id"], record["number"] = sys_id, number
        self.records[sys_id] = record
        self.create_received.set()
        if self.hold_creates:
            await self.release.wait()  # made, but the caller has no answer yet
        return web.json_response({"result": dict(record)}, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        record = self.records.get(request.match_info["sys_id"])
        if record is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts")
        return web.json_response({"result": dict(record)})

    async def _patch(self, request: web.Request) -> web.Response:
        record = self.records.get(request.match_info["sys_id"])
        if record is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts")
        body = await request.json()
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "not a JSON object")
        return web.json_response({"result": dict(self._update(record, body, self.username))})

    async def _query(self, request: web.Request) -> web.Response:
        try:
            found = select(list(self.records.values()), request.query.get("sysparm_query", ""))
        except ValueError as exc:
            return _error(400, "Invalid query", str(exc))
        offset = int(request.query.get("sysparm_offset", "0"))
        limit = int(request.query.get("sysparm_limit", "10000"))
        page = found[offset : offset + limit]
        fields = [f for f in request.query.get("sysparm_fields", "").split(",") if f]
        if fields:
            page = [{f: r.get(f, "") for f in fields} for r in page]
        return web.json_response({"result": page})


def select(records: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """The records an encoded query selects, in its order (creation order without one)."""
    found = sorted(records, key=lambda r: r["sys_created_on"] + r["number"])
    order: list[tuple[str, bool]] = []
    for term in filter(None, query.split("^")):
        if term.startswith("ORDERBYDESC"):
            order.append((term.removeprefix("ORDERBYDESC"), True))
            continue
        if term.startswith("ORDERBY"):
            order.append((term.removeprefix("ORDERBY"), False))
            continue
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"cannot read the term {term!r}")
        name, op, value = match.groups()
        date = _DATE.match(value)
        if date:
            value = f"{date.group(1)} {date.group(2)}"
        found = [r for r in found if _holds(str(r.get(name, "")), op, value)]
    for name, descending in reversed(order):
        found.sort(key=lambda r: str(r.get(name, "")), reverse=descending)
    return found


def _holds(have: str, op: str, value: str) -> bool:
    checks: dict[str, Callable[[], bool]] = {
        "=": lambda: have == value,
        "!=": lambda: have != value,
        "STARTSWITH": lambda: have.startswith(value),
        ">=": lambda: have >= value,
        "<=": lambda: have <= value,
        ">": lambda: have > value,
        "<": lambda: have < value,
    }
    return checks[op]()
