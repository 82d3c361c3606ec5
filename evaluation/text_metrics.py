"""Character and word error rates of transcripts against reference texts (jiwer), after normalising both sides.

    rates = error_rates(["Dr. Smith paid $3."], ["doctor smith paid three dollars"])
    rates.cer, rates.wer          # corpus-level: total edits / total reference characters (words); 0.0 here
    rates.utterance_cer           # [N] per utterance, for distributions

Normalisation for scoring (`normalize_for_scoring`): `text.normalize.normalize_text` (numbers, currency,
abbreviations and symbols written out, as the TTS reads them), then case folding, punctuation removed
(apostrophes inside words kept), whitespace collapsed. So "It's $5." and "it's five dollars" match, and an
ASR that writes digits is not penalised against a reference that spells them (or the other way round).
Koel-TTS and NanoCodec report CER this way (ASR transcript vs the text that was spoken).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

from text.normalize import normalize_text

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalize_for_scoring(text: str, language: str = "en-us") -> str:
    """Text -> lower-case words separated by single spaces, numbers and symbols spelled out, no punctuation."""
    text = normalize_text(text, language).translate(_APOSTROPHES).casefold()
    # every character that is not a letter, digit, apostrophe or mark becomes a space
    text = "".join(ch if ch.isalnum() or ch == "'" or unicodedata.category(ch).startswith("M") else " " for ch in text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside words ("it's")
    return " ".join(text.split())


@dataclass
class ErrorRates:
    """Corpus-level CER and WER (edits / reference length over all utterances) and per-utterance CERs."""

    cer: float
    wer: float
    utterance_cer: list[float]
    utterance_wer: list[float]
    references: list[str]  # normalised
    hypotheses: list[str]  # normalised


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("error_rates takes lists of strings; wrap a single text in a list")
    if len(references) != len(hypotheses):
        raise ValueError(f"error_rates: {len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("error_rates: no utterances given")


def error_rates(references: Sequence[str], hypotheses: Sequence[str], language: str = "en-us") -> ErrorRates:
    """CER/WER of `hypotheses` (ASR transcripts) against `references` (the texts spoken), both normalised.

    Raises:
        ValueError: lists of different lengths, or a reference that normalises to nothing (name its index).
    """
    _check(references, hypotheses)
    refs = [normalize_for_scoring(t, language) for t in references]
    hyps = [normalize_for_scoring(t, language) for t in hypotheses]
    for i, (raw, ref) in enumerate(zip(references, refs, strict=True)):
        if not ref:
            raise ValueError(f"error_rates: reference {i} ({raw!r}) has no words after normalisation; drop it")
    chars = jiwer.process_characters(refs, hyps)
    words = jiwer.process_words(refs, hyps)
    return ErrorRates(
        cer=float(chars.cer),
        wer=float(words.wer),
        utterance_cer=[float(jiwer.cer(r, h)) for r, h in zip(refs, hyps, strict=True)],
        utterance_wer=[float(jiwer.wer(r, h)) for r, h in zip(refs, hyps, strict=True)],
        references=refs,
        hypotheses=hyps,
    )


def cer(references: Sequence[str], hypotheses: Sequence[str], language: str = "en-us") -> float:
    """Corpus-level character error rate after normalisation (0.0 = perfect; can exceed 1 with insertions)."""
    return error_rates(references, hypotheses, language).cer


def wer(references: Sequence[str], hypotheses: Sequence[str], language: str = "en-us") -> float:
    """Corpus-level word error rate after normalisation."""
    return error_rates(references, hypotheses, language).wer
