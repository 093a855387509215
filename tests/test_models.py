"""The architecture registry and one shared tester run over every architecture × dimension."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nbseg.errors import SpecError
from nbseg.models.registry import (
    ARCHITECTURES,
    ArchitectureInfo,
    architectures,
    build_network,
    count_parameters,
    describe_network,
    get_architecture,
    resolve_parameters,
    size_divisor,
)
from nbseg.models.spec import INPUT_DIMENSIONS, ModelSpec

# Small networks keep the shared tester fast; the defaults are checked separately.
SMALL: dict[str, dict[str, Any]] = {
    "unet": {"depth": 3, "filters": 4},
    "attention_unet": {"depth": 3, "filters": 4},
    "deeplabv3plus": {"filters": 4, "output_stride": 8},
    "fc_densenet": {"depth": 2, "layers_per_block": 2, "growth_rate": 4, "first_filters": 8},
    "sensor3d": {"depth": 3, "filters": 4, "lstm_channels": 4, "final_lstm": True},
    "segresnet": {"depth": 3, "filters": 8},
    "residual_unet": {"depth": 3, "filters": 4, "residual_units": 1},
}

CASES = [(info.name, dim) for info in architectures() for dim in info.dimensions]
UNSUPPORTED = [
    (info.name, dim) for info in architectures() for dim in INPUT_DIMENSIONS
    if dim not in info.dimensions
]  # fmt: skip


def make_spec(arch: str, dim: str, **kwargs: Any) -> ModelSpec:
    kwargs.setdefault("parameters", dict(SMALL.get(arch, {})))
    kwargs.setdefault("slices", 3)
    return ModelSpec(architecture=arch, input_dimension=dim, **kwargs)


def make_input(spec: ModelSpec, size: int, batch: int) -> torch.Tensor:
    shape = (batch, spec.in_channels, *(size,) * spec.spatial_dims)
    return torch.randn(shape)


def spatial_sizes(spec: ModelSpec) -> tuple[int, int]:
    div = size_divisor(spec)
    return (div, 2 * div) if spec.spatial_dims == 3 else (2 * div, 3 * div)


def first_parameter(network: torch.nn.Module) -> torch.nn.Parameter:
    return next(p for p in network.parameters() if p.requires_grad)


def test_every_architecture_is_registered() -> None:
    names = [info.name for info in architectures()]
    assert names[0] == "unet"
    assert set(SMALL) == set(names)
    for info in architectures():
        assert isinstance(info, ArchitectureInfo)
        assert info.title and len(info.description) > 80
        assert set(info.dimensions) <= set(INPUT_DIMENSIONS)
        assert all(isinstance(v, bool | int | float | str) for v in info.defaults.values())
        assert ARCHITECTURES[info.name] is info is get_architecture(info.name)


def test_unknown_architecture_lists_known_names() -> None:
    with pytest.raises(SpecError, match="unet"):
        get_architecture("resnet9000")
    with pytest.raises(SpecError, match="resnet9000"):
        build_network(ModelSpec(architecture="resnet9000"))


def test_sensor3d_is_25d_only() -> None:
    assert get_architecture("sensor3d").dimensions == ("2.5D",)


@pytest.mark.parametrize(("arch", "dim"), CASES)
class TestArchitecture:
    """Shared tester, after segmentation_models_pytorch's ``BaseModelTester``."""

    def test_output_shape(self, arch: str, dim: str) -> None:
        spec = make_spec(arch, dim, class_count=3)
        network = build_network(spec).train()
        for size in spatial_sizes(spec):
            for batch in (1, 2):
                out = network(make_input(spec, size, batch))
                assert out.shape == (batch, 3, *(size,) * spec.spatial_dims)
                assert out.dtype == torch.float32
                assert torch.isfinite(out).all()

    def test_gradients_reach_first_layer(self, arch: str, dim: str) -> None:
        spec = make_spec(arch, dim)
        network = build_network(spec).train()
        size = spatial_sizes(spec)[0]
        out = network(make_input(spec, size, 2))
        target = torch.randint(0, 2, (2, *out.shape[2:]))
        torch.nn.functional.cross_entropy(out, target).backward()
        grad = first_parameter(network).grad
        assert grad is not None and grad.abs().sum() > 0

    @pytest.mark.parametrize("class_count", [2, 4])
    def test_multi_input_and_class_count(self, arch: str, dim: str, class_count: int) -> None:
        spec = make_spec(arch, dim, input_count=2, class_count=class_count)
        expected = 2 * (3 if dim == "2.5D" else 1)
        assert spec.in_channels == expected
        network = build_network(spec).train()
        size = spatial_sizes(spec)[0]
        out = network(make_input(spec, size, 1))
        assert out.shape == (1, class_count, *(size,) * spec.spatial_dims)

    def test_unknown_parameter(self, arch: str, dim: str) -> None:
        spec = make_spec(arch, dim, parameters={"no_such_parameter": 3})
        with pytest.raises(SpecError, match="no_such_parameter") as info:
            build_network(spec)
        for name in get_architecture(arch).defaults:
            assert name in str(info.value)

    def test_wrong_parameter_type(self, arch: str, dim: str) -> None:
        name, default = next(iter(get_architecture(arch).defaults.items()))
        wrong = "text" if not isinstance(default, str) else 3
        with pytest.raises(SpecError, match=name):
            resolve_parameters(make_spec(arch, dim, parameters={name: wrong}))

    def test_eval_mode_is_deterministic(self, arch: str, dim: str) -> None:
        spec = make_spec(arch, dim)
        network = build_network(spec)
        size = spatial_sizes(spec)[0]
        x = make_input(spec, size, 2)
        network.train()
        network(x)  # update running statistics once
        network.eval()
        with torch.no_grad():
            a, b = network(x), network(x)
        assert torch.equal(a, b)

    def test_defaults_build_and_run(self, arch: str, dim: str) -> None:
        spec = ModelSpec(architecture=arch, input_dimension=dim)
        network = build_network(spec).train()
        assert count_parameters(network) > 10_000
        div = size_divisor(spec)
        out = network(make_input(spec, div, 1))
        assert out.shape == (1, 2, *(div,) * spec.spatial_dims)

    def test_describe_network(self, arch: str, dim: str) -> None:
        spec = make_spec(arch, dim)
        rows = describe_network(spec, spatial_sizes(spec)[0])
        assert rows and {"name", "type", "output_shape", "parameters"} <= set(rows[0])
        assert rows[-1]["output_shape"][1] == spec.class_count or any(
            r["output_shape"] and r["output_shape"][1] == spec.class_count for r in rows
        )
        total = sum(r["parameters"] for r in {r["name"]: r for r in rows}.values())
        assert total <= count_parameters(build_network(spec))


