"""Console sessions: signed cookies, CSRF tokens and a login rate limit.

A session cookie is `name.expires.nonce.signature`, signed with HMAC-SHA256
under the collector's session key, so several replicas behind one load
balancer accept each other's sessions when they share the key
(`http.session_key_file`); without a file each process makes its own key and
a restart logs everyone out. The cookie is HttpOnly and SameSite=Strict; an
unsafe request (POST, DELETE) made with it must also carry the session's
CSRF token in `X-CSRF-Token`, which only the console's own page can read
(from the login answer or `/api/v1/whoami`).

Logins are rate-limited per client address and per user name: after
`max_failures` failures within `window` seconds further attempts get 429
until the window has passed, whether the password is right or not.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.auth import User, Users

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


class Sessions:
    def __init__(
        self,
        users: Users | None,
        key: bytes,
        *,
        lifetime: float = SESSION_LIFETIME,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.users = users
        self.key = key
        self.lifetime = lifetime
        self.now = now
        self.revoked: dict[str, float] = {}  # nonce -> expiry, for logout

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, user: User) -> tuple[str, Session]:
        session = Session(user, self.now() + self.lifetime, secrets.token_urlsafe(18))
        payload = f"{user.name.encode().hex()}.{int(session.expires)}.{session.nonce}"
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str) -> Session | None:
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
        if expires < self.now() or nonce in self.revoked:
            return None
        user = self.users.by_name(name)  # a user removed from the file loses the session
        if user is None:
            return None
        return Session(user, expires, nonce)

    def revoke(self, session: Session) -> None:
        now = self.now()
        self.revoked = {n: e for n, e in self.revoked.items() if e > now}
        self.revoked[session.nonce] = session.expires


class LoginLimiter:
    """Failed logins per key (client address, user name) within a sliding window."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 300.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.now = now
        self.failures: dict[str, deque[float]] = {}
        self.refused = 0

    def _recent(self, key: str) -> deque[float]:
        times = self.failures.get(key)
        if times is None:
            return deque()
        cutoff = self.now() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self.failures[key]
        return times

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again (0 when it may be tried now)."""
        wait = 0.0
        for key in keys:
            times = self._recent(key)
            if len(times) >= self.max_failures:
                wait = max(wait, times[0] + self.window - self.now())
        if wait > 0:
            self.refused += 1
        return wait

    def failed(self, *keys: str) -> None:
        for key in keys:
            self.failures.setdefault(key, deque()).append(self.now())
            if len(self.failures) > 100_000:  # an address sweep: forget the oldest keys
                self.failures.pop(next(iter(self.failures)))

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self.failures.pop(key, None)
