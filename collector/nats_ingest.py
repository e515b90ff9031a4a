"""NATS JetStream ingest: collector replicas as one consumer group on a replicated stream.

An ingest source beside the MQTT lanes (collector/ingest.py): each message goes through
the same `Ingest.take` (decoding, lanes, dead letters, acknowledgement after the write or
commit); this module only fetches and acknowledges. Agents publish over MQTT 3.1.1 to any
node's MQTT gateway; the gateway stores every QoS 1 PUBLISH in the `$MQTT_msgs` stream
(interest retention, replicated on the server's `mqtt.stream_replicas` nodes) *before*
it sends the PUBACK (docs/collector.md, "What a PUBACK promises"). The collector consumes
that stream by default: every message an agent's spool forgot is held there until a
replica acknowledged it.

At its start the collector creates (or checks) the stream and two durable pull consumers
all replicas share, `<consumer>-metrics` and `<consumer>-events` (explicit ack,
`max_ack_pending` the back-pressure, `ack_wait` the time before the server hands an
unacknowledged message to another replica), and refuses to run when it cannot: on
`$MQTT_msgs` a message no consumer wants is dropped as it is stored, so the consumers
must exist before agents publish. Status messages go to every replica (each keeps agent
liveness), through an ordered consumer of its own.

A message is acknowledged once written or committed; one the store could not commit
(an outage) is nak'ed with `nak_delay`; one that can never be taken is dead-lettered on
`enoc.deadletter.v1.<reason>` (MQTT `enoc/deadletter/v1/<reason>`) and terminated. The
client reconnects by itself to another node when the one it uses is lost; the fetch
loops wait that out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
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
FETCH_WAIT = 1.0  # s a fetch waits for messages (then asks again: closing is checked)
# s the metrics lane's fetch waits while it holds metrics not yet written: a fetch lingers
# for its whole batch, and with the window full across replicas none comes, so what it holds
# would wait a FETCH_WAIT to be written (enoc bench scale)
HOLDING_WAIT = 0.05


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
    return ConsumerConfig(
        durable_name=f"{config.consumer}-{lane}",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=float(config.ack_wait),
        max_ack_pending=config.max_ack_pending,
        filter_subject=f"{config.prefix}enoc.v1.*.*.{lane}",
    )


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
        if found.config.filter_subject != wanted_consumer.filter_subject:
            raise NatsSetupError(
                f"consumer {name} of {config.stream} takes {found.config.filter_subject}, "
                f"not {wanted_consumer.filter_subject}: delete it or name another nats.consumer"
            )
        changed = (
            found.config.max_ack_pending != wanted_consumer.max_ack_pending
            or found.config.ack_wait != wanted_consumer.ack_wait
        )
        if changed:  # updatable in place: the consumer's position and pending stay
            try:
                await js.add_consumer(config.stream, wanted_consumer)
            except nats.js.errors.APIError as exc:
                raise NatsSetupError(f"cannot update consumer {name}: {exc}") from exc
            log.info(
                "updated consumer %s: max_ack_pending %s, ack_wait %ss",
                name,
                wanted_consumer.max_ack_pending,
                wanted_consumer.ack_wait,
            )


def covers(pattern: str, subject: str) -> bool:
    """Whether a NATS subject pattern (`*` a token, `>` the rest) matches a subject that may
    itself hold `*` tokens: a filter that could take some of the subjects it names."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and have[i] != "*" and part != have[i]):
            return False
    return len(want) == len(have)


async def other_takers(js: JetStreamContext, config: NatsConfig) -> list[str]:
    """Consumers of the stream, not the replicas', that also take metrics or events (an
    MQTT subscriber's session with QoS 1 on `enoc/v1/#`, for instance): each one's
    acknowledgement lets nats-server 2.9.10 delete now and then a message the replicas
    have not taken (docs/collector.md, "One consumer a message")."""
    ours = {consumer_config(config, lane).durable_name for lane in LANES}
    lanes = [consumer_config(config, lane).filter_subject or "" for lane in LANES]
    found = []
    for info in await js.consumers_info(config.stream):
        wants = info.config.filter_subject or ">"
        if info.name not in ours and any(covers(wants, lane) for lane in lanes):
            found.append(info.name)
    return sorted(found)


