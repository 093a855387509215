"""`TrainingPanel`: Dragonfly's *Training* dialog — Train/Stop, live graph, visual feedback,
checkpoint cache, and the Graph / List tabs after training.

The panel composes four views (:mod:`nbseg.ui.training`): the graph
(:class:`~nbseg.ui.training.graph.GraphView`), the list
(:class:`~nbseg.ui.training.table.TableView`), the visual feedback
(:class:`~nbseg.ui.training.feedback.FeedbackView`) and the checkpoint cache
(:class:`~nbseg.ui.training.checkpoints.CheckpointView`); itself it only starts, stops and
reads a :class:`nbseg.TrainingRun`.

Threads
-------
``Train`` builds a :class:`nbseg.TrainingRun` from the :class:`~nbseg.ui.state.Workspace`
(``model``, ``training_sets``, ``validation``, ``unlabelled``, ``params``, ``feedback``) and
starts it; the click
returns at once and the kernel stays responsive. The run keeps its state (``info``,
``progress``, ``history``, ``warnings``, ``status``, ``error``); a :class:`PanelListener` adds
the latest feedback prediction and wakes the panel when an epoch ends. Neither touches a
widget. A light *refresher* thread wakes every :attr:`TrainingPanel.REFRESH_S` seconds (or at
once when an epoch ends), reads that state and updates the widgets: the progress label and bar
at most every 0.25 s, the graph, the list and the feedback image once per epoch. Canvas
drawing goes through :data:`nbseg.ui.imageview.DRAW_LOCK`. Warnings raised on the training
thread (Lightning's, the memory-ratio warning) are captured by the run (:mod:`nbseg.jobs`) and
go to the panel's log instead of stderr.

When the run ends the refresher fills the after-training views (epoch range, feedback epoch
slider, checkpoint list, export buttons), then calls ``workspace.set_result(result)`` and
``workspace.set_model(model)``.

Sessions
--------
The runs of one workspace model form a session: they continue one
:class:`~nbseg.CheckpointCache` (:attr:`TrainingPanel.checkpoint_cache`; a run adds its states,
the earlier runs' stay loadable, each named "run 2 · epoch 3", "best" is the best of them all)
and the Epoch slider scrolls over every run's feedback images
(:attr:`TrainingPanel.feedback_histories`). Choosing another model starts a new session. An
epoch that Stop ended early is reported and listed as partial ("4 epochs + 7/16 batches").

Public attributes (for the composed tool, notebooks and tests)
----------------------------------------------------------------
``train_button``, ``stop_button``, ``status``, ``progress``, ``progress_label``, ``message``
(MessageBox), ``summary``, ``graph`` / ``table_view`` / ``feedback`` / ``checkpoints`` (the
views) and their widgets: ``figure`` (bqplot), ``lines``, ``checkpoint_marks``,
``epoch_marker``, ``metrics`` (SelectMultiple), ``epoch_range`` (IntRangeSlider),
``feedback_view`` (ImageView), ``prediction_opacity``, ``input_opacity``, ``snapshot``
(ipywidgets.Image PNG), ``snapshot_caption``, ``epoch_slider`` (SelectionSlider over
``(run, epoch)``), ``export_png_path``,
``export_png_button``, ``checkpoint_select`` (values ``(run, epoch)``),
``load_checkpoint_button``, ``save_copy_path``,
``save_copy_button``, ``digits``, ``table``, ``export_csv_path``, ``export_csv_button``;
``save_model_path``, ``save_model_button``, ``export_config_path``, ``export_config_button``,
``tabs`` ("Graph", "List"), ``log_box`` (Accordion) holding ``log_view`` (HTML), ``log_lines``
(list of str).

Methods: :meth:`start`, :meth:`stop`, :meth:`wait`, :meth:`graph_points`,
:meth:`export_config`; properties :attr:`run`, :attr:`result`, :attr:`running`,
:attr:`history`, :attr:`checkpoint_cache`, :attr:`feedback_histories`.
"""

