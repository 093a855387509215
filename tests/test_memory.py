"""Training-memory estimate (Dragonfly's memory ratio) against a real measurement."""

from __future__ import annotations

import pytest

from nbseg.errors import ParamsError
from nbseg.models.spec import ModelSpec
from nbseg.training.memory import (
    OPTIMIZER_STATE,
    MemoryEstimate,
    estimate_training_memory,
    measure_training_step_peak,
)

SMALL_UNET = ModelSpec(parameters={"depth": 3, "filters": 8})


def test_estimate_fields_and_ratio() -> None:
    est = estimate_training_memory(SMALL_UNET, 64, 4)
    assert isinstance(est, MemoryEstimate)
    assert est.device == "cpu"
    assert est.available > 0
    assert est.ratio == pytest.approx(est.total / est.available)
    for name in ("parameters", "gradients", "optimizer_state", "activations", "batch"):
        assert getattr(est, name) > 0
    assert est.total >= est.parameters + est.optimizer_state + est.activations
    assert "estimated memory ratio" in str(est) and "GiB" in str(est) and "cpu" in str(est)


def test_estimate_grows_with_batch_and_patch() -> None:
    small = estimate_training_memory(SMALL_UNET, 32, 2)
    bigger_batch = estimate_training_memory(SMALL_UNET, 32, 8)
    bigger_patch = estimate_training_memory(SMALL_UNET, 96, 2)
    assert bigger_batch.total > small.total
    assert bigger_batch.activations == pytest.approx(4 * small.activations, rel=0.05)
    assert bigger_patch.total > small.total
    assert bigger_patch.activations == pytest.approx(9 * small.activations, rel=0.05)


def test_estimate_3d_and_tuple_patches() -> None:
    spec = ModelSpec(input_dimension="3D", parameters={"depth": 3, "filters": 4})
    cube = estimate_training_memory(spec, 16, 1)
    box = estimate_training_memory(spec, (16, 16, 32), 1)
    assert box.activations == pytest.approx(2 * cube.activations, rel=0.05)
    # 2D: the last two entries of a longer tuple are used, as by the patch sampler
    flat = estimate_training_memory(SMALL_UNET, (1, 32, 64), 2)
    assert flat.activations == pytest.approx(
        estimate_training_memory(SMALL_UNET, (32, 64), 2).activations
    )
    with pytest.raises(ParamsError):
        estimate_training_memory(spec, (16, 16), 1)


def test_optimizer_state_ordering() -> None:
    def state(optimizer: str, momentum: float = 0.9) -> int:
        return estimate_training_memory(
            SMALL_UNET, 32, 2, optimizer, momentum=momentum
        ).optimizer_state

    params = estimate_training_memory(SMALL_UNET, 32, 2).gradients
    assert state("sgd", momentum=0.0) == 0
    assert state("sgd", momentum=0.0) < state("sgd") < state("adam")
    assert state("adam") == state("adamw") == state("adadelta") == 2 * params
    assert state("adagrad") == params
    assert state("rmsprop", momentum=0.0) < state("rmsprop")
    assert set(OPTIMIZER_STATE) == {"adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad"}
    with pytest.raises(ParamsError, match="optimizer"):
        estimate_training_memory(SMALL_UNET, 32, 2, "lbfgs")


def test_half_precision_halves_activations() -> None:
    full = estimate_training_memory(SMALL_UNET, 64, 2)
    half = estimate_training_memory(SMALL_UNET, 64, 2, precision="bf16-mixed")
    assert half.activations < full.activations


def test_half_precision_off_onednn_counts_im2col_columns(monkeypatch) -> None:
    """bf16 convolutions off oneDNN (CPUs without AVX512/AMX) run as im2col: their column
    buffers are counted there; the oneDNN path and float32 are left as they were."""
    from nbseg.training import memory

    def estimate(precision: str, onednn: bool, device: str = "cpu") -> MemoryEstimate:
        monkeypatch.setattr(memory, "_cpu_half_on_onednn", lambda _precision: onednn)
        return estimate_training_memory(UNET_2D, 64, 4, precision=precision, device=device)

    native, emulated = estimate("bf16-mixed", True), estimate("bf16-mixed", False)
    fp32 = estimate("32", True)
    assert estimate("32", False) == fp32
    assert native.workspace == pytest.approx(fp32.workspace / 2, abs=1)  # no columns in 2D
    assert emulated.activations == native.activations
    # the widest 3×3 convolution (16 channels after the top skip connection), whole batch
    columns = 9 * 16 * 64 * 64 * 4 * 2
    assert emulated.workspace > native.workspace
    assert emulated.activations + emulated.workspace > columns
    assert emulated.total > native.total
    assert estimate("bf16-mixed", False, "cuda").total == estimate("bf16-mixed", True, "cuda").total


