"""Who a caller is and what it may reach: a role and a scope of RTCs and sites.

Every way in (a users-file user, an API token, an LDAP login, an OIDC login)
ends as a `Principal`: a display name, a role (viewer < operator < admin),
a `Scope`, and the identity the audit log names (`local:alice`,
`ldap:uid=alice,ou=people,dc=example,dc=org`, `oidc:<issuer>|<subject>`,
`token:<id>`).

A scope is given as `scope: {rtc: [...], site: [...]}` and reaches the sites
of the RTCs it lists and the sites it lists (a union); left out, it reaches
everything. Directory groups and OIDC claims map to a role and a scope through
an ordered list of `Grant`s: the first grant whose group the identity holds
decides (like a firewall's rules, so that one list reads top to bottom).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
Source = Literal["local", "token", "ldap", "oidc"]
SiteRtcs = Mapping[str, frozenset[str]]  # each known site's RTCs, as its agents and devices say


@dataclass(frozen=True)
class ScopeConfig:
    """`scope:` as written in a users file, a grant or a token: RTCs and sites."""

    rtc: list[str] = field(default_factory=list)
    site: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rtc and not self.site:
            raise ValueError(
                "a scope names at least one rtc or site (leave scope out to reach everything)"
            )
        for key in ("rtc", "site"):
            if any(not isinstance(v, str) or not v.strip() for v in getattr(self, key)):
                raise ValueError(f"scope.{key} takes non-empty names")


@dataclass(frozen=True)
class Scope:
    """The RTCs and sites a principal reaches; `everything` when not limited."""

    rtc: frozenset[str] = frozenset()
    site: frozenset[str] = frozenset()
    everything: bool = True

    @classmethod
    def of(cls, config: ScopeConfig | None) -> Scope:
        if config is None:
            return EVERYTHING
        return cls(frozenset(config.rtc), frozenset(config.site), everything=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> Scope:
        """The stored form (`as_dict`) back; None is everything."""
        if raw is None:
            return EVERYTHING
        return cls(frozenset(raw.get("rtc", ())), frozenset(raw.get("site", ())), everything=False)

    def as_dict(self) -> dict[str, list[str]] | None:
        """JSON form: None for everything, else sorted lists (the API, the store)."""
        if self.everything:
            return None
        return {"rtc": sorted(self.rtc), "site": sorted(self.site)}

    def covers(self, rtc: str, site: str) -> bool:
        """Whether a thing of `site` in `rtc` is inside this scope."""
        return self.everything or rtc in self.rtc or site in self.site

    def covers_site(self, site: str, rtc_of: SiteRtcs) -> bool:
        """`covers` for a site name alone, by its RTCs in `rtc_of`: a site that agents or
        devices of several RTCs report (moved, or shared) is covered by its RTCs only when
        the scope has every one of them."""
        if self.everything or site in self.site:
            return True
        rtcs = rtc_of.get(site, frozenset())
        return bool(rtcs) and rtcs <= self.rtc

    def within(self, other: Scope, rtc_of: SiteRtcs) -> bool:
        """Whether everything this scope reaches, `other` reaches too (a token an admin
        makes for a user, a maintenance window an operator opens); `rtc_of`: each site's
        RTCs."""
        if other.everything:
            return True
        if self.everything:
            return False
        return self.rtc <= other.rtc and all(other.covers_site(s, rtc_of) for s in self.site)


EVERYTHING = Scope()


@dataclass(frozen=True)
class Grant:
    """One line of a group mapping: holders of `group` get `role` over `scope`."""

    group: str
    role: Role = "viewer"
    scope: ScopeConfig | None = None

    def __post_init__(self) -> None:
        if not self.group.strip():
            raise ValueError("a grant needs a group")


def first_grant(grants: Iterable[Grant], groups: Iterable[str]) -> Grant | None:
    """The first grant, in the configured order, whose group is among `groups`
    (compared without case, as LDAP compares DNs and most IdPs group names)."""
    held = {g.casefold() for g in groups}
    return next((g for g in grants if g.group.casefold() in held), None)


@dataclass(frozen=True)
class Principal:
    """The caller behind a request, whatever way it came in."""

    name: str
    role: Role
    scope: Scope
    source: Source
    subject: str  # the user name, LDAP DN, OIDC issuer|subject or token id

    @property
    def identity(self) -> str:
        """What the audit log names: `source:subject`."""
        return f"{self.source}:{self.subject}"

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "scope": self.scope.as_dict(),
            "source": self.source,
            "subject": self.subject,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Principal:
        role = raw["role"]
        source = raw["source"]
        if role not in ROLE_RANK or source not in ("local", "token", "ldap", "oidc"):
            raise ValueError(f"not a stored principal: {dict(raw)!r}")
        return cls(
            str(raw["name"]), role, Scope.from_dict(raw.get("scope")), source, str(raw["subject"])
        )

    @classmethod
    def granted(cls, name: str, grant: Grant, source: Source, subject: str) -> Principal:
        return cls(name, grant.role, Scope.of(grant.scope), source, subject)
