"""Follow the sun: the Unite Service Desk's five desks (Bangkok, Nairobi, Geneva, New York,
Brindisi), their shifts across daylight-saving changes, routes, escalation receivers, and
the handover summary mailed to the next desk, once across replicas, received by a real
SMTP server (aiosmtpd) on loopback. Every time is injected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from collectorkit import Clock, eventually
from test_collector_notify import delivering, logged, msg

from collector.config import (
    CollectorConfig,
    DeskConfig,
    EmailConfig,
    IncidentsConfig,
    NotificationsConfig,
    RouteConfig,
    RouteMatch,
    SmtpConfig,
    collector_issues,
)
from collector.desks import Desks, Window
from collector.handover import Handover
from collector.incidents import Engine
from collector.notify import Notifications
from collector.store import Store
from enoc.config import ConfigError, Duration, parse_config
from testbed.mail import MailServer
from testbed.servers import PostgreSQL


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> float:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC).timestamp()


WEEKDAYS = "mon-fri"
UNITE = [
    DeskConfig("bangkok", "Asia/Bangkok", "08:00-17:00", WEEKDAYS, ["bkk-mail"]),
    DeskConfig("nairobi", "Africa/Nairobi", "08:00-17:00", WEEKDAYS, ["nbo-mail"]),
    DeskConfig(
        "geneva", "Europe/Zurich", "08:00-17:00", WEEKDAYS, ["gva-mail"], {"1": ["gva-duty"]}
    ),
    DeskConfig("new-york", "America/New_York", "08:00-17:00", WEEKDAYS, ["nyc-mail"]),
    DeskConfig("brindisi", "Europe/Rome", "08:00-17:00", WEEKDAYS, ["brd-mail"]),
]


def mailbox(name: str, url: str = "smtp://127.0.0.1:25") -> EmailConfig:
    return EmailConfig(name, SmtpConfig(url), "enoc <enoc@unite.example.net>", [f"{name}@x.net"])


def unite(url: str = "smtp://127.0.0.1:25", **kw: Any) -> NotificationsConfig:
    names = ["bkk-mail", "nbo-mail", "gva-mail", "gva-duty", "nyc-mail", "brd-mail"]
    return NotificationsConfig(
        email=[mailbox(n, url) for n in names],
        desks=UNITE,
        retry_backoff=Duration(0.05),
        **kw,
    )


# ---------------------------------------------------------------- shifts and DST


def test_a_shift_keeps_its_local_hours_across_europes_autumn_change() -> None:
    """Europe/Rome leaves summer time on the last Sunday of October (2026-10-25, 03:00
    CEST -> 02:00 CET): 08:00-17:00 local is 06:00-15:00 UTC before, 07:00-16:00 after."""
    window = Window.parse("Europe/Rome", "08:00-17:00", "daily")
    shifts = window.shifts(utc(2026, 10, 24, 0), utc(2026, 10, 27, 0))
    assert shifts == [
        (utc(2026, 10, 24, 6), utc(2026, 10, 24, 15)),
        (utc(2026, 10, 25, 7), utc(2026, 10, 25, 16)),  # the change was at 01:00 UTC
        (utc(2026, 10, 26, 7), utc(2026, 10, 26, 16)),
    ]
    # a night shift across the change is an hour longer in UTC, 22:00-06:00 local still
    night = Window.parse("Europe/Rome", "22:00-06:00", "sat")
    ((start, end),) = night.shifts(utc(2026, 10, 24, 0), utc(2026, 10, 26, 0))
    assert (start, end) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))
    assert end - start == 9 * 3600


def test_a_shift_keeps_its_local_hours_across_new_yorks_autumn_change() -> None:
    """America/New_York leaves daylight time on the first Sunday of November
    (2026-11-01): 08:00-17:00 EDT is 12:00-21:00 UTC, 08:00-17:00 EST 13:00-22:00."""
    window = Window.parse("America/New_York", "08:00-17:00", WEEKDAYS)
    assert window.shifts(utc(2026, 10, 30, 0), utc(2026, 11, 3, 0)) == [
        (utc(2026, 10, 30, 12), utc(2026, 10, 30, 21)),  # Friday
        (utc(2026, 11, 2, 13), utc(2026, 11, 2, 22)),  # Monday: no weekend shifts
    ]
    assert window.contains(utc(2026, 10, 30, 20, 30))
    assert not window.contains(utc(2026, 11, 2, 12, 30))
    assert window.contains(utc(2026, 11, 2, 21, 30))


@pytest.mark.parametrize(
    ("instant", "desk"),
    [
        # Friday 23 October, summer time in Europe and New York
        (utc(2026, 10, 23, 3), "bangkok"),  # 10:00 in Bangkok
        (utc(2026, 10, 23, 12), "nairobi"),  # Nairobi 05-14 UTC began before Geneva 06-15
        (utc(2026, 10, 23, 14, 30), "geneva"),  # Nairobi ended; Geneva began before NY
        (utc(2026, 10, 23, 15, 30), "new-york"),  # Geneva (CEST) ended at 15:00 UTC
        # Monday 26 October: Europe on winter time, New York still on summer time
        (utc(2026, 10, 26, 15, 30), "geneva"),  # Geneva (CET) works until 16:00 UTC
        (utc(2026, 10, 26, 16, 30), "new-york"),
        (utc(2026, 10, 26, 21, 30), "bangkok"),  # NY (EDT) ended at 21:00: next to start
        # Monday 2 November: New York on winter time too
        (utc(2026, 11, 2, 21, 30), "new-york"),  # NY (EST) works until 22:00 UTC
        (utc(2026, 11, 2, 22, 30), "bangkok"),
        # Friday night: nobody until Bangkok on Monday
        (utc(2026, 10, 30, 23), "bangkok"),
    ],
)
def test_the_desk_on_shift_on_either_side_of_the_changes(instant: float, desk: str) -> None:
    assert Desks.of(unite()).on_shift(instant) == desk


def test_handovers_follow_the_sun_and_only_the_watch_hands_over() -> None:
    """Monday 2 November (everyone on winter time): four shift changes. Brindisi's shift
    ends with Geneva's, but Geneva (first in the list) had the watch: no handover from
    Brindisi."""
    desks = Desks.of(unite())
    changes = desks.handovers(utc(2026, 11, 2, 0), utc(2026, 11, 3, 0))
    assert [(s.desk, after, s.end) for s, after in changes] == [
        ("bangkok", "nairobi", utc(2026, 11, 2, 10)),
        ("nairobi", "geneva", utc(2026, 11, 2, 14)),
        ("geneva", "new-york", utc(2026, 11, 2, 16)),
        ("new-york", "bangkok", utc(2026, 11, 2, 22)),
    ]
    # the Friday before the change: New York hands over to Monday's Bangkok
    ((shift, after),) = desks.handovers(utc(2026, 10, 30, 20), utc(2026, 10, 31, 0))
    assert (shift.desk, after, shift.end) == ("new-york", "bangkok", utc(2026, 10, 30, 21))


# ---------------------------------------------------------------- routes


def incident(**kw: Any) -> dict[str, Any]:
    base = {"rtc": "emea", "site": "geneva-hq", "severity": "major", "escalated": 0}
    return base | kw


def test_routes_first_match_wins_with_the_desk_on_shift_as_default() -> None:
    config = unite(
        routes=[
            RouteConfig("bangkok", RouteMatch(rtc="apac")),
            RouteConfig(
                "brindisi",
                RouteMatch(severity=["critical"], hours="18:00-08:00", timezone="Europe/Rome"),
            ),
            RouteConfig("nairobi", RouteMatch(site=["nairobi", "mombasa"])),
            RouteConfig("on-shift", RouteMatch(rtc="amer", severity="info")),
        ]
    )
    desks = Desks.of(config)
    noon = utc(2026, 11, 2, 14, 30)  # Geneva on shift; 15:30 in Rome
    night = utc(2026, 11, 2, 20)  # New York on shift; 21:00 in Rome
    assert desks.desk_for(incident(rtc="apac"), night) == "bangkok"
    assert desks.desk_for(incident(severity="critical"), night) == "brindisi"
    assert desks.desk_for(incident(severity="critical"), noon) == "geneva"  # default
    assert desks.desk_for(incident(site="mombasa"), noon) == "nairobi"
    assert desks.desk_for(incident(site="mombasa", severity="critical"), night) == "brindisi"
    assert desks.desk_for(incident(rtc="amer", severity="info"), night) == "new-york"
    assert desks.desk_for(incident(), night) == "new-york"


def test_a_desks_receivers_and_its_escalation_levels() -> None:
    config = unite()
    desks = Desks.of(config)
    noon = utc(2026, 11, 2, 14, 30)  # Geneva on shift
    assert desks.hears("gva-mail", incident(), noon)
    assert not desks.hears("gva-duty", incident(), noon)  # level 1 only
    assert desks.hears("gva-duty", incident(escalated=1), noon)
    assert desks.hears("gva-duty", incident(escalated=2), noon)
    assert not desks.hears("nyc-mail", incident(escalated=2), noon)
    assert desks.hears("a-webhook-no-desk-names", incident(), noon)


def test_desk_and_route_mistakes_name_the_key() -> None:
    def refused(notifications: str) -> str:
        with pytest.raises(ConfigError) as error:
            parse_config(
                "store: {url: 'sqlite:///x.db'}\nnotifications:\n" + notifications,
                CollectorConfig,
                filename="collector.yaml",
            )
        return str(error.value)

    assert (
        'collector.yaml:4: notifications.desks[0].timezone: timezone "Asia/Bangkokk" is not'
        in refused("  desks:\n    - {name: bkk, timezone: Asia/Bangkokk, hours: '08:00-17:00'}\n")
    )
    assert 'notifications.desks[0].hours: hours must be like "08:00-17:00", got "8-5"' in (
        refused("  desks:\n    - {name: bkk, timezone: Asia/Bangkok, hours: 8-5}\n")
    )
    assert 'notifications.desks[0].days: days must be like "mon-fri"' in refused(
        "  desks:\n    - {name: bkk, timezone: Asia/Bangkok, hours: '08:00-17:00', days: wkd}\n"
    )
    assert 'desk "bkk" names receiver "bkk-mail", which is no' in refused(
        "  desks:\n    - {name: bkk, timezone: Asia/Bangkok, hours: '08:00-17:00',\n"
        "       receivers: [bkk-mail]}\n"
    )
    assert 'routes: desk "gva" is not a desk (nor on-shift); the desks are bkk' in refused(
        "  desks:\n    - {name: bkk, timezone: Asia/Bangkok, hours: '08:00-17:00'}\n"
        "  routes:\n    - {match: {rtc: emea}, desk: gva}\n"
    )
    config = parse_config(
        "store: {url: 'sqlite:///x.db'}\nnotifications:\n"
        "  desks:\n    - {name: bkk, timezone: Asia/Bangkok, hours: '08:00-17:00', days: mon-fri,\n"
        "       escalation: {1: [], 2: []}}\n"
        "  routes:\n    - {match: {rtc: [apac, oceania], severity: critical}, desk: bkk}\n"
        "    - {desk: on-shift}\n",
        CollectorConfig,
    )
    assert config.notifications.routes[0].match.rtc == ["apac", "oceania"]
    assert config.notifications.desks[0].escalation == {"1": [], "2": []}


def test_a_desk_without_mail_is_a_check_config_warning() -> None:
    config = unite()
    lonely = DeskConfig("brindisi", "Europe/Rome", "08:00-17:00", WEEKDAYS, [])
    desks = [*config.desks[:-1], lonely]
    config = NotificationsConfig(email=config.email, desks=desks)
    (issue,) = collector_issues(CollectorConfig(notifications=config), "collector.yaml")
    assert issue.warning and issue.key == "notifications.desks[4].receivers"
    assert "desk brindisi has no e-mail receiver" in issue.message
    assert collector_issues(CollectorConfig(notifications=unite()), "collector.yaml") == []


# ---------------------------------------------------------------- with real mail


@pytest.fixture
async def mail() -> AsyncIterator[MailServer]:
    async with MailServer() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    yield store
    await store.close()


async def test_the_desk_on_shift_hears_the_incident_and_escalation_adds_the_duty(
    store: Store, mail: MailServer
) -> None:
    clock = Clock(utc(2026, 11, 2, 14, 30))  # Geneva's watch
    eng = Engine(store, IncidentsConfig(), now=clock)
    notifier = Notifications(unite(mail.url), store, now=clock, owner="r")
    async with delivering(notifier):
        (opened,) = logged(notifier, await eng.on_events(msg(("gva-pe-1", "if:1", "down"))))
        await eventually(lambda: len(mail.received) == 1, what="Geneva told")
        clock.t = utc(2026, 11, 2, 15)
        change = await eng.escalate(opened.incident.id, 1)
        assert change is not None
        logged(notifier, [change])
        await eventually(lambda: len(mail.received) == 3, what="Geneva and its duty")
        clock.t = utc(2026, 11, 2, 17)  # New York's watch now
        logged(notifier, await eng.on_events(msg(("gva-pe-1", "if:2", "down"))))
        await eventually(lambda: len(mail.received) == 4, what="New York told")
    # each receiver has its own delivery task: their messages interleave in any order
    heard = sorted(
        (r.recipients[0].split("@")[0], r.message["Subject"].split(":")[0]) for r in mail.received
    )
    assert heard == [
        ("gva-duty", "[enoc] MAJOR escalated"),
        ("gva-mail", "[enoc] MAJOR escalated"),
        ("gva-mail", "[enoc] MAJOR opened"),
        ("nyc-mail", "[enoc] MAJOR opened"),
    ]
    (to_new_york,) = [r for r in mail.received if r.recipients == ["nyc-mail@x.net"]]
    assert to_new_york.message["Subject"].endswith("gva-pe-1: if:2 down")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store two replicas share: one SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgreSQL = request.getfixturevalue("postgres")
    return server.url


async def test_the_handover_reaches_the_next_desk_once_across_replicas(
    shared_store: str, mail: MailServer
) -> None:
    """Geneva's shift ends at 16:00 UTC on Monday 2 November; New York takes the watch.
    Two replicas look for handovers after it: one message reaches New York's receiver,
    listing the incidents open now and what Geneva's shift saw."""
    stores = [Store(shared_store), Store(shared_store)]
    for s in stores:
        await s.open()
    try:
        clock = Clock(utc(2026, 11, 2, 5))  # Nairobi's watch: not Geneva's
        eng = Engine(stores[0], IncidentsConfig(), now=clock)
        await eng.on_events(msg(("nbo-ce-1", "if:9", "down"), ts=clock.t))  # open at 16:00
        clock.t = utc(2026, 11, 2, 15)  # Geneva's watch
        await eng.on_events(msg(("gva-pe-1", "if:1", "down"), ts=clock.t))
        await eng.on_events(msg(("gva-pe-1", "if:2", "down"), ts=clock.t))
        clock.t = utc(2026, 11, 2, 15, 30)
        await eng.on_events(msg(("gva-pe-1", "if:2", "up"), ts=clock.t))  # resolved then
        config = unite(mail.url, console_url="https://enoc.example.net")
        one, two = (
            Handover(config, s, now=clock, owner=f"replica-{n}") for n, s in enumerate(stores)
        )
        clock.t = utc(2026, 11, 2, 15, 59)
        assert await one.run_once() == 0  # not yet
        clock.t = utc(2026, 11, 2, 16, 1)
        assert await two.run_once() + await one.run_once() == 1
        clock.t = utc(2026, 11, 2, 16, 2)
        assert await one.run_once() + await two.run_once() == 0  # sent already
    finally:
        for s in stores:
            await s.close()
    (got,) = mail.received
    assert got.recipients == ["nyc-mail@x.net"]
    assert got.message["Subject"] == "[enoc] Handover geneva -> new-york: 2 open incidents"
    text = got.message.get_content()
    assert "Handover from geneva to new-york at 2026-11-02 16:00:00 UTC" in text
    assert "(geneva: Mon 17:00 CET; new-york: Mon 11:00 EST)" in text
    open_part, shift_part = text.split("During geneva's shift")
    assert "Open incidents now with new-york: 2" in open_part
    assert "nbo-ce-1: if:9 down" in open_part and "gva-pe-1: if:1 down" in open_part
    assert "if:2" not in open_part
    assert "(2026-11-02 07:00:00 UTC to 2026-11-02 16:00:00 UTC): 3 changes" in shift_part
    changes = [line.strip() for line in shift_part.splitlines() if line.startswith("  2026")]
    assert changes == [
        "2026-11-02 15:00:00 UTC #2 opened: MAJOR nairobi / gva-pe-1: if:1 down",
        "2026-11-02 15:00:00 UTC #3 opened: MAJOR nairobi / gva-pe-1: if:2 down",
        "2026-11-02 15:30:00 UTC #3 resolved by auto: MAJOR nairobi / gva-pe-1: if:2 down",
    ]
    assert "if:9" not in shift_part  # opened in Nairobi's watch
    assert "https://enoc.example.net/#/device/nairobi/gva-pe-1" in text


