"""Spectral front ends in plain torch: STFT, mel filterbank, mel spectrogram, and a differentiable resampler.

    mel = MelSpectrogram(MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=80))(wav)
    # wav float [B, T] -> mel [B, n_mels, frames], frames = T // hop_length + 1 (centered frames)
    wav16 = Resampler(22050, 16000)(wav)   # float [B, T] -> [B, ceil(T * 16000 / 22050)], differentiable

The ONE mel implementation of the project: the codec's reconstruction losses, the speaker encoder's front
end, the discriminators' STFTs and the validation metrics all use it, so no torchaudio or librosa is
needed at training time. `mel_filterbank` reproduces `librosa.filters.mel` (Slaney mel scale, optional
Slaney area normalisation) exactly; `tests/test_codec_train.py` checks it against librosa.
`Resampler` is band-limited (Hann-windowed sinc) polyphase interpolation, the same algorithm as
torchaudio's `sinc_interp_hann` resampling (Smith, "Digital Audio Resampling"), written as one strided
conv1d so gradients flow through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---- the Slaney mel scale (librosa's default, htk=False) -----------------------------------------------------
_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # = 15
_LOG_STEP = math.log(6.4) / 27.0  # log-spaced part above 1 kHz


def hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Hz -> Slaney mels (linear below 1 kHz, logarithmic above)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    mels = freqs / _F_SP
    log_part = freqs >= _MIN_LOG_HZ
    mels[log_part] = _MIN_LOG_MEL + np.log(freqs[log_part] / _MIN_LOG_HZ) / _LOG_STEP
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Slaney mels -> Hz (inverse of `hz_to_mel`)."""
    mels = np.asarray(mels, dtype=np.float64)
    freqs = mels * _F_SP
    log_part = mels >= _MIN_LOG_MEL
    freqs[log_part] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels[log_part] - _MIN_LOG_MEL))
    return freqs


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None, norm: str | None = "slaney"
) -> torch.Tensor:
    """Triangular mel filters -> float [n_mels, n_fft // 2 + 1]; equal to librosa.filters.mel(..., htk=False).

    Args:
        norm: "slaney" divides each triangle by its width in Hz (constant energy per band); None keeps peaks at 1.
    """
    if norm not in ("slaney", None):
        raise ValueError(f"mel_filterbank: norm must be 'slaney' or None, got {norm!r}")
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [n_fft // 2 + 1]
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(mel_freqs)  # [n_mels + 1]
    ramps = mel_freqs[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_freqs]
    lower = -ramps[:-2] / widths[:-1, None]  # rising edge of each triangle
    upper = ramps[2:] / widths[1:, None]  # falling edge
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, n_freqs]
    if norm == "slaney":
        weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def stft(
    wav: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    pad_mode: str = "reflect",
    normalized: bool = False,
) -> torch.Tensor:
    """Complex STFT: float [B, T] -> complex [B, n_fft // 2 + 1, frames] (Hann window unless given)."""
    win_length = n_fft if win_length is None else win_length
    if window is None:
        window = torch.hann_window(win_length, device=wav.device, dtype=wav.dtype)
    if center and pad_mode == "reflect" and wav.shape[-1] <= n_fft // 2:
        pad_mode = "constant"  # reflect padding needs more samples than the pad; short inputs pad with zeros
    return torch.stft(
        wav,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        normalized=normalized,
        return_complex=True,
    )


@dataclass
class MelConfig:
    """One mel spectrogram resolution.

    `power` 1 gives a magnitude mel, 2 a power mel. `norm` "slaney" is librosa's default area normalisation,
    None keeps the triangles' peaks at 1 (NeMo's losses). `log` picks the compression: "none",
    "log" = ln(mel + log_guard) (NeMo's codec losses, guard 1.0), "log10_clamp" = log10(max(mel, log_guard))
    (HiFi-GAN / DAC style, guard 1e-5).
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int | None = None  # None = n_fft
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None  # None = sample_rate / 2
    power: float = 1.0
    norm: str | None = None
    center: bool = True
    pad_mode: str = "reflect"
    log: str = "none"  # "none" | "log" | "log10_clamp"
    log_guard: float = 1.0


class MelSpectrogram(nn.Module):
    """float [B, T] -> mel [B, n_mels, frames] (centered frames: frames = T // hop_length + 1)."""

    def __init__(self, config: MelConfig):
        super().__init__()
        if config.log not in ("none", "log", "log10_clamp"):
            raise ValueError(f"MelConfig.log must be 'none', 'log' or 'log10_clamp', got {config.log!r}")
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length or config.n_fft), persistent=False)
        fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax, config.norm)
        self.register_buffer("filterbank", fb, persistent=False)  # [n_mels, n_freqs]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = stft(wav.float(), c.n_fft, c.hop_length, c.win_length, self.window, c.center, c.pad_mode)
        power = spec.real.square() + spec.imag.square()  # [B, n_freqs, frames]
        # |z| = sqrt(power) has an infinite gradient at 0; a tiny guard keeps losses finite on digital silence
        mag = torch.sqrt(power + 1e-12) if c.power == 1.0 else power.pow(c.power / 2)
        return self.from_spectrum(mag)

    def from_spectrum(self, mag: torch.Tensor) -> torch.Tensor:
        """|STFT|^power [B, n_freqs, frames] (this config's STFT) -> mel [B, n_mels, frames], compressed as `log`."""
        c = self.config
        mel = torch.matmul(self.filterbank, mag)  # [B, n_mels, frames]
        if c.log == "log":
            return torch.log(mel + c.log_guard)
        if c.log == "log10_clamp":
            return torch.log10(torch.clamp(mel, min=c.log_guard))
        return mel


class Resampler(nn.Module):
    """Band-limited resampling, differentiable: float [B, T] at `orig_rate` -> [B, ceil(T * new / orig)] at `new_rate`.

    The rational ratio new/orig (after dividing by the gcd) is realised as a polyphase filter bank: for each of
    the `new` output phases a Hann-windowed sinc kernel, applied with one conv1d of stride `orig`.

        input  |--width--|  x[0] ....... x[T-1]  |--width + orig--|   (zero padded)
        output phase p of block n  =  sum_k x[n * orig + k - width] * kernel[p, k]
    """

    def __init__(self, orig_rate: int, new_rate: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
        super().__init__()
        gcd = math.gcd(int(orig_rate), int(new_rate))
        self.orig, self.new = int(orig_rate) // gcd, int(new_rate) // gcd
        base_freq = min(self.orig, self.new) * rolloff  # cutoff just below the lower Nyquist
        self.width = math.ceil(lowpass_filter_width * self.orig / base_freq)
        idx = torch.arange(-self.width, self.width + self.orig, dtype=torch.float64)[None, None] / self.orig
        t = torch.arange(0, -self.new, -1, dtype=torch.float64)[:, None, None] / self.new + idx  # [new, 1, K]
        t = (t * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
        kernel = sinc * window * (base_freq / self.orig)  # [new, 1, 2 * width + orig]
        self.register_buffer("kernel", kernel.float(), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.orig == self.new:
            return wav
        batch, length = wav.shape
        x = F.pad(wav[:, None, :], (self.width, self.width + self.orig))  # [B, 1, T + pads]
        y = F.conv1d(x, self.kernel.to(wav.dtype), stride=self.orig)  # [B, new, blocks]
        y = y.transpose(1, 2).reshape(batch, -1)  # [B, blocks * new] (phases interleaved in time order)
        return y[:, : math.ceil(self.new * length / self.orig)]
