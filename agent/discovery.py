"""Capability discovery: which known MIB groups a device answers, learned with GETNEXTs.

Each known group has a probe OID; a GETNEXT from it that answers inside it means the
device has the group. The probes of one device ride in as few requests as it takes
(`BATCH` a request; a device that refuses or drops a big request is probed again in
halves, down to one probe a request). What is found is passed to the poller as `found`
(agent.profiles.polled_groups: the profile's pins and exclusions still decide).

A device is probed on first contact, every `discovery.interval`, when its sysObjectID
changes and when it reboots (its boot time, sysUpTime back from the poll, moves). The
findings are kept per device in the agent's state directory, so a restart does not probe
every device again; a file that cannot be read is logged and discovery starts over.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.mibgroups import GROUPS
from enoc.snmp import ber
from enoc.snmp.ber import Oid
from enoc.snmp.client import SnmpClient, SnmpError, SnmpTimeout, Target
from enoc.snmp.message import NO_ERROR
from enoc.wire import POLL_GROUPS

log = logging.getLogger("enoc.agent.discovery")

BATCH = 16  # probes a GETNEXT carries at most: a small PDU every agent takes
RETRY_AFTER = 600.0  # seconds before a failed discovery is tried again
# A boot time (poll time less sysUpTime) that moved more than this is a reboot; less is
# the jitter of the poll's own timing.
REBOOT_SLACK = 120.0


@dataclass(frozen=True)
class Probe:
    name: str  # a poll group, a MIB group (agent.mibgroups), or a MIB no group polls yet
    mib: str
    oid: Oid


# MIBs discovery knows beyond the MIB groups: the poll groups host_resources and bgp (BGP
# wherever BGP4-MIB has peers, whatever the profile), and MIBs reported with the device's
# capabilities before a group polls them. A MIB group of the same MIB replaces its entry.
OTHER_PROBES = (
    Probe("host_resources", "HOST-RESOURCES-MIB", (1, 3, 6, 1, 2, 1, 25)),  # host
    Probe("bgp", "BGP4-MIB", (1, 3, 6, 1, 2, 1, 15, 3)),  # bgpPeerTable
    Probe("entity", "ENTITY-MIB", (1, 3, 6, 1, 2, 1, 47, 1, 1, 1)),  # entPhysicalTable
    Probe("entity_sensor", "ENTITY-SENSOR-MIB", (1, 3, 6, 1, 2, 1, 99, 1, 1)),  # entPhySensorTable
    Probe("lldp", "LLDP-MIB", (1, 0, 8802, 1, 1, 2, 1)),  # lldpObjects
    Probe("ups", "UPS-MIB", (1, 3, 6, 1, 2, 1, 33, 1)),  # upsObjects
    Probe("powernet", "PowerNet-MIB", (1, 3, 6, 1, 4, 1, 318, 1, 1)),  # apc hardware
)


def known_probes() -> tuple[Probe, ...]:
    """Every MIB group's probe (in precedence order), then the others."""
    groups = [Probe(g.name, g.mib, g.probe) for g in GROUPS.values()]
    mibs = {g.mib for g in GROUPS.values()}
    names = {p.name for p in groups}
    others = [
        p
        for p in OTHER_PROBES
        if p.name not in names and (p.name in POLL_GROUPS or p.mib not in mibs)
    ]
    return (*groups, *others)


def answers_inside(probe: Oid, oid: Oid, tag: int) -> bool:
    return tag != ber.END_OF_MIB_VIEW and len(oid) > len(probe) and oid[: len(probe)] == probe


@dataclass
class Outcome:
    found: frozenset[str]
    requests: int
    varbinds: int  # varbinds asked for, each answered once


async def probe(
    client: SnmpClient, target: Target, probes: Sequence[Probe], batch: int = BATCH
) -> Outcome:
    """GETNEXT every probe, `batch` at a time; a request refused (an error status, a
    tooBig, an answer of the wrong length) or lost is asked again in halves. A probe that
    fails alone with an error status is taken as absent (SNMPv1-style noSuchName); one
    that times out alone raises SnmpTimeout: the device went silent, try later."""
    found: set[str] = set()
    requests = varbinds = 0
    size = max(1, min(batch, len(probes)))
    at = 0
    while at < len(probes):
        chunk = probes[at : at + size]
        requests += 1
        varbinds += len(chunk)
        try:
            pdu = await client.request(target, ber.GETNEXT, [p.oid for p in chunk])
        except SnmpTimeout:
            if size == 1:
                raise
            size //= 2
            continue
        if pdu.error_status != NO_ERROR or len(pdu.varbinds) != len(chunk):
            if size > 1:
                size //= 2
                continue
        else:
            for item, (oid, tag, _value) in zip(chunk, pdu.varbinds, strict=True):
                if answers_inside(item.oid, oid, tag):
                    found.add(item.name)
        at += len(chunk)
    return Outcome(frozenset(found), requests, varbinds)


