"""Codec quality metrics: plain functions on a reference and a degraded (reconstructed) waveform.

    pesq_wb(ref, deg, sr)               -> float, MOS-LQO 1.04 .. 4.64 (ITU-T P.862.2 wideband, at 16 kHz)
    stoi(ref, deg, sr, extended=False)  -> float, ~0 .. 1 (STOI, or ESTOI with extended=True; pystoi)
    si_sdr(ref, deg)                    -> float, dB (scale-invariant SDR, Le Roux et al. 2019)
    mel_distance(ref, deg, sr)          -> float, >= 0 (multi-resolution log10-mel L1, 7 resolutions as in DAC)
    code_usage(codes, codebook_size)    -> CodeUsage: per-codebook fraction of codes used and perplexity
    bitrate(num_codebooks, codebook_size, frame_rate) -> bits per second

`ref` and `deg` are mono float arrays [T] (numpy or torch) at the same rate; when their lengths differ
(a codec pads to whole frames) both are cut to the shorter one. Inputs a user can get wrong (NaN, too short,
different rates) raise `MetricError` naming the metric and what to do. A degraded signal that PESQ/STOI
cannot score (no speech found in it) gives NaN, so averages over a test set use `np.nanmean`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from codec.audio import resample
from codec.spectral import MelConfig, MelSpectrogram

PESQ_RATE = 16000  # wideband PESQ is defined at 16 kHz
PESQ_MIN_SECONDS = 0.25  # the P.862 implementation refuses shorter buffers
STOI_MIN_SECONDS = 0.42  # pystoi needs 30 frames of 256 samples at 10 kHz, 50 % overlap, after trimming (~0.41 s)
# (window length, number of mels) per resolution; hop = window // 4. The multi-resolution mel loss of DAC
# (Kumar et al. 2023), which NanoCodec's training also uses.
MEL_DISTANCE_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (32, 5),
    (64, 10),
    (128, 20),
    (256, 40),
    (512, 80),
    (1024, 160),
    (2048, 320),
)


class MetricError(ValueError):
    """Inputs a metric cannot score; the message names the metric and says what to do."""


def _as_mono(x: np.ndarray | torch.Tensor, metric: str, name: str) -> np.ndarray:
    """Any 1-D (or [1, T]) array/tensor -> float64 numpy [T]; refuses empty or non-finite audio."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x, dtype=np.float64)
    x = x.squeeze(0) if x.ndim == 2 and x.shape[0] == 1 else x
    if x.ndim != 1:
        raise MetricError(f"{metric}: {name} must be mono audio [T], got shape {x.shape}")
    if x.size == 0:
        raise MetricError(f"{metric}: {name} is empty")
    if not np.isfinite(x).all():
        raise MetricError(f"{metric}: {name} contains NaN or inf samples")
    return x


