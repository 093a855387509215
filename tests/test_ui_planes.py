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


# -- Preview and Segment with AI ------------------------------------------------------------
def _ws(shape=(6, 32, 32), dim="2D"):
    from nbseg.ui.state import Workspace

    from .helpers import blobs, ready_model

    image, _, _ = blobs(shape)
    return Workspace(images={"vol": image}, model=ready_model(dim)), image


def test_preview_plane_is_the_plane_of_the_volume_segmentation():
    import nbseg
    from nbseg.inference.planes import preview_plane

    for dim, shape in (("2D", (6, 32, 32)), ("3D", (8, 16, 16))):
        ws, image = _ws(shape, dim)
        full = nbseg.segment(ws.model, image)
        for plane, axis in (("xz", "y"), ("yz", "x")):
            for k in (0, 5, shape[1] - 1):
                got = preview_plane(ws.model, image, plane, k)
                assert got.dims == ("z", "x" if plane == "xz" else "y")
                assert (got.values == full.isel({axis: k}).values).all(), (dim, plane, k)
        xy = preview_plane(ws.model, image, "xy", 3)
        assert (xy.values == nbseg.preview(ws.model, image, 3).values).all()


def test_preview_plane_refuses_what_does_not_fit():
    from nbseg.errors import InputError
    from nbseg.inference.planes import preview_plane

    ws, image = _ws()
    with pytest.raises(InputError, match="choose one of xy, xz, yz"):
        preview_plane(ws.model, image, "zx", 0)
    with pytest.raises(InputError, match=r"index=32 is outside 0 … 31 along 'x'"):
        preview_plane(ws.model, image, "yz", 32)
    with pytest.raises(InputError, match="only the xy plane"):
        preview_plane(ws.model, image.isel(z=0), "xz", 0)


def test_preview_panel_shows_the_yz_plane_and_drops_a_stale_preview():
    import nbseg
    from nbseg.ui.preview_panel import PreviewPanel, image_slice

    ws, image = _ws()
    panel = PreviewPanel(ws)
    assert panel.plane_row.layout.display is None
    panel.plane_buttons.value = "yz"
    assert panel.slice_slider.max == 31 and panel.slice_slider.value == 16
    assert panel.view._gray.shape == (6, 32)
    panel.slice_slider.value = 5
    panel.preview_button.click()
    assert panel.message.text.startswith("Preview of the yz plane at x = 5:"), panel.message.text
    pred = panel.prediction
    assert pred.dims == ("z", "y")
    full = nbseg.segment(ws.model, image)
    assert (pred.values == full.isel(x=5).values).all()
    assert (panel.view._labels == pred.values).all()
    assert (panel.view._gray == image_slice(image, 5, "yz")).all()
    assert (image_slice(image, 5, "yz") == image_slice(image.transpose("x", "z", "y"), 5)).all()
    panel.slice_slider.value = 6  # another slice: the preview and its message are dropped
    assert panel.prediction is None and panel.message.text == "" and panel.view._labels is None
    panel.preview(index=2, plane="xz")
    assert panel.message.text.startswith("Preview of the xz plane at y = 2:")
    assert (panel.prediction.values == full.isel(y=2).values).all()
    panel.plane_buttons.value = "xy"  # another plane: the middle slice, nothing stale
    assert panel.slice_slider.max == 5 and panel.slice_slider.value == 3
    assert panel.prediction is None and panel.message.text == ""
    panel.plane_buttons.value = "xz"
    panel.uncertainty_controls.show.value = True
    panel.preview(index=7)
    assert panel.uncertainty.dims == ("z", "x") and panel.view.layers["heat"].shape == (6, 32)


def test_segment_panel_shows_the_result_in_every_plane():
    import nbseg
    from nbseg.ui.segment_panel import SegmentPanel

    ws, image = _ws()
    panel = SegmentPanel(ws)
    panel.start()
    result = panel.wait(60)
    assert panel.status == "done", panel.message.text
    panel.plane_buttons.value = "xz"
    assert panel.slice_slider.max == 31 and panel.slice_slider.value == 16
    panel.slice_slider.value = 9
    assert (panel.view._labels == result.values[:, 9, :]).all()
    panel.plane_buttons.value = "yz"
    panel.slice_slider.value = 30
    assert (panel.view._labels == result.values[:, :, 30]).all()
    assert panel.view._gray.shape == (6, 32)
    pred = panel.preview_slice(4)
    full = nbseg.segment(ws.model, image)
    assert pred.dims == ("z", "y") and (pred.values == full.isel(x=4).values).all()
