"""Debian's NATS server as a three-node cluster on 127.0.0.1, JetStream and MQTT on each node.

`NatsCluster` picks every node's client, cluster (route), MQTT and monitoring port
before any starts (each node's routes name the others), writes one config per node
into its own directory (its own JetStream store), starts them and waits until the
cluster has a JetStream meta leader that every node knows and each node answers its
`/healthz`. The MQTT gateway of NATS needs a `server_name` and JetStream; it speaks
MQTT 3.1.1 (agents fall back from 5 as designed) and keeps its sessions and QoS 1
messages in JetStream streams replicated on `mqtt_replicas` nodes.

`kill(i)` is a machine's loss (SIGKILL); `start(i)` brings that node back on its
ports with its store. Nothing reads or touches a system configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Self

from testbed.servers import HOST, Server, ServerError, _http_get, free_port

NATS_SERVER = os.environ.get("ENOC_NATS_SERVER", "/usr/sbin/nats-server")
CLUSTER_NAME = "enoc"


class NatsNode(Server):
    """One node: client `port`, `mqtt_port`, `cluster_port`, `http_port` (monitoring)."""

    name = "nats"

    def __init__(
        self,
        workdir: Path,
        index: int,
        *,
        mqtt_replicas: int = 3,
        mqtt_max_ack_pending: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.index = index
        self.server_name = f"n{index + 1}"
        self.pick_ports()
        self.mqtt_replicas = mqtt_replicas
        # each QoS 1 subscription's window (None: the server's, 1024)
        self.mqtt_max_ack_pending = mqtt_max_ack_pending
        self.routes: list[int] = []  # the other nodes' cluster ports

    def pick_ports(self) -> None:
        self.port, self.cluster_port = free_port(), free_port()
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.url = f"nats://{self.host}:{self.port}"
        self.mqtt_url = f"mqtt://{self.host}:{self.mqtt_port}"

    def config_text(self) -> str:
        store = self.workdir / "jetstream"
        routes = ", ".join(f'"nats-route://{HOST}:{p}"' for p in self.routes)
        window = self.mqtt_max_ack_pending
        window_line = f"\n  max_ack_pending: {window}" if window is not None else ""
        return f"""server_name: {self.server_name}
listen: "{HOST}:{self.port}"
http: "{HOST}:{self.http_port}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: "{HOST}:{self.cluster_port}"
  routes: [{routes}]
}}
mqtt {{
  listen: "{HOST}:{self.mqtt_port}"
  stream_replicas: {self.mqtt_replicas}
  ack_wait: "10s"{window_line}
}}
"""

    def command(self) -> list[str]:
        config = self.workdir / "nats.conf"
        config.write_text(self.config_text())
        return [NATS_SERVER, "-c", str(config), "-l", str(self.log_path)]

    def ready(self) -> bool:
        """The client port answers (JetStream waits for a quorum: `NatsCluster.wait`)."""
        status, _ = _http_get(f"http://{self.host}:{self.http_port}/varz", timeout=1.0)
        return status == 200

    def jsz(self) -> dict[str, Any]:
        status, body = _http_get(f"http://{self.host}:{self.http_port}/jsz", timeout=1.0)
        if status != 200:
            return {}
        data: dict[str, Any] = json.loads(body)
        return data

    def healthy(self) -> bool:
        status, _ = _http_get(f"http://{self.host}:{self.http_port}/healthz", timeout=1.0)
        return status == 200

    def kill(self) -> None:
        """SIGKILL: the node's machine is lost (no lame-duck mode, no goodbye to routes)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.stop()  # reaps it


class NatsCluster:
    """Three NATS nodes, clustered, with JetStream and MQTT (see the module's docstring)."""

    def __init__(
        self,
        workdir: Path,
        *,
        size: int = 3,
        mqtt_replicas: int = 3,
        mqtt_max_ack_pending: int | None = None,
    ) -> None:
        self.nodes = [
            NatsNode(
                workdir / f"n{i + 1}",
                i,
                mqtt_replicas=mqtt_replicas,
                mqtt_max_ack_pending=mqtt_max_ack_pending,
            )
            for i in range(size)
        ]
        self._route()

    def _route(self) -> None:
        for node in self.nodes:
            node.routes = [n.cluster_port for n in self.nodes if n is not node]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> Self:
        for attempt in range(3):
            try:
                for node in self.nodes:
                    node.start()
                self.wait()
            except ServerError as exc:
                self.stop()
                # a port picked free was taken before the node bound it (other tests
                # run beside): all of them again, since each node's routes name the others
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                for node in self.nodes:
                    node.pick_ports()
                self._route()
            except BaseException:
                self.stop()
                raise
            else:
                return self
        return self

    def wait(self, timeout: float = 60.0) -> None:
        """Until every running node names the same JetStream meta leader (a running
        node) and answers /healthz (its JetStream current)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.running]
            with contextlib.suppress(OSError, ValueError):
                leaders = {(n.jsz().get("meta_cluster") or {}).get("leader") for n in running}
                names = {n.server_name for n in running}
                if len(leaders) == 1 and leaders <= names and all(n.healthy() for n in running):
                    return
                last = f"meta leaders seen: {sorted(str(x) for x in leaders)}"
            time.sleep(0.2)
        tails = "\n".join(f"--- {n.server_name}\n{n.log_tail(15)}" for n in self.nodes)
        raise ServerError(f"NATS cluster not ready after {timeout:.0f} s ({last}):\n{tails}")

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start a killed node again on its ports, with its store; wait for the cluster."""
        self.nodes[index].start()
        self.wait()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def reset(self) -> None:
        """As if just started, for the next test sharing the cluster: every stream but
        the MQTT gateway's deleted, the consumers made on its streams deleted (not its
        own) and those streams purged but its sessions (the next test starts no
        subscription, and a client id's session is the same anyway). After a node's loss,
        a new cluster: the restarted node's replicas would take a minute or more to catch
        up, a new cluster starts in under a second."""
        if not all(node.running for node in self.nodes):
            await asyncio.to_thread(self._renew)
            return
        import nats

        nc = await nats.connect(self.urls, connect_timeout=5)
        try:
            js = nc.jetstream()
            for stream in await js.streams_info():
                name = stream.config.name or ""
                if not name.startswith("$MQTT_"):
                    await js.delete_stream(name)
                    continue
                for consumer in await js.consumers_info(name):
                    if not consumer.name.startswith("$MQTT"):  # not the gateway's own
                        await js.delete_consumer(name, consumer.name)
                if name != "$MQTT_sess":
                    await js.purge_stream(name)
        finally:
            await nc.close()

    def _renew(self) -> None:
        """Stopped, stores wiped, started again on new ports."""
        self.stop()
        for node in self.nodes:
            shutil.rmtree(node.workdir / "jetstream", ignore_errors=True)
            node.pick_ports()
        self._route()
        self.start()
