"""Settings declared once.

Every user-facing setting of nbseg (:class:`~nbseg.TrainingParams`,
:class:`~nbseg.AugmentationParams`, :class:`~nbseg.ModelSpec`, the inference settings and the
trainer options) is one dataclass field declared with :func:`setting`: its type (a
:class:`Kind`), default, bounds or choices, unit, a label, one line of help and the group it
shows in. Everything else is derived from that one declaration:

- validation with messages that name the setting and its valid range
  (:meth:`Settings.validate`),
- dict / JSON / YAML load and save with unknown-key errors (:meth:`Settings.from_dict`,
  :meth:`Settings.to_dict`, ...),
- command-line flags (:func:`add_arguments`, :func:`parsed_overrides`),
- the widget rows of the panels (``nbseg.ui.forms``),
- the parameter tables of the docs (:func:`markdown_table`, ``docs/settings.md``).

Adding a setting is one edit: a field with ``setting(...)`` in its class. Cross-field rules
(e.g. one class weight per class) live in the class's ``_check`` method.

Example::

    @dataclass
    class Example(Settings):
        _title = "example settings"
        epochs: int = setting(20, Int(minimum=1), "Epochs", "Passes over the patches")
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import NbsegError, ParamsError

__all__ = [
    "Bool",
    "Choice",
    "ClassWeights",
    "Float",
    "Int",
    "Invalid",
    "Kind",
    "Mapping",
    "Nested",
    "PatchSize",
    "Range",
    "Setting",
    "Settings",
    "Text",
    "TextList",
    "add_arguments",
    "check_keys",
    "markdown_table",
    "parsed_overrides",
    "setting",
]

T = TypeVar("T", bound="Settings")


class Invalid(Exception):
    """Raised by a :class:`Kind` with what is wrong ("must be >= 1"); the caller names the
    setting."""


# -- kinds -------------------------------------------------------------------------------------
class Kind:
    """The type of a setting: checks and normalises values, parses and formats text."""

    name: ClassVar[str] = "value"
    python_type: ClassVar[str] = "Any"

    def check(self, value: Any) -> Any:
        """The normalised value, or :class:`Invalid` saying what is wrong."""
        return value

    def parse(self, text: str) -> Any:
        """A value from command-line / text-field text (then :meth:`check`-ed)."""
        return text

    def format(self, value: Any) -> str:
        """Text for a text field or a docs table."""
        return "" if value is None else str(value)

    def plain(self, value: Any) -> Any:
        """A JSON/YAML-friendly form of a checked value."""
        return value

    def describe(self) -> str:
        """The valid values in words, for help texts and docs."""
        return ""


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        import numpy as np

        return isinstance(value, np.number) and not isinstance(value, np.bool_)
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False


def _as_float(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Invalid("must be a number") from None
    elif not _is_number(value):
        raise Invalid("must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise Invalid("must be finite")
    return value


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    def fmt(v: float) -> str:
        return f"{v:g}"

    if lo is not None and hi is not None:
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        return f"must lie in {left}{fmt(lo)}, {fmt(hi)}{right}"
    if lo is not None:
        return f"must be {'>' if lo_open else '>='} {fmt(lo)}"
    if hi is not None:
        return f"must be {'<' if hi_open else '<='} {fmt(hi)}"
    return ""


@dataclass(frozen=True)
class Float(Kind):
    """A finite real number, optionally bounded (``open_*``: the bound itself is refused)."""

    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    optional: bool = False  # None allowed (shown as ``none_text``)
    none_text: str = "none"
    name: ClassVar[str] = "float"
    python_type: ClassVar[str] = "float"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        v = _as_float(value)
        lo, hi = self.minimum, self.maximum
        if (lo is not None and (v < lo or (self.open_min and v == lo))) or (
            hi is not None and (v > hi or (self.open_max and v == hi))
        ):
            raise Invalid(self.describe())
        return v

    def parse(self, text: str) -> Any:
        t = str(text).strip()
        if self.optional and t.lower() in ("", "none", "null", self.none_text.lower()):
            return None
        return t

    def format(self, value: Any) -> str:
        return self.none_text if value is None else f"{value:g}"

    def describe(self) -> str:
        text = _bounds_text(self.minimum, self.maximum, self.open_min, self.open_max)
        if self.optional:
            text = f"{text} (or None: {self.none_text})" if text else f"None: {self.none_text}"
        return text or "a number"


@dataclass(frozen=True)
class Int(Kind):
    """An integer (``True``/``False`` and ``3.5`` are refused), optionally bounded."""

    minimum: int | None = None
    maximum: int | None = None
    optional: bool = False
    none_text: str = "none"
    name: ClassVar[str] = "int"
    python_type: ClassVar[str] = "int"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise Invalid("must be an integer") from None
        if not _is_number(value) or float(value) != int(value):
            raise Invalid("must be an integer")
        v = int(value)
        if (self.minimum is not None and v < self.minimum) or (
            self.maximum is not None and v > self.maximum
        ):
            raise Invalid(f"{self.describe()} (an integer)")
        return v

    def parse(self, text: str) -> Any:
        t = str(text).strip()
        if self.optional and t.lower() in ("", "none", "null", self.none_text.lower()):
            return None
        return t

    def format(self, value: Any) -> str:
        return self.none_text if value is None else str(value)

    def describe(self) -> str:
        text = _bounds_text(self.minimum, self.maximum, False, False) or "an integer"
        if self.optional:
            text += f" (or None: {self.none_text})"
        return text


@dataclass(frozen=True)
class Bool(Kind):
    """``True`` or ``False`` (text: true/false, yes/no, on/off, 1/0)."""

    name: ClassVar[str] = "bool"
    python_type: ClassVar[str] = "bool"

    def check(self, value: Any) -> Any:
        try:
            import numpy as np

            if isinstance(value, np.bool_):
                return bool(value)
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(value, bool):
            raise Invalid("use True or False")
        return value

    def parse(self, text: str) -> Any:
        t = str(text).strip().lower()
        if t in ("true", "yes", "on", "1"):
            return True
        if t in ("false", "no", "off", "0"):
            return False
        return text  # refused by check with the setting's name

    def format(self, value: Any) -> str:
        return "true" if value else "false"

    def describe(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class Choice(Kind):
    """One of ``choices``; ``extra`` (a regex) admits a family more, e.g. ``cuda:N``."""

    choices: tuple[str, ...] = ()
    extra: str | None = None
    extra_text: str = ""
    optional: bool = False  # None allowed (e.g. "nbseg's default")
    none_text: str = "default"
    name: ClassVar[str] = "choice"
    python_type: ClassVar[str] = "str"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, str) and (
            value in self.choices or (self.extra and re.fullmatch(self.extra, value))
        ):
            return value
        raise Invalid(f"choose one of {self.choices}{self._more()}")

    def _more(self) -> str:
        return f" or {self.extra_text}" if self.extra_text else ""

    def parse(self, text: str) -> Any:
        t = str(text).strip()
        return None if self.optional and t.lower() in ("none", "null") else t

    def format(self, value: Any) -> str:
        return self.none_text if value is None else str(value)

    def describe(self) -> str:
        text = ", ".join(repr(c) for c in self.choices) + self._more()
        return f"{text} (or None: {self.none_text})" if self.optional else text


@dataclass(frozen=True)
class Text(Kind):
    """Free text."""

    optional: bool = False
    name: ClassVar[str] = "text"
    python_type: ClassVar[str] = "str"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise Invalid("must be text")
        return value

    def describe(self) -> str:
        return "text"


@dataclass(frozen=True)
class TextList(Kind):
    """A list of names (``None`` = the default names)."""

    optional: bool = True
    name: ClassVar[str] = "names"
    python_type: ClassVar[str] = "list[str]"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise Invalid("give a list of names")
        return list(value)

    def format(self, value: Any) -> str:
        return "default" if value is None else ", ".join(value)

    def describe(self) -> str:
        return "a list of names"


@dataclass(frozen=True)
class Range(Kind):
    """A ``(min, max)`` pair of numbers within ``[minimum, maximum]`` (``positive``: > 0)."""

    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    name: ClassVar[str] = "range"
    python_type: ClassVar[str] = "tuple[float, float]"

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            value = [p for p in re.split(r"[,;\s]+", value.strip()) if p]
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise Invalid("give a (min, max) pair, e.g. (0.9, 1.1)") from None
        try:
            lo, hi = _as_float(lo), _as_float(hi)
        except Invalid as err:
            raise Invalid(f"both values {err}") from None
        if self.positive and lo <= 0:
            raise Invalid("both factors must be > 0")
        if lo > hi:
            raise Invalid(f"min {lo:g} is larger than max {hi:g}")
        if (self.minimum is not None and lo < self.minimum) or (
            self.maximum is not None and hi > self.maximum
        ):
            raise Invalid(f"factors must lie in {self.minimum:g} … {self.maximum:g}")
        return (lo, hi)

    def format(self, value: Any) -> str:
        return f"{value[0]:g}, {value[1]:g}"

    def plain(self, value: Any) -> Any:
        return [float(v) for v in value]

    def describe(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"(min, max) within {self.minimum:g} … {self.maximum:g}"
        return "(min, max)" + (", both > 0" if self.positive else "")


@dataclass(frozen=True)
class PatchSize(Kind):
    """``None`` (auto), one side ``>= minimum`` or 2-3 sides (``(H, W)``, ``(D, H, W)``)."""

    minimum: int = 4
    name: ClassVar[str] = "patch"
    python_type: ClassVar[str] = "int | tuple[int, ...] | None"

    def check(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = self.parse_strict(value)
            if value is None:
                return None
        sizes = (value,) if _is_number(value) else value
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise Invalid(self._what()) from None
        if not 1 <= len(sizes) <= 3 or any(
            not _is_number(s) or float(s) != int(s) or int(s) < self.minimum for s in sizes
        ):
            raise Invalid(self._what())
        sizes = tuple(int(s) for s in sizes)
        return sizes[0] if _is_number(value) else sizes

    def _what(self) -> str:
        return f"use an int >= {self.minimum} or a tuple of 2-3 ints >= {self.minimum}"

    @staticmethod
    def parse_strict(text: str) -> int | tuple[int, ...] | None:
        """``"auto"``/``""`` → None, ``"64"`` → 64, ``"16, 64, 64"`` or ``"16x64x64"`` →
        a tuple; raises :class:`~nbseg.ParamsError` for anything else."""
        t = str(text).strip()
        if t.lower() in ("", "auto", "none"):
            return None
        parts = [p for p in re.split(r"[,x×\s()\[\]]+", t) if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if not values or len(values) > 3:
            raise ParamsError(
                f"Patch size {text!r} is not understood: give 'auto', one integer (e.g. 64) or "
                "2-3 integers separated by commas (e.g. 16, 64, 64)."
            )
        return values[0] if len(values) == 1 else tuple(values)

    def parse(self, text: str) -> Any:
        return self.parse_strict(text)

    def format(self, value: Any) -> str:
        if value is None:
            return "auto"
        return str(value) if isinstance(value, int) else ", ".join(str(v) for v in value)

    def plain(self, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    def describe(self) -> str:
        return f"'auto' (None), a side >= {self.minimum}, or 2-3 sides"


@dataclass(frozen=True)
class ClassWeights(Kind):
    """``"uniform"``, ``"frequency"`` or one weight >= 0 per class (at least one > 0)."""

    modes: tuple[str, ...] = ("uniform", "frequency")
    name: ClassVar[str] = "weights"
    python_type: ClassVar[str] = "str | list[float]"

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            if value in self.modes:
                return value
            raise Invalid("use 'uniform', 'frequency' or a list")
        try:
            w = [_as_float(v) for v in value]
        except (TypeError, Invalid):
            raise Invalid("use 'uniform', 'frequency' or a list of numbers") from None
        if not w or any(v < 0 for v in w) or not any(v > 0 for v in w):
            raise Invalid("weights must be >= 0 with at least one > 0")
        return w

    @staticmethod
    def parse_weights(text: str) -> str | list[float]:
        """``"uniform"`` / ``"frequency"`` or ``"1, 2.5"`` → ``[1.0, 2.5]``; raises
        :class:`~nbseg.ParamsError` for text that is neither."""
        t = str(text).strip()
        if t in ("uniform", "frequency"):
            return t
        try:
            weights = [float(v) for v in re.split(r"[,;\s]+", t) if v]
        except ValueError:
            weights = []
        if not weights:
            raise ParamsError(
                f"Custom class weights {t!r} are not understood: give one number per class "
                "separated by commas, e.g. 1, 2.5."
            )
        return weights

    def parse(self, text: str) -> Any:
        return self.parse_weights(text)

    def format(self, value: Any) -> str:
        return value if isinstance(value, str) else ", ".join(f"{v:g}" for v in value)

    def describe(self) -> str:
        return "'uniform', 'frequency' or one weight >= 0 per class"


@dataclass(frozen=True)
class Mapping(Kind):
    """A mapping of names to values (checked elsewhere, e.g. by the architecture)."""

    name: ClassVar[str] = "mapping"
    python_type: ClassVar[str] = "dict[str, Any]"

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise Invalid('give a mapping, e.g. {"depth": 3}') from None
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise Invalid('give a mapping of names to values, e.g. {"depth": 3}')
        return dict(value)

    def format(self, value: Any) -> str:
        return json.dumps(value)

    def describe(self) -> str:
        return "a mapping"


@dataclass(frozen=True)
class Nested(Kind):
    """Another :class:`Settings` class (a mapping in files; ``None``/``False`` = its
    ``disabled()`` value when it has one)."""

    cls: type = object
    name: ClassVar[str] = "nested"

    def check(self, value: Any) -> Any:
        if isinstance(value, self.cls):
            return value
        if isinstance(value, dict):
            return self.cls.from_dict(value)  # type: ignore[attr-defined]
        if (value is None or value is False) and hasattr(self.cls, "disabled"):
            return self.cls.disabled()
        raise Invalid(f"give a {self.cls.__name__} or a mapping of its settings")

    def plain(self, value: Any) -> Any:
        return value.to_dict()

    def describe(self) -> str:
        return f"{self.cls.__name__} (see its table)"


@dataclass(frozen=True)
class Devices(Kind):
    """Lightning ``devices``: ``None`` (nbseg's default), ``"auto"``, an integer >= 1 (-1 =
    all) or a list of device ids."""

    name: ClassVar[str] = "devices"
    python_type: ClassVar[str] = "int | list[int] | str | None"

    def check(self, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, str):
            t = value.strip()
            if re.fullmatch(r"-?\d+", t):
                value = int(t)
            elif re.fullmatch(r"\d+(\s*,\s*\d+)+", t):
                value = [int(v) for v in t.split(",")]
        if _is_number(value) and float(value) == int(value) and (value >= 1 or value == -1):
            return int(value)
        if (
            isinstance(value, list)
            and value
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        ):
            return value
        raise Invalid("use an integer >= 1 (-1 = all), a list of device ids or 'auto'")

    def format(self, value: Any) -> str:
        if value is None:
            return "one device"
        return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)

    def describe(self) -> str:
        return "an integer >= 1 (-1 = all), a list of device ids, or 'auto'"


def check_keys(
    data: Any,
    known: Sequence[str],
    *,
    what: str,
    where: str = "",
    error: type[NbsegError] = ParamsError,
) -> dict[str, Any]:
    """``data`` as a dict; ``error`` naming the unknown keys and the valid ones otherwise.
    The one unknown-key check of settings, configs and files."""
    prefix = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise error(f"{prefix}expected a mapping of {what}, got {type(data).__name__}.")
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise error(f"{prefix}unknown {what} {unknown}; valid names: {sorted(known)}.")
    return dict(data)


# -- declarations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """The one declaration of a setting (kept in the dataclass field's metadata).

    Attributes
    ----------
    name
        The field name (filled in by :meth:`Settings.settings`).
    kind
        Type, bounds or choices: a :class:`Kind`.
    label, help
        The panel's row label and a one-line description (tooltip, CLI help, docs).
    group
        The section it shows in (``"Basic"`` first; classes order their groups).
    unit
        Unit of the value (``"voxels"``, ``"min"``, ...), shown with the label.
    widget
        A hint for the panel: ``""`` (by kind), ``"slider"`` (needs bounds), ``"hidden"``.
    step
        The slider step.
    widget_range
        ``(min, max)`` of a range slider when the valid range is wider than useful.
    enabled_if
        ``(other setting, allowed values)``: the widget is disabled unless the other
        setting has one of those values (e.g. momentum only for SGD / RMSprop).
    cli
        Whether the setting gets a command-line flag.
    """

    kind: Kind
    label: str
    help: str
    group: str = "Basic"
    unit: str = ""
    widget: str = ""
    step: float | None = None
    widget_range: tuple[float, float] | None = None
    enabled_if: tuple[str, tuple[Any, ...]] | None = None
    cli: bool = True
    name: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def full_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


def setting(
    default: Any,
    kind: Kind,
    label: str,
    help: str,
    *,
    group: str = "Basic",
    unit: str = "",
    widget: str = "",
    step: float | None = None,
    widget_range: tuple[float, float] | None = None,
    enabled_if: tuple[str, tuple[Any, ...]] | None = None,
    cli: bool = True,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field carrying its :class:`Setting` declaration (``factory`` for
    mutable defaults)."""
    decl = Setting(
        kind=kind,
        label=label,
        help=help,
        group=group,
        unit=unit,
        widget=widget,
        step=step,
        widget_range=widget_range,
        enabled_if=enabled_if,
        cli=cli,
    )
    meta = {"nbseg": decl}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Settings:
    """Base of the settings dataclasses: validation, dict/JSON/YAML, CLI flags and docs
    from the field declarations.

    Subclasses set ``_title`` (how their unknown-key error names them, e.g. "training
    parameters"), ``_owner`` (the prefix of error messages, e.g. ``"TrainingParams"``),
    ``_error`` (the exception type) and ``_groups`` (the order of the groups), and may
    override ``_check`` for rules that involve several settings.
    """

    _title: ClassVar[str] = "settings"
    _owner: ClassVar[str] = ""
    _error: ClassVar[type[NbsegError]] = ParamsError
    _groups: ClassVar[tuple[str, ...]] = ("Basic",)

    # -- declarations -----------------------------------------------------------------------
    @classmethod
    def settings(cls) -> list[Setting]:
        """Every declared setting, in field order."""
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            decl = f.metadata.get("nbseg")
            if decl is not None:
                out.append(dataclasses.replace(decl, name=f.name))
        return out

    @classmethod
    def setting(cls, name: str) -> Setting:
        for s in cls.settings():
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def groups(cls) -> dict[str, list[Setting]]:
        """``{group: [settings]}`` in the class's group order (undeclared groups last)."""
        out: dict[str, list[Setting]] = {g: [] for g in cls._groups}
        for s in cls.settings():
            out.setdefault(s.group, []).append(s)
        return {g: items for g, items in out.items() if items}

    @classmethod
    def defaults(cls: type[T]) -> T:
        return cls()

    # -- validation -------------------------------------------------------------------------
    def _fail(self, name: str, value: Any, what: str) -> NbsegError:
        prefix = f"{self._owner}." if self._owner else ""
        return self._error(f"{prefix}{name}={value!r} is invalid: {what}.")

    def validate(self: T, **context: Any) -> T:
        """Check (and normalise) every value; return ``self``.

        Raises the class's error type naming the first bad setting, its value and the valid
        values. ``context`` goes to the cross-field ``_check`` (e.g. ``class_count``).
        """
        for s in self.settings():
            value = getattr(self, s.name)
            try:
                new = s.kind.check(value)
            except Invalid as err:
                raise self._fail(s.name, value, str(err)) from None
            except NbsegError as err:  # a nested settings object
                raise self._error(f"{self._owner or self._title}.{s.name}: {err}") from None
            if isinstance(s.kind, Nested):
                try:
                    new.validate()
                except NbsegError as err:
                    raise self._error(f"{self._owner or self._title}.{s.name}: {err}") from None
            if new is not value:
                object.__setattr__(self, s.name, new)
        self._check(**context)
        return self

    def _check(self, **context: Any) -> None:
        """Rules that involve several settings or context (override)."""

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples): JSON- and YAML-safe."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            decl = f.metadata.get("nbseg")
            if decl is not None and value is not None:
                with contextlib.suppress(Exception):  # an unchecked value: written as is
                    value = decl.kind.plain(value)
            out[f.name] = _plain(value)
        return out

    @classmethod
    def check_keys(cls, data: Any, where: str = "") -> dict[str, Any]:
        """``data`` as a dict, or the class's error naming unknown keys and the valid ones."""
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        return check_keys(data, known, what=cls._title, where=where, error=cls._error)

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        """Build from a mapping (e.g. :meth:`to_dict` output, a YAML file), refusing unknown
        keys, and validate it."""
        obj = cls(**cls.check_keys(data))
        return obj.validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise cls._error(f"Not valid JSON for {cls._title}: {err}.") from None
        return cls.from_dict(data)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """YAML text; written atomically to ``path`` when given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            _atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls: type[T], text_or_path: str | os.PathLike[str]) -> T:
        """From YAML text or a YAML file's path."""
        import yaml

        text = os.fspath(text_or_path)
        if isinstance(text_or_path, os.PathLike) or ("\n" not in text and len(text) < 4096):
            try:
                p = Path(text_or_path)
                if p.is_file():
                    text = p.read_text()
            except OSError:  # too long to be a file name: it is YAML text
                pass
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            where = ""
            mark = getattr(err, "problem_mark", None)
            if mark is not None:
                where = f" (line {mark.line + 1}, column {mark.column + 1})"
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise cls._error(f"Not valid YAML for {cls._title}{where}: {problem}.") from None
        return cls.from_dict(data)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some values changed (not validated: call :meth:`validate`)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str):
        try:
            return value.item()  # numpy scalars
        except (TypeError, ValueError):
            return value
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    import tempfile

    path = path.expanduser()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ParamsError(f"Cannot write {str(path)!r}: {err.strerror or err}.") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- command line ------------------------------------------------------------------------------
