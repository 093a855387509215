"""Shared look of the nbseg panels: CSS, labelled rows, section headers, message box."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import ipywidgets as widgets

from ..errors import NbsegError

CSS = """
<style>
.nbseg-panel { font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px;
  box-sizing: border-box; max-width: 100%; min-width: 0; }
/* Layout that fits the cell, 800 to 1920 px: rows wrap instead of overflowing, a row's cells
   keep their width (no 10 px fields) and are never wider than their box; text is shown
   whole (wrapped when it must), never cut with an ellipsis. */
.nbseg-panel .widget-hbox { flex-wrap: wrap; row-gap: 2px; }
.nbseg-panel .widget-hbox > * { flex-shrink: 0; }
/* table-like rows (the Inputs tab's training sets and their header, class .nbseg-compact)
   keep their columns lined up: the cells shrink together instead of wrapping */
.nbseg-panel .widget-hbox.nbseg-compact, .nbseg-panel .nbseg-compact .widget-hbox {
  flex-wrap: nowrap; }
.nbseg-panel .widget-hbox.nbseg-compact > *, .nbseg-panel .nbseg-compact .widget-hbox > * {
  flex-shrink: 1; min-width: 0; }
.nbseg-panel .widget-box > * { max-width: calc(100% - 2 * var(--jp-widgets-margin, 2px)); }
.nbseg-panel .widget-label.nbseg-row-label { width: 150px; white-space: normal;
  line-height: 16px; min-height: 28px; height: auto; display: flex; align-items: center;
  overflow: visible; }
.nbseg-panel .widget-label { text-overflow: clip; }
.nbseg-panel .widget-label.nbseg-wrap { white-space: normal; height: auto; min-height: 28px;
  line-height: 18px; flex-shrink: 1; min-width: 0; overflow: visible; }
.nbseg-panel .widget-hbox.nbseg-compact > .nbseg-keep { flex-shrink: 0; }
/* a concise colour picker is its swatch: ipywidgets' 72 px minimum for the hidden text field
   made it spill out of its box */
.nbseg-panel .widget-colorpicker.concise > .widget-colorpicker-input { min-width: 0; }
.nbseg-panel .widget-button, .nbseg-panel .widget-toggle-button { width: auto;
  white-space: normal; height: auto; min-height: 28px; line-height: 18px;
  padding: 4px 10px; overflow: visible; }
.nbseg-panel .widget-toggle-buttons .widget-toggle-button { padding: 4px 8px; }
.nbseg-panel .widget-vbox > .widget-button, .nbseg-panel .widget-vbox > .widget-toggle-button {
  align-self: flex-start; }
.nbseg-panel .widget-checkbox { width: auto; height: auto; min-height: 28px; }
.nbseg-panel .widget-checkbox .widget-label-basic { white-space: normal; overflow: visible;
  line-height: 18px; padding: 5px 0; display: flex; align-items: flex-start; }
.nbseg-panel .widget-checkbox input[type='checkbox'] { flex-grow: 0; margin-top: 1px; }
.nbseg-panel .widget-readout { max-width: none; min-width: fit-content; overflow: visible;
  flex-shrink: 0; }
.nbseg-panel .widget-html-content { white-space: normal; overflow-wrap: break-word; }
/* a hidden tab page keeps its width (invisible, no height), so what measures itself there
   (the bqplot graph) never lays out at 0 px: no negative <rect> sizes in the console */
.nbseg-panel .widget-tab-contents { position: relative; }
.nbseg-panel .widget-tab-contents > .lm-Widget.lm-mod-hidden { display: flex !important;
  visibility: hidden; position: absolute; top: 0; left: 0; right: 0; width: auto; height: 0;
  margin: 0; overflow: hidden; pointer-events: none; }
/* tab titles whole: the tabs wrap to a second row when the cell is narrow */
.nbseg-panel .widget-tab > .lm-TabBar > .lm-TabBar-content { flex-wrap: wrap; }
.nbseg-panel .widget-tab > .lm-TabBar .lm-TabBar-tab { flex: 1 0 auto; min-width: 0;
  max-width: none; }
.nbseg-panel .widget-tab > .lm-TabBar .lm-TabBar-tabLabel { overflow: visible; }
/* side-by-side columns (style.columns) that wrap to one column when narrow */
.nbseg-panel .widget-hbox.nbseg-columns { gap: 8px 14px; align-items: flex-start; }
.nbseg-panel .nbseg-columns > * { flex: 1 1 320px; min-width: min(100%, 280px); }
.nbseg-panel .nbseg-columns > .nbseg-col-main { flex: 3 1 440px; }
.nbseg-panel .nbseg-columns > .nbseg-col-side { flex: 2 1 300px; }
.nbseg-panel .nbseg-columns > .nbseg-imageview,
.nbseg-panel .nbseg-columns > .nbseg-col-viewer { flex: 1 1 360px; max-width: 520px; }
/* every image viewer (one rule for all tabs): as wide as its column, at most its canvas */
.nbseg-panel .nbseg-imageview { width: 100%; max-width: min(512px, calc(100% - 4px));
  min-width: min(100%, 240px); }
.nbseg-panel .nbseg-imageview canvas { image-rendering: pixelated; }
.nbseg-panel .widget-image { max-width: 100%; height: auto; }
.nbseg-panel .nbseg-compact .widget-label { min-width: 0; }
.nbseg-section { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; margin: 4px 0; box-sizing: border-box; min-width: 0; }
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
/* Drawn from saved widget state without a kernel (a reopened notebook) or after the kernel
   went away, every widget view carries "jupyter-widgets-disconnected", which ipywidgets
   marks with a broken-link icon: instead, the tool shows one note, hides its blank canvases
   (never drawn without a kernel) and shows the saved feedback image larger. */
