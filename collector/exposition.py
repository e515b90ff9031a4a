"""The collector's counters in the Prometheus text exposition format (0.0.4)."""

from __future__ import annotations

from collector.model import SEVERITY_RANK
from collector.sinks.base import SINK_FAMILIES

_GAUGES = {
    "metrics_pending",
    "write_buffer_points",
    "stream_clients",
    "stream_last_id",
    "stream_feed_listening",
    "notify_queued",
    "notify_owned",
    "store_up",
    *("sink_write_buffer_points", "sink_up"),
}


# The label a family's `a.b` keys carry their `b` in, where it is not a kind (a metrics
# sink's own families: its name, collector.sinks.Sinks.counters).
_LABEL_NAMES = {"lines_refused": "device", "part_crashes": "part"} | {
    f"sink_{f}": "sink" for f in SINK_FAMILIES
}


def prometheus_text(counters: dict[str, float], open_counts: dict[str, int] | None) -> str:
    """Prometheus text exposition: `a.b` counters become `enoc_collector_a_total{kind="b"}`
    (`device="b"` for the families of `_LABEL_NAMES`); no `incidents_open` gauges when the
    store could not count them (`open_counts` None)."""
    families: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for key in sorted(counters):
        base, _, label = key.partition(".")
        gauge = base in _GAUGES
        name = f"enoc_collector_{base}" + ("" if gauge else "_total")
        kinds[name] = "gauge" if gauge else "counter"
        label_name = _LABEL_NAMES.get(base, "kind")
        labels = f'{{{label_name}="{_escape(label)}"}}' if label else ""
        families.setdefault(name, []).append(f"{name}{labels} {_number(counters[key])}")
    name = "enoc_collector_incidents_open"
    if open_counts is not None:
        kinds[name] = "gauge"
        families[name] = [
            f'{name}{{severity="{severity}"}} {open_counts.get(severity, 0)}'
            for severity in SEVERITY_RANK
        ]
    lines: list[str] = []
    for name, samples in families.items():
        lines.append(f"# TYPE {name} {kinds[name]}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
