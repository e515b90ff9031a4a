"""`enoc demo` as a user runs it: one process, live data within a minute, the story's
faults become incidents, Ctrl-C stops everything and frees the port."""

from __future__ import annotations

import json
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

from enoc.localservers import InfluxDB1, free_port

pytestmark = pytest.mark.servers


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

        # the story: Nairobi flaps, Bangkok reboots, Brindisi loses its WAN and comes back
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
