"""`enoc demo`: the whole system in one process, on loopback.

The Unite Networks fleet of the DESIGN (five RTCs, each with two field sites,
95 simulated SNMPv3 devices), one agent per site, an embedded MQTT broker
(amqtt), the collector with SQLite, and the console. Each agent reaches the
broker through its own "WAN link", a TCP relay the story can cut, so a site
outage is what it would be for real: the broker publishes the agent's last
will, the agent spools, and replays when the link comes back.

A scripted story plays in a loop so there is always something to see: a link
flapping in Nairobi, a router reboot in Bangkok, a WAN outage in Brindisi.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from enoc.retry import pause
from testbed.servers import free_port

log = logging.getLogger("enoc.demo")

HOST = "127.0.0.1"
DEMO_USER = "noc"
STORY_PERIOD = 360.0  # seconds: the story starts over
TRAP_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class DemoOptions:
    http: tuple[str, int] = (HOST, 8080)
    state_dir: Path | None = None
    influx_url: str = ""
    influx_api: str = "v1"
    influx_database: str = "enoc"
    influx_org: str = "enoc"
    influx_bucket: str = "enoc"
    quiet_fleet: bool = False
    interval: float = 10.0  # agent poll interval: short, so the console moves
    story_start: float = 30.0  # seconds before the first fault
    story_scale: float = 1.0  # <1 plays the story faster (tests)
    password: str = ""  # the console password ("" makes one)
    recordings: tuple[Path, ...] = ()  # snmprec files or folders: real devices, site "lab"
    say: Callable[[str], None] = lambda text: print(text, flush=True)


class WanLink:
    """A TCP relay from one site's agent to the broker that can be cut and healed."""

    def __init__(self, site: str, target: tuple[str, int]) -> None:
        self.site = site
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, HOST, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def up(self) -> bool:
        return self.server is not None

    async def cut(self) -> None:
        """Drop every connection without a goodbye, and refuse new ones."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def heal(self) -> None:
        if self.server is None:
            await self.start()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.connections.discard(writer)
            self.connections.discard(up_writer)


async def start_broker(port: int) -> Any:
    """amqtt, in this process, on loopback, anonymous (the demo's only client is itself)."""
    from amqtt.broker import Broker  # type: ignore[import-untyped]

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    return broker


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.say = options.say
        self.links: dict[str, WanLink] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.sim: Any = None
        self.collector: Any = None
        self.agents: dict[str, Any] = {}
        self.password = options.password or secrets.token_urlsafe(12)
        self.url = ""
        self.exit_code = 0  # non-zero when the collector or an agent stopped on a crash

    async def run(self, stop: asyncio.Event) -> int:
        import tempfile

        from collector.app import Collector
        from simulators.fleet import build_devices
        from simulators.inventory_out import inventory
        from simulators.server import Simulator

        o = self.options
        started = time.monotonic()
        with contextlib.ExitStack() as cleanup:
            if o.state_dir is None:
                state = Path(
                    cleanup.enter_context(tempfile.TemporaryDirectory(prefix="enoc-demo-"))
                )
            else:
                state = o.state_dir
                state.mkdir(parents=True, exist_ok=True)
            broker_port = free_port()
            broker = await start_broker(broker_port)
            try:
                spec = demo_fleet_spec(o.recordings)
                spec = replace(spec, port=free_port("udp", "127.16.0.1"))
                devices = build_devices(spec, time.time())
                sites = sorted({(d.site, d.rtc) for d in devices})
                # each site's trap receiver is added once its agent listens (_start_agent)
                self.sim = Simulator(devices)
                await self.sim.start()
                full = inventory(self.sim, devices)

                if o.influx_url and o.influx_api == "v1":
                    await _create_database(o.influx_url, o.influx_database)
                # validated as `enoc collector` validates its config
                self.collector = Collector.from_file(self._collector_config(state, broker_port))
                collector_task = asyncio.create_task(self.collector.run(stop), name="collector")
                self.tasks.append(collector_task)
                await _first(collector_task, self.collector.ready.wait(), "collector")
                # amqtt keeps nothing for a session it has not seen yet: an agent's first
                # events must wait until the collector's lanes are subscribed (it may take
                # the collector a few seconds to find that amqtt speaks only 3.1.1)
                await _first(collector_task, self.collector.ingest.subscribed.wait(), "collector")
                self.url = f"http://{o.http[0]}:{self.collector.http_port}/"

                for site, rtc in sites:
                    link = self.links[site] = WanLink(site, (HOST, broker_port))
                    await link.start()
                    await self._start_agent(
                        site,
                        functools.partial(self._agent_config, state, site, rtc, full, link.port),
                        stop,
                    )

                self.say(
                    f"\nenoc demo: {len(devices)} simulated devices at {len(sites)} sites, "
                    f"{len(self.agents)} agents, broker, collector: ready in "
                    f"{time.monotonic() - started:.1f} s\n"
                    f"\n  console  {self.url}\n  login    {DEMO_USER} / {self.password}\n"
                    f"  state    {state}\n"
                    + (
                        "\nno scripted faults (--quiet-fleet)\n"
                        if o.quiet_fleet
                        else f"\nthe story starts in {o.story_start:.0f} s "
                        f"and repeats every {STORY_PERIOD * o.story_scale / 60:.1f} min\n"
                    )
                    + "Ctrl-C stops everything.\n"
                )
                if not o.quiet_fleet:
                    self.tasks.append(asyncio.create_task(self.story(stop), name="story"))
                await stop.wait()
            finally:
                stop.set()
                await self._shutdown(broker)
        return self.exit_code

    async def _start_agent(
        self, site: str, config_for: Callable[[int], Path], stop: asyncio.Event
    ) -> None:
        """Start the site's agent, its config made by `config_for(trap_port)` with a trap
        port chosen free just before, again with another if a program took that one first
        (a port can only be chosen ahead), then send the site's traps there."""
        from agent.app import Agent
        from enoc.lifecycle import StartError
        from simulators.server import TrapReceiver

        assert self.sim is not None
        for attempt in range(TRAP_PORT_ATTEMPTS):
            trap_port = free_port("udp")
            agent = Agent(config_for(trap_port))
            task = asyncio.create_task(agent.run(stop), name=f"agent[{site}]")
            try:
                await _first(task, agent.ready.wait(), f"agent {site}")
            except StartError as exc:
                taken = isinstance(exc.cause, OSError) and exc.cause.errno == errno.EADDRINUSE
                if not taken or attempt == TRAP_PORT_ATTEMPTS - 1:
                    raise
                continue
            self.tasks.append(task)
            self.agents[site] = agent
            self.sim.trap_receivers.append(TrapReceiver(HOST, trap_port, site=site))
            return

    async def _shutdown(self, broker: Any) -> None:
        self.say("enoc demo: stopping...")
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=8)
            for task in still:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*still, return_exceptions=True)
        for link in self.links.values():
            await link.cut()
        if self.sim is not None:
            await self.sim.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.shutdown(), 5)
        ended = [t for t in self.tasks if t.done() and not t.cancelled()]
        codes = [1 if t.exception() is not None else t.result() for t in ended]
        self.exit_code = max([c for c in codes if isinstance(c, int)], default=0)
        self.say("enoc demo: stopped")

    # ---------------------------------------------------------------- configs

    def _collector_config(self, state: Path, broker_port: int) -> Path:
        from collector.auth import hash_password

        o = self.options
        users = state / "users.yaml"
        users.write_text(
            yaml.safe_dump(
                {
                    "users": [
                        {
                            "name": DEMO_USER,
                            "role": "admin",
                            "password_hash": hash_password(self.password),
                        }
                    ]
                }
            )
        )
        users.chmod(0o600)
        config: dict[str, Any] = {
            "mqtt": {"url": f"mqtt://{HOST}:{broker_port}", "client_id": "enoc-demo-collector"},
            "store": {"url": f"sqlite:///{state / 'incidents.db'}"},
            "http": {
                "listen": f"{o.http[0]}:{o.http[1] or free_port(host=o.http[0])}",
                "users_file": str(users),
                "audit_file": str(state / "audit.jsonl"),
            },
            "incidents": {
                "agent_timeout": f"{max(30, 3 * o.interval):.0f}s",
                # a story played faster cuts Brindisi's WAN for less than the keepalive and
                # the grace: its will opens the site incident at once then
                "will_grace": "30s" if o.story_scale >= 1 else "0s",
            },
            "log": {"level": "warning"},
        }
        if o.influx_url:
            influx: dict[str, Any] = {"url": o.influx_url, "api": o.influx_api}
            if o.influx_api == "v1":
                influx["database"] = o.influx_database
            else:
                # the collector expands ${INFLUX_TOKEN} from the environment when it loads
                influx.update(org=o.influx_org, bucket=o.influx_bucket)
                influx["token"] = "${INFLUX_TOKEN}"  # noqa: S105 - a reference, not a secret
            config["influxdb"] = influx
        path = state / "collector.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _agent_config(
        self,
        state: Path,
        site: str,
        rtc: str,
        full: dict[str, Any],
        wan_port: int,
        trap_port: int,
    ) -> Path:
        rows = [d for d in full["devices"] if d["site"] == site]
        used = {d["credentials"] for d in rows}
        inventory_path = state / f"{site}-devices.yaml"
        inventory_path.write_text(
            yaml.safe_dump(
                {
                    "credentials": {k: v for k, v in full["credentials"].items() if k in used},
                    "devices": rows,
                },
                sort_keys=False,
            )
        )
        inventory_path.chmod(0o600)
        interval = self.options.interval
        config = {
            "agent_id": f"{site}-1",
            "site": site,
            "rtc": rtc,
            "mqtt": {"url": f"mqtt://{HOST}:{wan_port}", "keepalive": "5s"},
            "spool": {"path": str(state / "spool" / site)},
            "polling": {
                "interval": f"{interval:g}s",
                "timeout": f"{min(1.0, interval / 4):g}s",
                "unreachable_after": 2,
                "source": HOST,
            },
            "publishing": {"heartbeat": f"{interval:g}s"},
            "traps": {"listen": f"{HOST}:{trap_port}", "communities": ["public"]},
            "inventory": str(inventory_path),
            "log": {"level": "warning"},
            # The simulated devices are addresses of this host's loopback: the kernel answers
            # their ping whatever fault a device plays, so a simulated outage would read as
            # "SNMP agent silent, host up" instead of down.
            "ping": {"enabled": False},
        }
        path = state / f"{site}-agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    # ---------------------------------------------------------------- the story

    async def story(self, stop: asyncio.Event) -> None:
        steps: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
            (0, "Nairobi: nbo-acc-1 GigabitEthernet1/0/3 starts flapping", self._flap_start),
            (40, "Geneva: gva-core-1's Fan 2 stops", self._fan_fail),
            (90, "Nairobi: the flapping link settles", self._flap_end),
            (120, "Bangkok: bkk-ce-1 reboots (20 s down)", self._reboot),
            (160, "Geneva: the fan is replaced", self._fan_replaced),
            (200, "Brindisi: the WAN link to the RTC goes down", self._wan_down),
            (290, "Brindisi: the WAN link is back; the agent replays its spool", self._wan_up),
        ]
        scale = self.options.story_scale
        start = time.monotonic() + self.options.story_start
        loop = 0
        while not stop.is_set():
            for offset, text, action in steps:
                at = start + (loop * STORY_PERIOD + offset) * scale
                if await pause(stop, max(0.0, at - time.monotonic())):
                    return
                self.say(f"{time.strftime('%H:%M:%S')} story: {text}")
                try:
                    await action()
                except Exception as exc:  # the story must never take the demo down
                    log.warning("story step failed: %s", exc)
            loop += 1

    async def _flap_start(self) -> None:
        period = max(1.0, 6 * self.options.story_scale)
        self.sim.inject("nbo-acc-1", {"kind": "flap", "ifIndex": 3, "period": period})

    async def _flap_end(self) -> None:
        self.sim.clear("nbo-acc-1")

    async def _fan_fail(self) -> None:
        self.sim.inject("gva-core-1", {"kind": "fan_fail", "fan": 21})

    async def _fan_replaced(self) -> None:
        self.sim.clear("gva-core-1")

    async def _reboot(self) -> None:
        downtime = max(2.0, 20 * self.options.story_scale)
        self.sim.inject("bkk-ce-1", {"kind": "reboot", "downtime": downtime})

    async def _wan_down(self) -> None:
        await self.links["bds"].cut()

    async def _wan_up(self) -> None:
        await self.links["bds"].heal()


def demo_fleet_spec(recordings: tuple[Path, ...] = ()) -> Any:
    """The DESIGN's fleet with sensors, and each recording as a real device of a "lab" site in the
    europe RTC (its own agent, like any site), with traffic counters that move."""
    from simulators.command import recording_groups
    from simulators.fleet import SiteSpec, default_fleet_spec

    spec = replace(default_fleet_spec(), sensors=True)  # temperatures, fans, power supplies
    if not recordings:
        return spec
    lab = SiteSpec("lab", "europe", "Recordings lab", 1.0, recording_groups(list(recordings)))
    return replace(spec, sites=[*spec.sites, lab], recording_counters="moving")


async def _create_database(url: str, database: str) -> None:
    """InfluxDB 1.x: CREATE DATABASE is idempotent, so the demo just asks for it."""
    import aiohttp

    quoted = database.replace("\\", "\\\\").replace('"', '\\"')
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url.rstrip('/')}/query",
                data={"q": f'CREATE DATABASE "{quoted}"'},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response,
        ):
            if response.status >= 300:
                raise OSError(
                    f"InfluxDB at {url} refused CREATE DATABASE {database}: HTTP "
                    f"{response.status} {(await response.text())[:200]}"
                )
    except aiohttp.ClientError as exc:
        raise OSError(f"cannot reach InfluxDB at {url}: {exc}") from exc


async def _first(task: asyncio.Task[Any], ready: Awaitable[Any], what: str) -> None:
    """Wait until `ready`, or raise what made `task` end first."""
    waiter = asyncio.ensure_future(ready)
    done, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise RuntimeError(f"{what} stopped during start-up")
    if waiter not in done:
        waiter.cancel()
        raise RuntimeError(f"{what} not ready after 60 s")


def main_sync(options: DemoOptions) -> int:
    from enoc.config import ConfigError
    from enoc.logs import setup_logging
    from enoc.runtime import run as run_loop
    from enoc.runtime import stop_event
    from simulators.snmprec import RecordingError

    setup_logging("logfmt", "warning")
    # amqtt logs every connection at info and a traceback for each cut link: not news here
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.ERROR)

    async def main() -> int:
        stop = stop_event()
        try:
            return await Demo(options).run(stop)
        except (OSError, ConfigError, RuntimeError, RecordingError) as exc:  # port taken, ...
            print(f"enoc demo: {exc}", file=sys.stderr)
            return 1

    return run_loop(main)
