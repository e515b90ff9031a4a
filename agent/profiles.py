"""Profiles: what to collect from a device, chosen by its sysObjectID or named per device.

A profile is a set of groups (system is always polled) plus optional vendor
scalars that become device fields. Built-in profiles cover the roles of the
WAN; a config adds its own under `profiles:` (longest sysObjectID prefix wins;
on a tie the config's profile). Vendor scalars go into the poll's one GET with
the system scalars whenever the profile is known before it: named for the
device, or chosen from the sysObjectID the device reported last time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.mibgroups import GROUPS as MIB_GROUPS
from agent.mibgroups import MibGroup
from agent.mibgroups.tables import TableConfig, resolve, table_group
from enoc.mibs import MibIndex
from enoc.snmp.ber import Oid, parse_oid_text
from enoc.wire import POLL_GROUPS, PollGroup

# The groups a profile names are the wire's (enoc.wire.METRIC_GROUPS says what each fills).
Group = PollGroup
GROUPS: tuple[Group, ...] = POLL_GROUPS

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID = (1, 3, 6, 1, 2, 1, 1, 2, 0)
SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
SYSTEM_SCALARS = {
    "sysDescr": SYS_DESCR,
    "sysObjectID": SYS_OBJECT_ID,
    "sysUpTime": SYS_UPTIME,
    "sysName": SYS_NAME,
}

IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
HR_STORAGE_ENTRY = (1, 3, 6, 1, 2, 1, 25, 2, 3, 1)
HR_PROCESSOR_LOAD = (1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2)
HR_STORAGE_RAM = (1, 3, 6, 1, 2, 1, 25, 2, 1, 2)
BGP_PEER_ENTRY = (1, 3, 6, 1, 2, 1, 15, 3, 1)

# Columns by the names the InfluxDB schema uses (DESIGN: "InfluxDB schema").
COLUMNS: dict[Group, dict[str, Oid]] = {
    "interfaces": {
        "ifDescr": (*IF_ENTRY, 2),
        "ifType": (*IF_ENTRY, 3),  # for the interface policy (enoc.ifpolicy)
        "ifSpeed": (*IF_ENTRY, 5),
        "ifAdminStatus": (*IF_ENTRY, 7),
        "ifOperStatus": (*IF_ENTRY, 8),
        "ifInOctets": (*IF_ENTRY, 10),
        "ifInDiscards": (*IF_ENTRY, 13),
        "ifInErrors": (*IF_ENTRY, 14),
        "ifOutOctets": (*IF_ENTRY, 16),
        "ifOutDiscards": (*IF_ENTRY, 19),
        "ifOutErrors": (*IF_ENTRY, 20),
        "ifName": (*IFX_ENTRY, 1),
        "ifHCInOctets": (*IFX_ENTRY, 6),
        "ifHCOutOctets": (*IFX_ENTRY, 10),
        "ifHighSpeed": (*IFX_ENTRY, 15),
        "ifAlias": (*IFX_ENTRY, 18),
        "ifCounterDiscontinuityTime": (*IFX_ENTRY, 19),
    },
    "host_resources": {
        "hrProcessorLoad": HR_PROCESSOR_LOAD,
        "hrStorageType": (*HR_STORAGE_ENTRY, 2),
        "hrStorageAllocationUnits": (*HR_STORAGE_ENTRY, 4),
        "hrStorageSize": (*HR_STORAGE_ENTRY, 5),
        "hrStorageUsed": (*HR_STORAGE_ENTRY, 6),
    },
    "bgp": {
        "bgpPeerState": (*BGP_PEER_ENTRY, 2),
        "bgpPeerAdminStatus": (*BGP_PEER_ENTRY, 3),
        "bgpPeerRemoteAs": (*BGP_PEER_ENTRY, 9),
        "bgpPeerInUpdates": (*BGP_PEER_ENTRY, 10),
        "bgpPeerOutUpdates": (*BGP_PEER_ENTRY, 11),
        "bgpPeerFsmEstablishedTime": (*BGP_PEER_ENTRY, 16),
    },
}


# The Python type each known object decodes to (enoc.snmp.ber.decode_value): numbers are
# int whatever their SNMP type, strings bytes, OIDs tuples. An answer of another type is a
# device's garbage: counted (snmp_bad, kind wrong_type) and never taken for a value.
TEXT_OBJECTS = ("sysDescr", "sysName", "ifDescr", "ifName", "ifAlias")
OID_OBJECTS = ("sysObjectID", "hrStorageType")
VALUE_TYPES: dict[str, type] = {
    name: bytes if name in TEXT_OBJECTS else tuple if name in OID_OBJECTS else int
    for name in [*SYSTEM_SCALARS, *(name for group in COLUMNS.values() for name in group)]
}


@dataclass(frozen=True)
class Profile:
    name: str
    groups: tuple[Group, ...] = GROUPS
    match: tuple[Oid, ...] = ()  # sysObjectID prefixes
    scalars: Mapping[str, Oid] = field(default_factory=dict)  # vendor extras -> device fields
    # Capability discovery proposes, the profile decides: MIB groups (agent.mibgroups) or
    # poll groups polled whatever discovery found (`pin`) or never (`exclude`).
    pin: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # The config's `tables:`, resolved against the MIBs: MIB groups of this profile alone,
    # polled on every device it applies to (agent.mibgroups.tables).
    tables: tuple[MibGroup, ...] = ()

    def columns(self) -> dict[str, Oid]:
        """Every column this profile walks, named; walked side by side in one GETBULK walk."""
        out: dict[str, Oid] = {}
        for group in self.groups:
            out.update(COLUMNS[group])
        return out


@dataclass(frozen=True)
class ProfileConfig:
    """A profile as written in the agent config."""

    groups: list[Group] = field(default_factory=lambda: list(GROUPS))
    match: list[str] = field(default_factory=list)
    scalars: dict[str, str] = field(default_factory=dict)
    pin: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    tables: list[TableConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        for text in [*self.match, *self.scalars.values()]:
            parse_oid_text(text)  # a bad OID is a config error naming the key
        known = {*GROUPS, *MIB_GROUPS}
        for key, names in (("pin", self.pin), ("exclude", self.exclude)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"{key}: unknown group {unknown[0]!r} (known: {', '.join(sorted(known))})"
                )

    def build(self, name: str, mibs: MibIndex | None = None) -> Profile:
        """The profile; its `tables:` resolved through `mibs` (ValueError when one names
        what no loaded MIB defines: agent.config checks them first, naming the key)."""
        tables: tuple[MibGroup, ...] = ()
        if self.tables:
            index = mibs if mibs is not None else MibIndex.load()
            tables = tuple(table_group(resolve(t, index)) for t in self.tables)
        return Profile(
            name=name,
            groups=tuple(self.groups),
            match=tuple(parse_oid_text(m) for m in self.match),
            scalars={k: parse_oid_text(v) for k, v in self.scalars.items()},
            pin=tuple(self.pin),
            exclude=tuple(self.exclude),
            tables=tables,
        )


BUILT_IN: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("generic", ("interfaces", "host_resources")),
        Profile(
            "router",
            GROUPS,
            (
                (1, 3, 6, 1, 4, 1, 9, 1, 2150),  # Cisco ASR 1000 series
                (1, 3, 6, 1, 4, 1, 9, 1, 1861),  # Cisco ISR 4000 series
                (1, 3, 6, 1, 4, 1, 2636, 1, 1, 1),  # Juniper routers
            ),
        ),
        Profile(
            "switch",
            ("interfaces", "host_resources"),
            ((1, 3, 6, 1, 4, 1, 9, 1, 2694), (1, 3, 6, 1, 4, 1, 9, 12, 3, 1, 3)),
        ),
        Profile("firewall", ("interfaces", "host_resources"), ((1, 3, 6, 1, 4, 1, 12356),)),
        Profile("system", (), exclude=(*GROUPS, *MIB_GROUPS)),
    )
}


def polled_groups(
    profile: Profile, found: Iterable[str]
) -> tuple[tuple[Group, ...], tuple[MibGroup, ...]]:
    """What to poll on a device with this profile, given the groups discovery `found` it
    answers: the profile's poll groups plus those found (BGP wherever BGP4-MIB answers),
    the MIB groups found, and the pinned, less the excluded; MIB groups in precedence order,
    then the profile's own tables."""
    names = {*profile.groups, *found, *profile.pin} - set(profile.exclude)
    return (
        tuple(g for g in GROUPS if g in names),
        (
            *(g for n, g in MIB_GROUPS.items() if n in names),
            *(g for g in profile.tables if g.name not in profile.exclude),
        ),
    )


class ProfileSet:
    """Built-in profiles plus the config's; chooses by name or by sysObjectID."""

    def __init__(self, extra: Iterable[Profile] = ()) -> None:
        self.by_name = dict(BUILT_IN)
        configured: set[str] = set()
        for profile in extra:
            self.by_name[profile.name] = profile
            configured.add(profile.name)
        # Longest prefix first; on a tie the config's profile before a built-in one (a
        # config naming a built-in's prefix means to take those devices over).
        ranked = sorted(
            (
                (len(prefix), p.name in configured, prefix, p)
                for p in self.by_name.values()
                for prefix in p.match
            ),
            key=lambda item: (item[0], item[1]),
            reverse=True,
        )
        self._prefixes = [(prefix, p) for _n, _c, prefix, p in ranked]

    def named(self, name: str) -> Profile:
        try:
            return self.by_name[name]
        except KeyError:
            known = ", ".join(sorted(self.by_name))
            raise KeyError(f"unknown profile {name!r} (known: {known})") from None

    def choose(self, sys_object_id: Oid | None) -> Profile:
        if sys_object_id is not None:
            for prefix, profile in self._prefixes:
                if sys_object_id[: len(prefix)] == prefix:
                    return profile
        return self.by_name["generic"]
