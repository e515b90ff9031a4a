"""`enoc demo` as a user runs it: one process, live data within a minute, the story's
faults become incidents, Ctrl-C stops everything and frees the port. And the README's
first command, `scripts/demo`, with its defaults."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from testbed.servers import InfluxDB1, free_port

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 8080  # enoc demo's console, as the README shows it


class Console:
    """The demo's API through a logged-in session (the way the browser uses it)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        request = urllib.request.Request(
            f"{base}/login",
            data=json.dumps({"name": user, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with self.opener.open(request, timeout=10) as response:
            self.me = json.load(response)

    def get(self, path: str) -> Any:
        with self.opener.open(self.base + path, timeout=10) as response:
            return json.load(response)


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_demo_runs_the_story_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    out = (tmp_path / "demo.out").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "enoc.cli",
            "demo",
            "--http",
            f"127.0.0.1:{port}",
            "--interval",
            "2",
            "--story-start",
            "4",
            "--story-scale",
            "0.1",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        text = wait_for(
            lambda: re.search(r"login\s+(\S+) / (\S+)", Path(out.name).read_text()),
            "the demo's login line",
            timeout=60,
        )
        user, password = text.group(1), text.group(2)
        printed = Path(out.name).read_text()
        assert f"http://127.0.0.1:{port}/" in printed
        console = Console(f"http://127.0.0.1:{port}", user, password)
        assert console.me["role"] == "admin"

        # live data: the five RTCs and their field sites, every device polled and up
        def all_up() -> bool:
            sites = console.get("/api/v1/sites")["sites"]
            names = {s["site"] for s in sites}
            return {"nyc", "gva", "nbo", "bkk", "bds"} <= names and all(
                s["devices"]["up"] > 0 and s["devices"]["down"] == 0 for s in sites
            )

        wait_for(all_up, "every site with its devices up")
        # the device page's recent values (the first metrics may trail the birth message)
        device = wait_for(
            lambda: (d := console.get("/api/v1/devices/nbo/nbo-acc-1"))["recent"] and d,
            "recent values of nbo-acc-1",
        )
        assert len(device["recent"]["interfaces"]) == 48  # an access switch of the fleet

        # the story: Nairobi flaps, Geneva's fan stops, Bangkok reboots, Brindisi loses its
        # WAN and comes back
        def incidents() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = console.get("/api/v1/incidents?limit=1000")["incidents"]
            return found

        def has(site: str, kind: str, state: str = "") -> bool:
            return any(
                i["site"] == site and i["kind"] == kind and (not state or i["state"] == state)
                for i in incidents()
            )

        wait_for(lambda: has("nbo", "link"), "Nairobi's link incident")
        wait_for(lambda: has("bkk", "reboot"), "Bangkok's reboot incident")
        wait_for(lambda: has("gva", "sensor"), "Geneva's fan incident")
        wait_for(lambda: has("gva", "sensor", "resolved"), "Geneva's fan replaced")
        wait_for(lambda: has("bds", "agent_offline"), "Brindisi's site incident")
        wait_for(lambda: has("bds", "agent_offline", "resolved"), "Brindisi back online")
        flaps = [i for i in incidents() if i["site"] == "nbo" and i["kind"] == "link"]
        assert len(flaps) == 1, "a flapping link is one incident, not one per flap"
        assert flaps[0]["flapping"] or flaps[0]["count"] > 1

        # Ctrl-C: everything stops within a few seconds and the port is free again
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        with socket.socket() as sock:  # as a restarted server would (TIME_WAIT is fine)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        assert "enoc demo: stopped" in Path(out.name).read_text()
        assert "Traceback" not in Path(out.name).read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()


def test_demo_writes_to_influxdb_when_asked(tmp_path: Path, influxdb1: InfluxDB1) -> None:
    out = (tmp_path / "demo.out").open("w+")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "enoc.cli", "demo", "--quiet-fleet"),
            *("--http", f"127.0.0.1:{free_port()}", "--interval", "2"),
            *("--influx-url", influxdb1.url, "--influx-db", "demo_enoc"),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def interface_series() -> int:
            result = influxdb1.query('SHOW SERIES FROM "interface"', db="demo_enoc")
            series = result["results"][0].get("series") or []
            return sum(len(s.get("values", [])) for s in series)

        # the demo made the database and the collector writes every site's interfaces
        count = wait_for(interface_series, "interface series in InfluxDB", timeout=90)
        assert count > 0

        def sites() -> set[str]:
            result = influxdb1.query(
                'SHOW TAG VALUES FROM "device" WITH KEY = "site"', db="demo_enoc"
            )
            series = result["results"][0].get("series") or [{"values": []}]
            return {value for _key, value in series[0]["values"]}

        wait_for(lambda: {"nyc", "gva", "nbo", "bkk", "bds"} <= sites(), "every RTC writing")
        assert "no scripted faults" in Path(out.name).read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(300)  # bootstrap and the first start of the fleet, under load
def test_readme_first_command_shows_live_data_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """`scripts/demo` as the README's quick start runs it: bootstrap (here it only checks
    the packages and syncs the venv), then `enoc demo` with its defaults. The console
    shows live data within a minute; Ctrl-C (SIGINT to the terminal's process group)
    stops everything within seconds, with no process, port or state directory left."""
    command = [str(REPO / "scripts" / "demo")]
    port = DEFAULT_PORT
    if not port_free(port):  # someone else's 8080: only then move the console
        port = free_port()
        command += ["--http", f"127.0.0.1:{port}"]
    out = (tmp_path / "demo.out").open("w+")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    pgid = process.pid  # its own session: the group a terminal's Ctrl-C goes to
    try:
        printed = wait_for(
            lambda: re.search(
                r"console\s+(\S+)\s+login\s+(\S+) / (\S+)\s+state\s+(\S+)",
                Path(out.name).read_text(),
            ),
            "the demo's console and login lines",
            timeout=180,  # bootstrap, then the fleet, the agents and the collector start
        )
        url, user, password, state = printed.groups()
        assert url == f"http://127.0.0.1:{port}/"
        assert Path(state).is_dir()
        console = Console(url.rstrip("/"), user, password)

        # live data within a minute: every site's devices polled and up, each site's
        # first device with recent values on its page, and those values moving on
        started = time.monotonic()

        def every_site_up() -> list[dict[str, Any]]:
            sites: list[dict[str, Any]] = console.get("/api/v1/sites")["sites"]
            ok = {"nyc", "gva", "nbo", "bkk", "bds"} <= {s["site"] for s in sites} and all(
                s["devices"]["up"] > 0 and s["devices"]["down"] == 0 for s in sites
            )
            return sites if ok else []

        sites = wait_for(every_site_up, "every site with its devices up", timeout=60)

        def every_device() -> list[dict[str, Any]]:
            # a site is up with its first polls; its last devices may come a poll later
            listed: list[dict[str, Any]] = console.get("/api/v1/devices")["devices"]
            return listed if len(listed) == 95 else []

        left = max(1.0, 60 - (time.monotonic() - started))
        devices = wait_for(every_device, "the fleet's 95 devices", timeout=left)
        first = {
            s["site"]: next(d["device"] for d in devices if d["site"] == s["site"]) for s in sites
        }

        def recent(site: str, device: str) -> Any:
            return console.get(f"/api/v1/devices/{site}/{device}")["recent"]

        for site, device in first.items():
            left = max(1.0, 60 - (time.monotonic() - started))
            wait_for(lambda s=site, d=device: recent(s, d), f"recent values of {device}", left)
        site, device = next(iter(first.items()))
        polled = recent(site, device)["ts"]
        wait_for(lambda: recent(site, device)["ts"] > polled, f"a newer poll of {device}")

        # Ctrl-C: the whole process group goes within seconds and leaves nothing behind
        os.killpg(pgid, signal.SIGINT)
        assert process.wait(timeout=15) == 0
        wait_for(lambda: not group_alive(pgid), "every process of the demo gone", timeout=10)
        assert port_free(port), f"port {port} still taken"
        assert not Path(state).exists(), "the demo's temporary state directory is left"
        text = Path(out.name).read_text()
        assert "enoc demo: stopped" in text
        assert "Traceback" not in text
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
        out.close()


async def test_a_trap_port_taken_before_the_agent_binds_it_is_chosen_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trap port is chosen free before the agent binds it, and another program can take it
    in between (a parallel test did, once): the demo then starts the agent again with
    another port, and the site's traps go to the one the agent listens on."""
    import asyncio
    import functools

    from enoc import demo
    from simulators.fleet import DeviceGroup, FleetSpec, SiteSpec, build_devices
    from simulators.inventory_out import inventory
    from simulators.server import Simulator

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    ports = iter([taken.getsockname()[1], free_port("udp")])
    handed: list[int] = []

    def next_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
        assert kind == "udp"
        handed.append(next(ports))
        return handed[-1]

    monkeypatch.setattr(demo, "free_port", next_port)
    spec = FleetSpec(
        sites=[SiteSpec("nyc", "americas", devices=[DeviceGroup("ce-router", 1, 2)])],
        port=free_port("udp", "127.16.0.1"),
    )
    devices = build_devices(spec, time.time())
    the_demo = demo.Demo(demo.DemoOptions(state_dir=tmp_path, say=lambda _: None))
    the_demo.sim = Simulator(devices)
    stop = asyncio.Event()
    await the_demo.sim.start()
    try:
        full = inventory(the_demo.sim, devices)
        config_for = functools.partial(
            the_demo._agent_config, tmp_path, "nyc", "americas", full, free_port()
        )
        await the_demo._start_agent("nyc", config_for, stop)
        agent = the_demo.agents["nyc"]
        assert len(handed) == 2 and agent.trap_address == ("127.0.0.1", handed[1])
        (receiver,) = the_demo.sim.trap_receivers
        assert (receiver.port, receiver.site) == (handed[1], "nyc")
        the_demo.sim.inject(devices[0].name, {"kind": "link_down", "ifIndex": 1})
        deadline = time.monotonic() + 10
        while agent.traps.stats.received == 0:
            assert time.monotonic() < deadline, "the simulator's linkDown never reached the agent"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*the_demo.tasks)
        await the_demo.sim.close()
        taken.close()
