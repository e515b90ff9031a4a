"""InfluxDB line protocol for the DESIGN's Telegraf-compatible schema.

The metrics path is the collector's hot loop: a device poll is about 50 lines
of 15 fields each, and formatting numbers one `repr` at a time is most of the
collector's CPU (docs/performance.md). So a field set is written from
a template cached per (field names, value types): the values are rendered in
one msgspec JSON encoding (C, shortest round-trip floats), split into tokens
and dropped into the template's slots; ints get their `i` there. Tag sets are
cached per device and interface. Field sets with strings or booleans, and
messages with a float that is not finite, take the general path (`repr`,
one value at a time), which writes the same values. Lines are bytes, ready
for gzip.

An integer field beyond InfluxDB's int64 (2**64-1 is what some devices report
for a Counter64 they do not support) is left out of its line, counted
(`out_of_range`, on /metrics) and logged once per field name: written as `...i`
it would make InfluxDB refuse the whole batch and VictoriaMetrics drop the line.
A message that `enoc.wire.decode` made has had its integers checked in C
(`int64_checked`); any other is checked here, value by value.

Where the C extension `collector._lineproto` is built (`uv sync` compiles it),
the interfaces of a sample are formatted in one call to it: the same values
through the same msgspec encoder, dropped after the same cached `name=` parts,
byte for byte what the template path writes, without its per-interface Python
work (docs/performance.md has the figures). It takes only exact ints
within int64 and finite floats, and interfaces whose tag set is cached; for
anything else it returns None and the sample takes the Python path below,
which stays the reference (tests compare the two) and is all there is when
the extension is not built or `ENOC_PURE_PYTHON=1` is set (`NATIVE` says
which, and the collector logs it at start).

All of the above formats a message already decoded. The collector's metrics
messages mostly never are: `payload_lines` hands the payload to the C extension
`collector._metricsjson`, which reads the JSON once and writes the lines as it
goes (a number's token is its value), taking its tag sets from the caches here
(`_DeviceTags.learn_*`). What it is not sure of it leaves to `enoc.wire.decode`
and `metrics_chunk`, which write the same values (collector/metrics_in.py).

Every tag value and field name is written in the form `sanitise_tag_value` and
`sanitise_field_key` give (docs/collector.md, "What a device's strings become"),
which InfluxDB 1.x and VictoriaMetrics both accept and read back alike; the C
passes take their tag sets and names from here, so they write the same.

Timestamps are milliseconds: polls are a second or more apart, and ms keeps
sub-second poll times distinct while staying coarse (InfluxData's advice for
write speed).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

import msgspec

from collector.model import IncidentChange
from enoc.logs import get_logger
from enoc.wire import (
    BGP_PEERS,
    DEVICE_FIELDS,
    DEVICE_TAGS,
    INT64_MAX,
    INT64_MIN,
    INTERFACES,
    InterfaceSample,
    MetricsMessage,
    StatusMessage,
    Value,
    int64_checked,
    row_breach,
)

log = get_logger("enoc.collector.lineproto")
T = TypeVar("T")

PRECISION = "ms"
_encode = msgspec.json.Encoder().encode

# Integer fields left out for being beyond int64, by field name (logged the first time).
out_of_range: dict[str, int] = {}
_NAMES_COUNTED = 1000  # beyond that many names, the rest count under "other"


_NATIVE_VERSION = 2  # the contract of collector/_lineproto.c this module speaks
_METRICSJSON_VERSION = 2  # ... and of collector/_metricsjson.c


def _load_extension(name: str, version: int) -> tuple[ModuleType | None, str]:
    """The C extension `collector.<name>`, or None and why not."""
    if os.environ.get("ENOC_PURE_PYTHON", "") not in ("", "0"):
        return None, "ENOC_PURE_PYTHON is set"
    try:
        module = importlib.import_module(f"collector.{name}")
    except ImportError as exc:
        return None, (
            f"the C extension collector.{name} is not built ({exc}; `uv sync` builds it "
            f"where a C compiler and the Python headers are installed)"
        )
    built = getattr(module, "VERSION", None)
    if built != version:
        return None, (
            f"collector.{name} is version {built}, this code speaks {version} "
            f"(rebuild it: uv sync --reinstall-package enoc)"
        )
    return module, ""


def _load_native() -> tuple[ModuleType | None, ModuleType | None, str]:
    """Both C extensions and a line for the log saying which path formats the lines."""
    lineproto_c, why = _load_extension("_lineproto", _NATIVE_VERSION)
    if lineproto_c is None:
        return (
            None,
            None,
            (
                f"line protocol in pure Python: {why}; several times the CPU a point "
                f"(docs/collector.md, Performance)"
            ),
        )
    metricsjson_c, why = _load_extension("_metricsjson", _METRICSJSON_VERSION)
    if metricsjson_c is None:
        return (
            lineproto_c,
            None,
            (
                f"line protocol formatted by the C extension collector._lineproto; metrics "
                f"payloads decoded in Python: {why}"
            ),
        )
    return (
        lineproto_c,
        metricsjson_c,
        (
            "line protocol formatted by the C extensions collector._metricsjson (payload to "
            "lines) and collector._lineproto"
        ),
    )


_native, _metricsjson, NATIVE = _load_native()


def zero_upper() -> None:
    """Clear the AVX registers' upper halves after ISA-L's gzip (collector._lineproto's
    `zero_upper`, which says why); nothing without the extension."""
    if _native is not None:
        _native.zero_upper()


def native_lineproto() -> bool:
    """Whether both C extensions are in use (NATIVE says which path, and why)."""
    return _native is not None and _metricsjson is not None


def out_of_range_total() -> int:
    return sum(out_of_range.values())


def _out_of_range(name: str, value: int) -> None:
    key = name if name in out_of_range or len(out_of_range) < _NAMES_COUNTED else "other"
    if key not in out_of_range:
        out_of_range[key] = 0
        log.warning(
            "integer field %s = %d is beyond InfluxDB's int64: left out of its line "
            "(counted in enoc_collector_fields_out_of_range_total; logged once per field)",
            name,
            value,
        )
    out_of_range[key] += 1


def _fits(values: list[Value]) -> bool:
    """Every integer within int64 (the check `decode` made in C, for other messages)."""
    return all(INT64_MIN <= v <= INT64_MAX for v in values if type(v) is int)


# The sanitising (docs/collector.md, "What a device's strings become"): what InfluxDB 1.x
# and VictoriaMetrics both parse and read back alike. They disagree on backslashes in keys
# and tag values: InfluxDB 1.x keeps `\\` as two backslashes and takes a backslash before a
# separator as escaping it (so a value cannot end in one), VictoriaMetrics reads `\\` as
# one and counts a run's parity. A backslash followed by anything else is kept by both.
MAX_TAG_BYTES = 1024  # of a tag value's UTF-8: InfluxDB 1.x refuses series keys past 64 KiB
MAX_STRING_BYTES = 65_536  # of a string field value's UTF-8
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BACKSLASH = re.compile(r"\\(?=[\\ ,=]|\Z)")
_RESERVED_KEYS = {"time"}  # InfluxDB 1.x refuses a point with a field named so


def _whole(text: str, limit: int) -> str:
    """Control characters as spaces, lone surrogates as U+FFFD, at most `limit` bytes of
    UTF-8 (cut back to a whole character)."""
    text = _CONTROL.sub(" ", text)
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        raw = text.encode()
    if len(raw) > limit:
        text = raw[:limit].decode(errors="ignore")
    return text


def sanitise_tag_value(value: str) -> str | None:
    """A tag value as InfluxDB and VictoriaMetrics store it (None: the tag is left out).

    Each control character (U+0000-U+001F, U+007F-U+009F) becomes a space, a lone surrogate
    U+FFFD; the value is cut to MAX_TAG_BYTES of UTF-8 (a whole character); then a backslash
    that ends it or precedes a backslash, space, comma or equals sign becomes a slash. An
    empty value is None."""
    if not value:
        return None
    return _BACKSLASH.sub("/", _whole(value, MAX_TAG_BYTES)) or None


def sanitise_field_key(name: str) -> str | None:
    """A field (or tag) key as stored: a tag value's rules, after each double quote made a
    single quote (VictoriaMetrics takes one as opening a string); `time` (which InfluxDB
    1.x refuses) becomes `time_`. None: left out."""
    if not name:
        return None
    key = _BACKSLASH.sub("/", _whole(name, MAX_TAG_BYTES).replace('"', "'"))
    return key + "_" if key in _RESERVED_KEYS else key or None


def sanitise_string_field(value: str) -> str:
    """A string field's value as stored: control characters as spaces, at most
    MAX_STRING_BYTES of UTF-8."""
    return _whole(value, MAX_STRING_BYTES)


def _escape(sanitised: str) -> str:
    """A sanitised key or tag value in line protocol: its separators escaped."""
    return sanitised.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _tag(value: str) -> str:
    """A tag value in line protocol; empty when it is left out."""
    sanitised = sanitise_tag_value(value)
    return "" if sanitised is None else _escape(sanitised)


# Caches: names, tag sets and templates repeat from one poll to the next. Bounded, and
# simply emptied when full (a fleet's names fit many times over).
_CACHE_LIMIT = 200_000
_names: dict[str, bytes | None] = {}
_templates: dict[tuple[tuple[str, ...], tuple[type, ...]], bytes | None] = {}
_devices: dict[tuple[str, str, str, str], _DeviceTags] = {}
# field names -> the value types seen last with them and their template: looked up by the
# names alone and the types compared, cheaper than hashing both (most sets never change)
_by_names: dict[tuple[str, ...], tuple[tuple[type, ...], bytes | None]] = {}
# field name -> its escaped `name=`, for the C extension: every name of a set in _by_names
# is here (filled by _template, emptied with _by_names), so a set the extension cannot find
# a name of goes through _template on the Python path, which fills it
_prefixes: dict[str, bytes] = {}


def _name(name: str) -> bytes | None:
    """A field name in line protocol (None: it cannot be written, its field is left out)."""
    escaped = _names.get(name, b"")
    if escaped == b"":
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        key = sanitise_field_key(name)
        escaped = _names[name] = None if key is None else _escape(key).encode()
    return escaped


def _template(names: tuple[str, ...], kinds: tuple[type, ...]) -> bytes | None:
    """`name=%bi,other=%b` for numbers-only field sets; None sends the set the general way."""
    if len(_by_names) >= _CACHE_LIMIT or len(_prefixes) >= _CACHE_LIMIT:
        _by_names.clear()
        _prefixes.clear()
    escaped_names = [e for e in map(_name, names) if e is not None]
    if len(escaped_names) != len(names) or not all(map(_kept, names)):
        # A name left out, or changed by sanitising (two such can become one key, which
        # InfluxDB refuses when their types differ): the general path, which writes the
        # first. Such a name is never in _prefixes, so the C extension leaves the set too.
        _by_names[names] = (kinds, None)
        return None
    for name, escaped_name in zip(names, escaped_names, strict=True):
        if name not in _prefixes:
            _prefixes[name] = escaped_name + b"="
    key = (names, kinds)
    template = _templates.get(key, b"")
    if template != b"":
        _by_names[names] = (kinds, template)
        return template
    if len(_templates) >= _CACHE_LIMIT:
        _templates.clear()
    parts = []
    for escaped_name, kind in zip(escaped_names, kinds, strict=True):
        escaped = escaped_name.replace(b"%", b"%%")
        if kind is int:
            parts.append(escaped + b"=%bi")
        elif kind is float:
            parts.append(escaped + b"=%b")
        else:
            parts = []
            break
    template = _templates[key] = b",".join(parts) if parts else None
    _by_names[names] = (kinds, template)
    return template


def _field_value(value: Value | bool | None) -> bytes | None:
    """One field value in line protocol; None for what cannot be written (not finite,
    an integer beyond int64)."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return b"%di" % value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return repr(value).encode() if math.isfinite(value) else None
    if isinstance(value, str):
        escaped = sanitise_string_field(value).replace("\\", "\\\\").replace('"', '\\"')
        return b'"%b"' % escaped.encode()
    return None


