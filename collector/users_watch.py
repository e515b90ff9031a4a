"""The users file, read again when it changes: joiners and leavers without a restart.

`UsersWatch` looks at `http.users_file` every `CHECK_EVERY` seconds: when its
inode, size or modification time moved (and then kept still for `SETTLE`, so that
a file being written is not read half-way), it reads the file and, if its SHA-256
differs from the content last read, loads it and swaps the users in place
(`Users.take`): the API, its sessions and the password checks hold that one
object. A removed user's token is refused and its console sessions end; a user
whose password changed (or was taken away) loses the sessions made with the old
one (logged in again with the new one, it keeps them). At start and after each
load the sessions are checked against the users loaded and ended in the store
(`Sessions.end_leavers`), for every replica, so that a user put back or a
password set back does not bring them back, even where the file changed while
no collector ran; a store that cannot answer is asked again at each look until
it does. A changed role or scope holds from the next request. SIGHUP
(`poke`) reads the file at once, even unchanged: a `token_file` it names may have
changed, which the watch cannot see.

A file that fails to load (YAML, an unknown key, a bad role, a short token, a
duplicate name) keeps the users loaded before; its error, naming the file, line
and key, is logged once for that content, and counted
(`enoc_collector_users_file_reload_failures_total`). A file that cannot be read
(moved away mid-edit) is the same kind of failure, logged once until it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from collector.auth import Users
from collector.session import Sessions
from enoc.config import ConfigError
from enoc.lifecycle import ServiceBase
from enoc.logs import StateLogger, get_logger

log = get_logger("enoc.collector.users")

CHECK_EVERY = 2.0
# A file still being written (an editor saving in place) can read as valid YAML with
# users missing: a change is loaded only once the file has kept still this long.
SETTLE = 0.2

# what identifies a version of the file without reading it
_Stat = tuple[int, int, int]


class UsersWatch(ServiceBase):
    name = "users-file"

    def __init__(self, path: Path, users: Users, interval: float = CHECK_EVERY) -> None:
        super().__init__()
        self.path = path
        self.users = users
        self.interval = interval
        self.reloads = 0
        self.failures = 0
        self._stat = _stat(path)
        self._digest = _digest(path)  # of the content loaded at start
        self._poked = asyncio.Event()
        self._unreadable = False
        # the console's sessions (set once the API is made), held to the users loaded
        self.sessions: Sessions | None = None
        self._sweep = True  # at start: the file may have changed while no collector ran
        self._store_failing = StateLogger(log)

    def poke(self) -> None:
        """Read the file now, whether it changed or not (SIGHUP)."""
        self._poked.set()

    def counters(self) -> dict[str, float]:
        return {"users_file_reloads": self.reloads, "users_file_reload_failures": self.failures}

    async def _run(self) -> None:
        while not self.closing.is_set():
            await self.end_sessions()  # at start, and after a load
            waits = [asyncio.ensure_future(e.wait()) for e in (self.closing, self._poked)]
            try:
                await asyncio.wait(
                    waits, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for wait in waits:
                    wait.cancel()
            if self.closing.is_set():
                return
            forced = self._poked.is_set()
            self._poked.clear()
            await self.check(forced=forced)

    async def check(self, *, forced: bool = False) -> bool:
        """Load the file if it changed (or `forced`); whether new users were taken."""
        stat = _stat(self.path)
        if stat is None:
            self._failed(f"{self.path}: cannot be read; keeping the users loaded before")
            return False
        if stat == self._stat and not forced and not self._unreadable:
            return False
        await asyncio.sleep(SETTLE)
        if _stat(self.path) != stat:
            return False  # still being written: the next look sees it whole
        self._stat = stat
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            self._failed(f"{self.path}: {exc.strerror or exc}; keeping the users loaded before")
            return False
        self._unreadable = False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest and not forced:
            return False
        self._digest = digest  # a broken content is logged once, not at every change of stat
        try:
            # off the event loop: it reads token files and makes an argon2id decoy hash
            loaded = await asyncio.to_thread(Users.load, self.path)
        except (ConfigError, OSError, ValueError) as exc:
            self.failures += 1
            log.error(  # noqa: TRY400 - the message is the config error, no traceback
                "users file not reloaded, keeping the users loaded before:\n%s",
                exc,
                path=str(self.path),
            )
            return False
        before = {u.name for u in self.users.users}
        after = {u.name for u in loaded.users}
        self.users.take(loaded)
        self._sweep = True
        self.reloads += 1
        log.info(
            "users file reloaded: %d users (%d added, %d removed)",
            len(after),
            len(after - before),
            len(before - after),
            path=str(self.path),
            added=sorted(after - before),
            removed=sorted(before - after),
        )
        return True

    async def end_sessions(self) -> dict[str, int]:
        """End, in the store, the sessions of users no longer in the file or made with a
        password no longer theirs, when the users changed (or at start); how many, by
        user. A store that cannot answer is asked again at the next look."""
        if self.sessions is None or not self._sweep:
            return {}
        what = "ending the console sessions the users file no longer holds"
        try:
            ended = await self.sessions.end_leavers(self.users)
        except Exception as exc:  # the store: asked again at the next look
            self._store_failing.failed(what, exc, path=str(self.path))
            return {}
        self._store_failing.ok(what)
        self._sweep = False
        for name, count in sorted(ended.items()):
            log.info(
                "%d console sessions of %s ended: not in the users file, or made with "
                "another password",
                count,
                name,
                user=name,
                path=str(self.path),
            )
        return ended

    def _failed(self, message: str) -> None:
        if self._unreadable:
            return
        self._unreadable = True
        self.failures += 1
        log.error("%s", message, path=str(self.path))


def _stat(path: Path) -> _Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
