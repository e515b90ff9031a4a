"""The device inventory an agent polls: devices and the SNMP credentials they use.

`enoc sim --inventory-out` writes this format; an agent config includes it
(`inventory: devices.yaml`) or lists `devices` and `credentials` inline.
Secrets may come from files (`auth_key_file: ...`) or the environment (`${VAR}`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from enoc.config import ConfigIssue, Secret, register_kind
from enoc.ifpolicy import InterfacePolicyConfig

AuthProtocol = Literal["none", "MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PrivProtocol = Literal["none", "DES", "AES-128", "AES-192", "AES-256"]
# A DNS name (RFC 1123 labels; "_" too, which some internal zones use), with or without
# the root's trailing dot.
HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?"
)


@dataclass(frozen=True)
class Credential:
    version: Literal["1", "2c", "3"]
    community: Secret | None = None
    user: str = ""
    auth_protocol: AuthProtocol = "none"
    auth_key: Secret | None = None
    priv_protocol: PrivProtocol = "none"
    priv_key: Secret | None = None

    def __post_init__(self) -> None:
        if self.version in ("1", "2c"):
            if self.community is None:
                raise ValueError(f"version {self.version} needs a community (or community_file)")
            return
        if not self.user:
            raise ValueError("version 3 needs a user")
        if self.priv_protocol != "none" and self.auth_protocol == "none":
            raise ValueError("privacy (priv_protocol) needs authentication (auth_protocol)")
        for proto, key, name in (
            (self.auth_protocol, self.auth_key, "auth_key"),
            (self.priv_protocol, self.priv_key, "priv_key"),
        ):
            if proto != "none" and (key is None or len(key.reveal()) < 8):
                raise ValueError(f"{name} (or {name}_file) of at least 8 characters is needed")

    @property
    def level(self) -> str:
        if self.version in ("1", "2c"):
            return f"v{self.version}"
        if self.auth_protocol == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol == "none" else "authPriv"


@dataclass(frozen=True)
class InventoryDevice:
    name: str
    address: str  # an IPv4 or IPv6 address, or a DNS name (resolved by the agent, cached)
    credentials: str
    port: int = 161
    site: str = ""
    rtc: str = ""
    role: str = ""
    profile: str = ""  # a profile name; empty: chosen by sysObjectID
    parent: str = ""  # the device this one hangs off (for correlation at the collector)
    # Traps: the credentials (names) its traps may carry, default `credentials`; and its
    # SNMPv3 engine ID in hex, default learned from its first authenticated trap.
    trap_credentials: list[str] = field(default_factory=list)
    trap_engine_id: str = ""
    # this device's own interface policy, over its role's and the agent's (enoc.ifpolicy)
    interfaces: InterfacePolicyConfig | None = None
    ping: bool = True  # false: not pinged, when the agent pings (agent.config `ping:`)

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            if self.address.replace(".", "").isdigit() or not HOST_NAME.fullmatch(self.address):
                raise ValueError(
                    f"address {self.address!r} is neither an IP address nor a DNS name"
                ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a UDP port")
        if self.trap_engine_id:
            try:
                engine_id = bytes.fromhex(self.trap_engine_id.removeprefix("0x"))
            except ValueError:
                raise ValueError(
                    f"trap_engine_id {self.trap_engine_id!r} is not hexadecimal"
                ) from None
            if not 5 <= len(engine_id) <= 32:  # SnmpEngineID, RFC 3411
                raise ValueError(
                    f"trap_engine_id has {len(engine_id)} octets; an engine ID has 5 to 32"
                )

    @property
    def trap_credential_names(self) -> list[str]:
        """The credentials a trap from this device may carry."""
        return self.trap_credentials or [self.credentials]

    @property
    def trap_engine(self) -> bytes:
        """The configured engine ID of its traps; empty: learned."""
        return bytes.fromhex(self.trap_engine_id.removeprefix("0x"))


@dataclass(frozen=True)
class Inventory:
    devices: list[InventoryDevice] = field(default_factory=list)
    credentials: dict[str, Credential] = field(default_factory=dict)


def inventory_issues(inventory: Inventory, filename: str) -> list[ConfigIssue]:
    """References that must resolve, names that must be unique, and v2c flagged."""
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    engines: dict[bytes, str] = {}  # trap_engine_id -> the first device with it
    for i, device in enumerate(inventory.devices):
        if device.credentials not in inventory.credentials:
            known = ", ".join(inventory.credentials) or "none defined"
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"devices[{i}].credentials",
                    f"unknown credentials {device.credentials!r} (known: {known})",
                )
            )
        for j, name in enumerate(device.trap_credentials):
            if name not in inventory.credentials:
                known = ", ".join(inventory.credentials) or "none defined"
                issues.append(
                    ConfigIssue(
                        filename,
                        0,
                        f"devices[{i}].trap_credentials[{j}]",
                        f"unknown credentials {name!r} (known: {known})",
                    )
                )
        engine = device.trap_engine
        if engine and engine in engines:
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"devices[{i}].trap_engine_id",
                    f"is {engines[engine]!r}'s too; an engine ID belongs to one device",
                )
            )
        engines.setdefault(engine, device.name)
        if device.name in seen:
            issues.append(
                ConfigIssue(filename, 0, f"devices[{i}].name", f"{device.name!r} is listed twice")
            )
        seen.add(device.name)
    for name, cred in inventory.credentials.items():
        if cred.level != "authPriv":
            issues.append(
                ConfigIssue(
                    filename,
                    0,
                    f"credentials.{name}",
                    f"{cred.level} sends data or credentials in clear; "
                    "SNMPv3 authPriv is the default to use",
                    warning=True,
                )
            )
    return issues


def _is_inventory(mapping: Mapping[str, Any]) -> bool:
    return "devices" in mapping and "agent_id" not in mapping


register_kind("inventory", Inventory, _is_inventory, inventory_issues)
