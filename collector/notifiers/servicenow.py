"""`format: servicenow`: incidents as tickets of a ServiceNow instance, over its Table API.

One ticket per enoc incident: its `correlation_id` is `servicenow.correlation_prefix`
plus the incident's id. An opened (or first-told) incident creates the ticket; a later
change PATCHes it (acknowledged: state 2 In Progress and a work note; escalated and
updated: a work note, impact and urgency again); resolved sets state 6 Resolved with
`close_code` and `close_notes`. The ticket's number and sys_id are kept on the incident
(`incident_tickets`), and every replica finds them there.

A delivery may be sent twice (a replica dies between the request and its cursor's commit,
collector/notify.py): before it creates a ticket the notifier reads the store and then
asks the instance for the correlation_id, so a retried create finds the ticket the
first attempt made instead of making a second one.

A change that came from the desk itself (acknowledged or resolved by `servicenow:<user>`,
collector/tickets.py) is not sent back: the ticket already says so.

Severity to impact and urgency (1 high, 2 medium, 3 low; ServiceNow's priority lookup
makes critical P1, major P2, minor P3, warning P4, info P5): `IMPACT_URGENCY`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from collector.notifiers.base import Delivery, DeliveryRefused, Env, Http, target_key
from enoc.logs import strip_login

if TYPE_CHECKING:
    from collector.config import ServiceNowConfig, WebhookConfig
    from collector.store import Store, Tx

# enoc severity -> (impact, urgency)
IMPACT_URGENCY: dict[str, tuple[int, int]] = {
    "critical": (1, 1),
    "major": (2, 1),
    "minor": (2, 2),
    "warning": (3, 2),
    "info": (3, 3),
}
IN_PROGRESS = "2"
RESOLVED = "6"
CLOSED_STATES = frozenset({"6", "7", "8"})  # Resolved, Closed, Canceled
ACTOR_PREFIX = "servicenow:"  # an action the desk took, as enoc's timeline names it
PAGE = 100  # records a query reads at a time
SHORT_DESCRIPTION = 160  # the incident table's short_description length


def settings_of(hook: WebhookConfig) -> ServiceNowConfig:
    from collector.config import ServiceNowConfig

    return hook.servicenow or ServiceNowConfig()


def servicenow_time(ts: float) -> str:
    """A Unix time as the Table API writes its date-times: UTC, `YYYY-MM-DD HH:MM:SS`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class TableApi:
    """The Table API of one instance and table, with the webhook's login and timeout."""

    def __init__(self, hook: WebhookConfig, http: Http) -> None:
        assert hook.password is not None  # the config requires it with this format
        self.hook = hook
        self.http = http
        self.base = hook.url.rstrip("/")
        self.table = settings_of(hook).table
        self.url = f"{self.base}/api/now/table/{self.table}"
        self.auth = aiohttp.encode_basic_auth(hook.username, hook.password.reveal())
        self.endpoint = strip_login(self.url)

    def link(self, sys_id: str) -> str:
        """The ticket's page on the instance, for the console."""
        return f"{strip_login(self.base)}/nav_to.do?uri={quote(f'{self.table}.do?sys_id={sys_id}')}"

    async def _call(self, method: str, url: str, **kw: Any) -> Any:
        headers = {"Accept": "application/json", "Authorization": self.auth}
        return await self.http.request(method, self.hook, url, headers=headers, **kw)

    async def query(self, query: str, fields: str = "", offset: int = 0) -> list[dict[str, Any]]:
        """The records matching an encoded query (`sysparm_query`), one page."""
        params = {
            "sysparm_query": query,
            "sysparm_limit": str(PAGE),
            "sysparm_offset": str(offset),
            "sysparm_exclude_reference_link": "true",
        }
        if fields:
            params["sysparm_fields"] = fields
        answer = await self._call("GET", self.url, params=params)
        return _records(answer, self.endpoint)

    async def create(self, record: dict[str, Any]) -> dict[str, Any]:
        answer = await self._call("POST", self.url, body=record)
        return _record(answer, self.endpoint)

    async def update(self, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        answer = await self._call("PATCH", f"{self.url}/{quote(sys_id)}", body=fields)
        return _record(answer, self.endpoint)


def _records(answer: Any, endpoint: str) -> list[dict[str, Any]]:
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise DeliveryRefused(f"{endpoint} answered without a list of records in `result`")
    return result


def _record(answer: Any, endpoint: str) -> dict[str, Any]:
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or not result.get("sys_id") or not result.get("number"):
        raise DeliveryRefused(f"{endpoint} answered without a record (sys_id, number)")
    return result


@dataclass(frozen=True)
class Ticket:
    number: str
    sys_id: str
    url: str

    def as_dict(self) -> dict[str, str]:
        return {"number": self.number, "sys_id": self.sys_id, "url": self.url}


def save_ticket(tx: Tx, target: str, incident_id: int, ticket: Ticket, at: float) -> bool:
    """Keep the incident's ticket; a ticket kept before stays (one per incident and
    target). When it is new, log a `ticketed` change so that streams show the number."""
    if tx.one(
        "SELECT 1 FROM incident_tickets WHERE incident_id = ? AND target = ?",
        (incident_id, target),
    ):
        return False
    tx.execute(
        "INSERT INTO incident_tickets (incident_id, target, number, sys_id, data, created) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (incident_id, target, ticket.number, ticket.sys_id, json.dumps(ticket.as_dict()), at),
    )
    incident = tx.incident(incident_id)
    if incident is not None:
        tx.add_change(
            "incident",
            {"change": "ticketed", "incident": incident.as_dict()},
            at=at,
            change="ticketed",
            incident_id=incident_id,
        )
    return True


def kept_ticket(tx: Tx, target: str, incident_id: int) -> Ticket | None:
    row = tx.one(
        "SELECT data FROM incident_tickets WHERE incident_id = ? AND target = ?",
        (incident_id, target),
    )
    return None if row is None else Ticket(**json.loads(row[0]))


def from_desk(change: str, incident: dict[str, Any]) -> bool:
    """Whether the change is the desk's own action, read back (collector/tickets.py)."""
    actor = {"acknowledged": "acknowledged_by", "resolved": "resolved_by"}.get(change)
    return actor is not None and str(incident.get(actor, "")).startswith(ACTOR_PREFIX)


def new_ticket(
    incident: dict[str, Any], settings: ServiceNowConfig, correlation: str
) -> dict[str, Any]:
    """The record a new ticket is created with."""
    impact, urgency = IMPACT_URGENCY.get(incident["severity"], (3, 3))
    title = f"[{incident['severity']}] {incident['site']}: {incident['title']}"
    lines = [
        f"enoc incident {incident['id']}: {incident['title']}",
        f"severity: {incident['severity']}",
        f"RTC: {incident['rtc']}, site: {incident['site']}, device: {incident['device'] or '-'}",
        f"resource: {incident['resource']}, kind: {incident['kind']}",
        f"opened: {servicenow_time(incident['opened'])} UTC",
    ]
    record: dict[str, Any] = {
        "short_description": title[:SHORT_DESCRIPTION],
        "description": "\n".join(lines),
        "impact": str(impact),
        "urgency": str(urgency),
        "correlation_id": correlation,
        "correlation_display": "enoc",
    }
    for name in ("caller_id", "assignment_group", "category"):
        if value := getattr(settings, name):
            record[name] = value
    return record


def ticket_update(
    change: str, incident: dict[str, Any], settings: ServiceNowConfig
) -> dict[str, Any]:
    """The fields a change PATCHes on its ticket."""
    if change == "resolved":
        by = incident["resolved_by"] or "auto"
        notes = f"Resolved in enoc by {by}" + (
            " (the clearing event arrived)" if by == "auto" else ""
        )
        return {
            "state": RESOLVED,
            "close_code": settings.close_code,
            "close_notes": notes,
            "work_notes": notes,
        }
    impact, urgency = IMPACT_URGENCY.get(incident["severity"], (3, 3))
    fields: dict[str, Any] = {"impact": str(impact), "urgency": str(urgency)}
    if change == "acknowledged":
        fields["state"] = IN_PROGRESS
        fields["work_notes"] = f"Acknowledged in enoc by {incident['acknowledged_by']}"
    elif change == "escalated":
        fields["work_notes"] = f"Escalated in enoc to level {incident['escalated']}"
    else:
        fields["work_notes"] = (
            f"{change} in enoc: {incident['title']} (state {incident['state']}, "
            f"{incident['count']} events)"
        )
    return fields


class ServiceNow:
    """Creates, updates and resolves the incident's ticket through the Table API."""

    refreshes = False

    def __init__(self, config: WebhookConfig, env: Env) -> None:
        self.config = config
        self.settings = settings_of(config)
        self.env = env
        self.api = TableApi(config, env.http)
        self.endpoint = self.api.endpoint
        self.key = target_key(config)
        self.created = 0  # tickets this notifier made (a retried create finds its ticket)

    def _store(self) -> Store:
        if self.env.store is None:
            msg = "the servicenow notifier needs the incident store"
            raise RuntimeError(msg)
        return self.env.store

    def correlation(self, incident_id: int) -> str:
        return f"{self.settings.correlation_prefix}{incident_id}"

    def render(self, delivery: Delivery) -> Any:
        if delivery.change == "opened":
            incident = delivery.incident
            return new_ticket(incident, self.settings, self.correlation(int(incident["id"])))
        return ticket_update(delivery.change, delivery.incident, self.settings)

    async def send(self, delivery: Delivery) -> None:
        change, incident = delivery.change, delivery.incident
        if from_desk(change, incident):
            return  # the ticket says so already
        ticket = await self.ticket(incident, create=change != "resolved")
        if ticket is None:
            return  # resolved before a ticket was made: there is nothing to close
        if change == "opened":
            return  # made with all there is to say (or there already: a delivery sent again)
        await self.api.update(ticket.sys_id, ticket_update(change, incident, self.settings))

    async def ticket(self, incident: dict[str, Any], *, create: bool) -> Ticket | None:
        """The incident's ticket: kept, found by correlation_id, or made when `create`."""
        incident_id = int(incident["id"])
        store, key = self._store(), self.key
        kept = await store.read(lambda tx: kept_ticket(tx, key, incident_id))
        if kept is not None:
            return kept
        correlation = self.correlation(incident_id)
        found = await self.api.query(f"correlation_id={correlation}", "sys_id,number")
        if found:
            record = found[0]
        elif create:
            record = await self.api.create(new_ticket(incident, self.settings, correlation))
            self.created += 1
        else:
            return None
        ticket = Ticket(
            str(record["number"]), str(record["sys_id"]), self.api.link(record["sys_id"])
        )
        now = self.env.now()
        await store.run(lambda tx: save_ticket(tx, key, incident_id, ticket, now))
        return ticket
