"""The handover: at each shift change, a summary mailed to the desk taking the watch.

When the shift of the desk on shift ends (collector/desks.py: `Desks.handovers`), the
next desk's e-mail receivers (its `receivers` that are `notifications.email` entries)
get one message: the open incidents routed to the next desk as the shift changes, and
what happened during the ending shift to the incidents routed to the ending desk
(opened, acknowledged, resolved).

Each replica looks for due handovers every `interval`; a handover is sent once across
replicas: the replica that inserts its row in `handovers` (or takes over a claim that
has run out, from a replica that died mid-way) sends it and marks it sent, in
transactions of the store. A failed send is tried again at the next look (at most
`ATTEMPTS` times in all); a shift change more than `notifications.handover_window` ago
is not summarised late.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from collector.desks import Desks, Shift
from collector.notifiers import DeliveryRefused
from collector.notifiers.email import device_link, headline, mail_domain, send_mail, utc_time
from enoc.lifecycle import ServiceBase
from enoc.logs import StateLogger, get_logger
from enoc.retry import PermanentError, RetryableError, pause

if TYPE_CHECKING:
    from collector.config import EmailConfig, NotificationsConfig
    from collector.model import Incident
    from collector.store import Store, Tx

log = get_logger("enoc.collector.handover")

ATTEMPTS = 5  # sends of one handover, across replicas, before it is given up
CLAIM = 60.0  # seconds a replica holds a handover it is sending (twice the longest SMTP)


def local_time(ts: float, zone: Any) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%a %H:%M %Z")


def _line(incident: dict[str, Any]) -> str:
    notes = []
    if incident["acknowledged_by"]:
        notes.append(f"acknowledged by {incident['acknowledged_by']}")
    if incident["escalated"]:
        notes.append(f"escalated to level {incident['escalated']}")
    for why in ("flapping", "maintenance"):
        if incident[why]:
            notes.append(why)
    tail = f" ({'; '.join(notes)})" if notes else ""
    return f"  #{incident['id']} {headline(incident)}, opened {utc_time(incident['opened'])}{tail}"


def summary_text(
    desks: Desks,
    shift: Shift,
    next_desk: str,
    open_incidents: list[dict[str, Any]],
    changed: list[tuple[float, str, dict[str, Any]]],
    console_url: str = "",
) -> str:
    """The handover's plain text: the open incidents, then the ending shift's changes."""
    ending, taking = desks.desks[shift.desk], desks.desks[next_desk]
    lines = [
        f"Handover from {shift.desk} to {next_desk} at {utc_time(shift.end)}",
        f"({shift.desk}: {local_time(shift.end, ending.window.zone)}; "
        f"{next_desk}: {local_time(shift.end, taking.window.zone)})",
        "",
        f"Open incidents now with {next_desk}: {len(open_incidents)}",
    ]
    lines += [_line(incident) for incident in open_incidents] or ["  none"]
    lines += [
        "",
        f"During {shift.desk}'s shift ({utc_time(shift.start)} to {utc_time(shift.end)}): "
        f"{len(changed)} changes",
    ]
    lines += [f"  {utc_time(at)} #{i['id']} {what}: {headline(i)}" for at, what, i in changed]
    if not changed:
        lines.append("  none")
    if console_url:
        lines += ["", f"Console: {console_url.rstrip('/')}/#/board"]
        lines += [f"  #{i['id']}: {device_link(console_url, i)}" for i in open_incidents]
    return "\n".join(lines) + "\n"


def handover_message(
    receiver: EmailConfig, shift: Shift, next_desk: str, text: str, count: int
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = (
        f"[enoc] Handover {shift.desk} -> {next_desk}: {count} open incident"
        f"{'' if count == 1 else 's'}"
    )
    message["From"] = receiver.from_
    message["To"] = ", ".join(receiver.to)
    message["Date"] = formatdate(shift.end, usegmt=True)
    # the same for every try: a copy sent twice (a replica died after sending) is one mail
    message["Message-ID"] = (
        f"<enoc.handover-{shift.desk}-{int(shift.end)}@{mail_domain(receiver.from_)}>"
    )
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    return message


@dataclass(eq=False)
class Handover(ServiceBase):
    """Sends each due handover once across replicas (see the module doc)."""

    name = "handover"

    config: NotificationsConfig
    store: Store
    now: Callable[[], float] = field(default=time.time, kw_only=True)
    owner: str = field(default="", kw_only=True)
    interval: float = field(default=30.0, kw_only=True)

    def __post_init__(self) -> None:
        super().__init__()
        config = self.config
        self.owner = self.owner or "enoc-collector"
        self.desks = Desks.of(config)
        self.email = {entry.name: entry for entry in config.email}
        self.sent = 0
        self.failed = 0
        self.given_up = 0
        self._failures = StateLogger(log)

    async def _run(self) -> None:
        if not self.desks:
            await self.closing.wait()
            return
        while not self.closing.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the store is down: look again later
                self._failures.failed("handover", exc)
            await pause(self.closing, self.interval)

    def receivers(self, desk: str) -> list[EmailConfig]:
        """The desk's e-mail receivers (level 0): who gets its handovers."""
        return [self.email[n] for n in self.desks.desks[desk].receivers if n in self.email]

    async def run_once(self) -> int:
        """Send the handovers due now that no replica has sent; returns how many it sent."""
        now = self.now()
        done = 0
        for shift, next_desk in self.desks.handovers(now - float(self.config.handover_window), now):
            if not await self._claim(shift, next_desk):
                continue
            try:
                await self._send(shift, next_desk)
            except (RetryableError, PermanentError) as exc:
                self.failed += 1
                self._failures.failed(f"handover {shift.desk} -> {next_desk}", exc)
                await self._release(shift, permanent=isinstance(exc, PermanentError))
                continue
            self._failures.ok(f"handover {shift.desk} -> {next_desk}")
            await self._mark_sent(shift)
            self.sent += 1
            done += 1
        return done

    async def summary(self, shift: Shift, next_desk: str) -> tuple[str, int]:
        """The handover's text and its count of open incidents, from the store."""
        start, end = shift.start, shift.end

        def read(tx: Tx) -> tuple[list[Incident], list[Incident]]:
            still_open = tx.incidents("state <> 'resolved'")
            touched = tx.incidents(
                "(opened >= ? AND opened < ?) OR (acknowledged >= ? AND acknowledged < ?) "
                "OR (resolved >= ? AND resolved < ?)",
                (start, end, start, end, start, end),
            )
            return still_open, touched

        still_open, touched = await self.store.read(read)
        routed = [i.as_dict() for i in reversed(still_open)]  # oldest first
        routed = [i for i in routed if self.desks.desk_for(i, end) == next_desk]
        changed: list[tuple[float, str, dict[str, Any]]] = []
        for incident in (i.as_dict() for i in touched):
            for what, at in (
                ("opened", incident["opened"]),
                (f"acknowledged by {incident['acknowledged_by'] or '-'}", incident["acknowledged"]),
                (f"resolved by {incident['resolved_by'] or '-'}", incident["resolved"]),
            ):
                if (
                    at is not None
                    and start <= at < end
                    and self.desks.desk_for(incident, at) == shift.desk
                ):
                    changed.append((at, what, incident))
        changed.sort(key=lambda c: (c[0], c[2]["id"]))
        text = summary_text(self.desks, shift, next_desk, routed, changed, self.config.console_url)
        return text, len(routed)

    async def _send(self, shift: Shift, next_desk: str) -> None:
        receivers = self.receivers(next_desk)
        if not receivers:
            raise DeliveryRefused(f"desk {next_desk} has no e-mail receiver for its handovers")
        text, count = await self.summary(shift, next_desk)
        for receiver in receivers:
            message = handover_message(receiver, shift, next_desk, text, count)
            await send_mail(receiver.smtp, message, receiver.to)

    # ---------------------------------------------------------------- once across replicas

    async def _claim(self, shift: Shift, next_desk: str) -> bool:
        wall = time.time()
        owner, until = self.owner, wall + CLAIM
        key = (shift.desk, shift.end)

        def apply(tx: Tx) -> bool:
            row = tx.one(
                "SELECT sent, claimed_until, attempts FROM handovers "
                "WHERE desk = ? AND shift_end = ?",
                key,
            )
            if row is None:
                return (
                    tx.execute(
                        "INSERT INTO handovers (desk, shift_end, next_desk, owner, "
                        "claimed_until) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (desk, shift_end) DO NOTHING",
                        (*key, next_desk, owner, until),
                    )
                    == 1
                )
            sent, claimed_until, attempts = row
            if sent or claimed_until >= wall or attempts >= ATTEMPTS:
                return False
            return (
                tx.execute(
                    "UPDATE handovers SET owner = ?, claimed_until = ? "
                    "WHERE desk = ? AND shift_end = ? AND sent = 0 AND claimed_until < ?",
                    (owner, until, *key, wall),
                )
                == 1
            )

        return bool(await self.store.run(apply))

    async def _mark_sent(self, shift: Shift) -> None:
        wall, owner = time.time(), self.owner
        await self.store.run(
            lambda tx: tx.execute(
                "UPDATE handovers SET sent = ?, owner = ?, attempts = attempts + 1 "
                "WHERE desk = ? AND shift_end = ?",
                (wall, owner, shift.desk, shift.end),
            )
        )

    async def _release(self, shift: Shift, *, permanent: bool) -> None:
        """Let the next look (this replica's or another's) try again, unless it is given up."""
        spent = ATTEMPTS if permanent else 1

        def apply(tx: Tx) -> int:
            key = (shift.desk, shift.end)
            row = tx.one("SELECT attempts FROM handovers WHERE desk = ? AND shift_end = ?", key)
            attempts = min(int(row[0]) + spent if row else spent, ATTEMPTS)
            tx.execute(
                "UPDATE handovers SET claimed_until = 0, attempts = ? "
                "WHERE desk = ? AND shift_end = ?",
                (attempts, *key),
            )
            return attempts

        with contextlib.suppress(Exception):
            if await self.store.run(apply) >= ATTEMPTS:
                self.given_up += 1
                log.error(
                    "handover %s -> %s given up after %d attempts",
                    shift.desk,
                    self.desks.on_shift(shift.end),
                    ATTEMPTS,
                    desk=shift.desk,
                )

    def counters(self) -> dict[str, float]:
        return {"sent": self.sent, "failed": self.failed, "given_up": self.given_up}
