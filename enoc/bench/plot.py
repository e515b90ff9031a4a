"""A small PNG line-chart writer for the benchmarks: pure Python (zlib + struct), no matplotlib.

`render([Panel(...), ...])` draws panels stacked one above the other, each a
few polylines over a shared kind of x axis, with ticks, labels and a legend,
and returns the bytes of an 8-bit RGB PNG. Text uses a built-in 5x7 bitmap
font (capitals, digits and the punctuation charts need; lower case is drawn
as capitals).
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

Color = tuple[int, int, int]

PALETTE: tuple[Color, ...] = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
)
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)
AXIS: Color = (90, 90, 90)

# 5x7 glyphs, one int per row, bit 4 the leftmost pixel.
GLYPHS: dict[str, tuple[int, ...]] = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C),
    ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    "-": (0, 0, 0, 0x1F, 0, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 0x1F),
    "/": (0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0),
    "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02),
    ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0),
    "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "<": (0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02),
    "'": (0x04, 0x04, 0x08, 0, 0, 0, 0),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04),
}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: Color | None = None
    style: str = "line"  # "line", "dots" or "both"


@dataclass
class Panel:
    title: str
    series: list[Series] = field(default_factory=list)
    x_label: str = "seconds"
    y_label: str = ""


class Canvas:
    """An RGB image in a bytearray, with the few drawing operations a chart needs."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """The rectangle from (x0, y0) to (x1, y1), both included."""
        x0, x1 = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height - 1, max(y0, y1))
        if x0 > x1 or y0 > y1:
            return
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = (y * self.width + x0) * 3
            self.pixels[i : i + len(row)] = row

    def line(
        self,
        x0: int,
        y0: int,
        x1: int,
        y1: int,
        color: Color,
        width: int = 1,
        clip: tuple[int, int, int, int] | None = None,
    ) -> None:
        """Bresenham; `width` 2 or more thickens it; `clip` is (left, top, right, bottom)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        x, y = x0, y0
        left, top, right, bottom = clip or (0, 0, self.width - 1, self.height - 1)
        for _ in range(dx - dy + 1):
            for ox in range(width):
                for oy in range(width):
                    px, py = x + ox - width // 2, y + oy - width // 2
                    if left <= px <= right and top <= py <= bottom:
                        self.set(px, py, color)
            if x == x1 and y == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x += sx
            if e2 <= dx:
                err += dx
                y += sy

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> int:
        """Draws `text` with its top-left corner at (x, y); returns the width drawn."""
        cx = x
        for char in text:
            glyph = GLYPHS.get(char.upper(), GLYPHS["?"])
            for row, bits in enumerate(glyph):
                for col in range(GLYPH_W):
                    if bits & (0x10 >> col):
                        top = y + row * scale
                        self.fill(
                            cx + col * scale,
                            top,
                            cx + col * scale + scale - 1,
                            top + scale - 1,
                            color,
                        )
            cx += ADVANCE * scale
        return cx - x

    def png(self) -> bytes:
        return encode_png(self.width, self.height, bytes(self.pixels))


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * ADVANCE * scale


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of `rgb` (rows top to bottom, 3 bytes a pixel), filter 0 on every row."""
    if len(rgb) != width * height * 3:
        raise ValueError("pixel data does not match the size")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering lo..hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def label(value: float) -> str:
    """A short tick label: 1.5k, 2M, 0.25."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def render(
    panels: Sequence[Panel], *, width: int = 960, panel_height: int = 280, title: str = ""
) -> bytes:
    """The panels stacked one above the other, as PNG bytes."""
    top_title = 30 if title else 0
    canvas = Canvas(width, top_title + panel_height * max(1, len(panels)))
    if title:
        canvas.text(12, 8, title, BLACK, scale=2)
    for n, panel in enumerate(panels):
        draw_panel(canvas, panel, 0, top_title + n * panel_height, width, panel_height)
    return canvas.png()


def draw_panel(canvas: Canvas, panel: Panel, x: int, y: int, width: int, height: int) -> None:
    left, right = x + 78, x + width - 20
    top, bottom = y + 30, y + height - 42
    scale = 2 if text_width(panel.title, 2) < width - 300 else 1
    drawn = canvas.text(left, y + 10, panel.title, BLACK, scale=scale)
    if panel.y_label:
        canvas.text(left + drawn + 12, y + 10 + 7 * (scale - 1), f"({panel.y_label})", AXIS)
    points = [
        p for s in panel.series for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])
    ]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] or [0.0, 1.0]
    x_ticks = nice_ticks(min(xs), max(xs), 8)
    y_ticks = nice_ticks(min(0.0, *ys), max(ys), 5)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(value: float) -> int:
        return left + round((value - x_lo) / ((x_hi - x_lo) or 1.0) * (right - left))

    def py(value: float) -> int:
        return bottom - round((value - y_lo) / ((y_hi - y_lo) or 1.0) * (bottom - top))

    for tick in y_ticks:
        ty = py(tick)
        canvas.line(left, ty, right, ty, GRID)
        canvas.line(left - 4, ty, left, ty, AXIS)
        text = label(tick)
        canvas.text(left - 8 - text_width(text), ty - GLYPH_H // 2, text, AXIS)
    for tick in x_ticks:
        tx = px(tick)
        canvas.line(tx, top, tx, bottom, GRID)
        canvas.line(tx, bottom, tx, bottom + 4, AXIS)
        text = label(tick)
        canvas.text(tx - text_width(text) // 2, bottom + 8, text, AXIS)
    canvas.line(left, top, left, bottom, AXIS)
    canvas.line(left, bottom, right, bottom, AXIS)
    if panel.x_label:
        canvas.text(
            (left + right - text_width(panel.x_label)) // 2, bottom + 22, panel.x_label, AXIS
        )
    clip = (left, top, right, bottom)
    for n, series in enumerate(panel.series):
        color = series.color or PALETTE[n % len(PALETTE)]
        line = [(px(a), py(b)) for a, b in series.points if math.isfinite(a) and math.isfinite(b)]
        if series.style in ("dots", "both") or len(line) == 1:
            for cx, cy in line:
                if left <= cx <= right and top <= cy <= bottom:
                    canvas.fill(cx - 1, cy - 1, cx + 1, cy + 1, color)
        if series.style in ("line", "both"):
            for (ax, ay), (bx, by) in itertools.pairwise(line):
                canvas.line(ax, ay, bx, by, color, width=2, clip=clip)
    # legend, top right inside the plot area
    entries = [(s.name, s.color or PALETTE[n % len(PALETTE)]) for n, s in enumerate(panel.series)]
    if entries:
        box_w = max(text_width(name) for name, _ in entries) + 26
        lx, ly = right - box_w - 6, top + 6
        canvas.fill(lx, ly, lx + box_w, ly + 6 + 12 * len(entries), WHITE)
        for i, (name, color) in enumerate(entries):
            ey = ly + 5 + 12 * i
            canvas.fill(lx + 5, ey, lx + 14, ey + 7, color)
            canvas.text(lx + 20, ey, name, BLACK)


def write(path: Path, panels: Sequence[Panel], **options: int | str) -> Path:
    """Render the panels into `path` (a .png file) and return it."""
    width = int(options.get("width", 960))
    panel_height = int(options.get("panel_height", 280))
    title = str(options.get("title", ""))
    path.write_bytes(render(panels, width=width, panel_height=panel_height, title=title))
    return path
