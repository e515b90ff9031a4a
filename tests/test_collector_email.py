"""E-mail receivers (`notifications.email`): the webhooks' delivery machinery (the change
log, the lease, retries, dead letters) with messages sent through aiosmtplib to a real
SMTP server (aiosmtpd) on loopback: plain, STARTTLS and smtps with the test PKI, AUTH
with a password from a file, a 4xx retried, a 5xx dead-lettered, once across replicas."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from collectorkit import T0, Clock, eventually
from test_collector_notify import (
    delivering,
    engine,
    holder_dies_and_another_takes_over,
    logged,
    msg,
)

from collector.config import (
    CollectorConfig,
    EmailConfig,
    NotificationsConfig,
    SmtpConfig,
    collector_issues,
)
from collector.incidents import Engine
from collector.notifiers.email import subject
from collector.notify import Notifications, read_dead_letters
from collector.store import Store
from enoc.config import ConfigError, Duration, Secret, TlsConfig, parse_config
from enoc.pki import Pki, make_pki
from testbed.mail import MailServer, server_context
from testbed.servers import HOST, free_port

__all__ = ["engine"]  # the fixture, shared with the webhook tests

FROM = "enoc <enoc@noc.example.net>"
DESK = "desk-nairobi@noc.example.net"


@pytest.fixture
async def mail() -> AsyncIterator[MailServer]:
    async with MailServer() as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), server_names=[HOST], clients=[])


def receiver(smtp: SmtpConfig, name: str = "nairobi-desk", **kw: object) -> EmailConfig:
    return EmailConfig(name, smtp, FROM, [DESK], **kw)  # type: ignore[arg-type]


def notifier_for(
    *receivers: EmailConfig, clock: Clock, store: Store, owner: str = "", **kw: object
) -> Notifications:
    config = NotificationsConfig(
        email=list(receivers),
        retry_backoff=Duration(0.05),
        **kw,  # type: ignore[arg-type]
    )
    return Notifications(config, store, now=clock, owner=owner)


async def test_changes_arrive_as_threaded_readable_mail(
    engine: tuple[Engine, Clock], mail: MailServer
) -> None:
    eng, clock = engine
    notifier = notifier_for(
        receiver(SmtpConfig(mail.url), min_severity="major"),
        clock=clock,
        store=eng.store,
        console_url="https://enoc.example.net/",
    )
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "ge-0/0/1", "down"))))
        logged(notifier, await eng.on_events(msg(("nbo-sw-2", "if:3", "down"), severity="minor")))
        clock.t = T0 + 300
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "ge-0/0/1", "up"), ts=clock.t)))
        await eventually(lambda: len(mail.received) == 2, what="opened and resolved")
        await eventually(lambda: notifier.counters()["skipped"] == 1, what="the minor one")
    opened, resolved = (r.message for r in mail.received)
    assert mail.received[0].sender == "enoc@noc.example.net"
    assert mail.received[0].recipients == [DESK]
    assert not mail.received[0].tls
    assert opened["Subject"] == "[enoc] MAJOR opened: nairobi / nbo-ce-1: ge-0/0/1 down"
    assert resolved["Subject"] == "[enoc] MAJOR resolved: nairobi / nbo-ce-1: ge-0/0/1 down"
    assert opened["From"] == FROM
    assert opened["To"] == DESK
    assert opened["Auto-Submitted"] == "auto-generated"
    # the thread: the first message's id is the incident's; later ones refer to it
    incident_id = opened["X-Enoc-Incident"]
    assert opened["Message-ID"] == f"<enoc.incident-{incident_id}@noc.example.net>"
    assert resolved["In-Reply-To"] == opened["Message-ID"]
    assert resolved["References"] == opened["Message-ID"]
    assert resolved["Message-ID"] != opened["Message-ID"]
    text = resolved.get_content()
    assert f"Incident {incident_id} resolved." in text
    assert "Site:" in text and "nairobi (RTC emea)" in text
    assert "Resolved:" in text and "2027-01-15 08:05:00 UTC" in text  # T0 + 300
    assert "Console: https://enoc.example.net/#/device/nairobi/nbo-ce-1" in text
    counters = notifier.counters()
    assert counters["sent.nairobi-desk"] == 2


async def test_starttls_and_a_login_from_a_password_file(
    engine: tuple[Engine, Clock], pki: Pki, tmp_path: Path
) -> None:
    """The config as an operator writes it (password_file, the private CA) through the
    loader; the server insists on STARTTLS before AUTH, as a submission port does."""
    eng, clock = engine
    secret = "smtp-pw-3k9f2x"
    (tmp_path / "smtp.pw").write_text(secret + "\n")
    server = MailServer(
        tls=server_context(str(pki.server_cert), str(pki.server_key)),
        require_starttls=True,
        users={"enoc": secret},
    )
    async with server:
        config = parse_config(
            "store: {url: 'sqlite:///x.db'}\n"
            "notifications:\n"
            "  email:\n"
            "    - name: geneva-desk\n"
            f"      smtp: {{url: '{server.url}', starttls: true, username: enoc,\n"
            f"             password_file: {tmp_path / 'smtp.pw'},\n"
            f"             tls: {{ca_file: {pki.ca_cert}}}}}\n"
            f"      from: '{FROM}'\n"
            "      to: [desk-geneva@noc.example.net, duty@noc.example.net]\n",
            CollectorConfig,
            filename="collector.yaml",
        )
        (entry,) = config.notifications.email
        assert entry.smtp.password == Secret(secret)
        notifier = Notifications(
            NotificationsConfig(email=[entry]), eng.store, now=clock, owner="r"
        )
        async with delivering(notifier):
            logged(notifier, await eng.on_events(msg(("gva-pe-1", "bgp:1", "down"))))
            await eventually(lambda: len(server.received) == 1, what="a message over TLS")
    (got,) = server.received
    assert got.tls
    assert got.login == "enoc"
    assert server.logins == [("enoc", True)]
    assert got.recipients == ["desk-geneva@noc.example.net", "duty@noc.example.net"]
    assert got.message["To"] == "desk-geneva@noc.example.net, duty@noc.example.net"


async def test_smtps_checks_the_servers_certificate(
    engine: tuple[Engine, Clock], pki: Pki, tmp_path: Path
) -> None:
    """TLS from the first byte; a CA that did not issue the server's certificate is a
    failed connection (retried, then dead-lettered), never a message sent in the open."""
    eng, clock = engine
    other = make_pki(tmp_path / "other", server_names=[HOST], clients=[], ca_name="other")
    dead = tmp_path / "dead.jsonl"
    server = MailServer(
        tls=server_context(str(pki.server_cert), str(pki.server_key)), implicit=True
    )
    async with server:
        good = receiver(SmtpConfig(server.url, tls=TlsConfig(ca_file=pki.ca_cert)), "good")
        wrong = receiver(SmtpConfig(server.url, tls=TlsConfig(ca_file=other.ca_cert)), "wrong")
        notifier = notifier_for(
            good, wrong, clock=clock, store=eng.store, retries=1, dead_letter_file=dead
        )
        async with delivering(notifier):
            logged(notifier, await eng.on_events(msg(("brd-pe-1", "if:1", "down"))))
            await eventually(lambda: len(server.received) == 1, what="the good one")
            await eventually(
                lambda: notifier.counters()["dead_lettered.wrong"] == 1, what="the wrong CA"
            )
    assert server.received[0].tls
    (letter,) = read_dead_letters(dead)
    assert letter["webhook"] == "wrong"
    assert letter["attempts"] == 2
    assert "CERTIFICATE_VERIFY_FAILED" in letter["reason"]


async def test_a_4xx_is_retried_and_a_5xx_is_dead_lettered(
    engine: tuple[Engine, Clock], mail: MailServer, tmp_path: Path
) -> None:
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    notifier = notifier_for(
        receiver(SmtpConfig(mail.url)), clock=clock, store=eng.store, dead_letter_file=dead
    )
    mail.script = ["451 4.3.0 Try again later", "421 4.7.0 Busy"]
    async with delivering(notifier):
        # the first is greylisted twice, then taken; the second is refused for good
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:1", "down"))))
        await eventually(lambda: len(mail.received) == 1, what="taken after two 4xx")
        mail.script = ["554 5.7.1 Message rejected"]
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:2", "down"))))
        await eventually(lambda: notifier.counters()["dead_lettered"] == 1, what="the 5xx")
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:3", "down"))))
        await eventually(lambda: len(mail.received) == 2, what="the next one goes on")
    assert [r.message["Subject"].rsplit(": ", 1)[1] for r in mail.received] == [
        "if:1 down",
        "if:3 down",
    ]
    assert mail.attempts == 5  # 451, 421, 250, 554 (not retried), 250
    (letter,) = read_dead_letters(dead)
    assert letter["incident"]["resource"] == "if:2"
    assert letter["attempts"] == 0
    assert letter["reason"].startswith(f"SMTP 554 from smtp://{HOST}:{mail.port}")
    assert letter["url"] == f"{mail.url} to {DESK}"
    assert notifier.counters()["failed_attempts"] == 2  # the retried ones


async def test_a_refused_recipient_and_a_refused_login_are_permanent(
    engine: tuple[Engine, Clock], pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 550 for every recipient and a 535 for the login are dead-lettered without a
    retry; the password shows in no log line and no dead letter."""
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    password = "wrong-pw-7c1d9e"
    server = MailServer(
        tls=server_context(str(pki.server_cert), str(pki.server_key)),
        refuse={DESK: "550 5.1.1 No such user"},
    )
    caplog.set_level(logging.DEBUG)
    async with server:
        unknown = receiver(SmtpConfig(server.url), "unknown")
        tls = TlsConfig(ca_file=pki.ca_cert)
        login = EmailConfig(
            "login",
            SmtpConfig(
                server.url, starttls=True, tls=tls, username="enoc", password=Secret(password)
            ),
            FROM,
            ["other@noc.example.net"],
        )
        notifier = notifier_for(unknown, clock=clock, store=eng.store, dead_letter_file=dead)
        async with delivering(notifier):
            logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:1", "down"))))
            await eventually(lambda: notifier.counters()["dead_lettered"] == 1, what="550")
        server.users = {"enoc": "right-pw"}  # from the next connection on
        notifier = notifier_for(login, clock=clock, store=eng.store, dead_letter_file=dead)
        async with delivering(notifier):
            logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:2", "down"))))
            await eventually(lambda: notifier.counters()["dead_lettered"] == 1, what="535")
    first, second = read_dead_letters(dead)
    assert "every recipient refused" in first["reason"] and "550" in first["reason"]
    assert second["reason"].startswith("SMTP 535")
    assert first["attempts"] == second["attempts"] == 0
    assert set(server.logins) == {("enoc", False)}  # aiosmtplib tries PLAIN, then LOGIN
    assert server.received == []
    assert password not in dead.read_text()
    assert all(password not in r.getMessage() for r in caplog.records)


