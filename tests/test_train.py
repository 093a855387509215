"""End-to-end training with tiny models on small synthetic volumes (seconds each)."""

import threading

import numpy as np
import pytest
import torch

import nbseg
from nbseg._png import decode_png

from .helpers import blobs, count_feedback_predictions, dice

pytestmark = pytest.mark.slow

TINY = {"filters": 8, "depth": 2}


def _fit(dim="2D", epochs=8, **kw):
    # 3D patches need labels at varied depths within a patch: label more slices of a deeper volume
    shape, labelled = (
        ((12, 48, 48), (1, 2, 4, 5, 7, 9, 10)) if dim == "3D" else ((8, 48, 48), (1, 3, 5, 6))
    )
    image, labels, truth = blobs(shape, labelled=labelled)
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=2, input_dimension=dim, parameters=TINY, slices=3
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(
        patch_size=(4, 32, 32) if dim == "3D" else 32,
        batch_size=4,
        epochs=epochs,
        learning_rate=5e-3,
        **kw,
    )
    params.augmentation.factor = 8 if dim == "3D" else 2
    result = nbseg.train(model, nbseg.TrainingSet(image, labels), params, validation=0.25)
    unlabelled = [z for z in range(shape[0]) if z not in labelled]
    return model, result, image, truth, unlabelled


@pytest.mark.parametrize("dim, threshold", [("2D", 0.85), ("2.5D", 0.85), ("3D", 0.75)])
def test_learning_happens_and_segment_matches_truth(dim, threshold):
    model, result, image, truth, unlabelled = _fit(dim)
    dices = result.metric("val_dice_blob")
    assert result.status == "completed" and len(dices) == 8
    assert dices[-1] > threshold and dices[-1] > dices[0]
    out = nbseg.segment(model, image)
    assert out.shape == image.shape
    assert dice(out.values[unlabelled], truth.values[unlabelled]) > threshold
    assert model.class_names == ["background", "blob"]  # adopted from the multi-ROI


@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_trains_channels_last_and_leaves_contiguous_weights(tmp_path, dim):
    from nbseg.training.run import channels_last_format

    image, labels, _ = blobs((8, 32, 32), labelled=(1, 2, 3, 4, 5))
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension=dim, parameters=TINY)
    model = nbseg.generate_model(spec)
    fmt = torch.channels_last_3d if dim == "3D" else torch.channels_last
    conv_type = torch.nn.Conv3d if dim == "3D" else torch.nn.Conv2d
    formats = []

    def hook(mod, inputs, output):
        if mod.training:
            conv = next(c for c in mod.modules() if isinstance(c, conv_type) and c.in_channels > 1)
            formats.append(
                inputs[0].is_contiguous(memory_format=fmt)
                and conv.weight.is_contiguous(memory_format=fmt)
            )

    model.network.register_forward_hook(hook)
    patch = (4, 16, 16) if dim == "3D" else 16
    params = nbseg.TrainingParams(patch_size=patch, batch_size=2, epochs=2, precision="32")
    nbseg.train(model, nbseg.TrainingSet(image, labels), params, validation=0)
    assert formats and all(formats)
    assert all(p.is_contiguous() for p in model.network.state_dict().values())
    saved = nbseg.load_model(model.save(tmp_path / "m.nbseg"))
    for k, v in model.network.state_dict().items():
        assert torch.equal(saved.network.state_dict()[k], v)
    assert channels_last_format(2, "cpu") == channels_last_format(2, "gpu") == torch.channels_last
    assert channels_last_format(3, "cpu") == torch.channels_last_3d
    assert channels_last_format(2, "cpu", world_size=2) is None
    assert channels_last_format(2, "mps") is None


def test_same_seed_same_metrics():
    _, a, *_ = _fit(epochs=2)
    _, b, *_ = _fit(epochs=2)
    assert a.metric("loss") == b.metric("loss") and a.metric("val_loss") == b.metric("val_loss")


