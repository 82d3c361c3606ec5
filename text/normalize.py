"""Text normalisation: written text -> the words a speaker says, before grapheme-to-phoneme conversion.

    normalize_text("Dr. Smith paid $3.50 on the 3rd.")  -> "Doctor Smith paid three dollars fifty cents on the third."
    split_sentences("Hi Mr. Li. It is 3.5 km.")         -> ["Hi Mr. Li.", "It is 3.5 km."]

English ("en", "en-us", "en-gb", ...) gets the full treatment, in this order:
  1. unicode clean-up (every language): NFKC, curly quotes / guillemets -> ASCII quotes, dashes -> "-" or a
     comma pause, ellipsis -> "...", odd spaces and zero-width characters removed, whitespace collapsed;
  2. abbreviations: Mr. Mrs. Ms. Dr. Prof. St. (Saint before a name, Street otherwise), Jr., etc., vs., e.g. ...;
  3. numbers: currency ($ £ € ¥, "$3.50" -> "three dollars fifty cents", "$2 million"), percentages, times
     ("3:30 pm"), ISO dates, ordinals ("3rd"), decades ("1990s"), years ("1999"), decimals, negatives,
     ranges ("5-10"), simple fractions, thousands separators, leading zeros read digit by digit;
  4. symbols written out: & @ + = # ° ×; other symbols (emoji, ™ ...) dropped.
Other languages get step 1 and the symbol clean-up only: espeak-ng reads their digits in their own language.

Everything here is a pure function on strings (no espeak-ng); `text.g2p.G2P` calls `normalize_text` first.
Text that normalises to nothing is not an error here; the G2P raises `TextError` for it, naming the text.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["TextError", "normalize_text", "split_sentences", "spell_number", "spell_ordinal", "spell_year"]


class TextError(ValueError):
    """Text that cannot be turned into speech: empty, unspeakable, or a symbol outside the phoneme vocabulary."""


# ----------------------------------------------------------------------------------------------------------------
# Number speller (English, US style: no "and" after hundred)

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
    "twelve": "twelfth",
}  # fmt: skip


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def spell_number(n: int) -> str:
    """Cardinal in words: 1234 -> "one thousand two hundred thirty four", -5 -> "minus five"."""
    if n < 0:
        return "minus " + spell_number(-n)
    if n >= 1000 ** len(_SCALES):
        return spell_digits(str(n))
    if n == 0:
        return "zero"
    groups: list[str] = []
    scale = 0
    while n:
        n, chunk = divmod(n, 1000)
        if chunk:
            groups.insert(0, " ".join(_below_thousand(chunk) + ([_SCALES[scale]] if scale else [])))
        scale += 1
    return " ".join(groups)


def spell_ordinal(n: int) -> str:
    """Ordinal in words: 3 -> "third", 21 -> "twenty first", 100 -> "one hundredth"."""
    words = spell_number(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def spell_year(n: int) -> str:
    """Year in words: 1999 -> "nineteen ninety nine", 1905 -> "nineteen oh five", 2005 -> "two thousand five"."""
    if n % 1000 < 10 or not 1000 <= n <= 9999:  # 2000, 2005, 1000, 1009: read as a cardinal
        return spell_number(n)
    high, low = divmod(n, 100)
    if low == 0:
        return spell_number(high) + " hundred"
    return spell_number(high) + " " + (("oh " + _ONES[low]) if low < 10 else spell_number(low))


def spell_digits(digits: str) -> str:
    """Digit by digit: "007" -> "zero zero seven"."""
    return " ".join(_ONES[int(d)] for d in digits if d.isdigit())


def _spell_decimal(integer: str, fraction: str | None) -> str:
    """ "3", "14" -> "three point one four"; "0", "5" -> "zero point five"; leading zeros digit by digit."""
    integer = integer.replace(",", "")
    if len(integer) > 1 and integer.startswith("0"):
        words = spell_digits(integer)
    else:
        words = spell_number(int(integer)) if integer else ""
    if fraction:
        words = (words + " point " + spell_digits(fraction)).strip()
    return words


def _plural_of_number_words(words: str) -> str:
    """ "nineteen ninety" -> "nineteen nineties", "nineteen hundred" -> "nineteen hundreds"."""
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


# ----------------------------------------------------------------------------------------------------------------
# Unicode clean-up (every language)

_CHAR_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u2039": '"', "\u203a": '"',
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-", "\u2014": " - ", "\u2015": " - ",
    "\u2026": "...", "\u2044": "/", "\u00b7": " ", "\u2022": " ", "`": "'", "\u00b4": "'", "\u2122": " ",
    "\u00ae": " ", "\u00a9": " ",
}  # fmt: skip
_CHAR_TABLE = str.maketrans(_CHAR_MAP)
_KEEP_PUNCTUATION = set(".,!?;:'\"()-¡¿")
_SPOKEN_SYMBOLS = set("€$£¥%&@+=#°")  # espeak-ng reads these in every language (English expands them itself)


def _clean_unicode(text: str) -> str:
    text = text.translate(_CHAR_TABLE)  # before NFKC, which would turn "…" into "..." anyway but "′" into "'"
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_TABLE)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif cat == "Cf":  # zero-width joiners, BOM, soft hyphen
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _drop_symbols(text: str) -> str:
    """Keep letters, combining marks, digits, spaces and the punctuation espeak-ng phrases on; drop the rest."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in _KEEP_PUNCTUATION or ch in _SPOKEN_SYMBOLS or cat[0] in "LMN" or ch == " ":
            out.append(ch)
        elif ch in "[{":
            out.append("(")
        elif ch in "]}":
            out.append(")")
        else:  # symbols (emoji, ™, *, _, |, ~ ...) and other punctuation become a word break
            out.append(" ")
    return "".join(out)


