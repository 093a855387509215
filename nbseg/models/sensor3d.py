"""Sensor3D: a U-Net applied slice by slice with bidirectional ConvLSTMs across slices.

In the spirit of Dragonfly's *Sensor3D*, after Novikov et al., "Deep Sequential
Segmentation of Organs in Volumetric Medical Scans" (IEEE TMI 2018, arXiv:1807.02437): the
convolution, pooling and upsampling layers of a U-Net-like network are applied to every
slice of a slab (time-distributed: the slices are folded into the batch), and bidirectional
convolutional LSTMs carry context along the slice axis; the slab goes in, the reference
slice's segmentation comes out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import SpecError
from .blocks import ConvBlock, init_weights
from .registry import ArchitectureInfo, register
from .spec import ModelSpec


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015): the LSTM's matrix products are 3×3 convs.

    ``i, f, o, g = conv([x, h])``; ``c' = σ(f)·c + σ(i)·tanh(g)``; ``h' = σ(o)·tanh(c')``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size,
            padding=kernel_size // 2,
        )  # fmt: skip

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class BiConvLSTM(nn.Module):
    """Bidirectional ConvLSTM over the slice axis with a residual output.

    The input ``(B, S, C, H, W)`` is reduced to ``hidden`` channels by a 1×1 convolution,
    scanned by a forward and a backward :class:`ConvLSTMCell`, and the two hidden states are
    projected back to ``C`` channels and added to the input. The projection starts at zero, so
    an untrained network is a slice-wise U-Net and learns how much inter-slice context to
    use.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.forward_cell = ConvLSTMCell(hidden, hidden)
        self.backward_cell = ConvLSTMCell(hidden, hidden)
        self.project = nn.Conv2d(2 * hidden, channels, 1)
        self.reset_lstm_parameters()

    def reset_lstm_parameters(self) -> None:
        """Forget-gate biases 1 and a zero output projection (call after generic inits)."""
        with torch.no_grad():
            for cell in (self.forward_cell, self.backward_cell):
                h, bias = cell.hidden_channels, cell.gates.bias
                assert bias is not None  # the convolutions have biases
                bias.zero_()
                bias[h : 2 * h].fill_(1.0)
            self.project.weight.zero_()
            assert self.project.bias is not None
            self.project.bias.zero_()

    def forward(self, x: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """``(B, S, C, H, W) -> (B, S, C, H, W)``, or ``(B, C, H, W)`` at slice ``index``.

        With ``index`` only the steps needed for that slice are computed.
        """
        b, s = x.shape[:2]
        r = self.reduce(x.flatten(0, 1)).unflatten(0, (b, s))
        last = s - 1 if index is None else index
        first = 0 if index is None else index
        fwd: list[torch.Tensor] = []
        state = None
        for t in range(last + 1):
            state = self.forward_cell(r[:, t], state)
            fwd.append(state[0])
        bwd: list[torch.Tensor] = []
        state = None
        for t in range(s - 1, first - 1, -1):
            state = self.backward_cell(r[:, t], state)
            bwd.append(state[0])
        bwd.reverse()  # bwd[k] is slice first + k
        if index is not None:
            h = torch.cat([fwd[index], bwd[0]], dim=1)
            return x[:, index] + self.project(h)
        h = torch.stack([torch.cat([f, g], dim=1) for f, g in zip(fwd, bwd)], dim=1)
        return x + self.project(h.flatten(0, 1)).unflatten(0, (b, s))


class Sensor3D(nn.Module):
    """Slice-wise U-Net with bidirectional ConvLSTMs across the slab's slices.

    Parameters
    ----------
    input_count
        Number of input volumes (modalities).
    slices
        Slices of the slab.
    reference_index
        Index of the slice whose segmentation is returned.
    out_channels
        Output classes.
    depth, filters, norm, dropout
        As for :class:`nbseg.models.unet.UNet` (levels including the bottleneck, channels at
        full resolution doubling per level).
    lstm_channels
        Hidden channels of the bottleneck ConvLSTMs (per direction).
    final_lstm
        Also run a bidirectional ConvLSTM at full resolution before the output layer, as in
        the paper; then every slice is decoded (about twice the cost), otherwise only the
        reference slice is.

    Shapes: ``(B, input_count * slices, H, W) -> (B, out_channels, H, W)``; input channels
    are ordered input-major (``channel = input_index * slices + slice_index``).
    """

    def __init__(
        self,
        input_count: int,
        slices: int,
        reference_index: int,
        out_channels: int,
        depth: int = 5,
        filters: int = 16,
        norm: str = "batch",
        dropout: float = 0.0,
        lstm_channels: int = 64,
        final_lstm: bool = False,
    ) -> None:
        super().__init__()
        self.input_count, self.slices, self.reference_index = input_count, slices, reference_index
        self.depth = depth
        ch = [filters * 2**i for i in range(depth)]
        self.encoder = nn.ModuleList(
            ConvBlock(
                input_count if i == 0 else ch[i - 1],
                ch[i],
                2,
                norm,
                dropout=dropout if i >= depth - 2 else 0.0,
            )
            for i in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck_lstm = BiConvLSTM(ch[-1], lstm_channels)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(depth - 1)
        )
        self.decoder = nn.ModuleList(ConvBlock(2 * ch[i], ch[i], 2, norm) for i in range(depth - 1))
        self.final_lstm = BiConvLSTM(ch[0], max(4, ch[0] // 2)) if final_lstm else None
        self.head = nn.Conv2d(ch[0], out_channels, 1)
        init_weights(self)
        for lstm in (self.bottleneck_lstm, self.final_lstm):
            if lstm is not None:
                lstm.reset_lstm_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, ref = x.shape[0], self.slices, self.reference_index
        # (B, inputs*slices, H, W) -> (B*slices, inputs, H, W)
        x = x.unflatten(1, (self.input_count, s)).transpose(1, 2).flatten(0, 1)
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        seq = x.unflatten(0, (b, s))
        if self.final_lstm is None:
            # only the reference slice is decoded
            x = self.bottleneck_lstm(seq, index=ref)
            skips = [t.unflatten(0, (b, s))[:, ref] for t in skips]
        else:
            x = self.bottleneck_lstm(seq).flatten(0, 1)
        for i in reversed(range(self.depth - 1)):
            x = self.decoder[i](torch.cat([self.upsample[i](x), skips[i]], dim=1))
        if self.final_lstm is not None:
            x = self.final_lstm(x.unflatten(0, (b, s)), index=ref)
        return self.head(x)


def build_sensor3d(spec: ModelSpec, params: dict[str, Any]) -> nn.Module:
    """Build a :class:`Sensor3D` network for a 2.5D ``spec`` with resolved ``params``."""
    if not 2 <= params["depth"] <= 7:
        raise SpecError(f"depth must lie in 2..7, got {params['depth']!r}.")
    if not 1 <= params["filters"] <= 256:
        raise SpecError(f"filters must lie in 1..256, got {params['filters']!r}.")
    if not 1 <= params["lstm_channels"] <= 1024:
        raise SpecError(f"lstm_channels must lie in 1..1024, got {params['lstm_channels']!r}.")
    if not 0.0 <= params["dropout"] < 1.0:
        raise SpecError(f"dropout must lie in [0, 1), got {params['dropout']!r}.")
    assert spec.reference_index is not None  # ModelSpec.__post_init__ sets it
    return Sensor3D(
        spec.input_count,
        spec.slices,
        spec.reference_index,
        spec.class_count,
        depth=params["depth"],
        filters=params["filters"],
        norm=params["norm"],
        dropout=params["dropout"],
        lstm_channels=params["lstm_channels"],
        final_lstm=params["final_lstm"],
    )


register(
    ArchitectureInfo(
        name="sensor3d",
        title="Sensor3D",
        description=(
            "A U-Net applied to every slice of a slab of neighbouring slices, with "
            "bidirectional convolutional LSTMs carrying context along the slice axis at the "
            "bottleneck (and optionally before the output, 'final_lstm'), after Novikov et "
            "al. 2018 and Dragonfly's Sensor3D. Uses 3D context for volumes with anisotropic "
            "or noisy slices while predicting one slice at a time. 2.5D only: set the number "
            "of slices and the spacing in the model settings. Costs about 'slices'/2 times a "
            "2D U-Net of the same depth and filters per step."
        ),
        dimensions=("2.5D",),
        defaults={
            "depth": 5,
            "filters": 16,
            "lstm_channels": 64,
            "final_lstm": False,
            "norm": "batch",
            "dropout": 0.0,
        },
        builder=build_sensor3d,
        size_divisor=lambda spec, params: 2 ** (int(params["depth"]) - 1),
    )
)
