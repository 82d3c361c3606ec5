"""Figures for the evaluation report (matplotlib, Agg backend: files only, no display needed).

    spectrograms(path, rows, sr)            rows: [(title, {"original": wav, "reconstructed": wav, ...}), ...]
                                            -> one row per utterance, one log-mel panel per version
    metric_bars(path, groups)               groups: {"codec": {"PESQ-WB": stats, ...}, "tts": {...}}
                                            -> one small bar (mean, std whiskers, median dot) per metric
    distributions(path, series)             series: {"PESQ-WB": [per-utterance values], ...} -> histograms
    code_usage(path, usage, perplexity, codebook_size)   -> bars per codebook

Every function writes a PNG atomically and returns its path; NaN values are left out of bars and histograms.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec.spectral import MelConfig, MelSpectrogram
from common.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def log_mel(wav: np.ndarray, sr: int, n_mels: int = 80) -> np.ndarray:
    """float [T] -> log10 mel [n_mels, frames] (1024-point STFT, hop 256, floor 1e-5)."""
    config = MelConfig(
        sample_rate=sr, n_fft=1024, hop_length=256, n_mels=n_mels, norm="slaney", log="log10_clamp", log_guard=1e-5
    )
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None]
    if x.shape[-1] < 1024:
        x = torch.nn.functional.pad(x, (0, 1024 - x.shape[-1]))
    with torch.no_grad():
        return MelSpectrogram(config)(x)[0].numpy()


def spectrograms(path: str | Path, rows: list[tuple[str, dict[str, np.ndarray]]], sr: int) -> Path:
    """Log-mel spectrograms: one row per utterance, one column per version (same colour scale in a row)."""
    plt = _pyplot()
    columns = list(dict.fromkeys(name for _, versions in rows for name in versions))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(4.2 * len(columns), 2.6 * len(rows)), squeeze=False)
    for r, (title, versions) in enumerate(rows):
        mels = {name: log_mel(wav, sr) for name, wav in versions.items() if wav.size}
        low = min((m.min() for m in mels.values()), default=-5.0)
        high = max((m.max() for m in mels.values()), default=0.0)
        for c, name in enumerate(columns):
            ax = axes[r, c]
            if name in mels:
                extent = (0, versions[name].size / sr, 0, mels[name].shape[0])
                ax.imshow(mels[name], origin="lower", aspect="auto", vmin=low, vmax=high, extent=extent, cmap="magma")
            else:
                ax.text(0.5, 0.5, "no audio", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{title}: {name}", fontsize=8)
            ax.set_xlabel("s", fontsize=7)
            ax.set_ylabel("mel bin", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)


def metric_bars(path: str | Path, groups: dict[str, dict[str, dict[str, Any]]]) -> Path:
    """One panel per metric: bar = mean, whisker = std, dot = median (from `codec_eval.stats` dicts)."""
    plt = _pyplot()
    items = [(group, name, s) for group, metrics in groups.items() for name, s in metrics.items()]
    cols = min(4, max(1, len(items)))
    nrows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(items) :]:
        ax.set_visible(False)
    for ax, (group, name, s) in zip(axes.flat, items, strict=False):
        if s.get("mean") is None:
            ax.text(0.5, 0.5, "not scored", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.bar([0], [s["mean"]], yerr=[s["std"]], color="#4C72B0", width=0.5, capsize=4)
            ax.plot([0], [s["median"]], "o", color="#DD8452")
            ax.text(0, s["mean"], f" {s['mean']:.3g}", va="bottom", fontsize=8)
        ax.set_xticks([])
        ax.set_title(f"{group}: {name} (n={s.get('count', 0)})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def distributions(path: str | Path, series: dict[str, list[float]], bins: int = 20) -> Path:
    """Histogram of the per-utterance values of each metric (NaN left out)."""
    plt = _pyplot()
    cols = min(4, max(1, len(series)))
    nrows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.4 * nrows), squeeze=False)
    for ax in axes.flat[len(series) :]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes.flat, series.items(), strict=False):
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        if arr.size:
            ax.hist(arr, bins=bins, color="#55A868")
        else:
            ax.text(0.5, 0.5, "not scored", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def code_usage(path: str | Path, usage: list[float], perplexity: list[float], codebook_size: int) -> Path:
    """Per codebook: fraction of the codebook used, and perplexity / codebook_size."""
    plt = _pyplot()
    k = np.arange(len(usage))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(usage) + 2), 2.8))
    ax.bar(k - 0.2, usage, width=0.4, label="codes used (fraction)")
    ax.bar(k + 0.2, np.asarray(perplexity) / codebook_size, width=0.4, label=f"perplexity / {codebook_size}")
    ax.set_xticks(k)
    ax.set_xlabel("codebook")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
