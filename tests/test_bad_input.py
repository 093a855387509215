"""Every bad input named (issue 17): a clear nbseg error or a correct result, never a library
traceback.

One matrix over the API (TrainingSet, train, segment, preview, evaluate, the settings
objects, read_array), the training config files and the command line. Each case asserts the
exception type (or the exit status and one ``nbseg: error:`` line on stderr, no traceback) and
that the message names the offending argument. Every case is fast: tiny models, 4 × 32 × 32
images, and all of them fail before any training starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import nbseg
from nbseg.cli import main
from nbseg.config import ConfigError, load_config
from nbseg.data.augment import AugmentationParams
from nbseg.errors import InputError, ParamsError, SpecError
from nbseg.inference.settings import InferenceSettings
from nbseg.io import read_array
from nbseg.training.callbacks import FeedbackRegion

from .helpers import blobs, ready_model

TINY = {"filters": 4, "depth": 2}


def tiny_model(dim="2D", **kw):
    params = kw.pop("parameters", TINY)
    return nbseg.generate_model(nbseg.ModelSpec(input_dimension=dim, parameters=params, **kw))


def params(**kw):
    return nbseg.TrainingParams(**{"epochs": 1, "batch_size": 2, "patch_size": 16, **kw})


IMAGE, LABELS, TRUTH = blobs((4, 32, 32), labelled=(1, 2))
MASK = xr.ones_like(IMAGE, dtype=bool)


def ts(**kw):
    return nbseg.TrainingSet(**{"inputs": IMAGE, "output": LABELS, **kw})


def ready(dim="2D", **kw):
    return ready_model(dim, **kw)


# -- the API ---------------------------------------------------------------------------------
def _numpy_labels():
    return np.asarray(LABELS.values)


def _labels_with(class_id):
    return xr.DataArray(np.where(LABELS.values == 1, class_id, LABELS.values), dims=LABELS.dims)


API_CASES = [
    # TrainingSet: dims by name, types, geometry, values
    ("ts-dim_0", lambda: ts(inputs=xr.DataArray(IMAGE.values)), InputError, r"rename\(\{'dim_0'"),
    ("ts-time-dim", lambda: ts(inputs=IMAGE.rename(z="t")), InputError, r"\['t'\].*'t': 'z'"),
    ("ts-labels-dim_0", lambda: ts(output=xr.DataArray(_numpy_labels())), InputError, "output"),
    ("ts-labels-channel", lambda: ts(output=LABELS.rename(z="c")), InputError, "output.*'c'"),
    ("ts-mask-channel", lambda: ts(mask=MASK.rename(z="c")), InputError, "mask.*'c'"),
    ("ts-image-cyx", lambda: ts(inputs=IMAGE.rename(z="c")), InputError, "'c' dim of size 4"),
    ("ts-complex", lambda: ts(inputs=IMAGE.astype(complex)), InputError, "input 0 is complex"),
    ("ts-complex-mask", lambda: ts(mask=MASK.astype(complex)), InputError, "mask is complex"),
    ("ts-path", lambda: ts(inputs="image.npy"), InputError, r"input 0 .*read_array\('image"),
    ("ts-none", lambda: ts(inputs=None), InputError, "input 0 must be an array"),
    ("ts-empty-list", lambda: ts(inputs=[]), InputError, "no input given"),
    ("ts-4d", lambda: ts(inputs=np.zeros((2, 4, 32, 32))), InputError, r"input 0 .*\(2, 4"),
    ("ts-object", lambda: ts(inputs=IMAGE.astype(object)), InputError, "input 0 has dtype obj"),
    ("ts-text-labels", lambda: ts(output=LABELS.astype(str)), InputError, "output has dtype"),
    ("ts-float-labels", lambda: ts(output=LABELS + 0.5), InputError, "non-integer"),
    ("ts-labels-shape", lambda: ts(output=LABELS[:2]), InputError, "output multi-ROI has shape"),
    ("ts-mask-shape", lambda: ts(mask=MASK[:, :16]), InputError, "mask has shape"),
    ("ts-inputs-shape", lambda: ts(inputs=[IMAGE, IMAGE[:2]]), InputError, "input 1 has shape"),
    ("ts-negative-ids", lambda: ts(output=_labels_with(-5)), InputError, "output has negative"),
    (
        "ts-nan",
        lambda: ts(inputs=IMAGE.where(IMAGE > 0, np.nan).where(IMAGE.z > 0)).validate(),
        InputError,
        "input 0 holds .* NaN",
    ),
    (
        "ts-nan-mask",
        lambda: ts(mask=xr.full_like(IMAGE, np.nan)).validate(),
        InputError,
        "mask holds .* NaN",
    ),
    ("ts-unlabelled", lambda: ts(output=LABELS * 0 - 1).validate(), InputError, "no labelled"),
    ("ts-class-id", lambda: ts(output=_labels_with(3)).validate(1, 2), InputError, "class id 3"),
    (
        "ts-class-unnamed",
        lambda: ts(output=LABELS.where(LABELS != 1, 3)),
        InputError,
        "output holds",
    ),
    ("ts-input-count", lambda: ts().validate(2, 2), InputError, "takes 2 input"),
    # train: arguments, then the geometry against the network, all before training starts
    (
        "train-validation-bool",
        lambda: nbseg.train(tiny_model(), ts(), params(), True),
        InputError,
        "validation=True",
    ),
    (
        "train-validation-range",
        lambda: nbseg.train(tiny_model(), ts(), params(), 1.5),
        InputError,
        "validation=1.5",
    ),
    (
        "train-validation-text",
        lambda: nbseg.train(tiny_model(), ts(), params(), "a"),
        InputError,
        "validation",
    ),
    (
        "train-params-dict",
        lambda: nbseg.train(tiny_model(), ts(), {"epochs": 1}),
        InputError,
        "params=",
    ),
    ("train-no-sets", lambda: nbseg.train(tiny_model(), [], params()), InputError, "training_sets"),
    (
        "train-image-as-set",
        lambda: nbseg.train(tiny_model(), IMAGE, params()),
        InputError,
        "training_sets",
    ),
    (
        "train-model-path",
        lambda: nbseg.train("model.nbseg", ts(), params()),
        InputError,
        "model must be an nbseg.Model",
    ),
    (
        "train-3d-on-2d",
        lambda: nbseg.train(tiny_model("3D"), ts(inputs=IMAGE[1], output=LABELS[1]), params()),
        InputError,
        "3D model needs volumes",
    ),
    (
        "train-patch-33-depth-4",
        lambda: nbseg.train(
            tiny_model(parameters={"filters": 4, "depth": 4}), ts(), params(patch_size=33)
        ),
        ParamsError,
        r"patch_size=33 is not a multiple of 8 \(U-Net depth 4\): use 32 or 40",
    ),
    (
        "train-patch-tuple",
        lambda: nbseg.train(tiny_model(), ts(), params(patch_size=(16, 33))),
        ParamsError,
        r"patch_size=\(16, 33\).*use \(16, 32\) or \(16, 34\)",
    ),
    (
        "train-patch-too-large",
        lambda: nbseg.train(tiny_model(), ts(), params(patch_size=64)),
        InputError,
        "patch_size=64 is larger than the volume.*use patch_size=32",
    ),
    (
        "train-3d-patch-deeper-than-volume",
        lambda: nbseg.train(tiny_model("3D"), ts(), params()),
        InputError,
        r"along z \(16 > 4\); use patch_size=\(4, 16, 16\)",
    ),
    (
        "train-3d-cannot-shrink",
        lambda: nbseg.train(
            tiny_model("3D", parameters={"filters": 4, "depth": 4}), ts(), params(patch_size=None)
        ),
        InputError,
        r"4 voxels along z, fewer than the 8.*'depth': 3",
    ),
    (
        "train-3d-2d-patch",
        lambda: nbseg.train(tiny_model("3D"), ts(), params(patch_size=(16, 16))),
        ParamsError,
        r"patch_size=\(16, 16\) gives \(y, x\)",
    ),
    (
        "train-validation-set-too-small",
        lambda: nbseg.train(
            tiny_model(),
            ts(),
            params(patch_size=32),
            [ts(inputs=IMAGE[:, :16], output=LABELS[:, :16])],
        ),
        InputError,
        "patch_size=32 is larger than the volume",
    ),
    (
        "train-feedback-text",
        lambda: nbseg.train(tiny_model(), ts(), params(), feedback="a"),
        InputError,
        "feedback=",
    ),
    (
        "train-feedback-slice-text",
        lambda: nbseg.train(tiny_model(), ts(), params(), feedback=FeedbackRegion(slice_index="2")),
        InputError,
        "FeedbackRegion.slice_index='2'",
    ),
    (
        "train-feedback-box",
        lambda: nbseg.train(tiny_model(), ts(), params(), feedback=FeedbackRegion(box=(0, 8))),
        InputError,
        "FeedbackRegion.box",
    ),
    (
        "train-callbacks",
        lambda: nbseg.train(tiny_model(), ts(), params(), callbacks=[1]),
        InputError,
        "callbacks",
    ),
    (
        "train-trainer-kwargs-list",
        lambda: nbseg.train(tiny_model(), ts(), params(), trainer_kwargs=[1]),
        InputError,
        "trainer_kwargs",
    ),
    (
        "train-trainer-kwargs-unknown",
        lambda: nbseg.train(
            tiny_model(), ts(), params(), 0, feedback=False, trainer_kwargs={"foo": 1}
        ),
        InputError,
        "trainer_kwargs",
    ),
    (
        "train-stop-event",
        lambda: nbseg.train(tiny_model(), ts(), params(), stop_event=True),
        InputError,
        "stop_event",
    ),
    (
        "train-complex",
        lambda: nbseg.train(tiny_model(), [ts(inputs=IMAGE.astype(np.complex64))], params()),
        InputError,
        "complex",
    ),
    (
        "train-input-count",
        lambda: nbseg.train(tiny_model(input_count=2), ts(), params()),
        InputError,
        "takes 2 input",
    ),
    (
        "train-epochs-bool",
        lambda: nbseg.train(tiny_model(), ts(), params(epochs=True)),
        ParamsError,
        "epochs=True",
    ),
    (
        "train-batch-zero",
        lambda: nbseg.train(tiny_model(), ts(), params(batch_size=0)),
        ParamsError,
        "batch_size=0",
    ),
    (
        "train-lr-text",
        lambda: nbseg.train(tiny_model(), ts(), params(learning_rate="fast")),
        ParamsError,
        "learning_rate='fast'",
    ),
    (
        "train-class-weights",
        lambda: nbseg.train(tiny_model(), ts(), params(class_weights=[1.0])),
        ParamsError,
        "class_weights",
    ),
    # segment: the settings (declared in nbseg.inference.settings), the model, the inputs
    (
        "segment-overlap-text",
        lambda: nbseg.segment(ready(), IMAGE, overlap="a"),
        InputError,
        "overlap='a'",
    ),
    (
        "segment-overlap-one",
        lambda: nbseg.segment(ready(), IMAGE, overlap=1.0),
        InputError,
        "overlap=1.0",
    ),
    (
        "segment-batch-zero",
        lambda: nbseg.segment(ready(), IMAGE, batch_size=0),
        InputError,
        "batch_size=0",
    ),
    (
        "segment-batch-bool",
        lambda: nbseg.segment(ready(), IMAGE, batch_size=True),
        InputError,
        "batch_size=True",
    ),
    (
        "segment-window-zero",
        lambda: nbseg.segment(ready(), IMAGE, window=0),
        InputError,
        "window=0",
    ),
    (
        "segment-window-bool",
        lambda: nbseg.segment(ready(), IMAGE, window=True),
        InputError,
        "window=True",
    ),
    (
        "segment-3d-window-yx",
        lambda: nbseg.segment(ready("3D"), IMAGE, window=(32, 32)),
        InputError,
        r"window=\(32, 32\) gives \(y, x\)",
    ),
    ("segment-tta-text", lambda: nbseg.segment(ready(), IMAGE, tta="yes"), InputError, "tta='yes'"),
    (
        "segment-device",
        lambda: nbseg.segment(ready(), IMAGE, device="gpu"),
        InputError,
        "device='gpu'",
    ),
    (
        "segment-precision",
        lambda: nbseg.segment(ready(), IMAGE, precision="64"),
        InputError,
        "precision='64'",
    ),
    (
        "segment-blending",
        lambda: nbseg.segment(ready(), IMAGE, blending="max"),
        InputError,
        "blending='max'",
    ),
    (
        "segment-probabilities",
        lambda: nbseg.segment(ready(), IMAGE, probabilities="x"),
        InputError,
        "probabilities='x'",
    ),
    (
        "segment-settings-type",
        lambda: nbseg.segment(ready(), IMAGE, settings=3),
        InputError,
        "settings",
    ),
    (
        "segment-unknown-setting",
        lambda: nbseg.segment(ready(), IMAGE, windo=3),
        InputError,
        "windo",
    ),
    ("segment-untrained", lambda: nbseg.segment(tiny_model(), IMAGE), InputError, "untrained"),
    (
        "segment-model-path",
        lambda: nbseg.segment("model.nbseg", IMAGE),
        InputError,
        r"load_model\('model",
    ),
    (
        "segment-image-path",
        lambda: nbseg.segment(ready(), "image.npy"),
        InputError,
        r"image 0 .*read_array",
    ),
    (
        "segment-image-4d",
        lambda: nbseg.segment(ready(), np.zeros((2, 4, 32, 32))),
        InputError,
        r"image 0 .*\(2, 4",
    ),
    (
        "segment-complex",
        lambda: nbseg.segment(ready(), IMAGE.astype(complex)),
        InputError,
        "image 0 is complex",
    ),
    (
        "segment-nan",
        lambda: nbseg.segment(ready(), IMAGE.where(IMAGE.z > 0)),
        InputError,
        "image 0 holds .*NaN",
    ),
    (
        "segment-dim_0",
        lambda: nbseg.segment(ready(), xr.DataArray(IMAGE.values)),
        InputError,
        "image 0 has dims",
    ),
    ("segment-3d-on-2d", lambda: nbseg.segment(ready("3D"), IMAGE[0]), InputError, "3D model"),
    (
        "segment-two-images",
        lambda: nbseg.segment(ready(), [IMAGE, IMAGE]),
        InputError,
        "takes 1 input",
    ),
    (
        "segment-channels",
        lambda: nbseg.segment(ready(), xr.concat([IMAGE] * 3, "c")),
        InputError,
        "'c' dim of size 3",
    ),
    (
        "segment-mask-shape",
        lambda: nbseg.segment(ready(), IMAGE, mask=MASK[:2]),
        InputError,
        "mask has shape",
    ),
    (
        "segment-mask-complex",
        lambda: nbseg.segment(ready(), IMAGE, mask=MASK.astype(complex)),
        InputError,
        "mask is complex",
    ),
    (
        "segment-mask-dims",
        lambda: nbseg.segment(ready(), IMAGE, mask=MASK.rename(z="t")),
        InputError,
        "mask has dims",
    ),
    (
        "segment-mask-nan",
        lambda: nbseg.segment(ready(), IMAGE, mask=xr.full_like(IMAGE, np.nan)),
        InputError,
        "mask holds .*NaN",
    ),
    ("segment-out-type", lambda: nbseg.segment(ready(), IMAGE, out=3), InputError, "out"),
    # preview
    ("preview-index-text", lambda: nbseg.preview(ready(), IMAGE, "1"), InputError, "index='1'"),
    ("preview-index-float", lambda: nbseg.preview(ready(), IMAGE, 1.0), InputError, "index=1.0"),
    ("preview-index-bool", lambda: nbseg.preview(ready(), IMAGE, True), InputError, "index=True"),
    (
        "preview-index-range",
        lambda: nbseg.preview(ready(), IMAGE, 9),
        InputError,
        "index=9 is outside",
    ),
    ("preview-dim", lambda: nbseg.preview(ready(), IMAGE, 1, dim="q"), InputError, "dim='q'"),
    (
        "preview-mask-shape",
        lambda: nbseg.preview(ready(), IMAGE, 1, mask=MASK[:2]),
        InputError,
        "mask has shape",
    ),
    (
        "preview-overlap",
        lambda: nbseg.preview(ready(), IMAGE, 1, overlap=-1),
        InputError,
        "overlap=-1",
    ),
    (
        "preview-complex",
        lambda: nbseg.preview(ready(), IMAGE.astype(complex), 1),
        InputError,
        "complex",
    ),
    # evaluate
    (
        "evaluate-shape",
        lambda: nbseg.evaluate(TRUTH[:2], TRUTH),
        InputError,
        "prediction has shape",
    ),
    (
        "evaluate-complex",
        lambda: nbseg.evaluate(TRUTH.astype(complex), TRUTH),
        InputError,
        "prediction is complex",
    ),
    (
        "evaluate-fractional",
        lambda: nbseg.evaluate(TRUTH + 0.5, TRUTH),
        InputError,
        "prediction holds non-integer",
    ),
    (
        "evaluate-probabilities",
        lambda: nbseg.evaluate(nbseg.segment(ready(), IMAGE, probabilities=True), TRUTH),
        InputError,
        r"prediction has a 'class' dim.*argmax",
    ),
    ("evaluate-text", lambda: nbseg.evaluate("labels.npy", TRUTH), InputError, "prediction"),
    (
        "evaluate-truth-text",
        lambda: nbseg.evaluate(TRUTH, TRUTH.astype(str)),
        InputError,
        "truth has dtype",
    ),
    # the settings objects: each declaration validates its own values
    (
        "params-patch-text",
        lambda: nbseg.TrainingParams(patch_size="a").validate(),
        ParamsError,
        "patch_size",
    ),
    (
        "params-optimizer",
        lambda: nbseg.TrainingParams(optimizer="sgdx").validate(),
        ParamsError,
        "optimizer='sgdx'",
    ),
    (
        "params-epochs-text",
        lambda: nbseg.TrainingParams(epochs="three").validate(),
        ParamsError,
        "epochs='three'",
    ),
    (
        "params-augmentation",
        lambda: nbseg.TrainingParams(augmentation={"zoom_range": 1}),
        ParamsError,
        "zoom_range",
    ),
    (
        "augmentation-flip",
        lambda: AugmentationParams(flip="maybe").validate(),
        ParamsError,
        "flip='maybe'",
    ),
    (
        "spec-dimension",
        lambda: nbseg.ModelSpec(input_dimension="4D").validate(),
        SpecError,
        "input_dimension='4D'",
    ),
    ("spec-classes", lambda: nbseg.ModelSpec(class_count=1).validate(), SpecError, "class_count=1"),
    ("spec-depth-text", lambda: tiny_model(parameters={"depth": "4"}), SpecError, "'depth'"),
    ("spec-architecture", lambda: tiny_model(architecture="nope"), SpecError, "'nope'"),
    (
        "inference-overlap",
        lambda: InferenceSettings(overlap=1.0).validate(),
        InputError,
        "overlap=1.0",
    ),
    ("inference-chunks", lambda: InferenceSettings(chunks=0).validate(), InputError, "chunks=0"),
]


@pytest.mark.parametrize(
    "call, error, pattern",
    [pytest.param(c, e, p, id=i) for i, c, e, p in API_CASES],
)
def test_api_refuses_bad_input_naming_it(call, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        call()
    assert isinstance(info.value, nbseg.NbsegError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_segment_on_a_missing_gpu_names_the_device():
    with pytest.raises(InputError, match=r"device='cuda': no CUDA GPU"):
        nbseg.segment(ready(), IMAGE, device="cuda")


# -- what is aligned by name instead: a correct result -----------------------------------------
def test_labels_and_masks_are_aligned_to_the_image_by_dim_name():
    image, labels, _ = blobs((4, 32, 48), labelled=(1, 2))
    t = nbseg.TrainingSet(image, labels.transpose("z", "x", "y"), mask=(image > 0).T)
    assert t.output.dims == ("z", "y", "x") and t.mask.dims == ("z", "y", "x")
    np.testing.assert_array_equal(t.output.values, labels.values)
    # a transposed image is put in (z, y, x) order too; numpy arrays stay positional
    t2 = nbseg.TrainingSet(image.transpose("x", "z", "y"), labels.values)
    np.testing.assert_array_equal(t2.input_list[0].values, image.values)


def test_training_on_transposed_labels_runs():
    image, labels, _ = blobs((4, 32, 48), labelled=(1, 2))
    model = tiny_model()
    t = nbseg.TrainingSet(image, labels.transpose("z", "x", "y"))
    result = nbseg.train(model, t, params(), 0, feedback=False)
    assert result.status == "completed" and model.trained


def test_segment_aligns_by_name_and_answers_in_the_image_order():
    m = ready()
    ref = nbseg.segment(m, IMAGE, mask=MASK)
    out = nbseg.segment(m, IMAGE.transpose("x", "y", "z"), mask=MASK.transpose("z", "x", "y"))
    assert out.dims == ("x", "y", "z")
    np.testing.assert_array_equal(out.transpose("z", "y", "x").values, ref.values)
    prob = nbseg.segment(m, IMAGE.transpose("y", "z", "x"), probabilities=True)
    assert prob.dims == ("class", "y", "z", "x")


def test_a_channel_dim_is_several_inputs():
    m = ready_model(input_count=2)
    m.normalisation = nbseg.Normalisation(low=[400.0, 400.0], high=[700.0, 700.0])
    both = xr.concat([IMAGE, IMAGE * 1.1], "c").transpose("y", "c", "z", "x")
    out = nbseg.segment(m, both)
    assert out.dims == ("y", "z", "x")
    listed = nbseg.segment(m, [IMAGE, IMAGE * 1.1])
    np.testing.assert_array_equal(out.transpose(*listed.dims).values, listed.values)
    t = nbseg.TrainingSet(both, LABELS)
    assert t.input_count == 2 and t.input_list[1].dims == ("z", "y", "x")


def test_preview_along_another_dim_still_slides_that_way():
    pv = nbseg.preview(ready(), IMAGE, 5, dim="y")
    assert pv.dims == ("z", "x") and pv.shape == (4, 32)


def test_numbers_as_text_are_read_as_numbers():
    # the settings declarations parse text where a number is expected (YAML, the panels)
    assert nbseg.TrainingParams(epochs="3").validate().epochs == 3
    assert InferenceSettings.build(batch_size="8", overlap="0.5").overlap == 0.5


def test_evaluate_aligns_by_name():
    scores = nbseg.evaluate(TRUTH.transpose("z", "x", "y"), TRUTH)
    assert scores["dice"] == pytest.approx(1.0)


# -- files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "image.npy", IMAGE.values)
    np.save(d / "labels.npy", LABELS.values)
    np.save(d / "complex.npy", IMAGE.values.astype(complex))
    np.save(d / "four_d.npy", np.zeros((2, 4, 32, 32), np.float32))
    (d / "garbage.npy").write_text("not an array")
    (d / "folder.npy").mkdir()
    (d / "file.zarr").write_text("not a store")
    (d / "empty.zarr").mkdir()
    (d / "plain.txt").write_text("x")
    ready().save(d / "model.nbseg")
    return d


READ_CASES = [
    ("missing", "missing.npy", r"No such file: '.*missing.npy'"),
    ("folder-for-file", "folder.npy", "folder.npy.*is a folder, not a .npy file"),
    ("not-npy", "garbage.npy", "garbage.npy.*not a .npy file"),
    ("file-for-zarr", "file.zarr", "file.zarr.*a .zarr store is a folder"),
    ("folder-not-zarr", "empty.zarr", "empty.zarr.*not a zarr store"),
    ("parent-is-file", "plain.txt/x.npy", r"plain.txt' is a file, not a folder"),
    ("suffix", "plain.txt", "plain.txt.*unsupported file type .txt"),
    ("four-d", "four_d.npy", r"four_d.npy' holds an array of shape \(2, 4, 32, 32\)"),
]


@pytest.mark.parametrize("name, pattern", [pytest.param(n, p, id=i) for i, n, p in READ_CASES])
def test_read_array_names_the_path_and_the_problem(files, name, pattern):
    with pytest.raises(InputError, match=pattern):
        read_array(name, base=files)


@pytest.mark.parametrize(
    "ref, pattern",
    [
        pytest.param(3, "got int 3", id="int"),
        pytest.param({"path": None}, "got NoneType", id="dict-none"),
        pytest.param({"path": "a.zarr", "variable": 1}, "variable=1", id="variable-int"),
        pytest.param({"file": "a.npy"}, r"keys \['file'\]", id="dict-keys"),
    ],
)
def test_read_array_refuses_what_is_not_a_reference(ref, pattern):
    with pytest.raises(InputError, match=pattern):
        read_array(ref)


def test_read_array_reports_an_os_error_as_an_input_error(files, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "load", refused)
    with pytest.raises(InputError, match=r"Cannot read 'image.npy' .*Permission denied"):
        read_array("image.npy", base=files)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_read_array_names_an_unreadable_file(files):
    p = files / "locked.npy"
    np.save(p, IMAGE.values)
    p.chmod(0)
    try:
        with pytest.raises(InputError, match=r"locked.npy.*permission denied"):
            read_array(p)
    finally:
        p.chmod(0o644)


# -- config files ------------------------------------------------------------------------------
def config(**changes):
    base = {
        "model": {"parameters": dict(TINY)},
        "training_sets": [{"input": "image.npy", "output": "labels.npy"}],
        "validation": 0,
        "params": {"epochs": 1, "batch_size": 2, "patch_size": 16},
        "output": "out.nbseg",
    }
    base.update(changes)
    return base


def write_yaml(folder, data=None, text=None, name="cfg.yaml"):
    p = folder / name
    p.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return p


CONFIG_CASES = [
    ("slice-index-text", config(feedback={"slice_index": "2"}), r"feedback.slice_index='2'"),
    ("slice-index-negative", config(feedback={"slice_index": -1}), r"feedback.slice_index=-1"),
    ("slice-index-bool", config(feedback={"slice_index": True}), r"feedback.slice_index=True"),
    ("feedback-set-text", config(feedback={"training_set": "a"}), r"feedback.training_set='a'"),
    ("feedback-box-text", config(feedback={"box": ["a", 1, 2, 3]}), r"feedback.box"),
    ("feedback-list", config(feedback=[1]), r"feedback must be a mapping"),
    ("validation-text", config(validation="a"), r"validation='a'"),
    ("params-text", config(params={"epochs": "x"}), r"params: TrainingParams.epochs='x'"),
    ("trainer-devices", config(trainer={"devices": "x"}), r"trainer.devices='x'"),
    ("output-int", config(output=3), r"output must be a path"),
    ("input-int", config(training_sets=[{"input": 3, "output": "labels.npy"}]), r"inputs\[0\]"),
]


@pytest.mark.parametrize("data, pattern", [pytest.param(d, p, id=i) for i, d, p in CONFIG_CASES])
def test_config_errors_name_the_key(files, data, pattern):
    path = write_yaml(files, data)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert "cfg.yaml" in str(info.value)


RUN_CASES = [
    (
        "dataset-options",
        config(training_sets=[{"dataset": "fibres", "dataset_options": {"shape": "big"}}]),
        InputError,
        r"training_sets\[0\].dataset_options: shape",
    ),
    (
        "dataset-seed",
        config(training_sets=[{"dataset": "fibres", "dataset_options": {"seed": "a"}}]),
        ConfigError,
        r"training_sets\[0\].dataset_options=",
    ),
    (
        "complex-file",
        config(training_sets=[{"input": "complex.npy", "output": "labels.npy"}]),
        InputError,
        r"training_sets\[0\] input 0 is complex",
    ),
    (
        "missing-file",
        config(training_sets=[{"input": "none.npy", "output": "labels.npy"}]),
        InputError,
        r"training_sets\[0\].inputs\[0\]: No such file: 'none.npy'",
    ),
    (
        "named-set-shape",
        config(training_sets=[{"input": "image.npy", "output": "four_d.npy", "name": "mine"}]),
        InputError,
        r"training_sets\[0\].output",
    ),
    (
        "patch-not-multiple",
        config(params={"epochs": 1, "patch_size": 17}),
        ParamsError,
        r"patch_size=17 is not a multiple of 2",
    ),
]


@pytest.mark.parametrize(
    "data, error, pattern", [pytest.param(d, e, p, id=i) for i, d, e, p in RUN_CASES]
)
def test_config_run_errors_name_the_key(files, data, error, pattern):
    cfg = load_config(write_yaml(files, data))
    with pytest.raises(error, match=pattern):
        cfg.run(feedback=False)


# -- the command line ----------------------------------------------------------------------------
def one_error_line(capsys, status, expected, *, pattern):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == expected, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("nbseg: error: "), captured.err
    assert re.search(pattern, lines[0]), lines[0]


TRAIN_CLI_CASES = [
    ("yaml-syntax", None, "model: [unclosed\nfoo: 1\n", [], 1, r"not valid YAML: line 2, column 4"),
    ("yaml-tab", None, "model:\n\t- a\n", [], 1, r"not valid YAML: line 2"),
    ("yaml-list", None, "- 1\n- 2\n", [], 1, r"expected a mapping"),
    (
        "slice-index-text",
        config(feedback={"slice_index": "2"}),
        None,
        [],
        1,
        r"feedback.slice_index",
    ),
    (
        "patch-17",
        config(params={"epochs": 1, "patch_size": 17}),
        None,
        [],
        1,
        r"cfg.yaml.*patch_size=17",
    ),
    (
        "complex-input",
        config(training_sets=[{"input": "complex.npy", "output": "labels.npy"}]),
        None,
        [],
        1,
        r"training_sets\[0\] input 0 is complex",
    ),
    (
        "folder-input",
        config(training_sets=[{"input": "folder.npy", "output": "labels.npy"}]),
        None,
        [],
        1,
        r"inputs\[0\]: .*is a folder",
    ),
    ("flag-epochs-text", config(), None, ["--epochs", "x"], 1, r"--epochs 'x'"),
    ("flag-epochs-zero", config(), None, ["--epochs", "0"], 1, r"--epochs '0'"),
    ("flag-patch-text", config(), None, ["--patch-size", "a"], 1, r"--patch-size 'a'"),
    (
        "flag-patch-33",
        config(model={"parameters": {"filters": 4, "depth": 4}}),
        None,
        ["--patch-size", "33"],
        1,
        r"patch_size=33 is not a multiple of 8",
    ),
    ("flag-flip", config(), None, ["--augmentation.flip", "maybe"], 1, r"--augmentation.flip"),
    ("flag-unknown", config(), None, ["--bogus"], 2, r"--bogus"),
    ("flag-strategy", config(), None, ["--strategy", "warp"], 2, r"--strategy"),
    ("flag-devices", config(), None, ["--devices", "none"], 1, r"--devices"),
]


@pytest.mark.parametrize(
    "data, text, flags, status, pattern",
    [pytest.param(d, t, f, s, p, id=i) for i, d, t, f, s, p in TRAIN_CLI_CASES],
)
def test_train_command_fails_in_one_line(files, capsys, data, text, flags, status, pattern):
    path = write_yaml(files, data, text)
    try:
        code = main(["train", str(path), *flags])
    except SystemExit as ex:
        code = ex.code
    assert code == status
    one_error_line(capsys, code, status, pattern=pattern)


def test_train_command_on_a_folder_and_without_a_config(files, capsys):
    one_error_line(capsys, main(["train", str(files)]), 1, pattern=r"CONFIG .* is a folder")
    with pytest.raises(SystemExit) as ex:
        main(["train"])
    one_error_line(capsys, ex.value.code, 2, pattern=r"required: config")


SEGMENT_CLI_CASES = [
    (
        "missing-input",
        ["model.nbseg", "none.npy", "s1.npy"],
        1,
        r"INPUT: No such file: '.*none.npy'",
    ),
    ("folder-input", ["model.nbseg", "folder.npy", "s2.npy"], 1, r"INPUT: .*is a folder"),
    ("garbage-input", ["model.nbseg", "garbage.npy", "s3.npy"], 1, r"INPUT: .*not a .npy file"),
    ("complex-input", ["model.nbseg", "complex.npy", "s4.npy"], 1, r"image 0 is complex"),
    ("four-d-mask", ["model.nbseg", "image.npy", "s5.npy", "--mask", "four_d.npy"], 1, r"--mask: "),
    ("missing-model", ["nothing", "image.npy", "s6.npy"], 1, r"No model file 'nothing'"),
    ("bad-model", ["garbage.npy", "image.npy", "s7.npy"], 1, r"garbage.npy"),
    ("output-suffix", ["model.nbseg", "image.npy", "s8.png"], 1, r"s8.png"),
    ("output-exists", ["model.nbseg", "image.npy", "labels.npy"], 1, r"--overwrite"),
    ("output-in-input", ["model.nbseg", "image.npy", "image.npy/x.npy"], 1, r"inside the input"),
    ("overlap-text", ["model.nbseg", "image.npy", "s9.npy", "--overlap", "a"], 2, r"--overlap"),
    ("overlap-range", ["model.nbseg", "image.npy", "s9.npy", "--overlap", "2"], 1, r"overlap=2.0"),
    ("batch-zero", ["model.nbseg", "image.npy", "s9.npy", "--batch-size", "0"], 1, r"batch_size=0"),
    ("device", ["model.nbseg", "image.npy", "s9.npy", "--device", "gpu"], 1, r"device='gpu'"),
    ("missing-args", ["model.nbseg"], 2, r"required: input, output"),
]


@pytest.mark.parametrize(
    "argv, status, pattern",
    [pytest.param(a, s, p, id=i) for i, a, s, p in SEGMENT_CLI_CASES],
)
def test_segment_command_fails_in_one_line(files, capsys, monkeypatch, argv, status, pattern):
    monkeypatch.chdir(files)
    try:
        code = main(["segment", *argv])
    except SystemExit as ex:
        code = ex.code
    assert code == status
    one_error_line(capsys, code, status, pattern=pattern)


def test_an_unexpected_error_is_still_one_line(files, capsys, monkeypatch):
    import nbseg.cli as cli

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(cli, "segment", broken)
    monkeypatch.chdir(files)
    code = main(["segment", "model.nbseg", "image.npy", "s10.npy"])
    assert code == 1
    one_error_line(capsys, code, 1, pattern=r"unexpected KeyError: 'surprise'.*NBSEG_DEBUG")


def test_the_installed_command_prints_no_traceback(files):
    path = write_yaml(files, text="model: [unclosed\n", name="broken.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "nbseg.cli", "train", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbseg: error: ") and "line 1" in lines[0]
