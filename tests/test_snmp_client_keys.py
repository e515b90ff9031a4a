"""The client's SNMPv3 keys: privacy salts start at a random value (RFC 3826 3.1.2.1) and
then increment; localized keys are a bounded cache."""

from __future__ import annotations

import pytest
from simkit import V3_AUTH, V3_PRIV, V3_USER

from enoc.snmp import client as client_module
from enoc.snmp.client import SnmpClient
from enoc.snmp.usm import LocalizedUser, UsmUser

ENGINE = bytes.fromhex("80001f888001020304")


def test_two_fresh_clients_start_from_different_salts_that_then_increment() -> None:
    user = UsmUser(V3_USER, "SHA-256", V3_AUTH, "AES-128", V3_PRIV)
    salts = []
    for _ in range(2):
        keys = SnmpClient()._localized(user, ENGINE)
        assert keys is not None
        first, second = keys.next_salt(1), keys.next_salt(1)
        assert len(first) == 8
        # 64-bit counter, wrapping
        assert int.from_bytes(second, "big") == (int.from_bytes(first, "big") + 1) % 2**64
        salts.append(first)
    # Two processes with the same key (a restart, or two agents) must not reuse an IV:
    # with a start at 0 both began at 1. A 64-bit random start repeats with odds 2**-64.
    assert salts[0] != salts[1]
    assert 1 not in {int.from_bytes(s, "big") for s in salts}


def test_des_salts_carry_the_boots_and_a_random_32_bit_counter() -> None:
    user = UsmUser(V3_USER, "SHA", V3_AUTH, "DES", V3_PRIV)
    a, b = (LocalizedUser.localize(user, ENGINE) for _ in range(2))
    first, second = a.next_salt(7), a.next_salt(7)
    assert first[:4] == second[:4] == (7).to_bytes(4, "big")
    assert int.from_bytes(second[4:], "big") == (int.from_bytes(first[4:], "big") + 1) % 2**32
    assert b.next_salt(7) != first


def test_keys_for_engine_ids_a_device_keeps_changing_are_a_bounded_lru(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine ID comes from an unauthenticated discovery Report: a device answering
    each discovery with a new (large) one must not grow the client's memory."""
    monkeypatch.setattr(client_module, "KEY_CACHE_SIZE", 3)
    user = UsmUser(V3_USER, "SHA-256", V3_AUTH, "AES-128", V3_PRIV)
    client = SnmpClient()
    engines = [bytes([0x80, 0, 0x1F, 0x88, i]) * 1000 for i in range(5)]
    for engine in engines:
        client._localized(user, engine)
    kept = client._localized(user, engines[2])  # used again: the most recent now
    client._localized(user, engines[0])
    assert [e for _u, e in client._keys] == [engines[4], engines[2], engines[0]]
    assert client.stats.key_evictions == 3
    assert client._localized(user, engines[2]) is kept