def _kept(name: str) -> bool:
    """Whether sanitising leaves a field name as it is."""
    return sanitise_field_key(name) == name


def _general_fields(fields: dict[str, Value]) -> bytes:
    parts = []
    written: set[bytes] = set()
    for name, value in fields.items():
        text = _field_value(value)
        escaped = _name(name)
        if escaped is None or escaped in written:  # left out, or a key written already
            continue
        if text is not None:
            written.add(escaped)
            parts.append(escaped + b"=" + text)
        elif type(value) is int:
            _out_of_range(name, value)
    return b",".join(parts)


def _fields(fields: dict[str, Value], int64: bool = False) -> bytes:
    """A field set: `a=1i,b=2.5` (empty when nothing can be written). `int64`: its
    integers are known to fit."""
    if _native is not None:
        text: bytes | None = _native.format_fields(fields, _prefixes, _encode)
        if text is not None:
            return text
    return _python_fields(fields, int64)


def _python_fields(fields: dict[str, Value], int64: bool) -> bytes:
    values = [*fields.values()]
    kinds = tuple(map(type, values))
    names = tuple(fields)
    cached = _by_names.get(names)
    template = cached[1] if cached is not None and cached[0] == kinds else _template(names, kinds)
    if template is None or not (int64 or _fits(values)):
        return _general_fields(fields)
    encoded = _encode(values)  # numbers only: no comma inside a token
    # null: a float that is not finite (never in a decoded message: JSON has none)
    if not int64 and b"n" in encoded:
        return _general_fields(fields)
    return template % tuple(encoded[1:-1].split(b","))


