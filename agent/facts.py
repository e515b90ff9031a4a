"""A device's raw answers into facts: a metrics sample with rates, and the events of its changes.

One `DeviceTracker` per inventory device keeps what the next poll needs: the
last counters (in the shared `RateTracker`), the last sysUpTime and each
interface's ifCounterDiscontinuityTime, so that a reboot or a discontinuity
yields no rate at all instead of a spike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.edge import EdgeDetector
from agent.mibgroups import Labels, derive_all
from agent.poller import RawPoll
from agent.rates import RateTracker, uptime_was_reset
from enoc.ifpolicy import IfClass, InterfacePolicy
from enoc.inventory import InventoryDevice
from enoc.snmp import ber
from enoc.snmp.ber import Oid
from enoc.wire import BgpSample, DeviceSample, Event, InterfaceSample, Value

from .profiles import HR_STORAGE_RAM

COUNTER_TAGS = (ber.COUNTER32, ber.COUNTER64)
# An interface counts at most one error or discard per packet, and a packet is at least a
# minimum Ethernet frame: an error "rate" above speed / (8 x 64) is a device's garbage.
MIN_FRAME_OCTETS = 64
BGP_ESTABLISHED = 6
BGP_ADMIN_START = 2
IF_UP = 1
SYSTEM_NAMES = ("sysObjectID", "sysName", "sysDescr", "sysUpTime")
IF_COUNTERS = (
    # (raw field, 32-bit fallback, derived field, is an octet counter)
    ("ifHCInOctets", "ifInOctets", "in_bps", True),
    ("ifHCOutOctets", "ifOutOctets", "out_bps", True),
    ("ifInErrors", "", "in_errors_per_s", False),
    ("ifOutErrors", "", "out_errors_per_s", False),
    ("ifInDiscards", "", "in_discards_per_s", False),
    ("ifOutDiscards", "", "out_discards_per_s", False),
)

# The columns an interface's fields come from: a row with none of them is a partial table's.
VALUE_COLUMNS = frozenset(
    {"ifOperStatus", "ifAdminStatus", "ifHighSpeed"}
    | {column for counter in IF_COUNTERS for column in counter[:2] if column}
)


def text(value: object) -> str:
    """An SNMP string as one printable line: devices send non-UTF-8 and multi-line strings."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return "" if value is None else str(value)
    return " ".join(value.replace("\x00", " ").split())


