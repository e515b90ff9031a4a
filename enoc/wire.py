"""The agent-collector wire contract: MQTT topics, message schema, version.

This is the one module both sides import (DESIGN: "Layout"). Messages are
compact JSON. Every payload carries the schema version, the agent id, the
site and the time its data was taken, so that a collector can check it
against the topic it arrived on and a replayed message keeps its original
timestamps.

Topics: ``enoc/v1/<site>/<agent_id>/{metrics,events,status}``.

What the messages hold is declared here once: the event kinds with their
clearing states (`EVENT_KINDS`) and the groups of a metrics sample
(`METRIC_GROUPS`); tests/test_vocabulary.py holds every other place to them.

Decoding metrics is the collector's hot path (one message per device poll,
about 50 points and 750 values): msgspec parses and checks the whole schema
in C against the `_Metrics*` structs below, which say exactly what the general
checks say. A payload they refuse takes the general path, which names the
breach (and, should it find none, decodes it). The first structs also check
that integers fit int64, which the contract does not ask (an unsupported
Counter64 reads 2**64-1 on some devices) but InfluxDB does: a message that
passes says so (`int64_checked`), so that the line protocol need not check each
value again; one with a larger integer is decoded by a second set that does
not check. A decoded metrics message keeps its payload (`payload_of`).

Bounds, whatever the payload (docs/collector.md, "Hostile input"): a payload
over `max_size` bytes (MAX_PAYLOAD by default) is refused before anything reads
it (the general path expands a payload about 45 times in memory); JSON nested
deeper than MAX_DEPTH is refused before it is parsed (the parser recurses);
`seq` and `inventory_size`, and every integer of an events or status message,
fit int64 (the store's integers); no string of an events or status message
holds NUL (PostgreSQL's text cannot); a field name is not empty (InfluxDB
refuses a whole batch for one `=1i`); a sample's row names a measurement and tags
the collector can write beside its own (`ROWS`, `row_breach`). Any exception decoding raises is a
WireError: what a payload does while it is decoded is that payload's fault.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import starmap
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1
TOPIC_PREFIX = "enoc/v1"
Kind = Literal["metrics", "events", "status"]
KINDS: tuple[Kind, ...] = ("metrics", "events", "status")
_KIND_OF: dict[str, Kind] = {k: k for k in KINDS}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PAYLOAD = 1024 * 1024  # bytes: the default of `decode`'s max_size
MAX_DEPTH = 16  # JSON nesting: the contract's deepest (a metrics interface's fields) is 5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Value = int | float | str
Severity = Literal["critical", "major", "minor", "warning", "info"]
Source = Literal["poll", "trap"]


class WireError(ValueError):
    """A message that breaks the contract. `kind` names the counter the collector bumps."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


# ------------------------------------------------------------------ topics


def check_name(what: str, value: str) -> str:
    """Site and agent names become topic levels: no '/', '+', '#' or spaces."""
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes an MQTT topic level)"
        )
    return value


def topic(site: str, agent_id: str, kind: Kind) -> str:
    return f"{TOPIC_PREFIX}/{site}/{agent_id}/{kind}"


def subscription(kind: Kind | Literal["+"] = "+", site: str = "+", *, share_group: str = "") -> str:
    """The filter a collector subscribes with; shared (`$share/<group>/...`) given a group."""
    pattern = f"{TOPIC_PREFIX}/{site}/+/{kind}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


def parse_topic(name: str) -> tuple[str, str, Kind]:
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[4] not in KINDS:
        raise WireError("bad_topic", f"not an enoc topic: {name!r}")
    return parts[2], parts[3], _KIND_OF[parts[4]]


# ------------------------------------------------------------------ vocabulary
# What the messages hold, declared once: the agent emits these, the collector decides and
# writes by them, and tests hold every other place (the incident engine's SQL, the profiles,
# the decoders' structs, the line protocol, the C passes) to them.

EventKindName = Literal[
    "reachability", "link", "bgp", "threshold", "sensor", "alarm", "reboot", "trap", "snmp", "ping"
]


