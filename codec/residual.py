"""HiFi-GAN residual layers ("multi-receptive-field fusion", Kong et al. 2020), causal or not. [B, C, T] -> same.

    ResidualBlock    x + conv_k,d=1( act( conv_k,d( act(x) ) ) )
    HiFiGANResBlock  a chain of ResidualBlocks with dilations (1, 3, 5), one kernel size
    HiFiGANResLayer  the mean of HiFiGANResBlocks with kernel sizes (3, 7, 11), all fed the same input

            +-> [k=3:  d1 -> d3 -> d5] --+
        x --+-> [k=7:  d1 -> d3 -> d5] --+--> mean
            +-> [k=11: d1 -> d3 -> d5] --+

NanoCodec uses these in every encoder stage (non-causal, leaky ReLU, `pad_mode` padding) and every decoder
stage (causal, half-snake). A causal layer's convs are `CausalConv1dNorm`s, each streaming with its own
history, so the whole layer streams with no state of its own. Names mirror NVIDIA NeMo
(`res_blocks.{j}.res_blocks.{m}.input_conv|skip_conv|input_activation|skip_activation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from codec.activations import CodecActivation
from codec.conv import CausalConv1dNorm, Conv1dNorm


def make_conv(
    channels_in: int, channels_out: int, kernel_size: int, dilation: int, causal: bool, pad_mode: str
) -> nn.Module:
    """A stride-1 conv that keeps the length: causal (left context, streams) or 'same' padded with `pad_mode`."""
    if causal:
        return CausalConv1dNorm(channels_in, channels_out, kernel_size, dilation=dilation)
    return Conv1dNorm(channels_in, channels_out, kernel_size, dilation=dilation, pad_mode=pad_mode)


class ResidualBlock(nn.Module):
    """act -> dilated conv -> act -> conv (dilation 1), added back to the input."""

    def __init__(
        self, channels: int, kernel_size: int, dilation: int, activation: str, causal: bool, pad_mode: str
    ) -> None:
        super().__init__()
        self.input_activation = CodecActivation(activation, channels)
        self.input_conv = make_conv(channels, channels, kernel_size, dilation, causal, pad_mode)
        self.skip_activation = CodecActivation(activation, channels)
        self.skip_conv = make_conv(channels, channels, kernel_size, 1, causal, pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.input_conv(self.input_activation(x))
        res = self.skip_conv(self.skip_activation(res))
        return x + res


class HiFiGANResBlock(nn.Module):
    """ResidualBlocks of one kernel size applied in sequence, one per dilation."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilations: Sequence[int],
        activation: str,
        causal: bool,
        pad_mode: str,
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            [ResidualBlock(channels, kernel_size, d, activation, causal, pad_mode) for d in dilations]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class HiFiGANResLayer(nn.Module):
    """The average of one HiFiGANResBlock per kernel size, all applied to the same input."""

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int],
        dilations: Sequence[int],
        activation: str,
        causal: bool,
        pad_mode: str,
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            [HiFiGANResBlock(channels, k, dilations, activation, causal, pad_mode) for k in kernel_sizes]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residuals = [block(x) for block in self.res_blocks]
        return sum(residuals) / len(residuals)
