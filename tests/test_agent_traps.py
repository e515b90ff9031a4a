"""Traps and informs become events at once: from the simulator, and from net-snmp's tools."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import V3_AUTH, V3_PRIV, V3_USER, free_udp_port

from testbed.servers import Mosquitto

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
    assert event.attrs == {
        "trap_oid": "1.3.6.1.4.1.99999.0.7",
        "1.3.6.1.4.1.99999.1.1": "disk on fire",  # no MIB knows it: by number
    }


def trap(port: int, auth: list[str], source: str, state: Path, *varbinds: str) -> None:
    """One trap with net-snmp's snmptrap, sent from `source` (a simulated device's address);
    net-snmp keeps its state (its v3 engine ID) in `state`."""
    state.mkdir(exist_ok=True)
    env = {**os.environ, "MIBS": "", "SNMPCONFPATH": str(state), "SNMP_PERSISTENT_DIR": str(state)}
    subprocess.run(
        ["snmptrap", *auth, f"--clientaddr={source}", f"127.0.0.1:{port}", "", *varbinds],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=True,
    )


BGP_PEER = "127.250.0.9"  # a peer no poll knows: only the traps speak of it


def bgp_trap(established: bool) -> list[str]:
    oid = "1.3.6.1.2.1.15.0.1" if established else "1.3.6.1.2.1.15.0.2"
    entry = "1.3.6.1.2.1.15.3.1"
    return [
        oid,
        f"{entry}.7.{BGP_PEER}",
        "a",
        BGP_PEER,
        f"{entry}.14.{BGP_PEER}",
        "x",
        "0000" if established else "0602",
        f"{entry}.2.{BGP_PEER}",
        "i",
        "6" if established else "1",
    ]


@pytest.mark.parametrize(
    "auth", [["-v2c", "-c", "public"], V3_AUTH_ARGS], ids=["v2c", "v3-authPriv"]
)
async def test_net_snmp_warm_start_and_bgp_traps_become_events(
    tmp_path: Path, mosquitto: Mosquitto, auth: list[str]
) -> None:
    """warmStart is the reboot event (once: the poll adds nothing); bgpBackwardTransition
    then bgpEstablished for a peer are its down and established events; a repeated
    bgpEstablished is no news. A last unknown trap marks the end."""
    traps_port = free_udp_port()
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval=SLOW, traps_port=traps_port
        )
        pe, ce = (site.sim.device(n) for n in ("nyc-pe-1", "bog-ce-1"))
        async with running_agent(config) as agent:
            sends = [
                (pe.address, ["1.3.6.1.6.3.1.1.5.2"]),  # warmStart
                (ce.address, bgp_trap(established=False)),
                (ce.address, bgp_trap(established=True)),
                (ce.address, bgp_trap(established=True)),  # again: nothing new
                (ce.address, ["1.3.6.1.4.1.99999.0.1"]),  # the end marker
            ]
            for source, varbinds in sends:
                # Each device is its own SNMP engine: net-snmp's state (its engine ID) per
                # source, since the agent refuses one engine ID from two devices.
                state = tmp_path / f"net-snmp-{source}"
                await asyncio.to_thread(trap, traps_port, auth, source, state, *varbinds)
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 4, timeout=5)
            await asyncio.sleep(0.3)
            assert agent.traps is not None
            assert agent.traps.stats.received == len(sends)
            assert not agent.traps.stats.bad
    got = [(e.device, e.resource, e.kind, e.state, e.source) for e in listener.all_events()]
    assert got == [
        ("nyc-pe-1", "device", "reboot", "rebooted", "trap"),
        ("bog-ce-1", f"bgp:{BGP_PEER}", "bgp", "down", "trap"),
        ("bog-ce-1", f"bgp:{BGP_PEER}", "bgp", "established", "trap"),
        ("bog-ce-1", "trap:1.3.6.1.4.1.99999.0.1", "trap", "received", "trap"),
    ]
    warm, down, up, _marker = listener.all_events()
    assert warm.message == "warm start (warmStart trap)"  # named by SNMPv2-MIB
    assert (warm.attrs["trap"], warm.attrs["mib"]) == ("warmStart", "SNMPv2-MIB")
    assert (down.severity, up.severity) == ("major", "info")
    assert down.attrs["peer"] == up.attrs["peer"] == BGP_PEER


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
            # from a device's address (nyc-acc-1), and a right trap from the address of none
            sends = [
                (wrong, "127.41.0.2"),
                (v3_wrong, "127.41.0.2"),
                (["-v2c", "-c", "public"], "127.0.0.1"),
            ]
            for args, source in sends:
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "snmptrap",
                        *args,
                        f"--clientaddr={source}",
                        f"127.0.0.1:{traps_port}",
                        "",
                        "1.3.6.1.6.3.1.1.5.1",
                    ],
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
            assert bad["unknown_source"] == 1
    (event,) = listener.all_events()
    assert event.message == "authentication failure (trap)"


# ---------------------------------------------------------------- the agent never answers

SYS_NAME_0 = "1.3.6.1.2.1.1.5.0"


def net_snmp(
    tool: str, auth: list[str], target: str, tmp_path: Path, *args: str, source: str = ""
) -> subprocess.CompletedProcess[str]:
    """snmpget/snmpset with one try of one second, net-snmp's state kept in tmp_path."""
    state = tmp_path / "net-snmp"
    state.mkdir(exist_ok=True)
    env = {**os.environ, "MIBS": "", "SNMPCONFPATH": str(state), "SNMP_PERSISTENT_DIR": str(state)}
    client = [f"--clientaddr={source}"] if source else []
    return subprocess.run(
        [tool, *auth, *client, "-t", "1", "-r", "0", target, *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )


PROBES = [
    ("snmpget", ["-v2c", "-c", "public"], [SYS_NAME_0]),
    ("snmpset", ["-v2c", "-c", "public"], [SYS_NAME_0, "s", "set-through-the-agent"]),
    ("snmpget", V3_AUTH_ARGS, [SYS_NAME_0]),
    ("snmpset", V3_AUTH_ARGS, [SYS_NAME_0, "s", "set-through-the-agent"]),
]


async def test_the_agent_answers_no_get_or_set_on_its_trap_port_or_its_polling_socket(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """docs/agent.md "Security": the agent only asks. Real GET and SET requests (v2c and
    v3 authPriv with credentials the agent knows) sent to the port it receives traps on
    and to the socket it polls from get no answer: net-snmp times out. Traps on the same
    port still become events afterwards."""
    traps_port = free_udp_port()
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval=SLOW, traps_port=traps_port
        )
        async with running_agent(config) as agent:
            assert agent.traps is not None
            transport = agent.client._transport  # the one socket every poll leaves from
            assert transport is not None
            poll_host, poll_port = transport.get_extra_info("sockname")
            assert poll_host == "127.0.0.1"

            # The probes work: a simulated device answers every one of them (its SET
            # with notWritable), so a timeout below means the agent kept silent.
            device = site.devices[0]
            for tool, auth, args in PROBES:
                answered = await asyncio.to_thread(
                    net_snmp, tool, auth, f"{device.address}:{device.port}", tmp_path, *args
                )
                assert "Timeout" not in answered.stderr, (tool, auth, answered.stderr)
                if tool == "snmpget":
                    assert answered.returncode == 0, (tool, auth, answered.stderr)
                else:
                    assert "notWritable" in answered.stderr, (tool, auth, answered.stderr)

            # sent from a device's address: the trap port refuses any other before reading
            targets = {"trap port": traps_port, "polling socket": poll_port}
            results = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        net_snmp,
                        tool,
                        auth,
                        f"127.0.0.1:{port}",
                        tmp_path,
                        *args,
                        source=device.address,
                    )
                    for port in targets.values()
                    for tool, auth, args in PROBES
                )
            )
            labels = [
                f"{tool} {auth[0]} to the {name}"
                for name in targets
                for tool, auth, _args in PROBES
            ]
            for label, result in zip(labels, results, strict=True):
                assert result.returncode != 0, f"{label} was answered: {result.stdout}"
                assert "Timeout" in result.stderr, f"{label}: {result.stderr}"
                assert result.stdout == "", f"{label}: {result.stdout}"

            # The requests did arrive and were read: the v3 ones authenticated and
            # decrypted (so a wrong key is not why nothing came back), then refused.
            assert agent.traps.stats.bad["unsupported_pdu"] == len(PROBES)
            assert agent.traps.stats.bad["wrong_digest"] == 0
            assert agent.traps.stats.bad["decryption_error"] == 0
            assert agent.client.stats.bad["stray"] == len(PROBES)
            assert agent.traps.stats.received == 0

            # and the trap port still works: a v2c trap and a v3 inform become events
            trap = await asyncio.to_thread(
                subprocess.run,
                [
                    "snmptrap",
                    "-v2c",
                    "-c",
                    "public",
                    "--clientaddr=127.41.0.2",
                    f"127.0.0.1:{traps_port}",
                    "",
                    "1.3.6.1.6.3.1.1.5.1",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            assert trap.returncode == 0, trap.stderr
            informed = await asyncio.to_thread(
                inform, traps_port, V3_AUTH_ARGS, "1.3.6.1.4.1.99999.0.7"
            )
            assert informed.returncode == 0, informed.stderr
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 2, timeout=5)
            assert agent.traps.stats.received == 2 and agent.traps.stats.informs == 1
    kinds = sorted(e.kind for e in listener.all_events())
    assert kinds == ["reboot", "trap"], kinds


async def test_an_agent_whose_trap_port_is_taken_fails_and_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    """The port in use (another program, or an agent already running) ends the start with
    EADDRINUSE, and what the agent opened before it (its SNMP socket, its spool) is closed:
    a caller may try again in the same process (enoc demo does)."""
    import errno

    from agent.app import Agent
    from enoc.lifecycle import StartError

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    inventory = tmp_path / "devices.yaml"
    inventory.write_text("devices: []\ncredentials: {}\n")
    path = agent_config(
        tmp_path, "mqtt://127.0.0.1:9", inventory, traps_port=taken.getsockname()[1]
    )
    try:
        agent = Agent(path)
        open_before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(StartError, match=r"traps failed to start: .*in use") as refused:
            await agent.run(asyncio.Event())
        assert isinstance(refused.value.cause, OSError)
        assert refused.value.cause.errno == errno.EADDRINUSE
        assert agent.client._transport is None
        await asyncio.sleep(0.1)  # a transport lets its socket go on the loop's next turn
        assert len(os.listdir("/proc/self/fd")) <= open_before
        again = Agent(path)  # the same spool, at once
        stop = asyncio.Event()
        taken.close()
        run = asyncio.create_task(again.run(stop))
        await asyncio.wait_for(again.ready.wait(), 10)
        stop.set()
        await asyncio.wait_for(run, 30)
    finally:
        taken.close()
