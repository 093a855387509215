"""Settings declared once: validation, files, CLI flags, panels and docs from one declaration."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import nbseg
from nbseg.config import TrainerOptions
from nbseg.settings import Float, Invalid, Settings, setting
from nbseg.training.params import TrainingParams

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [nbseg.TrainingParams, nbseg.AugmentationParams, nbseg.ModelSpec, TrainerOptions]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_declared_with_label_help_and_group(cls):
    declared = {s.name for s in cls.settings()}
    assert declared == {f.name for f in dataclasses.fields(cls)}
    for s in cls.settings():
        assert s.label and s.help and s.group, s.name
        assert s.group in cls.groups()
    cls().validate()  # the defaults are valid


@pytest.mark.parametrize(
    "change, words",
    [
        ({"learning_rate": "fast"}, ["learning_rate", "number"]),
        ({"batch_size": True}, ["batch_size", "integer"]),
        ({"epochs": 2.5}, ["epochs", "integer"]),
        ({"early_stopping": "yes"}, ["early_stopping", "True or False"]),
        ({"augmentation": "yes"}, ["augmentation", "AugmentationParams"]),
        ({"max_minutes": 0}, ["max_minutes", "> 0"]),
        ({"device": "tpu"}, ["device", "cuda:N"]),
        ({"patch_size": (64, "a")}, ["patch_size", "ints >= 4"]),
        ({"stride_ratio": float("nan")}, ["stride_ratio", "finite"]),
    ],
)
def test_wrong_types_and_values_name_the_setting(change, words):
    with pytest.raises(nbseg.ParamsError) as info:
        TrainingParams(**change).validate()
    for w in words:
        assert w in str(info.value)


def test_validation_normalises_text_numbers_from_files():
    p = TrainingParams.from_dict({"learning_rate": "1e-3", "max_minutes": None})
    assert p.learning_rate == 0.001 and isinstance(p.learning_rate, float)
    assert p.max_minutes is None


def test_nested_errors_name_both_levels():
    with pytest.raises(nbseg.ParamsError, match=r"augmentation.*rotation=500"):
        TrainingParams.from_dict({"augmentation": {"rotation": 500}})
    with pytest.raises(nbseg.ParamsError, match=r"(?i)unknown augmentation parameters \['spin'\]"):
        TrainingParams.from_dict({"augmentation": {"spin": 3}})


def test_yaml_error_names_line():
    with pytest.raises(nbseg.ParamsError, match="line 2"):
        TrainingParams.from_yaml("epochs: 3\nloss: dice: ce\n")


def test_no_limit_is_none_in_core_and_panel():
    from nbseg.ui.params_panel import TrainingParamsPanel
    from nbseg.ui.state import Workspace

    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    assert panel.fields["max_minutes"].value == 10.0 and ws.params.max_minutes == 10.0
    panel.fields["max_minutes"].value = 3.0
    assert ws.params.max_minutes == 3.0
    panel.fields["max_minutes"].value = None
    assert ws.params.max_minutes is None


def test_docs_table_is_generated_from_the_declarations():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    text = (ROOT / "docs" / "settings.md").read_text()
    for cls in CLASSES:
        for s in cls.settings():
            assert f"| `{s.name}` |" in text


# -- a new setting, declared in one place, reaches every view -------------------------------
@dataclasses.dataclass
class ExtendedParams(TrainingParams):
    label_smoothing: float = setting(
        0.0,
        Float(0.0, 0.5),
        "Label smoothing",
        "Share of the target probability spread over the other classes",
        group="Loss and class weights",
    )


@pytest.fixture
def extended(monkeypatch):
    """Every module that names TrainingParams sees the extended class."""
    import nbseg.cli
    import nbseg.config
    import nbseg.ui.params_panel

    for module in (nbseg.config, nbseg.cli, nbseg.ui.params_panel):
        monkeypatch.setattr(module, "TrainingParams", ExtendedParams)
    return ExtendedParams


def test_new_setting_appears_in_panel(extended):
    from nbseg.ui.params_panel import TrainingParamsPanel
    from nbseg.ui.state import Workspace

    ws = Workspace(params=extended())
    panel = TrainingParamsPanel(ws)
    assert "label_smoothing" in panel.fields
    row_labels = [
        child.children[0].value
        for section in panel.advanced_box.children
        for child in section.children
        if hasattr(child, "children") and child.children
    ]
    assert "Label smoothing" in row_labels
    panel.fields["label_smoothing"].value = 0.2
    assert ws.params.label_smoothing == 0.2
    panel.fields["label_smoothing"].value = 0.9
    assert "label_smoothing" in panel.message.text and "[0, 0.5]" in panel.message.text


def test_new_setting_round_trips_through_config_and_yaml(extended, tmp_path):
    p = extended(label_smoothing=0.1)
    assert extended.from_yaml(p.to_yaml()) == p
    cfg = nbseg.config.TrainingConfig.from_dict(
        {"model": {"class_count": 2}, "training_sets": ["fibres"], "params": p.to_dict()}
    )
    assert cfg.params.label_smoothing == 0.1
    again = nbseg.config.TrainingConfig.from_dict(cfg.to_dict())
    assert again.params.label_smoothing == 0.1


def test_new_setting_gets_a_cli_flag(extended, tmp_path, capsys):
    from nbseg.cli import build_parser
    from nbseg.settings import parsed_overrides

    args = build_parser().parse_args(["train", "x.yaml", "--label-smoothing", "0.25"])
    assert parsed_overrides(args, extended) == {"label_smoothing": 0.25}
    args = build_parser().parse_args(["train", "x.yaml", "--label-smoothing", "lots"])
    with pytest.raises(nbseg.ParamsError, match="--label-smoothing 'lots'"):
        parsed_overrides(args, extended)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "x.yaml", "--help"])
    assert "--label-smoothing" in capsys.readouterr().out


def test_cli_flag_overrides_config_value(tmp_path):
    from nbseg.cli import build_parser
    from nbseg.settings import parsed_overrides

    args = build_parser().parse_args(
        ["train", "x.yaml", "--epochs", "3", "--augmentation.flip", "false", "--devices", "2"]
    )
    assert parsed_overrides(args, TrainingParams) == {"epochs": 3, "augmentation": {"flip": False}}
    assert parsed_overrides(args, TrainerOptions) == {"devices": 2}


def test_kinds_refuse_with_a_reason():
    kind = Float(0.0, 1.0, open_max=True)
    assert kind.check(0) == 0.0
    with pytest.raises(Invalid, match=r"\[0, 1\)"):
        kind.check(1.0)
    assert issubclass(TrainingParams, Settings)
