"""Store-and-forward: a broker outage and a kill -9 of the agent lose nothing and double
nothing; a full spool drops the oldest metrics only, counted and logged once; the backlog
replays at its rate while new polls go out at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from agent.config import MqttConfig
from agent.publisher import STATUS_BLOCK
from enoc.wire import EventsMessage, Message, MetricsMessage, StatusMessage
from testbed.servers import Mosquitto


def reconnect_birth(listener: Listener, births: int) -> StatusMessage | None:
    """The agent's birth on a connection newer than any of the first `births` statuses.
    Not simply the next `online`: a restarted broker can deliver the old connection's
    retained heartbeat again; a connection's statuses are numbered in a block above every
    earlier connection's (agent/publisher.py), so the block tells them apart."""
    statuses = listener.statuses()
    seen = max((s.seq // STATUS_BLOCK for s in statuses[:births]), default=-1)
    return next(
        (m for m in statuses[births:] if m.state == "online" and m.seq // STATUS_BLOCK > seen),
        None,
    )


pytestmark = pytest.mark.servers
# The metrics the agent's publisher has out unacknowledged at most (agent/publisher.py: half
# of mqtt.max_inflight): what one broker stop can leave to be sent again.
MAX_INFLIGHT = max(1, MqttConfig().max_inflight // 2)


def seqs(messages: list[MetricsMessage] | list[EventsMessage]) -> list[int]:
    return [m.seq for m in messages]


def assert_complete(
    messages: list[MetricsMessage] | list[EventsMessage], what: str, in_flight: int = 0
) -> None:
    """Every seq from the first to the last arrived. None twice, except a redelivery of a
    message in flight when the broker went (QoS 1 is at least once: the agent resends what
    it saw no PUBACK for, and the broker what its subscriber had not acknowledged): then
    the same message, the same seq, content and send time (the collector keeps it once by
    its seq), and no more of them than can be in flight (`in_flight`)."""
    received = seqs(messages)
    assert received, f"no {what} arrived"
    first: dict[int, MetricsMessage | EventsMessage] = {}
    again = []
    for message in messages:
        kept = first.setdefault(message.seq, message)
        if kept is not message:
            assert kept == message, f"{what} seq {message.seq} arrived twice, different"
            again.append(message.seq)
    assert len(again) <= in_flight, f"{len(again)} {what} arrived twice: {again[:10]}"
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
    assert_complete(listener.metrics(), "metrics messages", in_flight=MAX_INFLIGHT)
    assert_complete(listener.events(), "events messages", in_flight=1)
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
    assert_complete(listener.metrics(), "metrics messages", in_flight=MAX_INFLIGHT)
    assert_complete(listener.events(), "events messages", in_flight=1)


def heartbeats(listener: Listener) -> list[StatusMessage]:
    return [m for m in listener.statuses() if m.state == "online" and m.health]


async def test_a_full_spool_drops_the_oldest_metrics_counted_logged_once_and_keeps_events(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    budget = 64 * 1024  # about a dozen metrics messages of this site (3-8 KB each)
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, extra={"spool": {"max_bytes": budget}}
        )
        async with running_agent(config) as agent:
            publisher = agent.publisher
            await listener.wait_for(
                lambda lst: len(lst.metrics()) >= len(site.devices) and bool(heartbeats(lst))
            )
            assert heartbeats(listener)[-1].health["spool_dropped"] == 0
            await asyncio.to_thread(mosquitto.stop)
            delivered_before = max(seqs(listener.metrics()))
            for if_index in (3, 4, 5):  # events while the spool overflows with metrics
                site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": if_index})
                await asyncio.sleep(1.5)
                site.sim.clear("nyc-acc-1")
                await asyncio.sleep(1.5)
            await listener.wait_for(
                lambda _l: publisher.metrics.dropped >= 2 * len(site.devices),
                timeout=30,
                what="metrics dropped by the budget",
            )
            assert publisher.spool_bytes <= budget, "events and metrics within one budget"
            assert publisher.events.dropped == 0
            births = len(listener.statuses())
            await asyncio.to_thread(mosquitto.restart)
            await listener.wait_for(
                lambda _l: publisher.spool_depth == 0, timeout=30, what="spool drained"
            )
            await listener.wait_for(
                lambda lst: (
                    heartbeats(lst)[-1].health["spool_dropped"] == publisher.metrics.dropped
                    and heartbeats(lst)[-1].health["spool_depth"] == 0
                ),
                what="a heartbeat after the drain",
            )
            dropped = publisher.metrics.dropped
    reconnected = reconnect_birth(listener, births)
    assert reconnected is not None
    health = heartbeats(listener)[-1].health
    assert health["spool_dropped"] == dropped > 0, "the heartbeat counts the drops"
    received = set(seqs(listener.metrics()))
    missing = sorted(set(range(1, max(received) + 1)) - received)
    assert missing, "the budget dropped metrics"
    assert missing == list(range(missing[0], missing[-1] + 1)), "one run, never a hole"
    assert delivered_before < missing[0], "what was delivered before the outage is not missing"
    # It went on dropping until the agent reconnected (its backoff): what survived of the
    # outage is its newest part, right up to the reconnect.
    survived = [m for m in listener.metrics() if m.seq > missing[-1] and m.sent < reconnected.sent]
    assert survived, "the oldest went, the newest survived"
    assert len(missing) <= dropped, "nothing missing that was not counted"
    assert_complete(listener.events(), "events messages", in_flight=1)
    link = [(e.resource, e.state) for e in listener.all_events() if e.device == "nyc-acc-1"]
    assert link == [(f"if:{i}", s) for i in (3, 4, 5) for s in ("down", "up")], "every event"
    over = [r for r in caplog.records if "over its budget" in r.getMessage()]
    assert len(over) == 1, f"logged once for the whole streak, not per drop: {len(over)}"
    back = [r for r in caplog.records if "back under its budget" in r.getMessage()]
    assert len(back) == 1 and f"{dropped} metrics messages" in back[0].getMessage()


class Stamped(list[tuple[str, Message]]):
    """The listener's messages, each arrival stamped (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def append(self, item: tuple[str, Message]) -> None:
        self.at.append(time.monotonic())
        super().append(item)


async def test_the_backlog_replays_at_its_rate_while_new_polls_go_out_at_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    rate = 5  # backlog messages per second; the site polls 8 messages a second
    arrivals = Stamped()
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url, messages=arrivals) as listener,
    ):
        config = agent_config(
            tmp_path,
            mosquitto.url,
            site.inventory,
            interval="0.5s",
            extra={"publishing": {"replay_rate": rate}},
        )
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= len(site.devices))
            await asyncio.to_thread(mosquitto.stop)
            delivered_before = max(seqs(listener.metrics()))
            await listener.wait_for(
                lambda _l: agent.publisher.metrics.depth >= 10 * rate,
                timeout=30,
                what="a backlog of ten seconds at the replay rate",
            )
            backlog_until = agent.publisher.metrics.next_seq - 1  # polled before the restart
            births = len(listener.statuses())
            await asyncio.to_thread(mosquitto.restart)
            await listener.wait_for(
                lambda lst: reconnect_birth(lst, births) is not None,
                what="the agent's birth after the outage",
            )
            reconnected = reconnect_birth(listener, births)
            assert reconnected is not None
            await listener.wait_for(
                lambda lst: backlog_until in seqs(lst.metrics()),
                timeout=60,
                what="the backlog replayed",
            )
    metrics = [
        (at, m)
        for at, (_t, m) in zip(arrivals.at, arrivals, strict=True)
        if isinstance(m, MetricsMessage)
    ]
    backlog = [at for at, m in metrics if delivered_before < m.seq <= backlog_until]
    assert len(backlog) == backlog_until - delivered_before >= 10 * rate, "all of it, once"
    # The token bucket promises at most `rate` a second plus a burst of one second's worth:
    # in any 2 s of arrivals at most 3 x rate, with a quarter more for delivery jitter.
    window, bound = 2.0, 3 * rate * 1.25
    busiest = max(sum(1 for t in backlog if start <= t < start + window) for start in backlog)
    assert busiest <= bound, f"{busiest} backlog messages within {window}s (rate {rate}/s)"
    live = [at for at, m in metrics if m.seq > backlog_until and m.sent > reconnected.sent + 1]
    assert live, "polls after the reconnect arrived"
    assert min(live) < max(backlog), "new polls went out before the backlog had drained"
    assert len([t for t in live if t < max(backlog)]) >= 2 * len(site.devices), (
        "new polls kept flowing during the replay"
    )