def _pair(ref, deg, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 [T], cut to the shorter length."""
    ref, deg = _as_mono(ref, metric, "ref"), _as_mono(deg, metric, "deg")
    n = min(ref.size, deg.size)
    return ref[:n], deg[:n]


def _check_length(n: int, sr: int, min_seconds: float, metric: str) -> None:
    if n < min_seconds * sr:
        raise MetricError(
            f"{metric}: audio is {n / sr:.3f} s long ({n} samples at {sr} Hz); it needs at least "
            f"{min_seconds} s: score longer utterances"
        )


def pesq_wb(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sr: int) -> float:
    """Wideband PESQ (P.862.2) after resampling both signals to 16 kHz.

    NaN when PESQ cannot score the pair: no speech found in `ref`, or an all-zero `deg` (count NaNs in reports).
    """
    from pesq import BufferTooShortError, NoUtterancesError, pesq

    ref, deg = _pair(ref, deg, "pesq_wb")
    _check_length(ref.size, sr, PESQ_MIN_SECONDS, "pesq_wb")
    ref16 = resample(ref.astype(np.float32), sr, PESQ_RATE)
    deg16 = resample(deg.astype(np.float32), sr, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, ref16, deg16, "wb"))
    except BufferTooShortError as e:  # the resampled length fell a few samples short of 0.25 s
        raise MetricError(
            f"pesq_wb: audio of {ref.size / sr:.3f} s is too short for PESQ; score longer utterances"
        ) from e
    except NoUtterancesError:
        return float("nan")
    except ValueError as e:  # an all-zero degraded signal makes the P.862 level alignment divide by zero
        if not np.any(deg16):
            return float("nan")
        raise MetricError(f"pesq_wb: PESQ failed on this pair ({e})") from e


def stoi(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, sr: int, extended: bool = False) -> float:
    """STOI (or ESTOI with `extended=True`) via pystoi; NaN when too little non-silent speech remains."""
    from pystoi import stoi as _pystoi

    metric = "estoi" if extended else "stoi"
    ref, deg = _pair(ref, deg, metric)
    _check_length(ref.size, sr, STOI_MIN_SECONDS, metric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_pystoi(ref, deg, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return float("nan")  # pystoi's placeholder 1e-5 is not a score
    return value


def si_sdr(ref: np.ndarray | torch.Tensor, deg: np.ndarray | torch.Tensor, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (both signals made zero-mean first).

    target = <deg, ref> / <ref, ref> * ref; si_sdr = 10 log10(|target|^2 / |deg - target|^2).
    Independent of the gain of `deg`; identical signals give a very large value (limited by `eps`).
    """
    ref, deg = _pair(ref, deg, "si_sdr")
    ref, deg = ref - ref.mean(), deg - deg.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy <= eps:
        raise MetricError("si_sdr: the reference is silent (constant), SI-SDR is undefined for it")
    target = (np.dot(deg, ref) / ref_energy) * ref
    noise = deg - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


@functools.lru_cache(maxsize=8)
def _mel_transforms(sr: int, resolutions: tuple[tuple[int, int], ...]) -> tuple[MelSpectrogram, ...]:
    configs = [
        MelConfig(
            sample_rate=sr,
            n_fft=win,
            hop_length=win // 4,
            n_mels=n_mels,
            norm="slaney",
            pad_mode="constant",
            log="log10_clamp",
            log_guard=1e-5,
        )
        for win, n_mels in resolutions
    ]
    return tuple(MelSpectrogram(config) for config in configs)


def mel_distance(
    ref: np.ndarray | torch.Tensor,
    deg: np.ndarray | torch.Tensor,
    sr: int,
    resolutions: tuple[tuple[int, int], ...] = MEL_DISTANCE_RESOLUTIONS,
) -> float:
    """Mean over resolutions of mean |log10 mel(ref) - log10 mel(deg)| (Slaney magnitude mels, floor 1e-5).

    0 for identical signals. Uses `codec.spectral.MelSpectrogram`, the mel of the codec's own losses.
    """
    ref, deg = _pair(ref, deg, "mel_distance")
    x = torch.from_numpy(np.stack([ref, deg])).float()  # [2, T]
    with torch.no_grad():
        dists = []
        for transform in _mel_transforms(sr, tuple(resolutions)):
            mel = transform(x)  # [2, n_mels, F]
            dists.append((mel[0] - mel[1]).abs().mean().item())
    return float(np.mean(dists))


@dataclass
class CodeUsage:
    """How a quantizer's codebooks are used over a set of frames.

    usage: [K] fraction of the codebook's entries that occur at least once (1.0 = every code used).
    perplexity: [K] exp(entropy) of each codebook's code histogram; codebook_size when uniform, 1 when one code.
    counts: [K, codebook_size] the histogram.
    """

    usage: np.ndarray
    perplexity: np.ndarray
    counts: np.ndarray
    num_frames: int

    @property
    def normalized_entropy(self) -> np.ndarray:
        """[K] entropy in units of log(codebook_size): 1.0 = uniform."""
        return np.log(self.perplexity) / math.log(self.counts.shape[1])


def code_usage(codes: np.ndarray | torch.Tensor | list, codebook_size: int) -> CodeUsage:
    """codes [K, F], [B, K, F] or a list of [K, F_i] (utterances of different lengths) -> CodeUsage per codebook."""
    items = codes if isinstance(codes, (list, tuple)) else [codes]
    blocks = []
    for item in items:
        arr = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if arr.ndim == 3:
            arr = arr.transpose(1, 0, 2).reshape(arr.shape[1], -1)  # [B, K, F] -> [K, B * F]
        if arr.ndim != 2:
            raise MetricError(f"code_usage: codes must be [K, F] or [B, K, F], got shape {arr.shape}")
        blocks.append(arr)
    if not blocks or len({b.shape[0] for b in blocks}) != 1:
        raise MetricError(f"code_usage: need code arrays with one number of codebooks, got {[b.shape for b in blocks]}")
    flat = np.concatenate(blocks, axis=1).astype(np.int64)  # [K, N]
    if flat.shape[1] == 0:
        raise MetricError("code_usage: no frames given")
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= codebook_size:
        raise MetricError(f"code_usage: codes range {low}..{high} lies outside the codebook 0..{codebook_size - 1}")
    counts = np.stack([np.bincount(row, minlength=codebook_size) for row in flat])  # [K, codebook_size]
    probs = counts / flat.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)  # [K] nats
    return CodeUsage(
        usage=(counts > 0).mean(axis=1),
        perplexity=np.exp(entropy),
        counts=counts,
        num_frames=flat.shape[1],
    )


def bitrate(num_codebooks: int, codebook_size: int, frame_rate: float) -> float:
    """Bits per second of a codec sending `num_codebooks` codes of log2(codebook_size) bits each, per frame."""
    return num_codebooks * math.log2(codebook_size) * frame_rate
