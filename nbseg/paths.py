"""Output-path safety: never write over an input, never replace a file unasked (a leaf
module: numpy and xarray only)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import InputError
from .ngff import image_root_of

__all__ = ["check_output_path", "check_overwrite", "source_paths"]


def source_paths(obj: Any) -> list[Path]:
    """The files an input comes from: a path (or ``{"path": ...}``) itself; for a
    DataArray, its ``encoding["source"]`` and the zarr stores / files its dask graph reads.
    Best effort: an in-memory array has none."""
    if obj is None:
        return []
    if isinstance(obj, (str, os.PathLike)):
        return [Path(os.fspath(obj))]
    if isinstance(obj, dict) and "path" in obj:
        return [Path(os.fspath(obj["path"]))]
    if isinstance(obj, (list, tuple)):
        return [p for item in obj for p in source_paths(item)]
    found: list[Path] = []
    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        src = obj.encoding.get("source")
        if isinstance(src, (str, os.PathLike)):
            found.append(Path(os.fspath(src)))
        data = obj.data if isinstance(obj, xr.DataArray) else None
    else:
        data = obj
    graph = getattr(data, "dask", None)
    if graph is not None:
        seen: set[str] = set()
        for value in graph.values():
            for p in _graph_paths(value, depth=0):
                if str(p) not in seen:
                    seen.add(str(p))
                    found.append(p)
    return found


def _graph_paths(value: Any, depth: int) -> Iterator[Path]:
    """Paths of zarr stores (and files) behind one dask graph value (xarray's lazy
    array wrappers, ``dask.array.from_zarr``'s zarr arrays, task tuples)."""
    if depth > 8 or value is None or isinstance(value, (str, bytes, int, float, np.ndarray)):
        return
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _graph_paths(v, depth + 1)
        return
    store = getattr(value, "store", None)
    if store is not None and type(value).__module__.startswith("zarr"):
        root = getattr(store, "root", None) or getattr(store, "path", None)
        if isinstance(root, (str, os.PathLike)):
            yield Path(os.fspath(root))
        return
    for attr in ("array", "_array", "datastore", "_manager"):
        inner = getattr(value, attr, None)
        if inner is not None and inner is not value:
            yield from _graph_paths(inner, depth + 1)
    for attr in ("_filename", "filename"):
        name = getattr(value, attr, None)
        if isinstance(name, (str, os.PathLike)):
            yield Path(os.fspath(name))
    args = getattr(value, "args", None)  # a dask Task
    if isinstance(args, tuple):
        yield from _graph_paths(args, depth + 1)


# -- output checks ---------------------------------------------------------------------------
def _resolved(p: Path) -> Path:
    return Path(os.path.realpath(os.fspath(p.expanduser())))


def check_output_path(out: str | os.PathLike[str], inputs: Iterable[Any]) -> Path:
    """Refuse (:class:`InputError`) an output path that is, contains or lies inside one of
    the ``inputs`` (paths, ``{"path": ...}`` refs or DataArrays read from files; symlinks
    resolved), before anything is written; a label image ``<image>/labels/<name>`` of an
    OME-Zarr image that is an input is allowed. Returns ``out`` as a Path."""
    out_p = Path(os.fspath(out)).expanduser()
    target = _resolved(out_p)
    for item in inputs:
        for src in source_paths(item):
            s = _resolved(src)
            if target == s:
                how = "is"
            elif s in target.parents:
                if target.parent == s / "labels" and image_root_of(target) == s:
                    continue  # a label image added to an OME-Zarr image leaves the image be
                how = "lies inside"
            elif target in s.parents:
                how = "contains"
            else:
                continue
            raise InputError(
                f"The output {str(out_p)!r} {how} the input {str(src)!r}; writing it would "
                "destroy the input. Give an output path outside the inputs."
            )
    return out_p


def check_overwrite(
    path: str | os.PathLike[str], overwrite: bool, how: str = "pass overwrite=True"
) -> Path:
    """``path`` as a Path, or :class:`InputError` when it exists and ``overwrite`` is False
    (``how`` says how to allow it: ``"pass overwrite=True"``, ``"pass --overwrite"``)."""
    p = Path(os.fspath(path)).expanduser()
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise InputError(f"{str(p)!r} already exists; {how} to replace it, or give a new path.")
    return p