.nbseg-panel.jupyter-widgets-disconnected::before,
.nbseg-panel .jupyter-widgets-disconnected::before { content: none !important;
  display: none !important; }
.nbseg-static-note { display: none; }
.nbseg-panel.jupyter-widgets-disconnected .nbseg-static-note { display: block; }
.nbseg-panel.jupyter-widgets-disconnected .nbseg-imageview { display: none; }
.nbseg-panel.jupyter-widgets-disconnected .nbseg-feedback-snapshot { width: 256px !important; }
/* the "needs a running kernel" note beside a tool's output: hidden while a tool renders */
.nbseg-needs-kernel { display: none !important; }
.jp-OutputArea-child:has(.nbseg-needs-kernel) { display: none; }
</style>
"""

LABEL_WIDTH = "150px"


NEEDS_KERNEL_TEXT = (
    "This {what} needs a running kernel: re-run this cell (Shift+Enter, or Run ▸ Run All "
    "Cells) to show it again."
)

# Shown in a notebook reopened without the kernel that made the widgets. The tool's own CSS
# (above) hides the note while the tool renders, live or from saved widget state; this CSS
# hides JupyterLab's "Error displaying widget: model not found" text of the widget output
# beside the note (that output node carries the class ``jupyter-widgets`` only then), and the
# note while that output loads or shows a widget (neither that class nor hidden); where
# JupyterLab falls back to the widget output's text/plain (no widget state), that is hidden.
_NOTE_CSS = """
<style>
.jp-OutputArea:has(.nbseg-needs-kernel) > .jp-OutputArea-child >
  .jp-OutputArea-output.jupyter-widgets[data-mime-type$="widget-view+json"] { display: none; }
.jp-OutputArea:has(> .jp-OutputArea-child > .jp-OutputArea-output[data-mime-type$="widget-view+json"]:not(.jupyter-widgets):not(.lm-mod-hidden))
  .nbseg-needs-kernel { display: none; }
.jp-OutputArea-child:has(.nbseg-needs-kernel) + .jp-OutputArea-child:has(> .jp-OutputArea-output[data-mime-type="text/plain"]) { display: none; }
</style>
"""


def needs_kernel_html(what: str = "Deep Learning Tool") -> str:
    """The note a saved notebook shows where a tool's widgets cannot be drawn (no kernel)."""
    text = html.escape(NEEDS_KERNEL_TEXT.format(what=what))
    return (
        f"{_NOTE_CSS}<div class='nbseg-needs-kernel' style='font-family:sans-serif;"
        "font-size:13px;color:#0b3d62;background:#e8f1fb;border-left:4px solid #1976d2;"
        f"padding:8px 12px;margin:4px 0'><b>nbseg</b> · {text}</div>"
    )


STATIC_NOTE_TEXT = (
    "This is the {what} as it was saved: the kernel that ran it is gone, so nothing here "
    "responds. Re-run this cell to use it again."
)


def static_note_html(what: str = "Deep Learning Tool") -> str:
    """A note shown only where the tool is drawn without its kernel (from saved widget state,
    or after the kernel stopped): CSS shows it on a disconnected tool, hides it otherwise."""
    text = html.escape(STATIC_NOTE_TEXT.format(what=what))
    return f"<div class='nbseg-static-note nbseg-message-info'><b>Saved snapshot</b> · {text}</div>"


def display_with_kernel_note(widget: widgets.Widget, what: str = "Deep Learning Tool") -> None:
    """Display ``widget`` preceded by the :func:`needs_kernel_html` note (two outputs): live,
    the note is hidden; reopened without a kernel, the note says to re-run the cell instead
    of JupyterLab's "Error displaying widget"."""
    from IPython.display import HTML, display

    display(HTML(needs_kernel_html(what)), metadata={"nbseg": "needs-kernel"})
    bundle = widget._repr_mimebundle_()
    if bundle:
        bundle = dict(bundle)
        bundle["text/plain"] = NEEDS_KERNEL_TEXT.format(what=what)
        display(bundle, raw=True)


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


def columns(
    *children: widgets.Widget,
    main: widgets.Widget | None = None,
    side: widgets.Widget | None = None,
    viewer: widgets.Widget | None = None,
) -> widgets.HBox:
    """Side-by-side columns that wrap to one column when the cell is too narrow for them.

    Each column takes an equal share of the width (at least 280 px); ``main`` (e.g. the
    training graph) takes a larger one, ``side`` (a control column) a smaller one, ``viewer``
    (a column holding an image viewer) grows no wider than the viewer, leaving the rest to
    the others."""
    if viewer is not None:
        viewer.add_class("nbseg-col-viewer")
    if main is not None:
        main.add_class("nbseg-col-main")
    if side is not None:
        side.add_class("nbseg-col-side")
    box = widgets.HBox(list(children))
    box.add_class("nbseg-columns")
    return box


def labelled(label: str, widget: widgets.Widget, tooltip: str = "") -> widgets.HBox:
    """A row ``label | widget`` with aligned labels (a real <label> for keyboard users)."""
    lab = widgets.Label(label, layout=widgets.Layout(width=LABEL_WIDTH), tooltip=tooltip or None)
    lab.add_class("nbseg-row-label")  # wraps a long label instead of cutting it
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
