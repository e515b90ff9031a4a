"""Trap and inform receiver: SNMPv1, SNMPv2c and SNMPv3 USM on one UDP address.

A datagram is attributed to a device by its source address, and accepted only
with that device's own trap credentials (`TrapSource`): its v2c communities,
its v3 users. An SNMPv1 Trap-PDU is taken with the same communities as a v2c
trap and becomes the notification RFC 3584 section 3.1 makes of it
(`TrapV1Pdu.notification_oid`): the rest of the agent sees one kind of trap.
An address of no device is refused (counted, logged once per address), never
taken for a new device.

v3 traps are sent by the device's own (authoritative) engine: their keys are
localized to the sender's engine ID. That engine ID is bound to its device,
configured or learned from the device's first authenticated trap; a trap
carrying another device's engine ID, or a device's trap with another one, is
refused. Timeliness is kept for each sender engine as a non-authoritative
receiver does (RFC 3414 section 3.2 step 7b), and an exact copy of a trap
already accepted within the window is refused as a replay. Keys are localized
to a new engine ID only to check a MAC, and kept (in a bounded cache) only
once it verifies.

v3 informs make this receiver the authoritative engine: a sender first
discovers our engine ID and time through a Report, as RFC 3414 prescribes,
then sends the inform, which is acknowledged with a Response.

Every bad datagram is counted by kind and logged once per kind; the loop
never stops on input.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from enoc.lifecycle import ServiceBase
from enoc.snmp import ber, usm
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    V1,
    V2C,
    V3,
    ResponsePdu,
    V3Header,
    build_v2c_message,
    build_v3_message,
    encode_pdu,
    encode_report,
    encode_scoped,
    parse_response_pdu,
    parse_trap_v1_pdu,
    parse_v3_header,
)
from enoc.snmp.mib import SNMP_TRAP_OID_0, SYS_UPTIME_0
from enoc.snmp.usm import LocalizedUser, UsmUser

log = logging.getLogger("enoc.agent.traps")


@dataclass
class Trap:
    source: str  # the sender's address
    version: str  # "1", "2c" or "3"
    trap_oid: Oid
    varbinds: list[tuple[Oid, int, object]]
    inform: bool
    received: float
    user: str = ""
    device: str = ""  # the inventory device the source address belongs to


@dataclass(frozen=True)
class TrapSource:
    """What the receiver accepts from one device's address."""

    device: str
    communities: frozenset[bytes] = frozenset()
    users: tuple[UsmUser, ...] = ()
    engine_id: bytes = b""  # its traps' engine ID; empty: learned from its first one


# Kinds of refusal that are an authentication failure (TrapStats.auth_failures).
AUTH_FAILURES = (
    "unknown_source",
    "unknown_community",
    "unknown_user",
    "unsupported_sec_level",
    "wrong_digest",
    "foreign_engine_id",
    "engine_id_mismatch",
    "not_in_time_window",
    "replay",
)
KEY_CACHE_SIZE = 1024  # localized keys kept (user and engine): a few per device
REPLAY_MEMORY = 4096  # accepted traps remembered per sender engine, within the time window
UNKNOWN_SOURCES_LOGGED = 256  # addresses of no device logged (each once); the rest counted
MAX_BOOTS = 2**31 - 1  # snmpEngineBoots at its maximum: the engine is locked (RFC 3414 2.2.2)


@dataclass
class TrapStats:
    received: int = 0
    informs: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    key_evictions: int = 0  # localized keys dropped from the full cache (least recently used)
    replay_evictions: int = 0  # accepted traps forgotten early (REPLAY_MEMORY full)

    @property
    def auth_failures(self) -> int:
        return sum(self.bad[kind] for kind in AUTH_FAILURES)


