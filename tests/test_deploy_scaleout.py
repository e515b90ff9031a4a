"""deploy/'s scale-out pieces, checked with the programs that read them.

The NATS cluster (compose.nats.yaml, nats/nats.conf, k8s/nats/, make-certs' nats/users.conf)
is checked with `nats-server -t`, and one node of it is run here with make-certs' very
logins: an agent publishes its own subjects over the MQTT gateway and the collector's own
NATS ingest, configured from collector/collector.nats.yaml, takes them, while a forged
subject, a collector login over MQTT and an agent login over NATS get nowhere. The
Patroni pair (compose.patroni.yaml, patroni/patroni.yml) is checked with Patroni's own
validator and run on loopback as shipped (its pg_hba, TLS, synchronous standby and
post-bootstrap script, reached as the collector reaches it), the Zalando operator's
manifest (k8s/postgres/) for what docs/collector.md requires of it; every compose overlay
with the Compose client, every kustomization with kubectl, the collector and agent
configs with enoc's own checks, every image pinned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import bcrypt
import nats
import pytest
import yaml
from collectorkit import eventually
from deploykit import DEPLOY, REPO, load_make_certs
from nats.errors import NoServersError
from test_deploy_files import compose_config, env_example, interpolate
from test_nats_ingest import Recorder, replica_of, running

from agent.config import check_agent
from collector.config import CollectorConfig, check_collector
from enoc.config import parse_config
from enoc.wire import topic
from testbed.nats import NATS_SERVER, NatsNode
from testbed.patroni import TIMING, PatroniCluster, PatroniNode
from testbed.servers import _http_get, _postgres_bin, free_port

PATRONI = shutil.which("patroni")
AGENTS = ["nyc/nyc-1", "gva/gva-1"]
OVERLAYS = ["compose.nats.yaml", "compose.patroni.yaml", "compose.metrics.yaml"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return data


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make-certs' output for two agents, with 127.0.0.1 in the brokers' certificates."""
    out = tmp_path_factory.mktemp("deploy") / "secrets"
    load_make_certs().make_all(out, broker_names=["127.0.0.1"], agents=AGENTS, chown=False)
    return out