def test_half_precision_path_follows_the_onednn_probe() -> None:
    import torch

    from nbseg.devices import resolve_precision
    from nbseg.training.memory import _cpu_half_on_onednn

    assert _cpu_half_on_onednn("32") is True
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and torch.backends.mkldnn.enabled
    assert _cpu_half_on_onednn("bf16-mixed") is native
    assert (resolve_precision("auto", "cpu", "2D") == "bf16-mixed") is native


def test_params_estimate_follows_the_resolved_precision() -> None:
    from nbseg.devices import resolve_precision
    from nbseg.training.params import TrainingParams

    auto = TrainingParams(patch_size=64, batch_size=2).memory_estimate(SMALL_UNET)
    fp32 = TrainingParams(patch_size=64, batch_size=2, precision="32").memory_estimate(SMALL_UNET)
    if resolve_precision("auto", "cpu", "2D") == "bf16-mixed":
        assert auto.activations < fp32.activations
    else:
        assert auto.activations == fp32.activations


def test_invalid_batch_size() -> None:
    with pytest.raises(ParamsError, match="batch_size"):
        estimate_training_memory(SMALL_UNET, 32, 0)


def test_estimate_is_cached_and_fast() -> None:
    import time

    spec = ModelSpec(parameters={"depth": 4, "filters": 8})
    estimate_training_memory(spec, 64, 2)
    start = time.perf_counter()
    for batch in range(1, 20):
        estimate_training_memory(spec, 64 + 16 * batch, batch)
    assert time.perf_counter() - start < 0.5


UNET_2D = ModelSpec(parameters={"depth": 4, "filters": 8})
DEEPLAB_2D = ModelSpec(architecture="deeplabv3plus", parameters={"filters": 8})
UNET_3D = ModelSpec(input_dimension="3D", parameters={"depth": 3, "filters": 4})


# bf16 is what precision="auto" picks on bf16-native CPUs (2D, 2.5D and 3D); elsewhere
# (AVX2-only CPUs) bf16 convolutions run as im2col, and the estimate counts their columns: the
# same tolerance holds on both kinds of CPU
@pytest.mark.parametrize(
    ("spec", "patch", "batch", "precision"),
    [
        (UNET_2D, 64, 4, "32"),
        (DEEPLAB_2D, 64, 2, "32"),
        (UNET_3D, 16, 2, "32"),
        (UNET_2D, 64, 4, "bf16-mixed"),
        (DEEPLAB_2D, 64, 2, "bf16-mixed"),
        # a single 3D sample: float32 convolutions use im2col column buffers, bf16 ones do not
        (ModelSpec(input_dimension="3D"), 32, 1, "bf16-mixed"),
    ],
    ids=["unet-2d", "deeplab-2d", "unet-3d", "unet-2d-bf16", "deeplab-2d-bf16", "unet-3d-b1-bf16"],
)
def test_estimate_matches_measured_peak(
    spec: ModelSpec, patch: int, batch: int, precision: str
) -> None:
    estimate = estimate_training_memory(spec, patch, batch, precision=precision).total
    measured = measure_training_step_peak(spec, patch, batch, precision=precision)
    assert measured > 0
    assert estimate == pytest.approx(measured, rel=0.25)


def test_realistic_ratios_are_shown_with_their_digits_not_as_zero() -> None:
    """Every realistic setting used to read "0.00": the ratio keeps two significant digits
    below 0.1, and the sizes are in the unit that fits (MiB, GiB)."""
    from nbseg.training.memory import format_bytes, format_ratio
    from nbseg.training.params import TrainingParams

    est = TrainingParams().memory_estimate(ModelSpec())  # the default model and parameters
    assert 0 < est.ratio < 0.1  # small against a workstation's memory
    assert est.ratio_text not in ("0.00", "0.0", "0")
    assert float(est.ratio_text) == pytest.approx(est.ratio, rel=0.05)
    assert est.ratio_text in str(est) and "0.0 GiB" not in str(est)
    assert [format_ratio(r) for r in (0.0051, 0.042, 0.42, 1.304, 0)] == [
        "0.0051",
        "0.042",
        "0.42",
        "1.30",
        "0",
    ]
    assert [format_bytes(b) for b in (512, 840_000, 120 * 2**20, 1.4 * 2**30)] == [
        "512 B",
        "820 KiB",
        "120 MiB",
        "1.4 GiB",
    ]


def test_the_parameters_panel_shows_the_ratio_digits() -> None:
    import nbseg
    from nbseg.ui.params_panel import TrainingParamsPanel
    from nbseg.ui.state import Workspace

    ws = Workspace()
    panel = TrainingParamsPanel(ws)
    ws.set_model(nbseg.generate_model(ModelSpec()))
    text = panel.memory_text
    shown = text.split(": ")[1].split()[0]
    assert shown != "0.00" and float(shown) > 0, text
    assert float(shown) == pytest.approx(ws.params.memory_ratio(ws.model.spec), rel=0.05)
    assert "MiB" in text or "GiB" in text
