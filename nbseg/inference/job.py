"""`SegmentationRun`: :func:`nbseg.segment` in a background job (Start returns at once)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

from ..errors import InputError, NbsegError
from ..jobs import BackgroundJob
from ..progress import Progress
from .sliding import segment

if TYPE_CHECKING:
    from ..model import Model


def as_progress(*args: Any) -> Progress:
    """A progress report as one :class:`Progress` record. :func:`nbseg.segment` reports
    records already (returned as they are); older shapes are still understood: an object
    with ``.done`` / ``.total``, ``(done, total)`` tiles, or the streaming dict
    (``chunks_done``, ``chunks_total``, ``voxels_per_s``, ``eta_s``)."""
    if len(args) == 1 and isinstance(args[0], Progress):
        return args[0]
    if len(args) == 1 and isinstance(args[0], Mapping):
        info = args[0]
        return Progress(
            done=int(info.get("chunks_done", 0)),
            total=int(info.get("chunks_total", 0)),
            unit="chunk",
            eta_s=info.get("eta_s"),
            extra={"voxels_per_s": info.get("voxels_per_s")},
        )
    if len(args) == 1 and hasattr(args[0], "done") and hasattr(args[0], "total"):
        p = args[0]
        return Progress(done=int(p.done), total=int(p.total), unit=getattr(p, "unit", "tile"))
    done, total = args[:2]
    return Progress(done=int(done), total=int(total), unit="tile")


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

    def _on_progress(self, *args: Any) -> None:
        self._set_progress(as_progress(*args))
        if self.callback is not None:
            self.callback(*args)

    def _already_running(self) -> NbsegError:
        return InputError("This segmentation is already running; wait for it or stop it.")
