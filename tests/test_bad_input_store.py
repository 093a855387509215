"""Every bad input of the model-file / library / export / ``nbseg models`` side is refused
with an nbseg error naming the offending argument or field (issue 17): crafted model files
(built with safetensors directly), library names and arguments, export targets, and the
command line (exit status 1 and one ``nbseg: error:`` line)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

import nbseg
from nbseg.cli import main
from nbseg.errors import InputError, ModelFileError
from nbseg.store.export import export_onnx, export_torchscript
from nbseg.store.fileformat import read_model_meta
from nbseg.store.library import ModelLibrary

CLI = "cli"


def tiny() -> nbseg.Model:
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=2, parameters={"filters": 4, "depth": 2}, name="m"
    )
    m = nbseg.generate_model(spec)
    m.normalisation = nbseg.Normalisation(low=[0.0], high=[1.0])
    m.params = nbseg.TrainingParams(epochs=2)
    m.history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}]
    return m


@pytest.fixture(scope="module")
def base():
    m = tiny()
    return {k: v.clone() for k, v in m.network.state_dict().items()}, m.metadata()


def crafted(tmp: Path, base, edit=None, header=None, name="bad.nbseg") -> Path:
    """A model file written with safetensors directly: the valid metadata changed by
    ``edit(meta)``, or a raw ``header``."""
    from safetensors.torch import save_file

    state, meta = base
    meta = copy.deepcopy(meta)
    if edit is not None:
        edit(meta)
    if header is None:
        header = {"format": "nbseg-model", "version": "1", "meta": json.dumps(meta)}
    path = tmp / name
    save_file(state, str(path), metadata=header)
    return path


def setk(key, value):
    def edit(meta):
        meta[key] = value

    return edit


def setsub(key, sub, value):
    def edit(meta):
        meta[key][sub] = value

    return edit


def load(tmp, base, edit=None, header=None):
    return lambda: nbseg.load_model(crafted(tmp, base, edit, header))


def library(tmp: Path) -> ModelLibrary:
    lib = ModelLibrary(tmp / "lib")
    if not lib.exists("m"):
        lib.save(tiny(), "m")
    return lib


def save_as(name):
    return lambda t, b: lambda: library(t).save(tiny(), name)


def existing(tmp: Path, name: str) -> Path:
    p = tmp / name
    p.write_bytes(b"precious")
    return p


# (id, build(tmp, base) -> call or CLI argv, expected type, pattern naming the argument/field)
CASES = [
    # -- the header --------------------------------------------------------------------------
    (
        "meta-invalid-json",
        lambda t, b: load(t, b, header={"format": "nbseg-model", "version": "1", "meta": "{"}),
        ModelFileError,
        r"field 'meta' is not valid JSON",
    ),
    (
        "meta-missing",
        lambda t, b: load(t, b, header={"format": "nbseg-model", "version": "1"}),
        ModelFileError,
        r"no field 'meta'",
    ),
    (
        "meta-not-object",
        lambda t, b: load(t, b, header={"format": "nbseg-model", "version": "1", "meta": "[1]"}),
        ModelFileError,
        r"'meta' must be a JSON object",
    ),
    (
        "version-not-number",
        lambda t, b: load(t, b, header={"format": "nbseg-model", "version": "x", "meta": "{}"}),
        ModelFileError,
        r"field 'version'",
    ),
    (
        "version-newer",
        lambda t, b: load(t, b, header={"format": "nbseg-model", "version": "9", "meta": "{}"}),
        ModelFileError,
        r"newer nbseg \(format version 9",
    ),
    (
        "not-nbseg-safetensors",
        lambda t, b: load(t, b, header={"format": "other"}),
        ModelFileError,
        r"not an nbseg model",
    ),
    (
        "truncated-file",
        lambda t, b: (
            lambda p: (
                p.write_bytes(p.read_bytes()[:100]),
                lambda: nbseg.load_model(p),
            )[1]
        )(crafted(t, b)),
        ModelFileError,
        r"bad\.nbseg.*not a readable nbseg model",
    ),
    # -- the metadata fields -----------------------------------------------------------------
    (
        "meta-unknown-key",
        lambda t, b: load(t, b, setk("colour_map", [])),
        ModelFileError,
        r"unknown model metadata field\(s\) \['colour_map'\]",
    ),
    (
        "spec-missing",
        lambda t, b: load(t, b, lambda m: m.pop("spec")),
        ModelFileError,
        r"field 'spec' is missing",
    ),
    (
        "spec-unknown-key",
        lambda t, b: load(t, b, setsub("spec", "depth", 3)),
        ModelFileError,
        r"field 'spec' is invalid.*depth",
    ),
    (
        "spec-class-count",
        lambda t, b: load(t, b, setsub("spec", "class_count", 1)),
        ModelFileError,
        r"field 'spec'.*class_count",
    ),
    (
        "spec-unknown-architecture",
        lambda t, b: load(t, b, setsub("spec", "architecture", "nonexistent_net")),
        ModelFileError,
        r"field 'spec'.*nonexistent_net",
    ),
    (
        "class-names-count",
        lambda t, b: load(t, b, setk("class_names", ["only one"])),
        ModelFileError,
        r"field 'class_names' has 1 name;.*one name per class \(2\)",
    ),
    (
        "class-names-not-list",
        lambda t, b: load(t, b, setk("class_names", "a,b")),
        ModelFileError,
        r"field 'class_names' is a string",
    ),
    (
        "class-name-not-str",
        lambda t, b: load(t, b, setk("class_names", ["bg", 7])),
        ModelFileError,
        r"field 'class_names\[1\]' is 7",
    ),
    (
        "class-color-bad-hex",
        lambda t, b: load(t, b, setk("class_colors", ["#12345", "#ffffff"])),
        ModelFileError,
        r"field 'class_colors\[0\]' is '#12345'",
    ),
    (
        "class-color-rgb-out-of-range",
        lambda t, b: load(t, b, setk("class_colors", ["#000000", [300, 0, 0]])),
        ModelFileError,
        r"field 'class_colors\[1\]' is \[300, 0, 0\]",
    ),
    (
        "class-colors-count",
        lambda t, b: load(t, b, setk("class_colors", ["#000000"])),
        ModelFileError,
        r"field 'class_colors' has 1 colour;",
    ),
    (
        "normalisation-empty",
        lambda t, b: load(t, b, setsub("normalisation", "low", [])),
        ModelFileError,
        r"field 'normalisation\.low' has 0 values",
    ),
    (
        "normalisation-degenerate",
        lambda t, b: load(t, b, setsub("normalisation", "high", [0.0])),
        ModelFileError,
        r"field 'normalisation\.high\[0\]' is 0\.0, not above low\[0\]",
    ),
    (
        "normalisation-nan",
        lambda t, b: load(t, b, setsub("normalisation", "low", [float("nan")])),
        ModelFileError,
        r"field 'normalisation\.low\[0\]' is nan",
    ),
    (
        "normalisation-not-object",
        lambda t, b: load(t, b, setk("normalisation", "0-1")),
        ModelFileError,
        r"field 'normalisation' is a string",
    ),
    (
        "normalisation-unknown-key",
        lambda t, b: load(t, b, setsub("normalisation", "scale", 2)),
        ModelFileError,
        r"field 'normalisation' has unknown keys \['scale'\]",
    ),
    (
        "normalisation-percentiles",
        lambda t, b: load(t, b, setsub("normalisation", "percentiles", [99.5, 0.5])),
        ModelFileError,
        r"field 'normalisation\.percentiles'",
    ),
    (
        "history-not-list",
        lambda t, b: load(t, b, setk("history", {"epoch": 1})),
        ModelFileError,
        r"field 'history' is an object",
    ),
    (
        "history-record-without-epoch",
        lambda t, b: load(t, b, setk("history", [{"loss": 0.5}])),
        ModelFileError,
        r"field 'history\[0\]\.epoch' is None",
    ),
    (
        "history-epoch-not-int",
        lambda t, b: load(t, b, setk("history", [{"epoch": 1}, {"epoch": "2"}])),
        ModelFileError,
        r"field 'history\[1\]\.epoch' is '2'",
    ),
    (
        "params-invalid-value",
        lambda t, b: load(t, b, setsub("params", "epochs", 0)),
        ModelFileError,
        r"field 'params' is invalid.*epochs",
    ),
    (
        "params-class-weights-count",
        lambda t, b: load(t, b, setsub("params", "class_weights", [1.0, 2.0, 3.0])),
        ModelFileError,
        r"field 'params'.*class_weights",
    ),
    (
        "created-not-string",
        lambda t, b: load(t, b, setk("created", 2026)),
        ModelFileError,
        r"field 'created' is 2026",
    ),
    (
        "read-model-meta-validates",
        lambda t, b: lambda: read_model_meta(crafted(t, b, setk("class_colors", ["red", "blue"]))),
        ModelFileError,
        r"field 'class_colors\[0\]' is 'red'",
    ),
    (
        "weights-do-not-fit",
        lambda t, b: load(t, b, setsub("spec", "parameters", {"filters": 8, "depth": 2})),
        ModelFileError,
        r"weights do not fit the unet network.*size mismatch",
    ),
    # -- paths -------------------------------------------------------------------------------
    (
        "load-path-none",
        lambda t, b: lambda: nbseg.load_model(None),
        InputError,
        r"load_model: path must be",
    ),
    (
        "load-path-folder",
        lambda t, b: lambda: nbseg.load_model(t),
        ModelFileError,
        r"is a folder, not a model file",
    ),
    ("save-path-none", lambda t, b: lambda: tiny().save(None), InputError, r"Model\.save: path"),
    (
        "save-path-folder",
        lambda t, b: lambda: tiny().save(t),
        InputError,
        r"is a folder; give a file path",
    ),
    (
        "save-parent-is-a-file",
        lambda t, b: lambda: tiny().save(existing(t, "file") / "m.nbseg"),
        ModelFileError,
        r"Could not write the model file .*file/m\.nbseg",
    ),
    # -- library names and arguments ---------------------------------------------------------
    *[
        (
            f"name-{tag}",
            save_as(name),
            InputError,
            rule,
        )
        for tag, name, rule in (
            ("newline", "model\n", r"'model\\n'.*control character '\\n'"),
            ("tab", "a\tb", r"control character '\\t'"),
            ("slash", "a/b", r"'a/b'.*path separator '/'"),
            ("backslash", "a\\b", r"path separator '\\\\'"),
            ("leading-dot", ".hidden", r"'\.hidden'.*starts with a dot"),
            ("dotdot", "a..b", r"'a\.\.b'.*contains '\.\.'"),
            ("trailing-space", "model ", r"'model '.*ends with whitespace"),
            ("leading-space", " model", r"starts with whitespace"),
            ("empty", "", r"''.*is empty"),
            ("too-long", "x" * 101, r"101 characters \(at most 100\)"),
            ("not-str", 7, r"7: it is of type int, not a string"),
            ("reserved", "nul", r"'nul'.*reserved device name"),
            ("non-ascii", "modèle", r"contains 'è'"),
        )
    ],
    (
        "library-trash-keep",
        lambda t, b: lambda: ModelLibrary(t, trash_keep=0),
        InputError,
        r"trash_keep=0",
    ),
    (
        "library-trash-max-bytes",
        lambda t, b: lambda: ModelLibrary(t, trash_max_bytes=-1),
        InputError,
        r"trash_max_bytes=-1",
    ),
    (
        "library-root-is-file",
        lambda t, b: lambda: ModelLibrary(existing(t, "lib.txt")),
        InputError,
        r"root '.*lib\.txt' is a file",
    ),
    ("library-root-type", lambda t, b: lambda: ModelLibrary(5), InputError, r"root must be"),
    (
        "library-save-not-a-model",
        lambda t, b: lambda: library(t).save("m.nbseg", "x"),
        InputError,
        r"model must be an nbseg\.Model, got str",
    ),
    (
        "library-save-overwrite-not-bool",
        lambda t, b: lambda: library(t).save(tiny(), "m", overwrite="yes"),
        InputError,
        r"overwrite must be True or False, got 'yes'",
    ),
    (
        "library-save-taken",
        lambda t, b: lambda: library(t).save(tiny(), "m"),
        ModelFileError,
        r"already holds a model 'm'.*overwrite=True",
    ),
    (
        "library-load-missing",
        lambda t, b: lambda: library(t).load("missing"),
        ModelFileError,
        r"No model 'missing'",
    ),
    (
        "library-restore-missing",
        lambda t, b: lambda: library(t).restore("nothing"),
        ModelFileError,
        r"No model 'nothing' in the trash",
    ),
    (
        "library-export-existing",
        lambda t, b: lambda: library(t).export("m", existing(t, "out.nbseg")),
        InputError,
        r"out\.nbseg' already exists; pass overwrite=True",
    ),
    (
        "library-export-path-none",
        lambda t, b: lambda: library(t).export("m", None),
        InputError,
        r"export: path must be",
    ),
    (
        "library-import-bad-meta",
        lambda t, b: lambda: library(t).import_(crafted(t, b, setk("history", 3))),
        ModelFileError,
        r"field 'history' is an integer",
    ),
    # -- exports -----------------------------------------------------------------------------
    (
        "torchscript-existing",
        lambda t, b: lambda: export_torchscript(tiny(), existing(t, "m.pt")),
        InputError,
        r"m\.pt' already exists; pass overwrite=True",
    ),
    (
        "onnx-existing",
        lambda t, b: lambda: export_onnx(tiny(), existing(t, "m.onnx")),
        InputError,
        r"m\.onnx' already exists; pass overwrite=True",
    ),
    (
        "onnx-folder",
        lambda t, b: lambda: export_onnx(tiny(), t, overwrite=True),
        InputError,
        r"export_onnx: .* is a folder",
    ),
    (
        "torchscript-overwrite-not-bool",
        lambda t, b: lambda: export_torchscript(tiny(), t / "m.pt", overwrite="no"),
        InputError,
        r"overwrite must be True or False, got 'no'",
    ),
    # -- the command line --------------------------------------------------------------------
    (
        "cli-export-existing",
        lambda t, b: [
            "export",
            str(tiny().save(t / "m.nbseg")),
            "--format",
            "torchscript",
            str(existing(t, "m.pt")),
        ],
        CLI,
        r"m\.pt' already exists; pass --overwrite",
    ),
    (
        "cli-models-export-existing",
        lambda t, b: [
            "models",
            "--root",
            str(library(t).root),
            "export",
            "m",
            str(existing(t, "copy.nbseg")),
        ],
        CLI,
        r"copy\.nbseg' already exists; pass --overwrite",
    ),
    (
        "cli-models-info-bad-meta",
        lambda t, b: [
            "models",
            "--root",
            str(t),
            "info",
            crafted(t, b, setsub("normalisation", "high", [-1.0])).stem,
        ],
        CLI,
        r"field 'normalisation\.high\[0\]'",
    ),
    (
        "cli-models-import-bad-meta",
        lambda t, b: [
            "models",
            "--root",
            str(t / "lib"),
            "import",
            str(crafted(t, b, setk("class_colors", ["#000000", "#zzzzzz"]))),
        ],
        CLI,
        r"field 'class_colors\[1\]'",
    ),
    (
        "cli-models-rename-bad-name",
        lambda t, b: ["models", "--root", str(library(t).root), "rename", "m", "a/b"],
        CLI,
        r"Invalid model name 'a/b': it contains the path separator",
    ),
    (
        "cli-export-bad-meta",
        lambda t, b: [
            "export",
            str(crafted(t, b, setk("history", [{"epoch": True}]))),
            "--format",
            "onnx",
            str(t / "m.onnx"),
        ],
        CLI,
        r"field 'history\[0\]\.epoch' is True",
    ),
]


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("build", "expected", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_named(build, expected, pattern, tmp_path, base, capsys):
    target = build(tmp_path, base)
    if expected == CLI:
        capsys.readouterr()
        assert main(target) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nbseg: error: "), captured.err
        assert "Traceback" not in captured.err
        assert re.search(pattern, lines[0]), lines[0]
        return
    with pytest.raises(expected) as info:
        target()
    assert re.search(pattern, str(info.value)), str(info.value)
    assert type(info.value).__module__.startswith("nbseg"), type(info.value)
