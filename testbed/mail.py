"""A real SMTP server (aiosmtpd) on a loopback port, for the e-mail notifier's tests.

It runs in the caller's event loop, speaks plain SMTP, STARTTLS or TLS from the first
byte (smtps), takes AUTH PLAIN/LOGIN against a user table, and answers DATA or RCPT with
scripted replies (a 451 then a 250, a 554) so that retries and refusals meet a real
protocol exchange.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from testbed.servers import HOST, free_port


@dataclass
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool  # the session was encrypted (STARTTLS or smtps)
    login: str | None  # the user who logged in, if one did


@dataclass
class MailServer:
    """An aiosmtpd server on `HOST`: `url` is what a receiver's `smtp.url` names."""

    tls: ssl.SSLContext | None = None  # offered by STARTTLS, or from the start if `implicit`
    implicit: bool = False  # smtps://
    require_starttls: bool = False
    users: dict[str, str] = field(default_factory=dict)  # AUTH required when given
    # replies to DATA before a message is taken, in order ("451 4.3.0 Try again later")
    script: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> its RCPT reply
    received: list[Received] = field(default_factory=list)
    attempts: int = 0  # DATA commands seen
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit else 'smtp'}://{HOST}:{self.port}"

    async def start(self) -> MailServer:
        self.port = free_port()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, HOST, self.port, ssl=self.tls if self.implicit else None
        )
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> MailServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _protocol(self) -> SMTP:
        return SMTP(
            self,
            hostname="mail.test",
            tls_context=None if self.implicit else self.tls,
            require_starttls=self.require_starttls,
            auth_required=bool(self.users),
            # aiosmtpd knows only a STARTTLS session as encrypted; smtps is from the start
            auth_require_tls=bool(self.tls) and not self.implicit,
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        accepted = self.users.get(user) == password
        self.logins.append((user, accepted))
        # handled=False: aiosmtpd answers a refusal itself (535)
        return AuthResult(success=accepted, handled=False, auth_data=user if accepted else None)

    # aiosmtpd's handler hooks
    async def handle_RCPT(  # noqa: N802
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, _server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.attempts += 1
        if self.script:
            return self.script.pop(0)
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(
            Received(
                sender=str(envelope.mail_from),
                recipients=list(envelope.rcpt_tos),
                message=parsed,
                tls=self.implicit or session.ssl is not None,
                login=str(session.auth_data) if session.authenticated else None,
            )
        )
        return "250 OK queued"


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of TLS for `MailServer.tls`, from a certificate and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
