"""A PostgreSQL pair under Patroni with one etcd, on ephemeral loopback ports.

Debian's `etcd` (3.4, the v3 API Patroni's `etcd3` client speaks) holds the
cluster's leader key; two Debian `patroni` daemons each run a PostgreSQL 15
(the binaries `testbed.servers.PostgreSQL` uses) in a directory of their own.
Patroni bootstraps everything: the first node runs initdb (superuser `enoc`,
pg_hba trusting 127.0.0.1 for clients and the `replicator` role), the second
clones it with pg_basebackup and streams from it. `synchronous_mode` is on, as
it must be in production for a failover to lose nothing a client saw
committed: a COMMIT returns only once the standby has the WAL.

One etcd member is enough here: what is tested is PostgreSQL's failover, not
etcd's; a production DCS has three (deploy/). Timing is short (ttl 10 s,
loop_wait 1 s, retry_timeout 5 s) so that a lost primary is replaced in about
ttl seconds.

As root, PostgreSQL refuses to run: the nodes live under a directory of /tmp
owned by Debian's `postgres` user and Patroni runs as that user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import yaml

from testbed.servers import Server, ServerError, _http_get, _postgres_bin, free_port

ETCD = "/usr/bin/etcd"
PATRONI = "/usr/bin/patroni"
SCOPE = "enoc-test"
DATABASE = "enoc"
SUPERUSER = "enoc"
TIMING = {"ttl": 10, "loop_wait": 1, "retry_timeout": 5}


class Etcd(Server):
    """One etcd member, its client and peer URLs on loopback."""

    name = "etcd"

    def command(self) -> list[str]:
        peer = f"http://{self.host}:{free_port()}"
        client = f"http://{self.host}:{self.port}"
        return [
            ETCD,
            "--name=e1",
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e1={peer}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=enoc-{secrets.token_hex(4)}",
        ]

    def ready(self) -> bool:
        status, body = _http_get(f"http://{self.host}:{self.port}/health")
        return status == 200 and json.loads(body).get("health") == "true"


class PatroniNode(Server):
    """One Patroni daemon and the PostgreSQL it runs; `ready` once its REST API answers."""

    startup_timeout = 60.0

    def __init__(self, workdir: Path, node: str, etcd: Etcd, home: Path, owner: Any) -> None:
        self.name = f"patroni-{node}"
        super().__init__(workdir)
        self.node = node
        self.etcd = etcd
        self.home = home / node  # owned by postgres when run as root
        self.owner = owner  # pwd entry of `postgres` as root, else None
        self.pg_port = self.api_port = 0  # chosen at the first start (pick_port)

    def pick_port(self) -> int:
        """Both ports, right before the first start (a node bootstraps for seconds: ports
        chosen earlier for the second node had time to be taken); the REST API's is the
        one `start` checks and chooses again if it was taken."""
        self.pg_port = free_port()
        self.api_port = free_port()
        return self.api_port

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def config(self) -> dict[str, Any]:
        password = secrets.token_urlsafe(12)
        trust = [
            "local all all trust",
            f"host replication replicator {self.host}/32 trust",
            f"host all all {self.host}/32 trust",
        ]
        return {
            "scope": SCOPE,
            "name": self.node,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"{self.host}:{self.api_port}",
                "connect_address": f"{self.host}:{self.api_port}",
            },
            "etcd3": {"hosts": [f"{self.etcd.host}:{self.etcd.port}"]},
            "bootstrap": {
                "dcs": {
                    **TIMING,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "max_connections": 60,
                            "max_wal_senders": 5,
                            "max_replication_slots": 5,
                            "wal_log_hints": "on",
                            "fsync": "off",  # a process dies here, never the machine
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}],
            },
            "postgresql": {
                "listen": f"{self.host}:{self.pg_port}",
                "connect_address": f"{self.host}:{self.pg_port}",
                "data_dir": str(self.datadir),
                "bin_dir": str(Path(_postgres_bin("postgres")).parent),
                "pgpass": str(self.home / "pgpass"),
                "pg_hba": trust,
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": password},
                    "replication": {"username": "replicator", "password": password},
                    "rewind": {"username": SUPERUSER, "password": password},
                },
                "parameters": {"unix_socket_directories": str(self.home)},
            },
        }

    def command(self) -> list[str]:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "patroni.yml"
        path.write_text(yaml.safe_dump(self.config()))
        if self.owner is not None:
            os.chown(self.home, self.owner.pw_uid, self.owner.pw_gid)
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        return [PATRONI, str(path)]

    def user(self) -> str:
        return "postgres" if self.owner is not None else ""

    def ready(self) -> bool:
        return _http_get(f"{self.api}/patroni")[0] in (200, 503)

    def status(self) -> dict[str, Any]:
        """Patroni's own view of its node (`GET /patroni`): role, state, timeline."""
        with contextlib.suppress(OSError, ValueError):
            _status, body = _http_get(f"{self.api}/patroni")
            found: dict[str, Any] = json.loads(body)
            return found
        return {}

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        return None

    def kill(self) -> None:
        """SIGKILL Patroni and every PostgreSQL process of the node: the machine is gone."""
        pid = self.postmaster_pid()
        victims = [pid, *_children(pid)] if pid else []
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def stop(self) -> None:
        """Patroni stops its PostgreSQL on SIGTERM; what survives it is killed."""
        super().stop()
        pid = self.postmaster_pid()
        if pid and _alive(pid):
            for victim in [pid, *_children(pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)

    def discard(self) -> None:
        """End the node for good, at once: Patroni killed, then its PostgreSQL shut down
        immediately (SIGQUIT: it removes its shared memory, which a SIGKILL would leave).
        A graceful stop takes seconds: a synchronous standby waits to be released."""
        pid = self.postmaster_pid()
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if not pid or not _alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        for victim in [pid, *_children(pid)] if _alive(pid) else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    return ""


def _children(pid: int | None) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends and helpers)."""
    if not pid:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # the fields after the command's closing parenthesis: state, ppid, ...
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class PatroniCluster:
    """etcd and two Patroni nodes; `url` reaches whichever PostgreSQL is the primary.

    `start` (which stops what it started when it fails) waits for a leader, a
    synchronous standby streaming from it and the `enoc` database; `switchover` and
    `kill_primary` move the primary; `stop` ends everything, also after a failure.
    """

    def __init__(self, workdir: Path, nodes: int = 2) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        owner = None
        self.home = workdir / "nodes"
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            self.home = Path(tempfile.mkdtemp(prefix="enoc-patroni-"))
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self.etcd = Etcd(workdir / "etcd")
        self.nodes = [
            PatroniNode(workdir / f"pg{i + 1}", f"pg{i + 1}", self.etcd, self.home, owner)
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        """The multi-host URL the collector uses: libpq tries each host and keeps the one
        that accepts writes."""
        hosts = ",".join(f"{n.host}:{n.pg_port}" for n in self.nodes)
        return f"postgresql://{SUPERUSER}@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def node_url(self, node: PatroniNode, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{node.host}:{node.pg_port}/{database}"

    def start(self) -> Self:
        try:
            self.etcd.start()
            for node in self.nodes:
                node.start()
            self.wait_healthy(timeout=120)
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Everything ended, for good (the data is thrown away): each node discarded at
        once rather than stopped gracefully."""
        for node in self.nodes:
            node.discard()
        self.etcd.stop()
        if self.home != self.workdir / "nodes":
            shutil.rmtree(self.home, ignore_errors=True)

    # ---------------------------------------------------------------- state

    def primary(self) -> PatroniNode | None:
        """The running node Patroni says is the leader and that accepts writes."""
        for node in self.nodes:
            if not node.running:
                continue
            status = node.status()
            if status.get("role") in ("master", "primary") and status.get("state") == "running":
                return node
        return None

    def replicas(self) -> list[PatroniNode]:
        primary = self.primary()
        return [n for n in self.nodes if n.running and n is not primary]

    def streaming(self, primary: PatroniNode) -> list[tuple[str, str, str]]:
        """(application name, state, sync_state) of the standbys streaming from `primary`."""
        import psycopg

        with psycopg.connect(self.node_url(primary, "postgres"), connect_timeout=2) as conn:
            rows = conn.execute(
                "SELECT application_name, state, sync_state FROM pg_stat_replication"
            ).fetchall()
        return [(str(a), str(s), str(y)) for a, s, y in rows]

    def wait_healthy(self, timeout: float = 60.0, standbys: int | None = None) -> PatroniNode:
        """Wait for a primary with `standbys` (default: every other running node) streaming
        from it, one of them synchronous; returns the primary."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise ServerError(f"{node.name} exited; its log ends:\n{node.log_tail()}")
            primary = self.primary()
            wanted = standbys if standbys is not None else sum(n.running for n in self.nodes) - 1
            if primary is not None:
                try:
                    streams = self.streaming(primary)
                except Exception as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    live = [s for s in streams if s[1] == "streaming"]
                    # synchronous_mode: a switch-over goes only to the synchronous standby
                    if len(live) >= wanted and (not wanted or self._sync_standby(primary)):
                        return primary
                    last = f"standbys of {primary.node}: {streams}"
            else:
                last = "no primary yet"
            time.sleep(0.2)
        tails = "\n".join(f"--- {n.name}\n{n.log_tail(15)}" for n in self.nodes)
        raise ServerError(
            f"the Patroni cluster is not healthy after {timeout:.0f} s ({last})\n{tails}"
        )

    def _sync_standby(self, primary: PatroniNode) -> bool:
        """Whether the DCS names a synchronous standby (what a switch-over checks)."""
        with contextlib.suppress(OSError, ValueError):
            members = json.loads(_http_get(f"{primary.api}/cluster")[1]).get("members", [])
            return any(m.get("role") == "sync_standby" for m in members)
        return False

    def _create_database(self) -> None:
        import psycopg

        primary = self.primary()
        assert primary is not None
        with psycopg.connect(self.node_url(primary, "postgres"), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    # ---------------------------------------------------------------- faults

    def switchover(self, timeout: float = 60.0) -> PatroniNode:
        """A planned switch-over to the other node through Patroni's REST API (as
        `patronictl switchover --force` does); returns the new primary once a standby
        streams from it again."""
        old = self.primary()
        if old is None:
            raise ServerError("no primary to switch over from")
        candidate = next(n for n in self.nodes if n is not old and n.running)
        body = json.dumps({"leader": old.node, "candidate": candidate.node}).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            f"{old.api}/switchover", data=body, method="POST"
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
                pass
        except urllib.error.HTTPError as exc:
            raise ServerError(f"switchover refused: {exc.code} {exc.read()!r}") from exc
        return self._wait_primary(candidate, timeout)

    def kill_primary(self) -> PatroniNode:
        """SIGKILL the primary's Patroni and PostgreSQL; returns the node killed. The
        standby takes over once the leader key expires (about `ttl` seconds)."""
        old = self.primary()
        if old is None:
            raise ServerError("no primary to kill")
        old.kill()
        return old

    def wait_promoted(self, timeout: float = 60.0) -> PatroniNode:
        """The surviving node once it is the primary."""
        survivor = next(n for n in self.nodes if n.running)
        return self._wait_primary(survivor, timeout, standbys=0)

    def _wait_primary(
        self, node: PatroniNode, timeout: float, standbys: int | None = None
    ) -> PatroniNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.primary() is node:
                self.wait_healthy(max(1.0, deadline - time.monotonic()), standbys)
                return node
            time.sleep(0.2)
        raise ServerError(f"{node.node} did not become the primary within {timeout:.0f} s")

    def log_tails(self, lines: int = 20) -> str:
        return "\n".join(f"--- {n.name}\n{n.log_tail(lines)}" for n in (self.etcd, *self.nodes))


@contextlib.contextmanager
def running_cluster(workdir: Path, nodes: int = 2) -> Iterator[PatroniCluster]:
    """A started `PatroniCluster`, stopped after (also when the body fails)."""
    cluster = PatroniCluster(workdir, nodes)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
