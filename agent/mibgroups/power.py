"""Power: UPS-MIB (RFC 1628) and APC PowerNet-MIB: battery charge, runtime, on battery,
input and output voltage, load, alarms."""

from __future__ import annotations

from . import MibGroup

GROUPS: tuple[MibGroup, ...] = ()
