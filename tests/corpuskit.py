"""Helpers for the real-device corpus tests: where it is, what a walk says, what a
database should hold of the strings a device sent."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.facts import text
from collector import lineproto

# ../shared/recordings beside the checkout (CI puts it there); never copied into it
RECORDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "recordings"

IF_ENTRY = "1.3.6.1.2.1.2.2.1"
IFX_ENTRY = "1.3.6.1.2.1.31.1.1.1"
# The raw fields of the `interface` measurement (DESIGN, "InfluxDB schema") and the columns
# they come from. The octet counters are the HC column when the device has it, else the
# 32-bit one (agent/facts.py, IF_COUNTERS).
RAW_FIELDS = {
    "ifHCInOctets": f"{IFX_ENTRY}.6",
    "ifHCOutOctets": f"{IFX_ENTRY}.10",
    "ifInOctets": f"{IF_ENTRY}.10",
    "ifOutOctets": f"{IF_ENTRY}.16",
    "ifInDiscards": f"{IF_ENTRY}.13",
    "ifInErrors": f"{IF_ENTRY}.14",
    "ifOutDiscards": f"{IF_ENTRY}.19",
    "ifOutErrors": f"{IF_ENTRY}.20",
    "ifAdminStatus": f"{IF_ENTRY}.7",
    "ifOperStatus": f"{IF_ENTRY}.8",
    "ifHighSpeed": f"{IFX_ENTRY}.15",
}
FALLBACK = {"ifInOctets": "ifHCInOctets", "ifOutOctets": "ifHCOutOctets"}
COUNTERS = ("Counter32", "Counter64")
INTEGERS = ("INTEGER", "Gauge32", "Counter32", "Counter64", "Timeticks", "UInteger32")
INT64_MAX = 2**63 - 1


def recordings_or_skip() -> list[Path]:
    """The corpus's recordings. Outside CI a missing corpus skips, saying so; with CI=true
    it fails (CI has the folder beside the checkout)."""
    if RECORDINGS.is_dir():
        files = sorted(RECORDINGS.glob("*.snmprec"))
        if files:
            return files
    why = f"the real-device corpus is absent: no *.snmprec in {RECORDINGS}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: CI has ../shared/recordings beside the checkout)")
    pytest.skip(f"{why}; it lives beside the checkout as ../shared/recordings")


def offering(*mibs: str) -> set[str]:
    """Recording names whose MANIFEST.tsv `mibs` column lists any of these (its names:
    entSensor, ciscoEnvMon, upsMib, lldpRem, ...); empty when the corpus is absent."""
    manifest = RECORDINGS / "MANIFEST.tsv"
    if not manifest.is_file():
        return set()
    out = set()
    for line in manifest.read_text().splitlines()[1:]:
        columns = line.split("\t")
        if len(columns) > 3 and set(columns[3].split(",")) & set(mibs):
            out.add(columns[0].removesuffix(".snmprec"))
    return out


def corpus_names() -> list[str]:
    """Recording names to parametrize with (one placeholder when the corpus is absent, so
    that its test skips or fails saying why)."""
    if RECORDINGS.is_dir():
        names = sorted(p.name.removesuffix(".snmprec") for p in RECORDINGS.glob("*.snmprec"))
        if names:
            return names
    return ["corpus-absent"]


def stored_tag(raw: bytes) -> str | None:
    """What InfluxDB and VictoriaMetrics hold as a tag for a string a device sent: the
    agent's one-line text (agent.facts.text), then the collector's documented sanitising,
    `collector.lineproto.sanitise_tag_value`, where it exists (None: no tag). Without it
    the value is expected as is: the only switch between the two is here."""
    value = text(raw)
    sanitise = getattr(lineproto, "sanitise_tag_value", None)
    if sanitise is None:
        return value or None
    sanitised: str | None = sanitise(value)
    return sanitised


@dataclass
class Walk:
    """A net-snmp walk: OID -> (type, value); OCTET STRINGs as their raw bytes."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)
    octets: dict[str, bytes] = field(default_factory=dict)

    def column(self, column: str) -> dict[int, tuple[str, str]]:
        prefix = column + "."
        return {
            int(oid[len(prefix) :]): value
            for oid, value in self.values.items()
            if oid.startswith(prefix) and oid[len(prefix) :].isdigit()
        }

    def if_indexes(self) -> set[int]:
        """Every ifIndex a row of ifTable or ifXTable has."""
        out: set[int] = set()
        for oid in self.values:
            for entry in (IF_ENTRY, IFX_ENTRY):
                if oid.startswith(entry + "."):
                    index = oid[len(entry) + 1 :].split(".", 1)[-1]
                    if index.isdigit():
                        out.add(int(index))
        return out

    def raw(self, column: str, if_index: int) -> bytes:
        return self.octets.get(f"{column}.{if_index}", b"")

    def expected_tags(self, if_index: int) -> dict[str, str]:
        """The interface's name tags as the agent derives them (agent/facts.py: ifName, or
        ifDescr when the device has no ifName) and the databases store them."""
        name = text(self.raw(f"{IFX_ENTRY}.1", if_index)) or text(
            self.raw(f"{IF_ENTRY}.2", if_index)
        )
        tags = {
            "ifName": stored_tag(name.encode()),
            "ifDescr": stored_tag(self.raw(f"{IF_ENTRY}.2", if_index)),
            "ifAlias": stored_tag(self.raw(f"{IFX_ENTRY}.18", if_index)),
        }
        return {k: v for k, v in tags.items() if v}

    def expected_fields(self, if_index: int) -> dict[str, int]:
        """The raw fields the agent stores for the interface, with the walk's values."""
        out: dict[str, int] = {}
        for name, column in RAW_FIELDS.items():
            cell = self.values.get(f"{column}.{if_index}")
            if cell is None or cell[0] not in INTEGERS:
                continue
            kind, value = cell
            counter_only = name.startswith(("ifHC", "ifIn", "ifOut"))
            if counter_only and kind not in COUNTERS:
                continue
            if name in FALLBACK:
                hc = self.values.get(f"{RAW_FIELDS[FALLBACK[name]]}.{if_index}")
                if hc is not None and hc[0] in COUNTERS:
                    continue  # the HC column is stored instead
            number = int(value)
            if number <= INT64_MAX:  # beyond: left out of the line, counted by the collector
                out[name] = number
        if not out:
            # A row with no status or counter column (a partial ifTable) is stored with
            # `listed` = 1 as its one field (docs/agent.md, "What it does, each interval").
            out["listed"] = 1
        return out


