"""`ModelSpec`: everything needed to rebuild a network, saved with the model.

Dragonfly calls this the *Model Generator* settings: architecture, class count, input count,
input dimension (2D, 2.5D with N neighbouring slices, 3D), name, description and the
architecture's editable parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import SpecError
from ..settings import Choice, Int, Mapping, Settings, Text, TextList, setting

InputDimension = Literal["2D", "2.5D", "3D"]
INPUT_DIMENSIONS: tuple[str, ...] = ("2D", "2.5D", "3D")

_IO = "Inputs and outputs"
_MODEL = "Model"


@dataclass
class ModelSpec(Settings):
    """Specification of a segmentation network (each field declared once below).

    Parameters
    ----------
    architecture
        Registry name, e.g. ``"unet"``; see :func:`nbseg.architectures`.
    class_count
        Number of output classes (>= 2; a binary task has 2 classes: background and object).
    input_count
        Number of input volumes (modalities of one geometry).
    input_dimension
        ``"2D"`` (one slice in, one slice out), ``"2.5D"`` (``slices`` neighbouring slices in
        as channels, the reference slice out) or ``"3D"`` (a 3D patch in and out).
    slices
        2.5D only: number of neighbouring slices (odd, >= 3).
    slice_spacing
        2.5D only: distance in slices between neighbouring input slices.
    reference_index
        2.5D only: index of the predicted slice within the stack (default: the centre).
    name, description
        Free text saved with the model.
    parameters
        Architecture parameters overriding the registry defaults (e.g. ``depth``, ``filters``).
    input_names
        One name per input (default ``input_0`` ...).
    """

    _title: ClassVar[str] = "ModelSpec fields"
    _owner: ClassVar[str] = "ModelSpec"
    _error: ClassVar[type] = SpecError
    _groups: ClassVar[tuple[str, ...]] = ("Architecture", _IO, _MODEL)

    architecture: str = setting(
        "unet", Text(), "Architecture", "Network architecture (registry name)", group="Architecture"
    )
    class_count: int = setting(
        2,
        Int(minimum=2),
        "Classes",
        "Number of output classes (>= 2, background too: a binary task has 2)",
        group=_IO,
    )
    input_count: int = setting(
        1, Int(minimum=1), "Inputs", "Number of input volumes (modalities)", group=_IO
    )
    input_dimension: InputDimension = setting(
        "2D",
        Choice(INPUT_DIMENSIONS),
        "Input dimension",
        "2D (a slice in and out), 2.5D (neighbouring slices in as channels) or 3D patches",
        group=_IO,
    )
    slices: int = setting(
        5,
        Int(minimum=1),
        "Slices",
        "2.5D: odd number of neighbouring slices (>= 3)",
        group=_IO,
        enabled_if=("input_dimension", ("2.5D",)),
    )
    slice_spacing: int = setting(
        1,
        Int(minimum=1),
        "Slice spacing",
        "2.5D: distance in slices between inputs",
        group=_IO,
        enabled_if=("input_dimension", ("2.5D",)),
    )
    reference_index: int | None = setting(
        None,
        Int(minimum=0, optional=True, none_text="centre"),
        "Reference slice",
        "2.5D: index of the predicted slice in the stack (None = the centre)",
        group=_IO,
        cli=False,
    )
    name: str = setting("model", Text(), "Name", "Saved with the model", group=_MODEL)
    description: str = setting(
        "", Text(), "Description", "Free text saved with the model", group=_MODEL
    )
    parameters: dict[str, Any] = setting(
        None,
        Mapping(),
        "Parameters",
        "Architecture parameters overriding the registry defaults (depth, filters, ...)",
        group="Architecture",
        factory=dict,
    )
    input_names: list[str] | None = setting(
        None,
        TextList(),
        "Input names",
        "One name per input (default input_0, input_1, ...)",
        group=_IO,
    )

    def __post_init__(self) -> None:
        if self.input_names is None:
            self.input_names = [f"input_{i}" for i in range(int(self.input_count))]
        if self.reference_index is None:
            self.reference_index = int(self.slices) // 2

    # -- derived -------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """Channels of the network input: inputs x slices for 2.5D, inputs otherwise."""
        return self.input_count * (self.slices if self.input_dimension == "2.5D" else 1)

    @property
    def spatial_dims(self) -> int:
        """2 for 2D and 2.5D networks, 3 for 3D networks."""
        return 3 if self.input_dimension == "3D" else 2

    @property
    def slice_offsets(self) -> list[int]:
        """2.5D: offsets (in slices) of the input slices relative to the predicted slice."""
        if self.input_dimension != "2.5D":
            return [0]
        ref = self.reference_index if self.reference_index is not None else self.slices // 2
        return [(i - ref) * self.slice_spacing for i in range(self.slices)]

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> ModelSpec:  # type: ignore[override]
        """Check the values (not the architecture, see :func:`nbseg.generate_model`)."""
        return super().validate()

    def _check(self, **_: Any) -> None:
        if self.input_dimension == "2.5D":
            if self.slices < 3 or self.slices % 2 == 0:
                raise self._fail("slices", self.slices, "2.5D needs an odd number of slices >= 3")
            if not 0 <= int(self.reference_index or 0) < self.slices:
                raise self._fail(
                    "reference_index", self.reference_index, f"must lie in 0..{self.slices - 1}"
                )
        if self.input_names is not None and len(self.input_names) != self.input_count:
            raise self._fail(
                "input_names",
                self.input_names,
                f"it has {len(self.input_names)} names but input_count is {self.input_count}; "
                "give one name per input",
            )

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict())
