"""Debian's OpenLDAP server (slapd) on ephemeral loopback ports, with a directory of its own.

`Slapd` writes its own cn=config (no system configuration is read or touched),
loads it and the directory with `slapadd`, and serves `ldap://` (with StartTLS)
and `ldaps://` on 127.0.0.1 with the certificate of `tls`. The directory,
under `dc=enoc,dc=test`:

    ou=services  cn=enoc              the collector's service account (reads all)
    ou=people    uid=ana, ben, cat, dan
    ou=groups    cn=noc-emea-operators (ana), cn=noc-amer-operators (ben),
                 cn=noc-admins (cat), cn=lab-users (dan): groupOfNames

Each user's `seeAlso` lists the DNs of its groups as loaded, as Active
Directory's `memberOf` does (slapd's memberof overlay does not run under
slapadd), for a `group_attribute` login; `set_members` changes the groups only.

The access rules are a production directory's: nobody reads anonymously, a user
reads itself, passwords are only for binding, the service account reads the
rest. `admin()` is a connection as the root DN, to change the directory while a
test runs (`set_members`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import subprocess
from pathlib import Path

import ldap3

from testbed.servers import Server, TlsFiles, free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "inetorgperson")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE = "dc=enoc,dc=test"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
SERVICE_DN = f"cn=enoc,ou=services,{BASE}"
ADMIN_DN = f"cn=admin,{BASE}"
MEMBERS: dict[str, list[str]] = {
    "noc-emea-operators": ["ana"],
    "noc-amer-operators": ["ben"],
    "noc-admins": ["cat"],
    "lab-users": ["dan"],
}
USERS = ("ana", "ben", "cat", "dan")


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def ssha(password: str) -> str:
    """`{SSHA}` as slapd stores it: SHA-1 over password and salt, then the salt."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - slapd's format
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class Slapd(Server):
    """slapd serving `dc=enoc,dc=test` on `url` (StartTLS) and `ldaps_url`."""

    name = "slapd"

    def __init__(self, workdir: Path, *, tls: TlsFiles) -> None:
        super().__init__(workdir)
        self.tls = tls
        self.ldaps_port = 0
        self.admin_password = secrets.token_urlsafe(12)
        self.service_password = secrets.token_urlsafe(12)
        self.passwords = {name: f"{name}-{secrets.token_urlsafe(9)}" for name in USERS}
        self._loaded = False

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.host}:{self.ldaps_port}"

    def pick_port(self) -> int:
        """Both ports, chosen again together when `start` retries (either may be taken)."""
        self.ldaps_port = free_port()
        return free_port()

    def command(self) -> list[str]:
        if not self.ldaps_port:  # a port set by the caller, not chosen by `start`
            self.ldaps_port = free_port()
        config = self.workdir / "slapd.d"
        if not self._loaded:
            self._load(config)
            self._loaded = True
        listen = f"{self.url}/ {self.ldaps_url}/"
        # -d keeps it in the foreground (the Server stops it by its process group)
        return [SLAPD, "-d", "none", "-F", str(config), "-h", listen]

    def _load(self, config: Path) -> None:
        data = self.workdir / "data"
        config.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config.ldif").write_text(self._config_ldif(data))
        (self.workdir / "directory.ldif").write_text(self._directory_ldif())
        for number, ldif in (("0", "config.ldif"), ("1", "directory.ldif")):
            done = subprocess.run(
                [SLAPADD, "-n", number, "-F", str(config), "-l", str(self.workdir / ldif)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                self._fail(f"slapadd of {ldif} failed: {done.stderr.strip()}")

    def _config_ldif(self, data: Path) -> str:
        schemas = "\n".join((SCHEMA_DIR / f"{s}.ldif").read_text() for s in SCHEMAS)
        return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {self.workdir}/slapd.pid
olcTLSCACertificateFile: {self.tls.ca_file}
olcTLSCertificateFile: {self.tls.cert_file}
olcTLSCertificateKeyFile: {self.tls.key_file}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {data}
olcDbMaxSize: 67108864
olcSuffix: {BASE}
olcRootDN: {ADMIN_DN}
olcRootPW: {ssha(self.admin_password)}
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to * by dn.exact="{SERVICE_DN}" read by self read by * none
"""

    def _directory_ldif(self) -> str:
        entries = [
            f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: enoc\no: enoc",
            f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
            f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
            f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services",
            f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: "
            f"simpleSecurityObject\ncn: enoc\nuserPassword: {ssha(self.service_password)}",
        ]
        for name in USERS:
            groups = [f"\nseeAlso: {group_dn(g)}" for g, held in MEMBERS.items() if name in held]
            entries.append(
                f"dn: {user_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\n"
                f"cn: {name.title()}\nsn: {name.title()}\n"
                f"userPassword: {ssha(self.passwords[name])}{''.join(groups)}"
            )
        for group, members in MEMBERS.items():
            lines = [f"dn: {group_dn(group)}", "objectClass: groupOfNames", f"cn: {group}"]
            lines += [f"member: {user_dn(m)}" for m in members]
            entries.append("\n".join(lines))
        return "\n\n".join(entries) + "\n"

    def ready(self) -> bool:
        with socket.create_connection((self.host, self.ldaps_port), timeout=1):
            pass
        self.admin().unbind()
        return True

    def admin(self) -> ldap3.Connection:
        """A connection bound as the root DN (over the loopback, in clear); the caller
        unbinds it (ldap3's `with` leaves a connection bound at its start bound)."""
        server = ldap3.Server(self.host, self.port, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server,
            ADMIN_DN,
            self.admin_password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS,
            receive_timeout=5,
            raise_exceptions=True,
        )

    def set_members(self, group: str, members: list[str]) -> None:
        """Replace a group's members (user names); a groupOfNames needs at least one, so
        an emptied group keeps the service account as a placeholder member."""
        dns = [user_dn(m) for m in members] or [SERVICE_DN]
        conn = self.admin()
        try:
            conn.modify(  # type: ignore[no-untyped-call]  # the stubs leave it untyped
                group_dn(group), {"member": [(ldap3.MODIFY_REPLACE, dns)]}
            )
        finally:
            conn.unbind()