def test_history_feedback_checkpoints_csv_png(tmp_path):
    model, result, *_ = _fit(epochs=4)
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    for key in ("loss", "val_loss", "val_dice", "val_iou", "val_accuracy", "lr", "val_dice_blob"):
        assert all(np.isfinite(r[key]) for r in h), key
    csv = result.to_csv(tmp_path / "h.csv", digits=3)
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,loss,val_loss,val_dice") and len(lines) == 5 and csv
    fb = result.feedback
    assert fb.epochs == [1, 2, 3, 4] and fb.predictions[4].dtype == np.uint8
    native = decode_png(fb.export_png(tmp_path / "n.png", 2, min_side=1, legend=False).read_bytes())
    np.testing.assert_array_equal(native, fb.rgb(2))
    png = decode_png(fb.export_png(tmp_path / "e2.png", epoch=2).read_bytes())
    assert max(png.shape[:2]) >= 512 and png.shape[1] % fb.image.shape[1] == 0  # not 48 px
    assert fb.class_names == ["background", "blob"] and fb.run == 1
    cache = result.checkpoints
    assert cache.best_epoch in cache.epochs and any(r["checkpoint"] for r in h)
    assert [r["run"] for r in h] == [1, 1, 1, 1] and cache.keys[-1] == (1, 4)  # last kept
    best = cache.best_epoch
    copy_path = cache.save_copy(model, best, tmp_path / "best.nbseg")
    back = nbseg.load_model(copy_path)
    ref = cache.get(best).state
    assert all(torch.equal(v, ref[k]) for k, v in back.network.state_dict().items())
    assert back.history[-1]["epoch"] == best


def test_fine_tuning_continues_history_and_keeps_normalisation(tmp_path):
    model, _result, _image, *_ = _fit(epochs=2)
    path = model.save(tmp_path / "m.nbseg")
    again = nbseg.load_model(path)
    norm = again.normalisation.to_dict()
    image2, labels2, _ = blobs((8, 48, 48), seed=5, labelled=(2, 4))
    r2 = nbseg.train(again, nbseg.TrainingSet(image2, labels2), validation=0.25)
    assert [h["epoch"] for h in r2.history] == [1, 2, 3, 4]
    assert again.normalisation.to_dict() == norm


class _Recorder(nbseg.TrainingListener):
    def __init__(self, stop_after_batches=None, run=None):
        self.batches, self.epochs, self.feedback = 0, [], []
        self.stop_after, self.event = stop_after_batches, threading.Event()

    def on_batch_end(self, progress):
        self.batches += 1
        if self.stop_after and self.batches == self.stop_after:
            self.event.set()

    def on_epoch_end(self, record, feedback):
        self.epochs.append(record["epoch"])
        self.feedback.append(feedback)


def test_stop_within_one_batch_in_background_run():
    image, labels, _ = blobs((8, 48, 48), labelled=(1, 3, 5, 6))
    model = nbseg.generate_model(nbseg.ModelSpec(parameters=TINY))
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    params = nbseg.TrainingParams(patch_size=32, batch_size=2, epochs=50)
    rec = _Recorder()
    holder = {}

    class _StopAt(nbseg.TrainingListener):
        def on_batch_end(self, progress):
            if progress["epoch"] == 2 and progress["batch"] == 3:
                self.stopped_at = rec.batches
                holder["run"].stop()  # as the Stop button does, from another thread's view

    stopper = _StopAt()
    run = nbseg.TrainingRun(
        model, nbseg.TrainingSet(image, labels), params, callbacks=[rec, stopper]
    )
    holder["run"] = run
    assert run.start() is run and run.running
    result = run.wait(120)
    assert not run.running and result is not None
    assert result.status == "stopped" and run.status == "stopped"
    assert rec.batches == stopper.stopped_at  # no batch ran after the one that saw the stop
    assert [r["epoch"] for r in result.history] == [1, 2]
    # the stopped epoch is partial: 3 of its batches trained, never counted as a whole epoch
    per_epoch = rec.batches - 3  # epoch 1 ran all its batches, epoch 2 three
    last = result.history[-1]
    assert "batches" not in result.history[0]
    assert (last["batches"], last["epoch_batches"]) == (3, per_epoch) and per_epoch > 3
    assert result.trained_text == f"1 epoch + 3/{per_epoch} batches"
    assert model.epochs_trained == 1 and model.epochs_text == result.trained_text
    assert f"trained 1 epoch + 3/{per_epoch} batches" in repr(model)
    assert result.checkpoints.get(2).name == f"run 1 · epoch 2 (3/{per_epoch} batches)"
    assert any(not torch.equal(v, before[k]) for k, v in model.network.state_dict().items())


