"""LabelEditor: strokes, eraser, fill, undo/redo, classes, workspace, incremental canvas."""

import numpy as np
import pytest
import xarray as xr

from nbseg.data.multiroi import multi_roi
from nbseg.render import View, render_overlay
from nbseg.ui.imageview import ImageView
from nbseg.ui.labelling import LabelEditor
from nbseg.ui.state import Workspace


def _image(shape=(5, 64, 80), seed=0):
    rng = np.random.default_rng(seed)
    dims = ("z", "y", "x")[-len(shape) :]
    coords = {d: np.arange(n) * 0.5 for d, n in zip(dims, shape)}
    return xr.DataArray(
        rng.normal(100, 20, shape).astype(np.float32), dims=dims, coords=coords, name="img"
    )


def _disk(shape, cy, cx, r):
    y, x = np.indices(shape)
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r + 1e-6


def _capsule(shape, p0, p1, r):
    y, x = np.indices(shape).astype(float)
    (ay, ax), (by, bx) = p0, p1
    dy, dx = by - ay, bx - ax
    t = np.clip(((y - ay) * dy + (x - ax) * dx) / (dy * dy + dx * dx), 0, 1)
    return (y - ay - t * dy) ** 2 + (x - ax - t * dx) ** 2 <= r * r + 1e-6


def _event(view, kind, y, x):
    """Send a canvas mouse event at image point (y, x) as the browser would."""
    cy, cx = view.view.to_canvas(y, x)
    view.canvas._handle_frontend_event(None, {"event": f"mouse_{kind}", "x": cx, "y": cy}, [])


def test_labels_share_image_geometry_and_start_unlabelled():
    im = _image()
    ed = LabelEditor(im)
    lab = ed.labels
    assert lab.dims == im.dims and lab.shape == im.shape and lab.dtype == np.int16
    assert (lab.x.values == im.x.values).all() and (lab.values == -1).all()
    assert lab.attrs["class_names"] == ["background", "class 1"]
    assert len(lab.attrs["class_colors"]) == 2 and ed.z == 2 and ed.message.text == ""


def test_paint_api_stroke_changes_exactly_the_capsule():
    ed = LabelEditor(_image())
    n = ed.paint(1, [(10, 10), (10, 40), (30, 40)], cls=1, radius=3)
    expected = _capsule((64, 80), (10, 10), (10, 40), 3) | _capsule((64, 80), (10, 40), (30, 40), 3)
    got = ed.labels.values[1] == 1
    assert (got == expected).all() and n == expected.sum()
    others = np.delete(ed.labels.values, 1, axis=0)
    assert (others == -1).all() and (ed.labels.values[1][~expected] == -1).all()


def test_pointer_stroke_interpolates_between_move_events_and_is_one_undo_step():
    ed = LabelEditor(_image())
    ed.brush_size.value = 2
    ed.select_class(1)
    v = ed.view
    # image coordinates: pixel (i, j) has its centre at (i + 0.5, j + 0.5)
    _event(v, "down", 20.5, 10.5)
    _event(v, "move", 20.5, 50.5)  # one big jump: the segment between must be painted
    _event(v, "up", 20.5, 50.5)
    expected = _capsule((64, 80), (20, 10), (20, 50), 2)
    assert ((ed.labels.values[ed.z] == 1) == expected).all()
    assert ed.undo_count == 1
    # the eraser sets -1 along its stroke
    ed.tool.value = "eraser"
    _event(v, "down", 20.5, 30.5)
    _event(v, "up", 20.5, 30.5)
    erased = _disk((64, 80), 20, 30, 2)
    assert ((ed.labels.values[ed.z] == 1) == (expected & ~erased)).all()
    assert (ed.labels.values[ed.z][erased] == -1).all()
    # moving without the button down paints nothing
    before = ed.labels.values.copy()
    ed.tool.value = "brush"
    _event(v, "move", 40.5, 40.5)
    assert (ed.labels.values == before).all() and v.cursor is not None
    assert ed.undo() and ed.undo()
    assert (ed.labels.values == -1).all()


def test_the_stroke_reaches_the_point_where_the_button_rose():
    """The last segment of a drag (last move → release) is painted: the end does not lag."""
    ed = LabelEditor(_image())
    ed.brush_size.value = 1
    ed.select_class(1)
    v = ed.view
    _event(v, "down", 10.5, 10.5)
    _event(v, "move", 10.5, 20.5)
    _event(v, "up", 10.5, 40.5)  # released further on, with no move event in between
    assert ed.labels.values[ed.z][10, 40] == 1 and ed.labels.values[ed.z][10, 30] == 1
    assert ed.undo_count == 1


