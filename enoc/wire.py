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
refuses a whole batch for one `=1i`). Any exception decoding raises is a
WireError: what a payload does while it is decoded is that payload's fault.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import accumulate, starmap
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
    "reachability", "link", "bgp", "threshold", "sensor", "alarm", "reboot", "trap"
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
        if wire is not None and wire.site == site and wire.agent == agent:
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
                    )
                    for s in wire.samples
                ],
            )
            if type(payload) is bytes:
                message.__dict__[_PAYLOAD] = payload
            if int64:
                message.__dict__[_INT64] = True
            return message
    decoded = _decode_checked(site, agent, kind, payload)
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


def _decode_checked(site: str, agent: str, kind: Kind, payload: bytes) -> Message:
    """The general path: each check in turn, naming the first breach."""
    depth = nesting(payload)
    if depth > MAX_DEPTH:
        raise WireError("too_deep", f"nested {depth} levels deep, more than {MAX_DEPTH}")
    try:
        body = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:  # also invalid UTF-8 and numbers beyond a double
        raise WireError("malformed", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("malformed", "payload is not a JSON object")
    version = body.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(
            "unknown_version", f"schema version {version!r}, this side speaks {SCHEMA_VERSION}"
        )
    # events and status go to the incident store: their integers are its BIGINTs and
    # its text cannot hold NUL (metrics go to InfluxDB, which has its own rules)
    reader = _Reader(body, "", store=kind != "metrics")
    if reader.text("site") != site or reader.text("agent") != agent:
        raise WireError(
            "misaddressed",
            f"topic says {site}/{agent}, payload says {body.get('site')}/{body.get('agent')}",
        )
    if reader.text("kind") != kind:
        raise WireError("misaddressed", f"topic kind {kind}, payload kind {body.get('kind')!r}")
    rtc, seq, sent = reader.text("rtc"), reader.integer("seq"), reader.time("sent")
    if kind == "metrics":
        samples = [_sample(r) for r in reader.items("samples")]
        return MetricsMessage(agent, site, rtc, seq, sent, samples=samples)
    if kind == "events":
        return EventsMessage(
            agent, site, rtc, seq, sent, events=[_event(r) for r in reader.items("events")]
        )
    state = reader.text("state")
    if state not in ("online", "offline"):
        raise WireError("invalid", f"status state must be online or offline, got {state!r}")
    return StatusMessage(
        agent,
        site,
        rtc,
        seq,
        sent,
        state=state,  # type: ignore[arg-type]
        version=reader.text("version", default=""),
        inventory_size=reader.integer("inventory_size", default=0),
        health=reader.values("health"),
        devices=_devices(reader.array("devices")),
        capabilities=_capabilities(body.get("capabilities", {})),
    )


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting(payload: bytes) -> int:
    """How deep a JSON text nests arrays and objects (brackets inside strings do not count),
    without parsing it: the parser recurses once per level. Linear in the payload."""
    # Escaped backslashes dropped first (pairs, left to right), then escaped quotes: every
    # quote left opens or closes a string, and every other piece between quotes is outside.
    plain = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(plain.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(map(_STEP.__getitem__, brackets)))


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


# One schema, two decoders: `_F` is the fields' type, checked to int64 or not.
_F = TypeVar("_F", _Fields, _WideFields)


class _MetricsSample(msgspec.Struct, Generic[_F]):
    device: str
    address: str
    ts: _Time
    fields: _F = {}
    ifs: list[tuple[int, str, str, str, _F]] = []
    bgp: list[tuple[str, _F]] = []


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


def _devices(rows: list[Any]) -> list[DeviceInfo]:
    out = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4 and all(isinstance(x, str) for x in row)):
            raise WireError("invalid", f"devices[{i}]: expected [name, address, role, parent]")
        if any("\x00" in x for x in row):
            raise WireError("invalid", f"devices[{i}]: a string with a NUL character")
        out.append(DeviceInfo(*row))
    return out


def _capabilities(raw: object) -> dict[str, Capabilities]:
    if not isinstance(raw, dict):
        raise WireError("invalid", "capabilities: expected an object of devices")
    out = {}
    for name, row in raw.items():
        where = f"capabilities.{name}"
        if not (isinstance(row, list) and len(row) == 2):
            raise WireError("invalid", f"{where}: expected [found, sources]")
        found, sources = row
        if not (isinstance(found, list) and all(isinstance(x, str) for x in found)):
            raise WireError("invalid", f"{where}: found must be a list of strings")
        if not (isinstance(sources, dict) and all(isinstance(x, str) for x in sources.values())):
            raise WireError("invalid", f"{where}: sources must map fields to MIB names")
        if any("\x00" in x for x in (name, *found, *sources, *sources.values())):
            raise WireError("invalid", f"{where}: a string with a NUL character")
        out[name] = Capabilities(found, sources)
    return out


