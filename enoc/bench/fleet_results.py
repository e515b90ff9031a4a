"""What `enoc bench fleet` measures, the helpers its figures share, and its report:
the table it prints and the chart it draws."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from enoc.bench import plot
from enoc.bench.common import PerCpuSecond, peak_rss_mib

COMPONENTS = ("sim", "agents", "broker", "collector", "database")


@dataclass
class Component:
    name: str
    processes: int
    cpu_s: float  # in the measured window
    cpu_total_s: float  # from start to the end of the window, startup included
    peak_rss_mib: float  # the largest process's peak resident set
    peak_rss_sum_mib: float  # every process's peak, added (an upper bound at any one time)


@dataclass
class Peer(PerCpuSecond):
    devices: int
    sim_cpu_s: float


@dataclass
class FleetResult:
    label: str
    devices: int
    sites: int
    interfaces: int
    interval_s: float
    snmp_version: str
    window_s: float = 0.0
    warmup_s: float = 0.0
    startup_s: dict[str, float] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    cpu_ms_per_device_interval: dict[str, float] = field(default_factory=dict)
    varbinds: int = 0
    varbinds_per_s: float = 0.0
    agent_varbinds_per_cpu_s: float = 0.0
    polls: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    messages_per_s: float = 0.0
    points_written: int = 0
    points_per_s: float = 0.0
    health: dict[str, float] = field(default_factory=dict)
    accounting: dict[str, int] = field(default_factory=dict)
    lag: dict[str, Any] = field(default_factory=dict)
    incidents: dict[str, Any] | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)
    lag_series: list[tuple[float, float]] = field(default_factory=list)
    broker_lag_series: list[tuple[float, float]] = field(default_factory=list)
    harness_cpu_s: float = 0.0


@dataclass
class Result:
    machine: dict[str, Any]
    arguments: dict[str, Any]
    fleet: FleetResult | None = None
    peers: list[Peer] = field(default_factory=list)
    growth: list[dict[str, Any]] = field(default_factory=list)
    runtime_s: float = 0.0
    plot: str = ""


# ------------------------------------------------------------------ one fleet run


def cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def rss_peak(process: psutil.Process) -> float:
    try:
        return peak_rss_mib(process)
    except psutil.Error:
        return 0.0


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 4)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1], 4)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "samples": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": round(max(values), 4) if values else None,
    }


def credentials(inventory: dict[str, Any], version: str) -> dict[str, Any]:
    if version == "2c":
        return {"sim": {"version": "2c", "community": "public"}}
    v3 = next(c for c in inventory["credentials"].values() if c.get("version") == "3")
    return {"sim": v3}


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------ report


def growth_row(fleet: FleetResult) -> dict[str, Any]:
    agents = next((c for c in fleet.components if c.name == "agents"), None)
    lag = fleet.lag.get("poll_to_database_s", {})
    return {
        "devices": fleet.devices,
        "sites": fleet.sites,
        "agents": agents.processes if agents else 0,
        "window_s": fleet.window_s,
        "cpu_ms_per_device_interval": fleet.cpu_ms_per_device_interval,
        "cpu_s": {c.name: c.cpu_s for c in fleet.components},
        "peak_rss_sum_mib": {c.name: c.peak_rss_sum_mib for c in fleet.components},
        "varbinds_per_s": fleet.varbinds_per_s,
        "points_per_s": fleet.points_per_s,
        "overruns": fleet.health.get("overruns", 0),
        "polls_failed": fleet.health.get("polls_failed", 0),
        "points_lost": fleet.accounting.get("points_lost", 0),
        "lag_p50_s": lag.get("p50"),
        "startup_s": fleet.startup_s,
    }


def peer_ratios(peers: list[Peer]) -> dict[str, dict[str, float]]:
    """Each poller's varbinds per CPU-second and wall time against every other's."""
    out: dict[str, dict[str, float]] = {}
    for a in peers:
        for b in peers:
            if a is not b and b.per_cpu_s and a.wall_s:
                out.setdefault(a.name, {})[f"per_cpu_s_vs_{b.name}"] = round(
                    a.per_cpu_s / b.per_cpu_s, 2
                )
                out[a.name][f"wall_vs_{b.name}"] = round(a.wall_s / b.wall_s, 2)
    return out


def headline(result: Result) -> str:
    fleet = result.fleet
    if fleet is None:
        return "enoc bench fleet"
    return (
        f"enoc bench fleet: {fleet.devices:,} devices x {fleet.interfaces} interfaces, "
        f"{fleet.sites} agents, every {fleet.interval_s:g} s"
    )


def panels(result: Result) -> list[plot.Panel | plot.Bars]:
    """The chart: throughput and lag over the measured window, enoc beside its peers, growth."""
    fleet = result.fleet
    out: list[plot.Panel | plot.Bars] = []
    since = "time since every agent was online (s)"
    if fleet is not None:
        rows = fleet.timeline
        out.append(
            plot.Panel(
                "Varbinds polled per second (agents' heartbeats)",
                [plot.Series("enoc agents", [(r["t"], r["varbinds_per_s"]) for r in rows])],
                x_label=since,
                y_label="varbinds/s",
            )
        )
        out.append(
            plot.Panel(
                "Points per second",
                [
                    plot.Series(
                        "published (agents)", [(r["t"], r["published_per_s"]) for r in rows]
                    ),
                    plot.Series("written (collector)", [(r["t"], r["points_per_s"]) for r in rows]),
                ],
                x_label=since,
                y_label="points/s",
            )
        )
        out.append(
            plot.Panel(
                "Lag from poll start",
                [
                    plot.Series("to the broker (max per 5 s)", fleet.broker_lag_series),
                    plot.Series("to readable in VictoriaMetrics", fleet.lag_series, style="dots"),
                ],
                x_label=since,
                y_label="lag (s)",
            )
        )
    if result.peers:
        out.append(
            plot.Bars(
                "One poll of every device: enoc beside its peers (higher is cheaper)",
                [(peer.name, peer.per_cpu_s) for peer in result.peers],
                y_label="varbinds per CPU-second",
            )
        )
    if result.growth:
        series = [
            plot.Series(
                name,
                [
                    (float(g["devices"]), g["cpu_ms_per_device_interval"][name])
                    for g in result.growth
                ],
                style="both",
            )
            for name in (*COMPONENTS, "total")
        ]
        out.append(
            plot.Panel(
                "Growth: CPU per device per poll interval (flat is linear)",
                series,
                x_label="devices",
                y_label="CPU (ms per device per interval)",
            )
        )
    return out


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def print_table(result: Result) -> None:
    m = result.machine
    print(f"machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB")
    fleet = result.fleet
    if fleet is not None:
        print_fleet(fleet)
    if result.peers:
        print_peers(result.peers)
    if result.growth:
        print_growth(result.growth)
    print(f"\nruntime {result.runtime_s:.0f} s")


def print_fleet(f: FleetResult) -> None:
    agents = next(c for c in f.components if c.name == "agents")
    print(
        f"fleet: {f.devices:,} devices x {f.interfaces} interfaces at {f.sites} sites "
        f"({agents.processes} agent processes), SNMP v{f.snmp_version}, polled every "
        f"{f.interval_s:g} s; measured {f.window_s:.0f} s ({f.window_s / f.interval_s:.1f} "
        f"intervals) after {f.warmup_s:g} s of warm-up; startup "
        f"{', '.join(f'{k} {v:.1f} s' for k, v in f.startup_s.items())}\n"
    )
    print(
        f"{'component':28} {'procs':>5} {'CPU s':>8} {'CPU %':>6} {'ms/device/interval':>19} "
        f"{'peak MiB (max / sum)':>21}"
    )
    names = {
        "sim": "simulator (enoc sim)",
        "agents": "agents (enoc agent)",
        "broker": "broker (Mosquitto)",
        "collector": "collector (enoc collector)",
        "database": "database (VictoriaMetrics)",
    }
    window = max(0.001, f.window_s)
    for c in f.components:
        print(
            f"{names.get(c.name, c.name):28} {c.processes:>5} {c.cpu_s:>8.2f} "
            f"{100 * c.cpu_s / window:>5.1f}% {f.cpu_ms_per_device_interval[c.name]:>19.3f} "
            f"{c.peak_rss_mib:>10.0f} / {c.peak_rss_sum_mib:>8.0f}"
        )
    total = sum(c.cpu_s for c in f.components)
    print(
        f"{'total':28} {'':>5} {total:>8.2f} {100 * total / window:>5.1f}% "
        f"{f.cpu_ms_per_device_interval['total']:>19.3f}"
    )
    if f.intervals:
        print(
            f"\nCPU-seconds per poll interval: {'sim':>7} {'agents':>7} {'broker':>7} "
            f"{'collector':>9} {'database':>8} {'total':>7} {'varbinds':>9} {'points':>8}"
        )
        for row in f.intervals:
            cpu = row["cpu_s"]
            print(
                f"  interval {row['interval']:<19} {cpu['sim']:>7.2f} {cpu['agents']:>7.2f} "
                f"{cpu['broker']:>7.2f} {cpu['collector']:>9.2f} {cpu['database']:>8.2f} "
                f"{sum(cpu.values()):>7.2f} {row['varbinds']:>9,} {row['points']:>8,}"
            )
    h, a = f.health, f.accounting
    print(
        f"\nthroughput   {f.varbinds_per_s:,.0f} varbinds/s, {f.messages_per_s:,.1f} messages/s, "
        f"{f.points_per_s:,.0f} points/s written; agents {f.agent_varbinds_per_cpu_s:,.0f} "
        f"varbinds per CPU-second"
    )
    print(
        f"polls        {h.get('polls_ok_total', 0):,.0f} ok, "
        f"{h.get('polls_failed', 0):.0f} failed, "
        f"overruns {h.get('overruns', 0):.0f}, deadline exceeded "
        f"{h.get('deadline_exceeded', 0):.0f}, starved {h.get('starved', 0):.0f}, "
        f"SNMP timeouts {h.get('snmp_timeouts', 0):.0f}; event-loop lag max "
        f"{h.get('loop_lag_ms_max', 0):.1f} ms"
    )
    print(
        f"accounting   published {a.get('points_published', 0):,} points "
        f"+ {a.get('health_points_published', 0):,} heartbeats + "
        f"{a.get('incident_points', 0):,} incident changes -> written "
        f"{a.get('points_written', 0):,} (lost {a.get('points_lost', 0)}, extra "
        f"{a.get('points_extra', 0)}, dropped {a.get('points_dropped', 0)}); device samples in "
        f"VictoriaMetrics {a.get('device_samples_in_database', 0):,} of "
        f"{a.get('device_samples_published', 0):,}"
    )
    for key, what in (
        ("poll_to_broker_s", "poll -> broker"),
        ("poll_to_database_s", "poll -> readable in VictoriaMetrics"),
    ):
        s = f.lag.get(key, {})
        print(
            f"lag          {what}: p50 {fmt(s.get('p50'), ' s')}, p99 {fmt(s.get('p99'), ' s')}, "
            f"max {fmt(s.get('max'), ' s')} ({s.get('samples', 0):,} samples)"
        )
    inc = f.incidents
    if inc is not None:
        o, r = inc["open"], inc["resolve"]
        print(
            f"incidents    {inc['faults']} link faults, trap -> incident on /api/v1/stream: "
            f"opened p50 {fmt(o['p50'], ' ms', 1)}, max {fmt(o['max'], ' ms', 1)}; resolved p50 "
            f"{fmt(r['p50'], ' ms', 1)}, max {fmt(r['max'], ' ms', 1)}; missed {inc['missed']}"
        )


def print_peers(peers: list[Peer]) -> None:
    print("\none full poll of the fleet, same devices, same objects (before the fleet started)")
    header = f"{'poller':34} {'varbinds':>10} {'CPU s':>8} {'wall s':>7} {'varbinds/CPU-s':>15}"
    header += "".join(f" {'vs ' + short_name(p.name):>16}" for p in peers)
    print(header + f" {'sim CPU s':>10}")
    for p in peers:
        ratios = "".join(
            f" {(p.per_cpu_s / q.per_cpu_s if q.per_cpu_s else 0):>15.2f}x" for q in peers
        )
        print(
            f"{p.name:34} {p.varbinds:>10,} {p.cpu_s:>8.2f} {p.wall_s:>7.1f} "
            f"{p.per_cpu_s:>15,.0f}{ratios} {p.sim_cpu_s:>10.2f}"
        )
    for p in peers:
        details = ", ".join(f"{k}={v}" for k, v in p.extra.items())
        print(f"  {p.name}: {p.note}; {details}")


def short_name(name: str) -> str:
    if name.startswith("net-snmp"):
        return "snmpbulkwalk"
    if name.startswith("prometheus"):
        return "exporter"
    return "enoc agent"


def print_growth(rows: list[dict[str, Any]]) -> None:
    print("\ngrowth: CPU-milliseconds per device per poll interval (flat = linear cost)")
    print(
        f"{'devices':>8} {'agents':>6} {'sim':>7} {'agents':>7} {'broker':>7} {'collector':>9} "
        f"{'database':>8} {'total':>7} {'vs first':>8} {'points/s':>9} {'overruns':>8} "
        f"{'lag p50 s':>9}"
    )
    base = rows[0]["cpu_ms_per_device_interval"]["total"] if rows else 0
    for g in rows:
        ms = g["cpu_ms_per_device_interval"]
        ratio = ms["total"] / base if base else 0.0
        print(
            f"{g['devices']:>8,} {g['agents']:>6} {ms['sim']:>7.2f} {ms['agents']:>7.2f} "
            f"{ms['broker']:>7.2f} {ms['collector']:>9.2f} {ms['database']:>8.2f} "
            f"{ms['total']:>7.2f} {ratio:>7.2f}x {g['points_per_s']:>9,.0f} "
            f"{g['overruns']:>8.0f} {fmt(g['lag_p50_s'], '', 2):>9}"
        )