def test_pointer_stroke_renders_only_the_dirty_region_and_matches_a_full_redraw():
    ed = LabelEditor(_image((1, 256, 256)), width=256, height=256)
    ed.brush_size.value = 3
    sent = []
    orig = ed.view.canvas.put_image_data
    ed.view.canvas.put_image_data = lambda a, x=0, y=0: (
        sent.append((a.shape, x, y)),
        orig(a, x, y),
    )
    _event(ed.view, "down", 100.5, 100.5)
    _event(ed.view, "move", 104.5, 110.5)
    _event(ed.view, "up", 104.5, 110.5)
    assert sent and all(s[0][0] < 40 and s[0][1] < 40 for s in sent)
    assert all(s[1] > 80 and s[2] > 80 for s in sent)
    np.testing.assert_array_equal(ed.view.last_frame, ed.view.frame())


def test_fill_connected_region_on_the_slice():
    ed = LabelEditor(_image())
    lab = ed.labels.values
    lab[2, 10:20, 10:20] = 1  # a square of class 1 ...
    lab[2, 40:45, 40:45] = 1  # ... and another one not connected to it
    n = ed.fill(2, 12, 12, cls=0)
    assert n == 100 and (lab[2, 10:20, 10:20] == 0).all() and (lab[2, 40:45, 40:45] == 1).all()
    # filling the unlabelled background stops at labelled voxels and at the slice
    n = ed.fill(2, 0, 0, cls=1)
    assert n == 64 * 80 - 100 - 25 and (lab[2, 10:20, 10:20] == 0).all()
    assert (lab[1] == -1).all() and (lab[3] == -1).all()
    ed.undo()
    assert (lab[2] == -1).sum() == 64 * 80 - 125
    # fill via a pointer click
    ed.tool.value = "fill"
    ed.select_class(1)
    _event(ed.view, "down", 15.5, 15.5)
    assert (lab[2, 10:20, 10:20] == 1).all()


def test_undo_redo_restore_and_are_bounded():
    ed = LabelEditor(_image())
    ed.paint(0, [(5, 5)], 1, 2)
    after_first = ed.labels.values.copy()
    ed.paint(0, [(5, 8), (20, 8)], 0, 1)
    after_second = ed.labels.values.copy()
    assert ed.undo() and (ed.labels.values == after_first).all()
    assert ed.undo() and (ed.labels.values == -1).all()
    assert not ed.undo() and ed.undo_button.disabled and not ed.redo_button.disabled
    assert ed.redo() and ed.redo() and (ed.labels.values == after_second).all()
    assert not ed.redo()
    ed.undo()
    ed.paint(0, [(40, 40)], 1, 1)  # a new edit drops the redo history
    assert ed.redo_count == 0
    ed.max_undo_steps = 3
    for i in range(6):
        ed.paint(0, [(i * 5, 60)], 1, 1)
    assert ed.undo_count == 3
    # undo shows the slice it changes
    ed.paint(4, [(3, 3)], 1, 1)
    ed.set_slice(1)
    ed.undo()
    assert ed.z == 4 and ed.slice_slider.value == 4


def test_classes_add_rename_recolour_update_attrs_and_reject_bad_input():
    ws = Workspace()
    ed = LabelEditor(_image(), workspace=ws, class_names=["matrix", "fibre"])
    assert ed.labels.attrs["class_names"] == ["matrix", "fibre"]
    k = ed.new_class("pore", "#00FF00")
    assert k == 2 and ed.current_class == 2
    assert ed.labels.attrs["class_names"] == ["matrix", "fibre", "pore"]
    assert ed.labels.attrs["class_colors"][2] == "#00ff00"
    ed.rename_class(0, "resin")
    ed.recolor_class(1, "#123456")
    assert ed.labels.attrs["class_names"][0] == "resin"
    assert ed.labels.attrs["class_colors"][1] == "#123456"
    assert ws.labels["labels"].attrs["class_names"] == ["resin", "fibre", "pore"]
    assert len(ed.class_rows.children) == 3
    # the overlay uses the new colour
    ed.paint(ed.z, [(30, 30)], 1, 4)
    g = ed.view._gray[30:31, 30:31]
    expected = render_overlay(g, np.array([[1]], np.int16), ["#000000", "#123456"], 0.5)
    assert ed.view._colors[1] == "#123456"
    assert (ed.view.last_frame == expected[0, 0]).all(axis=-1).any()
    # via the widgets: the text field renames, a bad colour is refused with a message
    name_text = ed.class_rows.children[1].children[2]
    name_text.value = "fibres"
    assert ed.class_names[1] == "fibres"
    picker = ed.class_rows.children[2].children[3]
    picker.value = "green"
    assert "#rrggbb" in ed.message.text and ed.class_colors[2] == "#00ff00"
    ed.class_rows.children[0].children[2].value = "pore"
    assert "already used by class 2" in ed.message.text and ed.class_names[0] == "resin"
    ed.new_class_name.value = "crack"
    ed.add_class_button.click()
    assert ed.class_names[-1] == "crack" and ed.new_class_name.value == ""
    ed.unlabelled_slice_button.click()  # (class 3 = crack) is fine
    assert ed.message.text == ""
    with pytest.raises(Exception, match="does not exist"):
        ed.paint(ed.z, [(1, 1)], cls=9)


