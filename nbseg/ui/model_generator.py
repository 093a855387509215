"""`ModelGeneratorPanel`: Dragonfly's *Model Generator* as a widget panel.

Pick an architecture (its description is shown), the class count, the inputs (one editable
name per input), the input dimension (2D / 2.5D / 3D, only those the architecture supports;
2.5D adds slice count and spacing), a name and description, and the architecture's own
parameters (fields generated from the registry defaults, with *Reset defaults*). *Generate*
builds the untrained model with :func:`nbseg.generate_model` and puts it in the workspace.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..model import Model, generate_model
from ..models.registry import (
    ARCHITECTURES,
    PARAMETER_CHOICES,
    PARAMETER_HELP,
    architectures,
    count_parameters,
    get_architecture,
)
from ..models.spec import INPUT_DIMENSIONS, ModelSpec
from . import style
from .state import Workspace

DIMENSION_HELP = {
    "2D": "One slice in, one slice out",
    "2.5D": "Neighbouring slices in as channels, the centre slice out",
    "3D": "3D patches in and out",
}


def spec_row(name: str, widget: widgets.Widget) -> widgets.HBox:
    """A labelled row for a :class:`ModelSpec` setting: label and help from its declaration."""
    decl = ModelSpec.setting(name)
    return style.labelled(decl.full_label, widget, decl.help)


def _field() -> widgets.Layout:
    return widgets.Layout(width="220px")


def _wide() -> widgets.Layout:
    return widgets.Layout(width="360px")


def parameter_widget(name: str, default: Any) -> widgets.Widget:
    """An editable field for an architecture parameter, typed after its default."""
    if isinstance(default, bool):
        return widgets.Checkbox(value=default, indent=False, layout=_field())
    if isinstance(default, int):
        return widgets.IntText(value=default, layout=_field())
    if isinstance(default, float):
        return widgets.FloatText(value=default, layout=_field())
    choices = PARAMETER_CHOICES.get(name)
    if choices and default in choices:
        return widgets.Dropdown(options=list(choices), value=default, layout=_field())
    return widgets.Text(value=str(default), layout=_field())


class ModelGeneratorPanel(widgets.VBox):
    """Generate an untrained model from fields (Dragonfly's *Model Generator*).

    Attributes
    ----------
    workspace
        The shared :class:`~nbseg.ui.state.Workspace`; *Generate* calls ``set_model``.
    architecture, architecture_info
        Dropdown of registry names (labels are titles) and the HTML description.
    class_count, input_count, input_name_fields, input_dimension, slices, slice_spacing,
    model_name, description
        The spec fields (``input_name_fields``: one Text per input).
    parameter_fields
        ``{parameter name: widget}`` generated from the architecture defaults.
    reset_button, generate_button, summary, message
    """

    def __init__(self, workspace: Workspace | None = None, **kw: Any) -> None:
        self.workspace = workspace if workspace is not None else Workspace()
        infos = architectures()
        self.architecture = widgets.Dropdown(
            options=[(i.title, i.name) for i in infos],
            value=infos[0].name if infos else None,
            layout=_field(),
        )
        self.architecture_info = widgets.HTML()  # as wide as its section
        self.class_count = widgets.IntText(value=2, layout=_field())
        self.input_count = widgets.BoundedIntText(value=1, min=1, max=16, layout=_field())
        self.input_name_fields: list[widgets.Text] = []
        self.input_names_box = widgets.VBox()
        self.input_dimension = widgets.ToggleButtons(
            options=list(INPUT_DIMENSIONS),
            value="2D",
            tooltips=[DIMENSION_HELP[d] for d in INPUT_DIMENSIONS],
            style={"button_width": "60px"},
        )
        self.slices = widgets.IntText(value=5, layout=_field())
        self.slice_spacing = widgets.IntText(value=1, layout=_field())
        self.slices_box = widgets.VBox(
            [
                spec_row("slices", self.slices),
                spec_row("slice_spacing", self.slice_spacing),
            ]
        )
        self.model_name = widgets.Text(value="model", layout=_wide())
        self.description = widgets.Textarea(
            value="",
            placeholder="What the model segments, from which data",
            layout=widgets.Layout(width="360px", height="60px"),
        )
        self.parameter_fields: dict[str, widgets.Widget] = {}
        self.parameters_box = widgets.VBox()
        self.reset_button = widgets.Button(
            description="Reset defaults",
            icon="undo",
            tooltip="Restore the architecture's default parameters",
        )
        self.generate_button = widgets.Button(
            description="Generate",
            icon="cogs",
            button_style="primary",
            tooltip="Build the untrained model and make it the current model",
        )
        self.summary = widgets.HTML()
        self.message = style.MessageBox()

        box = style.panel(
            style.section(
                "Architecture",
                spec_row("architecture", self.architecture),
                self.architecture_info,
            ),
            style.section(
                "Inputs and outputs",
                spec_row("class_count", self.class_count),
                spec_row("input_count", self.input_count),
                self.input_names_box,
                spec_row("input_dimension", self.input_dimension),
                self.slices_box,
            ),
            style.section(
                "Parameters",
                self.parameters_box,
                self.reset_button,
            ),
            style.section(
                "Model",
                spec_row("name", self.model_name),
                spec_row("description", self.description),
            ),
            widgets.HBox([self.generate_button]),
            self.message,
            self.summary,
            title="Model generator",
        )
        super().__init__(children=box.children, **kw)
        self.add_class("nbseg-panel")

        self.architecture.observe(lambda _: self._architecture_changed(), "value")
        self.input_count.observe(lambda _: self._sync_input_names(), "value")
        self.input_dimension.observe(lambda _: self._sync_dimension(), "value")
        self.reset_button.on_click(lambda _: self.reset_parameters())
        self.generate_button.on_click(lambda _: self.generate())
        self._sync_input_names()
        self._architecture_changed()

    # -- fields --------------------------------------------------------------------------
    def _architecture_changed(self) -> None:
        name = self.architecture.value
        if name not in ARCHITECTURES:
            return
        info = get_architecture(name)
        self.architecture_info.value = (
            f"<div style='color:var(--jp-ui-font-color2,#555);max-width:560px'>"
            f"<b>{html.escape(info.title)}</b> — {html.escape(info.description)}<br>"
            f"<i>Input dimensions: {', '.join(info.dimensions)}</i></div>"
        )
        current = self.input_dimension.value
        self.input_dimension.options = list(info.dimensions)
        self.input_dimension.tooltips = [DIMENSION_HELP.get(d, d) for d in info.dimensions]
        self.input_dimension.value = current if current in info.dimensions else info.dimensions[0]
        self._build_parameter_fields(info.defaults)
        self._sync_dimension()

    def _build_parameter_fields(self, defaults: dict[str, Any]) -> None:
        self.parameter_fields = {k: parameter_widget(k, v) for k, v in defaults.items()}
        self.parameters_box.children = [
            style.labelled(k.replace("_", " ").capitalize(), w, PARAMETER_HELP.get(k, k))
            for k, w in self.parameter_fields.items()
        ]

    def reset_parameters(self) -> None:
        """Restore the architecture's default parameters in the fields."""
        info = get_architecture(self.architecture.value)
        for key, default in info.defaults.items():
            w = self.parameter_fields.get(key)
            if w is not None:
                w.value = default if not isinstance(w, widgets.Text) else str(default)

    def _sync_input_names(self) -> None:
        n = max(1, int(self.input_count.value or 1))
        fields = self.input_name_fields[:n]
        for i in range(len(fields), n):
            fields.append(widgets.Text(value=f"input_{i}", layout=_field()))
        self.input_name_fields = fields
        self.input_names_box.children = [
            style.labelled(f"Name of input {i + 1}", f, "Shown when choosing training inputs")
            for i, f in enumerate(fields)
        ]

    def _sync_dimension(self) -> None:
        self.slices_box.layout.display = None if self.input_dimension.value == "2.5D" else "none"

    # -- spec ----------------------------------------------------------------------------
    def spec(self) -> ModelSpec:
        """The :class:`ModelSpec` described by the current fields (validated)."""
        info = get_architecture(self.architecture.value)
        parameters = {}
        for key, default in info.defaults.items():
            w = self.parameter_fields[key]
            value = w.value
            if isinstance(default, float) and not isinstance(default, bool):
                value = float(value)
            parameters[key] = value
        names = [f.value.strip() or f"input_{i}" for i, f in enumerate(self.input_name_fields)]
        spec = ModelSpec(
            architecture=info.name,
            class_count=int(self.class_count.value),
            input_count=int(self.input_count.value),
            input_dimension=self.input_dimension.value,
            slices=int(self.slices.value),
            slice_spacing=int(self.slice_spacing.value),
            name=self.model_name.value.strip() or "model",
            description=self.description.value,
            parameters=parameters,
            input_names=names,
        )
        return spec.validate()

    def set_spec(self, spec: ModelSpec) -> None:
        """Fill the fields from a spec (e.g. to start from an existing model)."""
        self.architecture.value = spec.architecture
        self.class_count.value = spec.class_count
        self.input_count.value = spec.input_count
        for f, name in zip(self.input_name_fields, spec.input_names or [], strict=False):
            f.value = name
        self.input_dimension.value = spec.input_dimension
        self.slices.value = spec.slices
        self.slice_spacing.value = spec.slice_spacing
        self.model_name.value = spec.name
        self.description.value = spec.description
        self.reset_parameters()
        for key, value in (spec.parameters or {}).items():
            if key in self.parameter_fields:
                self.parameter_fields[key].value = value

    # -- generate ------------------------------------------------------------------------
    def generate(self) -> Model | None:
        """Build the model from the fields and make it the workspace's model.

        Returns the model, or None when the fields are invalid (the reason is in
        :attr:`message`).
        """
        return style.run_reporting(self.message, self._generate)

    def _generate(self) -> Model:
        self.summary.value = ""
        spec = self.spec()
        model = generate_model(spec)
        n = count_parameters(model.network)
        self.workspace.set_model(model)
        self.summary.value = self._summary_html(spec, n)
        self.message.show(
            f"Model {spec.name!r} generated ({spec.architecture}, {spec.class_count} classes, "
            f"{spec.input_dimension}); it is now the current model.",
            "info",
        )
        return model

    def _summary_html(self, spec: ModelSpec, n_parameters: int) -> str:
        rows = [
            ("Architecture", get_architecture(spec.architecture).title),
            ("Classes", str(spec.class_count)),
            ("Inputs", ", ".join(spec.input_names or [])),
            ("Input dimension", spec.input_dimension),
            ("Input channels", str(spec.in_channels)),
            ("Trainable parameters", f"{n_parameters:,} ({n_parameters * 4 / 2**20:.1f} MiB)"),
        ]
        params = self.workspace.params
        try:
            est = params.memory_estimate(spec)
            cls = "nbseg-ratio-bad" if est.ratio > 1.0 else "nbseg-ratio-ok"
            rows.append(
                (
                    "Memory (current training parameters)",
                    f"<span class='{cls}'>ratio {est.ratio_text}</span> — "
                    f"{est.detail} at patch {params.patch_for(spec)}, batch {params.batch_size}",
                )
            )
        except Exception as err:  # the estimate is a hint only
            rows.append(("Memory", html.escape(f"not estimated: {err}")))
        body = "".join(
            f"<tr><td style='padding-right:12px;color:#555'>{html.escape(k)}</td><td>"
            f"{v if k.startswith('Memory') else html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='nbseg-summary'>{body}</table>"
