"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE Made Simple"), grouped as in NanoCodec.

    latents [B, K * D, F] -> GroupFiniteScalarQuantizer -> dequantized [B, K * D, F] (values in [-1, 1])
                                                         + indices [B, K, F] (long, 0 .. prod(levels) - 1)

Each of the K groups owns D = len(levels) consecutive latent channels and is one codebook: every channel is
squashed into a bounded range and rounded to one of L_d levels, and the D level numbers of a frame form one
index in mixed radix (channel 0 least significant). NanoCodec 1.1 kbps: K = 8 groups of levels [8, 7, 6, 6]
(2016 codes each); 0.6 kbps: 4 x [9, 8, 8, 7]; 1.78 kbps: 13 x [8, 7, 6, 6]. No learned parameters.

Three views of one quantized frame, and exact maps between them (`tests/test_codec_model.py` round-trips all):
    indices  int   one per group                       <- what the LM predicts ("codes" at the model API)
    levels   int   0 .. L_d - 1 per channel            <- indices in mixed radix, base cumprod([1] + L[:-1])
    codes    float (level - L_d // 2) / (L_d // 2)     <- what the decoder reads, in [-1, 1]

Numerics follow NVIDIA NeMo's `FiniteScalarQuantizer` exactly (nemo/collections/tts/modules/
audio_codec_modules.py), which differs from other public FSQ code (e.g. lucidrains' bound uses `atanh` and
`1 + eps`):
    scale  = (L - 1) / 2 * (1 - eps),  eps = 1e-3
    offset = 0.5 if L is even else 0
    shift  = tan(offset / scale)                               # tan, not atanh
    bound  = scale * tanh(x + shift) - offset                  # in (-L/2, L/2): L integers after rounding
    code   = round(bound) / (L // 2)                           # torch.round: half to even; straight-through
    index  = sum_d (code_d * (L_d // 2) + L_d // 2) * base_d   # in float, then truncated to int32 as NeMo does
computed in float32 whatever the surrounding precision (NeMo runs FSQ under fp32 too). Buffer names
(`fsqs.{k}.num_levels`, `fsqs.{k}.dim_base_index`, int32 [1, D, 1]) match NeMo's state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizerConfig:
    """Group FSQ: `num_groups` codebooks, each over len(num_levels_per_group) latent channels."""

    num_groups: int = 8
    num_levels_per_group: list[int] = field(default_factory=lambda: [8, 7, 6, 6])
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.num_groups < 1:
            raise ValueError(f"quantizer.num_groups must be >= 1, got {self.num_groups}")
        if not self.num_levels_per_group or any(int(n) < 2 for n in self.num_levels_per_group):
            raise ValueError(f"quantizer.num_levels_per_group must be levels >= 2, got {self.num_levels_per_group}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"quantizer.eps must be in [0, 1), got {self.eps}")

    @property
    def codebook_size(self) -> int:
        return math.prod(self.num_levels_per_group)

    @property
    def latent_dim(self) -> int:
        return self.num_groups * len(self.num_levels_per_group)


@dataclass
class QuantizerOutput:
    """dequantized: [B, K * D, F] float codes with straight-through gradients; indices: [B, K, F] long."""

    dequantized: torch.Tensor
    indices: torch.Tensor


class FiniteScalarQuantizer(nn.Module):
    """One FSQ codebook over D channels: [B, D, F] <-> indices [B, F]."""

    def __init__(self, num_levels: list[int], eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(n) for n in num_levels]
        base = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0).to(torch.int32)
        self.register_buffer("dim_base_index", base.view(1, -1, 1))  # (1, D, 1)
        self.register_buffer("num_levels", torch.tensor(levels, dtype=torch.int32).view(1, -1, 1))  # (1, D, 1)
        self.eps = eps
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """Bound each channel to (-L/2, L/2), shifted for even L so rounding yields exactly L integers."""
        output_scale = (self.num_levels - 1) / 2 * (1 - self.eps)  # (1, D, 1) float
        output_offset = torch.where(self.num_levels % 2 == 0, 0.5, 0.0)
        input_shift = (output_offset / output_scale).tan()
        return output_scale * (x + input_shift).tanh() - output_offset

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [B, D, F] -> codes in [-1, 1], rounded with a straight-through gradient."""
        bounded = self.compress(x)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / (self.num_levels // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, D, F] -> indices [B, F] (int32, NeMo's float sum then truncation)."""
        half = self.num_levels // 2
        levels = half * codes + half  # (B, D, F), integers 0 .. L_d - 1 stored as float
        return torch.sum(levels * self.dim_base_index, dim=1).to(torch.int32)

    def indices_to_levels(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, F] -> per-channel level numbers [B, D, F] (0 .. L_d - 1)."""
        return (indices.unsqueeze(1) // self.dim_base_index) % self.num_levels

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, F] -> codes [B, D, F] in [-1, 1]."""
        half = self.num_levels // 2
        return (self.indices_to_levels(indices) - half) / half

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents [B, D, F] -> (codes [B, D, F] float32, indices [B, F] int32)."""
        if x.shape[1] != self.dim:
            raise ValueError(f"FSQ expects {self.dim} channels, got input of shape {tuple(x.shape)}")
        codes = self.quantize(x.float())
        return codes, self.codes_to_indices(codes)


class GroupFiniteScalarQuantizer(nn.Module):
    """K independent FSQ codebooks, group k over latent channels [k * D, (k + 1) * D)."""

    def __init__(self, num_groups: int, num_levels_per_group: list[int], eps: float = 1e-3) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.codebook_dim_per_group = len(num_levels_per_group)
        self.fsqs = nn.ModuleList([FiniteScalarQuantizer(num_levels_per_group, eps) for _ in range(num_groups)])

    @classmethod
    def from_config(cls, cfg: QuantizerConfig) -> GroupFiniteScalarQuantizer:
        return cls(cfg.num_groups, list(cfg.num_levels_per_group), cfg.eps)

    @property
    def codebook_dim(self) -> int:
        """Latent channels quantized: K * D."""
        return self.num_groups * self.codebook_dim_per_group

    @property
    def codebook_size(self) -> int:
        """Codes per codebook (per group)."""
        return self.fsqs[0].codebook_size

    def _check_latents(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.codebook_dim:
            raise ValueError(f"quantizer expects latents [B, {self.codebook_dim}, F], got {tuple(x.shape)}")

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """Latents [B, K * D, F] -> dequantized [B, K * D, F] (straight-through) and indices [B, K, F]."""
        self._check_latents(latents)
        groups = latents.float().chunk(self.num_groups, dim=1)  # K x (B, D, F)
        with torch.autocast(device_type=latents.device.type, enabled=False):  # FSQ in float32, as NeMo
            outs = [fsq(g) for fsq, g in zip(self.fsqs, groups, strict=True)]
        dequantized = torch.cat([codes for codes, _ in outs], dim=1)  # (B, K * D, F)
        indices = torch.stack([idx for _, idx in outs], dim=1).long()  # (B, K, F)
        return QuantizerOutput(dequantized=dequantized, indices=indices)

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, K * D, F] -> indices [B, K, F] (long)."""
        return self(latents).indices

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Dequantized codes [B, K * D, F] (values k / (L // 2)) -> indices [B, K, F] (long); inverse of decode."""
        self._check_latents(codes)
        groups = codes.chunk(self.num_groups, dim=1)  # K x (B, D, F)
        return torch.stack([fsq.codes_to_indices(g) for fsq, g in zip(self.fsqs, groups, strict=True)], 1).long()

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, K, F] -> dequantized codes [B, K * D, F] (float32, values in [-1, 1])."""
        if indices.dim() != 3 or indices.shape[1] != self.num_groups:
            raise ValueError(f"quantizer expects indices [B, {self.num_groups}, F], got {tuple(indices.shape)}")
        codes = [fsq.indices_to_codes(indices[:, k]) for k, fsq in enumerate(self.fsqs)]  # K x (B, D, F)
        return torch.cat(codes, dim=1)
