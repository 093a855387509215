"""`FeedbackView`: the visual feedback — the feedback region with the latest prediction over
it, a static PNG copy, opacities, the epoch slider over every run of the session (after
training) and the PNG export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..._png import encode_png
from ...errors import InputError
from ...training.callbacks import FeedbackHistory
from ..imageview import DRAW_LOCK, ImageView
from ..style import MessageBox, labelled, section
from .common import NeedResult, reporting_button, target, with_epoch

#: the epoch slider's one option before any feedback image exists (run 0 is no run)
NO_FRAME = ("no feedback yet", (0, 0))


class FeedbackView:
    """The feedback image of each epoch (canvas drawing goes through ``DRAW_LOCK``).

    Attributes: ``feedback_view`` (ImageView), ``prediction_opacity``, ``input_opacity``,
    ``snapshot`` (ipywidgets.Image PNG, hidden until the first feedback image),
    ``snapshot_caption``, ``epoch_slider`` (a SelectionSlider over ``(run, epoch)`` of every
    run's feedback images, labelled "run 2 · epoch 5"; enabled after training),
    ``export_png_path``, ``export_png_button``, ``widget`` (the section).
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
        #: the feedback histories the slider scrolls over, one per run, oldest first
        self.histories: list[FeedbackHistory] = []
        self._shown_gray: np.ndarray | None = None

        self.feedback_view = ImageView()
        self.feedback_view.canvas.add_class("nbseg-feedback-canvas")
        self.prediction_opacity = widgets.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=0.05, continuous_update=False
        )
        self.input_opacity = widgets.FloatSlider(
            value=1.0, min=0.0, max=1.0, step=0.05, continuous_update=False
        )
        self.prediction_opacity.observe(self._on_opacity, "value")
        self.input_opacity.observe(self._on_opacity, "value")
        # an Image without a value is a broken-image icon in the browser: hidden until the
        # first feedback image is drawn
        self.snapshot = widgets.Image(
            format="png", layout=widgets.Layout(width="128px", display="none")
        )
        self.snapshot.add_class("nbseg-feedback-snapshot")
        self.snapshot_caption = widgets.HTML("<i>No feedback yet</i>")
        self.epoch_slider = widgets.SelectionSlider(
            options=[NO_FRAME], disabled=True, continuous_update=True
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
        self.snapshot.layout.display = "none"
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
            self.snapshot.layout.display = None
            run = f"Run {self.history.run} · epoch" if self.history is not None else "Epoch"
            self.snapshot_caption.value = f"{run} {epoch} <small>(static copy)</small>"

    def fill(self, histories: FeedbackHistory | Sequence[FeedbackHistory] | None) -> None:
        """After training: the epoch slider over every epoch's prediction of these runs'
        feedback histories (oldest first), the newest shown."""
        if histories is None:
            histories = []
        elif isinstance(histories, FeedbackHistory):
            histories = [histories]
        self.histories = [h for h in histories if h.predictions]
        if not self.histories:
            self.history = None
            return
        options = [
            (f"run {h.run} · epoch {e}", (h.run, e)) for h in self.histories for e in h.epochs
        ]
        self.epoch_slider.options = options  # (the slider is disabled: no redraw yet)
        self.epoch_slider.value = options[-1][1]
        self._show_frame(*options[-1][1])

    @property
    def frames(self) -> list[tuple[int, int]]:
        """``(run, epoch)`` of every feedback image the slider offers."""
        return [(h.run, e) for h in self.histories for e in h.epochs]

    def _history_of(self, run: int) -> FeedbackHistory | None:
        return next((h for h in reversed(self.histories) if h.run == run), None)

    def _show_frame(self, run: int, epoch: int) -> None:
        history = self._history_of(run)
        if history is None or epoch not in history.predictions:
            return
        self.history = history
        if self.gray is not history.image:
            self.gray = history.image
            self.colors = list(history.class_colors) or self.colors
        self.show(epoch, history.predictions[epoch])
        self.export_png_path.value = with_epoch(self.export_png_path.value, epoch, ".png")

    @property
    def has_predictions(self) -> bool:
        return any(h.predictions for h in self.histories)

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
        frame = self.chosen
        if self.epoch_slider.disabled or frame is None:
            return
        run, epoch = frame
        self._show_frame(run, epoch)
        if self._on_epoch is not None:
            self._on_epoch(epoch)

    @property
    def chosen(self) -> tuple[int, int] | None:
        """``(run, epoch)`` the slider shows (None before any feedback image)."""
        value = self.epoch_slider.value
        if value is None or tuple(value) == NO_FRAME[1]:
            return None
        return (int(value[0]), int(value[1]))

    def export_png(self) -> Path:
        """Write the slider's epoch as a PNG: the region with its prediction over it,
        enlarged to at least :attr:`FeedbackHistory.EXPORT_SIDE` pixels on the long side
        (nearest neighbour) with a legend naming the run, epoch and classes."""
        self._need_result("exporting a feedback image")
        chosen = self.chosen
        history = None if chosen is None else self._history_of(chosen[0])
        if chosen is None or history is None:
            raise InputError("This training has no feedback image (no epoch finished).")
        path = target(self.export_png_path.value, "the PNG export", ".png")
        run, epoch = chosen
        out = history.export_png(path, epoch=epoch, opacity=self.prediction_opacity.value)
        self.message.show(f"Saved the feedback image of run {run} · epoch {epoch} to {out}.")
        return out
