"""Every shipped raise/clear pair, sent by net-snmp's snmptrap (v1, v2c and v3 authPriv),
opens an incident named by its MIB and is resolved by its clear, through a real agent,
Mosquitto and collector (issue 17, "Done when").

The traps are built from the shipped MIB facts: each notification's OBJECTS with an
instance of each (a row of its own per pair, so that no two pairs share an incident),
the state a rule decides by set to a raising value and then to its clearing one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from collectorkit import collector_config, eventually, running_collector
from simkit import V3_AUTH, V3_PRIV, V3_USER, free_udp_port
from test_agent_tables import ENTRY, compile_sat_mib

from agent.trapdefaults import SHIPPED_RULES
from agent.traprules import CLEAR, TrapRuleConfig
from collector.model import Incident
from enoc.mibs import MibIndex, Notification, UnknownName
from enoc.snmp import ber
from enoc.snmp.ber import Oid, oid_text
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers

INDEX = MibIndex.load()
V3 = ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH, "-x", "AES"]
V3 += ["-X", V3_PRIV]
# snmptrap's type letters by the SMI base type of an object
LETTERS = {
    "INTEGER": "i",
    "Integer32": "i",
    "Unsigned32": "u",
    "Gauge32": "u",
    "Counter32": "c",
    "TimeTicks": "t",
    "IpAddress": "a",
    "OBJECT IDENTIFIER": "o",
    "ObjectIdentifier": "o",
    "Bits": "x",
}


@dataclass(frozen=True)
class Pair:
    alarm: str
    raise_rule: TrapRuleConfig
    clear_rule: TrapRuleConfig

    @property
    def raising(self) -> Notification:
        found = INDEX.notification(self.raise_rule.notification)
        assert found is not None, self.raise_rule.notification
        return found

    @property
    def clearing(self) -> Notification:
        found = INDEX.notification(self.clear_rule.notification)
        assert found is not None, self.clear_rule.notification
        return found


def shipped_pairs(*, loaded: bool = True) -> list[Pair]:
    """Each raise of the shipped rules with what clears it: a clear rule of its alarm, or
    its own state's clearing value, or a rule of its alarm that has one."""
    pairs: list[Pair] = []
    for rule in SHIPPED_RULES:
        if rule.clear:
            continue
        alarm = rule.alarm or rule.notification.rpartition("::")[2]
        same = [r for r in SHIPPED_RULES if (r.alarm or r.notification) == alarm]
        clears = [r for r in same if r.clear]
        clears += [r for r in [rule, *same] if CLEAR in r.states.values()]
        known = all(INDEX.notification(r.notification) for r in (rule, *clears[:1]))
        if clears and (known or not loaded):  # no clear: it resolves after a time
            pairs.append(Pair(alarm, rule, clears[0]))
    return pairs


PAIRS = shipped_pairs()


def incident_groups(pairs: list[Pair]) -> list[list[Pair]]:
    """The pairs as their incidents group them: each keyed pair on a row of its own, the
    device-wide raises of one alarm in one incident (PowerNet's three ways onto bypass)."""
    groups: list[list[Pair]] = []
    device_wide: dict[str, list[Pair]] = {}
    for pair in pairs:
        rule = pair.raise_rule
        if rule.index_of or rule.value_of:
            groups.append([pair])
        elif pair.alarm in device_wide:
            device_wide[pair.alarm].append(pair)
        else:
            groups.append(device_wide.setdefault(pair.alarm, [pair]))
    return groups


GROUPS = incident_groups(PAIRS)


def state_value(rule: TrapRuleConfig, clearing: bool) -> str:
    """The label (or identity) a pair's trap carries in the rule's state varbind."""
    for label, outcome in rule.states.items():
        if (outcome == CLEAR) == clearing and outcome != "info":
            return label
    raise AssertionError(f"{rule.notification}: no {'clearing' if clearing else 'raising'} state")


def varbinds(notification: Notification, pair: Pair, row: int, clearing: bool) -> list[str]:
    """snmptrap's OID, type, value triples for the notification's OBJECTS. The varbind a
    rule decides by carries a raising value, or its clearing one when the clear is that
    value (CISCO-ENVMON); a clear of its own repeats the raise's (its key)."""
    decides = pair.raise_rule
    if clearing and CLEAR in pair.clear_rule.states.values():
        decides = pair.clear_rule
    else:
        clearing = False
    out: list[str] = []
    for name in notification.objects:
        try:
            obj = INDEX.object(f"{notification.module}::{name}")
        except UnknownName:  # imported from another module (sysName, fnSysSerial)
            obj = INDEX.object(name)
        suffix: Oid = (0,)
        if obj.kind == "column":
            entry = INDEX.name(obj.oid[:-1])
            assert entry is not None
            suffix = (row,) * max(1, len(INDEX.table(f"{entry.module}::{entry.name}").index))
        base = obj.base
        if name == decides.state_of:
            label = state_value(decides, clearing)
            if obj.enums:
                letter, value = "i", str(obj.enums[label])
            else:  # an identity (UPS-MIB's upsAlarmDescr)
                letter, value = "o", oid_text(INDEX.oid(label))
        elif obj.enums:
            letter, value = "i", str(min(obj.enums.values()))
        elif base in LETTERS:
            letter = LETTERS[base]
            value = {"a": "192.0.2.1", "o": "1.3.6.1.4.1.99999.1", "x": "00"}.get(letter, "1")
        else:
            letter, value = "s", f"{name} {row}"
        out += [oid_text((*obj.oid, *suffix)), letter, value]
    return out


