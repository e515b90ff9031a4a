"""What the agent reports equals what net-snmp's snmpbulkwalk reads from the same device."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site

from enoc.wire import DeviceSample
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers

IFX = "1.3.6.1.2.1.31.1.1.1"


def bulkwalk(address: str, port: int, oid: str) -> dict[str, str]:
    result = subprocess.run(
        ["snmpbulkwalk", "-v2c", "-c", "public", "-Oqnet", f"{address}:{port}", oid],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    out = {}
    for line in result.stdout.splitlines():
        oid_text, _, value = line.partition(" ")
        out[oid_text.lstrip(".")] = value.strip().strip('"')
    return out


def latest(listener: Listener, device: str, after: float) -> DeviceSample | None:
    found = [
        s for m in listener.metrics() for s in m.samples if s.device == device and s.ts > after
    ]
    return found[0] if found else None


async def test_agent_values_agree_with_snmpbulkwalk(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        device = site.sim.device("nyc-acc-1")
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        async with running_agent(config):
            await listener.wait_for(lambda lst: latest(lst, device.name, 0) is not None)
            before = await asyncio.to_thread(bulkwalk, device.address, site.port, IFX)
            walked_at = time.time()
            await listener.wait_for(lambda lst: latest(lst, device.name, walked_at) is not None)
            after = await asyncio.to_thread(bulkwalk, device.address, site.port, IFX)
    sample = latest(listener, device.name, walked_at)
    assert sample is not None
    assert len(sample.interfaces) == len(device.interfaces)
    for iface in sample.interfaces:
        i = iface.if_index
        assert iface.name == before[f"{IFX}.1.{i}"]
        assert iface.alias == " ".join(before[f"{IFX}.18.{i}"].split())
        assert iface.fields["ifHighSpeed"] == int(before[f"{IFX}.15.{i}"])
        for column, name in ((6, "ifHCInOctets"), (10, "ifHCOutOctets")):
            low, high = int(before[f"{IFX}.{column}.{i}"]), int(after[f"{IFX}.{column}.{i}"])
            assert low <= int(iface.fields[name]) <= high, f"{name}.{i}"
