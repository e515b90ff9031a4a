"""Minimal BER for SNMP: the hot path of the simulator.

pyasn1 is an order of magnitude too slow for the simulator's and the agent's
hot paths (docs/performance.md, with the benchmark that shows it); this codec
handles only the handful of types SNMP uses and works on `bytes` directly.
Decoding is strict: any inconsistency raises `BerError`, which the server
counts as a malformed packet.
"""

from __future__ import annotations

from collections.abc import Iterable

# Universal and SNMP application tags.
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
# Context-specific exception values inside varbinds (RFC 3416).
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82
# PDU tags.
GET = 0xA0
GETNEXT = 0xA1
RESPONSE = 0xA2
SET = 0xA3
TRAP_V1 = 0xA4
GETBULK = 0xA5
INFORM = 0xA6
TRAP_V2 = 0xA7
REPORT = 0xA8

Oid = tuple[int, ...]


class BerError(ValueError):
    """The bytes are not the BER the SNMP message structure requires."""


# ---------------------------------------------------------------- encoding


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + encode_length(n) + content


def encode_integer(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((INTEGER, 1, value))
    length = (value + (value < 0)).bit_length() // 8 + 1
    return bytes((INTEGER, length)) + value.to_bytes(length, "big", signed=True)


def encode_unsigned(tag: int, value: int) -> bytes:
    """Counter32, Gauge32, TimeTicks, Counter64: unsigned, with a leading zero octet if needed."""
    if value < 0x80:
        return bytes((tag, 1, value))
    length = value.bit_length() // 8 + 1
    return bytes((tag, length)) + value.to_bytes(length, "big")


def encode_octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def encode_ip(value: bytes) -> bytes:
    return bytes((IP_ADDRESS, 4)) + value


def encode_oid_content(oid: Oid) -> bytes:
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40):
        raise BerError(f"cannot encode OID {oid}")
    out = bytearray()
    arcs: Iterable[int] = (oid[0] * 40 + oid[1], *oid[2:])
    for arc in arcs:
        if arc < 0x80:
            out.append(arc)
            continue
        chunk = bytearray()
        rest = arc
        while rest:
            chunk.append((rest & 0x7F) | 0x80)
            rest >>= 7
        chunk[0] &= 0x7F
        chunk.reverse()
        out += chunk
    return bytes(out)


def encode_oid(oid: Oid) -> bytes:
    return tlv(OBJECT_IDENTIFIER, encode_oid_content(oid))


NULL_VALUE = b"\x05\x00"
NO_SUCH_OBJECT_VALUE = b"\x80\x00"
NO_SUCH_INSTANCE_VALUE = b"\x81\x00"
END_OF_MIB_VIEW_VALUE = b"\x82\x00"


def encode_varbind(encoded_oid: bytes, encoded_value: bytes) -> bytes:
    return tlv(SEQUENCE, encoded_oid + encoded_value)


def parse_oid_text(text: str) -> Oid:
    """'1.3.6.1.2.1' or '.1.3.6.1.2.1' to a tuple."""
    try:
        return tuple(int(part) for part in text.strip().lstrip(".").split("."))
    except ValueError:
        raise BerError(f"not a numeric OID: {text!r}") from None


def oid_text(oid: Oid) -> str:
    return ".".join(map(str, oid))


# ---------------------------------------------------------------- decoding


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Return (tag, content_start, content_end) of the TLV at `pos`, within `end`."""
    if pos + 2 > end:
        raise BerError("truncated TLV header")
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise BerError("unsupported or truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    stop = pos + length
    if stop > end:
        raise BerError("length beyond the end of its container")
    return tag, pos, stop


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = read_tlv(data, pos, end)
    if got != tag:
        raise BerError(f"expected tag 0x{tag:02x}, got 0x{got:02x}")
    return start, stop


def decode_integer(data: bytes, start: int, stop: int) -> int:
    if stop <= start or stop - start > 9:
        raise BerError("bad INTEGER length")
    return int.from_bytes(data[start:stop], "big", signed=True)


def decode_unsigned(data: bytes, start: int, stop: int) -> int:
    if stop <= start or stop - start > 9:
        raise BerError("bad unsigned length")
    return int.from_bytes(data[start:stop], "big")


def read_integer(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the INTEGER at `pos`; return (value, position after it)."""
    start, stop = expect(data, pos, end, INTEGER)
    return decode_integer(data, start, stop), stop


