"""Real servers on ephemeral loopback ports, for tests and benchmarks.

Each class runs the Debian package's own binary with a config written into a
private directory, waits until the server really answers (an MQTT CONNACK, an
HTTP ping, a trap seen in the log), and stops it with SIGTERM, then SIGKILL.
Nothing depends on a server already running, and every address is loopback.
net-snmp's snmpd and snmptrapd are in `testbed.netsnmp`, on the same `Server`.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

MOSQUITTO = "/usr/sbin/mosquitto"
INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
HOST = "127.0.0.1"


# A port chosen free can be taken by another program before the server binds it (tests
# run beside each other): a start refused for that is tried on another port, this often.
PORT_ATTEMPTS = 5
# how a program says its port was taken: the text of EADDRINUSE, or enoc agent's trap start
_BIND_REFUSALS = ("address already in use", "could not bind", "eaddrinuse")


class ServerError(RuntimeError):
    """A server could not be started; the message carries the tail of its log."""


class PortTakenError(ServerError):
    """A server's port was taken by another program before it could bind it."""


LOWEST_PORT = 10000  # the ports free_port chooses from start here ...


def _ephemeral_start() -> int:
    """... and end below the kernel's ephemeral range (Linux: 32768 by default)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return low if low > LOWEST_PORT + 1000 else 32768


def free_port(kind: str = "tcp", host: str = HOST) -> int:
    """A port free now, not reserved: choose it right before the start that binds it.

    Chosen at random below the kernel's ephemeral range, never by binding port 0: the
    kernel hands the ephemeral ports to every bind(0) and outgoing connection on the
    machine (another test's server, its clients), so a port it chose for us could be
    handed out again before our server binds it; these it never hands out."""
    family_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    high = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, high)
        with socket.socket(socket.AF_INET, family_type) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, family_type) as sock:  # a crowded range: the kernel's
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def bind_refused(log: str) -> bool:
    """Whether a program's log (or error) says the port it was given was taken."""
    text = log.lower()
    return any(refusal in text for refusal in _BIND_REFUSALS)


def _require(binary: str) -> str:
    if not Path(binary).exists():
        raise ServerError(f"{binary} is not installed: run scripts/bootstrap")
    return binary


class Server:
    """Start, wait until ready, stop: the lifecycle every local server shares."""

    name = "server"
    protocol = "tcp"  # of the port it listens on
    startup_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = 0
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    # subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def user(self) -> str:
        """Another user to run the program as (this process being root); "" for none."""
        return ""

    # lifecycle
    def start(self) -> Self:
        """Start and wait until ready. A port left to the server (0) is chosen here, and
        chosen again if another program takes it first; a port set by the caller (a
        restart, a cluster whose nodes name each other's ports) is kept."""
        if self.process is not None:
            return self
        if self.port:
            self._start_once()
            return self
        tried: list[int] = []
        while True:
            self.port = self.pick_port()
            tried.append(self.port)
            try:
                self._start_once()
            except PortTakenError as exc:
                if len(tried) >= PORT_ATTEMPTS:
                    raise PortTakenError(
                        f"{self.name}: every port tried was taken before it could bind it "
                        f"({', '.join(map(str, tried))}); last: {exc}"
                    ) from exc
            else:
                return self

    def _start_once(self) -> None:
        command = self.command()
        _require(command[0])
        logs = self._log_sizes()
        output = self.log_path.with_suffix(".out").open("ab")
        env, as_user = self.env(), self.user()
        # Popen's own switch of user, not runuser: on SIGTERM runuser sleeps 2 s before it
        # ends, whenever its program ended, and every stop paid for it
        switch: dict[str, Any] = {}
        if as_user:
            import pwd

            entry = pwd.getpwnam(as_user)
            home = {"HOME": entry.pw_dir, "USER": as_user, "LOGNAME": as_user}
            env = {**(env if env is not None else os.environ), **home}
            switch = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            **switch,
        )
        output.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                if bind_refused(self._log_since(logs)):
                    self._fail(f"exited with code {code}: its port was taken", PortTakenError)
                self._fail(f"exited with code {code}")
            with contextlib.suppress(OSError, ValueError):
                if self.ready():
                    return
            time.sleep(0.05)
        self._fail(f"not ready after {self.startup_timeout:.0f} s")

    def pick_port(self) -> int:
        return free_port(self.protocol)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; safe before start and twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping the data directory."""
        self.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _port_free(self.port, self.protocol):
            time.sleep(0.05)
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.log_path.with_suffix(".out")):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _log_paths(self) -> tuple[Path, Path]:
        return self.log_path, self.log_path.with_suffix(".out")

    def _log_sizes(self) -> list[int]:
        sizes = []
        for path in self._log_paths():
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(0)
        return sizes

    def _log_since(self, sizes: list[int]) -> str:
        """What this life wrote to the logs (they are appended to over restarts)."""
        text = ""
        for path, size in zip(self._log_paths(), sizes, strict=True):
            with contextlib.suppress(OSError), path.open("rb") as log:
                log.seek(size)
                text += log.read().decode(errors="replace")
        return text

    def _fail(self, why: str, error: type[ServerError] = ServerError) -> None:
        tail = self.log_tail()
        self.stop()
        raise error(f"{self.name} on {self.host}:{self.port} {why}; its log ends:\n{tail}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def _port_free(port: int, protocol: str) -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _http_get(
    url: str,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URL
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=timeout, context=context
        ) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _client_context(tls: TlsFiles | None) -> ssl.SSLContext | None:
    """What a server's own probes trust: its CA, for a server that speaks https."""
    return ssl.create_default_context(cafile=str(tls.ca_file)) if tls is not None else None


