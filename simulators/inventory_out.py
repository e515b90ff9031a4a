"""`enoc sim --inventory-out FILE`: the inventory an agent config includes as is."""

from __future__ import annotations

from pathlib import Path

import yaml

from simulators.model import Device
from simulators.server import Simulator


def inventory(sim: Simulator, devices: list[Device]) -> dict[str, object]:
    credentials: dict[str, dict[str, str]] = {}
    names: dict[tuple[tuple[str, str], ...], str] = {}
    rows: list[dict[str, object]] = []
    # Every device of a site hangs off the site's CE router (the WAN edge): the collector
    # suppresses their incidents while it is down.
    ce_router = {d.site: d.name for d in devices if d.role == "ce-router"}
    for device in devices:
        described = sim.describe(device)
        cred = described["snmp"]
        assert isinstance(cred, dict)
        key = tuple(sorted(cred.items()))
        if key not in names:
            base = "sim-v3" if cred.get("version") == "3" else "sim-v2c"
            name = base if base not in credentials else f"{base}-{len(credentials) + 1}"
            names[key] = name
            credentials[name] = dict(cred)
        rows.append(
            {
                "name": device.name,
                "address": device.address,
                "port": device.port,
                "site": device.site,
                "rtc": device.rtc,
                "role": device.role,
                "credentials": names[key],
                **(
                    {"parent": ce_router[device.site]}
                    if device.site in ce_router and ce_router[device.site] != device.name
                    else {}
                ),
            }
        )
    return {"credentials": credentials, "devices": rows}


def write_inventory(path: Path, sim: Simulator, devices: list[Device]) -> None:
    text = "# Written by `enoc sim --inventory-out`: simulated devices and their credentials.\n"
    text += yaml.safe_dump(inventory(sim, devices), sort_keys=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
