"""The fault drills' accounting: points published against points landed, spools on disk,
and incidents seen against those the faults dictate."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.lineproto import sanitise_tag_value
from enoc.wire import DEVICE_TAGS, MetricsMessage, Value

# What the agents' polls become (the points the drills account for), and every measurement
# the collector writes, longest first where one is a prefix of a VictoriaMetrics name.
POLLED = ("device", "interface", "bgp_peer", "sensor")
MEASUREMENTS = ("enoc_agent", "bgp_peer", "interface", "incident", "device", "sensor")

# measurement, site, device (or agent), and the series within: ifIndex, peer, a row's tags
SeriesKey = tuple[str, str, str, str]


def row_series(tags: dict[str, str]) -> str:
    """A row's series within its device (a sensor's `class=...,sensor=...`): its own tags,
    as the databases hold them (sanitised; an empty value is no tag)."""
    pairs = []
    for name, value in sorted(tags.items()):
        held = sanitise_tag_value(value) if name not in DEVICE_TAGS else None
        if held:
            pairs.append(f"{name}={held}")
    return ",".join(pairs)


Points = dict[SeriesKey, dict[int, dict[str, float]]]

# ------------------------------------------------------------------ incidents


@dataclass(frozen=True)
class Expect:
    """One incident a drill's faults dictate, in its final state."""

    kind: str
    site: str
    device: str = ""
    resource: str = ""
    state: str = "resolved"
    suppressed: bool | None = None  # None: either way is right
    flapping: bool = False  # True: marked flapping, then settled (cleared) by the end

    def label(self) -> str:
        return f"{self.kind} {self.site}/{self.device or '-'}/{self.resource}"

    def same_key(self, incident: dict[str, Any]) -> bool:
        return (incident["kind"], incident["site"], incident["device"], incident["resource"]) == (
            self.kind,
            self.site,
            self.device,
            self.resource,
        )


def incident_label(incident: dict[str, Any]) -> str:
    return (
        f"{incident['kind']} {incident['site']}/{incident['device'] or '-'}/{incident['resource']}"
    )


def compare_incidents(expected: list[Expect], seen: list[dict[str, Any]]) -> list[str]:
    """What differs between the incidents a drill dictates and those the collector holds."""
    problems: list[str] = []
    left = list(seen)
    for want in expected:
        match = next((i for i in left if want.same_key(i)), None)
        if match is None:
            problems.append(f"missing: {want.label()} ({want.state})")
            continue
        left.remove(match)
        name = want.label()
        if match["state"] != want.state:
            problems.append(f"{name}: {match['state']}, expected {want.state}")
        suppressed = match["suppressed_by"] is not None
        if want.suppressed is not None and suppressed != want.suppressed:
            problems.append(f"{name}: {'' if suppressed else 'not '}suppressed")
        whats = [entry["what"] for entry in match.get("timeline", [])]
        if want.flapping:
            if "flapping" not in whats:
                problems.append(f"{name}: never marked flapping")
            if match["flapping"] or "settled" not in whats:
                problems.append(f"{name}: still flapping (not settled)")
        elif match["flapping"] or "flapping" in whats:
            problems.append(f"{name}: marked flapping")
    problems += [f"unexpected: {incident_label(i)} ({i['state']})" for i in left]
    return problems


# ------------------------------------------------------------------ spools on disk


@dataclass
class SpoolState:
    next_seq: int
    pending: list[int]


def read_spool(path: Path) -> SpoolState:
    """What an agent's spool holds on disk (read from a copy: opening a spool touches it)."""
    from agent.spool import Spool

    if not path.exists():
        return SpoolState(1, [])
    with tempfile.TemporaryDirectory(prefix="enoc-drill-spool-") as tmp:
        copy = Path(tmp) / "spool"
        shutil.copytree(path, copy)
        spool = Spool(copy)
        try:
            return SpoolState(spool.next_seq, [r.seq for r in spool.take(10**9)])
        finally:
            spool.close()


# ------------------------------------------------------------------ points


def numeric(fields: dict[str, Value]) -> dict[str, float]:
    """The fields a line carries that VictoriaMetrics stores (it drops strings)."""
    out: dict[str, float] = {}
    for name, value in fields.items():
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            out[name] = float(value)
    return out


