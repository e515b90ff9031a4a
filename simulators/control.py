"""The simulator's fault-injection API (DESIGN: "Simulator control API")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from enoc.lifecycle import WebSite
from simulators.server import FaultError, Simulator

SIMULATOR = web.AppKey("simulator", Simulator)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def list_devices(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response([sim.describe(d) for d in sim.devices.values()])


async def get_device(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        device = sim.device(request.match_info["name"])
    except KeyError as exc:
        return _error(404, str(exc.args[0]))
    return web.json_response(sim.describe(device))


async def inject_fault(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    name = request.match_info["name"]
    try:
        body: Any = await request.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the stack
        return _error(400, 'body must be a JSON object like {"kind": "link_down", "ifIndex": 3}')
    if not isinstance(body, dict):
        return _error(400, 'body must be a JSON object like {"kind": "link_down", "ifIndex": 3}')
    try:
        faults = sim.inject(name, body)
    except KeyError as exc:
        return _error(404, str(exc.args[0]))
    except FaultError as exc:
        return _error(400, str(exc))
    return web.json_response({"device": name, "faults": faults})


async def clear_faults(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    name = request.match_info["name"]
    try:
        faults = sim.clear(name)
    except KeyError as exc:
        return _error(404, str(exc.args[0]))
    return web.json_response({"device": name, "faults": faults})


async def stats(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response({"devices": len(sim.devices), **sim.stats.as_dict()})


def make_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIMULATOR] = sim
    app.router.add_get("/devices", list_devices)
    app.router.add_get("/devices/{name}", get_device)
    app.router.add_post("/devices/{name}/faults", inject_fault)
    app.router.add_delete("/devices/{name}/faults", clear_faults)
    app.router.add_get("/stats", stats)
    return app


def control_site(sim: Simulator, host: str, port: int) -> WebSite:
    """The control API as a part: bound by `start` (a port taken fails it), `close` stops it."""
    return WebSite("control", make_app(sim), host, port)
