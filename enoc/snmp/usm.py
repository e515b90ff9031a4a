"""SNMPv3 User-based Security Model (RFC 3414, RFC 3826, RFC 7860) for the poller, the trap
receiver and the simulator.

Keys: a passphrase becomes Ku by hashing it repeated to 1 MiB (costly, cached
per passphrase), then is localized to one engine as Kul = H(Ku | engineID | Ku)
(cheap). Privacy keys are localized with the auth protocol's hash.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

try:  # CFB moved to the 'decrepit' module in cryptography 47; SNMP's AES (RFC 3826) needs it.
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

AuthProtocol = Literal["none", "MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PrivProtocol = Literal["none", "DES", "AES-128", "AES-192", "AES-256"]

AUTH_PROTOCOLS: dict[str, tuple[str, int]] = {
    # name: (hashlib name, length of the truncated MAC in msgAuthenticationParameters)
    "MD5": ("md5", 12),
    "SHA": ("sha1", 12),
    "SHA-224": ("sha224", 16),
    "SHA-256": ("sha256", 24),
    "SHA-384": ("sha384", 32),
    "SHA-512": ("sha512", 48),
}
PRIV_KEY_BYTES = {"DES": 16, "AES-128": 16, "AES-192": 24, "AES-256": 32}

# usmStats counters reported to the requester (RFC 3414 section 5).
USM_STATS_UNSUPPORTED_SEC_LEVELS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0)
USM_STATS_NOT_IN_TIME_WINDOWS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0)
USM_STATS_UNKNOWN_USER_NAMES = (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0)
USM_STATS_UNKNOWN_ENGINE_IDS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)
USM_STATS_WRONG_DIGESTS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)
USM_STATS_DECRYPTION_ERRORS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0)
SNMP_UNKNOWN_CONTEXTS = (1, 3, 6, 1, 6, 3, 12, 1, 5, 0)
# What a Report of each counter says: the name it is counted under on both ends.
REPORT_KINDS = {
    USM_STATS_UNSUPPORTED_SEC_LEVELS: "unsupported_sec_level",
    USM_STATS_NOT_IN_TIME_WINDOWS: "not_in_time_window",
    USM_STATS_UNKNOWN_USER_NAMES: "unknown_user",
    USM_STATS_UNKNOWN_ENGINE_IDS: "unknown_engine_id",
    USM_STATS_WRONG_DIGESTS: "wrong_digest",
    USM_STATS_DECRYPTION_ERRORS: "decryption_error",
    SNMP_UNKNOWN_CONTEXTS: "unknown_context",
}

TIME_WINDOW = 150  # seconds, RFC 3414 section 3.2 step 7


class DecryptionError(ValueError):
    """The encrypted PDU cannot be decrypted with this user's key."""


