"""NATS JetStream ingest: collector replicas as one consumer group on a replicated stream.

An ingest source beside the MQTT lanes (collector/ingest.py): each message goes through
the same `Ingest.take` (decoding, lanes, dead letters, acknowledgement after the write or
commit); this module only receives and acknowledges. Agents publish over MQTT 3.1.1 to any
node's MQTT gateway; the gateway stores every QoS 1 PUBLISH in the `$MQTT_msgs` stream
(interest retention, replicated on the server's `mqtt.stream_replicas` nodes) *before*
it sends the PUBACK (docs/collector.md, "What a PUBACK promises"). The collector consumes
that stream by default: every message an agent's spool forgot is held there until a
replica acknowledged it.

At its start the collector creates (or checks) the stream and two durable consumers all
replicas share, `<consumer>-metrics` and `<consumer>-events`, pushed to a deliver group
the replicas join (explicit ack, `max_ack_pending` the back-pressure, `ack_wait` the time
before the server hands an unacknowledged message to another replica), and refuses to
run when it cannot: on `$MQTT_msgs` a message no consumer wants is dropped as it is
stored, so the consumers must exist before agents publish. They are push consumers, not
pull, and neither filters (each lane receives every message and acknowledges at once
what is not its kind): nats-server 2.9.10's pull consumers pass over a stored message now
and then without delivering it, which interest retention then deletes (docs/collector.md,
"Pushed, unfiltered consumers"). Status messages go to every replica (each keeps agent
liveness), through an ordered consumer of its own.

A message is acknowledged once written or committed; one the store could not commit
(an outage) is nak'ed with `nak_delay`; one that can never be taken is dead-lettered on
`enoc.deadletter.v1.<reason>` (MQTT `enoc/deadletter/v1/<reason>`) and terminated. The
client reconnects by itself to another node when the one it uses is lost; the lanes
wait that out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext

from collector.config import CollectorMqttConfig
from collector.config_nats import MQTT_PREFIX, MQTT_STREAM, NatsConfig
from collector.ingest import Held, Ingest
from enoc.lifecycle import ServiceBase
from enoc.logs import OnceLogger, get_logger
from enoc.mqtt import tls_context
from enoc.retry import Backoff, pause

log = get_logger("enoc.collector.nats")
RETAINED_STREAM = "$MQTT_rmsgs"  # the gateway's retained messages
LANES = ("metrics", "events")  # shared by the replicas; status goes to each
CONNECT_TIMEOUT = 5.0  # s, each server tried at the start
START_ATTEMPTS = 4  # tries of each server, after the first, before the start fails
FETCH_WAIT = 1.0  # s a lane waits for a message (then again: closing is checked)
# + the durable: where a lane's consumer pushes (an inbox: no stream captures it, and the
# collector's NATS user may subscribe there, deploy/make_certs.py)
DELIVER_PREFIX = "_INBOX.enoc."


def _nothing() -> None:
    """The acknowledgement of a message nobody acknowledges (a retained record)."""


class NatsSetupError(RuntimeError):
    """The stream or a consumer cannot be created or is not what the collector needs."""


def ingest_config(config: NatsConfig) -> CollectorMqttConfig:
    """What `Ingest` reads of its source's config (its limits), from `nats`."""
    return CollectorMqttConfig(
        client_id=config.name,
        max_unacked=config.max_ack_pending,
        max_message_size=config.max_message_size,
    )


def topic_of(subject: str) -> str:
    """The MQTT topic a subject came from: the gateway maps `/` to `.` (a `.` in a
    topic is refused by NATS 2.9, so none is in a subject's tokens)."""
    return subject.removeprefix(MQTT_PREFIX).replace(".", "/")


def stream_config(config: NatsConfig) -> StreamConfig:
    if config.stream == MQTT_STREAM:  # the gateway's own, as it creates it (server/mqtt.go)
        return StreamConfig(
            name=MQTT_STREAM,
            subjects=[f"{MQTT_PREFIX}>"],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
            num_replicas=config.replicas,
        )
    return StreamConfig(
        name=config.stream,
        subjects=list(config.subjects),
        storage=StorageType.FILE,
        num_replicas=config.replicas,
    )


