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
