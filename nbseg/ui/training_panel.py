"""`TrainingPanel`: Dragonfly's *Training* dialog — Train/Stop, live graph, visual feedback,
checkpoint cache, and the Graph / List tabs after training.

Threads
-------
``Train`` builds a :class:`nbseg.TrainingRun` from the :class:`~nbseg.ui.state.Workspace`
(``model``, ``training_sets``, ``validation``, ``params``, ``feedback``) and starts it in a
background thread; the click returns at once and the kernel stays responsive.

The training thread only talks to a :class:`PanelListener`, which stores the latest state under a
lock (progress, new epoch records, the latest feedback prediction, warnings) and never touches a
widget. A second, light *refresher* thread wakes every :attr:`TrainingPanel.REFRESH_S` seconds
(or at once when an epoch ends), takes that state and updates the widgets: the progress label and
bar at most every 0.25 s, the graph, the list and the feedback image once per epoch. Canvas
drawing goes through :data:`nbseg.ui.imageview.DRAW_LOCK`. Warnings raised on the training thread
(Lightning's, the memory-ratio warning) go to the panel's log instead of stderr.

When the run ends the refresher fills the after-training views (epoch range, feedback epoch
slider, checkpoint list, export buttons), then calls ``workspace.set_result(result)`` and
``workspace.set_model(model)``.

Public attributes (for the composed tool, notebooks and tests)
----------------------------------------------------------------
``train_button``, ``stop_button``, ``status``, ``progress``, ``progress_label``, ``message``
(MessageBox), ``summary``, ``figure`` (bqplot), ``lines``, ``checkpoint_marks``,
``epoch_marker``, ``metrics`` (SelectMultiple), ``epoch_range`` (IntRangeSlider),
``feedback_view`` (ImageView), ``prediction_opacity``, ``input_opacity``, ``snapshot``
(ipywidgets.Image PNG), ``snapshot_caption``, ``epoch_slider``, ``export_png_path``,
``export_png_button``, ``checkpoint_select``, ``load_checkpoint_button``, ``save_copy_path``,
``save_copy_button``, ``digits``, ``table``, ``export_csv_path``, ``export_csv_button``,
``save_model_path``, ``save_model_button``, ``tabs`` ("Graph", "List"), ``log_box``
(Accordion) holding ``log_view`` (HTML), ``log_lines`` (list of str).

Methods: :meth:`start`, :meth:`stop`, :meth:`wait`, :meth:`graph_points`; properties
:attr:`run`, :attr:`result`, :attr:`running`, :attr:`history`.
"""

from __future__ import annotations

import contextlib
import html
import math
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from .._png import encode_png
from ..errors import InputError, NbsegError, ParamsError
from ..training.callbacks import TrainingListener
from ..training.job import TrainingRun
from ..training.params import TrainingParams
from ..training.run import TrainingResult, format_value, history_columns
from .imageview import DRAW_LOCK, ImageView
from .state import Workspace
from .style import MessageBox, css, labelled, run_reporting, section

HIDDEN_COLUMNS = ("epoch", "time", "epoch_time", "checkpoint")
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


# -- warnings of the training thread go to the panel, not stderr --------------------------
_SINKS: dict[int, Callable[[type[Warning], str], None]] = {}
_previous_showwarning: Any = None


def _showwarning(message: Any, category: Any, filename: Any, lineno: Any, *args: Any) -> None:
    sink = _SINKS.get(threading.get_ident())
    if sink is not None:
        sink(category, str(message))
        return
    previous = _previous_showwarning
    if previous is None or previous is warnings._showwarning_orig:  # type: ignore[attr-defined]
        # the default hook: go through the active implementation (pytest's recorder, ...)
        msg = warnings.WarningMessage(message, category, filename, lineno, *args)
        warnings._showwarnmsg_impl(msg)  # type: ignore[attr-defined]
    else:
        previous(message, category, filename, lineno, *args)


def _route_warnings_of_this_thread(sink: Callable[[type[Warning], str], None]) -> int:
    global _previous_showwarning
    if warnings.showwarning is not _showwarning:
        _previous_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning
    ident = threading.get_ident()
    _SINKS[ident] = sink
    return ident


class _PanelRun(TrainingRun):
    """A TrainingRun whose thread's warnings go to the panel (nothing printed from it)."""

    def __init__(self, *args: Any, warning_sink: Callable[[type[Warning], str], None], **kw: Any):
        super().__init__(*args, **kw)
        self._warning_sink = warning_sink

    def _main(self) -> None:
        ident = _route_warnings_of_this_thread(self._warning_sink)
        try:
            super()._main()
        finally:
            _SINKS.pop(ident, None)


