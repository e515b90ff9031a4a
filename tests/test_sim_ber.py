"""The hand-written BER codec: round trips and strict rejection of bad input."""

from __future__ import annotations

import random

import pytest

from enoc.snmp import ber


@pytest.mark.parametrize(
    "value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**31 - 1, -(2**31), 2**40]
)
def test_integer_round_trip(value: int) -> None:
    encoded = ber.encode_integer(value)
    tag, start, stop = ber.read_tlv(encoded, 0, len(encoded))
    assert tag == ber.INTEGER
    assert ber.decode_integer(encoded, start, stop) == value


@pytest.mark.parametrize("value", [0, 127, 128, 2**32 - 1, 2**63, 2**64 - 1])
def test_unsigned_round_trip_has_no_sign_problem(value: int) -> None:
    encoded = ber.encode_unsigned(ber.COUNTER64, value)
    tag, start, stop = ber.read_tlv(encoded, 0, len(encoded))
    assert tag == ber.COUNTER64
    assert ber.decode_unsigned(encoded, start, stop) == value
    if value >= 2**63:
        assert encoded[2] == 0  # leading zero octet keeps it positive


@pytest.mark.parametrize(
    "oid",
    [
        (1, 3, 6, 1, 2, 1, 1, 1, 0),
        (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1_200_000_000),
        (2, 999, 3),
        (0, 0),
    ],
)
def test_oid_round_trip(oid: ber.Oid) -> None:
    encoded = ber.encode_oid(oid)
    _, start, stop = ber.read_tlv(encoded, 0, len(encoded))
    assert ber.decode_oid(encoded, start, stop) == oid


def test_known_encodings_match_the_standard() -> None:
    assert ber.encode_oid((1, 3, 6, 1, 2, 1, 1, 3, 0)) == bytes.fromhex("06082b06010201010300")
    assert ber.encode_integer(-129) == bytes.fromhex("0202ff7f")
    assert ber.encode_length(300) == bytes.fromhex("82012c")
    assert ber.tlv(0x04, b"x" * 200)[:3] == bytes.fromhex("0481c8")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x05\x02\x01",  # length beyond the end
        b"\x30\x85\x00\x00\x00\x00\x01",  # 5-octet length
        b"\x30\x80\x00\x00",  # indefinite length is not allowed in SNMP
    ],
)
def test_truncated_or_odd_lengths_raise(data: bytes) -> None:
    with pytest.raises(ber.BerError):
        ber.expect(data, 0, len(data), ber.SEQUENCE)


def test_oid_ending_inside_an_arc_raises() -> None:
    data = b"\x06\x02\x2b\x86"
    with pytest.raises(ber.BerError):
        ber.decode_oid(data, 2, 4)


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(7)
    seed = bytes.fromhex(
        "302902010104067075626c6963a01c0204000000020201000201003010300e060a2b060102011f010101010500"
    )
    for _ in range(3000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randint(0, len(data))
        try:
            start, end = ber.expect(bytes(data[:cut]), 0, cut, ber.SEQUENCE)
            ber.read_varbind_oids(bytes(data[:cut]), start, end)
        except ber.BerError:
            pass


class CountingBytes(bytes):
    """Bytes that count the octets a decoder reads, by index or by iterating a slice."""

    reads = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        part = super().__getitem__(index)
        if isinstance(index, slice):
            return _Counted(part)
        CountingBytes.reads += 1
        return part


class _Counted:
    def __init__(self, part: bytes) -> None:
        self.part = part

    def __iter__(self):  # type: ignore[no-untyped-def]
        for byte in self.part:
            CountingBytes.reads += 1
            yield byte


def test_a_65_kb_oid_arc_is_refused_after_reading_eleven_octets() -> None:
    """An arc is at most 2**64 - 1 in at most ten octets: the decoder refuses one as soon
    as it passes either, instead of growing an integer through 65 KB (quadratic)."""
    content = CountingBytes(b"\x2b" + b"\xff" * 65_000 + b"\x01")
    CountingBytes.reads = 0
    with pytest.raises(ber.BerError, match="sub-identifier above 2"):
        ber.decode_oid(content, 0, len(content))
    assert CountingBytes.reads <= 1 + 1 + 10  # the last octet, the first arc, ten more
    # padded with 0x80 (zero groups), an arc never grows but is refused at its tenth
    content = CountingBytes(b"\x2b" + b"\x80" * 65_000 + b"\x01")
    CountingBytes.reads = 0
    with pytest.raises(ber.BerError, match="longer than 10 octets"):
        ber.decode_oid(content, 0, len(content))
    assert CountingBytes.reads <= 1 + 1 + 10


@pytest.mark.parametrize("arc", [2**32 - 1, 2**63, 2**64 - 1])
def test_oid_arcs_up_to_64_bits_decode(arc: int) -> None:
    oid = (1, 3, 6, 1, 4, 1, arc, 0)
    encoded = ber.encode_oid(oid)
    assert ber.decode_oid(encoded, 2, len(encoded)) == oid


def test_an_oid_arc_above_64_bits_is_refused() -> None:
    encoded = ber.encode_oid((1, 3, 2**64))  # ten octets, one bit too many
    assert len(encoded) == 2 + 1 + 10
    with pytest.raises(ber.BerError, match="above 2\\*\\*64"):
        ber.decode_oid(encoded, 2, len(encoded))
    many = ber.encode_oid_content((1, 3, *range(128)))  # 129 sub-identifiers: one too many
    with pytest.raises(ber.BerError, match="128 arcs"):
        ber.decode_oid(many, 0, len(many))
