"""What the API and the notifier read: incidents, the fleet, MTTA and MTTR."""

from __future__ import annotations

import json
from typing import Any

from collector.access import EVERYTHING, Scope
from collector.incidents.model import NotFound
from collector.incidents.records import read, run
from collector.incidents.trends import Trends
from collector.model import SEVERITY_RANK, Incident
from collector.store import Store


class Queries:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.trends = Trends(store)  # MTTA, MTTR and open incidents over time

    async def incidents(
        self,
        *,
        state: str = "",
        site: str = "",
        severity: str = "",
        rtc: str = "",
        limit: int = 500,
        scope: Scope = EVERYTHING,
    ) -> list[Incident]:
        """Newest first, inside `scope`; `state` "active" is every state but resolved."""
        return await run(
            self.store,
            lambda db: db.find_incidents(
                state=state, site=site, severity=severity, rtc=rtc, limit=limit, scope=scope
            ),
        )

    async def open_counts(self) -> dict[str, int]:
        """Open (not resolved, not suppressed) incidents by severity (one read, not retried:
        /metrics must answer quickly while the store is away)."""
        rows = await read(self.store, lambda db: db.open_counts())
        return {str(severity): int(count) for severity, count in rows}

    async def incident(self, incident_id: int, scope: Scope = EVERYTHING) -> Incident:
        """One incident with its timeline; one outside `scope` is not found, as one that
        does not exist (its being there is not shown)."""
        found = await run(self.store, lambda db: db.incident(incident_id, timeline=True))
        if found is None or not scope.covers(found.rtc, found.key.site):
            raise NotFound(f"no incident {incident_id}")
        return found

    async def site_rtcs(self) -> dict[str, frozenset[str]]:
        """Each known site's RTC."""
        return await run(self.store, lambda db: db.site_rtcs())

    async def agents(self, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
        return [
            {
                "agent": a,
                "site": s,
                "rtc": r,
                "state": st,
                "last_seen": ls,
                "version": v,
                "inventory_size": n,
                "health": json.loads(h),
            }
            for a, s, r, st, ls, v, n, h in await run(self.store, lambda db: db.agents(scope))
        ]

    async def devices(self, site: str = "", scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
        out = []
        for (
            s,
            d,
            agent,
            rtc,
            address,
            role,
            parent,
            reach,
            agent_state,
            open_,
        ) in await run(self.store, lambda db: db.devices(site, scope)):
            state = reach if agent_state == "online" else "unknown"
            out.append(
                {
                    "site": s,
                    "device": d,
                    "agent": agent,
                    "rtc": rtc,
                    "address": address,
                    "role": role,
                    "parent": parent,
                    "state": state,
                    "open_incidents": int(open_),
                }
            )
        return out

    async def sites(self, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
        """Each site's tile: its devices, agents and open incidents (inside `scope`)."""
        devices = await self.devices(scope=scope)
        agents = await self.agents(scope)
        open_rows = await run(self.store, lambda db: db.open_counts(by_site=True, scope=scope))
        sites: dict[str, dict[str, Any]] = {}

        def site(name: str, rtc: str = "") -> dict[str, Any]:
            entry = sites.setdefault(
                name,
                {
                    "site": name,
                    "rtc": rtc,
                    "devices": {"up": 0, "down": 0, "unknown": 0},
                    "incidents": dict.fromkeys(SEVERITY_RANK, 0),
                    "agents": [],
                    "spool_depth": 0,
                },
            )
            if rtc and not entry["rtc"]:
                entry["rtc"] = rtc
            return entry

        for a in agents:
            entry = site(a["site"], a["rtc"])
            entry["agents"].append({"agent": a["agent"], "state": a["state"]})
            depth = a["health"].get("spool_depth", 0)
            entry["spool_depth"] += depth if isinstance(depth, int | float) else 0
        for d in devices:
            entry = site(d["site"], d["rtc"])
            bucket = d["state"] if d["state"] in ("up", "unknown") else "down"
            entry["devices"][bucket] += 1
        for s, severity, count in open_rows:
            site(s)["incidents"][severity] = int(count)
        for entry in sites.values():
            entry["status"] = _site_status(entry)
        return sorted(sites.values(), key=lambda e: (e["rtc"], e["site"]))

    async def stats(
        self, since: float, until: float, scope: Scope = EVERYTHING
    ) -> list[dict[str, Any]]:
        """MTTA and MTTR (seconds) of incidents opened in [since, until) inside `scope`, by
        site and severity."""
        return [
            {
                "site": site,
                "severity": severity,
                "incidents": int(n),
                "acknowledged": int(acked or 0),
                "mtta_s": None if mtta is None else round(float(mtta), 3),
                "resolved": int(resolved or 0),
                "mttr_s": None if mttr is None else round(float(mttr), 3),
            }
            for site, severity, n, acked, mtta, resolved, mttr in await run(
                self.store, lambda db: db.stats(since, until, scope)
            )
        ]


def _site_status(entry: dict[str, Any]) -> str:
    """green / amber / red / grey (unknown), the console's tile colour."""
    agents = entry["agents"]
    if agents and all(a["state"] != "online" for a in agents):
        return "grey"
    incidents = entry["incidents"]
    if incidents["critical"] or incidents["major"] or entry["devices"]["down"]:
        return "red"
    if incidents["minor"] or incidents["warning"]:
        return "amber"
    return "green"