def nats_conf(text: str, secrets_dir: Path, workdir: Path) -> str:
    """A shipped nats.conf for `workdir`, its `secrets/` there being `secrets_dir` (make-certs'
    nats/: the include is relative to the config's directory), its store in it too."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / "secrets"
    if not link.exists():
        link.symlink_to(secrets_dir)
    text = text.replace("/etc/nats/secrets/", f"{link}/")
    return text.replace("/data/jetstream", str(workdir / "jetstream"))


def nats_check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NATS_SERVER, "-t", "-c", str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def k8s_nats_conf() -> str:
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "nats" / "nats.yaml").read_text())
    (config,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    text: str = config["data"]["nats.conf"]
    return text


# ---------------------------------------------------------------- NATS: the configs


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_nats_server_accepts_the_shipped_config_with_make_certs_logins(
    where: str, secrets: Path, tmp_path: Path
) -> None:
    shipped = (DEPLOY / "nats" / "nats.conf").read_text() if where == "compose" else k8s_nats_conf()
    path = tmp_path / "nats.conf"
    path.write_text(nats_conf(shipped, secrets / "nats", tmp_path))
    env = {"NATS_SERVER_NAME": "nats-1", "POD_NAME": "nats-0"}
    result = nats_check(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr
    # and -t does look: a certificate that is not there, or a broken users file, fails it
    path.write_text(nats_conf(shipped, secrets / "nats", tmp_path).replace("server.pem", "x.pem"))
    assert nats_check(path, env).returncode != 0
    broken = tmp_path / "broken"
    shutil.copytree(secrets / "nats", broken)
    users = broken / "users.conf"
    users.write_text(users.read_text().replace("}", "", 1))
    path = tmp_path / "other" / "nats.conf"
    path.write_text(nats_conf(shipped, broken, path.parent))
    assert nats_check(path, env).returncode != 0


def test_the_nats_logins_follow_make_certs_agents(secrets: Path) -> None:
    users = (secrets / "nats" / "users.conf").read_text()
    hashes = dict(re.findall(r'\{user: "([^"]+)", password: "([^"]+)",', users))

    def kept(user: str, password: str) -> bool:
        """Kept as bcrypt, never in clear, and the hash is of this password."""
        hashed = hashes[user]
        assert hashed.startswith("$2b$") and password not in users
        return bcrypt.checkpw(password.encode(), hashed.encode())

    for agent in AGENTS:
        site, agent_id = agent.split("/")
        password = (secrets / "agents" / site / agent_id / "mqtt-password").read_text().strip()
        assert kept(agent, password)
        own = [f'"enoc.v1.{site}.{agent_id}.{kind}"' for kind in ("metrics", "events", "status")]
        assert f'publish: [{", ".join(own)}], subscribe: {{deny: ">"}}' in users
    collector = (secrets / "collector" / "mqtt-password").read_text().strip()
    assert kept("collector", collector)
    assert not kept("collector", collector + "x")
    # the nodes' certificate serves and authenticates them to each other (their routes)
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID as Usage

    cert = x509.load_pem_x509_certificate((secrets / "nats" / "server.pem").read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {Usage.SERVER_AUTH, Usage.CLIENT_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    assert {"nats-1", "nats-2", "nats-3", "nats.enoc.svc.cluster.local"} <= dns
    assert "nats-2.nats-headless.enoc.svc.cluster.local" in dns
    assert (secrets / "nats" / "server.key").stat().st_mode & 0o777 == 0o600


def test_the_nats_overlay_routes_every_node_to_the_others() -> None:
    services = load("compose.nats.yaml")["services"]
    nodes = {n: s for n, s in services.items() if n.startswith("nats-")}
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    conf = (DEPLOY / "nats" / "nats.conf").read_text()
    routes = re.findall(r"nats-route://([\w-]+):6222", conf)
    assert sorted(routes) == sorted(nodes)
    assert re.search(r"stream_replicas: 3\b", conf) and "verify: true" in conf
    for name, node in nodes.items():
        assert node["environment"] == {"NATS_SERVER_NAME": name}
        assert node["command"] == ["-c", "/etc/nats/nats.conf"]
        assert "./nats/nats.conf:/etc/nats/nats.conf:ro" in node["volumes"]
        assert "${ENOC_SECRETS:-./secrets}/nats:/etc/nats/secrets:ro" in node["volumes"]
        assert node["cap_drop"] == ["ALL"] and node["read_only"] is True
        assert "healthz" in " ".join(node["healthcheck"]["test"])
    # only the MQTT gateways are published: client, route and monitoring ports are not
    env = env_example()
    published = [interpolate(p, env) for n in nodes.values() for p in n["ports"]]
    assert [p.rpartition(":")[2] for p in published] == ["8883"] * 3
    # -c is a flag the server knows
    help_text = subprocess.run([NATS_SERVER, "--help"], capture_output=True, text=True).stdout
    assert re.search(r"-c, --config", help_text)
    k8s = k8s_nats_conf()
    pods = re.findall(r"nats-route://(nats-\d)\.nats-headless\.enoc\.svc\.cluster\.local", k8s)
    assert pods == ["nats-0", "nats-1", "nats-2"]


# ---------------------------------------------------------------- NATS: one node, run


class DeployedNats(NatsNode):
    """One node of deploy/nats/nats.conf on loopback ports: its TLS, logins and gateway
    as shipped; a single node (no routes), so its streams are on one node."""

    def __init__(self, workdir: Path, secrets: Path) -> None:
        super().__init__(workdir, 0, mqtt_replicas=1)
        self.secrets = secrets
        self.url = f"tls://{self.host}:{self.port}"

    def config_text(self) -> str:
        shipped = (DEPLOY / "nats" / "nats.conf").read_text()
        text = nats_conf(shipped, self.secrets / "nats", self.workdir)
        text = text[: text.index("cluster {")] + text[text.index("# A message larger") :]
        for shipped, here in (
            ('listen: "0.0.0.0:4222"', f'listen: "{self.host}:{self.port}"'),
            ('http: "0.0.0.0:8222"', f'http: "{self.host}:{self.http_port}"'),
            ('listen: "0.0.0.0:8883"', f'listen: "{self.host}:{self.mqtt_port}"'),
            ("stream_replicas: 3", "stream_replicas: 1"),
            ("consumer_replicas: 3", "consumer_replicas: 1"),
        ):
            assert shipped in text, shipped
            text = text.replace(shipped, here)
        return text

    def env(self) -> dict[str, str]:
        return {**os.environ, "NATS_SERVER_NAME": "nats-1"}

    def ready(self) -> bool:
        return super().ready() and self.healthy()


@pytest.fixture
def deployed_nats(tmp_path: Path, secrets: Path) -> Iterator[DeployedNats]:
    node = DeployedNats(tmp_path / "nats", secrets)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def agent_client(node: DeployedNats, secrets: Path, login: str, **kw: Any) -> aiomqtt.Client:
    bundle = secrets / "agents" / login if "/" in login else secrets / login
    password = (bundle / "mqtt-password").read_text().strip()
    return aiomqtt.Client(
        node.host,
        node.mqtt_port,
        identifier=login.replace("/", "-"),
        username=login if "/" in login else "collector",
        password=kw.pop("password", password),
        protocol=aiomqtt.ProtocolVersion.V311,
        tls_params=aiomqtt.TLSParameters(
            ca_certs=str(bundle / "ca.pem"),
            certfile=str(bundle / "client.pem"),
            keyfile=str(bundle / "client.key"),
        ),
        **kw,
    )


def metrics_payload(site: str, agent_id: str, seq: int) -> bytes:
    from test_nats_ingest import payload

    return (
        payload(seq)
        .replace(b'"lab"', f'"{site}"'.encode())
        .replace(b'"agent-1"', f'"{agent_id}"'.encode())
    )


def unacknowledged(node: DeployedNats) -> tuple[int, int]:
    """(messages awaiting an ack, messages redelivered) over the collector's consumers."""
    status, body = _http_get(
        f"http://{node.host}:{node.http_port}/jsz?accounts=true&consumers=true", timeout=2
    )
    assert status == 200
    consumers = [
        c
        for account in json.loads(body).get("account_details", [])
        for stream in account.get("stream_detail", [])
        if stream["name"] == "$MQTT_msgs"
        for c in stream.get("consumer_detail", [])
    ]
    assert {c["name"] for c in consumers} >= {"enoc-collectors-metrics", "enoc-collectors-events"}
    return (
        sum(c["num_ack_pending"] for c in consumers),
        sum(c["num_redelivered"] for c in consumers),
    )


