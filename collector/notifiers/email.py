"""`notifications.email`: incident changes as plain-text e-mail, through aiosmtplib.

Each change is one message. Its subject says the severity, the change, the site, the
device and the summary; its body the incident's details and, when
`notifications.console_url` is set, a link to the device's page. The first message of an
incident (opened) has the incident's own Message-ID and every later one refers to it
(In-Reply-To, References), so a mail client shows an incident's changes as one thread;
a change sent again (a retry, a takeover) keeps its Message-ID, so the copy can be told.

SMTP replies map onto the machinery's two failure classes: a connection that fails or
drops, a timeout and a 4xx reply (greylisting, a full queue) are retried; a 5xx reply
(an unknown recipient, a refused login, relaying denied) and a server without a
capability the config asks for (STARTTLS, AUTH) are permanent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiosmtplib

from collector.notifiers.base import Delivery, DeliveryFailed, DeliveryRefused, Env
from enoc import __version__
from enoc.logs import OnceLogger, get_logger, redact
from enoc.mqtt import tls_context

if TYPE_CHECKING:
    from collector.config import EmailConfig, SmtpConfig

log = get_logger("enoc.collector.email")
_refused = OnceLogger(log)


def utc_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def mail_domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "enoc.invalid"


def incident_message_id(incident_id: int, sender: str) -> str:
    """The Message-ID of an incident's thread: its first message's, and every later one's
    In-Reply-To and References."""
    return f"<enoc.incident-{incident_id}@{mail_domain(sender)}>"


def device_link(console_url: str, incident: dict[str, Any]) -> str:
    """The console's page of the incident's device ("" without a console URL)."""
    if not console_url:
        return ""
    site, device = quote(incident["site"], safe=""), quote(incident["device"], safe="")
    return f"{console_url.rstrip('/')}/#/device/{site}/{device}"


def headline(incident: dict[str, Any]) -> str:
    """`MAJOR nairobi / nbo-ce-1: ge-0/0/1 down`: the severity, where, and the summary."""
    where = " / ".join(part for part in (incident["site"], incident["device"]) if part)
    summary = str(incident["title"]).removeprefix(f"{incident['device']}: ")  # once is enough
    # one line: a header cannot hold a line break, whatever a device's strings hold
    return " ".join(f"{incident['severity'].upper()} {where}: {summary}".split())


def subject(change: str, incident: dict[str, Any]) -> str:
    """`[enoc] MAJOR opened: nairobi / nbo-ce-1: ge-0/0/1 down`."""
    severity, _, rest = headline(incident).partition(" ")
    return f"[enoc] {severity} {change}: {rest}"


def body(change: str, incident: dict[str, Any], change_id: int, console_url: str) -> str:
    """The plain-text body: what an operator needs without opening the console."""
    rows = [
        ("Summary", incident["title"]),
        ("Severity", incident["severity"]),
        ("State", incident["state"]),
        ("Site", f"{incident['site']} (RTC {incident['rtc'] or '-'})"),
        ("Device", incident["device"]),
        ("Resource", incident["resource"] or "-"),
        ("Kind", incident["kind"]),
        ("Opened", utc_time(incident["opened"])),
        ("Updated", utc_time(incident["updated"])),
        ("Events", str(incident["count"])),
    ]
    if incident["escalated"]:
        rows.append(("Escalated", f"level {incident['escalated']}"))
    if incident["acknowledged"]:
        who = incident["acknowledged_by"] or "-"
        rows.append(("Acknowledged", f"{utc_time(incident['acknowledged'])} by {who}"))
    if incident["resolved"]:
        who = incident["resolved_by"] or "-"
        rows.append(("Resolved", f"{utc_time(incident['resolved'])} by {who}"))
    held = [
        why
        for why, on in (
            ("flapping", incident["flapping"]),
            ("in maintenance", incident["maintenance"]),
            (f"suppressed by incident {incident['suppressed_by']}", incident["suppressed_by"]),
        )
        if on
    ]
    if held:
        rows.append(("Held", ", ".join(held)))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"Incident {incident['id']} {change}.", ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in rows]
    link = device_link(console_url, incident)
    if link:
        lines += ["", f"Console: {link}"]
    lines += ["", "-- ", f"enoc-collector {__version__}, change {change_id}"]
    return "\n".join(lines) + "\n"


def email_message(config: EmailConfig, delivery: Delivery, console_url: str = "") -> EmailMessage:
    """One change as a message to `config.to`, threaded under its incident."""
    incident = delivery.incident
    message = EmailMessage()
    message["Subject"] = subject(delivery.change, incident)
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(delivery.sent, usegmt=True)
    root = incident_message_id(int(incident["id"]), config.from_)
    if delivery.change == "opened":
        message["Message-ID"] = root
    else:
        tag = delivery.change_id or f"{delivery.change}-{delivery.sent:.0f}"
        domain = mail_domain(config.from_)
        message["Message-ID"] = f"<enoc.incident-{incident['id']}.{tag}@{domain}>"
        message["In-Reply-To"] = root
        message["References"] = root
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    message["X-Enoc-Incident"] = str(incident["id"])
    message["X-Enoc-Change"] = f"{delivery.change} {delivery.change_id}"
    message.set_content(body(delivery.change, incident, delivery.change_id, console_url))
    return message


def _failure(exc: BaseException, where: str) -> DeliveryFailed | DeliveryRefused:
    """The machinery's failure class for what aiosmtplib raised."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        shown = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        reason = f"every recipient refused by {where}: {redact(shown)}"
        if any(400 <= code < 500 for code in codes):
            return DeliveryFailed(reason)
        return DeliveryRefused(reason)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reason = f"SMTP {exc.code} from {where}: {redact(exc.message)}"
        if 400 <= exc.code < 500:
            return DeliveryFailed(reason)
        return DeliveryRefused(reason)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):  # the config asks for what it lacks
        return DeliveryRefused(f"{where}: {redact(str(exc))}")
    detail = redact(str(exc)) or "no answer within the timeout"
    return DeliveryFailed(f"{type(exc).__name__} sending to {where}: {detail}")