def published_points(messages: Iterable[MetricsMessage]) -> tuple[Points, int]:
    """(series -> ms timestamp -> numeric fields) of every published point, and how many
    points were published twice (one poll in two messages)."""
    points: Points = {}
    twice = 0
    for message in messages:
        site = message.site
        for sample in message.samples:
            stamp = round(sample.ts * 1000)
            lines: list[tuple[SeriesKey, dict[str, Value]]] = [
                (("device", site, sample.device, ""), sample.fields)
            ]
            lines += [
                (("interface", site, sample.device, str(i.if_index)), i.fields)
                for i in sample.interfaces
            ]
            lines += [(("bgp_peer", site, sample.device, b.peer), b.fields) for b in sample.bgp]
            lines += [
                ((r.measurement, site, sample.device, row_series(r.tags)), r.fields)
                for r in sample.rows
                if r.measurement in POLLED
            ]
            for key, fields in lines:
                values = numeric(fields)
                if not values:
                    continue
                series = points.setdefault(key, {})
                if stamp in series:
                    twice += 1
                series[stamp] = values
    return points, twice


def series_key(measurement: str, labels: dict[str, str]) -> SeriesKey:
    """Which line a VictoriaMetrics series (one field of a measurement) comes from."""
    site = labels.get("site", "")
    if measurement == "sensor":
        own = {k: v for k, v in labels.items() if k != "__name__"}
        return (measurement, site, labels.get("device", ""), row_series(own))
    if measurement in POLLED:
        sub = labels.get("ifIndex") or labels.get("peer") or ""
        return (measurement, site, labels.get("device", ""), sub)
    if measurement == "enoc_agent":
        return (measurement, site, labels.get("agent", ""), "")
    # anything else the collector writes (incident annotations, ...): every tag counts
    rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("__name__", "site"))
    return (measurement or "?", site, "", rest)


def export_points(vm_url: str) -> tuple[Points, int]:
    """Everything in VictoriaMetrics as (series -> ms timestamp -> fields), and how many
    samples shared a series and timestamp with another (what a query would see twice)."""
    with urllib.request.urlopen(f"{vm_url}/internal/force_flush", timeout=30):  # noqa: S310
        pass
    params = urllib.parse.urlencode(
        {"match[]": '{__name__!=""}', "start": "0", "end": str(int(time.time()) + 86400)}
    )
    with urllib.request.urlopen(  # noqa: S310 - loopback
        f"{vm_url}/api/v1/export?{params}", timeout=300
    ) as response:
        points: Points = {}
        doubled = 0
        for raw in response:
            if not raw.strip():
                continue
            row = json.loads(raw)
            metric: dict[str, str] = row["metric"]
            name = metric.get("__name__", "")
            measurement = next((m for m in MEASUREMENTS if name.startswith(m + "_")), "")
            field_name = name[len(measurement) + 1 :] if measurement else name
            key = series_key(measurement, metric)
            series = points.setdefault(key, {})
            for value, stamp in zip(row["values"], row["timestamps"], strict=True):
                fields = series.setdefault(int(stamp), {})
                if field_name in fields and measurement in POLLED:
                    doubled += 1
                fields[field_name] = float(value)
    return points, doubled


@dataclass
class PointCount:
    published: int = 0
    written: int = 0
    lost: int = 0
    wrong: int = 0
    duplicated: int = 0
    published_twice: int = 0
    lines_in_db: int = 0
    examples: list[str] = field(default_factory=list)


def count_points(published: Points, landed: Points, doubled: int) -> PointCount:
    out = PointCount(duplicated=doubled)
    for key, series in published.items():
        got = landed.get(key, {})
        for stamp, fields in series.items():
            out.published += 1
            have = got.get(stamp)
            if have is None or any(name not in have for name in fields):
                out.lost += 1
                if len(out.examples) < 5:
                    out.examples.append(f"lost: {'/'.join(key)} at {stamp}")
            elif any(
                not math.isclose(have[name], value, rel_tol=1e-9, abs_tol=1e-9)
                for name, value in fields.items()
            ):
                out.wrong += 1
                if len(out.examples) < 5:
                    out.examples.append(f"wrong value: {'/'.join(key)} at {stamp}")
            else:
                out.written += 1
    for key, series in landed.items():
        out.lines_in_db += len(series)
        if key[0] not in POLLED:
            continue  # the agents' health (heartbeats are not spooled), incident annotations
        expected = published.get(key, {})
        extra = [stamp for stamp in series if stamp not in expected]
        out.duplicated += len(extra)
        if extra and len(out.examples) < 5:
            out.examples.append(f"not published: {'/'.join(key)} at {extra[0]}")
    return out
