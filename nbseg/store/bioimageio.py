"""bioimage.io model packages (model spec 0.5), built and read with ``bioimageio.spec``.

A package written by :func:`nbseg.store.export.export_bioimageio` is one ``.zip``:

* ``rdf.yaml`` — the description: one input tensor ``input`` (axes ``batch, channel, y, x``
  for 2D and 2.5D models, ``batch, channel, z, y, x`` for 3D; one channel per input, per
  input x neighbouring slice in 2.5D), spatial sizes ``window + n * size_divisor`` (the
  model's sliding window, its training patch, is the smallest); one output tensor
  ``probabilities`` (one channel per class, named after the classes; same spatial size, with
  a halo of an eighth of the window on every side: nbseg's default tile overlap of 0.25).
  Preprocessing ``scale_linear`` reproduces nbseg's normalisation ``(x - low) / (high -
  low)`` per channel; postprocessing ``softmax`` over the channels gives class
  probabilities (the networks output logits).
* weights: PyTorch state dict (built-in architectures: the network is
  ``nbseg.store.bioimageio.build_nbseg_network(**spec)``), TorchScript and ONNX (checked
  against the network when written).
* ``test_input.npy`` / ``test_output.npy`` — a raw window (a crop of ``sample`` or a
  smooth synthetic image in the model's intensity range) and the probabilities
  :func:`nbseg.segment` computes for it; ``cover.png`` (the window and its segmentation, the
  class legend) and ``README.md`` (description, classes, inputs, training summary,
  validation).
* ``config.nbseg`` — the nbseg model metadata (spec, classes, colours, normalisation,
  params, history), so :func:`read_package` (``import_bioimageio``) rebuilds the model
  exactly.

Reading (:func:`read_package`) also accepts foreign packages (format 0.4 or 0.5) with
TorchScript weights and one input tensor of batch / channel / space axes: the network is
wrapped to nbseg's layout, fixed linear preprocessing becomes the normalisation, a
one-channel output becomes two classes. Nothing is downloaded: only the package's own files
are read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .._files import atomic_write_bytes, now_iso
from .._png import encode_png
from ..data.trainingset import Normalisation, as_input_list
from ..errors import InputError, ModelFileError, NbsegError, SpecError
from ..inference.sliding import segment
from ..inference.tiling import default_window, round_up
from ..model import Model
from ..models.registry import (
    ARCHITECTURES,
    BUILTIN_MODULES,
    build_network,
    count_parameters,
    size_divisor,
)
from ..models.spec import ModelSpec
from ..render import legend_strip, render_overlay, to_uint8, upscale_nearest
from ..training.params import TrainingParams
from .fileformat import check_meta

__all__ = [
    "FORMAT",
    "INSTALL_HINT",
    "PackageNetwork",
    "PackagePlan",
    "PackageSource",
    "build_nbseg_network",
    "plan_package",
    "read_package",
    "write_package",
]

FORMAT = "nbseg-bioimageio"
FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'nbseg[bioimageio]'"
INPUT_ID = "input"
OUTPUT_ID = "probabilities"
WEIGHT_FILES = {
    "pytorch_state_dict": "weights_state_dict.pt",
    "torchscript": "weights_torchscript.pt",
    "onnx": "weights.onnx",
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]+")


def _v05(what: str) -> Any:
    """``bioimageio.spec.model.v0_5``, or a clear error naming the extra to install."""
    try:
        from bioimageio.spec.model import v0_5
    except ImportError as err:
        raise ModelFileError(
            f"{what} needs the 'bioimageio.spec' package ({err.name or err}): {INSTALL_HINT}."
        ) from None
    return v0_5


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No Python warnings from bioimageio meanwhile (its loguru logs are off by default)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_nbseg_network(**spec: Any) -> nn.Module:
    """The network of a :class:`ModelSpec` given as keywords: the architecture callable of the
    packages' ``pytorch_state_dict`` weights (``from nbseg.store.bioimageio import
    build_nbseg_network``)."""
    return build_network(ModelSpec.from_dict(spec))


def _builtin(architecture: str) -> bool:
    info = ARCHITECTURES.get(architecture)
    return info is not None and info.builder.__module__.rsplit(".", 1)[-1] in BUILTIN_MODULES


# -- export ----------------------------------------------------------------------------------
@dataclasses.dataclass
class PackagePlan:
    """Everything of a package but the weight files, checked before any file is written."""

    model: Model
    window: tuple[int, ...]  # spatial, (z,) y, x
    halo: tuple[int, ...]
    divisor: int
    raw: np.ndarray  # test input (1, C, *window), raw intensities, float32
    normalised: np.ndarray  # the same, normalised: the network input
    probabilities: np.ndarray  # test output (1, K, *window)
    authors: list[dict[str, Any]]
    license: str
    cite: list[dict[str, Any]]
    name: str
    description: str
    state_dict_ok: bool  # a built-in architecture: bioimage.io tools rebuild it from nbseg


def _window(model: Model) -> tuple[tuple[int, ...], int]:
    try:
        div = size_divisor(model.spec)
    except SpecError:
        div = 1
    wz, wy, wx = default_window(model, (1, 1, 1))
    if model.spec.input_dimension == "3D":
        return (round_up(wz, div), wy, wx), div
    return (wy, wx), div


def _authors(authors: Any) -> list[dict[str, Any]]:
    if authors is None:
        return [{"name": "nbseg user"}]
    items = [authors] if isinstance(authors, (str, dict)) else authors
    if not isinstance(items, (list, tuple)) or not items:
        raise InputError(
            f"export_bioimageio: authors must be a name, a dict {{'name': ...}} or a list of "
            f"them, got {authors!r}."
        )
    out = []
    for a in items:
        entry = {"name": a} if isinstance(a, str) else a
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
            raise InputError(
                f"export_bioimageio: author {a!r} needs a name (a string, or a dict with "
                "'name' and optionally 'affiliation', 'email', 'orcid', 'github_user')."
            )
        if "/" in str(entry["name"]):
            raise InputError(f"export_bioimageio: author name {entry['name']!r} contains '/'.")
        out.append(dict(entry))
    return out


def _cite(cite: Any) -> list[dict[str, Any]]:
    if cite is None:
        return []
    items = [cite] if isinstance(cite, dict) else cite
    if not isinstance(items, (list, tuple)):
        raise InputError(
            f"export_bioimageio: cite must be a list of {{'text': ..., 'doi': ...}} or "
            f"{{'text': ..., 'url': ...}}, got {cite!r}."
        )
    out = []
    for c in items:
        if not isinstance(c, dict) or not c.get("text") or not (c.get("doi") or c.get("url")):
            raise InputError(
                f"export_bioimageio: citation {c!r} needs a 'text' and a 'doi' or 'url'."
            )
        out.append(dict(c))
    return out


def _package_name(model: Model) -> str:
    name = " ".join(_NAME_CHARS.sub(" ", model.spec.name).split())
    if len(name) < 5:
        name = f"{name} nbseg model".strip()
    return name[:128]


def _description(model: Model) -> str:
    spec = model.spec
    text = spec.description.strip() or (
        f"nbseg {spec.architecture} {spec.input_dimension} semantic segmentation model, "
        f"{spec.class_count} classes: {', '.join(model.class_names)}."
    )
    return text if len(text) <= 512 else text[:509] + "..."


def _sample_volumes(model: Model, sample: Any, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """One float32 ``(Z, Y, X)`` raw volume per input: a centred crop of ``sample`` (edge
    padded to ``shape``) or a smooth synthetic image between the normalisation's low and
    high values."""
    norm = model.normalisation
    assert norm is not None
    k = model.spec.input_count
    if sample is None:
        from scipy.ndimage import gaussian_filter

        rng = np.random.default_rng(0)
        out = []
        for i in range(k):
            noise = rng.standard_normal(shape)
            sigma = [0 if s == 1 else max(1.0, s / 12) for s in shape]
            field = gaussian_filter(noise, sigma, mode="wrap")
            field = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
            out.append((norm.low[i] + field * (norm.high[i] - norm.low[i])).astype(np.float32))
        return out
    items = as_input_list(sample, "export_bioimageio: sample")
    if len(items) != k:
        raise InputError(
            f"export_bioimageio: sample has {len(items)} image(s); model {model.name!r} takes "
            f"{k} input(s) ({model.spec.input_names})."
        )
    out = []
    for i, im in enumerate(items):
        if im.ndim == 2:
            im = im.expand_dims("z")
        region = {}
        for dim, w in zip(("z", "y", "x"), shape):
            n = im.sizes[dim]
            start = max(0, (n - w) // 2)
            region[dim] = slice(start, start + w)
        crop = np.asarray(im.isel(region).values, np.float32)  # only the window is read
        if not np.isfinite(crop).all():
            raise InputError(f"export_bioimageio: sample {i} holds NaN or infinite values.")
        pads = [(0, w - n) for n, w in zip(crop.shape, shape)]
        out.append(np.pad(crop, pads, mode="edge") if any(p for _, p in pads) else crop)
    return out


def _test_tensors(
    model: Model, window: tuple[int, ...], sample: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw test input, its normalisation, and the probabilities :func:`segment` gives."""
    spec = model.spec
    norm = model.normalisation
    assert norm is not None
    offsets = spec.slice_offsets
    if spec.input_dimension == "3D":
        shape = (window[0], window[1], window[2])
    elif spec.input_dimension == "2.5D":
        shape = (max(offsets) - min(offsets) + 1, window[0], window[1])
    else:
        shape = (1, window[0], window[1])
    vols = _sample_volumes(model, sample, shape)
    images = [xr.DataArray(v, dims=("z", "y", "x")) for v in vols]
    probs = segment(
        model,
        images,
        window=tuple(window) if spec.input_dimension == "3D" else (1, *window),
        probabilities=True,
        device="cpu",
        precision="32",
        tta=False,
    )
    p = np.asarray(probs.values, np.float32)  # (K, Z, Y, X)
    if spec.input_dimension == "3D":
        raw = np.stack(vols)[None]
        out = p[None]
    elif spec.input_dimension == "2.5D":
        z = -min(offsets)
        idx = [z + o for o in offsets]
        raw = np.stack([v[idx] for v in vols]).reshape(1, -1, *window)
        out = p[None, :, z]
    else:
        raw = np.stack([v[0] for v in vols])[None]
        out = p[None, :, 0]
    reps = len(offsets) if spec.input_dimension == "2.5D" else 1
    low = np.repeat(np.asarray(norm.low, np.float32), reps)
    high = np.repeat(np.asarray(norm.high, np.float32), reps)
    shape_c = (1, -1) + (1,) * (raw.ndim - 2)
    normalised = (raw - low.reshape(shape_c)) * (1.0 / (high - low)).reshape(shape_c)
    return (
        np.ascontiguousarray(raw, np.float32),
        np.ascontiguousarray(normalised, np.float32),
        np.ascontiguousarray(out, np.float32),
    )


