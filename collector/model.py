"""What the collector knows about incidents: plain values shared by the store, engine, API
and notifier.

An incident is keyed by (site, device, resource, kind): one open incident per key
at a time. Its timeline holds the events that touched it and what operators did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from enoc.wire import Severity, Value

State = Literal["open", "acknowledged", "resolved"]
STATES: tuple[State, ...] = ("open", "acknowledged", "resolved")
SEVERITY_RANK: dict[str, int] = {"critical": 5, "major": 4, "minor": 3, "warning": 2, "info": 1}


@dataclass(frozen=True)
class IncidentKey:
    site: str
    device: str  # "" for a site-level incident
    resource: str
    kind: str

    def __str__(self) -> str:
        return f"{self.site}/{self.device or '-'}/{self.resource}/{self.kind}"


@dataclass
class TimelineEntry:
    at: float
    what: str  # event | ack | resolve | comment | flapping | settled | suppressed | escalated ...
    actor: str = ""  # operator name, or agent id for events
    text: str = ""
    state: str = ""  # the event's state, for events
    event_id: str = ""
    identity: str = ""  # an operator's, behind `actor` (`local:alice`, `token:12`...)


@dataclass
class Incident:
    id: int
    key: IncidentKey
    severity: Severity
    state: State
    title: str
    opened: float
    updated: float
    rtc: str = ""
    acknowledged: float | None = None
    acknowledged_by: str = ""
    acknowledged_identity: str = ""  # the identity behind `acknowledged_by`, if known
    resolved: float | None = None
    resolved_by: str = ""  # "auto" when a clearing event resolved it
    count: int = 1  # events for this key while it was open (1 + duplicates)
    flapping: bool = False
    suppressed_by: int | None = None  # the incident id whose cause explains this one
    maintenance: bool = False
    escalated: int = 0  # escalation level reached
    attrs: dict[str, Value] = field(default_factory=dict)
    # the service desk's ticket ({number, sys_id, url}), once a ticket notifier made one
    ticket: dict[str, str] | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.state != "resolved"

    @property
    def notifiable(self) -> bool:
        """Whether a change of this incident should reach people now."""
        return not (self.flapping or self.maintenance or self.suppressed_by is not None)

    def as_dict(self, *, timeline: bool = False) -> dict[str, Any]:
        """The API's JSON form (times are Unix seconds)."""
        out: dict[str, Any] = {
            "id": self.id,
            "site": self.key.site,
            "device": self.key.device,
            "resource": self.key.resource,
            "kind": self.key.kind,
            "rtc": self.rtc,
            "severity": self.severity,
            "state": self.state,
            "title": self.title,
            "opened": self.opened,
            "updated": self.updated,
            "acknowledged": self.acknowledged,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_identity": self.acknowledged_identity,
            "resolved": self.resolved,
            "resolved_by": self.resolved_by,
            "count": self.count,
            "flapping": self.flapping,
            "suppressed_by": self.suppressed_by,
            "maintenance": self.maintenance,
            "escalated": self.escalated,
            "attrs": self.attrs,
            "ticket": self.ticket,
        }
        if timeline:
            out["timeline"] = [asdict(entry) for entry in self.timeline]
        return out


Change = Literal["opened", "updated", "acknowledged", "resolved", "escalated", "commented"]


@dataclass
class IncidentChange:
    """One thing that happened to an incident: what the stream and the notifier consume.

    `id` is its row in the store's `changes` log (0 until logged): the global order of
    changes across replicas, and the stream's event id."""

    change: Change
    incident: Incident
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The stream's and the change log's form: `{change, incident}`."""
        return {"change": self.change, "incident": self.incident.as_dict()}
