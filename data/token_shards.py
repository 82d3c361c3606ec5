"""Stage 2, one shard at a time: manifest utterances -> codec codes, written as one Arrow shard.

    shards = plan_shards(utts, shard_size=1000, salt=codec_hash + vocab_hash)   # deterministic in the manifest
    result = encode_shard(shards[0], codec, vocab, settings, out / "shards")      # -> shards/000000-<key>/

A shard is a fixed run of consecutive manifest lines. Its name carries a hash of everything its rows depend
on (the manifest lines, the codec, the phoneme vocabulary, the length limits), so a rerun skips a shard whose
folder exists and re-encodes one whose inputs changed. A shard folder is a `datasets` dataset
(`save_to_disk`) plus `skipped.json`, written to a temporary name and renamed, so it exists whole or not at
all. Rows keep manifest order, whatever the batching.

Batching. The encoder is non-causal and its convolutions pad at the end of the signal (replicate padding),
so zero-padding an utterance to a longer batch changes its last frames: measured on a clip that ends
mid-speech, two frames of padding changed the codes of its last 3-4 frames (23 of 23 cuts). Utterances are
therefore bucketed by their exact frame count F: every waveform of a batch is zero-padded to the same
F * samples_per_frame that `codec.encode` pads it to when encoding it alone, so batched codes equal codes
encoded one at a time (tests/test_tokenize.py checks this on clips cut mid-speech; batched float sums may
differ in the last bit, which could flip a code sitting exactly on an FSQ rounding boundary). Sorting by
length and packing up to `batch_seconds` of audio per batch wastes nothing on padding.

Bad utterances never stop a run: each is skipped with one of `SKIP_REASONS`, one log line naming the
file, and a record in the shard's `skipped.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import soundfile as sf
import torch

from codec.audio import SILENCE_PEAK, AudioError, load_audio
from common.fileio import atomic_path
from data.manifest import Utterance
from text.normalize import TextError
from text.vocab import PhonemeVocab

log = logging.getLogger("data.tokenize_corpus")

FORMAT_VERSION = 1
SKIP_REASONS = ("missing", "unreadable", "silent", "too_short", "too_long", "no_phonemes", "unknown_phoneme")
SKIPPED_NAME = "skipped.json"


class TokenizeError(RuntimeError):
    """A problem the user can fix (wrong codec for OUT, missing codec, nothing usable); the message says how."""


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "text": datasets.Value("string"),
        "phoneme_ids": datasets.List(datasets.Value("int32")),  # PhonemeVocab ids, no BOS/EOS
        "codes": datasets.List(datasets.List(datasets.Value("int16"))),  # [K, F]
        "num_frames": datasets.Value("int32"),  # F = ceil(samples / samples_per_frame)
        "duration": datasets.Value("float32"),  # seconds of audio at the codec's sample rate
        "split": datasets.Value("string"),
    }
)


@dataclass(frozen=True)
class EncodeSettings:
    """What decides whether an utterance is kept (part of every shard's key) and how it is batched (not)."""

    min_seconds: float = 0.5
    max_seconds: float = 40.0
    batch_seconds: float = 100.0  # padded audio per encoder call; only speed and memory depend on it

    def key(self) -> str:
        return f"min={self.min_seconds!r},max={self.max_seconds!r}"


@dataclass(frozen=True)
class Shard:
    """A fixed run of manifest lines; `key` hashes everything its rows depend on."""

    index: int
    key: str
    utterances: tuple[Utterance, ...]

    @property
    def name(self) -> str:
        return f"{self.index:06d}-{self.key[:16]}"

    @property
    def seconds(self) -> float:
        return sum(u.duration for u in self.utterances)


@dataclass
class Skipped:
    id: str
    audio: str
    reason: str  # one of SKIP_REASONS
    detail: str


@dataclass
class ShardResult:
    name: str
    encoded: int
    skipped: list[Skipped] = field(default_factory=list)


def plan_shards(utts: list[Utterance], shard_size: int, salt: str) -> list[Shard]:
    """Cut the manifest into shards of `shard_size` consecutive utterances; a pure function of its inputs."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    shards = []
    for index, start in enumerate(range(0, len(utts), shard_size)):
        part = tuple(utts[start : start + shard_size])
        h = hashlib.sha256(f"v{FORMAT_VERSION}|{salt}|{shard_size}|{start}\n".encode())
        for u in part:
            h.update(json.dumps(u.to_dict(), sort_keys=True, ensure_ascii=False).encode() + b"\n")
        shards.append(Shard(index, h.hexdigest(), part))
    return shards


def shard_done(shards_dir: Path, shard: Shard) -> bool:
    return (shards_dir / shard.name / SKIPPED_NAME).is_file()


# ---- checks before decoding audio ----------------------------------------------------------------------------


@dataclass
class _Item:
    """One utterance that passed the cheap checks; `frames` is estimated from the file header."""

    pos: int  # position in the shard (manifest order)
    utt: Utterance
    phoneme_ids: list[int]
    frames: int


_NOT_SPEECH = " \t.,!?;:-–—…'\"()«»¡¿ˈˌːˑ|‖"  # punctuation, space, stress and length marks


def _phoneme_ids(utt: Utterance, vocab: PhonemeVocab) -> tuple[list[int] | None, Skipped | None]:
    try:
        ids = vocab.encode(utt.phonemes)
    except TextError as e:
        return None, Skipped(utt.id, utt.audio, "unknown_phoneme", str(e))
    if not any(vocab.decode([i]).strip(_NOT_SPEECH) for i in ids):
        return None, Skipped(utt.id, utt.audio, "no_phonemes", f"phonemes {utt.phonemes!r} hold no speech sound")
    return ids, None


def _check_header(utt: Utterance, settings: EncodeSettings, sample_rate: int, spf: int) -> tuple[int, Skipped | None]:
    """Frame count estimated from the file header, or why the file is unusable (without decoding it)."""
    path = Path(utt.audio)
    if not path.is_file():
        return 0, Skipped(utt.id, utt.audio, "missing", "no such file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for corrupt files
        return 0, Skipped(utt.id, utt.audio, "unreadable", str(e).splitlines()[0] if str(e) else type(e).__name__)
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds < settings.min_seconds:
        return 0, Skipped(utt.id, utt.audio, "too_short", f"{seconds:.2f} s < {settings.min_seconds} s")
    if seconds > settings.max_seconds:
        return 0, Skipped(utt.id, utt.audio, "too_long", f"{seconds:.2f} s > {settings.max_seconds} s")
    samples = round(info.frames * sample_rate / info.samplerate)
    return math.ceil(samples / spf), None


def _batches(items: list[_Item], spf: int, sample_rate: int, batch_seconds: float) -> list[list[_Item]]:
    """Bucket by frame count (shortest first) and pack each bucket into batches of <= batch_seconds."""
    batches: list[list[_Item]] = []
    for item in sorted(items, key=lambda it: (it.frames, it.pos)):
        seconds = item.frames * spf / sample_rate
        last = batches[-1] if batches else None
        if last and last[0].frames == item.frames and (len(last) + 1) * seconds <= batch_seconds:
            last.append(item)
        else:
            batches.append([item])
    return batches


# ---- encoding ------------------------------------------------------------------------------------------------


def _load(item: _Item, sample_rate: int, settings: EncodeSettings) -> np.ndarray | Skipped:
    utt = item.utt
    try:
        wav, _ = load_audio(utt.audio, sample_rate=sample_rate, max_seconds=settings.max_seconds, allow_silent=True)
    except AudioError as e:
        return Skipped(utt.id, utt.audio, "unreadable", str(e))
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        return Skipped(utt.id, utt.audio, "silent", f"peak below {SILENCE_PEAK:g}")
    return wav


@torch.inference_mode()
def encode_same_length(codec: torch.nn.Module, wavs: list[np.ndarray], frames: int) -> list[np.ndarray]:
    """Encode waveforms that all have `frames` frames in one call -> int16 codes [K, frames] each.

    Each waveform is zero-padded to frames * samples_per_frame, exactly what `codec.encode` does to one
    utterance alone, so the codes equal encoding each utterance by itself.
    """
    spf = codec.samples_per_frame
    device = next(codec.parameters()).device
    batch = torch.zeros(len(wavs), frames * spf)  # [B, T]
    for i, wav in enumerate(wavs):
        if math.ceil(len(wav) / spf) != frames:
            raise ValueError(f"a waveform of {len(wav)} samples is not {frames} frames of {spf} samples")
        batch[i, : len(wav)] = torch.from_numpy(wav)
    codes = codec.encode(batch.to(device))  # [B, K, F]
    if codes.shape[-1] != frames:
        raise RuntimeError(f"codec returned {codes.shape[-1]} frames for {frames} frames of audio")
    return [c.to(torch.int16).cpu().numpy() for c in codes]


def _load_batches(
    batches: list[list[_Item]], sample_rate: int, settings: EncodeSettings
) -> Iterator[list[np.ndarray | Skipped]]:
    """Decode the audio of each batch, reading the next batch in a background thread while one is encoded."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = lambda batch: [_load(it, sample_rate, settings) for it in batch]
        future = pool.submit(load, batches[0]) if batches else None
        for i in range(len(batches)):
            wavs = future.result()
            future = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            yield wavs


def encode_shard(
    shard: Shard,
    codec: torch.nn.Module,
    vocab: PhonemeVocab,
    settings: EncodeSettings,
    shards_dir: Path,
    progress: Callable[[float], None] | None = None,
) -> ShardResult:
    """Encode every usable utterance of `shard` and write shards_dir/<shard.name> atomically.

    `progress(seconds)` is called with manifest seconds as utterances are done (encoded or skipped).
    """
    sample_rate, spf = codec.sample_rate, codec.samples_per_frame
    skipped: list[Skipped] = []
    items: list[_Item] = []
    for pos, utt in enumerate(shard.utterances):
        ids, skip = _phoneme_ids(utt, vocab)
        frames = 0
        if skip is None:
            frames, skip = _check_header(utt, settings, sample_rate, spf)
        if skip is not None:
            skipped.append(skip)
            if progress:
                progress(utt.duration)
            continue
        items.append(_Item(pos, utt, ids, frames))

    rows: dict[int, dict] = {}
    batches = _batches(items, spf, sample_rate, settings.batch_seconds)
    for batch, loaded in zip(batches, _load_batches(batches, sample_rate, settings), strict=True):
        by_frames: dict[int, list[tuple[_Item, np.ndarray]]] = {}
        for item, wav in zip(batch, loaded, strict=True):
            if isinstance(wav, Skipped):
                skipped.append(wav)
            else:  # the header estimate can be off by a frame after resampling: regroup by the real count
                by_frames.setdefault(math.ceil(len(wav) / spf), []).append((item, wav))
        for frames, group in sorted(by_frames.items()):
            codes = encode_same_length(codec, [wav for _, wav in group], frames)
            for (item, wav), c in zip(group, codes, strict=True):
                rows[item.pos] = _row(item, c, len(wav) / sample_rate)
        if progress:
            progress(sum(it.utt.duration for it in batch))

    for s in skipped:
        log.warning("skip %s (%s): %s: %s", s.id, s.audio, s.reason, s.detail)
    ordered = [rows[pos] for pos in sorted(rows)]
    table = {name: [r[name] for r in ordered] for name in FEATURES}
    dataset = datasets.Dataset.from_dict(table, features=FEATURES)
    with atomic_path(shards_dir / shard.name) as tmp:
        dataset.save_to_disk(str(tmp))
        order = {u.id: pos for pos, u in enumerate(shard.utterances)}
        skipped.sort(key=lambda s: order[s.id])
        (tmp / SKIPPED_NAME).write_text(json.dumps([asdict(s) for s in skipped], indent=1) + "\n", encoding="utf-8")
    return ShardResult(shard.name, len(ordered), skipped)


def _row(item: _Item, codes: np.ndarray, duration: float) -> dict:
    u = item.utt
    return {
        "id": u.id,
        "speaker": u.speaker,
        "text": u.text,
        "phoneme_ids": item.phoneme_ids,
        "codes": codes.tolist(),  # [K, F] int16
        "num_frames": int(codes.shape[-1]),
        "duration": float(duration),
        "split": u.split,
    }
