"""`LabelEditor`: paint a multi-ROI over an image or volume (Dragonfly's multi-ROI painting).

The label volume is an int16 numpy array (``-1`` = unlabelled) wrapped once in the
:class:`xarray.DataArray` :attr:`LabelEditor.labels` (image dims and coords, attributes
``class_names`` / ``class_colors``). Every edit writes into that array in place, so the
DataArray (and the workspace entry, which is the same object) is always current; the
workspace's ``"labels"`` event is emitted after each completed edit (end of a stroke, fill,
undo/redo, class changes), never per mouse move.

Painting is pure numpy on the touched bounding box only; the canvas receives only the canvas
pixels showing that box (:meth:`ImageView.redraw_region`), so a stroke costs the same on a
512² or a 4096² slice.
"""

from __future__ import annotations

import html
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import xarray as xr
from scipy import ndimage

from ..data.multiroi import (
    UNLABELLED,
    default_class_colors,
    default_class_names,
    hex_to_rgb,
    multi_roi,
)
from ..data.trainingset import as_dataarray, volume_of
from ..errors import InputError
from ..inference.job import SuggestionRun
from ..inference.uncertainty import Region, Suggestions
from ..io import read_array
from ..paths import check_output_path
from ..project import labels_for_image, save_label_file
from ..render import to_uint8
from . import style
from .imageview import ImageView
from .open_data import OpenDataControl
from .state import Workspace
from .uncertainty_view import UncertaintyControls

TOOLS = ("brush", "eraser", "fill", "pan")
#: the planes a volume can be shown and painted in, and the axis of ``(z, y, x)`` each cuts
PLANES = {"xy": 0, "xz": 1, "yz": 2}
#: the dims of a plane's rows and columns
PLANE_AXES = {"xy": ("y", "x"), "xz": ("z", "x"), "yz": ("z", "y")}

Box = tuple[int, int, int, int]


@dataclass
class Patch:
    """One undoable edit: the voxels of ``data[index]`` where ``changed`` (bit-packed) went
    from ``old`` to ``new`` (arrays of the changed voxels, or one value when constant)."""

    index: tuple[slice, slice, slice]
    shape: tuple[int, int, int]
    changed: np.ndarray
    old: np.ndarray
    new: np.ndarray
    axis: int | None = None  # the axis of the plane the edit was made in (one slice of it)

    @classmethod
    def from_arrays(
        cls,
        index: tuple[slice, slice, slice],
        before: np.ndarray,
        after: np.ndarray,
        axis: int | None = None,
    ) -> Patch | None:
        mask = before != after
        if not mask.any():
            return None
        return cls(
            index,
            mask.shape,
            np.packbits(mask),
            _compact(before[mask]),
            _compact(after[mask]),
            axis,
        )

    @property
    def nbytes(self) -> int:
        return int(self.changed.nbytes + self.old.nbytes + self.new.nbytes)

    def mask(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.changed, count=n).reshape(self.shape).astype(bool)

    def apply(self, data: np.ndarray, undo: bool) -> None:
        region = data[self.index]
        region[self.mask()] = self.old if undo else self.new


def plane_of(volume: np.ndarray, plane: str, k: int) -> np.ndarray:
    """The ``plane`` (``"xy"``, ``"xz"``, ``"yz"``) at position ``k`` of a ``(z, y, x)``
    array, as a view (writing into it writes the volume): ``xy`` is ``[k]`` (rows y, columns
    x), ``xz`` is ``[:, k]`` (rows z, columns x), ``yz`` is ``[:, :, k]`` (rows z, columns y)."""
    axis = PLANES[plane]
    if axis == 0:
        return volume[k]
    return volume[:, k] if axis == 1 else volume[:, :, k]


def plane_index(plane: str, k: int, rows: slice, cols: slice) -> tuple[slice, slice, slice]:
    """The ``(z, y, x)`` index of the ``rows`` × ``cols`` box of ``plane`` at ``k``."""
    one = slice(k, k + 1)
    axis = PLANES[plane]
    if axis == 0:
        return (one, rows, cols)
    return (rows, one, cols) if axis == 1 else (rows, cols, one)


def _compact(values: np.ndarray) -> np.ndarray:
    """The values, or a single one when they are all equal (fills and strokes)."""
    if values.size and (values == values.flat[0]).all():
        return values[:1].copy()
    return values.copy()


