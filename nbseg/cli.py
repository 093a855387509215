"""The ``nbseg`` command line.

::

    nbseg train CONFIG.yaml [--devices N] [--num-nodes N] [--strategy ddp|ddp_spawn|auto]
                            [--accelerator cpu|gpu|auto] [--out PATH] [--SETTING VALUE ...]
                            [--unlabelled PATH [PATH ...]]
    nbseg segment MODEL INPUT OUTPUT [--mask MASK] [--overlap 0.25] [--batch-size 8] [--tta]
                                     [--overwrite] [--uncertainty U.zarr]
    nbseg suggest MODEL INPUT [--labels L] [--mask M] [--count 3] [--axis z] [--regions N]
    nbseg models [--root DIR] list|info|rename|duplicate|delete|restore|trash|empty-trash|
                              export|import ...
    nbseg export MODEL --format torchscript|onnx|bioimageio OUT [--overwrite]
                       [--author NAME ...] [--license SPDX] [--sample IMAGE]

``MODEL`` is a ``.nbseg`` file or the name of a model in the library (``$NBSEG_MODELS`` or
``~/.nbseg/models``, or ``--root``). Inputs are any file :func:`nbseg.open_image` reads (OME-Zarr,
zarr, TIFF stacks, a folder or glob of slices, HDF5, NIfTI, MRC, netCDF, ``.npy``;
``path.zarr:variable`` / ``path.h5:dataset`` picks an array of a file); outputs ``.ome.zarr``
(an OME-Zarr label image), ``.zarr``, ``.tif``, ``.nii.gz``, ``.nc`` or ``.npy``. Errors print one line
``nbseg: error: ...`` and exit with status 1 (2 for a bad command line).

``nbseg train --devices 2 --strategy ddp`` trains with Lightning's DDP (one process per device;
gloo on CPU); the processes are started by Lightning re-running the same command, and only
global rank 0 prints and saves the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from ._version import __version__
from .config import ConfigError, TrainerOptions, load_config, open_unlabelled, unlabelled_refs
from .errors import InputError, NbsegError, ParamsError
from .inference.sliding import segment
from .inference.uncertainty import suggest_regions, suggest_slices, uncertainty
from .io import (
    ARRAY_SUFFIXES,
    array_suffix,
    check_output_path,
    check_overwrite,
    read_array,
    write_array,
)
from .model import Model, load_model
from .progress import Progress
from .settings import add_arguments, parsed_overrides
from .store.export import example_input, export_bioimageio, export_onnx, export_torchscript
from .store.library import ModelLibrary
from .training.callbacks import TrainingListener
from .training.fingerprint import plan_training
from .training.params import TrainingParams
from .training.run import TrainingInterrupted

#: How the command line allows replacing an existing output.
HOW = "pass --overwrite"


class CliError(NbsegError):
    """An error reported as one line on stderr (exit status 1)."""


def _rank() -> int:
    """This process's global rank under a Lightning multi-process launch (0 otherwise)."""
    for key in ("RANK", "GLOBAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    world_local = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    return node * world_local + local if world_local else local


def _print(*args: Any) -> None:
    print(*args, flush=True)


# -- train -----------------------------------------------------------------------------------
def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record.get('epoch', '?')}/{epochs}"]
    for key in ("loss", "val_loss", "val_dice", "val_iou", "val_accuracy", "lr"):
        v = record.get(key)
        if isinstance(v, float):
            parts.append(f"{key} {v:.4g}")
    if record.get("checkpoint"):
        parts.append("checkpoint")
    if isinstance(record.get("epoch_time"), float):
        parts.append(f"({record['epoch_time']:.1f} s)")
    return "  ".join(parts)


def _printer(epochs: int) -> TrainingListener:

    class EpochPrinter(TrainingListener):
        def on_train_start(self, info: dict[str, Any]) -> None:
            self.epochs = epochs + int(info.get("first_epoch", 1)) - 1
            _print(
                f"training: {info.get('steps_per_epoch')} batches per epoch, classes "
                f"{info.get('class_names')}"
            )

        def on_epoch_end(self, record: dict[str, Any], feedback: Any) -> None:
            _print(_epoch_line(record, getattr(self, "epochs", epochs)))

    return EpochPrinter()


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied (nested mappings merged)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _config_error(err: NbsegError, path: str) -> str:
    """A config error in one line; a YAML syntax error as its line, column and problem."""
    cause = err.__context__
    if isinstance(cause, yaml.MarkedYAMLError) and cause.problem_mark is not None:
        mark = cause.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        context = ""
        if cause.context and cause.context_mark is not None:
            context = f" ({cause.context} at line {cause.context_mark.line + 1})"
        return f"{path!r} is not valid YAML: {where}: {cause.problem}{context}."
    return str(err)


