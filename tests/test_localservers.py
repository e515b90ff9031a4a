"""Each real-server fixture works, checked with independent clients."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest

from testbed.netsnmp import SnmpD, SnmpTrapd
from testbed.servers import InfluxDB1, Mosquitto, VictoriaMetrics, mqtt_connack

pytestmark = pytest.mark.servers


def test_mosquitto_pub_sub_and_retained_messages_survive_a_restart(mosquitto: Mosquitto) -> None:
    port = str(mosquitto.port)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "enoc/#", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", "enoc/x", "-m", "hello"], check=True
    )
    assert sub.communicate(timeout=15)[0].strip() == "hello"
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-r",
            "-q",
            "1",
            "-t",
            "enoc/status",
            "-m",
            "online",
        ],
        check=True,
    )
    mosquitto.restart()
    retained = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "enoc/status",
            "-C",
            "1",
            "-W",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert retained.stdout.strip() == "online"


def test_influxdb1_write_and_query(influxdb1: InfluxDB1) -> None:
    influxdb1.create_database("enoc")
    assert influxdb1.write("enoc", "interface,device=nyc-pe-1 in_bps=12.5 1800000000") == 204
    result = influxdb1.query("SELECT in_bps FROM interface", "enoc")
    assert result["results"][0]["series"][0]["values"] == [[1800000000, 12.5]]


def test_victoria_metrics_takes_the_v2_write_api(victoria_metrics: VictoriaMetrics) -> None:
    now = int(time.time())
    request = urllib.request.Request(
        f"{victoria_metrics.url}/api/v2/write?org=enoc&bucket=enoc&precision=s",
        data=f"interface,device=nyc-pe-1 in_bps=42 {now}".encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    series = victoria_metrics.export('{__name__="interface_in_bps"}')
    assert series[0]["metric"]["device"] == "nyc-pe-1"
    assert series[0]["values"] == [42]


async def test_victoria_metrics_with_influxdb_client_async(
    victoria_metrics: VictoriaMetrics,
) -> None:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    now = int(time.time())
    async with InfluxDBClientAsync(url=victoria_metrics.url, token="t", org="enoc") as client:
        ok = await client.write_api().write(
            bucket="enoc",
            record=f"device,device=nyc-pe-1 cpu=17 {now * 10**9}",
        )
    assert ok is True
    series = victoria_metrics.export('{__name__="device_cpu"}')
    assert series[0]["values"] == [17]


def test_snmptrapd_receives_and_parses_a_v2c_trap(snmptrapd: SnmpTrapd) -> None:
    subprocess.run(
        [
            "snmptrap",
            "-v",
            "2c",
            "-c",
            "public",
            f"127.0.0.1:{snmptrapd.port}",
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.3",
            "i",
            "3",
        ],
        check=True,
        env={"MIBS": ""},
    )
    traps = snmptrapd.wait_for(lambda t: len(t) == 1)
    assert traps[0].trap_oid == "1.3.6.1.6.3.1.1.5.3"
    assert traps[0].varbinds["1.3.6.1.2.1.2.2.1.1.3"] == "INTEGER: 3"
    assert traps[0].source == "127.0.0.1"


def test_snmpd_answers_a_bulkwalk(snmpd: SnmpD) -> None:
    out = subprocess.run(
        ["snmpbulkwalk", "-On", "-v2c", "-c", "public", f"127.0.0.1:{snmpd.port}", "1.3.6.1.2.1.1"],
        capture_output=True,
        text=True,
        check=True,
        env={"MIBS": ""},
    ).stdout
    assert ".1.3.6.1.2.1.1.1.0 = STRING:" in out


def test_stop_leaves_nothing_running_and_frees_the_port(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    server = Mosquitto(tmp_path / "m").start()
    process = server.process
    assert process is not None and mqtt_connack("127.0.0.1", server.port)
    server.stop()
    server.stop()  # twice is fine
    assert process.poll() is not None
    with socket.socket() as sock:
        # SO_REUSEADDR: a closed connection's TIME_WAIT on the port is no listener (Linux
        # still refuses the bind while anything listens there, with or without it)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))
        sock.listen()
