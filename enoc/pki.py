"""A private certificate authority for the MQTT links: broker, agents, collectors.

The broker gets a server certificate whose subjectAltNames list every name
and address clients reach it by; each agent and each collector gets its own
client certificate (CN = agent id, or "collector"), so that the broker can
refuse anything the CA did not issue and a stolen certificate can be singled
out. Everything is PEM; private keys are written mode 0600.

`make_pki` keeps a directory of these up to date and is safe to run again:

    pki/ca.pem  ca.key                  the CA (kept: never re-issued here)
    pki/server.pem  server.key          the broker's certificate
    pki/clients/<name>.pem  <name>.key  one per agent or collector

An existing CA is reused, so adding an agent later issues one certificate and
leaves every deployed one valid. An existing server or client certificate is
kept while it is still issued by that CA, matches its key, covers the names
asked for and is not within `RENEW_BEFORE` of expiry; otherwise it is
re-issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650  # ten years: replacing a CA means touching every site
CERT_DAYS = 825  # server and client certificates; `make_pki` renews them
RENEW_BEFORE = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(minutes=5)  # not-before this far back: site clocks drift

_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?$")


class PkiError(Exception):
    """The directory holds something `make_pki` must not overwrite or cannot use."""


# ---------------------------------------------------------------- keys and certificates


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        """The certificate (mode 0644) and the key (mode 0600), each replaced atomically."""
        write_private_key(key_path, self.key)
        write_certificate(cert_path, self.cert)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Issued:
        """Read a PEM pair; raises PkiError when the key does not belong to the certificate."""
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = load_private_key(key_path)
        if _spki(cert.public_key()) != _spki(key.public_key()):
            raise PkiError(f"{key_path} is not the key of {cert_path}")
        return cls(cert, key)


def new_key(key_type: KeyType = "ec") -> PrivateKey:
    """EC P-256 (small, fast, the default) or RSA 2048 (for old TLS stacks)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f'key type must be "ec" or "rsa", got {key_type!r}')


def make_ca(
    common_name: str = "enoc CA", *, key_type: KeyType = "ec", days: int = CA_DAYS
) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "enoc"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_server_cert(
    ca: Issued,
    names: Sequence[str],
    *,
    key_type: KeyType = "ec",
    days: int = CERT_DAYS,
    client_auth: bool = False,
) -> Issued:
    """The broker's certificate: serverAuth, every name or IP address as a subjectAltName.

    Clients check the name they connect to against the subjectAltNames only
    (not the CN), so list each one: `["mqtt.example.net", "10.0.0.5"]`.
    `client_auth`: clientAuth too, for a cluster's nodes that present it to each other.
    """
    if not names:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    alt_names = [_general_name(n) for n in names]
    return _issue(
        ca,
        names[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        *([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else []),
        key_type=key_type,
        days=days,
        alt_names=alt_names,
    )


def make_client_cert(
    ca: Issued, name: str, *, key_type: KeyType = "ec", days: int = CERT_DAYS
) -> Issued:
    """An agent's or collector's certificate: CN = `name`, clientAuth."""
    _check_client_name(name)
    return _issue(ca, name, ExtendedKeyUsageOID.CLIENT_AUTH, key_type=key_type, days=days)


def _issue(
    ca: Issued,
    common_name: str,
    *usages: x509.ObjectIdentifier,
    key_type: KeyType,
    days: int,
    alt_names: list[x509.GeneralName] | None = None,
) -> Issued:
    key = new_key(key_type)
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca.cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


# ---------------------------------------------------------------- files


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Unencrypted PKCS#8 PEM (brokers and agents start unattended), mode 0600."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, data, 0o600)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: only EC and RSA keys are supported")
    return key


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write next to `path` with `mode` from the start (never briefly world-readable), rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; set exactly these
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


# ---------------------------------------------------------------- a directory of them


@dataclass(frozen=True)
class Pki:
    """Where `make_pki` put everything; `clients` maps each name to (cert, key)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


def make_pki(
    directory: Path,
    *,
    server_names: list[str],
    clients: list[str],
    key_type: KeyType = "ec",
    ca_name: str = "enoc CA",
) -> Pki:
    """Create or complete the CA, the broker's certificate and one per client in `directory`.

    Reuses the CA found there (an incomplete one, a certificate without its
    key or the other way round, is an error rather than silently replaced),
    keeps every certificate that is still good and issues the missing ones.
    """
    if not server_names:
        raise ValueError("server_names: give the broker's DNS names and/or IP addresses")
    for name in clients:
        _check_client_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca = Issued.load(ca_cert, ca_key)
        if ca.cert.not_valid_after_utc <= _now():
            raise PkiError(f"the CA {ca_cert} has expired: make a new one and redeploy")
    elif ca_cert.exists() or ca_key.exists():
        present, missing = (ca_cert, ca_key) if ca_cert.exists() else (ca_key, ca_cert)
        raise PkiError(f"{present} exists but {missing} does not: restore it or remove both")
    else:
        ca = make_ca(ca_name, key_type=key_type)
        ca.write(ca_cert, ca_key)

    server_cert, server_key = directory / "server.pem", directory / "server.key"
    if not _still_good(server_cert, server_key, ca, names=server_names):
        make_server_cert(ca, server_names, key_type=key_type).write(server_cert, server_key)

    issued: dict[str, tuple[Path, Path]] = {}
    for name in clients:
        cert, key = directory / "clients" / f"{name}.pem", directory / "clients" / f"{name}.key"
        if not _still_good(cert, key, ca, common_name=name):
            make_client_cert(ca, name, key_type=key_type).write(cert, key)
        issued[name] = (cert, key)
    return Pki(directory, ca_cert, ca_key, server_cert, server_key, issued)


def _still_good(
    cert_path: Path,
    key_path: Path,
    ca: Issued,
    *,
    names: Sequence[str] = (),
    common_name: str | None = None,
) -> bool:
    """Issued by `ca`, with its key, covering `names` / `common_name`, not about to expire."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        pair = Issued.load(cert_path, key_path)
        pair.cert.verify_directly_issued_by(ca.cert)
    except (PkiError, ValueError, TypeError, InvalidSignature):
        return False
    if pair.cert.not_valid_after_utc - RENEW_BEFORE <= _now():
        return False
    if common_name is not None:
        cns = pair.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [a.value for a in cns] != [common_name]:
            return False
    if names:
        try:
            san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return False
        have = {str(v) for v in san.value.get_values_for_type(x509.DNSName)}
        have |= {str(v) for v in san.value.get_values_for_type(x509.IPAddress)}
        if not {_canonical(n) for n in names} <= have:
            return False
    return True


# ---------------------------------------------------------------- helpers


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not _DNS_NAME.match(name):
        raise ValueError(f"{name!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def _canonical(name: str) -> str:
    """How a name reads back from a certificate's subjectAltName (IPv6 compressed)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _check_client_name(name: str) -> None:
    if not _CLIENT_NAME.match(name):
        raise ValueError(
            f"client name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(it names the certificate's files)"
        )
