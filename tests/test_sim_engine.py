"""SNMP request processing, in process: every PDU type, every error answer, every bad input."""

from __future__ import annotations

import pytest
from simkit import V3_USER, decode_v2c_response, decode_v3, small_fleet, v2c_request, v3_request

from enoc.snmp import ber
from enoc.snmp.mib import IF_ENTRY, IFX_ENTRY
from enoc.snmp.usm import (
    USM_STATS_DECRYPTION_ERRORS,
    USM_STATS_NOT_IN_TIME_WINDOWS,
    USM_STATS_UNKNOWN_ENGINE_IDS,
    USM_STATS_UNKNOWN_USER_NAMES,
    USM_STATS_UNSUPPORTED_SEC_LEVELS,
    USM_STATS_WRONG_DIGESTS,
    LocalizedUser,
    UsmUser,
)
from simulators.engine import Engine
from simulators.model import Device

NOW = 1_800_000_000.0
SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


@pytest.fixture
def switch() -> Device:
    return next(d for d in small_fleet(now=NOW) if d.role == "access-switch")


def ask(
    engine: Engine, device: Device, request: bytes
) -> tuple[int, int, int, list[tuple[ber.Oid, int, object]]]:
    reply = engine.handle(device, request, NOW)
    assert reply is not None
    return decode_v2c_response(reply)


def test_get_returns_values_and_the_right_exception_for_missing_oids(switch: Device) -> None:
    engine = Engine()
    _rid, status, _idx, vbs = ask(
        engine,
        switch,
        v2c_request(ber.GET, [SYS_NAME, (1, 3, 6, 1, 2, 1, 1, 5, 1), (1, 3, 6, 1, 9, 9, 9, 0)]),
    )
    assert status == 0
    assert vbs[0] == (SYS_NAME, ber.OCTET_STRING, switch.name.encode())
    assert vbs[1][1] == ber.NO_SUCH_INSTANCE  # sysName exists, instance .1 does not
    assert vbs[2][1] == ber.NO_SUCH_OBJECT


def test_getnext_walks_in_order_and_ends_with_end_of_mib_view(switch: Device) -> None:
    engine = Engine()
    oid: ber.Oid = (1, 3, 6, 1, 2, 1, 1)
    seen = []
    while True:
        _rid, _st, _ix, vbs = ask(engine, switch, v2c_request(ber.GETNEXT, [oid]))
        next_oid, tag, _value = vbs[0]
        if tag == ber.END_OF_MIB_VIEW:
            break
        assert next_oid > oid
        seen.append(next_oid)
        oid = next_oid
    assert len(seen) == len(switch.view or [])
    assert seen[0] == SYS_DESCR


def test_getbulk_returns_table_rows_with_counters(switch: Device) -> None:
    engine = Engine()
    hc_in = (*IFX_ENTRY, 6)
    _rid, status, _idx, vbs = ask(
        engine, switch, v2c_request(ber.GETBULK, [SYS_DESCR, hc_in], f1=1, f2=12)
    )
    assert status == 0
    assert vbs[0][0] == (1, 3, 6, 1, 2, 1, 1, 2, 0)  # non-repeater: next after sysDescr
    rows = vbs[1:]
    assert [o[-1] for o, _t, _v in rows] == list(range(1, 13))
    assert all(o[:-1] == hc_in and t == ber.COUNTER64 for o, t, _v in rows)


def test_getbulk_past_the_end_gives_end_of_mib_view(switch: Device) -> None:
    engine = Engine()
    _rid, _st, _ix, vbs = ask(engine, switch, v2c_request(ber.GETBULK, [(1, 3, 6, 1, 9)], f2=5))
    assert vbs[0][1] == ber.END_OF_MIB_VIEW


def test_getbulk_is_truncated_to_the_message_size_and_get_answers_too_big() -> None:
    switch = next(
        d for d in small_fleet(now=NOW, max_message_size=484) if d.role == "access-switch"
    )
    engine = Engine()
    request = v2c_request(ber.GETBULK, [(*IF_ENTRY, 2)], f2=200)
    reply = engine.handle(switch, request, NOW)
    assert reply is not None
    assert len(reply) <= 484
    _rid, status, _ix, vbs = decode_v2c_response(reply)
    assert status == 0 and 0 < len(vbs) < 200
    # A request that fits but whose answer cannot: ifDescr and ifName of 8 ports.
    many = [(*IF_ENTRY, 2, i) for i in range(1, 9)] + [(*IFX_ENTRY, 1, i) for i in range(1, 9)]
    assert len(v2c_request(ber.GET, many)) < 484
    reply = engine.handle(switch, v2c_request(ber.GET, many), NOW)
    assert reply is not None
    _rid, status, index, vbs = decode_v2c_response(reply)
    assert (status, index, vbs) == (1, 0, [])  # tooBig, no varbinds
    assert engine.stats.bad["too_big"] == 1


