"""Optimizers of every training in the project: torch's Adam / AdamW with its fused kernel.

    opt = adam(params, lr=2e-4, betas=(0.8, 0.99))                          # the codec GAN
    opt = adam(groups, lr=1.5e-3, betas=(0.9, 0.95), decoupled=True)       # AdamW (the LMs), weight decay per group

torch's default Adam on a CPU loops over the parameters one tensor at a time, several passes over each (the LM's
16152 x 256 output layer and its embedding: ~30 ms a step on one thread); the fused kernel does one pass over all
of them (LM optimizer step 60 -> 10-14 ms, one AMD EPYC thread), and on a GPU one launch instead of hundreds. The
update is the same formula; the values agree to float rounding (tests/test_codec_speed.py). The state dict has the
same entries, so checkpoints of either load into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adam(params: Iterable[Any], *, decoupled: bool = False, **kwargs: Any) -> torch.optim.Optimizer:
    """torch.optim.Adam (AdamW if `decoupled`) over params (tensors or param groups), fused; kwargs as torch's."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, fused=True, **kwargs)
