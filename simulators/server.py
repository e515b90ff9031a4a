"""The fleet server: one UDP endpoint per simulated device, faults, and traps.

Every device listens on its own 127.x.y.z address, so traps it sends leave
from that address too, as they would from a real device.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from enoc.lifecycle import ServiceBase
from enoc.snmp import ber
from enoc.snmp.message import (
    build_v2c_message,
    build_v3_message,
    encode_pdu,
    encode_scoped,
    random_request_id,
)
from enoc.snmp.mib import (
    AUTHENTICATION_FAILURE,
    BGP_BACKWARD_TRANSITION,
    BGP_ESTABLISHED,
    BGP_PEER_LAST_ERROR,
    BGP_PEER_REMOTE_ADDR,
    BGP_PEER_STATE,
    COLD_START,
    IF_ADMIN_STATUS,
    IF_INDEX,
    IF_OPER_STATUS,
    LINK_DOWN,
    LINK_UP,
    SNMP_TRAP_OID_0,
    SYS_UPTIME_0,
)
from simulators.engine import GARBAGE_MODES, Engine, Stats
from simulators.model import Device, attach_views
from simulators.sensors import RPM

log = logging.getLogger("enoc.sim")

AUTH_TRAP_INTERVAL = 10.0  # seconds between authenticationFailure traps of one device

FAULT_KINDS = (
    "link_down",
    "unreachable",
    "reboot",
    "cpu_high",
    "packet_loss",
    "latency",
    "flap",
    "bgp_down",
    "garbage",
    "counter_reset",
    "counter_wrap",
    "fan_fail",
    "overheat",
)


class FaultError(ValueError):
    """A fault request that cannot be applied; the message says why."""


@dataclass(frozen=True)
class TrapReceiver:
    host: str
    port: int
    site: str = ""  # only this site's devices send to it ("" : every device)


class _DeviceProtocol(asyncio.DatagramProtocol):
    def __init__(self, sim: Simulator, device: Device) -> None:
        self.sim = sim
        self.device = device
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport implements DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        sim = self.sim
        device = self.device
        now = sim.clock()
        faults = device.faults
        if faults.unreachable or now < faults.unreachable_until:
            sim.stats.dropped["unreachable"] += 1
            return
        if faults.packet_loss and sim.rng.random() < faults.packet_loss:
            sim.stats.dropped["packet_loss"] += 1
            return
        before = sim.stats.varbinds
        reply = sim.engine.handle(device, data, now)
        device.served_requests += 1
        device.served_varbinds += sim.stats.varbinds - before
        if sim.engine.last_bad is not None:
            sim.note_bad_input(device, addr, sim.engine.last_bad)
        if reply is None or self.transport is None:
            return
        if faults.latency_ms:
            transport = self.transport
            asyncio.get_running_loop().call_later(
                faults.latency_ms / 1000, transport.sendto, reply, addr
            )
        else:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        self.sim.stats.bad["socket_error"] += 1


class Simulator(ServiceBase):
    """Serves a fleet; faults are applied through `inject` and `clear`. `start` binds every
    device's port (one taken fails the start, every port closed again); the sockets answer
    as datagrams come, with no loop of its own; `close` closes them and stops flapping."""

    name = "simulator"

    def __init__(
        self,
        devices: list[Device],
        *,
        trap_receivers: list[TrapReceiver] | None = None,
        trap_version: str = "2c",
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise ValueError("device names must be unique")
        self.devices = {d.name: d for d in devices}
        self.trap_receivers = list(trap_receivers or [])
        self.trap_version = trap_version
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = Stats()
        self.engine = Engine(self.stats, self.rng)
        self._protocols: dict[str, _DeviceProtocol] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._bad_logged: set[str] = set()
        self._last_auth_trap: dict[str, float] = {}
        self.started = False

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        # a device without its MIB view would fail every request it gets: build them now
        attach_views(self.devices.values())
        raise_open_files_limit(len(self.devices) + 256)
        loop = asyncio.get_running_loop()
        try:
            for device in self.devices.values():
                protocol = _DeviceProtocol(self, device)
                await loop.create_datagram_endpoint(
                    functools.partial(_same, protocol), local_addr=(device.address, device.port)
                )
                self._protocols[device.name] = protocol
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen on {device.address}:{device.port} for {device.name}: "
                f"{exc.strerror}",
            ) from exc
        self.started = True

    async def _close(self) -> None:
        """Close every socket and stop flapping."""
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for protocol in self._protocols.values():
            if protocol.transport is not None:
                protocol.transport.close()
        self._protocols.clear()
        self.started = False

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- bad input

    def note_bad_input(self, device: Device, addr: tuple[str | Any, int], kind: str) -> None:
        """Log the first request of each bad kind; count the rest (in Stats) silently."""
        if kind not in self._bad_logged and kind not in ("unknown_engine_id", "not_in_time_window"):
            # Engine discovery and time sync are normal v3 traffic, not bad input.
            self._bad_logged.add(kind)
            log.warning(
                "bad SNMP request: %s (first seen from %s to %s; further ones are only counted)",
                kind,
                addr[0],
                device.name,
            )
        if kind in ("unknown_community", "wrong_digest", "unknown_user"):
            now = self.clock()
            if now - self._last_auth_trap.get(device.name, 0.0) >= AUTH_TRAP_INTERVAL:
                self._last_auth_trap[device.name] = now
                self.send_trap(device, AUTHENTICATION_FAILURE, [])

    # ---------------------------------------------------------------- faults

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no simulated device named {name!r}") from None

    def inject(self, name: str, fault: dict[str, Any]) -> list[dict[str, object]]:
        """Apply a fault; returns the device's active faults. Raises FaultError on bad input."""
        device = self.device(name)
        kind = fault.get("kind")
        if kind not in FAULT_KINDS:
            raise FaultError(f"'kind' must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        allowed = {
            "link_down": {"ifIndex"},
            "flap": {"ifIndex", "period"},
            "reboot": {"downtime"},
            "packet_loss": {"ratio"},
            "latency": {"ms"},
            "bgp_down": {"peer"},
            "garbage": {"mode"},
            "counter_reset": {"ifIndex", "discontinuity"},
            "counter_wrap": {"ifIndex", "seconds"},
            "fan_fail": {"fan"},
        }.get(kind, set())
        unknown = set(fault) - allowed - {"kind"}
        if unknown:
            raise FaultError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}")
        now = self.clock()
        faults = device.faults
        if kind == "link_down":
            iface = self._interface(device, fault)
            faults.links_down.add(iface.index)
            if iface.set_link(False, device, now):
                self._link_trap(device, iface.index, up=False)
        elif kind == "flap":
            iface = self._interface(device, fault)
            period = _number(fault, "period", 5.0, low=0.2, high=3600)
            faults.flapping[iface.index] = period
            key = (device.name, iface.index)
            if key in self._tasks:
                self._tasks[key].cancel()
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._flap(device, iface.index, period), name=f"flap[{device.name}:{iface.index}]"
            )
        elif kind == "unreachable":
            faults.unreachable = True
        elif kind == "reboot":
            downtime = _number(fault, "downtime", 0.0, low=0.0, high=3600)
            device.reboot(now, downtime)
            self._timers.append(
                asyncio.get_running_loop().call_later(
                    downtime, lambda: self.send_trap(device, COLD_START, [])
                )
            )
        elif kind == "cpu_high":
            faults.cpu_high = True
        elif kind == "fan_fail":
            fans = [s.index for s in device.sensors if s.kind == RPM]
            fan = fault.get("fan", fans[0] if fans else None)
            if fan not in fans:
                raise FaultError(
                    f"{device.name} has no fan {fan!r} (its fans: "
                    f"{', '.join(map(str, fans)) or 'none; start the fleet with sensors'})"
                )
            faults.fans_failed.add(fan)
        elif kind == "overheat":
            if not device.sensors:
                raise FaultError(f"{device.name} has no sensors (start the fleet with sensors)")
            faults.overheat = True
        elif kind == "packet_loss":
            faults.packet_loss = _number(fault, "ratio", None, low=0.0, high=1.0)
        elif kind == "latency":
            faults.latency_ms = _number(fault, "ms", None, low=0.0, high=60000)
        elif kind == "bgp_down":
            peer = self._peer(device, fault)
            if peer.established:
                peer.established = False
                faults.bgp_down.add(peer.remote)
                self._bgp_trap(device, peer.remote, up=False)
        elif kind == "garbage":
            mode = fault.get("mode", GARBAGE_MODES[0])
            if mode not in GARBAGE_MODES:
                raise FaultError(f"'mode' must be one of {', '.join(GARBAGE_MODES)}; got {mode!r}")
            faults.garbage = mode
        elif kind == "counter_reset":
            # One-shot, like a reboot: nothing to clear afterwards, no trap (real devices
            # send none for `clear counters`).
            iface = self._interface(device, fault)
            discontinuity = fault.get("discontinuity", True)
            if not isinstance(discontinuity, bool):
                raise FaultError(f"'discontinuity' must be true or false; got {discontinuity!r}")
            iface.reset_counters(now, discontinuity=discontinuity)
        elif kind == "counter_wrap":
            iface = self._interface(device, fault)
            seconds = _number(fault, "seconds", 10.0, low=0.1, high=86400)
            iface.jump_near_wrap(device, now, seconds)
        return faults.describe()

    def clear(self, name: str) -> list[dict[str, object]]:
        """Clear every fault of a device: links come back up, traps announce it."""
        device = self.device(name)
        now = self.clock()
        faults = device.faults
        for if_index in list(faults.flapping):
            task = self._tasks.pop((device.name, if_index), None)
            if task is not None:
                task.cancel()
        restore = set(faults.links_down) | set(faults.flapping)
        faults.flapping.clear()
        faults.links_down.clear()
        for if_index in sorted(restore):
            if device.interface(if_index).set_link(True, device, now):
                self._link_trap(device, if_index, up=True)
        for peer in device.bgp_peers:
            if peer.remote in faults.bgp_down:
                peer.established = True
                peer.established_since = now
                peer.transitions += 1
                self._bgp_trap(device, peer.remote, up=True)
        faults.bgp_down.clear()
        faults.unreachable = False
        faults.unreachable_until = 0.0
        faults.cpu_high = False
        faults.packet_loss = 0.0
        faults.latency_ms = 0.0
        faults.garbage = ""
        faults.fans_failed.clear()
        faults.overheat = False
        return faults.describe()

    async def _flap(self, device: Device, if_index: int, period: float) -> None:
        iface = device.interface(if_index)
        while True:
            up = not iface.oper_up
            if iface.set_link(up, device, self.clock()):
                self._link_trap(device, if_index, up=up)
            await asyncio.sleep(period)

    @staticmethod
    def _interface(device: Device, fault: dict[str, Any]) -> Any:
        if_index = fault.get("ifIndex", device.interfaces[0].index if device.interfaces else None)
        if not isinstance(if_index, int) or isinstance(if_index, bool):
            raise FaultError(f"'ifIndex' must be an integer; got {if_index!r}")
        try:
            return device.interface(if_index)
        except KeyError as exc:
            raise FaultError(str(exc.args[0])) from None

    @staticmethod
    def _peer(device: Device, fault: dict[str, Any]) -> Any:
        if not device.bgp_peers:
            raise FaultError(f"{device.name} has no BGP peers")
        remote = fault.get("peer", device.bgp_peers[0].remote)
        for peer in device.bgp_peers:
            if peer.remote == remote:
                return peer
        raise FaultError(f"{device.name} has no BGP peer {remote!r}")

    # ---------------------------------------------------------------- traps

    def _link_trap(self, device: Device, if_index: int, *, up: bool) -> None:
        iface = device.interface(if_index)
        idx = (if_index,)
        self.send_trap(
            device,
            LINK_UP if up else LINK_DOWN,
            [
                ((*IF_INDEX, *idx), ber.encode_integer(if_index)),
                ((*IF_ADMIN_STATUS, *idx), ber.encode_integer(1 if iface.admin_up else 2)),
                ((*IF_OPER_STATUS, *idx), ber.encode_integer(1 if iface.oper_up else 2)),
            ],
        )

    def _bgp_trap(self, device: Device, remote: str, *, up: bool) -> None:
        idx = tuple(int(p) for p in remote.split("."))
        self.send_trap(
            device,
            BGP_ESTABLISHED if up else BGP_BACKWARD_TRANSITION,
            [
                ((*BGP_PEER_REMOTE_ADDR, *idx), ber.encode_ip(bytes(idx))),
                (
                    (*BGP_PEER_LAST_ERROR, *idx),
                    ber.encode_octets(b"\x06\x02" if not up else b"\x00\x00"),
                ),
                ((*BGP_PEER_STATE, *idx), ber.encode_integer(6 if up else 1)),
            ],
        )

    def encode_trap(
        self, device: Device, trap_oid: ber.Oid, varbinds: list[tuple[ber.Oid, bytes]]
    ) -> bytes:
        now = self.clock()
        body = ber.encode_varbind(
            ber.encode_oid(SYS_UPTIME_0),
            ber.encode_unsigned(ber.TIMETICKS, device.uptime_ticks(now)),
        ) + ber.encode_varbind(ber.encode_oid(SNMP_TRAP_OID_0), ber.encode_oid(trap_oid))
        body += b"".join(ber.encode_varbind(ber.encode_oid(o), v) for o, v in varbinds)
        pdu = encode_pdu(ber.TRAP_V2, random_request_id(), 0, 0, body)
        if self.trap_version == "3" and device.users:
            user_name = next(iter(device.users))
            keys = device.user_keys(user_name)
            assert keys is not None
            return build_v3_message(
                msg_id=random_request_id(),
                max_size=device.max_message_size,
                flags=keys.user.level,
                engine_id=device.engine_id,
                boots=device.engine_boots,
                etime=device.engine_time(now),
                user_name=user_name,
                scoped=encode_scoped(device.engine_id, pdu),
                keys=keys,
            )
        community = min(device.communities) if device.communities else b"public"
        return build_v2c_message(community, pdu)

    def send_trap(
        self, device: Device, trap_oid: ber.Oid, varbinds: list[tuple[ber.Oid, bytes]]
    ) -> None:
        if not self.trap_receivers:
            return
        protocol = self._protocols.get(device.name)
        if protocol is None or protocol.transport is None:
            return
        message = self.encode_trap(device, trap_oid, varbinds)
        for receiver in self.trap_receivers:
            if receiver.site and receiver.site != device.site:
                continue
            protocol.transport.sendto(message, (receiver.host, receiver.port))
            self.stats.traps += 1

    # ---------------------------------------------------------------- views for the control API

    def describe(self, device: Device) -> dict[str, object]:
        credentials = _credentials(device)
        return {
            "name": device.name,
            "site": device.site,
            "rtc": device.rtc,
            "role": device.role,
            "address": device.address,
            "port": device.port,
            "interfaces": len(device.interfaces) or device.recorded_interfaces,
            **({"recording": device.recording} if device.recording else {}),
            "snmp": credentials[0] if credentials else {},
            "snmp_alternatives": credentials[1:],
            "sys_object_id": ber.oid_text(device.sys_object_id),
            "engine_id": device.engine_id.hex(),
            "faults": device.faults.describe(),
            "served": {"requests": device.served_requests, "varbinds": device.served_varbinds},
        }


def _same(protocol: _DeviceProtocol) -> _DeviceProtocol:
    return protocol


def _credentials(device: Device) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [
        {
            "version": "3",
            "user": user.name,
            "auth_protocol": user.auth_protocol,
            "auth_key": user.auth_key,
            "priv_protocol": user.priv_protocol,
            "priv_key": user.priv_key,
        }
        for user in device.users.values()
    ]
    out += [{"version": "2c", "community": c.decode()} for c in sorted(device.communities)]
    return out


def _number(
    fault: dict[str, Any], key: str, default: float | None, *, low: float, high: float
) -> float:
    value = fault.get(key, default)
    if value is None:
        raise FaultError(f"'{key}' is required for {fault.get('kind')}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FaultError(f"'{key}' must be a number from {low:g} to {high:g}; got {value!r}")
    return float(value)


def raise_open_files_limit(needed: int) -> None:
    """One socket per device: lift the soft descriptor limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
