"""NanoCodec's decoder: causal HiFi-GAN generator, codes [B, D, F] -> waveform [B, F * hop], streamable.

    codes [B, D, F]                        (dequantized FSQ values in [-1, 1])
      pre_conv   k7, causal                             -> [B, C, F]            C = base_channels (864)
      5 x stage  half-snake -> causal transposed conv (kernel 2s, stride s, C -> C/2, groups = C/2)
                 -> HiFiGANResLayer(C/2), causal        -> [B, C/2, F * s]      s = 7, 7, 6, 3, 2 (hop 1764)
      post half-snake -> post_conv k3, causal -> clamp  -> [B, 1, F * hop] -> [B, F * hop]

Channels halve 864 -> 432 -> 216 -> 108 -> 54 -> 27. With `groups = C_out` (NeMo's
`n_groups_equal_to_out_channels`) each output channel of an upsampler mixes just 2 input channels.
Every conv is causal (left context only) and every upsampler trims its overhang on the right, so output
sample n depends on frames <= n // hop only: zero lookahead. Each of those layers streams with its own state
(`codec/streaming.py`), so `with decoder.streaming(B): decoder(codes[..., i:i+1])` returns, frame by frame,
exactly the offline output. `causal: false` builds the non-causal variant (symmetric padding and symmetric
transposed-conv trim; NeMo's `HiFiGANDecoder`), which cannot stream. Structure and names follow NVIDIA NeMo's
`CausalHiFiGANDecoder`, so `audio_decoder.*` checkpoint tensors load by name. Paper: NanoCodec (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from codec.activations import ACTIVATIONS, CodecActivation, OutputActivation
from codec.conv import (
    PAD_MODES,
    CausalConv1dNorm,
    CausalConvTranspose1dNorm,
    Conv1dNorm,
    ConvTranspose1dNorm,
)
from codec.residual import HiFiGANResLayer
from codec.streaming import StreamingModule
from common.derived import DerivedWeight


@dataclass
class DecoderConfig:
    """Decoder geometry (defaults: NanoCodec 12.5 FPS, paper scale)."""

    up_sample_rates: list[int] = field(default_factory=lambda: [7, 7, 6, 3, 2])
    base_channels: int = 864
    in_kernel_size: int = 7
    out_kernel_size: int = 3
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])
    activation: str = "half_snake"
    output_activation: str = "clamp"
    pad_mode: str = "zeros"  # used by the non-causal variant; causal convs always pad with zeros (as NeMo)
    causal: bool = True
    grouped_upsample: bool = True  # NeMo's n_groups_equal_to_out_channels

    def __post_init__(self) -> None:
        if not self.up_sample_rates or any(r < 1 for r in self.up_sample_rates):
            raise ValueError(f"decoder.up_sample_rates must be positive ints, got {self.up_sample_rates}")
        halvings = 2 ** len(self.up_sample_rates)
        if self.base_channels < halvings or self.base_channels % halvings != 0:
            nearest = halvings * max(1, round(self.base_channels / halvings))
            raise ValueError(
                f"decoder.base_channels={self.base_channels} must be a multiple of {halvings} "
                f"(it is halved {len(self.up_sample_rates)} times), e.g. {nearest}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"decoder.activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.output_activation not in ("clamp", "tanh"):
            raise ValueError(f"decoder.output_activation {self.output_activation!r} is not 'clamp' or 'tanh'")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"decoder.pad_mode {self.pad_mode!r} is not one of {PAD_MODES}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.up_sample_rates)


class HiFiGANDecoder(StreamingModule):
    """Codes [B, input_dim, F] -> waveform [B, F * hop]; streams frame by frame when causal."""

    def __init__(self, cfg: DecoderConfig, input_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal = cfg.causal
        self.up_sample_rates = list(cfg.up_sample_rates)
        self.hop_length = cfg.hop_length
        self.input_dim = input_dim
        pad = cfg.pad_mode

        def conv(c_in: int, c_out: int, k: int) -> nn.Module:
            return CausalConv1dNorm(c_in, c_out, k) if cfg.causal else Conv1dNorm(c_in, c_out, k, pad_mode=pad)

        self.pre_conv = conv(input_dim, cfg.base_channels, cfg.in_kernel_size)
        self.activations = nn.ModuleList()
        self.up_sample_conv_layers = nn.ModuleList()
        self.res_layers = nn.ModuleList()
        channels = cfg.base_channels
        for rate in self.up_sample_rates:
            out_channels = channels // 2
            groups = out_channels if cfg.grouped_upsample else 1
            self.activations.append(CodecActivation(cfg.activation, channels))
            upsample = CausalConvTranspose1dNorm if cfg.causal else ConvTranspose1dNorm
            self.up_sample_conv_layers.append(upsample(channels, out_channels, 2 * rate, rate, groups=groups))
            self.res_layers.append(
                HiFiGANResLayer(
                    out_channels,
                    cfg.resblock_kernel_sizes,
                    cfg.resblock_dilation_sizes,
                    cfg.activation,
                    cfg.causal,
                    pad,
                )
            )
            channels = out_channels
        self.post_activation = CodecActivation(cfg.activation, channels)
        self.post_conv = conv(channels, 1, cfg.out_kernel_size)
        self.out_activation = OutputActivation(cfg.output_activation)
        self.onnx_session = DerivedWeight()  # codec.onnx_step's exported step, shared by replicas sharing the weights

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, D, F] -> audio [B, F * hop] in [-1, 1]."""
        if codes.dim() != 3 or codes.shape[1] != self.input_dim:
            raise ValueError(f"decoder expects [B, {self.input_dim}, F], got {tuple(codes.shape)}")
        if self.is_streaming and not self.causal:
            raise RuntimeError("a non-causal decoder (decoder.causal: false) cannot stream; decode offline instead")
        x = self.pre_conv(codes)  # (B, C, F)
        for act, up, res_layer in zip(self.activations, self.up_sample_conv_layers, self.res_layers, strict=True):
            x = res_layer(up(act(x)))  # (B, C / 2, T * s)
        x = self.post_conv(self.post_activation(x))  # (B, 1, F * hop)
        return self.out_activation(x).squeeze(1)  # (B, F * hop)
