"""InfluxDB line protocol for the DESIGN's Telegraf-compatible schema.

Lines are built with f-strings (about 20x cheaper than influxdb-client's
`Point`). Timestamps are milliseconds: polls are a second or more apart, and
ms keeps sub-second poll times distinct while staying coarse (InfluxData's
advice for write speed).
"""

from __future__ import annotations

import math

from collector.model import IncidentChange
from enoc.wire import InterfaceSample, MetricsMessage, StatusMessage, Value

PRECISION = "ms"


def _tag(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(",", "\\,")
        .replace("=", "\\=")
        .replace(" ", "\\ ")
        .replace("\n", "\\n")
    )


# Escaped field names and tag sets repeat from one poll to the next: cache them. Bounded,
# and simply emptied when full (a fleet's names fit many times over).
_CACHE_LIMIT = 500_000
_names: dict[str, str] = {}
_tagsets: dict[tuple[str, ...], str] = {}


def _name(name: str) -> str:
    escaped = _names.get(name)
    if escaped is None:
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        escaped = _names[name] = _tag(name)
    return escaped


def _field_value(value: Value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _fields(fields: dict[str, Value]) -> str:
    parts = []
    names = _names
    for name, value in fields.items():
        key = names.get(name) or _name(name)
        kind = type(value)  # exact types first: the hot path
        if kind is float:
            if math.isfinite(value):  # type: ignore[arg-type]
                parts.append(f"{key}={value!r}")
        elif kind is int:
            parts.append(f"{key}={value}i")
        else:
            text = _field_value(value)
            if text is not None:
                parts.append(f"{key}={text}")
    return ",".join(parts)


def _tags(pairs: list[tuple[str, str]]) -> str:
    """Sorted by key (InfluxDB's canonical order), empty values left out."""
    return "".join(f",{k}={_tag(v)}" for k, v in sorted(pairs) if v)


def _interface_tags(address: str, device: str, rtc: str, site: str, i: InterfaceSample) -> str:
    key = (address, device, rtc, site, i.name, i.descr, i.alias, str(i.if_index))
    tags = _tagsets.get(key)
    if tags is None:
        if len(_tagsets) >= _CACHE_LIMIT:
            _tagsets.clear()
        tags = _tagsets[key] = _tags(
            [
                ("agent_host", address),
                ("device", device),
                ("rtc", rtc),
                ("site", site),
                ("ifIndex", key[7]),
                ("ifName", i.name),
                ("ifDescr", i.descr),
                ("ifAlias", i.alias),
            ]
        )
    return tags


def lines_for(message: MetricsMessage) -> list[str]:
    """Measurements `device`, `interface` and `bgp_peer` of one metrics message."""
    lines: list[str] = []
    site, rtc = message.site, message.rtc
    for sample in message.samples:
        stamp = round(sample.ts * 1000)
        address, device = sample.address, sample.device
        base = [("agent_host", address), ("device", device), ("rtc", rtc), ("site", site)]
        fields = _fields(sample.fields)
        if fields:
            lines.append(f"device{_tags(base)} {fields} {stamp}")
        for i in sample.interfaces:
            fields = _fields(i.fields)
            if fields:
                tags = _interface_tags(address, device, rtc, site, i)
                lines.append(f"interface{tags} {fields} {stamp}")
        for b in sample.bgp:
            fields = _fields(b.fields)
            if fields:
                lines.append(f"bgp_peer{_tags([*base, ('peer', b.peer)])} {fields} {stamp}")
    return lines


def agent_health(message: StatusMessage) -> list[str]:
    """Measurement `enoc_agent`: the agent's own health from its heartbeat."""
    fields = _fields(message.health)
    if not fields:
        return []
    tags = _tags([("agent", message.agent), ("site", message.site), ("rtc", message.rtc)])
    return [f"enoc_agent{tags} {fields} {round(message.sent * 1000)}"]


def incident_line(change: IncidentChange) -> str:
    """Measurement `incident`: one point per incident change, for Grafana annotations.

    The incident store is the record; this is a copy for dashboards. Timestamp:
    when the change happened (opened, acknowledged, resolved, else last updated).
    """
    i = change.incident
    at = {
        "opened": i.opened,
        "acknowledged": i.acknowledged,
        "resolved": i.resolved,
    }.get(change.change) or i.updated
    tags = _tags(
        [
            ("change", change.change),
            ("device", i.key.device),
            ("kind", i.key.kind),
            ("rtc", i.rtc),
            ("severity", i.severity),
            ("site", i.key.site),
        ]
    )
    fields = _fields(
        {
            "id": i.id,
            "state": i.state,
            "title": i.title,
            "resource": i.key.resource,
            "count": i.count,
            "escalated": i.escalated,
            "flapping": i.flapping,
            "suppressed": i.suppressed_by is not None,
            "actor": i.resolved_by if change.change == "resolved" else i.acknowledged_by,
        }
    )
    return f"incident{tags} {fields} {round(at * 1000)}"
