"""Preference-alignment losses: DPO and RPO on summed per-sequence log-probabilities (plain tensor functions).

    logp = sequence_logprobs(logits, targets, ignore_index=pad)          # [B, ..., V], [B, ...] -> [B]
    out = dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.01)
    out = rpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, chosen_tokens, beta=0.01, alpha=1.0)
    out.loss.backward(); out.reward_margins, out.reward_accuracy                   # [B], scalar

Inputs are log-probabilities of whole sequences, float [B]: `pi_*` under the policy being trained (with
gradients), `ref_*` under a frozen reference copy of the starting model (no gradients).

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"):
    implicit reward     r(y) = beta * (log pi(y|x) - log ref(y|x))
    loss                -log sigmoid(r(chosen) - r(rejected)), averaged over the batch
With `label_smoothing` e (conservative DPO) the preference is taken as right with probability 1 - e:
(1 - e) * -log sigmoid(m) + e * -log sigmoid(-m). Koel-TTS (Hussain et al. 2025) aligns its TTS LM with DPO at
beta = 0.01 on (chosen, rejected) samples ranked by ASR CER and speaker similarity.

RPO here is DPO plus a weighted negative log-likelihood on the chosen sample, normalised by its length
(Pang et al. 2024, "Iterative Reasoning Preference Optimization"): loss = DPO + alpha * mean(-log pi(chosen) /
tokens(chosen)). The NLL term keeps the chosen samples likely, which plain DPO lets drift down as long as the
rejected ones drop faster. (NVIDIA's "reward-aware preference optimization" of Nemotron-4, also abbreviated RPO,
is a different loss that regresses the reward gap; it is not implemented here.)

Nothing else of the project is imported (DESIGN.md: alignment losses are plain functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_BETA = 0.01


@dataclass
class PreferenceLoss:
    """A preference loss and its diagnostics.

    Attributes:
        loss: scalar to minimise (dpo_loss + alpha * nll_loss for RPO).
        dpo_loss: scalar, the DPO part.
        nll_loss: scalar, length-normalised NLL of the chosen samples (RPO; 0 for DPO).
        chosen_rewards, rejected_rewards: float [B], implicit rewards beta * (log pi - log ref), detached.
    """

    loss: torch.Tensor
    dpo_loss: torch.Tensor
    nll_loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def reward_margins(self) -> torch.Tensor:
        """float [B]: r(chosen) - r(rejected); positive where the policy prefers the chosen sample more than ref."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def reward_accuracy(self) -> torch.Tensor:
        """Scalar: the share of pairs with a positive margin."""
        return (self.reward_margins > 0).float().mean()

    def metrics(self) -> dict[str, float]:
        """Batch means as plain floats, for logging."""
        return {
            "loss": float(self.loss.detach()),
            "dpo_loss": float(self.dpo_loss.detach()),
            "nll_loss": float(self.nll_loss.detach()),
            "reward_chosen": float(self.chosen_rewards.mean()),
            "reward_rejected": float(self.rejected_rewards.mean()),
            "reward_margin": float(self.reward_margins.mean()),
            "reward_accuracy": float(self.reward_accuracy),
        }


def sequence_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's target tokens and how many tokens counted.

    Args:
        logits: float [B, ..., V] (any number of middle dims: steps, codebooks).
        targets: long [B, ...], the same middle dims; entries equal to `ignore_index` do not count.
    Returns:
        (logp float [B], tokens long [B]).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"sequence_logprobs: logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
    keep = targets != ignore_index  # (B, ...)
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    token_logp = logits.float().log_softmax(-1).gather(-1, safe[..., None])[..., 0]  # (B, ...)
    token_logp = torch.where(keep, token_logp, torch.zeros_like(token_logp))
    return token_logp.flatten(1).sum(1), keep.flatten(1).sum(1)


def _check(*tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"preference loss: expected log-probabilities of shape [B] each, got {sorted(shapes)}")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = DEFAULT_BETA,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """DPO on summed sequence log-probabilities, all float [B] (see the module docstring)."""
    _check(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta={beta} must be > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing={label_smoothing} must be in [0, 0.5)")
    chosen_ratio = policy_chosen - ref_chosen.detach()  # (B,) log pi/ref of the chosen samples
    rejected_ratio = policy_rejected - ref_rejected.detach()
    logits = beta * (chosen_ratio - rejected_ratio)  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    loss = losses.mean()
    return PreferenceLoss(
        loss=loss,
        dpo_loss=loss,
        nll_loss=loss.new_zeros(()),
        chosen_rewards=(beta * chosen_ratio).detach(),
        rejected_rewards=(beta * rejected_ratio).detach(),
    )


def rpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    beta: float = DEFAULT_BETA,
    alpha: float = 1.0,
    label_smoothing: float = 0.0,
) -> PreferenceLoss:
    """DPO + alpha * mean(-log pi(chosen) / tokens(chosen)); `chosen_tokens` [B] counts the chosen tokens."""
    dpo = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    _check(policy_chosen, chosen_tokens)
    nll = (-policy_chosen / chosen_tokens.clamp(min=1).to(policy_chosen.dtype)).mean()
    return PreferenceLoss(
        loss=dpo.loss + alpha * nll,
        dpo_loss=dpo.dpo_loss,
        nll_loss=nll,
        chosen_rewards=dpo.chosen_rewards,
        rejected_rewards=dpo.rejected_rewards,
    )
