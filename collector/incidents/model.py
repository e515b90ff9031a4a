"""The engine's own values: what its parts share, maintenance windows, a key's recorded
event, its errors."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.config import IncidentsConfig
from collector.incidents.vocabulary import clears
from collector.model import IncidentKey, TimelineEntry
from collector.store import Store

AGENT_OFFLINE = "agent_offline"  # the kind of a site's "agent went away" incident


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


@dataclass(frozen=True)
class MaintenanceWindow:
    id: int
    site: str
    device: str
    match: str  # glob on "site/device/resource/kind"
    starts: float
    ends: float
    every: float = 0.0  # recurring period in seconds (0: one-off)
    until: float | None = None
    reason: str = ""
    created_by: str = ""

    def active(self, at: float) -> bool:
        if at < self.starts or (self.until is not None and at > self.until):
            return False
        if self.every <= 0:
            return at < self.ends
        return (at - self.starts) % self.every < (self.ends - self.starts)

    def covers(self, key: IncidentKey, at: float) -> bool:
        if self.site and self.site != key.site:
            return False
        if self.device and self.device != key.device:
            return False
        if self.match and not fnmatch.fnmatchcase(str(key), self.match):
            return False
        return self.active(at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site": self.site,
            "device": self.device,
            "match": self.match,
            "starts": self.starts,
            "ends": self.ends,
            "every": self.every,
            "until": self.until,
            "reason": self.reason,
            "created_by": self.created_by,
        }


def covered(windows: list[MaintenanceWindow], key: IncidentKey, at: float) -> bool:
    """Whether any of `windows` covers `key` at `at`."""
    return any(w.covers(key, at) for w in windows)


@dataclass(frozen=True)
class KeyEvent:
    """A recorded event of a key, as the key's history holds it."""

    at: float
    state: str
    agent: str
    event_id: str
    message: str

    @property
    def clearing(self) -> bool:
        return clears(self.state)

    def entry(self) -> TimelineEntry:
        return TimelineEntry(self.at, "event", self.agent, self.message, self.state, self.event_id)


@dataclass(frozen=True)
class Context:
    """What every part of the engine works with."""

    store: Store
    config: IncidentsConfig
    now: Callable[[], float]
    origin: str  # which replica made a change (kept in the change log)
