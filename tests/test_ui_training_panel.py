"""The Training panel driven through its widgets (no browser): Train returns at once, the live
graph / feedback / list fill per epoch, exports, the checkpoint cache, Stop, errors."""

from __future__ import annotations

import re
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import nbseg
from nbseg._png import decode_png
from nbseg.ui.imageview import VIEWER_PX
from nbseg.ui.state import Workspace
from nbseg.ui.training_panel import TrainingPanel

from .helpers import blobs

pytestmark = pytest.mark.slow

TINY = {"filters": 4, "depth": 2}
EPOCHS = 4


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # the box is shared by several workers: one intra-op thread trains faster than two there
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _workspace(epochs=EPOCHS, shape=(2, 48, 48), **params):
    image, labels, _ = blobs(shape, labelled=tuple(range(shape[0])))
    spec = nbseg.ModelSpec(
        architecture="unet", class_count=2, input_dimension="2D", parameters=TINY
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(
        patch_size=32, batch_size=4, epochs=epochs, learning_rate=5e-3, **params
    )
    ws = Workspace(images={"image": image}, labels={"labels": labels}, model=model, params=params)
    ws.set_training_sets([nbseg.TrainingSet(image, labels)], validation=0.25)
    events: list[str] = []
    ws.observe(lambda event, value: events.append(event))
    return ws, model, events


def _state(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained():
    ws, model, events = _workspace()
    panel = TrainingPanel(ws)
    t0 = time.perf_counter()
    panel.train_button.click()
    click_s = time.perf_counter() - t0
    running_after_click = panel.running and panel.run is not None and panel.run.running
    stop_enabled = not panel.stop_button.disabled
    train_disabled = panel.train_button.disabled
    result = panel.wait(240)
    return {
        "panel": panel,
        "ws": ws,
        "model": model,
        "events": events,
        "result": result,
        "click_s": click_s,
        "running_after_click": running_after_click,
        "stop_enabled_while_running": stop_enabled,
        "train_disabled_while_running": train_disabled,
    }


def test_train_returns_at_once_and_publishes_result(trained):
    panel, ws, result = trained["panel"], trained["ws"], trained["result"]
    assert trained["click_s"] < 2.0 and trained["running_after_click"]
    assert trained["stop_enabled_while_running"] and trained["train_disabled_while_running"]
    assert result is not None and result.status == "completed" and panel.result is result
    assert not panel.running and not panel.run.running
    assert not panel.train_button.disabled and panel.stop_button.disabled
    assert ws.result is result and ws.model is trained["model"] is result.model
    assert "result" in trained["events"] and "model" in trained["events"]
    assert "Completed" in panel.status.value and f"{EPOCHS} epochs in" in panel.message.text
    assert panel.progress.value == panel.progress.max > 1
    assert f"Epoch {EPOCHS}/{EPOCHS}" in panel.progress_label.value
    assert "ETA" in panel.progress_label.value


def test_graph_has_one_point_per_epoch_and_marks_checkpoints(trained):
    panel, result = trained["panel"], trained["result"]
    assert panel.graph_points() == EPOCHS
    assert list(panel.lines.x) == [float(e) for e in range(1, EPOCHS + 1)]
    assert list(panel.lines.labels) == ["loss", "val_loss"]
    np.testing.assert_allclose(panel.lines.y[0], result.metric("loss"))
    np.testing.assert_allclose(panel.lines.y[1], result.metric("val_loss"))
    cached = [r["epoch"] for r in result.checkpoints.list()]
    assert EPOCHS in cached  # the last epoch is kept, and marked, too
    assert list(panel.checkpoint_marks.x) == [float(e) for e in cached]
    np.testing.assert_allclose(
        panel.checkpoint_marks.y, [result.metric("val_loss")[e - 1] for e in cached]
    )
    # metrics of the history are selectable: per-class Dice and the learning rate
    assert {"val_dice", "val_iou", "val_dice_blob", "lr"} <= set(panel.metrics.options)
    panel.metrics.value = ("loss", "val_dice_blob", "lr")
    assert list(panel.lines.labels) == ["loss", "val_dice_blob", "lr"]
    np.testing.assert_allclose(panel.lines.y[1], result.metric("val_dice_blob"))
    np.testing.assert_allclose(panel.lines.y[2], result.metric("lr"))
    # the epoch range restricts the plotted epochs
    assert not panel.epoch_range.disabled and panel.epoch_range.value == (1, EPOCHS)
    panel.epoch_range.value = (2, 3)
    assert panel.graph_points() == 2 and list(panel.lines.x) == [2.0, 3.0]
    panel.epoch_range.value = (1, EPOCHS)
    panel.metrics.value = ("loss", "val_loss")
    assert panel.graph_points() == EPOCHS


def test_feedback_image_snapshot_and_epoch_slider(trained):
    panel, result = trained["panel"], trained["result"]
    fb = result.feedback
    assert fb.epochs == list(range(1, EPOCHS + 1))
    frame = panel.feedback_view.last_frame
    assert frame is not None and frame.shape == (VIEWER_PX, VIEWER_PX, 3) and frame.std() > 0
    snap = decode_png(bytes(panel.snapshot.value))
    np.testing.assert_array_equal(snap, fb.rgb(EPOCHS, 0.5))  # the last epoch's prediction
    assert f"Run 1 · epoch {EPOCHS}" in panel.snapshot_caption.value
    assert panel.snapshot.layout.display is None  # shown once it has an image
    # scroll back to epoch 1: its own prediction is shown, and the graph marks the epoch
    assert not panel.epoch_slider.disabled
    assert [v for _, v in panel.epoch_slider.options] == [(1, e) for e in range(1, EPOCHS + 1)]
    assert panel.epoch_slider.label == f"run 1 · epoch {EPOCHS}"
    panel.epoch_slider.value = (1, 1)
    np.testing.assert_array_equal(decode_png(bytes(panel.snapshot.value)), fb.rgb(1, 0.5))
    assert list(panel.epoch_marker.x) == [1.0, 1.0]
    # opacities reach the canvas and the snapshot
    panel.prediction_opacity.value = 1.0
    np.testing.assert_array_equal(decode_png(bytes(panel.snapshot.value)), fb.rgb(1, 1.0))
    assert panel.feedback_view.opacity == 1.0
    panel.input_opacity.value = 0.2
    assert panel.feedback_view.image_opacity == 0.2
    panel.prediction_opacity.value, panel.input_opacity.value = 0.5, 1.0
    panel.epoch_slider.value = (1, EPOCHS)


def test_png_export_writes_the_chosen_epoch_large_with_a_legend(trained, tmp_path):
    panel, fb = trained["panel"], trained["result"].feedback
    panel.epoch_slider.value = (1, 2)
    assert panel.export_png_path.value.endswith("_epoch2.png")
    panel.export_png_path.value = str(tmp_path / "fb.png")
    panel.export_png_button.click()
    png = decode_png((tmp_path / "fb.png").read_bytes())
    # a 48 x 48 region: enlarged 11x (nearest) to >= 512 px, with the legend below it
    h, w = fb.image.shape
    factor = -(-512 // max(h, w))
    assert png.shape[1] == w * factor >= 512 and png.shape[0] > h * factor
    big = np.repeat(np.repeat(fb.rgb(2, 0.5), factor, axis=0), factor, axis=1)
    np.testing.assert_array_equal(png[: h * factor], big)
    legend = png[h * factor :]
    assert (legend == 255).all(axis=2).mean() > 0.5  # a white strip ...
    for color in ((0, 0, 0), (255, 0, 0)):  # ... with a swatch of each class colour
        assert (legend == color).all(axis=2).sum() >= 100
    assert "run 1 · epoch 2" in panel.message.text
    panel.export_png_path.value = str(tmp_path / "missing" / "fb.png")
    panel.export_png_button.click()
    assert "does not exist" in panel.message.text and "missing" in panel.message.text
    panel.epoch_slider.value = (1, EPOCHS)


def _data_rows(table_html):
    return re.findall(r"<tr>(.*?)</tr>", table_html.split("<tbody>")[1])


def test_list_table_digits_and_csv_export(trained, tmp_path):
    panel, result = trained["panel"], trained["result"]
    rows = _data_rows(panel.table.value)
    assert len(rows) == EPOCHS
    header = re.findall(r"<th>(.*?)</th>", panel.table.value)
    assert header[:4] == ["epoch", "lr", "loss", "val_loss"]
    loss_col = header.index("loss")
    panel.digits.value = 2
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in _data_rows(panel.table.value)]
    assert [c[0] for c in cells] == [str(e) for e in range(1, EPOCHS + 1)]
    for c, loss in zip(cells, result.metric("loss")):
        assert float(c[loss_col]) == float(f"{loss:.2g}")
    panel.digits.value = 6
    cells6 = [re.findall(r"<td>(.*?)</td>", r) for r in _data_rows(panel.table.value)]
    assert float(cells6[0][loss_col]) == float(f"{result.metric('loss')[0]:.6g}")
    panel.digits.value = 3
    panel.export_csv_path.value = str(tmp_path / "history")  # suffix added
    panel.export_csv_button.click()
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,loss,val_loss") and len(lines) == 1 + EPOCHS
    assert "\n".join(lines) + "\n" == result.to_csv(digits=3)
    cols = lines[0].split(",")
    for line in lines[1:]:
        value = float(line.split(",")[cols.index("val_loss")])
        digits = len(re.sub(r"[^0-9]", "", f"{value:e}".split("e")[0]).rstrip("0"))
        assert digits <= 3
    assert "history.csv" in panel.message.text


def test_checkpoint_load_save_copy_and_save_model(trained, tmp_path):
    panel, ws, model, result = trained["panel"], trained["ws"], trained["model"], trained["result"]
    cache = result.checkpoints
    listed = [v for _, v in panel.checkpoint_select.options]
    assert listed == [(r["run"], r["epoch"]) for r in cache.list()] and len(listed) >= 2
    assert panel.checkpoint_select.value == cache.best.key
    labels = [label for label, _ in panel.checkpoint_select.options]
    assert all(label.startswith("run 1 · epoch ") for label in labels)
    assert sum("best" in label for label in labels) == 1
    current = _state(model)
    run, other = next(k for k in listed if not _same(cache.get(k[1], k[0]).state, current))
    events_before = len(trained["events"])
    panel.checkpoint_select.value = (run, other)
    panel.load_checkpoint_button.click()
    after = _state(model)
    assert not _same(after, current) and _same(after, cache.get(other).state)
    assert ws.model is model and "model" in trained["events"][events_before:]
    assert model.history[-1]["epoch"] == other and f"epoch {other}" in panel.message.text

    assert panel.save_copy_path.value.endswith(f"_epoch{other}.nbseg")
    panel.save_copy_path.value = str(tmp_path / "copy.nbseg")
    panel.save_copy_button.click()
    copy = nbseg.load_model(tmp_path / "copy.nbseg")
    assert _same(_state(copy), cache.get(other).state) and "copy.nbseg" in panel.message.text
    assert copy.history[-1]["epoch"] == other

    panel.save_model_path.value = str(tmp_path / "trained")
    panel.save_model_button.click()
    back = nbseg.load_model(tmp_path / "trained.nbseg")
    assert _same(_state(back), after) and back.trained

    panel.save_model_path.value = "   "
    panel.save_model_button.click()
    assert "Type a file path" in panel.message.text


def test_stop_during_training_keeps_model_and_coalesces_updates():
    ws, model, _ = _workspace(epochs=400)
    before = _state(model)
    panel = TrainingPanel(ws)
    threads, label_changes, graph_changes = set(), [], []

    def watch(store):
        def handler(change):
            threads.add(threading.current_thread().name)
            store.append(time.perf_counter())

        return handler

    panel.progress_label.observe(watch(label_changes), "value")
    panel.lines.observe(watch(graph_changes), "x")
    t_start = time.perf_counter()
    panel.train_button.click()
    assert panel.running and panel.train_button.disabled and not panel.stop_button.disabled
    deadline = time.monotonic() + 120
    while panel.graph_points() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert panel.graph_points() >= 2 and panel.running  # the graph grows while training
    assert panel.feedback_view.last_frame is not None and len(panel.snapshot.value) > 0
    assert "Epoch" in panel.progress_label.value
    panel.stop_button.click()
    t_stop = time.perf_counter()
    assert "Stopping" in panel.status.value
    result = panel.wait(30)
    stop_s = time.perf_counter() - t_stop
    assert result is not None and stop_s < 10, stop_s
    assert result.status == "stopped" and panel.run.status == "stopped"
    assert len(result.history) < 400 and panel.graph_points() == len(result.history)
    assert "Stopped" in panel.status.value and "keeps its weights" in panel.message.text
    assert ws.model is model and ws.result is result and not _same(_state(model), before)
    assert not panel.train_button.disabled and panel.stop_button.disabled
    # widgets were updated by the panel's refresher (never the training thread), coalesced
    assert "nbseg-training" not in threads and "nbseg-training-ui" in threads
    elapsed = time.perf_counter() - t_start
    assert len(label_changes) <= elapsed / panel.REFRESH_S + 3
    assert len(graph_changes) <= min(len(result.history), elapsed / panel.REFRESH_S) + 3
    assert panel._listener.batches >= len(result.history) >= 2


def test_bad_state_is_explained_in_the_panel():
    panel = TrainingPanel()  # empty workspace
    panel.train_button.click()
    assert panel.run is None and "No model to train" in panel.message.text
    assert "New model" in panel.message.text

    ws, _, _ = _workspace()
    ws.set_training_sets([])
    panel = TrainingPanel(ws)
    assert "none — see Inputs" in panel.summary.value
    panel.train_button.click()
    assert panel.run is None and "No training set" in panel.message.text

    ws, _, _ = _workspace()
    ws.set_params(nbseg.TrainingParams(epochs=0))
    panel = TrainingPanel(ws)
    panel.train_button.click()
    text = panel.message.text
    assert panel.run is None and "epochs=0" in text and "Training parameters" in text

    ws, _, _ = _workspace()
    two = nbseg.generate_model(
        nbseg.ModelSpec(architecture="unet", class_count=2, input_count=2, parameters=TINY)
    )
    ws.set_model(two)
    panel = TrainingPanel(ws)
    panel.train_button.click()
    assert panel.run is None and "takes 2" in panel.message.text

    # after-training actions before any training: a message, not a traceback
    panel.export_csv_button.click()
    assert "Train first" in panel.message.text
    panel.load_checkpoint_button.click()
    assert "Train first" in panel.message.text
    assert panel.export_csv_button.disabled and panel.load_checkpoint_button.disabled


def test_training_error_is_shown_with_its_fix(monkeypatch):
    from nbseg.training import losses

    monkeypatch.setattr(
        losses.SegmentationLoss, "forward", lambda self, a, b: a.sum() * float("nan")
    )
    ws, model, _ = _workspace(epochs=3)
    before = _state(model)
    panel = TrainingPanel(ws)
    panel.train_button.click()
    panel.wait(120)
    text = panel.message.text
    assert "Training failed" in text and "loss became nan" in text
    assert "Lower the learning rate" in text  # the fix
    assert "Failed" in panel.status.value and not panel.running
    assert _same(_state(model), before)  # no good epoch: the weights from before training
    assert not panel.train_button.disabled


def test_unexpected_exception_is_shown_and_logged(monkeypatch):
    from nbseg.training import callbacks

    def boom(*args, **kwargs):
        raise RuntimeError("feedback exploded")

    monkeypatch.setattr(callbacks, "feedback_prediction", boom)
    ws, _, events = _workspace(epochs=2)
    panel = TrainingPanel(ws)
    panel.train_button.click()
    result = panel.wait(120)  # the run failed inside the first epoch: nothing trained
    assert result is None or (result.status == "failed" and not result.history)
    text = panel.message.text
    assert "Training failed: RuntimeError: feedback exploded" in text and "Log" in text
    assert "Traceback" not in text
    log = "\n".join(panel.log_lines)
    assert "Traceback" in log and "feedback exploded" in log
    assert panel.run.status == "failed" and not panel.running and "result" not in events


def test_training_thread_warnings_go_to_the_panel_not_stderr(monkeypatch):
    from nbseg.training import job

    def warning_train(*args, **kwargs):  # warns on the run's thread, then fails at once
        warnings.warn("routed to the panel", UserWarning, stacklevel=1)
        warnings.warn("memory ratio 1.4", ResourceWarning, stacklevel=1)
        raise nbseg.TrainingError("stopped by the test")

    monkeypatch.setattr(job, "train", warning_train)
    ws, _, _ = _workspace(epochs=1)
    panel = TrainingPanel(ws)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel.train_button.click()
        panel.wait(60)
        warnings.warn("main thread warning", UserWarning, stacklevel=1)
    assert panel.run.warnings == ["routed to the panel", "memory ratio 1.4"]
    log = "\n".join(panel.log_lines)
    assert "UserWarning: routed to the panel" in log and "ResourceWarning: memory ratio" in log
    assert panel.log_box.titles == ("Log (2 warning(s))",)
    assert "Training failed: stopped by the test" in panel.message.text
    assert [str(w.message) for w in caught] == ["main thread warning"]


def test_two_runs_keep_one_cache_a_stop_mid_epoch_is_partial(monkeypatch):
    """The reported session: run 1 trains, run 2 is stopped inside an epoch. The stop is
    reported as a partial epoch, run 1's checkpoints stay loadable, "best" is the best of
    both runs, every cached state is marked, and the Epoch slider spans both runs."""
    from nbseg.ui import training_panel

    ws, model, _ = _workspace(epochs=2)
    panel = TrainingPanel(ws)
    first = panel.start() and panel.wait(120)
    assert first is not None and first.status == "completed"
    cache = panel.checkpoint_cache
    assert cache is first.checkpoints and cache.keys[-1] == (1, 2)

    class _StopsInEpoch4(training_panel.PanelListener):  # Stop at batch 2 of epoch 4
        def on_batch_end(self, progress):
            super().on_batch_end(progress)
            if progress["epoch"] == 4 and progress["batch"] == 2:
                panel.stop_button.click()

    monkeypatch.setattr(training_panel, "PanelListener", _StopsInEpoch4)
    ws.set_params(nbseg.TrainingParams(patch_size=32, batch_size=2, epochs=3, learning_rate=5e-3))
    second = panel.start() and panel.wait(120)
    assert second is not None and second.status == "stopped" and second.run == 2
    n = second.history[-1]["epoch_batches"]
    assert [(r["run"], r["epoch"]) for r in model.history] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert second.history[-1]["batches"] == 2 < n
    # the message counts the stopped epoch as its batches, never as a whole epoch
    text = panel.message.text
    assert f"Stopped after 1 epoch + 2/{n} batches" in text, text
    assert f"(3 epochs + 2/{n} batches trained in all)" in text, text
    assert model.epochs_trained == 3
    assert f"trained 3 epochs + 2/{n} batches" in panel.summary.value
    # one cache for both runs: run 1's states are still there and named by run and epoch
    assert panel.checkpoint_cache is cache is second.checkpoints
    assert (1, 2) in cache.keys and (2, 4) in cache.keys
    options = dict((v, label) for label, v in panel.checkpoint_select.options)
    assert list(options) == cache.keys
    assert options[(1, 2)].startswith("run 1 · epoch 2")
    assert options[(2, 4)].startswith(f"run 2 · epoch 4 (2/{n} batches)")
    values = {(r["run"], r["epoch"]): r["val_loss"] for r in cache.list()}
    best = min(values, key=values.get)
    assert panel.checkpoint_select.value == best == cache.best.key
    assert [k for k, label in options.items() if "best" in label] == [best]
    # a marker for every cached state (the last epoch too) ...
    assert sorted(panel.checkpoint_marks.x) == sorted(float(e) for _, e in cache.keys)
    assert 4.0 in list(panel.checkpoint_marks.x)
    # ... and the List's ◆ exactly on the epochs that can be loaded
    rows = _data_rows(panel.table.value)
    header = re.findall(r"<th>(.*?)</th>", panel.table.value)
    col = header.index("checkpoint")
    marked = [
        (r["run"], r["epoch"])
        for r, cells in zip(model.history, rows)
        if "◆" in re.findall(r"<td>(.*?)</td>", cells)[col]
    ]
    assert marked == cache.keys
    assert re.findall(r"<td>(.*?)</td>", rows[-1])[0] == f"4 (2/{n})"
    # the Epoch slider scrolls over both runs' feedback images
    assert [v for _, v in panel.epoch_slider.options] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    panel.epoch_slider.value = (1, 1)
    np.testing.assert_array_equal(
        decode_png(bytes(panel.snapshot.value)), first.feedback.rgb(1, 0.5)
    )
    assert list(panel.epoch_marker.x) == [1.0, 1.0]
    # run 1's state loads into the model
    panel.checkpoint_select.value = (1, 2)
    panel.load_checkpoint_button.click()
    state = cache.get(2, run=1).state
    assert all(torch.equal(v, state[k]) for k, v in model.network.state_dict().items())
    assert [(r["run"], r["epoch"]) for r in model.history] == [(1, 1), (1, 2)]
    # the x axis: each epoch once
    ticks = list(panel.graph.x_axis.tick_values)
    assert ticks == [1.0, 2.0, 3.0, 4.0]
    # no library Future/Deprecation warning is listed as the user's
    assert not any(c in ("FutureWarning", "DeprecationWarning") for c, _ in panel.run.warning_log)
    assert all("FutureWarning" not in line for line in panel.log_lines)


def test_a_new_model_starts_a_new_session():
    ws, model, _ = _workspace(epochs=1)
    panel = TrainingPanel(ws)
    assert panel.snapshot.layout.display == "none"  # no broken image before any feedback
    assert panel.start() and panel.wait(120)
    cache = panel.checkpoint_cache
    other = nbseg.generate_model(model.spec)
    ws.set_model(other)
    assert panel.start() and panel.wait(120)
    assert panel.checkpoint_cache is not cache and panel.checkpoint_cache.runs == [1]
    assert len(panel.feedback_histories) == 1