@dataclass
class Findings:
    """What discovery found on one device, and when."""

    found: frozenset[str] = frozenset()
    at: float = 0.0  # wall time of the last discovery that answered
    sys_object_id: str = ""  # dotted, as the device reported it then
    boot: float = 0.0  # wall time the device booted (poll time less sysUpTime); 0 unknown
    failed_at: float = 0.0  # the last discovery that failed, since `at`

    def as_json(self) -> dict[str, object]:
        return {
            "found": sorted(self.found),
            "at": self.at,
            "sys_object_id": self.sys_object_id,
            "boot": self.boot,
        }

    @classmethod
    def from_json(cls, raw: object) -> Findings:
        if not isinstance(raw, dict):
            raise TypeError("expected an object")
        found = raw.get("found", [])
        if not isinstance(found, list) or not all(isinstance(x, str) for x in found):
            raise TypeError("found: expected a list of names")
        values = [raw.get(k, 0.0) for k in ("at", "boot")]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise TypeError("at, boot: expected numbers")
        oid = raw.get("sys_object_id", "")
        if not isinstance(oid, str):
            raise TypeError("sys_object_id: expected a string")
        return cls(frozenset(found), float(values[0]), oid, float(values[1]))


@dataclass
class Discovery:
    """Every device's capabilities: when to probe again, and the file they are kept in."""

    client: SnmpClient
    path: Path  # <spool.path>/discovery.json
    interval: float = 6 * 3600.0
    enabled: bool = True
    devices: dict[str, Findings] = field(default_factory=dict)
    # runs, failed (no answer), requests and varbinds sent, since the start
    stats: Counter[str] = field(default_factory=Counter)
    probes: tuple[Probe, ...] = field(default_factory=known_probes)
    dirty: bool = False  # findings not yet saved: the owner calls `save` (a file a batch)

    def found(self, name: str) -> frozenset[str]:
        if not self.enabled:
            return frozenset()
        known = self.devices.get(name)
        return known.found if known is not None else frozenset()

    def discovered(self, name: str) -> bool:
        known = self.devices.get(name)
        return known is not None and known.at > 0

    def due(self, name: str, sys_object_id: Oid | None, ticks: int | None, at: float) -> str:
        """Why the device is to be probed now ("" if it is not): first contact, interval,
        sysObjectID, reboot; a failed discovery waits RETRY_AFTER first."""
        if not self.enabled:
            return ""
        known = self.devices.get(name)
        if known is not None and known.failed_at and at - known.failed_at < RETRY_AFTER:
            return ""
        if known is None or not known.at:
            return "first contact"
        if at - known.at >= self.interval:
            return "interval"
        oid = ber.oid_text(sys_object_id) if sys_object_id else ""
        if oid and known.sys_object_id and oid != known.sys_object_id:
            return "sysObjectID changed"
        if ticks is not None and known.boot and abs(at - ticks / 100 - known.boot) > REBOOT_SLACK:
            return "reboot"
        return ""

    async def run(
        self,
        name: str,
        target: Target,
        sys_object_id: Oid | None,
        ticks: int | None,
        at: float,
    ) -> Findings | None:
        """Probe the device; None when it did not answer (not a poll failure: the poll
        answered; tried again after RETRY_AFTER, the last findings kept meanwhile)."""
        known = self.devices.setdefault(name, Findings())
        self.stats["runs"] += 1
        try:
            outcome = await probe(self.client, target, self.probes)
        except SnmpError as exc:
            self.stats["failed"] += 1
            known.failed_at = at
            log.info("discovery of %s failed (%s); trying again later", name, exc.kind)
            return None
        self.stats["requests"] += outcome.requests
        self.stats["varbinds"] += outcome.varbinds
        before = known.found
        self.devices[name] = now = Findings(
            outcome.found,
            at,
            ber.oid_text(sys_object_id) if sys_object_id else "",
            at - ticks / 100 if ticks is not None else 0.0,
        )
        if now.found != before:
            log.info("%s answers: %s", name, ", ".join(sorted(now.found)) or "none of them")
        self.dirty = True
        return now

    def forget(self, names: Iterable[str]) -> None:
        """Devices that left the inventory."""
        gone = [n for n in names if n in self.devices]
        for name in gone:
            del self.devices[name]
        self.dirty = self.dirty or bool(gone)

    def load(self) -> None:
        """The findings of the last run; an unreadable file is logged, not fatal."""
        try:
            raw = json.loads(self.path.read_text())
            if not isinstance(raw, dict):
                raise TypeError("expected an object of devices")
            self.devices = {str(k): Findings.from_json(v) for k, v in raw.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.error("ignoring unreadable %s, discovering every device again: %s", self.path, exc)  # noqa: TRY400
            self.devices = {}

    def save(self) -> None:
        """Write the findings (atomically); a disk that cannot take them costs only a
        discovery of every device after a restart."""
        self.dirty = False
        tmp = self.path.with_suffix(".tmp")
        body = {name: caps.as_json() for name, caps in sorted(self.devices.items()) if caps.at}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the discovery state to %s: %s", self.path, exc)


def day_share(
    discovery_varbinds: float, poll_varbinds: float, poll_interval: float, interval: float
) -> float:
    """Discovery's share of a device's varbinds in a day: polled every `poll_interval`
    seconds, discovered every `interval` and once more (a reboot, a new sysObjectID)."""
    spent = (86400 / interval + 1) * discovery_varbinds
    return spent / (spent + 86400 / poll_interval * poll_varbinds)
