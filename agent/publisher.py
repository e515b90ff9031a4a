"""Store-and-forward publishing: spool first, publish QoS 1, forget only what the broker acked.

Two spools: events (never dropped, always sent first and strictly in order)
and metrics. They share one disk budget (`spool.max_bytes`): over it the
oldest metrics are dropped, counted and logged once per streak, so metrics
make room for events; events alone over the budget are kept and said so
loudly, once. After a reconnect the metrics backlog replays oldest first at
`replay_rate` messages per second, while metrics polled since the reconnect
go out at once: a long WAN outage does not delay today's data behind
yesterday's.

MQTT 5 where the broker offers it, 3.1.1 otherwise (`enoc.mqtt.ProtocolChoice`).
Over MQTT 5 the broker's PUBACK carries a reason code: a publish it refused (its
ACL denies the topic: "Not authorized") is not acknowledged in the spool, it is
counted (`refused`), logged once per streak, and its lane (events or metrics) is
held back and then probed with one message at a time, the wait doubling up to
REFUSED_MAX: the data waits on disk for the broker's (or the login's) fix. A PUBACK
"No matching subscribers" is held the same way (counted as `unmatched`): the broker
gave the message to no one, and a consumer may subscribe in a moment (a new site's
partitioned collector replica) or only after an operator's fix.

With several brokers (`mqtt.urls`, the nodes of a cluster) a connection that fails or
drops moves to the next one in this agent's order (`enoc.brokers`); what the old node had
not acknowledged goes again from the spool to the new one (at least once: the same seq),
and the move is logged once and counted (`broker_switches`).

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
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import AgentConfig
from agent.spool import Record, Spool, SpoolWriteError
from enoc import __version__
from enoc.brokers import Brokers
from enoc.lifecycle import ServiceBase
from enoc.logs import StateLogger, get_logger, strip_login
from enoc.mqtt import (
    AGENT_MAX_PACKET_SIZE,
    V5,
    V5_CONNACK_TIMEOUT,
    AckedClient,
    ProtocolChoice,
    abandon,
    broker_client_args,
    version_name,
)
from enoc.retry import Backoff
from enoc.wire import (
    Capabilities,
    DeviceInfo,
    EventsMessage,
    MetricsMessage,
    StatusMessage,
    encode,
    topic,
)

log = get_logger("enoc.agent.publisher")

# Reconnecting: 0.5 s doubling to 10 s, +-20 % jitter so that a thousand agents do not
# reconnect at once.
BACKOFF_START = 0.5
BACKOFF_MAX = 10.0
# Status numbers per connection: a base from the clock in ms (so it rises across restarts)
# times the block. 2**20 heartbeats is 120 days of one connection at a 10 s heartbeat; past
# that the seq stays at the block's top - 1, which the collector still takes as current.
STATUS_BLOCK = 2**20
# A lane the broker refuses is probed with one message after this wait, doubled per refusal.
REFUSED_START = 1.0
REFUSED_MAX = 60.0
# MQTT 5's PUBACK "No matching subscribers": the broker took the message and gave it to no
# one (a new site before its partitioned collector replica subscribes, a broker with no
# collector session yet). Not a failure code, yet forgetting the message loses it.
NO_MATCHING_SUBSCRIBERS = 16
SEGMENT_MAX = 4 * 2**20  # spool segment files; the budget drops metrics a segment at a time
PUBLISH_TIMEOUT = 10.0  # for a broker's acknowledgement (and a 3.1.1 CONNACK)
# Events the disk could not take (full), kept in memory in order until it can; beyond this
# the oldest go, counted and logged: a full disk for days must not exhaust memory too.
UNWRITTEN_EVENTS_MAX = 50_000


@dataclass
class PublisherStats:
    published: int = 0
    refused: int = 0  # publishes the broker answered with a failure reason code (MQTT 5)
    unmatched: int = 0  # publishes the broker gave to no subscriber (MQTT 5), kept and retried
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""
    unwritten_metrics: int = 0  # metrics messages the disk could not take (counted as dropped)
    unwritten_events_lost: int = 0  # events lost with the disk full and the memory queue too
    metrics_split: int = 0  # metrics messages over publishing.max_message_bytes, halved
    metrics_oversize: int = 0  # one interface over it: sent whole, refused by the collector


@dataclass
class Hold:
    """A lane (events or metrics) whose messages the broker refuses: nothing goes out until
    `until`, then one probe; each refused probe doubles the wait (capped, jittered)."""

    held: bool = False
    wait: float = 0.0  # the current wait, jittered
    until: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(REFUSED_START, REFUSED_MAX))

    def refused(self, now: float) -> None:
        if self.held and now < self.until:
            return  # the rest of a window sent before the first refusal came back
        self.held = True
        self.wait = self.backoff.next()
        self.until = now + self.wait

    def accepted(self) -> None:
        self.held, self.wait, self.until = False, 0.0, 0.0
        self.backoff.reset()

    def room(self, spool: Spool, room: int, now: float) -> int:
        """How many of `spool`'s records may go out now, of `room`."""
        if not self.held:
            return room
        if now < self.until or spool.inflight:
            return 0
        return min(room, 1)


