"""nanokoel alignment: text and its alignment to speech.

Text front end (this package's first part): `normalize_text` (written -> spoken form), `split_sentences`,
`G2P` (espeak-ng IPA phonemes, batched and cached), `PhonemeVocab` (fixed phoneme inventory <-> ids) and
`text_to_ids`. Plain functions on strings; nothing else of the project is imported.
"""

from alignment.g2p import G2P
from alignment.normalize import TextError, normalize_text, split_sentences
from alignment.vocab import BOS, EOS, PAD, PhonemeVocab, text_to_ids

__all__ = [
    "TextError",
    "normalize_text",
    "split_sentences",
    "G2P",
    "PhonemeVocab",
    "text_to_ids",
    "PAD",
    "BOS",
    "EOS",
]
