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
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..data.augment import AugmentationParams
from ..errors import ParamsError
from ..training.params import (
    LOSSES,
    LR_SCHEDULES,
    MONITORS,
    OPTIMIZERS,
    PRECISIONS,
    TrainingParams,
)
from . import style
from .state import Workspace


def _field() -> widgets.Layout:
    return widgets.Layout(width="220px")


def _path() -> widgets.Layout:
    return widgets.Layout(width="360px")


_GIB = 1 << 30

CHOICES: dict[str, tuple[str, ...]] = {
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "precision": PRECISIONS,
    "monitor": MONITORS,
    "device": ("auto", "cpu", "cuda", "mps"),
}

#: Label and tooltip of every TrainingParams / AugmentationParams field shown.
HELP: dict[str, tuple[str, str]] = {
    "patch_size": (
        "Patch size",
        "'auto' (128² in 2D/2.5D, 48³ in 3D, shrunk to fit the data), a side in voxels, or "
        "'D, H, W' / 'H, W' for a box",
    ),
    "stride_ratio": ("Stride to input ratio", "1.0 = adjacent patches, 0.5 = half-overlapping"),
    "batch_size": ("Batch size", "Patches per training step (memory grows with it)"),
    "epochs": ("Epochs", "Passes over the training patches"),
    "loss": ("Loss", "Loss function (unlabelled voxels are ignored)"),
    "optimizer": ("Optimizer", "Gradient descent algorithm"),
    "learning_rate": ("Learning rate", "Initial step size of the optimizer (> 0)"),
    "weight_decay": ("Weight decay", "L2 penalty on the weights (0 = off)"),
    "momentum": ("Momentum", "SGD / RMSprop momentum"),
    "nesterov": ("Nesterov momentum", "SGD only"),
    "lr_schedule": ("LR schedule", "How the learning rate changes during training"),
    "plateau_factor": ("Plateau factor", "Reduce-on-plateau: multiply the rate by this"),
    "plateau_patience": ("Plateau patience", "Reduce-on-plateau: epochs without improvement"),
    "early_stopping": ("Early stopping", "Stop when the monitored metric stops improving"),
    "monitor": ("Monitor", "Metric watched by early stopping and 'restore best'"),
    "patience": ("Patience", "Epochs without improvement before stopping"),
    "min_delta": ("Min delta", "Smallest change that counts as an improvement"),
    "restore_best": ("Restore best", "Keep the weights of the best epoch at the end"),
    "terminate_on_nan": ("Stop on NaN", "Stop training when the loss becomes NaN"),
    "class_weights": ("Class weights", "Weights of the cross-entropy / focal terms"),
    "gradient_clip": ("Gradient clipping", "Clip the gradient norm (0 = off)"),
    "ema_decay": (
        "Weight averaging (EMA)",
        "Decay of an exponential moving average of the weights, used for validation, "
        "checkpoints and the final model (0 = off; 0.99-0.999 typical)",
    ),
    "precision": (
        "Precision",
        "'auto' = bf16 mixed precision where the hardware computes bf16 natively (≈2× faster "
        "on AVX512-BF16 CPUs), else 32-bit",
    ),
    "seed": ("Random seed", "Seed of patch sampling, augmentation and weights"),
    "full_labels_only": (
        "Full labels only",
        "Dragonfly's behaviour: use only patches whose voxels are all labelled",
    ),
    "focal_gamma": ("Focal gamma", "Focusing exponent of the focal loss"),
    "tversky_alpha": ("Tversky alpha", "Weight of false positives in the Tversky loss"),
    "tversky_beta": ("Tversky beta", "Weight of false negatives in the Tversky loss"),
    "checkpoint_cache_mb": ("Checkpoint cache MB", "Memory budget of the checkpoint cache"),
    "max_validation_patches": ("Max val. patches", "Cap on validation patches per epoch"),
    "max_minutes": ("Time limit (min)", "Wall-clock budget; 0 = no limit"),
    "device": ("Device", "Where to train: auto picks the GPU when there is one"),
    # augmentation
    "factor": ("Augmentation factor", "Each patch is used this many times per epoch"),
    "flip": ("Flips", "Random flips along every axis"),
    "rotate90": ("90° rotations", "Random rotations by multiples of 90°"),
    "rotation": ("Rotation (°)", "Maximum free rotation angle, 0 … 180"),
    "zoom": ("Zoom", "Range of the random zoom factor"),
    "shear": ("Shear (°)", "Maximum shear angle, 0 … 45"),
    "elastic": ("Elastic deformation", "Random smooth elastic deformation"),
    "elastic_alpha": ("Elastic strength", "Displacement standard deviation, voxels"),
    "elastic_sigma": ("Elastic scale", "Spacing of the deformation's control points, voxels"),
    "noise": ("Noise", "Maximum std of Gaussian noise (normalised units)"),
    "brightness": ("Brightness", "Range of the brightness factor"),
    "contrast": ("Contrast", "Range of the contrast factor"),
    "probability": ("Probability", "Probability that a sample is augmented"),
}

