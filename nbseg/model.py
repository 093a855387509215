"""`Model`: a network with everything needed to use it again.

A model carries its :class:`ModelSpec`, class names and colours, the intensity normalisation
learnt at training, the training parameters and the per-epoch history. It saves to one
``.nbseg`` file (safetensors; no code is executed at load) and loads back identically.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._files import now_iso
from .data.multiroi import default_class_colors, default_class_names, hex_to_rgb
from .data.trainingset import Normalisation
from .errors import InputError, ModelFileError, SpecError
from .inference.sliding import segment
from .models.registry import build_network
from .models.spec import ModelSpec
from .store.fileformat import check_meta, read_model_file, write_model_file
from .training.params import TrainingParams
from .training.run import epochs_text, is_partial
from .training.teacher import FeatureTeacher

if TYPE_CHECKING:
    import xarray as xr

    from .training.params import TrainingParams


class Model:
    """A segmentation model: network + spec + classes + normalisation + params + history.

    Create one with :func:`nbseg.generate_model`, train it with :func:`nbseg.train`, apply it
    with :func:`nbseg.segment`, save it with :meth:`save` and load it with
    :func:`nbseg.load_model`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        network: torch.nn.Module,
        class_names: Sequence[str] | None = None,
        class_colors: Sequence[str] | None = None,
        normalisation: Normalisation | None = None,
        params: TrainingParams | None = None,
        history: list[dict[str, Any]] | None = None,
        created: str | None = None,
        updated: str | None = None,
        teacher: FeatureTeacher | None = None,
        teacher_blend: float = 0.0,
    ) -> None:
        self.spec = spec
        self.network = network
        self.class_names = list(class_names or default_class_names(spec.class_count))
        self.class_colors = list(class_colors or default_class_colors(spec.class_count))
        self.check_classes()
        self.normalisation = normalisation
        self.params = params
        self.history: list[dict[str, Any]] = list(history or [])
        self.created = created or now_iso()
        self.updated = updated or self.created
        #: the feature teacher kept from the last training that used one (``teacher_blend``
        #: > 0): :func:`nbseg.segment` predicts with a geometric mean of the network's and
        #: its probabilities, ``teacher_blend`` on the teacher's; None = the network alone
        self.teacher = teacher
        self.teacher_blend = float(teacher_blend) if teacher is not None else 0.0

    # -- classes -------------------------------------------------------------------------
    def check_classes(self) -> None:
        k = self.spec.class_count
        if len(self.class_names) != k or len(self.class_colors) != k:
            raise SpecError(
                f"Model {self.spec.name!r} has {k} classes but {len(self.class_names)} names "
                f"and {len(self.class_colors)} colours; give one of each per class."
            )
        for c in self.class_colors:
            hex_to_rgb(c)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trained(self) -> bool:
        return self.normalisation is not None

    @property
    def epochs_trained(self) -> int:
        """Whole epochs trained (an epoch that Stop ended early is not counted; see
        :attr:`epochs_text`)."""
        return sum(1 for h in self.history if not is_partial(h))

    @property
    def epochs_text(self) -> str:
        """What the model was trained for, e.g. ``"4 epochs + 7/16 batches"``."""
        return epochs_text(self.history)

    def __repr__(self) -> str:
        state = f"trained {self.epochs_text}" if self.trained else "untrained"
        if self.teacher is not None:
            state += f", + feature teacher (blend {self.teacher_blend:g})"
        return (
            f"<nbseg.Model {self.spec.name!r}: {self.spec.architecture} "
            f"{self.spec.input_dimension}, {self.spec.class_count} classes "
            f"{self.class_names}, {self.spec.input_count} input(s), {state}>"
        )

    # -- persistence ---------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "class_names": self.class_names,
            "class_colors": self.class_colors,
            "normalisation": self.normalisation.to_dict() if self.normalisation else None,
            "params": self.params.to_dict() if self.params is not None else None,
            "history": self.history,
            "created": self.created,
            "updated": self.updated,
            "nbseg_version": __import__("nbseg").__version__,
            **(
                {"teacher": {"blend": self.teacher_blend, "hidden": self.teacher.hidden}}
                if self.teacher is not None
                else {}
            ),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` (``.nbseg``) atomically; returns the path."""
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
            raise InputError(
                f"Model.save: path must be a file path (str or pathlib.Path), got {path!r}."
            )
        path = Path(os.fspath(path)).expanduser()
        if path.suffix == "" and not path.is_dir():
            path = path.with_suffix(".nbseg")
        self.updated = now_iso()
        state = dict(self.network.state_dict())
        if self.teacher is not None:
            state.update(self.teacher.tensors())
        return write_model_file(path, state, self.metadata())

    @classmethod
    def from_parts(cls, state: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> Model:
        """A model from a file's weights and metadata; the metadata is validated first
        (:func:`nbseg.store.fileformat.check_meta`), errors name ``source`` and the field."""
        meta = check_meta(meta, source)
        try:
            spec = ModelSpec.from_dict(meta["spec"])
            network = build_network(spec)
        except (KeyError, TypeError, ValueError, SpecError) as err:
            raise ModelFileError(
                f"{source}: model metadata field 'spec' is invalid ({err})."
            ) from None
        prefix = FeatureTeacher.PREFIX
        kept = {k: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        teacher = None
        if meta.get("teacher") is not None:
            try:
                teacher = FeatureTeacher.from_tensors(
                    kept, spec.class_count, meta["teacher"]["hidden"]
                )
            except (KeyError, RuntimeError) as err:
                raise ModelFileError(
                    f"{source}: the feature teacher's weights are missing or do not fit "
                    f"({str(err).splitlines()[0][:200]}); re-train the model or restore the "
                    "file from the trash."
                ) from None
        elif kept:
            raise ModelFileError(
                f"{source}: the file holds feature-teacher weights but no 'teacher' metadata; "
                "the file is damaged or was edited by hand."
            )
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = " ".join(lines[1:2] or lines[:1])[:300]
            raise ModelFileError(
                f"{source}: the weights do not fit the {spec.architecture} network described "
                f"in the file ({detail})."
            ) from None
        norm = meta.get("normalisation")
        params = meta.get("params")
        return cls(
            spec,
            network,
            meta.get("class_names"),
            meta.get("class_colors"),
            Normalisation.from_dict(norm) if norm else None,
            TrainingParams.from_dict(params) if params else None,
            meta.get("history") or [],
            meta.get("created"),
            meta.get("updated"),
            teacher,
            meta["teacher"]["blend"] if teacher is not None else 0.0,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
            raise InputError(
                f"load_model: path must be a model file path (str or pathlib.Path), got {path!r}."
            )
        state, meta = read_model_file(path)
        return cls.from_parts(state, meta, repr(str(path)))

    def copy(self) -> Model:
        """An independent deep copy (e.g. to fine-tune while keeping the original)."""
        return Model(
            copy.deepcopy(self.spec),
            copy.deepcopy(self.network),
            self.class_names,
            self.class_colors,
            copy.deepcopy(self.normalisation),
            copy.deepcopy(self.params),
            copy.deepcopy(self.history),
            self.created,
            self.updated,
            copy.deepcopy(self.teacher),
            self.teacher_blend,
        )

    # -- convenience ---------------------------------------------------------------------
    def segment(self, image: xr.DataArray | Sequence[xr.DataArray], **kwargs: Any) -> Any:
        """Same as :func:`nbseg.segment` with this model."""

        return segment(self, image, **kwargs)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def generate_model(
    spec: ModelSpec,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    seed: int | None = 0,
) -> Model:
    """Build an untrained model from a spec (Dragonfly's *Model Generator*).

    Raises :class:`nbseg.SpecError` with a clear message when the spec is invalid (unknown
    architecture, class count < 2, unsupported input dimension, unknown parameter ...).
    """

    if not isinstance(spec, ModelSpec):
        raise SpecError(f"generate_model needs a ModelSpec, got {type(spec).__name__}.")
    if class_names is not None and len(class_names) != spec.class_count:
        raise SpecError(
            f"{len(class_names)} class names given for class_count={spec.class_count}; give "
            "one name per class."
        )
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            network = build_network(spec)
    else:
        network = build_network(spec)
    return Model(spec, network, class_names, class_colors)


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load a ``.nbseg`` model file (never executes code from the file)."""
    return Model.load(path)
