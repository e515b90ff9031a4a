"""Agent liveness: an agent's status messages, and the site incident while it is away.

An agent that says offline (its last will) and says nothing newer for
`will_grace`, or that sends no heartbeat for `agent_timeout`, opens its site's
`agent_offline` incident (the sweep finds both; a will opens it at its own time),
under which the site's device incidents are suppressed; its next online status
resolves it. The grace lets an agent whose broker node closed its connection come
back through another node: its birth within the grace means no incident at all.
Every replica hears every status; the first to apply a live one logs it in the
change log, so that the stream sends it once.
"""

from __future__ import annotations

from collector.incidents.model import AGENT_OFFLINE, Context, covered
from collector.incidents.records import Records, run
from collector.model import Incident, IncidentChange, IncidentKey, TimelineEntry
from enoc.wire import StatusMessage

WILL = "said offline (last will)"  # the incident's title and timeline say so


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
            if message.state != "offline":
                changes = self.online(db, message.site, message.agent, at)
            elif ctx.config.will_grace:
                changes = []  # the sweep opens it, at `at`, unless a birth comes first
            else:
                changes = self.offline(db, message.site, message.agent, message.rtc, at, WILL)
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
