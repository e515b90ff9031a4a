"""Seeded, structure-aware mutators: valid messages made hostile, and random bytes.

A JSON input starts from a valid value, gets one to three mutations at random
places (deep nesting, integers beyond int64 and beyond a double, NUL and lone
surrogates, huge strings, wrong types, empty or duplicate keys, a key removed),
is written out as JSON, and is sometimes cut or spoiled byte by byte; a few are
random bytes. A BER input is a valid message's TLV tree with its tags, lengths
and contents changed the same way. Each input carries a short description for
the report.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Any

_RAW = "\x00raw-{}\x00"  # a placeholder json.dumps writes as a string, replaced after


@dataclass(frozen=True)
class Mutated:
    data: bytes
    what: str  # a short description of what was done to the valid input


def _huge_int(rng: random.Random) -> tuple[str, str]:
    choices = [
        ("2**63", str(2**63)),
        ("-2**63-1", str(-(2**63) - 1)),
        ("2**64", str(2**64)),
        ("2**64-1", str(2**64 - 1)),
        ("10**400", "1" + "0" * 400),
        ("-10**4000", "-1" + "0" * 4000),
        ("1e309", "1e309"),
        ("-1e400", "-1e400"),
        ("5e-400", "5e-400"),
    ]
    return rng.choice(choices)


def _nested(rng: random.Random, depth: int) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _odd_string(rng: random.Random, max_string: int) -> tuple[str, Any]:
    choices: list[tuple[str, Any]] = [
        ("NUL", "a\u0000b"),
        ("lone surrogate", "\ud800x"),
        ("empty string", ""),
        ("newline and space", "a b\nc=d,e"),
        ("backslash and quotes", "x\\\"y'"),
        ("non-BMP", "\U0001f4a5" * 3),
        ("control chars", "".join(chr(c) for c in range(32))),
        ("long string", "x" * min(max_string, rng.choice([1000, 70_000]))),
    ]
    if rng.random() < 0.02 and max_string >= 2_000_000:
        choices.append(("huge string (2 MB)", "y" * 2_000_000))
    return rng.choice(choices)


class JsonMutator:
    """Mutates valid JSON values; `raw` holds tokens written into the text verbatim."""

    def __init__(
        self,
        rng: random.Random,
        *,
        nesting: float = 0.1,
        max_depth: int = 20_000,
        max_string: int = 2_000_000,
    ) -> None:
        self.rng = rng
        self.max_string = max_string
        self.nesting = nesting  # the share of replacements that nest deep
        self.depths = [d for d in (50, 200, 1000, 3000, 20_000) if d <= max_depth]

    def mutate(self, value: Any) -> Mutated:
        rng = self.rng
        if rng.random() < 0.05:
            size = rng.choice([0, 1, 7, 64, 1000, 5000])
            return Mutated(rng.randbytes(size), f"random bytes ({size})")
        raws: list[str] = []
        notes: list[str] = []
        value = copy.deepcopy(value)  # the caller's stays valid
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            value = self._at_random_place(value, raws, notes)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.3, allow_nan=True)
        for i, raw in enumerate(raws):
            text = text.replace(json.dumps(_RAW.format(i)), raw, 1)
        try:
            data = text.encode("utf-8", "surrogatepass")
        except UnicodeEncodeError:  # pragma: no cover - surrogatepass writes every str
            data = text.encode("utf-8", "replace")
        data, cut = self._bytes(data)
        if cut:
            notes.append(cut)
        return Mutated(data, "; ".join(notes) or "valid")

    def _bytes(self, data: bytes) -> tuple[bytes, str]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.08 and data:
            at = rng.randrange(len(data))
            return data[:at], f"cut at byte {at} of {len(data)}"
        if roll < 0.12 and data:
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b), "bytes flipped"
        if roll < 0.14:
            return data + rng.choice([b"\x00", b" garbage", b"}", b"\xff\xfe"]), "trailing bytes"
        if roll < 0.15 and data:
            return b"\xef\xbb\xbf" + data, "UTF-8 BOM first"
        return data, ""

    def _replacement(self, raws: list[str]) -> tuple[str, Any]:
        rng = self.rng
        if rng.random() < self.nesting:
            depth = rng.choice(self.depths)
            raws.append(_nested(rng, depth))
            return f"nested {depth} deep", _RAW.format(len(raws) - 1)
        roll = rng.randrange(9)
        if roll in (1, 2):
            what, token = _huge_int(rng)
            raws.append(token)
            return f"number {what}", _RAW.format(len(raws) - 1)
        if roll in (3, 4):
            return _odd_string(rng, self.max_string)
        if roll == 5:
            return "NaN/Infinity", rng.choice([float("nan"), float("inf"), -float("inf")])
        choices: list[tuple[str, Any]] = [
            ("null", None),
            ("true", True),
            ("false", False),
            ("0", 0),
            ("-1", -1),
            ("1.5", 1.5),
            ("string", "x"),
            ("empty list", []),
            ("empty object", {}),
            ("list of lists", [[1, 2], ["a"]]),
            ("object with empty key", {"": 1}),
            ("object of odd keys", {"a b": 1, "x=y": 2, "c,d": "e", "\u0000": 3}),
            ("many items", list(range(rng.choice([100, min(10_000, self.max_string)])))),
        ]
        return rng.choice(choices)

    def _at_random_place(self, value: Any, raws: list[str], notes: list[str]) -> Any:
        """A copy of `value` with one place replaced, removed, or a key added."""
        rng = self.rng
        paths = list(_paths(value, ""))
        path, node, parent, key = rng.choice(paths)
        roll = rng.random()
        if parent is not None and roll < 0.12:
            if isinstance(parent, dict):
                del parent[key]
                notes.append(f"{path}: removed")
            else:
                parent.pop(key)
                notes.append(f"{path}: removed")
            return value
        if isinstance(node, dict) and roll < 0.25:
            new_key, new_note = rng.choice(
                [("", "empty key"), ("extra", "unknown key"), ("a\u0000b", "NUL in a key")]
                + [(k, f"key {k!r} again") for k in list(node)[:3]]
            )
            what, replacement = self._replacement(raws)
            node[new_key] = replacement
            notes.append(f"{path}: {new_note} = {what}")
            return value
        what, replacement = self._replacement(raws)
        notes.append(f"{path or '$'}: {what}")
        if parent is None:
            return replacement
        parent[key] = replacement
        return value


def _paths(value: Any, path: str, parent: Any = None, key: Any = None) -> Any:
    yield path, value, parent, key
    if isinstance(value, dict):
        for k, v in list(value.items()):
            yield from _paths(v, f"{path}.{k}", value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):  # a few items are enough places
            yield from _paths(v, f"{path}[{i}]", value, i)


# ------------------------------------------------------------------ BER


@dataclass
class Tlv:
    tag: int
    content: bytes = b""
    children: list[Tlv] | None = None  # constructed

    def encode(self) -> bytes:
        body = (
            self.content if self.children is None else b"".join(c.encode() for c in self.children)
        )
        return bytes([self.tag]) + _length(len(body)) + body


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def parse_ber(data: bytes) -> list[Tlv]:
    """The TLV tree of a well-formed message (the valid inputs the mutator starts from)."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        tag = data[pos]
        first = data[pos + 1]
        pos += 2
        if first & 0x80:
            n = first & 0x7F
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        else:
            length = first
        content = data[pos : pos + length]
        pos += length
        if tag & 0x20:
            out.append(Tlv(tag, children=parse_ber(content)))
        else:
            out.append(Tlv(tag, content))
    return out


