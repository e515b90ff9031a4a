"""The central stack's private CA, certificates and secrets (`deploy/make-certs`).

    deploy/make-certs --broker-name mqtt.example.net --agent nyc/nyc-1 --agent gva/gva-1

Everything lands in one directory (default `deploy/secrets`, which compose.yaml
mounts), one sub-directory per consumer so that each container sees only its
own files:

    pki/                    the CA and every certificate (enoc.pki's layout); keep
                            pki/ca.key off the broker and backed up: it issues new agents
    mosquitto/              ca.pem server.pem server.key passwd healthcheck.{pem,key,password}
    collector/              ca.pem client.pem client.key mqtt-password influx-token pgpass
                            postgres-password users.yaml api-admin-token session-key
    influxdb/               ca.pem server.pem server.key admin-username admin-password
                            admin-token (InfluxDB serves https with server.pem)
    postgres/               ca.pem server.pem server.key password superuser-password
                            replication-password (the last two: the Patroni pair)
    nats/                   ca.pem server.pem server.key users.conf: the
                            NATS cluster (compose.nats.yaml, k8s/nats/), one login a client
    grafana/                ca.pem server.pem server.key admin-password influx-token
    agents/<site>/<agent>/  ca.pem client.pem client.key mqtt-password: copy to the site

It is safe to run again: the CA, every certificate that is still good and every
password are kept; new agents get theirs; `--revoke SITE/AGENT` removes an
agent's bundle and its broker login. The broker's password file is rebuilt
from the bundles on every run (then `docker compose kill -s HUP mosquitto`).

MQTT usernames: an agent logs in as `<site>/<agent_id>` (the ACL lets it publish
only under `enoc/v1/<site>/<agent_id>/`), the collectors as `collector`, the
broker's own health check as `healthcheck`. Certificates: CN `<site>.<agent_id>`,
`collector`, `healthcheck`.

Run as root, it gives each service's directory to the user its container runs
as (`--owner SERVICE=UID:GID` overrides the defaults below); otherwise it prints
the `chown` commands to run. Private keys and secrets are mode 0600.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from enoc.pki import (
    RENEW_BEFORE,
    Issued,
    PkiError,
    make_pki,
    make_server_cert,
)
from enoc.wire import check_name

# The users the pinned images run their service as (compose.yaml).
DEFAULT_OWNERS = {
    "mosquitto": (1883, 1883),  # eclipse-mosquitto drops root to "mosquitto"
    "collector": (10001, 10001),  # deploy/Dockerfile's "enoc" user
    "influxdb": (1000, 1000),  # influxdb:2 runs influxd as "influxdb"
    "postgres": (999, 999),  # postgres (Debian) runs as "postgres"
    "grafana": (472, 0),  # grafana runs as "grafana" (472), group root
    "nats": (0, 0),  # the nats image runs nats-server as root (no capabilities: compose)
}
SERVICES = tuple(DEFAULT_OWNERS)
COLLECTOR_USER = "collector"
HEALTHCHECK_USER = "healthcheck"
DEFAULT_BROKER_NAMES = ["mosquitto", "localhost", "127.0.0.1"]  # compose service name, health
DEFAULT_INFLUXDB_NAMES = ["influxdb", "localhost"]  # compose service name, its health check
# compose.yaml's PostgreSQL and compose.patroni.yaml's pair (one certificate for each node)
DEFAULT_POSTGRES_NAMES = ("postgres", "postgres-1", "postgres-2")
# compose.nats.yaml's nodes, and Kubernetes' (k8s/nats/: the Service and each pod by name)
DEFAULT_NATS_NAMES = [
    "nats-1",
    "nats-2",
    "nats-3",
    "localhost",
    "nats.enoc.svc.cluster.local",
    *(f"nats-{i}.nats-headless.enoc.svc.cluster.local" for i in range(3)),
]
MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd 2.0's PBKDF2-SHA512 default
# The passwords are random (random_secret), so the hash only keeps them out of the file: a
# low cost keeps a fleet's reconnect cheap (NATS checks bcrypt at every connection).
NATS_BCRYPT_COST = 6


# ---------------------------------------------------------------- mosquitto password hashes


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 password-file hash (`$7$`: PBKDF2-SHA512), as mosquitto_passwd makes."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS, 64)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${MOSQUITTO_ITERATIONS}${encoded[0]}${encoded[1]}"


def mosquitto_check(password: str, hashed: str) -> bool:
    """Does `hashed` (a `$7$` line's hash part) match `password`?"""
    _, kind, iterations, salt, digest = hashed.split("$")
    if kind != "7":
        raise ValueError(f"not a $7$ (PBKDF2-SHA512) hash: {hashed[:4]}...")
    expected = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
    )
    return secrets.compare_digest(expected, base64.b64decode(digest))


