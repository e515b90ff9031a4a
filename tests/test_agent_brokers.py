"""An agent that knows several brokers (`mqtt.urls`): its own order of them, a move to the
next one when its broker goes, the session resumed on whichever answers, and the spool's
guarantees kept across the move: every message arrives at least once over the brokers, a
message the old node had not acknowledged is sent again to the new one (the same seq),
events stay in order once duplicates are dropped by seq."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from agentkit import Listener, Site, agent_config, running_agent, simulated_site

from agent.app import Agent
from agent.config import AgentConfig
from collector.config import IncidentsConfig
from collector.incidents import Engine
from collector.store import Store
from enoc.brokers import Brokers
from enoc.config import ConfigError, load_config
from enoc.wire import EventsMessage, MetricsMessage, StatusMessage
from testbed.servers import Mosquitto

BASE = "agent_id: nyc-1\nsite: nyc\nspool: {path: ./spool}\n"
URLS = ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.2:1883", "mqtt://127.0.0.3:1883"]


# ---------------------------------------------------------------- the order


def test_each_agent_has_its_own_order_the_same_after_a_restart() -> None:
    firsts = {Brokers(URLS, identity=f"enoc-agent-nyc-a{i}").url for i in range(60)}
    assert firsts == set(URLS), "a fleet spreads over every node"
    one = Brokers(URLS, identity="enoc-agent-nyc-a1")
    assert sorted(one.order) == sorted(URLS)
    assert Brokers(URLS, identity="enoc-agent-nyc-a1").order == one.order, "stable per agent"


def test_a_failure_moves_to_the_next_url_and_a_switch_is_counted_once() -> None:
    brokers = Brokers(URLS, identity="x")
    first, second, third = brokers.order
    assert brokers.connected() == "" and brokers.current == first
    brokers.failed()  # the broker dropped the connection
    assert brokers.current == "" and brokers.url == second
    brokers.failed()  # the next refused it
    assert brokers.url == third
    assert brokers.connected() == first, "a switch from the last broker that answered"
    brokers.failed()
    assert brokers.url == first, "round and round"
    assert brokers.connected() == third and brokers.switches == 2
    brokers.failed()
    brokers.failed()
    brokers.failed()  # all three refused; the same one answers again: no switch
    assert brokers.connected() == "" and brokers.switches == 2


def test_one_url_stays_where_it_is() -> None:
    brokers = Brokers(URLS[:1], identity="x")
    brokers.connected()
    brokers.failed()
    assert brokers.url == URLS[0] and brokers.connected() == "" and brokers.switches == 0


# ---------------------------------------------------------------- the config


def load(tmp_path: Path, mqtt: str) -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + mqtt)
    return load_config(path, AgentConfig)


def refused(tmp_path: Path, mqtt: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, mqtt)
    return str(caught.value).splitlines()


def test_url_alone_urls_alone_and_the_default(tmp_path: Path) -> None:
    assert load(tmp_path, "").mqtt.brokers == ["mqtt://127.0.0.1:1883"]
    one = load(tmp_path, "mqtt: {url: 'mqtts://127.0.0.9:8883'}\n").mqtt
    assert one.brokers == ["mqtts://127.0.0.9:8883"] and one.url == "mqtts://127.0.0.9:8883"
    several = load(tmp_path, f"mqtt:\n  urls: [{URLS[0]}, {URLS[1]}]\n").mqtt
    assert several.brokers == URLS[:2]


def test_url_and_urls_together_are_refused_naming_the_key(tmp_path: Path) -> None:
    lines = refused(tmp_path, f"mqtt:\n  url: {URLS[0]}\n  urls: [{URLS[0]}, {URLS[1]}]\n")
    path = tmp_path / "agent.yaml"
    assert lines == [
        f"{path}:6: mqtt.urls: mqtt.urls and mqtt.url are both given: keep one "
        "(urls lists every broker)"
    ]


def test_a_bad_url_in_the_list_is_named_by_its_index_and_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    lines = refused(tmp_path, f"mqtt:\n  urls:\n    - {URLS[0]}\n    - http://127.0.0.2:1883\n")
    assert lines == [
        f'{path}:7: mqtt.urls[1]: mqtt.urls[1] must start with mqtt:// or mqtts://, got "http://127.0.0.2:1883"'
    ]
    lines = refused(tmp_path, f"mqtt:\n  urls:\n    - {URLS[0]}\n    - {URLS[0]}\n")
    assert lines == [f"{path}:7: mqtt.urls[1]: mqtt.urls[1] repeats mqtt.urls[0]: {URLS[0]}"]
    assert refused(tmp_path, "mqtt: {urls: []}\n") == [
        f"{path}:4: mqtt.urls: mqtt.urls must list at least one broker URL"
    ]


# ---------------------------------------------------------------- with real brokers


@pytest.fixture(autouse=True)
def publisher_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Mosquitto]]:
    """Two Mosquittos on loopback, each on its own ephemeral port, stopped after."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Mosquitto(tmp_path / name)) for name in ("mqtt-a", "mqtt-b")]