@pytest.mark.servers
async def test_the_shipped_logins_let_each_agent_publish_its_own_and_the_collector_consume(
    deployed_nats: DeployedNats, secrets: Path
) -> None:
    node = deployed_nats
    text = (DEPLOY / "collector" / "collector.nats.yaml").read_text()
    text = text.replace("/run/secrets/enoc/", f"{secrets}/collector/")
    text = text.replace("/var/lib/enoc/", f"{node.workdir}/")
    os.environ.setdefault("ENOC_COLLECTOR_ID", "collector-1")
    shipped = parse_config(text, CollectorConfig, filename="collector.nats.yaml").nats
    assert shipped is not None
    config = dataclasses.replace(shipped, servers=[node.url], replicas=1, ack_wait=shipped.ack_wait)
    recorder = Recorder("collector-1")
    async with running(replica_of(config, recorder)):
        async with agent_client(node, secrets, "nyc/nyc-1") as client:
            for seq in range(5):
                own = metrics_payload("nyc", "nyc-1", seq)
                await client.publish(topic("nyc", "nyc-1", "metrics"), own, qos=1, timeout=10)
            # MQTT 3.1.1 acknowledges a refused publish too; the server drops it
            forged = metrics_payload("gva", "gva-1", 99)
            await client.publish(topic("gva", "gva-1", "metrics"), forged, qos=1, timeout=10)
            await client.publish(
                topic("nyc", "nyc-1", "metrics"),
                metrics_payload("nyc", "nyc-1", 5),
                qos=1,
                timeout=10,
            )
        await eventually(lambda: sorted(recorder.seqs) == list(range(6)), timeout=20)
        # and its acknowledgements were allowed: nothing waits for one, nothing came twice
        await eventually(lambda: unacknowledged(node) == (0, 0), timeout=10)
        assert sorted(recorder.seqs) == list(range(6)), "the forged subject never arrived"
    log = node.log_path.read_text()
    assert 'Publish Violation - User "nyc/nyc-1", Subject "enoc.v1.gva.gva-1.metrics"' in log

    # a wrong password: refused at the gateway
    with pytest.raises(aiomqtt.MqttError):
        async with agent_client(node, secrets, "nyc/nyc-1", password="wrong"):
            pass
    # the collector's login over MQTT, as a partitioned replica subscribes (by site, QoS 1,
    # a persistent session): an agent's message reaches it, and its dead letter goes out
    async with agent_client(node, secrets, "collector", clean_session=False) as collector:
        await collector.subscribe("enoc/v1/nyc/+/metrics", qos=1)
        async with agent_client(node, secrets, "nyc/nyc-1") as client:
            own = metrics_payload("nyc", "nyc-1", 7)
            await client.publish(topic("nyc", "nyc-1", "metrics"), own, qos=1, timeout=10)
        async with asyncio.timeout(10):
            message = await anext(aiter(collector.messages))
        assert message.topic.value == "enoc/v1/nyc/nyc-1/metrics" and message.payload == own
        await collector.publish("enoc/deadletter/v1/malformed", b"{}", qos=1, timeout=10)
    assert 'Violation - User "collector"' not in node.log_path.read_text()
    # an agent's login on the NATS client port: refused (MQTT only)
    bundle = secrets / "agents" / "nyc" / "nyc-1"
    import ssl

    context = ssl.create_default_context(cafile=str(bundle / "ca.pem"))
    context.load_cert_chain(str(bundle / "client.pem"), str(bundle / "client.key"))
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            [node.url],
            tls=context,
            user="nyc/nyc-1",
            password=(bundle / "mqtt-password").read_text().strip(),
            allow_reconnect=False,
            connect_timeout=3,
            max_reconnect_attempts=0,
        )