def _tidy(text: str) -> str:
    text = re.sub(r"(?:^|\s+)-\s+|\s*-{2,}\s*", ", ", text)  # a spaced dash is a pause, not a hyphen
    text = re.sub(r",(?=[^\W\d_])", ", ", text)
    text = re.sub(r"\(\s*\)", " ", text)
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.!?;:)])", r"\1", text)  # no space before closing punctuation
    text = re.sub(r"([(¡¿])\s+", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," left by removed symbols
    text = re.sub(r"^[\s,;:]+", "", text)
    return text.strip()


# ----------------------------------------------------------------------------------------------------------------
# English: abbreviations

_TITLES = {
    "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Dr": "Doctor", "Prof": "Professor", "Rev": "Reverend",
    "Hon": "Honorable", "Capt": "Captain", "Gen": "General", "Lt": "Lieutenant", "Col": "Colonel",
    "Sgt": "Sergeant", "Gov": "Governor", "Sen": "Senator", "Rep": "Representative", "Mt": "Mount",
}  # fmt: skip
_OTHER_ABBREVIATIONS = {
    "Jr": "Junior", "Sr": "Senior", "etc": "et cetera", "vs": "versus", "e.g": "for example", "i.e": "that is",
    "approx": "approximately", "Ave": "Avenue", "Blvd": "Boulevard", "Inc": "Incorporated", "Ltd": "Limited",
    "Corp": "Corporation", "Dept": "Department", "Feb": "February", "Aug": "August",
    "Sept": "September", "Oct": "October", "Nov": "November", "Dec": "December",
}  # fmt: skip
_NO_PERIOD_ABBREVIATIONS = {"vs": "versus", "etc": "et cetera", "Mr": "Mister", "Mrs": "Missus", "Dr": "Doctor"}
# words before a "." that do not end a sentence (for split_sentences)
_NON_FINAL = set(_TITLES) | {"St", "No", "Nos", "vs", "e.g", "i.e", "approx", "cf", "Fig", "fig", "Vol", "p", "pp"}


def _period_if_sentence_ends(text: str, end: int) -> str:
    """A "." eaten by an abbreviation comes back when the sentence ended there (end of text or a capital next)."""
    rest = text[end:]
    return "." if re.match(r"\s*$|\s+[\"']?[A-Z]", rest) else ""


def _saint_or_street(m: re.Match) -> str:
    """ "St." before a name is Saint ("St. Paul"), after a house number and a name it is Street ("12 Baker St.")."""
    address, rest = m.group(1), m.string[m.end() :]
    if address is None and re.match(r"\s+[A-Z]", rest):
        return "Saint"
    return (address or "") + "Street" + _period_if_sentence_ends(m.string, m.end())


def _expand_abbreviations(text: str) -> str:
    text = re.sub(  # initialisms: "U.S.A." -> "U S A"
        r"(?<![\w.])((?:[A-Z]\.){2,})",
        lambda m: " ".join(m.group(1).rstrip(".").split(".")) + _period_if_sentence_ends(m.string, m.end()) + " ",
        text,
    )
    titles = "|".join(_TITLES)
    # a title comes before a name ("Dr. Smith", "Mr. and Mrs."), not before a number ("Gen. 1:1" is Genesis)
    text = re.sub(rf"\b({titles})\.(?=\s+[^\d\s])", lambda m: _TITLES[m.group(1)], text)
    text = re.sub(r"(\d+(?:\s+[A-Z]\w*)+\s+)?\bSt\.", _saint_or_street, text)
    text = re.sub(r"\bNo\.(?=\s*\d)", "number", text)
    other = "|".join(re.escape(k) for k in sorted(_OTHER_ABBREVIATIONS, key=len, reverse=True))
    text = re.sub(
        rf"(?<![\w.])({other})\.",
        lambda m: _OTHER_ABBREVIATIONS[m.group(1)] + _period_if_sentence_ends(m.string, m.end()),
        text,
    )
    text = re.sub(r"\b(vs|etc|Mrs|Mr|Dr)\b(?!\.)", lambda m: _NO_PERIOD_ABBREVIATIONS[m.group(1)], text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# English: numbers

_CURRENCIES = {  # symbol: (unit, units, sub-unit, sub-units); sub-unit None -> read decimals as "point ..."
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", None, None),
}
_SCALE_WORDS = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "bn": "billion", "b": "billion"}
_MONTHS = "January February March April May June July August September October November December".split()
_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # 1,234,567 or 1234567


def _say_money(symbol: str, integer: str, fraction: str | None, scale: str | None, negative: bool) -> str:
    unit, units, sub, subs = _CURRENCIES[symbol]
    sign = "minus " if negative else ""
    amount = int(integer.replace(",", "") or 0)
    if scale:  # "$2.5 million" -> "two point five million dollars"
        scale = _SCALE_WORDS.get(scale, scale.lower())
        return f"{sign}{_spell_decimal(integer or '0', fraction)} {scale} {units}"
    if fraction is not None and (sub is None or len(fraction) > 2):
        return f"{sign}{_spell_decimal(integer or '0', fraction)} {units}"
    cents = int(fraction.ljust(2, "0")) if fraction else 0
    parts = []
    if amount or not cents:
        parts.append(f"{spell_number(amount)} {unit if amount == 1 else units}")
    if cents:
        parts.append(f"{spell_number(cents)} {sub if cents == 1 else subs}")
    return sign + " ".join(parts)


def _say_time(hour: int, minute: int, meridiem: str | None) -> str:
    words = spell_number(hour)
    if minute == 0:
        words += "" if meridiem else " o'clock"
    elif minute < 10:
        words += " oh " + _ONES[minute]
    else:
        words += " " + spell_number(minute)
    if meridiem:
        words += " " + meridiem[0].upper() + " M"
    return words


def _expand_numbers(text: str) -> str:
    sym = "[" + re.escape("".join(_CURRENCIES)) + "]"
    scale = r"(?:\s?(thousand|million|billion|trillion|bn|[kKmMb])\b)?"
    # currency after the amount: "5€", "2.50 €" (a decimal comma, "3,50 €", is not handled)
    text = re.sub(
        rf"(?<![\d.])(-)?({_NUM})(?:\.(\d+))?\s?({sym})(?!\d)",
        lambda m: _say_money(m.group(4), m.group(2), m.group(3), None, bool(m.group(1))),
        text,
    )
    # currency before the amount: "$3.50", "-$5", "£2.5m", "$ 1,000"
    text = re.sub(
        rf"(-)?({sym})\s?({_NUM})?(?:\.(\d+))?{scale}",
        lambda m: (
            _say_money(m.group(2), m.group(3) or "", m.group(4), m.group(5), bool(m.group(1)))
            if (m.group(3) or m.group(4))
            else m.group(0)
        ),
        text,
    )
    text = re.sub(r"(?<![\d.])(-)?(\d+)-(\d{2})-(\d{2})(?![\d-])", _say_iso_date, text)
    text = re.sub(
        rf"(?<![\d.])(-)?({_NUM})(?:\.(\d+))?\s?%",
        lambda m: ("minus " if m.group(1) else "") + _spell_decimal(m.group(2), m.group(3)) + " percent",
        text,
    )
    # times: "3:30", "15:05", "3:30 p.m.", "7pm", "7 a.m."
    text = re.sub(
        r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])(?:\s?([aApP])\.?[mM]\b\.?)?",
        lambda m: (
            _say_time(int(m.group(1)), int(m.group(2)), m.group(3))
            + (_period_if_sentence_ends(m.string, m.end()) if m.group(3) and m.group(0).endswith(".") else "")
        ),
        text,
    )
    text = re.sub(
        r"(?<![\d:.])(1[0-2]|0?[1-9])\s?([aApP])\.?[mM]\b\.?",
        lambda m: (
            _say_time(int(m.group(1)), 0, m.group(2))
            + (_period_if_sentence_ends(m.string, m.end()) if m.group(0).endswith(".") else "")
        ),
        text,
    )
    text = re.sub(
        rf"(?<![\d.])({_NUM})(st|nd|rd|th|ST|ND|RD|TH)\b",
        lambda m: spell_ordinal(int(m.group(1).replace(",", ""))),
        text,
    )
    text = re.sub(  # decades: "1990s" -> "nineteen nineties", "'90s" / "90s" -> "nineties"
        r"(?:'(?=\d0s))?(?<![\d.])(1[1-9]|20)?(\d0)'?s\b",
        lambda m: _plural_of_number_words(
            spell_year(int(m.group(1) + m.group(2))) if m.group(1) else spell_number(int(m.group(2)))
        ),
        text,
    )
    # phone numbers digit by digit, then ranges: "5-10" -> "5 to 10" (two increasing numbers, nothing more)
    text = re.sub(r"(?<![\d-])(?:\(?\d{3}\)?[ -])?\d{3}-\d{4}(?![\d-])", _say_phone_number, text)
    text = re.sub(r"(?<![\d.-])(\d+)-(\d+)(?![\d.-])", _say_range, text)
    text = re.sub(r"(?<![\d,.])(1[1-9]\d\d|20\d\d)(?![\d%]|[.,]\d)", lambda m: spell_year(int(m.group(1))), text)
    # fractions: "1/2" -> "one half", "3/4" -> "three quarters"
    text = re.sub(r"(?<![\d/.])(\d+)/(\d+)(?![\d/])", _say_fraction, text)
    text = re.sub(r"#\s?(?=\d)", "number ", text)
    # letters glued to digits are read apart: "MP3" -> "MP 3", "3D" -> "3 D"
    text = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", text)
    # decimals, negatives, plain numbers
    text = re.sub(
        rf"(?:(?<=^)|(?<=[\s(\"']))-(?=\.?\d)|(?<!\d)({_NUM})?\.(\d+)|(?<!\d)({_NUM})(?!\d)",
        _say_plain_number,
        text,
    )
    return text


