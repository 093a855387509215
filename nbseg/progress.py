"""One progress record for every long operation: training, segmentation, streaming.

Every long call takes ``progress=`` — a callable that receives a :class:`Progress` — so the
widgets, the command line and scripts read the same fields::

    nbseg.segment(model, image, progress=lambda p: print(p.done, p.total, p.unit, p.eta_s))
    nbseg.segment(model, image, progress=nbseg.progress.tqdm_bar())   # a tqdm bar in scripts

:class:`ProgressTracker` turns "n more done" into records with a rate and an ETA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "ProgressCallback", "ProgressTracker", "tqdm_bar"]


@dataclass(frozen=True)
class Progress:
    """The state of a long operation.

    Attributes
    ----------
    done, total
        Units finished and units in all (``total`` >= ``done`` >= 0).
    unit
        What is counted: ``"batch"`` (training), ``"tile"`` (in-memory segmentation),
        ``"chunk"`` (streamed segmentation).
    rate
        Units per second so far (``None`` before the first unit).
    eta_s
        Estimated seconds left (``None`` while unknown).
    elapsed_s
        Seconds since the operation started.
    stage
        A short human description of where the work is, e.g. ``"epoch 3/20"``.
    extra
        Operation-specific values (training: ``epoch``, ``epochs``, ``batch``, ``batches``,
        ``loss``; streaming: ``voxels_per_s``).
    """

    done: int
    total: int
    unit: str
    rate: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    stage: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1] (1 when ``total`` is 0)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def __getitem__(self, key: str) -> Any:
        """``record["loss"]``: a field, else a value of :attr:`extra`."""
        if key in _FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def describe(self) -> str:
        """One line for status bars: ``"12/40 tiles · 3.1 tiles/s · ETA 9 s"``."""
        parts = [f"{self.done}/{self.total} {self.unit}{'' if self.total == 1 else 's'}"]
        if self.stage:
            parts.insert(0, self.stage)
        if self.rate:
            parts.append(f"{self.rate:.3g} {self.unit}s/s")
        if self.eta_s is not None and not self.finished:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        return " · ".join(parts)


_FIELDS = frozenset(("done", "total", "unit", "rate", "eta_s", "elapsed_s", "stage", "extra"))

#: What ``progress=`` accepts.
ProgressCallback = Callable[[Progress], Any]


def format_seconds(seconds: float) -> str:
    """``75`` → ``"1 min 15 s"``, ``3700`` → ``"1 h 2 min"``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


class ProgressTracker:
    """Counts finished units and makes :class:`Progress` records with rate and ETA.

    >>> t = ProgressTracker(total=10, unit="tile")
    >>> t.advance(2).done
    2
    """

    def __init__(
        self,
        total: int,
        unit: str,
        callback: ProgressCallback | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total = int(total)
        self.unit = unit
        self.callback = callback
        self.done = 0
        self._clock = clock
        self._t0 = clock()

    def record(self, stage: str = "", **extra: Any) -> Progress:
        """The current state (without advancing)."""
        elapsed = self._clock() - self._t0
        rate = self.done / elapsed if self.done and elapsed > 0 else None
        eta = (self.total - self.done) / rate if rate else None
        return Progress(
            done=self.done,
            total=self.total,
            unit=self.unit,
            rate=rate,
            eta_s=eta,
            elapsed_s=elapsed,
            stage=stage,
            extra=extra,
        )

    def advance(self, n: int = 1, stage: str = "", **extra: Any) -> Progress:
        """``n`` more units done; sends the record to the callback and returns it."""
        self.done = min(self.total, self.done + int(n)) if self.total else self.done + int(n)
        rec = self.record(stage, **extra)
        if self.callback is not None:
            self.callback(rec)
        return rec


def tqdm_bar(desc: str | None = None, **tqdm_kwargs: Any) -> ProgressCallback:
    """A ``progress=`` callback that draws a tqdm bar (in a terminal or a notebook)."""
    from tqdm.auto import tqdm

    state: dict[str, Any] = {}

    def update(p: Progress) -> None:
        bar = state.get("bar")
        if bar is None or bar.total != p.total:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=p.total, unit=p.unit, desc=desc, **tqdm_kwargs)
        bar.n = p.done
        if p.stage:
            bar.set_postfix_str(p.stage, refresh=False)
        bar.refresh()
        if p.finished:
            bar.close()
            state.pop("bar", None)

    return update
