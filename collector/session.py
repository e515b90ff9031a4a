"""Console sessions: signed cookies, CSRF tokens and a login rate limit, shared by replicas.

A session is a row of the store's `sessions` table (schema 9), keyed by a random
nonce; its cookie is `nonce.signature`, signed with HMAC-SHA256 under the
collector's session key so that a forged or guessed cookie costs no store read.
Replicas behind one load balancer accept each other's sessions when they share
the key (`http.session_key_file`); without a file each process makes its own
key and a restart logs everyone out. The cookie is HttpOnly and
SameSite=Strict; an unsafe request (POST, DELETE) made with it must also carry
the session's CSRF token in `X-CSRF-Token`, which only the console's own page
can read (from the login answer or `/api/v1/whoami`).

The row holds the session's `Principal` (collector/access.py: name, role,
scope, and the identity behind it) and when that identity was last confirmed.
Each request reads it, so a logout on one replica is refused on every other
from the next request on, and what ends a session ends it everywhere:

- a users-file user's role and scope are the file's as it is now (it reloads
  on change); a user removed from it has no session, and one whose password
  changed keeps none made with the old password: the row keeps a fingerprint of
  the password hash it logged in with (`credential`, an HMAC under the session
  key). The users watch (collector/users_watch.py) ends such sessions in the
  store at start and when it loads a change (`end_leavers`), so that a user put
  back, or a password set back, does not bring an old session back;
- a directory or single-sign-on identity is confirmed again (`rechecks`, one
  per source: LDAP's group lookup...) once `recheck_after` has passed since the
  last confirmation, by whichever replica the next request reaches; an identity
  no longer granted a role ends the session on every replica. While the source
  cannot answer, the session lasts one more `recheck_after`, then ends. One
  request at a time asks the source (it claims the recheck in the row); a
  session whose source is no longer configured ends.

What replicas must agree on lives in the incident store, one code path for
SQLite and PostgreSQL (collector/store.py):

- `sessions`: every session until its cookie expires (then pruned), its
  `revoked` time when logged out or ended.
- `login_failures`: failed logins per client address and user name pair (the key
  kept as a SHA-256, so mistyped passwords typed as names are not kept in clear).
  An attempt takes its place under a lock on its key before the password is
  checked and counts as a failure unless it succeeds, so attempts spread over
  replicas, or made at once, meet the limit at the same total as on one: after
  `max_failures` failures a pair waits, with backoff, whether its next password is
  right or not (`LoginLimiter`); the same name from another address does not. A
  success clears its key. A key keeps at most as many rows as lengthen its wait
  (16 with the defaults), and rows go once their key has been quiet for the
  longest wait and a window; the keys are as many as the failed attempts of that
  time, each of which took a password check (`HashGate` bounds their rate).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from collector.access import Principal
from collector.auth import Users
from collector.store import Store, Tx
from enoc.logs import StateLogger, get_logger

log = get_logger("enoc.collector.session")

COOKIE = "enoc_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = 12 * 3600.0  # one NOC shift
RECHECK_AFTER = 60.0
CLAIM_HOLD = 10.0  # how long one request's recheck holds off the others

# Confirms an identity again: its principal as the source sees it now, None when the
# source no longer grants it a role; raises when the source cannot answer.
Recheck = Callable[[Principal], Awaitable[Principal | None]]


@dataclass(frozen=True)
class Session:
    principal: Principal
    expires: float
    nonce: str
    checked: float = 0.0  # when the identity was last confirmed by its source
    claimed: float = 0.0  # when a request (on any replica) last set out to confirm it
    # a users-file login's fingerprint of the password hash it was made with ("": other
    # sources, and rows from before it was kept)
    credential: str = ""

    def csrf(self, key: bytes) -> str:
        return hmac.new(key, f"csrf|{self.nonce}".encode(), hashlib.sha256).hexdigest()


def load_key(path: Path | None) -> bytes:
    """The signing key: the file's bytes (at least 32), or a random one for this process."""
    if path is None:
        return secrets.token_bytes(32)
    data = path.read_bytes().strip()
    if len(data) < 32:
        raise ValueError(f"{path}: a session key needs at least 32 bytes (openssl rand -hex 32)")
    return data


