"""`ImageView`: an ipycanvas view of a 2D image with a class overlay, zoom and pan.

All canvas drawing in nbseg goes through :data:`DRAW_LOCK` (widget callbacks can run
concurrently with the cell and the training thread). Rendering is pure numpy
(:class:`nbseg.render.View`), so it is tested without a browser; the canvas only receives the
final pixels via ``put_image_data`` and a few vector annotations (rectangle, brush cursor).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, hold_canvas

from .._png import encode_png
from ..render import View, blend_heat, outline, render_overlay
from .focus_guard import FocusGuard

DRAW_LOCK = threading.RLock()
"""The one lock behind which every nbseg canvas is drawn."""

PointerHandler = Callable[[str, float, float, dict[str, Any]], None]

VIEWER_PX = 512
"""The one viewer size rule of every tab: a canvas of ``VIEWER_PX`` x ``VIEWER_PX`` pixels shown
as wide as its column allows, at most ``VIEWER_PX`` screen pixels, its aspect kept (CSS class
``nbseg-imageview`` in :mod:`nbseg.ui.style`). Images are fitted into the canvas, so a 64² or
a 4096² slice, xy or xz, fills the same viewer."""


def viewer_layout() -> widgets.Layout:
    """The canvas layout of :data:`VIEWER_PX`: the column's width, the canvas's aspect."""
    return widgets.Layout(width="100%", height="auto", max_width=f"{VIEWER_PX}px")


class ImageView(widgets.VBox):
    """Canvas showing a grey image, an optional label overlay, a rectangle and a cursor.

    Parameters
    ----------
    width, height
        Canvas resolution (default :data:`VIEWER_PX`); on screen the canvas scales to the
        width of its column (at most this wide) with its aspect kept.
    interactive_pan
        When True, dragging with the mouse pans and the wheel zooms (set False when a tool,
        e.g. the brush, uses the drag).

    Pointer events in *image* coordinates go to handlers registered with :meth:`on_pointer`
    (``kind`` is ``"down"``, ``"move"``, ``"up"`` or ``"out"``).
    """

    def __init__(
        self, width: int = VIEWER_PX, height: int = VIEWER_PX, interactive_pan: bool = True
    ) -> None:
        self.canvas = Canvas(width=width, height=height, layout=viewer_layout())
        self.canvas.sync_image_data = False
        super().__init__([self.canvas])
        self.add_class("nbseg-imageview")
        self._gray: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._colors: list[str] = []
        self._under: np.ndarray | None = None
        self._heat: np.ndarray | None = None
        self._outline: np.ndarray | None = None
        self.under_opacity = 0.3
        self.under_colors: list[str] | None = None
        """Colours of the ``under`` layer's classes (default: the labels' colours)."""
        self.heat_opacity = 0.6
        self.outline_color = (0, 229, 255)
        self.region: tuple[int, int, int, int] | None = None
        self.opacity = 0.5
        self.image_opacity = 1.0
        self.view: View | None = None
        self.rect: tuple[int, int, int, int] | None = None
        self.cursor: tuple[float, float, float] | None = None
        self.interactive_pan = interactive_pan
        self._handlers: list[PointerHandler] = []
        self._drag: tuple[float, float] | None = None
        self.last_frame: np.ndarray | None = None
        self._cursor_box: tuple[float, float, float, float] | None = None
        self.canvas.on_mouse_down(lambda x, y: self._pointer("down", x, y))
        self.canvas.on_mouse_move(lambda x, y: self._pointer("move", x, y))
        self.canvas.on_mouse_up(lambda x, y: self._pointer("up", x, y))
        self.canvas.on_mouse_out(lambda x, y: self._pointer("out", x, y))
        self.canvas.on_client_ready(self.redraw)
        # ipycanvas' wheel event carries no direction: zoom is on buttons
        self.zoom_in = _tool_button("search-plus", "Zoom in", lambda _: self.zoom(1.5))
        self.zoom_out = _tool_button("search-minus", "Zoom out", lambda _: self.zoom(1 / 1.5))
        self.zoom_fit = _tool_button(
            "expand", "Fit the image to the view", lambda _: self.reset_view()
        )
        self.toolbar = widgets.HBox([self.zoom_in, self.zoom_out, self.zoom_fit])
        self.toolbar.add_class("nbseg-toolbar")
        # a press must not scroll the notebook (ipycanvas focuses the canvas without preventScroll)
        self.children = [self.toolbar, self.canvas, FocusGuard()]

    # -- content ---------------------------------------------------------------------------
    @property
    def canvas_shape(self) -> tuple[int, int]:
        return int(self.canvas.height), int(self.canvas.width)

    def set_image(self, gray: np.ndarray, *, keep_view: bool = True) -> None:
        """Show a uint8 ``(H, W)`` grey image (the view is kept when the shape is unchanged)."""
        gray = np.asarray(gray)
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(
                f"ImageView.set_image needs uint8 (H, W), got {gray.dtype} {gray.shape}"
            )
        with DRAW_LOCK:
            if self.view is None or not keep_view or self.view.shape != gray.shape:
                self.view = View(gray.shape, self.canvas_shape)
            self._gray = gray
        self.redraw()

    def show(
        self,
        gray: np.ndarray,
        labels: np.ndarray | None,
        colors: Sequence[str] | None = None,
        *,
        keep_view: bool = True,
    ) -> None:
        """:meth:`set_image` and :meth:`set_labels` with one redraw (slice scrolling)."""
        gray = np.asarray(gray)
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"ImageView.show needs uint8 (H, W), got {gray.dtype} {gray.shape}")
        with DRAW_LOCK:
            if self.view is None or not keep_view or self.view.shape != gray.shape:
                self.view = View(gray.shape, self.canvas_shape)
            self._gray = gray
            self._labels = None if labels is None else np.asarray(labels)
            if colors is not None:
                self._colors = list(colors)
        self.redraw()

    def set_labels(self, labels: np.ndarray | None, colors: Sequence[str] | None = None) -> None:
        """Overlay class ids (``-1`` = none) coloured by ``colors``."""
        with DRAW_LOCK:
            self._labels = None if labels is None else np.asarray(labels)
            if colors is not None:
                self._colors = list(colors)
        self.redraw()

    def set_opacity(self, labels: float | None = None, image: float | None = None) -> None:
        if labels is not None:
            self.opacity = float(labels)
        if image is not None:
            self.image_opacity = float(image)
        self.redraw()

    def set_layers(
        self,
        *,
        under: np.ndarray | str | None = "keep",
        heat: np.ndarray | str | None = "keep",
        outline_mask: np.ndarray | str | None = "keep",
        region: tuple[int, int, int, int] | str | None = "keep",
        redraw: bool = True,
    ) -> None:
        """Extra layers over the image (``"keep"``: leave that one as it is; None: remove).

        ``under``: class ids (``-1`` none) drawn at :attr:`under_opacity` wherever the main
        labels are unlabelled (a model's prediction under the painting); ``heat``: a map in
        [0, 1] in the uncertainty colour scale at :attr:`heat_opacity`; ``outline_mask``: a
        boolean mask whose boundary is drawn in :attr:`outline_color` (uncertain areas);
        ``region``: a box ``(y0, y1, x0, x1)`` outlined in the same colour (a suggestion).
        Arrays are ``(H, W)`` of the image's shape (other shapes are ignored when drawing).
        """
        with DRAW_LOCK:
            if not isinstance(under, str):
                self._under = None if under is None else np.asarray(under)
            if not isinstance(heat, str):
                self._heat = None if heat is None else np.asarray(heat, np.float32)
            if not isinstance(outline_mask, str):
                self._outline = None if outline_mask is None else np.asarray(outline_mask, bool)
            if not isinstance(region, str):
                self.region = region
        if redraw:
            self.redraw()

    @property
    def layers(self) -> dict[str, Any]:
        """The extra layers shown (for tests): ``under``, ``heat``, ``outline``, ``region``."""
        return {
            "under": self._under,
            "heat": self._heat,
            "outline": self._outline,
            "region": self.region,
        }

    def set_rect(self, rect: tuple[int, int, int, int] | None) -> None:
        """Outline ``(y0, y1, x0, x1)`` in image coordinates (the feedback region)."""
        self.rect = rect
        self.redraw()

    # -- rendering -------------------------------------------------------------------------
    def compose(self) -> np.ndarray | None:
        """The image with its overlay, before the view transform (uint8 ``(H, W, 3)``)."""
        if self._gray is None:
            return None
        labels = (
            self._labels
            if self._labels is not None and self._labels.shape == self._gray.shape
            else None
        )
        return render_overlay(self._gray, labels, self._colors, self.opacity, self.image_opacity)

    def frame(self) -> np.ndarray | None:
        """The canvas pixels (uint8 ``(h, w, 3)``) as they will be drawn.

        The same pixels as ``view.render(compose())``, but the view samples the grey image and
        labels first and the overlay is blended at canvas size (a large image costs no more
        than the canvas).
        """
        if self._gray is None or self.view is None:
            return None
        ch, cw = self.canvas_shape
        return self.frame_region(0, ch, 0, cw)

    def frame_region(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray | None:
        """Canvas pixels of rows ``r0:r1`` and columns ``c0:c1`` (uint8 ``(h, w, 3)``)."""
        if self._gray is None or self.view is None:
            return None
        iy, ix, vy, vx = self.view.sample_indices()
        iy, ix, vy, vx = iy[r0:r1], ix[c0:c1], vy[r0:r1], vx[c0:c1]
        gray = self._gray.take(iy, axis=0).take(ix, axis=1)
        shape = self._gray.shape
        labels = None
        if self._labels is not None and self._labels.shape == shape:
            labels = self._labels.take(iy, axis=0).take(ix, axis=1)
        rgb = render_overlay(gray, labels, self._colors, self.opacity, self.image_opacity)
        if self._under is not None and self._under.shape == shape and self.under_opacity > 0:
            under = self._under.take(iy, axis=0).take(ix, axis=1)
            colors = self.under_colors or self._colors
            below = render_overlay(gray, under, colors, self.under_opacity, self.image_opacity)
            free = np.ones(gray.shape, bool) if labels is None else labels < 0
            rgb = np.where(free[..., None], below, rgb)
        if self._heat is not None and self._heat.shape == shape and self.heat_opacity > 0:
            rgb = blend_heat(rgb, self._heat.take(iy, axis=0).take(ix, axis=1), self.heat_opacity)
        if self._outline is not None and self._outline.shape == shape:
            edge = self._outline_region(r0, r1, c0, c1)
            rgb[edge] = self.outline_color
        inside = vy[:, None] & vx[None, :]
        if not inside.all():
            rgb = np.where(inside[..., None], rgb, np.uint8(32))
        return np.ascontiguousarray(rgb)

    def _outline_region(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Boundary of the outline mask as drawn on canvas rows r0:r1, cols c0:c1 (found on
        the canvas-sized sample, one pixel of margin, so lines stay one pixel at any zoom)."""
        assert self.view is not None and self._outline is not None
        iy, ix, vy, vx = self.view.sample_indices()
        a0, a1 = max(0, r0 - 1), min(len(iy), r1 + 1)
        b0, b1 = max(0, c0 - 1), min(len(ix), c1 + 1)
        m = self._outline.take(iy[a0:a1], axis=0).take(ix[b0:b1], axis=1)
        m &= vy[a0:a1, None] & vx[None, b0:b1]
        return outline(m)[r0 - a0 : r0 - a0 + (r1 - r0), c0 - b0 : c0 - b0 + (c1 - c0)]

    def redraw(self, *_: Any) -> None:
        with DRAW_LOCK:
            frame = self.frame()
            if frame is None:
                return
            self.last_frame = frame
            with hold_canvas():
                self.canvas.put_image_data(frame, 0, 0)
                self._draw_outlines()

    def _draw_outlines(self) -> None:
        """Feedback rectangle and brush cursor (vector strokes over the pixels)."""
        self._cursor_box = None
        if self.view is None:
            return
        if self.rect is not None:
            y0, y1, x0, x1 = self.rect
            cy0, cx0 = self.view.to_canvas(y0, x0)
            cy1, cx1 = self.view.to_canvas(y1, x1)
            self.canvas.stroke_style = "#ffd400"
            self.canvas.line_width = 2
            self.canvas.stroke_rect(cx0, cy0, cx1 - cx0, cy1 - cy0)
        if self.region is not None:
            y0, y1, x0, x1 = self.region
            cy0, cx0 = self.view.to_canvas(y0, x0)
            cy1, cx1 = self.view.to_canvas(y1, x1)
            self.canvas.stroke_style = "#00e5ff"
            self.canvas.line_width = 2
            self.canvas.set_line_dash([6, 4])
            self.canvas.stroke_rect(cx0, cy0, cx1 - cx0, cy1 - cy0)
            self.canvas.set_line_dash([])
        if self.cursor is not None:
            y, x, r = self.cursor
            cy, cx = self.view.to_canvas(y, x)
            rc = max(1.0, r * self.view.scale)
            self.canvas.stroke_style = "#ffffff"
            self.canvas.line_width = 1
            self.canvas.stroke_circle(cx, cy, rc)
            pad = rc + 3
            self._cursor_box = (cy - pad, cy + pad, cx - pad, cx + pad)

    # -- partial redraws (painting) --------------------------------------------------------
    def canvas_box(self, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int] | None:
        """Canvas rows/cols ``(r0, r1, c0, c1)`` showing image rows ``y0:y1``, cols ``x0:x1``
        (None when none of them is visible)."""
        if self.view is None:
            return None
        iy, ix, vy, vx = self.view.sample_indices()
        rows = np.flatnonzero(vy & (iy >= y0) & (iy < y1))
        cols = np.flatnonzero(vx & (ix >= x0) & (ix < x1))
        if not rows.size or not cols.size:
            return None
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1

    def redraw_region(
        self, region: tuple[int, int, int, int] | None = None, cursor: Any = "keep"
    ) -> None:
        """Re-send only the canvas pixels showing image ``region`` ``(y0, y1, x0, x1)`` and
        those under the old and the new brush ``cursor`` ``(y, x, radius)`` (``"keep"``: leave
        it), then the outlines: what a paint stroke or a cursor move changes."""
        with DRAW_LOCK:
            if cursor != "keep":
                self.cursor = cursor
            if self.last_frame is None or self.view is None or self._gray is None:
                self.redraw()
                return
            ch, cw = self.canvas_shape
            boxes: list[tuple[float, float, float, float]] = []
            if region is not None:
                box = self.canvas_box(*region)
                if box is not None:
                    boxes.append(box)
            old = getattr(self, "_cursor_box", None)
            if old is not None:
                boxes.append(old)
            if self.cursor is not None:
                y, x, r = self.cursor
                cy, cx = self.view.to_canvas(y, x)
                pad = max(1.0, r * self.view.scale) + 3
                boxes.append((cy - pad, cy + pad, cx - pad, cx + pad))
            if not boxes:
                return
            r0 = max(0, int(np.floor(min(b[0] for b in boxes))))
            r1 = min(ch, int(np.ceil(max(b[1] for b in boxes))))
            c0 = max(0, int(np.floor(min(b[2] for b in boxes))))
            c1 = min(cw, int(np.ceil(max(b[3] for b in boxes))))
            if r1 <= r0 or c1 <= c0:
                return
            sub = self.frame_region(r0, r1, c0, c1)
            if sub is None:
                return
            self.last_frame[r0:r1, c0:c1] = sub
            with hold_canvas():
                self.canvas.put_image_data(sub, c0, r0)
                self._draw_outlines()

    def snapshot_png(self) -> bytes | None:
        """PNG of the current frame (static fallback, exports)."""

        return None if self.last_frame is None else encode_png(self.last_frame)

    # -- view --------------------------------------------------------------------------
    def zoom(self, factor: float, at: tuple[float, float] | None = None) -> None:
        if self.view is None:
            return
        cy, cx = at if at is not None else (self.canvas_shape[0] / 2, self.canvas_shape[1] / 2)
        self.view.zoom_at(factor, cy, cx)
        self.redraw()

    def reset_view(self) -> None:
        if self.view is not None:
            self.view.reset()
            self.redraw()

    # -- pointer -------------------------------------------------------------------------
    def on_pointer(self, handler: PointerHandler) -> None:
        self._handlers.append(handler)

    def _pointer(self, kind: str, cx: float, cy: float) -> None:
        if self.view is None:
            return
        y, x = self.view.to_image(cy, cx)
        if self.interactive_pan:
            if kind == "down":
                self._drag = (cy, cx)
            elif kind == "move" and self._drag is not None:
                self.view.pan(cy - self._drag[0], cx - self._drag[1])
                self._drag = (cy, cx)
                self.redraw()
            elif kind in ("up", "out"):
                self._drag = None
        for h in list(self._handlers):
            h(kind, y, x, {"canvas": (cy, cx)})


def _tool_button(icon: str, tooltip: str, handler: Callable[[Any], None]) -> widgets.Button:
    b = widgets.Button(
        icon=icon, tooltip=tooltip, description="", layout=widgets.Layout(width="34px")
    )
    b.on_click(handler)
    return b