def test_stop_event_stops_after_current_batch():
    image, labels, _ = blobs((8, 48, 48), labelled=(1, 3, 5, 6))
    model = nbseg.generate_model(nbseg.ModelSpec(parameters=TINY))
    rec = _Recorder(stop_after_batches=3)
    params = nbseg.TrainingParams(patch_size=32, batch_size=2, epochs=50)
    result = nbseg.train(
        model, nbseg.TrainingSet(image, labels), params, callbacks=[rec], stop_event=rec.event
    )
    assert result.status == "stopped" and rec.batches == 3
    assert len(result.history) == 1  # the interrupted epoch is still recorded and validated


def test_nan_loss_fails_clearly_and_keeps_last_good_weights(monkeypatch):
    from nbseg.training import losses

    model, _, image, *_ = _fit(epochs=1)
    good = {k: v.clone() for k, v in model.network.state_dict().items()}
    monkeypatch.setattr(
        losses.SegmentationLoss, "forward", lambda self, a, b: a.sum() * float("nan")
    )
    _, labels, _ = blobs((8, 48, 48), labelled=(1, 3, 5, 6))
    with pytest.raises(nbseg.TrainingError, match="loss became nan") as info:
        nbseg.train(model, nbseg.TrainingSet(image, labels), validation=0.25)
    assert info.value.result.status == "failed"
    assert all(torch.equal(v, good[k]) for k, v in model.network.state_dict().items())


def test_mask_restricts_patches_and_early_stopping():
    image, labels, _ = blobs((8, 48, 48), labelled=(1, 3, 5, 6))
    mask = image.copy(data=np.zeros(image.shape, bool))
    mask.values[:, :, :24] = True
    model = nbseg.generate_model(nbseg.ModelSpec(parameters=TINY))
    params = nbseg.TrainingParams(
        patch_size=16, batch_size=4, epochs=30, early_stopping=True, patience=1, min_delta=10.0
    )
    result = nbseg.train(model, nbseg.TrainingSet(image, labels, mask=mask), params)
    assert result.status == "early_stopped" and len(result.history) < 30
    with pytest.raises(nbseg.InputError, match="no labelled voxel inside the mask"):
        nbseg.train(
            model,
            nbseg.TrainingSet(image, labels, mask=mask.copy(data=np.zeros(image.shape, bool))),
        )


class _BatchLosses(nbseg.TrainingListener):
    def __init__(self):
        self.losses: dict[int, list[float]] = {}

    def on_batch_end(self, progress):
        self.losses.setdefault(progress["epoch"], []).append(progress["loss"])


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_epoch_loss_is_the_mean_of_batch_losses_and_drives_loss_monitors(schedule):
    """The epoch loss (logged once per epoch, not per step) feeds the history, the plateau
    schedule and early stopping on "loss" without validation."""
    image, labels, _ = blobs((8, 32, 32), labelled=(1, 2, 3, 4, 5))
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=2, input_dimension="2D", parameters=TINY
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(
        patch_size=16,
        batch_size=4,  # 5 slices x 4 patches x augmentation factor: full batches only
        epochs=3,
        lr_schedule=schedule,
        plateau_patience=0,
        early_stopping=True,
        monitor="loss",
        patience=5,
    )
    listener = _BatchLosses()
    result = nbseg.train(
        model, nbseg.TrainingSet(image, labels), params, validation=0, callbacks=[listener]
    )
    assert result.status == "completed" and len(result.history) == 3
    for record in result.history:
        batch = listener.losses[record["epoch"]]
        assert len(batch) * 4 == result.extra["train_patches"]
        assert record["loss"] == pytest.approx(np.mean(batch), rel=1e-5)
    assert result.metric("loss")[-1] < result.metric("loss")[0]


