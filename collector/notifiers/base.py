"""What a notifier kind is: the `Notifier` protocol, the delivery it renders and sends, the
errors it raises, and the HTTP client the delivery machinery (collector/notify.py) lends it.

A notifier knows one receiver's format and transport and nothing else: which changes a
receiver hears, in what order, retried how often, and what becomes a dead letter is the
machinery's, the same for every kind.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import aiohttp

from enoc import __version__
from enoc.lifecycle import ServiceBase
from enoc.logs import redact, strip_login
from enoc.retry import PermanentError, RetryableError, http_status_retryable, parse_retry_after

if TYPE_CHECKING:
    from collector.config import WebhookConfig
    from collector.store import Store, Tx


@dataclass(frozen=True)
class Delivery:
    """One incident change, as one receiver is to hear it."""

    change: str  # opened, updated, acknowledged, escalated, resolved; refresh (a re-send)
    incident: dict[str, Any]  # as the API shows it
    change_id: int  # the change log's id (the stream's event id); 0 for a refresh
    sent: float  # wall-clock time of this attempt


class DeliveryFailed(RetryableError):
    """The receiver may take it later: connection error, timeout, 5xx, 429."""


class DeliveryRefused(PermanentError):
    """The receiver will never take it (a 4xx other than 429: a bad token, a wrong path)."""


class Notifier(Protocol):
    """Renders and sends incident changes to one receiver.

    `send` raises a `RetryableError` (usually `DeliveryFailed`) when the same delivery may
    get through later and a `PermanentError` (usually `DeliveryRefused`) when it cannot;
    the messages name the receiver by `endpoint`, never with a login."""

    @property
    def endpoint(self) -> str:
        """Where deliveries go, without a URL's user and password (logs, dead letters)."""
        ...

    @property
    def refreshes(self) -> bool:
        """Whether the receiver forgets an open incident that is not sent again: the
        machinery then re-sends open incidents every refresh period (`Env.refresh`)."""
        ...

    def render(self, delivery: Delivery) -> Any:
        """The body the receiver gets."""
        ...

    async def send(self, delivery: Delivery) -> None: ...


@dataclass
class Http:
    """The HTTP client the delivery machinery lends its notifiers: one connection pool,
    open while the machinery runs (from its run to its close)."""

    now: Callable[[], float] = time.time  # for a Retry-After given as an HTTP date
    session: aiohttp.ClientSession | None = field(default=None, init=False)

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    async def post_json(self, hook: WebhookConfig, url: str, body: Any) -> None:
        """POST `body` as JSON to `url` (which may carry a login) with the webhook's token
        and timeout; errors name the URL without its login."""
        headers = {}
        if hook.token is not None:
            headers["Authorization"] = f"Bearer {hook.token.reveal()}"
        await self.request("POST", hook, url, body=body, headers=headers, answer=False)

    async def request(
        self,
        method: str,
        hook: WebhookConfig,
        url: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        answer: bool = True,
    ) -> Any:
        """One request with the webhook's timeout; the JSON answer of a 2xx (None when
        `answer` is false or the body is empty). A 5xx, a 429 or a connection error raises
        `DeliveryFailed`, another status `DeliveryRefused`; both name the URL without its
        login."""
        if self.session is None:
            msg = "the notifiers' HTTP client is not started"
            raise RuntimeError(msg)
        shown = strip_login(url)
        timeout = aiohttp.ClientTimeout(total=float(hook.timeout))
        sent = {"User-Agent": f"enoc-collector/{__version__}", **(headers or {})}
        try:
            async with self.session.request(
                method, url, json=body, params=params, headers=sent, timeout=timeout
            ) as response:
                if response.status < 300:
                    if not answer or response.status == 204:
                        return None
                    return await response.json(content_type=None)
                text = (await response.text(errors="replace"))[:200]
                reason = f"HTTP {response.status} from {shown}: {text}"
                if http_status_retryable(response.status):
                    wait = parse_retry_after(response.headers.get("Retry-After"), self.now)
                    raise DeliveryFailed(reason, wait)
                raise DeliveryRefused(reason)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # ValueError: an answer that is not JSON (a proxy's error page)
            raise DeliveryFailed(
                f"{type(exc).__name__} on {method} {shown}: {redact(str(exc))}"
            ) from exc


@dataclass(frozen=True)
class Env:
    """What the delivery machinery gives every notifier it builds."""

    http: Http
    now: Callable[[], float]
    refresh: float  # seconds between re-sends to a receiver that `refreshes`
    console_url: str = ""  # notifications.console_url: where a message may link to
    store: Store | None = None  # for a kind that keeps what the receiver made (a ticket)


class LeasedPart(ServiceBase):
    """A part that works one replica at a time through leases in the store and reaches its
    receivers over HTTP (the notifier, the ticket sync); its HTTP client opens in its run
    and closes after it."""

    lease: float
    owner: str
    http: Http

    def hold_leases_as(self, owner: str, lease: float, now: Callable[[], float]) -> None:
        """This replica's name as a lease holder, the leases' length, the HTTP client."""
        self.owner = lease_owner(owner)
        self.lease = float(lease)
        self.http = Http(now)

    async def _close(self) -> None:
        await self.http.close()


def lease_owner(owner: str) -> str:
    """A lease holder's name in the store: the replica's, unique per process, so that a
    restarted replica waits for its predecessor's lease too."""
    return f"{owner or 'enoc-collector'}:{secrets.token_hex(4)}"


# The tables of leases, by the column that names what is leased (a webhook, a desk's
# tickets); their statements are made here, as a table name cannot be a parameter.
LEASE_TABLES = {"notify_cursors": "webhook", "ticket_sync": "target"}
_TAKE = {
    table: f"UPDATE {table} SET owner = ?, lease_until = ?, updated = ? "  # noqa: S608
    f"WHERE {column} = ? AND (owner = ? OR lease_until < ?)"
    for table, column in LEASE_TABLES.items()
}
_RELEASE = {
    table: f"UPDATE {table} SET lease_until = 0 WHERE owner = ?"  # noqa: S608
    for table in LEASE_TABLES
}


def take_lease(tx: Tx, table: str, key: str, owner: str, until: float, now: float) -> bool:
    """Take `key`'s lease in `table` until `until`, or keep it: whether `owner` holds it
    (it did, or the last holder's ran out)."""
    return bool(tx.execute(_TAKE[table], (owner, until, now, key, owner, now)))


async def release_leases(store: Store, table: str, owner: str) -> None:
    """Give up every lease `owner` holds in `table` when it stops, so that another replica
    takes over at once; a store that is away lets the leases run out instead."""
    statement = _RELEASE[table]
    with contextlib.suppress(Exception):
        await store.run(lambda tx: tx.execute(statement, (owner,)))


def target_key(hook: WebhookConfig) -> str:
    """How replicas name a webhook in the store: its format and URL without the login
    (a password must not sit in the store; rotating it keeps the cursor)."""
    return f"{hook.format} {strip_login(hook.url)}"


# A notifier kind's factory: its receiver's config (a WebhookConfig; an EmailConfig for the
# kind of that section) and the machinery's Env -> a Notifier.
NotifierFactory: TypeAlias = "Callable[[Any, Env], Notifier]"
