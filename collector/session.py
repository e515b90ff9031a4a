"""Console sessions: signed cookies, CSRF tokens and a login rate limit, shared by replicas.

A session cookie is `name.expires.nonce.signature`, signed with HMAC-SHA256
under the collector's session key, so several replicas behind one load
balancer accept each other's sessions when they share the key
(`http.session_key_file`); without a file each process makes its own key and
a restart logs everyone out. The cookie is HttpOnly and SameSite=Strict; an
unsafe request (POST, DELETE) made with it must also carry the session's
CSRF token in `X-CSRF-Token`, which only the console's own page can read
(from the login answer or `/api/v1/whoami`).

What replicas must agree on lives in the incident store, one code path for
SQLite and PostgreSQL (collector/store.py, schema 5):

- `session_revocations`: the nonce of every session logged out, until the
  cookie would have expired anyway (then pruned). A logout on one replica is
  refused on every other from the next request on: each cookie check reads it.
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
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.auth import User, Users
from collector.store import Store, Tx

COOKIE = "enoc_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = 12 * 3600.0  # one NOC shift


@dataclass(frozen=True)
class Session:
    user: User
    expires: float
    nonce: str

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

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, user: User) -> tuple[str, Session]:
        session = Session(user, self.now() + self.lifetime, secrets.token_urlsafe(18))
        payload = f"{user.name.encode().hex()}.{int(session.expires)}.{session.nonce}"
        return f"{payload}.{self._sign(payload)}", session

    def signed(self, cookie: str) -> Session | None:
        """The session a cookie carries if it is signed with our key, unexpired and of a
        user still in the users file; revocation is not checked (see `verify`)."""
        if self.users is None or cookie.count(".") != 3:
            return None
        name_hex, expires_raw, nonce, signature = cookie.split(".")
        payload = f"{name_hex}.{expires_raw}.{nonce}"
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            name = bytes.fromhex(name_hex).decode()
            expires = float(expires_raw)
        except ValueError:
            return None
        if expires < self.now():
            return None
        user = self.users.by_name(name)  # a user removed from the file loses the session
        if user is None:
            return None
        return Session(user, expires, nonce)

    async def verify(self, cookie: str) -> Session | None:
        """The cookie's session unless it is forged, expired, of a removed user or logged
        out (on any replica: the store says). Raises when the store cannot answer."""
        session = self.signed(cookie)
        if session is None:
            return None

        def revoked(tx: Tx) -> bool:
            row = tx.one("SELECT 1 FROM session_revocations WHERE nonce = ?", (session.nonce,))
            return row is not None

        return None if await self.store.read(revoked) else session

    async def revoke(self, session: Session) -> None:
        """Log the session out on every replica; revocations past their cookie's expiry go."""
        now = self.now()

        def apply(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO session_revocations (nonce, expires) VALUES (?, ?) "
                "ON CONFLICT (nonce) DO NOTHING",
                (session.nonce, session.expires),
            )
            tx.execute("DELETE FROM session_revocations WHERE expires < ?", (now,))

        await self.store.run(apply)


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
