"""The benchmarks' charts: matplotlib figures with the titles, axes and series the bench
gave, saved as a valid PNG of the size asked for."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy
import pytest
from benchkit import png_size
from matplotlib.patches import Rectangle

from enoc.bench import plot
from enoc.bench.fleet_results import Component, FleetResult, Peer, Result, panels


def test_a_chart_is_a_valid_png_of_the_size_asked_for(tmp_path: Path) -> None:
    panel = plot.Panel("points/s", [plot.Series("a", [(0, 1), (10, 5)])])
    bars = plot.Bars("peers", [("enoc agent", 3.0), ("snmpbulkwalk", 1.0)])
    data = plot.render([panel, bars], width=400, panel_height=200, title="t")
    assert png_size(data) == (400, plot.TITLE_HEIGHT + 2 * 200)
    written = plot.write(tmp_path / "chart.png", [panel], title="t")
    assert png_size(written.read_bytes()) == (960, plot.TITLE_HEIGHT + 280)


def fleet_result() -> Result:
    fleet = FleetResult("main", 20, 2, 4, 2.0, "2c")
    fleet.components = [Component("sim", 1, 1.0, 1.5, 50.0, 50.0)]
    fleet.timeline = [
        {"t": 0.0, "varbinds_per_s": 100.0, "points_per_s": 10.0, "published_per_s": 11.0},
        {"t": 5.0, "varbinds_per_s": 120.0, "points_per_s": 12.0, "published_per_s": 12.0},
    ]
    fleet.lag_series = [(1.0, 0.2), (4.0, 0.3)]
    fleet.broker_lag_series = [(0.0, 0.01), (5.0, 0.02)]
    peers = [
        Peer("net-snmp snmpbulkwalk v2c", 4000, 2.0, 3.0, devices=20, sim_cpu_s=1.0),
        Peer("enoc agent v2c", 4000, 0.5, 1.0, devices=20, sim_cpu_s=1.0),
    ]
    cpu = {"sim": 1.0, "agents": 2.0, "broker": 0.1, "collector": 0.5, "database": 0.3}
    growth = [
        {"devices": n, "cpu_ms_per_device_interval": {**cpu, "total": sum(cpu.values())}}
        for n in (10, 20)
    ]
    return Result({}, {}, fleet=fleet, peers=peers, growth=growth)


def test_the_fleet_chart_names_its_panels_axes_and_series() -> None:
    result = fleet_result()
    fig = plot.figure(panels(result), title="enoc bench fleet: 20 devices")
    assert fig.get_suptitle() == "enoc bench fleet: 20 devices"
    axes = fig.get_axes()
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles == [
        "Varbinds polled per second (agents' heartbeats)",
        "Points per second",
        "Lag from poll start",
        "One poll of every device: enoc beside its peers (higher is cheaper)",
        "Growth: CPU per device per poll interval (flat is linear)",
    ]
    throughput, points, lag, peers, growth = axes
    assert throughput.get_ylabel() == "varbinds/s"
    assert throughput.get_xlabel() == "time since every agent was online (s)"
    assert numpy.asarray(throughput.get_lines()[0].get_xydata()).tolist() == [
        [0.0, 100.0],
        [5.0, 120.0],
    ]
    legend = points.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "published (agents)",
        "written (collector)",
    ]
    assert lag.get_ylabel() == "lag (s)"
    assert [line.get_label() for line in lag.get_lines()] == [
        "to the broker (max per 5 s)",
        "to readable in VictoriaMetrics",
    ]
    # peers: one bar each, its width the varbinds per CPU-second, enoc's in its own colour
    names = [t.get_text() for t in peers.get_yticklabels()]
    assert names == ["net-snmp snmpbulkwalk v2c", "enoc agent v2c"]
    widths = [bar.get_width() for bar in peers.patches if isinstance(bar, Rectangle)]
    assert widths == [2000.0, 8000.0]
    assert peers.patches[0].get_facecolor() != peers.patches[1].get_facecolor()
    assert peers.get_xlabel() == "varbinds per CPU-second"
    growth_legend = growth.get_legend()
    assert growth_legend is not None
    assert [t.get_text() for t in growth_legend.get_texts()] == [
        "sim",
        "agents",
        "broker",
        "collector",
        "database",
        "total",
    ]
    assert numpy.asarray(growth.get_lines()[-1].get_xdata()).tolist() == [10.0, 20.0]
    assert growth.get_xlabel() == "devices"


def test_a_fleet_run_without_peers_or_growth_draws_only_its_window() -> None:
    result = fleet_result()
    result.peers, result.growth = [], []
    fig = plot.figure(panels(result))
    assert len(fig.get_axes()) == 3
    assert fig.get_suptitle() == ""


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(plot.PlotUnavailable, match="bench extra"):
        plot.require()
    with pytest.raises(plot.PlotUnavailable):
        plot.render([plot.Panel("p")])
