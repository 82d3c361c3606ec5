"""Shared pieces of the benchmarks (evaluation/bench/): sizes, speech input, timing, machine description.

    settings = BenchSettings.full(threads=1)   # or BenchSettings.smoke(): seconds-long, tiny sizes (tests, CI)
    wav = espeak_speech(TEXT, sample_rate=22050, seconds=4.0)     # float32 [T], real speech (espeak-ng)
    seconds = timed(fn, device)                                     # wall seconds of one call (CUDA: synchronised)

Timings are wall-clock seconds with torch on `threads` intra-op threads (on a GPU, `device="cuda"`, the clock is
read only after the device has finished the queued work: `sync`); every comparison runs its candidates
interleaved (A B A B ...) and reports medians, so slow phases of a shared machine hit all candidates alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TEXT = "The birch canoe slid on the smooth planks, and the sheet was glued to the dark blue background."
PROMPT_TEXT = "This is the voice that the model should imitate, spoken clearly and slowly, with a calm and even tone."
LONG_TEXT = (
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. Rice is often served in "
    "round bowls. The juice of lemons makes fine punch. The box was thrown beside the parked truck. "
)


@dataclass
class BenchSettings:
    """How big every benchmark is. `full()` is `make bench` (~10 min on 2 busy vCPUs); `smoke()` takes seconds."""

    is_smoke: bool = False
    threads: int = 1
    device: str = "cpu"  # torch device of the timed models ("cuda": the GPU path; --device)
    sections: tuple[str, ...] = ("e2e", "codecs", "throughput")  # which of the three benchmarks run
    # 1. end to end, 12.5 vs 21.5 FPS
    lm_config: str = "configs/lm/cpu.yaml"
    codec_12: str = "configs/codec/cpu_12.5fps.yaml"
    codec_21: str = "configs/codec/cpu_21.5fps.yaml"
    e2e_seconds: float = 6.0  # audio per request (fixed length: EOS suppressed)
    batch_sizes: tuple[int, ...] = (1, 8)
    e2e_repeats: int = 3
    chunk_frames: int | str = 1  # codec frames per streamed chunk (1 = 80 ms at 12.5 FPS), or "grow" (ChunkPlan)
    backend: str = (
        "auto"  # the Synthesizer's (LM step, streaming decoder): auto (ONNX Runtime on a CPU), torch, onnxruntime
    )
    # 2. codec speed vs peers
    paper_codecs: tuple[str, ...] = (
        "configs/codec/nanocodec_12.5fps_1.1kbps.yaml",
        "configs/codec/nanocodec_21.5fps_1.89kbps.yaml",
    )
    codec_overrides: tuple[str, ...] = ()  # applied to the NanoCodec configs (smoke: tiny channels)
    peers: tuple[str, ...] = ("mimi", "encodec", "dac")
    peer_scale: str = "full"  # "full": the published architectures; "tiny": a few channels (smoke)
    codec_seconds: float = 4.0
    codec_repeats: int = 3
    # 3. throughput
    tokenize_seconds: float = 60.0  # audio tokenised per codec
    train_steps: int = 4  # timed steps after one warm-up step (2 moved a training row by up to 10 % between runs)
    codec_train_overrides: tuple[str, ...] = ()
    lm_train_rows: int = 0  # 0 = as many as the profile's token budget fits
    notes: list[str] = field(default_factory=list)

    @classmethod
    def full(cls, threads: int = 1) -> BenchSettings:
        return cls(threads=threads)

    @classmethod
    def smoke(cls, threads: int = 1) -> BenchSettings:
        tiny_codec = ("encoder.base_channels=2", "decoder.base_channels=32")
        return cls(
            is_smoke=True,
            threads=threads,
            e2e_seconds=0.5,
            batch_sizes=(1, 2),
            e2e_repeats=1,
            codec_overrides=tiny_codec,
            peer_scale="tiny",
            codec_seconds=0.5,
            codec_repeats=1,
            tokenize_seconds=2.0,
            train_steps=1,
            codec_train_overrides=("batch_size=1", "segment_seconds=0.16", *(f"model.{o}" for o in tiny_codec)),
            lm_train_rows=1,
            notes=["SMOKE RUN: tiny sizes, the numbers say nothing about speed"],
        )


def sync(device: str | torch.device = "cpu") -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a clock read before this measures nothing)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: str | torch.device = "cpu") -> float:
    """`time.perf_counter()` after the device's queued work has finished."""
    sync(device)
    return time.perf_counter()


def timed(fn: Callable[[], Any], device: str | torch.device = "cpu") -> float:
    """Wall seconds of one call of `fn` (with the device's work it queued)."""
    start = clock(device)
    fn()
    return clock(device) - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def espeak_speech(text: str, sample_rate: int, seconds: float | None = None, voice: str = "en-us") -> np.ndarray:
    """Real speech from espeak-ng, float32 [T] at `sample_rate`; repeated / cut to exactly `seconds` if given.

    Without espeak-ng (a bare GPU machine), `speech_like` stands in (speed does not depend on the content)."""
    from codec.audio import load_audio

    binary = shutil.which("espeak-ng")
    if binary is None:
        return speech_like(text, sample_rate, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([binary, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        wav, _ = load_audio(path, sample_rate=sample_rate)
    if seconds is not None:
        n = round(seconds * sample_rate)
        wav = np.tile(wav, -(-n // wav.size))[:n]
    return wav.astype(np.float32)


def speech_like(text: str, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    """A stand-in for speech where espeak-ng is missing (e.g. a bare GPU machine): float32 [T], a voiced buzz
    (120-220 Hz harmonics) in syllable-rate bursts, ~0.06 s per character of `text` unless `seconds` is given.
    The models' speed does not depend on what they hear; results.json notes when this stand-in was used."""
    n = round((seconds if seconds is not None else 0.06 * len(text)) * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5  # ~4 syllables per second
    return (0.3 * voiced * envelope / 2.6).astype(np.float32)


def has_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, logical CPUs, load average, torch / transformers versions, threads."""
    import transformers

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "gpu": gpu,
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
