"""The incident engine: events in, incidents out.

- `rules`: what an event does to its key's incidents, by event time;
  `correlation`: what suppresses what;
- `liveness`: agent status and the site incident while an agent is away;
- `sweeps`: heartbeat timeouts, settling, expiry, maintenance, escalation, pruning;
- `maintenance`: the windows; `operators`: ack, resolve, comment;
- `queries`: what the API and the notifier read; `trends`: MTTA, MTTR and open
  incidents over time;
- `records`: the store interface, every SQL statement of the above;
- `engine`: the parts assembled over one store.
"""

from collector.incidents.engine import Engine
from collector.incidents.maintenance import Maintenance
from collector.incidents.model import Conflict, MaintenanceWindow, NotFound
from collector.incidents.operators import Operators
from collector.incidents.queries import Queries
from collector.incidents.sweeps import PRUNE_EVERY

__all__ = [
    "PRUNE_EVERY",
    "Conflict",
    "Engine",
    "Maintenance",
    "MaintenanceWindow",
    "NotFound",
    "Operators",
    "Queries",
]
