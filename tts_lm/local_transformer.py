"""Output heads over the codebooks of one LM step: one parallel linear head, or a tiny local transformer.

Koel-TTS predicts all codebooks of a frame in parallel from the backbone's hidden state (`ParallelHead`:
one linear to streams x vocabulary). NVIDIA's later work (MagpieTTS) adds a small causal transformer that runs
over the codebooks of a frame, so codebook k is predicted from the hidden state and codebooks 0..k-1
(`LocalTransformer`): the codebooks of a frame stop being independent given the context.

    head(hidden [N, D], targets [N, C]) -> logits [N, C, V]          (training, teacher forcing)
    head.sample(hidden [R, D], pick)    -> codes [R, C]

`pick(logits [R, C_or_1, V], first_stream) -> codes [R, C_or_1]` is the caller's sampler (it may combine the
classifier-free-guidance branches); the parallel head calls it once for all C streams, the local transformer
once per stream, in order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.derived import DerivedWeight, version_key

Picker = Callable[[torch.Tensor, int], torch.Tensor]


class WideLinear(nn.Linear):
    """nn.Linear for a wide output layer (the parallel head: d_model -> C x V, e.g. 256 -> 16152), same parameters.

    In inference on a CPU (no autograd) it computes x @ W^T against W^T kept contiguous (`DerivedWeight`, remade
    when the weight changes): for the few rows of a generation step (1-2 x B) MKL reads the transposed 16 MB weight
    several times slower than its plain layout (one step's head: 3.6 ms -> 0.75 ms at 2 rows, 1 thread). The same
    sums, so the same logits up to float rounding. Training and other devices use nn.Linear as it is.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.layout = DerivedWeight()  # W^T [in, out], contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != w.dtype:
            return super().forward(x)
        w_t = self.layout.get(version_key(w), lambda: w.t().contiguous())
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        out = rows @ w_t if self.bias is None else torch.addmm(self.bias, rows, w_t)  # (N, out)
        return out.view(*x.shape[:-1], -1)


class ParallelHead(nn.Module):
    """All streams of a step at once: one linear D -> C * V."""

    def __init__(self, d_model: int, num_streams: int, vocab: int):
        super().__init__()
        self.num_streams, self.vocab = num_streams, vocab
        self.proj = WideLinear(d_model, num_streams * vocab)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(hidden).view(hidden.shape[0], self.num_streams, self.vocab)  # (N, C, V)

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, pick: Picker) -> torch.Tensor:
        return pick(self(hidden), 0)  # (R, C)


class LocalTransformer(nn.Module):
    """A tiny causal transformer over the C streams of one step, conditioned on the backbone's hidden state.

    Position 0 holds the projected hidden state, position k (k >= 1) the embedding of stream k-1's code; the
    output at position k predicts stream k.
    """

    def __init__(self, d_model: int, num_streams: int, vocab: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.num_streams, self.vocab = num_streams, vocab
        self.in_proj = nn.Linear(d_model, dim)
        self.code_embedding = nn.Embedding(num_streams * vocab, dim)
        self.position = nn.Parameter(torch.randn(num_streams, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Parameter(torch.randn(num_streams, vocab, dim) * 0.02)  # one output matrix per stream
        self.out_bias = nn.Parameter(torch.zeros(num_streams, vocab))
        self.register_buffer("offsets", torch.arange(num_streams) * vocab, persistent=False)

    def _run(self, hidden: torch.Tensor, prev_codes: torch.Tensor) -> torch.Tensor:
        """hidden [N, D], prev_codes [N, c-1] -> logits [N, c, V] for streams 0..c-1."""
        c = prev_codes.shape[1] + 1
        x = self.in_proj(hidden)[:, None]  # (N, 1, dim)
        if c > 1:
            x = torch.cat([x, self.code_embedding(prev_codes + self.offsets[: c - 1])], dim=1)  # (N, c, dim)
        x = x + self.position[:c]
        causal = nn.Transformer.generate_square_subsequent_mask(c, device=x.device, dtype=x.dtype)
        x = self.norm(self.layers(x, mask=causal, is_causal=True))  # (N, c, dim)
        return torch.einsum("ncd,cvd->ncv", x, self.out[:c]) + self.out_bias[:c]  # (N, c, V)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            raise ValueError("LocalTransformer needs the target codes (teacher forcing) in training")
        prev = targets[:, :-1].clamp(max=self.vocab - 1)  # (N, C-1); PAD targets are valid ids too
        return self._run(hidden, prev)

    @torch.no_grad()
    def sample(self, hidden: torch.Tensor, pick: Picker) -> torch.Tensor:
        codes = hidden.new_zeros(hidden.shape[0], 0, dtype=torch.long)  # (R, 0)
        for k in range(self.num_streams):
            logits = self._run(hidden, codes)[:, -1:]  # (R, 1, V), the next stream only
            codes = torch.cat([codes, pick(logits, k)], dim=1)  # (R, k+1)
        return codes  # (R, C)