def _tags(pairs: list[tuple[str, str]]) -> bytes:
    """Sorted by key (InfluxDB's canonical order), values sanitised, empty ones left out."""
    return "".join(f",{k}={t}" for k, v in sorted(pairs) if (t := _tag(v))).encode()


# Each group's measurement and its rows' identity tags, as enoc.wire declares them
_DEVICE = DEVICE_FIELDS.measurement.encode()
_INTERFACE = INTERFACES.measurement.encode()
_INTERFACE_TAGS = tuple(name for name, _type in INTERFACES.identity)
_BGP_PEER = BGP_PEERS.measurement.encode()
((_PEER_TAG, _),) = BGP_PEERS.identity

# An interface's identity as the wire carries it (`ifIndex,"name","descr","alias"`) and a
# BGP peer's, checked as `enoc.wire.decode` checks them
_identity = msgspec.json.Decoder(tuple[int, str, str, str])
_peer = msgspec.json.Decoder(str)
# ... and a row's (`"measurement",{tags}`), whose names `enoc.wire.row_breach` checks
_row_identity = msgspec.json.Decoder(tuple[str, dict[str, str]])

IfEntry = tuple[bytes, bytes, int]  # an interface's raw identity, its tag set, its ifIndex
PeerEntry = tuple[bytes, bytes]  # a BGP peer's raw identity (its JSON string), its tag set
RowEntry = tuple[bytes, bytes]  # a row's raw identity, its measurement and tag set
RowKey = tuple[str, tuple[tuple[str, str], ...]]


