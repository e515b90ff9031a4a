"""Trap authentication per device (issue 18): hostile datagrams on the trap port.

Spoofed v3 traps are crafted with the project's codec (net-snmp's snmptrap cannot send a
60 KB engine ID or a chosen msgID); captured ones come from net-snmp's snmptrap.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent
from simkit import V3_AUTH, V3_PRIV, V3_USER, FakeClock, free_udp_port

from agent.traps import Trap, TrapReceiver, TrapSource
from enoc.snmp import ber
from enoc.snmp.message import build_v3_message, encode_pdu, encode_scoped
from enoc.snmp.usm import LocalizedUser, UsmUser
from testbed.servers import Mosquitto

USER = UsmUser(V3_USER, "SHA-256", V3_AUTH, "AES-128", V3_PRIV)
ACC, FW = "127.41.0.2", "127.41.0.3"
ENGINE_ACC = bytes.fromhex("80001f888001020304")
ENGINE_FW = bytes.fromhex("80001f888005060708")
LINK_UP = (1, 3, 6, 1, 6, 3, 1, 1, 5, 4)
IF_INDEX_3 = (1, 3, 6, 1, 2, 1, 2, 2, 1, 1, 3)


def v3_trap(
    keys: LocalizedUser,
    *,
    boots: int = 1,
    etime: int = 100,
    msg_id: int = 1,
    user: bytes = V3_USER.encode(),
) -> bytes:
    """An authPriv linkUp trap of ifIndex 3, sent by the engine `keys` are localized to."""
    body = ber.encode_varbind(
        ber.encode_oid((1, 3, 6, 1, 2, 1, 1, 3, 0)), ber.encode_unsigned(ber.TIMETICKS, 5)
    )
    body += ber.encode_varbind(
        ber.encode_oid((1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)), ber.encode_oid(LINK_UP)
    )
    body += ber.encode_varbind(ber.encode_oid(IF_INDEX_3), ber.encode_integer(3))
    pdu = encode_pdu(ber.TRAP_V2, msg_id, 0, 0, body)
    return build_v3_message(
        msg_id=msg_id,
        max_size=65507,
        flags=3,
        engine_id=keys.engine_id,
        boots=boots,
        etime=etime,
        user_name=user,
        scoped=encode_scoped(keys.engine_id, pdu),
        keys=keys,
    )


def receiver(
    traps: list[Trap],
    clock: FakeClock | None = None,
    sources: dict[str, TrapSource] | None = None,
) -> TrapReceiver:
    """A receiver (no socket: datagrams are handed to it) with two devices by default."""
    known = sources or {
        ACC: TrapSource("acc", frozenset({b"community-a"}), (USER,)),
        FW: TrapSource("fw", frozenset({b"community-b"}), (USER,)),
    }
    return TrapReceiver(sources=known, on_trap=traps.append, clock=clock or FakeClock(1000.0))


# ---------------------------------------------------------------- memory


def test_spoofed_traps_with_random_large_engine_ids_leave_the_key_cache_and_memory_bounded() -> (
    None
):
    """The finding: 200 traps with a known user name and random 60 KB engine IDs held
    12 MB. Now 2,000 of them are each an authentication failure, the key cache stays
    empty, memory stays flat, and a genuine trap afterwards is received."""
    traps: list[Trap] = []
    rx = receiver(traps)
    rng = random.Random(18)
    # The attacker knows the user name (it travels in clear) but not the key.
    guessed = UsmUser(V3_USER, "SHA-256", "not-the-auth-key", "AES-128", "not-the-priv-key")

    def spoofed(count: int) -> Iterator[bytes]:
        for _ in range(count):
            engine_id = rng.randbytes(60_000)
            yield v3_trap(LocalizedUser.localize(guessed, engine_id), msg_id=rng.randrange(2**31))

    tracemalloc.start()
    try:
        for message in spoofed(200):
            rx.datagram_received(message, (ACC, 50000))
        after_200, _ = tracemalloc.get_traced_memory()
        for message in spoofed(1800):
            rx.datagram_received(message, (ACC, 50000))
        after_2000, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rx.stats.bad["wrong_digest"] == 2000
    assert rx.stats.auth_failures == 2000
    assert rx.stats.received == 0 and not traps
    assert len(rx._keys) == 0
    # 1,800 more 60 KB engine IDs (108 MB of them) held nothing: well under one of them.
    assert after_2000 - after_200 < 60_000, (after_200, after_2000)

    rx.datagram_received(v3_trap(LocalizedUser.localize(USER, ENGINE_ACC)), (ACC, 50000))
    assert rx.stats.received == 1
    assert traps[0].device == "acc" and traps[0].trap_oid == LINK_UP
    assert list(rx._keys) == [(USER, ENGINE_ACC)]


def test_the_key_cache_is_a_bounded_lru_and_counts_its_evictions() -> None:
    traps: list[Trap] = []
    sources = {f"127.41.1.{i}": TrapSource(f"dev{i}", users=(USER,)) for i in range(1, 7)}
    rx = TrapReceiver(sources=sources, on_trap=traps.append, key_cache_size=4)
    engines = {addr: bytes.fromhex(f"80001f8880aa0000{i:02x}") for i, addr in enumerate(sources)}
    for addr, engine in engines.items():
        rx.datagram_received(v3_trap(LocalizedUser.localize(USER, engine)), (addr, 162))
    assert rx.stats.received == 6
    assert len(rx._keys) == 4 and rx.stats.key_evictions == 2
    assert [engine for _user, engine in rx._keys] == list(engines.values())[2:]


# ---------------------------------------------------------------- replay and re-attribution


def test_timeliness_per_sender_engine_and_exact_replays() -> None:
    """RFC 3414 3.2 step 7b as a non-authoritative receiver: the engine's boots and time
    only move forward, 150 s of slack, and a copy of an accepted trap is refused."""
    traps: list[Trap] = []
    clock = FakeClock(1000.0)
    rx = receiver(traps, clock)
    keys = LocalizedUser.localize(USER, ENGINE_ACC)

    def send(message: bytes) -> None:
        rx.datagram_received(message, (ACC, 162))

    first = v3_trap(keys, boots=5, etime=1000, msg_id=1)
    send(first)
    send(first)  # the exact copy, at once
    assert (rx.stats.received, rx.stats.bad["replay"]) == (1, 1)
    send(v3_trap(keys, boots=5, etime=1000, msg_id=2))  # another trap in the same second
    send(v3_trap(keys, boots=5, etime=900, msg_id=3))  # sent late, still within 150 s
    assert rx.stats.received == 3
    send(v3_trap(keys, boots=5, etime=849, msg_id=4))  # 151 s behind the engine
    send(v3_trap(keys, boots=4, etime=5000, msg_id=5))  # from before the last reboot
    assert rx.stats.bad["not_in_time_window"] == 2

    clock.advance(200)  # the engine's time is now about 1200
    send(first)  # replayed after the window: refused by time, not remembered forever
    assert rx.stats.bad["not_in_time_window"] == 3
    send(v3_trap(keys, boots=5, etime=1190, msg_id=6))
    send(v3_trap(keys, boots=6, etime=3, msg_id=7))  # rebooted: boots up, time from 0
    send(v3_trap(keys, boots=5, etime=1195, msg_id=8))  # the old boots again: refused
    assert rx.stats.received == 5
    assert rx.stats.bad["not_in_time_window"] == 4
    assert rx.stats.bad["replay"] == 1
    # The accepted traps the window refuses anyway are forgotten: only this boot's one.
    assert list(rx._clocks[ENGINE_ACC].seen) == [(6, 3, 7)]


def test_an_engine_id_is_bound_to_its_device() -> None:
    """Learned from the first authenticated trap, or configured: a trap from another
    device's address with that engine ID is refused, and so is a trap of the device
    carrying another engine ID, even with the right keys (devices sharing a user)."""
    traps: list[Trap] = []
    configured = ENGINE_FW
    rx = receiver(
        traps,
        sources={
            ACC: TrapSource("acc", users=(USER,)),
            FW: TrapSource("fw", users=(USER,), engine_id=configured),
        },
    )
    acc_keys = LocalizedUser.localize(USER, ENGINE_ACC)
    rx.datagram_received(v3_trap(acc_keys, msg_id=1), (ACC, 162))
    rx.datagram_received(v3_trap(acc_keys, msg_id=2), (FW, 162))  # acc's engine from fw
    other = LocalizedUser.localize(USER, bytes.fromhex("80001f8880ffffffff"))
    rx.datagram_received(v3_trap(other, msg_id=3), (ACC, 162))  # acc with a new engine
    rx.datagram_received(v3_trap(other, msg_id=4), (FW, 162))  # fw's is configured
    rx.datagram_received(v3_trap(LocalizedUser.localize(USER, configured)), (FW, 162))
    assert [t.device for t in traps] == ["acc", "fw"]
    assert rx.stats.bad["foreign_engine_id"] == 1
    assert rx.stats.bad["engine_id_mismatch"] == 2

    # A reload keeps what was learned for a device whose address did not change.
    rx.update_sources(dict(rx._sources))
    rx.datagram_received(v3_trap(other, msg_id=5), (ACC, 162))
    assert rx.stats.bad["engine_id_mismatch"] == 3


def test_a_huge_oid_arc_in_a_trap_is_a_malformed_datagram() -> None:
    """The finding: one 65 KB arc took 0.8 s to decode. A sub-identifier is at most ten
    octets; a longer one is refused as malformed where the eleventh octet is read."""
    traps: list[Trap] = []
    rx = receiver(traps)
    arc = b"\xff" * 65_000 + b"\x01"
    oid = bytes((ber.OBJECT_IDENTIFIER, 0x83)) + len(b"\x2b" + arc).to_bytes(3, "big")
    varbind = ber.tlv(ber.SEQUENCE, oid + b"\x2b" + arc + ber.NULL_VALUE)
    pdu = ber.tlv(
        ber.TRAP_V2,
        ber.encode_integer(1)
        + ber.encode_integer(0)
        + ber.encode_integer(0)
        + ber.tlv(ber.SEQUENCE, varbind),
    )
    message = ber.tlv(ber.SEQUENCE, ber.encode_integer(1) + ber.encode_octets(b"community-a") + pdu)
    assert len(message) < 65_507  # one UDP datagram
    rx.datagram_received(message, (ACC, 162))
    assert rx.stats.bad["malformed"] == 1 and not traps


def test_a_trap_asking_more_than_its_user_has_is_an_unsupported_level() -> None:
    """Found by enoc bench fuzz: authPriv msgFlags for a noAuthNoPriv user reached the
    decryption with no keys (a bare assert, counted as a handler error). RFC 3414 3.2
    step 5: usmStatsUnsupportedSecLevels."""
    traps: list[Trap] = []
    rx = TrapReceiver(
        sources={ACC: TrapSource("acc", users=(UsmUser("fuzz-noauth"),))},
        on_trap=traps.append,
        clock=FakeClock(1000.0),
    )
    datagram = bytes.fromhex(
        "3052020103300e020101020300ffe3040103020103042b3029041080001f880466757a7a2d73656e"
        "646572020101020101040b66757a7a2d6e6f6175746804000400041078787878787878787878787878"
        "787878"
    )
    rx.datagram_received(datagram, (ACC, 162))
    assert rx.stats.bad == {"unsupported_sec_level": 1}, rx.stats.bad
    assert not traps


# ---------------------------------------------------------------- through the agent, with net-snmp

NET_SNMP_V3 = ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH]
NET_SNMP_V3 += ["-x", "AES", "-X", V3_PRIV]


def snmptrap(state: Path, source: str, target: int, auth: list[str], *varbinds: str) -> None:
    state.mkdir(exist_ok=True)
    env = {**os.environ, "MIBS": "", "SNMPCONFPATH": str(state), "SNMP_PERSISTENT_DIR": str(state)}
    subprocess.run(
        ["snmptrap", *auth, f"--clientaddr={source}", f"127.0.0.1:{target}", "", *varbinds],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=True,
    )


def capture_trap(state: Path, source: str, *varbinds: str) -> bytes:
    """The datagram snmptrap sends from `source`, as an eavesdropper records it; the
    engine ID and its boots and time fixed, as one device's consecutive traps."""
    engine = ["-e", f"0x{ENGINE_ACC.hex()}", "-Z", "7,500"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        snmptrap(state, source, sock.getsockname()[1], [*NET_SNMP_V3, *engine], *varbinds)
        data, (host, _port) = sock.recvfrom(65535)
    assert host == source
    return data


def send_from(source: str, port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(data, ("127.0.0.1", port))


def two_device_inventory(tmp_path: Path) -> Path:
    """Two devices sharing a v3 user (as a site usually does) with a v2c trap community
    each; no device answers polls (the test is about traps)."""
    path = tmp_path / "devices.yaml"
    v3 = {
        "version": "3",
        "user": V3_USER,
        "auth_protocol": "SHA-256",
        "auth_key": V3_AUTH,
        "priv_protocol": "AES-128",
        "priv_key": V3_PRIV,
    }
    inventory = {
        "credentials": {
            "v3": v3,
            "trap-a": {"version": "2c", "community": "community-a"},
            "trap-b": {"version": "2c", "community": "community-b"},
        },
        "devices": [
            {
                "name": "acc",
                "address": ACC,
                "port": 9,
                "credentials": "v3",
                "trap_credentials": ["v3", "trap-a"],
            },
            {
                "name": "fw",
                "address": FW,
                "port": 9,
                "credentials": "v3",
                "trap_credentials": ["v3", "trap-b"],
            },
        ],
    }
    path.write_text(yaml.safe_dump(inventory))
    return path


@pytest.mark.servers
async def test_a_captured_trap_is_accepted_once_from_its_device_and_nowhere_else(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The finding: a captured authPriv linkUp trap was accepted three times, once from a
    spoofed second address; a v2c trap community of one device worked for all; every
    unknown address became a device. Now: acc's linkDown and linkUp are events once;
    the linkDown replayed (which would be news again after the linkUp) is refused from
    acc's address, from fw's (which shares the v3 user) and from the address of no
    device, which is logged once and makes no device or event."""
    state = tmp_path / "net-snmp-acc"
    down, up = (
        capture_trap(state, ACC, oid, "1.3.6.1.2.1.2.2.1.1.3", "i", "3")
        for oid in ("1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4")
    )
    traps_port = free_udp_port()
    inventory = two_device_inventory(tmp_path)
    config = agent_config(tmp_path, mosquitto.url, inventory, interval="30s", traps_port=traps_port)
    async with Listener(mosquitto.url) as listener, running_agent(config) as agent:
        assert agent.traps is not None
        await listener.wait_for(lambda lst: bool(lst.statuses()), what="birth")
        send_from(ACC, traps_port, down)  # the device's own traps, arriving late
        send_from(ACC, traps_port, up)
        send_from(ACC, traps_port, down)  # replayed from the device's address
        send_from(FW, traps_port, down)  # from another device (the same v3 user)
        send_from("127.41.9.9", traps_port, down)  # from the address of no device
        send_from("127.41.9.9", traps_port, down)
        # fw's community from acc's address; then fw's own, the end marker
        for source in (ACC, FW):
            await asyncio.to_thread(
                snmptrap,
                tmp_path / "v2c",
                source,
                traps_port,
                ["-v2c", "-c", "community-b"],
                f"1.3.6.1.4.1.99999.0.{source[-1]}",
            )
        await listener.wait_for(lambda lst: len(lst.all_events()) >= 3, timeout=5)
        await asyncio.sleep(0.3)
        bad = agent.traps.stats.bad
        assert agent.traps.stats.received == 3
        assert bad["replay"] == 1
        assert bad["foreign_engine_id"] == 1
        assert bad["unknown_source"] == 2
        assert bad["unknown_community"] == 1
        assert set(agent.trackers) == {"acc", "fw"}
    got = [(e.device, e.resource, e.kind, e.state) for e in listener.all_events()]
    assert got == [
        ("acc", "if:3", "link", "down"),
        ("acc", "if:3", "link", "up"),
        ("fw", "trap:1.3.6.1.4.1.99999.0.3", "trap", "received"),
    ]
    logged = [r.getMessage() for r in caplog.records if "127.41.9.9" in r.getMessage()]
    assert len(logged) == 1 and "no device" in logged[0]


# ---------------------------------------------------------------- the inventory's keys


def test_trap_credentials_default_to_the_polling_ones_and_are_checked(tmp_path: Path) -> None:
    from agent.app import Agent
    from enoc.config import load_config_checked
    from enoc.inventory import Inventory, inventory_issues

    inventory = two_device_inventory(tmp_path)
    data = yaml.safe_load(inventory.read_text())
    del data["devices"][1]["trap_credentials"]  # fw: its polling credentials only
    data["devices"][0]["trap_engine_id"] = ENGINE_ACC.hex()
    inventory.write_text(yaml.safe_dump(data))
    config = agent_config(tmp_path, "mqtt://127.0.0.1:9", inventory, traps_port=free_udp_port())
    sources = Agent(config)._trap_sources
    assert sources[ACC] == TrapSource(
        "acc", frozenset({b"community-a", b"public"}), (USER,), ENGINE_ACC
    )
    # `public`: the site-wide traps.communities of the agent config (agentkit's)
    assert sources[FW] == TrapSource("fw", frozenset({b"public"}), (USER,), b"")

    data["devices"][1]["trap_credentials"] = ["trap-c"]
    inventory.write_text(yaml.safe_dump(data))
    loaded, _ = load_config_checked(inventory, Inventory)
    (issue,) = [i for i in inventory_issues(loaded, "devices.yaml") if not i.warning]
    assert "devices[1].trap_credentials[0]" in str(issue) and "'trap-c'" in str(issue)

    data["devices"][1]["trap_credentials"] = ["trap-b"]
    data["devices"][1]["trap_engine_id"] = data["devices"][0]["trap_engine_id"]
    inventory.write_text(yaml.safe_dump(data))
    loaded, _ = load_config_checked(inventory, Inventory)
    (issue,) = [i for i in inventory_issues(loaded, "devices.yaml") if not i.warning]
    assert "devices[1].trap_engine_id" in str(issue) and "'acc'" in str(issue)

    data["devices"][1]["trap_engine_id"] = "80001f"
    inventory.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="trap_engine_id has 3 octets"):
        load_config_checked(inventory, Inventory)
