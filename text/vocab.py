"""Phoneme vocabulary: IPA phoneme string <-> integer ids, over a FIXED symbol inventory.

    vocab = PhonemeVocab.default()
    ids = vocab.encode("həlˈoʊ wˈɜːld!")   # -> [len 14 list of ints], one id per unicode code point
    vocab.decode(ids)                     # -> "həlˈoʊ wˈɜːld!"
    text_to_ids(["Hello world!"], G2P("en-us"), vocab)   # -> [[...]]

Ids: PAD=0, BOS=1, EOS=2, then space, phrase punctuation, stress / length / tone marks, combining diacritics,
vowels, consonants, modifier letters. One symbol is one unicode code point (a nasal vowel "ɑ̃" is "ɑ" + U+0303), the
way espeak-ng writes IPA. The inventory does not depend on the corpus, so ids are the same for every dataset and
every checkpoint; it covers every symbol espeak-ng produced for en-us and en-gb over all of Debian's `fortunes`
and the King James Bible, for de / fr / es over the gettext catalogues Debian ships, plus the rest of the IPA chart.
New symbols may only ever be APPENDED (`_ADDED`) (never inserted or reordered): saved vocabularies and
trained embeddings index by id. A saved vocabulary (`phonemes.json` beside a corpus) is authoritative for that
corpus: `PhonemeVocab.load` reads its symbol list as written.

Check a new corpus or language against the inventory with `text/check_inventory.py`:
    python -m text.check_inventory --language de corpus/*.txt     (lists symbols missing from the inventory)
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.fileio import write_json_atomic
from text.normalize import TextError

if TYPE_CHECKING:
    from text.g2p import G2P

__all__ = ["PhonemeVocab", "text_to_ids", "PAD", "BOS", "EOS"]

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
_FORMAT = "nanokoel-phoneme-vocab"
_VERSION = 1

_SPACE_AND_PUNCTUATION = " .,!?;:\"()-'¡¿"
_PROSODY = "ˈˌːˑ˥˦˧˨˩"  # primary / secondary stress, long / half-long, tone letters (espeak-ng's tone languages)
_COMBINING = (
    "\u0303"  # nasal (fr "ɑ̃")
    "\u0329"  # syllabic (en-us "n̩")
    "\u032f\u0325\u030a\u0361\u0306\u0308\u031a\u0324\u0330\u032a\u033a\u031d\u031e\u0320\u031f\u0339\u031c"
)
_VOWELS = "aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵɶʉʊʌʏøœᵻɿʅ"
_CONSONANTS = "bcdfghjklmnpqrstvwxzçðħŋɓɕɖɗɟɠɡɢɣɥɦɧɫɬɭɮɰɱɲɳɴɸɹɺɻɽɾʀʁʂʃʄʈʋʍʎʐʑʒʔʕʙʛʜʝʟʡʢβθχ"
_MODIFIERS = "ʰʲʷˠˤʼⁿˡ˞ʱ"
_ADDED = ""  # new symbols go HERE, at the end (editing the groups above would shift every later id)
# The fixed inventory. APPEND ONLY: ids of existing symbols must never change (tests/test_text.py pins them).
_INVENTORY: tuple[str, ...] = tuple(
    _SPACE_AND_PUNCTUATION + _PROSODY + _COMBINING + _VOWELS + _CONSONANTS + _MODIFIERS + _ADDED
)
assert len(set(_INVENTORY)) == len(_INVENTORY), "duplicate symbol in the phoneme inventory"


def describe_symbol(symbol: str) -> str:
    """ "ʁ" -> "'ʁ' (U+0281 LATIN LETTER SMALL CAPITAL INVERTED R)", for error messages."""
    return (
        f"{symbol!r} (U+{ord(symbol):04X} {unicodedata.name(symbol, 'unnamed')})" if len(symbol) == 1 else repr(symbol)
    )


class PhonemeVocab:
    """Maps phoneme strings to ids one code point at a time; PAD=0, BOS=1, EOS=2, then `symbols` in order.

    Args:
        symbols: the phoneme symbols (single code points) in id order, without the special tokens.
    """

    pad_id = PAD
    bos_id = BOS
    eos_id = EOS

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        bad = [s for s in symbols if not isinstance(s, str) or len(s) != 1]
        if bad:
            raise ValueError(f"phoneme symbols must be single characters, got {bad[:5]}")
        duplicates = sorted(s for s, n in Counter(symbols).items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate phoneme symbols: {[describe_symbol(s) for s in duplicates]}")
        self._id_to_token: list[str] = list(SPECIAL_TOKENS) + symbols
        self._symbol_to_id: dict[str, int] = {s: i + len(SPECIAL_TOKENS) for i, s in enumerate(symbols)}

    @classmethod
    def default(cls) -> PhonemeVocab:
        """The project's fixed inventory (see the module docstring)."""
        return cls(_INVENTORY)

    @property
    def symbols(self) -> list[str]:
        """The phoneme symbols in id order, without the special tokens."""
        return self._id_to_token[len(SPECIAL_TOKENS) :]

    def __len__(self) -> int:
        return len(self._id_to_token)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._symbol_to_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhonemeVocab) and self._id_to_token == other._id_to_token

    def __repr__(self) -> str:
        return f"PhonemeVocab({len(self)} ids: 3 special + {len(self.symbols)} symbols)"

    def missing(self, phonemes: str) -> set[str]:
        """Symbols of `phonemes` that have no id."""
        return {ch for ch in phonemes if ch not in self._symbol_to_id}

    def encode(self, phonemes: str, add_bos_eos: bool = False) -> list[int]:
        """Phoneme string -> ids (optionally wrapped in BOS ... EOS).

        Raises:
            TextError: the string is empty, or holds a symbol outside the vocabulary (named with its code point).
        """
        if not phonemes.strip():
            raise TextError(f"empty phoneme string {phonemes!r}: nothing to encode (was the text empty?)")
        ids = []
        for position, ch in enumerate(phonemes):
            idx = self._symbol_to_id.get(ch)
            if idx is None:
                raise TextError(
                    f"unknown phoneme symbol {describe_symbol(ch)} at position {position} of {phonemes!r}; it is "
                    f"not in the phoneme inventory. If espeak-ng really produces it, append it to _INVENTORY in "
                    f"text/vocab.py (never reorder) and rebuild the vocabulary"
                )
            ids.append(idx)
        return [BOS, *ids, EOS] if add_bos_eos else ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> phoneme string; PAD/BOS/EOS are dropped (or written as <pad> ... with skip_special=False)."""
        out = []
        for idx in ids:
            idx = int(idx)
            if not 0 <= idx < len(self._id_to_token):
                raise ValueError(f"phoneme id {idx} is out of range for a vocabulary of {len(self)} ids")
            if idx < len(SPECIAL_TOKENS) and skip_special:
                continue
            out.append(self._id_to_token[idx])
        return "".join(out)

    # -- files -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "special_tokens": {"pad": PAD, "bos": BOS, "eos": EOS},
            "symbols": self.symbols,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> PhonemeVocab:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{source} is not a phoneme vocabulary (expected a JSON object with format={_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise ValueError(
                f"{source}: phoneme vocabulary version {data.get('version')!r}, this code reads {_VERSION}"
            )
        if data.get("special_tokens") != {"pad": PAD, "bos": BOS, "eos": EOS}:
            raise ValueError(f"{source}: special token ids {data.get('special_tokens')!r}, expected pad=0 bos=1 eos=2")
        symbols = data.get("symbols")
        if not isinstance(symbols, list):
            raise ValueError(f"{source}: 'symbols' must be a list of single characters")
        try:
            return cls(symbols)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically (a crash leaves the old file or the new one, never half)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhonemeVocab:
        """Read a vocabulary written by `save`; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"phoneme vocabulary {path} does not exist (it is written beside the corpus "
                                    f"manifest as phonemes.json; rebuild the data or pass the right path)")  # fmt: skip
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"phoneme vocabulary {path} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=str(path))


def text_to_ids(texts: list[str], g2p: G2P, vocab: PhonemeVocab, add_bos_eos: bool = False) -> list[list[int]]:
    """Texts -> phoneme ids: normalise + phonemise in one batch with `g2p`, then `vocab.encode` each."""
    return [vocab.encode(phonemes, add_bos_eos=add_bos_eos) for phonemes in g2p.phonemize(texts)]