@dataclass
class _EngineClock:
    """A sender engine's time as a non-authoritative receiver keeps it (RFC 3414 2.3)."""

    boots: int
    latest: int  # latestReceivedEngineTime
    at: float  # our monotonic clock when `latest` arrived
    seen: OrderedDict[tuple[int, int, int], float] = field(default_factory=OrderedDict)

    def estimate(self, now: float) -> float:
        """The engine's snmpEngineTime now, as we estimate it."""
        return self.latest + (now - self.at)


class TrapReceiver(ServiceBase, asyncio.DatagramProtocol):
    """The agent's trap port: `start` binds it (a port taken fails the start), datagrams
    are handled as they come (no loop of its own), `close` lets the port go."""

    name = "traps"

    def __init__(
        self,
        *,
        sources: Mapping[str, TrapSource],
        on_trap: Callable[[Trap], None],
        engine_id: bytes | None = None,
        key_cache_size: int = KEY_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        ServiceBase.__init__(self)
        self.listen = listen
        self.address = listen  # the bound address once started (a port 0 picks one)
        self.on_trap = on_trap
        # Our own engine ID (for informs): enterprise 8072 (net-snmp) format 4 + random text.
        self.engine_id = engine_id or b"\x80\x00\x1f\x88\x04" + os.urandom(8).hex().encode()
        self.boots = 1
        self.clock = clock
        self.started = clock()
        self.stats = TrapStats()
        self._keys = usm.KeyCache(key_cache_size)
        self._sources: dict[str, TrapSource] = {}
        self._engines: dict[str, bytes] = {}  # device -> its traps' engine ID
        self._owners: dict[bytes, str] = {}  # engine ID -> device
        self._clocks: dict[bytes, _EngineClock] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._logged: set[str] = set()
        self._logged_sources: set[str] = set()
        self._report_count = 0
        self.update_sources(sources)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=self.listen)
        self._transport = transport
        self.address = transport.get_extra_info("sockname")[:2]

    async def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def update_sources(self, sources: Mapping[str, TrapSource]) -> None:
        """The devices (by address) and their trap credentials, at the start and each reload.

        An engine ID learned for a device is kept while its address and configured engine
        ID stay the same; a configured one replaces it."""
        old = {s.device: (address, s.engine_id) for address, s in self._sources.items()}
        self._sources = dict(sources)
        engines: dict[str, bytes] = {}
        for address, source in self._sources.items():
            if source.engine_id:
                engines[source.device] = source.engine_id
            elif old.get(source.device) == (address, b"") and source.device in self._engines:
                engines[source.device] = self._engines[source.device]
        self._engines = engines
        self._owners = {engine: device for device, engine in engines.items()}
        self._clocks = {e: c for e, c in self._clocks.items() if e in self._owners}
        self._keys.clear()

    # ---------------------------------------------------------------- input

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        try:
            known = self._sources.get(source[0])
            if known is None:
                self._unknown_source(source[0])
                return
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            if end != len(data):
                raise BerError("trailing bytes after the message")
            version, pos = ber.read_integer(data, start, end)
            if version in (V1, V2C):
                self._community(version, data, pos, end, source, known)
            elif version == V3:
                self._v3(data, pos, end, source, known)
            else:
                self._bad("unsupported_version", f"SNMP version {version} from {source[0]}")
        except BerError as exc:
            self._bad("malformed", f"undecodable trap from {source[0]}: {exc}")
        except Exception as exc:  # a trap handler must never kill the receiver
            self._bad("handler_error", f"trap from {source[0]}: {exc!r}")

    def _bad(self, kind: str, message: str) -> None:
        self.stats.bad[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("trap %s (logged once per kind; counted): %s", kind, message)

    def _unknown_source(self, address: str) -> None:
        self.stats.bad["unknown_source"] += 1
        if address in self._logged_sources:
            return
        if len(self._logged_sources) < UNKNOWN_SOURCES_LOGGED:
            self._logged_sources.add(address)
            log.warning(
                "datagram on the trap port from %s, the address of no device of the "
                "inventory: refused (logged once per address; counted as unknown_source)",
                address,
            )
        elif "unknown_source" not in self._logged:
            self._logged.add("unknown_source")
            log.warning(
                "more than %d addresses of no device sent to the trap port: the rest are "
                "refused and counted (unknown_source), not logged",
                UNKNOWN_SOURCES_LOGGED,
            )

    def _deliver(
        self, source: TrapSource, address: str, version: str, pdu: ResponsePdu, user: str = ""
    ) -> None:
        inform = pdu.tag == ber.INFORM
        trap_oid: Oid = ()
        for oid, _tag, value in pdu.varbinds[:2]:
            if oid == SNMP_TRAP_OID_0 and isinstance(value, tuple):
                trap_oid = value
        if not trap_oid:
            self._bad("no_trap_oid", f"trap from {address} without snmpTrapOID.0")
            return
        self.stats.received += 1
        self.stats.informs += inform
        varbinds = [vb for vb in pdu.varbinds if vb[0] not in (SYS_UPTIME_0, SNMP_TRAP_OID_0)]
        self.on_trap(
            Trap(address, version, trap_oid, varbinds, inform, time.time(), user, source.device)
        )

    def _send(self, message: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(message, addr)

    # ---------------------------------------------------------------- v1 and v2c

    def _community(
        self,
        version: int,
        data: bytes,
        pos: int,
        end: int,
        addr: tuple[str, int],
        source: TrapSource,
    ) -> None:
        """A v1 or v2c message: taken with one of the device's communities."""
        community, pos = ber.read_octets(data, pos, end)
        if community not in source.communities:
            self._bad(
                "unknown_community",
                f"{'v1 ' if version == V1 else ''}trap from {addr[0]} ({source.device}) "
                "with a community not its own",
            )
            return
        if version == V1:
            self._v1(data, pos, end, addr, source)
            return
        pdu = parse_response_pdu(data, pos, end)
        if pdu.tag not in (ber.TRAP_V2, ber.INFORM):
            self._bad("unsupported_pdu", f"PDU 0x{pdu.tag:02x} from {addr[0]}")
            return
        if pdu.tag == ber.INFORM:
            reply = _acknowledgement(pdu)
            self._send(build_v2c_message(community, reply), addr)
        self._deliver(source, addr[0], "2c", pdu)

    def _v1(
        self, data: bytes, pos: int, end: int, addr: tuple[str, int], source: TrapSource
    ) -> None:
        tag, _start, _stop = ber.read_tlv(data, pos, end)
        if tag != ber.TRAP_V1:
            self._bad("unsupported_pdu", f"PDU 0x{tag:02x} in an SNMPv1 message from {addr[0]}")
            return
        pdu = parse_trap_v1_pdu(data, pos, end)
        trap_oid = pdu.notification_oid()  # a generic-trap beyond 6 is malformed
        self.stats.received += 1
        varbinds = pdu.notification_varbinds()
        trap = Trap(addr[0], "1", trap_oid, varbinds, False, time.time(), device=source.device)
        self.on_trap(trap)

    # ---------------------------------------------------------------- v3

    def _verified(
        self, user: UsmUser, engine_id: bytes, data: bytes, header: V3Header
    ) -> LocalizedUser | None:
        """The user's keys for this engine if the message's MAC verifies, else None.

        Keys for an engine not in the cache are localized (from the cached Ku) only to
        check this MAC, and cached only once it verifies: a spoofed engine ID costs two
        hashes and leaves nothing behind."""
        keys = self._keys.get(user, engine_id)
        if keys is None:
            keys = LocalizedUser.localize(user, engine_id)
        if not header.authentic(data, keys):
            return None
        self.stats.key_evictions += self._keys.add(keys)
        return keys

    def _time(self) -> int:
        return int(self.clock() - self.started)

    def _engine_refusal(self, source: TrapSource, engine_id: bytes) -> str | None:
        """Why a trap of this device may not carry this (authoritative) engine ID, if so."""
        owner = self._owners.get(engine_id)
        if owner is not None and owner != source.device:
            return "foreign_engine_id"
        bound = self._engines.get(source.device)
        if bound is not None and bound != engine_id:
            return "engine_id_mismatch"
        return None

    def _timely(self, header: V3Header) -> str | None:
        """RFC 3414 3.2 step 7b for an authenticated trap: the refusal, or None (accepted).

        The engine's boots and time move forward with each authenticated message; one
        with older boots, or more than usm.TIME_WINDOW seconds behind the engine's estimated
        time, is refused, and so is one that repeats (engine, boots, time, msgID) of a
        trap accepted within the window."""
        now = self.clock()
        boots, etime = header.boots, header.etime
        state = self._clocks.get(header.engine_id)
        if state is None:
            state = self._clocks[header.engine_id] = _EngineClock(boots, etime, now)
        elif (
            state.boots >= MAX_BOOTS
            or boots < state.boots
            or (boots == state.boots and etime < state.estimate(now) - usm.TIME_WINDOW)
        ):
            return "not_in_time_window"
        elif boots > state.boots or etime > state.latest:
            state.boots, state.latest, state.at = boots, etime, now
        seen = (boots, etime, header.msg_id)
        if seen in state.seen:
            return "replay"
        # Forget what the window refuses anyway (the oldest first), then bound the rest.
        horizon = state.estimate(now) - usm.TIME_WINDOW
        while state.seen:
            (old_boots, old_time, _), _at = next(iter(state.seen.items()))
            if old_boots == state.boots and old_time >= horizon:
                break
            state.seen.popitem(last=False)
        if len(state.seen) >= REPLAY_MEMORY:
            state.seen.popitem(last=False)
            self.stats.replay_evictions += 1
        state.seen[seen] = now
        return None

    def _v3(
        self, data: bytes, pos: int, end: int, addr: tuple[str, int], source: TrapSource
    ) -> None:
        header = parse_v3_header(data, pos, end)
        reportable = header.reportable
        if reportable and header.engine_id != self.engine_id:
            # An inform sender discovering us (empty or stale engine ID).
            self._report(header, usm.USM_STATS_UNKNOWN_ENGINE_IDS, addr, None)
            return
        user = next((u for u in source.users if u.name.encode() == header.user_name), None)
        if user is None:
            self._bad(
                "unknown_user",
                f"v3 trap from {addr[0]} ({source.device}) for a user not its own "
                f"{header.user_name[:32]!r}",
            )
            return
        if header.flags & FLAG_AUTH == 0 and user.level:
            self._bad("unsupported_sec_level", f"unauthenticated v3 trap from {addr[0]}")
            return
        if header.level & ~user.level:
            # More than the user has keys for (RFC 3414 3.2 step 5): authPriv flags for a
            # noAuthNoPriv user would reach the decryption with no keys.
            self._bad(
                "unsupported_sec_level",
                f"v3 trap from {addr[0]} asks for a security level its user "
                f"{user.name[:32]!r} does not have",
            )
            return
        if not reportable:  # a trap: the sender is the authoritative engine
            refusal = self._engine_refusal(source, header.engine_id)
            if refusal is not None:
                bound = self._engines.get(source.device, b"").hex() or "not known yet"
                self._bad(
                    refusal,
                    f"v3 trap from {addr[0]} ({source.device}) with engine ID "
                    f"{header.engine_id[:32].hex()} (that of "
                    f"{self._owners.get(header.engine_id) or 'no device'}); "
                    f"{source.device}'s is {bound}",
                )
                return
        keys = self._verified(user, header.engine_id, data, header) if user.level else None
        if user.level and keys is None:
            self._bad("wrong_digest", f"v3 trap from {addr[0]} fails authentication")
            return
        if keys is not None and reportable:
            if header.boots != self.boots or abs(header.etime - self._time()) > usm.TIME_WINDOW:
                self._report(header, usm.USM_STATS_NOT_IN_TIME_WINDOWS, addr, keys)
                return
        elif keys is not None:
            refusal = self._timely(header)
            if refusal is not None:
                self._bad(
                    refusal,
                    f"v3 trap from {addr[0]} ({source.device}): boots {header.boots} time "
                    f"{header.etime} msgID {header.msg_id}",
                )
                return
            if source.device not in self._engines:
                self._engines[source.device] = header.engine_id
                self._owners[header.engine_id] = source.device
                log.info(
                    "%s sends traps as engine %s (learned from its first authenticated trap)",
                    source.device,
                    header.engine_id.hex(),
                )
        # Decrypted data may carry padding (DES) after the PDU.
        parse = functools.partial(parse_response_pdu, lenient_tail=bool(header.flags & FLAG_PRIV))
        try:
            context_engine, context_name, pdu = header.open_scoped(data, end, keys, parse)
        except usm.DecryptionError as exc:
            self._bad("decryption_error", f"v3 trap from {addr[0]}: {exc}")
            return
        if pdu.tag not in (ber.TRAP_V2, ber.INFORM):
            self._bad("unsupported_pdu", f"PDU 0x{pdu.tag:02x} from {addr[0]}")
            return
        if pdu.tag == ber.INFORM:
            # The Response echoes the inform's context (net-snmp matches on it).
            self._reply(header, _acknowledgement(pdu), addr, keys, (context_engine, context_name))
        self._deliver(source, addr[0], "3", pdu, user.name)

    def _reply(
        self,
        header: V3Header,
        pdu: bytes,
        addr: tuple[str, int],
        keys: LocalizedUser | None,
        context: tuple[bytes, bytes] | None = None,
    ) -> None:
        context_engine, context_name = context or (self.engine_id, b"")
        message = build_v3_message(
            msg_id=header.msg_id,
            max_size=65507,
            flags=keys.user.level if keys is not None else 0,
            engine_id=self.engine_id,
            boots=self.boots,
            etime=self._time(),
            user_name=header.user_name,
            scoped=encode_scoped(context_engine, pdu, context_name),
            keys=keys,
        )
        self._send(message, addr)

    def _report(
        self, header: V3Header, counter: Oid, addr: tuple[str, int], keys: LocalizedUser | None
    ) -> None:
        self._report_count += 1
        if keys is not None and keys.user.level & FLAG_PRIV:
            # A time-window report is authenticated but not encrypted (RFC 3414 3.1.1).
            keys = LocalizedUser(
                UsmUser(keys.user.name, keys.user.auth_protocol, keys.user.auth_key),
                keys.engine_id,
                keys.auth_hash,
                keys.auth_len,
                keys.auth_key,
            )
        self._reply(header, encode_report(0, counter, self._report_count), addr, keys)


def _acknowledgement(inform: ResponsePdu) -> bytes:
    """The Response PDU that acknowledges an inform: its request id and varbinds echoed."""
    varbinds = (
        ber.encode_varbind(ber.encode_oid(o), _reencode(t, v)) for o, t, v in inform.varbinds
    )
    return encode_pdu(ber.RESPONSE, inform.request_id, 0, 0, b"".join(varbinds))


def _reencode(tag: int, value: object) -> bytes:
    """A decoded varbind value back to BER (for the inform's Response, which echoes them)."""
    if tag == ber.INTEGER and isinstance(value, int):
        return ber.encode_integer(value)
    if tag in (ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64) and isinstance(value, int):
        return ber.encode_unsigned(tag, value)
    if tag in (ber.OCTET_STRING, ber.OPAQUE) and isinstance(value, bytes):
        return ber.tlv(tag, value)
    if tag == ber.IP_ADDRESS and isinstance(value, str):
        return ber.encode_ip(bytes(int(p) for p in value.split(".")))
    if tag == ber.OBJECT_IDENTIFIER and isinstance(value, tuple):
        return ber.encode_oid(value)
    return bytes((tag, 0))