BASIC = (
    "patch_size",
    "stride_ratio",
    "batch_size",
    "epochs",
    "loss",
    "optimizer",
    "learning_rate",
)
ADVANCED_GROUPS: dict[str, tuple[str, ...]] = {
    "Optimizer and learning rate": (
        "lr_schedule",
        "plateau_factor",
        "plateau_patience",
        "weight_decay",
        "momentum",
        "nesterov",
        "gradient_clip",
        "ema_decay",
    ),
    "Early stopping": (
        "early_stopping",
        "monitor",
        "patience",
        "min_delta",
        "restore_best",
        "terminate_on_nan",
    ),
    "Loss and class weights": ("class_weights", "focal_gamma", "tversky_alpha", "tversky_beta"),
    "Patches and run": (
        "full_labels_only",
        "max_validation_patches",
        "seed",
        "max_minutes",
        "precision",
        "device",
        "checkpoint_cache_mb",
    ),
}
_RANGES = {"zoom": (0.1, 4.0), "brightness": (0.1, 3.0), "contrast": (0.1, 3.0)}


def _widget_for(name: str, default: Any) -> widgets.Widget:
    """A field for a dataclass value, typed after its default."""
    if name in CHOICES:
        return widgets.Dropdown(options=list(CHOICES[name]), value=default, layout=_field())
    if isinstance(default, bool):
        return widgets.Checkbox(value=default, indent=False, layout=_field())
    if isinstance(default, int):
        return widgets.IntText(value=default, layout=_field())
    if isinstance(default, float):
        return widgets.FloatText(value=default, layout=_field())
    if isinstance(default, tuple) and len(default) == 2:
        lo, hi = _RANGES.get(name, (0.0, 4.0))
        return widgets.FloatRangeSlider(
            value=tuple(float(v) for v in default),
            min=lo,
            max=hi,
            step=0.05,
            readout_format=".2f",
            continuous_update=False,
            layout=widgets.Layout(width="320px"),
        )
    return widgets.Text(value=str(default), layout=_field())


