"""The speaker prompt for zero-shot voice cloning: any user audio -> a clean mono clip at the codec's rate.

    clip = prepare_prompt(wav, sample_rate, target_rate=22050, min_seconds=1.0, max_seconds=5.0)
    clip.wav       float32 [T] at target_rate: mono, leading/trailing silence trimmed, at most max_seconds long

Input may be what a file reader, a microphone widget or a user hands over: float or integer PCM (int16 / int32
are scaled to [-1, 1]), mono [T] or multi-channel [T, C] / [C, T] (mixed to mono). Silence is trimmed with a
20 ms RMS gate relative to the loudest frame (keeping `pad_s` of it at each end); the first `max_seconds` of
what is left are kept (Koel-TTS conditions on ~5 s of "context audio"). Every problem a user can cause (no
audio, silent, too short after trimming, non-finite samples) raises `PromptError` saying what to do.

`data.audio.trim_silence` does the same trimming for corpora; `tts_lm` may not import `data` (DESIGN.md), so
the few lines live here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.audio import SILENCE_PEAK, resample

FRAME_S = 0.02  # RMS gate frame


class PromptError(ValueError):
    """A voice prompt that cannot be used (empty, silent, too short, not audio); the message says what to do."""


@dataclass
class PromptClip:
    """A prepared prompt: wav float32 [T] at `sample_rate`; `input_seconds` is the length before trim and cap."""

    wav: np.ndarray
    sample_rate: int
    input_seconds: float

    @property
    def seconds(self) -> float:
        return self.wav.size / self.sample_rate


def as_float_mono(wav: np.ndarray) -> np.ndarray:
    """float or int PCM, [T], [T, C] or [C, T] -> float32 [T] in [-1, 1] (channels averaged)."""
    wav = np.asarray(wav)
    if wav.dtype.kind not in "fiu" or wav.dtype == np.bool_:
        raise PromptError(f"voice prompt: expected audio samples, got an array of {wav.dtype}")
    if wav.dtype.kind in "iu":
        info = np.iinfo(wav.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 2**(n-1) for unsigned
        wav = (wav.astype(np.float64) - mid) / (info.max - mid)
    wav = wav.astype(np.float32, copy=False)
    if wav.ndim == 2:
        channel_axis = 1 if wav.shape[1] <= wav.shape[0] else 0  # channels are the short side
        wav = wav.mean(axis=channel_axis)
    if wav.ndim != 1:
        raise PromptError(f"voice prompt: expected mono [T] or multi-channel [T, C] audio, got shape {wav.shape}")
    return wav


def trim_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -40.0, pad_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing frames quieter than `threshold_db` below the loudest 20 ms frame, keep `pad_s`."""
    hop = max(1, round(FRAME_S * sample_rate))
    frames = wav.size // hop
    if frames == 0:
        return wav
    rms = np.sqrt(np.mean(wav[: frames * hop].reshape(frames, hop) ** 2, axis=1))  # (frames,)
    if rms.max() <= 0:
        return wav
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (threshold_db / 20))
    pad = round(pad_s * sample_rate)
    start = max(0, loud[0] * hop - pad)
    end = min(wav.size, (loud[-1] + 1) * hop + pad)
    return wav[start:end]


def prepare_prompt(
    wav: np.ndarray,
    sample_rate: int,
    target_rate: int,
    min_seconds: float,
    max_seconds: float,
    threshold_db: float = -40.0,
    pad_s: float = 0.1,
) -> PromptClip:
    """User audio -> PromptClip at `target_rate` (see the module docstring). Raises PromptError."""
    if wav is None:
        raise PromptError("no voice prompt: upload or record 3-10 seconds of the voice to clone")
    if not isinstance(sample_rate, int | np.integer) or sample_rate < 1000:
        raise PromptError(f"voice prompt: implausible sample rate {sample_rate!r} Hz")
    wav = as_float_mono(wav)
    input_seconds = wav.size / sample_rate
    if wav.size == 0:
        raise PromptError("the voice prompt is empty (0 samples): upload or record 3-10 seconds of speech")
    if not np.isfinite(wav).all():
        raise PromptError("the voice prompt contains NaN or infinite samples; it is not valid audio")
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        raise PromptError("the voice prompt is silent: check the microphone or the file, and give 3-10 s of speech")
    wav = resample(wav, int(sample_rate), target_rate)
    wav = trim_silence(wav, target_rate, threshold_db, pad_s)
    wav = wav[: round(max_seconds * target_rate)]
    if wav.size < min_seconds * target_rate:
        raise PromptError(
            f"the voice prompt is too short: {wav.size / target_rate:.2f} s of sound after trimming silence "
            f"(from {input_seconds:.2f} s); give at least {min_seconds:g} s, ideally 3-10 s of speech"
        )
    return PromptClip(np.ascontiguousarray(wav, dtype=np.float32), target_rate, input_seconds)