# ------------------------------------------------------------------ MQTT


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


def mqtt_connack(host: str, port: int, timeout: float = 1.0) -> bool:
    """A raw MQTT 3.1.1 CONNECT; True when the broker answers CONNACK accepted."""
    client_id = b"enoc-probe"
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"
    payload = len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(packet)
        reply = sock.recv(4)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    return reply[:2] == b"\x20\x02" and reply[3:4] == b"\x00"


class Mosquitto(Server):
    """Eclipse Mosquitto with persistence in the work directory."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        config_extra: str = "",
        tls: TlsFiles | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        config_file: Path | None = None,
    ) -> None:
        super().__init__(workdir)
        self.config_extra = config_extra
        self.tls = tls
        self.password_file = password_file
        self.acl_file = acl_file
        self.config_file = config_file  # a shipped config to run instead of ours

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.config_file is not None:
            return [MOSQUITTO, "-c", str(self.config_file)]
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 1000000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # mosquitto drops root to 'mosquitto', who cannot write here
        else:
            lines.append(f"user {getpass.getuser()}")
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + self.config_extra)
        return [MOSQUITTO, "-c", str(conf)]

    def ready(self) -> bool:
        if self.tls or self.password_file:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        return mqtt_connack(self.host, self.port)


# ------------------------------------------------------------------ InfluxDB 1.x, VictoriaMetrics


class InfluxDB1(Server):
    """Debian's influxd (InfluxDB 1.6): `/write` and InfluxQL `/query`.

    `admin=(name, password)` turns authentication on and makes that admin user
    at start (influxd lets the first admin be created without credentials);
    `query` and `write` then log in as the admin. `log_requests` turns on
    influxd's HTTP request log (in the `.out` file next to `log_path`).
    `https=TlsFiles(ca, cert, key)` serves https only, with that certificate and
    key; `url` is then https:// and the fixture's own requests trust `ca`.
    """

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        *,
        admin: tuple[str, str] | None = None,
        log_requests: bool = False,
        https: TlsFiles | None = None,
    ) -> None:
        super().__init__(workdir)
        self.admin = admin
        self.log_requests = log_requests
        self.https = https
        self._context = _client_context(https)
        self._admin_made = False

    def command(self) -> list[str]:
        rpc = free_port("tcp")
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "{self.host}:{rpc}"
[meta]
  dir = "{self.workdir}/meta"
[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  log-enabled = {"true" if self.log_requests else "false"}
  auth-enabled = {"true" if self.admin else "false"}
{self._https_settings()}[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
        )
        return [INFLUXD, "-config", str(conf)]

    def _https_settings(self) -> str:
        if self.https is None:
            return ""
        return (
            "  https-enabled = true\n"
            f'  https-certificate = "{self.https.cert_file}"\n'
            f'  https-private-key = "{self.https.key_file}"\n'
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    def ready(self) -> bool:
        if _http_get(f"{self.url}/ping", context=self._context)[0] != 204:
            return False
        if self.admin is not None and not self._admin_made:
            name, password = self.admin
            self._post_query(  # the one statement influxd takes without credentials
                f"CREATE USER {influxql_name(name)} WITH PASSWORD {influxql_string(password)} "
                "WITH ALL PRIVILEGES",
                "",
                login=False,
            )
            self._admin_made = True
        return True

    def query(self, q: str, db: str = "") -> dict[str, Any]:
        return self._post_query(q, db)

    def _post_query(self, q: str, db: str, *, login: bool = True) -> dict[str, Any]:
        params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "s"})
        url = f"{self.url}/query"
        request = urllib.request.Request(url, data=params.encode(), method="POST")  # noqa: S310
        self._login(request, login)
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=10, context=self._context
        ) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def _login(self, request: urllib.request.Request, login: bool = True) -> None:
        if self.admin is not None and login:
            token = base64.b64encode(":".join(self.admin).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, db: str, lines: str, precision: str = "s") -> int:
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
        request = urllib.request.Request(url, data=lines.encode(), method="POST")  # noqa: S310
        self._login(request)
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=10, context=self._context
        ) as response:
            return int(response.status)


def influxql_name(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_string(text: str) -> str:
    """An InfluxQL string literal, single-quoted."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class VictoriaMetrics(Server):
    """Debian's victoria-metrics: it accepts InfluxDB's `/write` and `/api/v2/write`.

    `http_auth=(name, password)` makes every endpoint but `/health` ask for HTTP basic
    authentication (an InfluxDB v2 client's token is then refused with 401); `export`
    logs in. `tls=TlsFiles(ca, cert, key)` serves https only with that certificate and
    key (`url` is https://; the fixture's own requests trust `ca`)."""

    name = "victoria-metrics"

    def __init__(
        self,
        workdir: Path,
        *,
        http_auth: tuple[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(workdir)
        self.http_auth = http_auth
        self.tls = tls
        self._context = _client_context(tls)

    def _headers(self) -> dict[str, str]:
        if self.http_auth is None:
            return {}
        return {
            "Authorization": "Basic " + base64.b64encode(":".join(self.http_auth).encode()).decode()
        }

    def command(self) -> list[str]:
        auth = (
            [f"-httpAuth.username={self.http_auth[0]}", f"-httpAuth.password={self.http_auth[1]}"]
            if self.http_auth
            else []
        )
        tls = (
            ["-tls", f"-tlsCertFile={self.tls.cert_file}", f"-tlsKeyFile={self.tls.key_file}"]
            if self.tls
            else []
        )
        return [
            VICTORIA_METRICS,
            *auth,
            *tls,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.workdir}/data",
            "-retentionPeriod=100y",
            "-loggerOutput=stdout",
            "-search.latencyOffset=0s",
            # Identical points (a redelivered message) merge: the tests count duplicates.
            "-dedup.minScrapeInterval=1ms",
            # The corpus' 48 devices write about 30,000 series, VictoriaMetrics' default
            # ceiling on what /api/v1/series lists; the tests list them all.
            "-search.maxSeries=1000000",
        ]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def ready(self) -> bool:
        return _http_get(f"{self.url}/health", context=self._context)[0] == 200

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series and its samples, after forcing buffered data to be searchable."""
        _http_get(
            f"{self.url}/internal/force_flush", headers=self._headers(), context=self._context
        )
        params = urllib.parse.urlencode({"match[]": match})
        status, body = _http_get(
            f"{self.url}/api/v1/export?{params}",
            timeout=10,
            headers=self._headers(),
            context=self._context,
        )
        if status != 200:
            raise ServerError(f"export failed with {status}: {body[:200]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


# ------------------------------------------------------------------ PostgreSQL


def _postgres_bin(name: str) -> str:
    """Debian's versioned server binaries (/usr/lib/postgresql/<v>/bin), newest first."""
    base = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in base.glob("*/bin") if (p / name).exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    return str(versions[0] / name) if versions else f"/usr/lib/postgresql/15/bin/{name}"


class PostgreSQL(Server):
    """Debian's PostgreSQL server in a throw-away cluster, trust auth on loopback.

    With `password`, the role `enoc` has that password and TCP connections must
    give it (scram-sha-256); `url` then carries it, percent-encoded. The local
    socket stays trust.

    PostgreSQL refuses to run as root, so as root the cluster lives in its own
    directory under /tmp owned by the `postgres` user the Debian package makes,
    and the server runs as that user.
    """

    name = "postgres"

    def __init__(
        self, workdir: Path, *, database: str = "enoc", password: str | None = None
    ) -> None:
        super().__init__(workdir)
        self.database = database
        # not `password`: tests/test_deploy.py's TlsPostgreSQL sets that one itself
        self.enoc_password = password
        self._as_root = os.geteuid() == 0
        if self._as_root:
            import pwd
            import tempfile

            self._user = pwd.getpwnam("postgres")
            self.datadir = Path(tempfile.mkdtemp(prefix="enoc-pg-")) / "data"
            os.chown(self.datadir.parent, self._user.pw_uid, self._user.pw_gid)
        else:
            self.datadir = workdir / "data"
        self._initialised = False

    def _as_user(self, command: list[str]) -> list[str]:
        return ["/usr/sbin/runuser", "-u", "postgres", "--", *command] if self._as_root else command

    def command(self) -> list[str]:
        if not self._initialised:
            initdb = [_postgres_bin("initdb"), "-D", str(self.datadir), "-U", "enoc"]
            pwfile = self.datadir.parent / "initdb-password"
            if self.enoc_password is None:
                initdb += ["-A", "trust"]
            else:
                pwfile.write_text(self.enoc_password + "\n")
                pwfile.chmod(0o600)
                if self._as_root:
                    os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
                initdb += [
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                ]
            try:
                subprocess.run(self._as_user(initdb), check=True, capture_output=True)
            finally:
                pwfile.unlink(missing_ok=True)
            self._initialised = True
        return [
            _postgres_bin("postgres"),
            "-D",
            str(self.datadir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self.datadir.parent),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=50",
        ]

    def user(self) -> str:
        return "postgres" if self._as_root else ""

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str, *, password: str | None = None) -> str:
        """A URL for `database` as `enoc`, with the server's password unless another is
        given (a wrong one, for tests of the refusal)."""
        secret = self.enoc_password if password is None else password
        login = "enoc" if secret is None else f"enoc:{urllib.parse.quote(secret, safe='')}"
        return f"postgresql://{login}@{self.host}:{self.port}/{database}"

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=1) as conn:
                conn.autocommit = True
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
        except psycopg.OperationalError:
            return False
        return True

    def remove(self) -> None:
        """Delete the cluster's directory (the fixture calls this at the end)."""
        import shutil

        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


class Alertmanager(Server):
    """Debian's prometheus-alertmanager, one receiver that goes nowhere, no cluster."""

    name = "alertmanager"

    def command(self) -> list[str]:
        config = self.workdir / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n"
        )
        return [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={self.workdir}/data",
            f"--web.listen-address={self.host}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        return _http_get(f"{self.url}/-/ready")[0] == 200

    def alerts(self, *, active: bool = True, resolved: bool = False) -> list[dict[str, Any]]:
        """The alerts it holds (API v2); resolved ones only while it still keeps them."""
        params = urllib.parse.urlencode(
            {
                "active": str(active).lower(),
                "silenced": "true",
                "inhibited": "true",
                "unprocessed": "true",
            }
        )
        status, body = _http_get(f"{self.url}/api/v2/alerts?{params}")
        if status != 200:
            raise ServerError(f"alertmanager alerts: {status} {body[:200]!r}")
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts
