"""The in-process surfaces: each takes one generated input and says whether it escaped.

A surface's `feed` returns None when the handler accepted the input or refused
it with its documented error (WireError, SnmpError, a counted bad trap,
ConfigError, an HTTP 4xx), and a short text naming the escape otherwise (any
other exception, a 5xx, a dropped connection, a fast path that disagrees with
the general one). `generate` makes the next input from a seeded random
generator: a valid input mutated (enoc.bench.fuzz.mutate) or random bytes.
The HTTP surfaces are in enoc.bench.fuzz.http, the live one in enoc.bench.fuzz.live.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec
import yaml

from agent.config import AgentConfig
from agent.traps import Trap, TrapReceiver, TrapSource
from collector.config import CollectorConfig
from collector.lineproto import payload_lines
from collector.metrics_in import of
from enoc.bench.fuzz import messages
from enoc.bench.fuzz.messages import AGENT, SITE, TRAP_COMMUNITY, TRAP_USERS
from enoc.bench.fuzz.mutate import BerMutator, JsonMutator, Mutated
from enoc.config import ConfigError, load_config
from enoc.snmp.client import SnmpClient, SnmpError, Target, V2c, V3User
from enoc.wire import (
    KINDS,
    EventsMessage,
    Kind,
    MetricsMessage,
    StatusMessage,
    WireError,
    decode,
    topic,
)


class Input(Protocol):
    @property
    def data(self) -> bytes: ...
    @property
    def what(self) -> str: ...


class Surface(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def generate(self, rng: random.Random) -> Any: ...
    async def feed(self, item: Any) -> str | None: ...


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# ------------------------------------------------------------------ wire payloads


class WireInput:
    __slots__ = ("data", "kind", "what")

    def __init__(self, kind: Kind, mutated: Mutated) -> None:
        self.kind = kind
        self.data = mutated.data
        self.what = f"{kind}: {mutated.what}"


class _WireSurface:
    kinds: tuple[Kind, ...] = KINDS

    def __init__(self) -> None:
        self._mutators: dict[int, JsonMutator] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def generate(self, rng: random.Random) -> WireInput:
        kind = rng.choice(self.kinds)
        mutator = self._mutators.setdefault(id(rng), JsonMutator(rng))
        return WireInput(kind, mutator.mutate(messages.valid_json(kind, rng)))


class GeneralPath(_WireSurface):
    """enoc.wire.decode and validation, then the metrics lane's line protocol."""

    name = "wire"

    async def feed(self, item: WireInput) -> str | None:
        try:
            message = decode(topic(SITE, AGENT, item.kind), item.data)
            if isinstance(message, MetricsMessage):
                of(message)  # the general way to lines and polls
        except WireError:
            return None
        except Exception as exc:
            return describe_error(exc)
        return None


class Incidents(_WireSurface):
    """Events and status payloads that decode, on to the collector's incident engine and
    its SQLite store (what the events lane does with them): whatever the store refuses of
    a message's content is that message's fault, never the lane's."""

    name = "incidents"
    kinds = ("events", "status")

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="enoc-bench-fuzz-incidents-")
        self.store: Any = None
        self.engine: Any = None

    async def open(self) -> None:
        from collector.config import IncidentsConfig
        from collector.incidents import Engine
        from collector.store import Store

        self.store = Store(f"sqlite:///{Path(self._tmp.name) / 'incidents.db'}")
        await self.store.open()
        self.engine = Engine(self.store, IncidentsConfig(), origin="fuzz")

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
        self._tmp.cleanup()

    async def feed(self, item: WireInput) -> str | None:
        try:
            message = decode(topic(SITE, AGENT, item.kind), item.data)
        except WireError:
            return None
        except Exception as exc:
            return "decode: " + describe_error(exc)
        try:
            if isinstance(message, EventsMessage):
                await self.engine.on_events(message)
            elif isinstance(message, StatusMessage):
                await self.engine.on_status(message, retained=False)
        except Exception as exc:
            return "incident engine: " + describe_error(exc)
        return None


_FLOAT = re.compile(rb"[:\[,]\s*(-?[0-9][0-9.eE+-]*)")


def _canonical(payload: bytes) -> bool:
    """Whether every float token is the one msgspec writes (the pass copies tokens, the
    general path formats values: only then are their bytes the same)."""
    for token in _FLOAT.findall(payload):
        try:
            number = float(token)
        except ValueError:
            continue
        if (b"." in token or b"e" in token.lower()) and msgspec.json.encode(number) != token:
            return False
    return True


