"""`InputsPanel`: Dragonfly's *Inputs* tab — training sets, unlabelled images, validation and
visual feedback.

Each training-set row picks the input image(s) (one per model input), the output multi-ROI
(only those with the image's geometry and, when a model exists, no class beyond its class
count) and an optional mask. *Unlabelled images* are rows of input image(s) only: images
without labels that training learns from as well (``nbseg.train(..., unlabelled=)``, the
pseudo-labels of ``TrainingParams.semi_supervised``). Validation is a % split of the labelled
patches or ground-truth set(s) given as rows too. The *visual feedback* section shows a slice
of a training set; a mouse drag (or the four numeric fields) sets the rectangle that the Train
panel predicts after every epoch. Valid inputs go to the workspace (``set_training_sets``,
``set_unlabelled``, ``set_feedback``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import xarray as xr

from ..data.trainingset import TrainingSet, volume_of
from ..errors import InputError
from ..render import to_uint8
from ..training.callbacks import FeedbackRegion
from ..training.params import TrainingParams
from . import style
from .imageview import ImageView
from .open_data import OpenDataControl
from .state import Workspace, max_class

_COL = "170px"
_TITLE_COL = "60px"
_NONE = "(none)"
#: the Mask dropdown's value for no mask (a Dropdown shows a None value as blank)
NO_MASK = "__none__"
#: the prefix of Mask options that make a mask from a class of a multi-ROI
FROM_LABELS = "__from_labels__"


def _dropdown(tooltip: str) -> widgets.Dropdown:
    return widgets.Dropdown(options=[], layout=widgets.Layout(width=_COL), tooltip=tooltip)


def _set_options(dd: widgets.Dropdown, options: list, keep: bool = True) -> None:
    """Replace a Dropdown's options, keeping its value when still offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    old = dd.value
    if list(dd.options) != options:
        dd.options = options
    if keep and old in values:
        dd.value = old
    elif values:
        dd.value = values[0]


class _InputCells:
    """The input-image cells of a row: one Dropdown per model input in ``inputs_box``."""

    inputs: list[widgets.Dropdown]
    inputs_box: widgets.HBox
    _on_change: Callable[[Any], None]
    _input_tooltip = "Input {} of the model"

    def set_input_count(self, n: int) -> None:
        while len(self.inputs) < n:
            dd = _dropdown(self._input_tooltip.format(len(self.inputs) + 1))
            dd.observe(lambda _: self._on_change(self), "value")
            self.inputs.append(dd)
        del self.inputs[n:]
        self.inputs_box.children = tuple(self.inputs)

    @property
    def input_names(self) -> list[str | None]:
        return [dd.value for dd in self.inputs]


class TrainingSetRow(_InputCells, widgets.HBox):
    """One training (or ground-truth) set: input(s), output multi-ROI, optional mask.

    Attributes: ``inputs`` (list of Dropdowns, one per model input), ``output``, ``mask``
    (value :data:`NO_MASK` = no mask; :attr:`mask_name` gives None then), ``remove_button``,
    ``title``. Cells have the widths of the panel's column headers.
    """

    def __init__(self, index: int, on_change: Callable[[TrainingSetRow], None]) -> None:
        self._on_change = on_change
        self.title = widgets.Label(layout=widgets.Layout(width=_TITLE_COL))
        self.title.add_class("nbseg-keep")  # "Set 1" whole: the other cells shrink
        self.inputs: list[widgets.Dropdown] = []
        self.inputs_box = widgets.HBox()
        self.output = _dropdown("Output multi-ROI (same geometry as the input)")
        self.mask = _dropdown("Optional mask: patches and loss only inside it")
        self.remove_button = widgets.Button(
            icon="trash", tooltip="Remove this set", layout=widgets.Layout(width="34px")
        )
        super().__init__([self.title, self.inputs_box, self.output, self.mask, self.remove_button])
        self.add_class("nbseg-set-row")
        self.add_class("nbseg-compact")  # no 150 px label column: cells line up with headers
        self.output.observe(lambda _: self._on_change(self), "value")
        self.mask.observe(lambda _: self._on_change(self), "value")
        self.set_index(index)

    def set_index(self, index: int) -> None:
        self.index = index
        self.title.value = f"Set {index + 1}"

    @property
    def mask_name(self) -> str | None:
        """The chosen workspace mask, or None for *(none)*."""
        value = self.mask.value
        return None if value in (None, NO_MASK) else str(value)

    def key(self) -> tuple[tuple[str | None, ...], str | None]:
        """What the set trains on: (input images, output multi-ROI)."""
        return tuple(self.input_names), self.output.value

    def describe(self) -> str:
        names = ", ".join(str(n) for n in self.input_names)
        return f"{names} → {self.output.value}"


class UnlabelledRow(_InputCells, widgets.HBox):
    """One unlabelled image: its input image(s), one Dropdown per model input.

    Attributes: ``inputs`` (list of Dropdowns), ``remove_button``, ``title``; the cells have
    the widths of the training-set rows.
    """

    _input_tooltip = "Input {} of the model: an image without labels"

    def __init__(self, index: int, on_change: Callable[[UnlabelledRow], None]) -> None:
        self._on_change = on_change
        self.title = widgets.Label(layout=widgets.Layout(width=_TITLE_COL))
        self.title.add_class("nbseg-keep")
        self.inputs: list[widgets.Dropdown] = []
        self.inputs_box = widgets.HBox()
        self.remove_button = widgets.Button(
            icon="trash", tooltip="Remove this image", layout=widgets.Layout(width="34px")
        )
        super().__init__([self.title, self.inputs_box, self.remove_button])
        self.add_class("nbseg-set-row")
        self.add_class("nbseg-compact")
        self.set_index(index)

    def set_index(self, index: int) -> None:
        self.index = index
        self.title.value = f"Image {index + 1}"

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.input_names)


