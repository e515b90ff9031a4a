"""Which interfaces an agent polls and which it alerts on (the agent config's `interfaces:`).

A policy is written at up to three levels: the agent's `interfaces:`, a block
per device role under `interfaces.roles`, and a device's own `interfaces:` in
the inventory. A key given at a more specific level replaces the same key of
the level above; keys left out are inherited. Matchers are regular
expressions searched in ifName, ifAlias or ifDescr (`{ifAlias: "(?i)uplink"}`;
several keys in one matcher must all match; a list matches when any matcher
does). Types are IANAifType numbers or their names.

An interface is then one of: not polled (left out of samples and events; the
walk still reads its row, a GETBULK walk reads a column whole), polled
quietly (metrics, no link or threshold events), alerted (an up-to-down
transition opens an incident; the state found at first sight is a baseline)
or monitored (alerted, and down at first sight is an incident too).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Literal, TypeVar

# IANAifType-MIB (revision 2017-03-30) by name, for the names a config may give; any
# number is accepted as it is.
IF_TYPES: dict[str, int] = {
    "other": 1,
    "ethernetCsmacd": 6,
    "iso88023Csmacd": 7,
    "ds1": 18,
    "e1": 19,
    "propPointToPointSerial": 22,
    "ppp": 23,
    "softwareLoopback": 24,
    "ds3": 30,
    "frameRelay": 32,
    "atm": 37,
    "sonet": 39,
    "aal5": 49,
    "propVirtual": 53,
    "propMultiplexor": 54,
    "fibreChannel": 56,
    "fastEther": 62,
    "ieee80211": 71,
    "adsl": 94,
    "vdsl": 97,
    "virtualIpAddress": 112,
    "gigabitEthernet": 117,
    "hdlc": 118,
    "docsCableMaclayer": 127,
    "tunnel": 131,
    "atmSubInterface": 134,
    "l2vlan": 135,
    "l3ipvlan": 136,
    "l3ipxvlan": 137,
    "ipForward": 142,
    "mplsTunnel": 150,
    "usb": 160,
    "ieee8023adLag": 161,
    "mpls": 166,
    "pos": 171,
    "opticalChannel": 195,
    "opticalTransport": 196,
    "bridge": 209,
    "sixToFour": 215,
    "ciscoISLvlan": 222,
    "ifPwType": 246,
    "gpon": 250,
    "vdsl2": 251,
    "vmwareVirtualNic": 258,
    "otnOdu": 260,
    "otnOtu": 261,
    "ifVfiType": 262,
    "aluEpon": 266,
    "aluEponOnu": 267,
    "aluGponOnu": 270,
}

# Interfaces that exist in software: their oper status follows the ports beneath them (or
# nothing at all: a loopback, a VLAN with no member up), and a port that matters raises its
# own incident. Polled for their traffic, not alerted on by default.
VIRTUAL_TYPES: tuple[str, ...] = (
    "softwareLoopback",
    "propVirtual",
    "virtualIpAddress",
    "tunnel",
    "l2vlan",
    "l3ipvlan",
    "l3ipxvlan",
    "ipForward",
    "mplsTunnel",
    "mpls",
    "sixToFour",
    "ciscoISLvlan",
    "ifPwType",
    "ifVfiType",
)

T = TypeVar("T")
IfClass = Literal["skip", "quiet", "alert", "monitored"]
IfType = int | str


def type_number(value: IfType) -> int:
    """An ifType given as a number or an IANAifType name; ValueError naming a typo."""
    if isinstance(value, int):
        if not 1 <= value <= 2**31 - 1:
            raise ValueError(f"ifType {value} is not an IANAifType number")
        return value
    number = IF_TYPES.get(value)
    if number is None:
        close = difflib.get_close_matches(value, list(IF_TYPES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown ifType name {value!r}: {hint}(or give its IANAifType number)")
    return number


@dataclass(frozen=True)
class IfMatch:
    """Regular expressions searched in an interface's names; every one given must match."""

    ifName: str | None = None  # noqa: N815  # the IF-MIB object names, as the samples use them
    ifAlias: str | None = None  # noqa: N815
    ifDescr: str | None = None  # noqa: N815

    def __post_init__(self) -> None:
        given = dict(self.items())
        if not given:
            raise ValueError("a matcher needs ifName, ifAlias or ifDescr (a regular expression)")
        compiled = []
        for key, pattern in given.items():
            try:
                compiled.append((key, re.compile(pattern)))
            except re.error as exc:
                raise ValueError(f"{key}: invalid regular expression {pattern!r}: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    def items(self) -> list[tuple[str, str]]:
        return [
            (k, v)
            for k, v in (
                ("ifName", self.ifName),
                ("ifAlias", self.ifAlias),
                ("ifDescr", self.ifDescr),
            )
            if v is not None
        ]

    def matches(self, name: str, alias: str, descr: str) -> bool:
        values = {"ifName": name, "ifAlias": alias, "ifDescr": descr}
        compiled: tuple[tuple[str, re.Pattern[str]], ...] = self.__dict__["_compiled"]
        return all(pattern.search(values[key]) for key, pattern in compiled)


def _check_types(types: list[IfType] | None) -> None:
    for value in types or ():
        try:
            type_number(value)
        except ValueError as exc:
            raise ValueError(f"exclude_types: {exc}") from None


@dataclass(frozen=True)
class PollPolicy:
    """`poll:`: which interfaces are left out of the samples (default: none)."""

    exclude_types: list[IfType] | None = None
    exclude: list[IfMatch] | None = None
    include: list[IfMatch] | None = None  # polled even when excluded above

    def __post_init__(self) -> None:
        _check_types(self.exclude_types)


@dataclass(frozen=True)
class AlertPolicy:
    """`alert:`: which polled interfaces raise link and threshold events."""

    exclude_types: list[IfType] | None = None  # default: VIRTUAL_TYPES
    exclude: list[IfMatch] | None = None
    include: list[IfMatch] | None = None  # given: only these (and the monitored) alert
    monitored: list[IfMatch] | None = None  # alerted, and down at first sight is an incident

    def __post_init__(self) -> None:
        _check_types(self.exclude_types)


@dataclass(frozen=True)
class InterfacePolicyConfig:
    """One level of the policy: a device's `interfaces:` in the inventory, or a role's."""

    poll: PollPolicy = field(default_factory=PollPolicy)
    alert: AlertPolicy = field(default_factory=AlertPolicy)


@dataclass(frozen=True)
class InterfacesConfig(InterfacePolicyConfig):
    """The agent config's `interfaces:`: its own level, and one per device role."""

    roles: dict[str, InterfacePolicyConfig] = field(default_factory=dict)

    def for_device(self, role: str, own: InterfacePolicyConfig | None = None) -> InterfacePolicy:
        return InterfacePolicy.resolve(self, self.roles.get(role), own)


def _pick(levels: list[T | None]) -> T | None:
    """The most specific level's value."""
    for value in reversed(levels):
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class InterfacePolicy:
    """One device's policy, resolved from its levels."""

    poll_exclude_types: frozenset[int] = frozenset()
    poll_exclude: tuple[IfMatch, ...] = ()
    poll_include: tuple[IfMatch, ...] = ()
    alert_exclude_types: frozenset[int] = frozenset(IF_TYPES[t] for t in VIRTUAL_TYPES)
    alert_exclude: tuple[IfMatch, ...] = ()
    alert_include: tuple[IfMatch, ...] | None = None  # None: every polled interface
    monitored: tuple[IfMatch, ...] = ()

    @classmethod
    def resolve(cls, *levels: InterfacePolicyConfig | None) -> InterfacePolicy:
        """Later levels override earlier ones key by key."""
        given = [level for level in levels if level is not None]
        polls = [level.poll for level in given]
        alerts = [level.alert for level in given]
        default = cls()

        def types(values: list[IfType] | None, fallback: frozenset[int]) -> frozenset[int]:
            return fallback if values is None else frozenset(map(type_number, values))

        include = _pick([a.include for a in alerts])
        return cls(
            poll_exclude_types=types(
                _pick([p.exclude_types for p in polls]), default.poll_exclude_types
            ),
            poll_exclude=tuple(_pick([p.exclude for p in polls]) or ()),
            poll_include=tuple(_pick([p.include for p in polls]) or ()),
            alert_exclude_types=types(
                _pick([a.exclude_types for a in alerts]), default.alert_exclude_types
            ),
            alert_exclude=tuple(_pick([a.exclude for a in alerts]) or ()),
            alert_include=None if include is None else tuple(include),
            monitored=tuple(_pick([a.monitored for a in alerts]) or ()),
        )

    def classify(self, if_type: int | None, name: str, alias: str, descr: str) -> IfClass:
        """What the agent does with one interface (an unknown ifType matches no type)."""

        def any_of(matchers: tuple[IfMatch, ...]) -> bool:
            return any(m.matches(name, alias, descr) for m in matchers)

        excluded = if_type in self.poll_exclude_types or any_of(self.poll_exclude)
        if excluded and not any_of(self.poll_include):
            return "skip"
        if any_of(self.monitored):
            return "monitored"  # named by the operator: beats the alert exclusions
        if if_type in self.alert_exclude_types or any_of(self.alert_exclude):
            return "quiet"
        if self.alert_include is not None and not any_of(self.alert_include):
            return "quiet"
        return "alert"
