"""SIGHUP re-reads the inventory; unchanged devices keep their rate state."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, simulated_site

from enoc.localservers import Mosquitto

pytestmark = pytest.mark.servers


async def test_sighup_reloads_the_inventory_keeping_rate_state(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        inventory = yaml.safe_load(site.inventory.read_text())
        full = list(inventory["devices"])
        inventory["devices"] = [d for d in full if d["name"] != "bog-ce-1"]
        site.inventory.write_text(yaml.safe_dump(inventory))
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        command = [sys.executable, "-m", "enoc.cli", "agent", "--config", str(config)]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            await listener.wait_for(lambda lst: len(lst.metrics()) >= 9)
            inventory["devices"] = [d for d in full if d["name"] != "nyc-fw-1"]
            site.inventory.write_text(yaml.safe_dump(inventory))
            proc.send_signal(signal.SIGHUP)
            reloaded = time.time()
            await listener.wait_for(
                lambda lst: any(s.device == "bog-ce-1" for m in lst.metrics() for s in m.samples),
                what="the added device polled",
            )
            await asyncio.sleep(2.5)
            proc.send_signal(signal.SIGTERM)
            _out, err = await asyncio.to_thread(proc.communicate, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
    assert "inventory reloaded: 3 devices (1 added, 1 removed)" in err
    samples = [s for m in listener.metrics() for s in m.samples]
    after = [s for s in samples if s.ts > reloaded + 1.5]
    assert after and not [s for s in after if s.device == "nyc-fw-1"], "removed device dropped"
    acc = [s for s in samples if s.device == "nyc-acc-1"]
    up = [i for s in acc[1:] for i in s.interfaces if i.fields["ifOperStatus"] == 1]
    assert up and all("in_bps" in i.fields for i in up), "rates continue across the reload"