V1 = ["snmptrap", "-v", "1", "-c", "public"]


def command(version: str, port: int, source: str, notification: Oid, binds: list[str]) -> list[str]:
    target = ["--clientaddr=" + source, f"127.0.0.1:{port}"]
    if version != "1":
        auth = ["-v2c", "-c", "public"] if version == "2c" else V3
        return ["snmptrap", *auth, *target, "", oid_text(notification), *binds]
    # RFC 3584 3.2: a notification's enterprise and specific-trap for SNMPv1
    cut = 2 if len(notification) > 2 and notification[-2] == 0 else 1
    specific = str(notification[-1])
    return [*V1, *target, oid_text(notification[:-cut]), "", "6", specific, "", *binds]


# An interface no poll sees (the simulated devices have fewer): only its traps speak of it.
IF_INDEX = 999


def link_trap(version: str, port: int, source: str, up: bool) -> list[str]:
    binds = [f"1.3.6.1.2.1.2.2.1.1.{IF_INDEX}", "i", str(IF_INDEX)]
    if version == "1":  # generic-trap linkDown(2) or linkUp(3), the enterprise left to net-snmp
        target = [f"--clientaddr={source}", f"127.0.0.1:{port}"]
        return [*V1, *target, "", "", "3" if up else "2", "0", "", *binds]
    oid = (1, 3, 6, 1, 6, 3, 1, 1, 5, 4 if up else 3)
    return command(version, port, source, oid, binds)


def send(argv: list[str], state: Path) -> None:
    state.mkdir(exist_ok=True)
    env = {**os.environ, "MIBS": "", "SNMPCONFPATH": str(state), "SNMP_PERSISTENT_DIR": str(state)}
    subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env, check=True)


def test_every_shipped_raise_has_a_clear_or_resolves_after_a_time() -> None:
    raises = [r for r in SHIPPED_RULES if not r.clear]
    paired = {id(p.raise_rule) for p in shipped_pairs(loaded=False)}
    assert all(id(r) in paired or r.resolve_after is not None for r in raises)