@pytest.mark.parametrize(
    "name, fused", [("adam", True), ("adamw", True), ("sgd", True), ("rmsprop", None)]
)
def test_optimisers_use_fused_kernels_on_cpu_and_match_the_plain_step(name, fused):
    from nbseg.training.module import build_optimizer

    torch.manual_seed(0)
    nets = [torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)]
    nets[1].load_state_dict(nets[0].state_dict())
    params = nbseg.TrainingParams(optimizer=name, learning_rate=1e-2)
    opt = build_optimizer(params, nets[0].parameters())
    assert opt.defaults.get("fused") is fused
    extra = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {"weight_decay": 0.0}
    plain = type(opt)(nets[1].parameters(), lr=1e-2, **extra)
    assert not plain.defaults.get("fused")
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        for net, o in zip(nets, (opt, plain)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_feedback_preview_predicts_a_small_region_in_one_pass(monkeypatch):
    from nbseg.data.patches import PreparedSet
    from nbseg.training import callbacks

    model, _, image, _, _ = _fit(epochs=2)
    ps = PreparedSet.from_training_set(
        nbseg.TrainingSet(image, np.zeros(image.shape, np.uint8)), model.normalisation
    )
    shapes = []
    hook = model.network.register_forward_hook(lambda m, a, out: shapes.append(a[0].shape))
    try:
        # a 48² region with 32² training patches: one 48² pass instead of four overlapping tiles
        small = callbacks.feedback_prediction(model, ps, 3, (0, 48, 0, 48))
        assert [tuple(s[-2:]) for s in shapes] == [(48, 48)]
        # the same pixels as segment() with a window covering the region
        whole = nbseg.segment(model, image[3], window=48).values
        assert (small == whole).all()
        # above the single-pass limit the training-size sliding window is used again
        shapes.clear()
        monkeypatch.setattr(callbacks, "SINGLE_PASS_PIXELS", 40 * 40)
        tiled = callbacks.feedback_prediction(model, ps, 3, (0, 48, 0, 48))
        assert {tuple(s[-2:]) for s in shapes} == {(32, 32)} and sum(s[0] for s in shapes) == 4
        assert (tiled == nbseg.segment(model, image[3]).values).all()
    finally:
        hook.remove()


def test_feedback_preview_runs_in_the_training_precision_and_matches_float32():
    from nbseg.data.patches import PreparedSet
    from nbseg.training.callbacks import _autocast_dtype, feedback_prediction

    model, _, image, _, _ = _fit(epochs=4)
    labels = np.zeros(image.shape, np.uint8)
    ps = PreparedSet.from_training_set(nbseg.TrainingSet(image, labels), model.normalisation)
    box = (0, 48, 0, 48)
    full = feedback_prediction(model, ps, 3, box)
    half = feedback_prediction(model, ps, 3, box, torch.bfloat16)
    assert full.shape == half.shape == (48, 48) and full.dtype == np.uint8
    assert 0.05 < full.mean() < 0.95  # both classes present: a real comparison
    assert (full == half).mean() > 0.98

    class FakeTrainer:
        precision = "bf16-mixed"

    assert _autocast_dtype(FakeTrainer()) == torch.bfloat16
    FakeTrainer.precision = "32-true"
    assert _autocast_dtype(FakeTrainer()) is None


def test_weight_average_follows_the_ema_and_swaps_weights_exactly():
    from types import SimpleNamespace

    from nbseg.training.callbacks import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    module = SimpleNamespace(network=net)
    trainer = SimpleNamespace(sanity_checking=False)
    ema = WeightAverage(0.9)
    ema.on_train_start(trainer, module)

    def floats():  # copies of the network's floating-point state (weights, BN statistics)
        return [t.clone() for t in net.state_dict().values() if t.is_floating_point()]

    expected = floats()
    for n in range(1, 6):  # five "optimiser steps" that move every weight
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
        ema.on_train_batch_end(trainer, module, None, None, n - 1)
        d = min(0.9, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * t for e, t in zip(expected, floats())]
    live = floats()
    ema.on_validation_start(trainer, module)
    averaged = floats()
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(averaged, expected))
    assert not torch.equal(averaged[0], live[0])
    ema.on_train_epoch_end(trainer, module)  # idempotent: still the average, live kept once
    ema.on_train_epoch_start(trainer, module)  # the next epoch trains the live weights
    assert all(torch.equal(a, b) for a, b in zip(floats(), live))
    ema.on_validation_start(trainer, module)
    ema.on_exception(trainer, module, RuntimeError())  # an error puts the live weights back
    assert all(torch.equal(a, b) for a, b in zip(floats(), live))
    ema.on_train_end(trainer, module)  # the trained model is the average
    assert all(torch.equal(a, b) for a, b in zip(floats(), averaged))
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(1.0)


def test_ema_leaves_training_alone_and_evaluates_the_average():
    _, plain, *_ = _fit(epochs=3, restore_best=False)
    model, ema, *_ = _fit(epochs=3, restore_best=False, ema_decay=0.9)
    # the live weights train exactly as without averaging: the epochs resume from them
    assert ema.metric("loss") == plain.metric("loss")
    # validation, the checkpoints and the returned model use the averaged weights
    assert ema.metric("val_loss") != plain.metric("val_loss")
    assert ema.metric("val_dice_blob")[-1] > 0.5
    last = ema.checkpoints.get(ema.checkpoints.epochs[-1]).state if ema.checkpoints else None
    final = model.network.state_dict()
    assert not all(torch.equal(v, plain.model.network.state_dict()[k]) for k, v in final.items())
    if last is not None and ema.checkpoints.epochs[-1] == 3:
        assert all(torch.equal(v, last[k]) for k, v in final.items())
    with pytest.raises(nbseg.ParamsError, match="ema_decay"):
        nbseg.TrainingParams(ema_decay=1.5).validate()


