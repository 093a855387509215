"""Widget rows generated from setting declarations (:mod:`nbseg.settings`).

:class:`SettingsForm` shows every setting of a :class:`~nbseg.settings.Settings` class as a
labelled row (label, unit and tooltip from the declaration), picks the widget from the
setting's kind (Dropdown for choices, Checkbox for booleans, bounded integer fields, sliders
where declared, a range slider for ``(min, max)`` pairs, text for patch sizes, an optional
number with a "no limit" box, a mode + custom-values pair for class weights), reads the
values back through the kind's parser (so the panel and the core share one set of rules)
and disables rows whose ``enabled_if`` condition does not hold. A new setting declared in
the core shows up here without any edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets

from ..settings import (
    Bool,
    Choice,
    ClassWeights,
    Float,
    Int,
    Nested,
    PatchSize,
    Range,
    Setting,
    Settings,
)
from . import style

__all__ = ["ClassWeightsField", "OptionalNumber", "SettingsForm", "widget_for"]


def _field() -> widgets.Layout:
    return widgets.Layout(width="220px")


def _wide() -> widgets.Layout:
    return widgets.Layout(width="320px")


class OptionalNumber(widgets.HBox):
    """A number that may be "none" (e.g. *Time limit*: no limit): a checkbox that enables
    the number. ``value`` is ``None`` or a float."""

    def __init__(self, value: float | None, none_text: str, default: float = 10.0) -> None:
        self.enabled = widgets.Checkbox(
            value=value is not None,
            description="",
            indent=False,
            layout=widgets.Layout(width="28px"),
        )
        self.number = widgets.FloatText(
            value=float(value) if value is not None else default,
            disabled=value is None,
            layout=widgets.Layout(width="120px"),
        )
        self.none_text = none_text
        self.note = widgets.Label(
            "" if value is not None else none_text, layout=widgets.Layout(width="auto")
        )
        super().__init__([self.enabled, self.number, self.note])
        self.enabled.observe(self._sync, "value")

    def _sync(self, _change: Any = None) -> None:
        self.number.disabled = not self.enabled.value
        self.note.value = "" if self.enabled.value else self.none_text

    @property
    def value(self) -> float | None:
        return float(self.number.value) if self.enabled.value else None

    @value.setter
    def value(self, v: float | None) -> None:
        if v is not None:
            self.number.value = float(v)
        self.enabled.value = v is not None
        self._sync()

    @property
    def disabled(self) -> bool:
        return bool(self.enabled.disabled)

    @disabled.setter
    def disabled(self, flag: bool) -> None:
        self.enabled.disabled = flag
        self.number.disabled = flag or not self.enabled.value

    def value_widgets(self) -> list[widgets.Widget]:
        return [self.enabled, self.number]


class ClassWeightsField(widgets.HBox):
    """Class weights: a mode Dropdown (uniform / by frequency / custom) and the Text of
    custom weights. ``value`` is ``"uniform"``, ``"frequency"`` or a list of floats (reading
    it raises :class:`~nbseg.ParamsError` for custom text that is not numbers)."""

    def __init__(self, value: str | list[float]) -> None:
        self.mode = widgets.Dropdown(
            options=[("Uniform", "uniform"), ("By frequency", "frequency"), ("Custom", "custom")],
            value="uniform",
            layout=widgets.Layout(width="140px"),
        )
        self.custom = widgets.Text(
            value="",
            placeholder="one weight per class, e.g. 1, 2.5",
            continuous_update=False,
            layout=widgets.Layout(width="200px"),
        )
        super().__init__([self.mode, self.custom])
        self.mode.observe(self._sync, "value")
        self.value = value

    def _sync(self, _change: Any = None) -> None:
        self.custom.disabled = self.mode.value != "custom"

    @property
    def value(self) -> str | list[float]:
        if self.mode.value != "custom":
            return str(self.mode.value)
        return ClassWeights.parse_weights(self.custom.value)

    @value.setter
    def value(self, v: str | list[float]) -> None:
        if isinstance(v, str):
            self.mode.value = v
        else:
            self.custom.value = ", ".join(f"{w:g}" for w in v)
            self.mode.value = "custom"
        self._sync()

    @property
    def disabled(self) -> bool:
        return bool(self.mode.disabled)

    @disabled.setter
    def disabled(self, flag: bool) -> None:
        self.mode.disabled = flag
        self.custom.disabled = flag or self.mode.value != "custom"

    def value_widgets(self) -> list[widgets.Widget]:
        return [self.mode, self.custom]


class _TextField(widgets.Text):
    """A Text whose ``parsed`` value goes through a setting kind's parser."""