def _sample(r: _Reader) -> DeviceSample:
    interfaces = []
    for i, row in enumerate(r.array("ifs")):
        where = f"{r.path}.ifs[{i}]"
        if not (isinstance(row, list) and len(row) == 5):
            raise WireError("invalid", f"{where}: expected [ifIndex, name, descr, alias, fields]")
        if_index, name, descr, alias, fields = row
        if not isinstance(if_index, int) or isinstance(if_index, bool):
            raise WireError("invalid", f"{where}: ifIndex must be an integer")
        if not all(isinstance(x, str) for x in (name, descr, alias)):
            raise WireError("invalid", f"{where}: name, descr and alias must be strings")
        interfaces.append(
            InterfaceSample(if_index, name, descr, alias, _values(fields, f"{where}.fields"))
        )
    bgp = []
    for i, row in enumerate(r.array("bgp")):
        where = f"{r.path}.bgp[{i}]"
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)):
            raise WireError("invalid", f"{where}: expected [peer, fields]")
        bgp.append(BgpSample(row[0], _values(row[1], f"{where}.fields")))
    return DeviceSample(
        device=r.text("device"),
        address=r.text("address"),
        ts=r.time("ts"),
        fields=r.values("fields"),
        interfaces=interfaces,
        bgp=bgp,
    )


SEVERITIES = ("critical", "major", "minor", "warning", "info")


def _event(r: _Reader) -> Event:
    severity = r.text("severity")
    if severity not in SEVERITIES:
        raise WireError("invalid", f"{r.path}.severity: expected one of {', '.join(SEVERITIES)}")
    source = r.text("source")
    if source not in ("poll", "trap"):
        raise WireError("invalid", f"{r.path}.source: expected poll or trap")
    return Event(
        id=r.text("id"),
        ts=r.time("ts"),
        device=r.text("device"),
        resource=r.text("resource"),
        kind=r.text("kind"),
        state=r.text("state"),
        severity=severity,  # type: ignore[arg-type]
        message=r.text("message", default=""),
        source=source,  # type: ignore[arg-type]
        attrs=r.values("attrs"),
    )


def _values(raw: object, where: str, store: bool = False) -> dict[str, Value]:
    """A field set: names checked, values a number or a string; `store`: also within what
    the incident store takes (integers within int64, no NUL in a string)."""
    if not isinstance(raw, dict):
        raise WireError("invalid", f"{where}: expected an object")
    for key, value in raw.items():  # exact type checks: the hot path, and bool is excluded
        if not key:  # InfluxDB refuses the whole batch for one `=1i`
            raise WireError("invalid", f"{where}: a field with an empty name")
        if store and "\x00" in key:
            raise WireError("invalid", f"{where}: a field name with a NUL character")
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # inf and nan
                raise WireError("invalid", f"{where}.{key}: not a finite number")
        elif kind is int:
            if store and not INT64_MIN <= value <= INT64_MAX:
                raise WireError("invalid", f"{where}.{key}: integer beyond int64")
        elif kind is str:
            if store and "\x00" in value:
                raise WireError("invalid", f"{where}.{key}: a string with a NUL character")
        else:
            raise WireError("invalid", f"{where}.{key}: expected a number or a string")
    return raw


class _Reader:
    """Typed access to a decoded JSON object; errors name the path."""

    _MISSING = object()

    def __init__(self, body: dict[str, Any], path: str, *, store: bool = False) -> None:
        self.body = body
        self.path = path
        self.store = store  # within the incident store's bounds (see `_values`)

    def _get(self, key: str, default: object) -> object:
        value = self.body.get(key, default)
        if value is self._MISSING:
            raise WireError("invalid", f"{self.path}{'.' if self.path else ''}{key}: missing")
        return value

    def text(self, key: str, default: object = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise WireError("invalid", f"{self.path}.{key}: expected a string".lstrip("."))
        if self.store and "\x00" in value:
            raise WireError("invalid", f"{self.path}.{key}: a string with a NUL".lstrip("."))
        return value

    def integer(self, key: str, default: object = _MISSING) -> int:
        value = self._get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT64_MAX:
            raise WireError(
                "invalid",
                f"{self.path}.{key}: expected a non-negative integer within int64".lstrip("."),
            )
        return value

    def time(self, key: str) -> float:
        value = self._get(key, self._MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e11:
            raise WireError(
                "invalid", f"{self.path}.{key}: expected a Unix time in seconds".lstrip(".")
            )
        return float(value)

    def values(self, key: str) -> dict[str, Value]:
        return _values(self._get(key, {}), f"{self.path}.{key}".lstrip("."), self.store)

    def array(self, key: str) -> list[Any]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise WireError("invalid", f"{self.path}.{key}: expected a list".lstrip("."))
        return value

    def items(self, key: str) -> list[_Reader]:
        out = []
        for i, item in enumerate(self.array(key)):
            if not isinstance(item, dict):
                raise WireError("invalid", f"{key}[{i}]: expected an object")
            out.append(_Reader(item, f"{key}[{i}]", store=self.store))
        return out
