"""SNMPv3 privacy salts start at a random value (RFC 3826 3.1.2.1) and then increment."""

from __future__ import annotations

from simkit import V3_AUTH, V3_PRIV, V3_USER

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
