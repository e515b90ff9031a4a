"""Compile MIB files with pysmi into enoc's facts (one JSON document per module).

pysmi parses each module and renders it as JSON (its `JsonCodeGen`); `facts` keeps what
the product uses (OIDs, kinds, syntax and where its convention is defined, enumerations,
units, access, a row's INDEX, a notification's OBJECTS and first sentence) and drops the
texts. An operator's MIB imports from modules that are only shipped as facts: those are
written back as small SMI modules (`stub_source`) that pysmi reads like any other file.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .index import BASE_TYPES, Facts, MibIndex

# SMI modules pysmi knows by itself (it reads them but never renders them): a stub of
# each with nothing but its module header is what its parser needs to find them.
PYSMI_BASE = (
    "SNMPv2-SMI",
    "SNMPv2-TC",
    "SNMPv2-CONF",
    "SNMPv2-TM",
    "RFC1155-SMI",
    "RFC1065-SMI",
    "RFC-1212",
    "RFC-1215",
    "RFC1158-MIB",
    "RFC1213-MIB",
)
_HEADER = re.compile(r"^\s*([A-Za-z][\w-]*)\s+DEFINITIONS\s*::=\s*BEGIN", re.MULTILINE)
_KINDS = {"scalar", "table", "row", "column"}


class MibCompileError(Exception):
    """A MIB file that could not be compiled; the message names the file and why."""


@dataclass
class CompileReport:
    compiled: dict[str, Path] = field(default_factory=dict)  # module -> facts file written
    errors: list[str] = field(default_factory=list)  # one line each, naming the file


def module_names(path: Path) -> list[str]:
    """The modules a MIB file defines (`NAME DEFINITIONS ::= BEGIN`)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return _HEADER.findall(text)


