"""SIGHUP re-reads the inventory; unchanged devices keep their rate state."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from agentkit import Listener, agent_config, simulated_site

from testbed.servers import Mosquitto

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


async def test_sighup_with_an_invalid_inventory_keeps_the_current_one(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An inventory broken in content (a device with unknown credentials, one naming an
    unknown profile), then one that is not YAML, then one naming a profile added to the
    agent config since the start (profiles are not reloaded): each SIGHUP is refused with
    the file and key of every mistake logged, and the agent goes on polling every device
    it had. A valid inventory after them is taken."""
    async with simulated_site(tmp_path) as site, Listener(mosquitto.url) as listener:
        inventory = yaml.safe_load(site.inventory.read_text())
        names = {d["name"] for d in inventory["devices"]}
        config = agent_config(tmp_path, mosquitto.url, site.inventory)
        log = tmp_path / "agent.log"
        command = [sys.executable, "-m", "enoc.cli", "agent", "--config", str(config)]
        with log.open("w") as stderr:
            proc = subprocess.Popen(command, stderr=stderr, text=True)
        try:

            def polled_since(at: float) -> set[str]:
                return {s.device for m in listener.metrics() for s in m.samples if s.ts > at}

            def refusals() -> int:
                return log.read_text().count("reload refused")

            await listener.wait_for(lambda lst: polled_since(0) == names, what="every device")
            broken = {
                "credentials": inventory["credentials"],
                "devices": [
                    *inventory["devices"],
                    {"name": "new-1", "address": "127.41.0.30", "credentials": "nope"},
                    {
                        "name": "new-2",
                        "address": "127.41.0.31",
                        "credentials": "sim-v3",
                        "profile": "ghost",
                    },
                ],
            }
            count = len(inventory["devices"])
            fresh = {
                "name": "new-3",
                "address": "127.41.0.33",
                "credentials": "sim-v3",
                "profile": "fresh",
            }
            for text, mistakes in (
                (
                    yaml.safe_dump(broken),
                    [  # each at the line of its device in the inventory
                        f"{site.inventory}:LINE: devices[{count}].credentials: unknown "
                        "credentials 'nope'",
                        f"{site.inventory}:LINE: devices[{count + 1}].profile: unknown profile "
                        "'ghost'",
                    ],
                ),
                (
                    "devices: [{name: x, address: 127.41.0.32\n",
                    [f"{site.inventory}:2: not valid YAML"],
                ),
                (
                    yaml.safe_dump({**broken, "devices": [*inventory["devices"], fresh]}),
                    [
                        f"{config}: profiles: device 'new-3' names profile 'fresh', which is "
                        "new since the start: profiles take a restart"
                    ],
                ),
            ):
                if "fresh" in text:  # a profile added to the agent config meanwhile
                    settings = yaml.safe_load(config.read_text())
                    settings["profiles"] = {"fresh": {"groups": ["interfaces"]}}
                    config.write_text(yaml.safe_dump(settings))
                site.inventory.write_text(text)
                before = refusals()
                proc.send_signal(signal.SIGHUP)
                await listener.wait_for(
                    lambda _l: refusals() > before,  # noqa: B023 (awaited right here)
                    what="the reload refused",
                )
                refused_at = time.time()
                logged = log.read_text()
                for mistake in mistakes:
                    pattern = re.escape(mistake).replace("LINE", r"\d+")
                    assert re.search(pattern, logged), (mistake, logged[-2000:])
                await listener.wait_for(
                    lambda _l: polled_since(refused_at) == names,  # noqa: B023 (awaited here)
                    what="every device of the old inventory polled after the refusal",
                )
                assert proc.poll() is None, "the agent is still running"
            # a valid inventory again: taken
            inventory["devices"] = [d for d in inventory["devices"] if d["name"] != "nyc-fw-1"]
            site.inventory.write_text(yaml.safe_dump(inventory))
            proc.send_signal(signal.SIGHUP)
            await listener.wait_for(
                lambda _l: "inventory reloaded: 3 devices (0 added, 1 removed)" in log.read_text(),
                what="the valid inventory reloaded",
            )
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, log.read_text()[-2000:]
    added = {s.device for m in listener.metrics() for s in m.samples} - names
    assert added == set(), "nothing of the refused inventories was ever polled"