def plan_package(
    model: Model,
    *,
    authors: Any = None,
    license: Any = "MIT",
    cite: Any = None,
    sample: Any = None,
) -> PackagePlan:
    """Check the arguments and compute the test tensors (nothing is written)."""
    v = _v05("export_bioimageio")
    if not isinstance(model, Model):
        raise InputError(f"export_bioimageio: model must be an nbseg.Model, got {type(model)}.")
    if not model.trained:
        raise InputError(
            f"export_bioimageio: model {model.name!r} is untrained (no intensity "
            "normalisation); train it with nbseg.train first."
        )
    if not isinstance(license, str) or not license.strip():
        raise InputError(
            f"export_bioimageio: license must be an SPDX identifier such as 'MIT' or "
            f"'CC-BY-4.0', got {license!r}."
        )
    try:
        with _quiet():
            v.LicenseId(license)
    except Exception:
        raise InputError(
            f"export_bioimageio: license {license!r} is not an SPDX license identifier "
            "(e.g. 'MIT', 'BSD-3-Clause', 'CC-BY-4.0', 'Apache-2.0')."
        ) from None
    window, div = _window(model)
    halo = tuple(max(1, w // 8) for w in window)
    raw, normalised, probs = _test_tensors(model, window, sample)
    return PackagePlan(
        model=model,
        window=window,
        halo=halo,
        divisor=div,
        raw=raw,
        normalised=normalised,
        probabilities=probs,
        authors=_authors(authors),
        license=license,
        cite=_cite(cite),
        name=_package_name(model),
        description=_description(model),
        state_dict_ok=_builtin(model.spec.architecture),
    )


def _cover(plan: PackagePlan) -> bytes:
    """PNG: the test window (grey) beside its segmentation, the class legend below; 2:1."""
    m = plan.model
    raw, probs = plan.raw[0], plan.probabilities[0]
    if m.spec.input_dimension == "3D":
        zc = raw.shape[1] // 2
        grey, labels = raw[0, zc], probs[:, zc].argmax(0)
    else:
        c = m.spec.reference_index if m.spec.input_dimension == "2.5D" else 0
        grey, labels = raw[int(c or 0)], probs.argmax(0)
    g = to_uint8(grey)
    panel = np.concatenate(
        [np.repeat(g[..., None], 3, 2), render_overlay(g, labels, m.class_colors, opacity=0.5)],
        axis=1,
    )
    panel = upscale_nearest(panel, 512)
    legend = legend_strip(panel.shape[1], m.class_names, m.class_colors, title=plan.name)
    img = np.concatenate([panel, legend], axis=0)
    h, w = img.shape[:2]
    if w < 2 * h:  # pad to 2:1 (width:height), as bioimage.io asks
        pad = 2 * h - w
        img = np.pad(img, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)), constant_values=255)
    elif w > 2 * h:
        pad = -(-w // 2) - h
        img = np.pad(img, ((0, pad), (0, 0), (0, 0)), constant_values=255)
    return encode_png(np.ascontiguousarray(img, np.uint8))


def _channel_names(spec: ModelSpec) -> list[str]:
    names = list(spec.input_names or [f"input_{i}" for i in range(spec.input_count)])
    if spec.input_dimension != "2.5D":
        return names
    return [f"{n} z{o:+d}" for n in names for o in spec.slice_offsets]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _readme(plan: PackagePlan, weights: Sequence[str]) -> str:
    m = plan.model
    spec = m.spec
    norm = m.normalisation
    assert norm is not None
    axes = "batch, channel, z, y, x" if spec.input_dimension == "3D" else "batch, channel, y, x"
    win = " x ".join(str(w) for w in plan.window)
    lines = [
        f"# {plan.name}",
        "",
        spec.description.strip() or _description(m),
        "",
        f"Exported by nbseg {__import__('nbseg').__version__} on {now_iso()}.",
        "",
        "## Classes",
        "",
        "| channel | class | colour |",
        "|---|---|---|",
        *(f"| {i} | {n} | `{c}` |" for i, (n, c) in enumerate(zip(m.class_names, m.class_colors))),
        "",
        "## Network",
        "",
        f"- architecture: `{spec.architecture}` ({spec.input_dimension}), "
        f"{count_parameters(m.network):,} parameters, parameters {spec.parameters or '{}'}",
        f"- input `{INPUT_ID}`: axes {axes}; channels {_channel_names(spec)}",
        f"- spatial size: {win} (the sliding window nbseg uses, the training patch) plus any "
        f"multiple of {plan.divisor}",
        f"- output `{OUTPUT_ID}`: class probabilities (softmax over the channels), same "
        f"spatial size; crop a halo of {', '.join(map(str, plan.halo))} pixels per side when "
        "tiling",
        f"- weights: {', '.join(weights)}",
        "",
        "## Preprocessing",
        "",
        "Per input, `(x - low) / (high - low)` (`scale_linear`), with the intensities fitted "
        f"at training ({norm.method}, percentiles {list(norm.percentiles)}):",
        "",
        "| input | low | high |",
        "|---|---|---|",
        *(
            f"| {n} | {_fmt(lo)} | {_fmt(hi)} |"
            for n, lo, hi in zip(spec.input_names or [], norm.low, norm.high)
        ),
        "",
    ]
    if spec.input_dimension == "2.5D":
        lines += [
            f"2.5D: the channels are {spec.slices} neighbouring slices (offsets "
            f"{spec.slice_offsets}) of each input; the output is the slice at offset 0.",
            "",
        ]
    lines += ["## Training", ""]
    p = m.params
    if p is not None:
        lines += [
            f"- {m.epochs_trained} epochs; loss `{p.loss}`, optimizer `{p.optimizer}`, "
            f"learning rate {p.learning_rate:g}, batch size {p.batch_size}, patch size "
            f"{p.patch_for(spec)}",
        ]
    if m.history:
        last = m.history[-1]
        metrics = ", ".join(
            f"{k} {_fmt(val)}"
            for k, val in last.items()
            if k not in ("epoch", "run") and isinstance(val, (int, float))
        )
        lines.append(f"- last epoch ({last.get('epoch')}): {metrics or 'no metrics'}")
    lines += [
        f"- created {m.created}, updated {m.updated}",
        "",
        "## Validation",
        "",
        "The package holds a test input (`test_input.npy`, raw intensities) and the class "
        "probabilities nbseg computes for it (`test_output.npy`); `bioimageio.core`'s "
        "`test_model` reproduces them with every weight format. Check the segmentation "
        "on your own labelled data (e.g. `nbseg.evaluate`) before relying on it.",
        "",
        "## Use in nbseg",
        "",
        "```python",
        "from nbseg.store.export import import_bioimageio",
        "model = import_bioimageio('package.zip')   # the nbseg model, exactly",
        "labels = model.segment(image)",
        "```",
        "",
    ]
    return "\n".join(lines)


def _axes(v: Any, plan: PackagePlan, output: bool) -> list[Any]:
    spec = plan.model.spec
    ids = ("z", "y", "x") if spec.input_dimension == "3D" else ("y", "x")
    names = plan.model.class_names if output else _channel_names(spec)
    axes: list[Any] = [v.BatchAxis(), v.ChannelAxis(channel_names=list(names))]
    for a, w, h in zip(ids, plan.window, plan.halo):
        if output:
            ref = v.SizeReference(tensor_id=v.TensorId(INPUT_ID), axis_id=v.AxisId(a))
            axes.append(v.SpaceOutputAxisWithHalo(id=v.AxisId(a), halo=h, size=ref))
        else:
            size = v.ParameterizedSize(min=w, step=plan.divisor)
            axes.append(v.SpaceInputAxis(id=v.AxisId(a), size=size))
    return axes


def _preprocessing(v: Any, model: Model) -> list[Any]:
    norm = model.normalisation
    assert norm is not None
    reps = len(model.spec.slice_offsets) if model.spec.input_dimension == "2.5D" else 1
    gain = [1.0 / (hi - lo) for lo, hi in zip(norm.low, norm.high) for _ in range(reps)]
    offset = [-lo / (hi - lo) for lo, hi in zip(norm.low, norm.high) for _ in range(reps)]
    if len(gain) == 1:
        kwargs = v.ScaleLinearKwargs(gain=gain[0], offset=offset[0])
    else:
        kwargs = v.ScaleLinearAlongAxisKwargs(axis=v.AxisId("channel"), gain=gain, offset=offset)
    return [v.ScaleLinearDescr(kwargs=kwargs)]


def _config(plan: PackagePlan) -> dict[str, Any]:
    m = plan.model
    p = m.params
    training: dict[str, Any] = {"training_epochs": float(m.epochs_trained)}
    if p is not None:
        training.update(
            training_batch_size=float(p.batch_size),
            initial_learning_rate=float(p.learning_rate),
            loss_function=p.loss,
            optimizer=p.optimizer,
        )
    return {
        "bioimageio": {
            "architecture_type": f"{m.spec.architecture} {m.spec.input_dimension}"[:32],
            "task": "semantic segmentation",
            "model_parameter_count": int(count_parameters(m.network)),
            "training": training,
        },
        "nbseg": {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": m.metadata(),
            "window": list(plan.window),
            "halo": list(plan.halo),
            "size_divisor": plan.divisor,
            "class_names": m.class_names,
            "class_colors": m.class_colors,
        },
    }


def write_package(
    plan: PackagePlan, path: Path, weights: dict[str, Path], folder: Path, overwrite: bool
) -> Path:
    """Write the package of ``plan`` with the weight files ``weights`` (format → file, in
    ``folder``, the temp folder that receives the other files) atomically to ``path``."""
    v = _v05("export_bioimageio")
    from bioimageio.spec import save_bioimageio_package

    m = plan.model
    np.save(folder / "test_input.npy", plan.raw)
    np.save(folder / "test_output.npy", plan.probabilities)
    (folder / "cover.png").write_bytes(_cover(plan))
    (folder / "README.md").write_text(_readme(plan, list(weights)), encoding="utf-8")
    torch_version = v.Version(torch.__version__.split("+")[0])
    entries: dict[str, Any] = {}
    root = next(iter(weights))
    for fmt, file in weights.items():
        parent = None if fmt == root else root
        if fmt == "pytorch_state_dict":
            arch = v.ArchitectureFromLibraryDescr(
                import_from=__name__,
                callable=v.Identifier("build_nbseg_network"),
                kwargs=m.spec.to_dict(),
            )
            entries[fmt] = v.PytorchStateDictWeightsDescr(
                source=file, architecture=arch, pytorch_version=torch_version
            )
        elif fmt == "torchscript":
            entries[fmt] = v.TorchscriptWeightsDescr(
                source=file, pytorch_version=torch_version, parent=parent
            )
        elif fmt == "onnx":
            entries[fmt] = v.OnnxWeightsDescr(source=file, opset_version=17, parent=parent)
    dims = m.spec.input_dimension.lower()
    try:
        with _quiet():
            inp = v.InputTensorDescr(
                id=v.TensorId(INPUT_ID),
                description=f"raw intensities of {m.spec.input_count} input(s)"[:128],
                axes=_axes(v, plan, output=False),
                test_tensor=v.FileDescr(source=folder / "test_input.npy"),
                data=v.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=_preprocessing(v, m),
            )
            out = v.OutputTensorDescr(
                id=v.TensorId(OUTPUT_ID),
                description="class probabilities, one channel per class",
                axes=_axes(v, plan, output=True),
                test_tensor=v.FileDescr(source=folder / "test_output.npy"),
                data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                postprocessing=[v.SoftmaxDescr(kwargs=v.SoftmaxKwargs(axis=v.AxisId("channel")))],
            )
            descr = v.ModelDescr(
                name=plan.name,
                description=plan.description,
                authors=[v.Author(**a) for a in plan.authors],
                cite=[v.CiteEntry(**c) for c in plan.cite],
                license=v.LicenseId(plan.license),
                documentation=v.FileDescr(source=folder / "README.md"),
                covers=[v.FileDescr(source=folder / "cover.png")],
                inputs=[inp],
                outputs=[out],
                weights=v.WeightsDescr(**entries),
                tags=["nbseg", "semantic-segmentation", dims, "pytorch", m.spec.architecture],
                config=_config(plan),
            )
            zipped = save_bioimageio_package(descr, output_path=folder / "package.zip")
    except NbsegError:
        raise
    except Exception as err:  # pydantic's ValidationError: the fields and what is wrong
        raise InputError(
            f"export_bioimageio: the bioimage.io description of model {m.name!r} is invalid "
            f"({_short(err)})."
        ) from None
    try:
        return atomic_write_bytes(path, Path(zipped).read_bytes())
    except OSError as err:
        raise ModelFileError(
            f"Could not write the bioimage.io package {str(path)!r} ({err.strerror or err})."
        ) from None


def _short(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return "; ".join(lines[:6])[:600]


# -- import ----------------------------------------------------------------------------------
class PackageNetwork(nn.Module):
    """A package's network in nbseg's layout: ``(B, C, *spatial)`` in, ``(B, K, *spatial)``
    class logits out, whatever the package's axis order; a missing batch or channel axis is
    added or removed, and a one-channel output (a foreground probability, or its logit when
    the package applies a sigmoid) becomes two-class logits."""

    def __init__(
        self,
        network: nn.Module,
        in_axes: Sequence[str],
        out_axes: Sequence[str],
        spatial: Sequence[str],
        binary: str | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.in_axes = list(in_axes)
        self.out_axes = list(out_axes)
        self.spatial = list(spatial)
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "b" not in self.in_axes:
            return torch.cat([self._one(x[i : i + 1]) for i in range(x.shape[0])])
        return self._one(x)

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        dims = ["b", "c", *self.spatial]
        for a in ("c", "b"):  # drop the axes the package does not have (size 1)
            if a not in self.in_axes:
                x = x.select(dims.index(a), 0)
                dims.remove(a)
        y = self.network(x.permute([dims.index(a) for a in self.in_axes]))
        odims = list(self.out_axes)
        for a in ("b", "c"):
            if a not in odims:
                y = y.unsqueeze(-1)
                odims.append(a)
        y = y.permute([odims.index(a) for a in ("b", "c", *self.spatial)])
        if self.binary == "logit":
            y = torch.cat([torch.zeros_like(y), y], dim=1)
        elif self.binary == "probability":
            p = y.clamp(1e-6, 1 - 1e-6)
            y = torch.cat([torch.log1p(-p), torch.log(p)], dim=1)
        return y


@dataclasses.dataclass
class PackageSource:
    """What :func:`read_package` found: an exact nbseg ``model`` (state dict + metadata), or
    the parts to wrap a TorchScript network (``network_factory``) as an external model."""

    path: Path
    model: Model | None = None
    spec: ModelSpec | None = None
    network_factory: Any = None
    size_divisor: int = 1
    window: tuple[int, ...] = ()
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    normalisation: Normalisation | None = None
    params: TrainingParams | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def _bad(path: Path, problem: str) -> InputError:
    return InputError(f"import_bioimageio: {str(path)!r} {problem}.")


def _load(path: Path, stack: contextlib.ExitStack) -> Any:
    """The description at ``path``; a zip stays open (in ``stack``) to read its files."""
    if not path.exists():
        raise _bad(path, "does not exist")
    source: Any = path
    if path.is_file() and path.suffix.lower() not in (".yaml", ".yml"):
        if not zipfile.is_zipfile(path):
            raise _bad(path, "is not a bioimage.io package (not a .zip file)")
        try:
            source = stack.enter_context(zipfile.ZipFile(path))
        except (OSError, zipfile.BadZipFile) as err:
            raise _bad(path, f"is not a readable .zip file ({err})") from None
        names = [n for n in source.namelist() if "/" not in n.strip("/")]
        if not any(
            n in ("rdf.yaml", "bioimageio.yaml") or n.endswith(".bioimageio.yaml") for n in names
        ):
            raise _bad(path, "is a .zip file but not a bioimage.io package (no rdf.yaml)")
    _v05("import_bioimageio")
    from bioimageio.spec import load_description

    try:
        with _quiet():
            descr = load_description(source, format_version="latest", perform_io_checks=False)
    except Exception as err:
        raise _bad(
            path, f"could not be read as a bioimage.io description ({_short(err)})"
        ) from None
    kind = getattr(descr, "type", None)
    summary = getattr(descr, "validation_summary", None)
    if type(descr).__name__ == "InvalidDescr":
        errors = (
            [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors] if summary else []
        )
        raise _bad(path, f"is an invalid bioimage.io description ({'; '.join(errors[:4])[:500]})")
    if kind != "model":
        raise _bad(path, f"describes a bioimage.io {kind!r}, not a model")
    if type(descr).__module__.rsplit(".", 1)[-1] != "v0_5":
        raise _bad(path, "is a model description nbseg cannot update to format 0.5")
    return descr


def _read_bytes(path: Path, file_descr: Any, what: str) -> bytes:
    from bioimageio.spec.utils import get_reader

    try:
        with _quiet():
            return bytes(get_reader(file_descr).read())
    except Exception as err:
        raise _bad(path, f"has no readable {what} file ({_short(err)})") from None


def _nbseg_config(descr: Any) -> dict[str, Any] | None:
    config = descr.config
    extra = getattr(config, "model_extra", None) or {}
    cfg = extra.get("nbseg")
    if isinstance(cfg, dict) and cfg.get("format") == FORMAT and isinstance(cfg.get("model"), dict):
        return cfg
    return None


def read_package(path: str | os.PathLike[str]) -> PackageSource:
    """Read a bioimage.io model package (a ``.zip``, or an ``rdf.yaml`` / its folder): for
    one nbseg wrote with state-dict weights of a built-in architecture, the exact model;
    otherwise the parts to wrap its TorchScript weights. Raises :class:`InputError` naming
    the path and what is wrong."""
    if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
        raise InputError(f"import_bioimageio: path must be a file path, got {path!r}.")
    p = Path(os.fspath(path)).expanduser()
    with contextlib.ExitStack() as stack:
        return _read(p, _load(p, stack))


def _read(p: Path, descr: Any) -> PackageSource:
    cfg = _nbseg_config(descr)
    weights = descr.weights
    if cfg is not None:
        meta = cfg["model"]
        arch = str((meta.get("spec") or {}).get("architecture", ""))
        if weights.pytorch_state_dict is not None and _builtin(arch):
            data = _read_bytes(p, weights.pytorch_state_dict, "pytorch_state_dict weights")
            try:
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as err:
                raise _bad(p, f"has unreadable state-dict weights ({_short(err)})") from None
            try:
                return PackageSource(p, model=Model.from_parts(state, meta, repr(str(p))))
            except NbsegError as err:
                raise InputError(f"import_bioimageio: {err}") from None
    if weights.torchscript is None:
        present = [f for f in WEIGHT_FILES if getattr(weights, f, None) is not None] + [
            f
            for f in ("keras_hdf5", "tensorflow_js", "tensorflow_saved_model_bundle")
            if getattr(weights, f, None) is not None
        ]
        raise _bad(
            p,
            f"has weights {present} but nbseg imports TorchScript weights, or PyTorch "
            "state-dict weights of nbseg's own architectures (packages nbseg exported)",
        )
    data = _read_bytes(p, weights.torchscript, "TorchScript weights")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as err:
        raise _bad(p, f"has TorchScript weights that do not load ({_short(err)})") from None

    def load() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(io.BytesIO(data), map_location="cpu")

    if cfg is not None:
        return _from_config(p, descr, cfg, load)
    return _foreign(p, descr, load)


def _from_config(path: Path, descr: Any, cfg: dict[str, Any], load: Any) -> PackageSource:
    """An nbseg package whose architecture this process does not know: its TorchScript."""
    try:
        meta = check_meta(cfg["model"], repr(str(path)))
        spec = ModelSpec.from_dict(meta["spec"])
    except NbsegError as err:
        raise InputError(f"import_bioimageio: {err}") from None
    spec.architecture = f"torchscript:{spec.architecture}"
    spec.parameters = {}
    norm = meta.get("normalisation")
    params = meta.get("params")
    return PackageSource(
        path,
        spec=spec,
        network_factory=load,
        size_divisor=int(cfg.get("size_divisor", 1) or 1),
        window=tuple(int(w) for w in cfg.get("window") or ()),
        class_names=meta.get("class_names"),
        class_colors=meta.get("class_colors"),
        normalisation=Normalisation.from_dict(norm) if norm else None,
        params=TrainingParams.from_dict(params) if params else None,
        history=list(meta.get("history") or []),
    )


def _role(axis: Any) -> str:
    kind = getattr(axis, "type", None)
    return {"batch": "b", "channel": "c"}.get(str(kind), str(axis.id))


def _foreign(path: Path, descr: Any, load: Any) -> PackageSource:
    """A package nbseg did not write: spec, window, normalisation from the description."""
    if len(descr.inputs) != 1 or len(descr.outputs) < 1:
        raise _bad(
            path,
            f"has {len(descr.inputs)} input and {len(descr.outputs)} output tensors; nbseg "
            "imports models with one input tensor (its channels are the inputs)",
        )
    inp, out = descr.inputs[0], descr.outputs[0]
    notes: list[str] = []
    if len(descr.outputs) > 1:
        notes.append(f"only the first output ({out.id}) is used")
    in_axes, out_axes = list(inp.axes), list(out.axes)
    for t, axes in ((inp.id, in_axes), (out.id, out_axes)):
        odd = [f"{a.id} ({a.type})" for a in axes if a.type not in ("batch", "channel", "space")]
        if odd:
            raise _bad(path, f"tensor {t!r} has axes {odd}; nbseg handles batch, channel, space")
    space_in = [a for a in in_axes if a.type == "space"]
    space_out = [a for a in out_axes if a.type == "space"]
    if len(space_in) not in (2, 3) or len(space_out) != len(space_in):
        raise _bad(
            path,
            f"has {len(space_in)} spatial input axes and {len(space_out)} output ones; nbseg "
            "imports 2D (y, x) and 3D (z, y, x) models with outputs of the input's size",
        )
    names = ("z", "y", "x")[-len(space_in) :]
    ids = [str(a.id) for a in space_in]
    by_id = sorted(ids) == sorted(names)
    role = {a: (a if by_id else names[i]) for i, a in enumerate(ids)}
    # the output's spatial axes must follow the input's sizes exactly
    in_dims = [_role(a) if a.type != "space" else role[str(a.id)] for a in in_axes]
    out_dims, k = [], 0
    for a in out_axes:
        if a.type != "space":
            out_dims.append(_role(a))
            continue
        size = a.size
        ref = str(getattr(size, "axis_id", ""))
        if (
            str(getattr(size, "tensor_id", "")) != str(inp.id)
            or ref not in role
            or int(getattr(size, "offset", 0)) != 0
        ):
            raise _bad(
                path,
                f"output axis {str(a.id)!r} does not have the size of an input axis; nbseg "
                "needs outputs of the input's spatial size",
            )
        out_dims.append(role[ref] if by_id else names[k])
        k += 1
    # channels: inputs in, classes out
    chan_in = [a for a in in_axes if a.type == "channel"]
    chan_out = [a for a in out_axes if a.type == "channel"]
    n_in = len(chan_in[0].channel_names) if chan_in else 1
    n_out = len(chan_out[0].channel_names) if chan_out else 1
    post = [str(getattr(op, "id", "")) for op in out.postprocessing]
    binary = None
    if n_out == 1:
        binary = "logit" if "sigmoid" in post else "probability"
        label = str(chan_out[0].channel_names[0]) if chan_out else str(out.id)
        class_names = ["background", label]
    else:
        class_names = [str(n) for n in chan_out[0].channel_names]
    # the window: the test tensor's size when valid, else the smallest size >= 64 (32 in 3D)
    shape = _test_shape(path, inp)
    window, steps = [], []
    for a in space_in:
        size = a.size
        want = shape[in_axes.index(a)] if shape else (32 if len(space_in) == 3 else 64)
        if isinstance(size, int):
            window.append(size)
            steps.append(0)
        elif hasattr(size, "step"):
            n = max(0, math.ceil((want - size.min) / size.step))
            window.append(int(size.min + n * size.step))
            steps.append(int(size.step) if size.min % size.step == 0 else 0)
        else:
            raise _bad(path, f"input axis {a.id!r} has a size nbseg cannot choose ({size})")
    order = [role[i] for i in ids]
    window_zyx = tuple(window[order.index(n)] for n in names)
    div = math.gcd(*[s for s in steps if s]) if all(steps) else 1
    norm = _normalisation(inp, n_in, notes)
    spec = ModelSpec(
        architecture=f"bioimageio:{descr.name}",
        class_count=max(2, n_out),
        input_count=n_in,
        input_dimension="3D" if len(space_in) == 3 else "2D",
        name=str(descr.name),
        description=str(descr.description or ""),
        input_names=[str(n) for n in chan_in[0].channel_names] if chan_in else ["input_0"],
    )

    def factory() -> nn.Module:
        return PackageNetwork(load(), in_dims, out_dims, names, binary)

    return PackageSource(
        path,
        spec=spec,
        network_factory=factory,
        size_divisor=div,
        window=window_zyx,
        class_names=class_names,
        normalisation=norm,
        params=TrainingParams(patch_size=window_zyx),
        notes=notes,
    )


def _test_shape(path: Path, inp: Any) -> tuple[int, ...] | None:
    if inp.test_tensor is None:
        return None
    data = _read_bytes(path, inp.test_tensor, "test input")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False, mmap_mode=None)
    except Exception:
        return None
    return tuple(int(s) for s in arr.shape) if arr.ndim == len(inp.axes) else None


def _normalisation(inp: Any, channels: int, notes: list[str]) -> Normalisation | None:
    """Fixed linear preprocessing as nbseg's ``(x - low) / (high - low)``; ``None`` (with a
    note) for data-dependent steps (nbseg fits a normalisation when the model is trained)."""
    a = np.ones(channels)
    b = np.zeros(channels)
    for op in inp.preprocessing:
        kind = str(getattr(op, "id", ""))
        kw: Any = getattr(op, "kwargs", None)
        if kind == "ensure_dtype":
            continue
        axis = str(getattr(kw, "axis", "channel"))
        if axis != "channel":
            notes.append(f"preprocessing {kind!r} along {axis!r} was not kept")
            return None
        if kind == "scale_linear":
            gain = np.broadcast_to(np.asarray(kw.gain, np.float64), (channels,))
            off = np.broadcast_to(np.asarray(kw.offset, np.float64), (channels,))
            a, b = gain * a, gain * b + off
        elif kind == "fixed_zero_mean_unit_variance":
            mean = np.broadcast_to(np.asarray(kw.mean, np.float64), (channels,))
            std = np.broadcast_to(np.asarray(kw.std, np.float64), (channels,)) + 1e-6
            a, b = a / std, (b - mean) / std
        else:
            notes.append(
                f"the data-dependent preprocessing {kind!r} was not kept: train (fine-tune) "
                "the model to fit a normalisation, or set model.normalisation"
            )
            return None
    if not np.all(a > 0):
        notes.append("the preprocessing inverts the intensities and was not kept")
        return None
    low = -b / a
    return Normalisation(low=[float(v) for v in low], high=[float(v) for v in low + 1 / a])
