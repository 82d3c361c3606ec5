"""A non-causal text encoder in front of the decoder: phoneme embeddings -> contextual text embeddings.

Koel-TTS (and NVIDIA's T5-TTS before it) reads the text through a transformer encoder whose layers see the
whole phoneme string in both directions and whose feed-forward blocks are 1D convolutions (kernel 3), so each
text position carries its neighbours, its place in the word and in the utterance. The decoder-only KoelLM
puts the text in its prefix; with `LMConfig.text_encoder_layers > 0` that prefix holds this encoder's output
instead of the bare phoneme embeddings (0, the default, keeps the bare embeddings).

    enc = TextEncoder(d_model=256, num_layers=3, num_heads=4, ffn_dim=768)
    out = enc(embeds [B, T, D], lengths [B])      # -> float [B, T, D]; positions >= length are zero

Pre-norm residual layers: self-attention over a row's own positions (padding masked) and a conv feed-forward
(conv k -> GELU -> conv k), with sinusoidal positions added to the input at a learned scale (ESPnet's scaled
positional encoding; it starts at the phoneme embeddings' init std, so neither drowns the other). Padding is
zeroed before every convolution, so a row's output does not depend on how far its batch is padded or on its
neighbours.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """float [length, dim]: the transformer's sine/cosine position code (even dims sine, odd dims cosine)."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return out


class ConvFeedForward(nn.Module):
    """Conv1d(D -> F, k) -> GELU -> Conv1d(F -> D, k) along time, on masked input."""

    def __init__(self, d_model: int, ffn_dim: int, kernel_size: int):
        super().__init__()
        self.conv_in = nn.Conv1d(d_model, ffn_dim, kernel_size, padding=kernel_size // 2)
        self.conv_out = nn.Conv1d(ffn_dim, d_model, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x float [B, T, D], keep float [B, T, 1] (1 = real position) -> float [B, T, D]."""
        h = self.conv_in((x * keep).transpose(1, 2))  # (B, F, T)
        h = F.gelu(h) * keep.transpose(1, 2)
        return self.conv_out(h).transpose(1, 2)  # (B, T, D)


class TextEncoderLayer(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, kernel_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = ConvFeedForward(d_model, ffn_dim, kernel_size)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], attn_mask bool [B, 1, 1, T] (True = may attend), keep float [B, T, 1] -> [B, T, D]."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, d)
        x = x + self.out(attn.transpose(1, 2).reshape(batch, length, dim))
        return x + self.ffn(self.norm_ffn(x), keep)


class TextEncoder(nn.Module):
    """`num_layers` non-causal layers over phoneme embeddings; the output has the input's shape."""

    def __init__(self, d_model: int, num_layers: int, num_heads: int, ffn_dim: int, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TextEncoder: kernel_size={kernel_size} must be odd and >= 1")
        self.layers = nn.ModuleList(
            TextEncoderLayer(d_model, num_heads, ffn_dim, kernel_size) for _ in range(num_layers)
        )
        self.position_scale = nn.Parameter(torch.tensor(0.02))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """embeds float [B, T, D], lengths long [B] (real positions per row) -> float [B, T, D], padding zero."""
        length = embeds.shape[1]
        real = torch.arange(length, device=embeds.device)[None, :] < lengths[:, None]  # (B, T)
        keep = real[..., None].to(embeds.dtype)  # (B, T, 1)
        attn_mask = real[:, None, None, :]  # (B, 1, 1, T): every query sees its row's real keys
        positions = sinusoidal_positions(length, embeds.shape[2], embeds.device).to(embeds.dtype)  # (T, D)
        x = embeds + self.position_scale * positions
        for layer in self.layers:
            x = layer(x, attn_mask, keep)
        return self.norm(x) * keep
