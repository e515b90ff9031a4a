"""Which events decide and which clear: the engine's one reading of the event vocabulary.

Every module of the engine (and every SQL condition the store interface writes)
asks here whether a state clears a problem. The states and kinds themselves are the
wire module's declaration (`enoc.wire.EVENT_KINDS`), the agent's and the collector's one.
"""

from __future__ import annotations

from enoc.wire import CLEARING_STATES, MOMENTARY_KINDS, STATE_KINDS, Event

__all__ = ["CLEARING_SQL", "MOMENTARY_KINDS", "STATE_KINDS", "clears", "decides"]

# STATE_KINDS: kinds whose every event counts, whatever its severity; of the other kinds an
# "info" event that clears nothing is informational: kept in the event log, deciding nothing.
# The clearing states as a SQL list, for conditions on the events table's `state`.
CLEARING_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(CLEARING_STATES)) + ")"


def clears(state: str) -> bool:
    """Whether an event in `state` ends its key's problem (any other state is one)."""
    return state in CLEARING_STATES


def decides(event: Event) -> bool:
    """Whether an event takes part in incident decisions."""
    return clears(event.state) or event.severity != "info" or event.kind in STATE_KINDS
