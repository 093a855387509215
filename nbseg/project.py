"""Projects: a whole Deep Learning Tool workspace in one folder, so a restart loses nothing.

A project is a folder ``<name>.nbseg-project/`` holding ``project.yaml`` (what is where) and
the files it names::

    project.yaml      images (by path, or a file here), labels, masks, training sets (by
                      name), validation, unlabelled images (by name), training parameters,
                      feedback region, view state
    model.nbseg       the model (weights, spec, classes, normalisation, params, history)
    images/0.zarr     images that did not come from a file (in memory when saved)
    labels/0.zarr     every multi-ROI, with class names and colours
    masks/0.zarr      every mask

Images read from a file (:func:`nbseg.open_image` and :func:`nbseg.io.read_array` record the
path in ``encoding["source"]``, which xarray keeps through renames and copies but not through
computations) are stored by path: the file must still hold an array of that shape and dims
when the project is saved (else the image is stored in the project), and is read again
(absolute path first, then the path relative to the project) when it is opened.

:func:`save_project` writes the whole folder beside the target and swaps it in (the old
project stays whole until the new one is complete; it is replaced only with
``overwrite=True``, and only when it is an nbseg project). :func:`open_project` reads it back
into a :class:`Project` (arrays in memory, so the folder can be saved over again).

The widgets only call these (``DeepLearningTool.save_project`` / ``open_project``); the
label-file helpers :func:`save_label_file` and :func:`labels_for_image` serve the Label tab.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from ._files import atomic_write_text, now_iso
from ._version import __version__
from .data.multiroi import multi_roi
from .data.trainingset import as_dataarray
from .errors import InputError, NbsegError
from .formats import save_labels
from .io import read_array, write_array
from .model import Model, load_model
from .paths import check_output_path
from .training.callbacks import FeedbackRegion
from .training.params import TrainingParams

__all__ = [
    "PROJECT_FILE",
    "PROJECT_SUFFIX",
    "Project",
    "SetRef",
    "image_source",
    "labels_for_image",
    "open_project",
    "project_path",
    "save_label_file",
    "save_project",
]

#: the suffix of a project folder (added when a path has none)
PROJECT_SUFFIX = ".nbseg-project"
#: the file inside a project folder saying what is where
PROJECT_FILE = "project.yaml"
#: the version of the project.yaml layout this nbseg writes (and the newest it reads)
FORMAT_VERSION = 1


@dataclass
class SetRef:
    """A training (or ground-truth) set by the names of its arrays in the workspace."""

    inputs: list[str]
    output: str
    mask: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "output": self.output, "mask": self.mask}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SetRef:
        if not isinstance(data, dict) or "output" not in data or "inputs" not in data:
            raise InputError(
                f"{where}: a training set needs 'inputs' (a list of image names) and 'output' "
                f"(a labels name), got {data!r}."
            )
        inputs = data["inputs"]
        if isinstance(inputs, str):
            inputs = [inputs]
        mask = data.get("mask")
        if not isinstance(inputs, list) or not all(isinstance(n, str) for n in inputs):
            raise InputError(f"{where}: 'inputs' must be a list of image names, got {inputs!r}.")
        if not isinstance(data["output"], str) or not (mask is None or isinstance(mask, str)):
            raise InputError(f"{where}: 'output' and 'mask' must be names, got {data!r}.")
        return cls(list(inputs), data["output"], mask)


@dataclass
class Project:
    """Everything a workspace holds, by name (see the module docstring).

    ``unlabelled`` lists the images without labels that training learns from too, each as
    the names of its inputs (one per model input); ``view`` is free-form state of the widgets (e.g. which image the Label tab shows);
    ``sources`` maps image names to the file each was read from (filled by
    :func:`open_project`; :func:`save_project` finds them itself); ``path`` is the folder
    it was read from or written to."""

    images: dict[str, xr.DataArray] = field(default_factory=dict)
    labels: dict[str, xr.DataArray] = field(default_factory=dict)
    masks: dict[str, xr.DataArray] = field(default_factory=dict)
    model: Model | None = None
    params: TrainingParams | None = None
    training_sets: list[SetRef] = field(default_factory=list)
    validation: float | list[SetRef] = 0.2
    unlabelled: list[list[str]] = field(default_factory=list)
    feedback: FeedbackRegion | None = None
    view: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def check(self) -> None:
        """Refuse (:class:`InputError`) sets and unlabelled images naming arrays the project
        does not hold."""
        kinds = (("images", self.images), ("labels", self.labels), ("masks", self.masks))
        for kind, store in kinds:
            for name in store:
                if not isinstance(name, str) or not name:
                    raise InputError(f"Project {kind}: every name must be text, got {name!r}.")
        sets = [("training set", i, r) for i, r in enumerate(self.training_sets)]
        if isinstance(self.validation, list):
            sets += [("ground-truth set", i, r) for i, r in enumerate(self.validation)]
        elif not 0.0 <= float(self.validation) < 1.0:
            raise InputError(
                f"Project validation {self.validation!r}: give a fraction 0 … <1 or sets."
            )
        for what, i, ref in sets:
            for n in ref.inputs:
                if n not in self.images:
                    raise InputError(
                        f"Project {what} {i + 1} uses image {n!r}, which the project does not "
                        f"hold (images: {sorted(self.images)})."
                    )
            if ref.output not in self.labels:
                raise InputError(
                    f"Project {what} {i + 1} uses labels {ref.output!r}, which the project does "
                    f"not hold (labels: {sorted(self.labels)})."
                )
            if ref.mask is not None and ref.mask not in self.masks:
                raise InputError(
                    f"Project {what} {i + 1} uses mask {ref.mask!r}, which the project does not "
                    f"hold (masks: {sorted(self.masks)})."
                )
        for i, names in enumerate(self.unlabelled):
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
            ):
                raise InputError(
                    f"Project unlabelled image {i + 1}: give the names of its input images (a "
                    f"list of text), got {names!r}."
                )
            for n in names:
                if n not in self.images:
                    raise InputError(
                        f"Project unlabelled image {i + 1} uses image {n!r}, which the project "
                        f"does not hold (images: {sorted(self.images)})."
                    )


# -- paths -----------------------------------------------------------------------------------
def project_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a project folder path (``.nbseg-project`` added when it has no suffix)."""
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise InputError(
            f"A project path must be a folder path such as 'work.nbseg-project', got {path!r}."
        )
    p = Path(str(os.fspath(path)).strip()).expanduser()
    if p.suffix == "":
        p = p.with_name(p.name + PROJECT_SUFFIX)
    return p