async def test_one_replica_mails_each_change_and_another_takes_over(
    tmp_path: Path, mail: MailServer
) -> None:
    """Two collectors on one store: each change is mailed once; when the holder of the
    receiver's lease dies, the other goes on from the last change the dead one sent."""
    entry = receiver(SmtpConfig(mail.url, timeout=Duration(0.5)))
    await holder_dies_and_another_takes_over(tmp_path, entry, lambda: len(mail.received))
    subjects = [r.message["Subject"].rsplit(": ", 1)[1] for r in mail.received]
    assert subjects == [f"if:{n} down" for n in range(1, 6)], "each once, in order"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{name: a, smtp: {url: 'http://127.0.0.1:25'}, from: e@x.net, to: [d@x.net]}",
            "notifications.email[0].smtp.url: url must be smtp://HOST[:PORT] or smtps://",
        ),
        (
            "{name: a, smtp: {url: 'smtp://u:pw@127.0.0.1'}, from: e@x.net, to: [d@x.net]}",
            "notifications.email[0].smtp.url: url must not carry a login: give username and",
        ),
        (
            "{name: a, smtp: {url: 'smtps://127.0.0.1', starttls: true}, from: e@x.net, "
            "to: [d@x.net]}",
            "notifications.email[0].smtp.starttls: starttls is for smtp://",
        ),
        (
            "{name: a, smtp: {url: 'smtp://127.0.0.1', username: u}, from: e@x.net, to: [d@x.net]}",
            "notifications.email[0].smtp.username: username and password (or password_file) go",
        ),
        (
            "{name: a, smtp: {url: 'smtp://127.0.0.1'}, from: e@x.net, to: [desk]}",
            'notifications.email[0].to: to (1) must be an e-mail address like "noc@example.net"',
        ),
        (
            "{name: a, smtp: {url: 'smtp://127.0.0.1'}, from: e@x.net, to: []}",
            "notifications.email[0].to: to must list at least one address",
        ),
        (
            "{name: a, smtp: {url: 'smtp://127.0.0.1'}, to: [d@x.net]}",
            "notifications.email[0].from: missing required key",
        ),
        (
            "{name: a, smtp: {url: 'smtp://127.0.0.1', passwd: x}, from: e@x.net, to: [d@x.net]}",
            "notifications.email[0].smtp.passwd: unknown key; did you mean 'password'?",
        ),
    ],
)
def test_a_config_mistake_names_the_key(entry: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            f"store: {{url: 'sqlite:///x.db'}}\nnotifications:\n  email:\n    - {entry}\n",
            CollectorConfig,
            filename="collector.yaml",
        )
    assert f"collector.yaml:4: {expected}" in str(refused.value)


