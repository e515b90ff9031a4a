"""Store-and-forward: a broker outage and a kill -9 of the agent lose nothing and double nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from enoc.localservers import Mosquitto
from enoc.wire import EventsMessage, MetricsMessage

pytestmark = pytest.mark.servers


def seqs(messages: list[MetricsMessage] | list[EventsMessage]) -> list[int]:
    return [m.seq for m in messages]


def assert_complete(received: list[int], what: str) -> None:
    """Every seq from the first to the last arrived, and none twice."""
    assert received, f"no {what} arrived"
    duplicates = len(received) - len(set(received))
    assert duplicates == 0, f"{duplicates} {what} arrived twice"
    missing = set(range(min(received), max(received) + 1)) - set(received)
    assert not missing, f"{what} lost: {sorted(missing)[:10]}"


async def broker_down(mosquitto: Mosquitto, seconds: float) -> None:
    await asyncio.to_thread(mosquitto.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(mosquitto.restart)


async def test_broker_outage_spools_and_replays_every_message_once_in_order(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            await asyncio.to_thread(mosquitto.stop)
            outage_started = time.time()
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 4})
            await asyncio.sleep(2.0)
            site.sim.clear("nyc-acc-1")
            await asyncio.sleep(2.0)
            outage_ended = time.time()
            spooled = agent.publisher.spool_depth
            assert spooled >= 3 * len(site.devices), "polling went on into the spool"
            await asyncio.to_thread(mosquitto.restart)
            await listener.wait_for(
                lambda _l: agent.publisher.spool_depth == 0, timeout=30, what="spool drained"
            )
            await listener.wait_for(
                lambda lst: any(m.sent > outage_ended + 1 for m in lst.metrics()),
                what="live metrics after the outage",
            )
    assert_complete(seqs(listener.metrics()), "metrics messages")
    assert_complete(seqs(listener.events()), "events messages")
    during = [
        s
        for m in listener.metrics()
        for s in m.samples
        if outage_started < s.ts < outage_ended and s.device == "nyc-acc-1"
    ]
    assert len(during) >= 3, "samples polled during the outage arrived with their poll times"
    link = [(e.resource, e.state) for e in listener.all_events() if e.device == "nyc-acc-1"]
    assert link == [("if:4", "down"), ("if:4", "up")], "events replayed once, in order"
    backlog = [m.seq for m in listener.metrics() if outage_started < m.sent < outage_ended]
    assert backlog == sorted(backlog), "the backlog replays oldest first"


async def test_kill_9_during_an_outage_loses_nothing_that_was_spooled(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        command = [sys.executable, "-m", "enoc.cli", "agent", "--config", str(config)]
        log = (tmp_path / "agent.log").open("w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            await asyncio.to_thread(mosquitto.stop)
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 5})
            await asyncio.sleep(3.0)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            site.sim.clear("nyc-acc-1")
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(mosquitto.restart)
            await listener.wait_for(
                lambda lst: [e.state for e in lst.all_events()] == ["down", "up"],
                timeout=30,
                what="the link events of both agent lives",
            )
            await asyncio.sleep(3.0)  # the backlog drains at 200 messages/s
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            await listener.wait_for(
                lambda lst: lst.statuses()[-1].state == "offline", what="offline status"
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert_complete(seqs(listener.metrics()), "metrics messages")
    assert_complete(seqs(listener.events()), "events messages")
