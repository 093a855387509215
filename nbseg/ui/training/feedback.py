"""`FeedbackView`: the visual feedback — the feedback region with the latest prediction over
it, a static PNG copy, opacities, the epoch slider (after training) and the PNG export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..._png import encode_png
from ...errors import InputError
from ...training.callbacks import FeedbackHistory
from ..imageview import DRAW_LOCK, ImageView
from ..style import MessageBox, labelled, section
from .common import NeedResult, reporting_button, set_bounds, target, with_epoch


class FeedbackView:
    """The feedback image of each epoch (canvas drawing goes through ``DRAW_LOCK``).

    Attributes: ``feedback_view`` (ImageView), ``prediction_opacity``, ``input_opacity``,
    ``snapshot`` (ipywidgets.Image PNG), ``snapshot_caption``, ``epoch_slider`` (enabled after
    training), ``export_png_path``, ``export_png_button``, ``widget`` (the section).
    ``on_epoch(epoch)`` is called when the slider shows another epoch.
    """

    def __init__(
        self,
        message: MessageBox,
        need_result: NeedResult,
        on_epoch: Callable[[int], Any] | None = None,
    ) -> None:
        self.message = message
        self._need_result = need_result
        self._on_epoch = on_epoch
        self.gray: np.ndarray | None = None
        self.colors: list[str] = []
        self.history: FeedbackHistory | None = None
        self._shown_gray: np.ndarray | None = None

        self.feedback_view = ImageView(256, 256)
        self.feedback_view.canvas.add_class("nbseg-feedback-canvas")
        self.prediction_opacity = widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, continuous_update=False
        )
        self.input_opacity = widgets.FloatSlider(
            value=1.0, min=0.0, max=1.0, step=0.05, continuous_update=False
        )
        self.prediction_opacity.observe(self._on_opacity, "value")
        self.input_opacity.observe(self._on_opacity, "value")
        self.snapshot = widgets.Image(format="png", layout=widgets.Layout(width="128px"))
        self.snapshot.add_class("nbseg-feedback-snapshot")
        self.snapshot_caption = widgets.HTML("<i>No feedback yet</i>")
        self.epoch_slider = widgets.IntSlider(
            value=1, min=1, max=1, disabled=True, continuous_update=True
        )
        self.epoch_slider.observe(self._on_epoch_slider, "value")
        self.export_png_path = widgets.Text("feedback.png", layout=widgets.Layout(width="220px"))
        self.export_png_button = reporting_button(
            message, "Export PNG", "file-image-o", self.export_png
        )
        self.export_png_button.add_class("nbseg-export-png")
        self.export_png_path.add_class("nbseg-export-png-path")
        self.widget = section(
            "Visual feedback",
            self.feedback_view,
            labelled("Prediction opacity", self.prediction_opacity),
            labelled("Input opacity", self.input_opacity),
            labelled("Epoch", self.epoch_slider, "Scroll through the epochs' feedback images"),
            widgets.HBox([self.export_png_path, self.export_png_button]),
            widgets.HBox([self.snapshot, self.snapshot_caption]),
        )

    # -- what the composer calls ------------------------------------------------------------
    def reset(self, colors: list[str]) -> None:
        """A new training starts: no image, no prediction, no epoch slider."""
        self.gray = None
        self.history = None
        self.colors = list(colors)
        self.epoch_slider.disabled = True
        self.snapshot_caption.value = "<i>No feedback yet</i>"
        with DRAW_LOCK:
            self.feedback_view.set_labels(None, self.colors)

    def set_image(self, gray: np.ndarray, colors: list[str] | None = None) -> None:
        """The feedback region's grey image (the training's start info)."""
        if colors:
            self.colors = list(colors)
        self.gray = np.asarray(gray, np.uint8)
        with DRAW_LOCK:
            self.feedback_view.set_labels(None, self.colors)
            self.feedback_view.set_image(self.gray, keep_view=False)
            self._shown_gray = self.gray

    def show(self, epoch: int, pred: np.ndarray) -> None:
        """Draw the prediction of ``epoch`` over the image, and its static copy."""
        with DRAW_LOCK:
            if self.gray is None and self.history is not None:
                self.gray = self.history.image
            if self.gray is None:
                return
            if self._shown_gray is not self.gray:
                self.feedback_view.set_image(self.gray)
                self._shown_gray = self.gray
            self.feedback_view.set_labels(np.asarray(pred).astype(np.int16), self.colors)
            rgb = self.feedback_view.compose()
        if rgb is not None:
            self.snapshot.value = encode_png(rgb)
            self.snapshot_caption.value = f"Epoch {epoch} <small>(static copy)</small>"

    def fill(self, history: FeedbackHistory | None) -> None:
        """After training: the epoch slider over every epoch's prediction, the last shown."""
        self.history = history
        if history is None or not history.predictions:
            return
        epochs = history.epochs
        set_bounds(self.epoch_slider, epochs[0], epochs[-1])
        self.epoch_slider.value = epochs[-1]
        self.show(epochs[-1], history.predictions[epochs[-1]])
        self.export_png_path.value = with_epoch(self.export_png_path.value, epochs[-1], ".png")

    @property
    def has_predictions(self) -> bool:
        return self.history is not None and bool(self.history.predictions)

    # -- widgets ----------------------------------------------------------------------------
    def _on_opacity(self, _: Any) -> None:
        with DRAW_LOCK:
            self.feedback_view.set_opacity(
                labels=self.prediction_opacity.value, image=self.input_opacity.value
            )
            rgb = self.feedback_view.compose()
        if rgb is not None:
            self.snapshot.value = encode_png(rgb)

    def _on_epoch_slider(self, _: Any) -> None:
        if self.epoch_slider.disabled or self.history is None:
            return
        epoch = int(self.epoch_slider.value)
        if epoch in self.history.predictions:
            self.show(epoch, self.history.predictions[epoch])
        if self._on_epoch is not None:
            self._on_epoch(epoch)
        self.export_png_path.value = with_epoch(self.export_png_path.value, epoch, ".png")

    def export_png(self) -> Path:
        """Write the slider's epoch as a PNG (the region with its prediction over it)."""
        result = self._need_result("exporting a feedback image")
        if result.feedback is None or not result.feedback.predictions:
            raise InputError("This training has no feedback image (no epoch finished).")
        path = target(self.export_png_path.value, "the PNG export", ".png")
        epoch = int(self.epoch_slider.value)
        out = result.feedback.export_png(path, epoch=epoch, opacity=self.prediction_opacity.value)
        self.message.show(f"Saved the feedback image of epoch {epoch} to {out}.", "info")
        return out
