"""Training-memory estimate (Dragonfly's *memory ratio*) and a real peak measurement.

The estimate adds up, for one training step of a network built from a :class:`ModelSpec`:

* parameters (and buffers), their gradients and the optimiser state;
* the activations autograd saves for the backward pass, counted exactly by running the
  network (and the loss) under :func:`torch.autograd.graph.saved_tensors_hooks` on two tiny
  inputs and extrapolating linearly in batch size and voxel count (activation sizes of a
  fully convolutional network are proportional to both, up to small constants);
* the batch (inputs and targets) and a workspace term for the gradients of activations that
  live during the backward pass, calibrated against :func:`measure_training_step_peak`;
* on CPU, the column buffers of convolutions PyTorch runs as im2col + matrix product instead
  of on oneDNN: float32 3D convolutions of a single thin sample, and *every* convolution in
  half precision where oneDNN does not compute it (``bf16-mixed`` on CPUs without
  AVX512 / AMX, as probed by ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, the probe
  :func:`nbseg.devices.resolve_precision` uses to pick bf16).

Estimates are cached by (spec, patch, batch, optimiser, device, precision, and whether
oneDNN computes that precision): the widgets recompute them live as the user edits the
settings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._system import available_memory_bytes
from ..errors import ParamsError
from ..models.blocks import channels_last_nd, guard_cpu_bf16_conv3d
from ..models.registry import build_network, input_shape, size_divisor
from ..models.spec import ModelSpec
from .losses import cross_entropy, dice_loss

#: Optimiser state per parameter, in parameter-sized tensors.
OPTIMIZER_STATE: dict[str, float] = {
    "adam": 2.0,
    "adamw": 2.0,
    "sgd": 1.0,  # momentum buffer; 0 without momentum
    "rmsprop": 1.0,  # square average; +1 with momentum
    "adadelta": 2.0,
    "adagrad": 1.0,
}

#: Temporaries of the optimiser's (foreach) step, in parameter-sized tensors.
OPTIMIZER_WORKSPACE: dict[str, float] = {
    "adam": 1.0,
    "adamw": 1.0,
    "sgd": 0.5,
    "rmsprop": 1.0,
    "adadelta": 1.5,
    "adagrad": 1.0,
}

_GIB = 1 << 30


@dataclass
class MemoryEstimate:
    """Estimated memory of one training step, in bytes.

    ``total`` is the estimated peak: the parameters, optimiser state and batch plus the
    larger of (activations + workspace + gradients) during the backward pass and
    (gradients + optimiser temporaries) during the optimiser step. It is therefore less than
    the sum of the fields.
    """

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    batch: int
    workspace: int
    total: int
    available: int
    device: str

    @property
    def ratio(self) -> float:
        """``total / available``: above 1.0 the step will probably not fit in memory."""
        return self.total / max(self.available, 1)

    @property
    def ratio_text(self) -> str:
        """The ratio with the digits that tell settings apart: ``"0.42"``, ``"1.3"``,
        ``"0.0051"`` (two significant digits below 0.1, never a bare ``"0.00"``)."""
        return format_ratio(self.ratio)

    @property
    def detail(self) -> str:
        """``"120 MiB of 22.8 GiB available on cpu"``."""
        return (
            f"{format_bytes(self.total)} of {format_bytes(self.available)} available on "
            f"{self.device}"
        )

    def __str__(self) -> str:
        return f"estimated memory ratio {self.ratio_text} ({self.detail})"


def format_ratio(ratio: float) -> str:
    """A memory ratio for people: two decimals from 0.1 up (``"0.42"``, ``"1.30"``), two
    significant digits below (``"0.0051"``), ``"0"`` for nothing."""
    r = float(ratio)
    if not math.isfinite(r):
        return str(r)
    if r == 0:
        return "0"
    if abs(r) >= 0.1:
        return f"{r:.2f}"
    return f"{r:.2g}" if abs(r) >= 1e-4 else f"{r:.1e}"


def format_bytes(n: float) -> str:
    """``"820 KiB"``, ``"120 MiB"``, ``"1.4 GiB"`` (three significant digits at most)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"  # pragma: no cover - the loop returns


def _patch_tuple(spec: ModelSpec, patch_size: int | Sequence[int]) -> tuple[int, ...]:
    try:
        shape = input_shape(spec, patch_size, 1)
    except Exception as err:  # SpecError for too few dims
        raise ParamsError(str(err)) from None
    if any(s < 1 for s in shape[2:]):
        raise ParamsError(f"patch_size must be positive, got {patch_size!r}.")
    return tuple(shape[2:])


