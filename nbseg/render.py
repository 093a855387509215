"""Pure numpy rendering shared by training feedback, exports and widgets.

Colour tables, class overlays, contrast windows and the zoom/pan view transform of the
canvas image views: all testable without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data.multiroi import hex_to_rgb


def color_table(colors: Sequence[str]) -> np.ndarray:
    """``(K, 3)`` uint8 RGB table from ``"#rrggbb"`` colours."""
    return np.array([hex_to_rgb(c) for c in colors], dtype=np.uint8).reshape(-1, 3)


def to_uint8(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Window ``image`` to uint8: ``low``/``high`` default to its 0.5/99.5 percentiles."""
    a = np.asarray(image, dtype=np.float32)
    if low is None or high is None:
        finite = a[np.isfinite(a)]
        lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0)
        low = lo if low is None else low
        high = hi if high is None else high
    scale = 255.0 / max(float(high) - float(low), 1e-12)
    return np.clip((a - float(low)) * scale + 0.5, 0, 255).astype(np.uint8)


def render_overlay(
    gray: np.ndarray,
    labels: np.ndarray | None,
    colors: Sequence[str],
    opacity: float = 0.5,
    image_opacity: float = 1.0,
) -> np.ndarray:
    """Blend class colours over a grey image: uint8 ``(H, W, 3)``. Labels < 0 stay grey.

    A uint8 image is rendered through a ``(class, grey) → RGB`` lookup table (same values as
    the float formula, several times faster: interactive views redraw with it).
    """
    gray = np.asarray(gray)
    if gray.dtype == np.uint8:
        lut = overlay_lut(colors if labels is not None else (), opacity, image_opacity)
        if lut.shape[0] == 1:
            return lut[0][gray]
        lab = np.clip(np.asarray(labels), -1, lut.shape[0] - 2).astype(np.intp)
        index = (lab + 1) * 256 + gray
        return lut.reshape(-1, 3)[index]
    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2).astype(np.float32) * image_opacity
    if labels is not None and opacity > 0 and len(colors):
        table = color_table(colors).astype(np.float32)
        labels = np.asarray(labels)
        valid = labels >= 0
        col = table[np.clip(labels, 0, len(table) - 1)]
        rgb[valid] = (1 - opacity) * rgb[valid] + opacity * col[valid]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def overlay_lut(
    colors: Sequence[str], opacity: float = 0.5, image_opacity: float = 1.0
) -> np.ndarray:
    """``(1 + K, 256, 3)`` uint8: row 0 the unlabelled grey ramp, row ``1 + k`` class ``k``
    blended at ``opacity`` over it (exactly :func:`render_overlay`'s float formula)."""
    ramp = np.arange(256, dtype=np.float32)[:, None].repeat(3, axis=1) * image_opacity
    rows = [ramp]
    if opacity > 0 and len(colors):
        table = color_table(colors).astype(np.float32)
        rows += [(1 - opacity) * ramp + opacity * table[k] for k in range(len(table))]
    return np.clip(np.stack(rows) + 0.5, 0, 255).astype(np.uint8)


#: key colours of the uncertainty scale (0 = certain … 1 = unsure), an inferno-like ramp
HEAT_STOPS = ("#000004", "#420a68", "#932667", "#dd513a", "#fca50a", "#fcffa4")


