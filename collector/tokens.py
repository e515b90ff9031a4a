"""API tokens kept in the incident store: hashed at rest, each with a role, a scope and
an expiry, listed and revoked by an admin (`enoc token`, `/api/v1/tokens`).

A token reads `enoc_<id>_<secret>`: `id` is 16 hex digits naming its row, `secret`
256 random bits in 64 hex digits. The prefix lets the API tell these from users-file
tokens at a glance and lets secret scanners find a leaked one (GitHub's `ghp_`); an
underscore, unlike `-`, keeps the whole token under one double-click.

The store keeps the SHA-256 of the secret, never the secret: a copy of the database
(a backup, a replica's disk) does not let anyone call the API. A fast hash is right
here, unlike for passwords: a password is guessable and needs a slow, salted hash
(argon2id, collector/auth.py) to make each guess dear, but a 256-bit random secret
cannot be guessed at any speed, so a slow hash would only cost every request CPU
time. GitHub and GitLab keep their personal access tokens the same way, as a
SHA-256 digest looked up on each request. The row is found by its id and the
digests compared in constant time, so timing says nothing about a near miss.

Each request reads the token's row: a revocation on one replica holds on every
other from its next request, and so does the expiry. `last_used` is written at
most once a `LAST_USED_EVERY` per token, so that a busy script does not turn
every read into a write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.access import ROLE_RANK, Principal, Role, Scope
from collector.store import Store, Tx
from enoc.config import Duration
from enoc.logs import get_logger

log = get_logger("enoc.collector.tokens")

PREFIX = "enoc_"
TOKEN_RE = re.compile(r"enoc_([0-9a-f]{16})_([0-9a-f]{64})")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{16}")
DEFAULT_EXPIRY = 90 * 86400.0  # GitLab's and GitHub's suggested lifetime of an access token
LAST_USED_EVERY = 60.0
MAX_NAME = 200

# a constant, never input: the f-strings that name it are not injections (S608)
_COLUMNS = "id, name, role, scope, created, created_by, expires, revoked, revoked_by, last_used"


def looks_like_token(text: str) -> bool:
    """Whether a bearer token is one of ours (else it is a users-file token)."""
    return text.startswith(PREFIX)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: everything but its secret."""

    id: str
    name: str
    role: Role
    scope: Scope
    created: float
    created_by: str  # the identity that made it: `local:alice`, `cli:root`
    expires: float | None  # None: never
    revoked: float = 0.0
    revoked_by: str = ""
    last_used: float = 0.0

    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.scope, "token", self.id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "scope": self.scope.as_dict(),
            "created": self.created,
            "created_by": self.created_by,
            "expires": self.expires,
            "revoked": self.revoked or None,
            "revoked_by": self.revoked_by,
            "last_used": self.last_used or None,
        }

    def audited(self) -> dict[str, Any]:
        """What the audit log says of a token made: all but the secret."""
        shown = self.as_dict()
        return {"token": self.id, **{k: shown[k] for k in ("name", "role", "scope", "expires")}}

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TokenInfo:
        role = str(row[2])
        if role not in ROLE_RANK:
            raise ValueError(f"token {row[0]} has an unknown role {role!r}")
        return cls(
            str(row[0]),
            str(row[1]),
            role,  # type: ignore[arg-type]  # checked above
            Scope.from_dict(json.loads(str(row[3]))),
            float(row[4]),
            str(row[5]),
            None if row[6] is None else float(row[6]),
            float(row[7]),
            str(row[8]),
            float(row[9]),
        )


