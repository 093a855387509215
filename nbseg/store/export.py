"""Exchange networks with the rest of the world: TorchScript and ONNX export, and wrapping a
foreign ``nn.Module`` (or a TorchScript file) into an nbseg :class:`Model`.

What is exported is the **network**: it maps a normalised input ``(B, C, H, W)`` (2D, 2.5D)
or ``(B, C, D, H, W)`` (3D) to class logits of the same spatial size (sizes that are
multiples of the size divisor stored in the metadata). The normalisation
``(x - low) / (high - low)``, the class names/colours and the spec travel as JSON metadata:
TorchScript extra file ``nbseg.json``, ONNX ``metadata_props`` key ``nbseg``. Every export is
checked by running the exported file on an input and comparing with the network.

Import:

* :func:`import_module` wraps any ``nn.Module`` factory (+ optional weights) as a Model that
  trains (fine-tunes), segments and saves like a built-in one; its architecture is registered
  under ``spec.architecture`` in this process, so a saved file loads again wherever the same
  ``import_module`` / :func:`register_external` call ran first.
* :func:`import_torchscript` loads a TorchScript file for inference **and fine-tuning** (its
  parameters take gradients; a *traced* module keeps the train/eval behaviour it was traced
  with, e.g. frozen BatchNorm statistics). Loading TorchScript runs TorchScript code from the
  file (not arbitrary Python, but only load files you trust).
* :func:`export_bioimageio` / :func:`import_bioimageio`: bioimage.io model-zoo packages
  (model spec 0.5; the format lives in :mod:`nbseg.store.bioimageio`).
* ONNX import is not supported: the maintained converter (``onnx2torch``) needs
  ``torchvision``, which is not an nbseg dependency.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data.trainingset import Normalisation
from ..errors import InputError, ModelFileError, SpecError
from ..model import Model
from ..models.registry import (
    ARCHITECTURES,
    BUILTIN_MODULES,
    ArchitectureInfo,
    input_shape,
    register,
    size_divisor,
)
from ..models.spec import ModelSpec
from ..paths import check_overwrite
from ..training.params import TrainingParams
from .bioimageio import plan_package, read_package, write_package
from .fileformat import atomic_write_bytes

if TYPE_CHECKING:
    from ..data.trainingset import Normalisation
    from ..model import Model
    from ..models.spec import ModelSpec
    from ..training.params import TrainingParams

META_KEY = "nbseg"


def example_input(
    model: Model, patch_size: int | Sequence[int] | None = None, batch_size: int = 1, seed: int = 0
) -> torch.Tensor:
    """A random network input for ``model`` (patch size: the training one, else 64 / 32 in
    3D), rounded up to the architecture's size divisor."""

    spec = model.spec
    if patch_size is None:
        if model.params is not None:
            patch_size = model.params.patch_for(spec)
        else:
            patch_size = 32 if spec.input_dimension == "3D" else 64
    shape = list(input_shape(spec, patch_size, batch_size))
    div = size_divisor(spec)
    shape[2:] = [-(-s // div) * div for s in shape[2:]]
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen)


def export_metadata(model: Model) -> dict[str, Any]:

    meta = model.metadata()
    meta.pop("history", None)
    try:
        meta["size_divisor"] = size_divisor(model.spec)
    except SpecError:
        meta["size_divisor"] = 1
    meta["input"] = (
        "normalised float32 (x - low) / (high - low) per input; (B, C, H, W) for 2D/2.5D, "
        "(B, C, D, H, W) for 3D; output: class logits"
    )
    return meta


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float) -> float:
    if got.shape != want.shape:
        raise ModelFileError(
            f"The {name} export gives an output of shape {got.shape}, the network {want.shape}."
        )
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not diff <= atol:
        raise ModelFileError(
            f"The {name} export differs from the network by {diff:.3g} (> {atol:g}); this "
            "architecture does not export faithfully."
        )
    return diff


def _network_output(model: Model, x: torch.Tensor) -> np.ndarray:
    net = model.network.to("cpu").eval()
    with torch.no_grad():
        return net(x).numpy()