def heat_table(n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 RGB of the uncertainty colour scale (:data:`HEAT_STOPS`)."""
    stops = color_table(HEAT_STOPS).astype(np.float32)
    x = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, n)
    return (
        np.stack([np.interp(t, x, stops[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)
    )


def heat_css_gradient() -> str:
    """A CSS ``linear-gradient`` of the uncertainty scale (for the legends)."""
    return "linear-gradient(to right, " + ", ".join(HEAT_STOPS) + ")"


def blend_heat(
    rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.6, floor: float = 0.05
) -> np.ndarray:
    """Blend a ``(H, W)`` map in [0, 1] over ``rgb`` with the uncertainty colour scale.

    The weight grows with the value (``opacity * sqrt(heat)``, so middling values stay
    visible) and values below ``floor`` are not drawn, so certain areas keep the image
    underneath. NaN counts as 0.
    """
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    h = np.clip(h, 0.0, 1.0)
    table = heat_table()
    col = table[(h * 255 + 0.5).astype(np.intp)].astype(np.float32)
    w = np.where(h >= floor, float(opacity) * np.sqrt(h), 0.0)[..., None]
    out = (1 - w) * rgb.astype(np.float32) + w * col
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean ``(H, W)`` mask (inside pixels with an outside
    4-neighbour, the image border counting as outside)."""
    m = np.asarray(mask, bool)
    if not m.any():
        return m
    p = np.pad(m, 1, constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


@dataclass
class View:
    """Zoom/pan of an image of ``shape`` shown on a canvas of ``canvas`` (h, w) pixels.

    ``zoom`` = canvas pixels per image pixel at 1.0 × fit; ``center`` is the image point
    (y, x) shown in the middle of the canvas.
    """

    shape: tuple[int, int]
    canvas: tuple[int, int]
    zoom: float = 1.0
    center: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.center is None:
            self.center = (self.shape[0] / 2, self.shape[1] / 2)

    def _center(self) -> tuple[float, float]:
        """:attr:`center` (the middle of the image where it is None)."""
        if self.center is None:
            self.center = (self.shape[0] / 2, self.shape[1] / 2)
        return self.center

    @property
    def scale(self) -> float:
        """Canvas pixels per image pixel."""
        fit = min(self.canvas[0] / self.shape[0], self.canvas[1] / self.shape[1])
        return fit * self.zoom

    def to_image(self, cy: float, cx: float) -> tuple[float, float]:
        """Canvas pixel → image coordinates (float)."""
        s, center = self.scale, self._center()
        return (
            center[0] + (cy - self.canvas[0] / 2) / s,
            center[1] + (cx - self.canvas[1] / 2) / s,
        )

    def to_canvas(self, y: float, x: float) -> tuple[float, float]:
        s, center = self.scale, self._center()
        return (
            (y - center[0]) * s + self.canvas[0] / 2,
            (x - center[1]) * s + self.canvas[1] / 2,
        )

    def zoom_at(self, factor: float, cy: float, cx: float) -> None:
        """Zoom by ``factor`` keeping the image point under canvas pixel (cy, cx) fixed."""
        y, x = self.to_image(cy, cx)
        self.zoom = float(np.clip(self.zoom * factor, 0.25, 64.0))
        s = self.scale
        self.center = (y - (cy - self.canvas[0] / 2) / s, x - (cx - self.canvas[1] / 2) / s)

    def pan(self, dy: float, dx: float) -> None:
        """Move the view by (dy, dx) canvas pixels."""
        s, center = self.scale, self._center()
        self.center = (center[0] - dy / s, center[1] - dx / s)

    def reset(self) -> None:
        self.zoom = 1.0
        self.center = (self.shape[0] / 2, self.shape[1] / 2)

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nearest image row/col index of every canvas row/col, and which are inside."""
        ch, cw = self.canvas
        center = self._center()
        ys = center[0] + (np.arange(ch) + 0.5 - ch / 2) / self.scale
        xs = center[1] + (np.arange(cw) + 0.5 - cw / 2) / self.scale
        iy, ix = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
        vy = (iy >= 0) & (iy < self.shape[0])
        vx = (ix >= 0) & (ix < self.shape[1])
        return np.clip(iy, 0, self.shape[0] - 1), np.clip(ix, 0, self.shape[1] - 1), vy, vx

    def render(self, rgb: np.ndarray, background: int = 32) -> np.ndarray:
        """The canvas pixels (uint8 ``(ch, cw, 3)``) showing ``rgb`` (H, W, 3) in this view."""
        iy, ix, vy, vx = self.sample_indices()
        out = rgb[iy[:, None], ix[None, :]]
        inside = vy[:, None] & vx[None, :]
        if not inside.all():
            out = np.where(inside[..., None], out, np.uint8(background))
        return np.ascontiguousarray(out)


# -- text and legends for exported images -------------------------------------------------
#: A 5 × 8 bitmap font (rows top to bottom, ``#`` = ink; row 8 holds descenders), enough for
#: class names, epochs and captions in exported PNGs without a font library.
_FONT_ROWS = """
A .###. #...# #...# ##### #...# #...# #...#
B ####. #...# #...# ####. #...# #...# ####.
C .###. #...# #.... #.... #.... #...# .###.
D ###.. #..#. #...# #...# #...# #..#. ###..
E ##### #.... #.... ####. #.... #.... #####
F ##### #.... #.... ####. #.... #.... #....
G .###. #...# #.... #.### #...# #...# .####
H #...# #...# #...# ##### #...# #...# #...#
I .###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.
J ..### ...#. ...#. ...#. ...#. #..#. .##..
K #...# #..#. #.#.. ##... #.#.. #..#. #...#
L #.... #.... #.... #.... #.... #.... #####
M #...# ##.## #.#.# #.#.# #...# #...# #...#
N #...# #...# ##..# #.#.# #..## #...# #...#
O .###. #...# #...# #...# #...# #...# .###.
P ####. #...# #...# ####. #.... #.... #....
Q .###. #...# #...# #...# #.#.# #..#. .##.#
R ####. #...# #...# ####. #.#.. #..#. #...#
S .#### #.... #.... .###. ....# ....# ####.
T ##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..
U #...# #...# #...# #...# #...# #...# .###.
V #...# #...# #...# #...# #...# .#.#. ..#..
W #...# #...# #...# #.#.# #.#.# #.#.# .#.#.
X #...# #...# .#.#. ..#.. .#.#. #...# #...#
Y #...# #...# .#.#. ..#.. ..#.. ..#.. ..#..
Z ##### ....# ...#. ..#.. .#... #.... #####
a ..... ..... .###. ....# .#### #...# .####
b #.... #.... #.##. ##..# #...# #...# ####.
c ..... ..... .###. #.... #.... #...# .###.
d ....# ....# .##.# #..## #...# #...# .####
e ..... ..... .###. #...# ##### #.... .###.
f ..##. .#..# .#... ###.. .#... .#... .#...
g ..... ..... .#### #...# #...# .#### ....# .###.
h #.... #.... #.##. ##..# #...# #...# #...#
i ..#.. ..... .##.. ..#.. ..#.. ..#.. .###.
j ...#. ..... ..##. ...#. ...#. ...#. #..#. .##..
k #.... #.... #..#. #.#.. ##... #.#.. #..#.
l .##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.
m ..... ..... ##.#. #.#.# #.#.# #...# #...#
n ..... ..... #.##. ##..# #...# #...# #...#
o ..... ..... .###. #...# #...# #...# .###.
p ..... ..... ####. #...# #...# ####. #.... #....
q ..... ..... .#### #...# #...# .#### ....# ....#
r ..... ..... #.##. ##..# #.... #.... #....
s ..... ..... .#### #.... .###. ....# ####.
t .#... .#... ###.. .#... .#... .#..# ..##.
u ..... ..... #...# #...# #...# #..## .##.#
v ..... ..... #...# #...# #...# .#.#. ..#..
w ..... ..... #...# #...# #.#.# #.#.# .#.#.
x ..... ..... #...# .#.#. ..#.. .#.#. #...#
y ..... ..... #...# #...# #...# .#### ....# .###.
z ..... ..... ##### ...#. ..#.. .#... #####
0 .###. #...# #..## #.#.# ##..# #...# .###.
1 ..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.
2 .###. #...# ....# ...#. ..#.. .#... #####
3 ##### ...#. ..#.. ...#. ....# #...# .###.
4 ...#. ..##. .#.#. #..#. ##### ...#. ...#.
5 ##### #.... ####. ....# ....# #...# .###.
6 ..##. .#... #.... ####. #...# #...# .###.
7 ##### ....# ...#. ..#.. .#... .#... .#...
8 .###. #...# #...# .###. #...# #...# .###.
9 .###. #...# #...# .#### ....# ...#. .##..
. ..... ..... ..... ..... ..... .##.. .##..
, ..... ..... ..... ..... .##.. ..#.. .#...
: ..... .##.. .##.. ..... .##.. .##.. .....
; ..... .##.. .##.. ..... .##.. ..#.. .#...
- ..... ..... ..... ##### ..... ..... .....
_ ..... ..... ..... ..... ..... ..... #####
/ ..... ....# ...#. ..#.. .#... #.... .....
( ...#. ..#.. .#... .#... .#... ..#.. ...#.
) .#... ..#.. ...#. ...#. ...#. ..#.. .#...
[ .###. .#... .#... .#... .#... .#... .###.
] .###. ...#. ...#. ...#. ...#. ...#. .###.
< ...#. ..#.. .#... #.... .#... ..#.. ...#.
> .#... ..#.. ...#. ....# ...#. ..#.. .#...
# .#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.
% ##... ##..# ...#. ..#.. .#... #..## ...##
+ ..... ..#.. ..#.. ##### ..#.. ..#.. .....
= ..... ..... ##### ..... ##### ..... .....
* ..... ..#.. #.#.# .###. #.#.# ..#.. .....
& .##.. #..#. #.#.. .#... #.#.# #..#. .##.#
' ..#.. ..#.. .#... ..... ..... ..... .....
? .###. #...# ....# ...#. ..#.. ..... ..#..
! ..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..
· ..... ..... ..... ..#.. ..... ..... .....
× ..... #...# .#.#. ..#.. .#.#. #...# .....
"""
_GLYPH_H, _GLYPH_W = 8, 5
_GLYPHS: dict[str, np.ndarray] = {}


def _glyph(ch: str) -> np.ndarray:
    if not _GLYPHS:
        for line in _FONT_ROWS.strip().splitlines():
            key, *rows = line.split(" ")
            rows += ["." * _GLYPH_W] * (_GLYPH_H - len(rows))
            _GLYPHS[key] = np.array([[c == "#" for c in r] for r in rows], dtype=bool)
        _GLYPHS[" "] = np.zeros((_GLYPH_H, _GLYPH_W), dtype=bool)
    return _GLYPHS.get(ch, _GLYPHS["?"])


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """The ink of ``text`` in the built-in 5 × 8 font: bool ``(8·scale, 6·scale·len)``."""
    scale = max(1, int(scale))
    cells = [np.pad(_glyph(ch), ((0, 0), (0, 1))) for ch in text] or [
        np.zeros((_GLYPH_H, 0), dtype=bool)
    ]
    mask = np.concatenate(cells, axis=1)
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def draw_text(
    rgb: np.ndarray, text: str, y: int, x: int, scale: int = 1, color: Sequence[int] = (0, 0, 0)
) -> int:
    """Write ``text`` into ``rgb`` (uint8 ``(H, W, 3)``, in place) with its top-left corner at
    ``(y, x)``, clipped to the image; returns the x just after it."""
    mask = text_mask(text, scale)
    h, w = mask.shape
    y0, x0 = max(0, y), max(0, x)
    y1, x1 = min(rgb.shape[0], y + h), min(rgb.shape[1], x + w)
    if y1 > y0 and x1 > x0:
        rgb[y0:y1, x0:x1][mask[y0 - y : y1 - y, x0 - x : x1 - x]] = np.asarray(color, np.uint8)
    return x + w


def upscale_nearest(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """``rgb`` enlarged by the smallest whole factor that makes its long side at least
    ``min_side`` pixels (nearest neighbour: every voxel stays a crisp square); unchanged when
    it is already that large."""
    long_side = max(rgb.shape[0], rgb.shape[1], 1)
    factor = max(1, -(-int(min_side) // long_side))
    if factor == 1:
        return rgb
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def legend_strip(
    width: int,
    names: Sequence[str],
    colors: Sequence[str],
    title: str = "",
    scale: int = 2,
) -> np.ndarray:
    """A white strip ``width`` pixels wide: ``title`` on the first line, then one colour
    swatch and name per class, wrapped over as many lines as needed (uint8 ``(h, width, 3)``)."""
    scale = max(1, int(scale))
    line_h, pad = (_GLYPH_H + 4) * scale, 3 * scale
    swatch = _GLYPH_H * scale
    items = [(str(n), c) for n, c in zip(names, colors)]
    # lay the items out first, to know the height
    lines: list[list[tuple[str, str, int]]] = [[]]
    x = pad
    for name, color in items:
        w = swatch + scale * 3 + text_mask(name, scale).shape[1] + pad * 3
        if lines[-1] and x + w > width:
            lines.append([])
            x = pad
        lines[-1].append((name, color, x))
        x += w
    rows = (1 if title else 0) + (len(lines) if items else 0)
    out = np.full((max(1, rows) * line_h + pad, width, 3), 255, np.uint8)
    y = pad
    if title:
        draw_text(out, title, y + 2 * scale, pad, scale)
        y += line_h
    for line in lines if items else []:
        for name, color, x in line:
            rgb = color_table([color])[0]
            out[y + scale : y + scale + swatch, x : x + swatch] = rgb
            out[y + scale : y + scale + swatch, x : x + swatch][[0, -1]] = 0  # a thin frame
            out[y + scale : y + scale + swatch, x : x + swatch][:, [0, -1]] = 0
            draw_text(out, name, y + scale, x + swatch + 3 * scale, scale)
        y += line_h
    return out