# ---------------------------------------------------------------- files


def write_secret(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically, created with `mode` (never briefly world-readable)."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, raw)
    finally:
        os.close(fd)
    tmp.replace(path)


def copy_file(source: Path, target: Path, mode: int) -> None:
    if target.exists() and target.read_bytes() == source.read_bytes():
        target.chmod(mode)
        return
    write_secret(target, source.read_bytes(), mode)


def random_secret(path: Path, nbytes: int = 24) -> str:
    """The secret in `path`, made (hex, `nbytes` random bytes) when missing."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(nbytes)
    write_secret(path, value + "\n")
    return value


def server_cert(
    pki_dir: Path, ca: Issued, name: str, names: list[str], *, client_auth: bool = False
) -> tuple[Path, Path]:
    """`pki/<name>.pem` for `names`, kept while it is still good, else issued again."""
    cert_path, key_path = pki_dir / f"{name}.pem", pki_dir / f"{name}.key"
    if not _still_good(cert_path, key_path, ca, names):
        make_server_cert(ca, names, client_auth=client_auth).write(cert_path, key_path)
    return cert_path, key_path


def _still_good(cert_path: Path, key_path: Path, ca: Issued, names: list[str]) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        pair = Issued.load(cert_path, key_path)
        pair.cert.verify_directly_issued_by(ca.cert)
        san = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (PkiError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if pair.cert.not_valid_after_utc - RENEW_BEFORE <= datetime.datetime.now(datetime.UTC):
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(names) <= have


# ---------------------------------------------------------------- agents


@dataclass(frozen=True)
class AgentName:
    site: str
    agent_id: str

    @classmethod
    def parse(cls, text: str) -> AgentName:
        site, sep, agent_id = text.partition("/")
        if not sep:
            raise ValueError(f"agent {text!r}: write it as SITE/AGENT_ID, e.g. nyc/nyc-1")
        return cls(check_name("site", site), check_name("agent_id", agent_id))

    @property
    def username(self) -> str:
        """The MQTT username; the broker's ACL pattern `enoc/v1/%u/...` depends on it."""
        return f"{self.site}/{self.agent_id}"

    @property
    def cert_name(self) -> str:
        return f"{self.site}.{self.agent_id}"


def existing_agents(out: Path) -> list[AgentName]:
    agents_dir = out / "agents"
    if not agents_dir.is_dir():
        return []
    found = []
    for bundle in sorted(agents_dir.glob("*/*")):
        if (bundle / "mqtt-password").exists():
            found.append(AgentName(bundle.parent.name, bundle.name))
    return found


# ---------------------------------------------------------------- NATS logins


def nats_hash(password: str) -> str:
    """A password as nats-server keeps it in its config: bcrypt (`$2b$`), never in clear."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(NATS_BCRYPT_COST)).decode()


def nats_users(passwords: dict[str, str], agents: Sequence[AgentName]) -> str:
    """deploy/nats/nats.conf's `include`: enoc's account, whose users are the MQTT logins.

    An agent may publish (over the MQTT gateway only) exactly the subjects of its three
    topics and read nothing; the collectors (NATS clients only) use JetStream's API and
    acknowledgements, read enoc's subjects and write the dead letters. NATS's config file
    has no per-user pattern like Mosquitto's `%u`, hence one entry per agent."""

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# Made by deploy/make-certs from the logins of mosquitto/passwd; made again on",
        "# every run (then reload every node: nats-server --signal reload, or SIGHUP).",
        "accounts {",
        "  ENOC {",
        "    jetstream: enabled",
        "    users: [",
        f"      {{user: {quoted(COLLECTOR_USER)}, "
        f"password: {quoted(nats_hash(passwords[COLLECTOR_USER]))},",
        # NATS for the JetStream ingest, MQTT for partitioned replicas (their gateways)
        '        allowed_connection_types: ["STANDARD", "MQTT"],',
        "        permissions: {",
        '          publish: ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "enoc.deadletter.v1.>"],',
        # $MQTT.sub.>: the delivery subjects of the gateway's QoS 1 subscriptions
        '          subscribe: ["_INBOX.>", "enoc.>", "$MQTT.msgs.enoc.>", "$MQTT.sub.>"]}}',
    ]
    for agent in agents:
        subject = f"enoc.v1.{agent.site}.{agent.agent_id}"
        own = ", ".join(f'"{subject}.{kind}"' for kind in ("metrics", "events", "status"))
        lines += [
            f"      {{user: {quoted(agent.username)}, "
            f"password: {quoted(nats_hash(passwords[agent.username]))},",
            '        allowed_connection_types: ["MQTT"],',
            f'        permissions: {{publish: [{own}], subscribe: {{deny: ">"}}}}}}',
        ]
    lines += [
        "    ]",
        "  }",
        "  SYS {}",
        "}",
        "system_account: SYS",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the whole directory


@dataclass
class Result:
    out: Path
    agents: list[AgentName]
    passwords: dict[str, str]  # MQTT username -> password
    chown_commands: list[str]


def make_all(
    out: Path,
    *,
    broker_names: Sequence[str],
    agents: Sequence[str] = (),
    revoke: Sequence[str] = (),
    grafana_names: Sequence[str] = ("localhost", "127.0.0.1"),
    postgres_names: Sequence[str] = DEFAULT_POSTGRES_NAMES,
    influxdb_names: Sequence[str] = (),
    nats_names: Sequence[str] = (),
    owners: dict[str, tuple[int, int]] | None = None,
    chown: bool | None = None,
) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o711)  # services reach their own sub-directory, nobody lists the others
    wanted = [AgentName.parse(a) for a in agents]
    revoked = [AgentName.parse(a) for a in revoke]
    for agent in revoked:
        bundle = out / "agents" / agent.site / agent.agent_id
        if bundle.exists():
            shutil.rmtree(bundle)
        for suffix in (".pem", ".key"):
            (out / "pki" / "clients" / f"{agent.cert_name}{suffix}").unlink(missing_ok=True)
    # Revoked first, then (re)issued: `--revoke X --agent X` gives X new credentials.
    all_agents = sorted({*existing_agents(out), *wanted}, key=lambda a: (a.site, a.agent_id))
    names = [a.cert_name for a in all_agents]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise ValueError(f"agents whose certificate names clash: {sorted(clashes)}")

    pki_dir = out / "pki"
    broker = list(dict.fromkeys([*broker_names, *DEFAULT_BROKER_NAMES]))
    pki = make_pki(
        pki_dir,
        server_names=broker,
        clients=[COLLECTOR_USER, HEALTHCHECK_USER, *names],
    )
    ca = Issued.load(pki.ca_cert, pki.ca_key)
    passwords: dict[str, str] = {}

    # the broker
    mosq = out / "mosquitto"
    copy_file(pki.ca_cert, mosq / "ca.pem", 0o644)
    copy_file(pki.server_cert, mosq / "server.pem", 0o644)
    copy_file(pki.server_key, mosq / "server.key", 0o600)
    cert, key = pki.clients[HEALTHCHECK_USER]
    copy_file(cert, mosq / "healthcheck.pem", 0o644)
    copy_file(key, mosq / "healthcheck.key", 0o600)
    passwords[HEALTHCHECK_USER] = random_secret(mosq / "healthcheck.password")

    # InfluxDB (its admin token is also the collector's and Grafana's), over https
    influx = out / "influxdb"
    names = list(dict.fromkeys([*influxdb_names, *DEFAULT_INFLUXDB_NAMES]))
    i_cert, i_key = server_cert(pki_dir, ca, "influxdb", names)
    copy_file(pki.ca_cert, influx / "ca.pem", 0o644)
    copy_file(i_cert, influx / "server.pem", 0o644)
    copy_file(i_key, influx / "server.key", 0o600)
    write_secret(influx / "admin-username", "admin\n")
    random_secret(influx / "admin-password")
    influx_token = random_secret(influx / "admin-token", 32)

    # PostgreSQL
    pg = out / "postgres"
    pg_password = random_secret(pg / "password")
    pg_cert, pg_key = server_cert(pki_dir, ca, "postgres", list(postgres_names))
    copy_file(pki.ca_cert, pg / "ca.pem", 0o644)
    copy_file(pg_cert, pg / "server.pem", 0o644)
    copy_file(pg_key, pg / "server.key", 0o600)
    random_secret(pg / "superuser-password")  # Patroni's `postgres` and replication roles
    random_secret(pg / "replication-password")

    # the collectors (both replicas share these)
    coll = out / "collector"
    copy_file(pki.ca_cert, coll / "ca.pem", 0o644)
    cert, key = pki.clients[COLLECTOR_USER]
    copy_file(cert, coll / "client.pem", 0o644)
    copy_file(key, coll / "client.key", 0o600)
    passwords[COLLECTOR_USER] = random_secret(coll / "mqtt-password")
    write_secret(coll / "influx-token", influx_token + "\n")
    # libpq's password file; any host and port: TLS (verify-full) picks the server
    write_secret(coll / "pgpass", f"*:*:enoc:enoc:{pg_password}\n")
    write_secret(coll / "postgres-password", pg_password + "\n")  # Kubernetes: PGPASSWORD
    random_secret(coll / "api-admin-token")
    random_secret(coll / "session-key", 32)
    users = coll / "users.yaml"
    if not users.exists():
        write_secret(
            users,
            "# Collector API users (docs/collector.md). token_file paths are relative to this\n"
            "# file. Add operators with `enoc passwd` hashes; tokens: openssl rand -hex 24.\n"
            "users:\n"
            "  - {name: admin, role: admin, token_file: api-admin-token}\n",
        )

    # Grafana
    graf = out / "grafana"
    g_cert, g_key = server_cert(pki_dir, ca, "grafana", list(grafana_names))
    copy_file(g_cert, graf / "server.pem", 0o644)
    copy_file(g_key, graf / "server.key", 0o600)
    copy_file(pki.ca_cert, graf / "ca.pem", 0o644)
    random_secret(graf / "admin-password")
    write_secret(graf / "influx-token", influx_token)  # no newline: it goes into a header

    # one bundle per agent, to copy to its site
    for agent in all_agents:
        bundle = out / "agents" / agent.site / agent.agent_id
        cert, key = pki.clients[agent.cert_name]
        copy_file(pki.ca_cert, bundle / "ca.pem", 0o644)
        copy_file(cert, bundle / "client.pem", 0o644)
        copy_file(key, bundle / "client.key", 0o600)
        passwords[agent.username] = random_secret(bundle / "mqtt-password")
        write_secret(bundle / "mqtt-username", agent.username + "\n", 0o644)

    # the broker's password file, rebuilt from the logins above
    lines = [f"{user}:{mosquitto_hash(pw)}" for user, pw in passwords.items()]
    write_secret(mosq / "passwd", "\n".join(lines) + "\n")

    # the NATS cluster: the same logins, as NATS accounts and permissions
    nats = out / "nats"
    names = list(dict.fromkeys([*nats_names, *broker_names, *DEFAULT_NATS_NAMES]))
    # clientAuth too: the nodes present it to each other on their routes (mutual TLS)
    n_cert, n_key = server_cert(pki_dir, ca, "nats", names, client_auth=True)
    copy_file(pki.ca_cert, nats / "ca.pem", 0o644)
    copy_file(n_cert, nats / "server.pem", 0o644)
    copy_file(n_key, nats / "server.key", 0o600)
    write_secret(nats / "users.conf", nats_users(passwords, all_agents))

    commands = _owners(out, {**DEFAULT_OWNERS, **(owners or {})}, chown)
    return Result(out, all_agents, passwords, commands)