def test_set_is_refused_as_not_writable(switch: Device) -> None:
    _rid, status, index, _vbs = ask(Engine(), switch, v2c_request(ber.SET, [SYS_NAME]))
    assert (status, index) == (17, 1)


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("garbage", b"\xff\x00\x01garbage", "malformed"),
        ("truncated", v2c_request(ber.GET, [SYS_NAME])[:-3], "malformed"),
        ("trailing", v2c_request(ber.GET, [SYS_NAME]) + b"\x00", "malformed"),
        ("community", v2c_request(ber.GET, [SYS_NAME], community=b"guess"), "unknown_community"),
        ("version 5", bytes.fromhex("3006020105040170"), "unsupported_version"),
        (
            "v1 getbulk",  # v1 has no GETBULK
            v2c_request(ber.GETBULK, [SYS_NAME]).replace(b"\x02\x01\x01", b"\x02\x01\x00", 1),
            "unsupported_pdu",
        ),
        ("response pdu", v2c_request(ber.RESPONSE, [SYS_NAME]), "unsupported_pdu"),
        ("oversized", v2c_request(ber.GET, [SYS_NAME] * 200), "oversized"),
    ],
)
def test_bad_requests_are_counted_and_dropped_and_good_ones_still_work(
    switch: Device, name: str, data: bytes, kind: str
) -> None:
    engine = Engine()
    assert engine.handle(switch, data, NOW) is None, name
    assert engine.stats.bad[kind] == 1
    assert engine.last_bad == kind
    _rid, status, _ix, vbs = ask(engine, switch, v2c_request(ber.GET, [SYS_NAME]))
    assert status == 0 and vbs[0][2] == switch.name.encode()
    assert engine.last_bad is None


# ------------------------------------------------------------------ SNMPv3 USM


def keys_for(device: Device) -> LocalizedUser:
    keys = device.user_keys(V3_USER.encode())
    assert keys is not None
    return LocalizedUser.localize(keys.user, device.engine_id)


def report_oid(reply: bytes | None) -> ber.Oid:
    assert reply is not None
    decoded = decode_v3(reply)
    assert decoded["pdu"] == ber.REPORT
    varbinds = decoded["varbinds"]
    assert isinstance(varbinds, list)
    oid: ber.Oid = varbinds[0][0]
    return oid


def test_discovery_reports_engine_id_boots_and_time(switch: Device) -> None:
    engine = Engine()
    reply = engine.handle(
        switch,
        v3_request(
            switch, ber.GET, [], keys=None, flags=4, engine_id=b"", boots=0, etime=0, user=b""
        ),
        NOW,
    )
    assert report_oid(reply) == USM_STATS_UNKNOWN_ENGINE_IDS
    assert reply is not None
    decoded = decode_v3(reply)
    assert decoded["engine_id"] == switch.engine_id
    assert decoded["boots"] == switch.engine_boots
    assert decoded["time"] == switch.engine_time(NOW)


def test_auth_priv_get_round_trip(switch: Device) -> None:
    engine = Engine()
    keys = keys_for(switch)
    reply = engine.handle(
        switch, v3_request(switch, ber.GET, [SYS_NAME], keys=keys, flags=7, now=NOW), NOW
    )
    assert reply is not None
    decoded = decode_v3(reply, keys)
    assert decoded["flags"] == 3
    assert decoded["varbinds"] == [(SYS_NAME, ber.OCTET_STRING, switch.name.encode())]
    # The response is signed: a wrong MAC would make this fail.
    mac = decoded["mac"]
    assert isinstance(mac, bytes) and len(mac) == 24  # HMAC-SHA-256-192