@functools.lru_cache(maxsize=256)
def password_to_key(hash_name: str, passphrase: bytes) -> bytes:
    """Ku: hash of the passphrase repeated to exactly 1,048,576 octets (RFC 3414 A.2)."""
    if not passphrase:
        raise ValueError("empty SNMPv3 passphrase")
    repeated = passphrase * (1048576 // len(passphrase) + 1)
    return hashlib.new(hash_name, repeated[:1048576]).digest()


def localize_key(hash_name: str, ku: bytes, engine_id: bytes) -> bytes:
    return hashlib.new(hash_name, ku + engine_id + ku).digest()


def extend_key_blumenthal(hash_name: str, key: bytes, needed: int) -> bytes:
    """Key extension for AES-192/256 from draft-blumenthal-aes-usm-04 (net-snmp's "AES-192/256")."""
    while len(key) < needed:
        key += hashlib.new(hash_name, key).digest()
    return key[:needed]


@dataclass(frozen=True)
class UsmUser:
    """One USM user as configured: protocols and passphrases."""

    name: str
    auth_protocol: AuthProtocol = "none"
    auth_key: str = ""
    priv_protocol: PrivProtocol = "none"
    priv_key: str = ""

    @property
    def level(self) -> int:
        """Security level as msgFlags bits: 0 noAuthNoPriv, 1 authNoPriv, 3 authPriv."""
        if self.auth_protocol == "none":
            return 0
        return 1 if self.priv_protocol == "none" else 3

    def __post_init__(self) -> None:
        if self.auth_protocol != "none" and self.auth_protocol not in AUTH_PROTOCOLS:
            raise ValueError(f"unknown auth protocol {self.auth_protocol!r}")
        if self.priv_protocol != "none" and self.priv_protocol not in PRIV_KEY_BYTES:
            raise ValueError(f"unknown privacy protocol {self.priv_protocol!r}")
        if self.priv_protocol != "none" and self.auth_protocol == "none":
            raise ValueError("privacy needs authentication (authPriv)")
        for label, key, proto in (
            ("auth_key", self.auth_key, self.auth_protocol),
            ("priv_key", self.priv_key, self.priv_protocol),
        ):
            if proto != "none" and len(key) < 8:
                raise ValueError(f"{label} must have at least 8 characters (RFC 3414)")


@dataclass
class LocalizedUser:
    """A user's keys localized to one engine: what the wire needs."""

    user: UsmUser
    engine_id: bytes
    auth_hash: str = ""
    auth_len: int = 0
    auth_key: bytes = b""
    priv_key: bytes = b""
    # RFC 3826 3.1.2.1: the salt integer starts at a random value (RFC 3414 8.1.1.1 for DES:
    # any value), so that two processes with the same key do not reuse one IV.
    _salt: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "big"))

    @classmethod
    def localize(cls, user: UsmUser, engine_id: bytes) -> LocalizedUser:
        out = cls(user=user, engine_id=engine_id)
        if user.auth_protocol != "none":
            out.auth_hash, out.auth_len = AUTH_PROTOCOLS[user.auth_protocol]
            ku = password_to_key(out.auth_hash, user.auth_key.encode())
            out.auth_key = localize_key(out.auth_hash, ku, engine_id)
        if user.priv_protocol != "none":
            kp = password_to_key(out.auth_hash, user.priv_key.encode())
            key = localize_key(out.auth_hash, kp, engine_id)
            out.priv_key = extend_key_blumenthal(
                out.auth_hash, key, PRIV_KEY_BYTES[user.priv_protocol]
            )
        return out

    # -- authentication

    def sign(self, whole_message: bytes) -> bytes:
        """MAC over the message whose msgAuthenticationParameters are still zeros."""
        return hmac.new(self.auth_key, whole_message, self.auth_hash).digest()[: self.auth_len]

    def verify(self, whole_message_zeroed: bytes, digest: bytes) -> bool:
        return hmac.compare_digest(self.sign(whole_message_zeroed), digest)

    # -- privacy

    def next_salt(self, engine_boots: int) -> bytes:
        """The next msgPrivacyParameters: a 64-bit counter for AES, boots and 32 bits for DES."""
        self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
        if self.user.priv_protocol == "DES":
            return engine_boots.to_bytes(4, "big") + (self._salt & 0xFFFFFFFF).to_bytes(4, "big")
        return self._salt.to_bytes(8, "big")

    def encrypt(self, plain: bytes, engine_boots: int, engine_time: int, salt: bytes) -> bytes:
        if self.user.priv_protocol == "DES":
            iv = bytes(a ^ b for a, b in zip(self.priv_key[8:16], salt, strict=True))
            padded = plain + b"\x00" * (-len(plain) % 8)
            encryptor = Cipher(_des(self.priv_key[:8]), modes.CBC(iv)).encryptor()
            return encryptor.update(padded) + encryptor.finalize()
        iv = engine_boots.to_bytes(4, "big") + engine_time.to_bytes(4, "big") + salt
        encryptor = Cipher(algorithms.AES(self.priv_key), CFB(iv)).encryptor()
        return encryptor.update(plain) + encryptor.finalize()

    def decrypt(self, cipher: bytes, engine_boots: int, engine_time: int, salt: bytes) -> bytes:
        if len(salt) != 8:
            raise DecryptionError("msgPrivacyParameters must be 8 octets")
        if self.user.priv_protocol == "DES":
            if len(cipher) % 8:
                raise DecryptionError("DES ciphertext is not a multiple of 8 octets")
            iv = bytes(a ^ b for a, b in zip(self.priv_key[8:16], salt, strict=True))
            decryptor = Cipher(_des(self.priv_key[:8]), modes.CBC(iv)).decryptor()
            return decryptor.update(cipher) + decryptor.finalize()
        iv = engine_boots.to_bytes(4, "big") + engine_time.to_bytes(4, "big") + salt
        decryptor = Cipher(algorithms.AES(self.priv_key), CFB(iv)).decryptor()
        return decryptor.update(cipher) + decryptor.finalize()


class KeyCache:
    """Users' keys localized to engine IDs, at most `size`, the least recently used dropped
    first: engine IDs arrive in unauthenticated datagrams, so a peer that keeps changing
    them must not grow it. Iterates over its (user, engine ID) pairs, the oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[tuple[UsmUser, bytes], LocalizedUser] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[UsmUser, bytes]]:
        return iter(self._keys)

    def get(self, user: UsmUser, engine_id: bytes) -> LocalizedUser | None:
        """The cached keys, if any; their place in the order stays until they are `add`ed."""
        return self._keys.get((user, engine_id))

    def add(self, keys: LocalizedUser) -> int:
        """Keep `keys` as the most recently used; how many older ones it pushed out."""
        key = (keys.user, keys.engine_id)
        self._keys[key] = keys
        self._keys.move_to_end(key)
        dropped = 0
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._keys.clear()


def _des(key: bytes) -> BlockCipherAlgorithm:
    """Single DES as 3DES with K1 = K2 = K3 (DES lives in cryptography's 'decrepit' module)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

    return TripleDES(key * 3)
