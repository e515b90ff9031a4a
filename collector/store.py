"""The incident store: SQLite (WAL) by default, PostgreSQL when replicas share it.

One code path for both: SQL is written once with `?` placeholders and a few
dialect words, and runs through DB-API connections on one worker thread per
store, so the event loop never blocks on disk or network I/O.

Concurrency between replicas: every transaction that decides about incidents
locks the site it concerns (`pg_advisory_xact_lock` on PostgreSQL; SQLite
serialises writers with `BEGIN IMMEDIATE`). A partial unique index on the
incident key `WHERE state <> 'resolved'` is the last line of defence: two
replicas can never hold two open incidents for one key.

Replicas follow each other through the `changes` table: every incident change
and every live agent status is a row written in the transaction that made it.
Its id is the change's global identity (the SSE event id, the notifiers'
cursor). Ids must appear in the order they are handed out, or a follower that
has read up to id n could later find a smaller id committed: so a transaction
takes the changes lock (`pg_advisory_xact_lock`, always the last lock it takes)
before inserting, holds it until COMMIT, and ids become visible in order.
SQLite's one writer gives the same order by itself. PostgreSQL also gets a
NOTIFY on channel `enoc_changes` so that followers need not wait for a poll.

Failover (PostgreSQL): `store.url` may name several hosts
(`postgresql://h1:5432,h2:5432/enoc?target_session_attrs=read-write`); libpq
tries them in turn and keeps the one that takes writes, so after a switch-over
a reconnect finds the new primary. A lost connection, a server shutting down
and a write refused as read-only (SQLSTATE 25006: a demoted primary) all say
"the store cannot answer now": the connection is dropped and the transaction
retried on a new one. A transaction that dies before its COMMIT was sent did
not happen; one whose COMMIT got no answer may have. So every writing
transaction inserts a client-made token (`store_commits`, schema 12) just before
COMMIT, and a COMMIT left without answer is resolved by looking the token up on
the primary reached next: there, the transaction's result is returned; absent,
it is run again (with the same token: should the first still commit, the
second fails on the token's key and finds it). The lookup is retried for up to
`UNKNOWN_COMMIT_WAIT` seconds, longer than a failover takes, before the
store gives up; nothing a caller was told is committed is lost when the
standby is synchronous (Patroni's `synchronous_mode`).

The schema is migrated on start (collector/schema.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from collector import schema
from collector.model import Incident, IncidentKey, TimelineEntry
from enoc.retry import Backoff

T = TypeVar("T")
Row = tuple[Any, ...]

CHANGES_CHANNEL = "enoc_changes"
COMMITS_SCHEMA = 12  # the schema version that has `store_commits`
UNKNOWN_COMMIT_WAIT = 60.0  # seconds a COMMIT without answer is looked up before giving up
COMMITS_KEPT = 600.0  # seconds a commit token is kept: far longer than any lookup
# The token is written only by a transaction that wrote something (has a transaction id):
# a read-only one may safely run again.
_MARK = (
    "INSERT INTO store_commits (token, at) SELECT ?, ? WHERE txid_current_if_assigned() IS NOT NULL"
)

INCIDENT_COLUMNS = (
    "id, site, device, resource, kind, rtc, severity, state, title, opened, updated, "
    "acknowledged, acknowledged_by, resolved, resolved_by, count, flapping, suppressed_by, "
    "maintenance, escalated, transitions, attrs, "
    # the incident's service-desk ticket (collector/notifiers/servicenow.py), if it has one
    "(SELECT t.data FROM incident_tickets t WHERE t.incident_id = incidents.id "
    "ORDER BY t.created LIMIT 1) AS ticket, "
    "acknowledged_identity"
)


class StoreError(RuntimeError):
    pass


class CommitUnknown(Exception):
    """A COMMIT was sent and its answer lost: the transaction may or may not have
    committed. Carries what the transaction's function returned."""

    def __init__(self, result: Any, cause: Exception) -> None:
        super().__init__(f"commit outcome unknown: {type(cause).__name__}: {cause}")
        self.result = result