def test_workspace_gets_live_labels_and_events():
    im = _image()
    ws = Workspace(images={"img": im})
    events = []
    ws.observe(lambda e, v: events.append((e, v)))
    ed = LabelEditor(workspace=ws, name="scribbles")  # picks the workspace image
    assert ed.image is ws.images["img"] and ed.image_select.value == "img"
    assert ws.labels["scribbles"] is ed.labels and ("labels", "scribbles") in events
    events.clear()
    ed.paint(2, [(10, 10), (10, 20)], 1, 2)
    assert events == [("labels", "scribbles")]
    assert (ws.labels["scribbles"].values[2, 10, 15]) == 1
    # still a valid multi-ROI for the Inputs panel
    roi = multi_roi(ws.labels["scribbles"])
    assert roi.attrs["class_names"] == ["background", "class 1"]
    assert ws.compatible("labels", "img") == ["scribbles"]
    # renaming moves the entry
    ed.name_text.value = "mine"
    assert "scribbles" not in ws.labels and ws.labels["mine"] is ed.labels
    # a second editor on the same workspace name edits the existing labels
    ed2 = LabelEditor(workspace=ws, name="mine")
    assert ed2.labels.values[2, 10, 15] == 1


def test_add_unlabelled_voxels_of_slice_and_volume_to_class():
    ed = LabelEditor(_image())
    ed.paint(2, [(10, 10)], 1, 3)
    n = ed.add_unlabelled(0, "slice")
    lab = ed.labels.values
    assert n == 64 * 80 - (lab[2] == 1).sum() and (lab[2] >= 0).all() and (lab[1] == -1).all()
    n = ed.add_unlabelled(0, "volume")
    assert n == 4 * 64 * 80 and (lab >= 0).all()
    ed.undo()
    assert (lab[1] == -1).all() and (lab[2] >= 0).all()
    ed.undo()
    assert (lab[2] == 1).sum() == _disk((64, 80), 10, 10, 3).sum() and (lab[2] != 0).all()
    assert ed.add_unlabelled(0, "slice") > 0 and ed.undo()
    ed.select_class(1)
    ed.unlabelled_volume_button.click()
    assert (lab == 1).all()


def test_2d_image_slice_scroll_contrast_and_messages():
    im2 = _image((40, 50))
    ed = LabelEditor(im2)
    assert ed.labels.dims == ("y", "x") and ed.slice_row.layout.display == "none"
    ed.paint(None, [(5, 5)], 1, 1)
    assert (ed.labels.values == 1).sum() == 5
    ed.slice_slider.value = 0
    ed._ui(ed.set_slice, 3)
    assert "outside 0 … 0" in ed.message.text
    # a volume: the slice slider shows slices and the contrast windows the image
    ed = LabelEditor(_image())
    ed.labels.values[4, :5, :5] = 1
    ed.slice_slider.value = 4
    assert ed.z == 4 and (ed.view._labels[:5, :5] == 1).all()
    lo = ed.contrast.value[0]
    ed.contrast.value = (lo, lo + 1e-3)
    assert (ed.view._gray[ed.view._gray > 0] == 255).mean() > 0.9
    # labels of another geometry: a message, not a traceback
    bad = LabelEditor(_image(), labels=xr.DataArray(np.zeros((3, 3), np.int16), dims=("y", "x")))
    assert "shape (3, 3)" in bad.message.text and bad.labels is None
    assert "No image" in LabelEditor().message.text


def test_existing_labels_are_copied_and_validated():
    im = _image((2, 16, 16))
    lab = xr.DataArray(np.full((2, 16, 16), 255, np.uint8), dims=im.dims, coords=im.coords)
    lab.attrs.update(unlabelled=255, class_names=["a", "b", "c"])
    lab.values[0, 0, 0] = 2
    ed = LabelEditor(im, labels=lab)
    assert ed.labels.values[0, 0, 0] == 2 and ed.labels.values[1, 0, 0] == -1
    assert ed.class_names == ["a", "b", "c"] and ed.labels.dtype == np.int16
    ed.paint(0, [(8, 8)], 1, 1)
    assert lab.values[0, 8, 8] == 255  # the caller's array is untouched


@pytest.mark.parametrize("zoom", [1.0, 2.7, 0.6])
def test_imageview_frame_and_partial_redraw_equal_full_render(zoom):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (90, 70)).astype(np.uint8)
    labels = rng.integers(-1, 3, (90, 70)).astype(np.int16)
    v = ImageView(200, 160)
    v.show(gray, labels, ["#ff0000", "#00ff00", "#0000ff"])
    v.view.zoom_at(zoom, 50, 40)
    v.view.pan(7, -3)
    ref = View(gray.shape, v.canvas_shape, v.view.zoom, v.view.center).render(v.compose())
    np.testing.assert_array_equal(v.frame(), ref)
    v.redraw()
    labels[20:30, 10:25] = 2
    v.redraw_region((20, 30, 10, 25), cursor=(25.0, 15.0, 4.0))
    np.testing.assert_array_equal(v.last_frame, v.frame())
