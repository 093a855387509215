"""`TrainingRun`: :func:`nbseg.train` in a background thread (Start returns at once)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl

from ..data.trainingset import TrainingSet
from ..errors import NbsegError, TrainingError
from .callbacks import FeedbackRegion, TrainingListener
from .params import TrainingParams
from .run import TrainingResult, train

if TYPE_CHECKING:
    from ..model import Model


class _StateListener(TrainingListener):
    """Keeps the latest state of a run for pollers (widgets read it, never the model)."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run

    def on_train_start(self, info: dict[str, Any]) -> None:
        with self.run._lock:
            self.run.info = info

    def on_batch_end(self, progress: dict[str, Any]) -> None:
        with self.run._lock:
            self.run.progress = progress

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        with self.run._lock:
            self.run.history.append(record)


class TrainingRun:
    """One training in a background thread: Start returns at once, Stop within a batch.

    The run owns the thread, the stop event and the latest state (``status``, ``progress``,
    ``history``, ``result``, ``error``). Listeners get the same events as with
    :func:`nbseg.train`.
    """

    def __init__(
        self,
        model: Model,
        training_sets: TrainingSet | Sequence[TrainingSet],
        params: TrainingParams | None = None,
        validation: float | TrainingSet | Sequence[TrainingSet] = 0.2,
        *,
        callbacks: Sequence[TrainingListener | pl.Callback] = (),
        feedback: FeedbackRegion | Literal[False] | None = None,
    ) -> None:
        self.model = model
        self.training_sets = training_sets
        self.params = params
        self.validation = validation
        self.callbacks = list(callbacks)
        self.feedback = feedback
        self.status = "idle"
        self.info: dict[str, Any] = {}
        self.progress: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.result: TrainingResult | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> TrainingRun:
        if self.running:
            raise TrainingError("This training run is already running.")
        self._stop.clear()
        self._done.clear()
        self.status = "running"
        self._thread = threading.Thread(target=self._main, name="nbseg-training", daemon=True)
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            result = train(
                self.model,
                self.training_sets,
                self.params,
                self.validation,
                callbacks=[_StateListener(self), *self.callbacks],
                feedback=self.feedback,
                stop_event=self._stop,
            )
            self.result = result
            self.error = result.error
            self.status = result.status
        except BaseException as err:  # reported to listeners and the state, never lost
            self.result = getattr(err, "result", None)
            self.error = (
                f"{type(err).__name__}: {err}" if not isinstance(err, NbsegError) else str(err)
            )
            self.status = "failed"
            for c in self.callbacks:
                if isinstance(c, TrainingListener):
                    with contextlib.suppress(Exception):
                        c.on_error(err)
        finally:
            self._done.set()

    def stop(self) -> None:
        """Ask the run to stop after the current batch; the model keeps its weights."""
        if self.running:
            self.status = "stopping"
        self._stop.set()

    def wait(self, timeout: float | None = None) -> TrainingResult | None:
        """Block until the run ends (or ``timeout`` seconds); returns the result."""
        self._done.wait(timeout)
        return self.result
