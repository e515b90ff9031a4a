"""A port chosen free is only free when chosen: the rigs start a server or an enoc process on
it and, when another program bound it first, start again on another (testbed/servers.py
`Server.start`, testbed/drills_procs.py `start_on_free_port`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import agent_config
from configkit import _site_inventory

from testbed import drills_procs
from testbed.drills_procs import Proc, start_on_free_port
from testbed.servers import PORT_ATTEMPTS, Mosquitto, PortTakenError, free_port, mqtt_connack

pytestmark = pytest.mark.servers


@pytest.fixture
def taken_tcp() -> Iterator[int]:
    """A loopback TCP port another program bound (not listening: a probe of it is refused
    at once instead of waiting for an answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def taken_udp() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class Handed(Mosquitto):
    """Mosquitto whose chosen ports are handed out from a list (then chosen free)."""

    def __init__(self, workdir: Path, ports: list[int]) -> None:
        super().__init__(workdir)
        self.handed = list(ports)
        self.tried: list[int] = []

    def pick_port(self) -> int:
        self.tried.append(self.handed.pop(0) if self.handed else free_port())
        return self.tried[-1]


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path: Path, taken_tcp: int) -> None:
    with Handed(tmp_path / "mosquitto", [taken_tcp]) as server:
        assert server.tried[0] == taken_tcp
        assert len(server.tried) == 2 and server.port == server.tried[1] != taken_tcp
        assert mqtt_connack(server.host, server.port)
        assert "address already in use" in server.log_tail(100).lower()


def test_a_server_refused_every_port_says_so(tmp_path: Path, taken_tcp: int) -> None:
    server = Handed(tmp_path / "mosquitto", [taken_tcp] * PORT_ATTEMPTS)
    with pytest.raises(PortTakenError, match=f"every port tried was taken.*{taken_tcp}"):
        server.start()
    assert server.tried == [taken_tcp] * PORT_ATTEMPTS
    assert not server.running


def test_a_server_given_a_taken_port_keeps_it_and_fails(tmp_path: Path, taken_tcp: int) -> None:
    """A port set by the caller (a restart: clients know it) is not moved."""
    server = Handed(tmp_path / "mosquitto", [])
    server.port = taken_tcp
    with pytest.raises(PortTakenError, match="its port was taken"):
        server.start()
    assert server.tried == []


@pytest.mark.timeout(60)
async def test_a_drill_agent_whose_trap_port_was_taken_starts_on_another(
    tmp_path: Path, taken_udp: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `enoc agent` process refused its trap port ("could not bind") is started again
    on another, and the port it listens on is returned."""
    chosen = [taken_udp]
    monkeypatch.setattr(
        drills_procs,
        "free_port",
        lambda kind="tcp": chosen.pop(0) if chosen else free_port(kind),
    )
    inventory, _ = _site_inventory(tmp_path / "site")
    closed = f"mqtt://127.0.0.1:{free_port()}"  # the agent starts without its broker
    written: list[int] = []

    def listen_on(port: int) -> None:
        written.append(port)
        agent_config(tmp_path, closed, inventory, traps_port=port)

    agent = Proc("agent nyc", tmp_path / "agent.yaml", "agent")
    try:
        port = await start_on_free_port(agent, listen_on, "receiving traps on", kind="udp")
        assert written[0] == taken_udp and written[1:] == [port] and port != taken_udp
        assert agent.alive and agent.lives == 2
        log = agent.log.read_text()
        assert "could not bind" in log and f"receiving traps on 127.0.0.1:{port}" in log
    finally:
        await agent.terminate()