def widget_for(s: Setting, value: Any) -> widgets.Widget:
    """The widget that edits setting ``s`` (showing ``value``)."""
    kind = s.kind
    if isinstance(kind, Choice):
        options = list(kind.choices)
        if value not in options:
            options.append(value)
        return widgets.Dropdown(options=options, value=value, layout=_field())
    if isinstance(kind, Bool):
        return widgets.Checkbox(value=bool(value), indent=False, layout=_field())
    if isinstance(kind, Int) and not kind.optional:
        if kind.minimum is not None or kind.maximum is not None:
            return widgets.BoundedIntText(
                value=int(value),
                min=kind.minimum if kind.minimum is not None else -(10**9),
                max=kind.maximum if kind.maximum is not None else 10**9,
                layout=_field(),
            )
        return widgets.IntText(value=int(value), layout=_field())
    if isinstance(kind, Float) and kind.optional:
        return OptionalNumber(value, kind.none_text)
    if isinstance(kind, Float):
        if s.widget == "slider" and kind.minimum is not None and kind.maximum is not None:
            return widgets.FloatSlider(
                value=float(value),
                min=kind.minimum,
                max=kind.maximum,
                step=s.step or (kind.maximum - kind.minimum) / 100,
                readout_format=".2f" if (s.step or 1) < 1 else ".0f",
                continuous_update=False,
                layout=_wide(),
            )
        return widgets.FloatText(value=float(value), layout=_field())
    if isinstance(kind, Range):
        lo, hi = s.widget_range or (kind.minimum or 0.0, kind.maximum or 4.0)
        v = tuple(float(x) for x in value)
        return widgets.FloatRangeSlider(
            value=v,
            min=min(lo, v[0]),
            max=max(hi, v[1]),
            step=s.step or 0.05,
            readout_format=".2f",
            continuous_update=False,
            layout=_wide(),
        )
    if isinstance(kind, ClassWeights):
        return ClassWeightsField(value)
    if isinstance(kind, PatchSize):
        return _TextField(
            value=kind.format(value),
            placeholder="auto,  64  or  16, 64, 64",
            continuous_update=False,
            layout=_field(),
        )
    return _TextField(value=kind.format(value), continuous_update=False, layout=_field())


def _read(s: Setting, w: widgets.Widget) -> Any:
    if isinstance(w, _TextField):
        return s.kind.parse(w.value)
    value = w.value
    if isinstance(value, list):
        value = tuple(value)
    return value


def _write(s: Setting, w: widgets.Widget, value: Any) -> None:
    if isinstance(w, _TextField):
        w.value = s.kind.format(value)
    elif isinstance(w, widgets.Dropdown):
        if value not in w.options:
            w.options = [*w.options, value]
        w.value = value
    elif isinstance(w, widgets.FloatRangeSlider):
        lo, hi = (float(v) for v in value)
        w.min, w.max = min(w.min, lo), max(w.max, hi)
        w.value = (lo, hi)
    elif isinstance(w, widgets.FloatSlider):
        w.max = max(w.max, float(value))
        w.value = float(value)
    else:
        w.value = value


def value_widgets(w: widgets.Widget) -> list[widgets.Widget]:
    """The widgets whose ``value`` changes when the user edits ``w``."""
    inner = getattr(w, "value_widgets", None)
    return inner() if callable(inner) else [w]


class SettingsForm:
    """The widgets of one :class:`Settings` class, one row per (non-nested) setting.

    Attributes
    ----------
    cls
        The settings class.
    fields
        ``{setting name: widget}``.
    settings
        ``{setting name: Setting}`` (the declarations shown).
    """

    def __init__(self, cls: type[Settings], values: Settings | None = None) -> None:
        self.cls = cls
        values = values if values is not None else cls()
        self.settings: dict[str, Setting] = {
            s.name: s for s in cls.settings() if not isinstance(s.kind, Nested)
        }
        self.fields: dict[str, widgets.Widget] = {
            name: widget_for(s, getattr(values, name)) for name, s in self.settings.items()
        }

    # -- layout -----------------------------------------------------------------------------
    def row(self, name: str) -> widgets.HBox:
        s = self.settings[name]
        tip = f"{s.help} — {s.kind.describe()}"
        return style.labelled(s.full_label, self.fields[name], tip)

    def sections(self, skip: Iterable[str] = ()) -> list[widgets.VBox]:
        """One titled section per declared group (in the class's order)."""
        skipped = set(skip)
        out = []
        for group, items in self.cls.groups().items():
            names = [s.name for s in items if s.name in self.fields and group not in skipped]
            if names:
                out.append(style.section(group, *(self.row(n) for n in names)))
        return out

    def group_names(self, group: str) -> list[str]:
        return [s.name for s in self.cls.groups().get(group, []) if s.name in self.fields]

    # -- values -----------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """``{name: value}`` read from the widgets (text parsed by the setting's kind;
        raises :class:`~nbseg.ParamsError` for text the kind cannot parse)."""
        return {name: _read(s, self.fields[name]) for name, s in self.settings.items()}

    def show(self, obj: Settings) -> None:
        """Show the values of ``obj`` in the widgets."""
        for name, s in self.settings.items():
            _write(s, self.fields[name], getattr(obj, name))

    def observe(self, handler: Callable[[Any], None]) -> None:
        for w in self.fields.values():
            for inner in value_widgets(w):
                inner.observe(handler, "value")

    def sync_enabled(self, current: dict[str, Any] | None = None) -> None:
        """Disable the rows whose ``enabled_if`` condition does not hold."""
        for name, s in self.settings.items():
            if s.enabled_if is None:
                continue
            other, allowed = s.enabled_if
            w = self.fields.get(other)
            if w is None:
                continue
            try:
                value = _read(self.settings[other], w)
            except Exception:  # unparsable text elsewhere: leave the row enabled
                value = allowed[0]
            self.fields[name].disabled = value not in allowed