_LINE = re.compile(r"^\.?([\d.]+) = (?:([\w-]+): ?)?(.*)$")


def parse_walk(output: str) -> Walk:
    """`snmpbulkwalk -On -Ox -Oe` output (a long Hex-STRING continues on the next lines)."""
    walk = Walk()
    last = ""
    for line in output.splitlines():
        match = _LINE.match(line)
        if match is None:
            if last and walk.values[last][0] == "Hex-STRING":
                kind, value = walk.values[last]
                walk.values[last] = (kind, f"{value} {line.strip()}")
                walk.octets[last] = bytes.fromhex(walk.values[last][1])
            continue
        oid, kind, value = match.group(1), match.group(2) or "", match.group(3)
        if value.startswith("No more variables"):
            continue
        if kind == "" and value == '""':
            kind, value = "Hex-STRING", ""
        if kind == "Timeticks":
            value = value.strip("(").split(")", 1)[0]
        walk.values[oid] = (kind, value.strip())
        if kind == "Hex-STRING":
            walk.octets[oid] = bytes.fromhex(value)
        elif kind == "STRING":  # printable: net-snmp quotes it even with -Ox
            walk.octets[oid] = value.strip().removeprefix('"').removesuffix('"').encode()
        last = oid
    return walk


async def bulkwalk(address: str, port: int, *subtrees: str) -> Walk:
    """net-snmp's snmpbulkwalk (the independent client) of `subtrees`, v2c, as raw as it
    prints: numeric OIDs and enums, every string in hex."""
    output = ""
    for subtree in subtrees:
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/snmpbulkwalk",
            *("-v2c", "-c", "public", "-On", "-Ox", "-Oe", "-t", "3", "-r", "2", "-Cr25"),
            f"{address}:{port}",
            subtree,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"snmpbulkwalk {address} {subtree} failed: {err.decode()}")
        output += out.decode("latin-1") + "\n"
    return parse_walk(output)