class LabelEditor(widgets.VBox):
    """Paint, erase and fill classes of a multi-ROI over an image or a volume.

    Parameters
    ----------
    image
        ``(z, y, x)`` or ``(y, x)`` DataArray (or None: choose one of the workspace's images).
    labels
        Existing multi-ROI of the image's geometry to edit (a copy is edited); default: the
        workspace's labels called ``name`` when they fit the image, else all unlabelled.
    workspace
        Shared :class:`Workspace`: the labels are registered there under ``name``.
    class_names
        Classes of new labels (default ``["background", "class 1"]``).
    name
        Name of the labels in the workspace.

    Attributes used by the composed tool and tests: :attr:`labels`, :attr:`view`,
    :attr:`tool`, :attr:`brush_size`, :attr:`slice_slider`, :attr:`contrast`,
    :attr:`opacity`, :attr:`class_select`, :attr:`class_rows`, :attr:`new_class_name`,
    :attr:`add_class_button`, :attr:`undo_button`, :attr:`redo_button`,
    :attr:`unlabelled_slice_button`, :attr:`unlabelled_volume_button`,
    :attr:`image_select`, :attr:`name_text`, :attr:`message`.
    """

    max_undo_bytes: int = 256 * 2**20
    max_undo_steps: int = 200

    def __init__(
        self,
        image: xr.DataArray | None = None,
        labels: xr.DataArray | None = None,
        workspace: Workspace | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "labels",
        *,
        width: int = 512,
        height: int = 512,
        **kw: Any,
    ) -> None:
        self.workspace = workspace
        self.name = name
        self._default_class_names = list(class_names) if class_names else None
        self._image: xr.DataArray | None = None
        self._vol: np.ndarray | None = None
        self._data: np.ndarray | None = None
        self._labels_da: xr.DataArray | None = None
        self.z = 0  # position of the shown slice along the plane's axis
        self._positions: dict[str, int] = {}  # the last position shown in each plane
        self._shown_plane = "xy"
        self._undo: deque[Patch] = deque()
        self._redo: list[Patch] = []
        self._stroke: dict[str, Any] | None = None
        self._quiet = False

        self.message = style.MessageBox()
        self.view = ImageView(width, height, interactive_pan=False)
        self.view.canvas.add_class("nbseg-label-canvas")
        self.view.on_pointer(self._on_pointer)
        self.image_select = widgets.Dropdown(options=[], description="")
        self.name_text = widgets.Text(value=name, continuous_update=False)
        self.slice_slider = widgets.IntSlider(
            value=0, min=0, max=0, description="", continuous_update=True
        )
        self.plane_buttons = widgets.ToggleButtons(
            options=list(PLANES),
            value="xy",
            tooltips=[
                "Slices along z (rows y, columns x)",
                "Slices along y (rows z, columns x)",
                "Slices along x (rows z, columns y)",
            ],
            style={"button_width": "44px"},
        )
        self.contrast = widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.001, continuous_update=True
        )
        self.opacity = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05)
        self.tool = widgets.ToggleButtons(
            options=[("Brush", "brush"), ("Eraser", "eraser"), ("Fill", "fill"), ("Pan", "pan")],
            value="brush",
            tooltips=[
                "Paint the selected class (drag)",
                "Make voxels unlabelled again (drag)",
                "Give the connected region of one label on this slice the selected class",
                "Drag to move the view",
            ],
        )
        self.brush_size = widgets.IntSlider(value=5, min=1, max=64, description="")
        self.class_select = widgets.Dropdown(options=[], description="")
        self.class_rows = widgets.VBox([])
        self.new_class_name = widgets.Text(placeholder="new class name")
        self.add_class_button = widgets.Button(description="Add class", icon="plus")
        self.undo_button = widgets.Button(description="Undo", icon="undo", disabled=True)
        self.redo_button = widgets.Button(description="Redo", icon="repeat", disabled=True)
        self.unlabelled_slice_button = widgets.Button(
            description="Unlabelled → class (slice)",
            tooltip="Give every unlabelled voxel of this slice the selected class",
            layout=widgets.Layout(width="auto"),
        )
        self.unlabelled_volume_button = widgets.Button(
            description="Unlabelled → class (volume)",
            tooltip="Give every unlabelled voxel of the whole volume the selected class",
            layout=widgets.Layout(width="auto"),
        )
        self.info = widgets.HTML("")
        # -- where to label (uncertainty, suggestions, retrain) --
        self.suggestions: Suggestions | None = None
        self.suggestion_job: SuggestionRun | None = None
        self.retrain_handler: Callable[[], Any] | None = None
        self.training_running: Callable[[], bool] | None = None
        """Set by the tool: True while the model trains (suggestions wait for it)."""
        self._region: Region | None = None
        self._shown = threading.Event()  # set when the last suggestions are shown
        self._shown.set()
        self.suggest_count = widgets.IntSlider(value=3, min=1, max=10, description="")
        self.suggest_button = widgets.Button(
            description="Suggest where to label",
            icon="lightbulb-o",
            button_style="info",
            tooltip="Run the model over the image and list the unlabelled slices and regions "
            "where it is most unsure (rare classes count more) or whose intensities no label "
            "covers yet",
            layout=widgets.Layout(width="auto"),
        )
        self.retrain_button = widgets.Button(
            description="Retrain",
            icon="refresh",
            tooltip="Fine-tune the model on the updated labels in the background (the Train "
            "tab's graph continues), then refresh the suggestions",
            layout=widgets.Layout(width="auto", display="none"),
        )
        self.suggest_status = widgets.HTML("")
        self.suggestion_list = widgets.VBox([])
        self.show_prediction = widgets.Checkbox(
            value=True,
            description="Show the model's prediction under the painting",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.outline_check = widgets.Checkbox(
            value=True,
            description="Outline unsure areas",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.uncertainty_controls = UncertaintyControls()
        self.uncertainty_controls.bind(self.view)
        # -- save / load the multi-ROI --
        self.labels_path = widgets.Text(
            placeholder="labels.zarr · .tif · .nc · .ome.zarr · .nii.gz",
            continuous_update=False,
        )
        self.overwrite_check = widgets.Checkbox(
            value=False,
            description="Overwrite",
            indent=False,
            tooltip="Replace the file when it exists (written atomically: a failed save "
            "leaves the old file)",
            layout=widgets.Layout(width="auto"),
        )
        self.save_labels_button = widgets.Button(
            description="Save labels",
            icon="save",
            tooltip="Write the labels with their class names and colours to the path",
            layout=widgets.Layout(width="auto"),
        )
        self.load_labels_button = widgets.Button(
            description="Load labels",
            icon="folder-open",
            tooltip="Read labels of this image's geometry from the path (the current ones "
            "stay in the workspace when they have unsaved edits)",
            layout=widgets.Layout(width="auto"),
        )
        self.saved_path: str | None = None
        self._edits = 0  # completed edits since the labels were loaded or saved

        self.slice_row = style.labelled("Slice", self.slice_slider)
        self.plane_row = style.labelled(
            "Plane", self.plane_buttons, "Show and paint xy, xz or yz slices of the volume"
        )
        self.open_data = OpenDataControl(workspace or Workspace(), self.message)
        self.open_toggle = self.open_data.toggle
        source = style.section(
            "Image and labels",
            style.labelled("Image", self.image_select, "An image of the workspace"),
            style.labelled("Labels name", self.name_text, "Name of the multi-ROI"),
            self.open_toggle,
            self.open_data,
        )
        if workspace is None:
            source.layout.display = "none"
        tools = style.section(
            "Tools",
            self.tool,
            style.labelled("Brush radius (px)", self.brush_size),
            widgets.HBox([self.undo_button, self.redo_button]),
            widgets.HBox([self.unlabelled_slice_button, self.unlabelled_volume_button]),
        )
        classes = style.section(
            "Classes",
            style.labelled("Paint with", self.class_select),
            self.class_rows,
            widgets.HBox([self.new_class_name, self.add_class_button]),
        )
        display = style.section(
            "View",
            self.plane_row,
            self.slice_row,
            style.labelled("Contrast", self.contrast),
            style.labelled("Label opacity", self.opacity),
        )
        guide = style.section(
            "Where to label",
            style.labelled("Suggestions", self.suggest_count, "How many slices to suggest"),
            widgets.HBox([self.suggest_button, self.retrain_button]),
            self.suggest_status,
            self.suggestion_list,
            self.show_prediction,
            self.outline_check,
            self.uncertainty_controls,
        )
        files = style.section(
            "Save and load",
            style.labelled("Path", self.labels_path, "Where the labels are saved or read"),
            widgets.HBox([self.save_labels_button, self.load_labels_button, self.overwrite_check]),
        )
        side = widgets.VBox([source, tools, classes, guide, display, files])
        canvas_column = widgets.VBox([self.view, self.info])
        box = style.panel(
            self.message,
            style.columns(canvas_column, side, viewer=canvas_column),
            title="Label (multi-ROI painting)",
        )
        super().__init__(box.children, **kw)
        self.add_class("nbseg-panel")

        self.slice_slider.observe(self._on_slice, names="value")
        self.plane_buttons.observe(self._on_plane, names="value")
        self.class_select.observe(self._on_class_select, names="value")
        self.contrast.observe(lambda _: self._render(), names="value")
        self.opacity.observe(self._on_opacity, names="value")
        self.tool.observe(self._on_tool, names="value")
        self.add_class_button.on_click(lambda _: self._ui(self._add_class_from_ui))
        self.undo_button.on_click(lambda _: self._ui(self.undo))
        self.redo_button.on_click(lambda _: self._ui(self.redo))
        self.unlabelled_slice_button.on_click(
            lambda _: self._ui(self.add_unlabelled, None, "slice")
        )
        self.unlabelled_volume_button.on_click(
            lambda _: self._ui(self.add_unlabelled, None, "volume")
        )
        self.suggest_button.on_click(lambda _: self._ui(self.suggest_labels))
        self.save_labels_button.on_click(lambda _: self._ui(self._save_from_ui))
        self.load_labels_button.on_click(lambda _: self._ui(self._load_from_ui))
        self.retrain_button.on_click(lambda _: self._ui(self.retrain))
        self.show_prediction.observe(lambda _: self._render(), names="value")
        self.outline_check.observe(lambda _: self._render(), names="value")
        self.uncertainty_controls.on_change(self._render)
        self.image_select.observe(self._on_image_select, names="value")
        self.name_text.observe(self._on_name, names="value")
        if workspace is not None:
            workspace.observe(self._on_workspace)
            self._refresh_images()

        if image is None and workspace is not None and workspace.images:
            image = next(iter(workspace.images.values()))
        if image is not None:
            self._ui(self.load, image, labels)
        else:
            self.message.show(
                "No image: pass LabelEditor(image=...) or add images to the workspace.", "info"
            )

    # -- data ------------------------------------------------------------------------------
    @property
    def labels(self) -> xr.DataArray | None:
        """The multi-ROI being edited (int16, ``-1`` unlabelled, live: edits write into it)."""
        return self._labels_da

    @property
    def image(self) -> xr.DataArray | None:
        return self._image

    @property
    def class_names(self) -> list[str]:
        return list(self._labels_da.attrs["class_names"]) if self._labels_da is not None else []

    @property
    def class_colors(self) -> list[str]:
        return list(self._labels_da.attrs["class_colors"]) if self._labels_da is not None else []

    @property
    def current_class(self) -> int:
        return int(self.class_select.value if self.class_select.value is not None else 0)

    @property
    def plane(self) -> str:
        """The plane shown and painted: ``"xy"``, ``"xz"`` or ``"yz"``."""
        return str(self.plane_buttons.value)

    @property
    def slice_count(self) -> int:
        """Slices along the shown plane's axis."""
        return 0 if self._data is None else int(self._data.shape[PLANES[self.plane]])

    def _plane_labels(self, k: int | None = None, plane: str | None = None) -> np.ndarray:
        """The labels of the shown plane (or of ``plane`` at ``k``), a view into the volume."""
        return plane_of(self._require(), plane or self.plane, self.z if k is None else k)

    def load(self, image: Any, labels: Any = None) -> None:
        """Edit ``labels`` (default: the workspace's ``name`` labels when they fit, else new
        unlabelled ones) over ``image``."""
        image = as_dataarray(image, "image")
        vol = volume_of(image)
        if labels is None and self.workspace is not None:
            existing = self.workspace.labels.get(self.name)
            if existing is not None and existing.shape == image.shape:
                labels = existing
        if labels is not None:
            labels = as_dataarray(labels, "labels")
            if labels.shape != image.shape:
                raise InputError(
                    f"Labels have shape {labels.shape} but the image has {image.shape}; give "
                    "labels of the image's geometry (or none to start unlabelled)."
                )
            names = None if "class_names" in labels.attrs else self._default_class_names
            roi = multi_roi(labels, names)
            values = np.array(roi.values, dtype=np.int16, copy=True)
            attrs = dict(roi.attrs)
        else:
            names = self._default_class_names or default_class_names(2)
            values = np.full(image.shape, UNLABELLED, np.int16)
            attrs = {"class_names": list(names), "class_colors": default_class_colors(len(names))}
        attrs["class_names"] = list(attrs["class_names"])
        attrs["class_colors"] = [str(c).lower() for c in attrs["class_colors"]]
        self._end_stroke()
        self._image = image
        self._vol = vol
        self._data = values[None] if values.ndim == 2 else values
        self._labels_da = xr.DataArray(
            values, dims=image.dims, coords=image.coords, attrs=attrs, name=self.name
        )
        self._undo.clear()
        self._redo.clear()
        self._update_undo_buttons()
        self._edits = 0
        self.suggestions, self._region = None, None  # they were of another image
        self.suggestion_list.children = []
        self.suggest_status.value = ""
        finite = vol[np.isfinite(vol)] if np.issubdtype(vol.dtype, np.floating) else vol
        step = max(1, finite.size // 2_000_000)
        sample = finite.reshape(-1)[::step].astype(np.float32)
        lo, hi = (float(sample.min()), float(sample.max())) if sample.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        plo, phi = np.percentile(sample, (0.5, 99.5)) if sample.size else (lo, hi)
        self._quiet = True
        try:
            self.contrast.min, self.contrast.max = -1e300, 1e300
            self.contrast.min, self.contrast.max = lo, hi
            self.contrast.step = (hi - lo) / 1000
            self.contrast.value = (float(plo), float(max(phi, plo + (hi - lo) / 1000)))
            if image.ndim == 2:
                self.plane_buttons.value = "xy"
            self._positions = {}
            self._shown_plane = self.plane
            n = self._data.shape[PLANES[self.plane]]
            self.slice_slider.max = max(0, n - 1)
            self.z = n // 2  # a volume opens on its middle slice
            self.slice_slider.value = self.z
        finally:
            self._quiet = False
        self.slice_row.layout.display = None if image.ndim == 3 else "none"
        self.plane_row.layout.display = None if image.ndim == 3 else "none"
        self._rebuild_classes()
        self._register()
        self._refresh_images()
        self._render()

    # -- workspace ---------------------------------------------------------------------------
    def _register(self) -> None:
        """Put :attr:`labels` (the same object) into the workspace and tell the panels."""
        ws = self.workspace
        if ws is None or self._labels_da is None:
            return
        if self._image is not None and not any(im is self._image for im in ws.images.values()):
            ws.add_image(str(self._image.name or "image"), self._image)
        ws.labels[self.name] = self._labels_da
        ws.emit("labels", self.name)

    def _changed(self) -> None:
        """After a completed edit: the workspace panels re-read the labels."""
        self._edits += 1
        if self.workspace is not None and self._labels_da is not None:
            if self.workspace.labels.get(self.name) is not self._labels_da:
                self.workspace.labels[self.name] = self._labels_da
            self.workspace.emit("labels", self.name)

    def _on_workspace(self, event: str, value: Any) -> None:
        if event == "images":
            self._refresh_images()

    def _refresh_images(self) -> None:
        if self.workspace is None:
            return
        names = list(self.workspace.images)
        self._quiet = True
        try:
            current = self.image_select.value
            self.image_select.options = names
            for n, im in self.workspace.images.items():
                if im is self._image:
                    current = n
            self.image_select.value = current if current in names else None
        finally:
            self._quiet = False

    def _on_image_select(self, change: dict[str, Any]) -> None:
        if self._quiet or self.workspace is None or change["new"] is None:
            return
        image = self.workspace.images.get(change["new"])
        if image is not None and image is not self._image:
            self._ui(self.load, image)

    def _on_name(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        new = str(change["new"]).strip()
        if not new:
            self.message.error("The labels need a name; type one in 'Labels name'.")
            return
        old = self.name
        if new == old:
            return
        self.name = new
        if self._labels_da is not None:
            self._labels_da.name = new
        if self.workspace is not None and self.workspace.labels.get(old) is self._labels_da:
            self.workspace.remove("labels", old)
        self._register()

    # -- files ---------------------------------------------------------------------------
    @property
    def unsaved(self) -> bool:
        """Whether the labels were edited since they were loaded, saved or created."""
        return self._edits > 0

    def _path_of(self, path: str | os.PathLike[str] | None, what: str) -> str:
        text = str(self.labels_path.value if path is None else os.fspath(path)).strip()
        if not text:
            raise InputError(
                f"Type the path to {what} in 'Path' (labels.zarr, labels.tif, labels.nc, "
                f"labels.ome.zarr or labels.nii.gz)."
            )
        return text

    def save_labels(
        self, path: str | os.PathLike[str] | None = None, overwrite: bool | None = None
    ) -> Path:
        """Write the labels (class ids, ``-1`` unlabelled, the image's dims and coords, class
        names and colours) to ``path`` (default: the *Path* field): ``.zarr``, ``.tif``,
        ``.nc``, and ``.ome.zarr`` / ``.nii.gz`` where :mod:`nbseg.formats` writes them.
        Atomic: a failed save leaves the old file. An existing file is replaced only with
        ``overwrite=True`` (default: the *Overwrite* box); the image's own file never."""
        labels = self._require_labels()
        self._end_stroke()
        text = self._path_of(path, "save the labels to")
        allow = bool(self.overwrite_check.value) if overwrite is None else bool(overwrite)
        if Path(text).expanduser().exists() and not allow:
            raise InputError(
                f"{text!r} already exists: tick 'Overwrite' (or pass overwrite=True) to replace "
                "it, or type a new path. Nothing was written."
            )
        check_output_path(text, [self._image])
        written = save_label_file(labels, text, overwrite=allow)
        self._edits = 0
        self.saved_path = str(written)
        if path is not None:
            self.labels_path.value = text
        n = int((np.asarray(labels.values) >= 0).sum())
        self.message.show(
            f"Saved labels {self.name!r} ({len(self.class_names)} classes, {n:,} labelled "
            f"voxels) to {str(written)!r}.",
            "info",
        )
        return written

    def load_labels(self, path: str | os.PathLike[str] | None = None) -> xr.DataArray:
        """Read labels from ``path`` (default: the *Path* field) and edit them over the
        current image: they must have its geometry (shape, and dims when named alike); class
        names and colours come from the file. Nothing changes when the file cannot be used.
        Current labels with unsaved edits stay in the workspace as ``"<name> (before
        load)"``. Returns the loaded labels (:attr:`labels`)."""
        self._end_stroke()
        image = self._image
        if image is None:
            raise InputError("No image loaded: choose the image the labels belong to first.")
        text = self._path_of(path, "read the labels from")
        roi = labels_for_image(read_array(text), image, repr(text))
        backup = None
        old = self._labels_da
        if old is not None and self.unsaved and (np.asarray(old.values) >= 0).any():
            backup = f"{self.name} (before load)"
        self.load(image, roi)  # validates before it replaces anything
        if backup is not None and self.workspace is not None and old is not None:
            kept = old.copy()
            kept.name = backup
            self.workspace.labels[backup] = kept
            self.workspace.emit("labels", backup)
        self.saved_path = text
        if path is not None:
            self.labels_path.value = text
        n = int((self._require() >= 0).sum())
        note = (
            f" The labels painted before are kept in the workspace as {backup!r}."
            if backup is not None
            else ""
        )
        self.message.show(
            f"Loaded labels from {text!r}: {len(self.class_names)} classes "
            f"({', '.join(self.class_names)}), {n:,} labelled voxels.{note}",
            "info",
        )
        assert self._labels_da is not None
        return self._labels_da

    def mark_saved(self, where: str | None = None) -> None:
        """The labels are safe (e.g. in a saved project): no unsaved edits any more."""
        self._edits = 0
        if where is not None:
            self.saved_path = where

    def edit(self, image: str, labels: str | None = None) -> None:
        """Edit the workspace multi-ROI called ``labels`` (default: the current name) over
        the workspace image called ``image`` (new unlabelled ones when there are none of its
        geometry); the name is what the workspace, the Inputs tab and projects call them."""
        ws = self.workspace
        if ws is None or image not in ws.images:
            have = sorted(ws.images) if ws is not None else []
            raise InputError(f"No image {image!r} in the workspace (images: {have}).")
        name = str(labels).strip() if labels is not None else self.name
        if not name:
            raise InputError("The labels need a name; give one.")
        self._end_stroke()
        self.name = name
        self._quiet = True
        try:
            self.name_text.value = name
        finally:
            self._quiet = False
        self.load(ws.images[image])

    def _save_from_ui(self) -> None:
        self.save_labels()

    def _load_from_ui(self) -> None:
        self.load_labels()

    # -- rendering -----------------------------------------------------------------------
    def _slice_gray(self) -> np.ndarray:
        lo, hi = self.contrast.value
        assert self._vol is not None  # an image is loaded (see _render)
        return to_uint8(plane_of(self._vol, self.plane, self.z), lo, hi)

    def _render(self) -> None:
        if self._data is None or self._quiet:
            return
        self.view.opacity = float(self.opacity.value)
        self._set_guide_layers()
        self.view.show(self._slice_gray(), self._plane_labels(), self.class_colors)
        self._update_info()

    def _set_guide_layers(self) -> None:
        """Prediction under the painting, uncertainty, unsure outline and the suggested box of
        this slice, from the last suggestions (none when they are of another image)."""
        s = self.suggestions
        if s is None or self._image is None or s.uncertainty.shape != self._image.shape:
            self.view.set_layers(
                under=None, heat=None, outline_mask=None, region=None, redraw=False
            )
            return
        u, pred = s.uncertainty, s.prediction
        z, plane = self.z, self.plane
        uv, pv = np.asarray(u.values), np.asarray(pred.values)
        u_z = uv if uv.ndim == 2 else plane_of(uv, plane, z)
        p_z = pv if pv.ndim == 2 else plane_of(pv, plane, z)
        outline = None
        if self.outline_check.value:
            if plane == "xy":
                outline = s.uncertain_mask(z)
            else:  # what uncertain_mask outlines, on this plane
                outline = u_z > s.unsure_level
                if s.novelty is not None:
                    nv = np.asarray(s.novelty.values, bool)
                    outline |= nv if nv.ndim == 2 else plane_of(nv, plane, z)
        r = self._region
        same_method = s.method == self.uncertainty_controls.method.value
        if self.uncertainty_controls.enabled and not same_method:
            self.suggest_status.value = (
                f"<span style='font-size:12px'>The map shown is the {html.escape(s.method)} "
                "map: click Suggest where to label to compute the chosen one.</span>"
            )
        self.view.under_colors = list(pred.attrs.get("class_colors", [])) or None
        self.view.set_layers(
            under=p_z if self.show_prediction.value else None,
            heat=u_z if self.uncertainty_controls.enabled and same_method else None,
            outline_mask=outline,
            region=(
                (r.y0, r.y1, r.x0, r.x1) if r is not None and r.z == z and plane == "xy" else None
            ),
            redraw=False,
        )

    def _update_info(self) -> None:
        if self._data is None or self._image is None:
            self.info.value = ""
            return
        where = ""
        if self._image.ndim == 3:
            n = self.slice_count
            axis = str(self._image.dims[PLANES[self.plane]])
            where = f"{self.plane} plane · {axis} = {self.z} (slice {self.z + 1} of {n}) · "
        tool = self.tool.value
        cls = self.class_names[self.current_class] if self.class_names else ""
        self.info.value = (
            f"<span style='font-size:12px'>{where}tool: {tool} · class: {html.escape(cls)}</span>"
        )

    def _on_slice(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self._ui(self.set_slice, int(change["new"]))

    def _on_plane(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self._ui(self.set_plane, str(change["new"]))
        if self.plane != self._shown_plane:  # refused: show the plane that is shown
            self._quiet = True
            try:
                self.plane_buttons.value = self._shown_plane
            finally:
                self._quiet = False

    def _on_class_select(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._update_info()

    def set_plane(self, plane: str, index: int | None = None) -> None:
        """Show and paint ``plane`` (``"xy"``, ``"xz"`` or ``"yz"``) of the volume at
        ``index`` along its axis (default: where it was last shown, else the middle)."""
        if plane not in PLANES:
            raise InputError(f"Plane {plane!r} does not exist; choose one of {', '.join(PLANES)}.")
        data = self._require()
        if plane != "xy" and (self._image is None or self._image.ndim != 3):
            raise InputError(f"A 2D image has only the xy plane; {plane!r} needs a volume.")
        self._end_stroke()
        self._positions[self._shown_plane] = self.z
        n = data.shape[PLANES[plane]]
        k = self._positions.get(plane, n // 2) if index is None else int(index)
        if not 0 <= k < n:
            raise InputError(f"Slice {k} is outside 0 … {n - 1} along the {plane} plane's axis.")
        self._quiet = True
        try:
            self.plane_buttons.value = plane
            self.slice_slider.max = max(0, n - 1)
            self.slice_slider.value = k
        finally:
            self._quiet = False
        self.z = k
        self._shown_plane = plane
        self._render()

    def _on_opacity(self, change: dict[str, Any]) -> None:
        self.view.set_opacity(labels=float(change["new"]))

    def _on_tool(self, change: dict[str, Any]) -> None:
        self._end_stroke()
        self.view.interactive_pan = change["new"] == "pan"
        if change["new"] not in ("brush", "eraser"):
            self.view.redraw_region(None, cursor=None)
        self._update_info()

    def set_slice(self, z: int) -> None:
        """Show slice ``z`` along the shown plane's axis (z for the xy plane)."""
        self._require()
        n = self.slice_count
        if not 0 <= z < n:
            raise InputError(f"Slice {z} is outside 0 … {n - 1}.")
        self._end_stroke()
        self.z = int(z)
        if self.slice_slider.value != self.z:
            self._quiet = True
            try:
                self.slice_slider.value = self.z
            finally:
                self._quiet = False
        self._render()

    # -- classes -------------------------------------------------------------------------
    def _rebuild_classes(self) -> None:
        names, colors = self.class_names, self.class_colors
        current = self.class_select.value
        self._quiet = True
        try:
            self.class_select.options = [(f"{i}: {n}", i) for i, n in enumerate(names)]
            self.class_select.value = (
                current if current in range(len(names)) else (1 if len(names) > 1 else 0)
            )
        finally:
            self._quiet = False
        rows = []
        for i, (n, c) in enumerate(zip(names, colors)):
            text = widgets.Text(
                value=n, continuous_update=False, layout=widgets.Layout(width="180px")
            )
            picker = widgets.ColorPicker(value=c, concise=True, layout=widgets.Layout(width="40px"))
            pick = widgets.Button(
                description="",
                icon="paint-brush",
                tooltip=f"Paint with class {i}",
                layout=widgets.Layout(width="34px"),
            )
            text.observe(lambda ch, i=i: self._ui(self._rename_from_ui, i, ch), names="value")
            picker.observe(lambda ch, i=i: self._ui(self._recolor_from_ui, i, ch), names="value")
            pick.on_click(lambda _, i=i: self.select_class(i))
            rows.append(widgets.HBox([pick, widgets.Label(f"{i}"), text, picker]))
        self.class_rows.children = rows

    def select_class(self, cls: int) -> None:
        self._check_class(cls)
        self.class_select.value = int(cls)
        self._update_info()

    def new_class(self, name: str | None = None, color: str | None = None) -> int:
        """Append a class; returns its id (it becomes the painting class)."""
        labels = self._require_labels()
        k = len(self.class_names)
        name = (name or "").strip() or f"class {k}"
        self._check_name(name, None)
        color = (color or default_class_colors(k + 1)[-1]).lower()
        hex_to_rgb(color)
        labels.attrs["class_names"] = [*self.class_names, name]
        labels.attrs["class_colors"] = [*self.class_colors, color]
        self._rebuild_classes()
        self.select_class(k)
        self._changed()
        return k

    def rename_class(self, cls: int, name: str) -> None:
        labels = self._require_labels()
        self._check_class(cls)
        name = str(name).strip()
        self._check_name(name, cls)
        names = self.class_names
        names[cls] = name
        labels.attrs["class_names"] = names
        self._rebuild_classes()
        self._update_info()
        self._changed()

    def recolor_class(self, cls: int, color: str) -> None:
        labels = self._require_labels()
        self._check_class(cls)
        color = str(color).strip().lower()
        try:
            hex_to_rgb(color)
        except InputError:
            raise InputError(
                f"Colour {color!r} for class {cls} is not of the form '#rrggbb' (e.g. '#ff0000')."
            ) from None
        colors = self.class_colors
        colors[cls] = color
        labels.attrs["class_colors"] = colors
        self._rebuild_classes()
        self._render()
        self._changed()

    def _add_class_from_ui(self) -> None:
        self.new_class(self.new_class_name.value)
        self.new_class_name.value = ""

    def _rename_from_ui(self, cls: int, change: dict[str, Any]) -> None:
        try:
            self.rename_class(cls, change["new"])
        except InputError:
            change["owner"].value = change["old"]
            raise

    def _recolor_from_ui(self, cls: int, change: dict[str, Any]) -> None:
        try:
            self.recolor_class(cls, change["new"])
        except InputError:
            change["owner"].value = change["old"]
            raise

    def _check_class(self, cls: int) -> None:
        k = len(self.class_names)
        if not isinstance(cls, (int, np.integer)) or not 0 <= cls < k:
            raise InputError(
                f"Class {cls!r} does not exist; classes are 0 … {k - 1} ({self.class_names}). "
                "Add a class first."
            )

    def _check_name(self, name: str, cls: int | None) -> None:
        if not name:
            raise InputError("A class needs a name; type one.")
        for i, n in enumerate(self.class_names):
            if n == name and i != cls:
                raise InputError(f"Class name {name!r} is already used by class {i}; pick another.")

    # -- editing -----------------------------------------------------------------------------
    def _require(self) -> np.ndarray:
        """The labels ``(z, y, x)`` being edited; raises when no image is loaded."""
        if self._data is None:
            raise InputError("No image loaded: choose an image first.")
        return self._data

    def _require_labels(self) -> xr.DataArray:
        """The labels DataArray (loaded with the image, as :meth:`_require`'s array)."""
        self._require()
        assert self._labels_da is not None
        return self._labels_da

    def _slice_index(self, z: int | None) -> int:
        self._require()
        n = self.slice_count
        if z is None:
            return self.z
        if not 0 <= int(z) < n:
            raise InputError(f"Slice {z} is outside 0 … {n - 1}.")
        return int(z)

    def _begin_stroke(self, z: int, value: int, radius: float) -> None:
        self._end_stroke()
        self._stroke = {
            "z": z,
            "plane": self.plane,
            "value": int(value),
            "radius": max(float(radius), 0.5),
            "before": self._plane_labels(z).copy(),
            "last": None,
            "box": None,
        }

    def _extend_stroke(self, y: float, x: float) -> Box | None:
        """Paint the capsule from the last point to (y, x) (index coordinates)."""
        s = self._stroke
        if s is None:
            return None
        p0 = s["last"] if s["last"] is not None else (y, x)
        s["last"] = (y, x)
        sl = self._plane_labels(s["z"], s["plane"])
        box = _stamp_segment(sl, p0, (y, x), s["radius"], s["value"])
        if box is not None:
            s["box"] = box if s["box"] is None else _union(s["box"], box)
            if s["z"] == self.z and s["plane"] == self.plane:
                self.view.redraw_region(box)
        return box

    def _end_stroke(self) -> int:
        """Finish the stroke: record its undo patch. Returns the count of changed voxels."""
        s, self._stroke = self._stroke, None
        if s is None or s["box"] is None:
            return 0
        y0, y1, x0, x1 = s["box"]
        axis = PLANES[s["plane"]]
        index = plane_index(s["plane"], s["z"], slice(y0, y1), slice(x0, x1))
        before = np.expand_dims(s["before"][y0:y1, x0:x1], axis)
        patch = Patch.from_arrays(index, before, self._require()[index], axis)
        if patch is None:
            return 0
        self._push(patch)
        self._changed()
        return int(patch.mask().sum())

    def paint(
        self,
        z: int | None,
        points: Sequence[tuple[float, float]],
        cls: int | None = None,
        radius: float | None = None,
    ) -> int:
        """Paint class ``cls`` (default: the selected one) along ``points`` ``(y, x)`` (pixel
        indices) of slice ``z`` with a disk of ``radius`` pixels; segments between points are
        filled. One undo step. Returns the number of voxels changed."""
        cls = self.current_class if cls is None else int(cls)
        self._check_class(cls)
        return self._stroke_points(z, points, cls, radius)

    def erase(
        self, z: int | None, points: Sequence[tuple[float, float]], radius: float | None = None
    ) -> int:
        """Make voxels along ``points`` unlabelled (``-1``); see :meth:`paint`."""
        return self._stroke_points(z, points, UNLABELLED, radius)

    def _stroke_points(
        self, z: int | None, points: Sequence[tuple[float, float]], value: int, radius: float | None
    ) -> int:
        z = self._slice_index(z)
        radius = float(self.brush_size.value if radius is None else radius)
        if radius < 0:
            raise InputError(f"Brush radius must be ≥ 0, got {radius}.")
        pts = [(float(p[0]), float(p[1])) for p in points]
        if not pts:
            return 0
        self._begin_stroke(z, value, radius)
        for y, x in pts:
            self._extend_stroke(y, x)
        return self._end_stroke()

    def fill(self, z: int | None, y: int, x: int, cls: int | None = None) -> int:
        """Give the connected region (4-connected, on slice ``z`` of the shown plane) of the
        label at ``(y, x)`` (row, column of the plane) class ``cls``. Returns the number of
        voxels changed."""
        z = self._slice_index(z)
        cls = self.current_class if cls is None else int(cls)
        self._check_class(cls)
        plane = self.plane
        sl = self._plane_labels(z)
        h, w = sl.shape
        y, x = int(y), int(x)
        if not (0 <= y < h and 0 <= x < w):
            raise InputError(
                f"Fill point ({y}, {x}) is outside the slice (0 … {h - 1}, 0 … {w - 1})."
            )
        target = sl[y, x]
        if target == cls:
            return 0
        comp, _ = ndimage.label(sl == target)
        region = comp == comp[y, x]
        ys, xs = ndimage.find_objects(region.astype(np.int8))[0]
        before = sl[ys, xs].copy()
        sl[ys, xs][region[ys, xs]] = cls
        self._end_stroke()
        axis = PLANES[plane]
        index = plane_index(plane, z, ys, xs)
        patch = Patch.from_arrays(index, np.expand_dims(before, axis), self._require()[index], axis)
        if patch is None:
            return 0
        self._push(patch)
        if z == self.z:
            self.view.redraw_region((ys.start, ys.stop, xs.start, xs.stop))
        self._changed()
        return int(region.sum())

    def add_unlabelled(self, cls: int | None = None, scope: str = "slice") -> int:
        """Give every unlabelled voxel of the current slice (``scope="slice"``) or of the
        whole volume (``"volume"``) class ``cls``. Returns the number of voxels changed."""
        data = self._require()
        cls = self.current_class if cls is None else int(cls)
        self._check_class(cls)
        if scope not in ("slice", "volume"):
            raise InputError(f"scope must be 'slice' or 'volume', got {scope!r}.")
        self._end_stroke()
        everything = (slice(None), slice(None), slice(None))
        index = (
            plane_index(self.plane, self.z, slice(None), slice(None))
            if scope == "slice"
            else everything
        )
        region = data[index]
        mask = region == UNLABELLED
        n = int(mask.sum())
        if not n:
            self.message.show(f"No unlabelled voxel in this {scope}.", "info")
            return 0
        patch = Patch(
            index,
            mask.shape,
            np.packbits(mask),
            np.array([UNLABELLED], np.int16),
            np.array([cls], np.int16),
            PLANES[self.plane] if scope == "slice" else None,
        )
        region[mask] = cls
        self._push(patch)
        self._render()
        self._changed()
        return n

    # -- undo ------------------------------------------------------------------------------
    def _push(self, patch: Patch) -> None:
        self._undo.append(patch)
        self._redo.clear()
        total = sum(p.nbytes for p in self._undo)
        while self._undo and (len(self._undo) > self.max_undo_steps or total > self.max_undo_bytes):
            total -= self._undo.popleft().nbytes
        self._update_undo_buttons()

    def _update_undo_buttons(self) -> None:
        self.undo_button.disabled = not self._undo
        self.redo_button.disabled = not self._redo

    @property
    def undo_count(self) -> int:
        return len(self._undo)

    @property
    def redo_count(self) -> int:
        return len(self._redo)

    def undo(self) -> bool:
        """Undo the last edit (shows its slice). False when there is nothing to undo."""
        self._end_stroke()
        if not self._undo:
            return False
        patch = self._undo.pop()
        patch.apply(self._require(), undo=True)
        self._redo.append(patch)
        self._after_history(patch)
        return True

    def redo(self) -> bool:
        self._end_stroke()
        if not self._redo:
            return False
        patch = self._redo.pop()
        patch.apply(self._require(), undo=False)
        self._undo.append(patch)
        self._after_history(patch)
        return True

    def _after_history(self, patch: Patch) -> None:
        self._update_undo_buttons()
        axis = patch.axis if patch.axis is not None else 0
        ks = patch.index[axis]
        one = ks.start is not None and ks.stop - ks.start == 1
        if one and patch.axis is not None and axis != PLANES[self.plane]:
            self.set_plane(next(p for p, a in PLANES.items() if a == axis), ks.start)
        elif one and axis == PLANES[self.plane] and ks.start != self.z:
            self.set_slice(ks.start)
        else:
            self._render()
        self._changed()

    # -- where to label ------------------------------------------------------------------
    def _model_inputs(self) -> tuple[Any, Any, Any]:
        """(model, its input image(s) for this image, mask): the workspace model; a
        multi-input model takes the inputs of the training set this image belongs to, and
        that set's mask limits the suggestions (labels outside it are not used)."""
        ws = self.workspace
        model = ws.model if ws is not None else None
        if model is None:
            raise InputError(
                "No model to suggest with: generate one in New model (or load one in Models) "
                "and train it on a few painted slices first."
            )
        if not model.trained:
            raise InputError(
                f"Model {model.name!r} is untrained: paint a few slices, train it (Train tab "
                "or Retrain), then ask for suggestions."
            )
        image = self._image
        assert image is not None and ws is not None
        owner = next((ts for ts in ws.training_sets if any(im is image for im in ts.inputs)), None)
        mask = owner.mask if owner is not None else None
        if model.spec.input_count == 1:
            return model, image, mask
        if owner is not None:
            return model, list(owner.inputs), mask
        raise InputError(
            f"Model {model.name!r} takes {model.spec.input_count} inputs: set up a training set "
            "with this image and its other inputs in the Inputs tab first."
        )

    def suggest_labels(self, count: int | None = None, *, wait: bool = False) -> SuggestionRun:
        """Start computing where to label next (same as clicking **Suggest where to label**):
        a :class:`nbseg.SuggestionRun` in the background over the current labels; when it
        ends the list, the prediction, the uncertainty and the outlines update. ``wait``:
        block until then (scripts, tests)."""
        self._require()
        model, image, mask = self._model_inputs()
        if self.suggestion_job is not None and self.suggestion_job.running:
            raise InputError("Suggestions are being computed; wait for them.")
        if self.training_running is not None and self.training_running():
            # only the training thread may use the model while it trains
            raise InputError(
                "The model is training: wait for it to end (after Retrain the suggestions "
                "refresh by themselves)."
            )
        assert self._image is not None and self._labels_da is not None
        if count is not None:
            self.suggest_count.value = int(count)
        h, w = self._image.shape[-2:]
        job = SuggestionRun(
            model,
            image,
            self._labels_da,
            count=int(self.suggest_count.value),
            axis=str(self._image.dims[0]),
            mask=mask,
            regions=3,
            size=int(max(4, min(64, h // 2, w // 2))),
            method=self.uncertainty_controls.method.value,
        )
        shown_image = self._image
        job.add_done_callback(lambda _: self._show_suggestions(job, shown_image))
        self.suggestion_job = job
        self._shown.clear()
        self.suggest_button.disabled = True
        self.suggest_status.value = "<i>Looking for the unsure places …</i>"
        job.start()
        if wait:
            job.wait()
            self._shown.wait(30)
        return job

    def _show_suggestions(self, job: SuggestionRun, image: Any = None) -> None:
        """The job's done callback (in its thread): list the suggestions, redraw (dropped
        when another image was opened meanwhile)."""
        try:
            if image is not None and image is not self._image:
                self.suggest_status.value = ""
                return
            if job.status != "completed" or job.result is None:
                self.suggest_status.value = ""
                if job.status == "failed":
                    self.message.error(job.error or "The suggestions failed.")
                return
            s = job.result
            self.suggestions = s
            self._region = None
            volume = self._image is not None and self._image.ndim == 3
            rows: list[widgets.Widget] = []
            if volume:
                shares = s.slice_novelty or [0.0] * len(s.slices)
                for z, score, new in zip(s.slices, s.slice_scores, shares, strict=True):
                    note = f" · {new:.0%} new intensities" if new >= 0.01 else ""
                    b = widgets.Button(
                        description=f"Slice {z} · score {score:.2f}{note}",
                        icon="crosshairs",
                        tooltip=f"Go to slice {z} (unsure areas outlined)"
                        + (
                            f"; {new:.0%} of it has intensities no label covers yet" if note else ""
                        ),
                        layout=widgets.Layout(width="auto"),
                    )
                    b.on_click(lambda _, z=z: self._ui(self.jump_to, z))
                    rows.append(b)
            for r in s.regions:
                where = f"slice {r.z} · " if volume else ""
                b = widgets.Button(
                    description=f"Region {where}y {r.y0}–{r.y1}, x {r.x0}–{r.x1} · {r.score:.2f}",
                    icon="square-o",
                    tooltip="Go there (the region is outlined with a dashed box)",
                    layout=widgets.Layout(width="auto"),
                )
                b.on_click(lambda _, r=r: self._ui(self.jump_to, r))
                rows.append(b)
            self.suggestion_list.children = rows
            mean = float(np.asarray(s.uncertainty.values).mean())
            self.suggest_status.value = (
                f"<span style='font-size:12px'>{len(s.slices) if volume else 0} slices, "
                f"{len(s.regions)} regions · mean uncertainty {mean:.2f} · click one to go "
                "there</span>"
                if rows
                else "<span style='font-size:12px'>Every slice holds labels already.</span>"
            )
            self._render()
        except Exception as err:  # shown in the panel, never raised into the job
            self.message.error(err)
        finally:
            self.suggest_button.disabled = False
            self._shown.set()

    def jump_to(self, where: int | Region) -> None:
        """Show a suggested slice (an index) or region (a :class:`nbseg.Region`: its slice,
        with the box outlined), with the unsure areas outlined."""
        if isinstance(where, Region):
            self._region = where
            z = where.z
        else:
            self._region = None
            z = int(where)
        if self._data is not None and self._data.shape[0] > 1:
            if self.plane != "xy":
                self.set_plane("xy", z)  # suggestions are slices along z
            else:
                self.set_slice(z)
        else:
            self._render()
        self.message.show(
            f"Slice {z}: paint the outlined unsure areas, then Retrain."
            if self.retrain_handler is not None
            else f"Slice {z}: paint the outlined unsure areas, then train again.",
            "info",
        )

    def retrain(self) -> Any:
        """Fine-tune the workspace model on the updated labels (same as **Retrain**: the
        Deep Learning Tool trains in the background, continuing the Train tab's graph, then
        refreshes the suggestions). Returns what the tool's handler returns (the run)."""
        if self.retrain_handler is None:
            raise InputError(
                "Retrain needs the Deep Learning Tool (DeepLearningTool), which owns the "
                "training; alone, call nbseg.train(model, TrainingSet(image, editor.labels))."
            )
        self._end_stroke()
        return self.retrain_handler()

    def set_retrain_handler(self, handler: Callable[[], Any] | None) -> None:
        """What **Retrain** calls (the tool sets it); the button shows only with one."""
        self.retrain_handler = handler
        self.retrain_button.layout.display = None if handler is not None else "none"

    # -- pointer -------------------------------------------------------------------------
    def _on_pointer(self, kind: str, y: float, x: float, _info: dict[str, Any]) -> None:
        if self._data is None:
            return
        tool = self.tool.value
        iy, ix = y - 0.5, x - 0.5  # image coordinates → pixel-centre (index) coordinates
        try:
            if tool in ("brush", "eraser"):
                r = float(self.brush_size.value)
                if kind == "down":
                    value = self.current_class if tool == "brush" else UNLABELLED
                    self._begin_stroke(self.z, value, r)
                    self.view.cursor = (y, x, r)
                    self._extend_stroke(iy, ix)
                elif kind == "move":
                    if self._stroke is not None:
                        self.view.cursor = (y, x, r)
                        self._extend_stroke(iy, ix)
                    else:
                        self.view.redraw_region(None, cursor=(y, x, r))
                elif kind in ("up", "out"):
                    if self._stroke is not None:  # the stroke ends where the button rose
                        self._extend_stroke(iy, ix)
                    self._end_stroke()
                    if kind == "out":
                        self.view.redraw_region(None, cursor=None)
            elif tool == "fill" and kind == "down":
                h, w = self._plane_labels().shape
                if 0 <= y < h and 0 <= x < w:
                    self.fill(self.z, math.floor(y), math.floor(x))
        except Exception as err:  # shown in the panel, never raised into the comm
            self._stroke = None
            self.message.error(err)

    def _ui(self, fn: Any, *args: Any) -> Any:
        return style.run_reporting(self.message, fn, *args)


def _stamp_segment(
    sl: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    value: int,
) -> Box | None:
    """Set ``value`` on the pixels (index coords) within ``radius`` of segment p0–p1.
    Returns the touched ``(y0, y1, x0, x1)`` or None when it lies outside the slice."""
    h, w = sl.shape
    (ay, ax), (by, bx) = p0, p1
    y0 = max(0, math.floor(min(ay, by) - radius))
    y1 = min(h, math.ceil(max(ay, by) + radius) + 1)
    x0 = max(0, math.floor(min(ax, bx) - radius))
    x1 = min(w, math.ceil(max(ax, bx) + radius) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    dy, dx = by - ay, bx - ax
    length2 = dy * dy + dx * dx
    if length2 > 0:
        t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / length2, 0.0, 1.0)
        d2 = (yy - (ay + t * dy)) ** 2 + (xx - (ax + t * dx)) ** 2
    else:
        d2 = (yy - ay) ** 2 + (xx - ax) ** 2
    inside = d2 <= radius * radius + 1e-6
    if not inside.any():
        return None
    sl[y0:y1, x0:x1][inside] = value
    return y0, y1, x0, x1


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


__all__ = ["TOOLS", "LabelEditor", "Patch"]