def _say_plain_number(m: re.Match) -> str:
    if m.group(0) == "-":
        return "minus "
    if m.group(2) is not None:  # decimal
        return _spell_decimal(m.group(1) or "", m.group(2))
    return _spell_decimal(m.group(3), None)


def _say_range(m: re.Match) -> str:
    low, high = int(m.group(1)), int(m.group(2))
    return f"{m.group(1)} to {m.group(2)}" if low < high else f"{m.group(1)} {m.group(2)}"


def _say_phone_number(m: re.Match) -> str:
    return ", ".join(spell_digits(group) for group in re.findall(r"\d+", m.group(0)))


def _say_iso_date(m: re.Match) -> str:
    year, month, day = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if m.group(1) or not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{_MONTHS[month - 1]} {spell_ordinal(day)}, {spell_year(year)}"


def _say_fraction(m: re.Match) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if not 2 <= den <= 10 or not 0 < num < den:  # "24/7", "50/50": the two numbers
        return f"{spell_number(num)} {spell_number(den)}"
    name = {2: "half", 4: "quarter"}.get(den, spell_ordinal(den))
    if num == 1:
        return f"one {name}"
    return f"{spell_number(num)} {'halves' if den == 2 else name + 's'}"


_SYMBOL_WORDS = [(r"&", " and "), (r"@", " at "), (r"\+", " plus "), (r"(?<=\s)=(?=\s)", " equals "),
                 (r"°\s?C\b", " degrees Celsius "), (r"°\s?F\b", " degrees Fahrenheit "), (r"°", " degrees "),
                 (r"(?<=\d)\s?×\s?(?=\d)", " times "), (r"\s/\s|(?<=[^\W\d_])/(?=[^\W\d_])", " "),
                 (r"(?<=[a-z])\.(?=[a-z]{2,}\b)", " dot ")]  # fmt: skip