# -- the listener: the only object the training thread talks to ---------------------------
class PanelListener(TrainingListener):
    """Stores the latest training state under a lock; the panel's refresher takes it.

    Nothing here touches a widget: every event only copies values and, once per epoch (or at
    the start/end), sets :attr:`wake` so the refresher draws promptly.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.info: dict[str, Any] | None = None
        self.progress: dict[str, Any] | None = None
        self.records: list[dict[str, Any]] = []
        self.feedback: list[tuple[int, np.ndarray]] = []
        self.warnings: list[tuple[str, str]] = []
        self.batches = 0
        self.ended = False
        self.error: BaseException | None = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        with self.lock:
            self.info = dict(info)
        self.wake.set()

    def on_batch_end(self, progress: dict[str, Any]) -> None:
        with self.lock:
            self.progress = dict(progress)
            self.batches += 1

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        with self.lock:
            self.records.append(dict(record))
            if feedback is not None:
                self.feedback.append((int(record["epoch"]), feedback))
        self.wake.set()

    def on_train_end(self, result: Any) -> None:
        with self.lock:
            self.ended = True
        self.wake.set()

    def on_error(self, error: BaseException) -> None:
        with self.lock:
            self.error = error
        self.wake.set()

    def add_warning(self, category: type[Warning], text: str) -> None:
        with self.lock:
            self.warnings.append((getattr(category, "__name__", str(category)), text))

    def take(self) -> dict[str, Any]:
        """The state gathered since the last call (progress is the latest, not a queue)."""
        with self.lock:
            out = {
                "info": self.info,
                "progress": self.progress,
                "records": self.records,
                "feedback": self.feedback,
                "warnings": self.warnings,
                "error": self.error,
            }
            self.error = None
            self.info, self.progress = None, None
            self.records, self.feedback, self.warnings = [], [], []
        return out


# -- the panel ----------------------------------------------------------------------------
class TrainingPanel(widgets.VBox):
    """Dragonfly's Training dialog over a :class:`Workspace` (see the module docstring)."""

    REFRESH_S = 0.25
    """Seconds between two progress updates of the widgets while training."""

    def __init__(self, workspace: Workspace | None = None, **kw: Any) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self._run: _PanelRun | None = None
        self._listener: PanelListener | None = None
        self._refresher: threading.Thread | None = None
        self._finished = threading.Event()
        self._finished.set()
        self._ui_lock = threading.RLock()
        self._result: TrainingResult | None = None
        self._base_history: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._feedback_gray: np.ndarray | None = None
        self._shown_gray: np.ndarray | None = None
        self._colors: list[str] = []
        self._first_epoch = 1
        self._points = 0
        self._warning_count = 0
        self._last_error: BaseException | None = None
        self._syncing_metrics = False
        self._started_at = 0.0
        self.log_lines: list[str] = []

        self.message = MessageBox()
        self.summary = widgets.HTML()
        self.train_button = widgets.Button(
            description="Train",
            icon="play",
            button_style="success",
            tooltip="Train the workspace model on the training sets (runs in the background)",
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop after the current batch; the model keeps its weights",
        )
        self.status = widgets.HTML("Idle")
        # stable CSS hooks for the real-browser tests and user styling
        self.train_button.add_class("nbseg-train")
        self.stop_button.add_class("nbseg-stop")
        self.status.add_class("nbseg-train-status")
        self.progress = widgets.IntProgress(
            value=0, min=0, max=1, layout=widgets.Layout(width="300px")
        )
        self.progress_label = widgets.Label("")
        self.train_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())

        # graph ----------------------------------------------------------------------
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
        self.figure = bq.Figure(
            marks=[self.lines, self.checkpoint_marks, self.epoch_marker],
            axes=[
                bq.Axis(scale=self._x_scale, label="epoch", tick_format="d"),
                bq.Axis(scale=self._y_scale, side="left", label="value"),
            ],
            title="Training",
            legend_location="top-right",
            animation_duration=0,
            fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 20},
            layout=widgets.Layout(width="560px", height="330px"),
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
        self.epoch_range.observe(lambda _: self._draw_graph(), "value")

        # feedback -------------------------------------------------------------------
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
        self.export_png_button = self._button("Export PNG", "file-image-o", self._export_png)
        self.export_png_button.add_class("nbseg-export-png")
        self.export_png_path.add_class("nbseg-export-png-path")

        # checkpoints ----------------------------------------------------------------
        self.checkpoint_select = widgets.Dropdown(options=[], layout=widgets.Layout(width="300px"))
        self.checkpoint_select.observe(self._on_checkpoint_choice, "value")
        self.load_checkpoint_button = self._button(
            "Load checkpoint", "upload", self._load_checkpoint, "Put these weights in the model"
        )
        self.save_copy_path = widgets.Text("checkpoint.nbseg", layout=widgets.Layout(width="220px"))
        self.save_copy_button = self._button(
            "Save copy", "copy", self._save_copy, "Save a copy of the model with these weights"
        )

        # list -----------------------------------------------------------------------
        self.digits = widgets.IntSlider(value=4, min=1, max=10, continuous_update=False)
        self.digits.observe(lambda _: self._draw_table(), "value")
        self.table = widgets.HTML(
            "<i>No epoch yet</i>",
            layout=widgets.Layout(max_height="360px", overflow="auto", width="100%"),
        )
        self.export_csv_path = widgets.Text(
            "training_history.csv", layout=widgets.Layout(width="220px")
        )
        self.export_csv_button = self._button("Export CSV", "table", self._export_csv)
        self.export_csv_button.add_class("nbseg-export-csv")
        self.export_csv_path.add_class("nbseg-export-csv-path")

        # model ----------------------------------------------------------------------
        self.save_model_path = widgets.Text("model.nbseg", layout=widgets.Layout(width="220px"))
        self.save_model_button = self._button("Save model", "save", self._save_model)
        self.export_config_path = widgets.Text(
            "training_run/train.yaml", layout=widgets.Layout(width="220px")
        )
        self.export_config_button = self._button(
            "Export config",
            "terminal",
            self.export_config,
            "Write this training (model, data, parameters) as a YAML config for `nbseg train`",
        )
        self.log_view = widgets.HTML("")
        self.log_box = widgets.Accordion(
            children=[self.log_view], titles=("Log",), selected_index=None
        )

        # layout ---------------------------------------------------------------------
        controls = widgets.HBox([self.train_button, self.stop_button, self.status])
        controls.add_class("nbseg-toolbar")
        graph_side = widgets.VBox(
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
        feedback_side = section(
            "Visual feedback",
            self.feedback_view,
            labelled("Prediction opacity", self.prediction_opacity),
            labelled("Input opacity", self.input_opacity),
            labelled("Epoch", self.epoch_slider, "Scroll through the epochs' feedback images"),
            widgets.HBox([self.export_png_path, self.export_png_button]),
            widgets.HBox([self.snapshot, self.snapshot_caption]),
        )
        checkpoints = section(
            "Checkpoint cache",
            widgets.HBox([self.checkpoint_select, self.load_checkpoint_button]),
            widgets.HBox([self.save_copy_path, self.save_copy_button]),
        )
        graph_tab = widgets.VBox([widgets.HBox([graph_side, feedback_side]), checkpoints])
        list_tab = widgets.VBox(
            [
                labelled("Significant digits", self.digits),
                self.table,
                widgets.HBox([self.export_csv_path, self.export_csv_button]),
            ]
        )
        self.tabs = widgets.Tab(children=[graph_tab, list_tab], titles=("Graph", "List"))
        super().__init__(
            [
                css(),
                widgets.HTML("<h3 style='margin:4px 0'>Training</h3>"),
                self.summary,
                controls,
                widgets.HBox([self.progress, self.progress_label]),
                self.message,
                self.tabs,
                section(
                    "Model",
                    widgets.HBox([self.save_model_path, self.save_model_button]),
                    widgets.HBox([self.export_config_path, self.export_config_button]),
                ),
                self.log_box,
            ],
            **kw,
        )
        self.add_class("nbseg-panel")
        self.add_class("nbseg-training-panel")
        self.workspace.observe(self._on_workspace)
        self._update_summary()
        self._update_buttons()

    # -- public API -------------------------------------------------------------------
    @property
    def run(self) -> TrainingRun | None:
        """The current (or last) :class:`TrainingRun`, None before the first Train."""
        return self._run

    @property
    def result(self) -> TrainingResult | None:
        """The :class:`TrainingResult` of the last finished run (None while none finished)."""
        return self._result

    @property
    def running(self) -> bool:
        """True from Train until the panel has shown the run's end."""
        return not self._finished.is_set()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch rows the graph and the list show (earlier epochs of a fine-tuned
        model first)."""
        if self._result is not None:
            return list(self._result.history)
        return self._base_history + self._records

    def graph_points(self) -> int:
        """Number of epochs plotted on the graph."""
        return self._points

    def start(self) -> TrainingRun | None:
        """Start training in the background (same as clicking Train); returns the run, or
        None when something is missing (the reason is shown in :attr:`message`)."""
        self.message.clear()
        if self.running:
            self.message.show("A training is already running; press Stop first.", "warning")
            return None
        try:
            run = self._make_run()
        except Exception as err:  # shown with its fix, never as a traceback
            self.message.error(err)
            return None
        self._reset_live(run)
        self._finished.clear()
        self._update_buttons()
        self.status.value = "<b>Preparing</b> data and model…"
        try:
            run.start()
        except Exception as err:
            self._finished.set()
            self._update_buttons()
            self.message.error(err)
            return None
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="nbseg-training-ui", daemon=True
        )
        self._refresher.start()
        return run

    def stop(self) -> None:
        """Stop after the current batch (same as clicking Stop); the model keeps its weights."""
        if self._run is None or not self.running:
            return
        self._run.stop()
        self.stop_button.disabled = True
        self.status.value = "<b>Stopping</b> after the current batch…"

    def wait(self, timeout: float | None = None) -> TrainingResult | None:
        """Block until the run ends and the panel shows it (or ``timeout`` seconds); returns
        the result (None if the run failed before any epoch or is still running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        run, refresher = self._run, self._refresher
        if run is None:
            return self._result
        run.wait(timeout)
        if refresher is not None:
            refresher.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self._result if not self.running else None

    # -- starting ----------------------------------------------------------------------
    def _make_run(self) -> _PanelRun:
        ws = self.workspace
        model = ws.model
        if model is None:
            raise InputError(
                "No model to train: create one in the 'New model' tab or load one in the "
                "'Models' tab, then press Train."
            )
        sets = list(ws.training_sets or [])
        if not sets:
            raise InputError(
                "No training set: choose an input image and its multi-ROI in the 'Inputs' tab, "
                "then press Train."
            )
        params = ws.params or model.params or TrainingParams()
        if not isinstance(params, TrainingParams):
            raise ParamsError(
                f"The workspace parameters are a {type(params).__name__}, not TrainingParams; "
                "set them in the 'Training parameters' tab."
            )
        try:
            params.validate(model.spec.class_count)
        except ParamsError as err:
            raise ParamsError(f"{err} Fix it in the 'Training parameters' tab.") from None
        for i, ts in enumerate(sets, start=1):
            if ts.input_count != model.spec.input_count:
                raise InputError(
                    f"Training set {i} has {ts.input_count} input(s) but model "
                    f"{model.name!r} takes {model.spec.input_count}; choose the inputs again "
                    "in the 'Inputs' tab or use a model generated for this many inputs."
                )
        validation = ws.validation
        if isinstance(validation, (int, float)) and not isinstance(validation, bool):
            if not 0 <= float(validation) < 1:
                raise InputError(
                    f"Validation fraction {validation} must lie in [0, 1); choose e.g. 0.2 in "
                    "the 'Inputs' tab."
                )
        elif validation is None:
            validation = 0.2
        listener = PanelListener()
        self._listener = listener
        return _PanelRun(
            model,
            sets,
            params,
            validation,
            callbacks=[listener],
            feedback=ws.feedback,
            warning_sink=listener.add_warning,
        )

    def _reset_live(self, run: _PanelRun) -> None:
        with self._ui_lock:
            self._run = run
            self._result = None
            self._base_history = [dict(h) for h in run.model.history]
            self._records = []
            self._feedback_gray = None
            self._colors = list(run.model.class_colors)
            self._first_epoch = len(self._base_history) + 1
            self._warning_count = 0
            self.log_box.titles = ("Log",)
            self._last_error = None
            self._started_at = time.perf_counter()
            self.progress.value, self.progress.max = 0, 1
            self.progress.bar_style = ""
            self.progress_label.value = ""
            self.epoch_range.disabled = True
            self.epoch_slider.disabled = True
            self.checkpoint_select.options = []
            self.snapshot_caption.value = "<i>No feedback yet</i>"
            with DRAW_LOCK:
                self.feedback_view.set_labels(None, self._colors)
            self._sync_metric_options()
            self._draw_graph()
            self._draw_table()
            self._log(f"Training {run.model.name!r} started.")

    # -- the refresher thread ----------------------------------------------------------
    def _refresh_loop(self) -> None:
        run, listener = self._run, self._listener
        assert run is not None and listener is not None
        last = 0.0
        try:
            while True:
                listener.wake.wait(self.REFRESH_S)
                # coalesce: never two refreshes closer than REFRESH_S while the run goes on
                rest = self.REFRESH_S - (time.monotonic() - last)
                if rest > 0 and run.running:
                    run.wait(rest)
                listener.wake.clear()
                done = not run.running
                self._refresh(listener.take())
                last = time.monotonic()
                if done:
                    break
        except Exception as err:  # a display error must not lose the run's end
            self._log(f"Display error: {type(err).__name__}: {err}")
        finally:
            self._finish(run)

    def _refresh(self, state: dict[str, Any]) -> None:
        with self._ui_lock:
            for category, text in state["warnings"]:
                self._warning_count += 1
                self._log(f"{category}: {text}")
                self.log_box.titles = (f"Log ({self._warning_count} warning(s))",)
                if category == "ResourceWarning":
                    self.message.show(text, "warning")
            info = state["info"]
            if info is not None:
                self._first_epoch = int(info.get("first_epoch", self._first_epoch))
                self._colors = list(info.get("class_colors") or self._colors)
                gray = info.get("feedback_image")
                if gray is not None:
                    self._feedback_gray = np.asarray(gray, np.uint8)
                    with DRAW_LOCK:
                        self.feedback_view.set_labels(None, self._colors)
                        self.feedback_view.set_image(self._feedback_gray, keep_view=False)
                        self._shown_gray = self._feedback_gray
                if self._run is not None and self._run.status == "running":
                    self.status.value = "<b>Training</b>…"
            if state["progress"] is not None:
                self._show_progress(state["progress"])
            if state["records"]:
                self._records.extend(state["records"])
                self._sync_metric_options()
                self._draw_graph()
                self._draw_table()
            if state["feedback"]:  # only the latest epoch is drawn (the core keeps them all)
                epoch, pred = state["feedback"][-1]
                self._show_feedback(epoch, pred)
            error = state["error"]
            if error is not None:
                self._last_error = error
                lines = traceback.format_exception(type(error), error, error.__traceback__)
                self._log("Training error:\n" + "".join([lines[0], *lines[-12:]]).rstrip())

    def _show_progress(self, p: dict[str, Any]) -> None:
        batches = max(1, int(p.get("batches") or 1))
        first = self._first_epoch
        epoch, epochs = int(p["epoch"]), int(p["epochs"])
        total = max(1, (epochs - first + 1) * batches)
        done = min(total, (epoch - first) * batches + int(p["batch"]))
        self.progress.max = total
        self.progress.value = done
        loss = p.get("loss")
        parts = [
            f"Epoch {epoch}/{epochs}",
            f"batch {p['batch']}/{batches}",
            f"elapsed {_clock(p.get('elapsed'))}",
            f"ETA {_clock(p.get('eta'))}",
        ]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4g}")
        self.progress_label.value = " · ".join(parts)

    def _finish(self, run: _PanelRun) -> None:
        result = run.result
        try:
            with self._ui_lock:
                if self._listener is not None:
                    self._refresh(self._listener.take())
                status = run.status
                if result is not None:
                    self._result = result
                self._show_end(run, result)
                if result is not None:
                    self._fill_after_training(result)
        except Exception as err:  # keep the panel usable whatever happened
            self._log(f"Display error: {type(err).__name__}: {err}")
            status = run.status
        finally:
            self._finished.set()
            self._update_buttons()
        if result is not None:
            self.workspace.set_result(result)
            self.workspace.set_model(result.model)
        self._log(f"Training ended: {status}.")

    def _show_end(self, run: _PanelRun, result: TrainingResult | None) -> None:
        status = run.status
        n = len(self._records)
        took = result.duration if result is not None else time.perf_counter() - self._started_at
        restored = ""
        if result is not None and result.best_epoch is not None and self._records:
            last = self._records[-1]["epoch"]
            params = run.params or TrainingParams()
            if params.restore_best and result.best_epoch != last and status != "failed":
                restored = f" The model holds the weights of the best epoch {result.best_epoch}."
        if status == "failed":
            kept = " The model keeps its last good weights." if n else ""
            self.status.value = "<b style='color:#b71c1c'>Failed</b>"
            self.progress.bar_style = "danger"
            hint = ""
            if run.error and not isinstance(self._last_error, NbsegError):
                hint = (
                    " This is not a known input or parameter problem: check the inputs and "
                    "parameters, try a smaller model; the Log has the details."
                )
            self.message.error(f"Training failed: {run.error or 'unknown error'}{kept}{hint}")
        elif status == "stopped":
            self.status.value = "<b>Stopped</b>"
            self.progress.bar_style = "warning"
            self.message.show(
                f"Stopped after {n} epoch(s) in {took:.1f} s; the model keeps its weights."
                f"{restored}",
                "info",
            )
        else:
            word = "Early-stopped" if status == "early_stopped" else "Completed"
            self.status.value = f"<b>{word}</b>"
            self.progress.bar_style = "success"
            self.progress.value = self.progress.max
            self.message.show(f"{word}: {n} epoch(s) in {took:.1f} s.{restored}", "info")

    def _fill_after_training(self, result: TrainingResult) -> None:
        hist = result.history
        if hist:
            lo, hi = int(hist[0]["epoch"]), int(hist[-1]["epoch"])
            _set_bounds(self.epoch_range, lo, hi)
            self.epoch_range.value = (lo, hi)
        fb = result.feedback
        if fb is not None and fb.predictions:
            epochs = fb.epochs
            _set_bounds(self.epoch_slider, epochs[0], epochs[-1])
            self.epoch_slider.value = epochs[-1]
            self._show_feedback(epochs[-1], fb.predictions[epochs[-1]])
            self.export_png_path.value = _with_epoch(self.export_png_path.value, epochs[-1], ".png")
        self._fill_checkpoints(result)
        self._sync_metric_options()
        self._draw_graph()
        self._draw_table()

    def _fill_checkpoints(self, result: TrainingResult) -> None:
        cache = result.checkpoints
        options: list[tuple[str, int]] = []
        if cache is not None:
            for row in cache.list():
                value = row.get(cache.monitor)
                shown = "" if value is None else f", {cache.monitor} {value:.4g}"
                options.append((f"epoch {row['epoch']} ({row['reason']}{shown})", row["epoch"]))
        self.checkpoint_select.options = options
        if options:
            best = cache.best_epoch if cache is not None else None
            values = [v for _, v in options]
            self.checkpoint_select.value = best if best in values else values[-1]

    # -- graph ---------------------------------------------------------------------------
    def _metric_options(self) -> list[str]:
        hist = self.history
        cols = [c for c in history_columns(hist) if c not in HIDDEN_COLUMNS]
        return [c for c in cols if any(_is_number(r.get(c)) for r in hist)]

    def _sync_metric_options(self) -> None:
        options = self._metric_options() or ["loss", "val_loss"]
        if list(self.metrics.options) == options:
            return
        keep = [v for v in self.metrics.value if v in options]
        if not keep:
            keep = [c for c in ("loss", "val_loss") if c in options] or options[:1]
        self._syncing_metrics = True
        try:
            with self.metrics.hold_sync():
                self.metrics.options = options
                self.metrics.value = keep
        finally:
            self._syncing_metrics = False

    def _on_metrics(self, _: Any) -> None:
        if not self._syncing_metrics:
            self._draw_graph()

    def _checkpoint_epochs(self) -> list[int]:
        if self._result is not None:
            cache = self._result.checkpoints
            return [] if cache is None else [int(r["epoch"]) for r in cache.list()]
        return [int(r["epoch"]) for r in self._records if r.get("checkpoint")]

    def _monitor(self) -> str:
        if self._result is not None and self._result.checkpoints is not None:
            return self._result.checkpoints.monitor
        params = self._run.params if self._run is not None else None
        return params.monitor if params is not None else "val_loss"

    def _draw_graph(self) -> None:
        with self._ui_lock:
            rows = self.history
            if not self.epoch_range.disabled:
                lo, hi = self.epoch_range.value
                rows = [r for r in rows if lo <= int(r["epoch"]) <= hi]
            cols = [c for c in self.metrics.value if c in self.metrics.options]
            x = np.array([float(r["epoch"]) for r in rows])
            y = np.array([[_float(r.get(c)) for r in rows] for c in cols]).reshape(
                len(cols), len(rows)
            )
            monitor = self._monitor()
            series = monitor if monitor in cols else (cols[0] if cols else None)
            ck = set(self._checkpoint_epochs())
            ck_rows = [r for r in rows if int(r["epoch"]) in ck and series is not None]
            cx = np.array([float(r["epoch"]) for r in ck_rows])
            cy = np.array([_float(r.get(series)) for r in ck_rows]) if series else np.zeros(0)
            colors = _colors_for(cols, list(self.metrics.options))
            with _hold(self.lines, self.checkpoint_marks, self.figure):
                self.lines.x = x
                self.lines.y = y
                self.lines.labels = cols
                self.lines.colors = colors
                self.checkpoint_marks.x = cx
                self.checkpoint_marks.y = cy
                self.figure.title = f"Training — {len(rows)} epoch(s)"
            self._points = len(rows) if cols else 0
            self._draw_epoch_marker()

    def _draw_epoch_marker(self) -> None:
        if self.epoch_slider.disabled or not self._points:
            self.epoch_marker.x, self.epoch_marker.y = np.zeros(0), np.zeros(0)
            return
        ys = np.asarray(self.lines.y, dtype=float)
        finite = ys[np.isfinite(ys)] if ys.size else ys
        if not finite.size:
            return
        e = float(self.epoch_slider.value)
        with self.epoch_marker.hold_sync():
            self.epoch_marker.x = np.array([e, e])
            self.epoch_marker.y = np.array([float(finite.min()), float(finite.max())])

    # -- list ----------------------------------------------------------------------------
    def _draw_table(self) -> None:
        with self._ui_lock:
            hist = self.history
            if not hist:
                self.table.value = "<i>No epoch yet</i>"
                return
            digits = int(self.digits.value)
            cols = history_columns(hist)
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = []
            for r in hist:
                cells = []
                for c in cols:
                    v = r.get(c, "")
                    if c == "checkpoint":
                        text = "◆" if v else ""
                    elif isinstance(v, float):
                        text = f"{format_value(v, digits):.{digits}g}"
                    else:
                        text = str(v)
                    cells.append(f"<td>{html.escape(text)}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            self.table.value = (
                "<table class='nbseg-history' style='border-collapse:collapse;font-size:12px'>"
                "<style>.nbseg-history td,.nbseg-history th{border:1px solid #ccc;"
                "padding:2px 6px;text-align:right}</style>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            )

    # -- feedback ------------------------------------------------------------------------
    def _show_feedback(self, epoch: int, pred: np.ndarray) -> None:
        with DRAW_LOCK:
            if self._feedback_gray is None and self._result is not None:
                fb = self._result.feedback
                if fb is not None:
                    self._feedback_gray = fb.image
            if self._feedback_gray is None:
                return
            if self._shown_gray is not self._feedback_gray:
                self.feedback_view.set_image(self._feedback_gray)
                self._shown_gray = self._feedback_gray
            self.feedback_view.set_labels(np.asarray(pred).astype(np.int16), self._colors)
            rgb = self.feedback_view.compose()
        if rgb is not None:
            self.snapshot.value = encode_png(rgb)
            self.snapshot_caption.value = f"Epoch {epoch} <small>(static copy)</small>"

    def _on_opacity(self, _: Any) -> None:
        with DRAW_LOCK:
            self.feedback_view.set_opacity(
                labels=self.prediction_opacity.value, image=self.input_opacity.value
            )
            rgb = self.feedback_view.compose()
        if rgb is not None:
            self.snapshot.value = encode_png(rgb)

    def _on_epoch_slider(self, _: Any) -> None:
        if self.epoch_slider.disabled or self._result is None or self._result.feedback is None:
            return
        fb = self._result.feedback
        epoch = int(self.epoch_slider.value)
        if epoch in fb.predictions:
            self._show_feedback(epoch, fb.predictions[epoch])
        self._draw_epoch_marker()
        self.export_png_path.value = _with_epoch(self.export_png_path.value, epoch, ".png")

    def _on_checkpoint_choice(self, _: Any) -> None:
        epoch = self.checkpoint_select.value
        if epoch is not None:
            self.save_copy_path.value = _with_epoch(self.save_copy_path.value, epoch, ".nbseg")

    # -- actions ---------------------------------------------------------------------------
    def _need_result(self, what: str) -> TrainingResult:
        if self.running:
            raise InputError(f"Wait for the training to end (or press Stop) before {what}.")
        if self._result is None:
            raise InputError(f"Train first: {what} needs a finished training.")
        return self._result

    def _export_png(self) -> Path:
        result = self._need_result("exporting a feedback image")
        if result.feedback is None or not result.feedback.predictions:
            raise InputError("This training has no feedback image (no epoch finished).")
        path = _target(self.export_png_path.value, "the PNG export", ".png")
        epoch = int(self.epoch_slider.value)
        out = result.feedback.export_png(path, epoch=epoch, opacity=self.prediction_opacity.value)
        self.message.show(f"Saved the feedback image of epoch {epoch} to {out}.", "info")
        return out

    def _export_csv(self) -> Path:
        result = self._need_result("exporting the history")
        path = _target(self.export_csv_path.value, "the CSV export", ".csv")
        digits = int(self.digits.value)
        result.to_csv(path, digits)
        self.message.show(
            f"Saved {len(result.history)} epoch(s) to {path} ({digits} significant digits).",
            "info",
        )
        return path

    def _chosen_checkpoint(self) -> tuple[TrainingResult, int]:
        result = self._need_result("using the checkpoint cache")
        if result.checkpoints is None or not result.checkpoints.entries:
            raise InputError(
                "The checkpoint cache is empty (TrainingParams.checkpoint_cache_mb = 0 or no "
                "epoch finished); raise the cache size in 'Training parameters' and train again."
            )
        epoch = self.checkpoint_select.value
        if epoch is None:
            raise InputError("Choose a checkpoint in the list first.")
        return result, int(epoch)

    def _load_checkpoint(self) -> None:
        result, epoch = self._chosen_checkpoint()
        model = result.model
        result.checkpoints.load_into(model, epoch)
        model.history = [dict(h) for h in result.history if int(h.get("epoch", 0)) <= epoch]
        self.workspace.set_model(model)
        self.message.show(
            f"Loaded the weights of epoch {epoch} into model {model.name!r}; save it with "
            "'Save model' to keep them.",
            "info",
        )

    def _save_copy(self) -> Path:
        result, epoch = self._chosen_checkpoint()
        path = _target(self.save_copy_path.value, "the model copy", ".nbseg")
        out = result.checkpoints.save_copy(result.model, epoch, path)
        self.message.show(f"Saved a copy of the model with the weights of epoch {epoch} to {out}.")
        return out

    def _save_model(self) -> Path:
        if self.running:
            raise InputError("Wait for the training to end (or press Stop) before saving.")
        model = self.workspace.model or (self._result.model if self._result else None)
        if model is None:
            raise InputError("No model to save: create or load one first.")
        path = _target(self.save_model_path.value, "the model", ".nbseg")
        out = model.save(path)
        self.message.show(f"Saved model {model.name!r} to {out}.", "info")
        return out

    def export_config(self, path: str | Path | None = None) -> Path:
        """Write the current training (model or spec, training sets, validation, parameters,
        feedback region) as a YAML config next to its data, for ``nbseg train CONFIG`` on a
        bigger machine. In-memory arrays go to zarr stores in the config's folder."""
        from ..config import TrainingConfig

        ws = self.workspace
        if ws.model is None:
            raise InputError("No model: create or load one before exporting a config.")
        if not ws.training_sets:
            raise InputError("No training set: choose inputs in the 'Inputs' tab first.")
        raw = str(path) if path is not None else self.export_config_path.value
        if raw.strip():
            Path(raw.strip()).expanduser().parent.mkdir(parents=True, exist_ok=True)
        target = _target(raw, "the config", ".yaml")
        folder = target.parent
        validation = ws.validation if isinstance(ws.validation, float) else list(ws.validation)
        cfg = TrainingConfig.from_objects(
            ws.model if ws.model.trained else ws.model.spec,
            ws.params,
            *ws.training_sets,
            validation=validation,
            feedback=ws.feedback,
            output=f"{ws.model.name}.nbseg",
            data_dir=folder,
        )
        cfg.to_yaml(target)
        self.message.show(f"Wrote {target}; run it with:  nbseg train {target}", "info")
        return target

    def _button(
        self, description: str, icon: str, action: Callable[[], Any], tooltip: str = ""
    ) -> widgets.Button:
        """A button whose action reports any error in :attr:`message` (never a traceback)."""
        b = widgets.Button(description=description, icon=icon, tooltip=tooltip or description)
        b.on_click(lambda _: run_reporting(self.message, action))
        return b

    # -- state ---------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self.running
        result = self._result
        has_result = result is not None and not running
        cache_ok = (
            has_result and result.checkpoints is not None and bool(result.checkpoints.entries)
        )
        fb_ok = has_result and result.feedback is not None and bool(result.feedback.predictions)
        self.train_button.disabled = running
        self.stop_button.disabled = not running
        self.export_png_button.disabled = not fb_ok
        self.epoch_slider.disabled = not fb_ok
        self.epoch_range.disabled = not (has_result and bool(result.history))
        self.export_csv_button.disabled = not has_result
        self.load_checkpoint_button.disabled = not cache_ok
        self.save_copy_button.disabled = not cache_ok
        self.checkpoint_select.disabled = not cache_ok
        self.save_model_button.disabled = running or (
            self.workspace.model is None and result is None
        )
        if has_result:
            self._draw_epoch_marker()

    def _on_workspace(self, event: str, value: Any) -> None:
        if event in ("model", "training_sets", "params", "feedback"):
            self._update_summary()
            if event == "model" and value is not None:
                self.save_model_path.value = f"{_safe_name(value.name)}.nbseg"
            if not self.running:
                self._update_buttons()

    def _update_summary(self) -> None:
        ws = self.workspace
        parts = []
        if ws.model is None:
            parts.append("<b>Model:</b> <i>none — create or load one</i>")
        else:
            m = ws.model
            trained = f"trained {m.epochs_trained} epochs" if m.trained else "untrained"
            parts.append(
                f"<b>Model:</b> {html.escape(m.name)} ({html.escape(m.spec.architecture)} "
                f"{m.spec.input_dimension}, {m.spec.class_count} classes, {trained})"
            )
        n = len(ws.training_sets or [])
        parts.append(
            f"<b>Training sets:</b> {n}" if n else "<b>Training sets:</b> <i>none — see Inputs</i>"
        )
        val = ws.validation
        if isinstance(val, (int, float)):
            parts.append(f"<b>Validation:</b> {float(val):.0%} of the patches")
        else:
            parts.append(f"<b>Validation:</b> {len(val)} set(s)")
        p = ws.params
        if isinstance(p, TrainingParams):
            parts.append(
                f"<b>Parameters:</b> {p.epochs} epochs, batch {p.batch_size}, patch "
                f"{p.patch_size or 'auto'}, {p.loss}, {p.optimizer} lr {p.learning_rate:g}"
            )
        self.summary.value = "<div>" + " · ".join(parts) + "</div>"

    def _log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_lines.append(f"{stamp} {text}")
        del self.log_lines[:-200]
        self.log_view.value = (
            "<pre style='font-size:11px;max-height:200px;overflow:auto;margin:0'>"
            + html.escape("\n".join(self.log_lines))
            + "</pre>"
        )


# -- helpers --------------------------------------------------------------------------
@contextlib.contextmanager
def _hold(*ws: widgets.Widget) -> Any:
    with contextlib.ExitStack() as stack:
        for w in ws:
            stack.enter_context(w.hold_sync())
        yield


def _set_bounds(slider: widgets.Widget, lo: int, hi: int) -> None:
    """Set ``min``/``max`` in an order the slider accepts (min never above max)."""
    hi = max(lo, hi)
    if lo > slider.max:
        slider.max = hi
        slider.min = lo
    else:
        slider.min = lo
        slider.max = hi


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float(v: Any) -> float:
    return float(v) if _is_number(v) else float("nan")


def _colors_for(cols: Iterable[str], options: list[str]) -> list[str]:
    out = []
    for c in cols:
        if c in FIXED_COLORS:
            out.append(FIXED_COLORS[c])
        else:
            others = [o for o in options if o not in FIXED_COLORS]
            i = others.index(c) if c in others else 0
            out.append(PALETTE[i % len(PALETTE)])
    return out


def _clock(seconds: Any) -> str:
    if seconds is None or not _is_number(seconds) or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name.strip())
    return keep.strip("._") or "model"


def _with_epoch(path: str, epoch: int, suffix: str) -> str:
    """``feedback.png`` → ``feedback_epoch3.png`` (replacing an earlier ``_epochN``)."""
    import re

    p = Path(path.strip() or f"file{suffix}")
    stem = re.sub(r"_epoch\d+$", "", p.stem)
    return str(p.with_name(f"{stem}_epoch{epoch}{p.suffix or suffix}"))


def _target(text: str, what: str, suffix: str) -> Path:
    raw = (text or "").strip()
    if not raw:
        raise InputError(f"Type a file path for {what} (e.g. 'out{suffix}').")
    path = Path(raw).expanduser()
    if path.suffix == "":
        path = path.with_suffix(suffix)
    if path.is_dir():
        raise InputError(f"{path} is a folder; type a file name for {what}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(
            f"The folder {parent} does not exist; create it or type another path for {what}."
        )
    return path