@dataclass(frozen=True)
class EventKind:
    """A kind of event: the states its events take and the one that ends a problem."""

    name: EventKindName
    clearing: str | None  # the state that resolves the key's incident; None: momentary
    problems: tuple[str, ...]  # every other state of it, each a problem
    # An "info" problem of it still decides (a state, not a notice): a threshold or a trap
    # configured as info is only kept in the event log.
    always_decides: bool = False


EVENT_KINDS: dict[str, EventKind] = {
    k.name: k
    for k in (
        EventKind("reachability", "up", ("down",), always_decides=True),
        EventKind("link", "up", ("down",), always_decides=True),
        EventKind("bgp", "established", ("down",), always_decides=True),
        EventKind("threshold", "ok", ("high",)),
        # a condition a MIB group follows: a sensor's status, a UPS on battery
        EventKind("sensor", "ok", ("warning", "critical", "failed")),
        # a device's alarm that traps raise and clear by rule (agent.traprules)
        EventKind("alarm", "cleared", ("raised",)),
        # one-off: no clearing event will ever come (the collector resolves them in time)
        EventKind("reboot", None, ("rebooted",)),
        EventKind("trap", None, ("received",)),
        # a device that answers ping and not SNMP: its SNMP agent is silent, the host is up
        EventKind("snmp", "ok", ("silent",), always_decides=True),
        # ping's loss or round-trip time past its threshold (agent.config `ping.thresholds`)
        EventKind("ping", "ok", ("degraded",)),
    )
}
# The states that end a problem of their key; any other state of the key is a problem.
CLEARING_STATES = frozenset(k.clearing for k in EVENT_KINDS.values() if k.clearing is not None)
MOMENTARY_KINDS = frozenset(k.name for k in EVENT_KINDS.values() if k.clearing is None)
STATE_KINDS = frozenset(k.name for k in EVENT_KINDS.values() if k.always_decides)

PollGroup = Literal["interfaces", "host_resources", "bgp"]
# The agent's profile groups (the MIB tables it walks), in the order a profile walks them.
POLL_GROUPS: tuple[PollGroup, ...] = ("interfaces", "host_resources", "bgp")


@dataclass(frozen=True)
class MetricGroup:
    """A group of a metrics sample: its member in the payload, its InfluxDB measurement,
    the identity before each row's fields (written as tags), and what fills it."""

    member: str  # the sample's JSON member
    measurement: str
    identity: tuple[tuple[str, type], ...]  # a row's tags and types; () for the device's own
    polled: tuple[PollGroup, ...]  # the profile groups whose columns it is made of
    fields: tuple[str, ...]  # what the agent writes (a profile's vendor scalars add device fields)


DEVICE_FIELDS = MetricGroup(
    "fields",
    "device",
    (),
    ("host_resources", "interfaces"),
    (
        *("reachable", "response_ms", "sysUpTime", "uptime_s", "cpu", "memory"),
        *("ports_down", "ports_down_baseline"),
    ),
)
INTERFACES = MetricGroup(
    "ifs",
    "interface",
    (("ifIndex", int), ("ifName", str), ("ifDescr", str), ("ifAlias", str)),
    ("interfaces",),
    (
        *("ifOperStatus", "ifAdminStatus", "ifHighSpeed"),
        *("ifHCInOctets", "ifInOctets", "ifHCOutOctets", "ifOutOctets"),
        *("ifInErrors", "ifOutErrors", "ifInDiscards", "ifOutDiscards"),
        *("in_bps", "out_bps", "in_utilization", "out_utilization"),
        *("in_errors_per_s", "out_errors_per_s", "in_discards_per_s", "out_discards_per_s"),
        "listed",  # the one field of a row served with no status or counter column
    ),
)
BGP_PEERS = MetricGroup(
    "bgp",
    "bgp_peer",
    (("peer", str),),
    ("bgp",),
    ("state", "admin_status", "remote_as", "in_updates", "out_updates", "established_time"),
)
# In the order a sample holds them (the C pass takes them in this order only).
METRIC_GROUPS: tuple[MetricGroup, ...] = (DEVICE_FIELDS, INTERFACES, BGP_PEERS)

