"""Audio utilities for corpora, on top of `codec.audio` (loading, checks, soxr resampling).

    wav, sr = load_audio("x.flac", sample_rate=22050)       # float32 mono [T]; AudioError naming the file
    wav = trim_silence(wav, sr)                              # [T'] leading/trailing silence cut to `pad_s`
    wav = normalize_loudness(wav, sr, target_db=-20.0)       # [T'] speech level -20 dBFS, peak <= -1 dBFS
    crop = random_crop(wav, 24255, rng)                      # [24255] (zero-padded when shorter)
    save_audio("out/x.flac", wav, sr)                        # 16-bit FLAC/WAV, written atomically

Loudness here is the RMS level of the *active* 20 ms frames (frames within 40 dB of the loudest one), in
dBFS: a speech-level measure in the spirit of ITU-T P.56, without K-weighting. It evens out the very
different output levels of the synthesizers (and of real recordings) so that a codec sees speech at one
level; the peak limit keeps it from clipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.audio import AudioError, AudioInfo, audio_info, check_array, load_audio, resample
from common.fileio import atomic_path

__all__ = [
    "AudioError",
    "AudioInfo",
    "audio_comment",
    "audio_info",
    "check_array",
    "db_to_gain",
    "load_audio",
    "loudness_db",
    "normalize_loudness",
    "peak_db",
    "peak_normalize",
    "random_crop",
    "resample",
    "save_audio",
    "trim_silence",
]

FRAME_S = 0.02  # analysis frame for loudness and silence trimming
ACTIVE_RANGE_DB = 40.0  # frames this far below the loudest frame count as pauses


def db_to_gain(db: float) -> float:
    """Decibels -> linear amplitude factor."""
    return float(10.0 ** (db / 20.0))


def peak_db(wav: np.ndarray) -> float:
    """Peak level of [T] in dBFS (-inf for all-zero audio)."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else float("-inf")


def peak_normalize(wav: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    """Scale [T] so its peak sits at `peak_db` dBFS. Raises AudioError for silent audio."""
    wav = check_array(wav, name="peak_normalize input")
    return (wav * (db_to_gain(peak_db) / float(np.abs(wav).max()))).astype(np.float32)


def _frame_rms(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of consecutive non-overlapping 20 ms frames: [T] -> [N] (the tail frame is zero-padded)."""
    hop = max(1, int(round(FRAME_S * sample_rate)))
    n = -(-wav.size // hop)
    frames = np.zeros(n * hop, dtype=np.float64)
    frames[: wav.size] = wav
    frames = frames.reshape(n, hop)  # (N, hop)
    return np.sqrt((frames**2).mean(axis=1))


def loudness_db(wav: np.ndarray, sample_rate: int) -> float:
    """Speech level of [T] in dBFS: RMS over frames within 40 dB of the loudest frame (-inf if silent)."""
    rms = _frame_rms(np.asarray(wav, dtype=np.float32), sample_rate)
    if rms.size == 0 or rms.max() <= 0:
        return float("-inf")
    active = rms[rms >= rms.max() * db_to_gain(-ACTIVE_RANGE_DB)]
    return float(20.0 * np.log10(np.sqrt((active**2).mean())))


def normalize_loudness(
    wav: np.ndarray, sample_rate: int, target_db: float = -20.0, max_peak_db: float = -1.0
) -> np.ndarray:
    """Scale [T] to a speech level of `target_db` dBFS, then lower it if needed so the peak stays <= `max_peak_db`.

    Raises:
        AudioError: silent, empty or non-finite input.
    """
    wav = check_array(wav, name="normalize_loudness input")
    gain = db_to_gain(target_db - loudness_db(wav, sample_rate))
    peak = float(np.abs(wav).max()) * gain
    gain *= min(1.0, db_to_gain(max_peak_db) / peak)
    return (wav * gain).astype(np.float32)


def trim_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -40.0, pad_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing silence of [T], keeping `pad_s` seconds of it on each side.

    A 20 ms frame is silent when its RMS is more than `-threshold_db` dB below the loudest frame. All-silent
    input is returned unchanged (callers decide whether silence is an error).
    """
    wav = np.asarray(wav, dtype=np.float32)
    rms = _frame_rms(wav, sample_rate)
    if rms.size == 0 or rms.max() <= 0:
        return wav
    loud = np.flatnonzero(rms >= rms.max() * db_to_gain(threshold_db))
    hop = max(1, int(round(FRAME_S * sample_rate)))
    pad = int(round(pad_s * sample_rate))
    start = max(0, loud[0] * hop - pad)
    end = min(wav.size, (loud[-1] + 1) * hop + pad)
    return wav[start:end]


def random_crop(wav: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `num_samples` from [T]; shorter input is zero-padded at the end. -> [num_samples]"""
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size <= num_samples:
        return np.pad(wav, (0, num_samples - wav.size))
    start = int(rng.integers(0, wav.size - num_samples + 1))
    return wav[start : start + num_samples]


def save_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int, comment: str | None = None) -> Path:
    """Write mono [T] as 16-bit PCM (format from the suffix: .flac or .wav), atomically; return the path.

    Samples are clipped to [-1, 1]; `comment` goes into the file's metadata (read it back with
    `audio_comment`). Raises AudioError for empty or non-finite audio (silence is allowed).
    """
    path = Path(path)
    if path.suffix.lower() not in (".flac", ".wav"):
        raise AudioError(f"{path}: save_audio writes .flac or .wav, not {path.suffix!r}")
    wav = check_array(wav, name=str(path), allow_silent=True)
    if wav.ndim != 1:
        raise AudioError(f"{path}: expected mono audio [T], got shape {wav.shape}")
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", sample_rate, 1, "PCM_16", format=path.suffix[1:].upper()) as f:
            if comment is not None:
                f.comment = comment
            f.write(np.clip(wav, -1.0, 1.0))
    return path


def audio_comment(path: str | os.PathLike) -> str | None:
    """The metadata comment `save_audio` wrote, or None when the file is missing, unreadable or empty."""
    try:
        with sf.SoundFile(str(path)) as f:
            return f.comment if f.frames > 0 else None
    except Exception:
        return None
