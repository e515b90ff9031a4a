"""The HTTP surfaces: random requests to the collector's API and the simulator's control
API, each served by aiohttp on a loopback port. A 5xx or a dropped connection escapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from collector.config import CollectorConfig
from enoc.bench.fuzz.mutate import JsonMutator
from enoc.bench.fuzz.surfaces import describe_error

# ------------------------------------------------------------------ HTTP requests


class HttpInput:
    __slots__ = ("body", "headers", "method", "path", "what")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, what: str
    ) -> None:
        self.method, self.path, self.headers, self.body, self.what = (
            method,
            path,
            headers,
            body,
            what,
        )

    @property
    def data(self) -> bytes:
        return self.body


ODD_SEGMENTS = [
    "0",
    "-1",
    "99999999999999999999999",
    "1e400",
    "abc",
    "%00",
    "%ff%fe",
    "..",
    "%2e%2e",
    "\u00e9",
    "x" * 5000,
    "",
    "1;2",
    "%0d%0aX-Injected: 1",
    "NaN",
    "9" * 30,
]
ODD_QUERIES = [
    "limit=-1",
    "limit=99999999999999999999",
    "limit=abc",
    "since=1e400",
    "since=-1e308",
    "until=nan",
    "since=2026-13-45T99:99:99Z",
    "state=%00",
    "severity=x",
    "site=%ff",
    "last_id=-5",
    "last_id=99999999999999999999999",
    "a=" + "b" * 9000,
    "limit=1&limit=2",
    "since=0",
    "until=inf",
    "every=1e400",
]


class HttpRequests:
    """Requests with random methods, paths, headers and bodies to an aiohttp server on a
    loopback port: a 5xx or a dropped connection is an escape."""

    def __init__(
        self,
        name: str,
        routes: list[tuple[str, str]],
        bodies: dict[str, list[Any]],
        headers: Callable[[random.Random], dict[str, str]],
        rng: random.Random,
    ) -> None:
        self.name = name
        self.routes = routes  # (method, path with {placeholders})
        self.bodies = bodies  # path suffix -> valid bodies
        self.headers = headers
        self.mutator = JsonMutator(rng)
        self.base = ""
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=4, force_close=False),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def generate(self, rng: random.Random) -> HttpInput:
        method, path = rng.choice(self.routes)
        notes = []
        if rng.random() < 0.15:
            method = rng.choice(["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"])
            notes.append(f"method {method}")
        segments = path.split("/")
        for i, seg in enumerate(segments):
            if seg.startswith("{") or (seg and rng.random() < 0.04):
                odd = rng.choice(ODD_SEGMENTS) if rng.random() < 0.7 else str(rng.randrange(1, 5))
                segments[i] = odd
                if odd != seg:
                    notes.append(f"segment {odd[:20]!r}")
        path = "/".join(segments)
        if rng.random() < 0.3:
            query = "&".join(rng.sample(ODD_QUERIES, rng.randint(1, 3)))
            path += "?" + query
            notes.append(f"query {query[:40]}")
        headers = self.headers(rng)
        body = b""
        for suffix, valid in self.bodies.items():
            if path.split("?")[0].endswith(suffix) and method in ("POST", "PUT", "PATCH"):
                mutated = self.mutator.mutate(rng.choice(valid))
                body = (
                    mutated.data if rng.random() < 0.9 else json.dumps(rng.choice(valid)).encode()
                )
                notes.append(f"body {mutated.what}")
                headers["Content-Type"] = rng.choice(
                    ["application/json", "application/json; charset=latin-1", "text/plain", "x/y;;"]
                )
                break
        else:
            if rng.random() < 0.05:
                body = rng.randbytes(rng.choice([1, 100, 70_000]))
                notes.append(f"random body ({len(body)})")
        if "Authorization" in headers:
            notes.append("auth " + headers["Authorization"][:24])
        return HttpInput(method, path, headers, body, f"{method} {path[:80]} " + "; ".join(notes))

    async def feed(self, item: HttpInput) -> str | None:
        assert self.session is not None
        try:
            async with self.session.request(
                item.method,
                self.base + item.path,
                headers=item.headers,
                data=item.body or None,
                allow_redirects=False,
            ) as response:
                if response.content_type != "text/event-stream":
                    await response.read()
                if response.status >= 500:
                    return f"HTTP {response.status}"
        except aiohttp.InvalidURL:
            return None  # the client would not send it
        except ValueError as exc:
            if isinstance(exc, aiohttp.ClientError):
                return "connection: " + describe_error(exc)
            return None  # a header the client would not write
        except aiohttp.ClientResponseError as exc:
            return None if exc.status < 500 else f"HTTP {exc.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "connection: " + describe_error(exc)
        return None


def random_headers(tokens: list[str]) -> Callable[[random.Random], dict[str, str]]:
    def make(rng: random.Random) -> dict[str, str]:
        headers: dict[str, str] = {}
        roll = rng.random()
        if roll < 0.6 and tokens:
            headers["Authorization"] = f"Bearer {rng.choice(tokens)}"
        elif roll < 0.75:
            headers["Authorization"] = rng.choice(
                ["Bearer ", "Bearer x", "Basic Zm9vOmJhcg==", "Bearer " + "a" * 8000, "Digest"]
            )
        elif roll < 0.85:
            headers["Cookie"] = rng.choice(
                ["enoc_session=x", "enoc_session=" + "A" * 4000, "a=b; enoc_session=%ff", "=;="]
            )
        if rng.random() < 0.1:
            headers[rng.choice(["Last-Event-ID", "Origin", "X-Forwarded-For", "Accept"])] = (
                rng.choice(["-1", "9" * 40, "null", "\u00e9", "*/*;q=x"])
            )
        return headers

    return make


COLLECTOR_ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/incidents/{id}"),
    ("POST", "/api/v1/incidents/{id}/ack"),
    ("POST", "/api/v1/incidents/{id}/resolve"),
    ("POST", "/api/v1/incidents/{id}/comment"),
    ("GET", "/api/v1/sites"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{site}/{device}"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/maintenance"),
    ("POST", "/api/v1/maintenance"),
    ("DELETE", "/api/v1/maintenance/{id}"),
    ("GET", "/api/v1/whoami"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/"),
    ("GET", "/console/{file}"),
    ("GET", "/{other}"),
]
COLLECTOR_BODIES: dict[str, list[Any]] = {
    "/login": [{"name": "fuzz-admin", "password": "wrong"}, {"name": "nobody", "password": "x"}],
    "/comment": [{"text": "looked at it"}],
    "/ack": [{"text": "mine"}, {}],
    "/resolve": [{"text": "fixed"}, {}],
    "/maintenance": [
        {"site": "fuzz", "device": "dev-0", "starts": "", "ends": "1h", "reason": "fuzz"},
        {
            "site": "fuzz",
            "match": "dev-*",
            "starts": "",
            "ends": "2h",
            "every": "1d",
            "until": "30d",
            "reason": "weekly",
        },
    ],
}

CONTROL_ROUTES = [
    ("GET", "/devices"),
    ("GET", "/devices/{name}"),
    ("POST", "/devices/{name}/faults"),
    ("DELETE", "/devices/{name}/faults"),
    ("GET", "/stats"),
    ("GET", "/{other}"),
]
CONTROL_BODIES: dict[str, list[Any]] = {
    "/faults": [
        {"kind": "link_down", "ifIndex": 3},
        {"kind": "flap", "ifIndex": 2, "period": 5},
        {"kind": "reboot", "downtime": 1},
        {"kind": "packet_loss", "ratio": 0.5},
        {"kind": "latency", "ms": 20},
        {"kind": "bgp_down", "peer": "127.9.0.1"},
        {"kind": "garbage", "mode": "truncated"},
        {"kind": "counter_reset", "ifIndex": 1, "discontinuity": True},
        {"kind": "counter_wrap", "ifIndex": 1, "seconds": 30},
    ]
}


class SimulatorControl(HttpRequests):
    """The simulator's fault-injection API (simulators/control.py) on a loopback port."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__("control", CONTROL_ROUTES, CONTROL_BODIES, random_headers([]), rng)
        self._runner: web.AppRunner | None = None
        self._names: list[str] = []
        self._sim: Any = None

    async def open(self) -> None:
        from simulators.control import make_app
        from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
        from simulators.model import attach_views
        from simulators.server import Simulator

        spec = FleetSpec(
            sites=[
                SiteSpec(
                    "fuzz",
                    "americas",
                    "Fuzz",
                    0,
                    [DeviceGroup("pe-router", 1), DeviceGroup("access-switch", 1, 8)],
                )
            ],
            address_base="127.0.0.1",
        )
        devices = build_devices(spec, time.time())
        attach_views(devices)
        self._names = [d.name for d in devices]
        self._sim = Simulator(devices)
        self._runner = web.AppRunner(make_app(self._sim), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        await super().open()

    async def close(self) -> None:
        await super().close()
        if self._sim is not None:
            await self._sim.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def generate(self, rng: random.Random) -> HttpInput:
        item = super().generate(rng)
        if rng.random() < 0.6 and "/devices/" in item.path:
            # most requests name a real device, so that the fault's own checks are reached
            parts = item.path.split("/")
            parts[2] = rng.choice(self._names)
            item.path = "/".join(parts)
            item.what = f"{item.method} {item.path[:80]} " + item.what.split(" ", 2)[-1]
        return item


class CollectorApi(HttpRequests):
    """The collector's HTTP API: a real collector (SQLite store) on a loopback port; its
    MQTT broker is given by the bench."""

    ADMIN = "fuzz-admin"

    def __init__(self, rng: random.Random, mqtt_url: str) -> None:
        self.tokens = {"viewer": "v" * 32, "operator": "o" * 32, "admin": "a" * 32}
        super().__init__(
            "http",
            COLLECTOR_ROUTES,
            COLLECTOR_BODIES,
            random_headers(list(self.tokens.values())),
            rng,
        )
        self.mqtt_url = mqtt_url
        self._tmp = tempfile.TemporaryDirectory(prefix="enoc-bench-fuzz-http-")
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None

    async def open(self) -> None:
        from collector.app import Collector
        from enoc.config import parse_config
        from testbed.servers import free_port

        tmp = Path(self._tmp.name)
        users = tmp / "users.yaml"
        users.write_text(
            yaml.safe_dump(
                {
                    "users": [
                        {"name": f"fuzz-{role}", "role": role, "token": token}
                        for role, token in self.tokens.items()
                    ]
                }
            )
        )
        config = {
            "mqtt": {"url": self.mqtt_url, "client_id": "enoc-fuzz-http"},
            "store": {"url": f"sqlite:///{tmp / 'incidents.db'}"},
            "http": {"listen": f"127.0.0.1:{free_port()}", "users_file": str(users)},
            "log": {"level": "error"},
        }
        collector = Collector(parse_config(yaml.safe_dump(config), CollectorConfig))
        self._task = asyncio.create_task(collector.run(self._stop))
        await asyncio.wait(
            [self._task, asyncio.ensure_future(collector.ready.wait())],
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._task.done():
            self._task.result()
        self.base = f"http://127.0.0.1:{collector.http_port}"
        await super().open()
        # `ready` is the API listening; its MQTT lanes connect just after, and until then
        # /healthz answers 503 as it should: fuzz a collector that is whole.
        assert self.session is not None
        for _ in range(300):
            async with self.session.get(self.base + "/healthz") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the collector at {self.base} did not become healthy in 30 s")

    async def close(self) -> None:
        await super().close()
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 30)
        self._tmp.cleanup()
