"""Attention priors between audio frames and text tokens (training and inference).

Training prior (RAD-TTS, Badlani et al. 2022; Koel-TTS, Hussain et al. 2025): audio frame i of M attends to
text token k of P with a beta-binomial probability, which puts a soft diagonal on the attention map:

    prior[i, k] = BetaBinomial(k; n = P - 1, a = s * (i + 1), b = s * (M - i))      i in [0, M), k in [0, P)

`s` is the scaling factor (smaller = wider diagonal; Koel uses 0.5 in our configs). With n = P - 1 every row is a
proper distribution over the P text tokens. The prior is added in log space to the attention scores of the
alignment heads early in training and annealed away (`prior_weight`): full weight until `anneal_start`,
linearly down to nothing at `anneal_end` (Koel: 8k -> 12k steps). Annealing blends toward the uniform
distribution, w * prior + (1 - w) / P, so a row always sums to 1 and at w = 0 the log prior is a constant that
softmax ignores.

Inference prior (`monotonic_log_prior`): a window around the text position the model currently attends to,
which stops the alignment from skipping ahead or jumping back.

    beta_binomial_prior(P, M, s)                          -> float [M, P]
    log_attention_prior(text_lens [B], audio_lens [B], s, w) -> float [B, max M, max P]   (0 in padding)
    prior_weight(step, start, end)                        -> float in [0, 1]
    monotonic_log_prior(position [B], num_text, ...)      -> float [B, num_text]

Plain functions on tensors; nothing else of the project is imported.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def _log_beta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)


@lru_cache(maxsize=4096)
def _beta_binomial_cached(text_len: int, audio_len: int, scaling: float) -> torch.Tensor:
    n = text_len - 1
    k = torch.arange(text_len, dtype=torch.float64)  # (P,)
    i = torch.arange(1, audio_len + 1, dtype=torch.float64)[:, None]  # (M, 1)
    a, b = scaling * i, scaling * (audio_len + 1 - i)  # (M, 1) each
    log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)  # (P,)
    log_pmf = log_choose + _log_beta(k + a, n - k + b) - _log_beta(a, b)  # (M, P)
    return log_pmf.exp().float()


def beta_binomial_prior(text_len: int, audio_len: int, scaling: float = 0.5) -> torch.Tensor:
    """The beta-binomial prior of one utterance: float [audio_len, text_len], every row sums to 1.

    Args:
        text_len: number of text positions P (>= 1).
        audio_len: number of audio positions M (>= 1).
        scaling: the RAD-TTS / Koel scaling factor s (> 0); smaller values give a wider diagonal.
    """
    if text_len < 1 or audio_len < 1:
        raise ValueError(f"beta_binomial_prior: text_len={text_len} and audio_len={audio_len} must both be >= 1")
    if scaling <= 0:
        raise ValueError(f"beta_binomial_prior: scaling={scaling} must be > 0")
    return _beta_binomial_cached(int(text_len), int(audio_len), float(scaling)).clone()


def prior_weight(step: int, anneal_start: int = 8000, anneal_end: int = 12000) -> float:
    """The prior's weight at optimizer step `step`: 1 until `anneal_start`, linear to 0 at `anneal_end`."""
    if anneal_end < anneal_start:
        raise ValueError(f"prior_weight: anneal_end={anneal_end} is before anneal_start={anneal_start}")
    if step <= anneal_start:
        return 1.0
    if step >= anneal_end:
        return 0.0
    return 1.0 - (step - anneal_start) / (anneal_end - anneal_start)


def attention_prior(
    text_lens: torch.Tensor, audio_lens: torch.Tensor, scaling: float = 0.5, weight: float = 1.0
) -> torch.Tensor:
    """Batched, annealed prior probabilities: float [B, max audio_len, max text_len], zero in the padding.

    Row i of item b is `weight * beta_binomial + (1 - weight) / text_len` over that item's text positions.
    """
    if text_lens.shape != audio_lens.shape or text_lens.dim() != 1:
        raise ValueError(
            f"attention_prior: text_lens {tuple(text_lens.shape)} and audio_lens "
            f"{tuple(audio_lens.shape)} must both be [B]"
        )
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"attention_prior: weight={weight} must be in [0, 1]")
    num_text, num_audio = int(text_lens.max()), int(audio_lens.max())
    out = torch.zeros(len(text_lens), num_audio, num_text)  # (B, M, P)
    for b, (p, m) in enumerate(zip(text_lens.tolist(), audio_lens.tolist(), strict=True)):
        out[b, :m, :p] = weight * beta_binomial_prior(p, m, scaling) + (1.0 - weight) / p
    return out.to(text_lens.device)


def log_attention_prior(
    text_lens: torch.Tensor, audio_lens: torch.Tensor, scaling: float = 0.5, weight: float = 1.0, floor: float = 1e-8
) -> torch.Tensor:
    """log of `attention_prior` (clamped at `floor`), 0 in the padding: float [B, max audio_len, max text_len].

    This is what gets added to attention scores; padded text positions are masked separately by the caller.
    """
    prior = attention_prior(text_lens, audio_lens, scaling, weight)
    valid = (torch.arange(prior.shape[1], device=prior.device)[None, :, None] < audio_lens[:, None, None]) & (
        torch.arange(prior.shape[2], device=prior.device)[None, None, :] < text_lens[:, None, None]
    )
    return torch.where(valid, prior.clamp(min=floor).log(), torch.zeros_like(prior))


def monotonic_log_prior(
    position: torch.Tensor, num_text: int, back: int = 1, ahead: int = 2, floor: float = 1e-4
) -> torch.Tensor:
    """Inference-time prior from the tracked alignment: float [B, num_text] log-probabilities.

    Text positions in [position - back, position + ahead] get log(1) = 0, all others log(floor), so the
    alignment heads may stay, step back a little or move a few tokens ahead, but not jump.

    Args:
        position: long [B], the text position each item currently attends to.
        num_text: number of text positions (the caller masks each item's padding).
    """
    t = torch.arange(num_text, device=position.device)[None, :]  # (1, T)
    inside = (t >= position[:, None] - back) & (t <= position[:, None] + ahead)  # (B, T)
    return torch.where(inside, 0.0, math.log(floor)).float()
