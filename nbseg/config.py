"""Training configurations: one YAML file describing a whole training (``nbseg train``).

A config names the model to train (a spec, or a model file to fine-tune), the training
set(s) (files or an embedded sample), the validation, the :class:`TrainingParams`, the
feedback region, where to save the trained model and how to run Lightning (devices, nodes,
strategy, accelerator). Relative paths are relative to the config file's folder.

Example::

    model:                         # a ModelSpec ...
      architecture: unet
      class_count: 2
      input_dimension: 2D
      parameters: {filters: 16, depth: 3}
    # model_file: start.nbseg      # ... or a model file to fine-tune (not both)
    training_sets:
      - dataset: fibres            # an embedded sample (fibres, multiphase, membranes)
        dataset_options: {shape: [16, 96, 96]}
      - inputs: [ct.tif]           # or .ome.zarr, .zarr, slices/, .h5, .nii.gz, .mrc, .nc, .npy
        output: labels.npy         # the multi-ROI (-1 = unlabelled)
        mask: {path: data.zarr, variable: mask}   # a variable of a zarr / netCDF dataset
    validation: 0.2                # a fraction, or a list of training sets (ground truth)
    unlabelled: [more.tif, scan2/] # images without labels, learnt from with pseudo-labels;
                                   # several inputs: a list per image, [[a_ct.tif, a_mri.tif]]
    params: {patch_size: 64, epochs: 20, batch_size: 8}   # or a path to a params YAML/JSON
    feedback: {training_set: 0, slice_index: 4, box: [0, 64, 0, 64]}
    output: fibres.nbseg
    trainer: {devices: 2, strategy: ddp, accelerator: cpu, num_nodes: 1}

Use :func:`load_config` to read one, :meth:`TrainingConfig.run` to train from it, and
:meth:`TrainingConfig.from_objects` to turn in-memory objects (what the widgets hold) into a
config that ``nbseg train`` can run later (see its documentation).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import xarray as xr

from . import datasets
from .data.trainingset import TrainingSet, as_dataarray, as_input_list
from .datasets import SAMPLES
from .errors import InputError, NbsegError, ParamsError, SpecError
from .formats import FORMATS_TEXT
from .io import is_input_path, read_array, write_array
from .model import Model, generate_model, load_model
from .models.registry import get_architecture
from .models.spec import ModelSpec
from .settings import Choice, Devices, Int, Settings, check_keys, setting
from .store.fileformat import atomic_write_bytes
from .training.callbacks import FeedbackRegion
from .training.params import TrainingParams
from .training.run import train

if TYPE_CHECKING:
    from .data.trainingset import TrainingSet
    from .model import Model
    from .training.run import TrainingResult

__all__ = [
    "ConfigError",
    "TrainerOptions",
    "TrainingConfig",
    "TrainingSetConfig",
    "load_array",
    "load_config",
    "open_unlabelled",
    "unlabelled_refs",
]

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_notebook", "ddp_fork", "fsdp", "deepspeed")
TOP_KEYS = (
    "model",
    "model_file",
    "training_sets",
    "validation",
    "unlabelled",
    "params",
    "feedback",
    "output",
    "trainer",
)


class ConfigError(ParamsError):
    """An invalid training config; the message names the file and the key."""


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


# -- arrays from files: nbseg.io (load_array is its public alias here) ------------------
load_array = read_array


def _is_ref(value: Any) -> bool:
    """Whether ``value`` is an array reference of a config: a path or {path, variable}."""
    return isinstance(value, (str, os.PathLike)) or (isinstance(value, dict) and "path" in value)


def _check_ref(ref: Any, where: str) -> None:
    """A config's array reference: a path nbseg reads, or ``{path: ..., variable: ...}``."""
    path = ref.get("path") if isinstance(ref, dict) else ref
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{where}: expected a path or {{path: ..., variable: ...}}, got {ref!r}.")
    if not is_input_path(path):
        raise ConfigError(
            f"{where}: {str(path)!r} is not a supported file; nbseg reads {FORMATS_TEXT}."
        )


