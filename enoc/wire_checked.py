"""The general path of decoding a payload (enoc.wire.decode): each check of the contract in
turn, naming the first breach. The fast path (msgspec, in enoc.wire) takes what it can;
what it refuses comes here, which says why, and decodes what it finds no breach in."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import msgspec

from enoc.wire import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    ROWS,
    SCHEMA_VERSION,
    BgpSample,
    Capabilities,
    DeviceInfo,
    DeviceSample,
    Event,
    EventsMessage,
    InterfaceSample,
    Kind,
    Message,
    MetricsMessage,
    Row,
    StatusMessage,
    Value,
    WireError,
    row_breach,
)


def decode_checked(site: str, agent: str, kind: Kind, payload: bytes) -> Message:
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
    rows = []
    for i, row in enumerate(r.array(ROWS.member)):
        where = f"{r.path}.{ROWS.member}[{i}]"
        if not (isinstance(row, list) and len(row) == 3):
            raise WireError("invalid", f"{where}: expected [measurement, tags, fields]")
        breach = row_breach(row[0], row[1])
        if breach is not None:
            raise WireError("invalid", f"{where}: {breach}")
        rows.append(Row(row[0], row[1], _values(row[2], f"{where}.fields")))
    return DeviceSample(
        device=r.text("device"),
        address=r.text("address"),
        ts=r.time("ts"),
        fields=r.values("fields"),
        interfaces=interfaces,
        bgp=bgp,
        rows=rows,
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