from __future__ import annotations

import html
import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..config import TrainingConfig
from ..errors import InputError, NbsegError, ParamsError
from ..progress import Progress
from ..training.callbacks import CheckpointCache, FeedbackHistory, TrainingListener
from ..training.job import TrainingRun, check_training_inputs
from ..training.params import TrainingParams
from ..training.run import TrainingResult, epochs_text
from .state import Workspace
from .style import MessageBox, columns, css, section
from .training.checkpoints import CheckpointView
from .training.common import clock, reporting_button, safe_name, target
from .training.feedback import FeedbackView
from .training.graph import FIXED_COLORS, HIDDEN_COLUMNS, PALETTE, GraphView
from .training.table import TableView

__all__ = ["FIXED_COLORS", "HIDDEN_COLUMNS", "PALETTE", "PanelListener", "TrainingPanel"]


class PanelListener(TrainingListener):
    """What the panel needs beyond the run's own state: the latest feedback prediction, a
    count of batches, and :attr:`wake`, set when an epoch (or the run) starts or ends so the
    refresher draws promptly. Nothing here touches a widget."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.batches = 0
        self._feedback: tuple[int, np.ndarray] | None = None

    def on_train_start(self, info: dict[str, Any]) -> None:
        self.wake.set()

    def on_batch_end(self, progress: Progress) -> None:
        with self.lock:
            self.batches += 1

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        if feedback is not None:
            with self.lock:
                self._feedback = (int(record["epoch"]), feedback)
        self.wake.set()

    def on_train_end(self, result: TrainingResult) -> None:
        self.wake.set()

    def on_error(self, error: BaseException) -> None:
        self.wake.set()

    def take_feedback(self) -> tuple[int, np.ndarray] | None:
        """The latest epoch's feedback prediction since the last call (None: no new one)."""
        with self.lock:
            out, self._feedback = self._feedback, None
        return out


