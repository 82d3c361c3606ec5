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

from codec.activations import CodecActivation, half_snake_into
from codec.conv import CausalConv1dNorm, Conv1dNorm
from common.derived import DerivedWeight, version_key

# inputs of at most this many values (B x C x T) run their branches side by side: there the per-call overhead
# outweighs the copies stacking adds (measured, 1 thread: CPU decoder 17.6 -> 15.9 ms per 1-frame chunk; applied
# to every stage of 8-frame chunks it cost 6.3 -> 6.9 ms per frame, and 4 % at paper scale)
STACK_MAX_VALUES = 16384
_ACTS = ("input_activation", "skip_activation")  # a ResidualBlock's two activations


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
    """The average of one HiFiGANResBlock per kernel size, all applied to the same input.

    Short inputs without autograd (a streamed frame) with half-snake activations run the branches side by side
    (`stack_branches`): each activation and residual add as ONE call over [branches, B, C, T] with the branches'
    alphas stacked, each conv still its branch's own module (its weights, its streaming state). The same
    operations on the same values, so the same bits; a streamed frame of the CPU decoder makes ~130 fewer small
    calls per layer (inputs up to STACK_MAX_VALUES values; larger ones are not overhead-bound).
    """

    stack_branches: bool = True  # the side-by-side path where it applies (tests switch it off to compare)

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
        self.stackable = activation.lower() == "half_snake"
        # the branches' Snake modules per block row, [row][input, skip][branch] (plain references, not submodules)
        self.branch_snakes = (
            [
                [[getattr(b.res_blocks[row], name).activation.snake_act for b in self.res_blocks] for name in _ACTS]
                for row in range(len(dilations))
            ]
            if self.stackable
            else []
        )
        self.stacked_alphas = DerivedWeight()  # per block row: (alpha, 1 / (alpha + eps)) of every branch, stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stack_branches and self.stackable and not torch.is_grad_enabled() and x.numel() <= STACK_MAX_VALUES:
            return self._forward_stacked(x)
        residuals = [block(x) for block in self.res_blocks]
        return sum(residuals) / len(residuals)

    def _alphas(self) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """[row][input, skip] -> (alpha, inv_alpha) stacked over the branches: [n, 1, C / 2, 1] each."""
        snakes = self.branch_snakes

        def stack() -> list:
            return [
                [(torch.stack([a.alpha for a in acts]), torch.stack([a.inv_alpha() for a in acts])) for acts in row]
                for row in snakes
            ]

        key = version_key(*(a.alpha for row in snakes for acts in row for a in acts))
        return self.stacked_alphas.get(key, stack)

    def _forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x) with the branches side by side (see the class doc); x [B, C, T] -> [B, C, T]."""
        branches = len(self.res_blocks)
        slope = self.res_blocks[0].res_blocks[0].input_activation.activation.lrelu.negative_slope
        stacked = x.expand(branches, *x.shape)  # (n, B, C, T): every branch starts from x
        for row, ((alpha_in, inv_in), (alpha_skip, inv_skip)) in enumerate(self._alphas()):
            blocks = [branch.res_blocks[row] for branch in self.res_blocks]
            act = half_snake_into(x.new_empty(stacked.shape), stacked, alpha_in, inv_in, slope)
            res = torch.stack([block.input_conv(act[i]) for i, block in enumerate(blocks)])  # (n, B, C, T)
            act = half_snake_into(torch.empty_like(res), res, alpha_skip, inv_skip, slope)
            res = torch.stack([block.skip_conv(act[i]) for i, block in enumerate(blocks)])
            stacked = stacked + res
        return sum(stacked.unbind(0)) / branches