class Tx:
    """One transaction on one connection; SQL with `?` placeholders on both dialects."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.cursor = conn.cursor()
        self._changes_locked = False

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(self._sql(sql), tuple(params))
        count: int = self.cursor.rowcount
        return count

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in self.cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.cursor.execute(self._sql(sql), tuple(params))
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """An INSERT returning the new row's id (RETURNING works on both dialects)."""
        row = self.one(sql + " RETURNING id", params)
        assert row is not None
        return int(row[0])

    def lock_site(self, site: str) -> None:
        """Serialise decisions about one site across replicas (no-op on SQLite: one writer)."""
        self._lock(f"enoc-site:{site}")

    def lock(self, name: str) -> None:
        """Serialise one kind of decision across replicas (the sweep); held until COMMIT."""
        self._lock(f"enoc-global:{name}")

    def _lock(self, text: str) -> None:
        if self.dialect == "postgresql":
            key = zlib.crc32(text.encode()) - 2**31
            self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    # ---------------------------------------------------------------- changes

    def add_change(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        at: float,
        change: str = "",
        incident_id: int | None = None,
        origin: str = "",
    ) -> int:
        """Log a change in this transaction; its id is its place in the global order.

        Takes the changes lock first (see the module doc): call it after every other
        lock of the transaction, as the last thing before COMMIT."""
        if not self._changes_locked:
            self._lock("enoc-global:changes")
            if self.dialect == "postgresql":
                self.execute("SELECT pg_notify(?, '')", (CHANGES_CHANNEL,))
            self._changes_locked = True
        return self.insert(
            "INSERT INTO changes (at, kind, change, incident_id, origin, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, change, incident_id, origin, json.dumps(data, separators=(",", ":"))),
        )

    def changes_after(
        self, last_id: int, limit: int, kind: str = ""
    ) -> list[tuple[int, str, str, str]]:
        """(id, kind, change, data JSON) of the changes after `last_id`, oldest first."""
        where = "id > ?" + (" AND kind = ?" if kind else "")
        params: tuple[Any, ...] = (last_id, kind) if kind else (last_id,)
        return [
            (int(r[0]), str(r[1]), str(r[2]), str(r[3]))
            for r in self.all(
                f"SELECT id, kind, change, data FROM changes WHERE {where} "
                f"ORDER BY id LIMIT {int(limit)}",
                params,
            )
        ]

    def last_change_id(self) -> int:
        row = self.one("SELECT COALESCE(MAX(id), 0) FROM changes")
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- incidents

    def incident(self, incident_id: int, *, timeline: bool = False) -> Incident | None:
        row = self.one(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,))
        if row is None:
            return None
        incident = incident_from_row(row)
        if timeline:
            incident.timeline = [
                TimelineEntry(*r)
                for r in self.all(
                    "SELECT at, what, actor, text, state, event_id, identity FROM timeline "
                    "WHERE incident_id = ? ORDER BY at, id",
                    (incident_id,),
                )
            ]
        return incident

    def incidents(
        self, where: str = "", params: Sequence[Any] = (), limit: int = 0
    ) -> list[Incident]:
        sql = f"SELECT {INCIDENT_COLUMNS} FROM incidents"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [incident_from_row(r) for r in self.all(sql, params)]

    def open_incident(self, key: IncidentKey) -> Incident | None:
        found = self.incidents(
            "site = ? AND device = ? AND resource = ? AND kind = ? AND state <> 'resolved'",
            (key.site, key.device, key.resource, key.kind),
        )
        return found[0] if found else None

    def _key_incident(
        self, key: IncidentKey, where: str, params: Sequence[Any], order: str
    ) -> Incident | None:
        row = self.one(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE site = ? AND device = ? "
            f"AND resource = ? AND kind = ? AND {where} ORDER BY {order} LIMIT 1",
            (key.site, key.device, key.resource, key.kind, *params),
        )
        return None if row is None else incident_from_row(row)

    def latest_incident(self, key: IncidentKey) -> Incident | None:
        """The key's incident that opened last (by event time: a late event may have
        created an older one after it)."""
        return self._key_incident(key, "1 = 1", (), "opened DESC, id DESC")

    def incident_at(self, key: IncidentKey, at: float) -> Incident | None:
        """The key's incident whose span (opened to resolved, or to now) holds `at`."""
        return self._key_incident(
            key,
            "opened <= ? AND (resolved IS NULL OR resolved >= ?)",
            (at, at),
            "opened DESC, id DESC",
        )

    def incident_before(self, key: IncidentKey, at: float) -> Incident | None:
        """The key's last incident that opened before `at`."""
        return self._key_incident(key, "opened < ?", (at,), "opened DESC, id DESC")

    def incident_after(self, key: IncidentKey, at: float) -> Incident | None:
        """The key's first incident that opened after `at`."""
        return self._key_incident(key, "opened > ?", (at,), "opened, id")

    def create_incident(self, incident: Incident, transitions: list[float]) -> int:
        k = incident.key
        incident.id = self.insert(
            "INSERT INTO incidents (site, device, resource, kind, rtc, severity, state, title, "
            "opened, updated, count, flapping, suppressed_by, maintenance, transitions, attrs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                k.site,
                k.device,
                k.resource,
                k.kind,
                incident.rtc,
                incident.severity,
                incident.state,
                incident.title,
                incident.opened,
                incident.updated,
                incident.count,
                int(incident.flapping),
                incident.suppressed_by,
                int(incident.maintenance),
                json.dumps(transitions),
                json.dumps(incident.attrs),
            ),
        )
        return incident.id

    def save_incident(self, incident: Incident, transitions: list[float]) -> None:
        self.execute(
            "UPDATE incidents SET severity = ?, state = ?, title = ?, opened = ?, updated = ?, "
            "acknowledged = ?, acknowledged_by = ?, resolved = ?, resolved_by = ?, count = ?, "
            "flapping = ?, suppressed_by = ?, maintenance = ?, escalated = ?, transitions = ?, "
            "acknowledged_identity = ? WHERE id = ?",
            (
                incident.severity,
                incident.state,
                incident.title,
                incident.opened,
                incident.updated,
                incident.acknowledged,
                incident.acknowledged_by,
                incident.resolved,
                incident.resolved_by,
                incident.count,
                int(incident.flapping),
                incident.suppressed_by,
                int(incident.maintenance),
                incident.escalated,
                json.dumps(transitions),
                incident.acknowledged_identity,
                incident.id,
            ),
        )

    def transitions(self, incident_id: int) -> list[float]:
        row = self.one("SELECT transitions FROM incidents WHERE id = ?", (incident_id,))
        return [float(t) for t in json.loads(row[0])] if row else []

    def add_timeline(self, incident_id: int, entry: TimelineEntry) -> None:
        self.execute(
            "INSERT INTO timeline (incident_id, at, what, actor, text, state, event_id, "
            "identity) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                incident_id,
                entry.at,
                entry.what,
                entry.actor,
                entry.text,
                entry.state,
                entry.event_id,
                entry.identity,
            ),
        )

    def audit(self, actor: str, action: str, target: str, detail: str = "") -> None:
        self.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, detail),
        )


