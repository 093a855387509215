"""Shared look of the nbseg panels: CSS, labelled rows, section headers, message box."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import ipywidgets as widgets

from ..errors import NbsegError

CSS = """
<style>
.nbseg-panel { font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px; }
.nbseg-panel .widget-label { min-width: 150px; }
.nbseg-panel .nbseg-compact .widget-label { min-width: 0; }
.nbseg-section { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; margin: 4px 0; }
.nbseg-section-title { font-weight: 600; font-size: 13px; margin: 2px 0 6px 0;
  color: var(--jp-ui-font-color1, #222); }
.nbseg-message-error { color: #a4000f; background: #fdecea; border-left: 4px solid #d32f2f;
  padding: 6px 10px; margin: 4px 0; white-space: pre-wrap; }
.nbseg-message-info { color: #0b3d62; background: #e8f1fb; border-left: 4px solid #1976d2;
  padding: 6px 10px; margin: 4px 0; white-space: pre-wrap; }
.nbseg-message-warning { color: #5f4100; background: #fff4d6; border-left: 4px solid #f0a500;
  padding: 6px 10px; margin: 4px 0; white-space: pre-wrap; }
.nbseg-ratio-ok { color: #1b5e20; font-weight: 600; }
.nbseg-ratio-bad { color: #b71c1c; font-weight: 700; }
.nbseg-toolbar .widget-button { margin: 0 2px 0 0; }
</style>
"""

LABEL_WIDTH = "150px"


def css() -> widgets.HTML:
    """An invisible HTML widget carrying the panels' CSS (include once per panel)."""
    return widgets.HTML(CSS, layout=widgets.Layout(display="none"))


def panel(*children: widgets.Widget, title: str | None = None) -> widgets.VBox:
    items = [css()]
    if title:
        items.append(widgets.HTML(f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>"))
    box = widgets.VBox([*items, *children])
    box.add_class("nbseg-panel")
    return box


def section(title: str, *children: widgets.Widget) -> widgets.VBox:
    head = widgets.HTML(f"<div class='nbseg-section-title'>{html.escape(title)}</div>")
    box = widgets.VBox([head, *children])
    box.add_class("nbseg-section")
    return box


def labelled(label: str, widget: widgets.Widget, tooltip: str = "") -> widgets.HBox:
    """A row ``label | widget`` with aligned labels (a real <label> for keyboard users)."""
    lab = widgets.Label(label, layout=widgets.Layout(width=LABEL_WIDTH), tooltip=tooltip or None)
    # a Box's view has no tooltip support (setting one breaks the view): label it instead
    if tooltip and hasattr(widget, "tooltip") and not isinstance(widget, widgets.Box):
        widget.tooltip = tooltip
    return widgets.HBox([lab, widget])


class MessageBox(widgets.HTML):
    """Errors, warnings and infos shown in a panel (never as a traceback)."""

    def show(self, text: str, kind: str = "info") -> None:
        self.value = f"<div class='nbseg-message-{kind}'>{html.escape(text)}</div>"

    def error(self, err: BaseException | str) -> None:
        if isinstance(err, (NbsegError, str)):
            text = str(err)
        else:
            text = f"{type(err).__name__}: {err}"
        self.show(text, "error")

    def clear(self) -> None:
        self.value = ""

    @property
    def text(self) -> str:
        """The message as plain text (for tests)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.value))


P = ParamSpec("P")
T = TypeVar("T")


def run_reporting(
    box: MessageBox, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """Call ``fn``; show any exception in ``box`` instead of raising. Returns fn's result."""
    try:
        box.clear()
        return fn(*args, **kwargs)
    except Exception as err:  # shown to the user with its fix, not as a traceback
        box.error(err)
        return None


def slider(value: float, low: float, high: float, step: float, readout: str) -> widgets.FloatSlider:
    """A FloatSlider as the panels show them: fixed width, updated on release."""
    return widgets.FloatSlider(
        value=value,
        min=low,
        max=high,
        step=step,
        readout_format=readout,
        continuous_update=False,
        layout=widgets.Layout(width="320px"),
    )


def validation_slider() -> widgets.FloatSlider:
    """The "% of labelled patches kept for validation" slider (Inputs and Training
    parameters panels show the same ``workspace.validation``)."""
    return slider(20.0, 0.0, 50.0, 1.0, ".0f")