def _state_factor(optimizer: str, momentum: float) -> float:
    name = optimizer.lower()
    if name not in OPTIMIZER_STATE:
        raise ParamsError(
            f"Unknown optimizer {optimizer!r}; choose one of {tuple(OPTIMIZER_STATE)}."
        )
    factor = OPTIMIZER_STATE[name]
    if name == "sgd" and momentum == 0:
        factor = 0.0
    if name == "rmsprop" and momentum > 0:
        factor += 1.0
    return factor


def _bytes_per_element(precision: str) -> int:
    return 2 if precision in ("16-mixed", "bf16-mixed", "16", "bf16") else 4


def _cpu_half_on_onednn(precision: str) -> bool:
    """Whether CPU convolutions in this half precision run on oneDNN (else: im2col).

    PyTorch sends a bf16 (fp16) convolution to oneDNN only where
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (``_fp16_``) holds — AVX512 or AMX CPUs
    (the Intel Xeon the estimate was calibrated on); elsewhere (e.g. AVX2-only AMD EPYC) it
    runs the slow im2col path, whose column buffers can outweigh the halved activations.
    Float32 and unknown precisions answer True (nothing changes for them).
    """
    if _bytes_per_element(precision) != 2:
        return True
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    return _onednn_supports("fp16" if precision in ("16-mixed", "16") else "bf16")


@functools.cache
def _onednn_supports(dtype: str) -> bool:
    try:
        return bool(getattr(torch.ops.mkldnn, f"_is_mkldnn_{dtype}_supported")())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the probe
        return True  # as calibrated


@dataclass(frozen=True)
class _ConvCall:
    """A 2D/3D convolution seen during calibration, its sizes relative to the network input."""

    in_channels: int
    out_channels: int
    kernel: int  # kernel volume
    kernel_depth: int
    transposed: bool
    large_kernel: bool  # last two kernel dims > 3: always on the oneDNN path
    in_scale: tuple[float, ...]  # input spatial size / network input size
    out_scale: tuple[float, ...]
    saved_fraction: float  # share of all saved activations already saved after this call
    groups: int = 1
    dilated: bool = False
    batch_scale: float = 1.0  # samples the convolution sees / network batch (2.5D: slices)


@dataclass(frozen=True)
class _Calibration:
    """What a network needs per step, measured once per spec on two small real forwards.

    ``saved(batch, voxels) ≈ saved_const + saved_per_voxel · batch · voxels`` (activations
    saved for backward, loss included); the largest saved tensor is about
    ``largest_per_voxel · batch · voxels`` bytes. ``convs``: the network's convolutions, in
    call order.
    """

    parameters: int
    trainable: int
    buffers: int
    saved_const: float
    saved_per_voxel: float
    largest_per_voxel: float
    convs: tuple[_ConvCall, ...]


def _saved_bytes(
    network: nn.Module, spec: ModelSpec, shape: tuple[int, ...]
) -> tuple[int, int, list[_ConvCall]]:
    """Bytes autograd saves for backward, the largest saved storage, and the conv calls.

    Runs a real forward (and the loss) on a small input; storages are counted once, and
    parameters are excluded.
    """
    params = {p.untyped_storage()._cdata for p in network.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in params:
            seen[key] = storage.nbytes()
        return t

    size = shape[2:]
    calls: list[_ConvCall] = []

    def conv_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        assert isinstance(module, nn.modules.conv._ConvNd)  # hooked on convolutions only
        i, o = inputs[0].shape[2:], output.shape[2:]
        calls.append(
            _ConvCall(
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                kernel=math.prod(module.kernel_size),
                kernel_depth=module.kernel_size[0],
                transposed=isinstance(module, nn.ConvTranspose3d),
                large_kernel=min(module.kernel_size[-2:]) > 3,
                in_scale=tuple(a / b for a, b in zip(i, size)),
                out_scale=tuple(a / b for a, b in zip(o, size)),
                saved_fraction=float(sum(seen.values())),  # normalised below
                groups=module.groups,
                dilated=max(module.dilation) > 1,
                batch_scale=inputs[0].shape[0] / shape[0],
            )
        )

    handles = [
        m.register_forward_hook(conv_hook)
        for m in network.modules()
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d)
    ]
    x = torch.randn(shape)
    target = torch.randint(0, spec.class_count, (shape[0], *shape[2:]))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _loss(network(x), target)
    finally:
        for h in handles:
            h.remove()
    total = max(sum(seen.values()), 1)
    calls = [dataclasses.replace(c, saved_fraction=c.saved_fraction / total) for c in calls]
    return sum(seen.values()), max(seen.values(), default=0), calls


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice, as nbseg's default ``dice_ce`` loss."""
    return cross_entropy(logits, target) + dice_loss(logits, target)