def incident_from_row(row: Row) -> Incident:
    (
        id_,
        site,
        device,
        resource,
        kind,
        rtc,
        severity,
        state,
        title,
        opened,
        updated,
        acknowledged,
        acknowledged_by,
        resolved,
        resolved_by,
        count,
        flapping,
        suppressed_by,
        maintenance,
        escalated,
        _transitions,
        attrs,
        ticket,
        acknowledged_identity,
    ) = row
    return Incident(
        id=int(id_),
        key=IncidentKey(site, device, resource, kind),
        severity=severity,
        state=state,
        title=title,
        opened=float(opened),
        updated=float(updated),
        rtc=rtc,
        acknowledged=None if acknowledged is None else float(acknowledged),
        acknowledged_by=acknowledged_by,
        acknowledged_identity=acknowledged_identity,
        resolved=None if resolved is None else float(resolved),
        resolved_by=resolved_by,
        count=int(count),
        flapping=bool(flapping),
        suppressed_by=None if suppressed_by is None else int(suppressed_by),
        maintenance=bool(maintenance),
        escalated=int(escalated),
        attrs=json.loads(attrs),
        ticket=None if ticket is None else json.loads(ticket),
    )


class Store:
    """A connection to the incident store, used from asyncio through `run`."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            self.dialect = "sqlite"
            # sqlite:///relative/or/absolute path; sqlite:////abs also accepted
            self.path = Path(unquote(parts.path[1:] if parts.path.startswith("//") else parts.path))
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                self.path = Path(unquote(url[len("sqlite:///") :]))
                if not self.path.is_absolute():
                    self.path = Path.cwd() / self.path
        elif parts.scheme in ("postgresql", "postgres"):
            self.dialect = "postgresql"
            self.path = Path()
        else:
            raise StoreError(f"store.url: unknown scheme {parts.scheme!r}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enoc-store")
        self._conn: Any = None
        self._lock = threading.Lock()
        self.healthy = False
        self.last_error = ""
        self.listening = False
        self.last_listen_error = ""
        self._marks = False  # commit tokens, once the schema has them (PostgreSQL)
        self._pruned = 0.0
        self.commits_resolved = 0  # COMMITs without answer found committed by their token
        self.commits_rerun = 0  # ... found not committed, and run again

    # ---------------------------------------------------------------- connection

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def _conn_or_connect(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _once(self, fn: Callable[[Tx], T], token: str) -> T:
        """One attempt at `fn` in a transaction; with a token (PostgreSQL), a COMMIT that
        loses its connection raises CommitUnknown."""
        conn = self._conn_or_connect()
        tx = Tx(conn, self.dialect)
        tx.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        try:
            result = fn(tx)
            if token:
                now = time.time()
                if now - self._pruned > 60:
                    tx.execute("DELETE FROM store_commits WHERE at < ?", (now - COMMITS_KEPT,))
                    self._pruned = now
                tx.execute(_MARK, (token, now))
        except BaseException:
            with contextlib.suppress(Exception):
                tx.execute("ROLLBACK")
            raise
        try:
            tx.execute("COMMIT")
        except Exception as exc:
            if token and _connection_lost(exc):
                raise CommitUnknown(result, exc) from exc
            raise
        return result

    def _committed(self, token: str) -> bool:
        """Whether the transaction that wrote `token` committed (on the primary now)."""
        row = Tx(self._conn_or_connect(), self.dialect).one(
            "SELECT 1 FROM store_commits WHERE token = ?", (token,)
        )
        return row is not None

    def _run_sync(self, fn: Callable[[Tx], T], retries: int = 5) -> T:
        backoff = Backoff(0.05, 2.0)
        token = uuid.uuid4().hex if self._marks else ""
        unknown: CommitUnknown | None = None  # the last attempt's COMMIT got no answer
        give_up = 0.0
        attempt = 0
        while True:
            try:
                with self._lock:
                    if unknown is not None and self._committed(token):
                        self.commits_resolved += 1
                        result: T = unknown.result
                    else:
                        if unknown is not None:
                            self.commits_rerun += 1
                        # `unknown` stays until this ends: should the first attempt commit
                        # late, this one fails on the token, and the next lookup finds it
                        result = self._once(fn, token)
            except CommitUnknown as exc:
                unknown = CommitUnknown(exc.result if unknown is None else unknown.result, exc)
                give_up = give_up or time.monotonic() + UNKNOWN_COMMIT_WAIT
                self._lost(exc)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                lost = _connection_lost(exc)
                if lost:
                    self._lost(exc)
                if unknown is not None and time.monotonic() < give_up and lost:
                    pass  # the outcome is still to be looked up: keep trying
                elif not _retryable(exc) or attempt >= retries:
                    if unknown is not None and not lost and self._settled(token):
                        self.commits_resolved += 1
                        first: T = unknown.result  # the first attempt committed after all
                        return first
                    raise
            else:
                self.healthy, self.last_error = True, ""
                return result
            attempt += 1
            time.sleep(backoff.next())  # on the store's own thread, not the loop

    def _settled(self, token: str) -> bool:
        """`_committed`, False when even that cannot be asked."""
        try:
            with self._lock:
                return self._committed(token)
        except Exception:
            return False

    def _lost(self, exc: Exception) -> None:
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    async def run(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn(tx)` in one transaction on the store's thread; retried on conflicts."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_sync, fn)

    def _read_sync(self, fn: Callable[[Tx], T]) -> T:
        with self._lock:
            try:
                result = fn(Tx(self._conn_or_connect(), self.dialect))
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if _connection_lost(exc):
                    self.healthy = False
                    self._drop_connection()
                raise
            self.healthy, self.last_error = True, ""
            return result

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn(tx)` without a transaction (each statement on its own, autocommit):
        for single reads and idempotent deletes. Not retried: the caller polls again."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read_sync, fn)

    async def changes_after(
        self, last_id: int, limit: int, kind: str = ""
    ) -> list[tuple[int, str, str, str]]:
        """`Tx.changes_after` as a read (no transaction)."""
        return await self.read(lambda tx: tx.changes_after(last_id, limit, kind))

    async def changes_count(self, last_id: int, kind: str) -> int:
        """How many changes of `kind` follow `last_id`."""

        def count(tx: Tx) -> int:
            row = tx.one("SELECT COUNT(*) FROM changes WHERE id > ? AND kind = ?", (last_id, kind))
            return int(row[0]) if row else 0

        return await self.read(count)

    async def listen(self, on_notify: Callable[[], None], stop: asyncio.Event) -> None:
        """PostgreSQL only: LISTEN on the changes channel until `stop`, calling `on_notify`
        for every notification and after every (re)connect (anything may have been
        missed while not listening). Reconnects with backoff; `listening` says whether
        it is connected now. Returns at once on SQLite (one process, no one to hear)."""
        if self.dialect != "postgresql":
            return
        import psycopg

        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=10
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.listening = True
                    backoff.reset()
                    on_notify()
                    while not stop.is_set():
                        async for _ in conn.notifies(timeout=2.0):
                            on_notify()
            except psycopg.Error as exc:
                self.last_listen_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.listening = False
            if not stop.is_set():
                await backoff.wait(stop)

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> int:
        """Connect and migrate; returns the schema version."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._migrate)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open the incident store: {exc}") from exc

    def _migrate(self) -> int:
        serial = (
            "INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.dialect == "sqlite"
            else "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        )
        latest = len(schema.MIGRATIONS)

        def migrate(tx: Tx) -> int:
            tx.lock_site("-schema-")
            tx.execute("CREATE TABLE IF NOT EXISTS enoc_schema (version INTEGER NOT NULL)")
            row = tx.one("SELECT version FROM enoc_schema")
            version = int(row[0]) if row else 0
            if row is None:
                tx.execute("INSERT INTO enoc_schema (version) VALUES (0)")
            if version > latest:
                raise StoreError(
                    f"the incident store has schema version {version}, newer than this "
                    f"enoc ({latest}): upgrade enoc before starting it on this store"
                )
            for step in schema.MIGRATIONS[version:]:
                for statement in step:
                    tx.execute(statement.format(serial=serial))
            tx.execute("UPDATE enoc_schema SET version = ?", (latest,))
            return latest

        version = self._run_sync(migrate)
        self._marks = self.dialect == "postgresql" and version >= COMMITS_SCHEMA
        return version

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._drop_connection)
        self._executor.shutdown(wait=True)