async def test_net_snmp_sends_every_shipped_pair_and_each_opens_and_resolves_an_incident(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    traps_port = free_udp_port()
    async with (
        simulated_site(tmp_path) as site,
        Listener(mosquitto.url) as listener,
        running_collector(collector_config(tmp_path, mosquitto.url)) as coll,
    ):
        config = agent_config(
            tmp_path, mosquitto.url, site.inventory, interval="30s", traps_port=traps_port
        )
        senders = {d.name: d.address for d in site.devices}
        # one device for each version: the same pairs, each its own incidents
        by_version = {"1": "nyc-acc-1", "2c": "nyc-fw-1", "3": "nyc-pe-1"}
        async with running_agent(config) as agent:
            await listener.wait_for(lambda lst: bool(lst.statuses()), what="birth")

            async def run(clearing: bool) -> None:
                for version, device in by_version.items():
                    source = senders[device]
                    state = tmp_path / f"net-snmp-{device}"
                    sends = [link_trap(version, traps_port, source, up=clearing)]
                    for row, pair in enumerate(PAIRS, start=1):
                        notification = pair.clearing if clearing else pair.raising
                        binds = varbinds(notification, pair, row, clearing)
                        sends.append(command(version, traps_port, source, notification.oid, binds))
                    for argv in sends:
                        await asyncio.to_thread(send, argv, state)

            async def incidents(state: str) -> list[Incident]:
                return [
                    i
                    for i in await coll.engine.queries.incidents(site="nyc", state=state)
                    if i.key.device in by_version.values()
                ]

            expected = len(by_version) * (len(GROUPS) + 1)

            async def all_in(state: str) -> bool:
                return len(await incidents(state)) >= expected

            await run(clearing=False)
            await eventually(lambda: all_in("open"), what="every raise's incident")
            opened = await incidents("open")
            await run(clearing=True)
            await eventually(lambda: all_in("resolved"), what="every clear's resolution")
            # a notification no rule knows: an informational event, named, no incident
            config_man = INDEX.notification("ciscoConfigManEvent")
            assert config_man is not None
            plain = Pair("", TrapRuleConfig(config_man.name), TrapRuleConfig(config_man.name))
            for version, device in by_version.items():
                binds = varbinds(config_man, plain, 1, clearing=False)
                argv = command(version, traps_port, senders[device], config_man.oid, binds)
                await asyncio.to_thread(send, argv, tmp_path / f"net-snmp-{device}")
            await listener.wait_for(
                lambda lst: len([e for e in lst.all_events() if e.kind == "trap"]) == 3,
                what="the three ciscoConfigManEvent traps",
            )
            assert agent.traps is not None and not agent.traps.stats.bad
            assert agent.traps.stats.received == 2 * len(by_version) * (len(PAIRS) + 1) + 3
        resolved = {i.id: i for i in await incidents("resolved")}
        assert not [i for i in await incidents("") if i.key.kind == "trap"]
    for event in (e for e in listener.all_events() if e.kind == "trap"):
        assert event.severity == "info" and event.state == "received"
        assert event.message.startswith(
            "ciscoConfigManEvent (CISCO-CONFIG-MAN-MIB): ccmHistoryEventCommandSource.1 "
            "commandLine, ccmHistoryEventConfigSource.1 erase"
        ), event.message
        assert event.attrs["mib"] == "CISCO-CONFIG-MAN-MIB"
    assert set(resolved) == {i.id for i in opened}
    for device in by_version.values():
        mine = [i for i in opened if i.key.device == device]
        links = [i for i in mine if i.key.kind == "link"]
        assert [i.key.resource for i in links] == [f"if:{IF_INDEX}"], device
        assert "(linkDown trap)" in links[0].title
        alarms = sorted(mine, key=lambda i: i.opened)
        alarms = [i for i in alarms if i.key.kind == "alarm"]
        for group, incident in zip(GROUPS, alarms, strict=True):
            raising, alarm = group[0].raising, group[0].alarm
            # named by its MIB: the notification and its module, in the title and attrs
            assert f"{raising.name} ({raising.module})" in incident.title, (device, incident.title)
            assert (incident.attrs["trap"], incident.attrs["mib"]) == (raising.name, raising.module)
            assert incident.key.resource.startswith(f"alarm:{alarm}")
            assert incident.severity != "info"
            done = resolved[incident.id]
            assert done.resolved_by == "auto", (device, alarm)
            assert done.count == len(group), (device, alarm)


async def test_a_vendor_mibs_raise_and_clear_pair_by_the_operators_rule_file(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """A satellite modem's MIB compiled with `enoc mib compile` (the agent's `mibs:`) and
    a rule file pairing its notifications: its traps are named by that MIB and raise and
    clear one alarm by the demodulator's row."""
    compiled = compile_sat_mib(tmp_path, capsys)
    rules = tmp_path / "trap-rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {notification: satLockLost, alarm: satLock, index_of: satLockState}\n"
        "  - {notification: satLockRegained, alarm: satLock, index_of: satLockState,"
        " clear: true}\n"
    )
    traps_port = free_udp_port()
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        extra = {"mibs": str(compiled), "traps": {"rules": str(rules)}}
        config = agent_config(
            tmp_path,
            mosquitto.url,
            site.inventory,
            interval="30s",
            traps_port=traps_port,
            extra=extra,
        )
        source = site.sim.device("nyc-fw-1").address
        async with running_agent(config):
            for notification, lock in (
                ("1.3.6.1.4.1.64999.2.0.1", "3"),
                ("1.3.6.1.4.1.64999.2.0.2", "1"),
            ):
                binds = [f"{ENTRY}.2.2", "s", "hub-b", f"{ENTRY}.5.2", "i", lock]
                argv = command("2c", traps_port, source, ber.parse_oid_text(notification), binds)
                await asyncio.to_thread(send, argv, tmp_path / "net-snmp")
            await listener.wait_for(lambda lst: len(lst.all_events()) >= 2, what="both traps")
    lost, regained = listener.all_events()
    assert (lost.kind, lost.state, lost.severity) == ("alarm", "raised", "major")
    assert (regained.kind, regained.state, regained.severity) == ("alarm", "cleared", "info")
    assert lost.resource == regained.resource == "alarm:satLock:2"
    assert lost.message == (
        "satLockLost (SATCOM-MODEM-MIB): satModemName.2 hub-b, satLockState.2 unlocked"
    )
    assert regained.attrs["satLockState.2"] == "locked"
    assert regained.attrs["mib"] == "SATCOM-MODEM-MIB"
