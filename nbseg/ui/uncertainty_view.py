"""`UncertaintyControls`: the uncertainty overlay's toggle, method, opacity and colour scale,
shared by the Preview, *Segment with AI* and Label tabs (the map itself comes from
:func:`nbseg.uncertainty` / :func:`nbseg.preview` with ``return_uncertainty=True``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..inference.maps import UNCERTAINTY_METHODS
from ..render import heat_css_gradient
from . import style
from .imageview import ImageView

METHOD_LABELS = {
    "entropy": "Entropy (one pass)",
    "margin": "Margin top-1 / top-2 (one pass)",
    "tta": "Flip disagreement (4 passes)",
}


def legend_html() -> str:
    """The colour scale: certain (0) … unsure (1)."""
    return (
        "<div style='display:flex;align-items:center;gap:6px;font-size:12px'>"
        "<span>certain 0</span>"
        f"<span style='display:inline-block;width:140px;height:10px;border-radius:2px;"
        f"background:{heat_css_gradient()}'></span><span>1 unsure</span></div>"
    )


class UncertaintyControls(widgets.VBox):
    """``show`` (Checkbox), ``method`` (Dropdown), ``opacity`` (FloatSlider) and a legend.

    :meth:`bind` keeps an :class:`ImageView`'s heat opacity in step; ``on_change`` callbacks
    run when the toggle or the method changes (the panel recomputes or hides the map).
    """

    def __init__(self, description: str = "Show uncertainty", value: bool = False) -> None:
        self.show = widgets.Checkbox(
            value=value,
            description=description,
            indent=False,
            tooltip="Colour each voxel by how unsure the model is (0 = certain, 1 = unsure)",
            layout=widgets.Layout(width="auto"),
        )
        self.method = widgets.Dropdown(
            options=[(METHOD_LABELS[m], m) for m in UNCERTAINTY_METHODS],
            value="entropy",
            layout=widgets.Layout(width="auto"),
        )
        self.opacity = widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.05)
        self.legend = widgets.HTML(legend_html())
        self._details = widgets.VBox(
            [
                style.labelled("Uncertainty map", self.method),
                style.labelled("Uncertainty opacity", self.opacity),
                self.legend,
            ]
        )
        super().__init__([self.show, self._details])
        self._callbacks: list[Callable[[], None]] = []
        self._views: list[ImageView] = []
        self._sync()
        self.show.observe(lambda _: self._changed(), names="value")
        self.method.observe(lambda _: self._changed(), names="value")
        self.opacity.observe(self._on_opacity, names="value")

    @property
    def enabled(self) -> bool:
        return bool(self.show.value)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def bind(self, view: ImageView) -> None:
        self._views.append(view)
        view.heat_opacity = float(self.opacity.value)

    def _sync(self) -> None:
        self._details.layout.display = None if self.show.value else "none"

    def _changed(self) -> None:
        self._sync()
        for cb in list(self._callbacks):
            cb()

    def _on_opacity(self, change: dict[str, Any]) -> None:
        for v in self._views:
            v.heat_opacity = float(change["new"])
            v.redraw()
