"""Layout rules of the tool that can be checked without a browser (issue 16, defects 1, 2, 4).

The real-browser tests (``tests/ui_browser/test_layout_browser.py``) measure the rendered
page at 1000 and 1500 px; these tests keep the rules that make it fit in place: one viewer
size rule for every tab, no fixed width wider than the narrowest column, rows that wrap and
text that is never cut, no tooltip on a Box (its view crashes), and the note a notebook shows
when it is reopened without its kernel.
"""

from __future__ import annotations

import re

import bqplot as bq
import ipywidgets as widgets
import pytest

import nbseg
from nbseg.ui import style
from nbseg.ui.imageview import VIEWER_PX, ImageView
from nbseg.ui.tool import TAB_TITLES

from .helpers import ready_model

#: the widest fixed width a widget may have: it must fit one column of an 800 px notebook
MAX_FIXED_PX = 360


def _walk(w: widgets.Widget, seen: set[int] | None = None):
    """Every widget shown under ``w`` (Box children, bqplot marks and axes skipped)."""
    seen = set() if seen is None else seen
    if id(w) in seen:
        return
    seen.add(id(w))
    yield w
    for child in getattr(w, "children", ()) or ():
        if isinstance(child, widgets.Widget):
            yield from _walk(child, seen)


@pytest.fixture(scope="module")
def tool():
    ds = nbseg.datasets.fibres(shape=(4, 48, 48))
    return nbseg.DeepLearningTool(
        images={"img": ds.image}, labels={"lab": ds.labels}, model=ready_model()
    )


def test_every_viewer_follows_one_size_rule(tool):
    views = [w for w in _walk(tool) if isinstance(w, ImageView)]
    # Inputs, Train (feedback), Preview, Segment with AI, Label: the same viewer everywhere
    assert len(views) >= 5
    for v in views:
        assert v.canvas_shape == (VIEWER_PX, VIEWER_PX)
        lay = v.canvas.layout
        assert (lay.width, lay.height, lay.max_width) == ("100%", "auto", f"{VIEWER_PX}px")
        assert "nbseg-imageview" in v._dom_classes
    assert tool.preview.view.canvas_shape == tool.segmenter.view.canvas_shape
    assert tool.training.feedback_view.canvas_shape == tool.labelling.view.canvas_shape


def _px(value: str | None) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)px\s*", value or "")
    return float(m.group(1)) if m else None


def test_no_fixed_width_wider_than_a_column(tool):
    wide = []
    for w in _walk(tool):
        layout = getattr(w, "layout", None)
        if layout is None:
            continue
        for attr in ("width", "min_width"):
            px = _px(getattr(layout, attr))
            if px is not None and px > MAX_FIXED_PX:
                wide.append(f"{type(w).__name__} {attr}={getattr(layout, attr)}")
    assert not wide, wide
    # the training graph follows its column (it covered the feedback image at 560 px)
    assert isinstance(tool.training.figure, bq.Figure)
    assert tool.training.figure.layout.width == "100%"


def test_side_by_side_panels_are_wrapping_columns(tool):
    columns = [w for w in _walk(tool) if "nbseg-columns" in getattr(w, "_dom_classes", ())]
    graph, feedback = tool.training.graph.widget, tool.training.feedback.widget
    assert any(list(c.children) == [graph, feedback] for c in columns)
    assert "nbseg-col-main" in graph._dom_classes and "nbseg-col-side" in feedback._dom_classes
    label = [c for c in columns if tool.labelling.view in _walk(c)]
    assert label, "the Label tab's canvas and controls are not wrapping columns"
    assert "nbseg-col-viewer" in label[0].children[0]._dom_classes


def test_css_wraps_rows_and_never_cuts_text():
    css = style.CSS
    rules = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    assert re.search(r"\.nbseg-panel \.widget-hbox \{[^}]*flex-wrap: wrap", rules)
    assert re.search(r"\.lm-TabBar-content \{[^}]*flex-wrap: wrap", rules)
    assert re.search(r"\.lm-TabBar-tabLabel \{[^}]*overflow: visible", rules)
    assert re.search(r"\.widget-button[^{]*\{[^}]*width: auto", rules)
    assert re.search(r"\.widget-checkbox \{[^}]*width: auto", rules)
    assert "ellipsis" not in rules
    # a label column as a min-width on every description label squeezed the fields beside
    # it to ~10 px (the Models tab's class weights)
    assert not re.search(r"\.nbseg-panel \.widget-label \{[^}]*min-width", rules)
    # hidden tab pages keep a width: the graph never lays out at 0 px (negative <rect>s)
    assert re.search(r"\.lm-mod-hidden \{[^}]*display: flex !important", rules)


def test_rows_label_class_and_columns_helper():
    row = style.labelled("Plateau patience (epochs)", widgets.IntText())
    assert "nbseg-row-label" in row.children[0]._dom_classes
    a, b = widgets.VBox(), widgets.VBox()
    box = style.columns(a, b, main=a, side=b)
    assert "nbseg-columns" in box._dom_classes
    assert "nbseg-col-main" in a._dom_classes and "nbseg-col-side" in b._dom_classes


def test_no_box_carries_a_tooltip(tool):
    """A Box view with a tooltip fails in the browser ("Click to show javascript error":
    updateTooltip reads the length of undefined) — the Class weights row did."""
    tool.parameters.advanced_toggle.value = True
    boxes = [w for w in _walk(tool) if isinstance(w, widgets.Box)]
    assert boxes
    assert not [type(b).__name__ for b in boxes if getattr(b, "tooltip", None)]


def test_every_tab_title_is_set(tool):
    assert tuple(tool.tabs.titles) == TAB_TITLES


def test_display_adds_the_needs_kernel_note(tool, monkeypatch):
    import IPython.display

    shown: list[tuple[object, dict]] = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **kw: shown.append((a[0], kw)))
    tool._ipython_display_()
    (note, _), (bundle, kw) = shown
    assert isinstance(note, IPython.display.HTML)
    assert "needs a running kernel: re-run this cell" in note.data
    assert "nbseg-needs-kernel" in note.data
    assert kw == {"raw": True}
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == tool.model_id
    assert "re-run this cell" in bundle["text/plain"]
    # the tool's own CSS hides the note while the tool renders
    assert ".nbseg-needs-kernel { display: none !important; }" in style.CSS


def test_a_disconnected_tool_shows_one_note_not_broken_link_icons(tool):
    """Drawn from saved widget state without a kernel, every view is "disconnected" and
    ipywidgets puts a broken-link icon on each (~60 in the tool): the tool's CSS hides them,
    shows the "saved snapshot · re-run this cell" note, and hides the never-drawn canvases."""
    assert "nbseg-static-note" in tool.status.value
    assert "Re-run this cell" in tool.status.value
    rules = re.sub(r"/\*.*?\*/", "", style.CSS, flags=re.S)
    assert re.search(r"\.jupyter-widgets-disconnected::before \{ content: none !important", rules)
    assert ".nbseg-static-note { display: none; }" in rules
    assert ".jupyter-widgets-disconnected .nbseg-static-note { display: block; }" in rules
    assert ".jupyter-widgets-disconnected .nbseg-imageview { display: none; }" in rules


def test_image_view_default_is_the_rule():
    v = ImageView()
    assert v.canvas_shape == (VIEWER_PX, VIEWER_PX)
