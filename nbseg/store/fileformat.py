"""The ``.nbseg`` model file: one safetensors file (weights) whose header holds the JSON
metadata (spec, classes, normalisation, training params, history).

Loading never executes code from the file (safetensors holds raw tensors and strings only),
and the whole metadata is validated when the file is opened (:func:`check_meta`): a damaged
or hand-edited file is refused with a :class:`ModelFileError` naming the file and the field,
never a later ``IndexError`` or ``ZeroDivisionError``. Saving is atomic: the file is written
to a temp sibling, flushed to disk, then renamed over the target, so at every instant the
path holds the old model or the new one, never half of one; temp files of killed saves are
removed on the next save into the folder.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write_bytes
from ..errors import InputError, ModelFileError, NbsegError
from ..models.spec import ModelSpec
from ..training.params import TrainingParams

__all__ = [
    "atomic_write_bytes",
    "check_meta",
    "read_model_file",
    "read_model_meta",
    "write_model_file",
]

FORMAT = "nbseg-model"
FORMAT_VERSION = 1
SUFFIX = ".nbseg"

#: The metadata keys a model file may hold (anything else is refused).
META_KEYS = (
    "spec",
    "class_names",
    "class_colors",
    "normalisation",
    "params",
    "history",
    "created",
    "updated",
    "nbseg_version",
    "teacher",
)
_NORM_KEYS = ("method", "low", "high", "percentiles")
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_DAMAGED = (
    "the file is damaged or was edited by hand; re-save the model or restore it from the trash"
)


def _path_arg(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
        raise InputError(f"{what}: path must be a file path (str or pathlib.Path), got {path!r}.")
    return Path(os.fspath(path)).expanduser()


def write_model_file(
    path: str | os.PathLike[str], state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write weights + metadata to ``path`` atomically (stale temp files of killed saves in
    the folder are removed first)."""
    from safetensors.torch import save

    path = _path_arg(path, "write_model_file")
    if path.is_dir():
        raise InputError(
            f"The model path {str(path)!r} is a folder; give a file path such as "
            f"{str(path / ('model' + SUFFIX))!r}."
        )
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    data = save(tensors, metadata=header)
    try:
        return atomic_write_bytes(path, data)  # removes stale temps of killed saves first
    except OSError as err:
        raise ModelFileError(
            f"Could not write the model file {str(path)!r} ({err.strerror or err}); check that "
            "its folder can be created and written and that the disk has space. An existing "
            "file there is unchanged."
        ) from None


def _open_checked(path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        what = "is a folder, not a model file" if path.is_dir() else "does not exist"
        raise ModelFileError(f"No model file at {str(path)!r} (the path {what}).")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            _check_header(path, header)
            state = {k: fh.get_tensor(k) for k in fh.keys()} if with_tensors else {}  # noqa: SIM118
    except ModelFileError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"{str(path)!r} is not a readable nbseg model file ({str(err)[:200]}); it may be "
            "truncated or not a model."
        ) from None
    if "meta" not in header:
        raise ModelFileError(f"{str(path)!r}: the header has no field 'meta'; {_DAMAGED}.")
    try:
        meta = json.loads(header["meta"])
    except json.JSONDecodeError as err:
        raise ModelFileError(
            f"{str(path)!r}: the header field 'meta' is not valid JSON ({err}); {_DAMAGED}."
        ) from None
    return state, check_meta(meta, repr(str(path)))


def _check_header(path: Path, header: dict[str, str]) -> None:
    if header.get("format") != FORMAT:
        raise ModelFileError(
            f"{str(path)!r} is a safetensors file but not an nbseg model (no "
            f"'{FORMAT}' header); import foreign weights with nbseg.import_model."
        )
    version = header.get("version", "")
    if not version.isdigit():
        raise ModelFileError(
            f"{str(path)!r}: the header field 'version' is {version!r}, not a format version "
            f"number; {_DAMAGED}."
        )
    if int(version) > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by a newer nbseg (format version "
            f"{version} > {FORMAT_VERSION}); upgrade nbseg."
        )


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and validated metadata (see :func:`check_meta`) of a model file."""
    return _open_checked(_path_arg(path, "read_model_file"), with_tensors=True)


def read_model_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the validated metadata (fast: the weights are not read), for model lists."""
    return _open_checked(_path_arg(path, "read_model_meta"), with_tensors=False)[1]


