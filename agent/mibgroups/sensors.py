"""Sensors: ENTITY-SENSOR-MIB, CISCO-ENVMON-MIB and vendor fan and power-supply states,
as rows of measurement `sensor` and conditions on their status."""

from __future__ import annotations

from . import MibGroup

GROUPS: tuple[MibGroup, ...] = ()