def export_torchscript(
    model: Model,
    path: str | os.PathLike[str],
    example: torch.Tensor | None = None,
    check: bool = True,
    atol: float = 1e-4,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the network as TorchScript (traced on ``example``, default
    :func:`example_input`) with the metadata as extra file ``nbseg.json``; checked against
    the network on the example and on an input of another spatial size. An existing file at
    ``path`` is refused (:class:`InputError`, before any work) unless ``overwrite``."""
    path = _export_path(path, overwrite, "export_torchscript")
    _warn_network_only(model)
    x = example if example is not None else example_input(model)
    net = model.network.to("cpu").eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(net, x, check_trace=False)
        import io

        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"nbseg.json": json.dumps(export_metadata(model))})
    out = atomic_write_bytes(path, buf.getvalue())
    if check:
        loaded = load_torchscript(out)
        for probe in (x, _other_size(model, x)):
            with torch.no_grad():
                got = loaded(probe).numpy()
            _compare("TorchScript", got, _network_output(model, probe), atol)
    return out


def export_onnx(
    model: Model,
    path: str | os.PathLike[str],
    example: torch.Tensor | None = None,
    check: bool = True,
    atol: float = 1e-4,
    opset: int = 17,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the network as ONNX (dynamic batch and spatial sizes) with the metadata as
    ``metadata_props["nbseg"]``; checked with onnxruntime against the network. An existing
    file at ``path`` is refused (:class:`InputError`, before any work) unless ``overwrite``."""
    path = _export_path(path, overwrite, "export_onnx")
    _warn_network_only(model)
    try:
        import onnx
    except ImportError:
        raise ModelFileError(
            "ONNX export needs the 'onnx' and 'onnxruntime' packages: pip install 'nbseg[export]'."
        ) from None
    import io

    x = example if example is not None else example_input(model)
    net = model.network.to("cpu").eval()
    spatial = {i: f"s{i}" for i in range(2, x.ndim)}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to files too
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch", **spatial}, "logits": {0: "batch", **spatial}},
            opset_version=opset,
            dynamo=False,  # the TorchScript-based exporter: no onnxscript needed
        )
    proto = onnx.load_from_string(buf.getvalue())
    prop = proto.metadata_props.add()
    prop.key, prop.value = META_KEY, json.dumps(export_metadata(model))
    out = atomic_write_bytes(path, proto.SerializeToString())
    if check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        for probe in (x, _other_size(model, x)):
            got = sess.run(None, {"input": probe.numpy()})[0]
            _compare("ONNX", got, _network_output(model, probe), atol)
    return out


def _warn_network_only(model: Model) -> None:
    """Exports hold the network; a model that keeps a feature teacher predicts with both."""
    if getattr(model, "teacher", None) is not None:
        warnings.warn(
            f"{model.name!r} keeps a feature teacher (teacher_blend {model.teacher_blend:g}) "
            "that nbseg.segment blends into its predictions; the export holds the network "
            "alone, so its output can differ from nbseg's. Retrain with teacher_blend=0 for "
            "an export that matches.",
            UserWarning,
            stacklevel=3,
        )


def _export_path(path: Any, overwrite: Any, what: str) -> Path:
    """The output path, refused when it is not a path, is a folder, or exists unasked."""
    if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
        raise InputError(f"{what}: path must be a file path (str or pathlib.Path), got {path!r}.")
    if not isinstance(overwrite, bool):
        raise InputError(f"{what}: overwrite must be True or False, got {overwrite!r}.")
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        raise InputError(f"{what}: {str(p)!r} is a folder; give the output file's path.")
    return check_overwrite(p, overwrite)


