"""`InferenceSettings`: how :func:`nbseg.segment` / :func:`nbseg.preview` apply a model.

One frozen object, declared with :mod:`nbseg.settings` and validated once, carries the
sliding-window settings to every code path (in memory, streaming, preview)::

    from nbseg.inference.settings import InferenceSettings

    fast = InferenceSettings(overlap=0.5, batch_size=16, tta=True)
    labels = nbseg.segment(model, image, settings=fast)
    labels = nbseg.segment(model, image, overlap=0.5)      # keyword overrides, the same

Where the result goes (``out``, ``overwrite``), what runs the work (``client``) and how the
caller follows it (``progress``, ``stop_event``) are arguments of ``segment``, not settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..devices import resolve_precision
from ..errors import InputError
from ..settings import Bool, Choice, Float, Int, Invalid, Kind, PatchSize, Settings, setting

__all__ = ["BLENDINGS", "DEVICES", "PRECISIONS", "BlockShape", "InferenceSettings"]

BLENDINGS = ("gaussian", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16-mixed", "16-mixed", "auto")

_WINDOW = "Sliding window"
_RUN = "Running"
_STREAM = "Streaming"


@dataclass(frozen=True)
class BlockShape(Kind):
    """Streaming output blocks: ``None`` (automatic), one size for every axis, one size
    per image dim, or ``{dim: size}``; sizes are integers >= 1 (checked against the image's
    dims when it is known, see :func:`nbseg.inference.stream.block_shape`)."""

    name: ClassVar[str] = "blocks"
    python_type: ClassVar[str] = "int | tuple[int, ...] | dict[str, int] | None"

    def check(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = self.parse(value)
            if value is None:
                return None
        if isinstance(value, Mapping):
            items = list(value.values())
        elif _is_int(value):
            items = [value]
        else:
            try:
                items = list(value)
            except TypeError:
                raise Invalid(self._what()) from None
            value = tuple(items)
        if not items or not all(_is_int(v) and int(v) >= 1 for v in items):
            raise Invalid(self._what())
        if isinstance(value, Mapping):
            return {str(k): int(v) for k, v in value.items()}
        return int(value) if _is_int(value) else tuple(int(v) for v in value)

    @staticmethod
    def _what() -> str:
        return (
            "give None (automatic), an integer >= 1, one integer >= 1 per image dim, or {dim: size}"
        )

    def parse(self, text: str) -> Any:
        t = str(text).strip()
        if t.lower() in ("", "auto", "none"):
            return None
        if "=" in t or ":" in t:
            pairs = [p.split("=" if "=" in p else ":", 1) for p in re.split(r"[,\s]+", t) if p]
            try:
                return {k.strip(): int(v) for k, v in pairs}
            except ValueError:
                return t  # refused by check with the setting's name
        parts = [p for p in re.split(r"[,x×\s()\[\]]+", t) if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            return t
        return values[0] if len(values) == 1 else tuple(values)

    def format(self, value: Any) -> str:
        if value is None:
            return "auto"
        if isinstance(value, Mapping):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value) if isinstance(value, int) else ", ".join(str(v) for v in value)

    def plain(self, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    def describe(self) -> str:
        return "'auto' (None), a size >= 1, one size per image dim, or {dim: size}"


def _is_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class InferenceSettings(Settings):
    """How a model is applied to a volume: the sliding window, the device, test-time
    augmentation, the output kind and the streaming blocks.

    Build it with keywords (``InferenceSettings(overlap=0.5)``), from a mapping
    (:meth:`from_dict`, YAML/JSON) or as a changed copy (:meth:`replace`); :meth:`validate`
    raises :class:`nbseg.InputError` naming the setting and its valid values.
    """

    _title: ClassVar[str] = "inference settings"
    _owner: ClassVar[str] = "InferenceSettings"
    _error: ClassVar[type] = InputError
    _groups: ClassVar[tuple[str, ...]] = ("Basic", _WINDOW, _RUN, _STREAM)

    window: int | tuple[int, ...] | None = setting(
        None,
        PatchSize(minimum=1),
        "Window",
        "Tile size: one side or (y, x) / (z, y, x); None = the model's training patch size "
        "(rounded up to the network's size divisor)",
        group=_WINDOW,
        unit="voxels",
    )
    overlap: float = setting(
        0.25,
        Float(0.0, 1.0, open_max=True),
        "Overlap",
        "Fraction of the window that neighbouring tiles share",
        group=_WINDOW,
        widget="slider",
        step=0.05,
        widget_range=(0.0, 0.9),
    )
    blending: str = setting(
        "gaussian",
        Choice(BLENDINGS),
        "Blending",
        "How overlapping tiles are combined: Gaussian weights (MONAI's) or a plain mean",
        group=_WINDOW,
    )
    batch_size: int = setting(8, Int(minimum=1), "Batch size", "Tiles per network call", group=_RUN)
    tta: bool = setting(
        False,
        Bool(),
        "Test-time augmentation",
        "Average the predictions of every flip of each tile (4 passes per tile in 2D/2.5D, "
        "8 in 3D, as much slower); smooths out orientation-dependent errors",
    )
    probabilities: bool = setting(
        False,
        Bool(),
        "Probabilities",
        "Return per-class probabilities (float32, leading 'class' dim) instead of labels",
    )
    device: str = setting(
        "auto",
        Choice(DEVICES, extra=r"cuda:\d+", extra_text="'cuda:N'"),
        "Device",
        "Where the network runs: auto picks the GPU when there is one",
        group=_RUN,
    )
    precision: str = setting(
        "32",
        Choice(PRECISIONS),
        "Precision",
        "Numeric precision of the network: '32' (float32), 'bf16-mixed' / '16-mixed' "
        "(autocast; faster where the hardware computes them natively, probabilities differ "
        "by ~1e-2) or 'auto' (bf16 where native, else 32)",
        group=_RUN,
    )
    chunks: Any = setting(
        None,
        BlockShape(),
        "Blocks",
        "Output block (= zarr chunk) shape of streamed segmentation; auto = a few window "
        "strides per axis, whole slices for 2D/2.5D models",
        group=_STREAM,
    )

    def __post_init__(self) -> None:
        # ``device=None`` (the old default) and torch.device objects mean the same as text
        if self.device is None:
            object.__setattr__(self, "device", "auto")
        elif not isinstance(self.device, str) and type(self.device).__name__ == "device":
            object.__setattr__(self, "device", str(self.device))
        if isinstance(self.window, list):
            object.__setattr__(self, "window", tuple(self.window))
        if isinstance(self.chunks, list):
            object.__setattr__(self, "chunks", tuple(self.chunks))

    @classmethod
    def build(
        cls, settings: InferenceSettings | Mapping[str, Any] | None = None, **overrides: Any
    ) -> InferenceSettings:
        """``settings`` (an object, a mapping or None = the defaults) with ``overrides``
        applied, validated; unknown names raise :class:`nbseg.InputError` listing the
        valid ones."""
        if settings is None:
            base = cls()
        elif isinstance(settings, cls):
            base = settings
        elif isinstance(settings, Mapping):
            base = cls(**cls.check_keys(dict(settings), "settings"))
        else:
            raise InputError(
                f"settings must be an InferenceSettings (or a mapping of its settings), got "
                f"{type(settings).__name__}."
            )
        if overrides:
            base = base.replace(**cls.check_keys(overrides))
        return base.validate()

    def resolved_precision(self, device_type: str, input_dimension: str = "2D") -> str:
        """``precision`` with ``"auto"`` resolved for a torch device type (``"cpu"``,
        ``"cuda"``)."""

        accelerator = "gpu" if device_type == "cuda" else device_type
        return resolve_precision(self.precision, accelerator, input_dimension)