@dataclass
class DeviceTracker:
    device: InventoryDevice
    edge: EdgeDetector
    rates: RateTracker = field(default_factory=RateTracker)
    uptime: tuple[int, float] | None = None  # last sysUpTime ticks and when
    discontinuity: dict[Oid, int] = field(default_factory=dict)
    sys_object_id: Oid | None = None
    sys_name: str = ""
    sys_descr: str = ""
    reboot_trap_at: float = 0.0  # a coldStart/warmStart trap already announced the reboot
    policy: InterfacePolicy = field(default_factory=InterfacePolicy)
    # per ifIndex: the identity (ifType, ifName, ifAlias, ifDescr) last classified, and how
    classes: dict[int, tuple[tuple[object, str, str, str], IfClass]] = field(default_factory=dict)
    # the MIB each of cpu and memory came from at the last poll that had it
    sources: dict[str, str] = field(default_factory=dict)
    labels: Labels = field(default_factory=Labels)  # the MIB groups' label columns (poller)

    @property
    def name(self) -> str:
        return self.device.name

    def failed(self, at: float, reason: str = "timeout") -> tuple[DeviceSample, list[Event]]:
        """A poll that got no usable answer (`reason`: the failure kind): a sample saying
        so, and maybe the unreachable event."""
        sample = DeviceSample(self.name, self.device.address, at, {"reachable": 0})
        return sample, self.edge.reachability(self.name, answered=False, at=at, reason=reason)

    def observe(self, raw: RawPoll) -> tuple[DeviceSample, list[Event]]:
        at = raw.at
        events = self.edge.reachability(self.name, answered=True, at=at)
        fields: dict[str, Value] = {"reachable": 1, "response_ms": round(raw.response_ms, 2)}
        oid = raw.scalars.get("sysObjectID")
        if isinstance(oid, tuple):
            self.sys_object_id = oid
        self.sys_name = text(raw.scalars.get("sysName", self.sys_name))
        self.sys_descr = text(raw.scalars.get("sysDescr", self.sys_descr))
        ticks = raw.scalars.get("sysUpTime")
        if isinstance(ticks, int):
            fields["sysUpTime"] = ticks
            fields["uptime_s"] = ticks / 100
            if self.uptime is not None and uptime_was_reset(*self.uptime, ticks, at):
                self.rates.reset((self.name,))
                self.discontinuity.clear()
                self.labels.clear()  # a reboot may come with other hardware
                restarted = at - ticks / 100
                if abs(self.reboot_trap_at - restarted) > max(60.0, ticks / 100):
                    events += self.edge.reboot(self.name, at, ticks / 100)
            self.uptime = (ticks, at)
        for name, value in raw.scalars.items():
            if name not in SYSTEM_NAMES and isinstance(value, int | float):
                fields[name] = value
        derived = derive_all(raw.mib_groups, raw.readings)
        events += self._health(raw, fields, derived.fields, derived.sources)
        events += self.edge.conditions(self.name, derived.conditions, at)
        sample = DeviceSample(self.name, self.device.address, at, fields, rows=derived.rows)
        sample.interfaces, if_events = self._interfaces(raw, fields)
        sample.bgp, bgp_events = self._bgp(raw)
        return sample, events + if_events + bgp_events

    # ---------------------------------------------------------------- groups

    def _health(
        self,
        raw: RawPoll,
        fields: dict[str, Value],
        vendor: dict[str, Value],
        sources: dict[str, str],
    ) -> list[Event]:
        """cpu and memory: a vendor MIB's where the device answers one (agent.mibgroups,
        in precedence order), else HOST-RESOURCES-MIB's; the other device fields of the MIB
        groups as they come. A threshold event for cpu and memory either way."""
        own = self._host_resources(raw)
        for name, value in own.items():
            if name not in vendor:
                vendor[name] = value
                sources[name] = "HOST-RESOURCES-MIB"
        fields.update(vendor)
        self.sources.update({k: v for k, v in sources.items() if k in vendor})
        events: list[Event] = []
        for metric in ("cpu", "memory"):
            reading = fields.get(metric)
            if isinstance(reading, int | float):
                events += self.edge.threshold(self.name, "device", metric, float(reading), raw.at)
        return events

    @staticmethod
    def _host_resources(raw: RawPoll) -> dict[str, Value]:
        out: dict[str, Value] = {}
        loads = [
            v for _t, v in raw.tables.get("hrProcessorLoad", {}).values() if isinstance(v, int)
        ]
        if loads:
            out["cpu"] = round(sum(loads) / len(loads), 2)
        types = raw.tables.get("hrStorageType", {})
        sizes = raw.tables.get("hrStorageSize", {})
        used = raw.tables.get("hrStorageUsed", {})
        total = in_use = 0
        for index, (_tag, kind) in types.items():
            if kind != HR_STORAGE_RAM or index not in sizes or index not in used:
                continue
            size, part = sizes[index][1], used[index][1]
            if isinstance(size, int) and isinstance(part, int) and size > 0:
                total += size
                in_use += part
        if total:
            out["memory"] = round(100 * in_use / total, 2)
        return out

    def if_class(self, if_index: int) -> IfClass | None:
        """How the policy took an interface at the last poll; None before it was polled."""
        known = self.classes.get(if_index)
        return known[1] if known is not None else None

    def _classify(
        self, if_index: int, if_type: object, name: str, alias: str, descr: str
    ) -> IfClass:
        identity = (if_type, name, alias, descr)
        known = self.classes.get(if_index)
        if known is not None and known[0] == identity:
            return known[1]
        kind = self.policy.classify(
            if_type if isinstance(if_type, int) else None, name, alias, descr
        )
        self.classes[if_index] = (identity, kind)
        return kind

    def _interfaces(
        self, raw: RawPoll, device_fields: dict[str, Value]
    ) -> tuple[list[InterfaceSample], list[Event]]:
        tables = raw.tables
        # Every row of ifTable or ifXTable is an interface, whatever columns it has: a
        # partial table (a Juniper's rows with only ifDescr, an Extreme's with only ifName)
        # still lists the device's interfaces.
        indexes = {
            index
            for name, table in tables.items()
            if name.startswith("if")
            for index in table
            if len(index) == 1
        }
        if not indexes:
            return [], []
        samples: list[InterfaceSample] = []
        events: list[Event] = []
        at = raw.at
        ports_down = baseline_down = 0
        for index in sorted(indexes):
            if_index = index[0]
            row = {name: table[index] for name, table in tables.items() if index in table}
            descr = text(row.get("ifDescr", (0, b""))[1])
            alias = text(row.get("ifAlias", (0, b""))[1])
            name = text(row.get("ifName", (0, b""))[1]) or descr
            kind = self._classify(if_index, row.get("ifType", (0, None))[1], name, alias, descr)
            if kind == "skip":
                continue
            alerted = kind in ("alert", "monitored")
            fields: dict[str, Value] = {}
            for column in (
                "ifOperStatus",
                "ifAdminStatus",
                "ifHighSpeed",
                "ifInErrors",
                "ifOutErrors",
                "ifInDiscards",
                "ifOutDiscards",
            ):
                cell = row.get(column)
                if cell is not None and isinstance(cell[1], int):
                    fields[column] = cell[1]
            speed_bps = self._speed(row)
            key = (self.name, "if", str(if_index))
            marker = row.get("ifCounterDiscontinuityTime")
            if marker is not None and isinstance(marker[1], int):
                previous = self.discontinuity.get(index)
                if previous is not None and previous != marker[1]:
                    self.rates.reset(key)
                self.discontinuity[index] = marker[1]
            for hc, fallback, derived, octets in IF_COUNTERS:
                column = hc
                if hc not in row or row[hc][0] not in COUNTER_TAGS:
                    column = fallback
                if not column or column not in row or row[column][0] not in COUNTER_TAGS:
                    continue
                # The width is the type the device sent: error and discard counters are
                # Counter32 and wrap like ifInOctets (a 64-bit reading of them called every
                # wrap a reset), and a device may serve an HC column as Counter32.
                bits = 64 if row[column][0] == ber.COUNTER64 else 32
                counter = row[column][1]
                assert isinstance(counter, int)
                fields[column] = counter
                max_rate = (
                    speed_bps / 8 / (1 if octets else MIN_FRAME_OCTETS) if speed_bps else None
                )
                rate = self.rates.rate((*key, derived), counter, at, bits=bits, max_rate=max_rate)
                if rate is None:
                    continue
                if octets:
                    fields[derived] = round(rate * 8, 3)
                    if speed_bps:
                        utilization = round(100 * rate * 8 / speed_bps, 3)
                        fields[derived.replace("bps", "utilization")] = utilization
                else:
                    fields[derived] = round(rate, 4)
            admin, status = fields.get("ifAdminStatus"), fields.get("ifOperStatus")
            if isinstance(admin, int) and isinstance(status, int):  # unknown: neither up nor down
                events += self.edge.link(
                    self.name,
                    if_index,
                    name,
                    admin == IF_UP,
                    status == IF_UP,
                    at,
                    alert=alerted,
                    monitored=kind == "monitored",
                )
                if admin == IF_UP and status != IF_UP:
                    ports_down += 1
                    baseline_down += self.edge.link_quiet(self.name, if_index)
            resource = f"if:{if_index}"
            for metric in ("in_utilization", "out_utilization", "in_errors_per_s"):
                value = fields.get(metric)
                if alerted and isinstance(value, int | float):
                    events += self.edge.threshold(self.name, resource, metric, value, at)
            if not fields and VALUE_COLUMNS.isdisjoint(row):
                # A line needs a field: a row with no status or counter column is stored
                # with `listed` as its one field (ifIndex is a tag already; docs/agent.md).
                # Columns of the wrong type (a garbled answer) are not such a row: nothing
                # of it is taken, as before.
                fields["listed"] = 1
            samples.append(InterfaceSample(if_index, name, descr, alias, fields))
        # Admin up and oper down, of the interfaces polled; of them, those down since the
        # agent first saw them (a baseline: no incident; DESIGN "InfluxDB schema").
        if len(self.classes) > len(indexes):  # interfaces gone (a PPP session, a module out)
            self.classes = {i: c for i, c in self.classes.items() if (i,) in indexes}
        device_fields["ports_down"] = ports_down
        device_fields["ports_down_baseline"] = baseline_down
        return samples, events

    @staticmethod
    def _speed(row: dict[str, tuple[int, object]]) -> float:
        high = row.get("ifHighSpeed", (0, 0))[1]
        if isinstance(high, int) and high > 0:
            return high * 1e6
        speed = row.get("ifSpeed", (0, 0))[1]
        if isinstance(speed, int) and 0 < speed < 0xFFFFFFFF:
            return float(speed)
        return 0.0

    def _bgp(self, raw: RawPoll) -> tuple[list[BgpSample], list[Event]]:
        states = raw.tables.get("bgpPeerState", {})
        samples: list[BgpSample] = []
        events: list[Event] = []
        names = {
            "bgpPeerState": "state",
            "bgpPeerAdminStatus": "admin_status",
            "bgpPeerRemoteAs": "remote_as",
            "bgpPeerInUpdates": "in_updates",
            "bgpPeerOutUpdates": "out_updates",
            "bgpPeerFsmEstablishedTime": "established_time",
        }
        for index in sorted(states):
            peer = ".".join(map(str, index))
            fields: dict[str, Value] = {}
            for column, field_name in names.items():
                cell = raw.tables.get(column, {}).get(index)
                if cell is not None and isinstance(cell[1], int):
                    fields[field_name] = cell[1]
            samples.append(BgpSample(peer, fields))
            if fields.get("admin_status", BGP_ADMIN_START) == BGP_ADMIN_START:
                established = fields.get("state") == BGP_ESTABLISHED
                events += self.edge.bgp(self.name, peer, established, raw.at)
        return samples, events
