"""Codec codes as their FSQ level numbers: input embeddings and output logits that share the codebook's structure.

An FSQ code is not an arbitrary id: code v of a codebook with levels [L_0, .., L_{D-1}] is D level numbers in
mixed radix, channel 0 least significant (codec/fsq.py), so codes that differ in one channel's level are
neighbours in the codec's latent space. With `LMConfig.code_levels` set, the LM sees that structure:

    embed = LevelEmbedding(num_streams, levels, num_specials, d_model)
    embed(ids [..] in 0 .. C*(V+S)-1)  -> float [.., d_model]     code v of stream c = sum over d of the
                                                                   row of (c, d, level_d(v)); specials own rows
    head = LevelHead(d_model, num_streams, levels, num_specials)
    head(hidden [N, D])                -> logits [N, C, V + S]    logit(v) = sum over d of (c, d, level_d(v))

A code's embedding is then D * L-level rows instead of one row of V, and the head's softmax over the V + S
entries is the product of one small softmax per channel (times the specials' share): D*L + S outputs per stream
instead of V + S (27 + 3 instead of 2019 for NanoCodec's [8, 7, 6, 6]). Everything downstream (the loss,
guidance, top-k, sampling) sees ordinary logits over the same vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tts_lm.local_transformer import Picker


def code_levels(levels: list[int]) -> torch.Tensor:
    """long [V, D]: the level number of every code in every channel (mixed radix, channel 0 least significant)."""
    base = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0)  # (D,)
    codes = torch.arange(math.prod(levels))[:, None]  # (V, 1)
    return (codes // base) % torch.tensor(levels)  # (V, D)


def expand_levels(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Per-channel scores [.., L_d, ..] at axis `dim` -> [.., V, ..]: entry v = sum over d of parts[d][level_d(v)].

    Broadcast in mixed radix (the last channel varies slowest), so nothing of size V x D is materialised.
    """
    dim = dim % parts[0].dim()
    total = None
    channels = len(parts)
    for d, part in enumerate(parts):
        shape = list(part.shape[:dim]) + [1] * channels + list(part.shape[dim + 1 :])
        shape[dim + channels - 1 - d] = part.shape[dim]
        view = part.reshape(shape)
        total = view if total is None else total + view
    lead, trail = total.shape[:dim], total.shape[dim + channels :]
    return total.reshape(*lead, -1, *trail)


class LevelEmbedding(nn.Module):
    """An embedding over C streams x (V codes + S specials) whose code rows are sums of per-channel level rows."""

    def __init__(self, num_streams: int, levels: list[int], num_specials: int, dim: int):
        super().__init__()
        self.num_streams, self.levels, self.num_specials = num_streams, list(levels), num_specials
        self.vocab = math.prod(levels) + num_specials
        self.level_weight = nn.Parameter(torch.randn(num_streams, sum(levels), dim) * 0.02)
        self.special_weight = nn.Parameter(torch.randn(num_streams, num_specials, dim) * 0.02)
        # rows of [level rows (C * sum L), special rows (C * S), one zero row]: each id -> D row indices
        pad = num_streams * (sum(levels) + num_specials)
        offsets = torch.cumsum(torch.tensor([0, *levels[:-1]]), dim=0)  # (D,)
        rows = []
        for c in range(num_streams):
            code_rows = c * sum(levels) + offsets + code_levels(levels)  # (V, D)
            special = num_streams * sum(levels) + c * num_specials + torch.arange(num_specials)  # (S,)
            special_rows = torch.full((num_specials, len(levels)), pad)
            special_rows[:, 0] = special
            rows += [code_rows, special_rows]
        self.register_buffer("rows", torch.cat(rows), persistent=False)  # (C * (V + S), D)
        self.pad_row = pad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        zero = self.level_weight.new_zeros(1, self.level_weight.shape[2])
        weight = torch.cat([self.level_weight.flatten(0, 1), self.special_weight.flatten(0, 1), zero])
        rows = self.rows[ids.reshape(-1)]  # (N, D)
        out = F.embedding_bag(rows, weight, mode="sum", padding_idx=self.pad_row)  # (N, dim)
        return out.view(*ids.shape, -1)


class LevelHead(nn.Module):
    """All streams of a step at once, each as D per-channel level scores + S special scores (ParallelHead's
    interface: logits [N, C, V + S])."""

    def __init__(self, d_model: int, num_streams: int, levels: list[int], num_specials: int):
        super().__init__()
        self.num_streams, self.levels, self.num_specials = num_streams, list(levels), num_specials
        self.vocab = math.prod(levels) + num_specials
        self.proj = nn.Linear(d_model, num_streams * (sum(levels) + num_specials))

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.proj(hidden).view(hidden.shape[0], self.num_streams, -1)  # (N, C, sum L + S)
        *parts, specials = scores.split([*self.levels, self.num_specials], dim=2)
        return torch.cat([expand_levels(parts, dim=2), specials], dim=2)  # (N, C, V + S)

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, pick: Picker) -> torch.Tensor:
        return pick(self(hidden), 0)  # (R, C)
