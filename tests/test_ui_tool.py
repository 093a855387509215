"""The composed Deep Learning Tool: the workflow a user clicks through, end to end, with no
browser — generate a model in *New model*, paint in *Label*, the *Inputs* tab picks the labels
up, *Train* trains, *Segment with AI* segments."""

from __future__ import annotations

import numpy as np
import pytest

import nbseg
from nbseg.ui.tool import TAB_TITLES

from .helpers import blobs

pytestmark = pytest.mark.slow


def test_tabs_and_entry_points():
    ds = nbseg.datasets.fibres(shape=(4, 48, 48))
    tool = nbseg.DeepLearningTool(images={"img": ds.image}, labels={"lab": ds.labels})
    assert [tool.tabs.get_title(i) for i in range(len(TAB_TITLES))] == list(TAB_TITLES)
    assert tool.tabs.selected_index == TAB_TITLES.index("New model")  # no model yet
    assert "no model yet" in tool.status.value
    tool.select("Label")
    assert tool.tabs.selected_index == TAB_TITLES.index("Label")
    with pytest.raises(ValueError, match="tabs are"):
        tool.select("Nope")
    # training without a model explains what to do instead of failing silently
    assert tool.train() is None
    assert "model" in tool.training.message.text.lower()


def test_click_through_generate_paint_train_segment(tmp_path):
    image, _, truth = blobs(shape=(3, 48, 48), labelled=())
    tool = nbseg.DeepLearningTool(images={"blobs": image}, tab="New model")
    gen = tool.generator
    gen.class_count.value = 2
    gen.parameter_fields["filters"].value = 4
    gen.parameter_fields["depth"].value = 2
    gen.generate_button.click()
    assert tool.model is not None, gen.message.text
    assert "unet" in tool.status.value

    # paint every voxel of slice 1 from the truth with the label editor's API (= mouse strokes)
    editor = tool.labelling
    assert editor.labels.shape == image.shape
    for cls in (0, 1):
        ys, xs = np.nonzero(truth.values[1] == cls)
        editor.paint(1, list(zip(ys.tolist(), xs.tolist())), cls, 0.5)
    assert (editor.labels.values[1] >= 0).all() and (editor.labels.values[0] < 0).all()
    tool.inputs.apply()
    assert len(tool.workspace.training_sets) == 1, tool.inputs.message.text

    p = tool.parameters
    p.epochs.value = 3
    p.patch_size.value = "16"
    p.batch_size.value = 4
    assert tool.workspace.params.epochs == 3, p.message.text
    run = tool.train()
    assert run is not None, tool.training.message.text
    result = tool.wait(120)
    assert result is not None and result.status == "completed"
    assert tool.training.graph_points() == 3
    assert tool.model.epochs_trained == 3
    assert "3 epochs trained" in tool.status.value

    # "export this training as a config" gives what `nbseg train` runs
    path = tool.training.export_config(tmp_path / "run" / "train.yaml")
    cfg = nbseg.load_config(path)
    assert cfg.build_model().spec == tool.model.spec
    (ts,) = cfg.build_training_sets()
    np.testing.assert_array_equal(ts.labels_volume(), editor.labels.values)
    assert cfg.params.epochs == 3

    seg = tool.segmenter
    seg.segment_button.click()
    seg.wait(60)
    assert seg.result is not None, seg.message.text
    assert seg.result.dims == image.dims and seg.result.shape == image.shape
