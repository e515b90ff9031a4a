"""SNMPv1 polling: the client's GET and GETNEXT walk against the simulator answering v1, with
net-snmp's snmpget/snmpwalk -v1 and pysnmp's v1 codec as independent judges of both sides."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto import api
from simkit import FakeClock, free_udp_port, small_fleet
from test_sim_netsnmp import parse, snmp

from agent.app import snmp_auth
from agent.poller import collect
from agent.profiles import ProfileSet
from enoc.config import ConfigError, load_config
from enoc.inventory import Credential, Inventory
from enoc.snmp import ber
from enoc.snmp.client import V1, SnmpClient, Target, V2c
from enoc.snmp.message import NO_SUCH_NAME, build_v1_message, encode_null_varbinds, encode_pdu
from enoc.snmp.mib import IF_ENTRY, IFX_ENTRY
from simulators.engine import Engine
from simulators.model import Device
from simulators.server import Simulator
from testbed.netsnmp import SnmpD

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)
MISSING = (1, 3, 6, 1, 2, 1, 1, 99, 0)
IF_TABLE = IF_ENTRY
IFX_TABLE = IFX_ENTRY
IF_DESCR = (*IF_TABLE, 2)
IF_IN_OCTETS = (*IF_TABLE, 10)
IF_NAME = (*IFX_TABLE, 1)
IF_HC_IN_OCTETS = (*IFX_TABLE, 6)
V1_PUBLIC = V1(b"public")


class Lab:
    def __init__(self, sim: Simulator, client: SnmpClient, device: Device) -> None:
        self.sim, self.client, self.device = sim, client, device

    def target(self, auth: V1 | V2c = V1_PUBLIC) -> Target:
        return Target(self.device.address, self.device.port, auth)

    @property
    def addr(self) -> str:
        return f"{self.device.address}:{self.device.port}"


@pytest.fixture
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    """A frozen clock (both versions read the same counters) and the access switch."""
    size = getattr(request, "param", 1472)
    clock = FakeClock(time.time())
    port = free_udp_port("127.33.0.1")
    devices = small_fleet(
        port=port, address_base="127.33.0.1", max_message_size=size, now=clock.now
    )
    device = next(d for d in devices if d.role == "access-switch")
    async with Simulator(devices, clock=clock, rng=random.Random(1)) as sim:
        client = SnmpClient(timeout=1.0, retries=1)
        await client.open("127.0.0.1")
        try:
            yield Lab(sim, client, device)
        finally:
            client.close()


def is_counter64(line_value: str) -> bool:
    return line_value.startswith("Counter64")


# ---------------------------------------------------------------- net-snmp judges the simulator


@pytest.mark.servers
async def test_netsnmp_v1_walk_is_the_v2c_walk_without_counter64(lab: Lab) -> None:
    for table in (IF_TABLE, IFX_TABLE):
        text = ber.oid_text(table)
        v1 = parse(await snmp("snmpwalk", "-v1", "-c", "public", lab.addr, text))
        v2 = parse(await snmp("snmpbulkwalk", "-v2c", "-c", "public", lab.addr, text))
        assert v1 == {oid: value for oid, value in v2.items() if not is_counter64(value)}
        assert v1
    assert any(is_counter64(v) for v in v2.values())  # ifXTable has them: v1 skipped them


@pytest.mark.servers
async def test_netsnmp_v1_get_of_a_missing_object_fails_with_nosuchname_naming_it(
    lab: Lab,
) -> None:
    name, missing = ber.oid_text(SYS_NAME), ber.oid_text(MISSING)
    out = await snmp("snmpget", "-v1", "-c", "public", lab.addr, name, missing, check=False)
    assert "noSuchName" in out
    assert f"Failed object: .{missing}" in out
    ok = parse(await snmp("snmpget", "-v1", "-c", "public", lab.addr, name))
    assert ok == {name: f'STRING: "{lab.device.name}"'}
    hc_in = f"{ber.oid_text(IF_HC_IN_OCTETS)}.1"
    hc = await snmp("snmpget", "-v1", "-c", "public", lab.addr, hc_in, check=False)
    assert "noSuchName" in hc  # v1 cannot carry a Counter64


# ---------------------------------------------------------------- our client against it


@pytest.mark.servers
async def test_v1_get_drops_each_nosuchname_and_asks_again(lab: Lab) -> None:
    asked = [SYS_NAME, MISSING, (*IF_HC_IN_OCTETS, 1), SYS_DESCR]
    before = lab.client.stats.requests
    v1 = await lab.client.get(lab.target(), asked)
    requests = lab.client.stats.requests - before
    v2 = await lab.client.get(lab.target(V2c(b"public")), [SYS_NAME, SYS_DESCR])
    assert [oid for oid, _t, _v in v1] == asked  # in the order asked, missing ones in place
    assert v1[0] == v2[0]
    assert v1[3] == v2[1]
    assert v1[1] == (MISSING, ber.NO_SUCH_OBJECT, None)
    assert v1[2] == ((*IF_HC_IN_OCTETS, 1), ber.NO_SUCH_OBJECT, None)
    assert requests == 3  # two noSuchName answers, then the rest


@pytest.mark.servers
async def test_v1_get_of_only_missing_objects_answers_them_missing(lab: Lab) -> None:
    got = await lab.client.get(lab.target(), [MISSING])
    assert got == [(MISSING, ber.NO_SUCH_OBJECT, None)]


@pytest.mark.servers
async def test_v1_walk_is_the_v2c_walk_of_what_v1_can_carry(lab: Lab) -> None:
    columns = [IF_DESCR, IF_IN_OCTETS, IF_NAME, IF_HC_IN_OCTETS]
    before = lab.client.stats.requests
    v1 = await lab.client.walk(lab.target(), columns)
    requests = lab.client.stats.requests - before
    v2 = await lab.client.walk(lab.target(V2c(b"public")), columns)
    rows = len(lab.device.interfaces)
    for column in (IF_DESCR, IF_IN_OCTETS, IF_NAME):
        assert v1[column] == v2[column]
        assert len(v1[column]) == rows
    assert v1[IF_HC_IN_OCTETS] == []
    assert len(v2[IF_HC_IN_OCTETS]) == rows
    assert requests == rows + 1  # one GETNEXT per row, all columns side by side, and the end


@pytest.mark.servers
@pytest.mark.parametrize("lab", [484], indirect=True)
async def test_v1_walk_halves_its_columns_on_toobig(lab: Lab) -> None:
    # a request that fits in 484 octets, and an answer that does not
    columns = [(*IF_TABLE, n) for n in range(1, 23)] + [IF_NAME, (*IFX_TABLE, 18)]
    v1 = await lab.client.walk(lab.target(), columns)
    v2 = await lab.client.walk(lab.target(V2c(b"public")), columns)
    assert lab.client.stats.fallbacks >= 1
    for column in columns:
        carried = [row for row in v2[column] if row[1] != ber.COUNTER64]
        assert v1[column] == carried


@pytest.mark.servers
async def test_a_v1_poll_reads_what_a_v2c_poll_reads_but_64_bit_counters(lab: Lab) -> None:
    profiles = ProfileSet()
    v1 = await collect(lab.client, lab.target(), profiles.choose, 25)
    v2 = await collect(lab.client, lab.target(V2c(b"public")), profiles.choose, 25)
    assert v1.scalars == v2.scalars
    assert v1.scalars["sysName"] == lab.device.name.encode()
    for name, rows in v2.tables.items():
        carried = {i: tv for i, tv in rows.items() if tv[0] != ber.COUNTER64}
        assert v1.tables[name] == carried, name
    assert v1.tables["ifInOctets"]  # 32-bit counters for the rates
    assert not v1.tables["ifHCInOctets"]


# ---------------------------------------------------------------- the engine and pysnmp


def test_the_simulator_refuses_getbulk_over_v1_and_pysnmp_reads_its_nosuchname() -> None:
    device = small_fleet(address_base="127.33.0.1")[0]
    engine = Engine()
    bulk = build_v1_message(
        b"public", encode_pdu(ber.GETBULK, 7, 0, 10, encode_null_varbinds([SYS_DESCR]))
    )
    assert engine.handle(device, bulk, time.time()) is None
    assert engine.stats.bad["unsupported_pdu"] == 1
    get = build_v1_message(
        b"public", encode_pdu(ber.GET, 8, 0, 0, encode_null_varbinds([SYS_NAME, MISSING]))
    )
    pmod = api.PROTOCOL_MODULES[api.SNMP_VERSION_1]
    request, _ = decoder.decode(get, asn1Spec=pmod.Message())  # our request, as pysnmp reads it
    assert int(pmod.apiMessage.get_version(request)) == 0
    assert pmod.apiPDU.get_request_id(pmod.apiMessage.get_pdu(request)) == 8
    answer = engine.handle(device, get, time.time())
    assert answer is not None
    message, _ = decoder.decode(answer, asn1Spec=pmod.Message())
    assert bytes(pmod.apiMessage.get_community(message)) == b"public"
    pdu = pmod.apiMessage.get_pdu(message)
    assert int(pmod.apiPDU.get_error_status(pdu)) == NO_SUCH_NAME
    assert int(pmod.apiPDU.get_error_index(pdu)) == 2
    names = [tuple(oid) for oid, _value in pmod.apiPDU.get_varbinds(pdu)]
    assert names == [SYS_NAME, MISSING]  # the request's varbinds, echoed


# ---------------------------------------------------------------- the inventory


def test_inventory_version_1_takes_a_community_and_polls_with_v1(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(
        "credentials:\n"
        "  old: {version: 1, community: public}\n"
        "devices:\n"
        "  - {name: ups-1, address: 127.0.0.9, credentials: old}\n"
    )
    inventory = load_config(path, Inventory)
    credential = inventory.credentials["old"]
    assert credential.version == "1"
    assert credential.level == "v1"
    assert snmp_auth(credential) == V1(b"public")
    with pytest.raises(ValueError, match="version 1 needs a community"):
        Credential(version="1")
    path.write_text("credentials:\n  old: {version: 1}\ndevices: []\n")
    with pytest.raises(ConfigError, match="community"):
        load_config(path, Inventory)


# ---------------------------------------------------------------- our client against net-snmp


@pytest.fixture
async def netsnmpd(snmpd: SnmpD) -> AsyncIterator[tuple[SnmpD, SnmpClient]]:
    client = SnmpClient(timeout=1.0, retries=1)
    await client.open("127.0.0.1")
    try:
        yield snmpd, client
    finally:
        client.close()


@pytest.mark.servers
async def test_v1_client_reads_from_net_snmps_agent_what_v2c_reads(
    netsnmpd: tuple[SnmpD, SnmpClient],
) -> None:
    """snmpd, an independent v1 agent: noSuchName for a missing object, Counter64 columns
    hidden from GETNEXT (RFC 3584 2.2.1), everything else as over v2c."""
    snmpd, client = netsnmpd
    v1 = Target(snmpd.host, snmpd.port, V1(snmpd.community.encode()))
    v2 = Target(snmpd.host, snmpd.port, V2c(snmpd.community.encode()))
    got = await client.get(v1, [SYS_DESCR, MISSING, SYS_NAME])
    want = await client.get(v2, [SYS_DESCR, SYS_NAME])
    assert got == [want[0], (MISSING, ber.NO_SUCH_OBJECT, None), want[1]]
    columns = [IF_DESCR, IF_IN_OCTETS, IF_NAME, IF_HC_IN_OCTETS]
    walked_v1 = await client.walk(v1, columns)
    walked_v2 = await client.walk(v2, columns)
    assert walked_v2[IF_HC_IN_OCTETS]  # snmpd serves 64-bit counters over v2c ...
    assert walked_v1[IF_HC_IN_OCTETS] == []  # ... and never over v1
    for column in (IF_DESCR, IF_NAME):
        assert walked_v1[column] == walked_v2[column]
        assert walked_v1[column]
    # the loopback's counters move between the two walks: the same rows, in the same order
    assert [i for i, _t, _v in walked_v1[IF_IN_OCTETS]] == [
        i for i, _t, _v in walked_v2[IF_IN_OCTETS]
    ]
    assert {t for _i, t, _v in walked_v1[IF_IN_OCTETS]} == {ber.COUNTER32}