def _expand_symbols(text: str) -> str:
    for pattern, words in _SYMBOL_WORDS:
        text = re.sub(pattern, words, text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# Public API


def normalize_text(text: str, language: str = "en-us") -> str:
    """Written text -> speakable text on one line (see the module docstring for what is expanded).

    Args:
        text: any unicode text; newlines become spaces.
        language: an espeak-ng language code; "en*" gets number, currency and abbreviation expansion,
            other languages only the punctuation and symbol clean-up.
    Returns:
        the normalised text, possibly "" (the caller decides whether empty is an error).
    """
    if not isinstance(text, str):
        raise TextError(f"expected text as str, got {type(text).__name__}: {text!r:.80}")
    text = _clean_unicode(text)
    if language.lower().startswith("en"):
        text = _expand_abbreviations(text)
        text = _expand_numbers(text)
        text = _expand_symbols(text)
    return _tidy(_drop_symbols(text))


_SENTENCE_END = re.compile(r"([.!?]+|\.\.\.)([\"')\]]*)(\s+|$)")


def split_sentences(text: str, max_chars: int | None = None) -> list[str]:
    """Split running text into sentences for long-form synthesis, on the raw text (before normalisation).

    A sentence ends at ".", "!", "?" or "..." followed by whitespace, except after an abbreviation that does not
    end sentences ("Mr.", "Dr.", "St.", "e.g."), a single-letter initial ("J. R. R. Tolkien"), or inside a number
    ("3.5"). Blank lines always separate sentences. With `max_chars`, longer sentences are cut further at ";", ":",
    "," and finally at word boundaries, so that no piece is longer than `max_chars` (unless one word is).
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_TABLE)
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for m in _SENTENCE_END.finditer(paragraph):
            words_before = paragraph[start : m.start()].split()
            last = words_before[-1] if words_before else ""
            if m.group(1) == "." and (last in _NON_FINAL or (len(last) == 1 and last.isupper())):
                continue
            sentences.append(paragraph[start : m.end()].strip())
            start = m.end()
        sentences.append(paragraph[start:].strip())
    sentences = [s for s in sentences if s]
    if max_chars is not None:
        sentences = [piece for s in sentences for piece in _cut(s, max_chars)]
    return sentences


def _cut(sentence: str, max_chars: int) -> list[str]:
    """Cut one sentence into pieces of at most `max_chars`, preferring clause punctuation, then spaces."""
    if len(sentence) <= max_chars:
        return [sentence]
    for pattern in (r"(?<=[;:])\s+", r"(?<=,)\s+", r"\s+"):
        parts = re.split(pattern, sentence)
        if len(parts) == 1:
            continue
        pieces, current = [], ""
        for part in parts:
            candidate = f"{current} {part}".strip()
            if current and len(candidate) > max_chars:
                pieces.append(current)
                current = part
            else:
                current = candidate
        pieces.append(current)
        if len(pieces) > 1:
            return [p for piece in pieces for p in _cut(piece, max_chars)]
    return [sentence]
