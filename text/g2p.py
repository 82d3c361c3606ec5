"""Grapheme-to-phoneme conversion: text -> IPA phoneme string, with phonemizer's espeak-ng backend.

    g2p = G2P("en-us")
    g2p("Dr. Smith paid $3.50.")                # -> "dˈɑːktɚ smˈɪθ pˈeɪd θɹˈiː dˈɑːlɚz fˈɪfti sˈɛnts."
    g2p.phonemize(["Hello world!", "Yes."])    # -> ["həlˈoʊ wˈɜːld!", "jˈɛs."]

Every text is first normalised (`text.normalize.normalize_text`: numbers, currency, abbreviations written out,
unicode punctuation to ASCII), then phonemised by espeak-ng: IPA, stress marks (ˈ ˌ) and length marks (ː) kept,
words separated by one space, phrase punctuation (, . ! ? ; : " ( ) ¡ ¿) kept in place (cut off before espeak-ng
and put back after, so a "." inside "8.3" stays with the number), language-switch flags
removed (a foreign word is read with the current voice's phonemes). One backend instance is created lazily and
reused for every call; a batch is sent to espeak-ng in one call; results are kept in an LRU cache keyed by the
input text. This is the one g2p of the project: data preparation, the LM and the app all call it.

Letters of scripts the language cannot read (Han, Arabic, Cyrillic ... in en-us text) are dropped after
normalisation (text/scripts.py; espeak-ng would spell out their Unicode names), with an
`UnspeakableTextWarning` naming the scripts and letters. Text that is empty after that, or that espeak-ng
turns into no phoneme at all, raises `TextError` naming the text: a silent empty sequence would train or
synthesise garbage.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from text.normalize import TextError, normalize_text
from text.scripts import UnspeakableTextWarning, describe_dropped, drop_unspeakable

__all__ = ["G2P", "CacheInfo", "resolve_language", "PUNCTUATION_MARKS"]

# Phrase punctuation kept in the phoneme string (cut off before espeak-ng, put back after). Normalisation has already
# mapped curly quotes, dashes and ellipses to these ASCII marks; "-" and "'" are not in the list so hyphenated words
# and contractions reach espeak-ng whole.
PUNCTUATION_MARKS = ';:,.!?¡¿"()'
_DECIMAL_MARKS = ".,:"  # between two digits these belong to the number ("8.3", "2,5", "10:30")
LANGUAGE_ALIASES = {"en": "en-us", "fr": "fr-fr", "pt": "pt-br"}
_NON_PHONEME = set(PUNCTUATION_MARKS) | {" ", "ˈ", "ˌ", "ː", "ˑ", "-", "'"}
_OTHER_MARKS = re.escape("".join(m for m in PUNCTUATION_MARKS if m not in _DECIMAL_MARKS))
_MARK = rf"[{_OTHER_MARKS}]|[{_DECIMAL_MARKS}](?!\d)|(?<!\d)[{_DECIMAL_MARKS}]"
_PUNCTUATION_RUN = re.compile(rf"((?:\s*(?:{_MARK}))+\s*)")  # a run of marks with the spaces around it
_DIGITS = re.compile(r"[0-9]")
_NEVER = re.compile(r"(?!)")  # a punctuation pattern that matches nothing

# phonemizer warns once per batch about removed language-switch flags (expected: English words in German text);
# real errors still come through.
_backend_logger = logging.getLogger("text.g2p.espeak")
_backend_logger.setLevel(logging.ERROR)


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    max_size: int


def resolve_language(language: str) -> str:
    """ "en" -> "en-us", "fr" -> "fr-fr"; any espeak-ng language code passes through unchanged after checking it."""
    from phonemizer.backend import EspeakBackend

    if not EspeakBackend.is_available():
        raise RuntimeError(
            "espeak-ng is not installed, so text cannot be phonemised. Install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu) and try again."
        )
    code = LANGUAGE_ALIASES.get(language.lower(), language.lower())
    supported = EspeakBackend.supported_languages()
    if code not in supported:
        close = sorted(c for c in supported if c.split("-")[0] == code.split("-")[0])
        hint = f"; did you mean one of {close}?" if close else "; e.g. en-us, en-gb, de, fr-fr, es"
        raise ValueError(f"language {language!r} is not supported by espeak-ng{hint}")
    return code


class G2P:
    """Text -> IPA phonemes with espeak-ng, normalising first; batched, cached, one backend reused.

    Args:
        language: espeak-ng language code ("en-us" default; "en-gb", "de", "fr-fr" (or "fr"), "es", ...).
        cache_size: how many distinct input texts the LRU cache keeps (0 disables caching).
    """

    def __init__(self, language: str = "en-us", cache_size: int = 100_000) -> None:
        self.language = resolve_language(language)
        self.cache_size = cache_size
        self._backend = None  # created on first use (creation is not free; tests and pickling stay cheap)
        self._lock = threading.Lock()  # espeak-ng's library keeps global state: one call at a time
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._hits = 0
        self._misses = 0

    def __repr__(self) -> str:
        return f"G2P(language={self.language!r}, cache_size={self.cache_size})"

    def __call__(self, text: str) -> str:
        """One text -> its phoneme string."""
        return self.phonemize([text])[0]

    def phonemize(self, texts: list[str]) -> list[str]:
        """Texts -> phoneme strings (same order). Uncached texts go to espeak-ng in one batch.

        Raises:
            TextError: a text is empty after normalisation or phonemises to nothing (the message names it).
        """
        if isinstance(texts, str):
            raise TypeError("G2P.phonemize takes a list of texts; call the G2P itself for one text: g2p(text)")
        results: list[str | None] = [None] * len(texts)
        pending: dict[str, list[int]] = {}  # normalised text -> indices waiting for it
        with self._lock:
            for i, text in enumerate(texts):
                if text in self._cache:
                    self._cache.move_to_end(text)
                    results[i] = self._cache[text]
                    self._hits += 1
                    continue
                self._misses += 1
                normalised, dropped = drop_unspeakable(normalize_text(text, self.language), self.language)
                if dropped and not any(ch.isalnum() for ch in normalised):
                    raise TextError(
                        f"cannot phonemise text {text!r} (item {i}): {self.language} cannot read its script(s), "
                        f"{describe_dropped(dropped)}, and nothing else is left; choose the text's language "
                        f"(e.g. --language) or write it in Latin script"
                    )
                if dropped:
                    warnings.warn(
                        UnspeakableTextWarning(
                            f"{self.language} cannot read {describe_dropped(dropped)} in {text[:80]!r}: left out "
                            f"(spoken: {normalised[:80]!r})"
                        ),
                        stacklevel=2,
                    )
                if not any(ch.isalnum() for ch in normalised):
                    raise TextError(
                        f"cannot phonemise text {text!r} (item {i}): it is empty after normalisation "
                        f"(no letters or digits); remove it from the input or write it out in words"
                    )
                pending.setdefault(normalised, []).append(i)
            if pending:
                normalised_texts = list(pending)
                phonemes = self._run_backend(normalised_texts)
                for normalised, phones in zip(normalised_texts, phonemes, strict=True):
                    indices = pending[normalised]
                    if not set(phones) - _NON_PHONEME:
                        first = indices[0]
                        raise TextError(
                            f"cannot phonemise text {texts[first]!r} (item {first}): espeak-ng ({self.language}) "
                            f"produced no phonemes for it (normalised: {normalised!r}); check the language or "
                            f"the script of the text"
                        )
                    for i in indices:
                        results[i] = phones
                        self._remember(texts[i], phones)
        return results  # type: ignore[return-value]  # every slot is filled above

    def cache_info(self) -> CacheInfo:
        return CacheInfo(hits=self._hits, misses=self._misses, size=len(self._cache), max_size=self.cache_size)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0

    # -- internals ---------------------------------------------------------------------------------------------

    def _remember(self, text: str, phones: str) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = phones
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _run_backend(self, texts: list[str]) -> list[str]:
        """Normalised texts -> phoneme strings, punctuation put back where it was.

        phonemizer's own punctuation preservation splits a line at the first "." it finds, even inside a number
        ("im 8.3-Format."), and returns the wrong number of lines; so the texts are cut at punctuation here, every
        punctuation-free chunk of every text goes to espeak-ng in one batch, and the marks are re-inserted.
        """
        pieces = [_PUNCTUATION_RUN.split(text) for text in texts]  # [chunk, marks, chunk, marks, ..., chunk]
        chunks = [(t, k, piece.strip()) for t, split in enumerate(pieces) for k, piece in enumerate(split[::2])]
        speakable = [(t, k, chunk) for t, k, chunk in chunks if any(ch.isalnum() for ch in chunk)]
        phonemes = self._espeak([chunk for _, _, chunk in speakable])
        for split in pieces:
            split[::2] = [""] * len(split[::2])  # unspeakable chunks (lone quotes) become nothing
        for (t, k, _), phones in zip(speakable, phonemes, strict=True):
            pieces[t][2 * k] = phones
        results = []
        for split in pieces:
            split[1::2] = [re.sub(r"\s+", " ", marks) for marks in split[1::2]]  # spacing as in the text
            results.append(" ".join("".join(split).split()))
        return results

    def _espeak(self, lines: list[str]) -> list[str]:
        if not lines:
            return []
        from phonemizer.separator import Separator

        if self._backend is None:
            from phonemizer.backend import EspeakBackend

            self._backend = EspeakBackend(
                self.language,
                punctuation_marks=_NEVER,  # punctuation was cut off already; keep "8.3", "it's", "well-known"
                preserve_punctuation=False,
                with_stress=True,
                tie=False,
                language_switch="remove-flags",
                logger=_backend_logger,
            )
        separator = Separator(phone="", syllable="", word=" ")
        out = self._backend.phonemize(lines, separator=separator, strip=True, njobs=1)
        if len(out) != len(lines):  # phonemizer drops empty lines; ours are never empty
            raise RuntimeError(f"espeak-ng returned {len(out)} results for {len(lines)} texts; please report this")
        # espeak-ng's German dictionary leaks a digit now and then ("aneinander" -> "ˌan1aɪnˈandɜ"): not a phoneme
        return [" ".join(_DIGITS.sub("", p).split()) for p in out]

    def __getstate__(self) -> dict:
        """Picklable for multiprocessing workers: the backend and lock are recreated in the worker."""
        state = self.__dict__.copy()
        state["_backend"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