# The tags every point of a device carries (the collector writes them before a row's own).
DEVICE_TAGS = ("agent_host", "device", "rtc", "site")


@dataclass(frozen=True)
class RowGroup:
    """The sample's rows of measurements of their own (`Row`: a sensor, a profile's
    `tables:`), after METRIC_GROUPS: each row names its measurement and its tags."""

    member: str
    measurement: re.Pattern[str]  # what a row's measurement may be called
    tag_key: re.Pattern[str]  # ... and its tags' keys
    reserved: tuple[str, ...]  # the collector's own measurements, which no row may name
    reserved_prefix: str  # ... and the names it keeps for more of its own
    max_tags: int  # tags a row may carry beside the device's


ROWS = RowGroup(
    "rows",
    re.compile(r"^[a-z][a-z0-9_]{0,63}\Z"),
    re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z"),
    (*(g.measurement for g in METRIC_GROUPS), "incident", "enoc_agent"),
    "enoc_",
    16,
)


def row_breach(measurement: object, tags: object) -> str | None:
    """What is wrong with a row's measurement and tags (None: nothing). Its fields are any
    field set's."""
    if not isinstance(measurement, str) or not ROWS.measurement.match(measurement):
        return f"measurement {measurement!r}: expected a name like ^[a-z][a-z0-9_]{{0,63}}$"
    if measurement in ROWS.reserved or measurement.startswith(ROWS.reserved_prefix):
        return f"measurement {measurement!r} is the collector's own"
    if not isinstance(tags, dict):
        return "tags: expected an object of strings"
    if len(tags) > ROWS.max_tags:
        return f"tags: {len(tags)} of them, more than {ROWS.max_tags}"
    for key, value in tags.items():
        if not ROWS.tag_key.match(key) or key == "time":
            return f"tag {key!r}: expected a name like ^[A-Za-z][A-Za-z0-9_-]{{0,63}}$, not time"
        if key in DEVICE_TAGS:
            return f"tag {key!r} is one of the device's own ({', '.join(DEVICE_TAGS)})"
        if not isinstance(value, str):
            return f"tag {key!r}: expected a string"
    return None


# ------------------------------------------------------------------ messages


@dataclass
class InterfaceSample:
    """One interface of one poll: identity tags and IF-MIB / derived fields."""

    if_index: int
    name: str = ""
    descr: str = ""
    alias: str = ""
    fields: dict[str, Value] = field(default_factory=dict)


@dataclass
class BgpSample:
    peer: str
    fields: dict[str, Value] = field(default_factory=dict)


@dataclass
class Row:
    """One row of a table that has a measurement of its own (`sensor`, a profile's
    `tables:`): the row's tags, written after the device's, and its fields."""

    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Value] = field(default_factory=dict)


@dataclass
class DeviceSample:
    """Everything one poll of one device produced, stamped with the poll's time."""

    device: str
    address: str
    ts: float
    fields: dict[str, Value] = field(default_factory=dict)
    interfaces: list[InterfaceSample] = field(default_factory=list)
    bgp: list[BgpSample] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


@dataclass
class Event:
    """One state transition, detected at the edge (a poll or a trap)."""

    id: str  # unique per agent: replays and duplicates are recognised by it
    ts: float  # when the transition happened
    device: str
    resource: str  # "device", "if:<ifIndex>", "bgp:<peer>", "cpu", "memory", ...
    kind: str  # one of EVENT_KINDS from this agent; the collector keeps any it is sent
    state: str  # the kind's clearing state or one of its problems (EVENT_KINDS)
    severity: Severity = "major"
    message: str = ""
    source: Source = "poll"
    attrs: dict[str, Value] = field(default_factory=dict)


@dataclass
class Envelope:
    agent: str
    site: str
    rtc: str
    seq: int  # per agent and kind, increasing: the collector detects gaps and duplicates
    sent: float


@dataclass
class MetricsMessage(Envelope):
    samples: list[DeviceSample] = field(default_factory=list)


@dataclass
class EventsMessage(Envelope):
    events: list[Event] = field(default_factory=list)