M = TypeVar("M", MetricsMessage, EventsMessage)


def by_seq(messages: list[M]) -> list[M]:
    """The first arrival of each seq, in arrival order: what the collector keeps."""
    seen: set[int] = set()
    kept = []
    for message in messages:
        if message.seq not in seen:
            seen.add(message.seq)
            kept.append(message)
    return kept


def assert_none_lost(seqs: list[int], what: str) -> None:
    assert seqs, f"no {what} arrived"
    missing = set(range(min(seqs), max(seqs) + 1)) - set(seqs)
    assert not missing, f"{what} lost: {sorted(missing)[:10]}"


def heartbeat_on(listener: Listener) -> StatusMessage | None:
    beats = [s for s in listener.statuses() if s.state == "online" and s.health]
    return beats[-1] if beats else None


def several_brokers(config: Path, urls: list[str]) -> Path:
    """agentkit's agent config with `mqtt.urls` in place of `mqtt.url`."""
    data = yaml.safe_load(config.read_text())
    del data["mqtt"]["url"]
    data["mqtt"]["urls"] = urls
    config.write_text(yaml.safe_dump(data))
    return config


async def on(agent: Agent, servers: list[Mosquitto]) -> tuple[Mosquitto, Mosquitto]:
    """The broker the agent is connected to, and the other one."""
    await asyncio.wait_for(agent.publisher.connected.wait(), 10)
    current = agent.publisher.brokers.current
    first = next(s for s in servers if s.url == current)
    return first, next(s for s in servers if s is not first)


def switch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "moved from broker" in r.getMessage()]


@contextlib.asynccontextmanager
async def listening(urls: list[str]) -> AsyncIterator[dict[str, Listener]]:
    """A subscriber to enoc/v1/# on each broker (a collector's view of each node)."""
    async with Listener(urls[0]) as first, Listener(urls[1]) as second:
        yield {urls[0]: first, urls[1]: second}


async def link_flap_during_the_move(site: Site, old: Listener, new: Listener, index: int) -> None:
    """A link goes down as the agent moves; its data reaches the new broker; the link comes
    back up; both events arrive (over the two brokers, once each after dropping by seq)."""
    site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": index})
    await new.wait_for(
        lambda lst: bool(lst.events()) and len(lst.metrics()) >= len(site.devices),
        timeout=40,
        what="the agent's data at the other broker",
    )
    site.sim.clear("nyc-acc-1")
    await new.wait_for(
        lambda lst: link_states(old, lst) == ["down", "up"], timeout=30, what="the link's events"
    )


def link_states(old: Listener, new: Listener) -> list[str]:
    return [e.state for m in by_seq(old.events() + new.events()) for e in m.events]


@dataclass
class Node:
    server: Mosquitto
    listener: Listener

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.restart()


