"""Sites partitioned between collector replicas: membership in the store, ownership by
highest-random-weight hashing, and the handover of a site from one replica to another.

Each replica heartbeats a row of `replicas` (schema 13) every `partition.heartbeat`:
its id, the URL of its API, its MQTT client id and `applied`, the membership it has
subscribed for. The live replicas are those whose heartbeat is at most
`partition.takeover` old; a site belongs to the live replica with the highest
`blake2b(replica, site)` (rendezvous hashing: each replica computes the same owner from
the same list, with nothing to coordinate; a replica that joins or leaves moves only
the sites it wins or held). The loop is the handful of lines below rather than a
library's: it needs only a hash, and hashlib's blake2b is the well-kept part.

The ingest (collector/ingest.py) subscribes to `enoc/v1/<site>/+/metrics` and
`.../events` of each site this replica `keeps`: the ones it owns and the ones it owned
until their new owner says (its row's `applied` is this replica's membership) that it
has subscribed to them. So a moving site is subscribed by both for a while (the
duplicates are one point, one event by its id) and never by neither. Status messages
still go to every replica (liveness, and the catalogue of sites to subscribe to).

Per-device state (the tag cache, the recent window, the capabilities) is kept only
for the sites kept: every round drops the rest (`forgetters`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import aiohttp
from aiohttp import web

from collector.config_partition import PartitionConfig
from collector.store import Store, Tx, store_unavailable
from enoc.lifecycle import ServiceBase
from enoc.logs import StateLogger, get_logger
from enoc.retry import pause

log = get_logger("enoc.collector.partition")
FORWARDED = "X-Enoc-Forwarded"  # a request one replica asked of another: answered locally
MAX_OWNERS_CACHED = 100_000  # sites whose owner is remembered until the members change
FORGOTTEN_AFTER = 3600.0  # s: a dead replica's row is deleted (its sessions long drained)


def weight(replica: str, site: str) -> bytes:
    """The replica's weight for the site: 8 bytes of blake2b, compared as bytes."""
    return hashlib.blake2b(f"{replica}\0{site}".encode(), digest_size=8).digest()


def owner(site: str, replicas: Iterable[str]) -> str | None:
    """The replica that owns `site` among `replicas` (None: there is none)."""
    return max(replicas, key=lambda r: (weight(r, site), r), default=None)


def assign(sites: Iterable[str], replicas: Sequence[str]) -> dict[str, set[str]]:
    """Each replica's sites."""
    out: dict[str, set[str]] = {r: set() for r in replicas}
    for site in sites:
        found = owner(site, replicas)
        if found is not None:
            out[found].add(site)
    return out


@dataclass(frozen=True)
class Member:
    id: str
    url: str
    client_id: str
    last_seen: float
    applied: str  # the membership (its ids joined by ",") it has subscribed for


Forgetter = Callable[[Callable[[str], bool]], object]


