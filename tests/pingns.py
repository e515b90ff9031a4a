"""Ping scenarios run inside a network namespace of their own (tests/test_agent_ping.py
starts this file under `unshare -n` and reads the JSON it prints): traffic shaping and
the firewall-like drop of one loopback address touch that namespace only.

`measure`: 127.0.0.20 answers ping 50 ms late and loses 30 % of the requests, by
tc netem where the kernel has it, else by an ICMP responder in this process (a raw
socket bound to the address, the kernel's own echo replies turned off: this machine's
kernel has no sch_netem). `down`: an agent (60 s polls, 10 s ping rounds) sees
127.0.0.9's answers dropped by a policy-routing rule; it prints when the rule went in
and the events the agent emitted after.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from agentkit import agent_config
from simkit import free_udp_port, small_fleet

from agent.app import Agent
from agent.config import PingConfig
from agent.ping import Pinger, PingResult
from enoc.config import Duration
from enoc.wire import EventsMessage
from simulators.inventory_out import write_inventory
from simulators.server import Simulator

DELAY_S, LOSS = 0.050, 0.30
SHAPED = "127.0.0.20"
DROPPED = "127.0.0.9"


def sh(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def loopback_up() -> None:
    if not sh("ip", "link", "set", "lo", "up"):
        raise SystemExit("cannot bring lo up")


def ignore_echo() -> None:
    """The kernel's own echo replies off: the responder answers instead."""
    Path("/proc/sys/net/ipv4/icmp_echo_ignore_all").write_text("1\n")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Responder:
    """Answers echo requests to `address` after `delay` s, dropping `loss` of them."""

    def __init__(self, address: str, delay: float, loss: float, seed: int = 20) -> None:
        self.address, self.delay, self.loss = address, delay, loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.bind((address, 0))
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock, self._read)

    def _read(self) -> None:
        data, (source, _port) = self.sock.recvfrom(65535)
        icmp = data[(data[0] & 0x0F) * 4 :]
        if len(icmp) < 8 or icmp[0] != 8:  # echo requests only
            return
        if self.rng.random() < self.loss:
            return
        body = b"\0\0\0\0" + icmp[4:]
        reply = b"\0\0" + struct.pack("!H", checksum(body)) + icmp[4:]
        self.loop.call_later(self.delay, self.sock.sendto, reply, (source, 0))

    def close(self) -> None:
        self.loop.remove_reader(self.sock)
        self.sock.close()


async def measure() -> dict[str, Any]:
    loopback_up()
    shaped_by = "netem"
    responder = None
    if not sh("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "50ms", "loss", "30%"):
        shaped_by = "responder"
        ignore_echo()
        responder = Responder(SHAPED, DELAY_S, LOSS)
    results: list[PingResult] = []
    pinger = Pinger(
        PingConfig(
            interval=Duration(60), count=60, timeout=Duration(0.2), packet_interval=Duration(0.02)
        ),
        lambda: [("shaped", SHAPED)],
        results.extend,
    )
    await pinger.open()
    results = await pinger.round()
    if responder is not None:
        responder.close()
    (r,) = results
    # netem delays both ways on lo: the round trip is twice its delay
    expected_ms = 1000 * DELAY_S * (2 if shaped_by == "netem" else 1)
    return {
        "shaped_by": shaped_by,
        "expected_ms": expected_ms,
        "privileged": pinger.privileged,
        "fields": r.fields(),
    }


async def down(tmp: Path) -> dict[str, Any]:
    loopback_up()
    # the rule that drops the address's answers must come before the local table's
    if not (
        sh("ip", "rule", "add", "pref", "10", "table", "local")
        and sh("ip", "rule", "del", "pref", "0", "table", "local")
    ):
        raise SystemExit("cannot move the local table's rule")
    port = free_udp_port(DROPPED)
    devices = small_fleet(port=port, address_base=DROPPED)
    sim = Simulator(devices)
    await sim.start()
    inventory = tmp / "devices.yaml"
    write_inventory(inventory, sim, devices)
    config = agent_config(
        tmp,
        "mqtt://127.0.0.1:1",  # no broker: the events are taken as they are submitted
        inventory,
        interval="60s",
        extra={"ping": {"enabled": True}, "polling": {"timeout": "2s", "unreachable_after": 3}},
    )
    agent = Agent(config)
    emitted: list[tuple[float, EventsMessage]] = []
    submit = agent.publisher.submit_events

    def record(message: EventsMessage) -> None:
        emitted.append((time.time(), message))
        submit(message)

    agent.publisher.submit_events = record  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 10)
    victim = next(d.name for d in devices if d.address == DROPPED)
    await agent._poll(victim, time.time())  # its SNMP answered, not a minute away
    signals = agent.edge.signals[victim]
    deadline = time.monotonic() + 20
    while not (signals.answered and signals.snmp_at > 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    answered = signals.answered and signals.snmp_at > 0
    if not sh("ip", "rule", "add", "from", DROPPED, "blackhole", "pref", "0"):
        raise SystemExit("cannot add the blackhole rule")
    dropped = time.time()

    def down_of_victim() -> list[tuple[float, dict[str, Any]]]:
        return [
            (at, e.__dict__)
            for at, m in emitted
            for e in m.events
            if e.device == victim and e.kind == "reachability" and e.state == "down"
        ]

    deadline = time.monotonic() + 45
    while not down_of_victim() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 20)
    await sim.close()
    return {
        "answered_before": answered,
        "dropped": dropped,
        "victim": victim,
        "devices": len(devices),
        "events": [(at, e.__dict__) for at, m in emitted for e in m.events],
        "ping_rounds": agent.pinger.stats.rounds if agent.pinger else 0,
    }


def main() -> None:
    scenario, tmp = sys.argv[1], Path(sys.argv[2])
    result = asyncio.run(measure() if scenario == "measure" else down(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