@contextlib.asynccontextmanager
async def agent_on_two(
    tmp_path: Path, brokers: list[Mosquitto]
) -> AsyncIterator[tuple[Site, Agent, Node, Node]]:
    """An agent with `urls: [a, b]` publishing a small site's polls: the node it connected
    to (with data there) and the other."""
    urls = [b.url for b in brokers]
    async with simulated_site(tmp_path) as site, listening(urls) as listeners:
        config = several_brokers(agent_config(tmp_path, urls[0], site.inventory), urls)
        async with running_agent(config) as agent:
            servers = await on(agent, brokers)
            first, second = (Node(s, listeners[s.url]) for s in servers)
            await first.listener.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            yield site, agent, first, second


def assert_at_least_once(old: Listener, new: Listener) -> None:
    """Over both brokers, once duplicates are dropped by seq: no metrics or events message
    lost, events in order."""
    metrics = by_seq(old.metrics() + new.metrics())
    assert_none_lost([m.seq for m in metrics], "metrics messages")
    events = by_seq(old.events() + new.events())
    assert_none_lost([m.seq for m in events], "events messages")
    assert [m.seq for m in events] == sorted(m.seq for m in events), "events in order"


@pytest.mark.servers
async def test_the_agent_moves_to_the_other_broker_when_its_own_stops_and_loses_nothing(
    tmp_path: Path, brokers: list[Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    """Its broker stops under load: the agent moves to the other, says so in its heartbeat
    and in one log line, and every message arrives over the two. Back on the first broker
    later, it resumes the session that broker kept."""
    async with agent_on_two(tmp_path, brokers) as (site, agent, first, second):
        old, new = first.listener, second.listener
        assert not new.metrics(), "one broker at a time"
        await asyncio.to_thread(first.stop)  # under load: polls go on every second
        await link_flap_during_the_move(site, old, new, 4)
        await new.wait_for(
            lambda lst: (
                (beat := heartbeat_on(lst)) is not None and beat.health["broker_switches"] == 1
            ),
            what="a heartbeat that counts the switch",
        )
        beat = heartbeat_on(new)
        assert beat is not None and beat.health["mqtt_broker"] == second.url
        assert agent.publisher.brokers.current == second.url
        await new.wait_for(lambda _l: agent.publisher.spool_depth == 0, what="spool drained")
        lines = switch_lines(caplog)
        assert len(lines) == 1, lines
        assert f"moved from broker {first.url} to {second.url} (MQTT 5, new session)" in lines[0]
        assert_at_least_once(old, new)
        await asyncio.to_thread(first.restart)
        await asyncio.to_thread(second.stop)
        await old.wait_for(
            lambda _l: agent.publisher.brokers.current == first.url, what="the move back"
        )
    assert agent.publisher.brokers.switches == 2
    back = switch_lines(caplog)[1:]
    assert len(back) == 1 and "(MQTT 5, session resumed)" in back[0], back


class OneWayProxy:
    """A TCP relay to a broker that can stop passing the broker's replies (a one-way
    partition): the broker still gets and delivers every publish, the client sees no
    PUBACK. The case where QoS 1 delivers a message twice."""

    def __init__(self, upstream: Mosquitto) -> None:
        self.upstream = upstream
        self.muted = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OneWayProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream.host, self.upstream.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if not (replies and self.muted):
                        dst.write(data)
                        await dst.drain()
            dst.close()

        pumps = [
            asyncio.create_task(pump(reader, up_writer, replies=False)),
            asyncio.create_task(pump(up_reader, writer, replies=True)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)


@pytest.mark.servers
async def test_publishes_the_old_node_took_without_a_puback_go_again_to_the_new_one(
    tmp_path: Path, brokers: list[Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's node takes its publishes and delivers them but its PUBACKs are lost:
    the agent gives up on it, moves and sends them again from the spool. At least once:
    the same seq with the same content at both nodes, nothing lost, events in order once
    the duplicates are dropped by seq, and the collector's engine records each event once."""
    async with (
        OneWayProxy(brokers[0]) as proxy_a,
        OneWayProxy(brokers[1]) as proxy_b,
        simulated_site(tmp_path) as site,
        listening([b.url for b in brokers]) as listeners,
    ):
        proxies = {p.url: (p, listeners[p.upstream.url]) for p in (proxy_a, proxy_b)}
        config = several_brokers(
            # The heartbeat waits for its PUBACK in the publishing loop: a 1 s one would
            # hold the loop at once, with little in flight when the replies stop.
            agent_config(
                tmp_path, proxy_a.url, site.inventory, extra={"publishing": {"heartbeat": "30s"}}
            ),
            list(proxies),
        )
        async with running_agent(config) as agent:
            await asyncio.wait_for(agent.publisher.connected.wait(), 10)
            first = agent.publisher.brokers.current
            proxy, old = proxies[first]
            second = next(url for url in proxies if url != first)
            new = proxies[second][1]
            await old.wait_for(lambda lst: len(lst.metrics()) >= 2 * len(site.devices))
            proxy.muted = True
            await link_flap_during_the_move(site, old, new, 3)
            await new.wait_for(lambda _l: agent.publisher.spool_depth == 0, what="spool drained")
            assert agent.publisher.brokers.current == second
    old_seqs = {m.seq: m for m in old.metrics()}
    twice = [m for m in new.metrics() if m.seq in old_seqs]
    assert twice, "a message unacknowledged at the old node was sent again to the new one"
    assert all(old_seqs[m.seq] == m for m in twice), "the same seq is the same message"
    assert_at_least_once(old, new)
    assert agent.publisher.brokers.switches == 1
    lines = switch_lines(caplog)
    old_events = {m.seq: m for m in old.events()}
    twice_events = [m for m in new.events() if m.seq in old_events]
    assert all(old_events[m.seq] == m for m in twice_events)
    resent = len(twice) + len(twice_events)  # every one reached the old node
    assert len(lines) == 1 and f"{resent} messages unacknowledged" in lines[0], lines
    assert twice_events, "the link-down went out while the old node's PUBACKs were lost"
    # The collector's engine, given both nodes' events as they came: each event once.
    store = Store(f"sqlite:///{tmp_path / 'incidents.db'}")
    await store.open()
    try:
        engine = Engine(store, IncidentsConfig())
        changes = [c for m in old.events() + new.events() for c in await engine.on_events(m)]
    finally:
        await store.close()
    assert engine.duplicates == sum(len(m.events) for m in twice_events)
    assert [c.change for c in changes] == ["opened", "resolved"], "one incident, once"


@pytest.mark.servers
async def test_all_brokers_down_spools_and_one_coming_back_gets_the_backlog_in_order(
    tmp_path: Path, brokers: list[Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    """Both brokers go: the agent spools and goes round the list, logging the streak once;
    the other one comes back and gets the backlog, oldest first, events in order."""
    async with agent_on_two(tmp_path, brokers) as (site, agent, first, second):
        old, new = first.listener, second.listener
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
        site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 5})
        await asyncio.sleep(2.0)
        site.sim.clear("nyc-acc-1")
        await asyncio.sleep(2.0)
        spooled = agent.publisher.spool_depth
        assert spooled >= 3 * len(site.devices), "polling went on into the spool"
        last_spooled = agent.publisher.metrics.next_seq - 1
        assert agent.publisher.brokers.current == ""
        await asyncio.to_thread(second.restart)
        await new.wait_for(
            lambda _l: agent.publisher.spool_depth == 0, timeout=40, what="spool drained"
        )
        await new.wait_for(lambda lst: len(lst.events()) >= 2, what="the link's events")
        assert agent.publisher.brokers.current == second.url
    assert_at_least_once(old, new)
    backlog = [m.seq for m in new.metrics() if m.seq <= last_spooled]
    assert len(backlog) >= spooled - len(site.devices), "the backlog went to the other broker"
    assert backlog == sorted(backlog), "the backlog replays oldest first"
    events = by_seq(old.events() + new.events())
    link = [(e.resource, e.state) for m in events for e in m.events if e.device == "nyc-acc-1"]
    assert link == [("if:5", "down"), ("if:5", "up")]
    assert agent.publisher.brokers.switches == 1
    assert len(switch_lines(caplog)) == 1
    failing = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing) == 1, (
        f"one line for the streak of failed attempts, not per retry: {failing}"
    )
