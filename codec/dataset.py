"""Training data for the codec: random fixed-length waveform crops from a manifest, a pure function of (seed, step).

    items = read_audio_manifest("runs/data/cpu/manifest.jsonl")              # list[AudioItem]
    crops = CropDataset(train_items, sample_rate=22050, segment_samples=24696, batch_size=8, seed=0)
    batch = crops[step]                                                       # float [batch_size, segment_samples]

The manifest is JSONL, one utterance per line (CONTRACTS.md); the codec reads only `audio` (a path relative to
the manifest's folder, or absolute), `duration` (seconds) and `split`, since `codec` imports nothing of `data`.

Batch `step` is drawn by a generator seeded with (seed, step): which utterances (weighted by duration, so every
second of audio is equally likely) and where each crop starts. So the data order does not depend on how many
steps ran before, and a resumed run sees exactly the batches an uninterrupted one would. Under DDP every
process draws the same global batch of `batch_size * world_size` crops and takes its own slice. Utterances
shorter than a crop are zero-padded at the end. Small corpora are cached in memory (decoded once, at the model's
sample rate); large ones are read from disk per crop (use DataLoader workers then).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from codec.audio import AudioError, load_audio


@dataclass
class DataConfig:
    """Where the audio is and how to crop it."""

    manifest: str = "runs/data/cpu/manifest.jsonl"
    train_split: str = "train"
    val_split: str = "validation"  # held-out, unseen speakers; falls back to "test" when the manifest has none
    min_duration: float = 0.4  # seconds; shorter training utterances are skipped
    cache_max_hours: float = 5.0  # decode the whole training set into memory when it is at most this long
    num_workers: int = 0  # DataLoader worker processes (for corpora too big to cache)
    val_utterances: int = 8  # utterances scored at each validation
    val_max_seconds: float = 6.0  # each cut to its first N seconds


@dataclass
class AudioItem:
    """One manifest line, as far as the codec cares."""

    audio: Path
    duration: float
    split: str


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and line."""


def read_audio_manifest(path: str | os.PathLike) -> list[AudioItem]:
    """JSONL manifest -> items with absolute audio paths. Raises ManifestError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; build the corpus first (make data)")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = Path(row["audio"])
            items.append(
                AudioItem(audio if audio.is_absolute() else path.parent / audio, float(row["duration"]), row["split"])
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ManifestError(
                f"{path}:{lineno}: bad manifest line ({type(e).__name__}: {e}); "
                "each line must be a JSON object with audio, duration and split"
            ) from e
    if not items:
        raise ManifestError(f"{path}: empty manifest")
    return items


def split_items(items: list[AudioItem], split: str, min_duration: float = 0.0) -> list[AudioItem]:
    return [it for it in items if it.split == split and it.duration >= min_duration]


class CropDataset(Dataset):
    """Index = training step -> this process's batch of crops, float [batch_size, segment_samples]."""

    def __init__(
        self,
        items: list[AudioItem],
        sample_rate: int,
        segment_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        cache: bool = True,
        max_steps: int = 10**9,
    ):
        if not items:
            raise ValueError("CropDataset: no training utterances (check data.train_split and data.min_duration)")
        self.items, self.sample_rate, self.segment = items, sample_rate, segment_samples
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.max_steps = max_steps
        durations = np.array([it.duration for it in items], dtype=np.float64)
        self.probs = durations / durations.sum()
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.max_steps

    def load(self, index: int) -> np.ndarray:
        """Utterance `index` as float32 [T] at the model's sample rate (from the cache when enabled)."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        wav, _ = load_audio(self.items[index].audio, sample_rate=self.sample_rate, allow_silent=True)
        if self.cache is not None:
            self.cache[index] = wav
        return wav

    def preload(self, progress: bool = True) -> None:
        """Decode every utterance into the cache now (one pass, with a progress bar)."""
        from tqdm import tqdm

        for i in tqdm(range(len(self.items)), desc="loading audio", disable=not progress, leave=False):
            self.load(i)

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The global batch of step `step`: (utterance indices, crop start fractions in [0, 1)), each [world * B]."""
        rng = np.random.default_rng([self.seed, step])
        n = self.batch_size * self.world_size
        return rng.choice(len(self.items), size=n, p=self.probs), rng.random(n)

    def __getitem__(self, step: int) -> torch.Tensor:
        indices, starts = self.draw(step)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        batch = np.zeros((self.batch_size, self.segment), dtype=np.float32)
        for row, (index, frac) in enumerate(zip(indices[mine], starts[mine], strict=True)):
            try:
                wav = self.load(int(index))
            except AudioError as e:
                raise AudioError(f"training data: {e}") from e
            start = int(frac * max(0, len(wav) - self.segment + 1))
            crop = wav[start : start + self.segment]
            batch[row, : len(crop)] = crop
        return torch.from_numpy(batch)


def validation_set(items: list[AudioItem], sample_rate: int, count: int, max_seconds: float) -> list[np.ndarray]:
    """`count` utterances spread evenly over `items` (a held-out split), each cut to `max_seconds`, float32 [T]."""
    if not items or count <= 0:
        return []
    picks = np.unique(np.linspace(0, len(items) - 1, num=min(count, len(items))).round().astype(int))
    max_samples = int(max_seconds * sample_rate)
    return [load_audio(items[i].audio, sample_rate=sample_rate)[0][:max_samples] for i in picks]
