"""Check text against the fixed phoneme inventory: text files -> report of phoneme symbols with no id.

    python -m text.check_inventory --language de corpus/*.txt
    # 52638 lines, 0 unspeakable, 0 symbols missing from the inventory          (exit status 0; 1 if any are missing)
    python -m text.check_inventory --save runs/data/phonemes.json       (write the default vocabulary)

Every non-empty line of every file goes through the project's G2P (normalisation + espeak-ng) in batches; each
symbol outside `PhonemeVocab.default()` is listed with a count and an example line. Run it before training on a
new language or corpus; a missing symbol is appended to `_INVENTORY` in text/vocab.py (never reordered).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from text.g2p import G2P
from text.normalize import TextError
from text.vocab import PhonemeVocab, describe_symbol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m text.check_inventory",
        description="Phonemise every line of text files and report phoneme symbols missing from the fixed "
        "inventory (exit status 1 if any); optionally save the default phoneme vocabulary.",
    )
    parser.add_argument("files", nargs="*", type=Path, help="UTF-8 text files, one utterance per line")
    parser.add_argument("--language", default="en-us", help="espeak-ng language (default: en-us)")
    parser.add_argument("--batch-size", type=int, default=1000, help="lines per espeak-ng call (default: 1000)")
    parser.add_argument("--save", type=Path, help="write the default phoneme vocabulary to this JSON file")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    vocab = PhonemeVocab.default()
    if args.save:
        vocab.save(args.save)
        print(f"wrote {args.save} ({len(vocab)} ids)")
    lines: list[str] = []
    for file in args.files:
        if not file.is_file():
            parser.error(f"{file} does not exist")
        text = file.read_text(encoding="utf-8", errors="replace")
        lines += [ln.strip() for ln in text.splitlines() if any(ch.isalnum() for ch in ln)]
    lines = list(dict.fromkeys(lines))  # de-duplicated, order kept
    if not lines:
        return 0
    g2p = G2P(args.language, cache_size=0)
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    unspeakable = 0
    for start in tqdm(range(0, len(lines), args.batch_size), desc=f"g2p {args.language}", unit="batch"):
        batch = lines[start : start + args.batch_size]
        try:
            phonemes = g2p.phonemize(batch)
        except TextError:  # an unspeakable line in the batch: redo it line by line
            phonemes = []
            for line in batch:
                try:
                    phonemes.append(g2p(line))
                except TextError:
                    phonemes.append("")
                    unspeakable += 1
        for line, phones in zip(batch, phonemes, strict=True):
            for ch in vocab.missing(phones):
                counts[ch] += 1
                examples.setdefault(ch, f"{line[:60]!r} -> {phones[:60]!r}")
    print(f"{len(lines)} lines, {unspeakable} unspeakable, {len(counts)} symbols missing from the inventory")
    for ch, n in counts.most_common():
        print(f"  {describe_symbol(ch)} x{n}  e.g. {examples[ch]}")
    return 1 if counts else 0


if __name__ == "__main__":
    sys.exit(main())