class TrainingPanel(widgets.VBox):
    """Dragonfly's Training dialog over a :class:`Workspace` (see the module docstring)."""

    REFRESH_S = 0.25
    """Seconds between two progress updates of the widgets while training."""

    def __init__(self, workspace: Workspace | None = None, **kw: Any) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self._run: TrainingRun | None = None
        self._listener: PanelListener | None = None
        self._refresher: threading.Thread | None = None
        self._finished = threading.Event()
        self._finished.set()
        self._ui_lock = threading.RLock()
        self._result: TrainingResult | None = None
        self._base_history: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._first_epoch = 1
        self._seen: dict[str, Any] = {}
        self._warning_count = 0
        self._started_at = 0.0
        self.log_lines: list[str] = []
        # the session: the runs of one model keep one checkpoint cache and their feedback
        self._session_model: Any = None
        self._session_cache: CheckpointCache | None = None
        self._session_feedback: list[FeedbackHistory] = []

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
        self.progress_label.add_class("nbseg-wrap")  # the whole line, wrapped when narrow
        self.train_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())

        # the views -----------------------------------------------------------------------
        self.graph = GraphView(self._ui_lock)
        self.feedback = FeedbackView(self.message, self._need_result, self.graph.mark_epoch)
        self.checkpoints = CheckpointView(self.message, self._need_result, self.workspace)
        self.table_view = TableView(self.message, self._need_result, self._ui_lock)
        g, f, c, t = self.graph, self.feedback, self.checkpoints, self.table_view
        self.figure, self.lines, self.checkpoint_marks = g.figure, g.lines, g.checkpoint_marks
        self.epoch_marker, self.metrics, self.epoch_range = g.epoch_marker, g.metrics, g.epoch_range
        self.feedback_view, self.snapshot = f.feedback_view, f.snapshot
        self.prediction_opacity, self.input_opacity = f.prediction_opacity, f.input_opacity
        self.snapshot_caption, self.epoch_slider = f.snapshot_caption, f.epoch_slider
        self.export_png_path, self.export_png_button = f.export_png_path, f.export_png_button
        self.checkpoint_select = c.checkpoint_select
        self.load_checkpoint_button = c.load_checkpoint_button
        self.save_copy_path, self.save_copy_button = c.save_copy_path, c.save_copy_button
        self.digits, self.table = t.digits, t.table
        self.export_csv_path, self.export_csv_button = t.export_csv_path, t.export_csv_button

        # model ---------------------------------------------------------------------------
        self.save_model_path = widgets.Text("model.nbseg", layout=widgets.Layout(width="220px"))
        self.save_model_button = reporting_button(
            self.message, "Save model", "save", self._save_model
        )
        self.export_config_path = widgets.Text(
            "training_run/train.yaml", layout=widgets.Layout(width="220px")
        )
        self.export_config_button = reporting_button(
            self.message,
            "Export config",
            "terminal",
            self.export_config,
            "Write this training (model, data, parameters) as a YAML config for `nbseg train`",
        )
        self.log_view = widgets.HTML("")
        self.log_box = widgets.Accordion(
            children=[self.log_view], titles=("Log",), selected_index=None
        )

        # layout --------------------------------------------------------------------------
        controls = widgets.HBox([self.train_button, self.stop_button, self.status])
        controls.add_class("nbseg-toolbar")
        graph_tab = widgets.VBox(
            [columns(g.widget, f.widget, main=g.widget, side=f.widget), c.widget]
        )
        self.tabs = widgets.Tab(children=[graph_tab, t.widget], titles=("Graph", "List"))
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
        self._show_stored_history(self.workspace.model)

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
    def checkpoint_cache(self) -> CheckpointCache | None:
        """The checkpoint cache of this session's runs (the runs of the workspace's model
        since it was chosen): every run adds to it, earlier runs' states stay loadable."""
        return self._session_cache

    @property
    def feedback_histories(self) -> list[FeedbackHistory]:
        """The feedback images of this session's runs, oldest first (the Epoch slider)."""
        return list(self._session_feedback)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch rows the graph and the list show (earlier epochs of a fine-tuned
        model first)."""
        if self._result is not None:
            return list(self._result.history)
        return self._base_history + self._records

    def graph_points(self) -> int:
        """Number of epochs plotted on the graph."""
        return self.graph.points

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
    def _make_run(self) -> TrainingRun:
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
        unlabelled = [list(inputs) for inputs in ws.unlabelled]
        try:  # what train() would refuse at once, said before a run exists
            params, validation = check_training_inputs(
                model, sets, ws.params, ws.validation, unlabelled
            )
        except ParamsError as err:
            raise ParamsError(f"{err} Fix it in the 'Training parameters' tab.") from None
        except InputError as err:
            raise InputError(f"{err} Check the 'Inputs' tab.") from None
        self._listener = PanelListener()
        if model is not self._session_model:  # another model: a new session
            self._session_model = model
            self._session_cache = CheckpointCache(
                int(params.checkpoint_cache_mb * 2**20), params.monitor, params.min_delta
            )
            self._session_feedback = []
        return TrainingRun(
            model,
            sets,
            params,
            validation,
            callbacks=[self._listener],
            feedback=ws.feedback,
            checkpoints=self._session_cache,
            unlabelled=unlabelled or None,
        )

    def _reset_live(self, run: TrainingRun) -> None:
        with self._ui_lock:
            self._run = run
            self._result = None
            self._base_history = [dict(h) for h in run.model.history]
            self._records = []
            self._first_epoch = len(self._base_history) + 1
            self._seen = {"info": None, "progress": None, "warnings": 0}
            self._warning_count = 0
            self.log_box.titles = ("Log",)
            self._started_at = time.perf_counter()
            self.progress.value, self.progress.max = 0, 1
            self.progress.bar_style = ""
            self.progress_label.value = ""
            self.graph.enable_range(None)
            self.checkpoints.clear()
            self.feedback.reset(list(run.model.class_colors))
            self._show_history()
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
                self._refresh(run, listener)
                last = time.monotonic()
                if done:
                    break
        except Exception as err:  # a display error must not lose the run's end
            self._log(f"Display error: {type(err).__name__}: {err}")
        finally:
            self._finish(run)

    def _refresh(self, run: TrainingRun, listener: PanelListener) -> None:
        """Show what changed in the run's state since the last refresh."""
        with self._ui_lock:
            seen = self._seen
            new_warnings = run.warning_log[seen["warnings"] :]
            seen["warnings"] += len(new_warnings)
            for category, text in new_warnings:
                self._warning_count += 1
                self._log(f"{category}: {text}")
                self.log_box.titles = (f"Log ({self._warning_count} warning(s))",)
                if category == "ResourceWarning":
                    self.message.show(text, "warning")
            info = run.info
            if info and info is not seen["info"]:
                seen["info"] = info
                self._first_epoch = int(info.get("first_epoch", self._first_epoch))
                colors = list(info.get("class_colors") or self.feedback.colors)
                self.feedback.colors = colors
                gray = info.get("feedback_image")
                if gray is not None:
                    self.feedback.set_image(gray, colors)
                if run.status == "running":
                    self.status.value = "<b>Training</b>…"
            progress = run.progress
            if isinstance(progress, Progress) and progress is not seen["progress"]:
                seen["progress"] = progress
                self._show_progress(progress)
            latest = listener.take_feedback()  # only the latest epoch is drawn
            if latest is not None:  # before the graph: an epoch plotted has its image shown
                self.feedback.show(*latest)
            records = run.history[len(self._records) :]
            if records:
                self._records.extend(dict(r) for r in records)
                self._show_history()

    def _show_progress(self, p: Progress) -> None:
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
            f"elapsed {clock(p.elapsed_s)}",
            f"ETA {clock(p.eta_s)}",
        ]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4g}")
        self.progress_label.value = " · ".join(parts)

    def _show_history(self) -> None:
        """The graph and the list of :attr:`history`: every state in the checkpoint cache
        marked on the monitor, the list's ◆ on the epochs that can be loaded."""
        rows = self.history
        cached = self._cache_rows()
        self.graph.show(rows, cached, self._monitor())
        self.table_view.show(rows, [(int(r["run"]), int(r["epoch"])) for r in cached])

    def _cache(self) -> CheckpointCache | None:
        if self._result is not None and self._result.checkpoints is not None:
            return self._result.checkpoints
        return self._session_cache

    def _cache_rows(self) -> list[dict[str, Any]]:
        """The states in the checkpoint cache now (read under the cache's lock)."""
        cache = self._cache()
        return [] if cache is None else cache.list()

    def _monitor(self) -> str:
        cache = self._cache()
        if cache is not None and cache.run:
            return cache.monitor
        params = self._run.params if self._run is not None else None
        return params.monitor if params is not None else "val_loss"

    def _finish(self, run: TrainingRun) -> None:
        result = run.result
        status = run.status
        try:
            with self._ui_lock:
                if self._listener is not None:
                    self._refresh(run, self._listener)
                if run.exception is not None:
                    err = run.exception
                    lines = traceback.format_exception(type(err), err, err.__traceback__)
                    self._log("Training error:\n" + "".join([lines[0], *lines[-12:]]).rstrip())
                if result is not None:
                    self._result = result
                self._show_end(run, result)
                if result is not None:
                    self._fill_after_training(result)
        except Exception as err:  # keep the panel usable whatever happened
            self._log(f"Display error: {type(err).__name__}: {err}")
        finally:
            self._finished.set()
            self._update_buttons()
        if result is not None and (status != "failed" or self._records):
            # a failed run that completed no epoch left the model as it was: nothing to show
            self.workspace.set_result(result)
            self.workspace.set_model(result.model)
        self._log(f"Training ended: {status}.")

    def _show_end(self, run: TrainingRun, result: TrainingResult | None) -> None:
        status = run.status
        n = len(self._records)
        trained = epochs_text(self._records)  # a stopped epoch counts as its batches
        in_all = ""
        if self._base_history:
            in_all = f" ({epochs_text(self._base_history + self._records)} trained in all)"
        took = result.duration if result is not None else time.perf_counter() - self._started_at
        params = run.params or TrainingParams()
        teacher = f" {result.teacher_text}" if result is not None and result.teacher_text else ""
        budget = ""  # the time limit, not the epochs, ended a completed run
        if status == "completed" and params.max_minutes and 0 < n < params.epochs:
            budget = f" The time limit ({params.max_minutes:g} min) ended it before epoch {params.epochs}."
        restored = ""
        if result is not None and result.best_epoch is not None and self._records:
            last = self._records[-1]["epoch"]
            if params.restore_best and result.best_epoch != last and status != "failed":
                restored = f" The model holds the weights of the best epoch {result.best_epoch}."
        if status == "failed":
            kept = " The model keeps its last good weights." if n else ""
            self.status.value = "<b style='color:#b71c1c'>Failed</b>"
            self.progress.bar_style = "danger"
            hint = ""
            cause = run.exception
            if isinstance(cause, NbsegError):  # a failure nbseg caught: what caused it?
                cause = cause.__cause__
            known = isinstance(cause, (NbsegError, MemoryError)) or (
                type(cause).__name__ == "OutOfMemoryError"
            )
            if run.error and cause is not None and not known:
                hint = (
                    " This is not a known input or parameter problem: check the inputs and "
                    "parameters, try a smaller model; the Log has the details."
                )
            self.message.error(f"Training failed: {run.error or 'unknown error'}{kept}{hint}")
        elif status == "stopped":
            self.status.value = "<b>Stopped</b>"
            self.progress.bar_style = "warning"
            self.message.show(
                f"Stopped after {trained} in {took:.1f} s{in_all}; the model keeps its "
                f"weights.{restored}{teacher}",
                "info",
            )
        else:
            word = "Early-stopped" if status == "early_stopped" else "Completed"
            self.status.value = f"<b>{word}</b>"
            self.progress.bar_style = "success"
            self.progress.value = self.progress.max
            self.message.show(
                f"{word}: {trained} in {took:.1f} s{in_all}.{budget}{restored}{teacher}", "info"
            )

    def _fill_after_training(self, result: TrainingResult) -> None:
        hist = result.history
        if hist:
            self.graph.enable_range(int(hist[0]["epoch"]), int(hist[-1]["epoch"]))
        fb = result.feedback
        if fb is not None and fb.predictions and all(fb is not h for h in self._session_feedback):
            self._session_feedback.append(fb)
        self.feedback.fill(self._session_feedback)
        self.checkpoints.fill(result)
        self._show_history()

    # -- actions ---------------------------------------------------------------------------
    def _need_result(self, what: str) -> TrainingResult:
        if self.running:
            raise InputError(f"Wait for the training to end (or press Stop) before {what}.")
        if self._result is None:
            raise InputError(f"Train first: {what} needs a finished training.")
        return self._result

    def _save_model(self) -> Path:
        if self.running:
            raise InputError("Wait for the training to end (or press Stop) before saving.")
        model = self.workspace.model or (self._result.model if self._result else None)
        if model is None:
            raise InputError("No model to save: create or load one first.")
        path = target(self.save_model_path.value, "the model", ".nbseg")
        out = model.save(path)
        self.message.show(f"Saved model {model.name!r} to {out}.", "info")
        return out

    def export_config(self, path: str | Path | None = None) -> Path:
        """Write the current training (model or spec, training sets, validation, unlabelled
        images, parameters, feedback region) as a YAML config next to its data, for ``nbseg
        train CONFIG`` on a bigger machine. In-memory arrays go to zarr stores in the config's
        folder."""

        ws = self.workspace
        if ws.model is None:
            raise InputError("No model: create or load one before exporting a config.")
        if not ws.training_sets:
            raise InputError("No training set: choose inputs in the 'Inputs' tab first.")
        raw = str(path) if path is not None else self.export_config_path.value
        if raw.strip():
            Path(raw.strip()).expanduser().parent.mkdir(parents=True, exist_ok=True)
        out = target(raw, "the config", ".yaml")
        folder = out.parent
        validation = ws.validation if isinstance(ws.validation, float) else list(ws.validation)
        cfg = TrainingConfig.from_objects(
            ws.model if ws.model.trained else ws.model.spec,
            ws.params,
            *ws.training_sets,
            validation=validation,
            unlabelled=[list(inputs) for inputs in ws.unlabelled],
            feedback=ws.feedback,
            output=f"{ws.model.name}.nbseg",
            data_dir=folder,
        )
        cfg.to_yaml(out)
        self.message.show(f"Wrote {out}; run it with:  nbseg train {out}", "info")
        return out

    # -- state ---------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self.running
        result = self._result if not running else None  # shown once the run has ended
        has_result = result is not None
        cache_ok = (
            result is not None
            and result.checkpoints is not None
            and bool(result.checkpoints.entries)
        )
        fb_ok = result is not None and self.feedback.has_predictions
        self.train_button.disabled = running
        self.stop_button.disabled = not running
        self.export_png_button.disabled = not fb_ok
        self.epoch_slider.disabled = not fb_ok
        self.epoch_range.disabled = not (result is not None and bool(result.history))
        self.export_csv_button.disabled = not has_result
        self.checkpoints.set_enabled(cache_ok)
        self.save_model_button.disabled = running or (
            self.workspace.model is None and result is None
        )
        if has_result:
            chosen = self.feedback.chosen
            self.graph.mark_epoch(chosen[1] if fb_ok and chosen is not None else None)

    def _on_workspace(self, event: str, value: Any) -> None:
        if event in ("model", "training_sets", "unlabelled", "params", "feedback"):
            self._update_summary()
            if event == "model" and value is not None:
                self.save_model_path.value = f"{safe_name(value.name)}.nbseg"
            if not self.running:
                self._update_buttons()
                if event == "model" and (self._run is None or value is not self._run.model):
                    self._show_stored_history(value)

    def _show_stored_history(self, model: Any) -> None:
        """A model loaded from a file or the library (or generated) shows the history it
        stores in the graph and the list, before any training here."""
        with self._ui_lock:
            self._result = None
            self._base_history = [dict(h) for h in model.history] if model is not None else []
            self._records = []
            hist = self._base_history
            if hist:
                self.graph.enable_range(int(hist[0]["epoch"]), int(hist[-1]["epoch"]))
                self.graph.epoch_range.disabled = False
            else:
                self.graph.enable_range(None)
            self._show_history()

    def _update_summary(self) -> None:
        ws = self.workspace
        parts = []
        if ws.model is None:
            parts.append("<b>Model:</b> <i>none — create or load one</i>")
        else:
            m = ws.model
            trained = f"trained {m.epochs_text}" if m.trained else "untrained"
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
        if ws.unlabelled:
            off = isinstance(p, TrainingParams) and not p.uses_pseudo_labels(True)
            parts.append(
                f"<b>Unlabelled:</b> {len(ws.unlabelled)} image(s)"
                + (
                    f" <i>(not used: Unlabelled data is '{p.semi_supervised}')</i>"
                    if off and isinstance(p, TrainingParams)
                    else " (pseudo-labels)"
                )
            )
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
