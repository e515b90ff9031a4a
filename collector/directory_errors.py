"""What a login through the directory (collector/directory.py) can end in, apart from
the directory itself: the API imports these at every start, and ldap3 (a third of a
second to import) only when `http.ldap` is configured."""

from __future__ import annotations

RETRY_AFTER = 5  # seconds a login refused for a directory outage is told to wait


class DirectoryUnavailable(Exception):
    """The directory cannot answer: unreachable, TLS refused, or the service bind refused."""


class NotGranted(Exception):
    """The password is right, but the user holds no group that a grant names."""


class LoginRefused(Exception):
    """The directory refused the user's bind for the account (`REFUSING_CODES`)."""

    def __init__(self, dn: str, code: int, description: str) -> None:
        super().__init__(f"the directory refused the bind as {dn}: {code} {description}")
        self.dn = dn
        self.code = code
        self.description = description
