"""The agent's SNMP client against net-snmp's snmpd, an independent implementation, for
every SNMPv3 security level and every auth and privacy protocol the agent offers: it
reads what snmpget and snmpbulkwalk read, and wrong keys fail as they should."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from enoc.snmp import ber
from enoc.snmp.client import SnmpClient, SnmpError, SnmpTimeout, Target, V3User
from enoc.snmp.usm import UsmUser
from testbed.netsnmp import SnmpD, SnmpUser

pytestmark = pytest.mark.servers

AUTHS = ["MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PRIVS = {"DES": "DES", "AES-128": "AES", "AES-192": "AES-192", "AES-256": "AES-256"}
AUTH_KEY = "auth-pass-0123456789"
PRIV_KEY = "priv-pass-9876543210"
SYS_NAME = ber.parse_oid_text("1.3.6.1.2.1.1.5.0")
SYS_DESCR = ber.parse_oid_text("1.3.6.1.2.1.1.1.0")
IF_DESCR = ber.parse_oid_text("1.3.6.1.2.1.2.2.1.2")


def user_name(auth: str, priv: str) -> str:
    return f"u-{auth}-{priv}".lower().replace("-", "")


COMBOS = [(a, p) for a, p in itertools.product(AUTHS, PRIVS)]
USERS = (
    [SnmpUser(user_name(a, p), a, AUTH_KEY, PRIVS[p], PRIV_KEY) for a, p in COMBOS]
    + [SnmpUser(user_name(a, "none"), a, AUTH_KEY, "none") for a in AUTHS]
    + [SnmpUser("noauth", "none", "", "none")]
)


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpD]:
    with SnmpD(tmp_path_factory.mktemp("snmpd"), users=USERS) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[SnmpClient]:
    c = SnmpClient(timeout=1.0, retries=0)
    await c.open("127.0.0.1")
    yield c
    c.close()


def netsnmp(command: str, server: SnmpD, user: SnmpUser, oid: str) -> dict[str, str]:
    """What net-snmp's own tool reads, as {numeric oid: value text}."""
    level = "noAuthNoPriv"
    args = ["-v3", "-u", user.name, "-On", "-Oe"]
    if user.auth_protocol != "none":
        level = "authNoPriv"
        args += ["-a", user.auth_protocol, "-A", user.auth_key]
        if user.priv_protocol != "none":
            level = "authPriv"
            args += ["-x", user.priv_protocol, "-X", user.priv_key]
    result = subprocess.run(
        [command, *args, "-l", level, f"{server.host}:{server.port}", oid],
        capture_output=True,
        text=True,
        env=server.env(),
        timeout=20,
        check=True,
    )
    out = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" = ")
        out[name.lstrip(".")] = value.split(": ", 1)[-1].strip('"')
    return out


def ours(auth: str, priv: str) -> UsmUser:
    if auth == "none":
        return UsmUser("noauth")
    if priv == "none":
        return UsmUser(user_name(auth, "none"), auth, AUTH_KEY)  # type: ignore[arg-type]
    return UsmUser(user_name(auth, priv), auth, AUTH_KEY, priv, PRIV_KEY)  # type: ignore[arg-type]


def spec(auth: str, priv: str) -> SnmpUser:
    return next(u for u in USERS if u.name == ours(auth, priv).name)


@pytest.mark.parametrize(
    ("auth", "priv"),
    [*COMBOS, *((a, "none") for a in AUTHS), ("none", "none")],
)
async def test_reads_what_net_snmp_reads(
    snmpd: SnmpD, client: SnmpClient, auth: str, priv: str
) -> None:
    target = Target(snmpd.host, snmpd.port, V3User(ours(auth, priv)))
    varbinds = await client.get(target, [SYS_NAME, SYS_DESCR])
    got = {ber.oid_text(oid).lstrip("."): value for oid, _tag, value in varbinds}
    expected = netsnmp("snmpget", snmpd, spec(auth, priv), "1.3.6.1.2.1.1.5.0")
    (name_oid,) = expected
    assert got[name_oid] == expected[name_oid].encode()
    walked = await client.walk(target, [IF_DESCR], 10)
    table = netsnmp("snmpbulkwalk", snmpd, spec(auth, priv), "1.3.6.1.2.1.2.2.1.2")
    assert len(walked[IF_DESCR]) == len(table) > 0
    for index, _tag, value in walked[IF_DESCR]:
        key = "1.3.6.1.2.1.2.2.1.2." + ".".join(map(str, index))
        assert table[key] == value.decode(), key  # type: ignore[attr-defined]


@pytest.mark.parametrize("wrong", ["auth", "priv"])
async def test_wrong_keys_fail_cleanly(snmpd: SnmpD, client: SnmpClient, wrong: str) -> None:
    good = ours("SHA-256", "AES-256")
    bad = UsmUser(
        good.name,
        good.auth_protocol,
        "not-the-auth-key-0000" if wrong == "auth" else AUTH_KEY,
        good.priv_protocol,
        "not-the-priv-key-0000" if wrong == "priv" else PRIV_KEY,
    )
    with pytest.raises((SnmpError, SnmpTimeout)):
        await client.get(Target(snmpd.host, snmpd.port, V3User(bad)), [SYS_NAME])
    # the same client still works with the right keys
    (varbind,) = await client.get(Target(snmpd.host, snmpd.port, V3User(good)), [SYS_NAME])
    assert varbind[2]