# ---------------------------------------------------------------- Patroni


def patroni_validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert PATRONI is not None
    return subprocess.run(
        [PATRONI, "--validate-config", str(path)],
        env={**os.environ, "PATRONI_NAME": "postgres-1"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(PATRONI is None, reason="Debian's patroni is not installed")
def test_patroni_validates_the_shipped_config(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text())
    dcs = config["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True, "docs/collector.md: a synchronous standby"
    assert dcs.get("synchronous_mode_strict", False) is False
    assert dcs["ttl"] < 60, "a failover within the collector's 60 s of COMMIT look-ups"
    assert config["etcd3"]["hosts"] == ["etcd-1:2379", "etcd-2:2379", "etcd-3:2379"]
    assert "hostnossl all all all reject" in config["postgresql"]["pg_hba"]
    assert config["bootstrap"]["post_bootstrap"] == "/etc/patroni/post-bootstrap.sh"
    # What only this machine changes: etcd's hosts (the validator connects to them: one
    # listening socket here), ports free here, Debian's PostgreSQL, and bootstrap.pg_hba,
    # which Patroni 3.0.2's validator wants and later versions dropped.
    with socket.socket() as etcd:
        etcd.bind(("127.0.0.1", 0))
        etcd.listen()
        port = etcd.getsockname()[1]
        config["etcd3"]["hosts"] = [f"127.0.0.1:{port}"] * 3
        config["restapi"]["listen"] = f"127.0.0.1:{free_port()}"
        config["postgresql"]["listen"] = f"127.0.0.1:{free_port()}"
        config["postgresql"]["data_dir"] = str(tmp_path / "data")
        config["postgresql"]["bin_dir"] = "/usr/lib/postgresql/15/bin"
        config["bootstrap"]["pg_hba"] = config["postgresql"]["pg_hba"]
        path = tmp_path / "patroni.yml"
        path.write_text(yaml.safe_dump(config))
        result = patroni_validate(path)
        assert result.returncode == 0, result.stdout + result.stderr
        config["bootstrap"]["dcs"]["ttl"] = "thirty"  # and the validator does look
        path.write_text(yaml.safe_dump(config))
        assert "bootstrap.dcs.ttl thirty" in patroni_validate(path).stderr
    script = DEPLOY / "patroni" / "post-bootstrap.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    dockerfile = (DEPLOY / "patroni" / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (.+) /etc/patroni/$", dockerfile, re.M)[0].split():
        assert (DEPLOY / "patroni" / copied).exists(), copied
    assert load_patroni_bin_dir() == "/usr/lib/postgresql/16/bin"
    assert re.search(r"^ARG POSTGRES_VERSION=16$", dockerfile, re.M)


def load_patroni_bin_dir() -> str:
    config = yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text())
    bin_dir: str = config["postgresql"]["bin_dir"]
    return bin_dir


class ShippedPatroniNode(PatroniNode):
    """A node of deploy/patroni/patroni.yml as shipped, on loopback ports: its pg_hba,
    TLS, authentication, synchronous mode and post-bootstrap script, with make-certs'
    secrets/postgres/ (copied for the postgres user), passwords through the environment
    as patroni/Dockerfile passes them."""

    secrets: Path

    @property
    def own_secrets(self) -> Path:
        return self.home.parent / "secrets"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text())
        config["name"] = self.node
        address = f"{self.host}:{self.api_port}"
        config["restapi"] = {"listen": address, "connect_address": address}
        config["etcd3"]["hosts"] = [f"{self.etcd.host}:{self.etcd.port}"]
        # testbed.patroni's timing instead of ttl 30 / loop_wait 10: the same states, reached
        # in seconds (each step of a standby's start waits a loop)
        config["bootstrap"]["dcs"].update(TIMING)
        script = self.own_secrets / "post-bootstrap.sh"
        config["bootstrap"]["post_bootstrap"] = str(script)
        postgresql = config["postgresql"]
        postgresql["listen"] = postgresql["connect_address"] = f"{self.host}:{self.pg_port}"
        postgresql["data_dir"] = str(self.datadir)
        postgresql["bin_dir"] = str(Path(_postgres_bin("postgres")).parent)
        postgresql["pgpass"] = str(self.home / "pgpass")
        parameters = postgresql["parameters"]
        parameters["unix_socket_directories"] = str(self.home)
        for key in ("ssl_cert_file", "ssl_key_file"):
            parameters[key] = parameters[key].replace("/run/secrets/enoc/", f"{self.own_secrets}/")
        return config

    def env(self) -> dict[str, str]:
        read = {n: (self.own_secrets / n).read_text().strip() for n in PATRONI_PASSWORDS}
        return {
            **os.environ,
            "PATRONI_SUPERUSER_PASSWORD": read["superuser-password"],
            "PATRONI_REPLICATION_PASSWORD": read["replication-password"],
        }


