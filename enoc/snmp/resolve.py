"""Device host names to addresses, cached, for the SNMP client.

An inventory host may be a DNS name. Each is resolved with the event loop's
getaddrinfo (the system resolver, /etc/hosts included) and the first address
it gives (RFC 6724 order) is kept for `ttl` seconds. When a re-resolution
fails, the last good address stays in use for `stale_for` seconds more, so a
DNS outage does not take a site's polling down with it; the failure is logged
once, and once more when the name resolves again. A name with no address at
all fails with `ResolveError`, which the client reports as the poll-failure
kind `dns`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from enoc.logs import StateLogger, get_logger

log = logging.getLogger("enoc.snmp.resolve")

DEFAULT_TTL = 300.0
STALE_FOR = 3600.0  # how long a last good address outlives a failing name
RETRY_AFTER = 30.0  # a failing name is asked again at most this often
LOOKUP_TIMEOUT = 5.0

Lookup = Callable[[str], Awaitable[list[str]]]


class ResolveError(Exception):
    """A host name that gives no address (and has no recent good one)."""


@dataclass(frozen=True)
class DnsSettings:
    ttl: float = DEFAULT_TTL  # an address is used this long before the name is asked again
    stale_for: float = STALE_FOR
    retry_after: float = RETRY_AFTER
    timeout: float = LOOKUP_TIMEOUT


@dataclass
class _Entry:
    address: str | None  # the last good address, if any
    fresh_until: float  # ask again after this
    good_until: float  # the address may be used until this


async def getaddrinfo(host: str) -> list[str]:
    """The addresses of `host` in the order the system resolver prefers them."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    return [str(info[4][0]) for info in infos]


def literal(host: str) -> str | None:
    """The canonical text of an IP address literal (as a socket reports it), else None."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return None


class DnsCache:
    """Names to addresses with a TTL; literals pass through, canonicalised."""

    def __init__(
        self,
        settings: DnsSettings | None = None,
        *,
        lookup: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings or DnsSettings()
        self.lookup = lookup or getaddrinfo
        self.clock = clock
        self.on_change = on_change  # (name, new address): whoever keys on addresses re-keys
        self.lookups = 0
        self.failures = 0
        self._literals: dict[str, str] = {}
        self._entries: dict[str, _Entry] = {}
        self._failing = StateLogger(get_logger("enoc.snmp.resolve"))

    def cached(self, host: str) -> str | None:
        """The address to use now without a lookup, or None when one is due."""
        address = self._literals.get(host)
        if address is not None:
            return address
        entry = self._entries.get(host)
        if entry is not None and entry.address is not None and self.clock() < entry.fresh_until:
            return entry.address
        address = literal(host)
        if address is not None:
            self._literals[host] = address
        return address

    def known(self, host: str) -> str | None:
        """The last good address of `host` (a literal: itself), however old."""
        entry = self._entries.get(host)
        return literal(host) or (entry.address if entry is not None else None)

    async def resolve(self, host: str) -> str:
        address = self.cached(host)
        if address is not None:
            return address
        now = self.clock()
        settings = self.settings
        entry = self._entries.get(host)
        if entry is not None and now < entry.fresh_until:  # failing, asked again later
            return self._stale(host, entry, now, "")
        self.lookups += 1
        try:
            async with asyncio.timeout(settings.timeout):
                addresses = await self.lookup(host)
            if not addresses:
                raise ResolveError(f"{host} has no address")
        except (OSError, TimeoutError, ResolveError, UnicodeError) as exc:
            self.failures += 1
            reason = str(exc) or type(exc).__name__
            self._failing.failed(f"resolving {host}", reason)
            if entry is None:
                entry = self._entries[host] = _Entry(None, 0.0, 0.0)
            entry.fresh_until = now + min(settings.retry_after, settings.ttl)
            return self._stale(host, entry, now, reason)
        address = literal(addresses[0]) or addresses[0]
        self._failing.ok(f"resolving {host}")
        fresh_until = now + settings.ttl
        self._entries[host] = _Entry(address, fresh_until, fresh_until + settings.stale_for)
        if (entry is None or entry.address != address) and self.on_change is not None:
            self.on_change(host, address)
        return address

    def _stale(self, host: str, entry: _Entry, now: float, reason: str) -> str:
        if entry.address is not None and now < entry.good_until:
            return entry.address
        raise ResolveError(f"{host} does not resolve" + (f": {reason}" if reason else ""))

    def forget(self, host: str) -> None:
        self._entries.pop(host, None)
        self._literals.pop(host, None)
