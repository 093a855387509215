"""`DeepLearningTool`: every panel of the Deep Learning Tool as tabs over one Workspace.

Each panel also works on its own (``nbseg.ui.TrainingPanel(workspace)`` …); the tool only
composes them and offers the few calls a notebook needs to script what a click does
(:meth:`train`, :meth:`stop`, :meth:`wait`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..data.trainingset import TrainingSet
from ..errors import InputError
from ..model import Model
from ..store.library import ModelLibrary
from ..training.job import TrainingRun
from ..training.params import TrainingParams
from ..training.run import TrainingResult
from .inputs_panel import InputsPanel
from .labelling import LabelEditor
from .model_generator import ModelGeneratorPanel
from .models_panel import ModelsPanel
from .params_panel import TrainingParamsPanel
from .preview_panel import PreviewPanel
from .segment_panel import SegmentPanel
from .state import Workspace
from .style import css, run_reporting
from .training_panel import TrainingPanel

TAB_TITLES = (
    "Models",
    "New model",
    "Inputs",
    "Training parameters",
    "Train",
    "Preview",
    "Segment with AI",
    "Label",
)


class DeepLearningTool(widgets.VBox):
    """The Deep Learning Tool in a notebook.

    Parameters
    ----------
    images, labels, masks
        Named ``xarray.DataArray``s to work on (``{"fibres": ds.image}``); labels are
        multi-ROIs (class ids, ``-1`` unlabelled), masks boolean.
    model
        A model to start from (else generate one in *New model* or load one in *Models*).
    params
        Training parameters (else the model's last ones, else the defaults).
    library
        A :class:`nbseg.store.library.ModelLibrary` (default: the user's models directory).
    namespace
        E.g. ``globals()``: every 2D/3D DataArray in it is offered too.
    tab
        Title of the tab to open first.
    """

    def __init__(
        self,
        images: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        masks: Mapping[str, Any] | None = None,
        model: Model | None = None,
        params: TrainingParams | None = None,
        library: ModelLibrary | None = None,
        namespace: Mapping[str, Any] | None = None,
        tab: str | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        if workspace is None:
            workspace = Workspace.from_namespace(
                namespace or {},
                images=images,
                labels=labels,
                masks=masks,
                model=model,
                params=params,
            )
        if library is not None:
            workspace.library = library
        self.workspace = workspace
        ws = workspace
        self.models = ModelsPanel(ws, library=library)
        self.generator = ModelGeneratorPanel(ws)
        self.inputs = InputsPanel(ws)
        self.parameters = TrainingParamsPanel(ws)
        self.training = TrainingPanel(ws)
        self.preview = PreviewPanel(ws)
        self.segmenter = SegmentPanel(ws)
        image = next(iter(ws.images.values()), None)
        roi = None
        if image is not None:
            first = next(iter(ws.images))
            compatible = ws.compatible("labels", first)
            roi = ws.labels[compatible[0]] if compatible else None
        self.labelling = LabelEditor(
            image,
            roi,
            workspace=ws,
            class_names=(ws.model.class_names if ws.model is not None and roi is None else None),
            name=(str(roi.name) if roi is not None else "labels"),
        )
        self.panels = [
            self.models,
            self.generator,
            self.inputs,
            self.parameters,
            self.training,
            self.preview,
            self.segmenter,
            self.labelling,
        ]
        self._retrain_pending = False
        self.labelling.set_retrain_handler(self.retrain)
        self.tabs = widgets.Tab(children=self.panels)
        for i, title in enumerate(TAB_TITLES):
            self.tabs.set_title(i, title)
        self.tabs.titles = TAB_TITLES
        self.status = widgets.HTML()
        ws.observe(self._on_event)
        self._update_status()
        header = widgets.HTML(
            "<div style='display:flex;align-items:baseline;gap:12px'>"
            "<span style='font-size:16px;font-weight:600'>nbseg · Deep Learning Tool</span>"
            "</div>"
        )
        super().__init__([css(), header, self.status, self.tabs])
        self.add_class("nbseg-panel")
        self.add_class("nbseg-tool")
        if tab is not None:
            self.select(tab)
        elif ws.model is not None and ws.images:
            self.select("Train")
        elif ws.model is None:
            self.select("New model")

    # -- navigation ----------------------------------------------------------------------------
    def select(self, title: str) -> None:
        """Open the tab called ``title`` (e.g. ``"Train"``)."""
        if title not in TAB_TITLES:
            raise ValueError(f"No tab {title!r}; tabs are {', '.join(TAB_TITLES)}.")
        self.tabs.selected_index = TAB_TITLES.index(title)

    def _on_event(self, event: str, value: Any) -> None:
        if event in ("model", "training_sets", "result", "params"):
            self._update_status()
        if event == "result" and self._retrain_pending:
            self._retrain_pending = False
            lab = self.labelling
            if self.workspace.model is not None and self.workspace.model.trained:
                run_reporting(lab.message, lab.suggest_labels)

    def _update_status(self) -> None:
        ws = self.workspace
        m = ws.model
        model = (
            f"<b>{html.escape(m.name)}</b> ({html.escape(m.spec.architecture)}, "
            f"{m.spec.class_count} classes, {html.escape(m.spec.input_dimension)}, "
            f"{m.epochs_trained} epochs trained)"
            if m is not None
            else "<i>no model yet: generate one in <b>New model</b> or load one in "
            "<b>Models</b></i>"
        )
        sets = len(ws.training_sets)
        self.status.value = (
            f"<div style='color:var(--jp-ui-font-color2,#555);margin:2px 0 6px 0'>"
            f"Model: {model} · training sets: {sets} · images: {len(ws.images)}</div>"
        )

    # -- what a click does, for scripts and notebooks ---------------------------------------------
    @property
    def model(self) -> Model | None:
        return self.workspace.model

    @property
    def result(self) -> TrainingResult | None:
        return self.workspace.result

    def train(self) -> TrainingRun | None:
        """Same as clicking **Train**: start training in the background and return the run."""
        if not self.workspace.training_sets:
            self.inputs.apply()
        self.select("Train")
        self.training.start()
        return self.training.run

    def retrain(self) -> TrainingRun | None:
        """Same as **Retrain** in the Label tab: fine-tune the model on the labels painted
        there (the Inputs tab's training sets when they use them, else the painted image and
        labels with the validation split), in the background, continuing the Train tab's
        graph and the model's history; when it ends the Label tab's suggestions refresh."""
        ws = self.workspace
        lab = self.labelling
        if ws.model is None:
            raise InputError("No model to retrain: generate one in New model or load one.")
        if lab.labels is None or lab.image is None:
            raise InputError("Nothing painted: choose an image in the Label tab and paint.")
        if not (np.asarray(lab.labels.values) >= 0).any():
            raise InputError("No voxel is labelled yet: paint a few strokes of each class.")
        try:
            sets = self.inputs.apply()
        except InputError:
            sets = []
        if not any(ts.output.name == lab.name for ts in sets):
            painted = TrainingSet(inputs=[lab.image], output=lab.labels, name="Label tab")
            ws.set_training_sets([painted], ws.validation)
        self._retrain_pending = True
        run = self.training.start()
        if run is None:
            self._retrain_pending = False
            raise InputError(self.training.message.text or "Training could not start.")
        lab.message.show(
            "Retraining in the background (see the Train tab); the suggestions refresh "
            "when it ends.",
            "info",
        )
        return run

    def stop(self) -> None:
        """Same as clicking **Stop**."""
        self.training.stop()

    def wait(self, timeout: float | None = None) -> TrainingResult | None:
        """Block until the current training ends; returns its result."""
        return self.training.wait(timeout)