def _nodes(tree: list[Tlv], parent: list[Tlv] | None = None) -> list[tuple[Tlv, list[Tlv]]]:
    out: list[tuple[Tlv, list[Tlv]]] = []
    for node in tree:
        out.append((node, tree))
        if node.children is not None:
            out.extend(_nodes(node.children, tree))
    return out


class BerMutator:
    """Mutates valid BER messages: contents, tags, lengths, nesting, cuts, random bytes."""

    def __init__(self, rng: random.Random, *, huge_arcs: float = 0.0) -> None:
        self.rng = rng
        self.huge_arcs = huge_arcs  # the share of inputs with one 64 KB OID arc

    def mutate(self, valid: bytes) -> Mutated:
        rng = self.rng
        if rng.random() < 0.05:
            size = rng.choice([0, 1, 2, 30, 300, 1400])
            return Mutated(rng.randbytes(size), f"random bytes ({size})")
        tree = parse_ber(valid)
        notes = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            nodes = _nodes(tree)
            if not nodes:
                break
            node, siblings = rng.choice(nodes)
            notes.append(self._one(node, siblings))
        data = b"".join(t.encode() for t in tree)
        roll = rng.random()
        if roll < 0.1 and data:
            at = rng.randrange(len(data))
            data = data[:at]
            notes.append(f"cut at byte {at}")
        elif roll < 0.15:
            data += rng.randbytes(rng.randint(1, 8))
            notes.append("trailing bytes")
        elif roll < 0.2 and data:
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            data = bytes(b)
            notes.append("bytes flipped")
        return Mutated(data, "; ".join(notes))

    def _one(self, node: Tlv, siblings: list[Tlv]) -> str:
        rng = self.rng
        roll = rng.randrange(12)
        name = f"tag 0x{node.tag:02x}"
        if roll == 0:
            node.tag = rng.choice(
                [0x02, 0x04, 0x05, 0x06, 0x30, 0x40, 0x41, 0x46, 0x80, 0xA2, 0xA7]
            )
            node.children = None if not node.tag & 0x20 else (node.children or [])
            return f"{name} -> 0x{node.tag:02x}"
        if roll == 1:
            depth = rng.choice([10, 100, 500])
            data = Tlv(node.tag, node.content, node.children).encode()
            for _ in range(depth - 1):  # as bytes: a tree this deep would not encode recursively
                data = bytes([0x30]) + _length(len(data)) + data
            node.tag, node.content, node.children = 0x30, data, None
            return f"{name} wrapped {depth} deep"
        if roll == 2:
            if rng.random() < self.huge_arcs:
                arc = b"\xff" * 65_000 + b"\x7f"
                node.tag, node.children, node.content = 0x06, None, b"\x2b" + arc
                return f"{name} -> OID with a 65 KB arc"
            arc = b"\xff" * rng.choice([5, 10, 40]) + b"\x7f"
            node.tag, node.children, node.content = 0x06, None, b"\x2b" + arc
            return f"{name} -> OID with a {len(arc)}-byte arc"
        if roll == 3:
            size = rng.choice([9, 20, 200])
            node.children, node.content = None, rng.choice([b"\xff", b"\x7f", b"\x00"]) * size
            return f"{name} content -> {size}-byte integer"
        if roll == 4:
            node.children, node.content = None, b""
            return f"{name} content emptied"
        if roll == 5:
            if node in siblings:
                siblings.remove(node)
                return f"{name} removed"
            return "nothing"
        if roll == 6:
            siblings.append(
                Tlv(node.tag, node.content, None if node.children is None else list(node.children))
            )
            return f"{name} repeated"
        if roll == 7:
            node.children, node.content = None, rng.randbytes(rng.choice([1, 4, 16, 300]))
            return f"{name} content -> random"
        if roll == 8:
            node.children, node.content = None, b"\x00" * rng.choice([1, 2000])
            return f"{name} content -> NULs"
        if roll == 9:
            more = [Tlv(0x30, children=[Tlv(0x06, b"\x2b\x06"), Tlv(0x05)]) for _ in range(500)]
            if node.children is not None:
                node.children.extend(more)
                return f"{name} + 500 varbinds"
            return "nothing"
        if roll == 10:
            node.children, node.content = None, b"\x80" * 3 + b"\x01"
            return f"{name} content -> non-minimal"
        # a length that lies: written as the node's content, the real one follows
        lie = rng.choice([b"\x80", b"\x84\xff\xff\xff\xff", b"\x89" + b"\x01" * 9, b"\x82\x00"])
        node.children, node.content = None, lie + node.content
        return f"{name} content prefixed with a bad length"
