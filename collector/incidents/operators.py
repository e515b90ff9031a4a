"""What operators do to an incident: acknowledge, resolve, comment; each audited."""

from __future__ import annotations

from collector.access import EVERYTHING, Scope
from collector.incidents.model import Conflict, Context, NotFound
from collector.incidents.records import Records, run
from collector.model import Change, IncidentChange, TimelineEntry


class Operators:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def act(
        self,
        incident_id: int,
        action: str,
        actor: str,
        text: str = "",
        scope: Scope = EVERYTHING,
        identity: str = "",
    ) -> IncidentChange:
        """ack, resolve or comment, by an operator; audited. An incident outside the
        operator's `scope` is not found, as one that does not exist. `identity`: the one
        behind the name `actor` (kept beside it: a name alone can be anyone's)."""
        ctx = self.context
        now = ctx.now()

        def apply(db: Records) -> IncidentChange:
            found = db.incident(incident_id)
            if found is None or not scope.covers(found.rtc, found.key.site):
                raise NotFound(f"no incident {incident_id}")
            db.lock_site(found.key.site)
            incident = db.incident(incident_id)  # under the lock: another replica's action
            assert incident is not None  # incidents are never deleted
            change: Change
            if action == "ack":
                if incident.state != "open":
                    raise Conflict(f"incident {incident_id} is {incident.state}, not open")
                incident.state = "acknowledged"
                incident.acknowledged, incident.acknowledged_by = now, actor
                incident.acknowledged_identity = identity
                change = "acknowledged"
            elif action == "resolve":
                if incident.state == "resolved":
                    raise Conflict(f"incident {incident_id} is already resolved")
                incident.state = "resolved"
                incident.resolved, incident.resolved_by = now, actor
                if incident.acknowledged is None:
                    incident.acknowledged, incident.acknowledged_by = now, actor
                    incident.acknowledged_identity = identity
                change = "resolved"
            elif action == "comment":
                if not text.strip():
                    raise ValueError("a comment needs text")
                change = "commented"
            else:
                raise ValueError(f"unknown action {action!r}")
            incident.updated = now
            db.add_timeline(incident_id, TimelineEntry(now, action, actor, text, identity=identity))
            db.save_incident(incident, db.transitions(incident_id))
            db.audit(actor, action, f"incident:{incident_id}", text)
            done = IncidentChange(change, incident)
            db.log([done], at=ctx.now(), origin=ctx.origin)
            return done

        return await run(ctx.store, apply)