def _other_size(model: Model, x: torch.Tensor) -> torch.Tensor:
    """A second probe: batch 2 and another spatial size (dynamic shapes must work)."""

    try:
        div = size_divisor(model.spec)
    except SpecError:
        div = 8
    shape = list(x.shape)
    shape[0] = 2
    shape[-1] = shape[-1] + div
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The nbseg metadata of an exported TorchScript (``.pt``) or ONNX (``.onnx``) file."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(p), load_external_data=False)
        for prop in proto.metadata_props:
            if prop.key == META_KEY:
                return json.loads(prop.value)
        raise ModelFileError(f"{str(p)!r} holds no nbseg metadata.")
    extra = {"nbseg.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    if not extra["nbseg.json"]:
        raise ModelFileError(f"{str(p)!r} holds no nbseg metadata.")
    return json.loads(extra["nbseg.json"])


def load_torchscript(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"No TorchScript file at {str(p)!r}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(p), map_location="cpu")
    except Exception as err:
        raise ModelFileError(
            f"{str(p)!r} is not a TorchScript file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})."
        ) from None


# -- import --------------------------------------------------------------------------------
def register_external(
    name: str,
    factory: Callable[[], nn.Module],
    dimensions: Sequence[str] = ("2D", "2.5D", "3D"),
    size_divisor: int = 1,
    description: str = "",
    defaults: dict[str, Any] | None = None,
) -> None:
    """Register a foreign network factory as architecture ``name`` (this process only), so
    that models of that architecture build, save and load like built-in ones."""

    current = ARCHITECTURES.get(name)
    if current is not None and current.builder.__module__.rsplit(".", 1)[-1] in BUILTIN_MODULES:
        raise SpecError(f"{name!r} is a built-in architecture; give the imported one another name.")
    div = int(size_divisor)
    register(
        ArchitectureInfo(
            name=name,
            title=name,
            description=description or f"External network {name!r} (imported).",
            dimensions=tuple(dimensions),
            defaults=dict(defaults or {}),
            builder=lambda spec, params: factory(),
            size_divisor=lambda spec, params: div,
        )
    )


def import_module(
    factory: Callable[[], nn.Module],
    spec: ModelSpec,
    state_dict: dict[str, torch.Tensor] | None = None,
    *,
    size_divisor: int = 1,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    normalisation: Normalisation | None = None,
    params: TrainingParams | None = None,
    check_patch: int | Sequence[int] | None = None,
) -> Model:
    """Wrap a foreign network as an nbseg :class:`Model` (fine-tune it with
    :func:`nbseg.train`, apply it with :func:`nbseg.segment`, save it).

    Parameters
    ----------
    factory
        ``factory() -> nn.Module`` building the network; it must map ``(B,
        spec.in_channels, ...)`` to logits ``(B, spec.class_count, ...)`` of the same spatial
        size. It is registered as architecture ``spec.architecture`` (see
        :func:`register_external`).
    spec
        The :class:`ModelSpec` (class count, input dimension, inputs; ``architecture`` = the
        name to register, not a built-in one).
    state_dict
        Weights to load (strictly); ``None`` keeps the factory's.
    size_divisor
        Spatial sizes the network needs to be multiples of (inputs are padded to it).
    normalisation
        The intensity normalisation the weights were trained with; ``None`` (the model counts
        as untrained) means the next :func:`nbseg.train` fits one.
    params
        The :class:`TrainingParams` it was trained with (their patch size is the default
        sliding window of :func:`nbseg.segment`).
    check_patch
        Patch size of the shape check (default 64, 32 in 3D).
    """

    spec.validate()
    try:
        register_external(
            spec.architecture,
            factory,
            (spec.input_dimension,),
            size_divisor,
            defaults=spec.parameters,
        )
    except TypeError as err:
        raise SpecError(f"spec.parameters: {err}") from None
    network = factory()
    if not isinstance(network, nn.Module):
        raise SpecError(f"The factory returned a {type(network).__name__}, not a torch nn.Module.")
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise SpecError(
                f"The weights do not fit the network ({str(err).splitlines()[0]})."
            ) from None
    _check_network(network, spec, input_shape, size_divisor, check_patch)
    return Model(spec, network, class_names, class_colors, normalisation, params)


def _check_network(
    network: nn.Module, spec: ModelSpec, input_shape: Any, div: int, patch: Any
) -> None:
    patch = patch or (32 if spec.input_dimension == "3D" else 64)
    shape = list(input_shape(spec, patch, 1))
    shape[2:] = [-(-s // div) * div for s in shape[2:]]
    was = network.training
    network.eval()
    try:
        with torch.no_grad():
            y = network(torch.zeros(shape))
    except Exception as err:
        raise SpecError(
            f"The network fails on an input of shape {tuple(shape)} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); check spec.input_count/input_dimension."
        ) from None
    finally:
        network.train(was)
    want = (1, spec.class_count, *shape[2:])
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise SpecError(
            f"The network maps {tuple(shape)} to {got}; nbseg needs logits of shape {want} "
            "(class_count channels, same spatial size)."
        )


def import_torchscript(
    path: str | os.PathLike[str],
    spec: ModelSpec | None = None,
    *,
    size_divisor: int | None = None,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[str] | None = None,
    normalisation: Normalisation | None = None,
) -> Model:
    """A TorchScript network as an nbseg :class:`Model`, for inference or fine-tuning.

    ``spec`` describes it (class count, input dimension, inputs, a new architecture name);
    for a file written by :func:`export_torchscript` it may be omitted: spec, classes,
    normalisation and size divisor then come from its ``nbseg.json`` (the architecture is
    renamed ``torchscript:<name>``). Only load TorchScript files you trust.
    """

    p = Path(path)
    load_torchscript(p)  # clear error for a missing / foreign file
    meta: dict[str, Any] = {}
    try:
        meta = read_export_metadata(p)
    except (ModelFileError, json.JSONDecodeError, RuntimeError):
        meta = {}
    if spec is None:
        if not meta:
            raise SpecError(
                f"{str(p)!r} holds no nbseg metadata; describe the network with spec=ModelSpec"
                "(architecture='my_net', class_count=..., input_dimension=...)."
            )
        spec = ModelSpec.from_dict(meta["spec"])
        spec.architecture = f"torchscript:{spec.architecture}"
        spec.parameters = {}  # baked into the TorchScript graph
        class_names = class_names or meta.get("class_names")
        class_colors = class_colors or meta.get("class_colors")
        if normalisation is None and meta.get("normalisation"):
            normalisation = Normalisation.from_dict(meta["normalisation"])
    params = TrainingParams.from_dict(meta["params"]) if meta.get("params") else None
    if size_divisor is None:
        size_divisor = int(meta.get("size_divisor", 1)) if meta else 1
    return import_module(
        lambda: load_torchscript(p),
        spec,
        size_divisor=size_divisor,
        class_names=class_names,
        class_colors=class_colors,
        normalisation=normalisation,
        params=params,
    )


# -- bioimage.io -----------------------------------------------------------------------------
def export_bioimageio(
    model: Model,
    path: str | os.PathLike[str],
    *,
    authors: Any = None,
    license: str = "MIT",
    cite: Any = None,
    sample: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io model package (``.zip``, model spec 0.5) that
    bioimage.io tools (``bioimageio.core``, deepImageJ, ilastik, ...) run as nbseg does.

    The package holds PyTorch state-dict (built-in architectures), TorchScript and ONNX
    weights, the normalisation as ``scale_linear`` preprocessing, softmax postprocessing
    (class probabilities, channels named after the classes), sizes from the sliding window
    with a halo, a test input and the probabilities :func:`nbseg.segment` gives for it, a
    cover image, a README and the nbseg metadata (:func:`import_bioimageio` rebuilds the
    model exactly); see :mod:`nbseg.store.bioimageio`.

    Parameters
    ----------
    authors
        A name, ``{"name": ..., "affiliation": ..., "orcid": ...}`` or a list of them
        (default ``[{"name": "nbseg user"}]``).
    license
        SPDX identifier of the weights' license.
    cite
        ``[{"text": ..., "doi": ...}]`` (or ``"url"``) entries.
    sample
        An image (a list of images for a multi-input model) whose centre window becomes the
        test input and the cover; default a smooth synthetic image in the model's range.
    overwrite
        Replace an existing file at ``path`` (refused otherwise, before any work).

    Needs ``pip install 'nbseg[bioimageio]'``; nothing is downloaded.
    """
    path = _export_path(path, overwrite, "export_bioimageio")
    _warn_network_only(model)
    if path.suffix.lower() != ".zip":
        raise InputError(
            f"export_bioimageio: a bioimage.io package is a .zip file; give a path such as "
            f"{str(path.with_suffix('.zip'))!r}, got {str(path)!r}."
        )
    plan = plan_package(model, authors=authors, license=license, cite=cite, sample=sample)
    example = torch.from_numpy(plan.normalised)
    with tempfile.TemporaryDirectory(prefix="nbseg-bioimageio-") as tmp:
        folder = Path(tmp)
        weights: dict[str, Path] = {}
        if plan.state_dict_ok:
            weights["pytorch_state_dict"] = folder / "weights_state_dict.pt"
            state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
            torch.save(state, weights["pytorch_state_dict"])
        with warnings.catch_warnings():  # warned once above
            warnings.filterwarnings("ignore", message=".*keeps a feature teacher")
            weights["torchscript"] = export_torchscript(
                model, folder / "weights_torchscript.pt", example=example
            )
            weights["onnx"] = export_onnx(model, folder / "weights.onnx", example=example)
        return write_package(plan, path, weights, folder, overwrite)


def import_bioimageio(path: str | os.PathLike[str]) -> Model:
    """A bioimage.io model package (``.zip``, or its ``rdf.yaml``) as an nbseg :class:`Model`
    for segmentation and fine-tuning (:func:`nbseg.train`).

    A package :func:`export_bioimageio` wrote comes back exactly (spec, weights, classes,
    colours, normalisation, params, history). Other packages need TorchScript weights and one
    input tensor of batch / channel / space axes: the network is wrapped to nbseg's layout
    (architecture ``bioimageio:<name>``, registered in this process), classes come from the
    output channels (one channel: background and foreground), fixed linear preprocessing
    (``scale_linear``, ``fixed_zero_mean_unit_variance``) becomes the normalisation; a
    data-dependent one (``scale_range``, ``zero_mean_unit_variance``) is dropped with a
    warning and the model counts as untrained until :func:`nbseg.train` fits one.
    TorchScript runs code from the package: import packages you trust.
    """
    source = read_package(path)
    if source.model is not None:
        return source.model
    assert source.spec is not None
    model = import_module(
        source.network_factory,
        source.spec,
        size_divisor=source.size_divisor,
        class_names=source.class_names,
        class_colors=source.class_colors,
        normalisation=source.normalisation,
        params=source.params,
        check_patch=source.window or None,
    )
    model.history = list(source.history)
    for note in source.notes:
        warnings.warn(f"import_bioimageio: {str(source.path)!r}: {note}.", stacklevel=2)
    return model
