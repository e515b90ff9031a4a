"""Tables from MIBs: a profile's `tables:` polled as MIB groups, each row a wire Row.

A profile names a table (by MIB name or OID), the measurement to write, the index tags
and the fields by column name or OID; `resolve` checks each against the compiled MIBs
(enoc.mibs.MibIndex) when the config is loaded, and `table_group` turns the result into a
MibGroup that rides in the poll's GETBULK walk like the built-in groups. These groups are
not in the GROUPS registry: the profile carries them (agent.profiles.polled_groups).

Values: numbers as they come, strings decoded as UTF-8 (a DISPLAY-HINT of hexadecimal
octets, a MAC address, as "aa:bb:..."), OIDs and IP addresses dotted. A column with an
enumeration also writes `<field>_label`, the enumeration's name of the value (the number
when the MIB names none), so that a state reads as a word and still graphs as a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.mibgroups import Derived, MibGroup, Reading
from enoc.mibs import MibIndex, MibObject, UnknownName
from enoc.snmp.ber import Oid, oid_text
from enoc.wire import METRIC_GROUPS, Row, Value

# BER tags of the answers that carry no value (noSuchObject, noSuchInstance, endOfMibView).
_MISSING = (0x80, 0x81, 0x82)
_MEASUREMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# The measurements the agent writes itself: a table writing into one would mix its rows in.
RESERVED = frozenset({*(g.measurement for g in METRIC_GROUPS), "sensor", "incident"})
_INTEGERS = frozenset(
    {"INTEGER", "Integer32", "Unsigned32", "Gauge32", "Counter32", "Counter64", "TimeTicks"}
)


@dataclass(frozen=True)
class TableConfig:
    """One entry of a profile's `tables:` as written in the agent config."""

    table: str  # a table or its entry, by name (`satSignalTable`, `MOD::name`) or OID
    measurement: str
    # Tags of each row: an INDEX object (its part of the row's index) or a column (its
    # value), named as the object or `{tag: object}`; none: one tag `index`, the suffix.
    index: list[str | dict[str, str]] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # columns by name or OID; none: all

    def __post_init__(self) -> None:
        if not _MEASUREMENT.match(self.measurement):
            raise ValueError(
                f"measurement: {self.measurement!r} must be 1-64 letters, digits, '_', '.' "
                "or '-', starting with a letter"
            )
        if self.measurement in RESERVED:
            raise ValueError(
                f"measurement: {self.measurement!r} is one the agent writes itself "
                f"({', '.join(sorted(RESERVED))}); name the table's own"
            )
        for item in self.index:
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError(f"index: {item!r}: give one {{tag: object}} per item")


@dataclass(frozen=True)
class Column:
    name: str  # the field (or tag) name: the MIB object's name, or the OID given
    oid: Oid
    obj: MibObject | None  # None for a column given by an OID no loaded MIB names


@dataclass(frozen=True)
class TableSpec:
    """A `tables:` entry resolved against the MIBs: what to walk and how to read it."""

    measurement: str
    module: str  # the table's MIB module
    table: str
    entry: Oid
    index: tuple[MibObject, ...]  # the INDEX objects, in order
    implied: bool
    tags: tuple[tuple[str, int | Column], ...]  # tag -> position in the index, or a column
    fields: tuple[Column, ...]


def resolve(config: TableConfig, mibs: MibIndex) -> TableSpec:
    """The table's entry, index and columns; ValueError naming what is unknown."""
    try:
        table = mibs.table(config.table)
    except UnknownName as exc:
        raise ValueError(f"table: {exc}") from None
    try:
        index = tuple(mibs.object(name) for name in table.index)
    except UnknownName as exc:
        raise ValueError(f"table: {table.name}'s INDEX: {exc}") from None
    known = dict(table.columns)

    def column(text: str, key: str) -> Column:
        if text in known:
            return Column(text, known[text], mibs.object(f"{table.module}::{text}"))
        try:
            oid = mibs.oid(text)
        except UnknownName as exc:
            raise ValueError(f"{key}: {exc}") from None
        if oid[:-1] != table.entry_oid:
            raise ValueError(
                f"{key}: {text} ({oid_text(oid)}) is not a column of {table.name} "
                f"(its columns: {', '.join(known) or 'none known'})"
            )
        named = mibs.name(oid)
        obj = mibs.object(f"{named.module}::{named.name}") if named and not named.suffix else None
        return Column(obj.name if obj else text, oid, obj)

    fields = tuple(column(text, f"fields[{i}]") for i, text in enumerate(config.fields)) or tuple(
        Column(name, oid, mibs.object(f"{table.module}::{name}"))
        for name, oid in known.items()
        if mibs.object(f"{table.module}::{name}").access not in ("not-accessible", "")
    )
    tags: list[tuple[str, int | Column]] = []
    positions = {obj.name: i for i, obj in enumerate(index)}
    for i, item in enumerate(config.index):
        tag, source = next(iter(item.items())) if isinstance(item, dict) else (item, item)
        if source in positions:
            tags.append((tag, positions[source]))
        elif source in known:
            tags.append((tag, column(source, f"index[{i}]")))
        else:
            raise ValueError(
                f"index[{i}]: {source!r} is neither an INDEX object of {table.name} "
                f"({', '.join(positions) or 'none'}) nor one of its columns"
            )
    return TableSpec(
        measurement=config.measurement,
        module=table.module,
        table=table.name,
        entry=table.entry_oid,
        index=index,
        implied=table.implied,
        tags=tuple(tags),
        fields=fields,
    )


