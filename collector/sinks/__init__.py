"""Where the collector's metrics go: the `MetricsSink` seam and its registry.

`SINKS` maps a sink's kind (the one key of a `sinks:` entry in the collector's config) to
its factory; `build` makes every configured sink (the `influxdb:` section is one, named
`influxdb`) and returns them as one `Sinks` fan-out. Adding a sink is a module here, its
entry in `SINKS` and its config class in collector/config.py (`SinkConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collector.config import CollectorConfig
from collector.config_sinks import sink_name
from collector.sinks.base import (
    MetricsSink,
    Sinks,
    SinkStats,
    WriteFailed,
    WriteRefused,
)
from collector.sinks.deadletters import DeadLetters, MqttDeadLetters

__all__ = [
    "SINKS",
    "MetricsSink",
    "MqttDeadLetters",
    "SinkStats",
    "Sinks",
    "WriteFailed",
    "WriteRefused",
    "build",
]

# (its config, its name, the dead letter sink) -> the sink
SinkFactory = Callable[[Any, str, DeadLetters], MetricsSink]


def _influxdb(config: Any, name: str, dead_letters: DeadLetters) -> MetricsSink:
    from collector.sinks.influx import InfluxWriter

    return InfluxWriter(config, dead_letters, name=name)


def _remote_write(config: Any, name: str, _dead_letters: DeadLetters) -> MetricsSink:
    # imported only when configured: protobuf's descriptors are built at import
    from collector.sinks.remote_write import RemoteWriteSink

    return RemoteWriteSink(config, name=name)


SINKS: dict[str, SinkFactory] = {
    "influxdb": _influxdb,
    "remote_write": _remote_write,
}


def build(config: CollectorConfig, dead_letters: DeadLetters) -> Sinks:
    """Every sink `config` names, in order: the `influxdb:` section, then `sinks:`."""
    sinks = []
    if config.influxdb is not None:
        sinks.append(SINKS["influxdb"](config.influxdb, sink_name(None), dead_letters))
    for sink in config.sinks:
        sinks.append(SINKS[sink.kind](sink.settings, sink_name(sink), dead_letters))
    return Sinks(sinks)