PATRONI_PASSWORDS = ("superuser-password", "replication-password")


class ShippedPair(PatroniCluster):
    """testbed.patroni's pair and etcd, its nodes configured by deploy/patroni/."""

    def __init__(self, workdir: Path, secrets: Path) -> None:
        super().__init__(workdir)
        self.secrets = secrets
        self.nodes = [
            ShippedPatroniNode(n.workdir, n.node, self.etcd, self.home, n.owner) for n in self.nodes
        ]
        own = self.home / "secrets"
        shutil.copytree(secrets / "postgres", own)
        script = (DEPLOY / "patroni" / "post-bootstrap.sh").read_text()
        (own / "post-bootstrap.sh").write_text(script.replace("/run/secrets/enoc/", f"{own}/"))
        (own / "post-bootstrap.sh").chmod(0o755)
        owner = self.nodes[0].owner
        for path in [own, *own.iterdir()]:
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def collector_url(self, user: str, database: str, node: PatroniNode | None = None) -> str:
        """As the collector's: each node by a name in make-certs' certificate (its address
        given apart), verify-full against enoc's CA, the password from a file."""
        nodes = [node] if node is not None else self.nodes
        hosts = ",".join(f"postgres-{i + 1}:{n.pg_port}" for i, n in enumerate(nodes))
        hostaddrs = ",".join(n.host for n in nodes)
        ca = self.secrets / "collector" / "ca.pem"
        return (
            f"postgresql://{user}@{hosts}/{database}?hostaddr={hostaddrs}"
            f"&sslmode=verify-full&sslrootcert={ca}&target_session_attrs=read-write"
        )

    def node_url(self, node: PatroniNode, database: str = "enoc") -> str:
        password = (self.secrets / "postgres" / "superuser-password").read_text().strip()
        url = self.collector_url("postgres", database, node)
        return url.replace("postgres@", f"postgres:{password}@", 1)

    def _create_database(self) -> None:
        """post-bootstrap.sh made it."""