async def send_mail(smtp: SmtpConfig, message: EmailMessage, recipients: list[str]) -> None:
    """Send `message` through `smtp` within its timeout; raises `DeliveryFailed` (retry)
    or `DeliveryRefused` (permanent) naming the server, never the password.

    Recipients refused while others took it are logged once each, not retried: a retry
    would send the others a copy."""
    parts = urlsplit(smtp.url)
    implicit = parts.scheme == "smtps"
    where = f"{parts.scheme}://{parts.netloc}"
    try:
        context = tls_context(smtp.tls, what="SMTP") if smtp.secure else None
        async with asyncio.timeout(float(smtp.timeout)):
            refused, _reply = await aiosmtplib.send(
                message,
                sender=parseaddr(str(message["From"]))[1],
                recipients=[parseaddr(r)[1] for r in recipients],
                hostname=parts.hostname,
                port=parts.port or (465 if implicit else 25),
                username=smtp.username or None,
                password=smtp.password.reveal() if smtp.password is not None else None,
                use_tls=implicit,
                start_tls=smtp.starttls,
                tls_context=context,
                timeout=float(smtp.timeout),
            )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise _failure(exc, where) from exc
    for recipient, reply in refused.items():
        _refused(
            f"refused {recipient}",
            f"{where} refused recipient {recipient}: {reply.code} {redact(reply.message)}",
            recipient=recipient,
        )


class Email:
    """Sends each change to `to` through the receiver's SMTP server."""

    refreshes = False

    def __init__(self, config: EmailConfig, env: Env) -> None:
        self.config = config
        self.env = env
        self.endpoint = f"{config.smtp.url} to {', '.join(config.to)}"

    def render(self, delivery: Delivery) -> Any:
        return email_message(self.config, delivery, self.env.console_url)

    async def send(self, delivery: Delivery) -> None:
        try:
            message = self.render(delivery)
        except (ValueError, TypeError) as exc:  # would fail the same way every time
            msg = f"cannot write incident {delivery.incident.get('id')} as e-mail: {exc}"
            raise DeliveryRefused(msg) from exc
        await send_mail(self.config.smtp, message, self.config.to)
