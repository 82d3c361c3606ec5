"""Challenging texts for preference alignment: repetitions, long words, numbers and rare words.

    texts = challenge_texts(corpus_texts, count=64, seed=0)      # list[str] -> list[ChallengeText(kind, text)]

An LM TTS that reads ordinary sentences well still skips, repeats or babbles on text unlike its training data
(Koel-TTS, Hussain et al. 2025, adds such texts to the preference-alignment set). They are made here from the
corpus's own words plus a number generator, never downloaded, so a run is reproducible offline:
  repetition   the same word or pair of words several times ("data data data data.")
  long_words   the corpus's longest words (>= 10 letters) side by side (a built-in list if it has too few)
  numbers      amounts, percentages, times, dates, years, decimals, large numbers and sums ("$12.50", "3:45 pm"),
               which text.normalize writes out as words before G2P
  rare_words   words seen once in the corpus (hapaxes; else the least frequent), in a carrier sentence
Kinds take turns (text i has kind KINDS[i % 4]); everything comes from `random.Random(seed)`, so the same corpus
and seed give the same texts. Texts are at most `max_chars` characters (word lists shrink to fit; a text that
still does not fit is drawn again), so fewer than `count` come back only when `max_chars` is very small.

Plain functions on strings; nothing else of the project is imported.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

KINDS = ("repetition", "long_words", "numbers", "rare_words")
LONG_WORD_LETTERS = 10
FALLBACK_LONG_WORDS = (
    "incomprehensibility", "internationalization", "counterrevolutionary", "uncharacteristically",
    "electroencephalography", "responsibilities", "misunderstanding", "indistinguishable", "overwhelmingly",
    "telecommunications", "disproportionately", "interchangeability",
)  # fmt: skip
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


@dataclass
class ChallengeText:
    kind: str  # one of KINDS
    text: str


def corpus_words(texts: list[str]) -> Counter:
    """Lower-cased word counts of the corpus (letters and inner apostrophes)."""
    return Counter(w.lower() for t in texts for w in _WORD.findall(t))


def _fit(words: list[str], template: str, max_chars: int) -> str:
    """`template` with the words joined by ", ", dropping words from the end until it fits max_chars."""
    while len(words) > 1 and len(template.format(", ".join(words))) > max_chars:
        words = words[:-1]
    return template.format(", ".join(words))


def _repetition(rng: random.Random, common: list[str]) -> str:
    a, b = rng.sample(common, 2)
    times = rng.randint(3, 5)
    return rng.choice(
        [
            " ".join([a] * times).capitalize() + ".",
            ", ".join([f"{a} {b}"] * times).capitalize() + ".",
            f"I said {a}, {a}, {a}, and then {b}, {b} again.",
            " and ".join([a] * times).capitalize() + ".",
        ]
    )


def _numbers(rng: random.Random) -> str:
    n, m = rng.randint(2, 999), rng.randint(2, 99)
    return rng.choice(
        [
            f"The total was ${rng.randint(1, 999)}.{rng.randint(10, 99)} for {n} items.",
            f"About {rng.randint(2, 99)}% of the {rng.randint(1000, 999999):,} people arrived at "
            f"{rng.randint(1, 12)}:{rng.randint(10, 59)} pm.",
            f"On {rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1700, 2099)}, it cost {n} dollars.",
            f"{n} plus {m} is {n + m}, and {n} times {m} is {n * m}.",
            f"The road is {rng.randint(1, 99)}.{rng.randint(1, 99)} kilometres long and {rng.randint(2, 9)}% steep.",
            f"In {rng.randint(1800, 2030)}, the city had {rng.randint(10_000, 9_999_999):,} people.",
            f"She finished {_ordinal(rng.randint(1, 99))} of {rng.randint(100, 999)} runners.",
        ]
    )


def _ordinal(n: int) -> str:
    """12 -> "12th", 21 -> "21st", 3 -> "3rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def challenge_texts(corpus_texts: list[str], count: int, seed: int = 0, max_chars: int = 160) -> list[ChallengeText]:
    """`count` challenging texts built from the corpus words (see the module docstring); no duplicates."""
    if count <= 0:
        return []
    counts = corpus_words(corpus_texts)
    common = [w for w, _ in counts.most_common(300) if len(w) >= 3] or ["data", "speech", "model", "voice"]
    common = common if len(common) >= 2 else [*common, "again"]
    long_words = sorted({w for w in counts if len(w) >= LONG_WORD_LETTERS}, key=lambda w: (-len(w), w))[:200]
    if len(long_words) < 3:
        long_words = [*long_words, *FALLBACK_LONG_WORDS]
    rare = sorted(w for w, c in counts.items() if c == 1 and len(w) >= 5)
    if len(rare) < 3:
        rare = [w for w, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])) if len(w) >= 4][:200]
    rare = rare or list(FALLBACK_LONG_WORDS)

    rng = random.Random(seed)
    out: list[ChallengeText] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < count and attempts < 20 * count:
        kind = KINDS[len(out) % len(KINDS)]
        attempts += 1
        if kind == "repetition":
            text = _repetition(rng, common)
        elif kind == "long_words":
            words = rng.sample(long_words, min(len(long_words), rng.randint(3, 5)))
            text = _fit(words, "{}.", max_chars).capitalize()
        elif kind == "numbers":
            text = _numbers(rng)
        else:
            words = rng.sample(rare, min(len(rare), rng.randint(3, 4)))
            text = _fit(words, "Please say {}, one after another.", max_chars)
        if len(text) <= max_chars and text not in seen:
            seen.add(text)
            out.append(ChallengeText(kind, text))
    return out
