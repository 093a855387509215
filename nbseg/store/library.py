"""`ModelLibrary`: a folder of ``.nbseg`` model files (Dragonfly's model list).

One file per model, ``<root>/<name>.nbseg``; the library name is the file name and is kept
equal to the model's ``spec.name``. Nothing is silently lost: :meth:`ModelLibrary.delete`
moves the file to ``<root>/.trash/`` and an overwriting :meth:`ModelLibrary.save` puts a copy
(a hard link) of the old version there before it replaces the file atomically, so at every
instant the name resolves to the old model or the new one. :meth:`ModelLibrary.restore`
brings a version back until :meth:`ModelLibrary.empty_trash`. The trash is bounded: it keeps
the newest :data:`TRASH_KEEP` versions and at most :data:`TRASH_MAX_BYTES` in all (both are
constructor arguments); older versions are removed as new ones arrive, the newest is always
kept. Temp files left by killed saves are removed when the library opens and on the next
save. Reading and importing never execute code from a file (safetensors tensors + JSON
metadata, validated; a file that is anything else, e.g. a pickle, is refused).

The default root is ``$NBSEG_MODELS`` or ``~/.nbseg/models``.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import math
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import clean_stale_temps, link_or_copy
from ..errors import InputError, ModelFileError
from ..model import Model, load_model
from ..paths import check_overwrite
from .export import export_bioimageio
from .fileformat import atomic_write_bytes, read_model_file, read_model_meta, write_model_file

if TYPE_CHECKING:
    from ..model import Model

SUFFIX = ".nbseg"
TRASH = ".trash"
#: The trash keeps at most this many versions (all names together), newest first ...
TRASH_KEEP = 20
#: ... and at most this many bytes in all (1 GiB; the newest version is always kept).
TRASH_MAX_BYTES = 1 << 30
MAX_NAME = 100
_CHARS = re.compile(r"[A-Za-z0-9 _.()+-]")
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt") for i in range(10)}
_NAME_RULE = (
    f"a library name becomes a file name: 1-{MAX_NAME} letters, digits, spaces or _ . ( ) + -, "
    "starting with a letter or digit"
)


class ModelNameError(InputError, ModelFileError):
    """An invalid library model name (an :class:`InputError`, and a :class:`ModelFileError`
    as before)."""


def default_root() -> Path:
    """``$NBSEG_MODELS`` or ``~/.nbseg/models``."""
    env = os.environ.get("NBSEG_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".nbseg" / "models"


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"it is of type {type(name).__name__}, not a string"
    if name == "":
        return "it is empty"
    for c in name:
        if unicodedata.category(c).startswith("C"):
            return f"it contains the control character {c!r}"
    for sep in {"/", "\\", os.sep, os.altsep or "/"}:
        if sep in name:
            return f"it contains the path separator {sep!r}"
    if name.startswith("."):
        return "it starts with a dot (a hidden file)"
    if ".." in name:
        return "it contains '..'"
    if name[0].isspace():
        return "it starts with whitespace"
    if name[-1].isspace():
        return "it ends with whitespace"
    if name.endswith("."):
        return "it ends with a dot"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters (at most {MAX_NAME})"
    for c in name:
        if not _CHARS.fullmatch(c):
            return f"it contains {c!r}"
    if not name[0].isalnum():
        return f"it starts with {name[0]!r}"
    if name.split(".")[0].strip().lower() in _RESERVED:
        return "it is a reserved device name on Windows"
    return None


def check_name(name: Any) -> str:
    """A library name, or :class:`ModelNameError` (an :class:`InputError`) naming the name
    and the rule it breaks: 1-100 letters, digits, spaces and ``_ . ( ) + -``, starting with
    a letter or digit; no control characters (a newline), path separators, leading dot,
    ``..``, trailing whitespace or dot, or Windows device names (it becomes a file name)."""
    problem = _name_problem(name)
    if problem is not None:
        raise ModelNameError(f"Invalid model name {name!r}: {problem}; {_NAME_RULE}.")
    return name


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass
class ModelRow:
    """One line of the model list (from the metadata only: fast, weights not read)."""

    name: str
    architecture: str
    classes: list[str]
    input_dimension: str
    created: str
    updated: str
    description: str
    path: str
    size: int
    epochs: int = 0
    trained: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:  # rows read like dicts too
        return getattr(self, key)


class ModelLibrary:
    """A directory of models: list, save, load, rename, duplicate, delete (to the trash),
    restore, export and import.

    Example::

        lib = nbseg.ModelLibrary()            # $NBSEG_MODELS or ~/.nbseg/models
        lib.save(model, "fibres v1")
        [row.name for row in lib.list()]
        model = lib.load("fibres v1")
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        trash_keep: int = TRASH_KEEP,
        trash_max_bytes: int | None = TRASH_MAX_BYTES,
    ) -> None:
        """``root``: the folder (default :func:`default_root`). The trash keeps the newest
        ``trash_keep`` versions and at most ``trash_max_bytes`` bytes in all (``None``: no
        size bound); the newest version is always kept. Opening the library removes temp
        files that killed saves left in it."""
        if root is not None and (not isinstance(root, (str, os.PathLike)) or os.fspath(root) == ""):
            raise InputError(
                f"ModelLibrary: root must be a folder path (str or pathlib.Path), got {root!r}."
            )
        self.root = Path(os.fspath(root)).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(
                f"ModelLibrary: root {str(self.root)!r} is a file, not a folder; give the "
                "library's folder (it is created on the first save)."
            )
        if not isinstance(trash_keep, int) or isinstance(trash_keep, bool) or trash_keep < 1:
            raise InputError(
                f"ModelLibrary: trash_keep={trash_keep!r} is invalid: the trash keeps at least "
                "the newest version (an integer >= 1)."
            )
        if trash_max_bytes is not None and (
            not isinstance(trash_max_bytes, (int, float))
            or isinstance(trash_max_bytes, bool)
            or not math.isfinite(trash_max_bytes)
            or trash_max_bytes <= 0
        ):
            raise InputError(
                f"ModelLibrary: trash_max_bytes={trash_max_bytes!r} is invalid: give a size "
                "in bytes > 0, or None for no size bound."
            )
        self.trash_keep = trash_keep
        self.trash_max_bytes = trash_max_bytes
        self.clean_temps()

    def clean_temps(self) -> builtins.list[Path]:
        """Remove the temp files that killed saves left in the library and its trash (writer
        gone, or older than a minute); returns them."""
        return clean_stale_temps(self.root, SUFFIX) + clean_stale_temps(self.trash_dir, SUFFIX)

    @property
    def trash_policy(self) -> str:
        """What the trash keeps, in words."""
        size = (
            ""
            if self.trash_max_bytes is None
            else f" and at most {_fmt_bytes(self.trash_max_bytes)}"
        )
        return (
            f"the trash keeps the newest {self.trash_keep} versions{size} in all; older ones "
            "are removed as new ones arrive (the newest is always kept)"
        )

    def __repr__(self) -> str:
        return f"<ModelLibrary {str(self.root)!r}: {len(self.names())} models>"

    # -- paths -------------------------------------------------------------------------------
    @property
    def trash_dir(self) -> Path:
        return self.root / TRASH

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{SUFFIX}"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def _existing(self, name: str) -> Path:
        p = self.path(name)
        if not p.is_file():
            have = self.names()
            raise ModelFileError(
                f"No model {name!r} in the library {str(self.root)!r}; it holds {have}."
            )
        return p

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob(f"*{SUFFIX}") if p.is_file())

    # -- listing -----------------------------------------------------------------------------
    def list(self) -> list[ModelRow]:
        """One :class:`ModelRow` per model, sorted by name. An unreadable file is listed
        with ``error`` set (never hidden)."""
        return [self._row(self.root / f"{n}{SUFFIX}") for n in self.names()]

    def info(self, name: str) -> ModelRow:
        return self._row(self._existing(name))

    def metadata(self, name: str) -> dict[str, Any]:
        """The full metadata (spec, classes, normalisation, params, history) of a model."""
        return read_model_meta(self._existing(name))

    @staticmethod
    def _row(p: Path, name: str | None = None) -> ModelRow:
        size = p.stat().st_size
        try:
            meta = read_model_meta(p)
            spec = meta.get("spec") or {}
            return ModelRow(
                name=name or p.stem,
                architecture=str(spec.get("architecture", "?")),
                classes=list(meta.get("class_names") or []),
                input_dimension=str(spec.get("input_dimension", "?")),
                created=str(meta.get("created", "")),
                updated=str(meta.get("updated", "")),
                description=str(spec.get("description", "")),
                path=str(p),
                size=size,
                epochs=len(meta.get("history") or []),
                trained=meta.get("normalisation") is not None,
            )
        except Exception as err:
            return ModelRow(
                name=name or p.stem,
                architecture="?",
                classes=[],
                input_dimension="?",
                created="",
                updated="",
                description="",
                path=str(p),
                size=size,
                error=str(err),
            )

    # -- save / load -------------------------------------------------------------------------
    def save(
        self,
        model: Model,
        name: str | None = None,
        overwrite: bool = False,
        *,
        trash_old: bool = True,
    ) -> Path:
        """Save ``model`` as ``name`` (default: its ``spec.name``); the model's name becomes
        ``name``. An existing model of that name is refused unless ``overwrite``; then a copy
        of the old version goes to the trash (``trash_old=False`` skips that, e.g. after
        editing class names) and the file is replaced atomically: at every instant the name
        loads as the old model or the new one."""
        if not isinstance(model, Model):
            raise InputError(
                f"ModelLibrary.save: model must be an nbseg.Model, got {type(model).__name__}."
            )
        for flag, value in (("overwrite", overwrite), ("trash_old", trash_old)):
            if not isinstance(value, bool):
                raise InputError(f"ModelLibrary.save: {flag} must be True or False, got {value!r}.")
        name = check_name(name if name is not None else model.spec.name)
        p = self.path(name)
        if p.exists():
            if not overwrite:
                raise ModelFileError(
                    f"The library already holds a model {name!r}; choose another name or pass "
                    "overwrite=True (the old one goes to the trash)."
                )
            if trash_old:
                self._keep_in_trash(p)  # a second name for the old file: it stays in place
        model.spec.name = name
        return model.save(p)  # temp file + os.replace over the name

    def load(self, name: str) -> Model:

        return load_model(self._existing(name))

    # -- rename / duplicate / delete -------------------------------------------------------
    def _write_as(self, src: Path, new: str) -> Path:
        state, meta = read_model_file(src)
        meta = dict(meta)
        meta["spec"] = dict(meta.get("spec") or {}, name=new)
        return write_model_file(self.path(new), state, meta)

    def _free(self, name: str) -> None:
        if self.exists(name):
            raise ModelFileError(
                f"The library already holds a model {name!r}; choose another name or delete it "
                "first."
            )

    def rename(self, old: str, new: str) -> Path:
        """Rename a model (its file and its ``spec.name``)."""
        src = self._existing(old)
        check_name(new)
        if new == old:
            return src
        self._free(new)
        out = self._write_as(src, new)
        src.unlink()
        return out

    def duplicate(self, name: str, new: str | None = None) -> Path:
        """Copy a model under a new name (default ``"<name> copy"``, ``"<name> copy 2"`` ...)."""
        src = self._existing(name)
        if new is None:
            new, k = f"{name} copy", 2
            while self.exists(new):
                new, k = f"{name} copy {k}", k + 1
        check_name(new)
        self._free(new)
        return self._write_as(src, new)

    def delete(self, name: str) -> Path:
        """Move a model to ``<root>/.trash/`` (see :meth:`restore`); returns its trash path."""
        return self._to_trash(self._existing(name))

    def _trash_target(self, stem: str) -> Path:
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target, k = self.trash_dir / f"{stem}@{stamp}{SUFFIX}", 1
        while target.exists() or target.is_symlink():
            target, k = self.trash_dir / f"{stem}@{stamp}-{k}{SUFFIX}", k + 1
        return target

    def _to_trash(self, p: Path) -> Path:
        """Move ``p`` into the trash (delete)."""
        target = self._trash_target(p.stem)
        os.replace(p, target)
        self._prune_trash()
        return target

    def _keep_in_trash(self, p: Path) -> Path:
        """Put a copy (a hard link where the file system has them) of ``p`` into the trash;
        ``p`` itself stays where it is, so its name never goes missing."""
        clean_stale_temps(self.trash_dir, SUFFIX)
        while True:
            target = self._trash_target(p.stem)
            try:
                link_or_copy(p, target)
                break
            except FileExistsError:  # taken meanwhile (another process): next stamp
                continue
        self._prune_trash()
        return target

    def _trash_files(self) -> builtins.list[Path]:
        """The trash's model files, newest first."""
        if not self.trash_dir.is_dir():
            return []
        files = [p for p in self.trash_dir.glob(f"*{SUFFIX}") if p.is_file()]
        return sorted(files, key=lambda p: p.stem.rsplit("@", 1)[-1], reverse=True)

    def _prune_trash(self) -> builtins.list[Path]:
        """Remove the versions beyond :attr:`trash_keep` and :attr:`trash_max_bytes` (oldest
        first; the newest is always kept); returns the removed files."""
        total, removed, full = 0, [], False
        for i, f in enumerate(self._trash_files()):
            try:
                size = f.stat().st_size
            except OSError:
                continue
            limit = self.trash_max_bytes
            full = full or i >= self.trash_keep or (limit is not None and total + size > limit)
            if i > 0 and full:
                f.unlink(missing_ok=True)
                removed.append(f)
            else:
                total += size
        return removed

    def trash(self) -> builtins.list[ModelRow]:  # (list: the method above)
        """The trashed models, newest first; ``name`` is the name it had, ``path`` its file.

        The trash keeps the newest :attr:`trash_keep` versions (default
        :data:`TRASH_KEEP` = 20) and at most :attr:`trash_max_bytes` in all (default
        :data:`TRASH_MAX_BYTES` = 1 GiB); older versions are removed as new ones arrive, the
        newest is always kept (see :attr:`trash_policy`)."""
        return [self._row(p, p.stem.rsplit("@", 1)[0]) for p in self._trash_files()]

    def restore(self, name: str, new_name: str | None = None) -> Path:
        """Bring back the most recently trashed model called ``name`` (as ``new_name`` if
        given, e.g. when ``name`` is taken again)."""
        rows = [r for r in self.trash() if r.name == name]
        if not rows:
            have = sorted({r.name for r in self.trash()})
            raise ModelFileError(f"No model {name!r} in the trash; the trash holds {have}.")
        target = new_name or name
        check_name(target)
        self._free(target)
        src = Path(rows[0].path)
        if target == name:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, self.path(target))  # never replaces a model saved meanwhile
            except FileExistsError:
                self._free(target)
                raise
            except OSError:
                os.replace(src, self.path(target))
            else:
                src.unlink()
            return self.path(target)
        out = self._write_as(src, target)
        src.unlink()
        return out

    def empty_trash(self) -> int:
        """Delete the trashed models for good; returns how many were removed."""
        if not self.trash_dir.is_dir():
            return 0
        files = list(self.trash_dir.glob(f"*{SUFFIX}"))
        for p in files:
            p.unlink()
        return len(files)

    # -- exchange ----------------------------------------------------------------------------
    def export_target(self, name: str, path: str | os.PathLike[str]) -> Path:
        """The file :meth:`export` writes for ``path``: ``path`` itself, ``<folder>/<name>.nbseg``
        for a folder, ``path.nbseg`` when it has no suffix."""
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
            raise InputError(
                f"ModelLibrary.export: path must be a file or folder path, got {path!r}."
            )
        out = Path(os.fspath(path)).expanduser()
        if out.is_dir():
            out = out / f"{check_name(name)}{SUFFIX}"
        elif out.suffix == "":
            out = out.with_suffix(SUFFIX)
        return out

    def export(self, name: str, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the model as one portable ``.nbseg`` file (weights + all metadata) at
        ``path`` (a folder: ``<folder>/<name>.nbseg``), atomically. An existing file there
        is refused (:class:`InputError`) unless ``overwrite``."""
        src = self._existing(name)
        out = check_overwrite(self.export_target(name, path), overwrite)
        return atomic_write_bytes(out, src.read_bytes())

    def export_bioimageio(
        self, name: str, path: str | os.PathLike[str], overwrite: bool = False, **kwargs: Any
    ) -> Path:
        """Write the model as a bioimage.io package (:func:`nbseg.store.export.
        export_bioimageio`; ``kwargs``: ``authors``, ``license``, ``cite``, ``sample``) at
        ``path`` (a folder: ``<folder>/<name>.zip``)."""
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "":
            raise InputError(
                f"ModelLibrary.export_bioimageio: path must be a file or folder path, got {path!r}."
            )
        out = Path(os.fspath(path)).expanduser()
        if out.is_dir():
            out = out / f"{check_name(name)}.zip"
        model = self.load(name)
        return export_bioimageio(model, out, overwrite=overwrite, **kwargs)

    def import_(
        self, path: str | os.PathLike[str], name: str | None = None, overwrite: bool = False
    ) -> Path:
        """Validate a model file and add it to the library (as ``name``, default: its
        model's name). The file must be an nbseg safetensors file whose weights fit the
        network its metadata describes; pickles, TorchScript archives and other files are
        refused without executing anything."""

        src = Path(path)
        state, meta = read_model_file(src)  # safetensors only: raises on anything else
        model = Model.from_parts(state, meta, repr(str(src)))  # checks spec, weights, classes
        target = check_name(name if name is not None else model.spec.name)
        if self.exists(target):
            if not overwrite:
                raise ModelFileError(
                    f"The library already holds a model {target!r}; import under another name "
                    "or pass overwrite=True (the old one goes to the trash)."
                )
            self._keep_in_trash(self.path(target))
        meta = dict(meta)
        meta["spec"] = dict(meta["spec"], name=target)
        return write_model_file(self.path(target), state, meta)