def _load_config(path: str) -> Any:
    if Path(path).is_dir():
        raise CliError(f"CONFIG {path!r} is a folder; give the training config file (YAML).")
    try:
        return load_config(path)
    except NbsegError as err:
        raise CliError(_config_error(err, path)) from None
    except OSError as err:
        raise CliError(f"Cannot read the config {path!r}: {err.strerror or err}.") from None


def _unlabelled_option(values: Sequence[str]) -> list[list[Any]]:
    """``--unlabelled PATH ...``: one image per PATH; the inputs of one image of a model of
    several inputs joined by commas (``a_ct.tif,a_mri.tif``). Relative paths are relative to
    the working directory (not to the config's folder)."""

    def absolute(ref: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(ref, dict):
            return {**ref, "path": os.path.abspath(os.path.expanduser(ref["path"]))}
        return os.path.abspath(os.path.expanduser(ref))

    items: list[Any] = []
    for text in values:
        parts = [_array_ref(t) for t in text.split(",") if t.strip()] if "," in text else []
        items.append([absolute(r) for r in parts] if parts else absolute(_array_ref(text)))
    return unlabelled_refs(items, "--unlabelled")


def cmd_train(args: argparse.Namespace) -> int:

    cfg = _load_config(args.config)
    try:
        trainer = parsed_overrides(args, TrainerOptions)
        if trainer:
            merged = {**dataclasses.asdict(cfg.trainer), **trainer}
            cfg.trainer = TrainerOptions(**merged).check("command line")
        params = parsed_overrides(args, TrainingParams)
        if params:
            cfg.params = TrainingParams.from_dict(_merged(cfg.params.to_dict(), params))
    except NbsegError as err:
        raise CliError(str(err)) from None
    unlabelled_refs_given = None
    if args.unlabelled is not None:
        try:
            unlabelled_refs_given = _unlabelled_option(args.unlabelled)
        except ConfigError as err:
            raise CliError(str(err)) from None
    out = Path(args.out) if args.out else cfg.output_path()
    if out is None:
        raise CliError(
            f"{args.config}: no output model path; set 'output:' in the config or pass --out."
        )
    if out.suffix == "":
        out = out.with_suffix(".nbseg")
    rank0 = _rank() == 0
    model = cfg.build_model()
    if cfg.spec is not None and model.spec.name == "model":
        model.spec.name = out.stem  # a new model is named after its file
    unlabelled = None  # the config's unlabelled: unless --unlabelled replaces it
    if unlabelled_refs_given is not None:
        try:
            unlabelled = open_unlabelled(
                unlabelled_refs_given, None, "--unlabelled", model.spec.input_count
            )
        except NbsegError as err:
            raise CliError(str(err)) from None
    if args.plan is not None:
        kw = cfg.trainer.trainer_kwargs()
        several = kw.get("devices", 1) not in (1, "1", None, "auto") or kw.get("num_nodes", 1) > 1
        if several or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise CliError(
                "--plan times training steps on one device, and several processes would plan "
                "different epochs: plan on one device (nbseg train CFG --plan M) and pass the "
                "planned values to the multi-device run."
            )
        validation = cfg.build_validation()
        try:
            plan = plan_training(
                cfg.build_training_sets(),
                model.spec,
                cfg.params,
                budget_minutes=args.plan,
                validation=validation if isinstance(validation, float) else 0.0,
            )
            planned = plan.params
            if params:  # the explicit flags win over the plan
                planned = TrainingParams.from_dict(_merged(planned.to_dict(), params))
        except NbsegError as err:
            raise CliError(f"--plan: {err}") from None
        cfg.params = planned
        if rank0:
            for line in plan.describe().splitlines():
                _print(f"plan: {line}")
    if rank0:
        _print(f"model: {model!r}")
        kw = cfg.trainer.trainer_kwargs()
        if kw:
            _print(f"trainer: {kw}")
    t0 = time.perf_counter()
    # a terminal shows no feedback image: skip its prediction after every epoch
    printer = [_printer(cfg.params.epochs)] if rank0 else []
    try:
        result = cfg.run(callbacks=printer, model=model, feedback=False, unlabelled=unlabelled)
    except (InputError, ParamsError) as err:  # refused before training: name the config too
        text, name = str(err), str(Path(args.config))
        raise CliError(text if name in text else f"{name!r}: {text}") from None
    except TrainingInterrupted as stop:  # Ctrl+C: keep the completed epochs, like Stop
        result = stop.result
        if result.extra.get("global_rank", 0) != 0:
            return 130
        epochs = len(result.history)
        if epochs == 0 or not result.model.trained:
            print("nbseg: interrupted before the first epoch ended; nothing saved", file=sys.stderr)
            return 130
        path = result.model.save(out)
        teacher = f"; {result.teacher_text}" if result.teacher_text else ""
        print(
            f"nbseg: interrupted; saved the model with {epochs} completed epochs to {path}"
            f"{teacher}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    if result.extra.get("global_rank", 0) != 0:
        return 0  # a DDP worker: rank 0 reports and saves
    path = result.model.save(out)
    _print(
        f"{result.status}: {len(result.history)} epochs in {time.perf_counter() - t0:.1f} s "
        f"(world size {result.extra.get('world_size', 1)}); best epoch {result.best_epoch}; "
        f"saved {path}" + (f"; {result.teacher_text}" if result.teacher_text else "")
    )
    return 0


# -- segment ---------------------------------------------------------------------------------
def _library(args: argparse.Namespace) -> ModelLibrary:

    return ModelLibrary(getattr(args, "root", None))


def _open_model(ref: str, args: argparse.Namespace) -> Model:
    """A model from a file path, else from the library by name."""

    p = Path(ref)
    if p.is_file():
        return load_model(p)
    lib = _library(args)
    try:
        if lib.exists(ref):
            return lib.load(ref)
    except NbsegError:
        pass
    raise CliError(
        f"No model file {ref!r} and no model of that name in the library {str(lib.root)!r}."
    )


def _array_ref(text: str) -> str | dict[str, str]:
    """``path`` or ``path.zarr:variable`` / ``path.nc:variable`` / ``path.h5:dataset``."""
    for suffix in (".zarr:", ".nc:", ".h5:", ".hdf5:", ".hdf:"):
        if suffix in text:
            path, variable = text.split(suffix, 1)
            return {"path": path + suffix[:-1], "variable": variable}
    return text


def cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    out = Path(args.output)
    suffix = array_suffix(out)
    if suffix is None:
        raise CliError(f"{str(out)!r}: write the labels as {', '.join(ARRAY_SUFFIXES)}.")
    # refuse before any work: an existing output without --overwrite, an output in an input
    check_overwrite(out, args.overwrite, how="pass --overwrite")
    refs = [_array_ref(args.input)] + ([_array_ref(args.mask)] if args.mask else [])
    check_output_path(out, refs)
    unc_out = Path(args.uncertainty) if getattr(args, "uncertainty", None) else None
    if unc_out is not None:
        if array_suffix(unc_out) is None:
            raise CliError(
                f"--uncertainty {str(unc_out)!r}: write it as {', '.join(ARRAY_SUFFIXES)}."
            )
        if unc_out.expanduser().resolve() == out.expanduser().resolve():
            raise CliError("--uncertainty: give a path other than OUTPUT.")
        check_overwrite(unc_out, args.overwrite, how="pass --overwrite")
        check_output_path(unc_out, refs)
    model = _open_model(args.model, args)
    image = _read_option("INPUT", refs[0])
    mask = _read_option("--mask", refs[1]) if args.mask else None
    if mask is not None and mask.dtype != bool:
        mask = mask != 0
    last = [0.0]

    def progress(p: Progress) -> None:  # tiles in memory, chunks streaming
        now = time.perf_counter()
        if now - last[0] > 2 or p.finished:
            last[0] = now
            _print(f"{p.unit}s {p.done}/{p.total}")

    t0 = time.perf_counter()
    kw: dict[str, Any] = dict(
        overlap=args.overlap, batch_size=args.batch_size, progress=progress, tta=args.tta
    )
    if args.device:
        kw["device"] = args.device
    if suffix in (".zarr", ".ome.zarr") and _streaming_available():
        # streamed chunk by chunk into the store: the volume never has to fit in memory
        labels = segment(model, image, mask, out=str(out), overwrite=args.overwrite, **kw)
        _print(f"segmented {tuple(labels.shape)} in {time.perf_counter() - t0:.1f} s -> {out}")
        if unc_out is not None:  # a second streamed pass: memory stays flat
            u = uncertainty(
                model,
                image,
                mask,
                progress=progress,
                **{k: v for k, v in kw.items() if k != "progress"},
                **_unc_target(unc_out, args.overwrite),
            )
            if array_suffix(unc_out) != ".zarr":
                write_array(u, unc_out, overwrite=args.overwrite, name="uncertainty")
            _print(f"uncertainty -> {unc_out}")
        return 0
    data = image.load() if hasattr(image, "load") else image
    if unc_out is not None:  # one pass: labels and uncertainty from the same probabilities
        labels, u = segment(model, data, mask, return_uncertainty=True, **kw)
        write_array(u, unc_out, overwrite=args.overwrite, name="uncertainty")
    else:
        labels = segment(model, data, mask, **kw)
    write_array(labels, out, overwrite=args.overwrite, name="labels")
    values = np.asarray(labels.values)
    counts = {name: int((values == i).sum()) for i, name in enumerate(model.class_names)}
    _print(
        f"segmented {tuple(labels.shape)} in {time.perf_counter() - t0:.1f} s -> {out}; "
        f"voxels per class {counts}"
    )
    return 0


def _unc_target(path: Path, overwrite: bool) -> dict[str, Any]:
    """``uncertainty()`` keywords that stream into ``path`` when it is a zarr store."""
    if array_suffix(path) == ".zarr":
        return {"out": str(path), "overwrite": overwrite}
    return {}


def cmd_suggest(args: argparse.Namespace) -> int:
    model = _open_model(args.model, args)
    image = _read_option("INPUT", _array_ref(args.input))
    labels = _read_option("--labels", _array_ref(args.labels)) if args.labels else None
    mask = _read_option("--mask", _array_ref(args.mask)) if args.mask else None
    if mask is not None and mask.dtype != bool:
        mask = mask != 0
    image = image.load() if hasattr(image, "load") else image
    slices = suggest_slices(
        model, image, labels, count=args.count, axis=args.axis, mask=mask, method=args.method
    )
    _print(f"label next ({args.axis}): " + ", ".join(str(i) for i in slices))
    if args.regions:
        for r in suggest_regions(
            model, image, labels, count=args.regions, size=args.size, mask=mask, method=args.method
        ):
            _print(f"  z {r.z}  y {r.y0}:{r.y1}  x {r.x0}:{r.x1}  score {r.score:.3f}")
    return 0


def _read_option(option: str, ref: Any) -> Any:
    """``read_array`` with its errors naming the command-line argument."""
    try:
        return read_array(ref)
    except NbsegError as err:
        raise CliError(f"{option}: {err}") from None


def _streaming_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nbseg.inference.stream") is not None


# -- models ----------------------------------------------------------------------------------
def _fmt_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_models(args: argparse.Namespace) -> int:
    import json

    lib = _library(args)
    op = args.op
    if op in ("list", "trash"):
        rows = lib.list() if op == "list" else lib.trash()
        if not rows:
            _print(f"({'no models' if op == 'list' else 'trash empty'} in {lib.root})")
        for r in rows:
            state = "?" if r.error else (f"{r.epochs} epochs" if r.trained else "untrained")
            _print(
                f"{r.name:30s} {r.architecture:16s} {r.input_dimension:5s} "
                f"{len(r.classes)} classes  {state:11s} {_fmt_size(r.size):>9s}  {r.updated}"
                + (f"  ERROR {r.error}" if r.error else "")
            )
        if op == "trash":
            _print(f"({lib.trash_policy})")
        return 0
    if op == "info":
        row = lib.info(args.name)
        meta = lib.metadata(args.name)
        info = row.to_dict()
        info.update(spec=meta.get("spec"), normalisation=meta.get("normalisation"))
        info["params"] = meta.get("params")
        info["last_epoch"] = (meta.get("history") or [None])[-1]
        _print(json.dumps(info, indent=2, default=str))
        return 0
    if op == "rename":
        _print(f"renamed -> {lib.rename(args.name, args.new)}")
    elif op == "duplicate":
        _print(f"duplicated -> {lib.duplicate(args.name, args.new)}")
    elif op == "delete":
        _print(f"moved to the trash: {lib.delete(args.name)} (nbseg models restore {args.name!r})")
    elif op == "restore":
        _print(f"restored -> {lib.restore(args.name, args.new)}")
    elif op == "empty-trash":
        _print(f"removed {lib.empty_trash()} trashed model(s) for good")
    elif op == "export":
        target = check_overwrite(lib.export_target(args.name, args.path), args.overwrite, how=HOW)
        _print(f"exported -> {lib.export(args.name, target, overwrite=args.overwrite)}")
    elif op == "import":
        _print(f"imported -> {lib.import_(args.path, args.name, overwrite=args.overwrite)}")
    return 0


# -- export ----------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:

    check_overwrite(args.out, args.overwrite, how=HOW)  # refused before any work
    if args.format != "bioimageio" and (args.author or args.license or args.sample):
        raise CliError("--author, --license and --sample apply to --format bioimageio only.")
    model = _open_model(args.model, args)
    t0 = time.perf_counter()
    if args.format == "bioimageio":
        if args.patch_size:
            raise CliError("--patch-size does not apply to --format bioimageio (the window does).")
        sample = read_array(args.sample) if args.sample else None
        path = export_bioimageio(
            model,
            args.out,
            authors=args.author or None,
            license=args.license or "MIT",
            sample=sample,
            overwrite=args.overwrite,
        )
        _print(
            f"exported {model.spec.name!r} as a bioimage.io package -> {path} (test tensors, "
            f"TorchScript and ONNX weights checked; {time.perf_counter() - t0:.1f} s)"
        )
        return 0
    example = example_input(model, args.patch_size) if args.patch_size else None
    fn = export_onnx if args.format == "onnx" else export_torchscript
    path = fn(model, args.out, example=example, overwrite=args.overwrite)
    _print(
        f"exported {model.spec.name!r} as {args.format} -> {path} (checked against the network; "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return 0


# -- parser ----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Command-line mistakes as one ``nbseg: error:`` line (exit status 2), not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nbseg: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:

    p = _Parser(prog="nbseg", description="Train and apply deep semantic-segmentation models.")
    p.add_argument("--version", action="version", version=f"nbseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train from a YAML config")
    t.add_argument("config", help="training config (YAML); see nbseg.config")
    # one flag per setting, from the declarations (nbseg.settings): --devices, --strategy, ...
    # for the trainer; --epochs, --learning-rate, --augmentation.flip, ... for the params
    add_arguments(t, TrainerOptions, title="trainer (overrides 'trainer:')")
    add_arguments(t, TrainingParams, title="training parameters (override 'params:')")
    t.add_argument("--out", help="output model file (overrides 'output:')")
    t.add_argument(
        "--unlabelled",
        nargs="+",
        metavar="PATH",
        help="images without labels to learn from too (pseudo-labels; overrides "
        "'unlabelled:'): any file nbseg.open_image reads, path.zarr:variable for an array of a "
        "file; for a model of several inputs join one image's inputs with commas "
        "(a_ct.tif,a_mri.tif)",
    )
    t.add_argument(
        "--plan",
        type=float,
        metavar="MINUTES",
        help="plan patch size, batch size, epochs, time budget and rare-class sampling from the "
        "data and this machine for a budget of MINUTES (nbseg.plan_training): the plan replaces "
        "those five values of the config's params; the flags above still override the plan "
        "(one device only)",
    )
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("segment", help="segment a volume with a model")
    s.add_argument("model", help="a .nbseg file or a library model name")
    s.add_argument(
        "input",
        help="image: .ome.zarr, .zarr[:var], .tif (stack), a slice folder or glob, .h5[:dataset], "
        ".nii.gz, .mrc, .nc[:var], .npy",
    )
    s.add_argument("output", help="labels file (.ome.zarr, .zarr, .tif, .nii.gz, .nc, .npy)")
    s.add_argument("--mask", help="mask file: only voxels inside are segmented (-1 outside)")
    s.add_argument("--overlap", type=float, default=0.25, help="tile overlap (default 0.25)")
    s.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over flips of each tile (4x/8x slower)",
    )
    s.add_argument("--batch-size", type=int, default=8, dest="batch_size")
    s.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    s.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUTPUT (refused otherwise)"
    )
    s.add_argument(
        "--uncertainty",
        metavar="PATH",
        help="also write the uncertainty map (float32 in [0, 1], same geometry) to PATH",
    )
    s.add_argument("--root", help="model library folder")
    s.set_defaults(fn=cmd_segment)

    g = sub.add_parser("suggest", help="the slices (and boxes) most worth labelling next")
    g.add_argument("model", help="a .nbseg file or a library model name")
    g.add_argument("input", help="image file (any format nbseg.open_image reads)")
    g.add_argument("--labels", help="the multi-ROI so far: its labelled slices are skipped")
    g.add_argument("--mask", help="mask file: suggestions only inside it")
    g.add_argument("--count", type=int, default=3, help="how many slices (default 3)")
    g.add_argument("--axis", default="z", help="the dim the slices cut (default z)")
    g.add_argument(
        "--method", default="entropy", choices=("entropy", "margin", "tta"), help="uncertainty"
    )
    g.add_argument("--regions", type=int, default=0, help="also list N boxes worth painting")
    g.add_argument("--size", type=int, default=64, help="box side for --regions (default 64)")
    g.add_argument("--root", help="model library folder")
    g.set_defaults(fn=cmd_suggest)

    m = sub.add_parser("models", help="the model library")
    m.add_argument("--root", help="library folder (default $NBSEG_MODELS or ~/.nbseg/models)")
    ops = m.add_subparsers(dest="op", required=True, metavar="OP")
    ops.add_parser("list", help="list the models")
    ops.add_parser("trash", help="list the trashed models")
    ops.add_parser("empty-trash", help="delete the trashed models for good")
    for name, helptext, extra in (
        ("info", "show a model's metadata", ()),
        ("rename", "rename a model", ("new",)),
        ("duplicate", "copy a model under a new name", ("new?",)),
        ("delete", "move a model to the trash", ()),
        ("restore", "bring a model back from the trash", ("new?",)),
        ("export", "write a model as one portable .nbseg file", ("path",)),
    ):
        op = ops.add_parser(name, help=helptext)
        op.add_argument("name")
        for arg in extra:
            if arg.endswith("?"):
                op.add_argument(arg[:-1], nargs="?", default=None)
            else:
                op.add_argument(arg)
        if name == "export":
            op.add_argument(
                "--overwrite",
                action="store_true",
                help="replace an existing file (refused otherwise)",
            )
    imp = ops.add_parser("import", help="validate a .nbseg file and add it")
    imp.add_argument("path")
    imp.add_argument("name", nargs="?", default=None)
    imp.add_argument("--overwrite", action="store_true", help="replace (old one to the trash)")
    m.set_defaults(fn=cmd_models)

    e = sub.add_parser(
        "export", help="export a model as TorchScript, ONNX or a bioimage.io package"
    )
    e.add_argument("model", help="a .nbseg file or a library model name")
    e.add_argument("--format", choices=("torchscript", "onnx", "bioimageio"), required=True)
    e.add_argument("out", help="output file (.pt / .onnx / .zip for bioimageio)")
    e.add_argument(
        "--author",
        action="append",
        help="bioimageio: an author's name (repeat for several; default 'nbseg user')",
    )
    e.add_argument("--license", help="bioimageio: SPDX license of the weights (default MIT)")
    e.add_argument(
        "--sample", help="bioimageio: image whose centre window is the test input and cover"
    )
    e.add_argument("--patch-size", type=int, dest="patch_size", help="example input size")
    e.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUT (refused otherwise)"
    )
    e.add_argument("--root", help="model library folder")
    e.set_defaults(fn=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 = success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except NbsegError as err:
        _error(str(err))
        return 1
    except KeyboardInterrupt:
        print("nbseg: interrupted", file=sys.stderr, flush=True)
        return 130
    except (OSError, ValueError, RuntimeError) as err:
        _error(f"{type(err).__name__}: {err}")
        return 1
    except Exception as err:  # a bug: still one line, the traceback only when asked
        if os.environ.get("NBSEG_DEBUG"):
            raise
        _error(
            f"unexpected {type(err).__name__}: {err} (please report it; NBSEG_DEBUG=1 shows "
            "the traceback)"
        )
        return 1


def _error(message: str) -> None:
    """One ``nbseg: error:`` line on stderr, whatever the message holds."""
    print(f"nbseg: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
