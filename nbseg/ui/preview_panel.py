"""`PreviewPanel`: predict one slice of a workspace image with the current model (Dragonfly's
*Preview*), shown as a class overlay; and :class:`InputPicker`, the per-model-input image
choice shared with the *Segment with AI* panel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import xarray as xr

from ..errors import InputError
from ..inference.planes import preview_plane
from ..render import to_uint8
from . import style
from .imageview import VIEWER_PX, ImageView
from .labelling import PLANES, plane_of
from .state import Workspace
from .uncertainty_view import UncertaintyControls

NO_MODEL = (
    "No model: create one in the New model tab, load one in the Models tab, or set workspace.model."
)


class InputPicker(widgets.VBox):
    """One image dropdown per input of a model (all inputs must share one geometry).

    :attr:`selects` holds the dropdowns (options: workspace image names); :meth:`names` and
    :meth:`images` give the choice; :meth:`check` raises an :class:`InputError` naming what
    does not fit the model.
    """

    def __init__(self, workspace: Workspace) -> None:
        super().__init__([])
        self.workspace = workspace
        self.selects: list[widgets.Dropdown] = []
        self._input_names: list[str] = []
        self._callbacks: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def _changed(self, _: Any = None) -> None:
        for cb in list(self._callbacks):
            cb()

    def set_inputs(self, input_names: list[str]) -> None:
        """One dropdown per model input (names as in the model's spec)."""
        if input_names == self._input_names and self.selects:
            self.refresh()
            return
        old = [s.value for s in self.selects]
        self._input_names = list(input_names)
        self.selects = []
        rows = []
        for i, name in enumerate(input_names):
            dd = widgets.Dropdown(options=[], description="")
            dd.observe(self._changed, names="value")
            self.selects.append(dd)
            label = "Image" if len(input_names) == 1 else f"Input {i + 1} ({name})"
            rows.append(style.labelled(label, dd, "An image of the workspace"))
        self.children = rows
        self.refresh()
        for dd, value in zip(self.selects, old):
            if value in dd.options:
                dd.value = value

    def refresh(self) -> None:
        names = list(self.workspace.images)
        for i, dd in enumerate(self.selects):
            current = dd.value
            dd.options = names
            if current in names:
                dd.value = current
            elif names:
                dd.value = names[min(i, len(names) - 1)]
            else:
                dd.value = None

    def names(self) -> list[str | None]:
        return [dd.value for dd in self.selects]

    def images(self) -> list[xr.DataArray]:
        self.check()
        return [self.workspace.images[n] for n in self.names() if n is not None]  # all set

    def check(self) -> None:
        """Raise an InputError when the choice does not fit the model's inputs."""
        if not self.workspace.images:
            raise InputError(
                "The workspace has no image: add one (workspace.add_image(name, image) or "
                "DeepLearningTool(images={...}))."
            )
        names = self.names()
        if not names or any(n is None or n not in self.workspace.images for n in names):
            raise InputError(
                f"Choose an image for every model input ({', '.join(self._input_names)})."
            )
        shapes = [self.workspace.images[n].shape for n in names if n is not None]  # all set
        for n, s in zip(names[1:], shapes[1:]):
            if s != shapes[0]:
                raise InputError(
                    f"Image {n!r} has shape {s} but {names[0]!r} has {shapes[0]}; the inputs of "
                    "a multi-input model must share one geometry. Choose images of one shape."
                )


def image_slice(image: xr.DataArray, index: int, plane: str = "xy") -> np.ndarray:
    """Grey uint8 of slice ``index`` of ``plane`` (``"xy"``: along the first dim of a volume,
    ``"xz"`` / ``"yz"``: along the second / third; a 2D image is its own slice)."""
    if image.ndim == 2:
        values = image.values
    else:
        values = image.isel({image.dims[PLANES[plane]]: index}).values
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values)
    return to_uint8(values)


