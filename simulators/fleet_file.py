"""Fleet files: the YAML form of `FleetSpec`, read with enoc's one config loader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from enoc.config import ConfigError, ConfigIssue, load_config, register_kind
from enoc.runtime import parse_host_port
from enoc.snmp.usm import UsmUser
from simulators.fleet import PROFILES, FleetSpec, SnmpCredential


def _is_fleet(mapping: Mapping[str, object]) -> bool:
    return "sites" in mapping


def _fleet_issues(spec: FleetSpec, filename: str) -> list[ConfigIssue]:
    return [ConfigIssue(filename, 0, key, message) for key, message in fleet_problems(spec)]


register_kind("fleet", FleetSpec, _is_fleet, _fleet_issues)


def load_fleet(path: Path) -> FleetSpec:
    """Load and check a fleet file; errors name the file, the key and what was expected."""
    spec: FleetSpec = load_config(path, FleetSpec)
    issues = _fleet_issues(spec, str(path))
    if issues:
        raise ConfigError(issues)
    return replace(spec, base_dir=str(path.parent))


def fleet_problems(spec: FleetSpec) -> list[tuple[str, str]]:
    """What the schema's types cannot say: credentials complete, names unique, ports sane."""
    problems: list[tuple[str, str]] = []
    if not spec.sites:
        problems.append(("sites", "expected at least one site"))
    if not 1 <= spec.port <= 65535:
        problems.append(("port", f"expected a UDP port from 1 to 65535, got {spec.port}"))
    if not 484 <= spec.max_message_size <= 65507:
        problems.append(("max_message_size", "expected 484 to 65507 octets"))
    for i, cred in enumerate(spec.snmp):
        problems += [(f"snmp[{i}].{key}", msg) for key, msg in _credential_problems(cred)]
    for i, receiver in enumerate(spec.trap_receivers):
        try:
            parse_host_port(receiver)
        except ValueError as exc:
            problems.append((f"trap_receivers[{i}]", str(exc)))
    seen: set[str] = set()
    for s, site in enumerate(spec.sites):
        if site.name in seen:
            problems.append((f"sites[{s}].name", f"site {site.name!r} is listed twice"))
        seen.add(site.name)
        for g, group in enumerate(site.devices):
            where = f"sites[{s}].devices[{g}]"
            if group.count < 1:
                problems.append((f"{where}.count", "expected at least 1"))
            if group.interfaces is not None and not 1 <= group.interfaces <= 4096:
                problems.append((f"{where}.interfaces", "expected 1 to 4096 interfaces"))
            if group.role not in PROFILES:
                problems.append((f"{where}.role", f"expected one of {', '.join(PROFILES)}"))
            if group.name and group.count != 1:
                problems.append((f"{where}.name", "a named device group must have count 1"))
    return problems


def _credential_problems(cred: SnmpCredential) -> list[tuple[str, str]]:
    if cred.version == "2c":
        return [] if cred.community else [("community", "expected a community for version 2c")]
    if not cred.user:
        return [("user", "expected a user name for version 3")]
    try:
        UsmUser(cred.user, cred.auth_protocol, cred.auth_key, cred.priv_protocol, cred.priv_key)
    except ValueError as exc:
        key = "priv_key" if "priv" in str(exc) and "auth" not in str(exc) else "auth_key"
        if "privacy needs authentication" in str(exc):
            key = "auth_protocol"
        return [(key, str(exc))]
    return []
