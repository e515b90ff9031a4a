"""MibIndex: names to OIDs and back over compiled MIB facts (the module docstring of
enoc.mibs shows the API)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from enoc.snmp.ber import Oid, oid_text

DATA = Path(__file__).with_name("data")

# The SMI's own types: where a chain of textual conventions ends.
BASE_TYPES = frozenset(
    {
        "INTEGER",
        "Integer32",
        "Unsigned32",
        "Gauge32",
        "Counter32",
        "Counter64",
        "TimeTicks",
        "IpAddress",
        "Opaque",
        "OctetString",
        "OCTET STRING",
        "ObjectIdentifier",
        "OBJECT IDENTIFIER",
        "Bits",
        "Counter",
        "Gauge",
        "NetworkAddress",
    }
)

Facts = dict[str, Any]  # one module's compiled facts, as enoc.mibs.compile writes them


class UnknownName(LookupError):
    """A name or OID that no loaded module defines."""


class Named(NamedTuple):
    module: str
    name: str
    suffix: Oid  # what follows the object's OID: a scalar's 0, a column's row index


@dataclass(frozen=True)
class MibObject:
    module: str
    name: str
    oid: Oid
    kind: str  # node, scalar, table, row, column, notification
    syntax: str = ""  # as the MIB writes it: a base type or a textual convention
    base: str = ""  # the SMI type at the end of the textual conventions
    enums: Mapping[str, int] | None = None
    bits: Mapping[str, int] | None = None
    units: str = ""
    access: str = ""
    hint: str = ""  # DISPLAY-HINT of its textual convention

    def label(self, value: int) -> str | None:
        """The enumeration's name for `value`, if it has one."""
        for label, number in (self.enums or {}).items():
            if number == value:
                return label
        return None


@dataclass(frozen=True)
class MibTable:
    module: str
    name: str
    oid: Oid
    entry: str
    entry_oid: Oid
    index: tuple[str, ...]  # the INDEX objects, in order (AUGMENTS followed): MODULE::name
    implied: bool  # the last index object is IMPLIED
    columns: Mapping[str, Oid]  # every column of the row, by name, in OID order


@dataclass(frozen=True)
class Notification:
    name: str
    module: str
    oid: Oid
    objects: tuple[str, ...]  # OBJECTS (VARIABLES of a v1 trap), names, in order
    summary: str = ""  # the description's first sentence


def _oid(text: str) -> Oid:
    return tuple(int(part) for part in text.split(".")) if text else ()


def load_facts(folder: Path) -> list[Facts]:
    """Every module's facts in a folder (`*.json`), sorted by module name."""
    decoder = msgspec.json.Decoder(dict[str, Any])
    out: list[Facts] = []
    for path in sorted(folder.glob("*.json")):
        try:
            facts = decoder.decode(path.read_bytes())
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}: not a compiled MIB ({exc})") from None
        if not isinstance(facts.get("module"), str) or not isinstance(facts.get("nodes"), dict):
            raise ValueError(f"{path}: not a compiled MIB (no module or nodes)")  # noqa: TRY004
        out.append(facts)
    return out