class FastPath(_WireSurface):
    """collector._metricsjson (collector/metrics_in.py's first try): it agrees with the
    general path on what it takes, or leaves the payload to it."""

    name = "fastpath"
    kinds = ("metrics",)

    async def feed(self, item: WireInput) -> str | None:
        try:
            fast = payload_lines(SITE, AGENT, item.data)
        except Exception as exc:
            return "fast path: " + describe_error(exc)
        if fast is None:
            return None
        try:
            message = decode(topic(SITE, AGENT, "metrics"), item.data)
            assert isinstance(message, MetricsMessage)
            ref = of(message)
        except WireError as exc:
            return f"fast path took what the general path refuses ({exc})"
        except Exception as exc:
            return "general path: " + describe_error(exc)
        rtc, lines, points, polls = fast
        if (rtc, points) != (ref.rtc, ref.points):
            return f"fast path says {points} points, the general path {ref.points}"
        if polls != ref.polls:
            return "fast path keeps other recent values than the general path"
        if _canonical(item.data) and lines != ref.lines:
            return "fast path writes other lines than the general path"
        return None


# ------------------------------------------------------------------ SNMP responses


class SnmpInput:
    __slots__ = ("data", "op", "v3", "what")

    def __init__(self, op: str, v3: bool, what: str = "") -> None:
        self.op, self.v3, self.what, self.data = op, v3, what, b""


class _Responder(asyncio.DatagramProtocol):
    """A simulated device (simulators.engine) whose every answer is mutated; the valid
    answer follows the mutated one, as a device's real answer follows a spoofed one."""

    def __init__(self, rng: random.Random) -> None:
        from simulators.engine import Engine
        from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
        from simulators.model import attach_views

        spec = FleetSpec(
            sites=[SiteSpec("fuzz", "americas", "Fuzz", 0, [DeviceGroup("access-switch", 1, 8)])],
            address_base="127.0.0.1",
        )
        self.device = build_devices(spec, time.time())[0]
        attach_views([self.device])
        self.engine = Engine(rng=random.Random(rng.random()))
        self.mutator = BerMutator(rng, huge_arcs=1 / 20_000)
        self.rng = rng
        self.transport: asyncio.DatagramTransport | None = None
        self.notes: list[str] = []
        self.first: bytes = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.engine.handle(self.device, data, time.time())
        if reply is None or self.transport is None:
            return
        if self.rng.random() < 0.85:
            mutated = self.mutator.mutate(reply)
            self.notes.append(mutated.what)
            if not self.first:
                self.first = mutated.data
            self.transport.sendto(mutated.data, addr)
        self.transport.sendto(reply, addr)


class SnmpResponses:
    """The agent's SNMP client (enoc.snmp) getting mutated answers over loopback UDP."""

    name = "snmp"
    COLUMNS = tuple((1, 3, 6, 1, 2, 1, 2, 2, 1, c) for c in (2, 8, 10))

    def __init__(self, rng: random.Random) -> None:
        self.responder = _Responder(rng)
        self.client = SnmpClient(timeout=0.2, retries=0)
        self._transport: asyncio.DatagramTransport | None = None
        self.targets: dict[bool, Target] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.responder, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        device = self.responder.device
        community = min(device.communities)
        user = next(iter(device.users.values()))
        self.targets = {
            False: Target("127.0.0.1", port, V2c(community)),
            True: Target("127.0.0.1", port, V3User(user)),
        }
        await self.client.open("127.0.0.1")

    async def close(self) -> None:
        self.client.close()
        if self._transport is not None:
            self._transport.close()

    def generate(self, rng: random.Random) -> SnmpInput:
        return SnmpInput(rng.choice(["get", "get", "walk"]), rng.random() < 0.4)

    async def feed(self, item: SnmpInput) -> str | None:
        self.responder.notes = []
        self.responder.first = b""
        target = self.targets[item.v3]
        escape = None
        try:
            if item.op == "get":
                await self.client.get(target, [(1, 3, 6, 1, 2, 1, 1, 3, 0)])
            else:
                await self.client.walk(target, self.COLUMNS, max_repetitions=4)
        except SnmpError:
            pass
        except Exception as exc:
            escape = describe_error(exc)
        item.what = f"{item.op} v{'3' if item.v3 else '2c'}: " + (
            " | ".join(self.responder.notes) or "valid answers"
        )
        item.data = self.responder.first
        return escape


# ------------------------------------------------------------------ traps


SENDER = ("127.0.0.1", 50162)


