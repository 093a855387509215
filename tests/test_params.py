import numpy as np
import pytest

import nbseg
from nbseg.training.params import class_weight_vector


@pytest.mark.parametrize(
    "change, match",
    [
        ({"patch_size": 2}, "patch_size"),
        ({"stride_ratio": 0}, "stride_ratio"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"loss": "hinge"}, "loss.*choose one of"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"class_weights": [1.0, -1.0]}, "class_weights"),
        ({"monitor": "val_nonsense"}, "monitor"),
    ],
)
def test_invalid_values_name_the_parameter(change, match):
    with pytest.raises(nbseg.ParamsError, match=match):
        nbseg.TrainingParams(**change).validate()


def test_class_weights_must_match_class_count():
    with pytest.raises(nbseg.ParamsError, match="one weight per class"):
        nbseg.TrainingParams(class_weights=[1.0, 2.0]).validate(class_count=3)


def test_json_and_yaml_roundtrip(tmp_path):
    p = nbseg.TrainingParams(patch_size=(32, 48), epochs=3, class_weights=[1.0, 2.0])
    p.augmentation.factor = 2
    assert nbseg.TrainingParams.from_json(p.to_json()) == p
    path = tmp_path / "params.yaml"
    p.to_yaml(path)
    assert nbseg.TrainingParams.from_yaml(path) == p


def test_unknown_key_in_config_is_reported():
    with pytest.raises(nbseg.ParamsError, match="epoch_count"):
        nbseg.TrainingParams.from_dict({"epoch_count": 3})


def test_frequency_class_weights_favour_rare_classes():
    w = class_weight_vector("frequency", [900, 100, 0], 3)
    assert w[1] > w[0] and w[2] == 0.0
    assert class_weight_vector("uniform", [900, 100], 2) == [1.0, 1.0]


def test_memory_ratio_grows_with_batch():
    spec = nbseg.ModelSpec(class_count=2)
    small = nbseg.TrainingParams(batch_size=1, patch_size=64).memory_ratio(spec)
    big = nbseg.TrainingParams(batch_size=32, patch_size=64).memory_ratio(spec)
    assert 0 < small < big


def test_yaml_text_and_file_round_trip(tmp_path):
    p = nbseg.TrainingParams(epochs=7, learning_rate=0.01)
    text = p.to_yaml()
    assert nbseg.TrainingParams.from_yaml(text) == p  # a whole YAML document as text
    path = tmp_path / "p.yaml"
    p.to_yaml(path)
    assert nbseg.TrainingParams.from_yaml(path) == p
    assert nbseg.TrainingParams.from_yaml(str(path)) == p


def test_auto_patch_size_per_input_dimension():
    p = nbseg.TrainingParams()
    assert p.patch_size is None
    two = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D")
    three = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="3D")
    assert p.patch_for(two) == 128 and p.patch_for(three) == 48
    assert nbseg.TrainingParams(patch_size=32).patch_for(three) == 32
    # the memory estimate follows the automatic size
    assert (
        p.memory_estimate(two).total
        == nbseg.TrainingParams(patch_size=128).memory_estimate(two).total
    )
    assert nbseg.TrainingParams.from_json(p.to_json()).patch_size is None


def test_auto_patch_shrinks_to_the_data():
    from nbseg.data.patches import PreparedSet
    from nbseg.training.module import fit_auto_patch

    spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="3D")
    small = PreparedSet(
        np.zeros((1, 20, 70, 300), np.float32), np.zeros((20, 70, 300), np.int16), "s"
    )
    assert fit_auto_patch((48, 48, 48), [small], spec) == (16, 48, 48)
    spec2 = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D")
    assert fit_auto_patch((1, 128, 128), [small], spec2) == (1, 64, 128)


def test_auto_precision_is_bf16_only_where_native():
    import torch

    from nbseg.devices import resolve_precision

    assert nbseg.TrainingParams().precision == "auto"
    assert resolve_precision("32", "cpu", "2D") == "32"
    assert resolve_precision("bf16-mixed", "cpu", "3D") == "bf16-mixed"  # explicit wins
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for dim in ("2D", "2.5D", "3D"):  # 3D: with the Conv3d guard (test_models)
        assert resolve_precision("auto", "cpu", dim) == ("bf16-mixed" if native else "32")
