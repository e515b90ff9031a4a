"""Fleet files: the YAML form of `FleetSpec`, read with enoc's one config loader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from enoc.config import (
    Checked,
    ConfigIssue,
    check_file,
    register_kind,
    skipping_unread,
    unreadable,
)
from enoc.runtime import parse_host_port
from enoc.snmp.usm import UsmUser
from simulators.fleet import PROFILES, DeviceGroup, FleetSpec, SnmpCredential


def _is_fleet(mapping: Mapping[str, object]) -> bool:
    return "sites" in mapping


def _fleet_issues(spec: FleetSpec, filename: str) -> list[ConfigIssue]:
    return [ConfigIssue(filename, 0, key, message) for key, message in fleet_problems(spec)]


def check_fleet(path: Path) -> Checked[FleetSpec]:
    """Everything `enoc sim --fleet` checks before it serves (check-config runs this too):
    the file, and the recordings it names (relative to the file)."""
    checked = check_file(path, FleetSpec, _fleet_issues)
    spec = checked.value
    if spec is None:
        return checked
    with skipping_unread():
        for s, site in enumerate(spec.sites):
            with skipping_unread():
                for g, group in enumerate(site.devices):
                    with skipping_unread():
                        if group.recording:
                            recording = path.parent / Path(group.recording).expanduser()
                            problem = unreadable(recording)
                            if problem:
                                checked.error(
                                    f"sites[{s}].devices[{g}].recording",
                                    f"cannot read {recording}: {problem}",
                                )
    return checked


register_kind("fleet", FleetSpec, _is_fleet, _fleet_issues, check_fleet)


def load_fleet(path: Path) -> FleetSpec:
    """Load and check a fleet file; errors name the file, the line, the key and what was
    expected, every one of them: `check_fleet`, as check-config."""
    spec = check_fleet(path).result()
    return replace(spec, base_dir=str(path.parent))


def fleet_problems(spec: FleetSpec) -> list[tuple[str, str]]:
    """What the schema's types cannot say: credentials complete, names unique, ports sane.

    Each rule runs on its own: in a partly read spec, one that meets a value that could
    not be read stops alone (`skipping_unread`), and the others still name their mistakes.
    """
    problems: list[tuple[str, str]] = []
    with skipping_unread():
        if not spec.sites:
            problems.append(("sites", "expected at least one site"))
    with skipping_unread():
        if not 1 <= spec.port <= 65535:
            problems.append(("port", f"expected a UDP port from 1 to 65535, got {spec.port}"))
    with skipping_unread():
        if not 484 <= spec.max_message_size <= 65507:
            problems.append(("max_message_size", "expected 484 to 65507 octets"))
    with skipping_unread():
        for i, cred in enumerate(spec.snmp):
            with skipping_unread():
                problems += [(f"snmp[{i}].{key}", msg) for key, msg in _credential_problems(cred)]
    with skipping_unread():
        for i, receiver in enumerate(spec.trap_receivers):
            try:
                with skipping_unread():
                    parse_host_port(receiver)
            except ValueError as exc:
                problems.append((f"trap_receivers[{i}]", str(exc)))
    seen: set[str] = set()
    with skipping_unread():
        for s, site in enumerate(spec.sites):
            with skipping_unread():
                if site.name in seen:
                    problems.append((f"sites[{s}].name", f"site {site.name!r} is listed twice"))
                seen.add(site.name)
            with skipping_unread():
                for g, group in enumerate(site.devices):
                    problems += _group_problems(f"sites[{s}].devices[{g}]", group)
    return problems


def _group_problems(where: str, group: DeviceGroup) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    with skipping_unread():
        if group.count < 1:
            problems.append((f"{where}.count", "expected at least 1"))
    with skipping_unread():
        if group.interfaces is not None and not 1 <= group.interfaces <= 4096:
            problems.append((f"{where}.interfaces", "expected 1 to 4096 interfaces"))
    with skipping_unread():
        if group.role not in PROFILES:
            problems.append((f"{where}.role", f"expected one of {', '.join(PROFILES)}"))
    with skipping_unread():
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
