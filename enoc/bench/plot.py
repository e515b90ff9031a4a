"""The benchmarks' PNG charts, drawn by matplotlib (the optional `bench` extra).

`figure([...], title=...)` lays out panels one above the other: a `Panel` is a few
series over a shared x axis (time, or fleet size), a `Bars` panel one bar per
measured program, enoc's own in the accent colour beside its peers in grey.
`render` returns the PNG's bytes and `write` saves it. matplotlib is imported
only when a chart is drawn, with its Agg backend (no display, no global pyplot
state), so the benches that draw none run without the extra.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
TITLE_HEIGHT = 60  # pixels above the panels for the figure's title
ENOC_COLOR = "tab:blue"
PEER_COLOR = "tab:gray"
# line for a continuous measure, dots for scattered samples, both for a few sizes
MARKERS = {"line": ("-", ""), "dots": ("", "."), "both": ("-", "o")}


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    style: str = "line"  # "line", "dots" or "both"


@dataclass
class Panel:
    """Series over one x axis; the labels carry their units, e.g. `time (s)`."""

    title: str
    series: list[Series] = field(default_factory=list)
    x_label: str = "time (s)"
    y_label: str = ""


@dataclass
class Bars:
    """One bar per program; a label starting with `enoc` is drawn as ours, the rest as peers."""

    title: str
    bars: list[tuple[str, float]] = field(default_factory=list)
    y_label: str = ""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed: the `bench` extra is missing."""


def require() -> None:
    """Raise PlotUnavailable now, before a bench spends minutes measuring, if no chart
    could be drawn at its end."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            "the benchmarks' charts need matplotlib: install the bench extra "
            "(`uv sync --extra bench` or `pip install 'enoc[bench]'`)"
        ) from exc


def figure(
    panels: Sequence[Panel | Bars], *, width: int = 960, panel_height: int = 280, title: str = ""
) -> Figure:
    """The chart as a matplotlib figure, not yet drawn: tests read its texts and data."""
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = TITLE_HEIGHT + panel_height * max(1, len(panels))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize="large", fontweight="bold")
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=False):
        if isinstance(panel, Bars):
            draw_bars(ax, panel)
        else:
            draw_lines(ax, panel)
    return fig


def thousands(value: float, _position: float = 0) -> str:
    """Tick labels as the tables print numbers: 12,000 and 0.05."""
    return f"{value:,g}" if abs(value) < 1e6 else f"{value:,.0f}"


def draw_lines(ax: Axes, panel: Panel) -> None:
    ax.set_title(panel.title, loc="left")
    for series in panel.series:
        line, marker = MARKERS.get(series.style, MARKERS["line"])
        xs = [x for x, _ in series.points]
        ys = [y for _, y in series.points]
        ax.plot(xs, ys, linestyle=line or "none", marker=marker or None, label=series.name)
    ax.set_xlabel(panel.x_label)
    ax.set_ylabel(panel.y_label)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(thousands)
    ax.grid(visible=True, alpha=0.3)
    if panel.series:
        ax.legend(loc="best", fontsize="small", ncols=min(3, len(panel.series)))


def draw_bars(ax: Axes, panel: Bars) -> None:
    ax.set_title(panel.title, loc="left")
    names = [name for name, _ in panel.bars]
    values = [value for _, value in panel.bars]
    colors = [ENOC_COLOR if name.startswith("enoc") else PEER_COLOR for name in names]
    bars = ax.barh(names, values, color=colors)
    ax.bar_label(bars, labels=[f"{value:,.0f}" for value in values], padding=3)
    ax.set_xlabel(panel.y_label)
    ax.xaxis.set_major_formatter(thousands)
    ax.invert_yaxis()  # first measured on top, as in the printed table
    ax.grid(visible=True, axis="x", alpha=0.3)
    ax.margins(x=0.15)  # room for the value labels


def render(
    panels: Sequence[Panel | Bars], *, width: int = 960, panel_height: int = 280, title: str = ""
) -> bytes:
    """The chart as PNG bytes."""
    out = io.BytesIO()
    fig = figure(panels, width=width, panel_height=panel_height, title=title)
    fig.savefig(out, format="png")
    return out.getvalue()


def write(path: Path, panels: Sequence[Panel | Bars], *, title: str = "") -> Path:
    path.write_bytes(render(panels, title=title))
    return path
