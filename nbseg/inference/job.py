"""`SegmentationRun`: :func:`nbseg.segment` in a background job (Start returns at once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

from ..errors import InputError, NbsegError
from ..jobs import BackgroundJob
from ..progress import Progress
from .sliding import segment

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
        return result

    def _on_progress(self, record: Progress) -> None:
        self._set_progress(record)
        if self.callback is not None:
            self.callback(record)

    def _already_running(self) -> NbsegError:
        return InputError("This segmentation is already running; wait for it or stop it.")
