"""Alignment heads inside transformers' Llama attention: text-only attention + attention prior for audio queries.

Koel-TTS aligns audio to text in the cross-attention of an encoder-decoder; this LM is decoder-only, so a few
heads of chosen layers play that role. For an audio query (the audio BOS and every audio frame) an alignment
head attends to the text positions [text BOS, phonemes, text EOS] of its own row only; its scores get the
log attention prior (beta-binomial in training, a monotonic window at inference), and its attention
log-probabilities over the text are handed back for the forward-sum loss and for alignment tracking. Queries
before the audio, and all other heads, are plain causal SDPA attention.

transformers calls the function registered here as the attention of every Llama layer (config
`_attn_implementation = "koel_alignment"`); the per-forward `AlignmentContext` travels through the model's
`**kwargs` as `koel_alignment=ctx`. Without a context, or in layers without alignment heads, it is exactly
transformers' SDPA attention, so KV cache, masks and mixed precision are transformers' own.

Shapes: query [B, H, q, d], key/value [B, H, kv, d] (kv = cached + new positions; query i sits at key index
kv - q + i), output [B, q, H, d]. Text tensors are [B, h, q, T] with T = max text length of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ATTN_IMPLEMENTATION = "koel_alignment"


@dataclass
class AlignmentContext:
    """Where the text and the audio sit in each row, the prior for this forward's queries, and the output.

    Attributes:
        layers: layer indices that carry alignment heads.
        heads: alignment heads per such layer (the first `heads` heads).
        text_start: long [B], key index of each row's text BOS.
        text_len: long [B], text positions per row (BOS + phonemes + EOS).
        audio_start: long [B], key index of each row's audio BOS; queries at or after it are audio queries.
        log_prior: float [B, q, T] added to the alignment heads' text scores of this forward's q queries,
            or None (no prior).
        logprobs: filled in: layer -> float [B, heads, q, T], log-probabilities over the text (rows of
            non-audio queries are meaningless).
    """

    layers: frozenset[int]
    heads: int
    text_start: torch.Tensor
    text_len: torch.Tensor
    audio_start: torch.Tensor
    log_prior: torch.Tensor | None = None
    logprobs: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def num_text(self) -> int:
        return int(self.text_len.max())


def koel_alignment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    koel_alignment: AlignmentContext | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA attention, with the alignment heads of alignment layers replaced for audio queries (see module doc)."""
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    ctx = koel_alignment
    if ctx is None or module.layer_idx not in ctx.layers or ctx.heads == 0:
        return out, None

    h = ctx.heads
    _, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups)[:, :h], repeat_kv(value, groups)[:, :h]  # (B, h, kv, d)
    scale = scaling if scaling is not None else head_dim**-0.5
    text_out, logprobs = text_attention(
        query[:, :h], key, value, ctx.text_start, ctx.text_len, ctx.num_text, scale, ctx.log_prior
    )  # (B, h, q, d), (B, h, q, T)
    ctx.logprobs[module.layer_idx] = logprobs

    query_index = torch.arange(kv_len - q_len, kv_len, device=query.device)  # (q,)
    is_audio = query_index[None, :] >= ctx.audio_start[:, None]  # (B, q)
    aligned = torch.where(is_audio[:, :, None, None], text_out.transpose(1, 2).to(out.dtype), out[:, :, :h])
    return torch.cat([aligned, out[:, :, h:]], dim=2), None  # (B, q, H, d)


def text_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    text_start: torch.Tensor,
    text_len: torch.Tensor,
    num_text: int,
    scale: float,
    log_prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment heads attending to their row's text only: query [B, h, q, d], key / value [B, h, kv, d] (the
    alignment heads' own), the text at key indices text_start .. text_start + text_len - 1, log_prior [B, q, T]
    added to the scores -> (output [B, h, q, d], log-probabilities over the text [B, h, q, T]; T = num_text).
    Also the alignment layers of tts_lm/onnx_step.py's graph, so both steps compute the same formula."""
    batch, h, _, head_dim = query.shape
    t = torch.arange(num_text, device=query.device)
    index = (text_start[:, None] + t[None, :]).clamp(max=key.shape[2] - 1)  # (B, T) key index of each text slot
    index = index[:, None, :, None].expand(batch, h, num_text, head_dim)  # (B, h, T, d)
    text_key, text_value = key.gather(2, index), value.gather(2, index)  # (B, h, T, d)

    scores = (query.float() @ text_key.float().transpose(-1, -2)) * scale  # (B, h, q, T)
    if log_prior is not None:
        scores = scores + log_prior[:, None].to(scores.dtype)  # (B, 1, q, T)
    text_valid = t[None, :] < text_len[:, None]  # (B, T)
    scores = scores.masked_fill(~text_valid[:, None, None, :], torch.finfo(scores.dtype).min)
    logprobs = scores.log_softmax(dim=-1)  # (B, h, q, T)
    return logprobs.exp().to(text_value.dtype) @ text_value, logprobs


def register_attention() -> str:
    """Register the attention function and its mask builder with transformers (idempotent); returns its name."""
    if ATTN_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPLEMENTATION, koel_alignment_attention)
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    return ATTN_IMPLEMENTATION