class InputsPanel(widgets.VBox):
    """Training sets, validation and the visual-feedback region.

    Attributes
    ----------
    workspace
        The shared :class:`~nbseg.ui.state.Workspace`.
    rows, add_button
        Training-set rows (:class:`TrainingSetRow`) and "Add new".
    unlabelled_rows, add_unlabelled_button, unlabelled_note
        Unlabelled images (:class:`UnlabelledRow`, one Dropdown per model input), "Add
        unlabelled image" and the one-line explanation; :meth:`choose_unlabelled` sets them
        by name. Applied, they are ``workspace.unlabelled`` (what Train learns from too).
    validation_mode
        ``"split"`` (``validation_percent``, a FloatSlider in %) or ``"sets"``
        (``validation_rows``, added with ``add_validation_button``).
    feedback_set, slice_slider, view, box_y0, box_y1, box_x0, box_x1
        Visual feedback: training set, slice, :class:`ImageView` (drag a rectangle) and the
        box ``(y0, y1, x0, x1)`` in voxels (end exclusive).
    apply_button, message, summary
        "Use these inputs" (:meth:`apply`, also run automatically on every change).
    """

    def __init__(self, workspace: Workspace | None = None, **kw: Any) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self._updating = False
        self._drag_start: tuple[float, float] | None = None
        self._last_feedback: FeedbackRegion | None = None
        self._shown: tuple[int, int] | None = None  # (set, slice) displayed
        self.sets: list[TrainingSet] = []
        self._valid = False  # whether the last apply succeeded
        self.validation_sets: list[TrainingSet] = []
        self.unlabelled: list[list[xr.DataArray]] = []  # the applied unlabelled images
        self._derived: dict[str, tuple[str, int]] = {}  # mask made from (labels, class id)

        self.rows: list[TrainingSetRow] = []
        self.rows_box = widgets.VBox()
        self.header = widgets.HBox()
        self.add_button = widgets.Button(
            description="Add new", icon="plus", tooltip="Add a training set"
        )
        self.unlabelled_rows: list[UnlabelledRow] = []
        self.unlabelled_rows_box = widgets.VBox()
        self.unlabelled_header = widgets.HBox(layout=widgets.Layout(display="none"))
        self.add_unlabelled_button = widgets.Button(
            description="Add unlabelled image",
            icon="plus",
            tooltip="Add an image without labels for training to learn from as well",
        )
        self.unlabelled_note = widgets.HTML(
            "<div style='color:#666'>Images without labels: training also learns from the "
            "model's confident predictions on them (pseudo-labels; see Training parameters → "
            "Unlabelled data).</div>"
        )
        self.validation_mode = widgets.ToggleButtons(
            options=[("% split", "split"), ("Ground-truth set(s)", "sets")],
            value="split",
            tooltips=[
                "Keep a share of the labelled patches for validation",
                "Validate on separate, fully labelled sets",
            ],
            style={"button_width": "auto"},
        )
        self.validation_percent = style.validation_slider()
        self.validation_rows: list[TrainingSetRow] = []
        self.validation_rows_box = widgets.VBox()
        self.add_validation_button = widgets.Button(
            description="Add ground-truth set", icon="plus", tooltip="Add a validation set"
        )
        self.split_box = widgets.VBox(
            [
                style.labelled(
                    "Validation (%)",
                    self.validation_percent,
                    "Share of the labelled patches kept for validation (0 = none)",
                )
            ]
        )
        self.sets_box = widgets.VBox(
            [self.validation_rows_box, self.add_validation_button],
            layout=widgets.Layout(display="none"),
        )

        self.feedback_set = widgets.Dropdown(options=[], layout=widgets.Layout(width="320px"))
        self.slice_slider = widgets.IntSlider(
            value=0, min=0, max=0, continuous_update=False, layout=widgets.Layout(width="320px")
        )
        self.view = ImageView(interactive_pan=False)
        self.box_y0, self.box_y1, self.box_x0, self.box_x1 = (
            widgets.IntText(
                value=0,
                description=d,
                layout=widgets.Layout(width="120px"),
                style={"description_width": "24px"},
            )
            for d in ("y0", "y1", "x0", "x1")
        )
        self.apply_button = widgets.Button(
            description="Use these inputs",
            icon="check",
            button_style="primary",
            tooltip="Validate the sets and hand them to training",
        )
        self.summary = widgets.HTML()
        self.message = style.MessageBox()

        self.open_data = OpenDataControl(self.workspace, self.message)
        self.open_toggle = self.open_data.toggle
        box = style.panel(
            style.section("Open data", self.open_toggle, self.open_data),
            style.section(
                "Training sets",
                self.header,
                self.rows_box,
                self.add_button,
            ),
            style.section(
                "Unlabelled images",
                self.unlabelled_note,
                self.unlabelled_header,
                self.unlabelled_rows_box,
                self.add_unlabelled_button,
            ),
            style.section("Validation", self.validation_mode, self.split_box, self.sets_box),
            style.section(
                "Visual feedback",
                style.labelled("Training set", self.feedback_set, "Set shown during training"),
                style.labelled("Slice", self.slice_slider, "Slice of the feedback region"),
                widgets.HTML(
                    "<div style='color:#666'>Drag a rectangle on the image to choose the "
                    "region predicted after every epoch, or type its bounds (voxels, end "
                    "exclusive).</div>"
                ),
                self.view,
                _compact(widgets.HBox([self.box_y0, self.box_y1, self.box_x0, self.box_x1])),
            ),
            widgets.HBox([self.apply_button]),
            self.message,
            self.summary,
            title="Inputs",
        )
        super().__init__(children=box.children, **kw)
        self.add_class("nbseg-panel")

        self.add_button.on_click(lambda _: self.add_row())
        self.add_validation_button.on_click(lambda _: self.add_row(validation=True))
        self.add_unlabelled_button.on_click(lambda _: self.add_unlabelled_row())
        self.apply_button.on_click(lambda _: self._auto_apply())
        self.validation_mode.observe(lambda _: self._validation_mode_changed(), "value")
        self.validation_percent.observe(lambda _: self._auto_apply(), "value")
        self.feedback_set.observe(lambda _: self._feedback_changed(reset_box=True), "value")
        self.slice_slider.observe(lambda _: self._feedback_changed(), "value")
        for w in (self.box_y0, self.box_y1, self.box_x0, self.box_x1):
            w.observe(lambda _: self._box_typed(), "value")
        self.view.on_pointer(self._pointer)
        self.workspace.observe(self._on_workspace)

        v = self.workspace.validation
        if isinstance(v, float | int) and not isinstance(v, bool):
            self.validation_percent.value = float(v) * 100.0
        self._update_header()
        if self.workspace.images:
            self.add_row()
        else:
            self.message.show(
                "No images in the workspace yet: add an image and a multi-ROI "
                "(Workspace.add_image / add_labels, or the Label tab), then choose them here.",
                "info",
            )

    # -- rows ------------------------------------------------------------------------------
    @property
    def input_count(self) -> int:
        model = self.workspace.model
        return model.spec.input_count if model is not None else 1

    def _input_labels(self) -> list[str]:
        model = self.workspace.model
        if model is not None and model.spec.input_names:
            return list(model.spec.input_names)
        return [f"Input {i + 1}" for i in range(self.input_count)]

    def _update_header(self) -> None:
        def head(text: str, width: str = _COL) -> widgets.HTML:
            return widgets.HTML(f"<b>{html.escape(text)}</b>", layout=widgets.Layout(width=width))

        self.header.add_class("nbseg-compact")
        self.header.children = (
            head("", _TITLE_COL),
            *(head(n) for n in self._input_labels()),
            head("Output multi-ROI"),
            head("Mask"),
            head("", "34px"),  # over the rows' remove buttons: the cells shrink alike
        )
        self.unlabelled_header.add_class("nbseg-compact")
        self.unlabelled_header.children = (
            head("", _TITLE_COL),
            *(head(n) for n in self._input_labels()),
            head("", "34px"),
        )
        self.unlabelled_header.layout.display = None if self.unlabelled_rows else "none"

    def add_row(self, validation: bool = False) -> TrainingSetRow:
        """Add a training (or, with ``validation``, a ground-truth) set row and apply."""
        rows = self.validation_rows if validation else self.rows
        row = TrainingSetRow(len(rows), self._row_changed)
        row.remove_button.on_click(lambda _, r=row: self.remove_row(r))
        rows.append(row)
        self._updating = True
        try:
            self._refresh_row(row, prefer_unused=True)
        finally:
            self._updating = False
        self._layout_rows()
        self._auto_apply()
        return row

    def remove_row(self, row: TrainingSetRow | UnlabelledRow) -> None:
        """Remove a training, ground-truth or unlabelled-image row and apply."""
        lists: tuple[list[Any], ...] = (self.rows, self.validation_rows, self.unlabelled_rows)
        for rows in lists:
            if row in rows:
                rows.remove(row)
                for i, r in enumerate(rows):
                    r.set_index(i)
        self._layout_rows()
        self._auto_apply()

    def add_unlabelled_row(self) -> UnlabelledRow:
        """Add an unlabelled-image row (images no set uses offered first) and apply."""
        row = UnlabelledRow(len(self.unlabelled_rows), self._unlabelled_changed)
        row.remove_button.on_click(lambda _, r=row: self.remove_row(r))
        self.unlabelled_rows.append(row)
        self._updating = True
        try:
            self._refresh_unlabelled_row(row, prefer_unused=True)
        finally:
            self._updating = False
        self._layout_rows()
        self._auto_apply()
        return row

    def choose_unlabelled(self, images: Sequence[str | Sequence[str]]) -> list[list[xr.DataArray]]:
        """Show ``images`` as the unlabelled-image rows and apply (what choosing them in
        *Unlabelled images* does): workspace image names, one per image, or for a model of
        several inputs one list of names per image. Returns the applied unlabelled images.
        An unknown name or a wrong input count is an InputError naming it, and the rows stay
        as they were; a failing apply (e.g. no training set yet) is shown in :attr:`message`.
        """
        self._updating = True
        try:
            rows = [self._restored_unlabelled(i, names) for i, names in enumerate(images)]
            self.unlabelled_rows = rows
        finally:
            self._updating = False
        self._layout_rows()
        self._auto_apply()
        return list(self.workspace.unlabelled)

    def restore(
        self,
        sets: Sequence[Any],
        validation: float | Sequence[Any],
        unlabelled: Sequence[str | Sequence[str]] = (),
    ) -> list[TrainingSet]:
        """Show ``sets`` as the training-set rows, ``validation`` (a fraction, or sets as
        ground-truth rows) and ``unlabelled`` (image names, a list per image for several
        inputs) as the unlabelled-image rows, then apply (a saved project's inputs). A set is
        anything with ``inputs`` (image names), ``output`` (a multi-ROI name) and ``mask`` (a
        mask name or None), e.g. :class:`nbseg.project.SetRef`. Names the workspace lacks, or
        choices the rows cannot offer, are an InputError naming them, and the rows stay as
        they were."""
        gt = list(validation) if not isinstance(validation, float | int) else []
        self._updating = True
        try:
            rows = [self._restored_row(i, ref, "training set") for i, ref in enumerate(sets)]
            vrows = [self._restored_row(i, ref, "ground-truth set") for i, ref in enumerate(gt)]
            urows = [self._restored_unlabelled(i, names) for i, names in enumerate(unlabelled)]
            self.rows, self.validation_rows = rows, vrows
            self.unlabelled_rows = urows
            if isinstance(validation, float | int):
                self.validation_mode.value = "split"
                self.validation_percent.value = float(validation) * 100.0
            else:
                self.validation_mode.value = "sets"
        finally:
            self._updating = False
        self._layout_rows()
        return self.apply()

    def _restored_row(self, index: int, ref: Any, what: str) -> TrainingSetRow:
        ws = self.workspace
        where = f"{what} {index + 1}"
        row = TrainingSetRow(index, self._row_changed)
        row.remove_button.on_click(lambda _, r=row: self.remove_row(r))
        self._refresh_row(row)
        for k, (dd, name) in enumerate(zip(row.inputs, ref.inputs)):
            if name not in dd.options:
                raise InputError(
                    f"{where}: input {k + 1} is image {name!r}, which the workspace does not "
                    f"hold (images: {sorted(ws.images)})."
                )
            dd.value = name
            self._refresh_row(row)
        if ref.output not in row.output.options:
            raise InputError(
                f"{where}: labels {ref.output!r} do not fit image {row.input_names[0]!r}"
                + (
                    f": {self._why_no_output(str(row.input_names[0]))}."
                    if row.input_names[0] in ws.images
                    else "."
                )
            )
        row.output.value = ref.output
        mask = ref.mask if ref.mask is not None else NO_MASK
        if mask not in [v for _, v in row.mask.options]:
            raise InputError(
                f"{where}: mask {ref.mask!r} is not a workspace mask of image "
                f"{row.input_names[0]!r}'s geometry (masks: {sorted(ws.masks)})."
            )
        row.mask.value = mask
        return row

    def _restored_unlabelled(self, index: int, names: str | Sequence[str]) -> UnlabelledRow:
        ws = self.workspace
        where = f"Unlabelled image {index + 1}"
        chosen = [names] if isinstance(names, str) else list(names)
        if len(chosen) != self.input_count:
            raise InputError(
                f"{where}: {len(chosen)} image(s) {chosen} given but the model takes "
                f"{self.input_count} input(s); give one workspace image per model input."
            )
        row = UnlabelledRow(index, self._unlabelled_changed)
        row.remove_button.on_click(lambda _, r=row: self.remove_row(r))
        self._refresh_unlabelled_row(row)
        for k, (dd, name) in enumerate(zip(row.inputs, chosen)):
            if not isinstance(name, str) or name not in dd.options:
                raise InputError(
                    f"{where}: input {k + 1} is image {name!r}, which the workspace does not "
                    f"hold (images: {sorted(ws.images)})."
                )
            dd.value = name
            self._refresh_unlabelled_row(row)
        return row

    def _layout_rows(self) -> None:
        self.rows_box.children = tuple(self.rows)
        self.validation_rows_box.children = tuple(self.validation_rows)
        self.unlabelled_rows_box.children = tuple(self.unlabelled_rows)
        self.unlabelled_header.layout.display = None if self.unlabelled_rows else "none"

    def _refresh_inputs(
        self, row: TrainingSetRow | UnlabelledRow, prefer_unused: bool, used: set[Any]
    ) -> None:
        """The input dropdowns of a row: a new row's first input offers ``used`` images
        last; a further input offers images of the first one's geometry first."""
        ws = self.workspace
        row.set_input_count(self.input_count)
        images = list(ws.images)
        for k, dd in enumerate(row.inputs):
            options = images
            if k == 0 and prefer_unused and dd.value is None:
                options = [n for n in images if n not in used] + [n for n in images if n in used]
            elif k > 0 and row.inputs[0].value in ws.images:
                first = row.inputs[0].value
                same = ws.compatible("images", first)
                # inputs of one geometry first; the others stay choosable (a clear error)
                options = [n for n in same if n != first] + [n for n in images if n not in same]
                options += [first] if first in images and first not in options else []
            _set_options(dd, options)
            if prefer_unused and options and k == 0:
                dd.value = options[0]

    def _refresh_unlabelled_row(self, row: UnlabelledRow, prefer_unused: bool = False) -> None:
        used = {  # any input of any other row: an unlabelled image is one no set uses
            n
            for r in (*self.rows, *self.validation_rows, *self.unlabelled_rows)
            if r is not row
            for n in r.input_names
        }
        self._refresh_inputs(row, prefer_unused, used)

    def _refresh_row(self, row: TrainingSetRow, prefer_unused: bool = False) -> None:
        ws = self.workspace
        used = {r.inputs[0].value for r in (*self.rows, *self.validation_rows) if r.inputs}
        self._refresh_inputs(row, prefer_unused, used)
        first = row.inputs[0].value if row.inputs else None
        labels = ws.compatible("labels", first) if first else []
        if prefer_unused and row.output.value is None:
            # a new row: labels not yet used with this image first (no silent copy of a set)
            taken = {
                r.output.value
                for r in (*self.rows, *self.validation_rows)
                if r is not row and r.inputs and r.inputs[0].value == first
            }
            labels = [n for n in labels if n not in taken] + [n for n in labels if n in taken]
        _set_options(row.output, labels)
        _set_options(row.mask, self._mask_options(first))

    def _mask_options(self, image: str | None) -> list[tuple[str, str]]:
        """*(none)*, the workspace masks of the image's geometry, and a mask from each class
        of each multi-ROI of that geometry (made when chosen, kept up to date)."""
        ws = self.workspace
        options = [(_NONE, NO_MASK)]
        if not image or image not in ws.images:
            return options
        options += [(m, m) for m in ws.compatible("masks", image)]
        shape = ws.images[image].shape
        for name, roi in ws.labels.items():
            if roi.shape != shape:
                continue
            for k, cls in enumerate(roi.attrs.get("class_names", [])):
                made = _derived_name(name, str(cls))
                if made not in ws.masks:
                    options.append((f"from {name}: {cls}", f"{FROM_LABELS}{name}\x1f{k}"))
        return options

    def make_mask(self, labels: str, cls: int | str) -> str:
        """Add a mask made of class ``cls`` (id or name) of the workspace multi-ROI
        ``labels`` to the workspace (what a Mask choice *from <labels>: <class>* does); it is
        kept up to date while the labels are painted. Returns its name."""
        ws = self.workspace
        if labels not in ws.labels:
            raise InputError(
                f"No multi-ROI {labels!r} in the workspace (it has {sorted(ws.labels)}); paint "
                "one in the Label tab first."
            )
        names = [str(n) for n in ws.labels[labels].attrs.get("class_names", [])]
        k = names.index(cls) if isinstance(cls, str) and cls in names else cls
        if not isinstance(k, int) or not 0 <= k < len(names):
            raise InputError(
                f"Class {cls!r} is not a class of {labels!r} (classes: {names}); choose one."
            )
        name = _derived_name(labels, names[k])
        self._derived[name] = (labels, k)
        ws.masks[name] = self._derived_mask(labels, k, name)
        return name

    def _derived_mask(self, labels: str, k: int, name: str) -> xr.DataArray:
        roi = self.workspace.labels[labels]
        return xr.DataArray(
            np.asarray(roi.values) == k, dims=roi.dims, coords=roi.coords, name=name
        )

    def _update_derived(self, labels: str) -> bool:
        """Recompute the masks made from ``labels``; True when one is used by a row."""
        ws = self.workspace
        used = {r.mask_name for r in (*self.rows, *self.validation_rows)}
        hit = False
        for name, (source, k) in list(self._derived.items()):
            if source != labels:
                continue
            if labels not in ws.labels or name not in ws.masks:
                del self._derived[name]
                continue
            roi = ws.labels[labels]
            if roi.shape != ws.masks[name].shape or k >= len(roi.attrs.get("class_names", [])):
                continue
            ws.masks[name] = self._derived_mask(labels, k, name)
            hit = hit or name in used
        return hit

    def refresh(self) -> None:
        """Recompute every dropdown from the workspace (keeps choices still valid)."""
        self._updating = True
        try:
            self._update_header()
            for row in (*self.rows, *self.validation_rows):
                self._refresh_row(row)
            for urow in self.unlabelled_rows:
                self._refresh_unlabelled_row(urow)
        finally:
            self._updating = False

    def _unlabelled_changed(self, row: UnlabelledRow) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self._refresh_unlabelled_row(row)  # the first input orders the others' options
        finally:
            self._updating = False
        self._auto_apply()

    def _row_changed(self, row: TrainingSetRow) -> None:
        if self._updating:
            return
        choice = row.mask.value
        if isinstance(choice, str) and choice.startswith(FROM_LABELS):
            labels, k = choice[len(FROM_LABELS) :].rsplit("\x1f", 1)
            made = style.run_reporting(self.message, self.make_mask, labels, int(k))
            self._updating = True
            try:
                self._refresh_row(row)
                row.mask.value = made if made is not None else NO_MASK
            finally:
                self._updating = False
            if made is not None:
                self.workspace.emit("masks", made)  # the other panels offer it; applies
            return
        self._updating = True
        try:
            self._refresh_row(row)  # the first input decides the compatible outputs and masks
        finally:
            self._updating = False
        self._auto_apply()

    def _validation_mode_changed(self) -> None:
        sets = self.validation_mode.value == "sets"
        self.split_box.layout.display = "none" if sets else None
        self.sets_box.layout.display = None if sets else "none"
        if sets and not self.validation_rows and self.workspace.images:
            self.add_row(validation=True)  # applies
        else:
            self._auto_apply()

    # -- apply -----------------------------------------------------------------------------
    def _auto_apply(self) -> None:
        if not self._updating:
            style.run_reporting(self.message, self.apply)

    def _why_no_output(self, image: str) -> str:
        ws = self.workspace
        shape = ws.images[image].shape
        if not ws.labels:
            return (
                "the workspace has no multi-ROI; paint one in the Label tab or add one with "
                "Workspace.add_labels"
            )
        reasons = []
        k = ws.model.spec.class_count if ws.model is not None else None
        for name, roi in ws.labels.items():
            if roi.shape != shape:
                reasons.append(f"{name!r} has shape {roi.shape}")
            elif k is not None and max_class(roi) >= k:
                reasons.append(
                    f"{name!r} holds class id {max_class(roi)} but the model has {k} classes"
                )
        fix = "paint a multi-ROI on this image"
        if k is not None:
            fix += " or generate a model with more classes"
        return f"{'; '.join(reasons)} — {fix}"

    def _build(self, row: TrainingSetRow, what: str) -> TrainingSet:
        ws = self.workspace
        chosen = row.input_names
        where = f"{what} {row.index + 1}"
        if not ws.images:
            raise InputError(
                f"{where}: the workspace has no image; add one (Workspace.add_image) first."
            )
        missing = [i + 1 for i, n in enumerate(chosen) if n not in ws.images]
        if missing:
            raise InputError(f"{where}: choose an image for input(s) {missing}.")
        names = [n for n in chosen if n is not None]  # all of them (none is missing)
        image = names[0]
        if row.output.value not in ws.labels:
            raise InputError(
                f"{where}: no output multi-ROI fits image {image!r} (shape "
                f"{ws.images[image].shape}): {self._why_no_output(image)}."
            )
        mask = ws.masks.get(row.mask_name) if row.mask_name is not None else None
        label = f"{what} {row.index + 1} ({', '.join(names)} → {row.output.value}" + (
            f", mask {row.mask_name})" if mask is not None else ")"
        )
        ts = TrainingSet(
            inputs=[ws.images[n] for n in names],
            output=ws.labels[row.output.value],
            mask=mask,
            name=label,
        )
        model = ws.model
        if model is not None:
            ts.validate(input_count=model.spec.input_count, class_count=model.spec.class_count)
        else:
            ts.validate()
        return ts

    def _build_unlabelled(self, row: UnlabelledRow) -> list[xr.DataArray]:
        ws = self.workspace
        where = f"Unlabelled image {row.index + 1}"
        chosen = row.input_names
        missing = [i + 1 for i, n in enumerate(chosen) if n not in ws.images]
        if missing:
            raise InputError(
                f"{where}: choose an image for input(s) {missing}, or remove the row (trash "
                "button)."
            )
        inputs = [ws.images[str(n)] for n in chosen]
        shape = inputs[0].shape
        for name, da in zip(chosen, inputs):
            if da.shape != shape:
                raise InputError(
                    f"{where}: its inputs differ in shape ({chosen[0]!r} is {shape}, {name!r} "
                    f"is {da.shape}); choose images of one geometry."
                )
        return inputs

    def build_unlabelled(self) -> list[list[xr.DataArray]]:
        """The chosen unlabelled images (one list of inputs each), checked like :meth:`apply`
        checks them but without handing anything to the workspace."""
        return [self._build_unlabelled(r) for r in self.unlabelled_rows]

    def apply(self) -> list[TrainingSet]:
        """Build and validate the training sets and the unlabelled images and hand them to the
        workspace.

        Raises :class:`~nbseg.InputError` naming the set (or unlabelled image) and the arrays
        when a row is invalid; the workspace then holds no training sets and no unlabelled
        images (training cannot use stale inputs).
        """
        try:
            if not self.rows:
                raise InputError("No training set: click 'Add new' and choose an image.")
            sets = [self._build(r, "training set") for r in self.rows]
            if self.validation_mode.value == "sets":
                if not self.validation_rows:
                    raise InputError(
                        "Validation by ground-truth set needs at least one set: click 'Add "
                        "ground-truth set', or switch to '% split'."
                    )
                validation: float | list[TrainingSet] = [
                    self._build(r, "ground-truth set") for r in self.validation_rows
                ]
            else:
                validation = float(self.validation_percent.value) / 100.0
            unlabelled = self.build_unlabelled()
        except Exception:
            self._valid = False
            self.sets, self.validation_sets, self.unlabelled = [], [], []
            self.summary.value = ""
            if self.workspace.unlabelled:
                self.workspace.set_unlabelled([])
            if self.workspace.training_sets:
                self.workspace.set_training_sets([])
            self._update_feedback_options()
            raise
        self._valid = True
        self.sets = sets
        self.validation_sets = validation if isinstance(validation, list) else []
        self.unlabelled = unlabelled
        self.workspace.set_unlabelled(unlabelled)
        self.workspace.set_training_sets(sets, validation)
        self._update_feedback_options()
        self._send_feedback()
        self._show_summary(sets, validation)
        repeats = self.repeated_sets()
        if repeats:
            self.message.show(" ".join(repeats), "warning")
        return sets

    def repeated_sets(self) -> list[str]:
        """Warnings for rows that train on the same image(s) and labels as an earlier row,
        and for ground-truth sets that are training sets (empty when there is none)."""
        out = []
        seen: dict[Any, int] = {}
        for r in self.rows:
            key = r.key()
            if key in seen:
                out.append(
                    f"Set {r.index + 1} repeats set {seen[key] + 1} ({r.describe()}): it adds "
                    "the same data twice. Choose another image or labels, or remove it."
                )
            else:
                seen[key] = r.index
        if self.validation_mode.value == "sets":
            for r in self.validation_rows:
                key = r.key()
                if key in seen:
                    out.append(
                        f"Ground-truth set {r.index + 1} is training set {seen[key] + 1} "
                        f"({r.describe()}): validating on the training data cannot show "
                        "over-fitting. Paint separate ground-truth labels (Label tab, another "
                        "labels name) and choose them, or use '% split'."
                    )
        inputs = {tuple(r.input_names): r.index for r in self.rows}
        chosen: dict[tuple[str | None, ...], int] = {}
        for u in self.unlabelled_rows:
            names = tuple(u.input_names)
            if names in inputs:
                out.append(
                    f"Unlabelled image {u.index + 1} ({u.describe()}) is the input of training "
                    f"set {inputs[names] + 1}: with pseudo-labels on, its unlabelled voxels are "
                    "learnt from already. Choose an image without labels, or remove the row."
                )
            elif names in chosen:
                out.append(
                    f"Unlabelled image {u.index + 1} repeats unlabelled image {chosen[names] + 1} "
                    f"({u.describe()}): it adds the same image twice. Remove it."
                )
            else:
                chosen[names] = u.index
        return out

    def _show_summary(self, sets: list[TrainingSet], validation: float | list[TrainingSet]) -> None:
        unlabelled = ""
        if self.unlabelled:
            names = "; ".join(r.describe() for r in self.unlabelled_rows)
            params = self.workspace.params
            off = isinstance(params, TrainingParams) and not params.uses_pseudo_labels(True)
            use = (
                "not used while Training parameters → Unlabelled data is "
                f"'{params.semi_supervised}'"
                if off and isinstance(params, TrainingParams)
                else "learnt from with pseudo-labels"
            )
            unlabelled = (
                f"<br>Unlabelled: {len(self.unlabelled)} image(s) ({html.escape(names)}), {use}."
            )
        items = "".join(
            f"<li>{html.escape(s.name)}: {' × '.join(str(v) for v in s.shape)} voxels, "
            f"{int((s.labels_volume() >= 0).sum()):,} labelled</li>"
            for s in sets
        )
        if isinstance(validation, list):
            val = f"{len(validation)} ground-truth set(s)"
        else:
            val = f"{validation * 100:.0f} % of the labelled patches"
        self.summary.value = (
            f"<div style='color:#333'>{len(sets)} training set(s):<ul style='margin:2px 0'>"
            f"{items}</ul>Validation: {val}.{unlabelled}</div>"
        )

    # -- visual feedback -------------------------------------------------------------------
    def _update_feedback_options(self) -> None:
        options = [
            (f"Set {i + 1}: {s.name.split('(', 1)[-1].rstrip(')')}", i)
            for i, s in enumerate(self.sets)
        ]
        self._updating = True
        try:
            _set_options(self.feedback_set, options)
        finally:
            self._updating = False
        self._show_slice(reset_box=self._shown is None or self._shown[0] >= len(self.sets))

    def _current_set(self) -> TrainingSet | None:
        i = self.feedback_set.value
        return self.sets[i] if i is not None and 0 <= i < len(self.sets) else None

    def _show_slice(self, reset_box: bool = False) -> None:
        ts = self._current_set()
        if ts is None:
            self._shown = None
            return
        nz, ny, nx = ts.shape
        self._updating = True
        try:
            if self.slice_slider.max != nz - 1:
                self.slice_slider.max = nz - 1
                labels = ts.labels_volume()
                labelled = np.flatnonzero((labels >= 0).any(axis=(1, 2)))
                z = int(labelled[len(labelled) // 2]) if len(labelled) else nz // 2
                self.slice_slider.value = z
            self.slice_slider.disabled = nz == 1
            z = int(self.slice_slider.value)
            if reset_box or self._box() is None or not self._box_inside(ny, nx):
                h, w = min(ny, 256), min(nx, 256)
                y0, x0 = (ny - h) // 2, (nx - w) // 2
                self._set_box_fields((y0, y0 + h, x0, x0 + w))
        finally:
            self._updating = False
        image = volume_of(ts.input_list[0])
        sample = image.ravel()[:: max(1, image.size // 1_000_000)]  # window of the volume
        low, high = np.percentile(sample, (0.5, 99.5))
        gray = to_uint8(image[z], float(low), float(high))
        labels = volume_of(ts.output)[z].astype(np.int16)
        if ts.mask is not None:
            labels = np.where(volume_of(ts.mask)[z].astype(bool), labels, -1)
        self.view.set_image(gray, keep_view=self._shown is not None)
        self.view.set_labels(labels, ts.class_colors)
        self.view.set_rect(self._box())
        self._shown = (int(self.feedback_set.value), z)

    def _box(self) -> tuple[int, int, int, int] | None:
        box = (self.box_y0.value, self.box_y1.value, self.box_x0.value, self.box_x1.value)
        return box if box[1] > box[0] and box[3] > box[2] else None

    def _box_inside(self, ny: int, nx: int) -> bool:
        box = self._box()
        if box is None:
            return False
        y0, y1, x0, x1 = box
        return 0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx

    def _set_box_fields(self, box: tuple[int, int, int, int]) -> None:
        for w, v in zip((self.box_y0, self.box_y1, self.box_x0, self.box_x1), box, strict=True):
            w.value = int(v)

    def _feedback_changed(self, reset_box: bool = False) -> None:
        if self._updating:
            return
        self._show_slice(reset_box=reset_box)
        self._send_feedback()

    def _box_typed(self) -> None:
        if self._updating:
            return
        style.run_reporting(self.message, self._apply_typed_box)

    def _apply_typed_box(self) -> None:
        ts = self._current_set()
        box = self._box()
        if ts is None:
            return
        _, ny, nx = ts.shape
        if (
            box is None
            or not self._box_inside(ny, nx)
            or box[1] - box[0] < 4
            or (box[3] - box[2] < 4)
        ):
            raise InputError(
                f"Feedback box (y0={self.box_y0.value}, y1={self.box_y1.value}, "
                f"x0={self.box_x0.value}, x1={self.box_x1.value}) must lie inside the slice "
                f"(0 … {ny}, 0 … {nx}) with y1 - y0 >= 4 and x1 - x0 >= 4."
            )
        self.view.set_rect(box)
        self._send_feedback()

    def _send_feedback(self) -> None:
        ts = self._current_set()
        if ts is None:
            return
        region = FeedbackRegion(
            training_set=int(self.feedback_set.value),
            slice_index=int(self.slice_slider.value),
            box=self._box(),
        )
        self._last_feedback = region
        self.workspace.set_feedback(region)

    def _clamped_box(
        self, a: tuple[float, float], b: tuple[float, float]
    ) -> tuple[int, int, int, int] | None:
        ts = self._current_set()
        if ts is None:
            return None
        _, ny, nx = ts.shape
        y0 = max(0, min(ny - 1, math.floor(min(a[0], b[0]))))
        y1 = max(1, min(ny, math.floor(max(a[0], b[0])) + 1))
        x0 = max(0, min(nx - 1, math.floor(min(a[1], b[1]))))
        x1 = max(1, min(nx, math.floor(max(a[1], b[1])) + 1))
        return (y0, y1, x0, x1)

    def _pointer(self, kind: str, y: float, x: float, _info: dict) -> None:
        if self._current_set() is None:
            return
        if kind == "down":
            self._drag_start = (y, x)
            return
        if self._drag_start is None:
            return
        box = self._clamped_box(self._drag_start, (y, x))
        if box is None:
            return
        if kind == "move":
            self.view.set_rect(box)
            return
        # "up" or "out": the drag ends
        self._drag_start = None
        if box[1] - box[0] < 4 or box[3] - box[2] < 4:
            self.view.set_rect(self._box())  # a click, not a rectangle: keep the old box
            self.message.show("Drag a rectangle of at least 4 × 4 voxels.", "warning")
            return
        self.message.clear()
        self._updating = True
        try:
            self._set_box_fields(box)
        finally:
            self._updating = False
        self.view.set_rect(box)
        self._send_feedback()

    # -- workspace events ------------------------------------------------------------------
    def _on_workspace(self, event: str, value: Any) -> None:
        if event in ("images", "labels", "masks", "model"):
            if event == "images" and not self.rows and self.workspace.images:
                self.add_row()
                return
            derived_in_use = event == "labels" and self._update_derived(str(value))
            before = self._choices()
            self.refresh()
            # re-validate when a choice changed or an array in use was replaced/edited (the
            # Label tab emits "labels" after every stroke: unrelated arrays cost nothing)
            changed = self._choices() != before or value in before or derived_in_use
            if event == "model" or changed or not self._valid:
                self._auto_apply()
        elif event == "training_sets":
            v = self.workspace.validation
            if (
                isinstance(v, float | int)
                and not isinstance(v, bool)
                and abs(self.validation_percent.value - v * 100.0) > 1e-9
            ):
                self._updating = True
                try:
                    self.validation_percent.value = float(v) * 100.0
                finally:
                    self._updating = False
        elif event == "params" and self._valid and self.unlabelled:
            self._show_summary(self.sets, self.workspace.validation)  # used or not
        elif event == "feedback" and value is not None and value is not self._last_feedback:
            self._show_feedback(value)

    def _choices(self) -> set:
        out: set = set()
        for i, row in enumerate((*self.rows, *self.validation_rows)):
            out |= {(i, "input", k, n) for k, n in enumerate(row.input_names)}
            out |= {(i, "output", row.output.value), (i, "mask", row.mask.value)}
            out |= {n for n in (*row.input_names, row.output.value, row.mask.value) if n}
        for i, urow in enumerate(self.unlabelled_rows):
            out |= {(i, "unlabelled", k, n) for k, n in enumerate(urow.input_names)}
            out |= {n for n in urow.input_names if n}
        return out

    def _show_feedback(self, region: FeedbackRegion) -> None:
        """Reflect a region set elsewhere (e.g. by the Train panel)."""
        if not 0 <= region.training_set < len(self.sets):
            return
        self._updating = True
        try:
            self.feedback_set.value = region.training_set
            if region.slice_index is not None:
                self.slice_slider.value = int(region.slice_index)
            if region.box is not None:
                self._set_box_fields(region.box)
        finally:
            self._updating = False
        self._last_feedback = region
        self._show_slice()


def _derived_name(labels: str, cls: str) -> str:
    """The workspace name of the mask made of class ``cls`` of the multi-ROI ``labels``."""
    return f"{labels}: {cls}"


def _compact(box: widgets.Box) -> widgets.Box:
    """Short descriptions next to their fields (not the panels' 150 px label column)."""
    box.add_class("nbseg-compact")
    return box
