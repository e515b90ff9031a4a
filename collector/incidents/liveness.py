"""Agent liveness: an agent's status messages, and the site incident while it is away.

An agent that says offline (its last will) and says nothing newer for
`will_grace`, or that sends no heartbeat for `agent_timeout`, opens its site's
`agent_offline` incident (the sweep finds both; a will opens it at its own time),
under which the site's device incidents are suppressed; its next online status
resolves it. The grace lets an agent whose broker node closed its connection come
back through another node: its birth within the grace means no incident at all.
An agent that keeps losing its connection (`flap_transitions` wills and returns within
`flap_window`, grace or not) opens its site's `agent_unstable` (warning), which
resolves once a `flap_window` passes without another will.
Every replica hears every status; the first to apply a live one logs it in the
change log, so that the stream sends it once.
"""

from __future__ import annotations

from collector.incidents.model import (
    AGENT_OFFLINE,
    AGENT_UNSTABLE,
    RESOLVE_AFTER,
    Context,
    covered,
)
from collector.incidents.records import Records, run
from collector.model import Incident, IncidentChange, IncidentKey, TimelineEntry
from enoc.wire import StatusMessage, is_last_will

WILL = "said offline (last will)"  # the incident's title and timeline say so
LOST = "lost its broker connection"  # each will, on the timeline of agent_unstable


def stale_status(message: StatusMessage, retained: bool, last_seen: float, last_seq: int) -> bool:
    """Whether a status says nothing newer than what the agents table holds.

    An agent numbers its status messages upwards and gives its last will the top
    number of its connection (agent/publisher.py), so a lower `seq` is older news:
    a will or heartbeat of an earlier connection that the broker delivered late (after
    a restart, from a persistent session) must not undo the newer connection's birth.
    A retained copy of the status already applied, delivered again on a resubscribe,
    is old too (its `sent` is earlier than when we took it)."""
    if message.seq < last_seq:
        return True
    return retained and message.seq == last_seq and message.sent <= last_seen


class Liveness:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def on_status(
        self, message: StatusMessage, *, retained: bool = False
    ) -> list[IncidentChange]:
        ctx = self.context
        received = ctx.now()
        seen = message.sent if retained else received

        def apply(db: Records) -> list[IncidentChange]:
            db.lock_site(message.site)
            before = db.agent_seen(message.site, message.agent)
            if before is not None and stale_status(message, retained, *before):
                return []
            first = before is None or message.seq > before[1]
            at = seen
            if retained and before is not None:
                # a retained will carries its connection's start: the agent was seen
                # after that, so it went no earlier than it was last seen
                at = max(seen, before[0])
            db.save_status(message, at)
            # every replica hears every status: the first to apply a will counts it
            changes = self.unstable(db, message, at) if first and is_last_will(message) else []
            if message.state != "offline":
                changes = self.online(db, message.site, message.agent, at)
            elif not ctx.config.will_grace:
                changes += self.offline(db, message.site, message.agent, message.rtc, at, WILL)
            # else the sweep opens it, at `at`, unless a birth comes first
            db.log(changes, at=ctx.now(), origin=ctx.origin)
            if first and not retained:
                db.log_status(message, at=received, origin=ctx.origin)
            return changes

        return await run(ctx.store, apply)

    def offline(
        self, db: Records, site: str, agent: str, rtc: str, at: float, why: str
    ) -> list[IncidentChange]:
        """The agent is away from `at`: its site's incident opens (once)."""
        db.agent_offline(site, agent)
        key = IncidentKey(site, "", f"agent:{agent}", AGENT_OFFLINE)
        if db.open_incident(key) is not None:
            return []
        incident = Incident(
            id=0,
            key=key,
            severity="critical",
            state="open",
            title=f"site {site}: agent {agent} {why}; its devices are unknown",
            opened=at,
            updated=self.context.now(),
            rtc=rtc,
        )
        incident.maintenance = covered(db.windows(), key, at)
        db.create_incident(incident, [at])
        db.add_timeline(incident.id, TimelineEntry(at, "event", agent, why, "offline"))
        return [IncidentChange("opened", incident)]

    def unstable(self, db: Records, message: StatusMessage, at: float) -> list[IncidentChange]:
        """The agent lost its connection at `at` (its will): one drop more. Enough of them
        within `flap_window` (a will and a return are two transitions, as a device's
        down and up) open, or add to, the site's `agent_unstable`."""
        c = self.context.config
        site, agent = message.site, message.agent
        window = float(c.flap_window)
        recent = [t for t in db.agent_drops(site, agent) if t > at - window]
        drops = sorted([*recent, at])[-c.flap_transitions :]
        db.save_drops(site, agent, drops)
        if 2 * len(drops) < c.flap_transitions:
            return []
        key = IncidentKey(site, "", f"agent:{agent}", AGENT_UNSTABLE)
        entry = TimelineEntry(at, "event", agent, LOST, "offline")
        incident = db.open_incident(key)
        if incident is not None:
            incident.count += 1
            incident.updated = self.context.now()
            db.add_timeline(incident.id, entry)
            db.save_incident(incident, db.transitions(incident.id))
            return [IncidentChange("updated", incident)]
        incident = Incident(
            id=0,
            key=key,
            severity="warning",
            state="open",
            title=(f"site {site}: agent {agent} {LOST} {len(drops)} times in {window / 60:g} min"),
            opened=at,
            updated=self.context.now(),
            rtc=message.rtc,
            count=len(drops),
            # resolved by the sweep once a window passes without a drop
            attrs={RESOLVE_AFTER: window},
        )
        incident.maintenance = covered(db.windows(), key, at)
        db.create_incident(incident, [at])
        for when in drops:
            db.add_timeline(incident.id, TimelineEntry(when, "event", agent, LOST, "offline"))
        return [IncidentChange("opened", incident)]

    def online(self, db: Records, site: str, agent: str, at: float) -> list[IncidentChange]:
        """The agent is back from `at`: its site's incident resolves."""
        incident = db.open_incident(IncidentKey(site, "", f"agent:{agent}", AGENT_OFFLINE))
        if incident is None:
            return []
        incident.state = "resolved"
        incident.resolved = max(at, incident.opened)
        incident.resolved_by = "auto"
        incident.updated = self.context.now()
        db.add_timeline(incident.id, TimelineEntry(at, "event", agent, "back online", "online"))
        db.save_incident(incident, db.transitions(incident.id))
        return [IncidentChange("resolved", incident)]
