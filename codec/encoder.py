"""NanoCodec's encoder: HiFi-GAN-style strided conv stack, waveform [B, T] -> latents [B, D, T / hop].

    wav [B, 1, T]
      pre_conv   k7                                     -> [B, C, T]             C = base_channels (24)
      5 x stage  HiFiGANResLayer(C) -> act -> conv k=2s, stride s, C -> 2C
                                                       -> [B, 2C, T / s]       s = 2, 3, 6, 7, 7 (hop 1764)
      post act -> post_conv k7                          -> [B, D, T / hop]      D = latent_dim

Residual layers average kernels 3/7/11 with dilation chains (1, 3, 5); leaky ReLU; every conv weight-normed;
non-causal with symmetric `pad_mode` padding (replicate in NVIDIA's checkpoints). `causal: true` swaps every
conv for a left-padded causal one (the paper's fully causal ablation; such an encoder also streams in chunks
of whole frames). The input length must be a multiple of the hop (NanoCodec.encode pads). Paper: NanoCodec
(Casanova et al. 2025) after the Low Frame-rate Speech Codec; structure and names follow NVIDIA NeMo's
`HiFiGANEncoder`, so `audio_encoder.*` checkpoint tensors load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from codec.activations import ACTIVATIONS, CodecActivation
from codec.conv import PAD_MODES, CausalConv1dNorm, Conv1dNorm, get_down_sample_padding
from codec.residual import HiFiGANResLayer


@dataclass
class EncoderConfig:
    """Encoder geometry (defaults: NanoCodec 12.5 FPS, paper scale)."""

    down_sample_rates: list[int] = field(default_factory=lambda: [2, 3, 6, 7, 7])
    base_channels: int = 24
    in_kernel_size: int = 7
    out_kernel_size: int = 7
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])
    activation: str = "lrelu"
    pad_mode: str = "replicate"
    causal: bool = False

    def __post_init__(self) -> None:
        if not self.down_sample_rates or any(r < 1 for r in self.down_sample_rates):
            raise ValueError(f"encoder.down_sample_rates must be positive ints, got {self.down_sample_rates}")
        if self.base_channels < 1 or self.in_kernel_size < 1 or self.out_kernel_size < 1:
            raise ValueError("encoder.base_channels, in_kernel_size and out_kernel_size must be >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"encoder.activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"encoder.pad_mode {self.pad_mode!r} is not one of {PAD_MODES}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.down_sample_rates)


class HiFiGANEncoder(nn.Module):
    """Waveform [B, T] (T a multiple of the hop) -> latents [B, encoded_dim, T / hop]."""

    def __init__(self, cfg: EncoderConfig, encoded_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.down_sample_rates = list(cfg.down_sample_rates)
        self.hop_length = cfg.hop_length
        causal, pad = cfg.causal, cfg.pad_mode

        def conv(c_in: int, c_out: int, k: int) -> nn.Module:
            if causal:
                return CausalConv1dNorm(c_in, c_out, k)
            return Conv1dNorm(c_in, c_out, k, pad_mode=pad)

        self.pre_conv = conv(1, cfg.base_channels, cfg.in_kernel_size)
        self.activations = nn.ModuleList()
        self.down_sample_conv_layers = nn.ModuleList()
        self.res_layers = nn.ModuleList()
        channels = cfg.base_channels
        for rate in self.down_sample_rates:
            self.res_layers.append(
                HiFiGANResLayer(
                    channels, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, cfg.activation, causal, pad
                )
            )
            self.activations.append(CodecActivation(cfg.activation, channels))
            kernel = 2 * rate
            if causal:
                down = CausalConv1dNorm(channels, 2 * channels, kernel, stride=rate)
            else:
                padding = get_down_sample_padding(kernel, rate)
                down = Conv1dNorm(channels, 2 * channels, kernel, stride=rate, padding=padding, pad_mode=pad)
            self.down_sample_conv_layers.append(down)
            channels *= 2
        self.post_activation = CodecActivation(cfg.activation, channels)
        self.post_conv = conv(channels, encoded_dim, cfg.out_kernel_size)
        self.encoded_dim = encoded_dim

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, T] -> latents [B, D, T / hop]."""
        if audio.dim() != 2 or audio.shape[-1] % self.hop_length != 0:
            raise ValueError(
                f"encoder expects audio [B, T] with T a multiple of {self.hop_length}, got {tuple(audio.shape)}"
            )
        x = self.pre_conv(audio.unsqueeze(1))  # (B, C, T)
        for res_layer, act, down in zip(self.res_layers, self.activations, self.down_sample_conv_layers, strict=True):
            x = down(act(res_layer(x)))  # (B, 2C, T / s)
        return self.post_conv(self.post_activation(x))  # (B, D, T / hop)

    def receptive_field(self) -> tuple[int, int]:
        """(left, right): latent frame f depends on input samples [f * hop - left, f * hop + right], no others.

        Each conv with kernel k, dilation d and left padding p reads p samples of its own input to the left of an
        output's position and (k - 1) * d - p to the right; in waveform samples that is times the stride product
        of the layers before it (the "jump"). Reaches add up along the chain; a residual layer reaches as far as
        its widest block (a chain of two convs per dilation). Activations are elementwise. Paper scale: about
        24,300 samples left and 25,800 right (1.1-1.2 s, 14-15 frames), so chunks of audio encoded with that much
        context on each side give the offline codes (`NanoCodec.encode` on long audio does this).
        """
        jump, left, right = 1, 0, 0

        def add(reach: tuple[int, int]) -> None:
            nonlocal left, right
            left, right = left + reach[0] * jump, right + reach[1] * jump

        add(_conv_reach(self.pre_conv))
        for res_layer, down in zip(self.res_layers, self.down_sample_conv_layers, strict=True):
            add(_res_layer_reach(res_layer))
            add(_conv_reach(down))
            jump *= down.conv.stride[0]
        add(_conv_reach(self.post_conv))
        return left, right


def _conv_reach(layer: nn.Module) -> tuple[int, int]:
    """(left, right) input samples one output of a `Conv1dNorm` or `CausalConv1dNorm` reads around its position."""
    conv = layer.conv
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    left = layer.padding_total if isinstance(layer, CausalConv1dNorm) else conv.padding[0]
    return left, span - left


def _res_layer_reach(layer: HiFiGANResLayer) -> tuple[int, int]:
    """(left, right) reach of a residual layer: the widest of its blocks, each a chain of (input, skip) convs."""
    per_block = []
    for block in layer.res_blocks:
        convs = [r for b in block.res_blocks for r in (_conv_reach(b.input_conv), _conv_reach(b.skip_conv))]
        per_block.append((sum(r[0] for r in convs), sum(r[1] for r in convs)))
    return max(r[0] for r in per_block), max(r[1] for r in per_block)
