"""Audio reading and checking: any file -> float32 mono numpy at a requested sample rate.

    wav = load_audio("x.flac", sample_rate=22050)     # np.float32 [T], mono, resampled with soxr

soundfile reads wav/flac/ogg/mp3 (libsndfile >= 1.1); soxr resamples (high quality). Every problem a
user can cause (missing or unreadable file, empty, silent, NaN/inf, absurdly long) raises `AudioError`
naming the file and saying why. The codec's own input checks (`check_waveform`) live here too, since
the codec imports nothing outside itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file or value and says why."""


MAX_SECONDS = 3600.0  # longer inputs are refused as "absurdly long" (split them first)
SILENCE_PEAK = 1e-4  # a peak below this is treated as silence


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 array [T] (or [T, C]) with soxr; a no-op when the rates match."""
    if orig_sr == target_sr:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples read)."""

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of `path`. Raises AudioError for a missing, unreadable or empty file."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e}); use wav, flac, ogg or mp3") from e
    if info.frames <= 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    return AudioInfo(path=path, sample_rate=int(info.samplerate), frames=int(info.frames), channels=int(info.channels))


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    max_seconds: float = MAX_SECONDS,
    allow_silent: bool = False,
) -> tuple[np.ndarray, int]:
    """Read `path`, mix to mono, resample to `sample_rate` (if given); return (float32 [T], sample_rate).

    Raises:
        AudioError: missing/unreadable file, empty, silent (unless allow_silent), NaN/inf, too long.
    """
    info = audio_info(path)
    path = info.path
    if info.duration > max_seconds:
        raise AudioError(f"{path}: {info.duration:.0f} s is too long (limit {max_seconds:.0f} s); split it first")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from e
    wav = wav.mean(axis=1)  # [T] mono
    wav = check_array(wav, name=str(path), allow_silent=allow_silent)
    if sample_rate is not None and sr != sample_rate:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def check_array(wav: np.ndarray, name: str = "audio", allow_silent: bool = False) -> np.ndarray:
    """Refuse empty, non-finite or silent mono audio; return it as float32."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: contains NaN or inf samples")
    if not allow_silent and float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak below {SILENCE_PEAK:g})")
    return wav


def check_waveform(wav: torch.Tensor, sample_rate: int | None = None, expected_rate: int | None = None) -> torch.Tensor:
    """Validate a codec input waveform and return it as float [B, T].

    Accepts [T] (one utterance) or [B, T]; a [B, 1, T] mono tensor is squeezed. Stereo [B, 2, T], empty
    or non-finite input, or a sample rate other than the codec's raise `AudioError` with the fix.
    """
    if not isinstance(wav, torch.Tensor):
        wav = torch.as_tensor(np.asarray(wav))
    if sample_rate is not None and expected_rate is not None and sample_rate != expected_rate:
        raise AudioError(
            f"sample rate {sample_rate} Hz does not match the codec's {expected_rate} Hz; "
            "resample first (codec.audio.resample or load_audio(path, sample_rate=codec.sample_rate))"
        )
    if wav.dim() == 3:
        if wav.shape[1] != 1:
            raise AudioError(f"expected mono audio [B, T] or [B, 1, T], got {wav.shape[1]} channels; mix to mono first")
        wav = wav[:, 0]
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise AudioError(f"expected a waveform [B, T], got shape {tuple(wav.shape)}")
    if wav.shape[-1] == 0:
        raise AudioError("empty audio (0 samples)")
    if not torch.isfinite(wav).all():
        raise AudioError("audio contains NaN or inf samples")
    return wav.float()
