"""`ModelLibrary`: a folder of ``.nbseg`` model files (Dragonfly's model list).

One file per model, ``<root>/<name>.nbseg``; the library name is the file name and is kept
equal to the model's ``spec.name``. Nothing is silently lost: :meth:`ModelLibrary.delete`
and an overwriting :meth:`ModelLibrary.save` move the old file to ``<root>/.trash/``, from
where :meth:`ModelLibrary.restore` brings it back until :meth:`ModelLibrary.empty_trash`.
Every write is atomic. Reading and importing never execute code from a file (safetensors
tensors + JSON metadata; a file that is anything else, e.g. a pickle, is refused).

The default root is ``$NBSEG_MODELS`` or ``~/.nbseg/models``.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelFileError
from ..model import Model, load_model
from .fileformat import atomic_write_bytes, read_model_file, read_model_meta, write_model_file

if TYPE_CHECKING:
    from ..model import Model

SUFFIX = ".nbseg"
TRASH = ".trash"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.()+-]{0,99}$")


def default_root() -> Path:
    """``$NBSEG_MODELS`` or ``~/.nbseg/models``."""
    env = os.environ.get("NBSEG_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".nbseg" / "models"


def check_name(name: Any) -> str:
    """A library name: 1-100 characters, letters, digits, space and ``_ . ( ) + -``, not
    starting with a dot or a space (it becomes a file name)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((" ", ".")):
        raise ModelFileError(
            f"Invalid model name {name!r}: use 1-100 letters, digits, spaces or _ . ( ) + -, "
            "starting with a letter or digit (it becomes a file name)."
        )
    return name


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

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

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
        ``name``. An existing model of that name is refused unless ``overwrite``, and then
        moved to the trash first (``trash_old=False`` replaces it atomically instead, e.g.
        after editing class names)."""
        name = check_name(name if name is not None else model.spec.name)
        p = self.path(name)
        if p.exists():
            if not overwrite:
                raise ModelFileError(
                    f"The library already holds a model {name!r}; choose another name or pass "
                    "overwrite=True (the old one goes to the trash)."
                )
            if trash_old:
                self._to_trash(p)
        model.spec.name = name
        return model.save(p)

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

    def _to_trash(self, p: Path) -> Path:
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = self.trash_dir / f"{p.stem}@{stamp}{SUFFIX}"
        os.replace(p, target)
        return target

    def trash(self) -> builtins.list[ModelRow]:  # (list: the method above)
        """The trashed models, newest first; ``name`` is the name it had, ``path`` its file."""
        if not self.trash_dir.is_dir():
            return []
        files = sorted(self.trash_dir.glob(f"*{SUFFIX}"), key=lambda p: p.stem.rsplit("@", 1)[-1])
        return [self._row(p, p.stem.rsplit("@", 1)[0]) for p in reversed(files)]

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
            os.replace(src, self.path(target))
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
    def export(self, name: str, path: str | os.PathLike[str]) -> Path:
        """Write the model as one portable ``.nbseg`` file (weights + all metadata) at
        ``path`` (a folder: ``<folder>/<name>.nbseg``)."""
        src = self._existing(name)
        out = Path(path)
        if out.is_dir():
            out = out / src.name
        elif out.suffix == "":
            out = out.with_suffix(SUFFIX)
        return atomic_write_bytes(out, src.read_bytes())

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
            self._to_trash(self.path(target))
        meta = dict(meta)
        meta["spec"] = dict(meta["spec"], name=target)
        return write_model_file(self.path(target), state, meta)
