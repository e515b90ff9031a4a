"""Who may use the API: users, roles, bearer tokens and password hashes.

The users file (DESIGN: `http.users_file`) lists
`users: [{name, role, token | token_file, password_hash}]`. Tokens are
secrets (`${ENV}` or `token_file`), never logged; a request's token is
compared with every user's in constant time so response timing says nothing
about which prefix matched. Passwords (for the console login) are stored only
as scrypt hashes made by `hash_password` (`enoc passwd` prints one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from enoc.config import ConfigError, ConfigIssue, Secret, load_config

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}

# scrypt cost: n=2**15, r=8, p=1 is the current OWASP floor; ~50 ms and 32 MiB per check.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class User:
    name: str
    role: Role = "viewer"
    token: Secret | None = None
    password_hash: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a user needs a name")
        if self.password_hash and not self.password_hash.startswith("scrypt$"):
            raise ValueError('password_hash must be made by "enoc passwd" (scrypt$...)')
        if self.token is not None and len(self.token.reveal()) < 16:
            raise ValueError("a token must be at least 16 characters")

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class UsersFile:
    users: list[User] = field(default_factory=list)


class Users:
    """The loaded users file: token and password checks."""

    def __init__(self, users: list[User], source: str = "") -> None:
        names = [u.name for u in users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                [ConfigIssue(source, 0, "users", f"duplicate user names: {', '.join(duplicates)}")]
            )
        self.users = users
        self._tokens = [
            (hashlib.sha256(u.token.reveal().encode()).digest(), u)
            for u in users
            if u.token is not None
        ]
        # A fixed hash to check against when the name is unknown, so a login for an
        # unknown user costs as much as one for a known user with a wrong password.
        self._decoy = hash_password(secrets.token_hex(8))

    @classmethod
    def load(cls, path: Path) -> Users:
        return cls(load_config(path, UsersFile).users, str(path))

    def by_token(self, token: str) -> User | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: User | None = None
        for candidate, user in self._tokens:  # no early exit: constant time in the match
            if hmac.compare_digest(candidate, digest):
                found = user
        return found

    def by_name(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)

    def by_password(self, name: str, password: str) -> User | None:
        user = next((u for u in self.users if u.name == name), None)
        stored = user.password_hash if user is not None and user.password_hash else self._decoy
        ok = verify_password(password, stored)
        return user if ok and user is not None and user.password_hash else None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    return "$".join(
        [
            "scrypt",
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            _b64(salt),
            _b64(digest),
        ]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest + "==")
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt + "=="),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")
