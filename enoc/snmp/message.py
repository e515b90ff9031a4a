"""SNMP messages around the PDU: v2c and v3 envelopes, the PDU itself, request ids.

Shared by the simulator (the agent side), the poller (the manager side) and
the trap receiver, so that each part of the wire format is written once.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from enoc.snmp import ber
from enoc.snmp.ber import BerError, Oid
from enoc.snmp.mib import (
    ENTERPRISE_SPECIFIC,
    GENERIC_TRAPS,
    SNMP_TRAP_ADDRESS_0,
    SNMP_TRAP_ENTERPRISE_0,
)
from enoc.snmp.usm import DecryptionError, LocalizedUser

P = TypeVar("P")

V1 = 0
V2C = 1
V3 = 3
FLAG_AUTH = 1
FLAG_PRIV = 2
FLAG_REPORTABLE = 4
NO_ERROR = 0
TOO_BIG = 1
# SNMPv1's only answer for a missing object, an end of the MIB, or a Counter64 it cannot
# carry; error-index names the varbind (from 1). RFC 3584 maps it to noSuchObject / endOfMibView.
NO_SUCH_NAME = 2


@dataclass
class ExchangeCounts:
    """What either side of an SNMP exchange counts: the simulator of the requests it
    served, the client of those it sent; what it refused as bad input and the USM reports,
    by kind."""

    requests: int = 0
    responses: int = 0
    bad: Counter[str] = field(default_factory=Counter)  # malformed, wrong_digest, stray, ...
    reports: Counter[str] = field(default_factory=Counter)


class UnknownSecurityModel(BerError):
    """A v3 message whose msgSecurityModel is not USM (3): well-formed, but not ours to read."""

    def __init__(self, model: int) -> None:
        super().__init__(f"security model {model} is not USM")
        self.model = model


@dataclass
class Pdu:
    tag: int
    request_id: int
    field1: int  # error-status, or non-repeaters for GETBULK
    field2: int  # error-index, or max-repetitions for GETBULK
    oids: list[Oid]


def parse_pdu(data: bytes, pos: int, end: int) -> Pdu:
    """A request PDU: its OIDs only (request values are ignored)."""
    tag, start, stop = ber.read_tlv(data, pos, end)
    if stop != end:
        raise BerError("trailing bytes after the PDU")
    request_id, p = ber.read_integer(data, start, stop)
    field1, p = ber.read_integer(data, p, stop)
    field2, p = ber.read_integer(data, p, stop)
    oids = ber.read_varbind_oids(data, p, stop)
    return Pdu(tag, request_id, field1, field2, oids)


@dataclass
class ResponsePdu:
    tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, int, object]]


def parse_response_pdu(
    data: bytes, pos: int, end: int, *, lenient_tail: bool = False
) -> ResponsePdu:
    """A PDU with values (Response, Report, Trap, Inform), fully decoded."""
    tag, start, stop = ber.read_tlv(data, pos, end)
    if stop != end and not lenient_tail:
        raise BerError("trailing bytes after the PDU")
    request_id, p = ber.read_integer(data, start, stop)
    status, p = ber.read_integer(data, p, stop)
    index, p = ber.read_integer(data, p, stop)
    return ResponsePdu(tag, request_id, status, index, ber.read_varbinds(data, p, stop))


def encode_pdu(tag: int, request_id: int, status: int, index: int, varbinds: bytes) -> bytes:
    return ber.tlv(
        tag,
        ber.encode_integer(request_id)
        + ber.encode_integer(status)
        + ber.encode_integer(index)
        + ber.tlv(ber.SEQUENCE, varbinds),
    )


def encode_report(request_id: int, counter: Oid, count: int) -> bytes:
    """A Report PDU carrying one usmStats (or snmp) counter, as RFC 3414 section 3.2 sends."""
    varbind = ber.encode_varbind(ber.encode_oid(counter), ber.encode_unsigned(ber.COUNTER32, count))
    return encode_pdu(ber.REPORT, request_id, 0, 0, varbind)


def encode_null_varbinds(oids: list[Oid]) -> bytes:
    return b"".join(ber.encode_varbind(ber.encode_oid(o), ber.NULL_VALUE) for o in oids)


def build_v2c_message(community: bytes, pdu: bytes) -> bytes:
    return ber.tlv(ber.SEQUENCE, ber.encode_integer(V2C) + ber.encode_octets(community) + pdu)


def build_v1_message(community: bytes, pdu: bytes) -> bytes:
    """An SNMPv1 message: the v2c envelope with version 0 (RFC 1157)."""
    return ber.tlv(ber.SEQUENCE, ber.encode_integer(V1) + ber.encode_octets(community) + pdu)


def build_v3_message(
    *,
    msg_id: int,
    max_size: int,
    flags: int,
    engine_id: bytes,
    boots: int,
    etime: int,
    user_name: bytes,
    scoped: bytes,
    keys: LocalizedUser | None,
) -> bytes:
    """A v3 message around a ScopedPDU, at the security level its `flags` ask for: with
    privacy encrypted under a fresh salt, with authentication signed in place of the zeroed
    MAC (both need `keys`)."""
    salt = b""
    msg_data = scoped
    if flags & FLAG_PRIV and keys is not None:
        salt = keys.next_salt(boots)
        msg_data = ber.encode_octets(keys.encrypt(scoped, boots, etime, salt))
    signer = keys if flags & FLAG_AUTH else None
    mac_len = signer.auth_len if signer is not None else 0
    placeholder = b"\x00" * mac_len
    header = ber.tlv(
        ber.SEQUENCE,
        ber.encode_integer(msg_id)
        + ber.encode_integer(max_size)
        + ber.encode_octets(bytes((flags,)))
        + ber.encode_integer(3),
    )
    usm = ber.tlv(
        ber.SEQUENCE,
        ber.encode_octets(engine_id)
        + ber.encode_integer(boots)
        + ber.encode_integer(etime)
        + ber.encode_octets(user_name)
        + ber.encode_octets(placeholder)
        + ber.encode_octets(salt),
    )
    message = ber.tlv(
        ber.SEQUENCE, ber.encode_integer(3) + header + ber.encode_octets(usm) + msg_data
    )
    if signer is None:
        return message
    # The MAC field is the only run of mac_len zeros right after the user name's TLV.
    marker = ber.encode_octets(user_name) + ber.encode_octets(placeholder)
    at = message.index(marker) + len(marker) - mac_len
    mac = signer.sign(message)
    return message[:at] + mac + message[at + mac_len :]


def encode_scoped(context_engine_id: bytes, pdu: bytes, context_name: bytes = b"") -> bytes:
    return ber.tlv(
        ber.SEQUENCE, ber.encode_octets(context_engine_id) + ber.encode_octets(context_name) + pdu
    )


def parse_scoped(
    data: bytes, pos: int, end: int, *, lenient_tail: bool
) -> tuple[bytes, bytes, int, int]:
    """ScopedPDU -> (contextEngineID, contextName, PDU start, PDU end).

    Decrypted DES data may carry padding after it.
    """
    start, stop = ber.expect(data, pos, end, ber.SEQUENCE)
    if stop != end and not lenient_tail:
        raise BerError("trailing bytes after the scoped PDU")
    context_engine, p = ber.read_octets(data, start, stop)
    context_name, p = ber.read_octets(data, p, stop)
    return context_engine, context_name, p, stop


@dataclass
class V3Header:
    """The clear-text parts of a v3 message, and where its MAC and data sit."""

    msg_id: int
    max_size: int
    flags: int
    engine_id: bytes
    boots: int
    etime: int
    user_name: bytes
    auth_start: int
    auth_end: int
    salt: bytes
    data_pos: int

    def zeroed(self, data: bytes) -> bytes:
        """The message with its MAC replaced by zeros: what the MAC was computed over."""
        return (
            data[: self.auth_start]
            + b"\x00" * (self.auth_end - self.auth_start)
            + data[self.auth_end :]
        )

    @property
    def level(self) -> int:
        """The security level it asks for, as `UsmUser.level`: the auth and priv bits."""
        return self.flags & (FLAG_AUTH | FLAG_PRIV)

    @property
    def reportable(self) -> bool:
        return bool(self.flags & FLAG_REPORTABLE)

    def authentic(self, data: bytes, keys: LocalizedUser) -> bool:
        """Whether the message carries the MAC that `keys` compute over it."""
        digest = data[self.auth_start : self.auth_end]
        return len(digest) == keys.auth_len and keys.verify(self.zeroed(data), digest)

    def open_scoped(
        self,
        data: bytes,
        end: int,
        keys: LocalizedUser | None,
        parse: Callable[[bytes, int, int], P],
    ) -> tuple[bytes, bytes, P]:
        """The ScopedPDU as (contextEngineID, contextName, its PDU as `parse` reads it).

        With privacy the data is decrypted with `keys` first, and whatever then fails to
        decode raises DecryptionError (a wrong key decrypts to noise, DES leaves padding
        after it); in clear text, or an encryptedPDU that is no OCTET STRING, BerError.
        """
        if not self.flags & FLAG_PRIV:
            engine, name, start, stop = parse_scoped(data, self.data_pos, end, lenient_tail=False)
            return engine, name, parse(data, start, stop)
        cipher, _ = ber.read_octets(data, self.data_pos, end)
        if keys is None:
            raise DecryptionError("an encrypted PDU and no privacy key")
        plain = keys.decrypt(cipher, self.boots, self.etime, self.salt)
        try:
            engine, name, start, stop = parse_scoped(plain, 0, len(plain), lenient_tail=True)
            return engine, name, parse(plain, start, stop)
        except BerError as exc:
            raise DecryptionError(f"the decrypted PDU does not decode: {exc}") from None


def parse_v3_header(data: bytes, pos: int, end: int) -> V3Header:
    """Parse a v3 message from just after its version field."""
    g_start, g_end = ber.expect(data, pos, end, ber.SEQUENCE)
    msg_id, p = ber.read_integer(data, g_start, g_end)
    max_size, p = ber.read_integer(data, p, g_end)
    flags_bytes, p = ber.read_octets(data, p, g_end)
    security_model, p = ber.read_integer(data, p, g_end)
    if len(flags_bytes) != 1 or max_size < 484:
        raise BerError("bad msgFlags or msgMaxSize")
    if security_model != 3:
        raise UnknownSecurityModel(security_model)
    flags = flags_bytes[0]
    if flags & FLAG_PRIV and not flags & FLAG_AUTH:
        raise BerError("privacy without authentication in msgFlags")
    sp_start, sp_end = ber.expect(data, g_end, end, ber.OCTET_STRING)
    usm_start, usm_end = ber.expect(data, sp_start, sp_end, ber.SEQUENCE)
    engine_id, p = ber.read_octets(data, usm_start, usm_end)
    boots, p = ber.read_integer(data, p, usm_end)
    etime, p = ber.read_integer(data, p, usm_end)
    user_name, p = ber.read_octets(data, p, usm_end)
    auth_start, auth_end = ber.expect(data, p, usm_end, ber.OCTET_STRING)
    salt, _ = ber.read_octets(data, auth_end, usm_end)
    return V3Header(
        msg_id,
        max_size,
        flags,
        engine_id,
        boots,
        etime,
        user_name,
        auth_start,
        auth_end,
        salt,
        sp_end,
    )


# ---------------------------------------------------------------- SNMPv1 Trap-PDU


@dataclass
class TrapV1Pdu:
    """An SNMPv1 Trap-PDU (RFC 1157 section 4.1.6)."""

    enterprise: Oid
    agent_addr: str  # dotted quad
    generic_trap: int
    specific_trap: int
    time_stamp: int  # TimeTicks: the sender's sysUpTime
    varbinds: list[tuple[Oid, int, object]]

    def notification_oid(self) -> Oid:
        """Its snmpTrapOID.0 as RFC 3584 section 3.1 (2) and (3) translate it: a generic
        trap 0-5 is the standard trap of SNMPv2-MIB; an enterpriseSpecific(6) one is the
        enterprise, 0, the specific-trap."""
        if self.generic_trap == ENTERPRISE_SPECIFIC:
            return (*self.enterprise, 0, self.specific_trap)
        if 0 <= self.generic_trap < len(GENERIC_TRAPS):
            return GENERIC_TRAPS[self.generic_trap]
        raise BerError(f"generic-trap {self.generic_trap} is none of 0-6")

    def notification_varbinds(self) -> list[tuple[Oid, int, object]]:
        """Its varbinds, then snmpTrapAddress.0 (the agent-addr) and snmpTrapEnterprise.0
        where it has none of its own (RFC 3584 3.1 (4); the community is not repeated: it is
        a secret)."""
        have = {oid for oid, _tag, _value in self.varbinds}
        extra = [
            (SNMP_TRAP_ADDRESS_0, ber.IP_ADDRESS, self.agent_addr),
            (SNMP_TRAP_ENTERPRISE_0, ber.OBJECT_IDENTIFIER, self.enterprise),
        ]
        return [*self.varbinds, *(vb for vb in extra if vb[0] not in have)]


def parse_trap_v1_pdu(data: bytes, pos: int, end: int) -> TrapV1Pdu:
    """The Trap-PDU at `pos` (its tag TRAP_V1), fully decoded."""
    start, stop = ber.expect(data, pos, end, ber.TRAP_V1)
    if stop != end:
        raise BerError("trailing bytes after the Trap-PDU")
    e_start, p = ber.expect(data, start, stop, ber.OBJECT_IDENTIFIER)
    enterprise = ber.decode_oid(data, e_start, p)
    a_start, p = ber.expect(data, p, stop, ber.IP_ADDRESS)
    if p - a_start != 4:
        raise BerError(f"agent-addr of {p - a_start} octets, not an IPv4 address")
    agent_addr = str(ber.decode_value(ber.IP_ADDRESS, data, a_start, p))
    generic, p = ber.read_integer(data, p, stop)
    specific, p = ber.read_integer(data, p, stop)
    t_start, p = ber.expect(data, p, stop, ber.TIMETICKS)
    time_stamp = ber.decode_unsigned(data, t_start, p)
    varbinds = ber.read_varbinds(data, p, stop)
    return TrapV1Pdu(enterprise, agent_addr, generic, specific, time_stamp, varbinds)


def encode_trap_v1_pdu(pdu: TrapV1Pdu, varbinds: bytes) -> bytes:
    """A Trap-PDU of `pdu`'s header around already encoded `varbinds`."""
    return ber.tlv(
        ber.TRAP_V1,
        ber.encode_oid(pdu.enterprise)
        + ber.encode_ip(bytes(int(part) for part in pdu.agent_addr.split(".")))
        + ber.encode_integer(pdu.generic_trap)
        + ber.encode_integer(pdu.specific_trap)
        + ber.encode_unsigned(ber.TIMETICKS, pdu.time_stamp)
        + ber.tlv(ber.SEQUENCE, varbinds),
    )


def random_request_id() -> int:
    return int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
