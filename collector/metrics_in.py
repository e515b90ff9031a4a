"""A metrics message as the collector uses it: its line protocol and its polls.

The collector does two things with a metrics message: it writes its points to
InfluxDB and keeps each device's values in the recent window (the console's
device page). `read` makes both from the payload. Where the C extension
collector._metricsjson is built, one pass over the JSON writes the lines and
picks the window's values out (`lineproto.payload_lines`): no Python object
per value. A payload it does not take (one it is not sure of, see
collector/_metricsjson.c) and every payload without the extension go the
general way: `enoc.wire.decode` checks it and names what is wrong, then
`lineproto.metrics_chunk` formats the message, the reference the fast pass is
tested against.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

from collector.lineproto import Poll, metrics_chunk, native_lineproto, payload_lines
from enoc.logs import get_logger
from enoc.wire import (
    MAX_PAYLOAD,
    DeviceSample,
    MetricsMessage,
    Value,
    WireError,
    decode,
    payload_of,
    topic,
)

log = get_logger("enoc.collector.metrics_in")
_NAN = float("nan")

# Payloads read the general way, by why (/metrics: enoc_collector_metrics_slow_path_total):
# "no_extension" (collector._metricsjson not in use: every payload), "declined" (the C pass
# left a payload that decodes, which costs several times the CPU: a sender's new member, a
# group the C pass does not know, a value it is not sure of), "refused" (it breaks the
# contract: counted again among the rejected).
slow_path: dict[str, int] = {"no_extension": 0, "declined": 0, "refused": 0}


@dataclass(slots=True)
class Metrics:
    site: str
    agent: str
    rtc: str
    lines: bytes  # line protocol, each line ending in a newline
    points: int  # how many lines
    # each sample's device and its poll for the recent window; None for a sample with no
    # device fields, which is no poll (a ping round's `ping` rows: agent.ping)
    polls: list[tuple[str, Poll | None]]
    # what the window keeps of a device's latest poll: the payload (decoded again for a
    # device page), or the samples of a message built in memory
    latest: bytes | list[DeviceSample]


def read(site: str, agent: str, payload: bytes, *, max_size: int = MAX_PAYLOAD) -> Metrics:
    """A metrics payload received on the topic of `site` and `agent`; raises WireError as
    `enoc.wire.decode` does (`max_size`: the collector's mqtt.max_message_size)."""
    fast = payload_lines(site, agent, payload)
    if fast is not None:
        rtc, lines, points, polls = fast
        return Metrics(site, agent, rtc, lines, points, polls, payload)
    try:
        message = decode(topic(site, agent, "metrics"), payload, max_size=max_size)
    except WireError:
        slow_path["refused"] += 1
        raise
    if native_lineproto():
        if not slow_path["declined"]:
            log.info(
                "a metrics payload the C pass leaves was read the general way, at several "
                "times the CPU (counted in enoc_collector_metrics_slow_path_total; logged once)",
                site=site,
                agent=agent,
            )
        slow_path["declined"] += 1
    else:
        slow_path["no_extension"] += 1  # the collector said so at start
    assert isinstance(message, MetricsMessage)  # a metrics topic decodes as metrics
    return of(message)


def of(message: MetricsMessage) -> Metrics:
    """The general way: a decoded message, or one built in memory."""
    lines, points = metrics_chunk(message)
    payload = payload_of(message)
    return Metrics(
        message.site,
        message.agent,
        message.rtc,
        lines,
        points,
        [(s.device, poll_of(s) if s.fields else None) for s in message.samples],
        message.samples if payload is None else payload,
    )


def poll_of(sample: DeviceSample) -> Poll:
    """What the recent window keeps of one poll (collector._metricsjson picks the same out
    of the payload)."""
    interfaces = sample.interfaces
    rates: list[Any] = [
        x for i in interfaces for x in (i.fields.get("in_bps", _NAN), i.fields.get("out_bps", _NAN))
    ]
    try:
        values = array("f", rates)
    except (TypeError, OverflowError):  # a string, or an int beyond a double
        values = array("f", [number(x) for x in rates])
    fields = sample.fields
    return (
        sample.ts,
        fields.get("cpu"),
        fields.get("memory"),
        fields.get("response_ms"),
        tuple([i.if_index for i in interfaces]),
        values.tobytes(),
    )


def number(value: Value | None) -> float:
    """A value as the window keeps it: a 32-bit float, NaN for what is not a number."""
    if isinstance(value, int | float):
        try:
            return array("f", [value])[0]
        except OverflowError:
            return _NAN
    return _NAN
