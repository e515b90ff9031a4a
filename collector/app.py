"""The collector: ingest -> (metrics sinks, incident engine) -> notifier, stream and API.

`Collector.run` runs the parts under a `Supervisor`, added downstream first
(the store, then the metrics sinks, the feed, the notifier, the API, the
sweeper, the ingest lanes last). A stop closes them in reverse: consumption
ends, the API stops, the notification in flight may finish (the rest waits in
the store's change log), the sinks' buffers are flushed (acknowledging what
every sink wrote), the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.api import SESSIONS_KEY, make_app
from collector.auth import Users
from collector.config import CollectorConfig, check_collector
from collector.handover import Handover
from collector.incidents import Engine
from collector.ingest import Ingest
from collector.lineproto import (
    NATIVE,
    agent_health,
    chunk,
    forget_devices,
    incident_line,
    native_lineproto,
    out_of_range_total,
)
from collector.metrics_in import Metrics, slow_path
from collector.model import IncidentChange
from collector.nats_ingest import LANES, NatsIngest, ingest_config
from collector.notify import Notifications
from collector.partition import Partition
from collector.recent import RecentValues
from collector.sinks import MqttDeadLetters, build
from collector.sinks.remote_write import forget_series
from collector.store import Store
from collector.stream import ChangeFeed, Hub
from collector.tickets import TicketSync
from collector.users_watch import UsersWatch
from enoc import __version__
from enoc.lifecycle import Adapter, Policy, Supervisor, WebSite
from enoc.logs import get_logger, redact
from enoc.retry import Backoff, pause
from enoc.wire import Capabilities, EventsMessage, StatusMessage

log = get_logger("enoc.collector")


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.store = Store(config.store.url)
        self.engine = Engine(self.store, config.incidents, origin=config.mqtt.client_id)
        handlers: dict[str, Any] = {
            "on_metrics": self._metrics,
            "on_events": self._events,
            "on_status": self._status,
            "on_drained": self._drained,
        }
        self.dead_letters = MqttDeadLetters(config.mqtt)  # lines a sink refuses
        self.nats: NatsIngest | None = None  # the ingest source when `nats` replaces `mqtt`
        if config.nats is not None:
            self.nats = NatsIngest(config.nats, Ingest(ingest_config(config.nats), **handlers))
        self.sinks = build(config, self.nats.sink_dead_letters if self.nats else self.dead_letters)
        self.recent = RecentValues()
        # each agent's devices' capabilities, from its online statuses (retained: a
        # restarted collector has them again at once); the device page shows them
        self.capabilities: dict[tuple[str, str], dict[str, Capabilities]] = {}
        self.listeners: list[Callable[[IncidentChange], None]] = []  # stream, notifier
        self.ingest = self.nats.ingest if self.nats else Ingest(config.mqtt, **handlers)
        self.partition: Partition | None = None  # the sites split between replicas
        if config.partition is not None:
            self.partition = Partition(
                config.partition,
                self.store,
                replica=config.partition.id or config.mqtt.client_id,
                client_id=config.mqtt.client_id,
                url=self._own_url,
            )
            self.ingest.partition = self.partition
            self.partition.forgetters += [
                *(self.recent.forget, forget_devices, forget_series, self._forget)
            ]
            self.partition.drain = self._drain
        self.users = Users.load(config.http.users_file) if config.http.users_file else None
        # reads the users file again when it changes (or on SIGHUP), in place
        self.users_watch = (
            None
            if self.users is None or config.http.users_file is None
            else UsersWatch(config.http.users_file, self.users)
        )
        self.hub = Hub()
        # the stream and the notifier follow the store's change log, whoever changed it
        self.feed = ChangeFeed(config.store, self.hub)
        self.notifier = Notifications(config.notifications, self.store, owner=config.mqtt.client_id)
        self.feed.listeners.append(self.notifier.wake)
        self.handover = Handover(config.notifications, self.store, owner=config.mqtt.client_id)
        # the way back from a ServiceNow desk: its resolved and acknowledged tickets
        self.tickets = TicketSync(
            config.notifications,
            self.store,
            self.engine.operators,
            self.publish,
            owner=config.mqtt.client_id,
        )
        self.started = time.time()
        self.changes = 0
        self.ready = asyncio.Event()
        self.http_port = 0
        self.supervisor: Supervisor | None = None  # of the current run

    @classmethod
    def from_file(cls, path: Path) -> Collector:
        """Raises ConfigError naming every mistake: `check_collector`, as check-config."""
        checked = check_collector(path)
        config = checked.result()
        for issue in checked.warnings:  # e.g. MQTT TLS files it retries until usable
            log.warning("%s", issue)
        return cls(config)

    # ---------------------------------------------------------------- handlers

    async def _metrics(self, metrics: Metrics, ack: Callable[[], None]) -> None:
        self.recent.add(metrics)
        await self.sinks.write(metrics.lines, metrics.points, ack)  # acked once all have it
        if self.ingest.pending_metrics >= self.ingest.config.max_unacked:
            self.sinks.flush()

    def _drained(self) -> None:
        if self.ingest.pending_metrics:
            self.sinks.flush()

    async def _events(self, message: EventsMessage) -> None:
        await self.publish(await self.engine.on_events(message))

    async def _status(self, message: StatusMessage, retained: bool) -> None:
        changes = await self.engine.on_status(message, retained=retained)
        if self.partition is not None:
            self.partition.saw(message.site)
        if message.state == "online" and (
            self.partition is None or self.partition.keeps(message.site)
        ):
            # a large inventory's take turns (agent STATUS_CAPABILITIES); a device that left
            # the agent's inventory leaves with it
            known = self.capabilities.setdefault((message.site, message.agent), {})
            known.update(message.capabilities)
            listed = {d.name for d in message.devices}
            for name in [n for n in known if listed and n not in listed]:
                del known[name]
        if self.sinks and message.state == "online" and not retained:
            health = agent_health(message)
            await self.sinks.write(chunk(health), len(health))
        await self.publish(changes)
        self.feed.wake()  # a live status is in the change log too

    def _forget(self, keep: Callable[[str], bool]) -> int:
        """Drop the capabilities of the agents of every site `keep` refuses."""
        gone = [key for key in self.capabilities if not keep(key[0])]
        for key in gone:
            del self.capabilities[key]
        return len(gone)

    async def _drain(self, client_id: str) -> int:
        """Take what a dead replica's two lanes' sessions hold (collector/partition.py)."""
        return sum([await self.ingest.drain(f"{client_id}-{lane}") for lane in LANES])

    def _own_url(self) -> str:
        """This replica's API as the others reach it (`partition.url`, else http.listen)."""
        if self.config.partition is not None and self.config.partition.url:
            return self.config.partition.url
        port = self.http_port
        for state in self.supervisor.states if self.supervisor and not port else []:
            if isinstance(state.service, WebSite):  # started before the partition
                port = state.service.port
        return f"http://{self.config.http.listen.host}:{port}"

    async def publish(self, changes: list[IncidentChange]) -> None:
        """Wake the change feed (the stream and the notifier read the store's change log),
        hand incident changes to every listener, and to the metrics sinks as `incident`
        points for dashboard annotations."""
        if changes:
            self.feed.wake()
        for change in changes:
            self.changes += 1
            for listener in self.listeners:
                try:
                    listener(change)
                except Exception:  # one broken listener must not stop the others
                    log.exception("incident listener failed", change=change.change)
        if self.sinks and changes:
            # never waits: an operator's request must not hang on a slow database
            self.sinks.write_nowait(chunk([incident_line(c) for c in changes]), len(changes))

    # ---------------------------------------------------------------- periodic rules

    async def _sweeper(self, stop: asyncio.Event) -> None:
        interval = float(self.config.incidents.sweep_interval)
        while not stop.is_set():
            if await pause(stop, interval):
                return
            try:
                await self.publish(await self.engine.sweep())
                await self.publish(await self.notifier.escalations(self.engine))
            except Exception as exc:  # the store is down: try again next round
                log.warning("incident sweep failed: %s", exc)

    # ---------------------------------------------------------------- health and metrics

    def health(self) -> dict[str, Any]:
        """What /healthz shows to a logged-in viewer (without a login it says only ok or
        not): each link's state and its last error as `shown_error` makes it, never a
        configured secret."""
        connected = self.ingest.stats.connected
        refused = self.ingest.stats.refused_sites
        out: dict[str, Any] = {
            # the ingest's link: `nats` (its one connection) where it replaces `mqtt`
            "nats" if self.nats else "mqtt": {
                # and every site it keeps subscribed (a broker may refuse one: partition)
                "ok": bool(connected) and all(connected.values()) and not any(refused.values()),
                "lanes": dict(connected),
                # by lane, of its last connection: "5", or "3.1.1" (a broker without 5)
                "protocol": {
                    lane: "5" if level == 5 else "3.1.1"
                    for lane, level in self.ingest.stats.protocol.items()
                },
                # by lane, the node of its last connection (of `mqtt.urls`, no login)
                "brokers": dict(self.ingest.stats.broker),
                # by lane, the sites whose subscription the broker refuses now
                "refused_sites": {lane: sites for lane, sites in refused.items() if sites},
                "last_error": shown_error(self.ingest.stats.last_error),
            },
            "store": {"ok": self.store.healthy, "last_error": shown_error(self.store.last_error)},
        }
        for sink in self.sinks.sinks:  # `influxdb` for the influxdb section
            out[sink.name] = {
                "ok": sink.healthy,
                "last_error": shown_error(sink.stats.last_error),
            }
        return out

    def counters(self) -> dict[str, float]:
        """The collector's own counters (the API renders them at /metrics)."""
        s = self.ingest.stats
        out: dict[str, float] = {
            "dead_letters": s.dead_lettered,
            "acked": s.acked,
            "broker_switches": s.broker_switches,  # a lane moved to another of mqtt.urls
            "metrics_pending": self.ingest.pending_metrics,
            "duplicate_events": self.engine.duplicates,
            "events_pruned": self.engine.events_pruned,  # past incidents.events_retention
            "incident_changes": self.changes,
            "fields_out_of_range": out_of_range_total(),  # integers beyond InfluxDB's int64
            # COMMITs left without answer (a failover): found committed, or run again
            "store_commits_resolved": self.store.commits_resolved,
            "store_commits_rerun": self.store.commits_rerun,
        }
        out.update({f"received.{k}": v for k, v in s.received.items()})
        out.update({f"rejected.{k}": v for k, v in s.rejected.items()})
        out.update({f"handler_errors.{k}": v for k, v in s.failed.items()})
        out.update({f"lane_errors.{k}": v for k, v in s.lane_errors.items()})
        # site subscriptions a broker's SUBACK refused (tried again): by lane
        out.update({f"subscriptions_refused.{k}": v for k, v in s.subscriptions_refused.items()})
        # metrics payloads read the general way, by why (collector/metrics_in.py)
        out.update({f"metrics_slow_path.{k}": v for k, v in slow_path.items()})
        out.update({f"notify_{k}": v for k, v in self.notifier.counters().items()})
        out.update({f"handover_{k}": v for k, v in self.handover.counters().items()})
        out.update({f"tickets_{k}": v for k, v in self.tickets.counters().items()})
        out.update(self.sinks.counters())
        if self.users_watch is not None:
            out.update(self.users_watch.counters())
        if self.partition is not None:
            out.update(self.partition.counters())
        if self.supervisor is not None:  # a part's crashes, whatever its policy did next
            out.update({f"part_crashes.{k}": v for k, v in self.supervisor.crashes().items()})
        return out

    # ---------------------------------------------------------------- lifecycle

    async def _open_store(self) -> None:
        version = await self.store.open()
        log.info("incident store ready", url=_safe_url(self.config.store.url), schema=version)

    async def _close_streams(self, _app: web.Application) -> None:
        self.hub.close()  # the live streams end, or the API's shutdown would wait for them

    def parts(self) -> Supervisor:
        """The collector's parts, downstream first: a stop closes them in reverse, the
        ingest first and the store last, so what was taken in is written and committed."""
        supervisor = Supervisor("collector", backoff=lambda: Backoff(0.5, 10.0))
        # EXIT (for each part without a loop): should one end, the collector is broken
        supervisor.add(Adapter("store", start=self._open_store, close=self.store.close))
        supervisor.add(Adapter("dead-letters", close=self.dead_letters.close))
        # each sink's task writes; close flushes their buffers, acknowledging what all wrote
        supervisor.add(self.sinks)
        # RESTART: it reads the change log on from its cursor
        supervisor.add(self.feed, Policy.RESTART)
        # RESTART: what it has not delivered waits in the change log, under its cursor
        supervisor.add(self.notifier, Policy.RESTART)
        # RESTART: a handover not sent is looked for again (the store records those sent)
        supervisor.add(self.handover, Policy.RESTART)
        # RESTART: it reads the desk's tickets on from its cursor in the store
        supervisor.add(self.tickets, Policy.RESTART)
        engine = self.engine
        app = make_app(
            config=self.config,
            users=self.users,
            store=self.store,
            queries=engine.queries,
            maintenance=engine.maintenance,
            operators=engine.operators,
            publish=self.publish,
            feed=self.feed,
            hub=self.hub,
            recent=self.recent,
            capabilities=self.capabilities,
            partition=self.partition,
            health=self.health,
            counters=self.counters,
        )
        app.on_shutdown.append(self._close_streams)
        if self.users_watch is not None:
            self.users_watch.sessions = app[SESSIONS_KEY]  # it ends leavers' sessions
            # RESTART: each look at the file stands alone
            supervisor.add(self.users_watch, Policy.RESTART)
        listen = self.config.http.listen
        supervisor.add(WebSite("http", app, listen.host, listen.port))
        # RESTART: each round stands alone; a failed one is tried again at the next
        supervisor.add(Adapter("sweeper", loop=self._sweeper), Policy.RESTART)
        if self.partition is not None:
            # after the API (its URL is in the heartbeat), before the lanes (they
            # subscribe to its sites); RESTART: each round stands alone
            supervisor.add(self.partition, Policy.RESTART)
        for lane in self.nats.lanes() if self.nats else self.ingest.lanes():
            # RESTART: what a lane did not acknowledge, the broker sends again
            supervisor.add(lane, Policy.RESTART)
        self.supervisor = supervisor  # its crash counts are on /metrics
        return supervisor

    def reload_users(self) -> None:
        """Read the users file again now (SIGHUP)."""
        if self.users_watch is not None:
            self.users_watch.poke()

    async def run(self, stop: asyncio.Event) -> int:
        """Start every part (StartError names the one that failed, with nothing left open),
        run until `stop`, and return the exit code: non-zero after a crash of an `EXIT` part."""
        if self.users is None:
            log.warning("http.users_file is not set: every API request will be refused (401)")
        supervisor = self.parts()
        await supervisor.start()
        http = next(s.service for s in supervisor.states if s.name == "http")
        assert isinstance(http, WebSite)
        self.http_port = http.port
        listen = self.config.http.listen
        log.info("collector %s serving http://%s:%d", __version__, listen.host, self.http_port)
        if native_lineproto():
            log.info(NATIVE)
        else:  # works, with more CPU for the same stream (docs/collector.md, "Performance")
            log.warning(NATIVE)
        self.ready.set()
        with _frozen_heap():
            code = await supervisor.run(stop)
        log.info("collector stopped")
        return code


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep what start-up made (modules, clients, the API: most of the heap) out of the
    cyclic garbage collector while the collector runs.

    Every metrics message allocates some 300 containers that live until it is
    written; they trigger collections, and a full one walked the whole heap:
    16 % of the collector's CPU under load. Frozen objects are never freed by the
    collector (they are not garbage), and `unfreeze` on the way out puts them back.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


SHOWN_ERROR_CHARS = 300


def shown_error(text: str) -> str:
    """An error text fit for the unauthenticated /healthz: every registered secret (each
    configured `Secret`, every URL's password) and any URL's password replaced by `***`,
    as in the logs, then cut to `SHOWN_ERROR_CHARS` (redacted first, so that no cut can
    leave the start of a secret behind)."""
    shown = redact(text)
    if len(shown) > SHOWN_ERROR_CHARS:
        shown = shown[: SHOWN_ERROR_CHARS - 3] + "..."
    return shown


def _safe_url(url: str) -> str:
    """A store URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