def plane_toggle() -> widgets.ToggleButtons:
    """The xy / xz / yz choice of the Preview and Segment panels (as the Label tab's)."""
    return widgets.ToggleButtons(
        options=list(PLANES),
        value="xy",
        tooltips=[
            "Slices along z (rows y, columns x)",
            "Slices along y (rows z, columns x): every z slice cut along one row",
            "Slices along x (rows z, columns y): every z slice cut along one column",
        ],
        style={"button_width": "44px"},
    )


def slice_text(image: xr.DataArray, plane: str, index: int) -> str:
    """``"slice 3"`` (xy) or ``"the xz plane at y = 12"``, for messages."""
    if image.ndim == 2 or plane == "xy":
        return f"slice {index}"
    return f"the {plane} plane at {image.dims[PLANES[plane]]} = {index}"


def result_plane(values: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The ``plane`` at ``index`` of a ``(z, y, x)`` result (a 2D result is itself)."""
    return values if values.ndim == 2 else plane_of(values, plane, index)


class PreviewPanel(widgets.VBox):
    """Preview the workspace model on one slice of an image.

    Attributes: :attr:`inputs` (:class:`InputPicker`, ``inputs.selects``),
    :attr:`slice_slider`, :attr:`preview_button`, :attr:`opacity`, :attr:`view`
    (:class:`ImageView`), :attr:`prediction` (the last previewed slice, DataArray),
    :attr:`message`. :meth:`preview` runs it from code.
    """

    def __init__(
        self, workspace: Workspace | None = None, *, size: int = VIEWER_PX, **kw: Any
    ) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self.message = style.MessageBox()
        self.model_info = widgets.HTML()
        self.inputs = InputPicker(self.workspace)
        self.slice_slider = widgets.IntSlider(value=0, min=0, max=0, continuous_update=False)
        self.slice_row = style.labelled("Slice", self.slice_slider)
        self.plane_buttons = plane_toggle()
        self.plane_row = style.labelled(
            "Plane", self.plane_buttons, "Show xy, xz or yz slices of the volume"
        )
        self.preview_button = widgets.Button(
            description="Preview",
            icon="eye",
            button_style="primary",
            tooltip="Predict the shown slice with the model (xz / yz: every z slice is "
            "predicted where the plane cuts it)",
        )
        self.opacity = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05)
        self.view = ImageView(size, size)
        self.uncertainty_controls = UncertaintyControls()
        self.uncertainty_controls.bind(self.view)
        self.prediction: xr.DataArray | None = None
        self.uncertainty: xr.DataArray | None = None
        self._axis: tuple[str, int] | None = None  # (plane, slices along its axis) shown
        box = style.panel(
            self.message,
            style.section(
                "Model and input",
                self.model_info,
                self.inputs,
                self.plane_row,
                self.slice_row,
                widgets.HBox([self.preview_button]),
                style.labelled("Overlay opacity", self.opacity),
                self.uncertainty_controls,
            ),
            self.view,
            title="Preview",
        )
        super().__init__(box.children, **kw)
        self.add_class("nbseg-panel")
        self.preview_button.on_click(lambda _: style.run_reporting(self.message, self.preview))
        self.slice_slider.observe(lambda _: self._show_slice(), names="value")
        self.plane_buttons.observe(lambda _: self._on_input(), names="value")
        self.opacity.observe(lambda ch: self.view.set_opacity(labels=ch["new"]), names="value")
        self.inputs.on_change(self._on_input)
        self.uncertainty_controls.on_change(self._on_uncertainty_toggle)
        self.workspace.observe(self._on_workspace)
        self._sync_model()
        self._on_input()

    # -- state ---------------------------------------------------------------------------
    def _on_workspace(self, event: str, _value: Any) -> None:
        if event == "model":
            self._sync_model()
        elif event == "images":
            self.inputs.refresh()

    def _sync_model(self) -> None:
        model = self.workspace.model
        if model is None:
            self.model_info.value = "<i>No model in the workspace.</i>"
            self.inputs.set_inputs(["input_0"])
            self.preview_button.disabled = True
            return
        state = "trained" if model.trained else "untrained"
        self.model_info.value = (
            f"Model <b>{_esc(model.name)}</b>: {model.spec.architecture} "
            f"{model.spec.input_dimension}, {model.spec.class_count} classes, {state}"
        )
        self.inputs.set_inputs(list(model.spec.input_names or ()))
        self.preview_button.disabled = False

    def _on_input(self) -> None:
        names = self.inputs.names()
        image = self.workspace.images.get(names[0]) if names and names[0] else None
        if image is None:
            return
        if image.ndim == 2:
            self.plane_buttons.value = "xy"  # observed: comes back here once
        plane = self.plane
        n = image.shape[PLANES[plane]] if image.ndim == 3 else 1
        moved = self._axis is not None and self._axis[0] != plane
        self._axis = (plane, n)
        self.slice_slider.max = max(0, n - 1)
        if moved or self.slice_slider.value > n - 1:  # another plane: its middle slice
            self.slice_slider.value = n // 2
        self.slice_row.layout.display = None if image.ndim == 3 else "none"
        self.plane_row.layout.display = None if image.ndim == 3 else "none"
        self._show_slice()

    @property
    def plane(self) -> str:
        """The plane shown: ``"xy"``, ``"xz"`` or ``"yz"``."""
        return str(self.plane_buttons.value)

    def _show_slice(self) -> None:
        """Show the grey slice; a preview of another slice is dropped."""
        names = self.inputs.names()
        image = self.workspace.images.get(names[0]) if names and names[0] else None
        if image is None:
            return
        self.prediction = None
        self.uncertainty = None
        self.view.set_layers(heat=None, redraw=False)
        self.view.show(image_slice(image, int(self.slice_slider.value), self.plane), None)
        self.message.clear()  # a message about another slice would be stale

    def _on_uncertainty_toggle(self) -> None:
        """Off: hide the map; on (or another method): recompute the shown preview."""
        if not self.uncertainty_controls.enabled:
            self.uncertainty = None
            self.view.set_layers(heat=None)
        elif self.prediction is not None:
            style.run_reporting(self.message, self.preview)

    # -- action --------------------------------------------------------------------------
    def preview(self, index: int | None = None, plane: str | None = None) -> xr.DataArray:
        """Predict slice ``index`` (default: the slider's) of ``plane`` (default: the
        *Plane* choice; ``"xz"`` / ``"yz"`` cut every z slice, see
        :func:`nbseg.inference.planes.preview_plane`) and show it over the image."""

        model = self.workspace.model
        if model is None:
            raise InputError(NO_MODEL)
        images = self.inputs.images()
        if plane is not None:
            if plane not in PLANES:
                raise InputError(f"Plane {plane!r}: choose one of {', '.join(PLANES)}.")
            self.plane_buttons.value = plane
        if index is not None:
            self.slice_slider.value = int(index)
        index = int(self.slice_slider.value)
        plane = self.plane
        ref = images[0]
        image = images if len(images) > 1 else images[0]
        unc = None
        if self.uncertainty_controls.enabled:
            method = self.uncertainty_controls.method.value
            pred, unc = preview_plane(
                model, image, plane, index, return_uncertainty=True, uncertainty_method=method
            )
        else:
            pred = preview_plane(model, image, plane, index)
        self.view.opacity = float(self.opacity.value)
        self.view.set_layers(heat=None if unc is None else np.asarray(unc.values), redraw=False)
        self.view.show(image_slice(ref, index, plane), np.asarray(pred.values), model.class_colors)
        self.prediction = pred
        self.uncertainty = unc
        counts = np.bincount(
            np.asarray(pred.values).ravel() + 1, minlength=model.spec.class_count + 1
        )
        share = ", ".join(
            f"{name} {100 * c / max(1, pred.size):.0f} %"
            for name, c in zip(model.class_names, counts[1:])
        )
        if unc is not None:
            u = np.asarray(unc.values)
            share += (
                f"; uncertainty mean {float(u.mean()):.2f}, "
                f"{100 * float((u > 0.5).mean()):.0f} % of pixels above 0.5"
            )
        where = slice_text(ref, plane, index)
        self.message.show(f"Preview of {where}: {share}.", "info")
        return pred


def _esc(text: str) -> str:
    import html

    return html.escape(str(text))
