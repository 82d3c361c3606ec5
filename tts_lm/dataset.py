"""The LM's training data: a token set (stage 2's output) -> prompted, token-budget batches (LMBatch).

    ds, meta = read_tokens("runs/tokens/cpu_12.5fps")        # datasets.load_from_disk + meta.json
    train = PromptedUtterances(ds, meta, "train", model_cfg, data_cfg, seed=0)
    for indices in train.batches(epoch):                     # lists of row indices, length-bucketed
        batch = train.collate(indices, epoch)                # -> LMBatch

Token set (CONTRACTS.md, written by data.tokenize_corpus): columns id, speaker, text, phoneme_ids (PhonemeVocab
ids, no BOS/EOS), codes (int16 [K, F]), num_frames, duration, split; meta.json with the codec reference,
frame geometry, phoneme vocabulary, `speakers` {split: {speaker: [ids]}} and `prompts` {id: prompt id} for
validation/test. It is read here with `datasets` directly (tts_lm does not import the `data` package).

Speaker prompt (Koel "decoder context"): in training a random 3-5 s crop of ANOTHER utterance of the same
speaker, drawn afresh every epoch; in validation/test the fixed prompt utterance of meta.json (its first
max_prompt_seconds). Utterances whose speaker has no other utterance in the split are left out.

Batches: rows are sorted by sequence length inside windows of `bucket_size` shuffled rows and packed greedily so
that rows x longest sequence <= `max_tokens`; the batch order is shuffled. Everything random (order, prompt
choice and crop, classifier-free-guidance drop) comes from numpy generators seeded by (seed, epoch, row), so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from tts_lm.config import LMConfig
from tts_lm.model import LMBatch

REQUIRED_COLUMNS = ("id", "speaker", "phoneme_ids", "codes", "split")


@dataclass
class DataConfig:
    tokens: str = ""  # token set folder (data.tokenize_corpus --out)
    max_tokens: int = 4096  # per batch: rows x longest sequence (prompt + text + audio positions)
    max_batch_size: int = 64
    bucket_size: int = 512  # rows sorted by length together
    prompt_min_seconds: float = 3.0
    prompt_max_seconds: float = 5.0
    train_split: str = "train"
    val_split: str = "validation"
    max_val_utterances: int = 256


def read_tokens(path: str | os.PathLike) -> tuple[datasets.Dataset, dict[str, Any]]:
    """(dataset, meta) of a finished token folder, with errors that say what to run."""
    path = Path(path)
    if not str(path) or not (path / "meta.json").is_file():
        raise FileNotFoundError(
            f"{path}/meta.json not found: not a finished token set; run `make tokenize` "
            f"(python -m data.tokenize_corpus --codec ... --manifest ... --out {path})"
        )
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    ds = datasets.load_from_disk(str(path))
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: token set lacks columns {missing}; re-run data.tokenize_corpus")
    return ds, meta


class PromptedUtterances:
    """One split of a token set in memory, with speaker prompts, batching and collation."""

    def __init__(
        self,
        ds: datasets.Dataset,
        meta: dict[str, Any],
        split: str,
        model: LMConfig,
        cfg: DataConfig,
        seed: int = 0,
        train: bool = True,
        limit: int | None = None,
    ):
        self.model, self.cfg, self.seed, self.train = model, cfg, seed, train
        rows = [i for i, s in enumerate(ds["split"]) if str(s) == split]
        if limit is not None:
            rows = rows[:limit]
        sub = ds.select(rows).with_format("numpy")
        self.ids: list[str] = [str(u) for u in sub["id"]]
        self.speakers: list[str] = [str(s) for s in sub["speaker"]]
        self.phonemes: list[np.ndarray] = [np.asarray(p, dtype=np.int64) for p in sub["phoneme_ids"]]
        self.codes: list[np.ndarray] = [np.asarray(c, dtype=np.int16) for c in sub["codes"]]  # [K, F] each
        index = {uid: i for i, uid in enumerate(self.ids)}
        self.skipped: dict[str, int] = {"no_prompt": 0, "too_long": 0}

        # prompt sources: other utterances of the same speaker (train), the fixed prompt (validation/test)
        by_speaker: dict[str, list[int]] = {}
        for i, spk in enumerate(self.speakers):
            by_speaker.setdefault(spk, []).append(i)
        self.prompt_pool: dict[int, list[int]] = {}
        fixed = meta.get("prompts", {})
        for i, uid in enumerate(self.ids):
            if train:
                pool = [j for j in by_speaker[self.speakers[i]] if j != i]
            else:
                pool = [index[fixed[uid]]] if fixed.get(uid) in index else []
            if pool:
                self.prompt_pool[i] = pool
            else:
                self.skipped["no_prompt"] += 1
        self.max_prompt_frames = min(model.seconds_to_frames(cfg.prompt_max_seconds), model.max_prompt_frames)
        self.usable = [i for i in self.prompt_pool if self.length(i) <= model.max_seq_len]
        self.skipped["too_long"] = len(self.prompt_pool) - len(self.usable)
        if not self.usable:
            raise ValueError(
                f"no usable {split!r} utterance in the token set ({len(self.ids)} rows; skipped {self.skipped}): "
                "every utterance needs another utterance of its speaker as prompt and must fit max_seq_len"
            )

    def __len__(self) -> int:
        return len(self.usable)

    def length(self, i: int) -> int:
        """Sequence positions of row i, with the longest prompt: prompt + BOS/text/EOS + audio steps (+ EOS)."""
        s = self.model.frames_per_step
        return -(-self.max_prompt_frames // s) + len(self.phonemes[i]) + 2 + -(-(self.codes[i].shape[1] + 1) // s)

    # ---- batching -------------------------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch (row indices), length-bucketed, within the token budget; deterministic."""
        rng = np.random.default_rng([self.seed, epoch])
        order = [self.usable[k] for k in rng.permutation(len(self.usable))] if self.train else list(self.usable)
        out: list[list[int]] = []
        for start in range(0, len(order), self.cfg.bucket_size):
            window = sorted(order[start : start + self.cfg.bucket_size], key=self.length)
            current: list[int] = []
            longest = 0
            for i in window:
                longest_if = max(longest, self.length(i))
                if current and (
                    (len(current) + 1) * longest_if > self.cfg.max_tokens or len(current) >= self.cfg.max_batch_size
                ):
                    out.append(current)
                    current, longest_if = [], self.length(i)
                current.append(i)
                longest = longest_if
            if current:
                out.append(current)
        if self.train:
            out = [out[k] for k in rng.permutation(len(out))]
        return out

    # ---- one batch ------------------------------------------------------------------------------------------
    def prompt(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Speaker-prompt codes int16 [K, P] for row i."""
        pool = self.prompt_pool[i]
        if not self.train:
            return self.codes[pool[0]][:, : self.max_prompt_frames]
        source = self.codes[pool[int(rng.integers(len(pool)))]]
        seconds = rng.uniform(self.cfg.prompt_min_seconds, self.cfg.prompt_max_seconds)
        frames = min(self.model.seconds_to_frames(seconds), self.max_prompt_frames, source.shape[1])
        start = int(rng.integers(source.shape[1] - frames + 1))
        return source[:, start : start + frames]

    def collate(self, indices: list[int], epoch: int = 0) -> LMBatch:
        """Rows -> a padded LMBatch (prompts and guidance drops drawn from (seed, epoch, row))."""
        rngs = [np.random.default_rng([self.seed, epoch, i, 1]) for i in indices]
        prompts = [self.prompt(i, rng) for i, rng in zip(indices, rngs, strict=True)]
        drop = self.model.cfg_dropout if self.train else 0.0
        uncond = [bool(rng.random() < drop) for rng in rngs]
        phonemes = [self.phonemes[i] for i in indices]
        codes = [self.codes[i] for i in indices]
        return LMBatch(
            phoneme_ids=_pad([torch.from_numpy(p) for p in phonemes]),
            phoneme_lens=torch.tensor([len(p) for p in phonemes]),
            prompt_codes=_pad([torch.from_numpy(p.astype(np.int64)) for p in prompts]),
            prompt_lens=torch.tensor([p.shape[1] for p in prompts]),
            codes=_pad([torch.from_numpy(c.astype(np.int64)) for c in codes]),
            code_lens=torch.tensor([c.shape[1] for c in codes]),
            uncond=torch.tensor(uncond),
        )


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad [..., n_i] tensors along the last dim with zeros -> [B, ..., max n]."""
    out = rows[0].new_zeros(len(rows), *rows[0].shape[:-1], max(r.shape[-1] for r in rows))
    for b, r in enumerate(rows):
        out[b, ..., : r.shape[-1]] = r
    return out
