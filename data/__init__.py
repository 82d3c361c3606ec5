"""nanokoel data: the corpus (stage 0) and its tokenisation (stage 2).

    python -m data.corpus --profile cpu --out runs/data/cpu                   # make data: embedded corpus
    python -m data.import_corpus ...                                          # a real corpus, same manifest
    python -m data.tokenize_corpus --codec DIR --manifest M --out DIR         # make tokenize: the LM's token set

The manifest (manifest.py), the embedded corpus from Debian's synthesizers and texts (corpus.py,
synthesizers.py, texts.py, audio.py), adapters for real corpora (adapters.py, import_corpus.py), and
tokenisation into the token set the LM reads (tokenize_corpus.py, token_shards.py, token_index.py).

Imports: common, text (normalisation, phonemes) and codec (audio IO, encoding). Never tts_lm/ or above.
"""