class Tokens:
    """The store's API tokens: made, listed, revoked and checked on every replica alike."""

    def __init__(self, store: Store, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.now = now  # wall clock: replicas compare each other's expiry times
        self.refused = 0  # tokens of ours refused: unknown, wrong secret, expired, revoked

    async def create(
        self,
        name: str,
        role: Role,
        scope: Scope,
        created_by: str,
        expires_in: float | None = DEFAULT_EXPIRY,
    ) -> tuple[str, TokenInfo]:
        """A new token and its text, which is shown this once and kept nowhere."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"a token needs a name of 1 to {MAX_NAME} characters")
        if role not in ROLE_RANK:
            raise ValueError(f"role must be one of {', '.join(ROLE_RANK)}, got {role!r}")
        if expires_in is not None and expires_in <= 0:
            raise ValueError("a token's expiry must be in the future")
        now = self.now()
        token_id, secret = secrets.token_hex(8), secrets.token_hex(32)
        info = TokenInfo(
            token_id,
            name,
            role,
            scope,
            now,
            created_by,
            None if expires_in is None else now + expires_in,
        )

        def apply(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO api_tokens (id, name, digest, role, scope, created, created_by, "
                "expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token_id,
                    name,
                    digest(secret),
                    role,
                    json.dumps(scope.as_dict(), sort_keys=True),
                    now,
                    created_by,
                    info.expires,
                ),
            )

        await self.store.run(apply)
        return f"{PREFIX}{token_id}_{secret}", info

    async def list(self) -> list[TokenInfo]:
        """Every token, the newest first, revoked and expired ones too."""

        def read(tx: Tx) -> list[TokenInfo]:
            rows = tx.all(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created DESC, id")  # noqa: S608
            found = []
            for row in rows:
                try:
                    found.append(TokenInfo.from_row(row))
                except (ValueError, TypeError, AttributeError) as exc:  # one row, not the list
                    log.warning("token %s left out: its row does not read: %s", row[0], exc)
            return found

        return await self.store.read(read)

    async def revoke(self, token_id: str, by: str) -> TokenInfo | None:
        """Revoke a token on every replica; None when no token has that id. Revoking one
        already revoked keeps its first revocation."""
        now = self.now()

        def apply(tx: Tx) -> TokenInfo | None:
            tx.execute(
                "UPDATE api_tokens SET revoked = ?, revoked_by = ? WHERE id = ? AND revoked = 0",
                (now, by, token_id),
            )
            row = tx.one(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,))  # noqa: S608
            return None if row is None else TokenInfo.from_row(row)

        return await self.store.run(apply)

    async def authenticate(self, text: str) -> Principal | None:
        """The principal of a token of ours, or None when it is malformed, unknown, wrong,
        expired or revoked. Raises when the store cannot answer."""
        match = TOKEN_RE.fullmatch(text)
        if match is None:
            self.refused += 1
            return None
        token_id, secret = match.groups()
        now = self.now()

        def read(tx: Tx) -> tuple[str, TokenInfo] | None:
            sql = f"SELECT digest, {_COLUMNS} FROM api_tokens WHERE id = ?"  # noqa: S608
            row = tx.one(sql, (token_id,))
            return None if row is None else (str(row[0]), TokenInfo.from_row(row[1:]))

        try:
            found = await self.store.read(read)
        except (ValueError, TypeError, AttributeError) as exc:  # this token's row, not the store
            log.warning("token %s refused: its row does not read: %s", token_id, exc)
            found = None
        if found is None:
            self.refused += 1
            return None
        stored, info = found
        right = hmac.compare_digest(stored, digest(secret))
        if not right or info.revoked or (info.expires is not None and info.expires <= now):
            self.refused += 1
            return None
        if now - info.last_used >= LAST_USED_EVERY:

            def used(tx: Tx) -> None:
                tx.execute(
                    "UPDATE api_tokens SET last_used = ? WHERE id = ? AND last_used < ?",
                    (now, token_id, now - LAST_USED_EVERY),
                )

            await self.store.run(used)
        return info.principal()


def parse_expiry(text: str) -> float | None:
    """`--expires` and the API's `expires`: a duration like `90d` or `12h`, or `never`."""
    if text.strip().lower() == "never":
        return None
    try:
        seconds = float(Duration.parse(text))
    except ValueError:
        message = f'expires must be a duration like "90d" or "never", got {text!r}'
        raise ValueError(message) from None
    if seconds <= 0:
        raise ValueError(f"expires must be above 0, got {text!r}")
    return seconds
