"""Who may use the API: users, roles, bearer tokens and password hashes.

The users file (DESIGN: `http.users_file`) lists
`users: [{name, role, token | token_file, password_hash, scope}]` (scope:
collector/access.py). Tokens are
secrets (`${ENV}` or `token_file`), never logged; a request's token is
compared with every user's in constant time so response timing says nothing
about which prefix matched. Passwords (for the console login) are stored only
as argon2id hashes made by `hash_password` (`enoc passwd` prints one), at
OWASP's Password Storage Cheat Sheet configuration: 19 MiB, 2 passes, 1 lane.
Hashes made before (scrypt, N=2^15, r=8, p=1, below that guidance) still
verify; the users file is read-only configuration, so a login that verifies
one keeps an argon2id hash of the password in this process's memory for the
next logins and logs, once per user, that `enoc passwd` should replace it.

Each check costs a CPU for tens of milliseconds and 19 MiB: `HashGate` runs
at most one per worker thread (one per CPU by default) and refuses logins at
once beyond a bounded wait queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from collector.access import ROLE_RANK, Principal, Role, Scope, ScopeConfig
from collector.tokens import PREFIX as TOKEN_PREFIX
from collector.tokens import looks_like_token
from enoc.config import ConfigError, ConfigIssue, Secret, load_config
from enoc.logs import get_logger

log = get_logger("enoc.collector.auth")
T = TypeVar("T")


# OWASP's Password Storage Cheat Sheet: argon2id with at least 19 MiB, 2 passes, 1 lane.
# One lane: a check uses one CPU, so that HashGate's workers bound the CPUs taken.
HASHER = argon2.PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16
)
_ARGON2_PREFIX = "$argon2id$"
# Hashes made before argon2id (n=2**15, r=8, p=1: 32 MiB a check) are only verified.
_SCRYPT_PREFIX = "scrypt$"
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class User:
    name: str
    role: Role = "viewer"
    token: Secret | None = None
    password_hash: str = ""
    scope: ScopeConfig | None = None  # left out: everything

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a user needs a name")
        if self.password_hash and not _known_hash(self.password_hash):
            raise ValueError(
                'password_hash must be made by "enoc passwd"'
                " ($argon2id$..., or an older scrypt$...)"
            )
        if self.token is not None and len(self.token.reveal()) < 16:
            raise ValueError("a token must be at least 16 characters")
        if self.token is not None and looks_like_token(self.token.reveal()):
            # the API would look it up in the store, never here
            raise ValueError(
                f'a users-file token must not start with "{TOKEN_PREFIX}": those are the '
                "store's API tokens (enoc token create)"
            )

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def principal(self) -> Principal:
        return Principal(self.name, self.role, Scope.of(self.scope), "local", self.name)


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
        self.source = source
        self._tokens = [
            (hashlib.sha256(u.token.reveal().encode()).digest(), u)
            for u in users
            if u.token is not None
        ]
        # A fixed hash to check against when the name is unknown, so a login for an
        # unknown user costs as much as one for a known user with a wrong password.
        self._decoy = hash_password(secrets.token_hex(8))
        # name -> (the users file's hash, an argon2id hash of the same password): kept
        # here, not written back, because the users file is configuration
        self._upgraded: dict[str, tuple[str, str]] = {}
        self._upgrading = threading.Lock()  # checks run on several threads at once
        self.upgraded = 0  # old hashes replaced in memory after a login

    @classmethod
    def load(cls, path: Path) -> Users:
        return cls(load_config(path, UsersFile).users, str(path))

    def take(self, other: Users) -> None:
        """Become `other` (the users file read again), in place: the API, its sessions and
        the password checks' threads hold this object. Each lookup reads one attribute,
        and each is swapped whole, so a check running meanwhile sees the old users or
        the new ones; tokens go first, so that a removed user's is gone once its name is."""
        self._tokens = other._tokens
        self.users = other.users
        self.source = other.source

    def by_token(self, token: str) -> User | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: User | None = None
        for candidate, user in self._tokens:  # no early exit: constant time in the match
            if hmac.compare_digest(candidate, digest):
                found = user
        return found

    def by_name(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)

    def current_hash(self, user: User) -> str:
        """The hash a login of `user` is checked against: an upgrade of the file's hash
        made by an earlier login of this process, else the file's."""
        upgraded = self._upgraded.get(user.name)
        if upgraded is not None and upgraded[0] == user.password_hash:
            return upgraded[1]
        return user.password_hash

    def by_password(self, name: str, password: str) -> User | None:
        """The user whose password this is; a blocking call (a hash: run it in a thread)."""
        user = self.by_name(name)
        if user is None or not user.password_hash:
            verify_password(password, self._decoy)
            return None
        stored = self.current_hash(user)
        if not verify_password(password, stored):
            return None
        if needs_rehash(stored):
            upgrade = (user.password_hash, hash_password(password))
            with self._upgrading:
                if self._upgraded.get(user.name, ("", ""))[0] == user.password_hash:
                    return user  # another thread's login upgraded it meanwhile
                self._upgraded[user.name] = upgrade
                self.upgraded += 1
            log.warning(
                "user %s has a password hash older than argon2id at today's cost; this "
                "process keeps a new one in memory only: run `enoc passwd` and put its "
                "output in %s",
                user.name,
                self.source or "the users file",
                user=user.name,
            )
        return user


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (PHC string format, `$argon2id$v=19$m=...`)."""
    return HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (argon2id, or the older scrypt format)."""
    if stored.startswith(_ARGON2_PREFIX):
        try:
            return HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return _verify_scrypt(password, stored)


def needs_rehash(stored: str) -> bool:
    """Whether `stored` is weaker than what `hash_password` makes today."""
    if not stored.startswith(_ARGON2_PREFIX):
        return True
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _known_hash(stored: str) -> bool:
    if stored.startswith(_ARGON2_PREFIX):
        try:
            argon2.extract_parameters(stored)
        except InvalidHashError:
            return False
        return True
    return stored.startswith(_SCRYPT_PREFIX) and stored.count("$") == 5


def _verify_scrypt(password: str, stored: str) -> bool:
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


class HashingBusy(Exception):
    """Every hashing worker is busy and the wait queue is full."""


def cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class HashGate:
    """Password checks on at most `workers` threads at once, at most `queue` more waiting;
    beyond that `place` refuses at once (`HashingBusy`), so that a crowd of logins costs
    `workers` CPUs and `workers` x 19 MiB, not one of each per request."""

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("a hash gate needs at least one worker and a queue of 0 or more")
        self.workers = workers
        self.queue = queue
        # The pool's threads are the bound: a check whose request was cancelled still
        # holds its thread until it ends, so no more than `workers` ever run.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="enoc-hash")
        self._lock = threading.Lock()
        self.admitted = 0  # logins holding a place: hashing or waiting for a worker
        self.refused = 0

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        """A login's place, taken before it counts as an attempt, so that a login
        refused for load is not a failed login."""
        with self._lock:
            if self.admitted >= self.workers + self.queue:
                self.refused += 1
                raise HashingBusy("too many logins are being checked: try again in a second")
            self.admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1

    async def run(self, check: Callable[..., T], *args: object) -> T:
        """`check(*args)` on a hashing worker (not the event loop: tens of milliseconds)."""
        return await asyncio.wrap_future(self._pool.submit(check, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
