"""Fleets of simulated devices: the default RTC fleet, generated fleets, fleet files.

A fleet file (YAML, validated by enoc's config loader):

    port: 1161
    max_message_size: 1472
    snmp:                       # credentials every device accepts; the first is advertised
      - {version: "3", user: enoc, auth_protocol: SHA-256, auth_key: "...",
         priv_protocol: AES-128, priv_key: "..."}
      - {version: "2c", community: public}
    trap_receivers: ["127.0.0.1:10162"]
    trap_version: "2c"          # or "3" (sent with the first v3 user's credentials)
    recording_counters: moving  # or recorded: a recording's counters as in the file
    sites:
      - name: nyc
        rtc: americas
        city: New York
        utc_offset: -5
        devices:
          - {role: pe-router, count: 2, interfaces: 16}
          - {role: access-switch, count: 6}
          - {name: nyc-legacy-1, recording: recordings/linux-full-walk.snmprec}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from enoc.snmp import ber
from enoc.snmp.usm import AuthProtocol, PrivProtocol, UsmUser
from simulators.model import BgpPeer, Device, Interface, engine_id_for, stable_random

Role = Literal["pe-router", "ce-router", "core-switch", "access-switch", "firewall"]
ROLES: tuple[Role, ...] = ("pe-router", "ce-router", "core-switch", "access-switch", "firewall")

DEFAULT_V3 = {
    "user": "enoc-sim",
    "auth_protocol": "SHA-256",
    "auth_key": "enoc-sim-auth-key",
    "priv_protocol": "AES-128",
    "priv_key": "enoc-sim-priv-key",
}


# ------------------------------------------------------------------ fleet file schema


@dataclass(frozen=True)
class SnmpCredential:
    version: Literal["2c", "3"]
    community: str = ""
    user: str = ""
    auth_protocol: AuthProtocol = "none"
    auth_key: str = ""
    priv_protocol: PrivProtocol = "none"
    priv_key: str = ""

    def as_dict(self) -> dict[str, str]:
        if self.version == "2c":
            return {"version": "2c", "community": self.community}
        return {
            "version": "3",
            "user": self.user,
            "auth_protocol": self.auth_protocol,
            "auth_key": self.auth_key,
            "priv_protocol": self.priv_protocol,
            "priv_key": self.priv_key,
        }


@dataclass(frozen=True)
class DeviceGroup:
    role: Role = "access-switch"
    count: int = 1
    interfaces: int | None = None
    name: str | None = None  # for a single named device
    recording: str | None = None  # an snmprec file; relative to the fleet file


@dataclass(frozen=True)
class SiteSpec:
    name: str
    rtc: str
    city: str = ""
    utc_offset: float = 0.0
    devices: list[DeviceGroup] = field(default_factory=list)


@dataclass(frozen=True)
class FleetSpec:
    sites: list[SiteSpec]
    port: int = 1161
    max_message_size: int = 1472
    snmp: list[SnmpCredential] = field(
        default_factory=lambda: [
            SnmpCredential(version="3", **DEFAULT_V3),  # type: ignore[arg-type]
            SnmpCredential(version="2c", community="public"),
        ]
    )
    trap_receivers: list[str] = field(default_factory=list)
    trap_version: Literal["2c", "3"] = "2c"
    address_base: str = "127.16.0.1"
    base_dir: str = "."  # where relative recording paths start
    # moving: a recording's traffic counters advance at a steady rate (rates are not all 0);
    # recorded: every value as in the file (a walk equals the recording)
    recording_counters: Literal["moving", "recorded"] = "moving"
    # generated devices serve ENTITY-SENSOR-MIB temperatures, fans and power supplies
    # (simulators/sensors.py); off by default, so that a fleet's walk stays what it was
    sensors: bool = False


# ------------------------------------------------------------------ roles


@dataclass(frozen=True)
class RoleProfile:
    abbrev: str
    sys_object_id: ber.Oid
    descr: str
    default_interfaces: int
    cpus: int
    memory_mb: int
    bgp_peers: int
    port_name: str  # with {slot} {port}
    port_speed_mbps: int
    uplinks: int
    uplink_speed_mbps: int
    ifindex_base: int = 1  # first ifIndex; Nexus-style switches number from 0x1a000000
    ifindex_step: int = 1
    quirks: frozenset[str] = frozenset()
    max_bulk_varbinds: int = 2048
    tunnels: int = 0  # trailing tunnel interfaces, which have no HC counters


IOS_TAIL = (
    "\r\nTechnical Support: http://www.cisco.com/techsupport"
    "\r\nCopyright (c) 1986-2024 by Cisco Systems, Inc."
)

PROFILES: dict[str, RoleProfile] = {
    "pe-router": RoleProfile(
        "pe",
        (1, 3, 6, 1, 4, 1, 9, 1, 2150),
        "Cisco IOS XR Software (ASR 9006), Version 7.9.2",
        16,
        4,
        32768,
        6,
        "TenGigE0/0/0/{port}",
        10000,
        4,
        100000,
        ifindex_base=1000001,
        ifindex_step=4096,
    ),
    "ce-router": RoleProfile(
        "ce",
        (1, 3, 6, 1, 4, 1, 9, 1, 1861),
        "Cisco IOS Software [Dublin], ISR Software (X86_64_LINUX_IOSD-UNIVERSALK9-M), "
        "Version 17.12.3" + IOS_TAIL,
        8,
        2,
        8192,
        2,
        "GigabitEthernet0/0/{port}",
        1000,
        2,
        200,
    ),
    "core-switch": RoleProfile(
        "core",
        (1, 3, 6, 1, 4, 1, 9, 12, 3, 1, 3, 1812),
        "Cisco NX-OS(tm) nxos.9.3.10.bin, Software (nxos), Version 9.3(10), RELEASE SOFTWARE",
        48,
        2,
        16384,
        0,
        "Ethernet1/{port}",
        10000,
        4,
        40000,
        ifindex_base=0x1A000000,
        ifindex_step=0x1000,  # Nexus: Ethernet1/1 is 436207616
    ),
    "access-switch": RoleProfile(
        "acc",
        (1, 3, 6, 1, 4, 1, 9, 1, 2694),
        "Cisco IOS Software [Dublin], Catalyst L3 Switch Software (CAT9K_LITE_IOSXE), "
        "Version 17.12.3" + IOS_TAIL,
        48,
        1,
        4096,
        0,
        "GigabitEthernet1/0/{port}",
        1000,
        2,
        10000,
    ),
    "firewall": RoleProfile(
        "fw",
        (1, 3, 6, 1, 4, 1, 12356, 101, 1, 6004),
        "FortiGate-600F v7.4.4,build2662",
        16,
        4,
        16384,
        0,
        "port{port}",
        1000,
        2,
        10000,
        quirks=frozenset({"no_iftable_basics", "partial_ifxtable"}),
        max_bulk_varbinds=64,
        tunnels=2,
    ),
}

DEFAULT_RTCS: list[tuple[str, str, str, float, list[tuple[str, str, float]]]] = [
    # code, rtc, city, utc offset, field sites (code, city, utc offset)
    ("nyc", "americas", "New York", -5, [("bog", "Bogota", -5), ("pap", "Port-au-Prince", -5)]),
    ("gva", "europe", "Geneva", 1, [("vie", "Vienna", 1), ("bru", "Brussels", 1)]),
    ("nbo", "africa", "Nairobi", 3, [("jub", "Juba", 2), ("gom", "Goma", 2)]),
    ("bkk", "asia-pacific", "Bangkok", 7, [("kbl", "Kabul", 4.5), ("dil", "Dili", 9)]),
    ("bds", "global", "Brindisi", 1, [("vlc", "Valencia", 1), ("ent", "Entebbe", 3)]),
]


def default_fleet_spec() -> FleetSpec:
    """The Unite Networks RTCs of the DESIGN, each with two field sites."""
    sites: list[SiteSpec] = []
    for code, rtc, city, offset, field_sites in DEFAULT_RTCS:
        sites.append(
            SiteSpec(
                name=code,
                rtc=rtc,
                city=city,
                utc_offset=offset,
                devices=[
                    DeviceGroup("pe-router", 2),
                    DeviceGroup("ce-router", 2),
                    DeviceGroup("core-switch", 2),
                    DeviceGroup("firewall", 1),
                    DeviceGroup("access-switch", 6),
                ],
            )
        )
        for fcode, fcity, foffset in field_sites:
            sites.append(
                SiteSpec(
                    name=fcode,
                    rtc=rtc,
                    city=fcity,
                    utc_offset=foffset,
                    devices=[DeviceGroup("ce-router", 1), DeviceGroup("access-switch", 2, 24)],
                )
            )
    return FleetSpec(sites=sites)


def generated_fleet_spec(devices: int, interfaces: int, sites: int) -> FleetSpec:
    """`--devices N --interfaces M --sites S`: N devices of M interfaces spread over S sites."""
    if devices < 1 or interfaces < 1 or sites < 1:
        raise ValueError("--devices, --interfaces and --sites must be at least 1")
    sites = min(sites, devices)
    regions = [(rtc, offset) for _code, rtc, _city, offset, _f in DEFAULT_RTCS]
    specs: list[SiteSpec] = []
    for s in range(sites):
        count = devices // sites + (1 if s < devices % sites else 0)
        groups: list[DeviceGroup] = []
        roles: list[Role] = ["ce-router", "core-switch", "firewall", "pe-router"]
        chosen: list[Role] = roles[: min(len(roles), count - 1)] if count > 1 else ["ce-router"]
        for role in chosen:
            groups.append(DeviceGroup(role, 1, interfaces))
        rest = count - sum(g.count for g in groups)
        if rest > 0:
            groups.append(DeviceGroup("access-switch", rest, interfaces))
        rtc, offset = regions[s % len(regions)]
        specs.append(SiteSpec(f"site{s + 1:03d}", rtc, f"Site {s + 1}", offset, groups))
    return FleetSpec(sites=specs)


# ------------------------------------------------------------------ building devices


def addresses(base: str) -> Iterator[str]:
    """127.x.y.z addresses from `base` on, skipping .0 and .255 host parts."""
    start = ipaddress.IPv4Address(base)
    if start not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ValueError(f"simulated devices live on loopback only: {base} is not in 127.0.0.0/8")
    value = int(start)
    end = int(ipaddress.IPv4Address("127.255.255.254"))
    while value <= end:
        if value & 0xFF not in (0, 255):
            yield str(ipaddress.IPv4Address(value))
        value += 1
    raise ValueError("ran out of 127.0.0.0/8 addresses")


def build_devices(spec: FleetSpec, now: float) -> list[Device]:
    from simulators.sensors import STANDARD_SENSORS
    from simulators.snmprec import load_recording_device

    users = {
        c.user.encode(): UsmUser(c.user, c.auth_protocol, c.auth_key, c.priv_protocol, c.priv_key)
        for c in spec.snmp
        if c.version == "3"
    }
    communities = frozenset(c.community.encode() for c in spec.snmp if c.version == "2c")
    address_iter = addresses(spec.address_base)
    devices: list[Device] = []
    seen: set[str] = set()
    for site in spec.sites:
        per_role: dict[str, int] = {}
        for group in site.devices:
            for _ in range(group.count):
                profile = PROFILES[group.role]
                per_role[group.role] = n = per_role.get(group.role, 0) + 1
                name = group.name if group.name and group.count == 1 else None
                name = name or f"{site.name}-{profile.abbrev}-{n}"
                if name in seen:
                    raise ValueError(f"two simulated devices are named {name!r}")
                seen.add(name)
                address = next(address_iter)
                if group.recording:
                    path = Path(group.recording)
                    if not path.is_absolute():
                        path = Path(spec.base_dir) / path
                    device = load_recording_device(
                        path,
                        name=name,
                        site=site.name,
                        rtc=site.rtc,
                        address=address,
                        moving=spec.recording_counters == "moving",
                        now=now,
                    )
                else:
                    device = _generate_device(
                        name, group.role, group.interfaces, site, address, now
                    )
                    if spec.sensors:
                        device.sensors = STANDARD_SENSORS
                device.port = spec.port
                device.max_message_size = spec.max_message_size
                device.communities = communities
                device.users = users
                devices.append(device)
    return devices


def _generate_device(
    name: str, role: Role, interfaces: int | None, site: SiteSpec, address: str, now: float
) -> Device:
    profile = PROFILES[role]
    rng = stable_random(name)
    count = interfaces if interfaces is not None else profile.default_interfaces
    # Traffic peaks at 14:00 local time: sin() peaks a quarter day after the phase.
    phase = (8 - site.utc_offset) * 3600.0
    boot = now - rng.uniform(2, 120) * 86400
    ifaces: list[Interface] = []
    for i in range(count):
        uplink = i < profile.uplinks
        speed = profile.uplink_speed_mbps if uplink else profile.port_speed_mbps
        if role == "ce-router" and uplink and i == 0:
            speed = rng.choice((50, 100, 200))  # the MPLS WAN circuit
        index = profile.ifindex_base + i * profile.ifindex_step
        tunnel = i >= count - profile.tunnels
        admin_up = uplink or tunnel or rng.random() > 0.15
        utilization = rng.uniform(0.05, 0.45) if admin_up else 0.0
        octets_per_s = speed * 1_000_000 / 8 * utilization
        port_name = profile.port_name.format(port=i + 1)
        if tunnel:
            port_name = f"ipsec-{site.name}-{count - i}"
            speed = 100
            octets_per_s = speed * 1_000_000 / 8 * utilization
        alias = f"uplink to {site.name}-core" if uplink and role == "access-switch" else ""
        if role == "ce-router" and i == 0:
            # Real aliases carry line breaks and latin-1 octets (\udce9 is the raw octet 0xE9).
            circuit = rng.randint(10000, 99999)
            alias = f"MPLS WAN {site.name} - Unite Networks\r\ncircuit r\udce9f. {circuit}"
        ifaces.append(
            Interface(
                index=index,
                name=port_name,
                descr=port_name,
                alias=alias or (f"user port {i + 1}" if admin_up else ""),
                if_type=131 if tunnel else 6,
                speed_mbps=speed,
                mac=bytes([0x00, 0x1E, 0x49]) + rng.randbytes(3),
                admin_up=admin_up,
                avg_in=octets_per_s,
                avg_out=octets_per_s * rng.uniform(0.3, 1.2),
                amplitude=rng.uniform(0.3, 0.8),
                phase=phase + rng.uniform(-3600, 3600),
                burst_phase=rng.uniform(0, 6.28),
                errors_per_s=rng.choice((0.0, 0.0, 0.0, 0.002, 0.02)),
                discards_per_s=rng.choice((0.0, 0.0, 0.001, 0.01)),
                last_change=boot,
                has_hc=not tunnel,
            )
        )
    peers: list[BgpPeer] = []
    if profile.bgp_peers:
        octets = [int(p) for p in address.split(".")]
        for p in range(profile.bgp_peers):
            remote = f"127.{200 + p % 50}.{octets[2]}.{octets[3]}"
            peers.append(
                BgpPeer(remote=remote, local=address, remote_as=65000 + p, established_since=boot)
            )
    return Device(
        name=name,
        site=site.name,
        rtc=site.rtc,
        role=role,
        address=address,
        port=1161,
        sys_descr=profile.descr.encode(),
        sys_object_id=profile.sys_object_id,
        sys_location=f"{site.city or site.name}, RTC {site.rtc}".encode(),
        sys_contact=b"ENOC service desk <enoc@unite.example>",
        engine_id=engine_id_for(name),
        communities=frozenset(),
        users={},
        interfaces=ifaces,
        boot_time=boot,
        engine_epoch=boot,
        engine_boots=rng.randint(1, 40),
        cpu_count=profile.cpus,
        cpu_base=rng.uniform(5, 35),
        memory_kb=profile.memory_mb * 1024,
        memory_used_ratio=rng.uniform(0.25, 0.6),
        local_as=64512 + rng.randint(0, 500),
        bgp_peers=peers,
        seed=rng.randint(0, 1 << 30),
        quirks=profile.quirks,
        max_bulk_varbinds=profile.max_bulk_varbinds,
    )