def parse_patch_size(text: str) -> int | tuple[int, ...] | None:
    """``"auto"`` / ``""`` → None, ``"64"`` → 64, ``"16, 64, 64"`` / ``"16x64x64"`` →
    (16, 64, 64)."""
    if str(text).strip().lower() in ("", "auto"):
        return None
    parts = [p for p in re.split(r"[,x×\s]+", str(text).strip()) if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if not values or len(values) > 3:
        raise ParamsError(
            f"Patch size {text!r} is not understood: give 'auto', one integer (e.g. 64) or 2-3 "
            "integers separated by commas (e.g. 16, 64, 64)."
        )
    return values[0] if len(values) == 1 else tuple(values)


def format_patch_size(value: int | tuple[int, ...] | None) -> str:
    if value is None:
        return "auto"
    return str(value) if isinstance(value, int) else ", ".join(str(v) for v in value)


class TrainingParamsPanel(widgets.VBox):
    """Edit :class:`TrainingParams`; shows the estimated memory ratio live.

    Attributes
    ----------
    workspace
        The shared :class:`~nbseg.ui.state.Workspace` (``set_params`` on every valid edit).
    fields
        ``{TrainingParams field: widget}`` for every field shown (``patch_size`` is a Text,
        ``class_weights`` see below, ``max_minutes`` a FloatText where 0 = no limit).
    augmentation_fields
        ``{AugmentationParams field: widget}``.
    patch_size, stride_ratio, batch_size, epochs, loss, optimizer, learning_rate
        The basic fields (also in ``fields``).
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
        self.fields: dict[str, widgets.Widget] = {}
        for f in dataclasses.fields(TrainingParams):
            if f.name in ("augmentation", "class_weights", "patch_size", "max_minutes"):
                continue
            self.fields[f.name] = _widget_for(f.name, getattr(defaults, f.name))
        self.fields["patch_size"] = widgets.Text(
            value=format_patch_size(defaults.patch_size),
            placeholder="64  or  16, 64, 64",
            continuous_update=False,
            layout=_field(),
        )
        self.fields["stride_ratio"] = style.slider(defaults.stride_ratio, 0.05, 1.0, 0.05, ".2f")
        self.fields["batch_size"] = widgets.BoundedIntText(
            value=defaults.batch_size, min=1, max=1_000_000, layout=_field()
        )
        self.fields["epochs"] = widgets.BoundedIntText(
            value=defaults.epochs, min=1, max=1_000_000, layout=_field()
        )
        self.fields["max_minutes"] = widgets.FloatText(value=0.0, layout=_field())
        self.class_weights_mode = widgets.Dropdown(
            options=[("Uniform", "uniform"), ("By frequency", "frequency"), ("Custom", "custom")],
            value="uniform",
            layout=_field(),
        )
        self.class_weights_custom = widgets.Text(
            value="",
            placeholder="one weight per class, e.g. 1, 2.5",
            continuous_update=False,
            layout=_field(),
        )
        self.fields["class_weights"] = widgets.HBox(
            [self.class_weights_mode, self.class_weights_custom]
        )
        aug = defaults.augmentation
        self.augmentation_fields: dict[str, widgets.Widget] = {
            f.name: _widget_for(f.name, getattr(aug, f.name))
            for f in dataclasses.fields(AugmentationParams)
        }
        self.augmentation_fields["factor"] = widgets.BoundedIntText(
            value=aug.factor, min=1, max=1000, layout=_field()
        )
        for name in ("rotation", "shear", "probability"):
            hi = {"rotation": 180.0, "shear": 45.0, "probability": 1.0}[name]
            self.augmentation_fields[name] = widgets.FloatSlider(
                value=float(getattr(aug, name)),
                min=0.0,
                max=hi,
                step=0.05 if name == "probability" else 1.0,
                continuous_update=False,
                layout=widgets.Layout(width="320px"),
            )

        for name in BASIC:
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

        shown = set(BASIC) | {n for g in ADVANCED_GROUPS.values() for n in g}
        other = tuple(n for n in self.fields if n not in shown)  # new fields appear here
        groups = dict(ADVANCED_GROUPS)
        if other:
            groups["Other"] = other
        sections = [
            style.section(title, *(self._row(n, self.fields[n]) for n in names))
            for title, names in groups.items()
        ]
        sections.append(
            style.section(
                "Augmentation",
                *(self._row(n, w) for n, w in self.augmentation_fields.items()),
            )
        )
        self.advanced_box = widgets.VBox(sections, layout=widgets.Layout(display="none"))
        box = style.panel(
            style.section(
                "Basic settings",
                *(self._row(n, self.fields[n]) for n in BASIC),
                style.labelled(
                    "Validation (%)",
                    self.validation_percent,
                    "Share of labelled patches kept for validation (0 = none)",
                ),
            ),
            self.memory_label,
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
        self.save_button.on_click(lambda _: self.save())
        self.load_button.on_click(lambda _: self.load())
        self.workspace.observe(self._on_workspace)
        self.set_params(self.workspace.params, send=False)
        self._sync_validation()
        self.update_memory()

    # -- layout helpers --------------------------------------------------------------------
    @staticmethod
    def _row(name: str, w: widgets.Widget) -> widgets.HBox:
        label, tip = HELP.get(name, (name.replace("_", " ").capitalize(), name))
        return style.labelled(label, w, tip)

    def _value_widgets(self) -> list[widgets.Widget]:
        out = [w for n, w in self.fields.items() if n != "class_weights"]
        out += [self.class_weights_mode, self.class_weights_custom]
        out += list(self.augmentation_fields.values())
        return out

    def _sync_advanced(self) -> None:
        show = self.advanced_toggle.value
        self.advanced_box.layout.display = None if show else "none"
        self.advanced_toggle.description = (
            "Hide advanced settings" if show else "Show advanced settings"
        )

    def _sync_enabled(self) -> None:
        f = self.fields
        plateau = f["lr_schedule"].value == "plateau"
        f["plateau_factor"].disabled = f["plateau_patience"].disabled = not plateau
        stop = f["early_stopping"].value
        for n in ("monitor", "patience", "min_delta"):
            f[n].disabled = not stop
        f["nesterov"].disabled = f["optimizer"].value != "sgd"
        f["momentum"].disabled = f["optimizer"].value not in ("sgd", "rmsprop")
        self.class_weights_custom.disabled = self.class_weights_mode.value != "custom"
        elastic = self.augmentation_fields["elastic"].value
        self.augmentation_fields["elastic_alpha"].disabled = not elastic
        self.augmentation_fields["elastic_sigma"].disabled = not elastic

    # -- params <-> fields -----------------------------------------------------------------
    def params(self) -> TrainingParams:
        """A :class:`TrainingParams` from the current fields (validated; raises ParamsError)."""
        values: dict[str, Any] = {}
        for name, w in self.fields.items():
            if name in ("class_weights", "patch_size", "max_minutes"):
                continue
            values[name] = w.value
        values["patch_size"] = parse_patch_size(self.fields["patch_size"].value)
        minutes = float(self.fields["max_minutes"].value or 0.0)
        if minutes < 0:
            raise ParamsError(
                f"Time limit {minutes} min is invalid: give minutes > 0, or 0 for no limit."
            )
        values["max_minutes"] = minutes or None
        values["class_weights"] = self._class_weights()
        aug = {n: w.value for n, w in self.augmentation_fields.items()}
        aug = {n: tuple(v) if isinstance(v, list | tuple) else v for n, v in aug.items()}
        values["augmentation"] = AugmentationParams(**aug)
        params = TrainingParams(**values)
        model = self.workspace.model
        return params.validate(class_count=model.spec.class_count if model else None)

    def _class_weights(self) -> str | list[float]:
        mode = self.class_weights_mode.value
        if mode != "custom":
            return mode
        text = self.class_weights_custom.value.strip()
        try:
            weights = [float(v) for v in re.split(r"[,;\s]+", text) if v]
        except ValueError:
            weights = []
        if not weights:
            raise ParamsError(
                f"Custom class weights {text!r} are not understood: give one number per class "
                "separated by commas, e.g. 1, 2.5."
            )
        return weights

    def set_params(self, params: TrainingParams, send: bool = True) -> None:
        """Show ``params`` in the fields (and send them to the workspace when ``send``)."""
        self._updating = True
        try:
            for name, w in self.fields.items():
                value = getattr(params, name)
                if name == "class_weights":
                    if isinstance(value, str):
                        self.class_weights_mode.value = value
                    else:
                        self.class_weights_mode.value = "custom"
                        self.class_weights_custom.value = ", ".join(f"{v:g}" for v in value)
                elif name == "patch_size":
                    w.value = format_patch_size(value)
                elif name == "max_minutes":
                    w.value = float(value or 0.0)
                else:
                    if isinstance(w, widgets.Dropdown) and value not in w.options:
                        w.options = [*w.options, value]
                    w.value = value
            for name, w in self.augmentation_fields.items():
                value = getattr(params.augmentation, name)
                if isinstance(w, widgets.FloatRangeSlider):
                    lo, hi = (float(v) for v in value)
                    w.min, w.max = min(w.min, lo), max(w.max, hi)
                    value = (lo, hi)
                elif isinstance(w, widgets.FloatSlider):
                    w.max = max(w.max, float(value))
                w.value = value
        finally:
            self._updating = False
        self._sync_enabled()
        if send:
            self._last_sent = params
            self.workspace.set_params(params)
        self.update_memory()

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
        detail = (
            f"{est.total / _GIB:.2f} GiB of {est.available / _GIB:.1f} GiB available on "
            f"{est.device}"
        )
        hint = ""
        if bad:
            hint = (
                "<br>This training step will probably not fit in memory: reduce the batch "
                "size or the patch size (or generate a smaller model: fewer filters or levels)."
            )
        label.value = (
            f"<span class='{cls}'>Estimated memory ratio: {ratio:.2f}</span> "
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
