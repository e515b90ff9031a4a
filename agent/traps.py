"""Trap and inform receiver: SNMPv2c and SNMPv3 USM on one UDP address.

v3 traps are sent by the device's own (authoritative) engine: their keys are
localized to the sender's engine ID, which the receiver learns from the
message itself, so no per-device engine ID has to be configured. v3 informs
make this receiver the authoritative engine: a sender first discovers our
engine ID and time through a Report, as RFC 3414 prescribes, then sends the
inform, which is acknowledged with a Response.

Every bad datagram is counted by kind and logged once per kind; the loop
never stops on input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from enoc.snmp import ber
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    FLAG_REPORTABLE,
    V2C,
    V3,
    ResponsePdu,
    build_v2c_message,
    build_v3_message,
    encode_pdu,
    encode_scoped,
    parse_response_pdu,
    parse_scoped,
    parse_v3_header,
)
from enoc.snmp.usm import (
    TIME_WINDOW,
    USM_STATS_NOT_IN_TIME_WINDOWS,
    USM_STATS_UNKNOWN_ENGINE_IDS,
    DecryptionError,
    LocalizedUser,
    UsmUser,
)

log = logging.getLogger("enoc.agent.traps")

SYS_UPTIME_0 = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)


@dataclass
class Trap:
    source: str  # the sender's address
    version: str  # "2c" or "3"
    trap_oid: Oid
    varbinds: list[tuple[Oid, int, object]]
    inform: bool
    received: float
    user: str = ""


@dataclass
class TrapStats:
    received: int = 0
    informs: int = 0
    bad: Counter[str] = field(default_factory=Counter)


class TrapReceiver(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        communities: Iterable[bytes],
        users: Iterable[UsmUser],
        on_trap: Callable[[Trap], None],
        engine_id: bytes | None = None,
    ) -> None:
        self.communities = set(communities)
        self.users = {u.name.encode(): u for u in users}
        self.on_trap = on_trap
        # Our own engine ID (for informs): enterprise 8072 (net-snmp) format 4 + random text.
        self.engine_id = engine_id or b"\x80\x00\x1f\x88\x04" + os.urandom(8).hex().encode()
        self.boots = 1
        self.started = time.monotonic()
        self.stats = TrapStats()
        self._keys: dict[tuple[bytes, bytes], LocalizedUser] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._logged: set[str] = set()
        self._report_count = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        sockname: tuple[str, int] = transport.get_extra_info("sockname")
        return sockname

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def update_credentials(self, communities: Iterable[bytes], users: Iterable[UsmUser]) -> None:
        self.communities = set(communities)
        self.users = {u.name.encode(): u for u in users}
        self._keys.clear()

    # ---------------------------------------------------------------- input

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        try:
            start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
            if end != len(data):
                raise BerError("trailing bytes after the message")
            version, pos = ber.read_integer(data, start, end)
            if version == V2C:
                self._v2c(data, pos, end, source)
            elif version == V3:
                self._v3(data, pos, end, source)
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

    def _deliver(self, source: str, version: str, pdu: ResponsePdu, user: str = "") -> None:
        inform = pdu.tag == ber.INFORM
        trap_oid: Oid = ()
        for oid, _tag, value in pdu.varbinds[:2]:
            if oid == SNMP_TRAP_OID_0 and isinstance(value, tuple):
                trap_oid = value
        if not trap_oid:
            self._bad("no_trap_oid", f"trap from {source} without snmpTrapOID.0")
            return
        self.stats.received += 1
        self.stats.informs += inform
        varbinds = [vb for vb in pdu.varbinds if vb[0] not in (SYS_UPTIME_0, SNMP_TRAP_OID_0)]
        self.on_trap(Trap(source, version, trap_oid, varbinds, inform, time.time(), user))

    def _send(self, message: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(message, addr)

    # ---------------------------------------------------------------- v2c

    def _v2c(self, data: bytes, pos: int, end: int, addr: tuple[str, int]) -> None:
        community, pos = ber.read_octets(data, pos, end)
        if community not in self.communities:
            self._bad("unknown_community", f"trap from {addr[0]} with an unknown community")
            return
        pdu = parse_response_pdu(data, pos, end)
        if pdu.tag not in (ber.TRAP_V2, ber.INFORM):
            self._bad("unsupported_pdu", f"PDU 0x{pdu.tag:02x} from {addr[0]}")
            return
        if pdu.tag == ber.INFORM:
            body = b"".join(
                ber.encode_varbind(ber.encode_oid(o), _reencode(t, v)) for o, t, v in pdu.varbinds
            )
            reply = encode_pdu(ber.RESPONSE, pdu.request_id, 0, 0, body)
            self._send(build_v2c_message(community, reply), addr)
        self._deliver(addr[0], "2c", pdu)

    # ---------------------------------------------------------------- v3

    def _localized(self, user: UsmUser, engine_id: bytes) -> LocalizedUser:
        key = (user.name.encode(), engine_id)
        keys = self._keys.get(key)
        if keys is None or keys.user != user:
            keys = self._keys[key] = LocalizedUser.localize(user, engine_id)
        return keys

    def _time(self) -> int:
        return int(time.monotonic() - self.started)

    def _v3(self, data: bytes, pos: int, end: int, addr: tuple[str, int]) -> None:
        header = parse_v3_header(data, pos, end)
        reportable = bool(header.flags & FLAG_REPORTABLE)
        user = self.users.get(header.user_name)
        if header.flags & FLAG_REPORTABLE and header.engine_id != self.engine_id:
            # An inform sender discovering us (empty or stale engine ID).
            self._report(header.msg_id, header.user_name, USM_STATS_UNKNOWN_ENGINE_IDS, addr, None)
            return
        if user is None:
            self._bad(
                "unknown_user", f"v3 trap from {addr[0]} for unknown user {header.user_name!r}"
            )
            return
        if header.flags & FLAG_AUTH == 0 and user.level:
            self._bad("unsupported_sec_level", f"unauthenticated v3 trap from {addr[0]}")
            return
        keys = self._localized(user, header.engine_id) if user.level else None
        if keys is not None:
            digest = data[header.auth_start : header.auth_end]
            if len(digest) != keys.auth_len or not keys.verify(header.zeroed(data), digest):
                self._bad("wrong_digest", f"v3 trap from {addr[0]} fails authentication")
                return
            if reportable and (
                header.boots != self.boots or abs(header.etime - self._time()) > TIME_WINDOW
            ):
                self._report(
                    header.msg_id, header.user_name, USM_STATS_NOT_IN_TIME_WINDOWS, addr, keys
                )
                return
        if header.flags & FLAG_PRIV:
            assert keys is not None
            cipher, _ = ber.read_octets(data, header.data_pos, end)
            try:
                plain = keys.decrypt(cipher, header.boots, header.etime, header.salt)
            except DecryptionError as exc:
                self._bad("decryption_error", f"v3 trap from {addr[0]}: {exc}")
                return
            try:
                context = parse_scoped(plain, 0, len(plain), lenient_tail=True)
                context_engine, context_name, p_start, p_end = context
                pdu = parse_response_pdu(plain, p_start, p_end, lenient_tail=True)
            except BerError:
                self._bad("decryption_error", f"v3 trap from {addr[0]} does not decrypt")
                return
        else:
            context = parse_scoped(data, header.data_pos, end, lenient_tail=False)
            context_engine, context_name, p_start, p_end = context
            pdu = parse_response_pdu(data, p_start, p_end)
        if pdu.tag not in (ber.TRAP_V2, ber.INFORM):
            self._bad("unsupported_pdu", f"PDU 0x{pdu.tag:02x} from {addr[0]}")
            return
        if pdu.tag == ber.INFORM:
            body = b"".join(
                ber.encode_varbind(ber.encode_oid(o), _reencode(t, v)) for o, t, v in pdu.varbinds
            )
            # The Response echoes the inform's context (net-snmp matches on it).
            self._reply(
                header.msg_id,
                header.user_name,
                pdu.request_id,
                body,
                addr,
                keys,
                context=(context_engine, context_name),
            )
        self._deliver(addr[0], "3", pdu, user.name)

    def _reply(
        self,
        msg_id: int,
        user_name: bytes,
        request_id: int,
        varbinds: bytes,
        addr: tuple[str, int],
        keys: LocalizedUser | None,
        tag: int = ber.RESPONSE,
        context: tuple[bytes, bytes] | None = None,
    ) -> None:
        boots, etime = self.boots, self._time()
        context_engine, context_name = context or (self.engine_id, b"")
        pdu = encode_pdu(tag, request_id, 0, 0, varbinds)
        scoped = encode_scoped(context_engine, pdu, context_name)
        level = keys.user.level if keys is not None else 0
        salt = b""
        msg_data = scoped
        if keys is not None and level & FLAG_PRIV:
            salt = keys.next_salt(boots)
            msg_data = ber.encode_octets(keys.encrypt(scoped, boots, etime, salt))
        message = build_v3_message(
            msg_id=msg_id,
            max_size=65507,
            flags=level,
            engine_id=self.engine_id,
            boots=boots,
            etime=etime,
            user_name=user_name,
            salt=salt,
            msg_data=msg_data,
            keys=keys if level & FLAG_AUTH else None,
        )
        self._send(message, addr)

    def _report(
        self,
        msg_id: int,
        user_name: bytes,
        counter: Oid,
        addr: tuple[str, int],
        keys: LocalizedUser | None,
    ) -> None:
        self._report_count += 1
        varbind = ber.encode_varbind(
            ber.encode_oid(counter), ber.encode_unsigned(ber.COUNTER32, self._report_count)
        )
        if keys is not None and keys.user.level & FLAG_PRIV:
            # A time-window report is authenticated but not encrypted (RFC 3414 3.1.1).
            keys = LocalizedUser(
                UsmUser(keys.user.name, keys.user.auth_protocol, keys.user.auth_key),
                keys.engine_id,
                keys.auth_hash,
                keys.auth_len,
                keys.auth_key,
            )
        self._reply(msg_id, user_name, 0, varbind, addr, keys, tag=ber.REPORT)


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