class MibIndex:
    """Every loaded module's names and OIDs."""

    def __init__(self, modules: Iterable[Facts]) -> None:
        self.modules: dict[str, Facts] = {}
        self._by_name: dict[str, str] = {}  # bare name -> module (the last loaded wins)
        for facts in modules:
            module = facts["module"]
            self.modules[module] = facts
            for name in facts["nodes"]:
                self._by_name[name] = module
        self._at: dict[Oid, tuple[str, str]] | None = None  # built on the first reverse lookup

    @classmethod
    def load(cls, dirs: Sequence[Path | str] = (), shipped: bool = True) -> MibIndex:
        """The shipped facts, then each folder's (what `enoc mib compile` wrote) over them."""
        facts: list[Facts] = load_facts(DATA) if shipped else []
        for folder in dirs:
            if Path(folder).is_dir():
                facts += load_facts(Path(folder))
        return cls(facts)

    # ------------------------------------------------------------ names

    def _split(self, text: str) -> tuple[str, str, Oid]:
        """`MODULE::name.suffix` or `name.suffix` to (module, name, suffix)."""
        module = ""
        if "::" in text:
            module, text = text.split("::", 1)
        name, _, rest = text.partition(".")
        try:
            suffix = _oid(rest)
        except ValueError:
            raise UnknownName(f"{text!r}: the part after the name is not numeric") from None
        if not module:
            found = self._by_name.get(name)
            if found is None:
                raise UnknownName(f"no loaded MIB defines {name!r}")
            module = found
        facts = self.modules.get(module)
        if facts is None:
            raise UnknownName(f"MIB module {module!r} is not loaded")
        if name not in facts["nodes"]:
            raise UnknownName(f"{module} defines no {name!r}")
        return module, name, suffix

    def _node(self, module: str, name: str) -> dict[str, Any]:
        node: dict[str, Any] = self.modules[module]["nodes"][name]
        return node

    def oid(self, name: str) -> Oid:
        """A name (`ifDescr`, `IF-MIB::ifDescr`, `ifDescr.3`) or a numeric OID to an OID."""
        text = name.strip().lstrip(".")
        if text[:1].isdigit():
            try:
                return _oid(text)
            except ValueError:
                raise UnknownName(f"{name!r} is neither a name nor a numeric OID") from None
        module, bare, suffix = self._split(text)
        return _oid(self._node(module, bare)["oid"]) + suffix

    def name(self, oid: Oid) -> Named | None:
        """The object an OID is (or is an instance of): the longest known prefix."""
        if self._at is None:
            self._at = {
                _oid(node["oid"]): (module, name)
                for module, facts in self.modules.items()
                for name, node in facts["nodes"].items()
            }
        oid = tuple(oid)
        for length in range(len(oid), 0, -1):
            found = self._at.get(oid[:length])
            if found is not None:
                return Named(found[0], found[1], oid[length:])
        return None

    # ------------------------------------------------------------ objects

    def object(self, name: str) -> MibObject:
        """An object (scalar, column, table, row, node or notification) by name or OID."""
        text = name.strip().lstrip(".")
        if text[:1].isdigit():
            found = self.name(self.oid(text))
            if found is None or found.suffix:
                raise UnknownName(f"no loaded MIB defines the object {text}")
            module, bare = found.module, found.name
        else:
            module, bare, _ = self._split(text)
        return self.object_at(module, bare)

    def object_at(self, module: str, name: str) -> MibObject:
        node = self._node(module, name)
        syntax = node.get("syntax")
        enums = node.get("enums")
        bits = node.get("bits")
        base, hint = "", ""
        if syntax:
            base, type_enums, type_bits, hint = self.resolve_type(module, syntax[0], syntax[1])
            enums = enums or type_enums
            bits = bits or type_bits
        return MibObject(
            module=module,
            name=name,
            oid=_oid(node["oid"]),
            kind=node["kind"],
            syntax=syntax[1] if syntax else "",
            base=base,
            enums=enums,
            bits=bits,
            units=node.get("units", ""),
            access=node.get("access", ""),
            hint=hint,
        )

    def resolve_type(
        self, module: str, tmod: str, tname: str
    ) -> tuple[str, dict[str, int] | None, dict[str, int] | None, str]:
        """Follow textual conventions to the base type: (base, enums, bits, display hint);
        the first enumeration and hint met on the way win, as the nearest refine."""
        enums: dict[str, int] | None = None
        bits: dict[str, int] | None = None
        hint = ""
        for _ in range(16):  # a chain of conventions is short; a cycle is a broken MIB
            if tname in BASE_TYPES and tmod in ("", "SNMPv2-SMI", "RFC1155-SMI"):
                return tname, enums, bits, hint
            facts = self.modules.get(tmod or module)
            tc = facts.get("types", {}).get(tname) if facts else None
            if tc is None:
                # An unknown convention (its module not loaded): its own name, as given.
                return tname, enums, bits, hint
            enums = enums or tc.get("enums")
            bits = bits or tc.get("bits")
            hint = hint or tc.get("hint", "")
            module = tmod or module
            tmod, tname = tc["syntax"]
        return tname, enums, bits, hint

    def enum_label(self, object_name: str, value: int) -> str | None:
        """`ifOperStatus`, 2 -> "down"; None when the object or the value has no label."""
        try:
            return self.object(object_name).label(value)
        except UnknownName:
            return None

    def notification(self, key: str | Oid) -> Notification | None:
        """A notification by name (`linkDown`, `IF-MIB::linkDown`) or by OID."""
        if isinstance(key, str):
            text = key.strip().lstrip(".")
            if text[:1].isdigit():
                return self.notification(_oid(text))
            try:
                module, name, suffix = self._split(text)
            except UnknownName:
                return None
            if suffix:
                return None
        else:
            found = self.name(tuple(key))
            if found is None or found.suffix:
                return None
            module, name = found.module, found.name
        node = self._node(module, name)
        if node["kind"] != "notification":
            return None
        return Notification(
            name=name,
            module=module,
            oid=_oid(node["oid"]),
            objects=tuple(obj for _mod, obj in node.get("objects", ())),
            summary=node.get("summary", ""),
        )

    def table(self, name: str) -> MibTable:
        """A table (by its name, its entry's name or either's OID) with its index and columns."""
        obj = self.object(name)
        if obj.kind == "row":
            entry = obj
            table = self.name(obj.oid[:-1])
            if table is None:
                raise UnknownName(f"{name}: no table above the row {obj.name}")
            tmodule, tname = table.module, table.name
        elif obj.kind == "table":
            tmodule, tname = obj.module, obj.name
            entry_named = self.name((*obj.oid, 1))
            if entry_named is None or entry_named.suffix:
                raise UnknownName(f"{name}: the table has no row ({oid_text(obj.oid)}.1)")
            entry = self.object_at(entry_named.module, entry_named.name)
        else:
            raise UnknownName(f"{name} is a {obj.kind}, not a table")
        index, implied = self._index(entry.module, entry.name)
        columns: dict[str, Oid] = {}
        for cname, node in sorted(
            self.modules[entry.module]["nodes"].items(), key=lambda item: _oid(item[1]["oid"])
        ):
            oid = _oid(node["oid"])
            if node["kind"] == "column" and oid[:-1] == entry.oid:
                columns[cname] = oid
        return MibTable(
            module=tmodule,
            name=tname,
            oid=self.oid(f"{tmodule}::{tname}"),
            entry=entry.name,
            entry_oid=entry.oid,
            index=index,
            implied=implied,
            columns=columns,
        )

    def _index(self, module: str, entry: str) -> tuple[tuple[str, ...], bool]:
        node = self._node(module, entry)
        for _ in range(8):  # AUGMENTS of an AUGMENTS is rare; a cycle is a broken MIB
            augments = node.get("augments")
            if not augments:
                break
            module, entry = augments
            try:
                node = self._node(module, entry)
            except KeyError:
                raise UnknownName(f"{entry} (augmented) is not loaded from {module}") from None
        items = node.get("index", [])
        implied = bool(items and items[-1][2])
        return tuple(f"{mod}::{obj}" for mod, obj, _implied in items), implied