# calibration batch: 2 keeps batch-1 special cases (im2col convolutions, batch norm of one
# value) out of the fit; they are added analytically
_CALIBRATION_BATCH = 2


@functools.lru_cache(maxsize=64)
def _calibrate(spec_json: str) -> _Calibration:
    spec = ModelSpec.from_dict(json.loads(spec_json))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = build_network(spec).train()
        div = size_divisor(spec)
        sizes: list[tuple[int, ...]]
        if spec.spatial_dims == 3:
            sizes = [(div, div, 2 * div), (div, 2 * div, 2 * div)]
        else:
            sizes = [(div, 2 * div), (2 * div, 2 * div)]
        points = []
        calls: list[_ConvCall] = []
        for size in sizes:
            shape = (_CALIBRATION_BATCH, spec.in_channels, *size)
            saved, largest, calls = _saved_bytes(network, spec, shape)
            points.append((_CALIBRATION_BATCH * math.prod(size), saved, largest))
    (v0, s0, _), (v1, s1, l1) = points
    slope = (s1 - s0) / (v1 - v0)
    return _Calibration(
        parameters=sum(p.numel() * p.element_size() for p in network.parameters()),
        trainable=sum(
            p.numel() * p.element_size() for p in network.parameters() if p.requires_grad
        ),
        buffers=sum(b.numel() * b.element_size() for b in network.buffers()),
        saved_const=max(0.0, s0 - slope * v0),
        saved_per_voxel=slope,
        largest_per_voxel=l1 / v1,
        convs=tuple(calls),
    )


def _im2col_peak(
    calls: Sequence[_ConvCall],
    patch: tuple[int, ...],
    batch: int,
    activations: int,
    half: bool = False,
) -> int:
    """Peak of saved activations + column buffer of 3D convolutions run without oneDNN.

    On CPU a single-sample float convolution uses oneDNN only when N·C·D·H > 20480 or the
    kernel is larger than 3; otherwise an im2col implementation allocates a column buffer of
    (kernel volume × channels × voxels) floats while the activations saved up to that layer
    are alive (in the forward pass, and again in the backward pass).

    ``half``: bf16 autocast, where 3D convolutions run on oneDNN, except the thin inputs
    (depth ≤ kernel depth) that :func:`~nbseg.models.blocks.guard_cpu_bf16_conv3d` computes in
    float32.
    """
    if batch != 1 or not calls:
        return 0
    worst = 0
    for c in calls:
        if len(c.in_scale) != 3:
            continue
        d_in = [s * f for s, f in zip(patch, c.in_scale)]
        d_out = [s * f for s, f in zip(patch, c.out_scale)]
        if c.kernel == 1 or c.large_kernel or c.in_channels * d_in[0] * d_in[1] > 20480:
            continue
        if half and (c.transposed or c.kernel_depth <= 1 or d_in[0] > c.kernel_depth):
            continue
        if c.transposed:
            cols = c.kernel * c.out_channels * math.prod(d_in)
        else:
            cols = c.kernel * c.in_channels * math.prod(d_out)
        worst = max(worst, int(c.saved_fraction * activations + 4 * cols))
    return worst