def split_index(suffix: Oid, index: Sequence[MibObject], implied: bool) -> list[str] | None:
    """A row's index suffix, one text per INDEX object (RFC 2578 7.7: an integer is one
    arc, an IpAddress four, a string or OID its length then its arcs, the last IMPLIED one
    the rest); None when the suffix does not decode that way."""
    out: list[str] = []
    pos = 0
    for i, obj in enumerate(index):
        last = i == len(index) - 1
        base = obj.base
        if base in _INTEGERS or obj.enums:
            if pos >= len(suffix):
                return None
            value = suffix[pos]
            label = obj.label(value) if obj.enums else None
            out.append(label or str(value))
            pos += 1
        elif base == "IpAddress":
            if pos + 4 > len(suffix):
                return None
            out.append(".".join(map(str, suffix[pos : pos + 4])))
            pos += 4
        else:
            if last and implied:
                arcs = suffix[pos:]
            else:
                if pos >= len(suffix) or pos + 1 + suffix[pos] > len(suffix):
                    return None
                arcs = suffix[pos + 1 : pos + 1 + suffix[pos]]
                pos += 1
            pos += len(arcs)
            if base in ("OBJECT IDENTIFIER", "ObjectIdentifier"):
                out.append(oid_text(arcs))
            elif all(32 <= a < 127 for a in arcs):
                out.append(bytes(arcs).decode("ascii"))
            else:
                out.append(":".join(f"{a:02x}" for a in arcs))
    return out if pos == len(suffix) else None


def _value(raw: object, obj: MibObject | None) -> Value | None:
    """A column's decoded answer as a field value; None for one of no usable kind."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int | float):
        return raw
    if isinstance(raw, tuple):
        return oid_text(raw)
    if isinstance(raw, bytes):
        base = obj.base if obj else ""
        if base == "IpAddress" and len(raw) == 4:
            return ".".join(map(str, raw))
        hint = obj.hint if obj else ""
        if not hint.startswith(("1x", "2x")):
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass  # binary in a string column: shown as octets, as a hint of "1x:" would
        return ":".join(f"{b:02x}" for b in raw)
    if isinstance(raw, str):
        return raw
    return None


def _fields(column: Column, raw: object) -> dict[str, Value]:
    value = _value(raw, column.obj)
    if value is None:
        return {}
    out: dict[str, Value] = {column.name: value}
    if column.obj is not None and column.obj.enums and isinstance(raw, int):
        out[f"{column.name}_label"] = column.obj.label(raw) or str(raw)
    return out


def _key(column: Column) -> str:
    return f"{column.name}@{oid_text(column.oid)}"


def table_group(spec: TableSpec) -> MibGroup:
    """The MibGroup that walks the table's columns and derives one Row per row index."""
    tag_columns = [c for _tag, c in spec.tags if isinstance(c, Column)]
    # Names unique to this group (the poll keeps one namespace of column names): a table
    # may share a column with a built-in group or another profile table.
    columns = {f"{spec.measurement}:{_key(c)}": c.oid for c in (*spec.fields, *tag_columns)}

    def derive(reading: Reading) -> Derived:
        tables: Mapping[str, Mapping[Oid, tuple[int, object]]] = reading.tables
        answers = {
            _key(c): tables.get(f"{spec.measurement}:{_key(c)}", {})
            for c in (*spec.fields, *tag_columns)
        }
        indexes = sorted({i for c in spec.fields for i in answers[_key(c)]})
        rows: list[Row] = []
        for index in indexes:
            fields: dict[str, Value] = {}
            for column in spec.fields:
                tag, raw = answers[_key(column)].get(index, (0x80, None))
                if tag not in _MISSING:
                    fields.update(_fields(column, raw))
            if not fields:
                continue
            rows.append(Row(spec.measurement, _tags(spec, index, answers), fields))
        return Derived(rows=rows)

    return MibGroup(
        name=f"table:{spec.measurement}:{spec.table}",
        mib=spec.module,
        probe=spec.entry,
        columns=columns,
        derive=derive,
    )


def _tags(
    spec: TableSpec, index: Oid, answers: Mapping[str, Mapping[Oid, tuple[int, object]]]
) -> dict[str, str]:
    if not spec.tags:
        return {"index": oid_text(index)}
    parts = split_index(index, spec.index, spec.implied)
    tags: dict[str, str] = {}
    for tag, source in spec.tags:
        if isinstance(source, int):
            tags[tag] = parts[source] if parts is not None else oid_text(index)
        else:
            btag, raw = answers[_key(source)].get(index, (0x80, None))
            value = _value(raw, source.obj) if btag not in _MISSING else None
            if value is not None:
                tags[tag] = str(value)
    return tags
