"""`DeepLearningTool`: every panel of the Deep Learning Tool as tabs over one Workspace.

Each panel also works on its own (``nbseg.ui.TrainingPanel(workspace)`` …); the tool only
composes them and offers the few calls a notebook needs to script what a click does
(:meth:`train`, :meth:`stop`, :meth:`wait`), and keeps the whole workspace in a project
folder (:meth:`save_project`, :meth:`open_project`; the format is :mod:`nbseg.project`).
"""

from __future__ import annotations

import functools
import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..data.trainingset import TrainingSet
from ..errors import InputError
from ..model import Model
from ..project import Project, SetRef
from ..project import open_project as read_project
from ..project import save_project as write_project
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
from .style import (
    MessageBox,
    css,
    display_with_kernel_note,
    labelled,
    run_reporting,
    static_note_html,
)
from .training_panel import TrainingPanel


class _ClassOrInstanceMethod:
    """A method that gets the class and the instance (None when called on the class)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return functools.wraps(self.func)(functools.partial(self.func, owner, obj))


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
        self._retrain_run: TrainingRun | None = None
        self.labelling.set_retrain_handler(self.retrain)
        self.labelling.training_running = lambda: self.training.running
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
        # -- the project: the whole workspace in one folder --
        self.project_path = widgets.Text(placeholder="work.nbseg-project", continuous_update=False)
        self.project_overwrite = widgets.Checkbox(
            value=False,
            description="Overwrite",
            indent=False,
            tooltip="Replace the project folder when it exists (the old one stays whole until "
            "the new one is complete)",
            layout=widgets.Layout(width="auto"),
        )
        self.save_project_button = widgets.Button(
            description="Save project",
            icon="save",
            tooltip="Save images (by path when read from a file), labels, masks, training sets, "
            "validation, unlabelled images, parameters, feedback region and the model into the "
            "project folder",
            layout=widgets.Layout(width="auto"),
        )
        self.open_project_button = widgets.Button(
            description="Open project",
            icon="folder-open",
            tooltip="Restore everything saved in the project folder (replaces this workspace)",
            layout=widgets.Layout(width="auto"),
        )
        self.project_message = MessageBox()
        self.project_bar = widgets.VBox(
            [
                widgets.HBox(
                    [
                        labelled("Project", self.project_path, "A .nbseg-project folder"),
                        self.save_project_button,
                        self.open_project_button,
                        self.project_overwrite,
                    ],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
                ),
                self.project_message,
            ]
        )
        self.project_bar.add_class("nbseg-project-bar")
        self.save_project_button.on_click(
            lambda _: run_reporting(self.project_message, self.save_project)
        )
        self.open_project_button.on_click(
            lambda _: run_reporting(self.project_message, self.open_project)
        )
        super().__init__([css(), header, self.project_bar, self.status, self.tabs])
        self.add_class("nbseg-panel")
        self.add_class("nbseg-tool")
        if tab is not None:
            self.select(tab)
        elif ws.model is not None and ws.images:
            self.select("Train")
        elif ws.model is None:
            self.select("New model")

    def _ipython_display_(self) -> None:
        """Shown in a notebook: the tool, and a note for a notebook reopened without its kernel
        ("re-run this cell" instead of "Error displaying widget"; hidden while the tool shows)."""
        display_with_kernel_note(self, "Deep Learning Tool")

    # -- navigation ----------------------------------------------------------------------------
    def select(self, title: str) -> None:
        """Open the tab called ``title`` (e.g. ``"Train"``)."""
        if title not in TAB_TITLES:
            raise ValueError(f"No tab {title!r}; tabs are {', '.join(TAB_TITLES)}.")
        self.tabs.selected_index = TAB_TITLES.index(title)

    def _on_event(self, event: str, value: Any) -> None:
        if event in ("model", "training_sets", "unlabelled", "result", "params"):
            self._update_status()
        run = self._retrain_run
        if event == "result" and run is not None and run is self.training.run:
            self._retrain_run = None  # only the run Retrain started refreshes the suggestions
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
        unlabelled = f" · unlabelled: {len(ws.unlabelled)}" if ws.unlabelled else ""
        self.status.value = static_note_html("Deep Learning Tool") + (
            f"<div style='color:var(--jp-ui-font-color2,#555);margin:2px 0 6px 0'>"
            f"Model: {model} · training sets: {sets}{unlabelled} · images: {len(ws.images)}</div>"
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
        labels with the validation split; the Inputs tab's unlabelled images either way), in
        the background, continuing the Train tab's graph and the model's history; when it
        ends the Label tab's suggestions refresh."""
        ws = self.workspace
        lab = self.labelling
        if ws.model is None:
            raise InputError("No model to retrain: generate one in New model or load one.")
        if lab.labels is None or lab.image is None:
            raise InputError("Nothing painted: choose an image in the Label tab and paint.")
        if not (np.asarray(lab.labels.values) >= 0).any():
            raise InputError("No voxel is labelled yet: paint a few strokes of each class.")
        if self.training.running:
            raise InputError("A training is running: wait for it or Stop it in the Train tab.")
        job = lab.suggestion_job
        if job is not None and job.running:  # only one thread may use the model
            raise InputError("Suggestions are being computed: wait for them, then Retrain.")
        if ws.model.spec.input_count > 1 and not any(
            any(im is lab.image for im in ts.inputs) for ts in ws.training_sets
        ):
            raise InputError(
                f"Model {ws.model.name!r} takes {ws.model.spec.input_count} inputs: set up the "
                "training set with this image and its other inputs in the Inputs tab first."
            )
        try:
            sets = self.inputs.apply()
        except InputError:
            sets = []
            # the painted labels train below; the chosen unlabelled images still go with them
            ws.set_unlabelled(self.inputs.build_unlabelled())
        replaced = ""
        if not any(ts.output.name == lab.name for ts in sets):
            painted = TrainingSet(inputs=[lab.image], output=lab.labels, name="Label tab")
            ws.set_training_sets([painted], ws.validation)
            replaced = " on the painted image and labels (now the training set)"
        run = self.training.start()
        if run is None:
            raise InputError(self.training.message.text or "Training could not start.")
        self._retrain_run = run
        lab.message.show(
            f"Retraining in the background{replaced} (see the Train tab); the suggestions "
            "refresh when it ends.",
            "info",
        )
        return run

    # -- projects --------------------------------------------------------------------------------
    def save_project(
        self, path: str | os.PathLike[str] | None = None, overwrite: bool | None = None
    ) -> Path:
        """Save the whole workspace into the project folder ``path`` (default: the *Project*
        field; ``.nbseg-project`` added when it has no suffix), atomically: images (by path
        when read from a file, else as arrays), every multi-ROI (class names and colours) and
        mask, the Inputs tab's training sets and validation, the training parameters, the
        unlabelled images (by name), the feedback region, the model (``model.nbseg``, with its
        history) and which image the Label tab shows. An existing folder is replaced only with ``overwrite=True``
        (default: the *Overwrite* box). Returns the folder. Same as **Save project**."""
        if self.training.running:
            raise InputError(
                "Training is running: stop it or wait for it to end, then save the project "
                "(the model changes every batch)."
            )
        text = self.project_path.value if path is None else os.fspath(path)
        if not str(text).strip():
            raise InputError(
                "Type the project folder in 'Project' (e.g. work.nbseg-project), then save."
            )
        allow = bool(self.project_overwrite.value) if overwrite is None else bool(overwrite)
        project = self._project()
        written = write_project(project, text, overwrite=allow)
        self.project_path.value = str(written) if path is not None else self.project_path.value
        self.labelling.mark_saved()
        parts = [
            f"{len(project.images)} image(s)",
            f"{len(project.labels)} labels",
            f"{len(project.masks)} mask(s)",
            f"{len(project.training_sets)} training set(s)",
            *([f"{len(project.unlabelled)} unlabelled image(s)"] if project.unlabelled else []),
            "the model" if project.model is not None else "no model",
        ]
        self.project_message.show(f"Saved the project to {str(written)!r}: {', '.join(parts)}.")
        return written

    def _project(self) -> Project:
        ws = self.workspace
        inputs = self.inputs
        sets = [_ref(r) for r in inputs.rows]
        validation: float | list[SetRef]
        if inputs.validation_mode.value == "sets":
            validation = [r for r in (_ref(v) for v in inputs.validation_rows) if r is not None]
        else:
            validation = float(inputs.validation_percent.value) / 100.0
        unlabelled = [
            [str(n) for n in r.input_names]
            for r in inputs.unlabelled_rows
            if r.input_names and all(n is not None for n in r.input_names)
        ]
        lab = self.labelling
        image_name = next(
            (n for n, im in ws.images.items() if lab.image is not None and im is lab.image), None
        )
        view: dict[str, Any] = {"tab": TAB_TITLES[self.tabs.selected_index or 0]}
        if image_name is not None:
            view["label"] = {
                "image": image_name,
                "labels": lab.name,
                "plane": lab.plane,
                "slice": lab.z,
                "path": lab.labels_path.value,
            }
        return Project(
            images=dict(ws.images),
            labels=dict(ws.labels),
            masks=dict(ws.masks),
            model=ws.model,
            params=ws.params,
            training_sets=[r for r in sets if r is not None],
            validation=validation,
            unlabelled=unlabelled,
            feedback=ws.feedback,
            view=view,
        )

    def _open_project(
        owner: type[DeepLearningTool],
        tool: DeepLearningTool | None,
        path: str | os.PathLike[str] | None = None,
    ) -> DeepLearningTool:
        """Restore a project saved by :meth:`save_project`.

        ``DeepLearningTool.open_project(path)`` returns a new tool showing it;
        ``tool.open_project(path)`` (and **Open project**, path from the *Project* field)
        replaces the tool's workspace by it. The project is read completely first: when a
        file is missing or wrong nothing changes (an :class:`nbseg.InputError` says what).
        Returns the tool."""
        if path is None:
            if tool is None or not tool.project_path.value.strip():
                raise InputError("Give the project folder to open (e.g. work.nbseg-project).")
            path = tool.project_path.value
        if tool is not None and tool.training.running:
            raise InputError(
                "Training is running: stop it or wait for it to end before opening a project."
            )
        project = read_project(path)
        if tool is None:
            tool = owner(
                workspace=Workspace(
                    images=project.images,
                    labels=project.labels,
                    masks=project.masks,
                    model=project.model,
                    params=project.params,
                )
            )
        else:
            tool._replace_workspace(project)
        tool._restore(project)
        return tool

    open_project = _ClassOrInstanceMethod(_open_project)
    del _open_project

    def _replace_workspace(self, project: Project) -> None:
        ws = self.workspace
        fresh = Workspace(images=project.images, labels=project.labels, masks=project.masks)
        for mine, theirs in (
            (ws.images, fresh.images),
            (ws.labels, fresh.labels),
            (ws.masks, fresh.masks),
        ):
            mine.clear()
            mine.update(theirs)
        ws.result = None
        ws.feedback = None
        for event in ("images", "labels", "masks"):
            ws.emit(event, None)
        ws.set_model(project.model)
        if project.params is not None:
            ws.set_params(project.params)

    def _restore(self, project: Project) -> None:
        """The project's inputs, feedback region and views (after its data and model)."""
        ws = self.workspace
        notes: list[str] = []
        if project.training_sets:
            try:
                self.inputs.restore(project.training_sets, project.validation, project.unlabelled)
            except InputError as err:
                self.inputs.message.error(err)
                notes.append(f"the Inputs tab says: {err}")
        else:
            if not isinstance(project.validation, list):
                self.inputs.validation_percent.value = float(project.validation) * 100.0
            if project.unlabelled:
                try:
                    self.inputs.choose_unlabelled(project.unlabelled)
                except InputError as err:
                    self.inputs.message.error(err)
                    notes.append(f"the Inputs tab says: {err}")
        if project.feedback is not None and ws.training_sets:
            ws.set_feedback(project.feedback)
        view = project.view if isinstance(project.view, dict) else {}
        label = view.get("label")
        lab = self.labelling
        if isinstance(label, dict) and label.get("image") in ws.images:
            try:
                lab.edit(str(label["image"]), str(label.get("labels") or lab.name))
                if label.get("plane") in ("xz", "yz") and lab.image is not None:
                    lab.set_plane(str(label["plane"]), None)
                if isinstance(label.get("slice"), int):
                    lab.set_slice(int(label["slice"]))
                if isinstance(label.get("path"), str):
                    lab.labels_path.value = label["path"]
            except InputError as err:
                lab.message.error(err)
        elif ws.images and not any(im is lab.image for im in ws.images.values()):
            first = next(iter(ws.images))  # the shown image is gone: the first one, as at start
            fits = ws.compatible("labels", first)
            run_reporting(lab.message, lab.edit, first, fits[0] if fits else lab.name)
        lab.mark_saved()
        if view.get("tab") in TAB_TITLES:
            self.select(str(view["tab"]))
        assert project.path is not None  # read from a folder
        self.project_path.value = str(project.path)
        where = str(project.path)
        text = (
            f"Opened the project {where!r}: {len(project.images)} image(s), "
            f"{len(project.labels)} labels, {len(project.masks)} mask(s), "
            f"{len(project.training_sets)} training set(s), "
            + (f"{len(project.unlabelled)} unlabelled image(s), " if project.unlabelled else "")
            + ("the model" if project.model is not None else "no model")
            + "."
        )
        if notes:
            self.project_message.show(text + " Not restored: " + "; ".join(notes), "warning")
        else:
            self.project_message.show(text, "info")

    def stop(self) -> None:
        """Same as clicking **Stop**."""
        self.training.stop()

    def wait(self, timeout: float | None = None) -> TrainingResult | None:
        """Block until the current training ends; returns its result."""
        return self.training.wait(timeout)


def _ref(row: Any) -> SetRef | None:
    """A training-set row as names (None while a choice is missing)."""
    names = row.input_names
    if not names or any(n is None for n in names) or row.output.value is None:
        return None
    return SetRef([str(n) for n in names], str(row.output.value), row.mask_name)
