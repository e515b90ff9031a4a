"""The v3 envelope of enoc.snmp.message, as the poller, the trap receiver and the simulator
use it: built at each security level, then parsed, verified and opened again."""

from __future__ import annotations

import pytest

from enoc.snmp import ber
from enoc.snmp.ber import BerError
from enoc.snmp.message import (
    FLAG_AUTH,
    FLAG_PRIV,
    FLAG_REPORTABLE,
    ResponsePdu,
    UnknownSecurityModel,
    V3Header,
    build_v3_message,
    encode_pdu,
    encode_scoped,
    parse_response_pdu,
    parse_v3_header,
)
from enoc.snmp.usm import DecryptionError, LocalizedUser, UsmUser

ENGINE = b"\x80\x00\x1f\x88\x04enoc-test"
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
USERS = {
    0: UsmUser("none"),
    FLAG_AUTH: UsmUser("auth", "SHA-256", "auth-passphrase"),
    FLAG_AUTH | FLAG_PRIV: UsmUser("priv", "SHA", "auth-passphrase", "AES-128", "priv-passphrase"),
}
DES_USER = UsmUser("des", "MD5", "auth-passphrase", "DES", "priv-passphrase")


def message(user: UsmUser, keys: LocalizedUser | None, request_id: int = 7) -> bytes:
    varbind = ber.encode_varbind(ber.encode_oid(SYS_NAME), ber.encode_octets(b"edge-1"))
    return build_v3_message(
        msg_id=99,
        max_size=65507,
        flags=user.level | FLAG_REPORTABLE,
        engine_id=ENGINE,
        boots=4,
        etime=1234,
        user_name=user.name.encode(),
        scoped=encode_scoped(ENGINE, encode_pdu(ber.RESPONSE, request_id, 0, 0, varbind), b"ctx"),
        keys=keys,
    )


def header_of(data: bytes) -> tuple[V3Header, int]:
    start, end = ber.expect(data, 0, len(data), ber.SEQUENCE)
    version, pos = ber.read_integer(data, start, end)
    assert version == 3
    return parse_v3_header(data, pos, end), end


@pytest.mark.parametrize("user", [*USERS.values(), DES_USER], ids=lambda u: u.name)
def test_a_message_built_at_each_level_opens_again(user: UsmUser) -> None:
    keys = LocalizedUser.localize(user, ENGINE) if user.level else None
    data = message(user, keys)
    header, end = header_of(data)
    assert (header.msg_id, header.engine_id, header.boots, header.etime) == (99, ENGINE, 4, 1234)
    assert header.level == user.level and header.reportable
    assert (header.salt != b"") == bool(user.level & FLAG_PRIV)
    assert (b"edge-1" in data) != bool(user.level & FLAG_PRIV), "encrypted, or in clear"
    if keys is not None:
        assert header.authentic(data, keys)
        other = LocalizedUser.localize(user, ENGINE + b"-other")
        assert not header.authentic(data, other)
    engine, context, pdu = header.open_scoped(data, end, keys, parse_response_pdu)
    assert (engine, context) == (ENGINE, b"ctx")
    assert isinstance(pdu, ResponsePdu)
    assert pdu.request_id == 7
    assert pdu.varbinds == [(SYS_NAME, ber.OCTET_STRING, b"edge-1")]


def test_a_changed_octet_fails_authentication() -> None:
    user = USERS[FLAG_AUTH]
    keys = LocalizedUser.localize(user, ENGINE)
    data = message(user, keys)
    at = data.index(b"edge-1")
    tampered = data[:at] + b"E" + data[at + 1 :]
    header, _end = header_of(tampered)
    assert not header.authentic(tampered, keys)


def test_what_a_wrong_privacy_key_decrypts_to_is_a_decryption_error() -> None:
    user = USERS[FLAG_AUTH | FLAG_PRIV]
    data = message(user, LocalizedUser.localize(user, ENGINE))
    header, end = header_of(data)
    wrong = LocalizedUser.localize(
        UsmUser("priv", "SHA", "auth-passphrase", "AES-128", "x" * 9), ENGINE
    )
    with pytest.raises(DecryptionError):
        header.open_scoped(data, end, wrong, parse_response_pdu)
    with pytest.raises(DecryptionError, match="no privacy key"):
        header.open_scoped(data, end, None, parse_response_pdu)


def test_a_clear_text_pdu_that_does_not_decode_is_a_ber_error() -> None:
    user = USERS[0]
    data = message(user, None)
    cut = data.replace(b"edge-1", b"\xff" * 6)  # the OCTET STRING's content only
    header, end = header_of(cut)
    assert header.open_scoped(cut, end, None, parse_response_pdu)[2].varbinds[0][2] == b"\xff" * 6
    broken = data.replace(ber.encode_octets(b"edge-1"), b"\x04\x09edge-1")  # longer than it is
    header, end = header_of(broken)
    with pytest.raises(BerError) as raised:
        header.open_scoped(broken, end, None, parse_response_pdu)
    assert not isinstance(raised.value, DecryptionError)


def test_another_security_model_is_told_apart_from_garbage() -> None:
    data = message(USERS[0], None)
    usm = b"\x04\x01\x04\x02\x01\x03"
    assert data.count(usm) == 1
    with pytest.raises(UnknownSecurityModel) as raised:
        header_of(data.replace(usm, usm[:-1] + b"\x01"))
    assert raised.value.model == 1
    assert isinstance(raised.value, BerError)