def _slow_conv_peak(
    calls: Sequence[_ConvCall],
    patch: tuple[int, ...],
    batch: int,
    activations: int,
    element_bytes: int,
) -> int:
    """Peak of saved activations + column buffer of half-precision convolutions off oneDNN.

    Where oneDNN does not compute bf16 (fp16), PyTorch runs every such CPU convolution
    (2D or 3D, any batch size) as im2col + matrix product: ``slow_conv2d`` / ``slow_conv3d``
    allocate a column buffer of kernel volume × input channels (of a group) × output voxels
    for the whole batch, in the forward pass and again in the backward pass, while the
    activations saved up to that layer are alive; dilated and transposed convolutions loop
    over the samples (one sample's columns; transposed: output channels × input voxels).
    Networks that fold slices into the batch (2.5D ``sensor3d``) scale the batch as seen.
    Measured on an AVX2 AMD EPYC (torch 2.13): the column buffer of the widest full-size
    convolution is the step's peak, e.g. 27 × 32 channels × 32³ voxels × 2 bytes = 57 MB for
    the default 3D U-Net on a 32³ patch (where the bf16 activations are 15 MB).
    """
    worst = 0
    for c in calls:
        if c.kernel == 1:  # 1×1 convolutions use their input as the columns
            continue
        d_in = [s * f for s, f in zip(patch, c.in_scale)]
        d_out = [s * f for s, f in zip(patch, c.out_scale)]
        samples = 1 if c.transposed or c.dilated else batch * c.batch_scale
        if c.transposed:
            cols = c.kernel * (c.out_channels // c.groups) * math.prod(d_in)
        else:
            cols = c.kernel * (c.in_channels // c.groups) * math.prod(d_out)
        worst = max(worst, int(c.saved_fraction * activations + element_bytes * samples * cols))
    return worst


def estimate_training_memory(
    spec: ModelSpec,
    patch_size: int | Sequence[int],
    batch_size: int,
    optimizer: str = "adam",
    device: str = "cpu",
    precision: str = "32",
    momentum: float = 0.9,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step.

    Parameters
    ----------
    spec
        The model specification.
    patch_size
        Int (square or cubic patch) or tuple: ``(H, W)`` for 2D/2.5D, ``(D, H, W)`` for 3D
        (longer tuples use their last 2 or 3 entries, as the patch sampler does). Rounded up
        to the network's :func:`~nbseg.models.registry.size_divisor`.
    batch_size
        Patches per step.
    optimizer
        ``adam``, ``adamw``, ``sgd``, ``rmsprop``, ``adadelta`` or ``adagrad``.
    device
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"``): where the available memory is read.
    precision
        ``"32"``, ``"16-mixed"`` or ``"bf16-mixed"`` (activations in half precision; on a CPU
        whose oneDNN does not compute that precision, the convolutions' im2col column
        buffers are counted too, see :func:`_cpu_half_on_onednn`).
    momentum
        SGD/RMSprop momentum (SGD without momentum keeps no state).

    Returns
    -------
    MemoryEstimate
        Its ``ratio = total / available`` is Dragonfly's memory ratio.

    Raises
    ------
    ParamsError
        For a bad patch size, batch size or optimiser name.
    SpecError
        For an invalid spec.

    Notes
    -----
    The first call for a spec runs two small real forward passes (tens of milliseconds for
    2D networks); later calls are cached arithmetic.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParamsError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    patch = _rounded_patch(spec, patch_size)
    _state_factor(optimizer, momentum)  # validates the name
    onednn = str(device).startswith("cuda") or _cpu_half_on_onednn(precision)
    estimate = _estimate(
        spec.to_json(),
        patch,
        batch_size,
        optimizer.lower(),
        float(momentum),
        precision,
        device,
        onednn,
    )
    return dataclasses.replace(estimate, available=_available(device))


def _rounded_patch(spec: ModelSpec, patch_size: int | Sequence[int]) -> tuple[int, ...]:
    patch = _patch_tuple(spec, patch_size)
    div = size_divisor(spec)
    return tuple(-(-s // div) * div for s in patch)


def _available(device: str) -> int:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return int(available_memory_bytes())


@functools.lru_cache(maxsize=512)
def _estimate(
    spec_json: str,
    patch: tuple[int, ...],
    batch_size: int,
    optimizer: str,
    momentum: float,
    precision: str,
    device: str,
    half_on_onednn: bool = True,
) -> MemoryEstimate:
    spec = ModelSpec.from_dict(json.loads(spec_json))
    cal = _calibrate(spec_json)
    voxels = batch_size * math.prod(patch)
    act_scale = 0.5 if _bytes_per_element(precision) == 2 else 1.0
    activations = int((cal.saved_const + cal.saved_per_voxel * voxels) * act_scale)
    # backward: all saved activations plus the gradient of the largest one at its start, or
    # the column buffer of an im2col convolution; about half the parameter gradients exist
    # at the backward pass's peak
    workspace = int(cal.largest_per_voxel * voxels * act_scale)
    if not str(device).startswith("cuda"):
        if act_scale < 1 and not half_on_onednn:
            im2col = _slow_conv_peak(cal.convs, patch, batch_size, activations, 2)
        else:
            im2col = _im2col_peak(cal.convs, patch, batch_size, activations, act_scale < 1)
        workspace = max(workspace, im2col - activations)
    grads = cal.trainable
    state = int(_state_factor(optimizer, momentum) * cal.trainable)
    step_temporaries = int(OPTIMIZER_WORKSPACE.get(optimizer, 1.0) * cal.trainable)
    batch = batch_size * math.prod(patch) * (spec.in_channels * 4 + 8)
    backward_peak = activations + workspace + grads // 2
    step_peak = grads + step_temporaries
    total = cal.parameters + cal.buffers + state + batch + max(backward_peak, step_peak)
    return MemoryEstimate(
        parameters=cal.parameters + cal.buffers,
        gradients=grads,
        optimizer_state=state,
        activations=activations,
        batch=batch,
        workspace=workspace,
        total=int(total),
        available=0,
        device=device,
    )


def measure_training_step_peak(
    spec: ModelSpec,
    patch_size: int | Sequence[int],
    batch_size: int,
    optimizer: str = "adam",
    momentum: float = 0.9,
    device: str = "cpu",
    precision: str = "32",
) -> int:
    """Measure the real peak memory of a training step, in bytes.

    Builds the network and optimiser, runs one warm-up step (forward, loss, backward,
    ``optimizer.step``, ``zero_grad``) so the optimiser state exists, then a second one; the
    peak of all memory allocated from before the network was built is returned. On CPU the
    allocations are read from :mod:`torch.profiler` memory events, on CUDA from
    ``torch.cuda.max_memory_allocated``. ``precision="bf16-mixed"`` / ``"16-mixed"`` runs the
    forward pass under autocast, in the channels-last format, as :func:`nbseg.train` does
    (with its float32 guard of thin bf16 3D convolutions on CPU).
    """
    patch = _rounded_patch(spec, patch_size)
    shape = (batch_size, spec.in_channels, *patch)
    half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    fmt = channels_last_nd(spec.spatial_dims)

    def run(dev: torch.device) -> None:
        torch.manual_seed(0)
        # Module.to takes memory_format (torch's overloads omit it)
        network = build_network(spec).to(dev).train().to(memory_format=fmt)  # type: ignore[call-overload]
        if dev.type == "cpu" and spec.spatial_dims == 3 and half is torch.bfloat16:
            guard_cpu_bf16_conv3d(network)  # as nbseg.train does (thin inputs in float32)
        opt = _make_optimizer(optimizer, network.parameters(), momentum)
        x = torch.randn(shape, device=dev).contiguous(memory_format=fmt)
        target = torch.randint(0, spec.class_count, (shape[0], *shape[2:]), device=dev)
        for _ in range(2):
            with torch.autocast(dev.type, dtype=half or torch.float32, enabled=half is not None):
                logits = network(x)
            loss = _loss(logits.float(), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del loss

    if str(device).startswith("cuda"):
        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        run(dev)
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - start)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(torch.device("cpu"))
    return _peak_from_profile(prof)


def _allocation_events(prof: Any) -> list[tuple[int, int, int]]:
    """``(time_ns, address, bytes)`` of the CPU allocations and frees (negative) in a profile."""
    events: list[tuple[int, int, int]] = []
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            fields = node.extra_fields
            if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
                events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    except (AttributeError, RuntimeError):  # pragma: no cover - older/newer profiler API
        for i, e in enumerate(prof.profiler.kineto_results.events()):
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
                events.append((e.start_ns(), -1 - i, e.nbytes()))
    events.sort()
    return events


def _peak_from_profile(prof: Any) -> int:
    """Peak bytes allocated inside a profile (frees of older blocks are ignored)."""
    live: dict[int, int] = {}
    level = peak = 0
    for _, ptr, nbytes in _allocation_events(prof):
        if nbytes >= 0:
            live[ptr] = live.get(ptr, 0) + nbytes
            level += nbytes
            peak = max(peak, level)
        elif ptr in live or ptr < 0:
            level += nbytes
            live.pop(ptr, None)
    return int(peak)


def _make_optimizer(
    name: str, parameters: Iterable[torch.nn.Parameter], momentum: float
) -> torch.optim.Optimizer:
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(parameters, lr=1e-3)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=1e-3)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=1e-3, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=1e-3, momentum=momentum)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=1.0)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=1e-2)
    raise ParamsError(f"Unknown optimizer {name!r}; choose one of {tuple(OPTIMIZER_STATE)}.")
