"""`enoc bench console`: is the console still responsive with a big fleet?

A real `enoc collector` process (SQLite, Mosquitto) is loaded through MQTT with
`--devices` devices over `--sites` sites (the agents' birth messages) and
`--incidents` open incidents. Then:

- API: the time of the two calls the console makes on load, the site list and
  the active incidents;
- browser: Debian's headless Chromium logs in and loads the board and the
  overview; the figure is navigation to the last row or tile rendered
  (median of `--loads` loads);
- SSE fan-out: `--clients` connections on `/api/v1/stream` while `--changes`
  new incidents arrive over MQTT; every client must see every change; the
  figure is the delay from publishing the event to each client reading it,
  with the collector's CPU-seconds for the whole fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import psutil
import yaml

from enoc.bench.collector import healthz, percentile, start_collector
from enoc.bench.common import add_results_argument, machine, peak_rss_mib, progress, write_result
from enoc.wire import (
    DeviceInfo,
    Event,
    EventsMessage,
    Severity,
    StatusMessage,
    encode,
    topic,
)
from testbed.servers import Mosquitto, free_port

TOKEN = secrets.token_hex(16)
PASSWORD = secrets.token_urlsafe(16)
CHROMIUM = "/usr/bin/chromium"
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "warning")


@dataclass
class Result:
    devices: int
    sites: int
    incidents: int
    clients: int
    changes: int
    machine: dict[str, Any]
    api_sites_ms: float = 0.0
    api_incidents_ms: float = 0.0
    board_load_ms: list[float] = field(default_factory=list)
    overview_load_ms: list[float] = field(default_factory=list)
    board_rows: int = 0
    browser: str = ""
    delivered: int = 0
    expected: int = 0
    fanout_ms: list[float] = field(default_factory=list)
    fanout_cpu_s: float = 0.0
    collector_peak_rss_mib: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=5000, help="devices in the fleet")
    parser.add_argument("--sites", type=int, default=50, help="sites (one agent each)")
    parser.add_argument("--incidents", type=int, default=500, help="open incidents")
    parser.add_argument("--clients", type=int, default=50, help="SSE connections")
    parser.add_argument("--changes", type=int, default=200, help="incident changes fanned out")
    parser.add_argument("--loads", type=int, default=5, help="browser page loads to time")
    add_results_argument(parser)


def run(args: argparse.Namespace) -> int:
    if min(args.devices, args.sites, args.incidents, args.clients, args.changes) < 1:
        print("enoc bench console: every count must be at least 1")
        return 2
    if args.sites > args.devices:
        print("enoc bench console: --sites cannot exceed --devices")
        return 2
    result = asyncio.run(measure(args))
    print_table(result)
    payload = asdict(result)
    payload["fanout_p50_ms"] = percentile(result.fanout_ms, 50)
    payload["fanout_p99_ms"] = percentile(result.fanout_ms, 99)
    write_result(args.results, "console", payload)
    return 0 if result.delivered == result.expected else 1


def fleet(devices: int, sites: int) -> dict[str, list[DeviceInfo]]:
    out: dict[str, list[DeviceInfo]] = {f"s{s:03d}": [] for s in range(sites)}
    names = list(out)
    for d in range(devices):
        site = names[d % sites]
        n = len(out[site])
        address = f"127.{60 + d // 65000}.{(d // 250) % 256}.{d % 250 + 1}"
        parent = f"{site}-ce" if n else ""
        out[site].append(
            DeviceInfo(f"{site}-ce" if n == 0 else f"{site}-d{n}", address, "", parent)
        )
    return out


async def measure(args: argparse.Namespace) -> Result:
    result = Result(args.devices, args.sites, args.incidents, args.clients, args.changes, machine())
    sites = fleet(args.devices, args.sites)
    with tempfile.TemporaryDirectory(prefix="enoc-bench-console-") as tmp_name:
        tmp = Path(tmp_name)
        with Mosquitto(tmp / "mosquitto") as broker:
            config = collector_config(tmp, broker.url)
            port = int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])
            proc = start_collector(config)
            collector = psutil.Process(proc.pid)
            try:
                progress("starting the collector...")
                await wait_until(lambda: healthz(port), "collector healthy", proc=proc)
                base = f"http://127.0.0.1:{port}"
                host, _, mqtt_port = broker.url.removeprefix("mqtt://").partition(":")
                async with aiomqtt.Client(host, int(mqtt_port), identifier="bench-console") as mq:
                    progress(f"loading {args.devices} devices, {args.incidents} incidents...")
                    await load_fleet(mq, sites, args.incidents)
                    async with aiohttp.ClientSession(
                        headers={"Authorization": f"Bearer {TOKEN}"}
                    ) as http:
                        await wait_loaded(http, base, args.devices, args.incidents, proc)
                        result.api_sites_ms = await timed_get(http, f"{base}/api/v1/sites")
                        result.api_incidents_ms = await timed_get(
                            http, f"{base}/api/v1/incidents?state=active&limit=2000"
                        )
                        await browser_loads(base, args, result)
                        progress(f"fanning {args.changes} changes out to {args.clients} clients")
                        await fanout(mq, http, base, sites, args, result, collector)
                result.collector_peak_rss_mib = peak_rss_mib(collector)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except Exception:
                    proc.kill()
    progress("")
    return result


def collector_config(tmp: Path, broker: str) -> Path:
    from collector.auth import hash_password

    users = tmp / "users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "bench", "role": "viewer", "token": TOKEN},
                    {"name": "ops", "role": "operator", "password_hash": hash_password(PASSWORD)},
                ]
            }
        )
    )
    config = {
        "mqtt": {"url": broker, "client_id": "enoc-bench-console"},
        "store": {"url": f"sqlite:///{tmp / 'incidents.db'}"},
        "http": {
            "listen": f"127.0.0.1:{free_port()}",
            "users_file": str(users),
            # the fan-out's clients are all one user, and as many as --clients asks
            "stream_max_clients_per_user": 100_000,
            "stream_max_clients": 100_000,
        },
        "incidents": {"agent_timeout": "1h"},
        "log": {"level": "warning"},
    }
    path = tmp / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def wait_until(check: Any, what: str, *, proc: Any = None, limit_s: float = 120) -> None:
    """Poll `check()` (sync or async) until true; fail if the collector exits meanwhile."""
    for _ in range(int(limit_s / 0.2)):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the collector exited while waiting for {what}")
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


async def load_fleet(
    mq: aiomqtt.Client, sites: dict[str, list[DeviceInfo]], incidents: int
) -> None:
    now = time.time()
    for site, devices in sites.items():
        status = StatusMessage(f"{site}-a", site, "bench", 1, now, devices=devices)
        await mq.publish(topic(site, f"{site}-a", "status"), encode(status), qos=1, retain=True)
    names = list(sites)
    for i in range(incidents):
        site = names[i % len(names)]
        devices = sites[site]
        device = devices[(i // len(names)) % len(devices)].name
        event = Event(
            f"load-{i}",
            now,
            device,
            f"if:{i}",
            "link",
            "down",
            SEVERITIES[i % len(SEVERITIES)],
            f"{device} link {i} down",
        )
        message = EventsMessage(f"{site}-a", site, "bench", 2 + i, now, events=[event])
        await mq.publish(topic(site, f"{site}-a", "events"), encode(message), qos=1)


async def wait_loaded(
    http: aiohttp.ClientSession, base: str, devices: int, incidents: int, proc: Any
) -> None:
    async def loaded() -> bool:
        async with http.get(f"{base}/api/v1/devices") as r:
            listed = len((await r.json())["devices"])
        async with http.get(f"{base}/api/v1/incidents?state=active&limit=5000") as r:
            open_ = len((await r.json())["incidents"])
        return listed == devices and open_ == incidents

    await wait_until(loaded, "the fleet and incidents in the collector", proc=proc)


async def timed_get(http: aiohttp.ClientSession, url: str, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with http.get(url) as r:
            await r.read()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


async def browser_loads(base: str, args: argparse.Namespace, result: Result) -> None:
    if not Path(CHROMIUM).exists():
        result.browser = f"skipped: {CHROMIUM} is not installed"
        return
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        result.browser = "skipped: playwright is not installed (uv sync)"
        return
    progress("timing the board and the overview in Chromium...")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        result.browser = f"Chromium {browser.version}"
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(f"{base}/")
        await page.fill("#login-name", "ops")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector(".tile")
        for _ in range(args.loads):
            for target, selector, sink in (
                ("#/board", "tr.incident", result.board_load_ms),
                ("#/overview", ".tile", result.overview_load_ms),
            ):
                started = time.perf_counter()
                await page.goto(f"{base}/{target}")
                await page.reload()  # a full load: HTML, script, API calls, render
                want = args.incidents if selector == "tr.incident" else args.sites
                # polled from here: the page's CSP (no eval) rules out wait_for_function
                for _ in range(6000):  # at most a minute
                    if await page.locator(selector).count() >= want:
                        break
                    await asyncio.sleep(0.01)
                if selector == "tr.incident":
                    result.board_rows = await page.locator(selector).count()
                sink.append(round((time.perf_counter() - started) * 1000, 1))
        await browser.close()


async def fanout(
    mq: aiomqtt.Client,
    http: aiohttp.ClientSession,
    base: str,
    sites: dict[str, list[DeviceInfo]],
    args: argparse.Namespace,
    result: Result,
    collector: psutil.Process,
) -> None:
    sent: dict[str, float] = {}
    received: list[dict[str, float]] = [{} for _ in range(args.clients)]
    ready = [asyncio.Event() for _ in range(args.clients)]

    async def client(n: int) -> None:
        async with http.get(
            f"{base}/api/v1/stream", timeout=aiohttp.ClientTimeout(total=None)
        ) as r:
            ready[n].set()
            event = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "incident":
                    data = json.loads(line[5:])
                    resource = data["incident"]["resource"]
                    if resource.startswith("fan:") and resource not in received[n]:
                        received[n][resource] = time.perf_counter()
                        if len(received[n]) == args.changes:
                            return

    tasks = [asyncio.create_task(client(n)) for n in range(args.clients)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 30)
    await asyncio.sleep(0.5)
    names = list(sites)
    cpu_before = cpu_seconds(collector)
    for i in range(args.changes):
        site = names[i % len(names)]
        device = sites[site][0].name
        resource = f"fan:{i}"
        event = Event(f"fan-{i}", time.time(), device, resource, "link", "down", "major", "fan-out")
        message = EventsMessage(f"{site}-a", site, "bench", 100_000 + i, time.time(), [event])
        sent[resource] = time.perf_counter()
        await mq.publish(topic(site, f"{site}-a", "events"), encode(message), qos=1)
        await asyncio.sleep(0.02)  # 50 changes a second: a busy NOC, not a flood
    _done, pending = await asyncio.wait(tasks, timeout=60)
    for task in pending:
        task.cancel()
    result.fanout_cpu_s = round(cpu_seconds(collector) - cpu_before, 2)
    result.expected = args.clients * args.changes
    for got in received:
        result.delivered += len(got)
        result.fanout_ms.extend(round((t - sent[k]) * 1000, 2) for k, t in got.items())
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def print_table(result: Result) -> None:
    print(f"machine: {result.machine['cpus']} CPUs, {result.machine['cpu_model']}")
    print(
        f"fleet: {result.devices} devices at {result.sites} sites, "
        f"{result.incidents} open incidents\n"
    )
    print(f"API  GET /api/v1/sites                      {result.api_sites_ms:8.1f} ms (median)")
    print(f"API  GET /api/v1/incidents?state=active     {result.api_incidents_ms:8.1f} ms (median)")
    if result.board_load_ms:
        print(
            f"browser ({result.browser}): board with {result.board_rows} rows "
            f"{statistics.median(result.board_load_ms):.0f} ms, overview with "
            f"{result.sites} tiles {statistics.median(result.overview_load_ms):.0f} ms "
            f"(median of {len(result.board_load_ms)} full loads)"
        )
    else:
        print(f"browser: {result.browser}")
    print(
        f"SSE fan-out: {result.changes} changes x {result.clients} clients: "
        f"{result.delivered}/{result.expected} delivered, "
        f"p50 {percentile(result.fanout_ms, 50)} ms, p99 {percentile(result.fanout_ms, 99)} ms, "
        f"max {max(result.fanout_ms, default=0)} ms; collector {result.fanout_cpu_s} CPU-s, "
        f"peak RSS {result.collector_peak_rss_mib:.0f} MiB"
    )
