"""Fixtures that start real Debian servers on ephemeral loopback ports and stop them after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enoc.pki import make_pki
from testbed.nats import NatsCluster
from testbed.netsnmp import SnmpD, SnmpTrapd
from testbed.patroni import PatroniCluster, running_cluster
from testbed.servers import (
    Alertmanager,
    InfluxDB1,
    Mosquitto,
    PostgreSQL,
    TlsFiles,
    VictoriaMetrics,
)
from testbed.slapd import Slapd


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "victoria-metrics") as server:
        yield server


@pytest.fixture
def snmptrapd(tmp_path: Path) -> Iterator[SnmpTrapd]:
    with SnmpTrapd(tmp_path / "snmptrapd") as server:
        yield server


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[SnmpD]:
    with SnmpD(tmp_path / "snmpd") as server:
        yield server


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgreSQL]:
    """One PostgreSQL for a whole test module, for tests that each make their own tables
    or databases on it (starting one per test would cost seconds each)."""
    server = PostgreSQL(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgreSQL]:
    server = PostgreSQL(tmp_path / "postgres")
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def patroni(tmp_path: Path) -> Iterator[PatroniCluster]:
    """etcd and two PostgreSQL nodes under Patroni (testbed/patroni.py), stopped after."""
    with running_cluster(tmp_path / "patroni") as cluster:
        yield cluster


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path / "alertmanager") as server:
        yield server


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """One OpenLDAP directory for a whole test module (testbed/slapd.py: its users and
    groups), with a certificate for 127.0.0.1 from a CA of its own (`slapd.tls.ca_file`).
    A test that changes a group puts it back."""
    workdir = tmp_path_factory.mktemp("slapd")
    pki = make_pki(workdir / "pki", server_names=["127.0.0.1"], clients=[])
    with Slapd(workdir, tls=TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key)) as server:
        yield server


@pytest.fixture(scope="module")
def nats_cluster_of_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three NATS nodes on 127.0.0.1 (testbed/nats.py), clustered, each with JetStream and
    its MQTT gateway, ready (a JetStream meta leader); all stopped after, even on failure."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats")).start()  # stops what it started
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def nats_cluster(nats_cluster_of_module: NatsCluster) -> NatsCluster:
    """The module's NATS cluster, put back before each test as if just started
    (`NatsCluster.reset`: every node running, no consumer, no stream but the MQTT
    gateway's, those purged). Shared because the gateway's first client makes its streams
    on three nodes, about 1.5 s a cluster."""
    await nats_cluster_of_module.reset()
    return nats_cluster_of_module