# -- metadata validation ---------------------------------------------------------------------
def _bad(source: str, field: str, problem: str, fix: str) -> ModelFileError:
    return ModelFileError(f"{source}: model metadata field {field!r} {problem}; {fix}.")


def _a(value: Any) -> str:
    """``value``'s JSON type with an article: 'a string', 'an integer', 'a list' ..."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds.update({list: "a list", dict: "an object", type(None): "null"})
    return kinds.get(type(value), f"a {type(value).__name__}")


def _count(items: list[Any], one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_meta(meta: Any, source: str) -> dict[str, Any]:
    """Validate a model file's metadata and return it normalised (colours as ``'#rrggbb'``,
    absent optional fields as ``None`` / ``[]``); raise :class:`ModelFileError` naming
    ``source`` (the file) and the field otherwise.

    Checked: ``spec`` (:meth:`ModelSpec.from_dict`), ``class_names`` (a string per class),
    ``class_colors`` (``'#rrggbb'`` or ``[r, g, b]`` of 0-255 integers, one per class),
    ``normalisation`` (finite ``low``/``high`` lists, one per input, ``high > low``),
    ``params`` (:meth:`TrainingParams.from_dict`, one class weight per class), ``history``
    (a list of records with an integer ``epoch``), ``created``/``updated``/``nbseg_version``
    (strings), ``teacher`` (the kept feature teacher's ``blend`` and ``hidden``, or absent);
    unknown keys are refused. Architectures are not looked up here (a model of an
    imported architecture lists fine); :func:`nbseg.load_model` builds the network.
    """
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"{source}: the header field 'meta' must be a JSON object, got {_a(meta)}; {_DAMAGED}."
        )
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ModelFileError(
            f"{source}: unknown model metadata field(s) {unknown}; a model file holds "
            f"{list(META_KEYS)} ({_DAMAGED}, or it was written by a newer nbseg)."
        )
    out = dict(meta)
    if not isinstance(meta.get("spec"), dict):
        problem = "is missing" if "spec" not in meta else f"is {_a(meta['spec'])}"
        raise _bad(source, "spec", problem, "it must be the model's ModelSpec as a JSON object")
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except (NbsegError, TypeError, ValueError) as err:
        raise _bad(source, "spec", f"is invalid ({err})", _DAMAGED) from None
    k = spec.class_count
    out["class_names"] = _class_names(meta.get("class_names"), k, source)
    out["class_colors"] = _class_colors(meta.get("class_colors"), k, source)
    out["normalisation"] = _normalisation(meta.get("normalisation"), spec.input_count, source)
    params = meta.get("params")
    if params is not None:
        if not isinstance(params, dict):
            raise _bad(source, "params", f"is {_a(params)}", "it must be a JSON object")
        try:
            TrainingParams.from_dict(params).validate(class_count=k)
        except (NbsegError, TypeError, ValueError) as err:
            raise _bad(source, "params", f"is invalid ({err})", _DAMAGED) from None
    out["history"] = _history(meta.get("history"), source)
    out["teacher"] = _teacher(meta.get("teacher"), source)
    for key in ("created", "updated", "nbseg_version"):
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            raise _bad(source, key, f"is {v!r}", "it must be a string (an ISO time / a version)")
    return out


def _teacher(teacher: Any, source: str) -> dict[str, Any] | None:
    """The feature teacher's description: ``{"blend": weight in (0, 1], "hidden": units}``."""
    if teacher is None:
        return None
    fix = 'it must be {"blend": a number in (0, 1], "hidden": a positive integer}'
    if not isinstance(teacher, dict) or set(teacher) != {"blend", "hidden"}:
        raise _bad(source, "teacher", f"is {_a(teacher)}", fix)
    blend, hidden = teacher["blend"], teacher["hidden"]
    if not _number(blend) or not 0 < blend <= 1:
        raise _bad(source, "teacher.blend", f"is {blend!r}", fix)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise _bad(source, "teacher.hidden", f"is {hidden!r}", fix)
    return {"blend": float(blend), "hidden": hidden}


def _class_names(names: Any, k: int, source: str) -> list[str] | None:
    if names is None:
        return None  # the default names
    if not isinstance(names, list) or len(names) != k:
        got = (
            f"has {_count(names, 'name', 'names')}"
            if isinstance(names, list)
            else f"is {_a(names)}"
        )
        raise _bad(source, "class_names", got, f"it must list one name per class ({k})")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise _bad(
                source, f"class_names[{i}]", f"is {n!r}", "a class name is a non-empty string"
            )
    return list(names)


def _class_colors(colors: Any, k: int, source: str) -> list[str] | None:
    if colors is None:
        return None  # the default colours
    if not isinstance(colors, list) or len(colors) != k:
        got = (
            f"has {_count(colors, 'colour', 'colours')}"
            if isinstance(colors, list)
            else f"is {_a(colors)}"
        )
        raise _bad(source, "class_colors", got, f"it must list one colour per class ({k})")
    out = []
    for i, c in enumerate(colors):
        if isinstance(c, str) and _HEX.fullmatch(c):
            out.append(c.lower())
        elif (
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        ):
            out.append("#{:02x}{:02x}{:02x}".format(*c))
        else:
            raise _bad(
                source,
                f"class_colors[{i}]",
                f"is {c!r}",
                "a colour is '#rrggbb' or an [r, g, b] triple of integers 0-255",
            )
    return out


def _normalisation(norm: Any, inputs: int, source: str) -> dict[str, Any] | None:
    if norm is None:
        return None  # an untrained model
    if not isinstance(norm, dict):
        raise _bad(source, "normalisation", f"is {_a(norm)}", "it must be a JSON object")
    unknown = sorted(set(norm) - set(_NORM_KEYS))
    if unknown:
        raise _bad(source, "normalisation", f"has unknown keys {unknown}", f"it holds {_NORM_KEYS}")
    for key in ("low", "high"):
        v = norm.get(key)
        if not isinstance(v, list) or len(v) != inputs:
            got = f"has {_count(v, 'value', 'values')}" if isinstance(v, list) else f"is {v!r}"
            raise _bad(
                source,
                f"normalisation.{key}",
                got,
                f"it must list one finite number per input ({inputs})",
            )
        for i, x in enumerate(v):
            if not _number(x):
                raise _bad(source, f"normalisation.{key}[{i}]", f"is {x!r}", "give a finite number")
    for i, (lo, hi) in enumerate(zip(norm["low"], norm["high"])):
        if not hi > lo:
            raise _bad(
                source,
                f"normalisation.high[{i}]",
                f"is {hi!r}, not above low[{i}] = {lo!r}",
                "the intensity range of every input must be non-empty (high > low)",
            )
    method = norm.get("method", "percentile")
    if not isinstance(method, str):
        raise _bad(source, "normalisation.method", f"is {method!r}", "it must be a string")
    pct = norm.get("percentiles", [0.5, 99.5])
    if (
        not isinstance(pct, list)
        or len(pct) != 2
        or not all(_number(p) for p in pct)
        or not 0 <= pct[0] < pct[1] <= 100
    ):
        raise _bad(
            source,
            "normalisation.percentiles",
            f"is {pct!r}",
            "it must be [low, high] with 0 <= low < high <= 100",
        )
    return {
        "method": method,
        "low": [float(x) for x in norm["low"]],
        "high": [float(x) for x in norm["high"]],
        "percentiles": [float(p) for p in pct],
    }


def _history(history: Any, source: str) -> list[dict[str, Any]]:
    if history is None:
        return []
    if not isinstance(history, list):
        raise _bad(
            source,
            "history",
            f"is {_a(history)}",
            "it must be a list of epoch records",
        )
    for i, rec in enumerate(history):
        if not isinstance(rec, dict):
            raise _bad(source, f"history[{i}]", f"is {rec!r}", "an epoch record is a JSON object")
        e = rec.get("epoch")
        if not isinstance(e, int) or isinstance(e, bool) or e < 0:
            raise _bad(
                source,
                f"history[{i}].epoch",
                f"is {e!r}",
                "every record needs an integer epoch >= 0",
            )
    return history
