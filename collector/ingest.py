"""MQTT ingest: decode, validate, route, and acknowledge only what is safe.

Two broker connections, each a persistent session with manual
acknowledgement, over MQTT 5 where the broker offers it and 3.1.1 otherwise
(DESIGN, "Protocol"; `enoc.mqtt.ProtocolChoice`, as the agent does): 5 with
clean start off, a session expiry of 30 days (without one a v5 session ends
with its connection) and a Receive Maximum of `mqtt.max_unacked`, so that the
broker holds back what the collector has not acknowledged whatever its own
in-flight limit; 3.1.1 with clean session off (the demo's amqtt, which leaves
a v5 CONNECT unanswered: 3.1.1 is tried after `V5_CONNACK_TIMEOUT`). Either
way a message is acknowledged only when it is safe:

- *metrics*: a metrics message is acknowledged once its points were accepted
  by InfluxDB (the writer calls back). While InfluxDB is down the writer's
  buffer fills, `put` waits, this loop stops reading, the broker's in-flight
  window fills and the broker holds the rest in the session: backpressure,
  and nothing acknowledged is ever only in memory. A `kill -9` loses nothing.
- *events and status*: acknowledged once the incident store committed them.
  On its own connection so that an InfluxDB outage never delays incidents.

The rule of every lane: whatever a payload does inside decoding and
validation, or the store's refusal of its content (a constraint, a value it
cannot hold), is that message's fault: it is counted by reason, logged once per
reason, republished to `enoc/deadletter/v1/<reason>` (its first 64 KiB) and
acknowledged, for redelivering it would change nothing. Only an outage of a
server (the broker, InfluxDB, the store: `collector.store.store_outage`) holds
messages back. A payload over `mqtt.max_message_size` is refused before
anything reads it; over MQTT 5 the broker is told the size and does not send
one at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from collector.config import CollectorMqttConfig
from collector.metrics_in import Metrics
from collector.metrics_in import read as read_metrics
from collector.mqtt_receive import buffered_read, lean_receive
from collector.store import content_refused, store_outage
from enoc import mqtt
from enoc.brokers import Brokers
from enoc.lifecycle import Policy, ServiceBase, Supervisor
from enoc.logs import OnceLogger, get_logger, strip_login
from enoc.mqtt import AckedClient, ProtocolChoice, abandon, broker_client_args
from enoc.retry import Backoff
from enoc.wire import (
    MAX_DEPTH,
    EventsMessage,
    MetricsMessage,
    StatusMessage,
    WireError,
    check_size,
    decode,
    parse_topic,
    subscription,
)

if TYPE_CHECKING:
    from collector.partition import Partition

log = get_logger("enoc.collector.ingest")
DEAD_LETTER_PREFIX = "enoc/deadletter/v1"
CONNECT_TIMEOUT = 10.0  # aiomqtt's for the CONNACK (3.1.1), SUBACK and PUBACK
KEPT = 65536  # bytes of a rejected payload its dead letter carries
DRAIN_IDLE = 2.0  # s without a message that ends the draining of a dead replica's session
# s a drain lasts at most: the session still holds its sites' subscriptions, so under steady
# traffic it never falls idle; what it held from before the survivors subscribed (about a
# `takeover` of its share) comes first, and what comes after reaches the new owners too
DRAIN_LONGEST = 60.0


def wire_error(exc: Exception) -> WireError:
    """What an exception raised while a payload was decoded says about it."""
    if isinstance(exc, WireError):
        return exc
    if isinstance(exc, RecursionError):
        return WireError("too_deep", f"nested deeper than {MAX_DEPTH} levels")
    return WireError("malformed", f"cannot decode: {type(exc).__name__}: {exc}")


def handler_error(exc: Exception) -> WireError:
    """The reason a decoded message that its handler failed on, the store being up, is
    dead-lettered: `refused` (the store refused its content: a constraint, a value out of
    range), else `unprocessable` (whatever else it made the handler raise)."""
    kind = "refused" if content_refused(exc) else "unprocessable"
    return WireError(kind, f"{type(exc).__name__}: {exc}")


class Held(Exception):
    """A message its source must keep and deliver again (the store is down)."""


# Publishes one dead letter (`enoc/deadletter/v1/<reason>`, its JSON body) on the source's
# own broker; a failure to publish is the sender's to count, never an exception.
DeadLetterSend = Callable[[str, bytes], Coroutine[Any, Any, None]]


def dead_letter_body(topic: str, payload: bytes, size: int, error: WireError) -> bytes:
    """What a dead letter carries: where the message came from, why, and its first bytes."""
    body = {
        "topic": topic,
        "reason": error.kind,
        "error": str(error),
        "received": time.time(),
        "payload_b64": base64.b64encode(payload).decode(),  # the first KEPT bytes
        "size": size,
    }
    return json.dumps(body).encode()


@dataclass
class IngestStats:
    received: Counter[str] = field(default_factory=Counter)  # by kind
    rejected: Counter[str] = field(default_factory=Counter)  # by WireError kind
    dead_lettered: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # handler errors (redelivered later)
    lane_errors: Counter[str] = field(default_factory=Counter)  # a lane's loop failed: by lane
    acked: int = 0
    connects: Counter[str] = field(default_factory=Counter)
    connected: dict[str, bool] = field(default_factory=dict)
    protocol: dict[str, int] = field(default_factory=dict)  # by lane: 5, or 4 (3.1.1)
    session_present: dict[str, bool] = field(default_factory=dict)  # the broker kept it
    broker: dict[str, str] = field(default_factory=dict)  # by lane: connected to (no login)
    broker_switches: int = 0  # connections to another broker than a lane's last one
    subscriptions_refused: Counter[str] = field(default_factory=Counter)  # by lane (SUBACK)
    refused_sites: dict[str, list[str]] = field(default_factory=dict)  # by lane: refused now
    last_error: str = ""


Handler = Callable[[Any, Callable[[], None], bool], Awaitable[None]]


class Ingest:
    """Runs both consumer connections; `on_metrics` / `on_events` / `on_status` do the work.

    Each handler gets the decoded message and an `ack` callable it must call
    exactly once when the message is safe (written, buffered for a write that
    will call it, or committed).
    """

    def __init__(
        self,
        config: CollectorMqttConfig,
        *,
        on_metrics: Callable[[Metrics, Callable[[], None]], Awaitable[None]],
        on_events: Callable[[EventsMessage], Awaitable[None]],
        on_status: Callable[[StatusMessage, bool], Awaitable[None]],
        on_drained: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.on_metrics = on_metrics
        self.on_events = on_events
        self.on_status = on_status
        # called by a source that has no more metrics ready while some await their write
        # (collector/nats_ingest.py): they are written now, not after the flush interval
        self.on_drained = on_drained
        self.stats = IngestStats()
        self.pending_metrics = 0  # received, not yet acknowledged
        self._bad = OnceLogger(log)
        self.subscribed = asyncio.Event()  # both lanes subscribed at least once
        self._lanes_subscribed: set[str] = set()
        self._dead_letters = asyncio.Semaphore(100)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing = OnceLogger(log)
        self.protocols = {"metrics": ProtocolChoice(), "events": ProtocolChoice()}
        # each lane's own order of a cluster's nodes (`mqtt.urls`): the lanes spread
        self.brokers = {
            lane: Brokers(config.brokers, identity=f"{config.client_id}-{lane}")
            for lane in ("metrics", "events")
        }
        self._consuming: aiomqtt.Client | None = None  # the metrics lane's, once consuming
        # set: metrics and events are subscribed to by site, those this replica keeps
        self.partition: Partition | None = None

    # ---------------------------------------------------------------- connections

    def lanes(self) -> list[Lane]:
        """The two consumer connections, each a part of its own."""
        group = self.config.shared_group
        base = self.config.client_id
        if self.partition is not None:  # the kind's filters follow the sites it keeps
            return [
                Lane(self, "metrics", f"{base}-metrics", [], routed="metrics"),
                Lane(self, "events", f"{base}-events", [subscription("status")], routed="events"),
            ]
        # Status goes to every replica (low rate; each keeps agent liveness current).
        return [
            Lane(self, "metrics", f"{base}-metrics", [subscription("metrics", share_group=group)]),
            Lane(
                self,
                "events",
                f"{base}-events",
                [subscription("events", share_group=group), subscription("status")],
            ),
        ]

    async def run(self, stop: asyncio.Event) -> int:
        """Both lanes, alone (without the rest of the collector), until `stop`."""
        supervisor = Supervisor("ingest")
        for lane in self.lanes():
            supervisor.add(lane, Policy.RESTART)
        return await supervisor.serve(stop)

    async def _connection(
        self,
        lane: str,
        identifier: str,
        filters: list[str],
        stop: asyncio.Event,
        routed: Literal["metrics", "events"] | None = None,
    ) -> None:
        backoff = Backoff(0.5, 10.0)
        choice = self.protocols[lane]
        brokers = self.brokers[lane]
        fell_back = ""  # why the broker was taken not to speak 5, until 3.1.1 connects
        while not stop.is_set():
            protocol = choice.version
            entered = False
            client: AckedClient | None = None
            try:
                args = broker_client_args(
                    self.config,
                    url=brokers.url,
                    identifier=identifier,
                    protocol=protocol,
                    # a broker that does not speak 5 may never answer a v5 CONNECT
                    timeout=mqtt.V5_CONNACK_TIMEOUT if protocol == mqtt.V5 else CONNECT_TIMEOUT,
                    receive_maximum=self.config.max_unacked,
                    maximum_packet_size=self.config.max_message_size + mqtt.PACKET_HEADROOM,
                )
                client = AckedClient(**args)
                # Before the connect, not after: a resumed session's messages follow the
                # CONNACK at once, and paho acknowledges by itself until told otherwise;
                # one acknowledged while still queued here is lost if this lane drops.
                client._client.manual_ack_set(True)
                lean_receive(client._client)  # paho's PUBLISH decoding, without its copies
                # ... and its socket reads, many packets a recv. The metrics lane reads no
                # more while it holds max_unacked messages not yet written: the broker's
                # window should see to that, and Debian's Mosquitto 2.0.11 does not (one
                # acknowledgement let a hundred more in): the burst stays with the broker.
                buffered_read(
                    client._client,
                    may_read=self._may_read(client) if lane == "metrics" else None,
                    on_error=self._read_failed(client),
                )
                async with client:
                    entered = True
                    choice.connected()
                    if previous := brokers.connected():
                        self.stats.broker_switches += 1
                        # a shared subscription's session lives in the cluster; a plain
                        # one's messages queued on the node left are that node's
                        log.warning(
                            "moved from broker %s to %s", strip_login(previous), brokers.shown()
                        )
                    self.stats.broker[lane] = brokers.shown()
                    client.timeout = CONNECT_TIMEOUT
                    client.pending_calls_threshold = 1000  # dead letters publish in bursts
                    self.stats.connects[lane] += 1
                    self.stats.protocol[lane] = int(protocol)  # the wire level: 4 is 3.1.1
                    self.stats.session_present[lane] = client.session_present
                    backoff.reset()
                    for f in filters:
                        if refused([f], await client.subscribe(f, qos=1)):
                            self.stats.subscriptions_refused[lane] += 1
                            raise aiomqtt.MqttError(f"the broker refused the subscription {f}")
                    self.stats.connected[lane] = True
                    log.info(
                        "consuming %s (MQTT %s, %s session)",
                        ", ".join(filters),
                        mqtt.version_name(protocol),
                        "resumed" if client.session_present else "new",
                        lane=lane,
                    )
                    if fell_back and protocol != mqtt.V5:
                        log.info(
                            "broker %s does not speak MQTT 5 (%s): consuming over 3.1.1",
                            brokers.shown(),
                            fell_back,
                            lane=lane,
                        )
                    fell_back = ""
                    following = None
                    if routed is not None and self.partition is not None:
                        resumed = bool(client.session_present)
                        following = follow(
                            self.partition, client, lane, routed, resumed, self._refused(lane)
                        )
                    self._lanes_subscribed.add(lane)
                    if len(self._lanes_subscribed) == 2:
                        self.subscribed.set()
                    try:
                        await self._consume(client, lane, stop)
                    finally:
                        if following is not None:
                            following.cancel()
                            with contextlib.suppress(BaseException):
                                await following
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: TLS files, sockets
                self.stats.last_error = f"{lane}: {exc}"
                if not entered and client is not None:
                    abandon(client)
                if not entered and choice.fall_back(exc):
                    fell_back = str(exc)
                    continue  # 3.1.1, at once
                if not entered:
                    choice.failed()
                brokers.failed()  # refused, unanswered or dropped: the next node
                if self.stats.connected.get(lane):
                    log.warning("broker connection lost (%s): %s", lane, exc)
                else:
                    self._failing(f"connect-{lane}", f"cannot reach broker: {exc}")
            except Exception as exc:  # a fault of ours: never end the lane silently
                self.stats.lane_errors[lane] += 1
                self.stats.last_error = f"{lane}: {type(exc).__name__}: {exc}"
                if not entered and client is not None:
                    abandon(client)
                log.exception("the %s lane failed: reconnecting", lane)
            finally:
                self.stats.connected[lane] = False
                if lane == "metrics":
                    self.pending_metrics = 0  # the broker redelivers what was not acked
            if not stop.is_set():
                await backoff.wait(stop)

    async def drain(
        self, identifier: str, idle: float = DRAIN_IDLE, longest: float = DRAIN_LONGEST
    ) -> int:
        """Take what the persistent session `identifier` (a dead replica's lane) holds,
        each message handled and acknowledged as on a lane, until none came for `idle`
        seconds or for `longest` in all; then end the session. How many it took."""
        protocol = self.protocols["metrics"].version
        url = self.brokers["metrics"].url  # the node the lanes reach (a cluster's)
        args = broker_client_args(
            self.config,
            url=url,
            identifier=identifier,
            protocol=protocol,
            timeout=CONNECT_TIMEOUT,
            receive_maximum=self.config.max_unacked,
            maximum_packet_size=self.config.max_message_size + mqtt.PACKET_HEADROOM,
            session_expiry=0,  # 5: the session ends with this connection
        )
        taken = 0
        client = AckedClient(**args)
        client._client.manual_ack_set(True)  # acknowledged once handled, as on a lane
        async with client:
            messages = aiter(client.messages)
            end = time.monotonic() + longest
            while (left := end - time.monotonic()) > 0:
                try:
                    message = await asyncio.wait_for(anext(messages), min(idle, left))
                except TimeoutError:
                    break
                await self._handle(client, message)
                taken += 1
        if protocol != mqtt.V5:  # 3.1.1: a clean session replaces it, then ends
            args = broker_client_args(
                self.config, url=url, identifier=identifier, protocol=protocol
            )
            args["clean_session"] = True
            async with AckedClient(**args):
                pass
        return taken

    def _may_read(self, client: aiomqtt.Client) -> Callable[[], bool]:
        """Whether the metrics lane may read more: until it consumes (the SUBACK, and the
        PUBACKs of its dead letters, come the same way), always; then while what it
        received and has not acknowledged (handled or still queued) is within
        `max_unacked`."""
        queue, limit = client._queue, self.config.max_unacked
        return lambda: self._consuming is not client or self.pending_metrics + queue.qsize() < limit

    def _refused(self, lane: str) -> Callable[[list[str]], None]:
        def told(sites: list[str]) -> None:
            self.stats.refused_sites[lane] = sorted(sites)
            if not sites:
                return
            self.stats.subscriptions_refused[lane] += len(sites)
            self._failing(
                f"refused-{lane}",
                f"the broker refused the {lane} subscription of {len(sites)} site(s) "
                f"({', '.join(sites[:5])}{', ...' if len(sites) > 5 else ''}): subscribing again",
            )

        return told

    @staticmethod
    def _read_failed(client: aiomqtt.Client) -> Callable[[Exception], None]:
        """A read made after a pause failed unexpectedly: as aiomqtt's own reader does,
        end the connection with that error."""

        def failed(exc: Exception) -> None:
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)

        return failed

    async def _consume(self, client: aiomqtt.Client, lane: str, stop: asyncio.Event) -> None:
        if lane == "metrics":
            self._consuming = client
        messages = client.messages
        # What aiomqtt has already queued is taken straight from its queue: waiting for each
        # message through a task and asyncio.wait (twice, with aiomqtt's own) cost 30-50 us
        # a message, as much as paho's whole receive path. Only an empty queue is waited for.
        queued = client._queue
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                while len(messages) and not stop.is_set():
                    await self._handle(client, queued.get_nowait())
                if stop.is_set():
                    return
                nxt = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                await self._handle(client, nxt.result())
        finally:
            stopping.cancel()

    # ---------------------------------------------------------------- one message

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        paho = client._client
        mid, qos = message.mid, message.qos
        connection = paho  # an ack after a reconnect must not go to the new session

        def ack() -> None:
            if qos > 0 and connection is client._client and connection.is_connected():
                connection.ack(mid, qos)

        async def send(subject: str, body: bytes) -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(subject, body, qos=1, timeout=5)
                self.stats.dead_lettered += 1

        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        try:
            await self.take(message.topic.value, payload, bool(message.retain), ack, send)
        except Held as held:  # the broker redelivers after the reconnect
            raise aiomqtt.MqttError(str(held)) from held.__cause__

    async def take(
        self,
        topic: str,
        payload: bytes | bytearray,
        retained: bool,
        acknowledge: Callable[[], None],
        dead_letter: DeadLetterSend,
    ) -> None:
        """One message of any ingest source (MQTT here, NATS JetStream in
        collector/nats_ingest.py): decode it and hand it to its handler; `acknowledge` is
        called once, when it is safe (written, committed, or dead-lettered through
        `dead_letter(topic, body)`). Raises `Held` when the store is down: the message is
        not acknowledged and must come again."""
        acked = False

        def ack() -> None:
            nonlocal acked
            if acked:
                return
            acked = True
            self.stats.acked += 1
            acknowledge()

        decoded: Metrics | EventsMessage | StatusMessage
        try:
            site, agent, kind = parse_topic(topic)
            check_size(payload, self.config.max_message_size)  # before anything reads it
            if kind == "metrics":  # straight to its lines (in C where it is built)
                decoded = read_metrics(
                    site, agent, bytes(payload), max_size=self.config.max_message_size
                )
            else:
                other = decode(topic, bytes(payload), max_size=self.config.max_message_size)
                if isinstance(other, MetricsMessage):  # decode follows the topic's kind
                    raise WireError("misaddressed", "a metrics payload on an events topic")
                decoded = other
        except Exception as exc:  # whatever decoding does is the payload's fault
            await self._reject(dead_letter, topic, payload, wire_error(exc), ack)
            return
        if isinstance(decoded, Metrics):
            self.stats.received["metrics"] += 1
            self.pending_metrics += 1

            def metrics_ack() -> None:
                if not acked:
                    self.pending_metrics -= 1
                ack()

            try:
                await self.on_metrics(decoded, metrics_ack)
            except Exception as exc:  # the writer waits out InfluxDB's outages: not one
                await self._reject(dead_letter, topic, payload, handler_error(exc), metrics_ack)
            return
        try:
            if isinstance(decoded, EventsMessage):
                self.stats.received["events"] += 1
                await self.on_events(decoded)
            else:
                self.stats.received["status"] += 1
                await self.on_status(decoded, retained)
        except Exception as exc:
            if not store_outage(exc):  # the store refused it: no retry changes that
                await self._reject(dead_letter, topic, payload, handler_error(exc), ack)
                return
            # The store is down: do not ack; the source redelivers it. Dead letters under
            # way are finished first, so that theirs are acknowledged.
            self._handler_failed(type(decoded).__name__, exc)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=CONNECT_TIMEOUT)
            raise Held(f"cannot commit a message: {exc}") from exc
        ack()

    async def _reject(
        self,
        dead_letter: DeadLetterSend,
        topic: str,
        payload: bytes | bytearray,
        exc: WireError,
        ack: Callable[[], None],
    ) -> None:
        """Count, log once per reason, dead-letter, then acknowledge a message that can
        never be taken (redelivering it would change nothing)."""
        self.stats.rejected[exc.kind] += 1
        self._bad(exc.kind, f"rejected a message: {exc}", topic=topic)
        # Published in the background (a QoS 1 round trip each would throttle the lane);
        # acknowledged once the dead letter is with the broker.
        await self._dead_letters.acquire()
        body = dead_letter_body(topic, bytes(payload[:KEPT]), len(payload), exc)
        task = asyncio.create_task(dead_letter(f"{DEAD_LETTER_PREFIX}/{exc.kind}", body))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._dead_letters.release()
            ack()

        task.add_done_callback(done)

    def _handler_failed(self, what: str, exc: Exception) -> None:
        self.stats.failed[what] += 1
        self.stats.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self._failing(f"handler-{what}", f"handling {what} failed: {exc}")


class Lane(ServiceBase):
    """One consumer connection of the ingest: connects (nothing to acquire before), consumes
    and reconnects until `close`. A fault of ours inside it is logged with its traceback,
    counted in `lane_errors` and answered with a reconnect, the lane's own restart: the
    message it was handling is not acknowledged and comes again."""

    def __init__(
        self,
        ingest: Ingest,
        lane: str,
        identifier: str,
        filters: list[str],
        *,
        routed: Literal["metrics", "events"] | None = None,
    ) -> None:
        super().__init__()
        self.name = f"ingest.{lane}"
        self.ingest = ingest
        self.lane = lane
        self.identifier = identifier
        self.filters = filters
        self.routed = routed  # the kind subscribed to by site (collector/partition.py)

    async def _run(self) -> None:
        await self.ingest._connection(
            self.lane, self.identifier, self.filters, self.closing, self.routed
        )


# Filters in one SUBSCRIBE or UNSUBSCRIBE: NATS's gateway answers a SUBSCRIBE once every
# filter's consumer is made (up to half a second each on a loaded node), so a few at a time
SUBSCRIBE_CHUNK = 20
# A SUBACK's wait for each filter beyond CONNECT_TIMEOUT: NATS's MQTT gateway makes each
# QoS 1 subscription a consumer replicated on `consumer_replicas` nodes, up to about half a
# second each on a loaded node, and refuses those past a session's 65535 unacknowledged
# messages (docs/collector.md, "Partitioning"); Mosquitto answers at once. A broker that
# dies meanwhile is found by the keepalive, not by this wait.
SUBACK_PER_FILTER = 1.0
REFUSED_GRACE = 60.0  # s a refused site holds the lane's `applied` (see `follow`)


def suback_timeout(filters: int) -> float:
    """How long a SUBSCRIBE or UNSUBSCRIBE of `filters` filters may wait for its answer."""
    return CONNECT_TIMEOUT + SUBACK_PER_FILTER * filters


def refused(filters: list[str], granted: tuple[int, ...] | list[ReasonCode]) -> list[str]:
    """The filters a SUBACK refused (a code of 0x80 or above: a failure, not a QoS)."""
    codes = [int(c.value) if isinstance(c, ReasonCode) else int(c) for c in granted]
    return [f for f, code in zip(filters, codes, strict=True) if code >= 0x80]


def follow(
    partition: Partition,
    client: aiomqtt.Client,
    lane: str,
    kind: Literal["metrics", "events"],
    resumed: bool,
    on_refused: Callable[[list[str]], None],
) -> asyncio.Task[None]:
    """A task that keeps the lane subscribed to `enoc/v1/<site>/+/<kind>` of each site
    `partition` keeps, and to no other; the sites whose subscription the broker refused
    (`on_refused` told, with [] once none is) are subscribed again after a backoff; a
    failure ends the connection (the lane reconnects and subscribes again)."""

    async def run() -> None:
        wake = partition.watch(lane)
        # nothing is applied on this connection yet (a session not resumed has nothing)
        partition.applied(lane, "")
        subscribed: set[str] = set()
        retry = Backoff(1.0, 30.0)
        refused_since: float | None = None
        if resumed:  # the session holds the last run's subscriptions, unknown here
            stale = sorted(partition.sites - partition.wanted())
            for n in range(0, len(stale), SUBSCRIBE_CHUNK):
                batch = stale[n : n + SUBSCRIBE_CHUNK]
                await client.unsubscribe(
                    [subscription(kind, s) for s in batch], timeout=suback_timeout(len(batch))
                )
        while True:
            wake.clear()
            wanted, view = partition.wanted(), partition.view
            # the new ones first: a site moving here is subscribed before its old owner
            # lets it go (it waits for `applied`), so no message finds neither
            add = sorted(wanted - subscribed)
            failed: list[str] = []
            for n in range(0, len(add), SUBSCRIBE_CHUNK):
                batch = add[n : n + SUBSCRIBE_CHUNK]
                filters = [subscription(kind, s) for s in batch]
                granted = await client.subscribe(
                    [(f, 1) for f in filters], timeout=suback_timeout(len(batch))
                )
                lost = set(refused(filters, granted))
                failed += [s for s, f in zip(batch, filters, strict=True) if f in lost]
                subscribed.update(s for s, f in zip(batch, filters, strict=True) if f not in lost)
            drop = sorted(subscribed - wanted)
            for n in range(0, len(drop), SUBSCRIBE_CHUNK):
                batch = drop[n : n + SUBSCRIBE_CHUNK]
                await client.unsubscribe(
                    [subscription(kind, s) for s in batch], timeout=suback_timeout(len(batch))
                )
                subscribed.difference_update(batch)
            on_refused(failed)
            if failed:
                now = time.monotonic()
                refused_since = refused_since if refused_since is not None else now
                # Not `applied` for a while: a moving site's old owner keeps it until this
                # one has it. A refusal that lasts (an ACL, the broker's limits) must not
                # hold every handover and drain of the cluster: applied then, the refused
                # sites still tried again and shown (`/healthz`)
                if now - refused_since >= REFUSED_GRACE:
                    partition.applied(lane, view)
                await asyncio.sleep(retry.next())
                continue
            refused_since = None
            retry.reset()
            partition.applied(lane, view)
            await wake.wait()

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not client._disconnected.done():
            log.warning("subscribing %s by site failed: %s", lane, exc)
            client._disconnected.set_exception(aiomqtt.MqttError(str(exc)))

    task = asyncio.ensure_future(run())
    task.add_done_callback(done)
    return task
