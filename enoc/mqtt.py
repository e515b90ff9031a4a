"""MQTT connection settings shared by the agent, the collector and `enoc tail`.

One place builds the aiomqtt client arguments and the TLS context, so a fix
to either (certificate checks, timeouts) reaches every client at once.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from enoc.config import Secret


class TlsFiles(Protocol):
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...


class TlsSetupError(OSError):
    """A CA, certificate or key file that cannot be used (missing, unreadable, mismatched)."""


def tls_context(tls: TlsFiles | None) -> ssl.SSLContext:
    """Verifying client context: the broker's certificate must chain to `ca_file` (or the
    system CAs) and name the host; `cert_file`/`key_file` are this client's identity."""
    ca = tls.ca_file if tls else None
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if tls is not None and tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("ca_file", ca),
                ("cert_file", tls.cert_file if tls else None),
                ("key_file", tls.key_file if tls else None),
            )
            if value
        )
        raise TlsSetupError(f"cannot use the MQTT TLS files ({files}): {exc}") from exc
    return context


def client_args(
    url: str,
    *,
    identifier: str,
    tls: TlsFiles | None = None,
    username: str | None = None,
    password: Secret | None = None,
    keepalive: float = 30,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Keyword arguments for `aiomqtt.Client`: a persistent session (clean_session off)."""
    parts = urlsplit(url)
    secure = parts.scheme == "mqtts"
    args: dict[str, Any] = {
        "hostname": parts.hostname or "127.0.0.1",
        "port": parts.port or (8883 if secure else 1883),
        "identifier": identifier,
        "clean_session": False,
        "keepalive": int(keepalive),
        "timeout": timeout,
    }
    if username:
        args["username"] = username
    if password is not None:
        args["password"] = password.reveal()
    if secure:
        args["tls_context"] = tls_context(tls)
    return args
