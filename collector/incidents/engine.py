"""The engine: events and statuses in, incident changes out (DESIGN: "decide at the centre").

An event seen before (same site, agent and event id: a replay or a redelivery)
changes nothing and is counted in `duplicates`; a new one is recorded, then
decided by the rules (rules.py).

Every decision runs in one store transaction that holds the site's lock, so
replicas sharing a PostgreSQL store agree; it reads the incident after taking
the lock (another replica may have just changed it). Every change is logged in
the same transaction (`Records.log`): its id orders it among all replicas' changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from collector.config import IncidentsConfig
from collector.incidents.liveness import Liveness
from collector.incidents.maintenance import Maintenance
from collector.incidents.model import Context
from collector.incidents.operators import Operators
from collector.incidents.queries import Queries
from collector.incidents.records import Records, run
from collector.incidents.rules import Rules
from collector.incidents.sweeps import Sweeper
from collector.model import IncidentChange
from collector.store import Store
from enoc.wire import EventsMessage, StatusMessage


class Engine:
    """The incident engine's parts over one store: `on_events`, `on_status`, `sweep` and
    `escalate` decide; `queries`, `maintenance` and `operators` serve the API."""

    def __init__(
        self,
        store: Store,
        config: IncidentsConfig,
        *,
        now: Callable[[], float] = time.time,
        origin: str = "",
    ) -> None:
        self.store = store
        self.config = config
        self.context = Context(store, config, now, origin)
        self.rules = Rules(config)
        self.liveness = Liveness(self.context)
        self.sweeper = Sweeper(self.context, self.liveness)
        self.maintenance = Maintenance(self.context)
        self.operators = Operators(self.context)
        self.queries = Queries(store)
        self.duplicates = 0  # events seen before (replays, redeliveries)

    @property
    def events_pruned(self) -> int:
        return self.sweeper.events_pruned

    async def on_events(self, message: EventsMessage) -> list[IncidentChange]:
        ctx = self.context
        received = ctx.now()

        def apply(db: Records) -> tuple[list[IncidentChange], int]:
            db.lock_site(message.site)
            windows = db.windows()
            changes: list[IncidentChange] = []
            duplicates = 0
            for event in message.events:
                if not db.record_event(message, event, received):
                    duplicates += 1
                    continue
                changes += self.rules.decide(db, message, event, received, windows)
            db.log(changes, at=ctx.now(), origin=ctx.origin)
            return changes, duplicates

        changes, duplicates = await run(ctx.store, apply)
        self.duplicates += duplicates
        return changes

    async def on_status(
        self, message: StatusMessage, *, retained: bool = False
    ) -> list[IncidentChange]:
        return await self.liveness.on_status(message, retained=retained)

    async def sweep(self) -> list[IncidentChange]:
        return await self.sweeper.sweep()

    async def escalate(self, incident_id: int, level: int) -> IncidentChange | None:
        return await self.sweeper.escalate(incident_id, level)