class Partition(ServiceBase):
    """This replica's place among the others: who is alive, which sites it keeps."""

    name = "partition"

    def __init__(
        self,
        config: PartitionConfig,
        store: Store,
        *,
        replica: str,
        client_id: str,
        url: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.config, self.store, self.clock = config, store, clock
        # what its heartbeat row says: its name, MQTT client id and API's URL
        self.id, self.client_id, self.url = replica, client_id, url
        self.members: tuple[str, ...] = ()  # none until the first round: it keeps nothing
        # each site's owner among `members`, until they change: every message asks, and
        # every round each device's state does (hashing each time: a hash per member
        # per device per round)
        self._owners: dict[str, str | None] = {}
        self.view = ""  # the members, joined by ","
        self.rows: dict[str, Member] = {}
        self.sites: set[str] = set()  # every site seen (statuses, the store's agents)
        self.held: set[str] = set()  # owned elsewhere now, kept until the owner subscribed
        self.lanes: dict[str, asyncio.Event] = {}  # the ingest's routed lanes: wake-ups
        self.applied_by: dict[str, str] = {}  # lane -> the view it has subscribed for
        self.forgetters: list[Forgetter] = []
        self.joined = 0  # membership changes seen: a replica joined
        self.left = 0  # ... a replica's heartbeat stopped
        self.released = 0  # sites let go once their new owner had them
        self.forgotten = 0  # per-device entries dropped
        self._failing = StateLogger(log)
        # takes what a dead replica's MQTT sessions hold (its client id): how many
        self.drain: Callable[[str], Awaitable[int]] | None = None
        self.drained = 0  # messages taken from dead replicas' sessions
        self._draining: dict[str, asyncio.Task[None]] = {}

    # ---------------------------------------------------------------- ownership

    def owns(self, site: str) -> bool:
        return self.owner(site) == self.id

    def owner(self, site: str) -> str | None:
        """The site's owner among the live members (None: there is none yet)."""
        try:
            return self._owners[site]
        except KeyError:
            if len(self._owners) >= MAX_OWNERS_CACHED:  # sites named by hostile input
                self._owners.clear()
            found = self._owners[site] = owner(site, self.members)
            return found

    def keeps(self, site: str) -> bool:
        """Whether this replica keeps the site's state and subscriptions."""
        return site in self.held or self.owns(site)

    def wanted(self) -> set[str]:
        """The known sites this replica subscribes to."""
        return {s for s in self.sites if self.keeps(s)}

    def owner_url(self, site: str) -> str | None:
        """The API of the replica that owns `site`, when it is another one."""
        found = self.owner(site)
        if found is None or found == self.id or found not in self.rows:
            return None
        return self.rows[found].url or None

    def saw(self, site: str) -> None:
        """A site in a status message: subscribed to at once when it is this replica's."""
        if site not in self.sites:
            self.sites.add(site)
            if self.owns(site):
                self._wake()

    def watch(self, lane: str) -> asyncio.Event:
        """The event set whenever what `lane` subscribes to changes."""
        event = self.lanes.setdefault(lane, asyncio.Event())
        event.set()
        return event

    def applied(self, lane: str, view: str) -> None:
        """`lane` subscribed to every site this replica keeps under membership `view`."""
        self.applied_by[lane] = view

    @property
    def applied_view(self) -> str:
        """The membership every routed lane has subscribed for ("" while one has not)."""
        if self.lanes and all(self.applied_by.get(lane) == self.view for lane in self.lanes):
            return self.view
        return ""

    def _wake(self) -> None:
        for event in self.lanes.values():
            event.set()

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        await self.round()

    async def _run(self) -> None:
        while not await pause(self.closing, self.config.interval):
            try:
                await self.round()
                self._failing.ok("partition heartbeat")
            except Exception as exc:
                if not store_unavailable(exc):
                    raise
                # the store is down: the others stop seeing this replica too, and
                # take its sites; it keeps what it has until it reads them again
                self._failing.failed("partition heartbeat", exc)

    async def round(self) -> None:
        """Heartbeat, read the members and the sites, move and forget what moved."""
        now = self.clock()
        me = Member(self.id, self.url(), self.client_id, now, self.applied_view)

        def beat(tx: Tx) -> tuple[list[Member], list[str]]:
            tx.execute(
                "INSERT INTO replicas (id, url, client_id, last_seen, applied) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET url = excluded.url, "
                "client_id = excluded.client_id, last_seen = excluded.last_seen, "
                "applied = excluded.applied",
                (me.id, me.url, me.client_id, me.last_seen, me.applied),
            )
            tx.execute("DELETE FROM replicas WHERE last_seen < ?", (now - FORGOTTEN_AFTER,))
            rows = tx.all("SELECT id, url, client_id, last_seen, applied FROM replicas")
            sites = [str(r[0]) for r in tx.all("SELECT DISTINCT site FROM agents")]
            members = [Member(str(a), str(b), str(c), float(d), str(e)) for a, b, c, d, e in rows]
            return members, sites

        rows, sites = await self.store.run(beat)
        for site in sites:  # one another replica wrote first is this one's to subscribe too
            self.saw(site)
        self.apply(rows, now)

    def apply(self, rows: list[Member], now: float) -> None:
        """Take the members' rows as read at `now`: the live ones, the handovers done."""
        takeover = float(self.config.takeover)
        self.rows = {m.id: m for m in rows}
        live = tuple(sorted({m.id for m in rows if now - m.last_seen <= takeover} | {self.id}))
        changed = False
        if live != self.members:
            before = self.wanted()
            gone = set(self.members) - set(live)
            came = set(live) - set(self.members)
            self.left += len(gone)
            self.joined += len(came)
            self.members, self.view = live, ",".join(live)
            self._owners.clear()
            # what it had and another owns now stays until that one has subscribed
            self.held |= {s for s in before if not self.owns(s)}
            log.info(
                "replicas %s (joined: %s, gone: %s): this one owns %d of %d sites",
                self.view,
                ",".join(sorted(came)) or "-",
                ",".join(sorted(gone)) or "-",
                sum(1 for s in self.sites if self.owns(s)),
                len(self.sites),
            )
            changed = True
        for site in list(self.held):
            new = self.owner(site)
            member = self.rows.get(new or "")
            if new == self.id or member is None or member.applied == self.view:
                self.held.discard(site)
                self.released += new != self.id
                changed = True
        if changed:
            self._wake()
        if self.drain is not None:
            self._adopt(rows, now)
        for forget in self.forgetters:  # every round: a late message may have added some
            dropped = forget(self.keeps)
            self.forgotten += dropped if isinstance(dropped, int) else 0

    def _adopt(self, rows: list[Member], now: float) -> None:
        """Drain the sessions of each dead replica this one adopts (the owner of its id
        among the live): what was published to them between its death and the
        takeover. Only once every live replica has subscribed for the members without
        it, so that whatever comes later goes to the new owners; then its row goes."""
        takeover = float(self.config.takeover)
        settled = self.applied_view == self.view and all(
            m.applied == self.view for m in rows if m.id in self.members
        )
        for member in rows:
            dead = now - member.last_seen > takeover and member.id not in self.members
            if not dead or not settled or member.id in self._draining:
                continue
            if not member.client_id or owner(member.id, self.members) != self.id:
                continue
            task = asyncio.ensure_future(self._drain(member))
            self._draining[member.id] = task
            task.add_done_callback(partial(self._drained, member.id))

    def _drained(self, name: str, _task: asyncio.Task[None]) -> None:
        self._draining.pop(name, None)

    async def _drain(self, member: Member) -> None:
        assert self.drain is not None
        try:
            # a replica that came back (a rolling restart) resumes its sessions itself:
            # draining them would take them from it under the same client id
            seen = await self.store.run(
                lambda tx: tx.all("SELECT last_seen FROM replicas WHERE id = ?", (member.id,))
            )
            if not seen or float(seen[0][0]) != member.last_seen:
                return
            taken = await self.drain(member.client_id)
            await self.store.run(
                lambda tx: tx.execute(
                    "DELETE FROM replicas WHERE id = ? AND last_seen = ?",
                    (member.id, member.last_seen),
                )
            )
        except Exception as exc:  # the broker or the store: again at a later round
            log.warning("draining the sessions of dead replica %s failed: %s", member.id, exc)
            return
        self.drained += taken
        log.info("took %d message(s) left in dead replica %s's sessions", taken, member.id)

    async def _close(self) -> None:
        for task in list(self._draining.values()):
            task.cancel()
        await asyncio.gather(*self._draining.values(), return_exceptions=True)
        await self.leave()

    async def leave(self) -> None:
        """A clean stop (after the lanes closed): the row's heartbeat is set just past
        `takeover`, so the others take this replica's sites at their next round rather
        than `takeover` later, and one of them drains its sessions (the row stays until
        then, as a dead replica's)."""
        gone = self.clock() - float(self.config.takeover) - 1

        def mark(tx: Tx) -> None:
            tx.execute("UPDATE replicas SET last_seen = ? WHERE id = ?", (gone, self.id))

        try:
            await self.store.run(mark)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            log.warning(
                "cannot tell the other replicas this one leaves (%s): they take its sites "
                "after partition.takeover",
                exc,
            )
            return
        log.info("left the replicas: the others take this one's sites at their next round")

    def counters(self) -> dict[str, float]:
        return {
            "partition_replicas": len(self.members),
            "partition_sites_owned": sum(1 for s in self.sites if self.owns(s)),
            "partition_sites_held": len(self.held),
            "partition_sites_known": len(self.sites),
            # 1 once every lane subscribed to this replica's sites under the current members
            "partition_applied": int(bool(self.view) and self.applied_view == self.view),
            "partition_joined": self.joined,
            "partition_left": self.left,
            "partition_released": self.released,
            "partition_forgotten": self.forgotten,
            "partition_drained": self.drained,
        }


async def ask_owner(request: web.Request, url: str) -> web.Response | None:
    """The answer of the replica at `url` to `request` (a device page of a site it owns),
    asked with the caller's own credentials; None when it cannot answer (the caller
    answers from what it has)."""
    headers = {FORWARDED: "1"}
    for name in ("Authorization", "Cookie"):
        if name in request.headers:
            headers[name] = request.headers[name]
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url.rstrip("/") + request.path_qs, headers=headers) as answer,
        ):
            body = await answer.read()
            if answer.status >= 500:
                return None
            return web.Response(body=body, status=answer.status, content_type=answer.content_type)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("the owner of a device page at %s cannot answer: %s", url, exc)
        return None
