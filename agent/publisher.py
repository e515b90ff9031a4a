"""Store-and-forward publishing: spool first, publish QoS 1, forget only what the broker acked.

Two spools: events (never dropped, always sent first and strictly in order)
and metrics (bounded, the oldest dropped first when full). After a reconnect
the metrics backlog replays oldest first at `replay_rate` messages per
second, while metrics polled since the reconnect go out at once: a long WAN
outage does not delay today's data behind yesterday's.

Status messages (birth, heartbeat, last will) are retained and not spooled: a
stale heartbeat has no value. Their `seq` orders them for the collector, which
ignores a status older than the last it applied (a broker restart can deliver
an old connection's will after the new connection's birth): each connection
numbers its status messages from its own base, `STATUS_BLOCK` apart and rising
across restarts, and its last will takes the block's top number, above every
status of its connection and below every status of the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from agent.config import AgentConfig
from agent.spool import Record, Spool
from enoc import __version__
from enoc.logs import StateLogger, get_logger
from enoc.mqtt import client_args
from enoc.wire import DeviceInfo, EventsMessage, MetricsMessage, StatusMessage, encode, topic

log = get_logger("enoc.agent.publisher")

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0  # with +-20 % jitter, so that a thousand agents do not reconnect at once
# Status numbers per connection: a base from the clock in ms (so it rises across restarts)
# times the block. 2**20 heartbeats is 120 days of one connection at a 10 s heartbeat; past
# that the seq stays at the block's top - 1, which the collector still takes as current.
STATUS_BLOCK = 2**20


@dataclass
class PublisherStats:
    published: int = 0
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""


class Publisher:
    def __init__(
        self,
        config: AgentConfig,
        *,
        health: Callable[[], dict[str, int | float | str]],
        inventory_size: Callable[[], int],
        devices: Callable[[], list[DeviceInfo]] = list,
    ) -> None:
        self.config = config
        self.health = health
        self.inventory_size = inventory_size
        self.devices = devices
        spool = config.spool
        self.events = Spool(spool.path / "events", max_bytes=spool.max_bytes, drop_oldest=False)
        self.metrics = Spool(spool.path / "metrics", max_bytes=spool.max_bytes, fsync=spool.fsync)
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._status_base = 0  # this connection's block: base * STATUS_BLOCK
        self._status_n = 0
        self._client: aiomqtt.Client | None = None
        self._failing = StateLogger(log)

    # ---------------------------------------------------------------- producers

    def submit_metrics(self, message: MetricsMessage) -> None:
        message.seq = self.metrics.next_seq
        self.metrics.append(self._topic("metrics"), encode(message))
        self._wake.set()

    def submit_events(self, message: EventsMessage) -> None:
        message.seq = self.events.next_seq
        self.events.append(self._topic("events"), encode(message))
        self._wake.set()

    @property
    def spool_depth(self) -> int:
        return self.events.depth + self.metrics.depth

    def close(self) -> None:
        self.events.close()
        self.metrics.close()

    # ---------------------------------------------------------------- connection

    def _topic(self, kind: str) -> str:
        c = self.config
        return topic(c.site, c.agent_id, kind)  # type: ignore[arg-type]

    def _new_status_block(self) -> None:
        """A connection's status numbers: above every earlier connection's, this process's
        (two connects within a millisecond) and earlier processes' (the clock)."""
        self._status_base = max(self._status_base + 1, int(time.time() * 1000))
        self._status_n = 0

    def _status_seq(self, *, will: bool = False) -> int:
        top = (self._status_base + 1) * STATUS_BLOCK - 1
        if will:
            return top
        self._status_n = min(self._status_n + 1, STATUS_BLOCK - 2)
        return self._status_base * STATUS_BLOCK + self._status_n

    def _status(self, state: str, *, will: bool = False) -> bytes:
        c = self.config
        return encode(
            StatusMessage(
                c.agent_id,
                c.site,
                c.rtc,
                self._status_seq(will=will),
                time.time(),
                state=state,  # type: ignore[arg-type]
                version=__version__,
                inventory_size=self.inventory_size(),
                health=self.health() if state == "online" else {},
                devices=self.devices() if state == "online" else [],
            )
        )

    def _client_args(self) -> dict[str, object]:
        mqtt = self.config.mqtt
        args = client_args(
            mqtt.url,
            identifier=f"enoc-agent-{self.config.site}-{self.config.agent_id}",
            tls=mqtt.tls,
            username=mqtt.username,
            password=mqtt.password,
            keepalive=float(mqtt.keepalive),
        )
        args["max_inflight_messages"] = mqtt.max_inflight
        self._new_status_block()
        args["will"] = aiomqtt.Will(
            self._topic("status"), self._status("offline", will=True), qos=1, retain=True
        )
        return args

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with backoff; returns when `stop` is set."""
        backoff = BACKOFF_START
        while not stop.is_set():
            try:
                async with aiomqtt.Client(**self._client_args()) as client:  # type: ignore[arg-type]
                    client.pending_calls_threshold = self.config.mqtt.max_inflight + 10
                    self._client = client
                    self.stats.connects += 1
                    backoff = BACKOFF_START
                    await client.publish(self._topic("status"), self._status("online"), 1, True)
                    self.connected.set()
                    log.info("connected to %s", self.config.mqtt.url)
                    self._failing.ok(f"broker {self.config.mqtt.url}")
                    await self._session(client, stop)
                    if stop.is_set():
                        await client.publish(
                            self._topic("status"), self._status("offline"), 1, True, timeout=5
                        )
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: TLS files, sockets
                self.stats.last_error = str(exc)
                if self.connected.is_set():
                    self.stats.disconnects += 1
                    log.warning("broker connection lost: %s; spooling until it is back", exc)
                else:  # once per streak of failures, not every retry
                    self._failing.failed(f"broker {self.config.mqtt.url}", exc)
            finally:
                self._client = None
                self.connected.clear()
                self.events.requeue_inflight()
                self.metrics.requeue_inflight()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.8, 1.2))
                backoff = min(BACKOFF_MAX, backoff * 2)

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        live_from = self.metrics.next_seq - 1  # metrics newer than this are live, not backlog
        publishing = self.config.publishing
        window = max(1, self.config.mqtt.max_inflight // 2)
        tokens = float(publishing.replay_rate)
        refilled = time.monotonic()
        next_heartbeat = time.monotonic() + float(publishing.heartbeat)
        failed: list[BaseException] = []
        inflight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
            self._wake.set()

        try:
            while not stop.is_set():
                if failed:
                    raise failed[0]
                now = time.monotonic()
                if now >= next_heartbeat:
                    next_heartbeat = now + float(publishing.heartbeat)
                    await client.publish(self._topic("status"), self._status("online"), 1, True)
                tokens = min(
                    float(publishing.replay_rate),
                    tokens + (now - refilled) * publishing.replay_rate,
                )
                refilled = now
                room = window - len(inflight)
                batch: list[tuple[Spool, Record]] = []
                if room > 0 and not self.events.inflight:  # events strictly one after another
                    batch += [(self.events, r) for r in self.events.take(1)]
                    room -= len(batch)
                if room > 0:
                    batch += [(self.metrics, r) for r in self.metrics.take_after(live_from, room)]
                    room = window - len(inflight) - len(batch)
                if room > 0 and tokens >= 1:
                    backlog = self.metrics.take(min(room, int(tokens)))
                    tokens -= len(backlog)
                    batch += [(self.metrics, r) for r in backlog]
                for spool, record in batch:
                    task = asyncio.create_task(self._publish(client, spool, record))
                    inflight.add(task)
                    task.add_done_callback(done)
                if not batch:
                    self._wake.clear()
                    wait = max(0.01, min(next_heartbeat - time.monotonic(), 0.2))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                else:
                    await asyncio.sleep(0)
            if inflight:
                await asyncio.wait(inflight, timeout=5)
        finally:
            for task in inflight:
                task.cancel()

    async def _publish(self, client: aiomqtt.Client, spool: Spool, record: Record) -> None:
        await client.publish(record.topic, record.payload, qos=1)
        spool.ack(record.seq)
        self.stats.published += 1
