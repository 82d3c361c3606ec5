"""How much does the text tell about the next frame's codes, beside the frame before it? Probes on a token set.

    python -m evaluation.frame_probe --tokens runs/tokens/cpu_12.5fps [--epochs 3] [--window 3] [--out probe.json]

Four small MLPs are trained on the train split to predict each frame's codes (all codebooks), from:

- nothing (a learnt constant: the codes' marginal);
- the text around the frame: the 2 * window + 1 phonemes around its place under a uniform alignment;
- the previous frame (all its codes);
- the previous frame and the text around the frame.

Reported: cross-entropy per code on the validation split for each. The gaps say how much of what an LM's
cross-entropy rewards comes from the text and how much from acoustic continuity: docs/experiments.md, "How much
is there to read". With an FSQ codec (the token set's `codec_config`), codes go in and out as their levels
(tts_lm/code_levels.py); otherwise as plain ids.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from common.fileio import write_json_atomic
from tts_lm.code_levels import LevelEmbedding, LevelHead
from tts_lm.config import codec_levels
from tts_lm.dataset import read_tokens

INPUTS = {"nothing": (False, False), "text": (True, False), "previous_frame": (False, True), "both": (True, True)}


@dataclass
class Frames:
    """Every frame of a split: the previous frame's codes [N, K] (codebook_size = none), the phoneme ids
    around the frame [N, 2W+1] (0 = outside the text), and the frame's codes [N, K]."""

    previous: torch.Tensor
    text: torch.Tensor
    codes: torch.Tensor


def split_frames(ds, split: str, window: int, codebook_size: int) -> Frames:
    rows = [i for i, s in enumerate(ds["split"]) if s == split]
    if not rows:
        raise ValueError(f"frame_probe: the token set has no {split!r} utterances")
    previous, text, codes = [], [], []
    for i in rows:
        row = ds[i]
        c = np.asarray(row["codes"], dtype=np.int64)  # (K, F)
        ids = np.asarray(row["phoneme_ids"], dtype=np.int64)
        frames, n = c.shape[1], len(ids)
        padded = np.concatenate([np.zeros(window, np.int64), ids, np.zeros(window, np.int64)])
        place = np.minimum(((np.arange(frames) + 0.5) * n / frames).astype(np.int64), n - 1) + window
        text.append(np.stack([padded[place + d] for d in range(-window, window + 1)], axis=1))
        previous.append(np.concatenate([np.full((c.shape[0], 1), codebook_size), c[:, :-1]], axis=1).T)
        codes.append(c.T)
    return Frames(*(torch.from_numpy(np.concatenate(a)) for a in (previous, text, codes)))


class Probe(nn.Module):
    def __init__(
        self, use_text: bool, use_audio: bool, k: int, vocab: int, levels: list[int], phonemes: int, window: int
    ):
        super().__init__()
        self.use_text, self.use_audio, self.k, self.vocab = use_text, use_audio, k, vocab
        dim = 256
        self.text = nn.Embedding(phonemes, 32)
        # one extra id per codebook: "no previous frame"
        self.audio = LevelEmbedding(k, levels, 1, dim) if levels else nn.Embedding(k * (vocab + 1), dim)
        width = 1 + use_text * (2 * window + 1) * 32 + use_audio * dim
        self.body = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
        self.head = LevelHead(dim, k, levels, 0) if levels else nn.Linear(dim, k * vocab)

    def forward(self, previous: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """-> logits [N, K, V]"""
        x = [previous.new_ones(len(previous), 1, dtype=torch.float)]
        if self.use_text:
            x.append(self.text(text).flatten(1))
        if self.use_audio:
            x.append(self.audio(previous + torch.arange(self.k) * (self.vocab + 1)).sum(1))
        return self.head(self.body(torch.cat(x, dim=1))).view(len(previous), self.k, self.vocab)


def probe_ce(
    train: Frames, val: Frames, inputs: str, shape: dict, window: int, epochs: int, seed: int, progress: bool
) -> float:
    """Validation ce per code of the probe given `inputs`; `shape`: k, vocab, levels, phonemes (see `measure`)."""
    use_text, use_audio = INPUTS[inputs]
    torch.manual_seed(seed)
    model = Probe(use_text, use_audio, window=window, **shape)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    n = len(train.codes)
    for _ in tqdm(range(epochs), desc=f"probe: {inputs}", unit="epoch", disable=not progress):
        order = torch.randperm(n)
        for start in range(0, n, 512):
            i = order[start : start + 512]
            loss = F.cross_entropy(model(train.previous[i], train.text[i]).flatten(0, 1), train.codes[i].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(val.codes), 4096):
            sl = slice(start, start + 4096)
            logits = model(val.previous[sl], val.text[sl])
            total += F.cross_entropy(logits.flatten(0, 1), val.codes[sl].flatten(), reduction="sum").item()
    return total / val.codes.numel()


def measure(tokens: str, window: int = 3, epochs: int = 3, seed: int = 0, progress: bool = True) -> dict:
    ds, meta = read_tokens(tokens)
    ds = ds.with_format("numpy")
    train = split_frames(ds, "train", window, int(meta["codebook_size"]))
    val = split_frames(ds, "validation", window, int(meta["codebook_size"]))
    vocab = int(meta["codebook_size"])
    levels = codec_levels(meta) or []
    shape = dict(
        k=int(meta["num_codebooks"]),
        vocab=vocab,
        levels=levels if math.prod(levels) == vocab else [],  # codes as ids when the levels do not describe them
        phonemes=int(max(train.text.max(), val.text.max())) + 1,
    )
    ce = {name: probe_ce(train, val, name, shape, window, epochs, seed, progress) for name in INPUTS}
    return {
        "tokens": str(tokens),
        "train_frames": len(train.codes),
        "validation_frames": len(val.codes),
        "window": window,
        "epochs": epochs,
        "ce": ce,
        "text_alone": ce["nothing"] - ce["text"],
        "previous_frame_alone": ce["nothing"] - ce["previous_frame"],
        "text_beside_previous_frame": ce["previous_frame"] - ce["both"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.frame_probe",
        description="How much the text and the previous frame each tell about a frame's codes (MLP probes).",
    )
    p.add_argument("--tokens", required=True, help="token set directory (make tokenize)")
    p.add_argument("--window", type=int, default=3, help="phonemes on each side of the frame's place (default 3)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of each probe (default 3)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and order seed (default 0)")
    p.add_argument("--out", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        result = measure(args.tokens, args.window, args.epochs, args.seed, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"frame_probe: {e}", file=sys.stderr)
        return 2
    print(f"{args.tokens}: {result['train_frames']} train / {result['validation_frames']} validation frames, "
          f"{time.perf_counter() - start:.0f} s\n")  # fmt: skip
    print("| inputs | validation ce per code |\n|---|---:|")
    for name, value in result["ce"].items():
        print(f"| {name.replace('_', ' ')} | {value:.3f} |")
    print(
        f"\ntext alone: {result['text_alone']:.3f} nats per code; previous frame alone: "
        f"{result['previous_frame_alone']:.3f}; text beside the previous frame: "
        f"{result['text_beside_previous_frame']:.3f}"
    )
    if args.out:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