def _walk(cls: type[Settings], prefix: str = "") -> Iterator[tuple[str, Setting]]:
    for s in cls.settings():
        if isinstance(s.kind, Nested):
            yield from _walk(s.kind.cls, f"{prefix}{s.name}.")
        elif s.cli:
            yield prefix + s.name, s


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type[Settings],
    *,
    prefix: str = "",
    skip: Sequence[str] = (),
    title: str | None = None,
) -> list[str]:
    """Add one ``--flag`` per setting of ``cls`` (nested settings as ``--augmentation.flip``),
    grouped as the panels group them; returns the dotted names added. The values stay text
    (``None`` when absent) for :func:`parsed_overrides`, which checks them with the setting's
    name in the message."""
    added = []
    groups: dict[str, Any] = {}
    for dotted, s in _walk(cls):
        if dotted in skip:
            continue
        group_name = f"{title or cls.__name__}: {s.group}"
        group = groups.get(group_name) or parser.add_argument_group(group_name)
        groups[group_name] = group
        flag = "--" + (prefix + dotted).replace("_", "-")
        default = _default_of(cls, dotted)
        help_text = f"{s.help} [{s.kind.describe()}; default {s.kind.format(default)}]"
        extra: dict[str, Any] = {"metavar": s.kind.name.upper()}
        if isinstance(s.kind, Choice) and not s.kind.extra:  # argparse lists them
            extra = {"choices": s.kind.choices}
        group.add_argument(
            flag,
            dest=f"setting:{cls.__name__}:{prefix}{dotted}",
            default=None,
            help=help_text.replace("%", "%%"),
            **extra,
        )
        added.append(prefix + dotted)
    return added


