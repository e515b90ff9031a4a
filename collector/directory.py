"""Console logins checked against an LDAP directory (`http.ldap`), and their sessions confirmed.

A login by a name that is not a users-file user with a password goes to the
directory: the service account (`bind_dn`) searches `user_base` with
`user_filter` (the name escaped, so `*)(uid=*` is a name, not a filter), exactly
one entry must answer, and a bind as that entry with the password decides: 49
(invalidCredentials) is a wrong password; a result that says this user may not
log in (`REFUSING_CODES`: a locked, disabled or expired account as 389-ds, ppolicy
or a proxy answers it) refuses the login (401, logged and audited with the
code); any other result, a directory that cannot be reached and a service
account that cannot bind are the directory being unavailable (503). An
empty password is refused here, never sent: LDAP takes a simple bind without a
password as an anonymous bind, and it "succeeds". The entry's groups (a search
of `group_base` with `group_filter`, or the entry's `group_attribute` such as
Active Directory's memberOf) are matched against `grants` in order; the first
held grants the role and scope (collector/access.py). A grant names a group by
DN or by the value of its first RDN (`noc-admins` for `cn=noc-admins,ou=groups,...`).

A session of a directory identity is confirmed again by `recheck`
(collector/session.py calls it every `http.session_recheck`): the entry is read
again, with `user_filter` (its name a wildcard) so that an account the filter
now excludes (disabled) ends like a deleted one, and its groups decide anew.

TLS is StartTLS on ldap:// or ldaps://, with the directory's certificate and its
host name checked by the standard library against `ca_file` (or the system's
CAs); a plain ldap:// link is allowed only with `insecure_plaintext: true`.

ldap3 is synchronous: every exchange runs on a `HashGate`'s threads (at most
`max_checks` at once, `http.login_hash_queue` logins waiting, then 503), never on
the event loop. Every exchange opens its own connection: logins are rare, and a
connection held open would be one more thing to keep alive through a directory's
restarts.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from collector.access import Grant, Principal, first_grant
from collector.auth import HashGate, Users
from collector.config_ldap import LdapConfig
from collector.directory_errors import DirectoryUnavailable, LoginRefused, NotGranted
from enoc.logs import OnceLogger, StateLogger, get_logger

log = get_logger("enoc.collector.directory")

_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
# A user's bind refused for the account, not for the directory: this user may not log in.
REFUSING_CODES = {
    19: "constraintViolation",  # 389-ds: a locked account, retries exceeded
    32: "noSuchObject",  # the entry went between the search and the bind
    48: "inappropriateAuthentication",
    50: "insufficientAccessRights",
    53: "unwillingToPerform",  # 389-ds: an inactivated account; simple binds disallowed
}
# Codes that also come from a policy for every user (simple binds disallowed, a TLS
# requirement): still one login refused, but counted and logged, since if every user gets
# one the directory is refusing them all and the NOC must see that as an outage would be.
POLICY_CODES = {48, 53}
_NESTING = re.compile(r"""^(\(["'])+|(["'],?\))+$""")


class _VerifiedTls(ldap3.Tls):
    """ldap3's TLS with the standard library's checks: ldap3 turns the context's host
    name check off and does its own with `ssl.match_hostname`, which Python 3.12 removed;
    here the context checks the chain and the host name (an IP address too) itself."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._host,
        )


def normal_dn(dn: str) -> str:
    """A DN as grants and the directory's answers are compared: no spaces around its
    parts, attribute names in lower case (values compare without case in first_grant)."""
    try:
        return ",".join(f"{a.lower()}={v}" for a, v, _sep in parse_dn(dn, strip=True))
    except LDAPException:
        return dn.strip()


def _first_rdn_value(dn: str) -> str:
    try:
        return str(parse_dn(dn, strip=True)[0][1])
    except (LDAPException, IndexError):
        return ""


class Directory:
    """Checks logins and confirms sessions against one LDAP directory."""

    def __init__(self, config: LdapConfig, *, queue: int = 16) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._host = parts.hostname or ""
        self._ldaps = parts.scheme == "ldaps"
        self._port = parts.port or (636 if self._ldaps else 389)
        self._context: ssl.SSLContext | None = None
        if self._ldaps or config.start_tls:
            cafile = None if config.ca_file is None else str(config.ca_file)
            self._context = ssl.create_default_context(cafile=cafile)
        self.grants = [
            replace(g, group=normal_dn(g.group)) if "=" in g.group else g for g in config.grants
        ]
        self.gate = HashGate(config.max_checks, queue)
        self._failing = StateLogger(log)
        if self._context is None:
            log.warning(
                "logins go to %s without TLS (insecure_plaintext): passwords cross the "
                "network in clear",
                config.url,
            )
        self.unavailable = 0  # exchanges the directory could not answer
        self.policy_refusals = 0  # user binds refused with a POLICY_CODES code
        self._policy = OnceLogger(log)

    def takes(self, name: str, users: Users | None) -> bool:
        """Whether a login by `name` is the directory's: not a users-file user with a
        password (such a user is checked against the file, never the directory)."""
        user = None if users is None else users.by_name(name)
        return user is None or not user.password_hash

    def close(self) -> None:
        self.gate.close()

    def counters(self) -> dict[str, float]:
        return {
            "api_directory_unavailable": self.unavailable,
            "api_directory_policy_refusals": self.policy_refusals,
            "api_logins_busy_directory": self.gate.refused,
        }

    async def login(self, name: str, password: str) -> Principal | None:
        """The principal of a right name and password; None for a wrong one or an unknown
        name. Raises `NotGranted` (right password, no grant), `LoginRefused` (the bind
        refused for the account) or `DirectoryUnavailable`."""
        if not password:
            return None
        return await self.gate.run(self._answered, self._login, name, password)

    async def recheck(self, principal: Principal) -> Principal | None:
        """`principal` as the directory has it now; None when its entry is gone (or the
        user filter excludes it) or no grant is held. Raises `DirectoryUnavailable`."""
        return await self.gate.run(self._answered, self._recheck, principal)

    # ------------------------------------------------------------ on the gate's threads

    def _answered(self, exchange: Callable[..., Principal | None], *args: Any) -> Principal | None:
        """`exchange(*args)` with the directory's state logged once per change."""
        where = f"directory {self.config.url}"
        try:
            result = exchange(*args)
        except DirectoryUnavailable as exc:
            self.unavailable += 1
            self._failing.failed(where, exc)
            raise
        except LoginRefused as exc:
            self._failing.ok(where)
            if exc.code in POLICY_CODES:
                self.policy_refusals += 1
                self._policy(
                    f"policy-{exc.code}",
                    f"{where} refused a user's bind with {exc.code} "
                    f"({REFUSING_CODES[exc.code]}): one account, or a policy refusing every "
                    "user's simple bind (then no directory login works: check the directory)",
                )
            raise
        except NotGranted:
            self._failing.ok(where)
            raise
        self._failing.ok(where)
        return result

    def _login(self, name: str, password: str) -> Principal | None:
        with self._service() as conn:
            entry = self._find_user(conn, name)
            if entry is None:
                return None
            dn = str(entry["dn"])
            if not self._bind_as(dn, password):
                return None
            grant = self._grant(conn, dn, entry)
        shown = self._name(entry, name)
        if grant is None:
            raise NotGranted(dn)
        return Principal.granted(shown, grant, "ldap", dn)

    def _recheck(self, principal: Principal) -> Principal | None:
        dn = principal.subject
        with self._service() as conn:
            anyone = self.config.user_filter.replace("{name}", "*")
            conn.search(
                dn,
                anyone,
                ldap3.BASE,
                attributes=self._attributes(),
                time_limit=math.ceil(self.config.timeout),
            )
            if conn.result["result"] == _NO_SUCH_OBJECT:
                return None
            entries = self._entries(conn, dn)
            if not entries:
                return None
            grant = self._grant(conn, dn, entries[0])
        if grant is None:
            return None
        return Principal.granted(principal.name, grant, "ldap", dn)

    @contextlib.contextmanager
    def _service(self) -> Iterator[ldap3.Connection]:
        """A connection bound as the service account (anonymous without `bind_dn`)."""
        password = self.config.bind_password
        conn = self._connection(self.config.bind_dn, password.reveal() if password else "")
        try:
            if not conn.bind():
                raise DirectoryUnavailable(
                    f"the service account {self.config.bind_dn or '(anonymous)'} cannot bind: "
                    f"{conn.result['description']} {conn.result.get('message', '')}".strip()
                )
            yield conn
        except LDAPException as exc:
            raise DirectoryUnavailable(_why(exc)) from None
        finally:
            _close(conn)

    def _connection(self, user: str, password: str) -> ldap3.Connection:
        """An open connection (TLS started when configured), not yet bound."""
        timeout = math.ceil(self.config.timeout)  # ldap3 packs it into a socket option
        tls = None if self._context is None else _VerifiedTls(self._context, self._host)
        server = ldap3.Server(
            self._host,
            self._port,
            use_ssl=self._ldaps,
            tls=tls,
            get_info=ldap3.NONE,
            connect_timeout=timeout,
        )
        conn = ldap3.Connection(
            server,
            user=user or None,
            password=password or None,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            read_only=True,
            # a referral would take the service account's password to another server
            auto_referrals=False,
            receive_timeout=timeout,
            raise_exceptions=False,
        )
        step = "connecting"
        try:
            conn.open()
            step = "StartTLS"
            if self.config.start_tls and not conn.start_tls():
                raise DirectoryUnavailable(f"StartTLS refused: {conn.last_error}")
        except DirectoryUnavailable:
            _close(conn)
            raise
        except LDAPException as exc:
            _close(conn)
            raise DirectoryUnavailable(f"{step}: {_why(exc)}") from None
        return conn

    def _bind_as(self, dn: str, password: str) -> bool:
        """Whether `password` is `dn`'s (never called with an empty one)."""
        conn = self._connection(dn, password)
        try:
            if conn.bind():
                return True
            code = conn.result["result"]
            if code == _INVALID_CREDENTIALS:
                return False
            if code in REFUSING_CODES:
                text = f"{conn.result['description']} {conn.result.get('message', '')}"
                raise LoginRefused(dn, code, text.strip() or REFUSING_CODES[code])
            raise DirectoryUnavailable(
                f"bind as {dn} failed: {conn.result['description']} "
                f"{conn.result.get('message', '')}".strip()
            )
        except LDAPException as exc:
            raise DirectoryUnavailable(_why(exc)) from None
        finally:
            _close(conn)

    def _attributes(self) -> list[str]:
        return [a for a in (self.config.name_attribute, self.config.group_attribute) if a]

    def _find_user(self, conn: ldap3.Connection, name: str) -> dict[str, Any] | None:
        """The one entry `user_filter` finds for `name`; None for none or several."""
        query = self.config.user_filter.replace("{name}", escape_filter_chars(name))
        conn.search(
            self.config.user_base,
            query,
            ldap3.SUBTREE,
            attributes=self._attributes(),
            size_limit=2,
            time_limit=math.ceil(self.config.timeout),
        )
        if conn.result["result"] == _SIZE_LIMIT_EXCEEDED:
            return None
        entries = self._entries(conn, self.config.user_base)
        return entries[0] if len(entries) == 1 else None

    def _entries(self, conn: ldap3.Connection, base: str) -> list[dict[str, Any]]:
        code = conn.result["result"]
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailable(
                f"search of {base} failed: {conn.result['description']} "
                f"{conn.result.get('message', '')}".strip()
            )
        return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]

    def _grant(self, conn: ldap3.Connection, dn: str, entry: dict[str, Any]) -> Grant | None:
        held: set[str] = set()
        for group in self._groups(conn, dn, entry):
            held.add(normal_dn(group))
            held.add(_first_rdn_value(group))
        held.discard("")
        return first_grant(self.grants, held)

    def _groups(self, conn: ldap3.Connection, dn: str, entry: dict[str, Any]) -> list[str]:
        """The DNs of the groups `entry` (at `dn`) is a member of."""
        config = self.config
        if config.group_attribute:
            return [str(v) for v in _values(entry, config.group_attribute)]
        query = config.group_filter.replace("{dn}", escape_filter_chars(dn)).replace(
            "{name}", escape_filter_chars(self._name(entry, ""))
        )
        conn.search(
            config.group_base,
            query,
            ldap3.SUBTREE,
            attributes=[ldap3.NO_ATTRIBUTES],
            time_limit=math.ceil(config.timeout),
        )
        return [str(r["dn"]) for r in self._entries(conn, config.group_base)]

    def _name(self, entry: dict[str, Any], typed: str) -> str:
        values = _values(entry, self.config.name_attribute)
        return str(values[0]) if values else typed


def _values(entry: dict[str, Any], attribute: str) -> list[Any]:
    value = entry.get("attributes", {}).get(attribute, [])
    return list(value) if isinstance(value, list | tuple) else [value]


def _close(conn: ldap3.Connection) -> None:
    """Unbind and close: ldap3 leaves the socket of a connection that failed to open open."""
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()
    if conn.socket is not None:
        with contextlib.suppress(OSError):
            conn.socket.close()


def _why(exc: Exception) -> str:
    """An ldap3 failure as one line: its errors nest their reason in tuples, shown as
    `("('socket ssl wrapping error: ...',)",)`."""
    text = " ".join(str(exc).split())
    text = _NESTING.sub("", text)
    return text or type(exc).__name__