def unlabelled_refs(data: Any, where: str) -> list[list[Any]]:
    """A config's ``unlabelled:`` (``where`` names it in errors) as one list of array
    references per image: a single path or a list of paths stands for images of one input
    each, a list of lists gives each image's inputs. :class:`ConfigError` for anything else."""
    if data is None:
        return []
    items = [data] if _is_ref(data) else data
    if not isinstance(items, list):
        raise ConfigError(
            f"{where} must be a list of image paths (for a model of several inputs, a list of "
            f"lists of paths, one per input), got {type(data).__name__}."
        )
    out = []
    for i, item in enumerate(items):
        refs = item if isinstance(item, list) else [item]
        if not refs:
            raise ConfigError(f"{where}[{i}]: an empty list; give the image's input path(s).")
        for k, ref in enumerate(refs):
            _check_ref(ref, f"{where}[{i}]" + (f"[{k}]" if isinstance(item, list) else ""))
        out.append(list(refs))
    return out


def _unlabelled_from(data: Any, src: str | None) -> list[list[Any]]:
    return unlabelled_refs(data, _where(src, "unlabelled"))


# -- the config objects ----------------------------------------------------------------------
@dataclass
class TrainingSetConfig:
    """One training set of a config: files (``inputs``, ``output``, ``mask``) or a sample.

    Each file is a path or ``{"path": ..., "variable": ...}`` (see :func:`load_array`).
    ``dataset`` (``"fibres"``, ``"multiphase"``, ``"membranes"``) uses an embedded sample's
    image and sparse labels instead, with ``dataset_options`` passed to
    :func:`nbseg.datasets.load` (``shape``, ``labelled_slices``, ``seed``, ``noise``).
    """

    inputs: list[Any] = field(default_factory=list)
    output: Any = None
    mask: Any = None
    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @classmethod
    def from_dict(cls, data: Any, key: str, source: str | None) -> TrainingSetConfig:
        if isinstance(data, str):  # shorthand: the name of a sample
            data = {"dataset": data}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{_where(source, key)} must be a mapping (inputs/output/mask or dataset), "
                f"got {type(data).__name__}."
            )
        data = dict(data)
        if "input" in data:
            if "inputs" in data:
                raise ConfigError(f"{_where(source, key)}: give 'input' or 'inputs', not both.")
            data["inputs"] = [data.pop("input")]
        known = [f.name for f in dataclasses.fields(cls)] + ["input"]
        data = check_keys(data, known, what="key(s)", where=_where(source, key), error=ConfigError)
        inputs = data.get("inputs") or []
        if not isinstance(inputs, list):
            inputs = [inputs]
        out = cls(
            inputs=inputs,
            output=data.get("output"),
            mask=data.get("mask"),
            dataset=data.get("dataset"),
            dataset_options=dict(data.get("dataset_options") or {}),
            name=data.get("name"),
        )
        out.check(key, source)
        return out

    def check(self, key: str, source: str | None) -> None:

        where = _where(source, key)
        if self.dataset is not None:
            if self.dataset not in SAMPLES:
                raise ConfigError(
                    f"{where}.dataset: unknown sample {self.dataset!r}; choose one of "
                    f"{', '.join(SAMPLES)}."
                )
            if self.inputs or self.output is not None:
                raise ConfigError(f"{where}: give either 'dataset' or 'inputs'/'output', not both.")
            bad = sorted(set(self.dataset_options) - {"shape", "labelled_slices", "seed", "noise"})
            if bad:
                raise ConfigError(
                    f"{where}.dataset_options: unknown option(s) {bad}; valid: shape, "
                    "labelled_slices, seed, noise."
                )
            return
        if not self.inputs:
            raise ConfigError(f"{where}: no 'inputs' (or 'input') given, and no 'dataset'.")
        if self.output is None:
            raise ConfigError(f"{where}: no 'output' (the multi-ROI file) given.")
        refs = [(f"inputs[{i}]", r) for i, r in enumerate(self.inputs)]
        refs.append(("output", self.output))
        if self.mask is not None:
            refs.append(("mask", self.mask))
        for sub, ref in refs:
            _check_ref(ref, f"{where}.{sub}")

    def to_dict(self) -> dict[str, Any]:
        if self.dataset is not None:
            d: dict[str, Any] = {"dataset": self.dataset}
            if self.dataset_options:
                d["dataset_options"] = _plain(self.dataset_options)
        else:
            d = {"inputs": _plain(self.inputs), "output": _plain(self.output)}
            if self.mask is not None:
                d["mask"] = _plain(self.mask)
        if self.name:
            d["name"] = self.name
        return d

    def build(self, base: Path | None, key: str = "training set") -> TrainingSet:
        """Open the files (or generate the sample) and return a :class:`TrainingSet`."""

        name = self.name or (self.dataset or key)
        if self.dataset is not None:
            try:
                ds = datasets.load(self.dataset, **self.dataset_options)
            except NbsegError as err:
                raise type(err)(f"{key}.dataset_options: {err}") from None
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"{key}.dataset_options={_plain(self.dataset_options)!r} are not "
                    f"understood: {err}"
                ) from None
            return TrainingSet(inputs=ds["image"], output=ds["labels"], name=name)

        def opened(sub: str, ref: Any) -> xr.DataArray:
            try:
                return load_array(ref, base)
            except NbsegError as err:
                raise type(err)(f"{key}.{sub}: {err}") from None

        inputs = [opened(f"inputs[{i}]", r) for i, r in enumerate(self.inputs)]
        output = opened("output", self.output)
        mask = opened("mask", self.mask) if self.mask is not None else None
        if mask is not None and mask.dtype != bool:
            mask = mask != 0
        try:
            return TrainingSet(inputs=inputs, output=output, mask=mask, name=name)
        except NbsegError as err:
            if name == key:  # the message starts with the key already
                raise
            raise type(err)(f"{key} ({name!r}): {err}") from None