class _DeviceTags:
    """A device's tag sets: its own, and one per interface and row (with the measurement).

    For collector._metricsjson, which compares an interface's identity as it is in the
    payload with the one at the same place in the device's last poll: `if_shape`,
    `bgp_shape` and `row_shape` hold those, `learn_*` adds one it has not seen there,
    `index` is the last poll's ifIndex tuple (shared by the recent window's polls)."""

    __slots__ = (
        *("base", "bgp_shape", "device_line", "if_shape", "index", "interfaces", "pairs"),
        *("row_shape", "rows"),
    )

    def __init__(self, address: str, device: str, rtc: str, site: str) -> None:
        self.pairs = list(zip(DEVICE_TAGS, (address, device, rtc, site), strict=True))
        self.base = _tags(self.pairs)
        self.device_line = _DEVICE + self.base + b" "
        self.interfaces: dict[tuple[int, str, str, str], bytes] = {}
        self.rows: dict[RowKey, bytes] = {}
        self.if_shape: list[IfEntry] = []
        self.bgp_shape: list[PeerEntry] = []
        self.row_shape: list[RowEntry] = []
        self.index: tuple[int, ...] | None = None

    def learn_interface(self, position: int, raw: bytes) -> IfEntry | None:
        """The entry of an interface identity (None: not what the contract allows)."""
        try:
            key = _identity.decode(b"[" + raw + b"]")
        except msgspec.DecodeError:  # ValidationError too
            return None
        # not cached under the decoded key as well: the shape holds it (half the memory)
        entry = (raw, self.interfaces.get(key) or self._interface_line(key), key[0])
        _put(self.if_shape, position, entry)
        return entry

    def learn_bgp(self, position: int, raw: bytes) -> PeerEntry | None:
        """The entry of a BGP peer's identity (None: not a JSON string)."""
        try:
            peer = _peer.decode(raw)
        except msgspec.DecodeError:
            return None
        entry = (raw, self.bgp(peer))
        _put(self.bgp_shape, position, entry)
        return entry

    def learn_row(self, position: int, raw: bytes) -> RowEntry | None:
        """The entry of a row's identity (None: not what the contract allows)."""
        try:
            measurement, tags = _row_identity.decode(b"[" + raw + b"]")
        except msgspec.DecodeError:
            return None
        if row_breach(measurement, tags) is not None:
            return None
        entry = (raw, self.row(measurement, tags))
        _put(self.row_shape, position, entry)
        return entry

    def bgp(self, peer: str) -> bytes:
        return _BGP_PEER + _tags([*self.pairs, (_PEER_TAG, peer)]) + b" "

    def row(self, measurement: str, tags: dict[str, str]) -> bytes:
        """A row's measurement and tag set (the device's and its own, in one sorted set),
        cached; the measurement is one `enoc.wire.decode` has checked (a plain name)."""
        key = (measurement, tuple(tags.items()))
        line = self.rows.get(key)
        if line is None:
            if len(self.rows) >= 10_000:
                self.rows.clear()
            line = self.rows[key] = measurement.encode() + _tags([*self.pairs, *key[1]]) + b" "
        return line

    def interface(self, key: tuple[int, str, str, str]) -> bytes:
        """An interface's tag set, cached under `key` (for the general path)."""
        if len(self.interfaces) >= 10_000:
            self.interfaces.clear()
        line = self.interfaces[key] = self._interface_line(key)
        return line

    def _interface_line(self, key: tuple[int, str, str, str]) -> bytes:
        if_index, *names = key
        tags = _tags([*self.pairs, *zip(_INTERFACE_TAGS, (str(if_index), *names), strict=True)])
        return _INTERFACE + tags + b" "