@pytest.mark.parametrize(("arch", "dim"), UNSUPPORTED)
def test_unsupported_dimension(arch: str, dim: str) -> None:
    with pytest.raises(SpecError) as info:
        build_network(make_spec(arch, dim))
    message = str(info.value)
    assert arch in message and dim in message
    for supported in get_architecture(arch).dimensions:
        assert supported in message


def test_resolve_parameters_merges_defaults() -> None:
    spec = ModelSpec(parameters={"filters": 8, "dropout": 0})
    params = resolve_parameters(spec)
    assert params["filters"] == 8
    assert params["dropout"] == 0.0 and isinstance(params["dropout"], float)
    assert params["depth"] == get_architecture("unet").defaults["depth"]
    with pytest.raises(SpecError, match="filters"):
        resolve_parameters(ModelSpec(parameters={"filters": 8.5}))
    with pytest.raises(SpecError, match="residual"):
        resolve_parameters(ModelSpec(parameters={"residual": 1}))


def test_invalid_parameter_values() -> None:
    with pytest.raises(SpecError, match="norm"):
        build_network(ModelSpec(parameters={"norm": "layer"}))
    with pytest.raises(SpecError, match="depth"):
        build_network(ModelSpec(parameters={"depth": 0}))
    with pytest.raises(SpecError, match="output_stride"):
        build_network(ModelSpec(architecture="deeplabv3plus", parameters={"output_stride": 4}))