def _owners(out: Path, owners: dict[str, tuple[int, int]], chown: bool | None) -> list[str]:
    """Give each service its directory (root only); else the commands that would."""
    do_it = os.geteuid() == 0 if chown is None else chown
    commands = []
    for service in SERVICES:
        uid, gid = owners[service]
        directory = out / service
        directory.chmod(0o700)
        commands.append(f"chown -R {uid}:{gid} {directory}")
        if do_it:
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, uid, gid)
    return [] if do_it else commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make-certs", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    here = Path(__file__).resolve().parent
    parser.add_argument("--out", type=Path, default=here / "secrets", help="default: %(default)s")
    parser.add_argument(
        "--broker-name",
        action="append",
        default=[],
        required=True,
        help="a DNS name or IP address agents reach the broker by (repeat for each)",
    )
    parser.add_argument("--agent", action="append", default=[], help="SITE/AGENT_ID (repeatable)")
    parser.add_argument("--revoke", action="append", default=[], help="SITE/AGENT_ID to remove")
    parser.add_argument(
        "--grafana-name",
        action="append",
        default=[],
        help="name or address operators open Grafana by (default: localhost, 127.0.0.1)",
    )
    parser.add_argument(
        "--postgres-name",
        action="append",
        default=[],
        help="name the collectors reach PostgreSQL by "
        f"(default: {', '.join(DEFAULT_POSTGRES_NAMES)})",
    )
    parser.add_argument(
        "--influxdb-name",
        action="append",
        default=[],
        help="a further name the collectors and Grafana reach InfluxDB by "
        f"(always: {', '.join(DEFAULT_INFLUXDB_NAMES)})",
    )
    parser.add_argument(
        "--nats-name",
        action="append",
        default=[],
        help="a further name the NATS nodes are reached by (always: the --broker-name "
        "values, nats-1..3 and the Kubernetes names of k8s/nats/)",
    )
    parser.add_argument(
        "--owner",
        action="append",
        default=[],
        metavar="SERVICE=UID:GID",
        help=f"who owns a service's directory ({', '.join(SERVICES)})",
    )
    parser.add_argument(
        "--no-chown", action="store_true", help="leave ownership alone, even as root"
    )
    args = parser.parse_args(argv)
    owners: dict[str, tuple[int, int]] = {}
    for item in args.owner:
        service, _, ids = item.partition("=")
        uid, _, gid = ids.partition(":")
        if service not in SERVICES or not uid.isdigit() or not (gid or uid).isdigit():
            parser.error(f"--owner {item!r}: expected SERVICE=UID:GID with SERVICE in {SERVICES}")
        owners[service] = (int(uid), int(gid or uid))
    try:
        result = make_all(
            args.out,
            broker_names=args.broker_name,
            agents=args.agent,
            revoke=args.revoke,
            grafana_names=args.grafana_name or ("localhost", "127.0.0.1"),
            postgres_names=args.postgres_name or DEFAULT_POSTGRES_NAMES,
            influxdb_names=args.influxdb_name,
            nats_names=args.nats_name,
            owners=owners,
            chown=False if args.no_chown else None,
        )
    except (ValueError, PkiError, OSError) as exc:
        print(f"make-certs: {exc}", file=sys.stderr)
        return 2
    print(f"secrets in {result.out}")
    print(f"agents ({len(result.agents)}): " + ", ".join(a.username for a in result.agents))
    print("copy agents/<site>/<agent_id>/ to each site's /etc/enoc/credentials/ (deploy/README.md)")
    if result.chown_commands:
        print("not root: give each container its files with")
        for command in result.chown_commands:
            print(f"  sudo {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