class TrapInput:
    __slots__ = ("data", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what = data, what


class _Receiver(TrapReceiver):
    """The agent's receiver, keeping the text of the last bad trap it counted."""

    last: str = ""

    def _bad(self, kind: str, message: str) -> None:
        self.last = message
        self.stats.bad[kind] += 1


class Traps:
    """v1, v2c and v3 trap datagrams to the agent's trap receiver (agent/traps.py)."""

    name = "traps"

    def __init__(self, rng: random.Random) -> None:
        self.traps: list[Trap] = []
        # Every datagram comes from the one sender's address: the fuzzed part is the
        # datagram, not its attribution (refusals by address are counted, not escapes).
        source = TrapSource(
            device="fuzz-sender",
            communities=frozenset([TRAP_COMMUNITY]),
            users=tuple(TRAP_USERS),
        )
        self.receiver = _Receiver(sources={SENDER[0]: source}, on_trap=self.traps.append)
        self.v3 = messages.V3Traps()
        self.mutator = BerMutator(rng, huge_arcs=1 / 20_000)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.receiver.close()

    def generate(self, rng: random.Random) -> TrapInput:
        version = rng.choice(["1", "2c", "2c", "3", "3", "3"])
        valid = {"1": messages.trap_v1, "2c": messages.trap_v2c, "3": self.v3.trap}[version](rng)
        if rng.random() < 0.05:
            return TrapInput(valid, f"v{version}: valid")
        mutated = self.mutator.mutate(valid)
        return TrapInput(mutated.data, f"v{version}: {mutated.what}")

    async def feed(self, item: TrapInput) -> str | None:
        before = self.receiver.stats.bad["handler_error"]
        try:
            self.receiver.datagram_received(item.data, SENDER)
        except Exception as exc:
            return describe_error(exc)
        finally:
            self.traps.clear()
        if self.receiver.stats.bad["handler_error"] != before:
            return f"handler_error: {self.receiver.last[:200]}"
        return None


# ------------------------------------------------------------------ configuration files


class ConfigInput:
    __slots__ = ("data", "schema", "what")

    def __init__(self, data: bytes, schema: type, what: str) -> None:
        self.data, self.schema, self.what = data, schema, what


class Configs:
    """Random YAML to the config loader (enoc.config): only ConfigError may come out."""

    name = "config"

    def __init__(self, rng: random.Random) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="enoc-bench-fuzz-config-")
        self.tmp = Path(self._tmp.name)
        (self.tmp / "devices.yaml").write_text(messages.INVENTORY)
        (self.tmp / "users.yaml").write_text("users: []\n")
        self.path = self.tmp / "config.yaml"
        # PyYAML composes in Python, slowly: a deep value in one input of 500, no string
        # longer than a line
        self.mutator = JsonMutator(rng, nesting=0.002, max_depth=1000, max_string=1000)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._tmp.cleanup()

    @staticmethod
    def schema_of(agent: bool) -> type:
        return AgentConfig if agent else CollectorConfig

    def generate(self, rng: random.Random) -> ConfigInput:
        agent = rng.random() < 0.5
        schema = self.schema_of(agent)
        base = (messages.agent_config if agent else messages.collector_config)(str(self.tmp))
        name = "agent" if agent else "collector"
        roll = rng.random()
        if roll < 0.35:  # YAML's own hazards, in a valid file
            spices = messages.DEEP_YAML if rng.random() < 0.002 else messages.YAML_SPICE
            what, spice = rng.choice(spices)
            text = yaml.safe_dump(base, sort_keys=False)
            lines = text.splitlines(keepends=True)
            at = rng.randrange(len(lines) + 1)
            if rng.random() < 0.5:
                text = "".join(lines[:at]) + spice + "".join(lines[at:])
            else:
                text = spice
            return ConfigInput(text.encode("utf-8", "surrogatepass"), schema, f"{name}: {what}")
        if roll < 0.7:  # block YAML of a mutated config
            mutated = self.mutator.mutate(base)
            try:
                value = json.loads(mutated.data)
                text = yaml.safe_dump(value, sort_keys=False, allow_unicode=rng.random() < 0.5)
                return ConfigInput(
                    text.encode("utf-8", "surrogatepass"), schema, f"{name}: {mutated.what}"
                )
            except (ValueError, RecursionError, yaml.YAMLError):
                pass
            return ConfigInput(mutated.data, schema, f"{name} (flow): {mutated.what}")
        mutated = self.mutator.mutate(base)  # JSON is YAML's flow style
        return ConfigInput(mutated.data, schema, f"{name} (flow): {mutated.what}")

    async def feed(self, item: ConfigInput) -> str | None:
        self.path.write_bytes(item.data)
        try:
            load_config(self.path, item.schema)
        except ConfigError:
            return None
        except Exception as exc:
            return describe_error(exc)
        return None


def in_process(name: str, rng: random.Random, mqtt_url: str = "") -> Surface:
    """The surface called `name`, its generators drawing from `rng`."""
    from enoc.bench.fuzz.http import CollectorApi, SimulatorControl

    makers: dict[str, Callable[[], Surface]] = {
        "wire": GeneralPath,
        "fastpath": FastPath,
        "incidents": Incidents,
        "snmp": lambda: SnmpResponses(rng),
        "traps": lambda: Traps(rng),
        "config": lambda: Configs(rng),
        "control": lambda: SimulatorControl(rng),
        "http": lambda: CollectorApi(rng, mqtt_url),
    }
    return makers[name]()
