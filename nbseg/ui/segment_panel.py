"""`SegmentPanel`: Dragonfly's *Segment with AI* — apply a model to whole images.

The model is the workspace's (or a ``.nbseg`` file loaded here, for this panel only); one image
per model input and an optional mask are chosen from the workspace. *Preview slice* predicts
the shown slice; *Segment* starts a :class:`nbseg.SegmentationRun` (:func:`nbseg.segment` in a
background job), shows its progress records in an IntProgress and stops it at the next batch
of tiles on *Cancel* (:meth:`nbseg.SegmentationRun.stop`). The result becomes
:attr:`SegmentPanel.result` and the workspace labels ``"<image>_segmented"``; it can also be
written to any format of :func:`nbseg.save_labels` (OME-Zarr label image, ImageJ TIFF, NIfTI,
zarr, netCDF).
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import xarray as xr

from .. import ngff
from ..errors import InputError
from ..formats import WRITE_SUFFIXES, output_suffix, save_labels
from ..inference.job import SegmentationRun
from ..inference.planes import preview_plane
from ..model import Model, load_model
from ..progress import Progress
from . import style
from .imageview import VIEWER_PX, ImageView
from .labelling import PLANES
from .preview_panel import NO_MODEL, InputPicker, image_slice, plane_toggle, result_plane
from .state import Workspace
from .uncertainty_view import UncertaintyControls

WORKSPACE_MODEL = "__workspace__"
NO_MASK = "__none__"


def check_write_path(path: str | Path) -> Path:
    """The output path, or an InputError saying what is wrong with it."""
    text = str(path).strip()
    if not text:
        raise InputError(
            "'Write to' is ticked but no path is given; type e.g. labels.ome.zarr or labels.tif."
        )
    path = Path(text).expanduser()
    if output_suffix(path) is None:
        raise InputError(
            f"Cannot write {text!r}: the name must end in one of {', '.join(WRITE_SUFFIXES)} "
            "(or be <image>.ome.zarr/labels/<name>)."
        )
    if path.exists():
        raise InputError(f"{text!r} already exists; choose another path or delete it first.")
    root = ngff.image_root_of(path)
    if root is not None:  # <image>.ome.zarr/labels/<name>: save_labels makes the labels group
        return path
    if not path.parent.exists():
        raise InputError(f"Folder {str(path.parent)!r} does not exist; create it or fix the path.")
    return path


def write_result(result: xr.DataArray, path: str | Path) -> Path:
    """Write labels with :func:`nbseg.save_labels` (any of its formats: OME-Zarr label image,
    ImageJ TIFF, NIfTI, zarr, netCDF; class names and colours kept, atomic); refuses to
    overwrite."""
    path = check_write_path(path)
    return save_labels(result, path)


class SegmentPanel(widgets.VBox):
    """Segment whole images with a model, in the background, with progress and Cancel.

    Attributes: :attr:`model_select` (workspace model or loaded files), :attr:`model_path`,
    :attr:`load_button`, :attr:`inputs` (:class:`InputPicker`), :attr:`mask_select`,
    :attr:`slice_slider`, :attr:`preview_button`, :attr:`segment_button`,
    :attr:`cancel_button`, :attr:`progress` (IntProgress), :attr:`progress_label`,
    :attr:`tta_check` (test-time augmentation), :attr:`write_check`, :attr:`write_path`,
    :attr:`view`, :attr:`message`, :attr:`job` (the current or last
    :class:`nbseg.SegmentationRun`), :attr:`result` (DataArray), :attr:`result_name`, :attr:`status` (``"idle"``,
    ``"running"``, ``"done"``, ``"cancelled"``, ``"error"``), :attr:`elapsed_s`.
    Methods: :meth:`start`, :meth:`cancel`, :meth:`wait`, :meth:`preview_slice`,
    :meth:`load_model_file`.
    """

    def __init__(
        self, workspace: Workspace | None = None, *, size: int = VIEWER_PX, **kw: Any
    ) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self.message = style.MessageBox()
        self._files: dict[str, Model] = {}
        self.model_select = widgets.Dropdown(options=[], description="")
        self.model_path = widgets.Text(placeholder="path/to/model.nbseg")
        self.load_button = widgets.Button(description="Load model file", icon="folder-open")
        self.model_info = widgets.HTML()
        self.inputs = InputPicker(self.workspace)
        self.mask_select = widgets.Dropdown(options=[("(none)", NO_MASK)], value=NO_MASK)
        self.slice_slider = widgets.IntSlider(value=0, min=0, max=0, continuous_update=False)
        self.slice_row = style.labelled("Preview slice", self.slice_slider)
        self.plane_buttons = plane_toggle()
        self.plane_row = style.labelled(
            "Plane", self.plane_buttons, "Show xy, xz or yz slices of the image and the result"
        )
        self._axis: tuple[str, int] | None = None  # (plane, slices along its axis) shown
        self.preview_button = widgets.Button(description="Preview slice", icon="eye")
        self.segment_button = widgets.Button(
            description="Segment",
            icon="play",
            button_style="primary",
            tooltip="Segment every slice of the image in the background",
        )
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", button_style="danger", disabled=True
        )
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="")
        self.progress_label = widgets.Label("")
        self.tta_check = widgets.Checkbox(
            value=False,
            description="Test-time augmentation",
            indent=False,
            tooltip="Average the predictions of every flip of each tile (4x slower in 2D, 8x in "
            "3D): smoother, often more accurate results",
        )
        self.write_check = widgets.Checkbox(value=False, description="Write to", indent=False)
        self.write_path = widgets.Text(placeholder="labels.ome.zarr, labels.tif, labels.nii.gz …")
        self.view = ImageView(size, size)
        self.uncertainty_controls = UncertaintyControls("Compute and show uncertainty")
        self.uncertainty_controls.bind(self.view)
        self.result: xr.DataArray | None = None
        self.uncertainty: xr.DataArray | None = None
        self.result_name: str | None = None
        self.status = "idle"
        self.elapsed_s: float | None = None
        self.job: SegmentationRun | None = None
        self._done = threading.Event()  # set once the panel has shown the job's end
        self._done.set()
        self._t0 = 0.0
        self._last_update = 0.0

        box = style.panel(
            self.message,
            style.section(
                "Model",
                style.labelled("Model", self.model_select),
                widgets.HBox([self.model_path, self.load_button]),
                self.model_info,
            ),
            style.section(
                "Input",
                self.inputs,
                style.labelled("Mask", self.mask_select, "Segment only inside this mask"),
            ),
            style.section(
                "Segment",
                self.plane_row,
                self.slice_row,
                self.tta_check,
                self.uncertainty_controls,
                widgets.HBox([self.preview_button, self.segment_button, self.cancel_button]),
                widgets.HBox([self.progress, self.progress_label]),
                widgets.HBox([self.write_check, self.write_path]),
            ),
            self.view,
            title="Segment with AI",
        )
        super().__init__(box.children, **kw)
        self.add_class("nbseg-panel")
        self.load_button.on_click(
            lambda _: style.run_reporting(self.message, self.load_model_file, self.model_path.value)
        )
        self.preview_button.on_click(
            lambda _: style.run_reporting(self.message, self.preview_slice)
        )
        self.segment_button.on_click(lambda _: style.run_reporting(self.message, self.start))
        self.cancel_button.on_click(lambda _: self.cancel())
        self.model_select.observe(lambda _: self._sync_model(), names="value")
        self.slice_slider.observe(lambda _: self._on_slice(), names="value")
        self.plane_buttons.observe(lambda _: self._on_input(), names="value")
        self.inputs.on_change(self._on_input)
        self.uncertainty_controls.on_change(self._on_slice)
        self.workspace.observe(self._on_workspace)
        self._refresh_models()
        self._on_input()

    # -- model -----------------------------------------------------------------------------
    @property
    def model(self) -> Model | None:
        """The chosen model (None when there is none)."""
        if self.model_select.value == WORKSPACE_MODEL:
            return self.workspace.model
        return self._files.get(self.model_select.value)

    def load_model_file(self, path: str) -> Model:
        """Load a ``.nbseg`` file and choose it (for this panel; the workspace keeps its model)."""

        path = str(path).strip()
        if not path:
            raise InputError("Type the path of a .nbseg model file first.")
        if not Path(path).expanduser().exists():
            raise InputError(f"Model file {path!r} does not exist; check the path.")
        model = load_model(Path(path).expanduser())
        self._files[path] = model
        self._refresh_models()
        self.model_select.value = path
        self.message.show(f"Loaded {model!r}.", "info")
        return model

    def _refresh_models(self) -> None:
        ws_model = self.workspace.model
        label = f"Workspace model: {ws_model.name}" if ws_model is not None else "Workspace model"
        options = [(label, WORKSPACE_MODEL)] + [(f"File: {p}", p) for p in self._files]
        current = self.model_select.value
        self.model_select.options = options
        self.model_select.value = current if current in dict(options).values() else WORKSPACE_MODEL
        self._sync_model()

    def _sync_model(self) -> None:
        model = self.model
        if model is None:
            self.model_info.value = "<i>No model: create, train or load one.</i>"
            self.inputs.set_inputs(["input_0"])
            return
        state = f"trained {model.epochs_trained} epochs" if model.trained else "untrained"
        self.model_info.value = html.escape(
            f"{model.spec.architecture} {model.spec.input_dimension}, "
            f"{model.spec.class_count} classes ({', '.join(model.class_names)}), {state}"
        )
        self.inputs.set_inputs(list(model.spec.input_names or ()))

    # -- inputs ----------------------------------------------------------------------------
    def _on_workspace(self, event: str, _value: Any) -> None:
        if event == "model":
            self._refresh_models()
        elif event == "images":
            self.inputs.refresh()
        elif event == "masks":
            self._refresh_masks()

    def _first_image(self) -> tuple[str | None, xr.DataArray | None]:
        names = self.inputs.names()
        name = names[0] if names else None
        return name, self.workspace.images.get(name) if name else None

    def _on_input(self) -> None:
        _, image = self._first_image()
        self._refresh_masks()
        if image is None:
            return
        if image.ndim == 2:
            self.plane_buttons.value = "xy"  # observed: comes back here once
        plane = self.plane
        n = image.shape[PLANES[plane]] if image.ndim == 3 else 1
        moved = self._axis is not None and self._axis[0] != plane
        self._axis = (plane, n)
        self.slice_slider.max = max(0, n - 1)
        if moved:  # another plane: its middle slice
            self.slice_slider.value = n // 2
        self.slice_row.layout.display = None if image.ndim == 3 else "none"
        self.plane_row.layout.display = None if image.ndim == 3 else "none"
        self._on_slice()

    @property
    def plane(self) -> str:
        """The plane shown: ``"xy"``, ``"xz"`` or ``"yz"``."""
        return str(self.plane_buttons.value)

    def _on_slice(self) -> None:
        """Show the slice, with the segmentation result over it when it is of this image."""
        name, image = self._first_image()
        if image is None:
            return
        index = int(self.slice_slider.value) if image.ndim == 3 else 0
        plane = self.plane
        res = self.result
        labels = None
        colors = None
        heat = None
        if res is not None and res.shape == image.shape and self.result_name == f"{name}_segmented":
            labels = result_plane(np.asarray(res.values), plane, index)
            colors = list(res.attrs.get("class_colors", []))
            u = self.uncertainty
            if u is not None and self.uncertainty_controls.enabled and u.shape == image.shape:
                method = self.uncertainty_controls.method.value
                if u.attrs.get("uncertainty", method) == method:
                    heat = result_plane(np.asarray(u.values), plane, index)
                else:  # the map of the run is of another method: say so, show none
                    self.progress_label.value = (
                        f"uncertainty map: {u.attrs.get('uncertainty')} (segment again for "
                        f"{method})"
                    )
        self.view.set_layers(heat=heat, redraw=False)
        self.view.show(image_slice(image, index, plane), labels, colors)

    def _refresh_masks(self) -> None:
        name, _ = self._first_image()
        masks = self.workspace.compatible("masks", name) if name else []
        options = [("(none)", NO_MASK)] + [(m, m) for m in masks]
        current = self.mask_select.value
        self.mask_select.options = options
        self.mask_select.value = current if current in dict(options).values() else NO_MASK

    def _mask(self) -> xr.DataArray | None:
        value = self.mask_select.value
        return None if value in (None, NO_MASK) else self.workspace.masks.get(value)

    def _checked(self) -> tuple[Any, list[xr.DataArray], xr.DataArray | None]:
        model = self.model
        if model is None:
            raise InputError(NO_MODEL)
        if not model.trained:
            raise InputError(
                f"Model {model.name!r} is untrained: train it in the Train tab (or load a "
                "trained .nbseg file) before segmenting."
            )
        images = self.inputs.images()
        mask = self._mask()
        if mask is not None and mask.shape != images[0].shape:
            raise InputError(
                f"Mask has shape {mask.shape} but the image has {images[0].shape}; choose a "
                "mask of the image's geometry."
            )
        return model, images, mask

    # -- preview ---------------------------------------------------------------------------
    def preview_slice(self, index: int | None = None, plane: str | None = None) -> xr.DataArray:
        """Predict one slice (default: the slider's) of ``plane`` (default: the *Plane*
        choice; ``"xz"`` / ``"yz"`` cut every z slice, see
        :func:`nbseg.inference.planes.preview_plane`) and show it over the image."""

        model, images, mask = self._checked()
        if plane is not None:
            if plane not in PLANES:
                raise InputError(f"Plane {plane!r}: choose one of {', '.join(PLANES)}.")
            self.plane_buttons.value = plane
        if index is not None:
            self.slice_slider.value = int(index)
        index = int(self.slice_slider.value)
        plane = self.plane
        ref = images[0]
        unc = None
        image = images if len(images) > 1 else images[0]
        tta = bool(self.tta_check.value)
        if self.uncertainty_controls.enabled:
            pred, unc = preview_plane(
                model,
                image,
                plane,
                index,
                mask=mask,
                tta=tta,
                return_uncertainty=True,
                uncertainty_method=self.uncertainty_controls.method.value,
            )
        else:
            pred = preview_plane(model, image, plane, index, mask=mask, tta=tta)
        self.view.set_layers(heat=None if unc is None else np.asarray(unc.values), redraw=False)
        self.view.show(image_slice(ref, index, plane), np.asarray(pred.values), model.class_colors)
        return pred

    # -- segment ---------------------------------------------------------------------------
    def start(self) -> None:
        """Segment the chosen image(s) in a background job (returns at once)."""
        if self.status == "running":
            raise InputError("A segmentation is already running; wait for it or Cancel it.")
        model, images, mask = self._checked()
        write_to = None
        if self.write_check.value:
            write_to = str(check_write_path(self.write_path.value))
        image_name, _ = self._first_image()
        name = f"{image_name}_segmented"
        job = SegmentationRun(
            model,
            images if len(images) > 1 else images[0],
            mask,
            progress=self._progress,
            compute=True,  # a lazy image's result is computed in the job, not on each redraw
            tta=bool(self.tta_check.value),  # read on the kernel thread, not in the job
            **(
                {
                    "return_uncertainty": True,
                    "uncertainty_method": self.uncertainty_controls.method.value,
                }
                if self.uncertainty_controls.enabled
                else {}
            ),
        )
        job.add_done_callback(lambda _: self._finish(job, images[0], name, write_to))
        self.job = job
        self._done.clear()
        self.status = "running"
        self.result = None
        self.uncertainty = None
        self.progress.value = 0
        self.progress.max = 1
        self.progress.bar_style = ""
        self.progress_label.value = "starting …"
        self.segment_button.disabled = True
        self.preview_button.disabled = True
        self.cancel_button.disabled = False
        self.message.show(f"Segmenting {image_name!r} with {model.name!r} …", "info")
        self._t0 = time.monotonic()
        self._last_update = 0.0
        try:
            job.start()
        except Exception:
            self.status = "idle"
            self._enable()
            self._done.set()
            raise

    def cancel(self) -> None:
        """Stop the running segmentation after the current batch of tiles."""
        if self.status == "running" and self.job is not None:
            self.job.stop()
            self.progress_label.value = "cancelling …"

    def wait(self, timeout: float | None = None) -> xr.DataArray | None:
        """Block until the segmentation ends and the panel shows it; returns :attr:`result`."""
        self._done.wait(timeout)
        return self.result

    def _progress(self, p: Progress) -> None:
        """The job's progress callback (in the job's thread): update the bar, at most every
        0.1 s until the last batch."""
        now = time.monotonic()
        if p.done < p.total and now - self._last_update < 0.1:
            return
        self._last_update = now
        self.progress.max = max(1, p.total)
        self.progress.value = p.done
        elapsed = now - self._t0
        eta = p.eta_s
        if eta is None and p.done:
            eta = elapsed / p.done * (p.total - p.done)
        unit = f"{p.unit}s" if p.total != 1 else p.unit
        self.progress_label.value = f"{p.done} / {p.total} {unit} · {elapsed:.1f} s" + (
            f" · ~{eta:.0f} s left" if eta is not None and p.done < p.total else ""
        )

    def _finish(
        self, job: SegmentationRun, image: xr.DataArray, name: str, write_to: str | None
    ) -> None:
        """Show the job's end (its done callback, in the job's thread)."""
        try:
            if job.status == "completed":
                result = job.result
                assert result is not None  # a completed segmentation has its labels
                if isinstance(result, tuple):  # return_uncertainty=True
                    result, unc = result
                    unc.name = f"{name}_uncertainty"
                    self.uncertainty = unc
                result.name = name
                written = write_result(result, write_to) if write_to else None
                self.elapsed_s = time.monotonic() - self._t0
                self.result = result
                self.result_name = name
                self.workspace.add_labels(name, result)
                self.progress.value = self.progress.max
                self.progress.bar_style = "success"
                self.progress_label.value = f"done in {self.elapsed_s:.1f} s"
                self._show_result(image, result, job.model.class_colors)
                where = f" and written to {str(written)!r}" if written else ""
                self.message.show(
                    f"Segmented in {self.elapsed_s:.1f} s: workspace labels {name!r}{where}.",
                    "info",
                )
                self.status = "done"
            elif job.status == "stopped":
                self.status = "cancelled"
                self.progress.bar_style = "warning"
                self.progress_label.value = "cancelled"
                self.message.show("Segmentation cancelled; no result was kept.", "warning")
            else:
                self._failed(job.error or "The segmentation failed.")
        except Exception as err:  # shown in the panel with its fix, not as a traceback
            self._failed(err)
        finally:
            self._enable()
            self._done.set()

    def _failed(self, err: BaseException | str) -> None:
        self.status = "error"
        self.progress.bar_style = "danger"
        self.progress_label.value = "failed"
        self.message.error(err)

    def _enable(self) -> None:
        self.segment_button.disabled = False
        self.preview_button.disabled = False
        self.cancel_button.disabled = True

    def _show_result(self, image: xr.DataArray, result: xr.DataArray, colors: list[str]) -> None:
        self._on_slice()
