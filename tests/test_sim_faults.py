"""Every fault kind through the real control API, observed by net-snmp and a trap sink.

Traps are decoded here with pysnmp/pyasn1, an implementation independent of
the simulator's own BER; test_sim_traps.py checks them with net-snmp's snmptrapd.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pyasn1.codec.ber import decoder
from pysnmp.proto import api
from simkit import FakeClock, free_udp_port, small_fleet, v2c_request
from test_sim_netsnmp import counter, parse, snmp, v2c, v3

from enoc.snmp import ber
from enoc.snmp.mib import COLD_START, LINK_DOWN, LINK_UP
from simulators.control import make_app
from simulators.model import Device
from simulators.server import Simulator, TrapReceiver

pytestmark = pytest.mark.servers
V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
OPER = "1.3.6.1.2.1.2.2.1.8"
IN_ERRORS = "1.3.6.1.2.1.2.2.1.14"
HC_IN = "1.3.6.1.2.1.31.1.1.1.6"
IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"
DISCONTINUITY = "1.3.6.1.2.1.31.1.1.1.19"
UPTIME = "1.3.6.1.2.1.1.3.0"


@dataclass
class TrapSink(asyncio.DatagramProtocol):
    """Collects traps as (source address, trap OID, {varbind OID: value})."""

    traps: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message, _ = decoder.decode(data, asn1Spec=V2C.Message())
        pdu = V2C.apiMessage.get_pdu(message)
        varbinds = {str(o): v.prettyPrint() for o, v in V2C.apiPDU.get_varbinds(pdu)}
        self.traps.append((addr[0], varbinds["1.3.6.1.6.3.1.1.4.1.0"], varbinds))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.traps) < count:
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Rig:
    sim: Simulator
    client: TestClient[Any, Any]
    sink: TrapSink
    clock: FakeClock

    def device(self, role: str) -> Device:
        return next(d for d in self.sim.devices.values() if d.role == role)

    async def fault(self, name: str, body: object, status: int = 200) -> Any:
        response = await self.client.post(f"/devices/{name}/faults", json=body)
        payload = await response.json()
        assert response.status == status, payload
        return payload


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    loop = asyncio.get_running_loop()
    sink = TrapSink()
    transport, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=("127.0.0.1", 0))
    trap_port = transport.get_extra_info("sockname")[1]
    clock = FakeClock(time.time())
    devices = small_fleet(
        port=free_udp_port("127.32.0.1"), address_base="127.32.0.1", now=clock.now
    )
    sim = Simulator(
        devices,
        trap_receivers=[TrapReceiver("127.0.0.1", trap_port)],
        clock=clock,
        rng=random.Random(3),
    )
    async with sim:
        client = TestClient(TestServer(make_app(sim), host="127.0.0.1"))
        await client.start_server()
        try:
            yield Rig(sim, client, sink, clock)
        finally:
            await client.close()
    transport.close()


async def test_list_devices_follows_the_contract(rig: Rig) -> None:
    response = await rig.client.get("/devices")
    devices = await response.json()
    assert len(devices) == len(rig.sim.devices)
    first = devices[0]
    assert {"name", "site", "rtc", "address", "port", "interfaces", "snmp"} <= first.keys()
    assert first["snmp"]["version"] == "3" and first["snmp"]["priv_protocol"] == "AES-128"
    assert first["address"].startswith("127.")


async def test_link_down_sets_oper_status_stops_counters_and_traps(rig: Rig) -> None:
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    if_index = device.interfaces[0].index
    body = await rig.fault(device.name, {"kind": "link_down", "ifIndex": if_index})
    assert body["faults"] == [{"kind": "link_down", "ifIndex": if_index}]
    await rig.sink.wait_for(1)
    source, trap_oid, varbinds = rig.sink.traps[0]
    assert (source, trap_oid) == (device.address, ".".join(map(str, LINK_DOWN)))
    assert varbinds[f"{OPER}.{if_index}"] == "2"
    values = parse(await snmp("snmpget", *v2c(addr), f"{OPER}.{if_index}", f"{HC_IN}.{if_index}"))
    assert values[f"{OPER}.{if_index}"] == "INTEGER: 2"
    rig.clock.advance(60)
    later = parse(await snmp("snmpget", *v2c(addr), f"{HC_IN}.{if_index}"))
    assert later[f"{HC_IN}.{if_index}"] == values[f"{HC_IN}.{if_index}"]  # counters stopped

    response = await rig.client.delete(f"/devices/{device.name}/faults")
    assert (await response.json())["faults"] == []
    await rig.sink.wait_for(2)
    assert rig.sink.traps[1][1] == ".".join(map(str, LINK_UP))
    after = parse(await snmp("snmpget", *v2c(addr), f"{OPER}.{if_index}"))
    assert after[f"{OPER}.{if_index}"] == "INTEGER: 1"


async def test_unreachable_device_answers_nothing_until_cleared(rig: Rig) -> None:
    device = rig.device("firewall")
    addr = f"{device.address}:{device.port}"
    await rig.fault(device.name, {"kind": "unreachable"})
    out = await snmp("snmpget", "-t", "0.3", "-r", "0", *v2c(addr), UPTIME, check=False)
    assert "Timeout" in out
    assert rig.sim.stats.dropped["unreachable"] >= 1
    await rig.client.delete(f"/devices/{device.name}/faults")
    assert UPTIME in parse(await snmp("snmpget", *v2c(addr), UPTIME))


async def test_reboot_resets_uptime_and_counters_and_sends_cold_start(rig: Rig) -> None:
    device = rig.device("pe-router")
    addr = f"{device.address}:{device.port}"
    before = parse(
        await snmp("snmpget", *v2c(addr), UPTIME, f"{HC_IN}.{device.interfaces[0].index}")
    )
    boots = device.engine_boots
    await rig.fault(device.name, {"kind": "reboot"})
    await rig.sink.wait_for(1)
    assert rig.sink.traps[0][:2] == (device.address, ".".join(map(str, COLD_START)))
    rig.clock.advance(30)
    after = parse(
        await snmp("snmpget", *v2c(addr), UPTIME, f"{HC_IN}.{device.interfaces[0].index}")
    )
    ticks = int(after[UPTIME].split("(")[1].split(")")[0])
    assert 2900 <= ticks <= 3100  # 30 s of simulated uptime
    hc = f"{HC_IN}.{device.interfaces[0].index}"
    assert int(after[hc].split()[-1]) < int(before[hc].split()[-1])
    assert device.engine_boots == boots + 1


async def test_reboot_with_downtime_is_silent_then_answers(rig: Rig) -> None:
    device = rig.device("ce-router")
    await rig.fault(device.name, {"kind": "reboot", "downtime": 120})
    reply_before = rig.sim.engine.stats.responses
    out = await snmp(
        "snmpget",
        "-t",
        "0.3",
        "-r",
        "0",
        *v2c(f"{device.address}:{device.port}"),
        UPTIME,
        check=False,
    )
    assert "Timeout" in out and rig.sim.engine.stats.responses == reply_before
    rig.clock.advance(121)
    assert UPTIME in parse(await snmp("snmpget", *v2c(f"{device.address}:{device.port}"), UPTIME))


async def test_cpu_high_pins_processor_load(rig: Rig) -> None:
    device = rig.device("pe-router")
    await rig.fault(device.name, {"kind": "cpu_high"})
    loads = parse(
        await snmp(
            "snmpbulkwalk", *v2c(f"{device.address}:{device.port}"), "1.3.6.1.2.1.25.3.3.1.2"
        )
    )
    assert loads and all(int(v.split()[-1]) >= 95 for v in loads.values())


async def test_packet_loss_drops_the_given_share_of_requests(rig: Rig) -> None:
    device = rig.device("access-switch")
    await rig.fault(device.name, {"kind": "packet_loss", "ratio": 0.5})
    loop = asyncio.get_running_loop()
    answers: list[bytes] = []

    class Catcher(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.append(data)

    transport, _ = await loop.create_datagram_endpoint(Catcher, local_addr=("127.0.0.1", 0))
    request = v2c_request(ber.GET, [(1, 3, 6, 1, 2, 1, 1, 3, 0)])
    for _ in range(200):
        transport.sendto(request, (device.address, device.port))
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        while len(answers) + rig.sim.stats.dropped["packet_loss"] < 200:
            await asyncio.sleep(0.01)
    transport.close()
    assert 60 <= rig.sim.stats.dropped["packet_loss"] <= 140
    assert len(answers) == 200 - rig.sim.stats.dropped["packet_loss"]


async def test_latency_delays_every_answer(rig: Rig) -> None:
    device = rig.device("firewall")
    addr = f"{device.address}:{device.port}"
    await rig.fault(device.name, {"kind": "latency", "ms": 1500})
    out = await snmp("snmpget", "-t", "0.2", "-r", "0", *v2c(addr), UPTIME, check=False)
    assert "Timeout" in out
    assert UPTIME in parse(await snmp("snmpget", "-t", "5", "-r", "0", *v2c(addr), UPTIME))


async def test_flap_toggles_the_link_with_a_trap_each_time(rig: Rig) -> None:
    device = rig.device("access-switch")
    if_index = device.interfaces[1].index
    await rig.fault(device.name, {"kind": "flap", "ifIndex": if_index, "period": 0.2})
    await rig.sink.wait_for(4)
    kinds = [t[1] for t in rig.sink.traps[:4]]
    down, up = ".".join(map(str, LINK_DOWN)), ".".join(map(str, LINK_UP))
    assert kinds == [down, up, down, up]
    await rig.client.delete(f"/devices/{device.name}/faults")
    assert device.interface(if_index).oper_up
    count = len(rig.sink.traps)
    await asyncio.sleep(0.5)
    assert len(rig.sink.traps) == count  # flapping stopped


async def test_bgp_down_and_back(rig: Rig) -> None:
    device = rig.device("pe-router")
    peer = device.bgp_peers[0].remote
    await rig.fault(device.name, {"kind": "bgp_down", "peer": peer})
    state = f"1.3.6.1.2.1.15.3.1.2.{peer}"
    values = parse(await snmp("snmpget", *v2c(f"{device.address}:{device.port}"), state))
    assert values[state] == "INTEGER: 1"
    await rig.sink.wait_for(1)
    assert rig.sink.traps[0][1] == "1.3.6.1.2.1.15.0.2"
    await rig.client.delete(f"/devices/{device.name}/faults")
    await rig.sink.wait_for(2)
    assert rig.sink.traps[1][1] == "1.3.6.1.2.1.15.0.1"


def ticks(value: str) -> int:
    """The number of a net-snmp `Timeticks: (123) 0:00:01.23` value."""
    return int(value.partition("(")[2].partition(")")[0])


async def test_counter_reset_restarts_one_interfaces_counters_and_marks_the_discontinuity(
    rig: Rig,
) -> None:
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    reset, other = device.interfaces[0].index, device.interfaces[1].index
    columns = (HC_IN, IN_OCTETS, IN_ERRORS, DISCONTINUITY)
    oids = [UPTIME, *(f"{c}.{i}" for c in columns for i in (reset, other))]
    rig.clock.advance(100)
    before = parse(await snmp("snmpget", *v2c(addr), *oids))
    assert ticks(before[f"{DISCONTINUITY}.{reset}"]) == 0  # since boot
    assert counter(before[f"{HC_IN}.{reset}"]) > 0
    answer = await rig.fault(device.name, {"kind": "counter_reset", "ifIndex": reset})
    assert answer["faults"] == []  # one-shot, like a reboot: nothing to clear
    now = parse(await snmp("snmpget", *v2c(addr), *oids))
    for column in (HC_IN, IN_OCTETS, IN_ERRORS):
        assert counter(now[f"{column}.{reset}"]) == 0, column
    assert ticks(now[f"{DISCONTINUITY}.{reset}"]) == ticks(now[UPTIME]) > 0
    assert ticks(now[UPTIME]) == ticks(before[UPTIME]), "no reboot: sysUpTime goes on"
    # the other interface is untouched
    assert now[f"{HC_IN}.{other}"] == before[f"{HC_IN}.{other}"]
    assert ticks(now[f"{DISCONTINUITY}.{other}"]) == 0
    rig.clock.advance(10)
    later = parse(await snmp("snmpget", *v2c(addr), *oids))
    grown = counter(later[f"{HC_IN}.{reset}"])
    speed = device.interface(reset).speed_mbps * 1e6 / 8
    assert 0 < grown <= 10 * speed, "ten seconds of traffic since the reset"
    assert later[f"{DISCONTINUITY}.{reset}"] == now[f"{DISCONTINUITY}.{reset}"]

    # a device that forgets to move ifCounterDiscontinuityTime
    await rig.fault(
        device.name, {"kind": "counter_reset", "ifIndex": other, "discontinuity": False}
    )
    forgot = parse(await snmp("snmpget", *v2c(addr), *oids))
    assert counter(forgot[f"{HC_IN}.{other}"]) == 0
    assert ticks(forgot[f"{DISCONTINUITY}.{other}"]) == 0
    assert rig.sink.traps == [], "resetting counters sends no trap"


async def test_counter_wrap_puts_32_bit_octet_counters_just_below_2_to_the_32(rig: Rig) -> None:
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    # a 1 Gbit/s port: 30 s of its traffic is less than 2^32 octets, so it wraps once
    i = next(x.index for x in device.interfaces if x.admin_up and x.speed_mbps == 1000)
    oids = [UPTIME, f"{IN_OCTETS}.{i}", f"{HC_IN}.{i}", f"{DISCONTINUITY}.{i}"]
    rig.clock.advance(50)
    await rig.fault(device.name, {"kind": "counter_wrap", "ifIndex": i, "seconds": 30})
    near = parse(await snmp("snmpget", *v2c(addr), *oids))
    low, high = counter(near[f"{IN_OCTETS}.{i}"]), counter(near[f"{HC_IN}.{i}"])
    speed = device.interface(i).speed_mbps * 1e6 / 8
    assert 2**32 - 30 * speed <= low < 2**32, "30 s of traffic below the wrap"
    assert high % 2**32 == low, "the HC counter keeps the same low 32 bits"
    assert ticks(near[f"{DISCONTINUITY}.{i}"]) == ticks(near[UPTIME]), "a jump is a discontinuity"
    rig.clock.advance(31)
    wrapped = parse(await snmp("snmpget", *v2c(addr), *oids))
    low2, high2 = counter(wrapped[f"{IN_OCTETS}.{i}"]), counter(wrapped[f"{HC_IN}.{i}"])
    assert low2 < low, "the 32-bit counter wrapped"
    assert (low2 - low) % 2**32 == high2 - high, "across the wrap it counted the true traffic"
    assert 0 < high2 - high <= 31 * speed
    assert wrapped[f"{DISCONTINUITY}.{i}"] == near[f"{DISCONTINUITY}.{i}"]


@pytest.mark.parametrize("version", ["2c", "3"])
@pytest.mark.parametrize("mode", ["truncated", "request_id"])
async def test_garbage_that_no_client_can_match_makes_net_snmp_time_out_until_cleared(
    rig: Rig, mode: str, version: str
) -> None:
    """An answer cut short (undecodable BER) or carrying another request's id: net-snmp
    throws it away and times out, though the device answered every request."""
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    auth = v2c(addr) if version == "2c" else v3(addr)
    oids = (UPTIME, f"{HC_IN}.{device.interfaces[0].index}")
    before = parse(await snmp("snmpget", *auth, *oids))
    body = {"kind": "garbage"} if mode == "truncated" else {"kind": "garbage", "mode": mode}
    answer = await rig.fault(device.name, body)
    assert answer["faults"] == [{"kind": "garbage", "mode": mode}]  # truncated: the default
    listed = await (await rig.client.get(f"/devices/{device.name}")).json()
    assert listed["faults"] == [{"kind": "garbage", "mode": mode}]
    responses = rig.sim.stats.responses
    out = await snmp("snmpget", "-t", "0.3", "-r", "1", *auth, *oids, check=False)
    assert "Timeout" in out and not parse(out), out
    out = await snmp("snmpbulkwalk", "-t", "0.3", "-r", "0", *auth, HC_IN, check=False)
    assert "Timeout" in out and not parse(out), out
    assert rig.sim.stats.responses > responses, "the device answered: garbage, not silence"
    stats = await (await rig.client.get("/stats")).json()
    assert stats["garbled"][mode] >= 3 and not stats["dropped"]
    response = await rig.client.delete(f"/devices/{device.name}/faults")
    assert (await response.json())["faults"] == []
    assert parse(await snmp("snmpget", *auth, *oids)) == before


async def test_garbage_wrong_type_sends_every_number_as_a_string(rig: Rig) -> None:
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    if_index = device.interfaces[0].index
    oids = (UPTIME, f"{HC_IN}.{if_index}", f"{OPER}.{if_index}", "1.3.6.1.2.1.1.5.0")
    before = parse(await snmp("snmpget", *v3(addr), *oids))
    await rig.fault(device.name, {"kind": "garbage", "mode": "wrong_type"})
    garbled = parse(await snmp("snmpget", *v3(addr), *oids))
    ticks = before[UPTIME].split("(")[1].split(")")[0]
    assert garbled[UPTIME] == f'STRING: "{ticks}"'
    assert before[f"{HC_IN}.{if_index}"].startswith("Counter64: ")
    assert (
        garbled[f"{HC_IN}.{if_index}"] == f'STRING: "{before[f"{HC_IN}.{if_index}"].split()[-1]}"'
    )
    assert garbled[f"{OPER}.{if_index}"] == 'STRING: "1"'
    assert garbled["1.3.6.1.2.1.1.5.0"] == before["1.3.6.1.2.1.1.5.0"]  # strings stay strings
    walked = parse(await snmp("snmpbulkwalk", *v2c(addr), HC_IN))
    assert len(walked) == len(device.interfaces)
    assert all(v.startswith('STRING: "') for v in walked.values()), walked
    await rig.client.delete(f"/devices/{device.name}/faults")
    assert parse(await snmp("snmpget", *v3(addr), *oids)) == before


async def test_garbage_absurd_counters_jump_anywhere_and_the_rest_stays_true(rig: Rig) -> None:
    device = rig.device("access-switch")
    addr = f"{device.address}:{device.port}"
    if_index = device.interfaces[0].index
    hc, errors = f"{HC_IN}.{if_index}", f"{IN_ERRORS}.{if_index}"
    oids = (UPTIME, f"{OPER}.{if_index}", hc, errors)
    before = parse(await snmp("snmpget", *v2c(addr), *oids))
    await rig.fault(device.name, {"kind": "garbage", "mode": "absurd"})
    reads = [parse(await snmp("snmpget", *v3(addr), *oids)) for _ in range(3)]
    for read in reads:  # the clock stands still: a true counter would read the same
        assert read[UPTIME] == before[UPTIME] and read[f"{OPER}.{if_index}"] == "INTEGER: 1"
        assert read[hc].startswith("Counter64: ") and read[errors].startswith("Counter32: ")
        assert int(read[hc].split()[-1]) < 2**63 and int(read[errors].split()[-1]) < 2**32
    assert len({r[hc] for r in reads} | {before[hc]}) == 4
    assert len({r[errors] for r in reads} | {before[errors]}) == 4
    await rig.client.delete(f"/devices/{device.name}/faults")
    assert parse(await snmp("snmpget", *v2c(addr), *oids)) == before


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"kind": "meltdown"}, 400, "'kind' must be one of"),
        ({"kind": "link_down", "ifIndex": 999999}, 400, "no interface with ifIndex 999999"),
        ({"kind": "link_down", "ifIndex": "3"}, 400, "'ifIndex' must be an integer"),
        ({"kind": "packet_loss"}, 400, "'ratio' is required"),
        ({"kind": "packet_loss", "ratio": 1.5}, 400, "'ratio' must be a number from 0 to 1"),
        ({"kind": "latency", "ms": True}, 400, "'ms' must be a number"),
        ({"kind": "cpu_high", "extra": 1}, 400, "unknown field(s) extra"),
        ({"kind": "garbage", "mode": "noise"}, 400, "'mode' must be one of truncated, "),
        ({"kind": "garbage", "ratio": 0.5}, 400, "unknown field(s) ratio"),
        ({"kind": "counter_reset", "discontinuity": "no"}, 400, "'discontinuity' must be true"),
        ({"kind": "counter_wrap", "seconds": 0}, 400, "'seconds' must be a number from 0.1"),
        (["link_down"], 400, "body must be a JSON object"),
    ],
)
async def test_bad_fault_requests_get_clear_errors(
    rig: Rig, body: object, status: int, message: str
) -> None:
    device = rig.device("access-switch")
    payload = await rig.fault(device.name, body, status=status)
    assert message in payload["error"]
    assert device.faults.describe() == []


async def test_unknown_device_and_invalid_json(rig: Rig) -> None:
    response = await rig.client.post("/devices/nope/faults", json={"kind": "cpu_high"})
    assert (
        response.status == 404
        and "no simulated device named 'nope'" in (await response.json())["error"]
    )
    name = rig.device("firewall").name
    response = await rig.client.post(f"/devices/{name}/faults", data=b"{not json")
    assert response.status == 400
    response = await rig.client.delete("/devices/nope/faults")
    assert response.status == 404
