"""Correlation: an incident explained by another is suppressed under it.

A device incident opened while its site's agent was offline, an
interface/BGP/threshold incident of an unreachable device, and an incident of a
device whose inventory parent is unreachable are suppressed under their cause,
as the cause stood when the incident opened. A cause learnt late suppresses
what opened during it (`suppress_beneath`); one that turns out to have cleared
earlier releases what opened after (`release_beyond`).
"""

from __future__ import annotations

from collector.incidents.records import Records
from collector.model import Change, Incident, IncidentChange, IncidentKey, TimelineEntry


def amended(incident: Incident) -> Change:
    """The change that says an incident's record was amended: "resolved" for a resolved
    one (what it sends again is its resolution, never a firing alert), else "updated"."""
    return "updated" if incident.is_open else "resolved"


def _unreachable_at(db: Records, site: str, device: str, at: float) -> Incident | None:
    """The device's reachability incident if the device was unreachable at `at`."""
    key = IncidentKey(site, device, "device", "reachability")
    last = db.history(key).before(at, True, "", "")
    if last is None or last.clearing:
        return None
    return db.incident_at(key, at)


def cause(db: Records, key: IncidentKey, at: float) -> int | None:
    """The incident that explains one of `key` opened at `at`, if any, as things stood
    at `at`."""
    offline = db.agent_offline_at(key.site, at)
    if offline is not None:
        return offline
    if not key.device:
        return None
    if key.kind != "reachability":
        down = _unreachable_at(db, key.site, key.device, at)
        if down is not None:
            return down.id
    parent = db.parent(key.site, key.device)
    if parent:
        down = _unreachable_at(db, key.site, parent, at)
        if down is not None:
            return down.id
    return None


def suppress_beneath(
    db: Records, by: Incident, since: float, until: float | None
) -> list[IncidentChange]:
    """A device's unreachability now known to span [since, until) explains the incidents
    of the device and of its children that opened then, recorded before it was known
    (their events came first): they are suppressed under it as if it had come first."""
    k = by.key
    if k.kind != "reachability" or k.resource != "device" or not k.device:
        return []
    changes = []
    for incident in db.beneath(by, db.children(k.site, k.device), since, until):
        incident.suppressed_by = by.id
        db.add_timeline(
            incident.id,
            TimelineEntry(incident.opened, "suppressed", "", f"under incident {by.id}"),
        )
        db.save_incident(incident, db.transitions(incident.id))
        changes.append(IncidentChange(amended(incident), incident))
    return changes


def release_beyond(db: Records, by: Incident, since: float) -> list[IncidentChange]:
    """A device now known to be reachable again from `since` explains nothing that opened
    after it: what was suppressed under it then (its events came before the clearing
    event) is decided again, as it would have been had the clearing come first."""
    if by.key.kind != "reachability" or by.key.resource != "device":
        return []
    changes = []
    for incident in db.suppressed_under(by, since):
        incident.suppressed_by = cause(db, incident.key, incident.opened)
        if incident.suppressed_by == by.id:
            continue
        text = (
            f"under incident {incident.suppressed_by}"
            if incident.suppressed_by is not None
            else f"no longer under incident {by.id}"
        )
        db.add_timeline(incident.id, TimelineEntry(incident.opened, "suppressed", "", text))
        db.save_incident(incident, db.transitions(incident.id))
        changes.append(IncidentChange(amended(incident), incident))
    return changes