# SQLite's primary result codes that say the database cannot answer now, not that the
# statement was wrong (SQLITE_ERROR, 1, is "no such table", a syntax error, ...): BUSY,
# LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_SQLITE_BUSY = frozenset({5, 6})  # BUSY, LOCKED: another connection holds it, try again


def _sqlite_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of an error (0 where Python does not say)."""
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return _sqlite_code(exc) in _SQLITE_BUSY
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(
        exc,
        psycopg.errors.DeadlockDetected
        | psycopg.errors.SerializationFailure
        | psycopg.errors.UniqueViolation
        | psycopg.OperationalError
        | psycopg.errors.ReadOnlySqlTransaction,
    )


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the store cannot answer now (connection refused or lost, SQLite's
    file locked, unreadable or full), not that the request or the code was wrong."""
    if isinstance(exc, sqlite3.OperationalError):
        return _sqlite_code(exc) in _SQLITE_UNAVAILABLE
    return isinstance(exc, Exception) and _connection_lost(exc)


def store_outage(exc: BaseException) -> bool:
    """Whether a failed write says the store (or the network to it) is out, so that what
    was being written waits for it: `store_unavailable`, a connection already closed, an
    OSError. Anything else is the written content's or the code's."""
    if store_unavailable(exc) or isinstance(exc, OSError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.InterfaceError)


def content_refused(exc: BaseException) -> bool:
    """Whether the store refused the data it was given, which no retry changes: SQLite's
    integrity and data errors and an integer it cannot hold (OverflowError), PostgreSQL's
    SQLSTATE classes 22 (data exception: a NUL in text, a number out of range) and 23
    (integrity constraint violation)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | OverflowError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    if not isinstance(exc, psycopg.Error):
        return False
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or (exc.sqlstate or "")[
        :2
    ] in ("22", "23")


def _connection_lost(exc: Exception) -> bool:
    """Whether the connection is of no more use: lost, refused, or to a server that now
    refuses writes (SQLSTATE 25006 read_only_sql_transaction: a primary demoted under it,
    or a standby; a new connection with target_session_attrs=read-write finds the primary)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return True
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    )
