"""The fault drills' fleet on a NATS cluster instead of Mosquitto (`enoc bench faults`'
`broker-node-lost` and `collector-replica-lost`).

The same fleet as `testbed.drills.Harness`, but the broker is three NATS nodes with
JetStream and their MQTT gateways (`testbed.nats.NatsCluster`): each site's agent has
one WAN link per node and `mqtt.urls` over the three, and one or more `enoc collector`
replicas take the agents' messages with `nats:` (the durable consumers they share on
the gateway's `$MQTT_msgs` stream, docs/collector.md "NATS JetStream"). The tap holds
a persistent MQTT session on the gateway and moves it to another node when its own is
lost. Replicas share a PostgreSQL store (one SQLite file each would see only its share).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import zlib
from pathlib import Path
from typing import Any

import nats
import nats.errors
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo, SequenceInfo

from testbed.drills import Harness, SiteRig
from testbed.drills_procs import HOST, MAX_INFLIGHT, CollectorProc, Sizing
from testbed.nats import NatsCluster
from testbed.servers import free_port


class NatsHarness(Harness):
    """`Harness` on a three-node NATS cluster, with `replicas` collectors sharing its
    consumers."""

    # The product's: an agent a surviving gateway let go is back through another node
    # within seconds, and its will must open nothing (the Mosquitto drills expect a will's
    # incident at once: their wills are real outages)
    will_grace = "30s"

    def __init__(self, root: Path, sizing: Sizing, *, replicas: int = 1, **kwargs: Any) -> None:
        super().__init__(root, sizing, **kwargs)
        self.cluster = NatsCluster(root / "nats")
        self.replicas = replicas
        # a dead replica's messages go to another after this: scaled like the drills'
        # other durations, above the longest write of a loaded machine
        self.ack_wait = max(5.0, 2 * sizing.interval)
        self._core_taps: list[NatsClient] = []  # the tap's subscribers, one a node

    # ---------------------------------------------------------------- the broker

    async def _start_broker(self) -> None:
        self.say("starting three NATS nodes (JetStream, MQTT) and VictoriaMetrics")
        await asyncio.to_thread(self.cluster.start)

    def broker_ports(self) -> list[int]:
        return [node.mqtt_port for node in self.cluster.nodes]

    def node_of(self, rig: SiteRig) -> int | None:
        """The node the site's agent is connected to now (its WAN link that carries a
        connection), None while it is connected to none."""
        for index, link in enumerate(rig.links):
            if link.connections:
                return index
        return None

    async def consumer_state(self, lane: str = "metrics") -> tuple[int, int]:
        """(the last stream sequence handed out, the acknowledgement floor) of the
        replicas' shared consumer of a lane."""
        info = await self._consumer(lane)
        return _seq(info.delivered), _seq(info.ack_floor)

    async def _consumer(self, lane: str) -> ConsumerInfo:
        nc = await nats.connect([n.url for n in self.cluster.nodes if n.running], connect_timeout=2)
        try:
            info: ConsumerInfo = await nc.jetstream().consumer_info(
                "$MQTT_msgs", f"enoc-collectors-{lane}"
            )
            return info
        finally:
            await nc.close()

    async def freeze_holding(
        self, victim: CollectorProc, survivor: CollectorProc, within: float
    ) -> int:
        """Stop `victim` (SIGSTOP) until it holds messages of the metrics consumer
        unacknowledged; about how many (0 if it held none by `within`). It stays stopped:
        kill it with `kill_frozen`. A frozen replica's last fetch still waits at the
        server and is given what comes next. Held means: a message handed out a second
        ago is still below the acknowledgement floor, which the survivor, writing within
        milliseconds, would have passed."""
        assert victim.process is not None
        pid = victim.process.pid
        deadline = time.monotonic() + within
        while True:
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(max(1.0, self.sizing.interval))
            before = await self._consumer("metrics")
            await asyncio.sleep(1.0)
            after = await self._consumer("metrics")
            if _seq(after.ack_floor) < _seq(before.delivered):
                theirs = (await survivor.scrape() or {}).get("enoc_collector_metrics_pending", 0)
                return max(int(after.num_ack_pending or 0) - int(theirs), 1)
            if time.monotonic() > deadline:
                return 0
            os.kill(pid, signal.SIGCONT)
            self.say(f"waiting for {victim.name} to hold unacknowledged messages")
            await asyncio.sleep(0.3)

    async def kill_frozen(self, victim: CollectorProc) -> None:
        """SIGKILL a replica `freeze_holding` stopped (not scraped first: it cannot answer)."""
        assert victim.process is not None
        victim.sample()
        os.kill(victim.process.pid, signal.SIGKILL)
        await victim.kill9()  # reaps it; its scrape finds it gone

    async def tap_without_acknowledging(self) -> None:
        """From now on the tap takes the agents' messages as a core NATS subscriber on
        each node (the gateway serves those before it stores a message, and a node's
        peers get what its clients publish at once, so a lost node loses the tap
        nothing), instead of through its MQTT session, a consumer of `$MQTT_msgs` that
        acknowledges every message at once: that acknowledgement lets nats-server 2.9.10
        delete, now and then, a message the replicas' consumer has not delivered or has
        handed to a replica since killed (docs/collector.md, "One consumer a message").
        A message is taken once, from whichever node gave it first; the session stays,
        unread."""
        tap = self.tap
        assert tap is not None
        seen: set[tuple[str, int]] = set()

        async def take(msg: Msg) -> None:
            copy = (msg.subject, zlib.crc32(msg.data))
            if copy not in seen:
                seen.add(copy)
                tap._take(msg.subject.replace(".", "/"), msg.data, False)

        async def quiet(_exc: Exception) -> None:
            """Its node lost: it connects again when the node is back."""

        for node in self.cluster.nodes:
            nc = await nats.connect(
                [node.url],
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            )
            await nc.subscribe("enoc.v1.>", cb=take, pending_msgs_limit=1_000_000)
            await nc.flush()
            self._core_taps.append(nc)
        await asyncio.sleep(max(1.0, self.sizing.interval))  # what the session still had
        await tap.stop()

    async def _stop_broker(self) -> None:
        for nc in self._core_taps:
            await nc.close()
        await asyncio.to_thread(self.cluster.stop)

    async def quiesce(self, published_events: set[tuple[str, str]]) -> None:
        """The agents are gone: first every message of the stream acknowledged (a replica
        waiting out a fetch's backoff holds nothing and looks idle), then as with Mosquitto."""
        deadline = time.monotonic() + 60 + 5 * self.sizing.interval
        shown: dict[str, str] = {}
        while True:
            left = {}
            for lane in ("metrics", "events"):
                try:
                    info = await self._consumer(lane)
                    left[lane] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                    shown[lane] = (
                        f"{info.num_pending} pending, {info.num_ack_pending} unacknowledged, "
                        f"{info.num_redelivered} redelivered, {info.num_waiting} fetches "
                        f"waiting, delivered up to {_seq(info.delivered)}, acknowledged "
                        f"up to {_seq(info.ack_floor)}"
                    )
                except (OSError, nats.errors.Error, TimeoutError):
                    left[lane] = -1
            if not any(left.values()):
                break
            if time.monotonic() > deadline:
                self.failures.append(f"the replicas' consumers never drained: {shown}")
                break
            self.say(f"waiting for the replicas to take the stream's rest: {left}")
            await asyncio.sleep(0.3)
        await super().quiesce(published_events)

    async def until_acknowledged(self, delivered: dict[str, int], within: float) -> float | None:
        """Seconds until each lane's consumer acknowledged everything it had handed out
        up to `delivered` (its stream sequence per lane); None after `within`."""
        started = time.monotonic()
        while time.monotonic() < started + within:
            floors = {}
            for lane in delivered:
                try:
                    floors[lane] = (await self.consumer_state(lane))[1]
                except (OSError, nats.errors.Error, TimeoutError):
                    floors[lane] = -1
            if all(floors[lane] >= seq for lane, seq in delivered.items()):
                return time.monotonic() - started
            left = {lane: seq - floors[lane] for lane, seq in delivered.items()}
            self.say(f"waiting for the survivors to acknowledge what was in flight: {left}")
            await asyncio.sleep(0.2)
        return None

    # ---------------------------------------------------------------- the collectors

    def _ingest_config(self) -> dict[str, Any]:
        """`nats` in place of the collector's `mqtt`."""
        return {
            "nats": {
                "servers": [node.url for node in self.cluster.nodes],
                "name": "enoc-drill-collector",
                "max_ack_pending": MAX_INFLIGHT,
                "ack_wait": f"{self.ack_wait:g}s",
                "nak_delay": "1s",
            }
        }

    async def _start_collectors(self) -> None:
        await self.tap_without_acknowledging()
        first = self._collector_config()
        settings = yaml.safe_load(first.config.read_text())
        del settings["mqtt"]
        settings.update(self._ingest_config())
        first.config.write_text(yaml.safe_dump(settings))
        procs = [first]
        for n in range(2, self.replicas + 1):
            port = free_port()
            settings["http"]["listen"] = f"{HOST}:{port}"
            settings["nats"]["name"] = f"enoc-drill-collector-{n}"
            path = self.root / f"collector-{n}.yaml"
            path.write_text(yaml.safe_dump(settings))
            procs.append(CollectorProc(path, port))
        for n, proc in enumerate(procs, 1):
            proc.name = f"collector {n}" if self.replicas > 1 else "collector"
        self.collector, self.others = procs[0], procs[1:]
        self.say(f"starting {self.replicas} collector(s) on NATS")
        for proc in procs:  # each on an HTTP port chosen right before its start
            await self.start_collector(proc)


def _seq(info: SequenceInfo | None) -> int:
    return int(info.stream_seq or 0) if info is not None else 0