def test_feedback_false_skips_the_feedback_prediction(monkeypatch):
    calls, seen = count_feedback_predictions(monkeypatch), []

    class Listener(nbseg.TrainingListener):
        def on_epoch_end(self, record, feedback):
            seen.append(feedback)

    image, labels, _ = blobs((8, 32, 32), labelled=(1, 3, 5))
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, parameters=TINY)
    params = nbseg.TrainingParams(patch_size=16, batch_size=4, epochs=2)
    ts = nbseg.TrainingSet(image, labels)
    result = nbseg.train(
        nbseg.generate_model(spec), ts, params, callbacks=[Listener()], feedback=False
    )
    assert result.feedback is None and calls == [] and seen == [None, None]
    assert len(result.history) == 2 and result.checkpoints is not None
    nbseg.train(nbseg.generate_model(spec), ts, params, callbacks=[Listener()])
    assert len(calls) == 2 and seen[-1] is not None  # the default region, every epoch
    with pytest.raises(nbseg.InputError, match="feedback"):
        nbseg.train(nbseg.generate_model(spec), ts, params, feedback="centre")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_refused_trainer_settings_are_an_input_error_and_leave_the_model_as_it_was():
    image, labels, _ = blobs((4, 32, 32), labelled=(1, 2))
    spec = nbseg.ModelSpec(architecture="unet", class_count=2, parameters=TINY)
    model = nbseg.generate_model(spec)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    params = nbseg.TrainingParams(patch_size=16, batch_size=4, epochs=1)
    ts = nbseg.TrainingSet(image, labels)
    with pytest.raises(nbseg.InputError, match=r"trainer settings.*accelerator"):
        nbseg.train(model, ts, params, trainer_kwargs={"accelerator": "gpu", "devices": 2})
    with pytest.raises(nbseg.InputError, match="feedback"):
        nbseg.train(model, ts, params, feedback="centre")
    assert model.normalisation is None and not model.trained and model.history == []
    assert all(torch.equal(v, before[k]) for k, v in model.network.state_dict().items())


def test_gradients_zeroed_before_the_forward_pass_train_exactly_as_lightning(monkeypatch):
    import sys

    from nbseg.training.module import SegmentationModule

    callers = []
    real = torch.optim.Adam.zero_grad

    def spy(self, *a, **k):
        callers.append(sys._getframe(1).f_code.co_name)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "zero_grad", spy)
    # the network's optimiser only: no feature teacher (it trains its own MLP with Adam)
    _, early, *_ = _fit(epochs=2, semi_supervised="off")
    assert callers and set(callers) == {"on_train_batch_start"}  # before the forward pass
    callers.clear()
    monkeypatch.setattr(SegmentationModule, "_zero_grad_early", property(lambda self: False))
    _, lightning, *_ = _fit(
        epochs=2, semi_supervised="off"
    )  # Lightning's order: between forward and backward
    assert callers and "on_train_batch_start" not in callers
    assert early.metric("loss") == lightning.metric("loss")
    assert early.metric("val_loss") == lightning.metric("val_loss")