@dataclass
class DeviceInfo:
    """A device of the agent's inventory, as the birth status lists it for the collector."""

    name: str
    address: str = ""
    role: str = ""
    parent: str = ""  # the device it hangs off: its incidents are suppressed while that is down


@dataclass
class Capabilities:
    """What capability discovery found on a device: the groups it answers (MIB groups,
    poll groups, MIBs known by name) and the MIB each of its device fields (cpu, memory)
    comes from."""

    found: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class StatusMessage(Envelope):
    state: Literal["online", "offline"] = "online"
    version: str = ""
    inventory_size: int = 0
    health: dict[str, Value] = field(default_factory=dict)
    devices: list[DeviceInfo] = field(default_factory=list)  # in birth messages only
    # by device name, in online messages, only the devices discovered
    capabilities: dict[str, Capabilities] = field(default_factory=dict)


Message = MetricsMessage | EventsMessage | StatusMessage


# ------------------------------------------------------------------ encoding


def encode(message: Message) -> bytes:
    """Compact JSON; short keys only where they repeat per interface."""
    body: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "agent": message.agent,
        "site": message.site,
        "rtc": message.rtc,
        "seq": message.seq,
        "sent": message.sent,
    }
    if isinstance(message, MetricsMessage):
        body["kind"] = "metrics"
        body["samples"] = [
            {
                "device": s.device,
                "address": s.address,
                "ts": s.ts,
                "fields": s.fields,
                "ifs": [[i.if_index, i.name, i.descr, i.alias, i.fields] for i in s.interfaces],
                "bgp": [[b.peer, b.fields] for b in s.bgp],
                **({"rows": [[r.measurement, r.tags, r.fields] for r in s.rows]} if s.rows else {}),
            }
            for s in message.samples
        ]
    elif isinstance(message, EventsMessage):
        body["kind"] = "events"
        body["events"] = [
            {
                "id": e.id,
                "ts": e.ts,
                "device": e.device,
                "resource": e.resource,
                "kind": e.kind,
                "state": e.state,
                "severity": e.severity,
                "message": e.message,
                "source": e.source,
                "attrs": e.attrs,
            }
            for e in message.events
        ]
    else:
        body["kind"] = "status"
        body.update(
            state=message.state,
            version=message.version,
            inventory_size=message.inventory_size,
            health=message.health,
        )
        if message.devices:
            body["devices"] = [[d.name, d.address, d.role, d.parent] for d in message.devices]
        if message.capabilities:
            body["capabilities"] = {
                name: [c.found, c.sources] for name, c in message.capabilities.items()
            }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(topic_name: str, payload: bytes, *, max_size: int = MAX_PAYLOAD) -> Message:
    """Parse and validate a payload received on `topic_name`.

    Raises WireError with kind: bad_topic, too_large (over `max_size` bytes, not
    decoded), too_deep (nested beyond MAX_DEPTH), malformed (not JSON / not an
    object), unknown_version, misaddressed (topic and payload disagree), invalid
    (schema, and the bounds above). Never another exception.
    """
    site, agent, kind = parse_topic(topic_name)
    check_size(payload, max_size)
    try:
        return _decode(site, agent, kind, payload)
    except WireError:
        raise
    except RecursionError:  # the general path checks the depth first: from the fast path
        raise WireError("too_deep", f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # a payload must never stop the caller's loop
        raise WireError("malformed", f"cannot decode: {type(exc).__name__}: {exc}") from None


def check_size(payload: bytes | bytearray | memoryview, max_size: int = MAX_PAYLOAD) -> None:
    """Refuse a payload over `max_size` bytes, before anything reads it."""
    if len(payload) > max_size:
        raise WireError(
            "too_large", f"payload of {len(payload)} bytes, more than the limit of {max_size}"
        )


def _decode(site: str, agent: str, kind: Kind, payload: bytes) -> Message:
    if kind == "metrics":
        int64 = True
        wire: _Metrics[_Fields] | _Metrics[_WideFields] | None
        try:
            wire = _metrics_decoder.decode(payload)
        except msgspec.ValidationError:  # an integer beyond int64, or the general path says
            int64 = False
            try:
                wire = _metrics_wide_decoder.decode(payload)
            except msgspec.DecodeError:
                wire = None
        except msgspec.DecodeError:  # the general path says what
            wire = None
        if (
            wire is not None
            and wire.site == site
            and wire.agent == agent
            and all(row_breach(m, t) is None for s in wire.samples for m, t, _f in s.rows)
        ):
            message = MetricsMessage(
                agent,
                site,
                wire.rtc,
                wire.seq,
                wire.sent,
                samples=[
                    DeviceSample(
                        s.device,
                        s.address,
                        s.ts,
                        s.fields,
                        list(starmap(InterfaceSample, s.ifs)),
                        list(starmap(BgpSample, s.bgp)),
                        list(starmap(Row, s.rows)),
                    )
                    for s in wire.samples
                ],
            )
            if type(payload) is bytes:
                message.__dict__[_PAYLOAD] = payload
            if int64:
                message.__dict__[_INT64] = True
            return message
    decoded = decode_checked(site, agent, kind, payload)
    if isinstance(decoded, MetricsMessage) and type(payload) is bytes:
        decoded.__dict__[_PAYLOAD] = payload
    return decoded


# instance attributes, not fields: neither compared nor encoded
_PAYLOAD = "_enoc_payload"
_INT64 = "_enoc_int64"


def int64_checked(message: MetricsMessage) -> bool:
    """Whether `decode` found every integer of this message within int64 (InfluxDB's
    integers): checked in C while decoding, so that the line protocol need not check
    again. False for a message built in memory, or with an integer beyond (an unsupported
    Counter64 reads 2**64-1 on some devices), which the contract accepts."""
    return _INT64 in message.__dict__


def payload_of(message: MetricsMessage) -> bytes | None:
    """The payload `decode` made this message from; None for a message built in memory.

    The collector's recent-values window keeps a device's latest poll as this one
    bytes object and decodes it again when a device page asks. A decoded message is
    not to be changed (the payload would no longer say what it holds)."""
    payload: bytes | None = message.__dict__.get(_PAYLOAD)
    return payload


# What the general checks accept of a metrics payload, for msgspec: exact types (an int is
# not a bool, a row has exactly its elements), times in (0, 1e11), seq in [0, int64]. The first
# decoder also checks that integers fit int64; a payload with one beyond is decoded by the
# second, which does not.
_Time = Annotated[float, msgspec.Meta(gt=0, lt=1e11)]
_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
_Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
# a field name is not empty: InfluxDB refuses a whole batch for one line with `=1i`
_FieldName = Annotated[str, msgspec.Meta(min_length=1)]
_Fields = dict[_FieldName, _Int64 | float | str]
_WideFields = dict[_FieldName, int | float | str]
# a row's tags; its measurement's name and its tags' keys are checked after (`row_breach`)
_RowTags = Annotated[dict[str, str], msgspec.Meta(max_length=ROWS.max_tags)]


# One schema, two decoders: `_F` is the fields' type, checked to int64 or not.
_F = TypeVar("_F", _Fields, _WideFields)


class _MetricsSample(msgspec.Struct, Generic[_F]):
    device: str
    address: str
    ts: _Time
    fields: _F = {}
    ifs: list[tuple[int, str, str, str, _F]] = []
    bgp: list[tuple[str, _F]] = []
    rows: list[tuple[str, _RowTags, _F]] = []


class _Metrics(msgspec.Struct, Generic[_F]):
    v: Literal[1]  # SCHEMA_VERSION
    agent: str
    site: str
    kind: Literal["metrics"]
    rtc: str
    seq: _Seq
    sent: _Time
    samples: list[_MetricsSample[_F]] = []


_metrics_decoder = msgspec.json.Decoder(_Metrics[_Fields])
_metrics_wide_decoder = msgspec.json.Decoder(_Metrics[_WideFields])


# The general path lives beside (it names each breach): enoc.wire_checked.
from enoc.wire_checked import decode_checked  # noqa: E402 - it imports this module's names
