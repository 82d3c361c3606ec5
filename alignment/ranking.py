"""Choosing a preference pair from scored candidates: Pareto ranking on (CER lower, speaker similarity higher).

    ranks = pareto_ranks(cer, similarity)                 # N candidates -> [N] ints, 0 = the non-dominated front
    choice = select_pair(cer, similarity, cer_tolerance=0.01)
    choice.ok, choice.chosen, choice.rejected, choice.reason

Koel-TTS (Hussain et al. 2025) samples several candidates per (text, speaker prompt), scores each by ASR CER and
speaker similarity to the prompt, and trains DPO on the best versus the worst. Here:
  * CERs at or below `cer_tolerance` count as 0 ("at or near 0": an ASR slip on a correct utterance);
  * Pareto ranks: rank 0 is the set no candidate dominates (another is no worse on both scores and better on
    one); rank r is the front once ranks < r are removed (non-dominated sorting);
  * chosen: the lowest CER, ties broken by the highest similarity (always on rank 0);
  * rejected: from the last front, the highest CER, ties broken by the lowest similarity;
  * a pair is kept only when chosen is really preferred: lower CER, or the same CER and a similarity higher by
    at least `min_similarity_gap`; and only when the chosen CER is at most `max_chosen_cer`.
Non-finite scores are the worst possible (CER +inf, similarity -inf): a candidate that produced no audio.

Plain functions on numbers; nothing else of the project is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class PairChoice:
    """The selected candidates (indices into the inputs), each candidate's Pareto rank, and why no pair if none."""

    chosen: int | None
    rejected: int | None
    ranks: list[int]
    reason: str  # "ok", "too_few_candidates", "no_preference" or "chosen_cer_too_high"

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


def _clean(cer: Sequence[float], similarity: Sequence[float], cer_tolerance: float) -> list[tuple[float, float]]:
    if len(cer) != len(similarity):
        raise ValueError(f"select_pair: {len(cer)} CERs but {len(similarity)} similarities")
    points = []
    for c, s in zip(cer, similarity, strict=True):
        c = float(c) if math.isfinite(float(c)) else math.inf
        s = float(s) if math.isfinite(float(s)) else -math.inf
        points.append((0.0 if c <= cer_tolerance else c, s))
    return points


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is no worse than b on both (CER lower, similarity higher) and better on one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_ranks(cer: Sequence[float], similarity: Sequence[float], cer_tolerance: float = 0.0) -> list[int]:
    """Non-dominated sorting: [N] ranks, 0 = no candidate dominates it (CER lower is better, similarity higher)."""
    points = _clean(cer, similarity, cer_tolerance)
    ranks = [-1] * len(points)
    rank, left = 0, set(range(len(points)))
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def select_pair(
    cer: Sequence[float],
    similarity: Sequence[float],
    cer_tolerance: float = 0.0,
    min_similarity_gap: float = 0.0,
    max_chosen_cer: float = math.inf,
) -> PairChoice:
    """Pick (chosen, rejected) among N scored candidates (see the module docstring)."""
    points = _clean(cer, similarity, cer_tolerance)
    ranks = pareto_ranks(cer, similarity, cer_tolerance)
    if len(points) < 2:
        return PairChoice(None, None, ranks, "too_few_candidates")
    n = range(len(points))
    chosen = min(n, key=lambda i: (points[i][0], -points[i][1], i))
    rejected = max(n, key=lambda i: (ranks[i], points[i][0], -points[i][1], -i))
    (c_cer, c_sim), (r_cer, r_sim) = points[chosen], points[rejected]
    preferred = c_cer < r_cer or (c_cer == r_cer and c_sim > r_sim and c_sim - r_sim >= min_similarity_gap)
    if chosen == rejected or not preferred:
        return PairChoice(None, None, ranks, "no_preference")
    if c_cer > max_chosen_cer:
        return PairChoice(None, None, ranks, "chosen_cer_too_high")
    return PairChoice(chosen, rejected, ranks, "ok")