@pytest.mark.servers
def test_the_shipped_patroni_config_runs_a_synchronous_pair_the_collector_reaches(
    tmp_path: Path, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    pair = ShippedPair(tmp_path / "pair", secrets)
    try:
        pair.start()  # a primary, and a synchronous standby streaming over TLS + SCRAM
        primary = pair.primary()
        assert primary is not None
        # the collector's way in: both nodes named, the password from make-certs' pgpass
        monkeypatch.setenv("PGPASSFILE", str(secrets / "collector" / "pgpass"))
        with psycopg.connect(pair.collector_url("enoc", "enoc"), connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT current_user, ssl, pg_is_in_recovery() FROM pg_stat_ssl"
                " WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert row == ("enoc", True, False)
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'enoc'"
            ).fetchone()
            assert owner == ("enoc",), "post-bootstrap.sh made the role and its database"
        with psycopg.connect(pair.node_url(primary, "postgres")) as conn:
            (sync,) = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone() or ("",)
            assert sync == "sync"
        plain = pair.collector_url("enoc", "enoc").replace("sslmode=verify-full", "sslmode=disable")
        with pytest.raises(psycopg.OperationalError, match=r"no encryption|pg_hba"):
            psycopg.connect(plain, connect_timeout=5)
    finally:
        pair.stop()


def test_the_patroni_overlay_is_a_pair_on_three_etcd_members() -> None:
    services = load("compose.patroni.yaml")["services"]
    etcd = {n: s for n, s in services.items() if n.startswith("etcd-")}
    pair = {n: s for n, s in services.items() if n.startswith("postgres-")}
    assert sorted(etcd) == ["etcd-1", "etcd-2", "etcd-3"]
    assert sorted(pair) == ["postgres-1", "postgres-2"]
    etcd_help = subprocess.run(["etcd", "--help"], capture_output=True, text=True).stdout
    known = set(re.findall(r"^\s+--([a-z0-9-]+)", etcd_help, re.M))
    for name, member in etcd.items():
        flags = {a.removeprefix("--").split("=")[0] for a in member["command"][1:]}
        from_env = {
            k.removeprefix("ETCD_").lower().replace("_", "-") for k in member["environment"]
        }
        assert flags | from_env <= known, sorted((flags | from_env) - known)
        assert f"--name={name}" in member["command"]
        cluster = member["environment"]["ETCD_INITIAL_CLUSTER"]
        assert sorted(m.split("=")[0] for m in cluster.split(",")) == sorted(etcd)
    for name, node in pair.items():
        assert node["environment"]["PATRONI_NAME"] == name
        assert node["environment"]["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{name}:5432"
        assert node["build"]["context"] == "./patroni"
        assert "${ENOC_SECRETS:-./secrets}/postgres:/run/secrets/enoc:ro" in node["volumes"]
        assert node["networks"] == ["backend"] and "ports" not in node
    for service in (*etcd.values(), *pair.values()):
        assert service["networks"] == ["backend"] and "ports" not in service


def test_the_collectors_on_the_pair_name_both_nodes_and_ask_for_the_primary(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = load("compose.patroni.yaml")["services"]
    url = services["collector-1"]["environment"]["ENOC_STORE_URL"]
    assert services["collector-2"]["environment"]["ENOC_STORE_URL"] == url
    monkeypatch.setenv("ENOC_STORE_URL", url)
    config = checked_collector("collector.yaml", secrets, tmp_path, monkeypatch)
    assert config.store.url == url
    assert "@postgres-1:5432,postgres-2:5432/" in url
    assert "target_session_attrs=read-write" in url and "sslmode=verify-full" in url
    # make-certs' PostgreSQL certificate names both nodes (verify-full)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((secrets / "postgres" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"postgres-1", "postgres-2"} <= set(names.get_values_for_type(x509.DNSName))
    for name in ("superuser-password", "replication-password", "password"):
        assert (secrets / "postgres" / name).stat().st_mode & 0o777 == 0o600
    # without the overlay, the single PostgreSQL of compose.yaml as before
    monkeypatch.delenv("ENOC_STORE_URL")
    single = checked_collector("collector.yaml", secrets, tmp_path, monkeypatch)
    assert single.store.url.startswith("postgresql://enoc@postgres:5432/enoc?")


def test_the_kubernetes_store_is_the_operators_synchronous_pair() -> None:
    (cluster,) = yaml.safe_load_all((DEPLOY / "k8s" / "postgres" / "postgres.yaml").read_text())
    assert cluster["apiVersion"] == "acid.zalan.do/v1" and cluster["kind"] == "postgresql"
    spec = cluster["spec"]
    assert cluster["metadata"]["name"].startswith(spec["teamId"] + "-")
    assert spec["numberOfInstances"] == 2
    assert spec["patroni"]["synchronous_mode"] is True
    assert spec["patroni"]["synchronous_mode_strict"] is False
    assert spec["databases"] == {"enoc": "enoc"} and "enoc" in spec["users"]
    assert "hostnossl all all all reject" in spec["patroni"]["pg_hba"]
    assert spec["postgresql"]["version"] == "16"


# ---------------------------------------------------------------- collector and agent configs


def checked_collector(
    name: str, secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CollectorConfig:
    """deploy/collector/NAME through `check_collector`, with make-certs' files in place."""
    monkeypatch.setenv("ENOC_COLLECTOR_ID", "collector-1")
    text = (DEPLOY / "collector" / name).read_text()
    text = text.replace("/run/secrets/enoc/", f"{secrets}/collector/")
    text = text.replace("/var/lib/enoc/", f"{tmp_path}/")
    path = tmp_path / name
    path.write_text(text)
    checked = check_collector(path)
    assert not checked.errors, [str(e) for e in checked.errors]
    assert checked.value is not None
    return checked.value


def test_the_nats_collector_config_passes_enocs_checks(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = checked_collector("collector.nats.yaml", secrets, tmp_path, monkeypatch)
    assert config.nats is not None
    services = load("compose.nats.yaml")["services"]
    nodes = [n for n in services if n.startswith("nats-")]
    assert config.nats.servers == [f"tls://{n}:4222" for n in nodes]
    assert config.nats.stream == "$MQTT_msgs" and config.nats.replicas == 3
    assert config.nats.username == "collector" and config.nats.tls is not None
    assert config.nats.name == "enoc-collector-1"
    # the rest is collector.yaml's: one file to keep the two in step with
    nats_text = (DEPLOY / "collector" / "collector.nats.yaml").read_text()
    mqtt_text = (DEPLOY / "collector" / "collector.yaml").read_text()
    assert nats_text[nats_text.index("influxdb:") :] == mqtt_text[mqtt_text.index("influxdb:") :]
    for name in ("collector-1", "collector-2"):
        assert services[name]["volumes"] == [
            "./collector/${ENOC_NATS_COLLECTOR:-collector.nats.yaml}:/etc/enoc/collector.yaml:ro"
        ]
        assert set(services[name]["depends_on"]) == set(nodes)
    assert env_example()["ENOC_NATS_COLLECTOR"] == "collector.nats.yaml"


def test_the_partitioned_nats_collector_config_passes_enocs_checks(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = checked_collector("collector.nats-partition.yaml", secrets, tmp_path, monkeypatch)
    assert config.nats is None and config.partition is not None
    nodes = [n for n in load("compose.nats.yaml")["services"] if n.startswith("nats-")]
    assert config.mqtt.brokers == [f"mqtts://{n}:8883" for n in nodes]
    assert config.mqtt.username == "collector" and config.mqtt.tls is not None
    assert not config.mqtt.shared_group, "partitioned: subscribed by site, not shared"
    assert config.partition.id == "collector-1"
    assert config.partition.url == "http://collector-1:8080", "compose's service name"
    # the rest is collector.nats.yaml's
    ours = (DEPLOY / "collector" / "collector.nats-partition.yaml").read_text()
    shared = (DEPLOY / "collector" / "collector.nats.yaml").read_text()
    assert ours[ours.index("influxdb:") :] == shared[shared.index("influxdb:") :]


def test_the_nats_agent_config_lists_the_three_gateways(
    secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    shutil.copytree(secrets / "agents" / "nyc" / "nyc-1", credentials)
    (credentials / "snmp-auth").write_text("auth-key-from-a-file")
    (credentials / "snmp-priv").write_text("priv-key-from-a-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    text = (DEPLOY / "agent" / "agent.nats.yaml").read_text()
    text = text.replace("/etc/enoc/devices.yaml", str(DEPLOY / "agent" / "devices.yaml"))
    text = text.replace("/var/lib/enoc-agent/", f"{tmp_path}/")
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    checked = check_agent(path)
    assert not checked.errors, [str(e) for e in checked.errors]
    assert checked.value is not None
    config, _ = checked.value
    assert config.mqtt.urls is not None and len(config.mqtt.urls) == 3
    assert all(u.startswith("mqtts://nats-") and u.endswith(":8883") for u in config.mqtt.urls)
    assert config.mqtt.username == f"{config.site}/{config.agent_id}"
    # the rest is agent.yaml's
    shipped = yaml.safe_load((DEPLOY / "agent" / "agent.yaml").read_text())
    ours = yaml.safe_load((DEPLOY / "agent" / "agent.nats.yaml").read_text())
    shipped["mqtt"].pop("url"), ours["mqtt"].pop("urls")
    assert ours == shipped


# ---------------------------------------------------------------- compose and kustomize


def overlay_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = {}
    for name in OVERLAYS:
        for service, spec in load(name)["services"].items():
            if "image" in spec:  # collector-1/2 there only change compose.yaml's
                services[service] = spec
    return services


def test_every_overlay_image_is_pinned_and_every_mount_exists() -> None:
    env = env_example()
    for name, service in overlay_services().items():
        tag = interpolate(service["image"], env).rpartition(":")[2]
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: pin it"
        assert service.get("restart") == "unless-stopped", name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "healthcheck" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}"
    text = "".join((DEPLOY / name).read_text() for name in OVERLAYS)
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used <= set(env), f"not in .env.example: {sorted(used - set(env))}"
    k8s = "".join(
        (DEPLOY / "k8s" / d / f"{d}.yaml").read_text() for d in ("nats", "postgres", "metrics")
    )
    for image in re.findall(r"image: (\S+)", k8s):
        assert re.search(r":v?\d", image), f"pin {image}"


@pytest.mark.parametrize("overlays", [[o] for o in OVERLAYS] + [OVERLAYS])
def test_each_overlay_and_all_of_them_validate_with_the_compose_client(
    overlays: list[str], tmp_path: Path
) -> None:
    services = compose_config(tmp_path, *overlays)["services"]
    collector = services["collector-1"]
    if "compose.nats.yaml" in overlays:
        mount = [v for v in collector["volumes"] if str(v).endswith(":/etc/enoc/collector.yaml:ro")]
        assert len(mount) == 1 and "collector.nats.yaml" in mount[0]
        assert {"nats-1", "nats-2", "nats-3"} <= set(collector["depends_on"])
    if "compose.patroni.yaml" in overlays:
        assert "target_session_attrs=read-write" in collector["environment"]["ENOC_STORE_URL"]
        assert {"postgres-1", "postgres-2"} <= set(collector["depends_on"])


@pytest.mark.parametrize("directory", ["nats", "postgres"])
def test_kustomize_renders_the_scale_out_manifests(directory: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {d["metadata"]["namespace"] for d in out} == {"enoc"}
    if directory == "nats":
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in out}
        nodes = kinds[("StatefulSet", "nats")]["spec"]
        assert nodes["replicas"] == 3 and nodes["serviceName"] == "nats-headless"
        assert kinds[("Service", "nats-headless")]["spec"]["clusterIP"] == "None"
        pod = nodes["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["-c", "/etc/nats/nats.conf"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["secrets"] == "/etc/nats/secrets" and mounts["data"] == "/data"
        assert kinds[("PodDisruptionBudget", "nats")]["spec"]["maxUnavailable"] == 1
        ports = kinds[("Service", "nats-mqtt")]["spec"]["ports"]
        assert [p["port"] for p in ports] == [8883]


def test_the_readmes_say_which_engine_at_which_size_and_how_to_bring_each_up() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Which engine at which size") :]
    for engine in ("SQLite", "Mosquitto", "NATS", "Patroni", "vmagent", "EMQX"):
        assert engine in section[: section.index("\n## ", 3)], engine
    deploy = (DEPLOY / "README.md").read_text()
    scale = deploy[deploy.index("## 9. Scale-out") :]
    for piece in ("compose.nats.yaml", "compose.patroni.yaml", "compose.metrics.yaml"):
        assert piece in scale, piece
    for directory in ("k8s/nats", "k8s/postgres", "k8s/metrics"):
        assert directory in scale, directory
    assert "not measured" in scale