def consumer_config(config: NatsConfig, lane: str) -> ConsumerConfig:
    """A lane's shared durable: pushed to a deliver group (the replicas), no
    `filter_subject` (see the module's docstring)."""
    durable = f"{config.consumer}-{lane}"
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=float(config.ack_wait),
        max_ack_pending=config.max_ack_pending,
        deliver_subject=f"{DELIVER_PREFIX}{durable}",
        deliver_group=durable,
    )


def lane_of(subject: str, prefix: str) -> str:
    """The lane that takes a message of the stream: its kind for an enoc subject
    (`<prefix>enoc.v1.<site>.<agent>.<kind>`), "" for any other (acknowledged unread by
    every lane, as a filter would have left it)."""
    tokens = subject.removeprefix(prefix).split(".") if subject.startswith(prefix) else []
    if len(tokens) != 5 or tokens[:2] != ["enoc", "v1"]:
        return ""
    return tokens[4]


async def ensure_stream(js: JetStreamContext, config: NatsConfig) -> None:
    """Create the stream and the shared consumers, or check that they serve: raises
    NatsSetupError naming what is wrong."""
    wanted = stream_config(config)
    try:
        info = await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(wanted)
        except nats.js.errors.APIError as exc:
            raise NatsSetupError(f"cannot create stream {config.stream}: {exc}") from exc
        log.info("created stream", stream=config.stream, replicas=config.replicas)
    else:
        have = info.config.num_replicas or 1
        if have < config.replicas:
            where = "the servers' mqtt.stream_replicas" if config.stream == MQTT_STREAM else ""
            raise NatsSetupError(
                f"stream {config.stream} is replicated on {have} node(s), nats.replicas "
                f"asks {config.replicas}{': raise ' + where if where else ''}"
            )
    for lane in LANES:
        wanted_consumer = consumer_config(config, lane)
        name = f"{config.consumer}-{lane}"
        try:
            found = await js.consumer_info(config.stream, name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_consumer(config.stream, wanted_consumer)
            except nats.js.errors.APIError as exc:
                raise NatsSetupError(f"cannot create consumer {name}: {exc}") from exc
            continue
        if found.config.filter_subject or found.config.deliver_group != name:
            # what an earlier collector made: filtered pull consumers
            raise NatsSetupError(
                f"consumer {name} of {config.stream} is not the push consumer of deliver "
                f"group {name} over every subject that the collector needs (nats-server 2.9 "
                "can pass over messages of a pull or filtered consumer): delete it or name "
                "another nats.consumer"
            )


class NatsIngest(ServiceBase):
    """The NATS ingest source of `ingest` (its handlers, stats and limits): connects and sets
    up the stream at `start` (a StartError when it cannot), takes messages until `close`."""

    name = "ingest.nats"

    def __init__(self, config: NatsConfig, ingest: Ingest) -> None:
        super().__init__()
        self.config = config
        self.ingest = ingest
        self.nc: NatsClient | None = None
        self._failing = OnceLogger(log)
        self._acks: set[asyncio.Task[None]] = set()
        # messages a lane acknowledged unread: another lane's kind (every lane sees all)
        self.passed: Counter[str] = Counter()

    async def _start(self) -> None:
        try:
            self.nc = await self._connect()
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            raise NatsSetupError(
                f"cannot connect to any of nats.servers ({', '.join(self.config.servers)}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        # from now on it reconnects for ever: a lost node's peers take over
        self.nc.options["max_reconnect_attempts"] = -1
        self.ingest.stats.connects["nats"] += 1
        self.ingest.stats.connected["nats"] = True
        await ensure_stream(self.nc.jetstream(), self.config)
        log.info(
            "consuming %s from stream %s",
            ", ".join(consumer_config(self.config, lane).durable_name or "" for lane in LANES),
            self.config.stream,
            server=self.nc.connected_url.netloc if self.nc.connected_url else "",
        )

    async def _connect(self) -> NatsClient:
        """Each server tried START_ATTEMPTS times at most (nats-py's first connection
        otherwise retries for ever: the collector would never say why it does not start)."""
        return await nats.connect(
            self.config.servers,
            name=self.config.name,
            connect_timeout=CONNECT_TIMEOUT,
            max_reconnect_attempts=START_ATTEMPTS,
            reconnect_time_wait=0.5,
            tls=self._tls(),
            user_credentials=str(self.config.credentials_file)
            if self.config.credentials_file
            else None,
            user=self.config.username,
            password=self.config.password.reveal() if self.config.password else None,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._error,
        )

    def _tls(self) -> ssl.SSLContext | None:
        if self.config.tls is None and not any(s.startswith("tls:") for s in self.config.servers):
            return None
        return tls_context(self.config.tls)

    async def _disconnected(self) -> None:
        self.ingest.stats.connected["nats"] = False
        if not self.closing.is_set():
            log.warning("NATS connection lost: reconnecting to another server")

    async def _reconnected(self) -> None:
        self.ingest.stats.connected["nats"] = True
        self.ingest.stats.connects["nats"] += 1
        url = self.nc.connected_url if self.nc is not None else None
        log.info("NATS reconnected", server=url.netloc if url else "")

    async def _error(self, exc: Exception) -> None:
        self.ingest.stats.last_error = f"nats: {type(exc).__name__}: {exc}"
        self._failing("nats-error", f"NATS client error: {exc}")

    async def _run(self) -> None:
        assert self.nc is not None
        tasks = [asyncio.create_task(self._lane(lane)) for lane in LANES]
        tasks.append(asyncio.create_task(self._status()))
        self.ingest.subscribed.set()
        try:
            await self.closing.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=5)
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            # the acknowledgements sent, then closed (a drain would wait out its 30 s for
            # the lanes' subscriptions, which end with the lanes)
            with contextlib.suppress(Exception):  # a lost server: nothing left to flush
                await nc.flush(timeout=2)
            await nc.close()
        self.ingest.stats.connected["nats"] = False

    # ---------------------------------------------------------------- taking

    async def _lane(self, lane: str) -> None:
        """Take each message the lane's shared consumer delivers to this replica, in order."""
        assert self.nc is not None
        js = self.nc.jetstream()
        config = consumer_config(self.config, lane)
        backoff = Backoff(0.5, 5.0)
        sub: JetStreamContext.PushSubscription | None = None
        while not self.closing.is_set():
            try:
                if sub is None:
                    sub = await js.subscribe_bind(
                        self.config.stream,
                        config,
                        config.durable_name or "",
                        manual_ack=True,
                        pending_msgs_limit=2 * self.config.max_ack_pending,
                    )
                try:
                    msg = await sub.next_msg(timeout=FETCH_WAIT)
                except TimeoutError:
                    msg = None
                if msg is not None:
                    if lane_of(msg.subject, self.config.prefix) != lane:
                        self.passed[lane] += 1  # the other lane's, or no lane's
                        self._settle(msg.ack())
                    elif not await self._take(msg):
                        # the store is down: what waits here after it, and nothing taken
                        # before they are due again (the engine decides by the events'
                        # own times, not by their arrival: docs/collector.md)
                        delay = float(self.config.nak_delay)
                        while sub.pending_msgs:
                            rest = await sub.next_msg(timeout=FETCH_WAIT)
                            self._settle(rest.nak(delay=delay))
                        await pause(self.closing, delay)
                if lane == "metrics" and not sub.pending_msgs:
                    # Nothing more here now: the server holds the rest for the shared
                    # window, whose other shares the other replicas hold, so this
                    # replica's share never fills the window that writes at once
                    self.ingest.on_drained()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                if self.closing.is_set():  # the connection closed under the subscription
                    return
                # a node lost, a consumer leader being elected: the client reconnects
                self.ingest.stats.last_error = f"nats {lane}: {type(exc).__name__}: {exc}"
                self._failing(f"take-{lane}", f"taking {lane} failed ({exc}): retrying")
                await backoff.wait(self.closing)
            except Exception:  # a fault of ours: never end the lane silently
                self.ingest.stats.lane_errors[lane] += 1
                log.exception("the NATS %s lane failed: taking again", lane)
                await backoff.wait(self.closing)

    async def _status(self) -> None:
        """Every status message, to this replica (an ordered consumer of its own)."""
        assert self.nc is not None
        js = self.nc.jetstream()
        subject = f"{self.config.prefix}enoc.v1.*.*.status"
        backoff = Backoff(0.5, 5.0)
        retained = self.config.stream == MQTT_STREAM
        while not self.closing.is_set():
            try:
                sub = await js.subscribe(
                    subject,
                    stream=self.config.stream,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW,
                )
                if retained:  # once, before what is published from now on
                    await self._retained(js)
                    retained = False
                async for msg in sub.messages:
                    await self._take(msg, ordered=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ingest.stats.last_error = f"nats status: {type(exc).__name__}: {exc}"
                self._failing("status", f"status consumer failed ({exc}): again")
                await backoff.wait(self.closing)

    async def _retained(self, js: JetStreamContext) -> None:
        """Every agent's retained status, taken as retained, as an MQTT subscription
        starts with them: a starting replica knows each agent's state at once. The gateway
        keeps them in `$MQTT_rmsgs` (nats-server 2.9: one JSON record a topic,
        `{"topic", "msg": base64}`, the one replaced deleted); a record of another shape
        is skipped."""
        try:
            info = await js.stream_info(RETAINED_STREAM)
        except nats.js.errors.NotFoundError:
            return  # no MQTT client has connected yet: nothing retained
        left = info.state.messages
        if not left or not info.config.subjects:
            return
        sub = await js.subscribe(
            info.config.subjects[0], stream=RETAINED_STREAM, ordered_consumer=True
        )
        try:
            while left:
                msg = await sub.next_msg(timeout=CONNECT_TIMEOUT)
                left = msg.metadata.num_pending
                try:
                    record = json.loads(msg.data)
                    name, payload = str(record["topic"]), base64.b64decode(record["msg"])
                except (ValueError, KeyError, TypeError):
                    continue
                if name.startswith("enoc/v1/") and name.endswith("/status"):
                    with contextlib.suppress(Held):  # it comes again with its next status
                        await self.ingest.take(name, payload, True, _nothing, self._dead_letter)
        finally:
            await sub.unsubscribe()

    async def _dead_letter(self, topic: str, body: bytes) -> None:
        nc = self.nc
        if nc is None:
            return
        try:
            await nc.publish(topic.replace("/", "."), body)
            self.ingest.stats.dead_lettered += 1
        except nats.errors.Error as exc:
            self._failing("dead-letter", f"cannot publish a dead letter: {exc}")

    async def _take(self, msg: Msg, *, ordered: bool = False) -> bool:
        """Hand one message to the ingest; False when the store is down (it is nak'ed)."""
        rejected = False

        async def dead_letter(topic: str, body: bytes) -> None:
            nonlocal rejected
            rejected = True
            await self._dead_letter(topic, body)

        def acknowledge() -> None:
            if ordered:  # acknowledged by the server as it delivers
                return
            self._settle(msg.term() if rejected else msg.ack())

        try:
            await self.ingest.take(topic_of(msg.subject), msg.data, False, acknowledge, dead_letter)
        except Held:  # the store is down: this message again after nak_delay
            if not ordered:
                self._settle(msg.nak(delay=float(self.config.nak_delay)))
            return False
        return True

    def _settle(self, reply: Coroutine[Any, Any, None]) -> None:
        """Send an ack, nak or term in the background (it is one publish, buffered by the
        client while it reconnects); an ack lost with the connection is redelivered."""

        async def send() -> None:
            with contextlib.suppress(nats.errors.Error):
                await reply

        task = asyncio.ensure_future(send())
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    def lanes(self) -> list[ServiceBase]:
        return [self]

    async def sink_dead_letters(self, reason: str, letters: list[dict[str, Any]]) -> int:
        """The sinks' dead letters (lines a server refused for good), on this connection."""
        published = 0
        nc = self.nc
        if nc is None:
            return 0
        with contextlib.suppress(nats.errors.Error):
            for letter in letters:
                await nc.publish(f"enoc.deadletter.v1.{reason}", json.dumps(letter).encode())
                published += 1
        return published