def read_octets(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    start, stop = expect(data, pos, end, OCTET_STRING)
    return data[start:stop], stop


MAX_OID_ARCS = 128
# A sub-identifier is at most 64 bits (RFC 2578 caps SNMP's at 32): ten 7-bit groups.
MAX_ARC_BYTES = 10
MAX_ARC = 2**64 - 1


def decode_oid(data: bytes, start: int, stop: int) -> Oid:
    """Decode OID content; each sub-identifier is bounded, so decoding is linear in its size.

    An unbounded arc would grow one Python int a byte at a time, each shift copying it:
    quadratic in the arc's length.
    """
    if stop <= start:
        raise BerError("empty OID")
    if data[stop - 1] & 0x80:
        raise BerError("OID ends inside an arc")
    arcs: list[int] = []
    value = 0
    width = 0  # continuation octets of the arc so far
    for byte in data[start:stop]:
        if byte & 0x80:
            # value stays a multiple of 128 at most MAX_ARC, so the arc it ends in fits too
            value = (value | (byte & 0x7F)) << 7
            width += 1
            if width == MAX_ARC_BYTES:
                raise BerError(f"OID sub-identifier longer than {MAX_ARC_BYTES} octets")
            if value > MAX_ARC:
                raise BerError("OID sub-identifier above 2**64 - 1")
        else:
            arcs.append(value | byte)
            value = 0
            width = 0
    if len(arcs) > MAX_OID_ARCS:
        raise BerError(f"OID longer than {MAX_OID_ARCS} arcs")
    first = arcs[0]
    if first < 40:
        head: tuple[int, int] = (0, first)
    elif first < 80:
        head = (1, first - 40)
    else:
        head = (2, first - 80)
    return (*head, *arcs[1:])


def read_varbind_oids(data: bytes, pos: int, end: int) -> list[Oid]:
    """Decode a VarBindList and return its OIDs (request values are ignored)."""
    start, stop = expect(data, pos, end, SEQUENCE)
    if stop != end:
        raise BerError("trailing bytes after the varbind list")
    oids: list[Oid] = []
    pos = start
    while pos < stop:
        vb_start, vb_stop = expect(data, pos, stop, SEQUENCE)
        oid_start, oid_stop = expect(data, vb_start, vb_stop, OBJECT_IDENTIFIER)
        _, _, value_stop = read_tlv(data, oid_stop, vb_stop)
        if value_stop != vb_stop:
            raise BerError("trailing bytes in a varbind")
        oids.append(decode_oid(data, oid_start, oid_stop))
        pos = vb_stop
    return oids


def decode_value(tag: int, data: bytes, start: int, stop: int) -> object:
    """Decode one varbind value to a Python value (used by tests and the trap parser)."""
    if tag == INTEGER:
        return decode_integer(data, start, stop)
    if tag in (COUNTER32, GAUGE32, TIMETICKS, COUNTER64):
        return decode_unsigned(data, start, stop)
    if tag in (OCTET_STRING, OPAQUE):
        return data[start:stop]
    if tag == IP_ADDRESS:
        return ".".join(str(b) for b in data[start:stop])
    if tag == OBJECT_IDENTIFIER:
        return decode_oid(data, start, stop)
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return None
    raise BerError(f"unknown value tag 0x{tag:02x}")


def read_varbinds(data: bytes, pos: int, end: int) -> list[tuple[Oid, int, object]]:
    """Decode a VarBindList fully: (oid, value tag, value)."""
    start, stop = expect(data, pos, end, SEQUENCE)
    out: list[tuple[Oid, int, object]] = []
    pos = start
    while pos < stop:
        vb_start, vb_stop = expect(data, pos, stop, SEQUENCE)
        oid_start, oid_stop = expect(data, vb_start, vb_stop, OBJECT_IDENTIFIER)
        tag, v_start, v_stop = read_tlv(data, oid_stop, vb_stop)
        out.append(
            (decode_oid(data, oid_start, oid_stop), tag, decode_value(tag, data, v_start, v_stop))
        )
        pos = vb_stop
    return out
