"""`TrainingParamsPanel`: Dragonfly's *Training Parameters* (basic and advanced settings).

Every edit rebuilds and validates a :class:`~nbseg.training.params.TrainingParams`; a valid one
goes to the workspace (``set_params``), an invalid one is explained in the message box and the
workspace keeps the last valid parameters. The *estimated memory ratio* of a training step for
the current model is shown live. Parameters save to / load from JSON or YAML.
"""

from __future__ import annotations

import dataclasses
import html
import re
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..data.augment import AugmentationParams
from ..errors import InputError, ParamsError
from ..settings import PatchSize
from ..training.fingerprint import PlanningRun, TrainingBudgetPlan
from ..training.params import TrainingParams
from . import style
from .forms import SettingsForm, value_widgets
from .state import Workspace


def _path() -> widgets.Layout:
    return widgets.Layout(width="360px")


def parse_patch_size(text: str) -> int | tuple[int, ...] | None:
    """``"auto"`` / ``""`` → None, ``"64"`` → 64, ``"16, 64, 64"`` / ``"16x64x64"`` →
    (16, 64, 64)."""
    return PatchSize.parse_strict(text)


def format_patch_size(value: int | tuple[int, ...] | None) -> str:
    return PatchSize().format(value)


class TrainingParamsPanel(widgets.VBox):
    """Edit :class:`TrainingParams`; shows the estimated memory ratio live.

    Attributes
    ----------
    workspace
        The shared :class:`~nbseg.ui.state.Workspace` (``set_params`` on every valid edit).
    form, augmentation_form
        The :class:`~nbseg.ui.forms.SettingsForm` of :class:`TrainingParams` and of
        :class:`AugmentationParams`: one row per declared setting, grouped as declared.
    fields
        ``{TrainingParams field: widget}`` (``form.fields``; the widget follows the setting's
        kind: ``patch_size`` a Text, ``max_minutes`` an :class:`~nbseg.ui.forms.OptionalNumber`
        whose ``None`` is "no limit", ``class_weights`` see below).
    augmentation_fields
        ``{AugmentationParams field: widget}``.
    patch_size, stride_ratio, batch_size, epochs, loss, optimizer, learning_rate
        The fields of the "Basic" group, as attributes (also in ``fields``).
    validation_percent
        % of labelled patches kept for validation (``workspace.validation``), disabled while
        the Inputs panel uses ground-truth sets.
    class_weights_mode, class_weights_custom
        Dropdown ``uniform`` / ``frequency`` / ``custom`` and the Text of custom weights.
    advanced_toggle, advanced_box
        "Show advanced settings" and what it reveals.
    memory_label
        HTML "Estimated memory ratio: 0.42" with class ``nbseg-ratio-ok`` / ``nbseg-ratio-bad``.
    path, save_button, load_button, message
    """

    def __init__(self, workspace: Workspace | None = None, **kw: Any) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        self._updating = False
        self._last_sent: TrainingParams | None = self.workspace.params
        defaults = TrainingParams()
        self.form = SettingsForm(TrainingParams, defaults)
        self.augmentation_form = SettingsForm(AugmentationParams, defaults.augmentation)
        self.fields: dict[str, widgets.Widget] = self.form.fields
        self.augmentation_fields: dict[str, widgets.Widget] = self.augmentation_form.fields
        weights = next(w for w in self.fields.values() if hasattr(w, "mode"))
        self.class_weights_mode = weights.mode
        self.class_weights_custom = weights.custom
        basic = self.form.group_names("Basic")
        for name in basic:  # the basic fields as attributes: panel.epochs, panel.loss, ...
            setattr(self, name, self.fields[name])
        self.validation_percent = style.validation_slider()
        self.memory_label = widgets.HTML()
        self.advanced_toggle = widgets.ToggleButton(
            value=False,
            description="Show advanced settings",
            icon="sliders",
            tooltip="Learning-rate schedule, early stopping, class weights, augmentation ...",
            layout=widgets.Layout(width="220px"),
        )
        self.path = widgets.Text(
            value="training_params.yaml", placeholder="params.yaml or params.json", layout=_path()
        )
        self.save_button = widgets.Button(
            description="Save", icon="save", tooltip="Write the parameters to the file"
        )
        self.load_button = widgets.Button(
            description="Load", icon="folder-open", tooltip="Read parameters from the file"
        )
        self.message = style.MessageBox()
        self.plan_budget = widgets.BoundedFloatText(
            value=5.0, min=0.5, max=10_000.0, step=0.5, layout=widgets.Layout(width="90px")
        )
        self.plan_button = widgets.Button(
            description="Plan from the data",
            icon="magic",
            tooltip="Choose patch size, batch size, epochs, time budget and rare-class sampling "
            "from the training sets, the model and this machine (times a few training steps); "
            "every value stays editable",
            layout=widgets.Layout(width="auto"),
        )
        self.plan_text = widgets.HTML("")
        self.plan_job: PlanningRun | None = None
        self.plan: TrainingBudgetPlan | None = None
        self._plan_shown = threading.Event()
        self._plan_shown.set()

        sections = self.form.sections(skip=("Basic",))
        sections += self.augmentation_form.sections()
        self.advanced_box = widgets.VBox(sections, layout=widgets.Layout(display="none"))
        box = style.panel(
            style.section(
                "Basic settings",
                *(self.form.row(n) for n in basic),
                style.labelled(
                    "Validation (%)",
                    self.validation_percent,
                    "Share of labelled patches kept for validation (0 = none)",
                ),
            ),
            self.memory_label,
            style.section(
                "Plan from the data",
                widgets.HBox(
                    [
                        style.labelled("Time budget (min)", self.plan_budget),
                        self.plan_button,
                    ]
                ),
                self.plan_text,
            ),
            self.advanced_toggle,
            self.advanced_box,
            style.section(
                "Save / load",
                style.labelled("File", self.path, "A .json, .yaml or .yml file"),
                widgets.HBox([self.save_button, self.load_button]),
            ),
            self.message,
            title="Training parameters",
        )
        super().__init__(children=box.children, **kw)
        self.add_class("nbseg-panel")

        for w in [*self._value_widgets()]:
            w.observe(self._on_change, "value")
        self.validation_percent.observe(self._on_validation, "value")
        self.advanced_toggle.observe(lambda _: self._sync_advanced(), "value")
        self.plan_button.on_click(lambda _: style.run_reporting(self.message, self.plan_from_data))
        self.save_button.on_click(lambda _: self.save())
        self.load_button.on_click(lambda _: self.load())
        self.workspace.observe(self._on_workspace)
        self.set_params(self.workspace.params, send=False)
        self._sync_validation()
        self.update_memory()

    # -- layout helpers --------------------------------------------------------------------
    def _value_widgets(self) -> list[widgets.Widget]:
        forms = (*self.fields.values(), *self.augmentation_fields.values())
        return [inner for w in forms for inner in value_widgets(w)]

    def _sync_advanced(self) -> None:
        show = self.advanced_toggle.value
        self.advanced_box.layout.display = None if show else "none"
        self.advanced_toggle.description = (
            "Hide advanced settings" if show else "Show advanced settings"
        )

    def _sync_enabled(self) -> None:
        self.form.sync_enabled()
        self.augmentation_form.sync_enabled()

    # -- params <-> fields -----------------------------------------------------------------
    def params(self) -> TrainingParams:
        """A :class:`TrainingParams` from the current fields (validated; raises ParamsError)."""
        values = self.form.values()
        values["augmentation"] = AugmentationParams(**self.augmentation_form.values())
        params = TrainingParams(**values)
        model = self.workspace.model
        return params.validate(class_count=model.spec.class_count if model else None)

    def set_params(self, params: TrainingParams, send: bool = True) -> None:
        """Show ``params`` in the fields (and send them to the workspace when ``send``)."""
        self._updating = True
        try:
            self.form.show(params)
            self.augmentation_form.show(params.augmentation)
        finally:
            self._updating = False
        self._sync_enabled()
        if send:
            self._last_sent = params
            self.workspace.set_params(params)
        self.update_memory()

    # -- plan from the data ------------------------------------------------------------------
    def plan_from_data(self, *, wait: bool = False) -> PlanningRun:
        """Same as **Plan from the data**: plan patch size, batch size, epochs, time budget
        and rare-class sampling for the workspace's training sets and model
        (:func:`nbseg.plan_training`, in the background); the planned values fill the fields
        (editable) and the reasons are listed. ``wait``: block until they are shown."""
        ws = self.workspace
        if ws.model is None:
            raise InputError("No model: generate one in New model or load one in Models first.")
        if not ws.training_sets:
            raise InputError(
                "No training set: choose images and labels in the Inputs tab (Apply) first."
            )
        if self.plan_job is not None and self.plan_job.running:
            raise InputError("A plan is being made; wait for it.")
        base = self.params()
        job = PlanningRun(
            list(ws.training_sets),
            ws.model.spec,
            base,
            budget_minutes=float(self.plan_budget.value),
            validation=ws.validation if isinstance(ws.validation, float) else 0.0,
        )
        job.add_done_callback(lambda _: self._show_plan(job))
        self.plan_job = job
        self._plan_shown.clear()
        self.plan_button.disabled = True
        self.plan_text.value = "<i>Timing a few training steps on this machine …</i>"
        try:
            job.start()
        except Exception:
            self.plan_button.disabled = False
            self._plan_shown.set()
            raise
        if wait:
            job.wait()
            self._plan_shown.wait(30)
        return job

    def _show_plan(self, job: PlanningRun) -> None:
        try:
            if job.status != "completed" or job.result is None:
                self.plan_text.value = ""
                self.message.error(job.error or "The plan failed.")
                return
            plan = job.result
            self.plan = plan
            # only the planned values: an edit made while the plan was timed is kept
            current = self.workspace.params
            self.set_params(
                dataclasses.replace(current, **{f: getattr(plan.params, f) for f in plan.reasons})
            )
            rows = "".join(
                f"<li><b>{html.escape(TrainingParams.setting(f).label)}</b> = "
                f"{html.escape(str(getattr(plan.params, f)))}: {html.escape(why)}</li>"
                for f, why in plan.reasons.items()
            )
            fp = plan.fingerprint
            self.plan_text.value = (
                f"<div style='font-size:12px'>{fp.labelled_voxels:,} labelled voxels on "
                f"{fp.labelled_slices} slices, {plan.step_seconds:.2f} s per step on "
                f"{html.escape(plan.device)}:<ul style='margin:2px 0 0 0'>{rows}</ul></div>"
            )
        except Exception as err:  # shown in the panel, never raised into the job
            self.message.error(err)
        finally:
            self.plan_button.disabled = False
            self._plan_shown.set()

    # -- events ----------------------------------------------------------------------------
    def _on_change(self, _change: Any = None) -> None:
        if self._updating:
            return
        self._sync_enabled()
        style.run_reporting(self.message, self.apply)

    def apply(self) -> TrainingParams:
        """Validate the fields and send them to the workspace (raises on invalid fields)."""
        try:
            params = self.params()
        except Exception:
            self.update_memory()  # still the last valid parameters
            raise
        self._last_sent = params
        self.workspace.set_params(params)
        self.update_memory()
        return params

    def _on_validation(self, _change: Any = None) -> None:
        if self._updating:
            return
        ws = self.workspace
        if not isinstance(ws.validation, float | int):
            return
        ws.set_training_sets(ws.training_sets, float(self.validation_percent.value) / 100.0)

    def _sync_validation(self) -> None:
        v = self.workspace.validation
        self._updating = True
        try:
            if isinstance(v, float | int) and not isinstance(v, bool):
                self.validation_percent.disabled = False
                self.validation_percent.value = float(v) * 100.0
            else:
                self.validation_percent.disabled = True
        finally:
            self._updating = False

    def _on_workspace(self, event: str, value: Any) -> None:
        if event == "model":
            # a loaded model brings its own parameters (Workspace.set_model)
            if self.workspace.params is not self._last_sent:
                self.set_params(self.workspace.params, send=False)
            style.run_reporting(self.message, self._revalidate)
            self.update_memory()
        elif event == "params" and value is not self._last_sent:
            self.set_params(value, send=False)
        elif event == "training_sets":
            self._sync_validation()

    def _revalidate(self) -> None:
        model = self.workspace.model
        if model is not None:
            self.workspace.params.validate(class_count=model.spec.class_count)

    # -- memory ----------------------------------------------------------------------------
    def update_memory(self) -> None:
        """Recompute the estimated memory ratio for the workspace's params and model."""
        label = self.memory_label
        for c in ("nbseg-ratio-ok", "nbseg-ratio-bad"):
            label.remove_class(c)
        model = self.workspace.model
        if model is None:
            label.value = "<span>Estimated memory ratio: — (generate or load a model first)</span>"
            return
        params = self.workspace.params
        try:
            est = params.memory_estimate(model.spec)
        except Exception as err:  # shown, not raised: a hint while editing
            label.add_class("nbseg-ratio-bad")
            label.value = (
                "<span class='nbseg-ratio-bad'>Estimated memory ratio: not available — "
                f"{html.escape(str(err))}</span>"
            )
            return
        ratio = float(est.ratio)
        bad = ratio > 1.0
        cls = "nbseg-ratio-bad" if bad else "nbseg-ratio-ok"
        label.add_class(cls)
        detail = est.detail
        hint = ""
        if bad:
            hint = (
                "<br>This training step will probably not fit in memory: reduce the batch "
                "size or the patch size (or generate a smaller model: fewer filters or levels)."
            )
        label.value = (
            f"<span class='{cls}'>Estimated memory ratio: {est.ratio_text}</span> "
            f"<span style='color:#666'>({detail})</span>{hint}"
        )

    @property
    def memory_text(self) -> str:
        """The memory label as plain text (for tests and status lines)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.memory_label.value.replace("<br>", " ")))

    # -- files -----------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write the current (valid) parameters to :attr:`path` as JSON or YAML."""
        return style.run_reporting(self.message, self._save)

    def load(self) -> TrainingParams | None:
        """Read parameters from :attr:`path`, show them and send them to the workspace."""
        return style.run_reporting(self.message, self._load)

    def _file(self) -> tuple[Path, str]:
        text = self.path.value.strip()
        if not text:
            raise ParamsError("Give a file name ending in .json, .yaml or .yml.")
        path = Path(text).expanduser()
        kind = path.suffix.lower()
        if kind not in (".json", ".yaml", ".yml"):
            raise ParamsError(
                f"{text!r}: unknown file type {kind or '(none)'}; use .json, .yaml or .yml."
            )
        return path, kind

    def _save(self) -> Path:
        path, kind = self._file()
        params = self.params()
        text = params.to_json() if kind == ".json" else params.to_yaml()
        try:
            path.write_text(text)
        except OSError as err:
            raise ParamsError(f"Cannot write {str(path)!r}: {err.strerror or err}.") from None
        self.message.show(f"Training parameters saved to {path}.", "info")
        return path

    def _load(self) -> TrainingParams:
        path, kind = self._file()
        if not path.is_file():
            raise ParamsError(f"No file {str(path)!r}; check the path (relative to the notebook).")
        text = path.read_text()
        try:
            if kind == ".json":
                params = TrainingParams.from_json(text)
            else:  # parsed here: TrainingParams.from_yaml(text) may take long text for a path
                import yaml

                data = yaml.safe_load(text)
                if not isinstance(data, dict):
                    raise ParamsError(
                        f"{path} holds no mapping of training parameters (got "
                        f"{type(data).__name__}); save one from this panel to see the format."
                    )
                params = TrainingParams.from_dict(data)
        except ParamsError:
            raise
        except Exception as err:  # malformed JSON/YAML, wrong types
            raise ParamsError(f"{path} is not a valid parameter file: {err}") from None
        model = self.workspace.model
        params.validate(class_count=model.spec.class_count if model else None)
        self.set_params(params)
        self.message.show(f"Training parameters loaded from {path}.", "info")
        return params
