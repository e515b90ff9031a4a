"""Traps by name, with rules.

Every trap is named from the MIB catalogue (enoc.mibs): its notification
(`upsOnBattery`, PowerNet-MIB) and each varbind as object and index
(`ciscoEnvMonSupplyState.1`), an enumeration's value as its label (`critical`).
A rule then says what a notification means:

- a *raise* opens an alarm (event kind `alarm`, state `raised`) at the rule's
  severity; a *clear* (`clear: true`) ends it (`cleared`). A raise and its clear
  share an `alarm` name, and the alarm's resource is that name and the key the
  rule takes from the trap (`index_of`: the row a varbind speaks of; `value_of`:
  varbinds' values), so that the clear resolves the raise's incident: same
  device, same resource;
- `state_of` and `states` decide by a varbind's value (CISCO-ENVMON's status
  changes): each value a severity (a raise) or `clear`;
- `resolve_after`: a raise whose MIB has no clear is resolved by the collector
  that long after its last trap (the event carries it as attr `resolve_after`).

Rules are keyed by notification: the shipped table (agent.trapdefaults) and then
the operator's file (`traps.rules`), whose rule for a notification replaces the
shipped one. A trap with no rule stays an informational trap event, named where
the MIB is known.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from enoc.config import Checked, ConfigIssue, Duration, check_file, check_include
from enoc.mibs import MibIndex, MibObject, Named, Notification, UnknownName
from enoc.snmp import ber
from enoc.snmp.ber import Oid
from enoc.wire import Event, Severity, Value

log = logging.getLogger("enoc.agent.traps")

SEVERITIES: tuple[str, ...] = get_args(Severity)
CLEAR = "clear"
MAX_VARBINDS = 32  # varbinds kept in an event's attrs; a trap may carry more
MAX_VALUE = 256  # characters of a varbind's value kept in attrs
MESSAGE_VARBINDS = 4  # varbinds told in an event's message


# ---------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class ObjectName:
    """An instance OID as the MIB names it: the object, its module and the index."""

    name: str
    module: str
    oid: Oid  # the object's own OID (a column or a scalar)
    index: Oid  # what follows it (a scalar's .0)

    @property
    def text(self) -> str:
        return f"{self.name}.{ber.oid_text(self.index)}" if self.index else self.name


class MibCatalogue:
    """What naming traps asks of the MIB facts (enoc.mibs' index: the shipped MIBs and
    the operator's), each answer None or empty for what no loaded MIB knows."""

    def __init__(self, index: MibIndex) -> None:
        self.index = index
        self._labels: dict[Oid, Mapping[int, str]] = {}
        self._objects: dict[tuple[str, str], MibObject | None] = {}

    def notification(self, key: str | Oid) -> Notification | None:
        """By name (`upsOnBattery`, `PowerNet-MIB::upsOnBattery`) or OID."""
        return self.index.notification(key)

    def _object(self, named: Named) -> MibObject | None:
        key = (named.module, named.name)
        if key not in self._objects:
            try:
                self._objects[key] = self.index.object(f"{named.module}::{named.name}")
            except UnknownName:
                self._objects[key] = None
        return self._objects[key]

    def object(self, key: str) -> Oid | None:
        """An object's (or identity's) OID by name (`ifIndex`, `IF-MIB::ifIndex`)."""
        try:
            return self.index.object(key).oid
        except UnknownName:
            return None

    def instance(self, oid: Oid) -> ObjectName | None:
        """The object an instance OID belongs to, with its index."""
        named = self.index.name(oid)
        if named is None:
            return None
        found = self._object(named)
        # Only a value's own object names it: an OID under a node (enterprises.99999.1.1)
        # stays numeric rather than half named.
        if found is None or found.kind not in ("scalar", "column") or not named.suffix:
            return None
        return ObjectName(named.name, named.module, found.oid, named.suffix)

    def labels(self, object_oid: Oid) -> Mapping[int, str]:
        """An enumerated object's labels by value (empty for any other object)."""
        labels = self._labels.get(object_oid)
        if labels is None:
            named = self.index.name(object_oid)
            found = self._object(named) if named is not None and not named.suffix else None
            enums = (found.enums if found is not None else None) or {}
            labels = self._labels[object_oid] = {v: k for k, v in enums.items()}
        return labels

    def oid_name(self, oid: Oid) -> str | None:
        """The name of an OID given as a value (an identity such as upsAlarmOnBattery)."""
        named = self.index.name(oid)
        return named.name if named is not None and not named.suffix else None


@functools.cache
def default_catalogue() -> MibCatalogue:
    """The shipped MIB facts' catalogue, loaded once per process."""
    return MibCatalogue(MibIndex.load())


def catalogue_for(mibs: Path | None) -> MibCatalogue:
    """The shipped MIB facts and the operator's compiled folder (the agent's `mibs:`) over
    them; ValueError for a folder of facts that do not read."""
    return default_catalogue() if mibs is None else MibCatalogue(MibIndex.load([mibs]))


# ---------------------------------------------------------------- rules as written


@dataclass(frozen=True)
class TrapRuleConfig:
    """One rule as written, in the shipped table or the operator's `traps.rules` file."""

    notification: str  # a name (`upsOnBattery`, `PowerNet-MIB::upsOnBattery`) or numeric OID
    alarm: str = ""  # the raise/clear pair it belongs to; default: the notification's name
    clear: bool = False  # it ends the alarm
    severity: Severity = "major"  # a raise's (and a `states` value's not listed)
    index_of: str = ""  # the object whose varbind's index keys the alarm (its row)
    value_of: list[str] = field(default_factory=list)  # objects whose values key it
    state_of: str = ""  # the object whose value decides, by `states`
    states: dict[str, str] = field(default_factory=dict)  # value label -> severity | clear
    resolve_after: Duration | None = None  # resolved that long after its last trap

    def __post_init__(self) -> None:
        if self.clear and (self.states or self.state_of):
            raise ValueError("clear: a clearing rule decides nothing by states")
        if self.clear and self.resolve_after is not None:
            raise ValueError("resolve_after: a clearing rule resolves at once")
        if bool(self.state_of) != bool(self.states):
            raise ValueError("states: give state_of and states together")
        for value, outcome in self.states.items():
            if outcome != CLEAR and outcome not in SEVERITIES:
                choices = ", ".join((CLEAR, *SEVERITIES))
                raise ValueError(f"states: {value}: expected one of {choices}, got {outcome!r}")
        if self.resolve_after is not None and float(self.resolve_after) <= 0:
            raise ValueError("resolve_after: must be more than 0s")


@dataclass(frozen=True)
class TrapRulesFile:
    """The operator's rule file (`traps.rules`)."""

    rules: list[TrapRuleConfig] = field(default_factory=list)


# ---------------------------------------------------------------- rules resolved


@dataclass(frozen=True)
class TrapRule:
    """A rule with its names resolved against the catalogue."""

    notification: Notification
    alarm: str
    clear: bool
    severity: Severity
    index_of: Oid | None
    value_of: tuple[Oid, ...]
    state_of: Oid | None
    states: Mapping[str, str]  # by number (as text) and label, or an identity's OID (text)
    resolve_after: float | None
    origin: str  # where it was written: "shipped" or the file's name


class RuleError(ValueError):
    """A rule that does not resolve: `key` names its field (`notification`, `states.foo`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def resolve(config: TrapRuleConfig, catalogue: MibCatalogue, origin: str) -> TrapRule:
    """The rule with its notification and objects found in the catalogue (RuleError)."""
    found = catalogue.notification(_oid_or_name(config.notification))
    if found is None:
        raise RuleError("notification", f"no MIB of the catalogue defines {config.notification!r}")

    def obj(key: str, name: str) -> Oid:
        oid = catalogue.object(name)
        if oid is None:
            raise RuleError(key, f"no MIB of the catalogue defines the object {name!r}")
        return oid

    index_of = obj("index_of", config.index_of) if config.index_of else None
    value_of = tuple(obj(f"value_of[{i}]", n) for i, n in enumerate(config.value_of))
    state_of = obj("state_of", config.state_of) if config.state_of else None
    states: dict[str, str] = {}
    if state_of is not None:
        labels = catalogue.labels(state_of)
        by_label = {label: number for number, label in labels.items()}
        for value, outcome in config.states.items():
            if value in by_label:
                states[value] = states[str(by_label[value])] = outcome
            elif value.lstrip("-").isdigit():
                states[value] = outcome
                if int(value) in labels:
                    states[labels[int(value)]] = outcome
            elif not labels and (identity := catalogue.object(value)) is not None:
                # an OID-valued object (AutonomousType): its values are identities by name
                states[ber.oid_text(identity)] = outcome
            else:
                known = ", ".join(labels.values()) or "none: give numbers or OID names"
                close = difflib.get_close_matches(value, list(by_label), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RuleError(
                    f"states.{value}",
                    f"not a value of {config.state_of}{hint} (its labels: {known})",
                )
    resolve_after = float(config.resolve_after) if config.resolve_after is not None else None
    return TrapRule(
        found,
        config.alarm or found.name,
        config.clear,
        config.severity,
        index_of,
        value_of,
        state_of,
        states,
        resolve_after,
        origin,
    )


def _oid_or_name(text: str) -> str | Oid:
    stripped = text.strip().lstrip(".")
    if stripped and all(part.isdigit() for part in stripped.split(".")):
        return ber.parse_oid_text(stripped)
    return text.strip()


def rule_issues(
    rules: Sequence[TrapRuleConfig],
    catalogue: MibCatalogue,
    filename: str,
    shipped: Sequence[TrapRuleConfig] = (),
) -> list[ConfigIssue]:
    """What in a rule file does not resolve, or repeats a notification (errors), or clears
    an alarm no rule raises (a warning); each issue names the rule (`rules[3].states.x`)."""
    issues: list[ConfigIssue] = []
    resolved: list[tuple[int, TrapRule]] = []
    for i, config in enumerate(rules):
        try:
            resolved.append((i, resolve(config, catalogue, filename)))
        except RuleError as exc:
            issues.append(ConfigIssue(filename, 0, f"rules[{i}].{exc.key}", exc.message))
    seen: dict[Oid, int] = {}
    for i, rule in resolved:
        oid = rule.notification.oid
        if oid in seen:
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"rules[{i}].notification",
                    f"{rule.notification.name} has a rule already (rules[{seen[oid]}])",
                )
            )
        seen.setdefault(oid, i)
    raised = {r.alarm for _, r in resolved if not r.clear}
    raised |= {c.alarm or c.notification.rpartition("::")[2] for c in shipped if not c.clear}
    for i, rule in resolved:
        if rule.clear and rule.alarm not in raised:
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"rules[{i}].alarm",
                    f"{rule.alarm!r} is raised by no rule: this clear would end nothing",
                    warning=True,
                )
            )
    return issues


# ---------------------------------------------------------------- naming and deciding


@dataclass
class Decision:
    """What a trap means: its names, and the alarm it raises or clears (if a rule says)."""

    name: str  # the notification's name, or its numeric OID
    module: str  # its MIB ("" when unknown)
    attrs: dict[str, Value]
    message: str
    resource: str = ""  # the alarm's, when a rule matched
    raised: bool = False
    severity: Severity = "info"

    @property
    def alarm(self) -> bool:
        return bool(self.resource)

    def mark(self, events: list[Event]) -> list[Event]:
        """Events the agent made of the trap itself (a link, a BGP session, a reboot):
        named by it, in their attrs and message."""
        if not self.module:
            return events
        for event in events:
            event.attrs["trap"], event.attrs["mib"] = self.name, self.module
            event.message = event.message.replace("(trap)", f"({self.name} trap)")
        return events


class TrapRules:
    """The rules in force (the shipped ones, then the operator's) and the catalogue."""

    def __init__(self, catalogue: MibCatalogue, rules: Iterable[TrapRule]) -> None:
        self.catalogue = catalogue
        self.rules: dict[Oid, TrapRule] = {}
        for rule in rules:
            self.rules[rule.notification.oid] = rule  # a later rule replaces an earlier one

    def notification_oid(self, trap_oid: Oid, version: str) -> Oid:
        """The notification a trap is. A v1 trap's OID is enterprise.0.specific (RFC 3584
        3.1); a notification defined without the 0 arc (UPS-MIB's upsTraps, Juniper's
        chassis traps) goes out over v1 as its OID less the last arc and that arc (RFC
        3584 3.2), so when the catalogue knows enterprise.specific and not the mapped
        OID, the trap is that notification."""
        if version != "1" or len(trap_oid) < 3 or trap_oid[-2] != 0:
            return trap_oid
        if self.catalogue.notification(trap_oid) is not None:
            return trap_oid
        short = (*trap_oid[:-2], trap_oid[-1])
        return short if self.catalogue.notification(short) is not None else trap_oid

    def name_varbinds(self, varbinds: Iterable[tuple[Oid, int, object]]) -> dict[str, Value]:
        """Attrs of the varbinds: `object.index` (numeric OID when unknown) -> value, an
        enumeration as its label, an OID as its name."""
        attrs: dict[str, Value] = {}
        for oid, _tag, value in varbinds:
            if len(attrs) >= MAX_VARBINDS:
                break
            named = self.catalogue.instance(oid)
            key = named.text if named is not None else ber.oid_text(oid)
            text = self._value(named.oid if named is not None else None, value)
            if text is not None:
                attrs[key] = text
        return attrs

    def _value(self, object_oid: Oid | None, value: object) -> Value | None:
        """A varbind's value as attrs keep it: an enumeration's label, an OID's name."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            if object_oid is not None:
                return self.catalogue.labels(object_oid).get(value, value)
            return value
        if isinstance(value, tuple):
            return self.catalogue.oid_name(value) or ber.oid_text(value)
        if isinstance(value, bytes):
            return _octets(value)[:MAX_VALUE]
        if isinstance(value, str | float):
            return value
        return None

    def decide(self, trap_oid: Oid, varbinds: Sequence[tuple[Oid, int, object]]) -> Decision:
        """The trap named, and what its rule makes of it."""
        known = self.catalogue.notification(trap_oid)
        name = known.name if known is not None else ber.oid_text(trap_oid)
        module = known.module if known is not None else ""
        named = self.name_varbinds(varbinds)
        head = f"{name} ({module})" if module else f"trap {name}"
        told = ", ".join(f"{k} {v}" for k, v in list(named.items())[:MESSAGE_VARBINDS])
        message = f"{head}: {told}" if told else head
        attrs: dict[str, Value] = {"trap_oid": ber.oid_text(trap_oid)}
        if known is not None:
            attrs["trap"], attrs["mib"] = known.name, known.module
        attrs.update(named)
        decision = Decision(name, module, attrs, message)
        rule = self.rules.get(trap_oid)
        if rule is None:
            return decision
        raised, severity = True, rule.severity
        if rule.clear:
            raised = False
        elif rule.state_of is not None:
            value = _find(rule.state_of, varbinds)
            if value is not None:
                outcome = self._outcome(rule, value)
                if outcome == CLEAR:
                    raised = False
                elif outcome in SEVERITIES:
                    severity = outcome  # type: ignore[assignment]
        decision.resource = self._resource(rule, varbinds)
        decision.raised = raised
        decision.severity = severity if raised else "info"
        attrs["alarm"] = rule.alarm
        if raised and rule.resolve_after is not None:
            attrs["resolve_after"] = rule.resolve_after
        return decision

    def _outcome(self, rule: TrapRule, value: object) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return rule.states.get(str(value))
        if isinstance(value, tuple):
            return rule.states.get(ber.oid_text(value))
        return None

    def _resource(self, rule: TrapRule, varbinds: Sequence[tuple[Oid, int, object]]) -> str:
        """`alarm:<alarm>` and the key the rule takes from the trap: the same for a raise
        and its clear. A varbind the trap lacks keys as `-`."""
        parts = [f"alarm:{rule.alarm}"]
        if rule.index_of is not None:
            found = _instance(rule.index_of, varbinds)
            parts.append(ber.oid_text(found[0]) if found is not None else "-")
        for object_oid in rule.value_of:
            value = self._value(object_oid, _find(object_oid, varbinds))
            parts.append("-" if value is None else str(value)[:64])
        return ":".join(parts)


def _find(object_oid: Oid, varbinds: Sequence[tuple[Oid, int, object]]) -> object:
    """The value of the trap's varbind that is an instance of `object_oid` (None: none)."""
    found = _instance(object_oid, varbinds)
    return found[1] if found is not None else None


def _instance(
    object_oid: Oid, varbinds: Sequence[tuple[Oid, int, object]]
) -> tuple[Oid, object] | None:
    """The index and value of the trap's first varbind that is an instance of the object."""
    n = len(object_oid)
    for oid, _tag, value in varbinds:
        if oid[:n] == object_oid and len(oid) > n:
            return oid[n:], value
    return None


def _octets(value: bytes) -> str:
    """Text when the octets are printable text (NUL padding dropped), else hex (a MAC)."""
    try:
        text = value.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return value.hex(":")
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return text
    return value.hex(":")


# ---------------------------------------------------------------- loading


def compile_rules(
    catalogue: MibCatalogue,
    shipped: Sequence[TrapRuleConfig],
    path: Path | None = None,
) -> TrapRules:
    """The shipped rules, then the operator's file's (ConfigError naming file, rule and
    key for any that does not read or resolve)."""
    rules: list[TrapRule] = []
    skipped: list[str] = []
    for config in shipped:
        try:
            rules.append(resolve(config, catalogue, "shipped"))
        except RuleError:  # its MIB is not loaded (the tests resolve every shipped one)
            skipped.append(config.notification)
    if skipped:
        log.warning("shipped trap rules whose MIB is not loaded: %s", ", ".join(skipped))
    if path is not None:
        checked = check_file(
            path, TrapRulesFile, lambda f, name: rule_issues(f.rules, catalogue, name, shipped)
        )
        loaded = checked.result()
        rules += (resolve(c, catalogue, str(path)) for c in loaded.rules)
    return TrapRules(catalogue, rules)


def check_rules_include(
    parent: Checked[Any],
    key: str,
    path: Path,
    shipped: Sequence[TrapRuleConfig],
    catalogue: MibCatalogue,
) -> None:
    """The rule file a config names (`traps.rules`), checked as the agent loads it: its
    issues join the config's (`enoc check-config` names them too)."""
    included = check_include(
        parent,
        key,
        path,
        TrapRulesFile,
        lambda f, name: rule_issues(f.rules, catalogue, name, shipped),
    )
    if included is not None:
        parent.include(included)
