"""Orthogonal views (issue 16): the Label tab shows and paints the xy, xz and yz planes of a
volume (writing the right voxels, one undo step each); the status line names the plane,
the slice (1-based, "of n") and the current class."""

import numpy as np
import pytest
import xarray as xr

from nbseg.ui.labelling import LabelEditor, plane_of


def _image(shape=(6, 32, 40), seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.normal(100, 20, shape).astype(np.float32), dims=("z", "y", "x")[-len(shape) :]
    )


def _capsule(shape, p0, p1, r):
    y, x = np.indices(shape).astype(float)
    (ay, ax), (by, bx) = p0, p1
    dy, dx = by - ay, bx - ax
    t = np.clip(((y - ay) * dy + (x - ax) * dx) / (dy * dy + dx * dx), 0, 1)
    return (y - ay - t * dy) ** 2 + (x - ax - t * dx) ** 2 <= r * r + 1e-6


def _event(ed, kind, y, x):
    cy, cx = ed.view.view.to_canvas(y, x)
    ed.view.canvas._handle_frontend_event(None, {"event": f"mouse_{kind}", "x": cx, "y": cy}, [])


def test_plane_of_is_a_view_of_the_volume():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert (plane_of(vol, "xy", 1) == vol[1]).all()
    assert (plane_of(vol, "xz", 2) == vol[:, 2, :]).all()
    assert (plane_of(vol, "yz", 3) == vol[:, :, 3]).all()
    plane_of(vol, "xz", 0)[1, 2] = -7
    assert vol[1, 0, 2] == -7


def test_painting_in_the_xz_plane_writes_the_voxels_of_that_plane():
    ed = LabelEditor(_image())
    ed.plane_buttons.value = "xz"  # as a click does
    assert ed.plane == "xz" and ed.slice_slider.max == 31 and ed.z == 16
    ed.slice_slider.value = 10
    assert ed.view._gray.shape == (6, 40)  # rows z, columns x
    n = ed.paint(None, [(1, 5), (1, 30)], cls=1, radius=1)
    expected = _capsule((6, 40), (1, 5), (1, 30), 1)
    values = ed.labels.values
    assert n == expected.sum() and ((values[:, 10, :] == 1) == expected).all()
    assert (np.delete(values, 10, axis=1) == -1).all()
    ed.set_plane("xy")
    assert ed.z == 3 and ed.view._gray.shape == (32, 40)  # where xy was last shown
    assert ed.undo()  # the xz stroke: shown where it was made
    assert ed.plane == "xz" and ed.z == 10 and (ed.labels.values == -1).all()
    assert ed.redo() and ((ed.labels.values[:, 10, :] == 1) == expected).all()


def test_pointer_stroke_fill_and_unlabelled_in_the_yz_plane():
    ed = LabelEditor(_image())
    ed.set_plane("yz", 7)
    ed.brush_size.value = 1
    _event(ed, "down", 2.5, 3.5)  # image coords: row z=2, column y=3 (pixel centres)
    _event(ed, "move", 2.5, 20.5)
    _event(ed, "up", 2.5, 20.5)
    expected = _capsule((6, 32), (2, 3), (2, 20), 1)
    assert ((ed.labels.values[:, :, 7] == 1) == expected).all()
    assert (np.delete(ed.labels.values, 7, axis=2) == -1).all() and ed.undo_count == 1
    ed.select_class(0)
    ed.tool.value = "fill"
    _event(ed, "down", 0.5, 0.5)  # the unlabelled region around the stroke
    plane = ed.labels.values[:, :, 7]
    assert (plane[expected] == 1).all() and (plane[~expected] == 0).all()
    assert (np.delete(ed.labels.values, 7, axis=2) == -1).all() and ed.undo_count == 2
    ed.undo()
    ed.set_plane("yz", 8)
    assert ed.add_unlabelled(1, "slice") == 6 * 32
    assert (ed.labels.values[:, :, 8] == 1).all() and (ed.labels.values[:, :, 9] == -1).all()


def test_status_line_names_plane_slice_and_the_current_class():
    ed = LabelEditor(_image((16, 32, 40)))
    assert "xy plane · z = 8 (slice 9 of 16)" in ed.info.value
    ed.slice_slider.value = 15
    assert "z = 15 (slice 16 of 16)" in ed.info.value
    assert "class: class 1" in ed.info.value
    ed.class_select.value = 0  # a choice in the dropdown
    assert "class: background" in ed.info.value
    ed.class_rows.children[0].children[2].value = "matrix"  # renamed in its row
    assert "class: matrix" in ed.info.value and "background" not in ed.info.value
    ed.plane_buttons.value = "yz"
    assert "yz plane · x = 20 (slice 21 of 40)" in ed.info.value


def test_a_2d_image_has_only_the_xy_plane():
    ed = LabelEditor(_image((32, 40)))
    assert ed.plane_row.layout.display == "none" and ed.slice_row.layout.display == "none"
    assert "plane" not in ed.info.value
    with pytest.raises(Exception, match="only the xy plane"):
        ed.set_plane("xz")
    ed.plane_buttons.value = "yz"
    assert "only the xy plane" in ed.message.text and ed.plane == "xy"


def test_suggestion_layers_follow_the_plane_and_a_suggested_slice_returns_to_xy():
    from nbseg.inference.uncertainty import Region, Suggestions

    image = _image()
    ed = LabelEditor(image)
    u = np.zeros(image.shape, np.float32)
    u[:, 10, :] = 0.9  # unsure along one y row of every slice
    pred = xr.DataArray(np.ones(image.shape, np.int16), dims=image.dims)
    ed.suggestions = Suggestions(
        "z", [2], [0.9], [Region(2, 8, 12, 0, 8, 0.9)], xr.DataArray(u, dims=image.dims), pred
    )
    ed.set_plane("xz", 10)
    layers = ed.view.layers
    assert layers["outline"].shape == (6, 40) and layers["outline"].all()
    assert layers["under"].shape == (6, 40) and layers["region"] is None
    ed.set_plane("yz", 3)
    assert (ed.view.layers["outline"] == (np.arange(32) == 10)[None, :]).all()
    ed.jump_to(Region(2, 8, 12, 0, 8, 0.9))
    assert ed.plane == "xy" and ed.z == 2 and ed.view.layers["region"] == (8, 12, 0, 8)
