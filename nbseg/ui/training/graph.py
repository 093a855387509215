"""`GraphView`: the training graph — metrics per epoch, checkpoint markers, epoch marker."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ...training.callbacks import row_run
from ...training.run import history_columns
from .common import as_float, hold, is_number, set_bounds

HIDDEN_COLUMNS = ("epoch", "run", "time", "epoch_time", "checkpoint", "batches", "epoch_batches")
"""History columns that are never offered as graph metrics."""

FIXED_COLORS = {
    "loss": "#1f77b4",
    "val_loss": "#ff7f0e",
    "val_dice": "#2ca02c",
    "val_iou": "#9467bd",
    "val_accuracy": "#8c564b",
    "lr": "#7f7f7f",
}
PALETTE = [
    "#d62728",
    "#17becf",
    "#bcbd22",
    "#e377c2",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
]


def epoch_ticks(lo: float, hi: float, most: int = 10) -> list[int]:
    """Whole-epoch tick values from ``lo`` to ``hi``: every epoch, or every 2nd, 5th, 10th,
    20th, 50th ... epoch so that there are at most ``most`` of them; never a repeated value."""
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        return [round(lo)]
    span = last - first
    step = next(
        s * 10**k for k in range(15) for s in (1, 2, 5) if span <= (s * 10**k) * max(1, most - 1)
    )
    start = -(-first // step) * step if step > 1 else first
    return list(range(int(start), int(last) + 1, int(step))) or [int(first)]


class GraphView:
    """One line per chosen metric over the epochs (bqplot), with every state in the
    checkpoint cache as a diamond on the monitored metric and a dashed marker at the epoch
    the feedback slider shows. The x axis has whole-epoch ticks (:func:`epoch_ticks`).

    Attributes: ``figure``, ``x_axis``, ``lines``, ``checkpoint_marks``, ``epoch_marker``,
    ``metrics`` (SelectMultiple), ``epoch_range`` (IntRangeSlider, enabled after training),
    ``widget`` (the view's box), ``points`` (epochs plotted).
    """

    def __init__(self, lock: threading.RLock | None = None) -> None:
        self._lock = lock or threading.RLock()
        self._rows: list[dict[str, Any]] = []
        self._checkpoints: list[int | Mapping[str, Any]] = []
        self._monitor = "val_loss"
        self._marked: int | None = None
        self._syncing = False
        self.points = 0

        self._x_scale = bq.LinearScale()
        self._y_scale = bq.LinearScale()
        scales = {"x": self._x_scale, "y": self._y_scale}
        self.lines = bq.Lines(
            x=np.zeros(0),
            y=np.zeros((0, 0)),
            scales=scales,
            labels=[],
            colors=[],
            display_legend=True,
            marker="circle",
            marker_size=16,
            stroke_width=2,
        )
        self.checkpoint_marks = bq.Scatter(
            x=np.zeros(0),
            y=np.zeros(0),
            scales=scales,
            marker="diamond",
            colors=["#ffd400"],
            stroke="#000000",
            default_size=110,
            labels=["checkpoint"],
            display_legend=True,
            tooltip=bq.Tooltip(fields=["x", "y"], labels=["epoch", "value"]),
        )
        self.epoch_marker = bq.Lines(
            x=np.zeros(0), y=np.zeros(0), scales=scales, colors=["#888888"], line_style="dashed"
        )
        # explicit whole-epoch ticks: d3's own ticks at 1.2, 1.4 ... print "1 1 1 2 2" as "d"
        self.x_axis = bq.Axis(
            scale=self._x_scale, label="epoch", tick_format="d", tick_values=np.array([1])
        )
        self.figure = bq.Figure(
            marks=[self.lines, self.checkpoint_marks, self.epoch_marker],
            axes=[self.x_axis, bq.Axis(scale=self._y_scale, side="left", label="value")],
            title="Training",
            legend_location="top-right",
            animation_duration=0,
            fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 20},
            layout=widgets.Layout(width="100%", height="330px", min_width="280px"),
        )
        self.figure.add_class("nbseg-graph")
        self.metrics = widgets.SelectMultiple(
            options=["loss", "val_loss"],
            value=["loss", "val_loss"],
            rows=6,
            layout=widgets.Layout(width="220px"),
            tooltip="History columns drawn on the graph (Ctrl/Shift-click for several)",
        )
        self.epoch_range = widgets.IntRangeSlider(
            value=(1, 1), min=1, max=1, disabled=True, continuous_update=False
        )
        self.metrics.observe(self._on_metrics, "value")
        self.epoch_range.observe(lambda _: self.draw(), "value")
        self.widget = widgets.VBox(
            [
                self.figure,
                widgets.HBox(
                    [
                        widgets.VBox([widgets.Label("Metrics"), self.metrics]),
                        widgets.VBox(
                            [
                                widgets.Label("Epoch range"),
                                self.epoch_range,
                                widgets.HTML(
                                    "<small>◆ = epoch kept in the checkpoint cache</small>"
                                ),
                            ]
                        ),
                    ]
                ),
            ]
        )

    # -- what the composer calls --------------------------------------------------------
    def show(
        self,
        rows: Sequence[dict[str, Any]],
        checkpoints: Iterable[int | Mapping[str, Any]] = (),
        monitor: str = "val_loss",
    ) -> None:
        """Plot these history rows; ``checkpoints`` are the cached states — the rows of
        :meth:`CheckpointCache.list` (each drawn at its epoch, with its own metrics when no
        history row is of its run and epoch) or epochs — marked on ``monitor`` (else on the
        first chosen metric)."""
        with self._lock:
            self._rows = list(rows)
            self._checkpoints = list(checkpoints)
            self._monitor = monitor
            self._sync_metric_options()
            self.draw()

    def enable_range(self, lo: int | None = None, hi: int | None = None) -> None:
        """Offer the epoch range ``lo … hi`` (all of it chosen); no bounds: disable it."""
        if lo is None or hi is None:
            self.epoch_range.disabled = True
            return
        set_bounds(self.epoch_range, lo, hi)
        self.epoch_range.value = (lo, hi)

    def mark_epoch(self, epoch: int | None) -> None:
        """Draw the dashed epoch marker at ``epoch`` (None: none)."""
        with self._lock:
            self._marked = epoch
            self._draw_epoch_marker()

    # -- drawing ------------------------------------------------------------------------
    def _metric_options(self) -> list[str]:
        rows = self._rows
        cols = [c for c in history_columns(rows) if c not in HIDDEN_COLUMNS]
        return [c for c in cols if any(is_number(r.get(c)) for r in rows)]

    def _sync_metric_options(self) -> None:
        options = self._metric_options() or ["loss", "val_loss"]
        if list(self.metrics.options) == options:
            return
        keep = [v for v in self.metrics.value if v in options]
        if not keep:
            keep = [c for c in ("loss", "val_loss") if c in options] or options[:1]
        self._syncing = True
        try:
            with self.metrics.hold_sync():
                self.metrics.options = options
                self.metrics.value = keep
        finally:
            self._syncing = False

    def _on_metrics(self, _: Any) -> None:
        if not self._syncing:
            self.draw()

    def draw(self) -> None:
        """Redraw the lines and markers from the rows last shown."""
        with self._lock:
            rows = self._rows
            if not self.epoch_range.disabled:
                lo, hi = self.epoch_range.value
                rows = [r for r in rows if lo <= int(r["epoch"]) <= hi]
            cols = [c for c in self.metrics.value if c in self.metrics.options]
            x = np.array([float(r["epoch"]) for r in rows])
            y = np.array([[as_float(r.get(c)) for r in rows] for c in cols]).reshape(
                len(cols), len(rows)
            )
            monitor = self._monitor
            series = monitor if monitor in cols else (cols[0] if cols else None)
            cx, cy = self._checkpoint_points(rows, series)
            colors = colors_for(cols, list(self.metrics.options))
            lo, hi = self._x_domain(x, cx)
            ticks = epoch_ticks(lo, hi)
            pad = max(0.3, 0.03 * (hi - lo))
            with hold(self.lines, self.checkpoint_marks, self.figure, self.x_axis, self._x_scale):
                self._x_scale.min, self._x_scale.max = lo - pad, hi + pad
                self.x_axis.tick_values = np.array(ticks, dtype=float)
                self.lines.x = x
                self.lines.y = y
                self.lines.labels = cols
                self.lines.colors = colors
                self.checkpoint_marks.x = cx
                self.checkpoint_marks.y = cy
                self.figure.title = f"Training — {len(rows)} epoch(s)"
            self.points = len(rows) if cols else 0
            self._draw_epoch_marker()

    @staticmethod
    def _x_domain(*xs: np.ndarray) -> tuple[float, float]:
        values = np.concatenate([np.asarray(x, dtype=float).ravel() for x in xs])
        values = values[np.isfinite(values)]
        if not values.size:
            return 1.0, 1.0
        return float(values.min()), float(values.max())

    def _checkpoint_points(
        self, rows: Sequence[dict[str, Any]], series: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """x (epoch) and y (``series``) of every cached state within the plotted epochs."""
        if series is None or not rows:
            return np.zeros(0), np.zeros(0)
        epochs = [int(r["epoch"]) for r in rows]
        lo, hi = min(epochs), max(epochs)
        by_key = {(row_run(r), int(r["epoch"])): r for r in rows}
        by_epoch = {int(r["epoch"]): r for r in rows}
        xs, ys = [], []
        for ck in self._checkpoints:
            if isinstance(ck, Mapping):
                epoch = int(ck["epoch"])
                row = by_key.get((int(ck.get("run", 1)), epoch))
                value = as_float(row.get(series)) if row is not None else float("nan")
                if not math.isfinite(value):
                    value = as_float((ck.get("metrics") or {}).get(series, ck.get(series)))
            else:
                epoch = int(ck)
                row = by_epoch.get(epoch)
                value = as_float(row.get(series)) if row is not None else float("nan")
            if lo <= epoch <= hi and math.isfinite(value):
                xs.append(float(epoch))
                ys.append(value)
        return np.array(xs), np.array(ys)

    def _draw_epoch_marker(self) -> None:
        if self._marked is None or not self.points:
            self.epoch_marker.x, self.epoch_marker.y = np.zeros(0), np.zeros(0)
            return
        ys = np.asarray(self.lines.y, dtype=float)
        finite = ys[np.isfinite(ys)] if ys.size else ys
        if not finite.size:
            return
        e = float(self._marked)
        with self.epoch_marker.hold_sync():
            self.epoch_marker.x = np.array([e, e])
            self.epoch_marker.y = np.array([float(finite.min()), float(finite.max())])


def colors_for(cols: Iterable[str], options: list[str]) -> list[str]:
    """The line colours: fixed ones for the usual metrics, the palette for the others."""
    out = []
    for c in cols:
        if c in FIXED_COLORS:
            out.append(FIXED_COLORS[c])
        else:
            others = [o for o in options if o not in FIXED_COLORS]
            i = others.index(c) if c in others else 0
            out.append(PALETTE[i % len(PALETTE)])
    return out
