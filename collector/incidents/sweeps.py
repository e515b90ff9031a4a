"""Time-driven rules: heartbeat timeouts, last wills past their grace, flapping that
settled, one-off incidents that expire, maintenance entered and left, escalation, and
pruning old events.

The sweep and escalation run on every replica: the sweep holds a global lock and
locks the sites it changes, and an escalation locks its site and re-checks the
level, so each happens once.
"""

from __future__ import annotations

import math

from collector.incidents.liveness import WILL, Liveness
from collector.incidents.model import Context, MaintenanceWindow, covered
from collector.incidents.records import Records, run
from collector.incidents.vocabulary import MOMENTARY_KINDS
from collector.model import Change, Incident, IncidentChange, TimelineEntry

PRUNE_EVERY = 600.0  # seconds between prunes of old events
RESOLVE_AFTER = "resolve_after"  # an event attr (seconds): resolve that long after the last


def _resolve_after(incident: Incident) -> float | None:
    """An incident's own time to resolve without a clearing event: its events' attr
    `resolve_after` (seconds), which a trap rule whose MIB has no clear sets."""
    value = incident.attrs.get(RESOLVE_AFTER)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


class Sweeper:
    def __init__(self, context: Context, liveness: Liveness) -> None:
        self.context = context
        self.liveness = liveness
        self.events_pruned = 0
        self._pruned_at = -math.inf  # when this replica last pruned old events

    async def sweep(self) -> list[IncidentChange]:
        """Heartbeat timeouts, wills past their grace, flapping that settled, expiring
        one-off incidents, maintenance.

        Replicas sweep together: a global lock lets one sweep at a time, and the sites
        it is about to change are locked (then re-read) so that no event of theirs is
        decided in between."""
        ctx = self.context
        now = ctx.now()
        timeout = ctx.config.agent_timeout
        silent_since = now - timeout
        # a will is never waited for longer than silence is
        said_before = now - min(float(ctx.config.will_grace), float(timeout))

        def apply(db: Records) -> list[IncidentChange]:
            db.lock("sweep")
            windows = db.windows()
            due = [
                incident.id
                for incident, transitions in db.sweepable()
                if self._sweep_one(incident, transitions, windows, now, dry=True)
            ]
            sites = {site for _, site, _ in db.silent_agents(silent_since)}
            sites |= {site for _, site, _, _ in db.willed_agents(said_before)}
            if due:
                sites |= db.sites_of(due)
            if not sites:
                return []
            for site in sorted(sites):
                db.lock_site(site)
            # under the locks: what is true now
            changes: list[IncidentChange] = []
            for agent, site, rtc in db.silent_agents(silent_since):
                if site in sites:
                    changes += self.liveness.offline(
                        db, site, agent, rtc, now, f"sent no heartbeat for {timeout:.0f} s"
                    )
            # a will with no birth within the grace: the incident is open from the will on
            for agent, site, rtc, said in db.willed_agents(said_before):
                if site in sites:
                    changes += self.liveness.offline(db, site, agent, rtc, said, WILL)
            if due:
                for incident, transitions in db.sweepable(due):
                    changed = self._sweep_one(incident, transitions, windows, now, db=db)
                    if changed is not None:
                        db.save_incident(incident, transitions)
                        changes.append(IncidentChange(changed, incident))
            db.log(changes, at=ctx.now(), origin=ctx.origin)
            return changes

        changes = await run(ctx.store, apply)
        await self._prune_events(now)
        return changes

    async def _prune_events(self, now: float) -> None:
        """Events older than `events_retention` go: the incidents and their timelines keep
        what happened; the events table is for deduplication and event-time decisions,
        which no redelivery that old needs. At most every PRUNE_EVERY seconds."""
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        before = now - float(self.context.config.events_retention)
        self.events_pruned += await run(self.context.store, lambda db: db.prune_events(before))

    def _sweep_one(
        self,
        incident: Incident,
        transitions: list[float],
        windows: list[MaintenanceWindow],
        now: float,
        *,
        dry: bool = False,
        db: Records | None = None,
    ) -> Change | None:
        """What the sweep changes about `incident`; applied (timeline included) unless dry."""
        c = self.context.config
        changed: Change | None = None

        def note(entry: TimelineEntry) -> None:
            if db is not None:
                db.add_timeline(incident.id, entry)

        if incident.flapping and (not transitions or transitions[-1] < now - c.flap_window):
            if dry:
                return "updated"
            incident.flapping = False
            note(TimelineEntry(now, "settled", "", "stopped flapping"))
            changed = "resolved" if incident.state == "resolved" else "updated"
        if incident.is_open:
            in_maintenance = covered(windows, incident.key, now)
            if in_maintenance != incident.maintenance:
                if dry:
                    return "updated"
                incident.maintenance = in_maintenance
                word = "entered" if in_maintenance else "left"
                note(TimelineEntry(now, "maintenance", "", word))
                changed = changed or "updated"
            if (
                incident.key.kind in MOMENTARY_KINDS
                and incident.updated < now - c.momentary_resolve_after
            ):
                if dry:
                    return "resolved"
                incident.state = "resolved"
                incident.resolved, incident.resolved_by = now, "auto"
                note(TimelineEntry(now, "resolve", "auto", "one-off event, nothing since"))
                changed = "resolved"
            elif (after := _resolve_after(incident)) is not None and incident.updated < now - after:
                if dry:
                    return "resolved"
                incident.state = "resolved"
                incident.resolved, incident.resolved_by = now, "auto"
                note(TimelineEntry(now, "resolve", "auto", f"no event for {after:g} s"))
                changed = "resolved"
        return changed

    async def escalate(self, incident_id: int, level: int) -> IncidentChange | None:
        """Raise an open, unacknowledged, notifiable incident to `level` (once: every
        replica's sweeper may ask, the first under the site's lock does it)."""
        ctx = self.context

        def apply(db: Records) -> IncidentChange | None:
            found = db.incident(incident_id)
            if found is None:
                return None
            db.lock_site(found.key.site)
            incident = db.incident(incident_id)  # under the lock: another replica's level
            if (
                incident is None
                or incident.state != "open"
                or not incident.notifiable
                or incident.escalated >= level
            ):
                return None
            incident.escalated = level
            db.add_timeline(
                incident_id, TimelineEntry(ctx.now(), "escalated", "", f"level {level}")
            )
            db.save_incident(incident, db.transitions(incident_id))
            change = IncidentChange("escalated", incident)
            db.log([change], at=ctx.now(), origin=ctx.origin)
            return change

        return await run(ctx.store, apply)