def test_invalid_spec_is_rejected() -> None:
    with pytest.raises(SpecError, match="class_count"):
        build_network(ModelSpec(class_count=1))


def test_size_divisor_follows_depth() -> None:
    assert size_divisor(ModelSpec(parameters={"depth": 3})) == 4
    assert size_divisor(ModelSpec(parameters={"depth": 5})) == 16
    spec = ModelSpec(architecture="deeplabv3plus", parameters={"output_stride": 8})
    assert size_divisor(spec) == 8


def test_default_unet_size() -> None:
    network = build_network(ModelSpec())
    assert 500_000 <= count_parameters(network) <= 2_500_000


def test_batchnorm_single_pixel_bottleneck_in_training() -> None:
    # batch 1 at the smallest size: the bottleneck is 1×1 with one value per channel
    spec = ModelSpec(parameters={"depth": 3, "filters": 4, "norm": "batch"})
    network = build_network(spec).train()
    out = network(torch.randn(1, 1, 4, 4))
    assert out.shape == (1, 2, 4, 4)


@pytest.mark.parametrize("dims", [2, 3])
def test_instancenorm_single_pixel_gives_the_bias_and_a_gradient(dims: int) -> None:
    from nbseg.models.blocks import norm_layer

    norm = norm_layer("instance", 3, dims).train()
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 3, *(1,) * dims, requires_grad=True)
    out = norm(x)
    assert torch.equal(out.flatten(1), torch.tensor([[0.5, -1.0, 2.0]] * 2))
    out.sum().backward()
    assert norm.bias.grad is not None and torch.equal(norm.bias.grad, torch.full((3,), 2.0))
    wide = torch.randn(2, 3, *(4,) * dims)  # more than one element: ordinary instance norm
    ref = torch.nn.functional.instance_norm(wide, weight=norm.weight, bias=norm.bias)
    torch.testing.assert_close(norm(wide), ref)


def test_residual_unet_trains_on_its_smallest_input() -> None:
    spec = ModelSpec(architecture="residual_unet")  # depth 4: 8×8 input, 1×1 at the bottom
    network = build_network(spec).train()
    out = network(torch.randn(1, 1, 8, 8))
    out.mean().backward()
    assert out.shape == (1, 2, 8, 8)


