"""`ModelsPanel`: the model library (Dragonfly's model list) as a widget.

A list of the library's models; Load (into the :class:`Workspace`), details, editable class
names / colours / weights saved into the model, the network's structure (blocks and output
shapes from a forward pass), Rename / Duplicate / Delete (to the trash) / Restore / Export /
Import, and *Save current model to library*. Errors appear in ``.message``, never as
tracebacks. Every button works headless (``.value`` / ``.click()``), as the tests drive it.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..errors import InputError, ModelFileError
from ..model import Model
from ..models.registry import describe_network, layer_rows
from ..store.export import example_input
from ..store.library import ModelLibrary
from ..training.params import TrainingParams
from .state import Workspace
from .style import MessageBox, labelled, panel, run_reporting, section


def _short_date(stamp: str) -> str:
    return stamp[:16].replace("T", " ") if stamp else ""


class ModelsPanel(widgets.VBox):
    """The model library panel.

    Parameters
    ----------
    workspace
        The :class:`nbseg.ui.state.Workspace` whose model *Load* replaces and *Save current
        model* saves (optional: without it the panel only manages the library).
    library
        The :class:`ModelLibrary` (default: the workspace's ``library``, else the default
        library, ``$NBSEG_MODELS`` or ``~/.nbseg/models``).
    """

    def __init__(
        self, workspace: Workspace | None = None, library: ModelLibrary | None = None
    ) -> None:
        self.workspace = workspace
        if library is None and workspace is not None and workspace.library is not None:
            library = workspace.library
        self.library = library or ModelLibrary()
        if workspace is not None and workspace.library is None:
            workspace.library = self.library
        self.message = MessageBox()

        lay = widgets.Layout
        self.models = widgets.Select(options=[], rows=8, layout=lay(width="100%"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.load_button = widgets.Button(description="Load", button_style="primary")
        self.details = widgets.HTML()

        self.new_name = widgets.Text(placeholder="new name", layout=lay(width="220px"))
        self.rename_button = widgets.Button(description="Rename")
        self.duplicate_button = widgets.Button(description="Duplicate")
        self.delete_button = widgets.Button(description="Delete", button_style="warning")
        self.trash = widgets.Dropdown(options=[], description="Trash", layout=lay(width="320px"))
        self.restore_button = widgets.Button(description="Restore")
        self.export_path = widgets.Text(placeholder="file or folder", layout=lay(width="320px"))
        self.export_button = widgets.Button(description="Export")
        self.export_format = widgets.Dropdown(
            options=[
                (".nbseg file", "nbseg"),
                ("bioimage.io package (.zip)", "bioimageio"),
            ],
            value="nbseg",
            layout=lay(width="auto"),
            tooltip="bioimage.io: a model-zoo package (TorchScript + ONNX weights, test "
            "tensors, cover, docs) that ilastik, deepImageJ, Fiji and QuPath can run",
        )
        self.import_path = widgets.Text(placeholder="a .nbseg file", layout=lay(width="320px"))
        self.import_button = widgets.Button(description="Import")

        self.save_name = widgets.Text(placeholder="name (default: the model's)")
        self.overwrite = widgets.Checkbox(value=False, description="Replace (old to trash)")
        self.save_button = widgets.Button(description="Save current model", icon="save")

        self.class_rows = widgets.VBox()
        self.class_names: list[widgets.Text] = []
        self.class_colors: list[widgets.ColorPicker] = []
        self.class_weights: list[widgets.FloatText] = []
        self.apply_classes_button = widgets.Button(description="Save classes")

        self.structure = widgets.HTML()
        self.structure_button = widgets.Button(description="Show structure")
        self.structure_rows: list[dict[str, Any]] = []

        toolbar = widgets.HBox([self.load_button, self.refresh_button])
        toolbar.add_class("nbseg-toolbar")
        manage = widgets.VBox(
            [
                widgets.HBox([self.new_name, self.rename_button, self.duplicate_button]),
                widgets.HBox([self.delete_button, self.trash, self.restore_button]),
                labelled(
                    "Export to",
                    widgets.HBox([self.export_path, self.export_format, self.export_button]),
                ),
                labelled("Import from", widgets.HBox([self.import_path, self.import_button])),
            ]
        )
        panel_box = panel(
            section("Models", self.models, toolbar, self.details),
            section("Manage", manage),
            section(
                "Classes (names, colours, weights)", self.class_rows, self.apply_classes_button
            ),
            section("Structure", self.structure_button, self.structure),
            section(
                "Save current model to library",
                widgets.HBox([self.save_name, self.overwrite, self.save_button]),
            ),
            self.message,
            title="Model library",
        )
        super().__init__(panel_box.children)
        self.add_class("nbseg-panel")

        self.models.observe(lambda ch: self._on_select(), names="value")
        self.refresh_button.on_click(lambda _: run_reporting(self.message, self.refresh))
        self.load_button.on_click(lambda _: run_reporting(self.message, self.load_selected))
        self.rename_button.on_click(lambda _: run_reporting(self.message, self._rename))
        self.duplicate_button.on_click(lambda _: run_reporting(self.message, self._duplicate))
        self.delete_button.on_click(lambda _: run_reporting(self.message, self._delete))
        self.restore_button.on_click(lambda _: run_reporting(self.message, self._restore))
        self.export_button.on_click(lambda _: run_reporting(self.message, self._export))
        self.import_button.on_click(lambda _: run_reporting(self.message, self._import))
        self.save_button.on_click(lambda _: run_reporting(self.message, self._save_current))
        self.apply_classes_button.on_click(
            lambda _: run_reporting(self.message, self._apply_classes)
        )
        self.structure_button.on_click(lambda _: run_reporting(self.message, self.show_structure))
        self._update_save_state()
        if workspace is not None:
            workspace.observe(self._on_workspace)
        run_reporting(self.message, self.refresh)

    # -- state -----------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        return self.models.value

    def _require(self) -> str:
        if not self.selected:
            raise InputError("Select a model in the list first.")
        return self.selected

    def _on_workspace(self, event: str, value: Any) -> None:
        if event == "model":
            self._update_save_state()

    def _update_save_state(self) -> None:
        has = self.workspace is not None and self.workspace.model is not None
        self.save_button.disabled = not has
        self.load_button.disabled = self.workspace is None

    def refresh(self, select: str | None = None) -> None:
        """Re-read the library (and the trash); keeps or sets the selection."""
        keep = select or self.selected
        rows = self.library.list()
        options = []
        for r in rows:
            if r.error:
                label = f"{r.name} — unreadable"
            else:
                state = f"{r.epochs} epochs" if r.trained else "untrained"
                label = (
                    f"{r.name} — {r.architecture} {r.input_dimension}, {len(r.classes)} classes, "
                    f"{state}, {_short_date(r.updated)}"
                )
            options.append((label, r.name))
        names = [n for _, n in options]
        self.models.options = options
        self.models.value = keep if keep in names else (names[0] if names else None)
        trash = self.library.trash()
        self.trash.options = [(f"{r.name} ({_short_date(r.updated)})", r.name) for r in trash]
        self.trash.value = trash[0].name if trash else None  # the most recently deleted
        self._on_select()

    def _on_select(self) -> None:
        name = self.selected
        if not name:
            self.details.value = "<i>The library is empty: save a model into it below.</i>"
            self._set_classes([], [], [])
            return
        try:
            row = self.library.info(name)
            meta = self.library.metadata(name)
        except Exception as err:  # a damaged file: say so, keep the panel usable
            self.details.value = f"<b>{html.escape(name)}</b>: {html.escape(str(err))}"
            self._set_classes([], [], [])
            return
        spec = meta.get("spec") or {}
        params = meta.get("params") or {}
        history = meta.get("history") or []
        last = history[-1] if history else {}
        shown = {k: round(v, 4) for k, v in last.items() if k in ("loss", "val_loss", "val_dice")}
        lines = [
            ("Architecture", f"{spec.get('architecture')} {spec.get('input_dimension')}"),
            ("Parameters", spec.get("parameters") or "defaults"),
            ("Inputs", f"{spec.get('input_count')} {spec.get('input_names')}"),
            ("Classes", ", ".join(row.classes)),
            ("Description", spec.get("description") or "—"),
            ("Trained", f"{len(history)} epochs, last {shown}" if history else "no"),
            (
                "Training params",
                ", ".join(
                    f"{k}={params[k]}"
                    for k in (s.name for s in TrainingParams.groups()["Basic"])
                    if k in params
                )
                or "—",
            ),
            ("Created / updated", f"{_short_date(row.created)} / {_short_date(row.updated)}"),
            ("File", f"{row.path} ({row.size / 2**20:.2f} MB)"),
        ]
        self.details.value = (
            "<table>"
            + "".join(
                f"<tr><td style='padding-right:12px'><b>{html.escape(k)}</b></td>"
                f"<td>{html.escape(str(v))}</td></tr>"
                for k, v in lines
            )
            + "</table>"
        )
        weights = params.get("class_weights")
        k = len(row.classes)
        w = [float(v) for v in weights] if isinstance(weights, list) and len(weights) == k else None
        self._set_classes(row.classes, list(meta.get("class_colors") or []), w or [1.0] * k)
        self.structure.value = ""
        self.structure_rows = []

    def _set_classes(self, names: list[str], colors: list[str], weights: list[float]) -> None:
        self.class_names = [widgets.Text(value=n, layout={"width": "200px"}) for n in names]
        self.class_colors = [
            widgets.ColorPicker(value=c, concise=True, layout={"width": "60px"}) for c in colors
        ]
        self.class_weights = [
            widgets.FloatText(value=v, description="weight", layout={"width": "170px"})
            for v in weights
        ]
        self.class_rows.children = [
            widgets.HBox([widgets.Label(f"{i}", layout={"width": "24px"}), n, c, w])
            for i, (n, c, w) in enumerate(
                zip(self.class_names, self.class_colors, self.class_weights)
            )
        ]
        self.apply_classes_button.disabled = not names

    # -- actions ---------------------------------------------------------------------------
    def load_selected(self) -> Model:
        """Load the selected model into the workspace; returns it."""
        name = self._require()
        if self.workspace is None:
            raise InputError("This panel has no workspace to load the model into.")
        model = self.library.load(name)
        self.workspace.set_model(model)
        self.message.show(f"Loaded {model!r}.")
        return model

    def _rename(self) -> None:
        name, new = self._require(), self.new_name.value.strip()
        if not new:
            raise InputError("Type the new name in the 'new name' box.")
        self.library.rename(name, new)
        ws_model = self.workspace.model if self.workspace is not None else None
        if ws_model is not None and ws_model.spec.name == name:
            ws_model.spec.name = new
        self.refresh(select=new)
        self.message.show(f"Renamed {name!r} to {new!r}.")

    def _duplicate(self) -> None:
        name = self._require()
        path = self.library.duplicate(name, self.new_name.value.strip() or None)
        self.refresh(select=path.stem)
        self.message.show(f"Duplicated {name!r} as {path.stem!r}.")

    def _delete(self) -> None:
        name = self._require()
        self.library.delete(name)
        self.refresh()
        self.message.show(f"Moved {name!r} to the trash; Restore brings it back.")

    def _restore(self) -> None:
        name = self.trash.value
        if not name:
            raise InputError("The trash is empty.")
        path = self.library.restore(name, self.new_name.value.strip() or None)
        self.refresh(select=path.stem)
        self.message.show(f"Restored {path.stem!r}.")

    def _export(self) -> None:
        name, target = self._require(), self.export_path.value.strip()
        if not target:
            raise InputError("Type a file or folder to export to.")
        if self.export_format.value == "bioimageio":
            self.message.show(f"Exporting {name!r} as a bioimage.io package …", "info")
            path = self.library.export_bioimageio(name, target)
            self.message.show(
                f"Exported {name!r} as a bioimage.io package to {path} (checked against the "
                "network; upload it to the model zoo or open it in deepImageJ / ilastik)."
            )
            return
        path = self.library.export(name, target)
        self.message.show(f"Exported {name!r} to {path}.")

    def _import(self) -> None:
        src = self.import_path.value.strip()
        if not src:
            raise InputError("Type the path of a .nbseg file to import.")
        path = self.library.import_(src, self.new_name.value.strip() or None)
        self.refresh(select=path.stem)
        self.message.show(f"Imported {path.stem!r}.")

    def _save_current(self) -> None:
        if self.workspace is None or self.workspace.model is None:
            raise InputError("There is no current model to save; create or load one first.")
        model = self.workspace.model
        path = self.library.save(
            model, self.save_name.value.strip() or None, overwrite=self.overwrite.value
        )
        self.refresh(select=path.stem)
        self.message.show(f"Saved the current model as {path.stem!r}.")

    def _apply_classes(self) -> None:
        """Write the edited class names, colours and weights into the selected model."""

        name = self._require()
        names = [t.value.strip() for t in self.class_names]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise InputError(f"Class names must be non-empty and distinct, got {names}.")
        colors = [c.value for c in self.class_colors]
        weights = [float(w.value) for w in self.class_weights]
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise InputError(f"Class weights must be >= 0 with at least one > 0, got {weights}.")
        model = self.library.load(name)
        model.class_names, model.class_colors = names, colors
        model.check_classes()
        uniform = all(w == 1.0 for w in weights)
        params = model.params or TrainingParams()
        if not (uniform and isinstance(params.class_weights, str)):
            params = params.replace(class_weights=weights)
            params.validate(model.spec.class_count)
            model.params = params
        self.library.save(model, name, overwrite=True, trash_old=False)
        ws = self.workspace
        if ws is not None and ws.model is not None and ws.model.spec.name == name:
            ws.model.class_names, ws.model.class_colors = list(names), list(colors)
            if model.params is not None:
                ws.model.params = model.params
            ws.set_model(ws.model)
        self.refresh(select=name)
        self.message.show(f"Saved the classes of {name!r}.")

    def show_structure(self, patch_size: int | None = None) -> list[dict[str, Any]]:
        """Fill the structure table (blocks and output shapes, from forward hooks on a dummy
        input) for the selected model; returns the rows."""

        name = self._require()
        model = self.library.load(name)
        patch = patch_size or (32 if model.spec.input_dimension == "3D" else 64)
        try:
            rows = describe_network(model.spec, patch)
        except Exception:  # an architecture that does not run on the meta device
            rows = layer_rows(model.network.eval(), example_input(model, patch))
        if not rows:
            raise ModelFileError(f"No layers found in {name!r}.")
        self.structure_rows = rows
        total = model.parameter_count()
        body = "".join(
            f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['type'])}</td>"
            f"<td>{html.escape(str(r['output_shape']))}</td><td>{r['parameters']:,}</td></tr>"
            for r in rows
        )
        self.structure.value = (
            f"<div>Input {patch} px patch; {total:,} parameters.</div>"
            "<table><tr><th>Block</th><th>Type</th><th>Output shape</th><th>Parameters</th></tr>"
            f"{body}</table>"
        )
        return rows
