"""`http.ldap`: the directory console logins are checked against (collector/directory.py).

Its own module so that the collector's config stays one screen per section; the
`http` section (collector/config.py) holds it as `ldap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from collector.access import Grant
from enoc.config import Duration, Secret
from enoc.logs import redact


@dataclass(frozen=True)
class LdapConfig:
    """`http.ldap`: console logins by name and password checked against a directory
    (collector/directory.py), its groups mapped to a role and scope by `grants`."""

    url: str  # ldaps://HOST[:636], or ldap://HOST[:389] with start_tls: true
    user_base: str  # where users are searched (subtree)
    grants: list[Grant]  # the first whose group the user holds decides
    start_tls: bool = False
    # The CA of the directory's certificate (None: the system's); its host name is checked.
    ca_file: Path | None = None
    # ldap:// without StartTLS sends every password in clear: refused unless this is set.
    insecure_plaintext: bool = False
    bind_dn: str = ""  # the service account that searches (empty: anonymous searches)
    bind_password: Secret | None = None  # or bind_password_file
    user_filter: str = "(uid={name})"  # {name}: the login name, escaped
    name_attribute: str = "uid"  # what the console calls the user (else the login name)
    group_base: str = ""  # where groups are searched; needed unless group_attribute
    group_filter: str = "(member={dn})"  # {dn}: the user's DN; {name}: its name_attribute
    group_attribute: str = ""  # e.g. memberOf: the user entry's groups, no group search
    timeout: Duration = Duration(5)  # connecting, and each request
    max_checks: int = 8  # directory checks at once; beyond them http.login_hash_queue wait

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(
                f'url must be ldaps://HOST[:PORT] or ldap://HOST[:PORT], got "{redact(self.url)}"'
            )
        if parts.username or parts.password or parts.path not in ("", "/"):
            raise ValueError("url takes a host and port only: give bind_dn and user_base")
        if self.start_tls and parts.scheme == "ldaps":
            raise ValueError("start_tls is for ldap:// (ldaps:// is TLS from the start)")
        if parts.scheme == "ldap" and not self.start_tls and not self.insecure_plaintext:
            raise ValueError(
                "ldap:// without start_tls sends passwords in clear: use ldaps:// or "
                "start_tls: true (or, on a trusted link, insecure_plaintext: true)"
            )
        if self.ca_file is not None and not (self.start_tls or parts.scheme == "ldaps"):
            raise ValueError("ca_file needs ldaps:// or start_tls: true")
        if (self.bind_password is not None) != bool(self.bind_dn):
            raise ValueError("bind_dn and bind_password (or bind_password_file) go together")
        if not self.user_base.strip():
            raise ValueError("user_base must name where users are searched")
        if not self.grants:
            raise ValueError("grants: give at least one (group, role, scope): none lets no one in")
        _check_filter("user_filter", self.user_filter, ("{name}",))
        if not self.group_attribute:
            if not self.group_base.strip():
                raise ValueError(
                    "group_base must name where groups are searched (or give "
                    "group_attribute, e.g. memberOf)"
                )
            _check_filter("group_filter", self.group_filter, ("{dn}", "{name}"))
        if float(self.timeout) <= 0 or self.max_checks < 1:
            raise ValueError("timeout must be above 0 and max_checks at least 1")


def _check_filter(key: str, text: str, placeholders: tuple[str, ...]) -> None:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not (text.startswith("(") and text.endswith(")")) or depth != 0:
        raise ValueError(f'{key} must be an LDAP filter in balanced parentheses, got "{text}"')
    if not any(p in text for p in placeholders):
        raise ValueError(f"{key} must contain {' or '.join(placeholders)}")