def test_25d_channels_are_input_major() -> None:
    # Sensor3D reads channel = input_index * slices + slice_index: changing a slice of the
    # second input must not change the network's view of the first input's slices.
    spec = make_spec("sensor3d", "2.5D", input_count=2, slices=3)
    network = build_network(spec).eval()
    x = torch.randn(1, 6, 8, 8)
    seen: list[torch.Tensor] = []
    handle = network.encoder[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        network(x)
    handle.remove()
    folded = seen[0]  # (B * slices, inputs, H, W)
    assert folded.shape == (3, 2, 8, 8)
    for s in range(3):
        for i in range(2):
            assert torch.equal(folded[s, i], x[0, i * 3 + s])


def test_sensor3d_uses_neighbouring_slices() -> None:
    spec = make_spec("sensor3d", "2.5D", slices=3)
    network = build_network(spec)
    # make the LSTM outputs matter (they start at zero)
    for lstm in (network.bottleneck_lstm, network.final_lstm):
        torch.nn.init.normal_(lstm.project.weight, std=0.5)
    network.eval()
    x = torch.randn(1, 3, 8, 8)
    y = x.clone()
    y[:, 0] += 1.0  # change a neighbouring slice only
    with torch.no_grad():
        assert not torch.allclose(network(x), network(y))


def test_count_parameters() -> None:
    layer = torch.nn.Conv2d(2, 3, 3)
    assert count_parameters(layer) == 2 * 3 * 9 + 3
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 2 * 3 * 9


def test_describe_network_rows() -> None:
    rows = describe_network(ModelSpec(), 64)
    first = rows[0]
    assert first["name"] == "encoder.0" and first["type"] == "ConvBlock"
    assert first["output_shape"] == (1, 16, 64, 64)
    assert rows[-1]["name"] == "head" and rows[-1]["output_shape"] == (1, 2, 64, 64)


def _weight_grads(net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
    net.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = net(x)
    out.float().square().mean().backward()
    return [p.grad.clone() for p in net.parameters() if p.dim() == 5]


@pytest.mark.parametrize("depth", [2, 4])
def test_bf16_conv3d_guard_gives_right_weight_gradients_and_undoes(depth: int) -> None:
    """oneDNN's bf16 Conv3d weight gradient is wrong (up to 1e37 or NaN) for inputs thinner
    than the kernel; the guard runs those in fp32 and leaves thicker inputs in bf16."""
    from nbseg.models.blocks import guard_cpu_bf16_conv3d

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(32, 32, 3, padding=1), torch.nn.Conv3d(32, 32, 5, padding=2)
    )
    x = torch.randn(2, 32, depth, 8, 8)
    reference = _weight_grads(net, x, bf16=False)
    undo = guard_cpu_bf16_conv3d(net, force=True)
    assert all("forward" in vars(m) for m in net)
    guarded = _weight_grads(net, x, bf16=True)
    for g, ref in zip(guarded, reference):
        assert torch.isfinite(g).all()
        assert float((g - ref).abs().max() / ref.abs().max()) < 0.05
    # depth 4 ≥ the first kernel's 3: that convolution still runs in bf16
    with torch.autocast("cpu", torch.bfloat16):
        first = net[0](x)
    assert first.dtype == (torch.bfloat16 if depth > 3 else torch.float32)
    undo()
    assert not any("forward" in vars(m) for m in net)


def test_bf16_conv3d_guard_covers_the_default_3d_unet_on_thin_bottlenecks() -> None:
    from nbseg import ModelSpec as Spec
    from nbseg.models.blocks import guard_cpu_bf16_conv3d
    from nbseg.models.registry import build_network

    torch.manual_seed(1)
    net = build_network(Spec(architecture="unet", class_count=3, input_dimension="3D"))
    x = torch.randn(1, 1, 32, 32, 32)  # depth 5: the bottleneck sees 2 slices
    reference = _weight_grads(net, x, bf16=False)
    guard_cpu_bf16_conv3d(net, force=True)
    guarded = _weight_grads(net, x, bf16=True)
    flat = torch.cat([g.flatten() for g in guarded])
    ref = torch.cat([g.flatten() for g in reference])
    assert torch.isfinite(flat).all()
    assert float(torch.nn.functional.cosine_similarity(flat, ref, dim=0)) > 0.9


def test_bf16_conv3d_guard_applies_only_where_the_cpu_needs_it(monkeypatch) -> None:
    from nbseg.models import blocks

    state = torch.random.get_rng_state()
    assert isinstance(blocks.cpu_bf16_conv3d_is_wrong(), bool)
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe leaves the RNG alone
    net = torch.nn.Sequential(torch.nn.Conv3d(4, 4, 3, padding=1))
    monkeypatch.setattr(blocks, "cpu_bf16_conv3d_is_wrong", lambda: False)
    blocks.guard_cpu_bf16_conv3d(net)()
    blocks.guard_cpu_bf16_conv3d(net)
    assert "forward" not in vars(net[0])  # a CPU with right bf16 gradients runs plain bf16
    monkeypatch.setattr(blocks, "cpu_bf16_conv3d_is_wrong", lambda: True)
    undo = blocks.guard_cpu_bf16_conv3d(net)
    assert "forward" in vars(net[0])
    undo()
    assert "forward" not in vars(net[0])