@pytest.mark.parametrize(
    ("case", "expected", "kind"),
    [
        ("unknown user", USM_STATS_UNKNOWN_USER_NAMES, "unknown_user"),
        ("wrong digest", USM_STATS_WRONG_DIGESTS, "wrong_digest"),
        ("old boots", USM_STATS_NOT_IN_TIME_WINDOWS, "not_in_time_window"),
        ("late time", USM_STATS_NOT_IN_TIME_WINDOWS, "not_in_time_window"),
        ("wrong priv key", USM_STATS_DECRYPTION_ERRORS, "decryption_error"),
        ("level too high", USM_STATS_UNSUPPORTED_SEC_LEVELS, "unsupported_sec_level"),
    ],
)
def test_usm_failures_answer_with_the_right_report(
    switch: Device, case: str, expected: ber.Oid, kind: str
) -> None:
    engine = Engine()
    keys = keys_for(switch)
    kwargs: dict[str, object] = {"keys": keys, "flags": 7, "now": NOW}
    if case == "unknown user":
        kwargs["user"] = b"mallory"
    elif case == "wrong digest":
        kwargs["tamper_mac"] = True
    elif case == "old boots":
        kwargs["boots"] = switch.engine_boots - 1
    elif case == "late time":
        kwargs["etime"] = switch.engine_time(NOW) + 151
    elif case == "wrong priv key":
        wrong = LocalizedUser.localize(
            UsmUser(V3_USER, "SHA-256", "enoc-sim-auth-key", "AES-128", "not-the-priv-key"),
            switch.engine_id,
        )
        kwargs["keys"] = wrong
    elif case == "level too high":
        switch.users = {b"authonly": UsmUser("authonly", "SHA", "auth-only-key")}
        switch.localized.clear()
        kwargs["user"] = b"authonly"
        kwargs["keys"] = LocalizedUser.localize(
            UsmUser("authonly", "SHA", "auth-only-key", "AES-128", "some-priv-key"),
            switch.engine_id,
        )
    reply = engine.handle(switch, v3_request(switch, ber.GET, [SYS_NAME], **kwargs), NOW)  # type: ignore[arg-type]
    assert report_oid(reply) == expected
    assert engine.stats.reports[kind] == 1


def test_not_in_time_window_report_is_authenticated_so_managers_can_resync(switch: Device) -> None:
    keys = keys_for(switch)
    reply = Engine().handle(
        switch, v3_request(switch, ber.GET, [SYS_NAME], keys=keys, flags=7, boots=1, now=NOW), NOW
    )
    assert reply is not None
    decoded = decode_v3(reply)
    assert decoded["flags"] == 1  # authNoPriv
    assert decoded["boots"] == switch.engine_boots


def test_reboot_bumps_engine_boots_so_old_time_is_refused(switch: Device) -> None:
    engine = Engine()
    keys = keys_for(switch)
    old_boots = switch.engine_boots
    switch.reboot(NOW)
    assert switch.engine_boots == old_boots + 1
    reply = engine.handle(
        switch,
        v3_request(switch, ber.GET, [SYS_NAME], keys=keys, flags=7, boots=old_boots, now=NOW),
        NOW,
    )
    assert report_oid(reply) == USM_STATS_NOT_IN_TIME_WINDOWS
    reply = engine.handle(
        switch, v3_request(switch, ber.GET, [SYS_NAME], keys=keys, flags=7, now=NOW), NOW
    )
    assert reply is not None
    assert decode_v3(reply, keys)["pdu"] == ber.RESPONSE


def test_unreportable_failures_are_silent(switch: Device) -> None:
    engine = Engine()
    request = v3_request(
        switch, ber.GET, [SYS_NAME], keys=keys_for(switch), flags=3, user=b"mallory", now=NOW
    )
    assert engine.handle(switch, request, NOW) is None
    assert engine.stats.bad["unknown_user"] == 1


def test_a_v3_request_of_another_security_model_is_refused_as_such(switch: Device) -> None:
    engine = Engine()
    request = v3_request(switch, ber.GET, [SYS_NAME], keys=None, flags=4, now=NOW)
    usm = b"\x04\x01\x04\x02\x01\x03"  # msgFlags reportable, msgSecurityModel 3 (USM)
    assert request.count(usm) == 1
    engine.handle(switch, request.replace(usm, usm[:-1] + b"\x02"), NOW)
    assert engine.stats.bad == {"unknown_security_model": 1}
    assert engine.last_bad == "unknown_security_model"