def _summary(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return first if len(first) <= 200 else first[:197] + "..."


def facts(doc: Mapping[str, Any]) -> Facts:
    """pysmi's JSON rendering of one module to enoc's facts."""
    module = doc["meta"]["module"]
    imports = {m: list(names) for m, names in doc.get("imports", {}).items() if m != "class"}
    origin = {name: m for m, names in imports.items() for name in names}
    own_types = {
        entry["name"]
        for entry in doc.values()
        if isinstance(entry, dict) and entry.get("class") in ("textualconvention", "type")
    }

    def ref(name: str) -> list[str]:
        if name in own_types:
            return [module, name]
        return [origin.get(name, ""), name]

    def syntax_facts(syntax: Mapping[str, Any], out: dict[str, Any]) -> None:
        out["syntax"] = ref(syntax["type"])
        enums = syntax.get("constraints", {}).get("enumeration")
        if enums:
            out["enums"] = dict(enums)
        if syntax.get("bits"):
            out["bits"] = dict(syntax["bits"])

    nodes: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for entry in doc.values():
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        cls = entry.get("class")
        name = entry["name"]
        if cls in ("textualconvention", "type") and isinstance(entry.get("type"), dict):
            tc: dict[str, Any] = {}
            syntax_facts(entry["type"], tc)
            if entry.get("displayhint"):
                tc["hint"] = entry["displayhint"]
            types[name] = tc
        elif cls in ("objectidentity", "moduleidentity") and entry.get("oid"):
            nodes[name] = {"oid": entry["oid"], "kind": "node"}
        elif cls == "objecttype" and entry.get("nodetype") in _KINDS:
            node: dict[str, Any] = {"oid": entry["oid"], "kind": entry["nodetype"]}
            if node["kind"] in ("scalar", "column") and isinstance(entry.get("syntax"), dict):
                syntax_facts(entry["syntax"], node)
            if entry.get("units"):
                node["units"] = entry["units"]
            if entry.get("maxaccess"):
                node["access"] = entry["maxaccess"]
            if entry.get("indices"):
                node["index"] = [
                    [origin.get(i["object"], i.get("module", module)), i["object"], i["implied"]]
                    for i in entry["indices"]
                ]
            if entry.get("augmention"):
                target = entry["augmention"]["object"]
                node["augments"] = [origin.get(target, module), target]
            nodes[name] = node
        elif cls == "notificationtype":
            notif: dict[str, Any] = {"oid": entry["oid"], "kind": "notification"}
            notif["objects"] = [
                [origin.get(o["object"], o.get("module", module)), o["object"]]
                for o in entry.get("objects", ())
            ]
            if entry.get("description"):
                notif["summary"] = _summary(entry["description"])
            nodes[name] = notif
    return {"module": module, "types": types, "nodes": nodes}


# ------------------------------------------------------------------ facts back to SMI

_SMI_BASE = {
    "OctetString": "OCTET STRING",
    "ObjectIdentifier": "OBJECT IDENTIFIER",
    "Counter": "Counter32",
    "Gauge": "Gauge32",
    "NetworkAddress": "IpAddress",
    "INTEGER": "Integer32",
}
_SMI_IMPORTS = (
    "MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, OBJECT-IDENTITY, Integer32, "
    "Unsigned32, Counter32, Counter64, Gauge32, TimeTicks, IpAddress, Opaque, iso"
)


def _smi_syntax(base: str, enums: Mapping[str, int] | None, bits: Mapping[str, int] | None) -> str:
    if bits:
        named = sorted(bits.items(), key=lambda item: item[1])
        return "BITS { " + ", ".join(f"{k}({v})" for k, v in named) + " }"
    if enums:
        named = sorted(enums.items(), key=lambda item: item[1])
        return "INTEGER { " + ", ".join(f"{k}({v})" for k, v in named) + " }"
    if base in BASE_TYPES:
        return _SMI_BASE.get(base, base)
    return "OCTET STRING"  # a convention whose module is not loaded: any syntax imports


def stub_source(module: str, index: MibIndex) -> str:
    """A module's facts as a small SMI module: its names, OIDs and conventions, enough for
    pysmi to resolve what another MIB imports from it."""
    facts = index.modules[module]
    if module in PYSMI_BASE:
        # pysmi knows these modules' types and macros: their names and OIDs are enough.
        nodes = [
            f"{name} OBJECT IDENTIFIER ::= {{ iso {' '.join(node['oid'].split('.')[1:])} }}"
            for name, node in facts["nodes"].items()
            if node["oid"].startswith("1.")
        ]
        return "\n".join([f"{module} DEFINITIONS ::= BEGIN", *nodes, "END"]) + "\n"
    lines = [
        f"{module} DEFINITIONS ::= BEGIN",
        f"IMPORTS {_SMI_IMPORTS} FROM SNMPv2-SMI TEXTUAL-CONVENTION FROM SNMPv2-TC;",
    ]
    for name, tc in facts.get("types", {}).items():
        base, enums, bits, _hint = index.resolve_type(module, tc["syntax"][0], tc["syntax"][1])
        syntax = _smi_syntax(base, tc.get("enums") or enums, tc.get("bits") or bits)
        lines.append(f'{name} ::= TEXTUAL-CONVENTION STATUS current DESCRIPTION "" SYNTAX {syntax}')
    for name, node in facts["nodes"].items():
        arcs = node["oid"].split(".")
        if arcs[0] != "1" or len(arcs) < 2:
            continue  # outside iso (zeroDotZero): nothing imports it from a stub
        where = "{ iso " + " ".join(arcs[1:]) + " }"
        kind = node["kind"]
        if kind in ("scalar", "column"):
            obj = index.object_at(module, name)
            syntax = _smi_syntax(obj.base, obj.enums, obj.bits)
            lines.append(
                f"{name} OBJECT-TYPE SYNTAX {syntax} MAX-ACCESS read-only STATUS current "
                f'DESCRIPTION "" ::= {where}'
            )
        elif kind == "notification":
            lines.append(f'{name} NOTIFICATION-TYPE STATUS current DESCRIPTION "" ::= {where}')
        else:
            lines.append(f"{name} OBJECT IDENTIFIER ::= {where}")
    lines.append("END")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the pipeline


def _compile_one(workdir: Path, module: str, stubs: Iterable[str]) -> tuple[dict[str, str], Any]:
    from pysmi.codegen.jsondoc import JsonCodeGen
    from pysmi.compiler import MibCompiler
    from pysmi.parser.dialect import smi_v1_relaxed
    from pysmi.parser.smi import parserFactory
    from pysmi.reader.localfile import FileReader
    from pysmi.searcher.stub import StubSearcher
    from pysmi.writer.callback import CallbackWriter

    rendered: dict[str, str] = {}

    def keep(name: str, text: str, _ctx: object) -> None:
        rendered[name] = text

    compiler = MibCompiler(parserFactory(**smi_v1_relaxed)(), JsonCodeGen(), CallbackWriter(keep))
    compiler.add_sources(FileReader(str(workdir)))
    compiler.add_searchers(StubSearcher(*(b for b in PYSMI_BASE if b != module), *stubs))
    return rendered, compiler.compile(module, genTexts=True)


def compile_folder(
    source: Path,
    out: Path,
    *,
    known: MibIndex | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> CompileReport:
    """Compile every MIB file in `source` into `out` (one `MODULE.json` each). Imports
    resolve to the folder's own modules first, then to those `known` has (the shipped
    facts). A file that fails is reported with the reason; the others are still written."""
    report = CompileReport()
    known = known or MibIndex([])
    files: dict[str, Path] = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        if path.name.startswith(".") or path.suffix == ".json":
            continue
        names = module_names(path)
        if not names:
            report.errors.append(f"{path}: not a MIB module (no 'NAME DEFINITIONS ::= BEGIN')")
            continue
        for name in names:
            if name in files:
                report.errors.append(f"{path}: module {name} is also defined in {files[name]}")
            else:
                files[name] = path
    out.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    with tempfile.TemporaryDirectory(prefix="enoc-mibs-") as tmp:
        workdir = Path(tmp)
        for name in PYSMI_BASE:
            (workdir / name).write_text(f"{name} DEFINITIONS ::= BEGIN\nEND\n")
        for module in known.modules:
            if module not in files:
                (workdir / module).write_text(stub_source(module, known))
        stubs = [m for m in known.modules if m not in files and m not in PYSMI_BASE]
        for name, path in files.items():
            (workdir / name).write_bytes(path.read_bytes())
        for name, path in files.items():
            rendered, status = _compile_one(workdir, name, stubs)
            problems = _problems(name, path, status, files, source)
            if problems or name not in rendered:
                report.errors += problems or [f"{path}: pysmi compiled nothing for {name}"]
                continue
            doc = msgspec.json.decode(rendered[name].encode())
            module_facts = facts(doc)
            if not module_facts["nodes"] and not module_facts["types"]:
                continue  # macros only (SNMPv2-CONF): nothing to look up
            target = out / f"{name}.json"
            target.write_bytes(encoder.encode(module_facts))
            report.compiled[name] = target
            progress(f"{path.name}: {name} compiled ({len(doc) - 2} definitions)")
    return report


def _problems(
    module: str, path: Path, status: Mapping[str, Any], files: Mapping[str, Path], source: Path
) -> list[str]:
    out: list[str] = []
    for name, state in status.items():
        if state == "missing":
            out.append(
                f"{path}: {module} imports from {name}, which is neither in {source} "
                "nor among the shipped MIBs"
            )
        elif state == "failed":
            where = files.get(name, path)
            error = getattr(state, "error", None)
            message = getattr(error, "msg", None) or str(error or "failed")
            message = message.replace(str(where.parent), "").strip()
            offset = re.search(r"offset (\d+)", message)
            if offset and where.is_file():
                # pysmi tells a syntax error's character offset: the line is what one reads.
                text = where.read_text(encoding="utf-8", errors="replace")
                line = text.count("\n", 0, int(offset.group(1))) + 1
                message = f"line {line}: {message}"
            out.append(f"{where}: {name}: {message}")
    return out