def test_receivers_share_the_machinerys_rules() -> None:
    """Names are unique across webhooks and e-mail (their counters and cursors); the lease
    covers the SMTP timeout; an e-mail kind is not a webhook format; a password sent
    without TLS is a check-config warning."""
    smtp = SmtpConfig("smtp://127.0.0.1")
    with pytest.raises(ValueError, match='two receivers named "desk"'):
        NotificationsConfig(email=[receiver(smtp, "desk"), receiver(smtp, "desk")])
    with pytest.raises(ValueError, match="at least twice the timeout of email receiver"):
        NotificationsConfig(email=[receiver(SmtpConfig("smtp://127.0.0.1", timeout=Duration(10)))])
    with pytest.raises(ConfigError, match=r"e-mail receivers are notifications\.email entries"):
        parse_config(
            "store: {url: 'sqlite:///x.db'}\nnotifications:\n  webhooks:\n"
            "    - {url: 'http://127.0.0.1:9/', format: email}\n",
            CollectorConfig,
        )
    clear = SmtpConfig("smtp://127.0.0.1", username="u", password=Secret("p-4x8"))
    config = CollectorConfig(notifications=NotificationsConfig(email=[receiver(clear)]))
    (issue,) = collector_issues(config, "collector.yaml")
    assert issue.warning and issue.key == "notifications.email[0].smtp"
    assert "password crosses the network in clear" in issue.message
    secure = SmtpConfig("smtp://127.0.0.1", starttls=True, username="u", password=Secret("p-4x8"))
    config = CollectorConfig(notifications=NotificationsConfig(email=[receiver(secure)]))
    assert collector_issues(config, "collector.yaml") == []


