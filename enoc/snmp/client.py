"""An asyncio SNMP manager: GET and GETBULK walks over v2c and v3 USM, GET and GETNEXT walks
over v1, on one UDP socket per address family.

Why not pysnmp here: its `bulk_cmd` decodes too few varbinds per CPU-second
for one agent process to poll a thousand 48-interface devices a minute, which
this codec does with room to spare (docs/performance.md; `enoc bench agent`
shows it end to end).

One socket serves every request; responses are matched by request id (v2c)
or message id (v3) and by the address they came from. v3 engines are
discovered on first use and re-synchronised from the device's own Report
after a reboot (notInTimeWindow) or a new engine ID (unknownEngineID), so
polling recovers without a restart.

SNMPv1 answers a missing object with a noSuchName error that names one varbind
and drops the rest of the answer: the client asks again without it, as an
RFC 3584 proxy does, so a v1 device gives what a v2c one gives. A host that is
a DNS name is resolved through `enoc.snmp.resolve` (cached); one that does
not resolve fails its request with the kind `dns`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from enoc.snmp import ber
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    FLAG_REPORTABLE,
    NO_ERROR,
    NO_SUCH_NAME,
    TOO_BIG,
    V2C,
    V3,
    ExchangeCounts,
    ResponsePdu,
    V3Header,
    build_v1_message,
    build_v2c_message,
    build_v3_message,
    encode_null_varbinds,
    encode_pdu,
    encode_scoped,
    parse_response_pdu,
    parse_v3_header,
)
from enoc.snmp.message import V1 as VERSION_1
from enoc.snmp.resolve import DnsCache, ResolveError
from enoc.snmp.usm import (
    REPORT_KINDS,
    USM_STATS_NOT_IN_TIME_WINDOWS,
    USM_STATS_UNKNOWN_ENGINE_IDS,
    DecryptionError,
    KeyCache,
    LocalizedUser,
    UsmUser,
)

log = logging.getLogger("enoc.snmp")

MAX_MESSAGE_SIZE = 65507
# A timeout right after an answer (the poll's GET, an earlier page of the walk) means a
# response too big to arrive, not a dead device.
JUST_ANSWERED = 30.0
GROW_AFTER = 20  # clean walks at a shrunk max-repetitions before trying twice the size
# Localized keys kept (user and engine ID): an engine ID comes from an unauthenticated
# discovery Report, so a device that keeps changing it must not grow the cache forever.
KEY_CACHE_SIZE = 4096
Varbind = tuple[Oid, int, object]


class SnmpError(Exception):
    """A request that produced no usable answer; `kind` names the counter."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind


class SnmpTimeout(SnmpError):
    """Silence: no datagram at all from the device while the request waited."""

    def __init__(self) -> None:
        super().__init__("timeout")


class SnmpUndecodable(SnmpError):
    """The device answered, but nothing it sent decodes (cut short, not BER)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("undecodable", message)


class SnmpMisaddressed(SnmpError):
    """The device answered, but only with ids of other requests (a broken agent answering
    the request before, or answers so late that their request gave up)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("misaddressed", message)


class SnmpUnresolved(SnmpError):
    """The device's name does not resolve, and no earlier address of it is still in use."""

    def __init__(self, message: str = "") -> None:
        super().__init__("dns", message)


class SnmpNoIpv6(SnmpError):
    """An IPv6 device, and this host has no IPv6 socket to reach it with."""

    def __init__(self, message: str = "") -> None:
        super().__init__("ipv6", message)


@dataclass
class _Waiting:
    """A request waiting for its answer, and what else its device sent meanwhile."""

    address: tuple[str, int]
    future: asyncio.Future[bytes]
    noise: set[str] = field(default_factory=set)  # "malformed", "stray"


@dataclass(frozen=True)
class V1:
    community: bytes


@dataclass(frozen=True)
class V2c:
    community: bytes


@dataclass(frozen=True)
class V3User:
    user: UsmUser


@dataclass(frozen=True)
class Target:
    host: str  # an IPv4 or IPv6 address, or a DNS name
    port: int
    auth: V1 | V2c | V3User

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass
class _Engine:
    """What a v3 device told us about its engine, and our keys localized to it."""

    engine_id: bytes
    boots: int
    etime: int
    seen_at: float
    keys: LocalizedUser | None

    def time_now(self) -> int:
        return self.etime + int(time.monotonic() - self.seen_at)