@dataclass
class TrainerOptions(Settings):
    """How Lightning runs the training (each option declared once below). ``None`` keeps
    nbseg's default (``TrainingParams.device``: one device)."""

    _title: ClassVar[str] = "trainer options"
    _owner: ClassVar[str] = "trainer"
    _error: ClassVar[type] = ConfigError
    _groups: ClassVar[tuple[str, ...]] = ("Trainer",)

    devices: int | list[int] | str | None = setting(
        None,
        Devices(),
        "Devices",
        "Processes or GPUs to train on (DDP when > 1); None = one device (TrainingParams.device)",
        group="Trainer",
    )
    num_nodes: int = setting(
        1, Int(minimum=1), "Nodes", "Machines (multi-node DDP)", group="Trainer"
    )
    strategy: str = setting(
        "auto",
        Choice(STRATEGIES),
        "Strategy",
        "Lightning strategy: auto, ddp (one process per device), ddp_notebook in notebooks, ...",
        group="Trainer",
    )
    accelerator: str | None = setting(
        None,
        Choice(ACCELERATORS, optional=True, none_text="from TrainingParams.device"),
        "Accelerator",
        "Lightning accelerator: auto, cpu, gpu, ...",
        group="Trainer",
    )

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> TrainerOptions:
        if data is None:
            return cls()
        out = cls(**cls.check_keys(data, _where(source, "trainer")))
        return out.check(source)

    def check(self, source: str | None = None) -> TrainerOptions:
        """Validate; errors name ``source`` (a file) and the option."""
        try:
            return self.validate()
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}" if source else str(err)) from None

    def trainer_kwargs(self) -> dict[str, Any]:
        """The :func:`nbseg.train` ``trainer_kwargs`` for these options ({} = defaults)."""
        kw: dict[str, Any] = {}
        if self.devices is not None:
            kw["devices"] = self.devices
            kw["accelerator"] = self.accelerator or "auto"
        elif self.accelerator is not None:
            kw["accelerator"] = self.accelerator
            kw["devices"] = 1 if self.accelerator != "auto" else "auto"
        if self.num_nodes != 1:
            kw["num_nodes"] = self.num_nodes
        if self.strategy != "auto":
            kw["strategy"] = self.strategy
        return kw

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclass
class TrainingConfig:
    """A whole training described as data; see the module documentation for the YAML.

    Exactly one of ``spec`` (train a new model) and ``model_file`` (fine-tune a saved model)
    is set. ``unlabelled`` holds the images without labels to learn from too
    (``nbseg.train(..., unlabelled=)``), each as the list of its inputs' array references
    (one per model input, or one multi-channel file). ``base_dir`` is where relative paths are resolved (the config file's folder);
    ``source`` names the file in error messages.
    """

    training_sets: list[TrainingSetConfig]
    spec: ModelSpec | None = None
    model_file: str | None = None
    validation: float | list[TrainingSetConfig] = 0.2
    unlabelled: list[list[Any]] = field(default_factory=list)
    params: TrainingParams = field(default_factory=TrainingParams)
    feedback: FeedbackRegion | None = None
    output: str | None = None
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    base_dir: Path | None = None
    source: str | None = None

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls,
        data: Any,
        base_dir: str | os.PathLike[str] | None = None,
        source: str | None = None,
    ) -> TrainingConfig:
        """Validate a config mapping; errors name the file (``source``) and the key."""
        src = source
        if not isinstance(data, dict):
            raise ConfigError(
                f"{src or 'config'}: expected a mapping of {', '.join(TOP_KEYS)}, got "
                f"{type(data).__name__}."
            )
        check_keys(data, TOP_KEYS, what="key(s)", where=src or "config", error=ConfigError)
        base = Path(base_dir) if base_dir is not None else None

        spec = None
        model_file = data.get("model_file")
        if ("model" in data) == (model_file is not None):
            raise ConfigError(
                f"{src or 'config'}: give exactly one of 'model' (a model spec: architecture, "
                "class_count, input_dimension, ...) and 'model_file' (a model to fine-tune)."
            )
        if "model" in data:
            spec = _spec_from(data["model"], src)
        elif not isinstance(model_file, (str, os.PathLike)):
            raise ConfigError(f"{_where(src, 'model_file')} must be a path, got {model_file!r}.")
        else:
            model_file = os.fspath(model_file)
            mpath = _resolve(model_file, base)
            if not mpath.is_file():
                raise ConfigError(f"{_where(src, 'model_file')}: no model file at {str(mpath)!r}.")

        raw_sets = data.get("training_sets")
        if not isinstance(raw_sets, list) or not raw_sets:
            raise ConfigError(
                f"{_where(src, 'training_sets')}: give a non-empty list of training sets "
                "(each with inputs/output files, or dataset: fibres|multiphase|membranes)."
            )
        sets = [
            TrainingSetConfig.from_dict(s, f"training_sets[{i}]", src)
            for i, s in enumerate(raw_sets)
        ]

        val_raw = data.get("validation", 0.2)
        validation: float | list[TrainingSetConfig]
        if isinstance(val_raw, list):
            if not val_raw:
                raise ConfigError(f"{_where(src, 'validation')}: an empty list; use 0 for none.")
            validation = [
                TrainingSetConfig.from_dict(s, f"validation[{i}]", src)
                for i, s in enumerate(val_raw)
            ]
        elif isinstance(val_raw, (int, float)) and not isinstance(val_raw, bool):
            if not 0 <= float(val_raw) < 1:
                raise ConfigError(
                    f"{_where(src, 'validation')}={val_raw!r}: a fraction must lie in [0, 1)."
                )
            validation = float(val_raw)
        else:
            raise ConfigError(
                f"{_where(src, 'validation')}={val_raw!r}: give a fraction (e.g. 0.2) or a list "
                "of training sets."
            )

        unlabelled = _unlabelled_from(data.get("unlabelled"), src)
        params = _params_from(data.get("params"), base, src)
        if spec is not None:
            try:
                params.validate(spec.class_count)
            except ParamsError as err:
                raise ConfigError(f"{_where(src, 'params')}: {err}") from None
        feedback = _feedback_from(data.get("feedback"), src)
        output = data.get("output")
        if output is not None and not isinstance(output, (str, os.PathLike)):
            raise ConfigError(f"{_where(src, 'output')} must be a path, got {output!r}.")
        trainer = TrainerOptions.from_dict(data.get("trainer"), src)
        return cls(
            training_sets=sets,
            spec=spec,
            model_file=model_file,
            validation=validation,
            unlabelled=unlabelled,
            params=params,
            feedback=feedback,
            output=os.fspath(output) if output is not None else None,
            trainer=trainer,
            base_dir=base,
            source=src,
        )

    @classmethod
    def from_yaml(cls, text: str, base_dir: str | os.PathLike[str] | None = None) -> TrainingConfig:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"config: not valid YAML ({err}).") from None
        return cls.from_dict(data, base_dir)

    # -- writing ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.spec is not None:
            d["model"] = self.spec.to_dict()
        else:
            d["model_file"] = self.model_file
        d["training_sets"] = [s.to_dict() for s in self.training_sets]
        if isinstance(self.validation, list):
            d["validation"] = [s.to_dict() for s in self.validation]
        else:
            d["validation"] = float(self.validation)
        if self.unlabelled:
            d["unlabelled"] = [
                refs[0] if len(refs) == 1 else list(refs) for refs in self.unlabelled
            ]
        d["params"] = self.params.to_dict()
        if self.feedback is not None:
            fb = dataclasses.asdict(self.feedback)
            if fb.get("box") is not None:
                fb["box"] = [int(v) for v in fb["box"]]
            d["feedback"] = fb
        if self.output is not None:
            d["output"] = self.output
        trainer = self.trainer.to_dict()
        if trainer != TrainerOptions().to_dict():
            d["trainer"] = trainer
        return _plain(d)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as YAML text; written (atomically) to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write_bytes(path, text.encode())
        return text

    # -- from in-memory objects (the widgets' "export this training as a config") ----------
    @classmethod
    def from_objects(
        cls,
        spec_or_model: ModelSpec | Model,
        params: TrainingParams | None = None,
        *training_sets: Any,
        validation: float | Sequence[Any] = 0.2,
        unlabelled: Sequence[Any] = (),
        feedback: FeedbackRegion | None = None,
        output: str | os.PathLike[str] | None = None,
        trainer: TrainerOptions | dict[str, Any] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> TrainingConfig:
        """A config from what a notebook or the widgets hold, e.g. to run it with
        ``nbseg train`` on a bigger machine.

        Parameters
        ----------
        spec_or_model
            A :class:`ModelSpec` (train a new model) or a :class:`Model` (fine-tune it: it is
            saved as ``<data_dir>/model.nbseg``; an untrained model without ``data_dir`` is
            described by its spec).
        params
            The training parameters (default: the model's, else the defaults).
        *training_sets
            Each a path-based :class:`TrainingSetConfig` or mapping (``{"inputs": [...],
            "output": ..., "mask": ...}``), a sample name (``"fibres"``), or an in-memory
            :class:`nbseg.TrainingSet`, whose arrays (with coords and attrs) are written to
            ``<data_dir>/training_set_<i>.zarr`` (``data_dir`` is then required).
        validation
            A fraction or a list of training sets (same forms as above).
        unlabelled
            Images without labels to learn from too: each a path (or ``{path, variable}``),
            an in-memory DataArray (written to ``<data_dir>/unlabelled_<i>_<k>.zarr``), or for
            a model of several inputs a list of those, one per input.
        feedback, output, trainer
            The feedback region, the output model path and the :class:`TrainerOptions`.
        data_dir
            Where in-memory data is written; relative paths in the config are written
            relative to it, so save the YAML there (``cfg.to_yaml(data_dir / "train.yaml")``).

        Example (a widget's "Export as config" button)::

            cfg = TrainingConfig.from_objects(ws.model, ws.params, *ws.training_sets,
                                              validation=ws.validation, feedback=ws.feedback,
                                              output="trained.nbseg", data_dir="run1")
            cfg.to_yaml("run1/train.yaml")       # then: nbseg train run1/train.yaml
        """

        base = Path(data_dir) if data_dir is not None else None

        def need_dir(what: str) -> Path:
            if base is None:
                raise ConfigError(
                    f"TrainingConfig.from_objects: {what} is held in memory; pass data_dir= "
                    "(a folder) so that it can be written next to the config."
                )
            base.mkdir(parents=True, exist_ok=True)
            return base

        spec = None
        model_file = None
        if isinstance(spec_or_model, Model):
            model = spec_or_model
            if base is None and not model.trained:
                spec = copy.deepcopy(model.spec)
            else:
                model.save(need_dir("the model") / "model.nbseg")
                model_file = "model.nbseg"
            params = params or model.params
        elif isinstance(spec_or_model, ModelSpec):
            spec = copy.deepcopy(spec_or_model)
        else:
            raise ConfigError(
                "TrainingConfig.from_objects needs a ModelSpec or a Model, got "
                f"{type(spec_or_model).__name__}."
            )
        counter = iter(range(10**6))

        def convert(item: Any, key: str) -> TrainingSetConfig:
            if isinstance(item, TrainingSetConfig):
                return copy.deepcopy(item)
            if isinstance(item, TrainingSet):
                folder = need_dir(f"{key} ({item.name})")
                fname = f"training_set_{next(counter)}.zarr"
                _write_training_set(item, folder / fname)
                ref = lambda v: {"path": fname, "variable": v}  # noqa: E731
                return TrainingSetConfig(
                    inputs=[ref(f"input_{i}") for i in range(item.input_count)],
                    output=ref("output"),
                    mask=ref("mask") if item.mask is not None else None,
                    name=item.name,
                )
            return TrainingSetConfig.from_dict(item, key, None)

        if not training_sets:
            raise ConfigError("TrainingConfig.from_objects: give at least one training set.")
        sets = [convert(t, f"training_sets[{i}]") for i, t in enumerate(training_sets)]
        if isinstance(validation, (int, float)) and not isinstance(validation, bool):
            val: float | list[TrainingSetConfig] = float(validation)
        elif isinstance(validation, bool):
            raise ConfigError(
                f"TrainingConfig.from_objects: validation={validation!r} is not understood; "
                "give a fraction such as 0.2 (0 = none) or training sets."
            )
        else:
            items = [validation] if isinstance(validation, TrainingSet) else list(validation)
            val = [convert(t, f"validation[{i}]") for i, t in enumerate(items)]

        def unlabelled_refs(item: Any, i: int) -> list[Any]:
            elements = list(item) if isinstance(item, (list, tuple)) else [item]
            refs = []
            for k, e in enumerate(elements):
                if _is_ref(e):
                    refs.append(os.fspath(e) if isinstance(e, os.PathLike) else e)
                    continue
                where = f"unlabelled[{i}]" + (f" input {k}" if len(elements) > 1 else "")
                try:
                    da = as_dataarray(e, where)
                except InputError as err:
                    raise ConfigError(f"TrainingConfig.from_objects: {err}") from None
                fname = f"unlabelled_{i}_{k}.zarr"
                write_array(_clean(da), need_dir(where) / fname, overwrite=True, name="image")
                refs.append(fname)
            return refs

        if isinstance(unlabelled, (str, os.PathLike, xr.DataArray)):
            unlabelled = [unlabelled]
        unl = [unlabelled_refs(item, i) for i, item in enumerate(unlabelled or [])]
        if isinstance(trainer, dict):
            trainer = TrainerOptions.from_dict(trainer, None)
        cfg = cls(
            training_sets=sets,
            spec=spec,
            model_file=model_file,
            validation=val,
            unlabelled=unl,
            params=copy.deepcopy(params) if params is not None else TrainingParams(),
            feedback=copy.deepcopy(feedback),
            output=os.fspath(output) if output is not None else None,
            trainer=(trainer or TrainerOptions()).check(),
            base_dir=base,
        )
        # the same checks as a file gets
        return cls.from_dict(cfg.to_dict(), base)

    # -- running ---------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike[str]) -> Path:
        return _resolve(os.fspath(path), self.base_dir)

    def build_model(self) -> Model:
        """The model to train: generated from the spec, or loaded from ``model_file``."""

        if self.spec is not None:
            try:
                return generate_model(self.spec, seed=self.params.seed)
            except NbsegError as err:
                raise ConfigError(f"{_where(self.source, 'model')}: {err}") from None
        if self.model_file is None:
            raise ConfigError(f"{_where(self.source, 'model')}: give a model spec or a model_file.")
        return load_model(self.resolve(self.model_file))

    def build_training_sets(self) -> list[TrainingSet]:
        return [
            s.build(self.base_dir, f"{_where(self.source, 'training_sets')}[{i}]")
            for i, s in enumerate(self.training_sets)
        ]

    def build_validation(self) -> float | list[TrainingSet]:
        if isinstance(self.validation, list):
            return [
                s.build(self.base_dir, f"{_where(self.source, 'validation')}[{i}]")
                for i, s in enumerate(self.validation)
            ]
        return float(self.validation)

    def build_unlabelled(self, input_count: int | None = None) -> list[list[xr.DataArray]]:
        """Open the unlabelled images (see :func:`open_unlabelled`; errors name the config
        file and ``unlabelled[i]``)."""
        key = _where(self.source, "unlabelled")
        return open_unlabelled(self.unlabelled, self.base_dir, key, input_count)

    def output_path(self) -> Path | None:
        return self.resolve(self.output) if self.output is not None else None

    def run(
        self,
        callbacks: Sequence[Any] = (),
        model: Model | None = None,
        feedback: bool = True,
        unlabelled: list[list[xr.DataArray]] | None = None,
    ) -> TrainingResult:
        """Build everything and call :func:`nbseg.train` (blocking). Does not save: the
        caller saves ``result.model`` where ``result.extra["global_rank"] == 0``.
        ``feedback=False`` skips the per-epoch feedback prediction (nothing shows it);
        ``unlabelled`` (opened images, e.g. from :func:`open_unlabelled`) replaces the
        config's ``unlabelled:``."""

        model = model or self.build_model()
        sets, validation = self.build_training_sets(), self.build_validation()
        if unlabelled is None:
            unlabelled = self.build_unlabelled(model.spec.input_count)
        return train(
            model,
            sets,
            self.params,
            validation,
            callbacks=callbacks,
            feedback=self.feedback if feedback else False,
            trainer_kwargs=self.trainer.trainer_kwargs(),
            unlabelled=unlabelled or None,
        )


def load_config(path: str | os.PathLike[str]) -> TrainingConfig:
    """Read a training config YAML file (relative paths are relative to its folder)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"No config file at {str(p)!r}.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{str(p)!r} is not valid YAML: {err}") from None
    return TrainingConfig.from_dict(data, p.resolve().parent, repr(str(p)))


def open_unlabelled(
    refs: Sequence[Sequence[Any]],
    base: Path | None = None,
    key: str = "unlabelled",
    input_count: int | None = None,
) -> list[list[xr.DataArray]]:
    """Open unlabelled images given as one list of array references per image (see
    :func:`unlabelled_refs`; relative paths from ``base``): one list of input DataArrays
    per image, a multi-channel file split into its channels. Errors name ``key[i]``; with
    ``input_count`` (the model's), an image with another number of inputs is a
    :class:`ConfigError`."""
    out = []
    for i, item in enumerate(refs):
        where = f"{key}[{i}]"
        arrays = []
        for k, ref in enumerate(item):
            sub = f"{where}[{k}]" if len(item) > 1 else where
            try:
                arrays.append(load_array(ref, base))
            except NbsegError as err:
                raise type(err)(f"{sub}: {err}") from None
        try:
            inputs = as_input_list(arrays, where)
        except NbsegError as err:
            raise type(err)(f"{where}: {err}") from None
        if input_count is not None and len(inputs) != input_count:
            given = ", ".join(repr(_plain(r)) for r in item)
            fix = (
                "give one file per unlabelled image (in a config a plain list [a.tif, b.tif], "
                "on the command line a.tif b.tif)"
                if input_count == 1
                else f"give each unlabelled image as a list of its {input_count} input files, "
                "one per model input (in a config [[a_1.tif, a_2.tif]], on the command line "
                "a_1.tif,a_2.tif)"
            )
            raise ConfigError(
                f"{where} ({given}) has {len(inputs)} input(s) but the model takes "
                f"{input_count}: {fix}."
            )
        out.append(inputs)
    return out


# -- helpers -----------------------------------------------------------------------------
def _resolve(path: str, base: Path | None) -> Path:
    p = Path(path).expanduser()
    return base / p if base is not None and not p.is_absolute() else p


def _spec_from(data: Any, src: str | None) -> ModelSpec:

    if not isinstance(data, dict):
        raise ConfigError(
            f"{_where(src, 'model')} must be a mapping (architecture, class_count, "
            f"input_dimension, ...), got {type(data).__name__}."
        )
    try:
        spec = ModelSpec.from_dict(data).validate()
        get_architecture(spec.architecture)
    except (SpecError, TypeError) as err:
        raise ConfigError(f"{_where(src, 'model')}: {err}") from None
    return spec


def _params_from(data: Any, base: Path | None, src: str | None) -> TrainingParams:
    if data is None:
        return TrainingParams()
    try:
        if isinstance(data, (str, os.PathLike)):
            p = _resolve(os.fspath(data), base)
            if not p.is_file():
                raise ConfigError(f"{_where(src, 'params')}: no params file at {str(p)!r}.")
            if p.suffix.lower() == ".json":
                return TrainingParams.from_json(p.read_text()).validate()
            return TrainingParams.from_yaml(p.read_text()).validate()
        if not isinstance(data, dict):
            raise ConfigError(
                f"{_where(src, 'params')} must be a mapping of training parameters or a path."
            )
        return TrainingParams.from_dict(data).validate()
    except ConfigError:
        raise
    except (ParamsError, TypeError, ValueError) as err:
        raise ConfigError(f"{_where(src, 'params')}: {err}") from None


def _feedback_from(data: Any, src: str | None) -> FeedbackRegion | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(src, 'feedback')} must be a mapping.")
    known = [f.name for f in dataclasses.fields(FeedbackRegion)]
    check_keys(data, known, what="key(s)", where=_where(src, "feedback"), error=ConfigError)
    where = _where(src, "feedback")

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    training_set = data.get("training_set", 0)
    if not whole(training_set) or training_set < 0:
        raise ConfigError(
            f"{where}.training_set={training_set!r} must be an integer >= 0 (an index into "
            "training_sets)."
        )
    slice_index = data.get("slice_index")
    if slice_index is not None and (not whole(slice_index) or slice_index < 0):
        text = (
            " (it is quoted in the YAML: drop the quotes)" if isinstance(slice_index, str) else ""
        )
        raise ConfigError(
            f"{where}.slice_index={slice_index!r} must be an integer >= 0 (a slice of the "
            f"training set) or null (the middle labelled slice){text}."
        )
    box = data.get("box")
    if box is not None and (
        not isinstance(box, (list, tuple)) or len(box) != 4 or not all(whole(v) for v in box)
    ):
        raise ConfigError(f"{where}.box must be 4 integers [y0, y1, x0, x1], got {box!r}.")
    return FeedbackRegion(
        training_set=training_set,
        slice_index=slice_index,
        box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])) if box is not None else None,
    )


def _plain(value: Any) -> Any:
    """Tuples → lists and numpy scalars → Python, for safe_dump."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _clean(da: xr.DataArray) -> xr.DataArray:
    """A copy to write: no name, plain attrs, no encoding of the file it may come from."""
    da = da.copy()
    da.name = None
    da.attrs = {a: _plain(v) for a, v in da.attrs.items()}
    da.encoding = {}
    return da


def _write_training_set(ts: TrainingSet, path: Path) -> None:
    """One zarr dataset per training set: ``input_<i>``, ``output`` and ``mask``."""
    import shutil

    variables: dict[str, xr.DataArray] = {f"input_{i}": da for i, da in enumerate(ts.input_list)}
    variables["output"] = ts.output
    if ts.mask is not None:
        variables["mask"] = ts.mask
    dims = ts.input_list[0].dims
    clean = {}
    for k, da in variables.items():
        da = da.copy()
        da.name = None
        da.attrs = {a: _plain(v) for a, v in da.attrs.items()}
        clean[k] = da.rename({old: new for old, new in zip(da.dims, dims) if old != new})
    ds = xr.Dataset(clean)
    if path.exists():
        shutil.rmtree(path)
    ds.to_zarr(path, mode="w", consolidated=True)