def test_runs_continue_one_checkpoint_cache_named_by_run_and_epoch():
    """A second run keeps the first run's states (the reported case: run 2 stopped in its
    first epoch left only that epoch, labelled best, although run 1 had a better one)."""
    image, labels, _ = blobs((4, 48, 48), labelled=(1, 2))
    ts = nbseg.TrainingSet(image, labels)
    model = nbseg.generate_model(nbseg.ModelSpec(parameters={"filters": 4, "depth": 2}))
    params = nbseg.TrainingParams(patch_size=32, batch_size=2, epochs=3, learning_rate=5e-3)
    first = nbseg.train(model, ts, params, validation=0.25)
    assert first.run == 1 and first.checkpoints.keys[-1] == (1, 3)
    stop = threading.Event()

    class _StopAtBatch2(nbseg.TrainingListener):
        def on_batch_end(self, progress):
            if progress["batch"] == 2:
                stop.set()

    second = nbseg.train(
        model,
        ts,
        params,
        validation=0.25,
        callbacks=[_StopAtBatch2()],
        stop_event=stop,
        checkpoints=first.checkpoints,
    )
    cache = second.checkpoints
    assert cache is first.checkpoints and second.run == 2 and second.status == "stopped"
    assert [(r["run"], r["epoch"]) for r in model.history] == [(1, 1), (1, 2), (1, 3), (2, 4)]
    assert second.trained_text.startswith("2/") and model.epochs_trained == 3
    # both runs' states can be loaded; each is named by run and epoch
    assert (1, 3) in cache.keys and (2, 4) in cache.keys
    rows = {(r["run"], r["epoch"]): r for r in cache.list()}
    assert rows[(1, 3)]["name"] == "run 1 · epoch 3" and rows[(2, 4)]["last"]
    assert rows[(2, 4)]["name"].startswith("run 2 · epoch 4 (2/")
    # "best" is the best monitored value over the whole cache, and only that one
    values = {k: r["val_loss"] for k, r in rows.items()}
    best = min(values, key=values.get)
    assert cache.best.key == best and [k for k, r in rows.items() if r["best"]] == [best]
    again = cache.model_at(model, 3, run=1)
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    ref = cache.get(3, run=1).state
    assert all(torch.equal(v, ref[k]) for k, v in again.network.state_dict().items())
    # a cache of another network is refused before anything changes
    other = nbseg.generate_model(nbseg.ModelSpec(parameters={"filters": 8, "depth": 2}))
    with pytest.raises(nbseg.InputError, match="another network"):
        nbseg.train(other, ts, params, checkpoints=cache)


def test_a_class_never_predicted_right_is_reported_during_training():
    import types
    import warnings

    import torch

    from nbseg.training.module import SegmentationModule

    fake = types.SimpleNamespace(
        spec=types.SimpleNamespace(class_count=3),
        class_names=["matrix", "fibre", "void"],
        missed_class_epochs=SegmentationModule.missed_class_epochs,
    )
    missed = torch.tensor([[50, 2, 0], [3, 40, 0], [4, 1, 0]])  # 'void' never right
    fine = torch.tensor([[50, 2, 0], [3, 40, 0], [4, 0, 1]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for cm in (missed, missed, fine, missed, missed):  # a hit resets the count
            SegmentationModule._warn_missed_classes(fake, cm)
        assert not seen
        SegmentationModule._warn_missed_classes(fake, missed)
        SegmentationModule._warn_missed_classes(fake, missed)  # once per class and run
    assert len(seen) == 1 and issubclass(seen[0].category, UserWarning)
    text = str(seen[0].message)
    assert "'void'" in text and "3 epochs" in text and "class_balance" in text


def test_a_time_budget_still_anneals_when_the_epochs_end_first():
    """max_minutes with epochs that end well before it: the cosine follows the steps too, so
    the last epoch trains near the floor, not at the start's learning rate."""
    from nbseg.training.module import _TimeCosine

    cos = _TimeCosine(budget_s=3600.0, total_steps=10)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.505, abs=1e-3)
    assert cos(10) == pytest.approx(0.01) and cos(12) == pytest.approx(0.01)
    image, labels, _ = blobs()
    model = nbseg.generate_model(nbseg.ModelSpec(class_count=2, parameters={"filters": 4}))
    params = nbseg.TrainingParams(
        patch_size=32, batch_size=2, epochs=4, max_minutes=60.0, learning_rate=1e-3
    )
    result = nbseg.train(model, nbseg.TrainingSet(image, labels), params, feedback=False)
    lrs = result.metric("lr")
    assert lrs[0] > 0.5e-3 and lrs[-1] < 0.3e-3, lrs  # annealed by the steps, not the clock


def test_the_eta_is_capped_by_the_time_limit():
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import Timer

    from nbseg.training.callbacks import _eta

    timer = Timer(duration={"seconds": 30})
    timer.time_remaining = lambda stage: 12.0  # type: ignore[method-assign]
    assert _eta(SimpleNamespace(callbacks=[timer]), 600.0) == 12.0  # the budget ends first
    assert _eta(SimpleNamespace(callbacks=[timer]), 5.0) == 5.0  # the epochs end first
    assert _eta(SimpleNamespace(callbacks=[]), 600.0) == 600.0  # no time limit