@dataclass
class ClientStats(ExchangeCounts):
    timeouts: int = 0
    retries: int = 0
    fallbacks: int = 0  # walks that shrank max-repetitions after tooBig or a timeout
    rediscoveries: int = 0
    key_evictions: int = 0  # localized keys dropped from the full cache (least recently used)


class SnmpClient(asyncio.DatagramProtocol):
    """Shared by every device of an agent. `open()` before use, `close()` after."""

    def __init__(
        self, *, timeout: float = 2.0, retries: int = 1, resolver: DnsCache | None = None
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.stats = ClientStats()
        self.resolver = resolver or DnsCache()
        self._transport: asyncio.DatagramTransport | None = None
        self._transport6: asyncio.DatagramTransport | None = None
        self._no_ipv6 = ""  # why no IPv6 socket could be opened
        self._pending: dict[int, _Waiting] = {}
        self._waiting: dict[tuple[str, int], set[int]] = {}  # address -> ids pending
        self._ids = itertools.count(int(time.time()) & 0xFFFFFF)
        self._engines: dict[tuple[str, int, UsmUser], _Engine] = {}
        self._keys = KeyCache(KEY_CACHE_SIZE)
        self._max_rep: dict[tuple[str, int], int] = {}
        self._walks_ok: dict[tuple[str, int], int] = {}  # clean walks at a shrunk size
        self._answered: dict[tuple[str, int], float] = {}  # last answer (monotonic)
        self._logged: set[str] = set()

    # ---------------------------------------------------------------- socket

    async def open(self, local_host: str = "0.0.0.0", local_host6: str = "") -> None:  # noqa: S104
        """Bind the IPv4 socket to `local_host` and the IPv6 one to `local_host6`; by
        default ::1 beside an IPv4 loopback source, else any address."""
        loop = asyncio.get_running_loop()
        if not local_host6:
            local_host6 = "::1" if ipaddress.ip_address(local_host).is_loopback else "::"
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(local_host, 0), family=socket.AF_INET
        )
        _grow_buffer(transport)
        self._transport = transport
        # A second socket for IPv6 devices, v6-only so IPv4 answers keep their plain form
        # (not ::ffff:a.b.c.d) and match their requests; a host without IPv6 polls IPv4 only.
        sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock6.bind((local_host6, 0))
            sock6.setblocking(False)
            transport6, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock6)
        except OSError as exc:
            sock6.close()
            self._no_ipv6 = str(exc)
            log.info("no IPv6 socket (%s): IPv6 devices cannot be polled", exc)
        else:
            _grow_buffer(transport6)
            self._transport6 = transport6

    def close(self) -> None:
        for transport in (self._transport, self._transport6):
            if transport is not None:
                transport.close()
        self._transport = self._transport6 = None
        for waiting in self._pending.values():
            if not waiting.future.done():
                waiting.future.cancel()
        self._pending.clear()
        self._waiting.clear()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        address = (str(addr[0]), int(str(addr[1])))
        try:
            request_id = _peek_id(data)
        except BerError as exc:
            self._bad("malformed", f"undecodable datagram from {address[0]}: {exc}")
            self._noise(address, "malformed")
            return
        entry = self._pending.get(request_id)
        if entry is None or entry.address != address or entry.future.done():
            self._bad(
                "stray",
                f"an answer from {address[0]}:{address[1]} that no request waits for (a late "
                "answer to a request that gave up, another request's id, or spoofed)",
            )
            self._noise(address, "stray")
            return
        entry.future.set_result(data)

    def _noise(self, address: tuple[str, int], kind: str) -> None:
        """A bad datagram from a device we are waiting on: if the wait ends in a timeout,
        the device did answer, and the failure says how (undecodable, misaddressed)."""
        for request_id in self._waiting.get(address, ()):
            self._pending[request_id].noise.add(kind)

    def error_received(self, exc: Exception) -> None:
        self.stats.bad["socket_error"] += 1

    def _bad(self, kind: str, message: str) -> None:
        self.stats.bad[kind] += 1
        if kind not in self._logged:  # log once per kind; the counters carry the rest
            self._logged.add(kind)
            log.warning("snmp %s (logged once; counted in stats): %s", kind, message)

    def note_bad(self, kind: str, message: str) -> None:
        """Count (and log the first of its kind) bad input found above the codec: an answer
        that decoded but cannot be right, such as a number sent as a string."""
        self._bad(kind, message)

    # ---------------------------------------------------------------- requests

    async def get(self, target: Target, oids: Sequence[Oid]) -> list[Varbind]:
        if isinstance(target.auth, V1):
            return await self._get_v1(target, oids)
        pdu = await self.request(target, ber.GET, oids)
        if pdu.error_status != NO_ERROR:
            raise SnmpError("error_status", f"GET answered error-status {pdu.error_status}")
        return pdu.varbinds

    async def _get_v1(self, target: Target, oids: Sequence[Oid]) -> list[Varbind]:
        """GET over v1 as an RFC 3584 proxy does it: each noSuchName drops the varbind it
        names (answered as noSuchObject) and the rest is asked again."""
        asked = list(oids)
        varbinds: list[Varbind] = []
        while asked:
            pdu = await self.request(target, ber.GET, asked)
            missing = self._v1_missing(target, pdu, len(asked), "GET")
            if missing is None:
                varbinds = pdu.varbinds
                break
            del asked[missing]
        # v1 answers in the order asked (RFC 1157 4.1.2), so the position names the request.
        got = dict(zip(asked, varbinds, strict=True))
        return [got.get(oid, (oid, ber.NO_SUCH_OBJECT, None)) for oid in oids]

    async def request(
        self,
        target: Target,
        tag: int,
        oids: Sequence[Oid],
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> ResponsePdu:
        varbinds = encode_null_varbinds(list(oids))
        if isinstance(target.auth, V1):
            if tag == ber.GETBULK:
                raise ValueError("SNMPv1 has no GETBULK")
            return await self._request_v2c(target, target.auth, tag, varbinds, 0, 0)
        if isinstance(target.auth, V2c):
            return await self._request_v2c(
                target, target.auth, tag, varbinds, non_repeaters, max_repetitions
            )
        return await self._request_v3(
            target, target.auth.user, tag, varbinds, non_repeaters, max_repetitions
        )

    async def _address(self, target: Target) -> tuple[str, int]:
        """Where the target's datagrams go: its address, or its name resolved (cached)."""
        try:
            host = self.resolver.cached(target.host) or await self.resolver.resolve(target.host)
        except ResolveError as exc:
            raise SnmpUnresolved(str(exc)) from None
        return (host, target.port)

    async def _exchange(self, target: Target, request_id: int, message: bytes) -> bytes:
        if self._transport is None:
            raise RuntimeError("SnmpClient.open() was not called")
        address = await self._address(target)
        transport = self._transport
        if ":" in address[0]:
            if self._transport6 is None:
                raise SnmpNoIpv6(f"{target.host} is IPv6: {self._no_ipv6}")
            transport = self._transport6
        loop = asyncio.get_running_loop()
        self.stats.requests += 1
        noise: set[str] = set()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            waiting = _Waiting(address, loop.create_future())
            self._pending[request_id] = waiting
            self._waiting.setdefault(address, set()).add(request_id)
            handle = loop.call_later(self.timeout, _expire, waiting.future)
            try:
                transport.sendto(message, address)
                answer = await waiting.future
            except TimeoutError:
                continue
            finally:
                handle.cancel()
                self._pending.pop(request_id, None)
                ids = self._waiting.get(address)
                if ids is not None:
                    ids.discard(request_id)
                    if not ids:
                        del self._waiting[address]
                noise |= waiting.noise
            self._answered[target.address] = time.monotonic()
            return answer
        if "malformed" in noise:
            raise SnmpUndecodable(f"{address[0]} answered, but nothing it sent decodes")
        if "stray" in noise:
            raise SnmpMisaddressed(f"{address[0]} answered, but only to other requests")
        self.stats.timeouts += 1
        raise SnmpTimeout

    def _next_id(self) -> int:
        return next(self._ids) & 0x7FFFFFFF

    async def _request_v2c(
        self, target: Target, auth: V1 | V2c, tag: int, varbinds: bytes, f1: int, f2: int
    ) -> ResponsePdu:
        """A v2c request, or a v1 one: the same envelope but for its version."""
        request_id = self._next_id()
        request = encode_pdu(tag, request_id, f1, f2, varbinds)
        sent = VERSION_1 if isinstance(auth, V1) else V2C
        build = build_v1_message if sent == VERSION_1 else build_v2c_message
        data = await self._exchange(target, request_id, build(auth.community, request))
        try:
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            version, pos = ber.read_integer(data, start, end)
            community, pos = ber.read_octets(data, pos, end)
            if version != sent or community != auth.community:
                raise BerError("version or community of the response differ from the request")
            pdu = parse_response_pdu(data, pos, end)
        except BerError as exc:
            self._bad("malformed", f"response from {target.host}: {exc}")
            raise SnmpUndecodable(str(exc)) from None
        self.stats.responses += 1
        return pdu

    # ---------------------------------------------------------------- v3

    def _localized(self, user: UsmUser, engine_id: bytes) -> LocalizedUser | None:
        if user.level == 0:
            return None
        keys = self._keys.get(user, engine_id)
        if keys is None:
            keys = LocalizedUser.localize(user, engine_id)
        self.stats.key_evictions += self._keys.add(keys)
        return keys

    async def _discover(self, target: Target, user: UsmUser) -> _Engine:
        """Ask for the engine ID, boots and time with an empty, unauthenticated request."""
        msg_id = self._next_id()
        message = build_v3_message(
            msg_id=msg_id,
            max_size=MAX_MESSAGE_SIZE,
            flags=FLAG_REPORTABLE,
            engine_id=b"",
            boots=0,
            etime=0,
            user_name=b"",
            scoped=encode_scoped(b"", encode_pdu(ber.GET, msg_id, 0, 0, b"")),
            keys=None,
        )
        data = await self._exchange(target, msg_id, message)
        try:
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            _version, pos = ber.read_integer(data, start, end)
            header = parse_v3_header(data, pos, end)
        except BerError as exc:
            self._bad("malformed", f"discovery response from {target.host}: {exc}")
            raise SnmpUndecodable(str(exc)) from None
        if not header.engine_id:
            raise SnmpError("discovery", f"{target.host} sent no engine ID")
        engine = _Engine(
            header.engine_id,
            header.boots,
            header.etime,
            time.monotonic(),
            self._localized(user, header.engine_id),
        )
        self._engines[(target.host, target.port, user)] = engine
        return engine

    async def _request_v3(
        self, target: Target, user: UsmUser, tag: int, varbinds: bytes, f1: int, f2: int
    ) -> ResponsePdu:
        engine_key = (target.host, target.port, user)
        engine = self._engines.get(engine_key) or await self._discover(target, user)
        for _attempt in range(3):  # discovery, then at most two re-synchronisations
            msg_id = self._next_id()
            message = build_v3_message(
                msg_id=msg_id,
                max_size=MAX_MESSAGE_SIZE,
                flags=user.level | FLAG_REPORTABLE,
                engine_id=engine.engine_id,
                boots=engine.boots,
                etime=engine.time_now(),
                user_name=user.name.encode(),
                scoped=encode_scoped(engine.engine_id, encode_pdu(tag, msg_id, f1, f2, varbinds)),
                keys=engine.keys,
            )
            data = await self._exchange(target, msg_id, message)
            pdu, header = self._open_v3(target, engine, data)
            if pdu.tag != ber.REPORT:
                self.stats.responses += 1
                return pdu
            report_oid = pdu.varbinds[0][0] if pdu.varbinds else ()
            name = REPORT_KINDS.get(report_oid, "unknown_report")
            self.stats.reports[name] += 1
            if report_oid == USM_STATS_UNKNOWN_ENGINE_IDS:
                self.stats.rediscoveries += 1
                engine = await self._discover(target, user)
            elif report_oid == USM_STATS_NOT_IN_TIME_WINDOWS and (
                header.flags & FLAG_AUTH or user.level == 0
            ):
                # An authenticated report carries the device's real boots and time (RFC 3414 4).
                self.stats.rediscoveries += 1
                engine.boots, engine.etime, engine.seen_at = (
                    header.boots,
                    header.etime,
                    time.monotonic(),
                )
            else:
                raise SnmpError(name, f"{target.host} answered with a {name} report")
        raise SnmpError("resync", f"{target.host}: engine did not settle after re-synchronising")

    def _open_v3(
        self, target: Target, engine: _Engine, data: bytes
    ) -> tuple[ResponsePdu, V3Header]:
        """Verify, decrypt and decode a v3 response; reports may come unauthenticated."""
        try:
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            version, pos = ber.read_integer(data, start, end)
            if version != V3:
                raise BerError(f"version {version} in a v3 exchange")
            header = parse_v3_header(data, pos, end)
            keys = engine.keys
            if header.flags & FLAG_AUTH:
                if keys is None or header.engine_id != engine.engine_id:
                    raise SnmpError("wrong_digest", "authenticated response for another engine")
                if not header.authentic(data, keys):
                    self._bad("wrong_digest", f"response from {target.host} fails its MAC")
                    raise SnmpError("wrong_digest", "response MAC does not verify")
            if header.flags & FLAG_PRIV and keys is None:
                raise SnmpError("decryption_error", "encrypted response without keys")
            _engine, _context, pdu = header.open_scoped(data, end, keys, parse_response_pdu)
        except (BerError, DecryptionError) as exc:
            self._bad("malformed", f"v3 response from {target.host}: {exc}")
            raise SnmpUndecodable(str(exc)) from None
        if pdu.tag != ber.REPORT and engine.keys is not None and not header.flags & FLAG_AUTH:
            raise SnmpError("unauthenticated", "a response below the requested security level")
        return pdu, header

    # ---------------------------------------------------------------- walks

    async def walk(
        self, target: Target, columns: Sequence[Oid], max_repetitions: int = 25
    ) -> dict[Oid, list[tuple[Oid, int, object]]]:
        """Walk table columns side by side with GETBULK: {column: [(index, tag, value)]}.

        Shrinks max-repetitions on tooBig, or on a timeout when the device has
        just answered (in this walk, or the poll's GET moments before: a device
        that drops big responses, not a dead one), and remembers the size that
        worked for the next poll. After `GROW_AFTER` clean walks at a shrunk
        size it tries twice the size again, so one lost packet does not cost
        a device its bulk size for good.
        """
        if isinstance(target.auth, V1):
            return await self._walk_v1(target, columns)
        result: dict[Oid, list[tuple[Oid, int, object]]] = {c: [] for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        address = target.address
        remembered = self._max_rep.get(address, max_repetitions)
        if remembered < max_repetitions and self._walks_ok.get(address, 0) >= GROW_AFTER:
            remembered = self._max_rep[address] = min(max_repetitions, remembered * 2)
            self._walks_ok[address] = 0
        repetitions = max(1, min(max_repetitions, remembered))
        shrunk = False
        last = self._answered.get(address)
        answered = last is not None and time.monotonic() - last < JUST_ANSWERED
        while active:
            try:
                pdu = await self.request(
                    target, ber.GETBULK, [cursor[c] for c in active], 0, repetitions
                )
            except SnmpTimeout:
                if repetitions == 1 or not answered:
                    raise
                repetitions = self._shrink(target, repetitions)
                shrunk = True
                continue
            answered = True
            if pdu.error_status == TOO_BIG:
                if repetitions == 1:
                    raise SnmpError("too_big", "tooBig even with max-repetitions 1")
                repetitions = self._shrink(target, repetitions)
                shrunk = True
                continue
            if pdu.error_status != NO_ERROR:
                raise SnmpError("error_status", f"GETBULK answered error-status {pdu.error_status}")
            if not pdu.varbinds:
                raise SnmpError("malformed", "empty GETBULK response")
            width = len(active)
            done: set[Oid] = set()
            for i, (oid, tag, value) in enumerate(pdu.varbinds):
                column = active[i % width]
                if column in done:
                    continue
                size = len(column)
                if tag == ber.END_OF_MIB_VIEW or oid[:size] != column:
                    done.add(column)
                    continue
                if oid <= cursor[column]:
                    self._bad("oid_not_increasing", f"{target.host} returned {oid} after itself")
                    done.add(column)
                    continue
                result[column].append((oid[size:], tag, value))
                cursor[column] = oid
            active = [c for c in active if c not in done]
        if shrunk or repetitions >= max_repetitions:
            self._walks_ok.pop(address, None)
        else:
            self._walks_ok[address] = self._walks_ok.get(address, 0) + 1
        return result

    async def _walk_v1(
        self, target: Target, columns: Sequence[Oid]
    ) -> dict[Oid, list[tuple[Oid, int, object]]]:
        """Walk columns side by side with GETNEXT (v1 has no GETBULK): a row per request.

        noSuchName ends the column it names (v1's end of the MIB); tooBig, or a timeout
        right after an answer (a request or answer too big for the device), halves the
        number of columns a request carries.
        """
        result: dict[Oid, list[tuple[Oid, int, object]]] = {c: [] for c in columns}
        cursor = {c: c for c in columns}
        active = list(columns)
        width = len(active)
        last = self._answered.get(target.address)
        answered = last is not None and time.monotonic() - last < JUST_ANSWERED
        while active:
            batch = active[:width]
            try:
                pdu = await self.request(target, ber.GETNEXT, [cursor[c] for c in batch])
            except SnmpTimeout:
                if width == 1 or not answered:
                    raise
                self.stats.fallbacks += 1
                width = max(1, width // 2)
                continue
            answered = True
            if pdu.error_status == TOO_BIG:
                if width == 1:
                    raise SnmpError("too_big", "tooBig for a GETNEXT of one column")
                self.stats.fallbacks += 1
                width = max(1, width // 2)
                continue
            ended = self._v1_missing(target, pdu, len(batch), "GETNEXT")
            if ended is not None:
                active.remove(batch[ended])
                continue
            done: set[Oid] = set()
            for column, (oid, tag, value) in zip(batch, pdu.varbinds, strict=True):
                if tag == ber.END_OF_MIB_VIEW or oid[: len(column)] != column:
                    done.add(column)
                elif oid <= cursor[column]:
                    self._bad("oid_not_increasing", f"{target.host} returned {oid} after itself")
                    done.add(column)
                else:
                    result[column].append((oid[len(column) :], tag, value))
                    cursor[column] = oid
            active = [c for c in active if c not in done]
        return result

    def _v1_missing(self, target: Target, pdu: ResponsePdu, asked: int, what: str) -> int | None:
        """The position of the varbind a v1 noSuchName names, or None for an answer to
        every varbind; any other error raises."""
        if pdu.error_status == NO_SUCH_NAME and 0 < pdu.error_index <= asked:
            return pdu.error_index - 1
        if pdu.error_status != NO_ERROR:
            raise SnmpError("error_status", f"{what} answered error-status {pdu.error_status}")
        if len(pdu.varbinds) != asked:
            self._bad("malformed", f"{target.host} answered a v1 {what} with other varbinds")
            raise SnmpUndecodable(f"a v1 {what} answer with another number of varbinds")
        return None

    def _shrink(self, target: Target, repetitions: int) -> int:
        self.stats.fallbacks += 1
        smaller = max(1, repetitions // 2)
        self._max_rep[target.address] = smaller
        return smaller

    def forget(self, target: Target) -> None:
        """Drop what was learned about a device (it left the inventory)."""
        self._max_rep.pop(target.address, None)
        self._walks_ok.pop(target.address, None)
        self._answered.pop(target.address, None)
        for key in [k for k in self._engines if k[:2] == target.address]:
            del self._engines[key]


def _grow_buffer(transport: asyncio.DatagramTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _peek_id(data: bytes) -> int:
    """The request id (v2c) or message id (v3) of a response, without decoding the rest."""
    end = len(data)
    start, stop = ber.expect(data, 0, end, ber.SEQUENCE)
    version, pos = ber.read_integer(data, start, stop)
    if version == V3:
        g_start, g_stop = ber.expect(data, pos, stop, ber.SEQUENCE)
        msg_id, _ = ber.read_integer(data, g_start, g_stop)
        return msg_id
    if version not in (V2C, 0):
        raise BerError(f"SNMP version {version}")
    _community, pos = ber.read_octets(data, pos, stop)
    _tag, p_start, p_stop = ber.read_tlv(data, pos, stop)
    request_id, _ = ber.read_integer(data, p_start, p_stop)
    return request_id