def image_source(image: xr.DataArray) -> Path | None:
    """The file ``image`` was read from, when that file still holds an array of its shape
    and dims (so the project can refer to it instead of copying it); else None."""
    src = image.encoding.get("source")
    if not isinstance(src, (str, os.PathLike)) or not str(src):
        return None
    p = Path(os.fspath(src)).expanduser()
    if not p.exists():
        return None
    try:
        on_disk = read_array(p)
    except NbsegError:
        return None
    same = on_disk.shape == image.shape and tuple(on_disk.dims) == tuple(image.dims)
    return Path(os.path.abspath(p)) if same and on_disk.dtype == image.dtype else None


# -- label files -------------------------------------------------------------------------------
def save_label_file(
    labels: xr.DataArray, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a multi-ROI with its class names and colours (attrs), dims and coords to
    ``path`` by suffix (``.zarr``, ``.tif``, ``.nc``, ``.ome.zarr``, ``.nii.gz`` … as
    :func:`nbseg.save_labels` writes them), atomically; refuses an existing path unless
    ``overwrite``."""
    roi = multi_roi(labels)
    roi.name = str(labels.name or "labels")
    return save_labels(roi, path, overwrite=overwrite)


def labels_for_image(labels: Any, image: xr.DataArray, shown: str) -> xr.DataArray:
    """``labels`` (e.g. read from the file ``shown``) as a multi-ROI of ``image``'s geometry
    (dims and coords), in memory; :class:`InputError` naming both shapes when they do not
    fit."""
    if isinstance(labels, xr.DataArray) and labels.ndim == image.ndim:
        same = set(map(str, labels.dims)) == set(map(str, image.dims))
        if not same and labels.shape == image.shape:  # unnamed axes (e.g. dim_0): by position
            labels = labels.rename(dict(zip(labels.dims, image.dims)))
    try:
        da = as_dataarray(labels, f"labels in {shown}")
    except InputError as err:
        raise InputError(
            f"{err} The image has dims {tuple(map(str, image.dims))} and shape {image.shape}."
        ) from None
    if da.shape != image.shape:
        raise InputError(
            f"The labels in {shown} have shape {da.shape} but image {str(image.name)!r} has "
            f"{image.shape}; load labels painted on this image (or choose the image they "
            "belong to first)."
        )
    if da.dtype.kind not in "iub":
        raise InputError(
            f"The array in {shown} has dtype {da.dtype}: labels are integer class ids "
            "(-1 = unlabelled); give a label file."
        )
    values = np.asarray(da.values)
    da = xr.DataArray(values, dims=image.dims, coords=image.coords, attrs=dict(da.attrs))
    return multi_roi(da, what=f"labels in {shown}")


# -- save ----------------------------------------------------------------------------------
def _is_project(p: Path) -> bool:
    return p.is_dir() and (p / PROJECT_FILE).is_file()


def save_project(
    project: Project, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``project`` to the folder ``path`` (``.nbseg-project`` added when it has no
    suffix), atomically; returns the folder.

    Refuses an existing ``path`` unless ``overwrite`` (and even then anything that is not an
    nbseg project), and a path that is, holds or lies inside a file an image is read from.
    """
    project.check()
    p = project_path(path)
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise InputError(
                f"{str(p)!r} already exists; pass overwrite=True (tick 'Overwrite') to replace "
                "it, or give a new path."
            )
        if not _is_project(p):
            raise InputError(
                f"Cannot write the project to {str(p)!r}: it exists and is not an nbseg project "
                f"(no {PROJECT_FILE}); nbseg never deletes other data. Give a new path."
            )
    blocker = next((a for a in p.parents if a.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"Cannot write {str(p)!r}: {str(blocker)!r} is a file, not a folder.")
    arrays = [*project.images.values(), *project.labels.values(), *project.masks.values()]
    check_output_path(p, arrays)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    except OSError as err:
        raise InputError(f"Cannot write {str(p)!r}: {err.strerror or err}.") from None
    try:
        _write_contents(project, tmp, p)
        _swap_in(tmp, p)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise InputError(f"Cannot write {str(p)!r}: {err.strerror or err}.") from None
        raise
    project.path = p
    return p


def _write_contents(project: Project, folder: Path, final: Path) -> None:
    images = []
    for i, (name, da) in enumerate(project.images.items()):
        src = image_source(da)
        entry: dict[str, Any] = {"name": name, "shape": list(da.shape), "dtype": str(da.dtype)}
        if src is not None:
            entry["path"] = str(src)
            with contextlib.suppress(ValueError):  # another drive (Windows)
                entry["relative"] = os.path.relpath(src, final.parent)
        else:
            entry["file"] = f"images/{i}.zarr"
            write_array(_plain(da), folder / entry["file"], name="image")
        images.append(entry)
    labels = []
    for i, (name, da) in enumerate(project.labels.items()):
        entry = {"name": name, "file": f"labels/{i}.zarr"}
        save_label_file(_plain(da), folder / entry["file"])
        labels.append(entry)
    masks = []
    for i, (name, da) in enumerate(project.masks.items()):
        entry = {"name": name, "file": f"masks/{i}.zarr"}
        write_array(_plain(da).astype(bool), folder / entry["file"], name="mask")
        masks.append(entry)
    if project.model is not None:
        project.model.save(folder / "model.nbseg")
    v = project.validation
    fb = project.feedback
    doc = {
        "nbseg_project": FORMAT_VERSION,
        "nbseg_version": __version__,
        "saved": now_iso(),
        "images": images,
        "labels": labels,
        "masks": masks,
        "model": "model.nbseg" if project.model is not None else None,
        "params": project.params.to_dict() if project.params is not None else None,
        "training_sets": [r.to_dict() for r in project.training_sets],
        "validation": [r.to_dict() for r in v] if isinstance(v, list) else float(v),
        "unlabelled": [list(names) for names in project.unlabelled],
        "feedback": (
            None
            if fb is None
            else {
                "training_set": int(fb.training_set),
                "slice_index": None if fb.slice_index is None else int(fb.slice_index),
                "box": None if fb.box is None else [int(b) for b in fb.box],
            }
        ),
        "view": _yaml_safe(project.view),
    }
    atomic_write_text(folder / PROJECT_FILE, yaml.safe_dump(doc, sort_keys=False))


def _plain(da: xr.DataArray) -> xr.DataArray:
    """A copy to write (without the encoding of the file it may have come from)."""
    out = da.copy(deep=False)
    out.encoding = {}
    return out


def _yaml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _swap_in(tmp: Path, p: Path) -> None:
    """Put the complete folder ``tmp`` at ``p``; an old project there is moved aside first
    and removed only once the new one is in place (restored when the swap fails)."""
    if not (p.exists() or p.is_symlink()):
        os.rename(tmp, p)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
    old.rmdir()
    os.rename(p, old)
    try:
        os.rename(tmp, p)
    except BaseException:
        os.rename(old, p)
        raise
    shutil.rmtree(old, ignore_errors=True)


# -- open ----------------------------------------------------------------------------------
def open_project(path: str | os.PathLike[str]) -> Project:
    """Read the project folder ``path`` (see the module docstring); arrays stored in the
    project come back in memory, images stored by path are read from their files (lazily
    where the format allows). :class:`InputError` naming what is missing or wrong."""
    p = project_path(path)
    shown = repr(str(p))
    if not p.exists():
        hint = ""
        if p.parent.is_dir():
            aside = sorted(p.parent.glob(f".{p.name}.*.old"))
            if aside:
                hint = (
                    f" An earlier save was interrupted: the previous project is in "
                    f"{str(aside[-1])!r}; rename it to {p.name!r}."
                )
        raise InputError(f"No project {shown}: the folder does not exist.{hint}")
    if not _is_project(p):
        raise InputError(
            f"{shown} is not an nbseg project (no {PROJECT_FILE} in it); give the folder "
            "DeepLearningTool.save_project wrote."
        )
    try:
        doc = yaml.safe_load((p / PROJECT_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"Cannot read {str(p / PROJECT_FILE)!r}: {err}") from None
    if not isinstance(doc, dict) or "nbseg_project" not in doc:
        raise InputError(f"{str(p / PROJECT_FILE)!r} is not an nbseg project file.")
    version = doc["nbseg_project"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"Project {shown} has layout version {version!r}, newer than this nbseg reads "
            f"({FORMAT_VERSION}); update nbseg (pip install -U nbseg)."
        )
    project = Project(path=p)
    for entry in _entries(doc, "images", shown):
        name = entry["name"]
        if "path" in entry:
            da, src = _read_source(entry, p, shown)
            project.sources[name] = str(src)
        else:
            da = _read_inside(p, entry, "image", shown)
        da.name = name
        project.images[name] = da
    for entry in _entries(doc, "labels", shown):
        da = _read_inside(p, entry, "labels", shown)
        roi = multi_roi(da, what=f"labels {entry['name']!r} of project {shown}")
        roi.name = entry["name"]
        project.labels[entry["name"]] = roi
    for entry in _entries(doc, "masks", shown):
        da = _read_inside(p, entry, "mask", shown)
        da.name = entry["name"]
        project.masks[entry["name"]] = da.astype(bool) if da.dtype != bool else da
    if doc.get("model"):
        project.model = load_model(_inside(p, doc["model"], "model", shown))
    if doc.get("params") is not None:
        try:
            project.params = TrainingParams.from_dict(doc["params"])
        except NbsegError as err:
            raise InputError(
                f"Project {shown}: its training parameters are invalid: {err}"
            ) from None
    sets = doc.get("training_sets") or []
    if not isinstance(sets, list):
        raise InputError(f"Project {shown}: 'training_sets' must be a list.")
    project.training_sets = [
        SetRef.from_dict(s, f"Project {shown} training set {i + 1}") for i, s in enumerate(sets)
    ]
    v = doc.get("validation", 0.2)
    if isinstance(v, list):
        project.validation = [
            SetRef.from_dict(s, f"Project {shown} ground-truth set {i + 1}")
            for i, s in enumerate(v)
        ]
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        project.validation = float(v)
    else:
        raise InputError(f"Project {shown}: 'validation' must be a fraction or a list of sets.")
    unlabelled = doc.get("unlabelled") or []  # absent in projects of older nbseg versions
    if not isinstance(unlabelled, list):
        raise InputError(
            f"Project {shown}: 'unlabelled' must be a list of images (each a list of image "
            f"names), got {unlabelled!r}."
        )
    project.unlabelled = [[n] if isinstance(n, str) else n for n in unlabelled]
    fb = doc.get("feedback")
    if fb is not None:
        try:
            box = fb.get("box")
            project.feedback = FeedbackRegion(
                training_set=int(fb.get("training_set", 0)),
                slice_index=None if fb.get("slice_index") is None else int(fb["slice_index"]),
                box=None if box is None else (int(box[0]), int(box[1]), int(box[2]), int(box[3])),
            )
        except (AttributeError, TypeError, ValueError, IndexError):
            raise InputError(
                f"Project {shown}: 'feedback' must hold training_set, slice_index and box "
                f"(y0, y1, x0, x1), got {fb!r}."
            ) from None
    view = doc.get("view") or {}
    project.view = dict(view) if isinstance(view, dict) else {}
    project.check()
    return project


def _entries(doc: dict[str, Any], key: str, shown: str) -> list[dict[str, Any]]:
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in items
    ):
        raise InputError(f"Project {shown}: '{key}' must be a list of entries with a 'name'.")
    return items


def _inside(p: Path, rel: Any, what: str, shown: str) -> Path:
    """A file named in project.yaml, which must lie inside the project folder."""
    if not isinstance(rel, str) or not rel:
        raise InputError(f"Project {shown}: the {what} has no file name.")
    f = (p / rel).resolve()
    if p.resolve() not in f.parents:
        raise InputError(f"Project {shown}: the {what} file {rel!r} lies outside the project.")
    if not f.exists():
        raise InputError(
            f"Project {shown} is incomplete: its {what} file {rel!r} is missing; the project "
            "folder was changed after saving."
        )
    return f


def _read_inside(p: Path, entry: dict[str, Any], what: str, shown: str) -> xr.DataArray:
    f = _inside(p, entry.get("file"), f"{what} {entry['name']!r}", shown)
    da = read_array(f).load()  # in memory: saving the project again replaces the folder
    da.encoding = {}
    return da


def _read_source(entry: dict[str, Any], p: Path, shown: str) -> tuple[xr.DataArray, Path]:
    name = entry["name"]
    candidates = [Path(str(entry["path"]))]
    if isinstance(entry.get("relative"), str):
        candidates.append(p.parent / entry["relative"])
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise InputError(
            f"Image {name!r} of project {shown} was read from {str(entry['path'])!r}, which no "
            "longer exists"
            + (f" (nor {str(candidates[1])!r} beside the project)" if len(candidates) > 1 else "")
            + "; put the file back and open the project again."
        )
    da = read_array(found)
    shape = tuple(int(s) for s in entry.get("shape", da.shape))
    if da.shape != shape:
        raise InputError(
            f"Image {name!r} of project {shown}: {str(found)!r} now holds an array of shape "
            f"{da.shape}, but the project was saved with shape {shape}; put the original file "
            "back."
        )
    return da, found
