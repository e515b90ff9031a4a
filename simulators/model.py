"""Simulated devices: their state, their traffic, and the MIB objects they serve.

Counters are closed-form functions of time (the integral of a daily traffic
curve plus two faster waves), so a device needs no timer to advance them and
any poll at any moment sees consistent, monotonic values. State that time
alone cannot give (a link taken down, a reboot) is recorded as offsets.

The OID layout of a device is a `MibView` shared by every device of the same
shape, so a fleet of thousands of devices holds one sorted OID list per shape,
not one per device.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from enoc.snmp import ber
from enoc.snmp.ber import Oid
from enoc.snmp.mib import (
    BGP,
    BGP_PEER_ENTRY,
    HR_MEMORY_SIZE,
    HR_PROCESSOR_ENTRY,
    HR_STORAGE_ENTRY,
    HR_STORAGE_FLASH,
    HR_STORAGE_RAM,
    IF_ENTRY,
    IF_NUMBER,
    IFX_ENTRY,
    SYSTEM,
)
from enoc.snmp.usm import LocalizedUser, UsmUser

DAY = 86400.0
WAVE2 = 431.0  # seconds: short bursts
WAVE3 = 1381.0
COUNTER32 = 1 << 32
COUNTER64 = 1 << 64

Getter = Callable[["Device", float], bytes]


# ------------------------------------------------------------------ views


@dataclass
class MibView:
    """A sorted OID space: encoded OIDs and value getters, shared by devices of one shape."""

    oids: list[Oid]
    encoded_oids: list[bytes]
    getters: list[Getter]
    objects: frozenset[Oid]

    def __len__(self) -> int:
        return len(self.oids)

    def exact(self, oid: Oid) -> int:
        """Index of `oid`, or -1."""
        i = bisect_left(self.oids, oid)
        if i < len(self.oids) and self.oids[i] == oid:
            return i
        return -1

    def missing_value(self, oid: Oid) -> bytes:
        """noSuchInstance when the object exists but not this instance, else noSuchObject."""
        for length in range(len(oid) - 1, 6, -1):
            if oid[:length] in self.objects:
                return ber.NO_SUCH_INSTANCE_VALUE
        return ber.NO_SUCH_OBJECT_VALUE


class MibBuilder:
    def __init__(self) -> None:
        self._entries: dict[Oid, Getter] = {}
        self._objects: set[Oid] = set()
        self.skip_columns: dict[Oid, set[int]] = {}

    def scalar(self, oid: Oid, getter: Getter) -> None:
        self._entries[oid] = getter
        self._objects.add(oid[:-1])

    def column(self, entry: Oid, column: int, index: Oid, getter: Getter) -> None:
        if column in self.skip_columns.get(entry, ()):
            return
        column_oid = (*entry, column)
        self._entries[(*column_oid, *index)] = getter
        self._objects.add(column_oid)

    def build(self) -> MibView:
        oids = sorted(self._entries)
        return MibView(
            oids=oids,
            encoded_oids=[ber.encode_oid(o) for o in oids],
            getters=[self._entries[o] for o in oids],
            objects=frozenset(self._objects),
        )


def static(value: bytes) -> Getter:
    def get(_device: Device, _now: float) -> bytes:
        return value

    return get


def oid_index_for_ip(address: str) -> Oid:
    return tuple(int(p) for p in address.split("."))


# ------------------------------------------------------------------ parts of a device


@dataclass
class Interface:
    """One interface: identity, speed, a traffic profile and its fault state."""

    index: int
    name: str
    descr: str
    alias: str
    if_type: int  # IANAifType: 6 ethernetCsmacd, 131 tunnel, 24 softwareLoopback
    speed_mbps: int
    mac: bytes
    admin_up: bool = True
    avg_in: float = 0.0  # octets per second
    avg_out: float = 0.0
    amplitude: float = 0.5  # daily swing, 0..0.8
    phase: float = 0.0  # seconds: where the daily curve peaks
    burst_phase: float = 0.0
    errors_per_s: float = 0.0
    discards_per_s: float = 0.0
    has_hc: bool = True
    link_down: bool = False  # a fault holds the link down
    down_since: float | None = None
    lost_in: float = 0.0  # traffic that did not flow while down, subtracted from the integral
    lost_out: float = 0.0
    last_change: float = 0.0
    counted_since: float = 0.0  # counters count from max(boot, this): a counter reset moves it
    octet_offsets: tuple[int, int] = (0, 0)  # added to the octet counters (a counter jump)
    discontinuity_at: float = 0.0  # ifCounterDiscontinuityTime; at or before boot reads 0
    _cache_at: float = -1.0
    _cache: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def oper_up(self) -> bool:
        return self.admin_up and not self.link_down

    def _curve(self, t: float) -> float:
        """Integral of the unit traffic curve from 0 to t (absolute epoch seconds)."""
        w1 = 2 * math.pi / DAY
        w2 = 2 * math.pi / WAVE2
        w3 = 2 * math.pi / WAVE3
        return (
            t
            - self.amplitude / w1 * math.cos(w1 * (t - self.phase))
            - 0.1 / w2 * math.cos(w2 * t + self.burst_phase)
            - 0.05 / w3 * math.cos(w3 * t + 2 * self.burst_phase)
        )

    def counters(self, device: Device, now: float) -> tuple[int, int, int, int]:
        """(in octets, out octets, errors, discards) since the device booted."""
        if now == self._cache_at:
            return self._cache
        start = max(device.boot_time, self.counted_since)
        end = self.down_since if self.down_since is not None else now
        if not self.admin_up:
            end = start
        span = self._curve(end) - self._curve(start)
        octets_in = max(0, int(self.avg_in * span - self.lost_in)) + self.octet_offsets[0]
        octets_out = max(0, int(self.avg_out * span - self.lost_out)) + self.octet_offsets[1]
        elapsed = max(0.0, end - start)
        errors = int(elapsed * self.errors_per_s)
        discards = int(elapsed * self.discards_per_s)
        self._cache_at = now
        self._cache = (octets_in, octets_out, errors, discards)
        return self._cache

    def set_link(self, up: bool, device: Device, now: float) -> bool:
        """Take the link down or up; return True when the oper status changed."""
        was_up = self.oper_up
        if up and self.link_down:
            if self.down_since is not None:
                lost = self._curve(now) - self._curve(self.down_since)
                self.lost_in += self.avg_in * lost
                self.lost_out += self.avg_out * lost
            self.down_since = None
            self.link_down = False
        elif not up and not self.link_down:
            self.link_down = True
            self.down_since = now
        self._cache_at = -1.0
        if was_up != self.oper_up:
            self.last_change = now
            return True
        return False

    def reset(self, boot: float) -> None:
        """The device rebooted at `boot`: counters start again from zero."""
        self.lost_in = self.lost_out = 0.0
        self.down_since = boot if self.link_down else None
        self.last_change = boot
        self.counted_since = boot
        self.octet_offsets = (0, 0)
        self.discontinuity_at = boot
        self._cache_at = -1.0

    def reset_counters(self, now: float, *, discontinuity: bool = True) -> None:
        """Every counter of the interface restarts from zero without a reboot (a `clear
        counters`, a line card reset). A correct agent moves ifCounterDiscontinuityTime to
        now; `discontinuity=False` is a device that forgets to."""
        self.lost_in = self.lost_out = 0.0
        self.down_since = now if self.link_down else None
        self.counted_since = now
        self.octet_offsets = (0, 0)
        if discontinuity:
            self.discontinuity_at = now
        self._cache_at = -1.0

    def jump_near_wrap(self, device: Device, now: float, seconds: float) -> None:
        """Move both octet counters to `seconds` of traffic below 2^32, so their 32-bit
        columns wrap that soon; the HC columns keep the same low 32 bits (they jump by the
        same amount), and a jump is a discontinuity (ifCounterDiscontinuityTime = now)."""
        in_then, out_then, _e, _d = self.counters(device, now + seconds)
        # what makes the counters read 0 (mod 2^32) `seconds` from now
        self.octet_offsets = (
            self.octet_offsets[0] + -in_then % COUNTER32,
            self.octet_offsets[1] + -out_then % COUNTER32,
        )
        self.discontinuity_at = now
        self._cache_at = -1.0


@dataclass
class BgpPeer:
    remote: str
    local: str
    remote_as: int
    established: bool = True
    established_since: float = 0.0
    transitions: int = 1


@dataclass(frozen=True)
class Sensor:
    """One ENTITY-SENSOR-MIB sensor of a generated device (simulators/sensors.py)."""

    index: int  # its entPhysicalIndex
    name: str
    entity_class: int  # ENTITY-MIB PhysicalClass: 6 powerSupply, 7 fan, 8 sensor
    kind: int  # EntitySensorDataType: 4 voltsDC, 6 watts, 8 celsius, 10 rpm
    precision: int  # decimal places of entPhySensorValue
    value: float  # the typical reading, in its units
    swing: float  # how far it wobbles either side
    units: str


@dataclass
class Faults:
    """Active faults of one device, as injected through the control API."""

    unreachable: bool = False
    unreachable_until: float = 0.0  # a reboot's downtime
    cpu_high: bool = False
    packet_loss: float = 0.0
    latency_ms: float = 0.0
    flapping: dict[int, float] = field(default_factory=dict)  # ifIndex -> period seconds
    links_down: set[int] = field(default_factory=set)
    bgp_down: set[str] = field(default_factory=set)
    garbage: str = ""  # how the device spoils its answers (simulators.engine.GARBAGE_MODES)
    fans_failed: set[int] = field(default_factory=set)  # entPhysicalIndex of stopped fans
    overheat: bool = False

    def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        if self.unreachable:
            out.append({"kind": "unreachable"})
        if self.garbage:
            out.append({"kind": "garbage", "mode": self.garbage})
        if self.cpu_high:
            out.append({"kind": "cpu_high"})
        if self.packet_loss:
            out.append({"kind": "packet_loss", "ratio": self.packet_loss})
        if self.latency_ms:
            out.append({"kind": "latency", "ms": self.latency_ms})
        out += [{"kind": "flap", "ifIndex": i, "period": p} for i, p in self.flapping.items()]
        out += [{"kind": "link_down", "ifIndex": i} for i in sorted(self.links_down)]
        out += [{"kind": "bgp_down", "peer": p} for p in sorted(self.bgp_down)]
        out += [{"kind": "fan_fail", "fan": f} for f in sorted(self.fans_failed)]
        if self.overheat:
            out.append({"kind": "overheat"})
        return out


@dataclass
class Device:
    """One simulated SNMP agent."""

    name: str
    site: str
    rtc: str
    role: str
    address: str
    port: int
    sys_descr: bytes
    sys_object_id: Oid
    sys_location: bytes
    sys_contact: bytes
    engine_id: bytes
    communities: frozenset[bytes]
    users: dict[bytes, UsmUser]
    interfaces: list[Interface]
    view: MibView | None = None
    boot_time: float = 0.0
    engine_boots: int = 1
    engine_epoch: float = 0.0
    cpu_count: int = 1
    cpu_base: float = 15.0
    memory_kb: int = 4 * 1024 * 1024
    memory_used_ratio: float = 0.4
    flash_kb: int = 8 * 1024 * 1024
    local_as: int = 0
    bgp_peers: list[BgpPeer] = field(default_factory=list)
    max_message_size: int = 1472
    faults: Faults = field(default_factory=Faults)
    localized: dict[bytes, LocalizedUser] = field(default_factory=dict)
    recording: str | None = None
    recorded_interfaces: int = 0  # a recording's ifIndex count (it has no Interface objects)
    served_requests: int = 0  # requests that reached this device, and varbinds it answered
    served_varbinds: int = 0
    seed: int = 0
    # Misbehaviours of real devices (SNMP-NOTES.md): "no_iftable_basics" (no ifIndex, ifSpeed,
    # ifInOctets, ifOutOctets columns), "partial_ifxtable" (only names, HC octets, speed, alias).
    quirks: frozenset[str] = frozenset()
    max_bulk_varbinds: int = 2048  # some agents cap a response at 64 varbinds
    sensors: tuple[Sensor, ...] = ()  # ENTITY-SENSOR-MIB rows (simulators/sensors.py)

    def uptime_ticks(self, now: float) -> int:
        return int((now - self.boot_time) * 100) % COUNTER32

    def ticks_at(self, when: float) -> int:
        """sysUpTime value at an earlier moment (0 when before this boot)."""
        return max(0, int((when - self.boot_time) * 100)) % COUNTER32

    def engine_time(self, now: float) -> int:
        return min(int(now - self.engine_epoch), 0x7FFFFFFF)

    def user_keys(self, name: bytes) -> LocalizedUser | None:
        keys = self.localized.get(name)
        if keys is None:
            user = self.users.get(name)
            if user is None:
                return None
            keys = LocalizedUser.localize(user, self.engine_id)
            self.localized[name] = keys
        return keys

    def interface(self, if_index: int) -> Interface:
        for iface in self.interfaces:
            if iface.index == if_index:
                return iface
        raise KeyError(f"{self.name} has no interface with ifIndex {if_index}")

    def reboot(self, now: float, downtime: float = 0.0) -> None:
        """Counters and sysUpTime restart, the engine boots again (USM must resync)."""
        self.boot_time = now + downtime
        self.engine_boots += 1
        self.engine_epoch = now + downtime
        self.localized.clear()
        for iface in self.interfaces:
            iface.reset(self.boot_time)
        for peer in self.bgp_peers:
            peer.established_since = self.boot_time
        if downtime > 0:
            self.faults.unreachable_until = now + downtime

    def cpu_load(self, cpu: int, now: float) -> int:
        if self.faults.cpu_high:
            return 95 + (int(now) + cpu) % 5
        daily = math.sin(2 * math.pi * (now - self.seed % 3600) / DAY)
        return max(
            1, min(100, int(self.cpu_base * (1 + 0.3 * daily) + (cpu * 7 + int(now / 30)) % 5))
        )

    def memory_used_kb(self, now: float) -> int:
        swing = 0.03 * math.sin(2 * math.pi * now / 7200 + self.seed)
        return int(self.memory_kb * min(0.98, self.memory_used_ratio + swing))


# ------------------------------------------------------------------ building the MIB of a device


def _uptime(device: Device, now: float) -> bytes:
    return ber.encode_unsigned(ber.TIMETICKS, device.uptime_ticks(now))


def _in_octets_hc(row: int) -> Getter:
    def get(d: Device, now: float) -> bytes:
        return ber.encode_unsigned(ber.COUNTER64, d.interfaces[row].counters(d, now)[0] % COUNTER64)

    return get


def _out_octets_hc(row: int) -> Getter:
    def get(d: Device, now: float) -> bytes:
        return ber.encode_unsigned(ber.COUNTER64, d.interfaces[row].counters(d, now)[1] % COUNTER64)

    return get


def _counter(row: int, pick: Callable[[tuple[int, int, int, int]], int], tag: int) -> Getter:
    modulus = COUNTER64 if tag == ber.COUNTER64 else COUNTER32

    def get(d: Device, now: float) -> bytes:
        return ber.encode_unsigned(tag, pick(d.interfaces[row].counters(d, now)) % modulus)

    return get


def _oper_status(row: int) -> Getter:
    up = ber.encode_integer(1)
    down = ber.encode_integer(2)

    def get(d: Device, _now: float) -> bytes:
        return up if d.interfaces[row].oper_up else down

    return get


def _last_change(row: int) -> Getter:
    def get(d: Device, _now: float) -> bytes:
        return ber.encode_unsigned(ber.TIMETICKS, d.ticks_at(d.interfaces[row].last_change))

    return get


def per_iface(row: int, value: Callable[[Interface], bytes]) -> Getter:
    """A getter for one interface row of whichever device asks."""

    def get(d: Device, _now: float) -> bytes:
        return value(d.interfaces[row])

    return get


def _cpu_load(cpu: int) -> Getter:
    def get(d: Device, now: float) -> bytes:
        return ber.encode_integer(d.cpu_load(cpu, now))

    return get


def _discontinuity(row: int) -> Getter:
    """ifCounterDiscontinuityTime: sysUpTime when the counters last jumped (0: at boot)."""

    def get(d: Device, _now: float) -> bytes:
        return ber.encode_unsigned(ber.TIMETICKS, d.ticks_at(d.interfaces[row].discontinuity_at))

    return get


def shape_key(device: Device) -> tuple[object, ...]:
    """Devices with the same key share one MibView."""
    return (
        tuple((i.index, i.has_hc) for i in device.interfaces),
        device.quirks,
        device.cpu_count,
        tuple(p.remote for p in device.bgp_peers),
        device.sensors,
    )


def build_view(device: Device) -> MibView:
    """The OID layout for a generated device; values come from the device at request time."""
    b = MibBuilder()
    b.scalar((*SYSTEM, 1, 0), lambda d, _n: ber.encode_octets(d.sys_descr))
    b.scalar((*SYSTEM, 2, 0), lambda d, _n: ber.encode_oid(d.sys_object_id))
    b.scalar((*SYSTEM, 3, 0), _uptime)
    b.scalar((*SYSTEM, 4, 0), lambda d, _n: ber.encode_octets(d.sys_contact))
    b.scalar((*SYSTEM, 5, 0), lambda d, _n: ber.encode_octets(d.name.encode()))
    b.scalar((*SYSTEM, 6, 0), lambda d, _n: ber.encode_octets(d.sys_location))
    b.scalar((*SYSTEM, 7, 0), static(ber.encode_integer(6)))
    b.scalar(IF_NUMBER, lambda d, _n: ber.encode_integer(len(d.interfaces)))

    def text(row: int, attr: str) -> Getter:
        # surrogateescape: an alias may carry the raw non-UTF-8 octets real devices send
        return lambda d, _n: ber.encode_octets(
            getattr(d.interfaces[row], attr).encode("utf-8", "surrogateescape")
        )

    skip_if = {1, 5, 10, 16} if "no_iftable_basics" in device.quirks else set()
    only_ifx = {1, 6, 10, 15, 18} if "partial_ifxtable" in device.quirks else None
    b.skip_columns = {IF_ENTRY: skip_if, IFX_ENTRY: set()} if skip_if else {}
    if only_ifx is not None:
        b.skip_columns[IFX_ENTRY] = set(range(1, 20)) - only_ifx

    for row, iface in enumerate(device.interfaces):
        idx = (iface.index,)
        # ifTable
        b.column(IF_ENTRY, 1, idx, static(ber.encode_integer(iface.index)))
        b.column(IF_ENTRY, 2, idx, text(row, "descr"))
        b.column(IF_ENTRY, 3, idx, per_iface(row, lambda i: ber.encode_integer(i.if_type)))
        b.column(IF_ENTRY, 4, idx, static(ber.encode_integer(1500)))
        b.column(
            IF_ENTRY,
            5,
            idx,
            per_iface(
                row,
                lambda i: ber.encode_unsigned(
                    ber.GAUGE32, min(i.speed_mbps * 1_000_000, COUNTER32 - 1)
                ),
            ),
        )
        b.column(IF_ENTRY, 6, idx, per_iface(row, lambda i: ber.encode_octets(i.mac)))
        b.column(
            IF_ENTRY,
            7,
            idx,
            per_iface(row, lambda i: ber.encode_integer(1 if i.admin_up else 2)),
        )
        b.column(IF_ENTRY, 8, idx, _oper_status(row))
        b.column(IF_ENTRY, 9, idx, _last_change(row))
        b.column(IF_ENTRY, 10, idx, _counter(row, lambda c: c[0], ber.COUNTER32))
        b.column(IF_ENTRY, 11, idx, _counter(row, lambda c: c[0] // 700, ber.COUNTER32))
        b.column(IF_ENTRY, 12, idx, _counter(row, lambda c: c[0] // 90000, ber.COUNTER32))
        b.column(IF_ENTRY, 13, idx, _counter(row, lambda c: c[3], ber.COUNTER32))
        b.column(IF_ENTRY, 14, idx, _counter(row, lambda c: c[2], ber.COUNTER32))
        b.column(IF_ENTRY, 15, idx, static(ber.encode_unsigned(ber.COUNTER32, 0)))
        b.column(IF_ENTRY, 16, idx, _counter(row, lambda c: c[1], ber.COUNTER32))
        b.column(IF_ENTRY, 17, idx, _counter(row, lambda c: c[1] // 650, ber.COUNTER32))
        b.column(IF_ENTRY, 18, idx, _counter(row, lambda c: c[1] // 120000, ber.COUNTER32))
        b.column(IF_ENTRY, 19, idx, _counter(row, lambda c: c[3] // 2, ber.COUNTER32))
        b.column(IF_ENTRY, 20, idx, _counter(row, lambda c: c[2] // 3, ber.COUNTER32))
        b.column(IF_ENTRY, 21, idx, static(ber.encode_unsigned(ber.GAUGE32, 0)))
        b.column(IF_ENTRY, 22, idx, static(ber.encode_oid((0, 0))))
        # ifXTable
        b.column(IFX_ENTRY, 1, idx, text(row, "name"))
        b.column(IFX_ENTRY, 2, idx, _counter(row, lambda c: c[0] // 90000, ber.COUNTER32))
        b.column(IFX_ENTRY, 3, idx, _counter(row, lambda c: c[0] // 400000, ber.COUNTER32))
        b.column(IFX_ENTRY, 4, idx, _counter(row, lambda c: c[1] // 120000, ber.COUNTER32))
        b.column(IFX_ENTRY, 5, idx, _counter(row, lambda c: c[1] // 500000, ber.COUNTER32))
        if iface.has_hc:
            b.column(IFX_ENTRY, 6, idx, _in_octets_hc(row))
            b.column(IFX_ENTRY, 7, idx, _counter(row, lambda c: c[0] // 700, ber.COUNTER64))
            b.column(IFX_ENTRY, 8, idx, _counter(row, lambda c: c[0] // 90000, ber.COUNTER64))
            b.column(IFX_ENTRY, 9, idx, _counter(row, lambda c: c[0] // 400000, ber.COUNTER64))
            b.column(IFX_ENTRY, 10, idx, _out_octets_hc(row))
            b.column(IFX_ENTRY, 11, idx, _counter(row, lambda c: c[1] // 650, ber.COUNTER64))
            b.column(IFX_ENTRY, 12, idx, _counter(row, lambda c: c[1] // 120000, ber.COUNTER64))
            b.column(IFX_ENTRY, 13, idx, _counter(row, lambda c: c[1] // 500000, ber.COUNTER64))
        b.column(IFX_ENTRY, 14, idx, static(ber.encode_integer(1)))
        b.column(
            IFX_ENTRY,
            15,
            idx,
            per_iface(row, lambda i: ber.encode_unsigned(ber.GAUGE32, i.speed_mbps)),
        )
        b.column(IFX_ENTRY, 16, idx, static(ber.encode_integer(2)))
        b.column(IFX_ENTRY, 17, idx, static(ber.encode_integer(1)))
        b.column(IFX_ENTRY, 18, idx, text(row, "alias"))
        b.column(IFX_ENTRY, 19, idx, _discontinuity(row))

    # HOST-RESOURCES-MIB: memory and storage
    b.scalar(HR_MEMORY_SIZE, lambda d, _n: ber.encode_integer(d.memory_kb))
    storage = (
        (1, HR_STORAGE_RAM, b"Physical memory"),
        (2, HR_STORAGE_FLASH, b"bootflash:"),
    )
    for index, kind, descr in storage:
        idx = (index,)
        b.column(HR_STORAGE_ENTRY, 1, idx, static(ber.encode_integer(index)))
        b.column(HR_STORAGE_ENTRY, 2, idx, static(ber.encode_oid(kind)))
        b.column(HR_STORAGE_ENTRY, 3, idx, static(ber.encode_octets(descr)))
        b.column(HR_STORAGE_ENTRY, 4, idx, static(ber.encode_integer(1024)))
        if index == 1:
            b.column(HR_STORAGE_ENTRY, 5, idx, lambda d, _n: ber.encode_integer(d.memory_kb))
            b.column(HR_STORAGE_ENTRY, 6, idx, lambda d, n: ber.encode_integer(d.memory_used_kb(n)))
        else:
            b.column(HR_STORAGE_ENTRY, 5, idx, lambda d, _n: ber.encode_integer(d.flash_kb))
            b.column(
                HR_STORAGE_ENTRY, 6, idx, lambda d, _n: ber.encode_integer(d.flash_kb * 3 // 10)
            )
        b.column(HR_STORAGE_ENTRY, 7, idx, static(ber.encode_unsigned(ber.COUNTER32, 0)))
    # HOST-RESOURCES-MIB: processors (hrDeviceIndex starts at 196608 like net-snmp)
    for cpu in range(device.cpu_count):
        idx = (196608 + cpu,)
        b.column(HR_PROCESSOR_ENTRY, 1, idx, static(ber.encode_oid((0, 0))))
        b.column(
            HR_PROCESSOR_ENTRY,
            2,
            idx,
            _cpu_load(cpu),
        )
    # BGP4-MIB
    if device.bgp_peers:
        b.scalar((*BGP, 1, 0), static(ber.encode_octets(b"\x10")))  # version 4
        b.scalar((*BGP, 2, 0), lambda d, _n: ber.encode_integer(d.local_as))
        b.scalar(
            (*BGP, 4, 0),
            lambda d, _n: ber.encode_ip(bytes(oid_index_for_ip(d.bgp_peers[0].local))),
        )
        for row, peer in enumerate(device.bgp_peers):
            _bgp_peer_columns(b, row, oid_index_for_ip(peer.remote))
    if device.sensors:
        from simulators.sensors import add_columns

        add_columns(b, device)
    return b.build()


def _bgp_peer_columns(b: MibBuilder, row: int, idx: Oid) -> None:
    def state(d: Device, _n: float) -> bytes:
        return ber.encode_integer(6 if d.bgp_peers[row].established else 1)  # established / idle

    def ip(attr: str) -> Getter:
        return lambda d, _n: ber.encode_ip(bytes(oid_index_for_ip(getattr(d.bgp_peers[row], attr))))

    def updates(divisor: int) -> Getter:
        def get(d: Device, now: float) -> bytes:
            since = d.bgp_peers[row].established_since
            value = int(max(0.0, now - since) / divisor) if d.bgp_peers[row].established else 0
            return ber.encode_unsigned(ber.COUNTER32, value % COUNTER32)

        return get

    def established_time(d: Device, now: float) -> bytes:
        peer = d.bgp_peers[row]
        value = int(now - peer.established_since) if peer.established else 0
        return ber.encode_unsigned(ber.GAUGE32, max(0, value))

    b.column(BGP_PEER_ENTRY, 1, idx, ip("remote"))
    b.column(BGP_PEER_ENTRY, 2, idx, state)
    b.column(BGP_PEER_ENTRY, 3, idx, static(ber.encode_integer(2)))
    b.column(BGP_PEER_ENTRY, 4, idx, static(ber.encode_integer(4)))
    b.column(BGP_PEER_ENTRY, 5, idx, ip("local"))
    b.column(BGP_PEER_ENTRY, 6, idx, static(ber.encode_integer(179)))
    b.column(BGP_PEER_ENTRY, 7, idx, ip("remote"))
    b.column(BGP_PEER_ENTRY, 8, idx, static(ber.encode_integer(35000 + row)))
    b.column(BGP_PEER_ENTRY, 9, idx, lambda d, _n: ber.encode_integer(d.bgp_peers[row].remote_as))
    b.column(BGP_PEER_ENTRY, 10, idx, updates(7))
    b.column(BGP_PEER_ENTRY, 11, idx, updates(9))
    b.column(BGP_PEER_ENTRY, 12, idx, updates(3))
    b.column(BGP_PEER_ENTRY, 13, idx, updates(3))
    b.column(BGP_PEER_ENTRY, 14, idx, static(ber.encode_octets(b"\x00\x00")))
    b.column(
        BGP_PEER_ENTRY,
        15,
        idx,
        lambda d, _n: ber.encode_unsigned(ber.COUNTER32, d.bgp_peers[row].transitions),
    )
    b.column(BGP_PEER_ENTRY, 16, idx, established_time)


def stable_random(*parts: object) -> random.Random:
    """A Random seeded from names, so a fleet is the same on every start."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def engine_id_for(name: str) -> bytes:
    """RFC 3411 engine ID, format 5 (octets) under net-snmp's enterprise number."""
    return b"\x80\x00\x1f\x88\x05" + hashlib.sha256(name.encode()).digest()[:8]


def attach_views(devices: Iterable[Device]) -> int:
    """Give every generated device its shared view; return how many distinct views were built."""
    views: dict[tuple[object, ...], MibView] = {}
    for device in devices:
        if device.view is not None:
            continue
        key = shape_key(device)
        view = views.get(key)
        if view is None:
            view = views[key] = build_view(device)
        device.view = view
    return len(views)