class NatsIngest(ServiceBase):
    """The NATS ingest source of `ingest` (its handlers, stats and limits): connects and sets
    up the stream at `start` (a StartError when it cannot), fetches until `close`."""

    name = "ingest.nats"

    def __init__(self, config: NatsConfig, ingest: Ingest) -> None:
        super().__init__()
        self.config = config
        self.ingest = ingest
        self.nc: NatsClient | None = None
        self._failing = OnceLogger(log)
        self._acks: set[asyncio.Task[None]] = set()

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
        others = await other_takers(self.nc.jetstream(), self.config)
        if others:
            log.warning(
                "other consumers of %s take enoc's metrics or events (%s): with them "
                "nats-server 2.9 can delete messages before a replica takes them; remove "
                'them (docs/collector.md, "One consumer a message")',
                self.config.stream,
                ", ".join(others),
            )
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
            # the fetches' subscriptions, which end with the lanes)
            with contextlib.suppress(Exception):  # a lost server: nothing left to flush
                await nc.flush(timeout=2)
            await nc.close()
        self.ingest.stats.connected["nats"] = False

    # ---------------------------------------------------------------- fetching

    async def _lane(self, lane: str) -> None:
        """Fetch batches of the lane's shared consumer and take each message, in order."""
        assert self.nc is not None
        js = self.nc.jetstream()
        durable = consumer_config(self.config, lane).durable_name
        backoff = Backoff(0.5, 5.0)
        sub: JetStreamContext.PullSubscription | None = None
        while not self.closing.is_set():
            try:
                if sub is None:
                    sub = await js.pull_subscribe_bind(durable=durable, stream=self.config.stream)
                batch = self.config.batch
                if lane == "metrics":  # what waits for its write counts against the window
                    batch = min(batch, self.config.max_ack_pending - self.ingest.pending_metrics)
                    if batch <= 0:  # the whole window waits here: written now
                        self.ingest.on_drained()
                        await asyncio.sleep(0.02)
                        continue
                try:
                    holding = lane == "metrics" and self.ingest.pending_metrics > 0
                    wait = HOLDING_WAIT if holding else FETCH_WAIT
                    messages = await sub.fetch(batch, timeout=wait)
                except TimeoutError:  # nats-py's, or the built-in one a batch fetch raises
                    if lane == "metrics":
                        self.ingest.on_drained()
                    continue
                for i, msg in enumerate(messages):
                    if not await self._take(msg):
                        # the store is down: the rest of the batch after it, and no
                        # fetch before they are due again (the engine decides by the
                        # events' own times, not by their arrival: docs/collector.md)
                        delay = float(self.config.nak_delay)
                        for rest in messages[i + 1 :]:
                            self._settle(rest.nak(delay=delay))
                        await pause(self.closing, delay)
                        break
                else:
                    if lane == "metrics" and len(messages) < batch:
                        # Nothing more to fetch now: the server holds the rest for the
                        # shared window, whose other shares the other replicas hold, so
                        # this replica's share never fills the window that writes at once
                        self.ingest.on_drained()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                if self.closing.is_set():  # the connection closed under the fetch
                    return
                # a node lost, a consumer leader being elected: the client reconnects
                self.ingest.stats.last_error = f"nats {lane}: {type(exc).__name__}: {exc}"
                self._failing(f"fetch-{lane}", f"fetching {lane} failed ({exc}): retrying")
                await backoff.wait(self.closing)
            except Exception:  # a fault of ours: never end the lane silently
                self.ingest.stats.lane_errors[lane] += 1
                log.exception("the NATS %s lane failed: fetching again", lane)
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
