"""CPU and memory from vendor MIBs, normalised to percent (docs/agent.md says which
average each MIB gives)."""

from __future__ import annotations

from . import MibGroup

GROUPS: tuple[MibGroup, ...] = ()
