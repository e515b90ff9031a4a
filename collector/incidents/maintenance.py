"""Maintenance windows: while one covers an incident, its notifications are held.

A window matches by site, device and a glob on "site/device/resource/kind", once
or every `every` seconds until `until`. Incidents opened inside one are marked
at once; the sweep marks those it starts or ends over (sweeps.py).
"""

from __future__ import annotations

import json

from collector.incidents.model import Context, MaintenanceWindow, NotFound
from collector.incidents.records import Records, run


class Maintenance:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def windows(self) -> list[MaintenanceWindow]:
        return await run(self.context.store, lambda db: db.windows())

    async def add_window(self, window: MaintenanceWindow, actor: str) -> MaintenanceWindow:
        if window.ends <= window.starts:
            raise ValueError("ends must be after starts")
        if window.every and window.every < window.ends - window.starts:
            raise ValueError("every must be at least as long as the window (ends - starts)")
        if not (window.site or window.device or window.match):
            raise ValueError("a maintenance window needs site, device or match")

        def apply(db: Records) -> MaintenanceWindow:
            new_id = db.add_window(window, actor, self.context.now())
            db.audit(
                actor, "maintenance.add", f"maintenance:{new_id}", json.dumps(window.as_dict())
            )
            return MaintenanceWindow(**{**window.as_dict(), "id": new_id, "created_by": actor})

        return await run(self.context.store, apply)

    async def delete_window(self, window_id: int, actor: str) -> None:
        def apply(db: Records) -> None:
            if not db.delete_window(window_id):
                raise NotFound(f"no maintenance window {window_id}")
            db.audit(actor, "maintenance.delete", f"maintenance:{window_id}")

        await run(self.context.store, apply)
