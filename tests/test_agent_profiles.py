"""Profiles: chosen by sysObjectID prefix or by name, built in or from the config, and
vendor scalars that ride in the poll's one GET and arrive in the published metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import free_udp_port, small_fleet

from agent.poller import RawPoll, collect
from agent.profiles import BUILT_IN, Profile, ProfileSet
from enoc.snmp.client import SnmpClient, Target, V2c
from enoc.snmp.mib import HR_MEMORY_SIZE
from enoc.wire import DeviceSample
from simulators.model import Device
from simulators.server import Simulator
from testbed.servers import Mosquitto

SWITCH = (1, 3, 6, 1, 4, 1, 9, 1, 2694)  # the simulated access switch's sysObjectID
BGP_LOCAL_AS = "1.3.6.1.2.1.15.2.0"


def test_longest_prefix_wins_and_the_config_wins_a_tie() -> None:
    profiles = ProfileSet(
        [
            Profile("cisco", ("interfaces",), match=((1, 3, 6, 1, 4, 1, 9),)),
            Profile("catalyst", ("interfaces",), match=(SWITCH,)),
        ]
    )
    assert profiles.choose((*SWITCH, 7)).name == "catalyst"  # ties the built-in switch
    assert profiles.choose((1, 3, 6, 1, 4, 1, 9, 1, 2150)).name == "router"  # longer than cisco
    assert profiles.choose((1, 3, 6, 1, 4, 1, 9, 5, 1)).name == "cisco"
    assert profiles.choose((1, 3, 6, 1, 4, 1, 99999)).name == "generic"
    assert profiles.choose(None).name == "generic"
    assert ProfileSet().choose((*SWITCH, 7)).name == "switch"
    assert profiles.named("system") is BUILT_IN["system"]
    with pytest.raises(KeyError, match="unknown profile 'nope'"):
        profiles.named("nope")


# ---------------------------------------------------------------- one GET for all scalars


@pytest.fixture
async def switch() -> AsyncIterator[tuple[SnmpClient, Target, Device]]:
    port = free_udp_port("127.44.0.1")
    devices = small_fleet(port=port, address_base="127.44.0.1")
    device = next(d for d in devices if d.role == "access-switch")
    async with Simulator(devices):
        client = SnmpClient(timeout=1.0, retries=1)
        await client.open("127.0.0.1")
        try:
            yield client, Target(device.address, port, V2c(b"public")), device
        finally:
            client.close()


async def poll(
    client: SnmpClient, target: Target, profile: Profile, guess: Profile | None = None
) -> tuple[int, RawPoll]:
    """One poll with `profile`: how many SNMP requests it cost (GETs and GETBULK pages),
    and what it read."""
    before = client.stats.requests
    raw = await collect(client, target, lambda _oid: profile, 25, guess)
    return client.stats.requests - before, raw


async def test_vendor_scalars_ride_in_the_first_get_when_the_profile_is_known(
    switch: tuple[SnmpClient, Target, Device],
) -> None:
    client, target, device = switch
    plain = Profile("plain", ("interfaces",))
    vendor = Profile("vendor", ("interfaces",), scalars={"hrMemorySize": HR_MEMORY_SIZE})
    other = Profile("other", ("interfaces",), scalars={"bgpLocalAs": (1, 3, 6, 1, 2, 1, 15, 2, 0)})
    await poll(client, target, plain)  # settles max-repetitions for this device
    pages, _ = await poll(client, target, plain)  # one GET plus the walk
    # named for the device, or chosen from the sysObjectID it reported the poll before
    cost, raw = await poll(client, target, vendor, guess=vendor)
    assert (cost, raw.scalars["hrMemorySize"]) == (pages, device.memory_kb)
    # not known before the GET (the first poll): one more GET
    cost, raw = await poll(client, target, vendor)
    assert (cost, raw.scalars["hrMemorySize"]) == (pages + 1, device.memory_kb)
    # the device became another model: its new profile's scalars, not the old one's
    cost, raw = await poll(client, target, vendor, guess=other)
    assert cost == pages + 1
    assert set(raw.scalars) == {"sysDescr", "sysObjectID", "sysUpTime", "sysName", "hrMemorySize"}


# ---------------------------------------------------------------- end to end


def latest(listener: Listener, device: str) -> DeviceSample | None:
    found = [s for m in listener.metrics() for s in m.samples if s.device == device]
    return found[-1] if found else None


@pytest.mark.servers
async def test_profiles_by_prefix_and_by_name_decide_what_is_polled_and_published(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        inventory = yaml.safe_load(site.inventory.read_text())
        for row in inventory["devices"]:
            row["profile"] = {"nyc-pe-1": "wan-edge", "nyc-fw-1": "system"}.get(row["name"])
            if row["profile"] is None:
                del row["profile"]
        site.inventory.write_text(yaml.safe_dump(inventory))
        profiles = {
            # takes the access switch over from the built-in switch profile (same prefix)
            "catalyst": {
                "match": [".".join(map(str, SWITCH))],
                "groups": ["interfaces"],
                "scalars": {"hrMemorySize": ".".join(map(str, HR_MEMORY_SIZE))},
            },
            # matches nothing: only for the devices that name it
            "wan-edge": {"groups": ["bgp"], "scalars": {"bgpLocalAs": BGP_LOCAL_AS}},
        }
        # discovery off: what the profiles alone decide (discovery adds the groups a device
        # answers, host_resources and bgp included: tests/test_agent_discovery.py)
        extra = {"profiles": profiles, "discovery": {"enabled": False}}
        config = agent_config(tmp_path, mosquitto.url, site.inventory, extra=extra)
        async with running_agent(config) as agent:
            await listener.wait_for(
                lambda lst: all(
                    sum(1 for m in lst.metrics() for s in m.samples if s.device == d.name) >= 3
                    for d in site.devices
                ),
                what="three polls of every device",
            )
            assert not agent.stats.polls_failed
    by_name = {d.name: d for d in site.devices}
    switch, router, firewall, ce = (
        latest(listener, n) for n in ("nyc-acc-1", "nyc-pe-1", "nyc-fw-1", "bog-ce-1")
    )
    assert switch is not None and router is not None and firewall is not None and ce is not None
    # by prefix, from the config: interfaces only, and the vendor scalar as a device field
    assert len(switch.interfaces) == len(by_name["nyc-acc-1"].interfaces)
    assert "cpu" not in switch.fields and "memory" not in switch.fields and not switch.bgp
    assert switch.fields["hrMemorySize"] == by_name["nyc-acc-1"].memory_kb
    # by name, from the config: BGP only, and its scalar
    assert not router.interfaces and "cpu" not in router.fields
    assert len(router.bgp) == len(by_name["nyc-pe-1"].bgp_peers)
    assert router.fields["bgpLocalAs"] == by_name["nyc-pe-1"].local_as
    # by name, built in: the system group alone
    assert not firewall.interfaces and not firewall.bgp and "cpu" not in firewall.fields
    assert float(firewall.fields["uptime_s"]) > 0
    # by prefix, built in (Cisco ISR: router): everything
    assert ce.interfaces and ce.bgp and "cpu" in ce.fields and "memory" in ce.fields
    assert "hrMemorySize" not in ce.fields and "bgpLocalAs" not in ce.fields
