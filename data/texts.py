"""Sentences for the embedded corpus, from text that Debian packages ship: `fortunes` and `bible-kjv`.

    pool = text_pool(seed=0, min_chars=55, max_chars=230, limit=1000)   # list[SourceText]: normalised, unique
    for item in iter_texts(seed=0): ...                                 # the same, lazily

Fortunes (/usr/share/games/fortunes, the non-offensive set, minus the files of code, IRC logs and ASCII
art) lose their "-- Author" attribution lines; KJV verses come from the `bible` command. Every text is
normalised with `text.normalize_text` (numbers, abbreviations and symbols written out), filtered by
length (a proxy for 3-20 s of speech: the synthesizers speak 12-17 characters per second) and by
alphabet (no markup, code or ASCII art), de-duplicated case-insensitively, then shuffled with the seed:
the same seed and packages give the same list.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from text.normalize import TextError, normalize_text

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# fortune files that are mostly code, IRC logs, ASCII art or non-English: not speech material
FORTUNE_SKIP = {"ascii-art", "perl", "linux", "linuxcookie", "debian", "knghtbrd", "translate-me", "zippy"}
BIBLE_RANGE = "Gen1:1-Rev22:21"
_ATTRIBUTION = re.compile(r"^\s*--\s")
_INLINE_ATTRIBUTION = re.compile(r"\s+--\s+[A-Z][\w. ,']*$")
_ALLOWED = re.compile(r"^[A-Za-z0-9 .,;:!?'\"()\-&%$]+$")


class TextSourceError(RuntimeError):
    """A text source package that is missing or yields nothing; the message says what to install."""


@dataclass(frozen=True)
class SourceText:
    """One normalised sentence and where it came from ("fortunes/wisdom", "bible/Ge1:3")."""

    text: str
    source: str


def fortunes(directory: Path = FORTUNE_DIR) -> list[SourceText]:
    """Every fortune of the non-offensive Debian set as one line, attributions removed."""
    files = sorted(p for p in directory.glob("*") if p.is_file() and not p.suffix and p.name not in FORTUNE_SKIP)
    if not files:
        raise TextSourceError(f"no fortune files in {directory}; run `apt-get install fortunes`")
    out = []
    for path in files:
        raw = path.read_text(encoding="utf-8", errors="replace")
        for i, block in enumerate(re.split(r"^%\s*$", raw, flags=re.MULTILINE)):
            lines = [ln for ln in block.splitlines() if ln.strip() and not _ATTRIBUTION.match(ln)]
            text = _INLINE_ATTRIBUTION.sub("", " ".join(" ".join(lines).split()))
            if text:
                out.append(SourceText(text, f"fortunes/{path.name}#{i}"))
    return out


def bible_verses(verses: str = BIBLE_RANGE) -> list[SourceText]:
    """KJV verses from the `bible` command (package bible-kjv), one per line without the reference."""
    binary = shutil.which("bible")
    if binary is None:
        raise TextSourceError("the `bible` command is missing; run `apt-get install bible-kjv`")
    result = subprocess.run([binary, "-f", verses], capture_output=True, text=True, check=True)
    out = []
    for line in result.stdout.splitlines():
        ref, _, text = line.partition(" ")
        text = re.sub(r"\b(LORD|GOD)\b", lambda m: m.group(1).capitalize(), text.strip())  # small caps in print
        if text:
            out.append(SourceText(text, f"bible/{ref}"))
    if not out:
        raise TextSourceError(f"`bible -f {verses}` printed no verses; reinstall bible-kjv bible-kjv-text")
    return out


SOURCES = {"fortunes": fortunes, "bible": bible_verses}


@cache
def _load(name: str) -> tuple[SourceText, ...]:
    return tuple(SOURCES[name]())


def iter_texts(
    seed: int = 0, min_chars: int = 55, max_chars: int = 230, sources: tuple[str, ...] | list[str] = tuple(SOURCES)
) -> Iterator[SourceText]:
    """Normalised, length- and alphabet-filtered, de-duplicated sentences from `sources`, lazily.

    Each source is shuffled with `seed`, then the sources are interleaved one by one, so that a corpus that
    uses only the start of the stream gets as much modern text (fortunes) as archaic (KJV). Normalisation
    (the slow part, ~0.5 ms a text) runs only on the texts taken.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise TextSourceError(f"unknown text source(s) {unknown}; use {', '.join(SOURCES)}")
    per_source = []
    for name in sources:
        raw = [t for t in _load(name) if _ALLOWED.match(t.text) and min_chars // 2 <= len(t.text) <= 2 * max_chars]
        random.Random(f"{seed}-{name}").shuffle(raw)
        per_source.append(raw)
    seen: set[str] = set()
    iterators = [iter(raw) for raw in per_source]
    while iterators:
        for it in list(iterators):  # one accepted text from each source in turn
            for item in it:
                try:
                    text = normalize_text(item.text)
                except TextError:
                    continue
                key = re.sub(r"[^a-z ]", "", text.lower())
                if min_chars <= len(text) <= max_chars and key not in seen:
                    seen.add(key)
                    yield SourceText(text, item.source)
                    break
            else:
                iterators.remove(it)


def text_pool(
    seed: int = 0,
    min_chars: int = 55,
    max_chars: int = 230,
    sources: tuple[str, ...] | list[str] = tuple(SOURCES),
    limit: int | None = None,
) -> list[SourceText]:
    """The first `limit` texts of `iter_texts` (all of them when None)."""
    return list(itertools.islice(iter_texts(seed, min_chars, max_chars, sources), limit))