def _default_of(cls: type[Settings], dotted: str) -> Any:
    obj: Any = cls()
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def parsed_overrides(
    args: argparse.Namespace, cls: type[Settings], *, prefix: str = ""
) -> dict[str, Any]:
    """``{setting: value}`` of the flags given on the command line (nested as dicts), each
    value parsed by its kind; bad text raises the class's error naming the flag."""
    out: dict[str, Any] = {}
    for key, text in vars(args).items():
        tag = f"setting:{cls.__name__}:{prefix}"
        if not key.startswith(tag) or text is None:
            continue
        dotted = key[len(tag) :]
        owner: type[Settings] = cls
        parts = dotted.split(".")
        for part in parts[:-1]:
            owner = owner.setting(part).kind.cls  # type: ignore[attr-defined]
        s = owner.setting(parts[-1])
        flag = "--" + (prefix + dotted).replace("_", "-")
        try:
            value = s.kind.check(s.kind.parse(text))
        except (Invalid, NbsegError) as err:
            raise cls._error(f"{flag} {text!r} is invalid: {err}.") from None
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


# -- docs --------------------------------------------------------------------------------------
def markdown_table(cls: type[Settings]) -> str:
    """A Markdown table of ``cls``'s settings: name, group, default, valid values, help."""
    rows = ["| setting | group | default | valid values | what it does |", "|---|---|---|---|---|"]
    defaults = cls()
    for s in cls.settings():
        default = getattr(defaults, s.name)
        shown = "–" if isinstance(s.kind, Nested) else f"`{s.kind.format(default)}`"
        unit = f" ({s.unit})" if s.unit else ""
        text = f"{s.help}{unit}".replace("|", "\\|")
        valid = s.kind.describe().replace("must lie in ", "").replace("must be ", "")
        valid = valid.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {s.group} | {shown} | {valid} | {text} |")
    return "\n".join(rows)
