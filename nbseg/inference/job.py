"""Inference in background jobs (Start returns at once): `SegmentationRun` runs
:func:`nbseg.segment`, `SuggestionRun` runs :func:`nbseg.suggest`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

from ..errors import InputError, NbsegError
from ..jobs import BackgroundJob
from ..progress import Progress
from .sliding import segment
from .uncertainty import Suggestions, suggest

if TYPE_CHECKING:
    from ..model import Model


class SegmentationRun(BackgroundJob):
    """One :func:`nbseg.segment` call in a background thread; Stop within a batch of tiles.

    Parameters
    ----------
    model, image, mask
        As for :func:`nbseg.segment`.
    progress
        Optional callback, called (in the job's thread) with exactly what ``segment`` reports,
        after :attr:`progress` holds it as a :class:`nbseg.progress.Progress` record.
    compute
        Compute a lazy (dask-backed) result in the job, so that reading it later costs
        nothing (the widgets ask for this; memory then holds the whole result).
    **segment_kwargs
        Any other :func:`nbseg.segment` argument (``tta``, ``overlap``, ``out`` ...).

    ``result`` is the label (or probability) DataArray once ``status == "completed"``;
    :meth:`stop` cancels between batches of tiles (streaming: between blocks) and ends the
    run ``"stopped"`` with no result. A dask-backed image without ``out=`` gives a lazy
    result, as ``segment`` does.
    """

    kind = "segmentation"

    def __init__(
        self,
        model: Model,
        image: xr.DataArray | Sequence[xr.DataArray],
        mask: xr.DataArray | None = None,
        *,
        progress: Callable[..., Any] | None = None,
        compute: bool = False,
        **segment_kwargs: Any,
    ) -> None:
        if "stop_event" in segment_kwargs:
            raise InputError(
                "SegmentationRun owns its stop event: call run.stop() instead of passing "
                "stop_event."
            )
        super().__init__()
        self.model = model
        self.image = image
        self.mask = mask
        self.segment_kwargs = dict(segment_kwargs)
        self.compute = bool(compute)
        self.callback = progress
        self.progress: Progress | None = None
        self.result: xr.DataArray | None = None

    def _run(self) -> xr.DataArray:
        result = segment(
            self.model,
            self.image,
            self.mask,
            progress=self._on_progress,
            stop_event=self.stop_event,
            **self.segment_kwargs,
        )
        self.raise_if_stopped()  # stopped during the last batch: no result, as promised
        if self.compute:  # a lazy result is computed here, in the job, not by its reader
            result = (
                tuple(r.compute() for r in result)
                if isinstance(result, tuple)
                else result.compute()
            )
        return result

    def _on_progress(self, record: Progress) -> None:
        self._set_progress(record)
        if self.callback is not None:
            self.callback(record)

    def _already_running(self) -> NbsegError:
        return InputError("This segmentation is already running; wait for it or stop it.")


class SuggestionRun(BackgroundJob):
    """:func:`nbseg.inference.uncertainty.suggest` in a background job: the uncertainty and
    prediction maps and the slices / regions worth labelling, from one pass of the model.

    ``result`` is the :class:`~nbseg.inference.uncertainty.Suggestions` once
    ``status == "completed"``; :meth:`stop` cancels between batches of tiles. Arguments as
    for ``suggest`` (``model, image, labels``, then ``count``, ``axis``, ``mask``,
    ``regions``, ``size``, ``method`` ...).
    """

    kind = "suggestion"

    def __init__(
        self,
        model: Model,
        image: xr.DataArray | Sequence[xr.DataArray],
        labels: xr.DataArray | None = None,
        **suggest_kwargs: Any,
    ) -> None:
        if "stop_event" in suggest_kwargs or "progress" in suggest_kwargs:
            raise InputError(
                "SuggestionRun owns its stop event and progress: call run.stop() and read "
                "run.progress instead."
            )
        super().__init__()
        self.model = model
        self.image = image
        # the labels are copied on the caller's thread: painting may go on meanwhile
        self.labels = None if labels is None else labels.copy(deep=True)
        self.suggest_kwargs = dict(suggest_kwargs)
        self.progress: Progress | None = None
        self.result: Suggestions | None = None

    def _run(self) -> Suggestions:
        result = suggest(
            self.model,
            self.image,
            self.labels,
            progress=self._set_progress,
            stop_event=self.stop_event,
            **self.suggest_kwargs,
        )
        self.raise_if_stopped()
        return result

    def _already_running(self) -> NbsegError:
        return InputError("Suggestions are being computed; wait for them or stop them.")
