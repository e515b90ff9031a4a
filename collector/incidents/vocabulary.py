"""Which events decide and which clear: the engine's one reading of the event vocabulary.

Every module of the engine (and every SQL condition the store interface writes)
asks here whether a state clears a problem, so that pointing these names at the
wire module's declaration changes the whole engine at once.
"""

from __future__ import annotations

from collector.model import CLEARING_STATES, MOMENTARY_KINDS
from enoc.wire import Event

__all__ = ["CLEARING_SQL", "MOMENTARY_KINDS", "STATE_KINDS", "clears", "decides"]

# Kinds whose every event counts, whatever its severity; of the other kinds an "info" event
# that clears nothing is informational: kept in the event log, deciding nothing.
STATE_KINDS = frozenset({"reachability", "link", "bgp"})
# The clearing states as a SQL list, for conditions on the events table's `state`.
CLEARING_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(CLEARING_STATES)) + ")"


def clears(state: str) -> bool:
    """Whether an event in `state` ends its key's problem (any other state is one)."""
    return state in CLEARING_STATES


def decides(event: Event) -> bool:
    """Whether an event takes part in incident decisions."""
    return clears(event.state) or event.severity != "info" or event.kind in STATE_KINDS
