"""Traps and informs become events at once: from the simulator, and from net-snmp's tools."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import V3_AUTH, V3_PRIV, V3_USER, free_udp_port

from enoc.localservers import Mosquitto

pytestmark = pytest.mark.servers

# A 30 s poll interval: anything seen within the test came from a trap, not a poll.
SLOW = "30s"


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_simulator_traps_become_events_without_waiting_for_a_poll(
    tmp_path: Path, mosquitto: Mosquitto, version: str
) -> None:
    traps_port = free_udp_port()
    async with (
        simulated_site(tmp_path, traps_port=traps_port, trap_version=version) as site,
        Listener(mosquitto.url) as listener,
    ):
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval=SLOW, traps_port=traps_port
        )
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: bool(lst.statuses()), what="birth")
            site.sim.inject("nyc-acc-1", {"kind": "link_down", "ifIndex": 3})
            peer = site.sim.device("bog-ce-1").bgp_peers[0].remote
            site.sim.inject("bog-ce-1", {"kind": "bgp_down", "peer": peer})
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 2, timeout=3)
            site.sim.clear("nyc-acc-1")
            site.sim.inject("nyc-pe-1", {"kind": "reboot"})
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 4, timeout=3)
            await asyncio.sleep(0.5)
            assert agent.traps is not None
            assert agent.traps.stats.received == 4
            assert not agent.traps.stats.bad
        got = sorted((e.device, e.resource, e.kind, e.state) for e in listener.all_events())
        assert got == sorted(
            [
                ("nyc-acc-1", "if:3", "link", "down"),
                ("nyc-acc-1", "if:3", "link", "up"),
                ("bog-ce-1", f"bgp:{peer}", "bgp", "down"),
                ("nyc-pe-1", "device", "reboot", "rebooted"),
            ]
        )
        assert all(e.source == "trap" for e in listener.all_events())


def inform(port: int, auth: list[str], *varbinds: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "snmpinform",
            *auth,
            "-r",
            "1",
            "-t",
            "2",
            "--clientaddr=127.41.0.3",
            f"127.0.0.1:{port}",
            "",
            *varbinds,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


V3_AUTH_ARGS = ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH]
V3_AUTH_ARGS += ["-x", "AES", "-X", V3_PRIV]


@pytest.mark.parametrize(
    "auth", [["-v2c", "-c", "public"], V3_AUTH_ARGS], ids=["v2c", "v3-authPriv"]
)
async def test_net_snmp_informs_are_acknowledged_and_unknown_traps_keep_their_varbinds(
    tmp_path: Path, mosquitto: Mosquitto, auth: list[str]
) -> None:
    traps_port = free_udp_port()
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval=SLOW, traps_port=traps_port
        )
        async with running_agent(config) as agent:
            # snmpinform exits 0 only when our Response acknowledged the inform.
            result = await asyncio.to_thread(
                inform,
                traps_port,
                auth,
                "1.3.6.1.4.1.99999.0.7",
                "1.3.6.1.4.1.99999.1.1",
                "s",
                "disk on fire",
            )
            assert result.returncode == 0, result.stderr
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 1, timeout=3)
            assert agent.traps is not None and agent.traps.stats.informs == 1
    (event,) = listener.all_events()
    assert event.device == "nyc-fw-1"  # 127.41.0.3, the simulated firewall, by its address
    assert event.kind == "trap" and event.resource == "trap:1.3.6.1.4.1.99999.0.7"
    assert event.attrs == {"1.3.6.1.4.1.99999.1.1": "disk on fire"}


async def test_bad_traps_are_counted_and_the_receiver_keeps_going(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    traps_port = free_udp_port()
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval=SLOW, traps_port=traps_port
        )
        async with running_agent(config) as agent:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.41.0.2", 0))
                for junk in (b"\x30\x03\x02\x01", b"\x30\x05\x02\x01\x07\x04\x00", b"\xff" * 40):
                    sock.sendto(junk, ("127.0.0.1", traps_port))
            wrong = ["-v2c", "-c", "not-the-community"]
            v3_wrong = [*V3_AUTH_ARGS[:-1], "wrong-priv-key"]
            for args in (wrong, v3_wrong):
                await asyncio.to_thread(
                    subprocess.run,
                    ["snmptrap", *args, f"127.0.0.1:{traps_port}", "", "1.3.6.1.6.3.1.1.5.1"],
                    capture_output=True,
                    timeout=10,
                )
            good = await asyncio.to_thread(
                inform, traps_port, ["-v2c", "-c", "public"], "1.3.6.1.6.3.1.1.5.5"
            )
            assert good.returncode == 0, good.stderr
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 1, timeout=3)
            assert agent.traps is not None
            bad = agent.traps.stats.bad
            assert bad["malformed"] == 2
            assert bad["unsupported_version"] == 1
            assert bad["unknown_community"] == 1
            assert bad["wrong_digest"] + bad["decryption_error"] == 1
    (event,) = listener.all_events()
    assert event.message == "authentication failure (trap)"
