"""Which writing systems a language can be read in, and the letters of a text outside them.

    speakable, dropped = drop_unspeakable("Hello مرحبا 你好 world", "en-us")
    # speakable = "Hello world", dropped = {"Arabic": "مرحبا", "Han": "你好"}

espeak-ng reads a letter outside its language's script by spelling out its Unicode name: en-us turns "你好"
into "Chinese letter Chinese letter" and each Arabic letter into "Arabic meem", so a 41-character text in
four scripts became 39 s of letter names. The G2P (text/g2p.py) therefore drops such letters first and
says which scripts it dropped (`UnspeakableTextWarning`), and raises `TextError` when nothing is left.

A letter's script is the first word of its Unicode name ("CYRILLIC SMALL LETTER PE" -> Cyrillic, "CJK UNIFIED
IDEOGRAPH-4F60" -> Han); digits, punctuation and symbols belong to no script here (normalisation deals with
them), and a combining mark goes with the letter before it. Every language reads Latin (espeak-ng reads
English words inside other languages); `LANGUAGE_SCRIPTS` adds the scripts of espeak-ng's languages written in
another script, by language code ("ru", "ja") or its part before the first "-" ("sr-..." -> "sr").
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "LANGUAGE_SCRIPTS",
    "UnspeakableTextWarning",
    "describe_dropped",
    "drop_unspeakable",
    "language_scripts",
    "script_of",
]


class UnspeakableTextWarning(UserWarning):
    """Letters of a script the G2P's language cannot read were dropped from a text (the message names them)."""


_CYRILLIC, _ARABIC, _HAN = ("Cyrillic",), ("Arabic",), ("Han",)
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(["ru", "ru-lv", "uk", "be", "bg", "mk", "sr", "kk", "ky", "tt", "ba", "cv", "nog"], _CYRILLIC),
    **dict.fromkeys(["ar", "fa", "ur", "sd", "ug"], _ARABIC),
    **dict.fromkeys(["cmn", "yue", "hak"], _HAN),
    **dict.fromkeys(["hi", "mr", "ne", "kok"], ("Devanagari",)),
    **dict.fromkeys(["bn", "as", "bpy"], ("Bengali",)),
    **dict.fromkeys(["el", "grc"], ("Greek",)),
    **dict.fromkeys(["hy", "hyw"], ("Armenian",)),
    **dict.fromkeys(["my", "shn"], ("Myanmar",)),
    "ja": ("Han", "Hiragana", "Katakana"),
    "ko": ("Hangul", "Han"),
    "he": ("Hebrew",),
    "am": ("Ethiopic",),
    "chr": ("Cherokee",),
    "ka": ("Georgian",),
    "gu": ("Gujarati",),
    "pa": ("Gurmukhi",),
    "or": ("Oriya",),
    "ta": ("Tamil",),
    "te": ("Telugu",),
    "kn": ("Kannada",),
    "ml": ("Malayalam",),
    "si": ("Sinhala",),
    "th": ("Thai",),
    "fa-latn": (),  # Latin transliterations of languages listed above
    "cmn-latn-pinyin": (),
}
_NAME_WORD = re.compile(r"[ -]")
_SCRIPT_ALIASES = {"Cjk": "Han"}


def language_scripts(language: str) -> frozenset[str]:
    """The scripts `language` (an espeak-ng code) reads: Latin plus its own, if it has another."""
    code = language.lower()
    own = LANGUAGE_SCRIPTS.get(code, LANGUAGE_SCRIPTS.get(code.split("-")[0], ()))
    return frozenset(("Latin", *own))


def script_of(ch: str) -> str | None:
    """The script of a letter ("Latin", "Cyrillic", "Han", ...); None for digits, punctuation, symbols, marks."""
    category = unicodedata.category(ch)
    if category[0] != "L":
        return None
    word = _NAME_WORD.split(unicodedata.name(ch, "UNKNOWN"), maxsplit=1)[0].title()
    return _SCRIPT_ALIASES.get(word, word)


def drop_unspeakable(text: str, language: str) -> tuple[str, dict[str, str]]:
    """Remove the letters (with their combining marks) of scripts `language` cannot read.

    Returns (the text with each run of such letters replaced by one space, whitespace collapsed; the dropped
    letters by script, in order of appearance, runs separated by a space). Text is NFKC-normalised first, so
    full-width Latin counts as Latin.
    """
    text = unicodedata.normalize("NFKC", text)
    readable = language_scripts(language)
    kept: list[str] = []
    dropped: dict[str, list[str]] = {}
    dropping = False  # whether the last letter was dropped (its combining marks go too)
    previous_dropped: str | None = None  # the script of the character before, when it was dropped
    for ch in text:
        script = script_of(ch)
        if script is None and unicodedata.category(ch)[0] == "M":
            script = "mark"
        else:
            dropping = script is not None and script not in readable
        if dropping:
            if script == "mark" and previous_dropped is not None:
                dropped[previous_dropped].append(ch)  # with its letter
            elif script != "mark":
                runs = dropped.setdefault(script, [])
                runs.append(ch if previous_dropped == script else " " + ch)  # a new run after anything else
                previous_dropped = script
            if kept and kept[-1] != " ":
                kept.append(" ")
            continue
        previous_dropped = None
        kept.append(ch)
    if not dropped:
        return text, {}
    return " ".join("".join(kept).split()), {s: "".join(chars).strip() for s, chars in dropped.items()}


def describe_dropped(dropped: dict[str, str], limit: int = 12) -> str:
    """ "Arabic ('مرحبا'), Han ('你好')": the dropped letters by script, each cut to `limit` characters."""
    cut = {script: chars[:limit] + ("..." if len(chars) > limit else "") for script, chars in dropped.items()}
    return ", ".join(f"{script} ({chars!r})" for script, chars in cut.items())
