"""`TrainingRun`: :func:`nbseg.train` in a background job (Start returns at once)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl

from ..data.trainingset import TrainingSet
from ..errors import InputError, NbsegError, ParamsError, TrainingError
from ..jobs import BackgroundJob
from ..progress import Progress
from .callbacks import CheckpointCache, FeedbackRegion, TrainingListener
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

    def on_batch_end(self, progress: Progress) -> None:
        self.run._set_progress(progress)

    def on_epoch_end(self, record: dict[str, Any], feedback: np.ndarray | None) -> None:
        with self.run._lock:
            self.run.history.append(record)


def check_training_inputs(
    model: Model,
    training_sets: TrainingSet | Sequence[TrainingSet],
    params: TrainingParams | None = None,
    validation: float | TrainingSet | Sequence[TrainingSet] | None = 0.2,
    unlabelled: Sequence[Sequence[Any]] | None = None,
) -> tuple[TrainingParams, float | list[TrainingSet]]:
    """The checks :func:`nbseg.train` makes first that read no data: the parameters against
    the model, every training set's input count, the validation fraction and, for
    ``unlabelled`` given as one list of inputs per image, each image's input count.

    For callers that want the error before starting a :class:`TrainingRun` (which otherwise
    fails with it at once). Returns the parameters and the validation ``train`` will use.

    Raises
    ------
    ParamsError, InputError
    """
    spec = model.spec
    params = params or model.params or TrainingParams()
    if not isinstance(params, TrainingParams):
        raise ParamsError(f"params is a {type(params).__name__}, not TrainingParams.")
    params.validate(spec.class_count)
    sets = [training_sets] if isinstance(training_sets, TrainingSet) else list(training_sets)
    if not sets:
        raise InputError("No training set: pass a TrainingSet or a non-empty list of them.")
    for i, ts in enumerate(sets, start=1):
        if ts.input_count != spec.input_count:
            raise InputError(
                f"Training set {i} has {ts.input_count} input(s) but model {model.name!r} takes "
                f"{spec.input_count}; use one volume per model input or a model generated for "
                "this many inputs."
            )
    for i, inputs in enumerate(unlabelled or []):
        if isinstance(inputs, (list, tuple)) and len(inputs) != spec.input_count:
            raise InputError(
                f"Unlabelled image {i + 1} has {len(inputs)} input(s) but model "
                f"{model.name!r} takes {spec.input_count}; choose one image per model input."
            )
    if validation is None:
        validation = 0.2
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 <= float(validation) < 1:
            raise InputError(f"Validation fraction {validation} must lie in [0, 1), e.g. 0.2.")
        return params, float(validation)
    if isinstance(validation, bool):  # as train() says
        raise InputError(
            f"validation={validation!r} is not understood: give a fraction such as 0.2 (0 = "
            "none) or ground-truth TrainingSet(s)."
        )
    return params, [validation] if isinstance(validation, TrainingSet) else list(validation)


class TrainingRun(BackgroundJob):
    """One training in a background thread: Start returns at once, Stop within a batch.

    The run owns the thread, the stop event and the latest state (``status``, ``info``,
    ``progress``, ``history``, ``result``, ``error``, ``warnings``; see
    :class:`nbseg.jobs.BackgroundJob`). Listeners get the same events as with
    :func:`nbseg.train`; ``checkpoints`` (the cache of the model's earlier runs) is
    continued as with ``train(checkpoints=...)`` and ``unlabelled`` (images without labels)
    as with ``train(unlabelled=...)``. ``status`` ends as the result's (``"completed"``,
    ``"stopped"``, ``"early_stopped"``, ``"failed"``).
    """

    kind = "training"

    def __init__(
        self,
        model: Model,
        training_sets: TrainingSet | Sequence[TrainingSet],
        params: TrainingParams | None = None,
        validation: float | TrainingSet | Sequence[TrainingSet] = 0.2,
        *,
        callbacks: Sequence[TrainingListener | pl.Callback] = (),
        feedback: FeedbackRegion | Literal[False] | None = None,
        checkpoints: CheckpointCache | None = None,
        unlabelled: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.training_sets = training_sets
        self.params = params
        self.validation = validation
        self.callbacks = list(callbacks)
        self.feedback = feedback
        #: the checkpoint cache of the model's earlier runs, continued by this run
        self.checkpoints = checkpoints
        #: images without labels learnt from too (as ``train(unlabelled=...)``), or None
        self.unlabelled = unlabelled
        self.info: dict[str, Any] = {}
        self.progress: Progress | dict[str, Any] = {}  # {} until the first batch ends
        self.history: list[dict[str, Any]] = []
        self.result: TrainingResult | None = None

    def start(self) -> TrainingRun:
        super().start()
        return self

    def stop(self) -> None:
        """Ask the run to stop after the current batch; the model keeps its weights."""
        super().stop()

    def wait(self, timeout: float | None = None) -> TrainingResult | None:
        """Block until the run ends (or ``timeout`` seconds); returns the result."""
        return super().wait(timeout)

    def _run(self) -> TrainingResult:
        return train(
            self.model,
            self.training_sets,
            self.params,
            self.validation,
            callbacks=[_StateListener(self), *self.callbacks],
            feedback=self.feedback,
            stop_event=self.stop_event,
            checkpoints=self.checkpoints,
            unlabelled=self.unlabelled,
        )

    def _final_status(self, result: TrainingResult) -> str:
        return result.status

    def _final_error(self, result: TrainingResult) -> str | None:
        return result.error

    def _on_error(self, err: BaseException) -> None:
        for c in self.callbacks:
            if isinstance(c, TrainingListener):
                with contextlib.suppress(Exception):
                    c.on_error(err)

    def _already_running(self) -> NbsegError:
        return TrainingError("This training run is already running.")