def _put(shape: list[T], position: int, entry: T) -> None:
    if position < len(shape):
        shape[position] = entry
    else:
        shape.append(entry)


def _device_tags(address: str, device: str, rtc: str, site: str) -> _DeviceTags:
    key = (address, device, rtc, site)
    tags = _devices.get(key)
    if tags is None:
        if len(_devices) >= _CACHE_LIMIT // 10:
            _devices.clear()
        tags = _devices[key] = _DeviceTags(*key)
    return tags


def forget_devices(keep: Callable[[str], bool]) -> int:
    """Drop the tag sets of every device whose site `keep` refuses (a site another
    replica owns now: collector/partition.py); how many were dropped."""
    gone = [key for key in _devices if not keep(key[3])]
    for key in gone:
        del _devices[key]
    return len(gone)


def cached_device_sites() -> set[str]:
    """The sites the device tag cache holds devices of."""
    return {key[3] for key in _devices}


def metrics_chunk(message: MetricsMessage) -> tuple[bytes, int]:
    """Measurements `device`, `interface`, `bgp_peer` and each row's own of one metrics
    message: the lines (each ending in a newline) and how many there are."""
    pieces: list[bytes] = []
    append, extend = pieces.append, pieces.extend
    count = 0
    site, rtc = message.site, message.rtc
    int64 = int64_checked(message)
    native = _native.format_interfaces if _native is not None else None
    prefixes, encode = _prefixes, _encode
    for sample in message.samples:
        stamp = b" %d\n" % round(sample.ts * 1000)
        tags = _device_tags(sample.address, sample.device, rtc, site)
        fields = _fields(sample.fields, int64)
        if fields:
            extend((tags.device_line, fields, stamp))
            count += 1
        done = (
            native(sample.interfaces, tags.interfaces, prefixes, stamp, encode)
            if native is not None
            else None
        )
        if done is not None:
            append(done[0])
            count += done[1]
        else:
            count += _interface_lines(sample.interfaces, tags, stamp, int64, extend)
        for b in sample.bgp:
            fields = _fields(b.fields, int64)
            if fields:
                extend((tags.bgp(b.peer), fields, stamp))
                count += 1
        for r in sample.rows:
            fields = _fields(r.fields, int64)
            if fields:
                extend((tags.row(r.measurement, r.tags), fields, stamp))
                count += 1
    return b"".join(pieces), count


