"""`ModelSpec`: everything needed to rebuild a network, saved with the model.

Dragonfly calls this the *Model Generator* settings: architecture, class count, input count,
input dimension (2D, 2.5D with N neighbouring slices, 3D), name, description and the
architecture's editable parameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import SpecError

InputDimension = Literal["2D", "2.5D", "3D"]
INPUT_DIMENSIONS: tuple[str, ...] = ("2D", "2.5D", "3D")


@dataclass
class ModelSpec:
    """Specification of a segmentation network.

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

    architecture: str = "unet"
    class_count: int = 2
    input_count: int = 1
    input_dimension: InputDimension = "2D"
    slices: int = 5
    slice_spacing: int = 1
    reference_index: int | None = None
    name: str = "model"
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    input_names: list[str] | None = None

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
        return [(i - self.reference_index) * self.slice_spacing for i in range(self.slices)]

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> ModelSpec:
        """Check the values (not the architecture, see :func:`nbseg.generate_model`)."""
        if not isinstance(self.class_count, int) or self.class_count < 2:
            raise SpecError(
                f"class_count must be an integer >= 2, got {self.class_count!r}; a binary "
                "segmentation has 2 classes (background and object)."
            )
        if not isinstance(self.input_count, int) or self.input_count < 1:
            raise SpecError(f"input_count must be an integer >= 1, got {self.input_count!r}.")
        if self.input_dimension not in INPUT_DIMENSIONS:
            raise SpecError(
                f"input_dimension must be one of {INPUT_DIMENSIONS}, got {self.input_dimension!r}."
            )
        if self.input_dimension == "2.5D":
            if not isinstance(self.slices, int) or self.slices < 3 or self.slices % 2 == 0:
                raise SpecError(
                    f"2.5D needs an odd number of slices >= 3, got slices={self.slices!r}."
                )
            if not isinstance(self.slice_spacing, int) or self.slice_spacing < 1:
                raise SpecError(f"slice_spacing must be >= 1, got {self.slice_spacing!r}.")
            if not 0 <= self.reference_index < self.slices:
                raise SpecError(
                    f"reference_index must lie in 0..{self.slices - 1}, "
                    f"got {self.reference_index!r}."
                )
        if len(self.input_names) != self.input_count:
            raise SpecError(
                f"input_names has {len(self.input_names)} names but input_count is "
                f"{self.input_count}; give one name per input."
            )
        return self

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"Unknown ModelSpec fields {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
