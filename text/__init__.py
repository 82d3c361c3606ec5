"""nanokoel text: the text front end, written text -> phoneme ids (used by data/, tts_lm/, evaluation/, apps/).

`normalize_text` (written -> spoken form), `split_sentences`, `G2P` (espeak-ng IPA phonemes, batched and cached),
`PhonemeVocab` (fixed phoneme inventory <-> ids) and `text_to_ids`; `python -m text.check_inventory` checks a
corpus against the inventory. Letters of scripts the language cannot read are dropped with an
`UnspeakableTextWarning` (scripts.py). Plain functions on strings.

Imports: common (atomic writes) and nothing else of the project.
"""

from text.g2p import G2P
from text.normalize import TextError, normalize_text, split_sentences
from text.scripts import UnspeakableTextWarning
from text.vocab import BOS, EOS, PAD, PhonemeVocab, text_to_ids

__all__ = [
    "TextError",
    "UnspeakableTextWarning",
    "normalize_text",
    "split_sentences",
    "G2P",
    "PhonemeVocab",
    "text_to_ids",
    "PAD",
    "BOS",
    "EOS",
]