# One sample's poll for the recent window: its time, the device's cpu, memory and
# response_ms values (None when absent), its ifIndex tuple and each interface's in_bps and
# out_bps as 32-bit floats (NaN when absent): see collector.recent.
Poll = tuple[float, Value | None, Value | None, Value | None, tuple[int, ...], bytes]


def payload_lines(
    site: str, agent: str, payload: bytes
) -> tuple[str, bytes, int, list[tuple[str, Poll | None]]] | None:
    """A metrics payload received on the topic of `site` and `agent`, in one pass of
    collector._metricsjson: its rtc, its lines, how many, and each sample's device and
    poll. None where the extension is not in use or leaves the payload to the general
    path (`enoc.wire.decode`, then `metrics_chunk`), which writes the same values."""
    if _metricsjson is None:
        return None
    result: tuple[str, bytes, int, list[tuple[str, Poll | None]]] | None = _metricsjson.lines(
        payload, site, agent, _device_tags
    )
    return result


def _interface_lines(
    interfaces: list[InterfaceSample],
    tags: _DeviceTags,
    stamp: bytes,
    int64: bool,
    extend: Callable[[tuple[bytes, bytes, bytes]], None],
) -> int:
    """The Python path of a sample's interfaces (what the C extension writes, and what it
    leaves to this): three pieces a line, and how many lines."""
    by_names = _by_names
    encode = _encode
    heads = tags.interfaces
    count = 0
    for i in interfaces:
        # _python_fields, inlined: this loop runs once per interface per poll
        f = i.fields
        values = [*f.values()]
        kinds = tuple(map(type, values))
        names = tuple(f)
        cached = by_names.get(names)
        if cached is not None and cached[0] == kinds:
            template = cached[1]
        else:
            template = _template(names, kinds)
        if template is None or not (int64 or _fits(values)):
            fields = _general_fields(f)
        else:
            encoded = encode(values)
            if not int64 and b"n" in encoded:  # null: not finite (decoded: never)
                fields = _general_fields(f)
            else:
                fields = template % tuple(encoded[1:-1].split(b","))
        if fields:
            head = (i.if_index, i.name, i.descr, i.alias)
            extend((heads.get(head) or tags.interface(head), fields, stamp))
            count += 1
    return count


def lines_for(message: MetricsMessage) -> list[str]:
    """The lines of `metrics_chunk` as strings (for tests and tools)."""
    return metrics_chunk(message)[0].decode().split("\n")[:-1]


def agent_health(message: StatusMessage) -> list[str]:
    """Measurement `enoc_agent`: the agent's own health from its heartbeat."""
    fields = _fields(message.health)
    if not fields:
        return []
    tags = _tags([("agent", message.agent), ("site", message.site), ("rtc", message.rtc)])
    return [f"enoc_agent{tags.decode()} {fields.decode()} {round(message.sent * 1000)}"]


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
    fields = _general_fields(
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
    return f"incident{tags.decode()} {fields.decode()} {round(at * 1000)}"


def chunk(lines: list[str]) -> bytes:
    """Lines as the writer takes them: bytes, each ending in a newline."""
    return "".join(line + "\n" for line in lines).encode()
