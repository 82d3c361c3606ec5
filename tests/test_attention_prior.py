"""Attention prior (beta-binomial, annealing, inference window) and the forward-sum/CTC alignment loss."""

import itertools
import math

import pytest
import torch

from tts_lm.forward_sum import forward_sum_loss
from tts_lm.prior import (
    attention_prior,
    beta_binomial_prior,
    log_attention_prior,
    monotonic_log_prior,
    prior_weight,
)


def test_beta_binomial_shape_normalised_and_diagonal():
    prior = beta_binomial_prior(text_len=7, audio_len=20, scaling=0.5)
    assert prior.shape == (20, 7)
    torch.testing.assert_close(prior.sum(-1), torch.ones(20))
    peaks = prior.argmax(-1)
    assert peaks[0] == 0 and peaks[-1] == 6
    assert bool((peaks[1:] >= peaks[:-1]).all()), "the prior's peak must move monotonically along the text"

    def spread(scaling):  # expected distance of the attended text position from the diagonal
        prior = beta_binomial_prior(7, 20, scaling)
        diagonal = torch.linspace(0, 6, 20)[:, None]
        return (prior * (torch.arange(7)[None, :] - diagonal).abs()).sum(-1).mean()

    assert spread(5.0) < spread(1.0) < spread(0.5), "a larger scaling factor gives a sharper diagonal"


def test_beta_binomial_matches_reference_pmf():
    # BetaBinomial(k; n, a, b) = C(n, k) B(k + a, n - k + b) / B(a, b), spelled out with math.lgamma
    def pmf(k, n, a, b):
        lbeta = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
        return math.exp(
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + lbeta(k + a, n - k + b) - lbeta(a, b)
        )

    prior = beta_binomial_prior(text_len=5, audio_len=3, scaling=0.5)
    for i, k in itertools.product(range(3), range(5)):
        assert prior[i, k].item() == pytest.approx(pmf(k, 4, 0.5 * (i + 1), 0.5 * (3 - i)), rel=1e-5)


def test_batched_prior_padding_and_annealing_blend():
    text_lens, audio_lens = torch.tensor([4, 6]), torch.tensor([9, 5])
    prior = attention_prior(text_lens, audio_lens, scaling=0.5, weight=1.0)
    assert prior.shape == (2, 9, 6)
    torch.testing.assert_close(prior[0, :9, :4].sum(-1), torch.ones(9))
    assert prior[0, :, 4:].abs().sum() == 0 and prior[1, 5:].abs().sum() == 0
    half = attention_prior(text_lens, audio_lens, scaling=0.5, weight=0.5)
    torch.testing.assert_close(half[1, :5, :6], 0.5 * prior[1, :5, :6] + 0.5 / 6)
    torch.testing.assert_close(half[1, :5].sum(-1), torch.ones(5))
    gone = log_attention_prior(text_lens, audio_lens, scaling=0.5, weight=0.0)
    torch.testing.assert_close(gone[0, :9, :4], torch.full((9, 4), -math.log(4)))  # a constant: softmax ignores it
    assert gone[0, :, 4:].abs().sum() == 0


def test_prior_weight_schedule():
    assert prior_weight(0) == 1.0 and prior_weight(8000) == 1.0
    assert prior_weight(10000) == pytest.approx(0.5)
    assert prior_weight(12000) == 0.0 and prior_weight(50000) == 0.0
    weights = [prior_weight(s, 100, 200) for s in range(0, 300, 10)]
    assert all(a >= b for a, b in zip(weights, weights[1:], strict=False))
    with pytest.raises(ValueError, match="anneal_end"):
        prior_weight(0, 200, 100)


def test_monotonic_window():
    lp = monotonic_log_prior(torch.tensor([0, 3]), num_text=6, back=1, ahead=2)
    assert lp.shape == (2, 6)
    assert (lp[0, :3] == 0).all() and (lp[0, 3:] < -5).all()
    assert (lp[1, 2:6] == 0).all() and (lp[1, :2] < -5).all()


def _brute_force_ctc(logp: torch.Tensor, blank_logprob: float) -> float:
    """-log sum over all CTC paths that collapse to 1..P, divided by P (RAD-TTS normalisation)."""
    q, p = logp.shape
    scores = torch.cat([torch.full((q, 1), blank_logprob), logp], dim=1).log_softmax(-1)
    total = []
    for path in itertools.product(range(p + 1), repeat=q):
        collapsed = [c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c)]
        if collapsed == list(range(1, p + 1)):
            total.append(sum(scores[t, c].item() for t, c in enumerate(path)))
    return -torch.logsumexp(torch.tensor(total), 0).item() / p


def test_forward_sum_equals_brute_force_and_ignores_padding():
    torch.manual_seed(1)
    a, b = torch.randn(5, 3), torch.randn(4, 2)
    padded = torch.randn(2, 5, 3) * 10  # garbage in the padding must not matter
    padded[0], padded[1, :4, :2] = a, b
    loss = forward_sum_loss(padded, torch.tensor([3, 2]), torch.tensor([5, 4]))
    expected = (_brute_force_ctc(a, -1.0) + _brute_force_ctc(b, -1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_forward_sum_infeasible_item_is_zero_not_inf():
    loss = forward_sum_loss(torch.randn(1, 2, 5), torch.tensor([5]), torch.tensor([2]))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_forward_sum_audio_repeat_lets_a_frame_cover_several_tokens():
    scores = torch.randn(1, 3, 5)
    assert forward_sum_loss(scores, torch.tensor([5]), torch.tensor([3])).item() == 0.0  # infeasible
    repeated = forward_sum_loss(scores, torch.tensor([5]), torch.tensor([3]), audio_repeat=2)
    assert torch.isfinite(repeated) and repeated.item() > 0
    expected = _brute_force_ctc(scores[0].repeat_interleave(2, dim=0), -1.0)
    assert repeated.item() == pytest.approx(expected, rel=1e-4)


def test_forward_sum_decreases_and_learns_monotonic_alignment():
    torch.manual_seed(0)
    q, p = 24, 6
    scores = torch.randn(1, q, p, requires_grad=True)
    opt = torch.optim.Adam([scores], lr=0.1)
    losses = []
    for _ in range(150):
        loss = forward_sum_loss(scores.log_softmax(-1), torch.tensor([p]), torch.tensor([q]))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    path = scores[0].argmax(-1)
    assert bool((path[1:] >= path[:-1]).all()) and set(path.tolist()) == set(range(p))


def test_forward_sum_bad_shapes():
    with pytest.raises(ValueError, match="exceed"):
        forward_sum_loss(torch.randn(1, 3, 3), torch.tensor([4]), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\[B, Q, P\]"):
        forward_sum_loss(torch.randn(3, 3), torch.tensor([3]), torch.tensor([3]))