@dataclass(eq=False)
class Sessions:
    users: Users | None
    key: bytes
    store: Store
    lifetime: float = field(default=SESSION_LIFETIME, kw_only=True)
    now: Callable[[], float] = field(default=time.time, kw_only=True)
    # by principal source ("ldap", "oidc"): how such an identity is confirmed again
    rechecks: dict[str, Recheck] = field(default_factory=dict, kw_only=True)
    recheck_after: float = field(default=RECHECK_AFTER, kw_only=True)
    ended: int = field(default=0, init=False)  # sessions ended by a recheck here
    malformed: int = field(default=0, init=False)  # stored sessions refused as unreadable
    _source_failing: StateLogger = field(default_factory=lambda: StateLogger(log), init=False)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.key, nonce.encode(), hashlib.sha256).hexdigest()

    def credential(self, password_hash: str) -> str:
        """What a session row keeps of the password hash its login was checked against:
        enough to tell a changed password, nothing to check a password with."""
        if not password_hash:
            return ""
        digest = hmac.new(self.key, f"credential|{password_hash}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    async def issue(self, principal: Principal, *, password_hash: str = "") -> tuple[str, Session]:
        """A new session of `principal`, stored for every replica, and its cookie;
        `password_hash`: the users-file hash a password login was checked against."""
        now = self.now()
        credential = self.credential(password_hash)
        session = Session(
            principal, now + self.lifetime, secrets.token_urlsafe(18), now, credential=credential
        )
        stored: dict[str, object] = principal.as_dict()
        if credential:  # beside the principal: Principal.from_dict reads past it
            stored["credential"] = credential

        def apply(tx: Tx) -> None:
            tx.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            tx.execute(
                "INSERT INTO sessions (nonce, principal, identity, expires, checked) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    session.nonce,
                    json.dumps(stored, sort_keys=True),
                    principal.identity,
                    session.expires,
                    now,
                ),
            )

        await self.store.run(apply)
        return f"{session.nonce}.{self._sign(session.nonce)}", session

    def _nonce(self, cookie: str) -> str | None:
        """The cookie's nonce if it is signed with our key."""
        nonce, dot, signature = cookie.partition(".")
        expected = self._sign(nonce).encode()
        sent = signature.encode(errors="replace")  # a header may carry anything
        if not dot or not nonce or not hmac.compare_digest(sent, expected):
            return None
        return nonce

    async def verify(self, cookie: str) -> Session | None:
        """The cookie's session unless it is forged, expired, logged out or ended (on any
        replica: the store says), with its principal as its source sees it now. Raises
        when the store cannot answer."""
        nonce = self._nonce(cookie)
        if nonce is None:
            return None
        now = self.now()

        def read(tx: Tx) -> tuple[str, float, float, float] | None:
            row = tx.one(
                "SELECT principal, expires, checked, claimed FROM sessions "
                "WHERE nonce = ? AND revoked = 0 AND expires >= ?",
                (nonce, now),
            )
            if row is None:
                return None
            return str(row[0]), float(row[1]), float(row[2]), float(row[3])

        row = await self.store.read(read)
        if row is None:
            return None
        try:
            raw = json.loads(row[0])
            principal = Principal.from_dict(raw)
            credential = str(raw.get("credential", ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # one session refused, not every request: a row written by hand or by a newer
            # enoc that this one cannot read
            self.malformed += 1
            log.warning(
                "session %s... refused: its stored principal does not read: %s", nonce[:6], exc
            )
            return None
        session = Session(principal, row[1], nonce, row[2], row[3], credential)
        return await self._current(session, now)

    async def _current(self, session: Session, now: float) -> Session | None:
        principal = session.principal
        if principal.source == "local":
            user = None if self.users is None else self.users.by_name(principal.subject)
            if user is None:
                return None
            if session.credential and session.credential != self.credential(user.password_hash):
                # Its password changed. Refused, not ended here: a replica whose file is
                # older would end the sessions made with the new one; the watch of the
                # replica that loads the change ends them (`end_leavers`).
                return None
            return replace(session, principal=user.principal())
        recheck = self.rechecks.get(principal.source)
        if recheck is None:
            return None  # its source is no longer configured: nothing can confirm it
        if now - session.checked < self.recheck_after:
            return session
        # Only the request that claims the recheck asks the source: a console's requests
        # at once, on every replica, would each ask it (and an IdP that rotates refresh
        # tokens refuses the second use of one). The others go on with the session as
        # last confirmed, within the grace that an unanswered source gets too.
        lasts = now - session.checked < 2 * self.recheck_after
        if not await self._claim(session, now):
            return session if lasts else None
        try:
            confirmed = await recheck(principal)
        except Exception as exc:
            self._source_failing.failed(f"confirming {principal.source} identities", exc)
            return session if lasts else None  # not confirmed for too long: log in again
        self._source_failing.ok(f"confirming {principal.source} identities")
        if confirmed is None:
            self.ended += 1
            log.info(
                "session of %s ended: %s no longer grants it a role",
                principal.identity,
                principal.source,
                identity=principal.identity,
            )
            await self._end(session.nonce, now)
            return None
        current = replace(session, principal=confirmed, checked=now)

        def apply(tx: Tx) -> None:
            tx.execute(
                "UPDATE sessions SET principal = ?, checked = ? WHERE nonce = ?",
                (json.dumps(confirmed.as_dict(), sort_keys=True), now, session.nonce),
            )

        await self.store.run(apply)
        return current

    async def _claim(self, session: Session, now: float) -> bool:
        """Take the recheck of `session` unless another request holds it (claimed less
        than `CLAIM_HOLD` ago: a recheck that hangs longer lets the next request try)."""
        if now - session.claimed < min(CLAIM_HOLD, self.recheck_after / 2):
            return False

        def apply(tx: Tx) -> int:
            return tx.execute(
                "UPDATE sessions SET claimed = ? WHERE nonce = ? AND claimed = ?",
                (now, session.nonce, session.claimed),
            )

        return await self.store.run(apply) == 1

    async def _end(self, nonce: str, now: float) -> None:
        def apply(tx: Tx) -> None:
            tx.execute(
                "UPDATE sessions SET revoked = ? WHERE nonce = ? AND revoked = 0", (now, nonce)
            )
            tx.execute("DELETE FROM sessions WHERE expires < ?", (now,))

        await self.store.run(apply)

    async def revoke(self, session: Session) -> None:
        """Log the session out on every replica; sessions past their cookie's expiry go."""
        await self._end(session.nonce, self.now())

    async def end_identity(self, identity: str) -> int:
        """End every session of `identity` (`source:subject`) on every replica; how many."""
        now = self.now()

        def apply(tx: Tx) -> int:
            return tx.execute(
                "UPDATE sessions SET revoked = ? WHERE identity = ? AND revoked = 0",
                (now, identity),
            )

        return await self.store.run(apply)

    async def end_leavers(self, users: Users) -> dict[str, int]:
        """End, on every replica, the users-file sessions that `users` no longer holds:
        of a user not in it, or made with a password it no longer has (a row from before
        credentials were kept is judged by the user alone); how many, by user name."""
        now = self.now()

        def apply(tx: Tx) -> dict[str, int]:
            ended: dict[str, int] = {}
            for nonce, identity, stored in tx.all(
                "SELECT nonce, identity, principal FROM sessions "
                "WHERE revoked = 0 AND expires >= ? AND identity LIKE ?",
                (now, "local:%"),  # a parameter: psycopg reads a % in the SQL as its own
            ):
                name = str(identity).removeprefix("local:")
                user = users.by_name(name)
                credential = _credential(str(stored))
                if (
                    user is not None
                    and user.password_hash
                    and credential in ("", self.credential(user.password_hash))
                ):
                    continue
                if tx.execute(
                    "UPDATE sessions SET revoked = ? WHERE nonce = ? AND revoked = 0",
                    (now, nonce),
                ):
                    ended[name] = ended.get(name, 0) + 1
            return ended

        return await self.store.run(apply)


def _credential(stored: str) -> str:
    """A stored principal's credential; "" when it has none or does not read."""
    try:
        raw = json.loads(stored)
        return str(raw.get("credential", "")) if isinstance(raw, dict) else ""
    except ValueError:
        return ""


@dataclass(eq=False)
class LoginLimiter:
    """Failed logins per key (a client address and user name pair) with backoff, in the
    store so that every replica counts the same ones.

    A key's first `max_failures` failures go ahead at once; after that each attempt waits
    `backoff` from the key's latest failure, doubling with every further failure up to
    `backoff_max`. A key that, once allowed again, has no failure for `window` starts
    afresh, and so does one that succeeds.
    """

    store: Store
    max_failures: int = 5
    window: float = 300.0
    now: Callable[[], float] = time.time  # wall clock: replicas compare each other's times
    backoff: float = field(default=1.0, kw_only=True)
    backoff_max: float = field(default=900.0, kw_only=True)
    refused: int = field(default=0, init=False)  # attempts this replica refused

    def __post_init__(self) -> None:
        # failures beyond this many no longer lengthen the wait: older rows are dropped
        self.saturated = self.max_failures + max(
            0, math.ceil(math.log2(self.backoff_max / self.backoff))
        )

    @staticmethod
    def pair(address: str, name: str) -> str:
        """The key of a login: its client address and the name it gives, together, so
        that failures from one address never hold back the same name from another."""
        return f"pair:{address}\n{name}"

    def delay(self, failures: int) -> float:
        """How long after the latest of `failures` failures the next attempt may go."""
        if failures < self.max_failures:
            return 0.0
        doublings = min(failures - self.max_failures, self.saturated)
        return min(self.backoff_max, self.backoff * 2.0**doublings)

    @staticmethod
    def _hashed(keys: tuple[str, ...]) -> list[str]:
        return sorted({hashlib.sha256(k.encode()).hexdigest() for k in keys})

    async def attempt(self, *keys: str) -> float:
        """Take a login attempt's place: 0 when it may go ahead (it then counts as a
        failure of every key until `succeeded`), else the seconds until one may (and
        nothing is counted)."""
        hashed = self._hashed(keys)
        now = self.now()
        # a key whose latest failure is older than this has started afresh whatever its
        # count: the longest wait, then a quiet window
        forgotten = now - self.backoff_max - self.window

        def apply(tx: Tx) -> float:
            for key in hashed:  # sorted: replicas take the locks in one order
                tx.lock(f"login:{key}")
            tx.execute(
                "DELETE FROM login_failures WHERE at <= ? AND key NOT IN "
                "(SELECT key FROM login_failures WHERE at > ?)",
                (forgotten, forgotten),
            )
            wait = 0.0
            for key in hashed:
                times = [
                    float(r[0])
                    for r in tx.all(
                        "SELECT at FROM login_failures WHERE key = ? ORDER BY at", (key,)
                    )
                ]
                if not times:
                    continue
                allowed = times[-1] + self.delay(len(times))
                if now >= allowed + self.window:  # quiet since it was allowed again
                    tx.execute("DELETE FROM login_failures WHERE key = ?", (key,))
                    continue
                if len(times) > self.saturated:
                    tx.execute(
                        "DELETE FROM login_failures WHERE key = ? AND at < ?",
                        (key, times[-self.saturated]),
                    )
                wait = max(wait, allowed - now)
            if wait > 0:
                return wait
            tx.executemany(
                "INSERT INTO login_failures (key, at) VALUES (?, ?)", [(k, now) for k in hashed]
            )
            return 0.0

        wait = await self.store.run(apply)
        if wait > 0:
            self.refused += 1
        return wait

    async def succeeded(self, *keys: str) -> None:
        """A right password: its keys start afresh."""
        hashed = self._hashed(keys)

        def apply(tx: Tx) -> None:
            for key in hashed:
                tx.lock(f"login:{key}")
            for key in hashed:
                tx.execute("DELETE FROM login_failures WHERE key = ?", (key,))

        await self.store.run(apply)
