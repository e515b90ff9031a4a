"""The site agent: inventory -> scheduler -> poller -> facts -> publisher, plus traps.

`Agent.run` runs the parts under a `Supervisor`, added downstream first, so
that a stop closes them inputs first: traps and polls end, the partial
metrics batch is spooled, then the publisher says `offline` and closes the
spools. SIGHUP (`reload`) re-reads the inventory; devices whose
address, port, credentials and profile are unchanged keep their rate and
edge state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.config import AgentConfig, check_agent, mib_index
from agent.discovery import Discovery
from agent.edge import EdgeSettings
from agent.facts import DeviceTracker
from agent.mibgroups import Labels
from agent.ping import Pinger, PingResult
from agent.poller import collect
from agent.profiles import Profile, ProfileSet
from agent.publisher import Publisher
from agent.reach import PingEdge
from agent.scheduler import Scheduler
from agent.trapdefaults import SHIPPED_RULES
from agent.traprules import TrapRules, catalogue_for, compile_rules
from agent.traps import Trap, TrapReceiver, TrapSource
from enoc.config import ConfigError, ConfigIssue
from enoc.inventory import Credential, Inventory, InventoryDevice
from enoc.lifecycle import Adapter, Policy, Supervisor
from enoc.logs import StateLogger, get_logger, register_secret
from enoc.retry import Backoff, pause
from enoc.snmp.ber import Oid, oid_text
from enoc.snmp.client import V1, SnmpClient, SnmpError, Target, V2c, V3User
from enoc.snmp.mib import (
    AUTHENTICATION_FAILURE,
    BGP_BACKWARD_TRANSITION,
    BGP_ESTABLISHED,
    BGP_PEER_ENTRY,
    COLD_START,
    IF_ADMIN_STATUS,
    IF_INDEX,
    LINK_DOWN,
    LINK_UP,
    WARM_START,
)
from enoc.snmp.resolve import DnsCache
from enoc.snmp.usm import UsmUser
from enoc.wire import (
    Capabilities,
    DeviceInfo,
    DeviceSample,
    Event,
    EventsMessage,
    MetricsMessage,
)

log = logging.getLogger("enoc.agent")

IF_ADMIN_DOWN = 2
DISCOVERY_CONCURRENCY = 8  # devices probed at once, apart from the polls
DISCOVERY_SAVE_EVERY = 5.0  # seconds between writes of the findings while they change
# Devices whose capabilities one status message lists (about 100 bytes each): a larger
# inventory's take turns, heartbeat after heartbeat, so that the message stays bounded.
STATUS_CAPABILITIES = 1000


def load_agent(path: Path) -> tuple[AgentConfig, Inventory, list[ConfigIssue]]:
    """The config and its inventory (inline plus the included file), and the warnings;
    errors raise ConfigError, naming all of them: `check_agent`, what check-config runs."""
    checked = check_agent(path)
    config, inventory = checked.result()
    for credential in inventory.credentials.values():
        for secret in (credential.community, credential.auth_key, credential.priv_key):
            if secret is not None:
                register_secret(secret.reveal())
    return config, inventory, checked.warnings


def snmp_auth(credential: Credential) -> V1 | V2c | V3User:
    if credential.version == "1":
        assert credential.community is not None
        return V1(credential.community.reveal().encode())
    if credential.version == "2c":
        assert credential.community is not None
        return V2c(credential.community.reveal().encode())
    return V3User(usm_user(credential))


def usm_user(credential: Credential) -> UsmUser:
    return UsmUser(
        credential.user,
        credential.auth_protocol,
        credential.auth_key.reveal() if credential.auth_key else "",
        credential.priv_protocol,
        credential.priv_key.reveal() if credential.priv_key else "",
    )


@dataclass
class AgentStats:
    polls_ok: int = 0
    polls_failed: Counter[str] = field(default_factory=Counter)
    varbinds: int = 0
    events: int = 0
    samples: int = 0
    loop_lag_ms: float = 0.0


class Agent:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._edge_state_failing = StateLogger(get_logger("enoc.agent"))
        self.config, inventory, warnings = load_agent(config_path)
        for issue in warnings:
            log.warning("%s", issue)
        c = self.config
        self.client = SnmpClient(
            timeout=float(c.polling.timeout),
            retries=c.polling.retries,
            resolver=DnsCache(on_change=self._resolved),
        )
        self.edge = PingEdge(
            c.agent_id,
            EdgeSettings(
                unreachable_after=c.polling.unreachable_after,
                thresholds=c.thresholds.rules(),
                sensors=c.sensor_limits(),
            ),
            limits=c.ping.limits(),
        )
        self.pinger = (
            Pinger(c.ping, self._ping_targets, self._on_ping_round) if c.ping.enabled else None
        )
        mibs = mib_index(c) if any(p.tables for p in c.profiles.values()) else None
        self.profiles = ProfileSet(p.build(name, mibs) for name, p in c.profiles.items())
        self.stats = AgentStats()
        self.trackers: dict[str, DeviceTracker] = {}
        self.targets: dict[str, Target] = {}
        self.named_profiles: dict[str, Profile | None] = {}
        self.discovery = Discovery(
            self.client,
            c.spool.path / "discovery.json",
            float(c.discovery.interval),
            enabled=c.discovery.enabled,
        )
        self.discovery.load()
        self._discover_due: asyncio.Queue[tuple[str, Oid | None, int | None, float]] = (
            asyncio.Queue()
        )  # at most one entry a device: `_discover_pending` says which are in
        self._discover_pending: set[str] = set()
        self._capabilities_from = 0  # where the next status message's turn starts
        self.publisher = Publisher(
            c,
            health=self.health,
            inventory_size=lambda: len(self.trackers),
            devices=self.device_infos,
            capabilities=self.capabilities,
        )
        self.scheduler = Scheduler(
            float(c.polling.interval),
            self._poll,
            concurrency=c.polling.concurrency,
            deadline=c.polling.poll_deadline,
            on_deadline=self._deadline,
        )
        self.traps: TrapReceiver | None = None
        self.trap_address: tuple[str, int] | None = None
        self.trap_rules: TrapRules | None = None
        self._batch: list[MetricsMessage] = []
        self._reload_requested = False
        self._links_saved = 0  # `edge.links_changed` when the links up were last saved
        self.ready = asyncio.Event()  # set once sockets are bound and tasks started
        self._apply(inventory)
        self.discovery.forget(set(self.discovery.devices) - set(self.trackers))  # gone since
        self._load_edge_state()
        if c.traps is not None:
            self.trap_rules = compile_rules(catalogue_for(c.mibs), SHIPPED_RULES, c.traps.rules)
            listen = (c.traps.listen.host, c.traps.listen.port)
            self.traps = TrapReceiver(
                sources=self._trap_sources, on_trap=self._on_trap, listen=listen
            )
        self.supervisor: Supervisor | None = None  # of the current run

    # ---------------------------------------------------------------- inventory

    def _apply(self, inventory: Inventory) -> None:
        credentials = inventory.credentials
        wanted: dict[str, InventoryDevice] = {d.name: d for d in inventory.devices}
        for name in list(self.trackers):
            device = wanted.get(name)
            old = self.trackers[name].device
            target = self.targets[name]
            auth = snmp_auth(credentials[device.credentials]) if device else None
            if device is None or (device, auth) != (old, target.auth):
                self.client.forget(target)
                self.edge.forget(name)
                del self.trackers[name], self.targets[name], self.named_profiles[name]
                self.discovery.forget([name])  # another device, or one gone
        for name, device in wanted.items():
            if name in self.trackers:
                continue
            policy = self.config.interfaces.for_device(device.role, device.interfaces)
            self.trackers[name] = DeviceTracker(
                device,
                self.edge,
                policy=policy,
                labels=Labels(float(self.config.discovery.interval)),
            )
            auth = snmp_auth(credentials[device.credentials])
            self.targets[name] = Target(device.address, device.port, auth)
            if self.pinger is not None and device.ping:
                self.edge.pinged(name)
            self.named_profiles[name] = (
                self.profiles.named(device.profile) if device.profile else None
            )
        self.scheduler.set_keys(self.trackers)
        self._inventory = inventory
        self._trap_sources = self._sources(inventory)
        if self.traps is not None:
            self.traps.update_sources(self._trap_sources)

    def _resolved(self, _name: str, _address: str) -> None:
        """A device's DNS name resolved to a new address: its traps come from that one."""
        self._trap_sources = self._sources(self._inventory)
        if self.traps is not None:
            self.traps.update_sources(self._trap_sources)

    def _sources(self, inventory: Inventory) -> dict[str, TrapSource]:
        """Each device's address and the trap credentials it alone may use (its own, by
        default its polling credentials, plus the site-wide `traps.communities`). A device
        known by name is keyed by the address it last resolved to, once it has one."""
        traps = self.config.traps
        site_wide = frozenset(s.reveal().encode() for s in (traps.communities if traps else []))
        sources: dict[str, TrapSource] = {}
        for device in inventory.devices:
            own = [inventory.credentials[n] for n in device.trap_credential_names]
            communities = {c.community.reveal().encode() for c in own if c.community is not None}
            address = self.client.resolver.known(device.address)
            if address is None:
                continue
            sources[address] = TrapSource(
                device.name,
                frozenset(communities) | site_wide,
                tuple(usm_user(c) for c in own if c.version == "3"),
                device.trap_engine,
            )
            if traps is not None and ":" in traps.listen.host and ":" not in address:
                # A dual-stack IPv6 socket ([::]:162) sees IPv4 senders as ::ffff:a.b.c.d.
                sources[f"::ffff:{address}"] = sources[address]
        return sources

    def reload(self) -> None:
        """SIGHUP: re-read the inventory and the trap rules at the next scheduler step."""
        self._reload_requested = True

    def _do_reload(self) -> None:
        self._reload_requested = False
        self._reload_trap_rules()
        try:
            _config, inventory, warnings = load_agent(self.config_path)
            # Only the inventory is reloaded: a profile added to the agent config since the
            # start is unknown until a restart, however valid the file now is.
            loaded = ", ".join(sorted(self.profiles.by_name))
            unknown = [
                ConfigIssue(
                    str(self.config_path),
                    0,
                    "profiles",
                    f"device {d.name!r} names profile {d.profile!r}, which is new since the "
                    f"start: profiles take a restart, a reload re-reads only the inventory "
                    f"(loaded: {loaded})",
                )
                for d in inventory.devices
                if d.profile and d.profile not in self.profiles.by_name
            ]
            if unknown:
                raise ConfigError(unknown)
        except ConfigError as exc:
            log.error("reload refused, keeping the current inventory:\n%s", exc)  # noqa: TRY400
            return
        for issue in warnings:
            log.warning("%s", issue)
        before = set(self.trackers)
        self._apply(inventory)
        log.info(
            "inventory reloaded: %d devices (%d added, %d removed)",
            len(self.trackers),
            len(set(self.trackers) - before),
            len(before - set(self.trackers)),
        )

    def _reload_trap_rules(self) -> None:
        """The rule file (`traps.rules`) read again, over the MIBs loaded at the start: a
        file with a mistake leaves the rules in use as they are."""
        traps, current = self.config.traps, self.trap_rules
        if traps is None or traps.rules is None or current is None:
            return
        try:
            self.trap_rules = compile_rules(current.catalogue, SHIPPED_RULES, traps.rules)
        except ConfigError as exc:
            log.error("trap rules reload refused, keeping the rules in use:\n%s", exc)  # noqa: TRY400
            return
        log.info("trap rules reloaded from %s: %d rules", traps.rules, len(self.trap_rules.rules))

    # ---------------------------------------------------------------- polling

    def _choose(self, name: str) -> Callable[[Oid | None], Profile]:
        named = self.named_profiles.get(name)
        if named is not None:
            return lambda _oid: named
        return self.profiles.choose

    async def _poll(self, name: str, due: float) -> None:
        tracker = self.trackers.get(name)
        target = self.targets.get(name)
        if tracker is None or target is None:
            return
        named = self.named_profiles.get(name)
        known = tracker.sys_object_id
        guess = named or (self.profiles.choose(known) if known is not None else None)
        try:
            raw = await collect(
                self.client,
                target,
                self._choose(name),
                self.config.polling.max_repetitions,
                guess,
                found=self.discovery.found(name),
                labels=tracker.labels,
            )
        except SnmpError as exc:
            self.stats.polls_failed[exc.kind] += 1
            sample, events = tracker.failed(due, exc.kind)
        else:
            self.stats.polls_ok += 1
            self.stats.varbinds += raw.varbinds
            sample, events = tracker.observe(raw)
            self._discover_if_due(name, raw.scalars.get("sysUpTime"), raw.at)
        self._emit_events(events)
        c = self.config
        self._batch.append(
            MetricsMessage(c.agent_id, c.site, c.rtc, 0, time.time(), samples=[sample])
        )
        self.stats.samples += 1
        if len(self._batch) >= c.publishing.batch_samples:
            self._flush()

    def _ping_targets(self) -> list[tuple[str, str]]:
        return [(n, t.device.address) for n, t in self.trackers.items() if n in self.edge.signals]

    def _on_ping_round(self, results: list[PingResult]) -> None:
        """A ping round: a sample of one `ping` row a device, and the events it makes."""
        events: list[Event] = []
        samples = []
        for r in results:
            if r.device not in self.trackers:
                continue  # gone with a reload during the round
            events += self.edge.ping(r.device, r.sent, r.received, r.average_ms, r.at)
            samples.append(DeviceSample(r.device, r.address, r.at, rows=[r.row()]))
        self._emit_events(events)
        c = self.config
        self._batch.append(MetricsMessage(c.agent_id, c.site, c.rtc, 0, time.time(), samples))
        self.stats.samples += len(samples)
        if len(self._batch) >= c.publishing.batch_samples:
            self._flush()

    def _discover_if_due(self, name: str, ticks: object, at: float) -> None:
        """Queue the device for discovery when it is due: after a poll it answered, so that
        a silent device is not probed, and apart from the poll, so that a slow discovery
        never costs a poll its deadline."""
        tracker = self.trackers[name]
        uptime = ticks if isinstance(ticks, int) else None
        if name in self._discover_pending:
            return
        why = self.discovery.due(name, tracker.sys_object_id, uptime, at)
        if why:
            log.debug("discovering %s: %s", name, why)
            self._discover_pending.add(name)
            self._discover_due.put_nowait((name, tracker.sys_object_id, uptime, at))

    async def _discovery_loop(self, stop: asyncio.Event) -> None:
        """Probe the devices the polls found due, DISCOVERY_CONCURRENCY at a time."""
        slots = asyncio.Semaphore(DISCOVERY_CONCURRENCY)
        running: set[asyncio.Task[None]] = set()

        async def one(item: tuple[str, Oid | None, int | None, float]) -> None:
            name = item[0]
            try:
                target = self.targets.get(name)
                if target is not None:
                    await self.discovery.run(name, target, *item[1:])
            finally:
                self._discover_pending.discard(name)
                slots.release()

        saved = time.monotonic()
        async with asyncio.TaskGroup() as group:
            try:
                while not stop.is_set():
                    # one file for many findings: a thousand devices at first contact
                    # would otherwise rewrite it a thousand times
                    if self.discovery.dirty and time.monotonic() - saved >= DISCOVERY_SAVE_EVERY:
                        self.discovery.save()
                        saved = time.monotonic()
                    try:
                        item = await asyncio.wait_for(self._discover_due.get(), 0.5)
                    except TimeoutError:
                        continue
                    await slots.acquire()
                    task = group.create_task(one(item), name=f"discover[{item[0]}]")
                    running.add(task)
                    task.add_done_callback(running.discard)
            finally:
                for task in running:  # stopping: a discovery cut short is redone later
                    task.cancel()
        if self.discovery.dirty:
            self.discovery.save()

    def _deadline(self, name: str, due: float) -> None:
        tracker = self.trackers.get(name)
        if tracker is None:
            return
        self.stats.polls_failed["deadline"] += 1
        sample, events = tracker.failed(due, "deadline")
        self._emit_events(events)
        c = self.config
        self._batch.append(
            MetricsMessage(c.agent_id, c.site, c.rtc, 0, time.time(), samples=[sample])
        )

    def _flush(self) -> None:
        if not self._batch:
            return
        first = self._batch[0]
        first.samples = [s for m in self._batch for s in m.samples]
        first.sent = time.time()
        self._batch = []
        self.publisher.submit_metrics(first)

    def _emit_events(self, events: list[Event]) -> None:
        if not events:
            return
        c = self.config
        self._save_edge_state()
        self.stats.events += len(events)
        for event in events:
            log.info("event %s %s %s %s", event.device, event.resource, event.kind, event.state)
        self.publisher.submit_events(
            EventsMessage(c.agent_id, c.site, c.rtc, 0, time.time(), events=events)
        )

    def _edge_state_path(self) -> Path:
        return self.config.spool.path / "edge-state.json"

    def _edge_links_path(self) -> Path:
        return self.config.spool.path / "edge-links.json"

    def _save_edge_state(self) -> None:
        """Open problems survive a restart: the clearing event of a link that went down
        before a kill -9 is still sent when it comes back. A disk that cannot take it
        (full) costs only that after a restart: the events themselves go on."""
        self._write_json(self._edge_state_path(), self.edge.bad_states())

    def _save_links_up(self) -> None:
        """The links seen up, so that one down after a restart is a transition, not a
        baseline. Saved when they change, at most once a watch step (0.5 s), not with
        each event as the problems are: it is the larger file (an integer per interface),
        and a link that went down since is among the problems, which win over it."""
        self._links_saved = self.edge.links_changed
        self._write_json(self._edge_links_path(), self.edge.links_up())

    def _write_json(self, path: Path, value: object) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(value, separators=(",", ":")))
            tmp.replace(path)
        except OSError as exc:
            self._edge_state_failing.failed(f"saving the edge state to {path}", exc)
        else:
            self._edge_state_failing.ok(f"saving the edge state to {path}")

    def _load_edge_state(self) -> None:
        saved = [self._read_json(p) for p in (self._edge_state_path(), self._edge_links_path())]
        self.edge.restore(*saved)
        self._links_saved = self.edge.links_changed

    @staticmethod
    def _read_json(path: Path) -> object:
        try:
            value: object = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return None
        return value

    # ---------------------------------------------------------------- traps

    def _on_trap(self, trap: Trap) -> None:
        name = trap.device  # the receiver refuses a source address of no device
        events = self._trap_events(name, trap)
        tracker = self.trackers.get(name)
        if tracker is not None and trap.trap_oid in (COLD_START, WARM_START):
            tracker.reboot_trap_at = trap.received
        self._emit_events(events)

    def _trap_events(self, name: str, trap: Trap) -> list[Event]:
        assert self.trap_rules is not None  # traps come only with a trap config
        oid = self.trap_rules.notification_oid(trap.trap_oid, trap.version)
        at = trap.received
        decision = self.trap_rules.decide(oid, trap.varbinds)
        if oid in (LINK_DOWN, LINK_UP):
            link = self._link_trap(name, trap)
            if link is not None:
                return decision.mark(link)
        if oid in (BGP_ESTABLISHED, BGP_BACKWARD_TRANSITION):
            for vb_oid, _tag, _value in trap.varbinds:
                if vb_oid[: len(BGP_PEER_ENTRY)] == BGP_PEER_ENTRY and len(vb_oid) >= 14:
                    peer = ".".join(map(str, vb_oid[-4:]))
                    events = self.edge.bgp_trap(name, peer, oid == BGP_ESTABLISHED, at)
                    return decision.mark(events)
        if oid in (COLD_START, WARM_START):
            kind = "cold" if oid == COLD_START else "warm"
            events = self.edge.reboot(name, at, 0.0)
            for event in events:
                event.source = "trap"
                event.message = f"{kind} start (trap)"
            return decision.mark(events)
        if decision.alarm:
            return self.edge.alarm(
                name,
                decision.resource,
                decision.raised,
                at,
                decision.severity,
                decision.message,
                decision.attrs,
            )
        severity: Literal["warning", "info"] = (
            "warning" if oid == AUTHENTICATION_FAILURE else "info"
        )
        message = decision.message
        if oid == AUTHENTICATION_FAILURE:
            message = "authentication failure (trap)"
        return self.edge.generic_trap(name, oid_text(oid), at, decision.attrs, severity, message)

    def _link_trap(self, name: str, trap: Trap) -> list[Event] | None:
        """linkDown/linkUp: by the interface policy as the last poll classified the
        interface (not yet polled: alerted); ifAdminStatus down, when the trap carries it,
        is a port switched off, not a link lost. None without an ifIndex: a generic trap."""
        if_index: int | None = None
        admin_up = True
        for vb_oid, _tag, value in trap.varbinds:
            if vb_oid[: len(IF_INDEX)] == IF_INDEX and isinstance(value, int):
                if_index = value
            elif vb_oid[: len(IF_ADMIN_STATUS)] == IF_ADMIN_STATUS and value == IF_ADMIN_DOWN:
                admin_up = False
        if if_index is None:
            return None
        tracker = self.trackers.get(name)
        kind = tracker.if_class(if_index) if tracker is not None else None
        return self.edge.link_trap(
            name,
            if_index,
            trap.trap_oid == LINK_UP,
            trap.received,
            admin_up=admin_up,
            alert=kind in (None, "alert", "monitored"),
        )

    # ---------------------------------------------------------------- health

    def device_infos(self) -> list[DeviceInfo]:
        """The inventory as the status message lists it (the collector's device list)."""
        return [
            DeviceInfo(t.device.name, t.device.address, t.device.role, t.device.parent)
            for t in self.trackers.values()
        ]

    def capabilities(self) -> dict[str, Capabilities]:
        """What discovery found on devices and the MIB their cpu and memory come from, for
        the status message (the collector's device page): STATUS_CAPABILITIES devices at
        most, the next ones at the next message."""
        known = [
            (name, found, tracker.sources)
            for name, tracker in self.trackers.items()
            if (found := self.discovery.found(name)) or tracker.sources
        ]
        start = self._capabilities_from if self._capabilities_from < len(known) else 0
        turn = known[start : start + STATUS_CAPABILITIES]
        self._capabilities_from = start + len(turn)
        return {name: Capabilities(sorted(found), dict(sources)) for name, found, sources in turn}

    def health(self) -> dict[str, int | float | str]:
        s, sched, client = self.stats, self.scheduler.stats, self.client.stats
        discovery = self.discovery.stats
        return {
            "devices": len(self.trackers),
            "polls_ok": s.polls_ok,
            "polls_failed": sum(s.polls_failed.values()),
            "overruns": sched.overruns,
            "deadline_exceeded": sched.deadline_exceeded,
            "starved": sched.starved,
            "varbinds": s.varbinds,
            "events": s.events,
            "snmp_timeouts": client.timeouts,
            "snmp_bad": sum(client.bad.values()),
            "spool_depth": self.publisher.spool_depth,
            "spool_bytes": self.publisher.spool_bytes,
            "spool_dropped": self.publisher.metrics.dropped,
            "publish_refused": self.publisher.stats.refused,
            "publish_unmatched": self.publisher.stats.unmatched,
            "metrics_split": self.publisher.stats.metrics_split,
            "metrics_oversize": self.publisher.stats.metrics_oversize,
            "mqtt_protocol": self.publisher.mqtt_protocol,
            "mqtt_broker": self.publisher.brokers.shown(),  # "" while not connected
            "broker_switches": self.publisher.brokers.switches,
            "traps": self.traps.stats.received if self.traps else 0,
            "traps_bad": sum(self.traps.stats.bad.values()) if self.traps else 0,
            "loop_lag_ms": round(s.loop_lag_ms, 2),
            "discovered": sum(1 for n in self.trackers if self.discovery.discovered(n)),
            "discovery_failed": discovery["failed"],
            "discovery_varbinds": discovery["varbinds"],
            **(self._ping_health() if self.pinger is not None else {}),
        }

    def _ping_health(self) -> dict[str, int | float | str]:
        assert self.pinger is not None
        ping = self.pinger.stats
        filtered = sum(1 for s in self.edge.signals.values() if s.filtered)
        return {
            "ping_rounds": ping.rounds,
            "ping_overruns": ping.overruns,
            "ping_errors": ping.errors,
            "ping_filtered": filtered,  # answer SNMP, not ping: ICMP filtered on the way
        }

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        """Event-loop lag (how late a 0.5 s sleep wakes), batch flushing and reloads."""
        while not stop.is_set():
            started = time.monotonic()
            await pause(stop, 0.5)
            lag = (time.monotonic() - started - 0.5) * 1000
            self.stats.loop_lag_ms = max(0.0, lag) if not stop.is_set() else self.stats.loop_lag_ms
            self._flush()
            if self.edge.links_changed != self._links_saved:
                self._save_links_up()
            if self._reload_requested:
                self._do_reload()

    async def _last_flush(self) -> None:
        """The polls have ended: their partial batch and the links up go out to disk."""
        self._flush()
        if self.edge.links_changed != self._links_saved:
            self._save_links_up()

    async def _open_snmp(self) -> None:
        await self.client.open(self.config.polling.source)

    async def _close_snmp(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- lifecycle

    def parts(self) -> Supervisor:
        """The agent's parts, downstream first: a stop closes them in reverse, the inputs
        (traps, polls) first and the publisher last, so what was polled reaches the spool."""
        c = self.config
        supervisor = Supervisor(f"agent {c.site}/{c.agent_id}", backoff=lambda: Backoff(0.5, 10.0))
        # EXIT: the only way out; a dead publisher would spool until the disk fills, unseen
        supervisor.add(self.publisher, Policy.EXIT)
        # RESTART: each step (flush, lag, links saved, reload) stands alone; the next redoes it
        supervisor.add(
            Adapter("watch", loop=self._watch_loop, close=self._last_flush), Policy.RESTART
        )
        # EXIT: a socket and no loop; should it end, no poll could go out
        supervisor.add(Adapter("snmp", start=self._open_snmp, close=self._close_snmp), Policy.EXIT)
        # RESTART: a device whose discovery was cut short is queued again at its next poll
        supervisor.add(Adapter("discovery", loop=self._discovery_loop), Policy.RESTART)
        if self.pinger is not None:
            # RESTART: a round cut short is the next round's to redo; a start that can open
            # no ICMP socket fails the agent's, naming the fixes (agent.ping)
            pinger = self.pinger
            supervisor.add(Adapter("ping", start=pinger.open, loop=pinger.run), Policy.RESTART)
        # EXIT: a scheduler that died leaves the agent polling nothing while it looks alive
        supervisor.add(self.scheduler, Policy.EXIT)
        if self.traps is not None:
            # EXIT: no loop; the port is the agent's only way to hear traps
            supervisor.add(self.traps, Policy.EXIT)
        return supervisor

    async def run(self, stop: asyncio.Event) -> int:
        """Start every part (StartError names the one that failed, with nothing left open),
        run until `stop`, and return the exit code: non-zero after a crash of an `EXIT` part."""
        c = self.config
        self.supervisor = self.parts()
        await self.supervisor.start()
        if self.traps is not None:
            self.trap_address = self.traps.address
            log.info("receiving traps on %s:%d", *self.trap_address)
        log.info(
            "agent %s/%s polling %d devices every %gs",
            c.site,
            c.agent_id,
            len(self.trackers),
            float(c.polling.interval),
        )
        self.ready.set()
        code = await self.supervisor.run(stop)
        log.info("agent stopped; %d messages left in the spool", self.publisher.spool_depth)
        return code
