"""The Training panel's views as widget models (no training, no browser): whole-epoch graph
ticks, a marker per cached state, the List's ◆ only on loadable epochs, partial epochs, the
feedback slider over several runs, no broken image before the first feedback."""

from __future__ import annotations

import numpy as np
import pytest

from nbseg._png import decode_png
from nbseg.training.callbacks import FeedbackHistory
from nbseg.ui.style import MessageBox
from nbseg.ui.training.feedback import FeedbackView
from nbseg.ui.training.graph import GraphView, epoch_ticks
from nbseg.ui.training.table import TableView


def _rows(epochs, run=1, **extra):
    return [
        {"epoch": e, "run": run, "loss": 1.0 / e, "val_loss": 1.2 / e, "checkpoint": True, **extra}
        for e in epochs
    ]


def _no_result(what):
    raise AssertionError(what)


@pytest.mark.parametrize("last", [1, 2, 4, 7, 12, 40, 400, 2500])
def test_epoch_ticks_are_whole_unique_epochs(last):
    ticks = epoch_ticks(1, last)
    assert ticks == sorted(set(ticks)) and all(isinstance(t, int) for t in ticks)
    assert 1 <= len(ticks) <= 10 and ticks[0] >= 1 and ticks[-1] <= last
    if last <= 10:
        assert ticks == list(range(1, last + 1))


def test_graph_axis_shows_each_epoch_once():
    graph = GraphView()
    graph.show(_rows(range(1, 5)))
    # d3's default ticks (1, 1.2, 1.4 ...) printed with "d" read "1 1 1 2 2 2 2 3"
    assert list(graph.x_axis.tick_values) == [1.0, 2.0, 3.0, 4.0]
    assert graph.x_axis.tick_format == "d"
    assert graph._x_scale.min < 1 and graph._x_scale.max > 4  # the end markers are inside
    graph.show(_rows(range(1, 301)))
    ticks = list(graph.x_axis.tick_values)
    assert len(ticks) == len(set(ticks)) <= 10 and all(t == int(t) for t in ticks)
    graph.show(_rows([1]))
    assert list(graph.x_axis.tick_values) == [1.0]


def test_every_cached_state_is_marked_even_the_last_and_other_runs():
    graph = GraphView()
    rows = _rows([1, 2, 3]) + _rows([4, 5], run=2)
    cached = [
        {"run": 1, "epoch": 3, "metrics": {"val_loss": 0.4}},
        {"run": 2, "epoch": 5, "metrics": {"val_loss": 0.24}},  # the last epoch
        {"run": 3, "epoch": 4, "metrics": {"val_loss": 0.9}},  # a branch not in the history
    ]
    graph.show(rows, cached, "val_loss")
    assert list(graph.checkpoint_marks.x) == [3.0, 5.0, 4.0]
    # on the history's line where the row is of that run and epoch, else its own value
    np.testing.assert_allclose(graph.checkpoint_marks.y, [1.2 / 3, 1.2 / 5, 0.9])


def test_list_marks_only_loadable_epochs_and_partial_epochs():
    table = TableView(MessageBox(), _no_result)
    partial = {"epoch": 4, "run": 2, "loss": 0.3, "batches": 7, "epoch_batches": 16}
    rows = [*_rows([1, 2, 3]), {**partial, "checkpoint": True}]
    table.show(rows, loadable=[(1, 3), (2, 4)])
    body = table.table.value.split("<tbody>")[1]
    cells = [r.split("</td><td>") for r in body.split("<tr>")[1:]]
    header = table.table.value.split("<tbody>")[0]
    assert "<th>batches</th>" not in header and "<th>epoch_batches</th>" not in header
    col = [h.split("</th>")[0] for h in header.split("<th>")[1:]].index("checkpoint")
    marks = ["◆" in c[col] for c in cells]
    # every row says checkpoint=True in its history, but only 1·3 and 2·4 are in the cache
    assert marks == [False, False, True, True]
    assert cells[3][0].endswith("4 (7/16)")


def _history(run, epochs, value):
    image = np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (12, 1))
    preds = {e: np.full((12, 20), value, np.uint8) for e in epochs}
    return FeedbackHistory(
        slice_index=0,
        box=(0, 12, 0, 20),
        image=image,
        truth=np.zeros((12, 20), np.int16),
        class_colors=["#000000", "#ff0000"],
        predictions=preds,
        class_names=["background", "cell"],
        run=run,
    )


def test_feedback_slider_spans_runs_and_no_broken_image_before_feedback():
    view = FeedbackView(MessageBox(), _no_result)
    # an Image widget without a value is a broken-image icon: hidden until there is one
    assert view.snapshot.layout.display == "none" and not view.snapshot.value
    assert "No feedback yet" in view.snapshot_caption.value
    first, second = _history(1, [1, 2], 0), _history(2, [3, 4], 1)
    view.fill([first, second])
    assert view.frames == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert [label for label, _ in view.epoch_slider.options][-1] == "run 2 · epoch 4"
    assert view.chosen == (2, 4) and view.snapshot.layout.display is None
    view.epoch_slider.disabled = False
    view.epoch_slider.value = (1, 2)
    np.testing.assert_array_equal(decode_png(bytes(view.snapshot.value)), first.rgb(2, 0.5))
    assert "Run 1 · epoch 2" in view.snapshot_caption.value
    view.reset(["#000000", "#ff0000"])
    assert view.snapshot.layout.display == "none"


def test_feedback_figure_is_large_with_a_legend():
    fb = _history(1, [1], 1)
    image = fb.figure(1)
    assert image.shape[1] == 20 * 26 >= 512 and image.shape[0] > 12 * 26
    np.testing.assert_array_equal(
        image[: 12 * 26], np.repeat(np.repeat(fb.rgb(1), 26, axis=0), 26, axis=1)
    )
    legend = image[12 * 26 :]
    assert (legend == (255, 0, 0)).all(axis=2).sum() >= 100  # the "cell" swatch
    assert (legend == (0, 0, 0)).all(axis=2).sum() > 0  # the text
    big = _history(1, [1], 1)
    big.image = np.zeros((600, 700), np.uint8)
    big.predictions = {1: np.zeros((600, 700), np.uint8)}
    assert big.figure(1, legend=False).shape == (600, 700, 3)  # native when larger