class Publisher(ServiceBase):
    """The agent's way out: `start` has nothing to acquire (the spools open with the
    publisher, so that the agent fails at once on an unusable spool), `run` connects and
    publishes until `close`, which lets the acknowledgements in flight come back, says
    `offline` and closes the spools."""

    name = "publisher"

    def __init__(
        self,
        config: AgentConfig,
        *,
        health: Callable[[], dict[str, int | float | str]],
        inventory_size: Callable[[], int],
        devices: Callable[[], list[DeviceInfo]] = list,
        capabilities: Callable[[], dict[str, Capabilities]] = dict,
    ) -> None:
        super().__init__()
        self.config = config
        self.health = health
        self.inventory_size = inventory_size
        self.devices = devices
        self.capabilities = capabilities
        spool = config.spool
        self.max_budget = spool.max_bytes  # events and metrics together, on disk
        self.budget = self.max_budget  # lower while the disk is full (`_disk_full`)
        # Segments small against the budget, so that dropping one frees room without
        # throwing away much more than needed.
        segment = max(1, min(SEGMENT_MAX, max(spool.max_bytes // 16, 1024), spool.max_bytes))
        self.events = Spool(
            spool.path / "events",
            max_bytes=spool.max_bytes,
            segment_bytes=segment,
            fsync=spool.fsync,  # events are the record: at least as durable as metrics
            drop_oldest=False,  # never dropped
        )
        self.metrics = Spool(
            spool.path / "metrics",
            max_bytes=spool.max_bytes,
            segment_bytes=segment,
            fsync=spool.fsync,
            drop_oldest=False,  # the budget below decides, across both spools
        )
        self.stats = PublisherStats()
        self.connected = asyncio.Event()
        self.protocol = ProtocolChoice()
        self.brokers = Brokers(config.mqtt.brokers, identity=self.identifier)
        self.mqtt_protocol = 0  # of the last connection: 5, or 4 (3.1.1); 0 before the first
        self._wake = asyncio.Event()
        self._status_base = 0  # this connection's block: base * STATUS_BLOCK
        self._status_n = 0
        self._client: AckedClient | None = None
        self._failing = StateLogger(log)
        self._refusing = StateLogger(log)
        self._holds = {"events": Hold(), "metrics": Hold()}
        self._dropping = 0  # metrics dropped in the current streak over the budget
        self._unwritten: deque[EventsMessage] = deque()  # the disk was full: not spooled yet
        self._disk = StateLogger(log)
        self._events_over = False
        self._keep_budget()

    # ---------------------------------------------------------------- producers

    def submit_metrics(self, message: MetricsMessage) -> None:
        self._write_unwritten()
        limit = self.config.publishing.max_message_bytes
        pending = [message]
        while pending:
            part = pending.pop(0)
            written = self._write(self.metrics, "metrics", part, max_bytes=limit)
            if written is None:  # over the limit: in halves, in order
                halves = halve_metrics(part)
                if halves is not None:
                    self.stats.metrics_split += 1
                    pending[:0] = halves
                    continue
                # one interface over the limit: sent as it is (the collector says why)
                self.stats.metrics_oversize += 1
                written = self._write(self.metrics, "metrics", part)
            if not written:
                self.stats.unwritten_metrics += 1
                self.metrics.dropped += 1
        self._keep_budget()
        self._wake.set()

    def submit_events(self, message: EventsMessage) -> None:
        self._unwritten.append(message)
        if len(self._unwritten) > UNWRITTEN_EVENTS_MAX:
            self._unwritten.popleft()
            self.stats.unwritten_events_lost += 1
            if self.stats.unwritten_events_lost == 1:
                log.error(
                    "the spool's disk has been full for %d events: the oldest events not "
                    "yet written are being lost, further losses are only counted",
                    UNWRITTEN_EVENTS_MAX,
                )
        self._write_unwritten()
        self._keep_budget()
        self._wake.set()

    def _write_unwritten(self) -> None:
        """Spool the events the disk could not take yet, oldest first (their seq is given
        when they are written, so the seqs on the wire stay gapless and in order)."""
        while self._unwritten and self._write(self.events, "events", self._unwritten[0]):
            self._unwritten.popleft()

    def _write(
        self,
        spool: Spool,
        kind: str,
        message: MetricsMessage | EventsMessage,
        max_bytes: int | None = None,
    ) -> bool | None:
        """Append to a spool; on a full disk the oldest metrics make room. False when no
        metrics are left to give way and the disk still refuses; None, with nothing
        written, when the message encodes to more than `max_bytes`."""
        while True:
            message.seq = spool.next_seq
            payload = encode(message)
            if max_bytes is not None and len(payload) > max_bytes:
                return None
            try:
                spool.append(self._topic(kind), payload)
            except SpoolWriteError as exc:
                if not self._disk_full(exc):
                    return False
            else:
                return True

    def _disk_full(self, exc: SpoolWriteError) -> bool:
        """The disk refused a write (full, or failing): the budget drops to below what the
        spool holds now, so the oldest metrics give way as they do over the budget, until
        the disk has room again (`_disk_room`). Logged once for the whole streak."""
        name = f"spool disk {self.config.spool.path}"
        if not self.metrics.size_bytes:
            self._disk.failed(name, exc)
            return False
        self.budget = max(0, self.spool_bytes - self.metrics.segment_bytes)
        self._disk.failed(
            name,
            f"{exc}; the spool is kept under {self.budget} bytes (the oldest metrics make room"
            ", events are never dropped) until the disk has room again",
        )
        self._keep_budget(restore=False)  # at least a segment goes: the loop moves on
        return True

    def _disk_room(self) -> None:
        """Back to the configured budget once the disk has room for two segments again."""
        if self.budget >= self.max_budget:
            return
        try:
            free = shutil.disk_usage(self.config.spool.path).free
        except OSError:
            return
        if free >= 2 * self.metrics.segment_bytes:
            self.budget = self.max_budget
            self._disk.ok(f"spool disk {self.config.spool.path}", free_bytes=free)

    @property
    def spool_depth(self) -> int:
        """Messages not yet acknowledged by the broker, on disk or (a full disk) in memory."""
        return self.events.depth + self.metrics.depth + len(self._unwritten)

    @property
    def spool_bytes(self) -> int:
        return self.events.size_bytes + self.metrics.size_bytes

    def _keep_budget(self, *, restore: bool = True) -> None:
        """Events and metrics share `budget`: over it the oldest metrics go, a segment at a
        time; events are never dropped. Each streak is logged when it starts and when the
        spool is back under half its budget (drained), never per message."""
        if restore:
            self._disk_room()
        dropped = 0
        while self.spool_bytes > self.budget and self.metrics.size_bytes:
            dropped += self.metrics.drop_oldest_segment()
        if dropped:
            if not self._dropping:
                log.warning(
                    "spool over its budget of %d bytes: dropping the oldest metrics, never "
                    "events; %d dropped so far, further drops are only counted",
                    self.budget,
                    dropped,
                    budget=self.budget,
                    dropped=dropped,
                    dropped_total=self.metrics.dropped,
                )
            self._dropping += dropped
        elif self._dropping and self.spool_bytes <= self.budget // 2:
            log.info(
                "spool back under its budget; %d metrics messages were dropped while it was full",
                self._dropping,
                dropped=self._dropping,
                dropped_total=self.metrics.dropped,
            )
            self._dropping = 0
        events = self.events.size_bytes
        if events > self.budget and not self._events_over:
            self._events_over = True
            log.error(
                "events alone exceed the spool budget (%d of %d bytes): keeping them all, "
                "events are never dropped, so the spool grows past spool.max_bytes until the "
                "broker takes them; every new metrics message is dropped meanwhile",
                events,
                self.budget,
                events_bytes=events,
                budget=self.budget,
            )
        elif self._events_over and events <= self.budget // 2:
            self._events_over = False
            log.info("events back under the spool budget", events_bytes=events)

    async def _close(self) -> None:
        self.events.close()
        self.metrics.close()

    # ---------------------------------------------------------------- connection

    @property
    def identifier(self) -> str:
        """The MQTT client id: the persistent session's name on every broker."""
        return f"enoc-agent-{self.config.site}-{self.config.agent_id}"

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
                capabilities=self.capabilities() if state == "online" else {},
            )
        )

    def _client_args(
        self, protocol: aiomqtt.ProtocolVersion = V5, timeout: float = PUBLISH_TIMEOUT
    ) -> dict[str, object]:
        mqtt = self.config.mqtt
        args = broker_client_args(
            mqtt,
            url=self.brokers.url,
            identifier=self.identifier,
            keepalive=float(mqtt.keepalive),
            timeout=timeout,
            protocol=protocol,
            maximum_packet_size=AGENT_MAX_PACKET_SIZE,
        )
        args["max_inflight_messages"] = mqtt.max_inflight
        self._new_status_block()
        args["will"] = aiomqtt.Will(
            self._topic("status"), self._status("offline", will=True), qos=1, retain=True
        )
        return args

    async def _run(self) -> None:
        """Connect, publish, reconnect with backoff; returns once `close` was called."""
        stop = self.closing
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        brokers = self.brokers
        # One streak of failures for all the brokers: logged when it starts and ends.
        shown = ", ".join(strip_login(url) for url in brokers.order)
        failing = f"the broker cluster ({shown})" if brokers.several else f"broker {brokers.url}"
        fell_back = ""  # why the broker was taken not to speak 5, until 3.1.1 connects
        resent = 0  # messages in flight when the last connection was lost: sent again
        while not stop.is_set():
            url = brokers.url
            protocol = self.protocol.version
            # A broker that does not speak 5 may never answer a v5 CONNECT.
            connack = min(V5_CONNACK_TIMEOUT, PUBLISH_TIMEOUT) if protocol == V5 else None
            entered = False
            client: AckedClient | None = None
            try:
                args = self._client_args(protocol, timeout=connack or PUBLISH_TIMEOUT)
                client = AckedClient(**args)
                async with client:
                    entered = True
                    client.timeout = PUBLISH_TIMEOUT
                    client.pending_calls_threshold = self.config.mqtt.max_inflight + 10
                    self._client = client
                    self.protocol.connected()
                    self.mqtt_protocol = int(protocol)  # the wire level: 4 is 3.1.1
                    self.stats.connects += 1
                    backoff.reset()
                    moved_from = brokers.connected()
                    if moved_from:
                        self._moved(moved_from, client, version_name(protocol), resent)
                    else:
                        log.info("connected to %s (MQTT %s)", url, version_name(protocol))
                    await self._publish_status(client, "online")
                    self.connected.set()
                    if fell_back and protocol != V5:
                        log.info(
                            "broker %s does not speak MQTT 5 (%s): using 3.1.1, over which a "
                            "publish the broker refuses looks delivered",
                            url,
                            fell_back,
                        )
                    fell_back = ""
                    self._failing.ok(failing)
                    await self._session(client, stop)
                    if stop.is_set():
                        async with asyncio.timeout(5):
                            await self._publish_status(client, "offline")
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: TLS files, sockets, timeout
                self.stats.last_error = str(exc)
                if not entered and client is not None:
                    abandon(client)  # a socket and a task aiomqtt leaves behind otherwise
                if not entered and self.protocol.fall_back(exc):
                    fell_back = str(exc)
                    continue  # 3.1.1, at once
                if not entered:
                    self.protocol.failed()
                if not stop.is_set():
                    brokers.failed()  # the next broker (the same one when there is one)
                if self.connected.is_set():
                    self.stats.disconnects += 1
                    if brokers.several:
                        log.warning(
                            "broker %s connection lost: %s; spooling, trying %s next",
                            strip_login(url),
                            exc,
                            strip_login(brokers.url),
                        )
                    else:
                        log.warning("broker connection lost: %s; spooling until it is back", exc)
                else:  # once per streak of failures, not every retry
                    self._failing.failed(
                        failing, f"{strip_login(url)}: {exc}" if brokers.several else exc
                    )
            finally:
                self._client = None
                brokers.current = ""
                self.connected.clear()
                if entered:
                    resent = self.events.inflight + self.metrics.inflight
                self.events.requeue_inflight()
                self.metrics.requeue_inflight()
            if not stop.is_set():
                await backoff.wait(stop)

    def _moved(self, previous: str, client: AckedClient, version: str, resent: int) -> None:
        """The one line of a switch to another broker. A session lives on one broker unless
        the brokers share them: on another node it starts afresh, and what the old node had
        not acknowledged goes again from the spool (the collector keeps it once)."""
        log.warning(
            "moved from broker %s to %s (MQTT %s, %s): %d messages unacknowledged there are "
            "sent again here; %d broker switches so far",
            strip_login(previous),
            strip_login(self.brokers.current),
            version,
            "session resumed" if client.session_present else "new session",
            resent,
            self.brokers.switches,
            broker=strip_login(self.brokers.current),
            previous=strip_login(previous),
            resent=resent,
            switches=self.brokers.switches,
            session_present=client.session_present,
        )

    async def _session(self, client: AckedClient, stop: asyncio.Event) -> None:
        live_from = self.metrics.next_seq - 1  # metrics newer than this are live, not backlog
        publishing = self.config.publishing
        window = max(1, self.config.mqtt.max_inflight // 2)
        tokens = float(publishing.replay_rate)
        refilled = time.monotonic()
        next_heartbeat = time.monotonic() + float(publishing.heartbeat)
        failed: list[BaseException] = []
        inflight: set[asyncio.Task[None]] = set()
        events_hold, metrics_hold = self._holds["events"], self._holds["metrics"]

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
                    await self._publish_status(client, "online")
                    self._write_unwritten()  # acknowledged records may have freed the disk
                    self._keep_budget()  # a drained spool ends the streak of drops
                tokens = min(
                    float(publishing.replay_rate),
                    tokens + (now - refilled) * publishing.replay_rate,
                )
                refilled = now
                room = window - len(inflight)
                batch: list[tuple[Spool, Hold, Record]] = []
                if room > 0 and not self.events.inflight:  # events strictly one after another
                    taken = self.events.take(events_hold.room(self.events, 1, now))
                    batch += [(self.events, events_hold, r) for r in taken]
                    room -= len(batch)
                room = metrics_hold.room(self.metrics, room, now)
                if room > 0:
                    live = self.metrics.take_after(live_from, room)
                    batch += [(self.metrics, metrics_hold, r) for r in live]
                    room -= len(live)
                if room > 0 and tokens >= 1:
                    backlog = self.metrics.take(min(room, int(tokens)))
                    tokens -= len(backlog)
                    batch += [(self.metrics, metrics_hold, r) for r in backlog]
                for spool, hold, record in batch:
                    task = asyncio.create_task(self._publish(client, spool, hold, record))
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

    async def _publish(self, client: AckedClient, spool: Spool, hold: Hold, record: Record) -> None:
        code = await client.publish_acked(record.topic, record.payload)
        if code.is_failure or code.value == NO_MATCHING_SUBSCRIBERS:
            spool.release(record.seq)  # stays on disk, goes out again after the hold
            hold.refused(time.monotonic())
            then = f"kept in the spool, retried in {hold.wait:.1f}s"
            if code.is_failure:
                self._refused(record.topic, code, then)
            else:
                self.stats.unmatched += 1
                self._refusing.failed(
                    f"publishing to {record.topic}",
                    f"no consumer subscribes to it (reason code {code.value}); {then}",
                    reason_code=code.value,
                )
            return
        spool.ack(record.seq)
        self.stats.published += 1
        if hold.held:
            hold.accepted()
        self._refusing.ok(f"publishing to {record.topic}")

    async def _publish_status(self, client: AckedClient, state: str) -> None:
        """Status messages are not spooled: a refused one is counted and not retried (the
        next heartbeat replaces it)."""
        topic = self._topic("status")
        code = await client.publish_acked(topic, self._status(state), retain=True)
        if code.is_failure:
            self._refused(topic, code, "not retried: the next heartbeat replaces it")
        else:
            self._refusing.ok(f"publishing to {topic}")

    def _refused(self, topic: str, code: ReasonCode, then: str) -> None:
        self.stats.refused += 1
        self._refusing.failed(
            f"publishing to {topic}",
            f"the broker refused it: {code} (reason code {code.value}); {then}",
            reason_code=code.value,
        )


def halve_metrics(message: MetricsMessage) -> tuple[MetricsMessage, MetricsMessage] | None:
    """A metrics message in two, in order: its samples, or one sample's interfaces and
    BGP peers (each half keeps the device's fields: the same point written twice is one
    point). None when there is nothing left to divide."""
    samples = message.samples
    if len(samples) > 1:
        middle = len(samples) // 2
        return (
            replace(message, samples=samples[:middle]),
            replace(message, samples=samples[middle:]),
        )
    if not samples:
        return None
    (sample,) = samples
    ifs, peers = sample.interfaces, sample.bgp
    if len(ifs) >= 2:
        middle = len(ifs) // 2
        first = replace(sample, interfaces=ifs[:middle], bgp=[])
        second = replace(sample, interfaces=ifs[middle:], bgp=peers)
    elif len(peers) >= 2:
        middle = len(peers) // 2
        first = replace(sample, interfaces=ifs, bgp=peers[:middle])
        second = replace(sample, interfaces=[], bgp=peers[middle:])
    elif ifs and peers:
        first = replace(sample, bgp=[])
        second = replace(sample, interfaces=[])
    else:
        return None
    return replace(message, samples=[first]), replace(message, samples=[second])