async def test_a_refused_handover_is_tried_again_at_the_next_look(
    store: Store, mail: MailServer
) -> None:
    clock = Clock(utc(2026, 11, 2, 10, 1))  # Bangkok handed over to Nairobi at 10:00
    handover = Handover(unite(mail.url), store, now=clock, owner="r")
    mail.script = ["451 4.3.0 Try again later"]
    assert await handover.run_once() == 0
    assert handover.counters()["failed"] == 1
    assert await handover.run_once() == 1
    (got,) = mail.received
    assert got.recipients == ["nbo-mail@x.net"]
    assert "Open incidents now with nairobi: 0" in got.message.get_content()
    assert await handover.run_once() == 0


async def test_the_handover_part_looks_on_its_own_until_closed(
    store: Store, mail: MailServer
) -> None:
    clock = Clock(utc(2026, 11, 2, 13, 59))  # Nairobi has the watch
    handover = Handover(unite(mail.url), store, now=clock, owner="r", interval=0.05)
    await handover.start()
    task = asyncio.create_task(handover.run())
    try:
        await asyncio.sleep(0.2)
        assert mail.received == []
        clock.t = utc(2026, 11, 2, 14, 0, 30)  # Nairobi hands over to Geneva
        await eventually(lambda: len(mail.received) == 1, what="the handover")
    finally:
        await handover.close()
        await asyncio.wait_for(task, 15)
    assert mail.received[0].message["Subject"].startswith("[enoc] Handover nairobi -> geneva")
    assert handover.counters() == {"sent": 1, "failed": 0, "given_up": 0}