def test_a_title_with_line_breaks_stays_one_subject_line() -> None:
    """A device's strings may hold anything; a header line break would end the header."""
    incident = {
        "severity": "minor",
        "site": "nairobi",
        "device": "nbo-sw-1",
        "title": "nbo-sw-1: fan\r\nBcc: everyone@x.net\n failed",
    }
    assert subject("opened", incident) == (
        "[enoc] MINOR opened: nairobi / nbo-sw-1: fan Bcc: everyone@x.net failed"
    )


async def test_a_server_that_is_not_there_is_retried_then_dead_lettered(
    engine: tuple[Engine, Clock], tmp_path: Path
) -> None:
    eng, clock = engine
    dead = tmp_path / "dead.jsonl"
    gone = receiver(SmtpConfig(f"smtp://{HOST}:{free_port()}"))
    notifier = notifier_for(gone, clock=clock, store=eng.store, retries=2, dead_letter_file=dead)
    async with delivering(notifier):
        logged(notifier, await eng.on_events(msg(("nbo-ce-1", "if:1", "down"))))
        await eventually(lambda: notifier.counters()["dead_lettered"] == 1, what="given up")
    (letter,) = read_dead_letters(dead)
    assert letter["attempts"] == 3
    assert "SMTPConnectError" in letter["reason"]
    assert notifier.counters()["failed_attempts"] == 3
