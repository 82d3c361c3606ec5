"""Tiny random-init TTS models for the synthesis, app and browser tests (seconds on one CPU thread).

    lm_dir, codec_dir = save_tiny_models(tmp_path)     # KoelLM + NanoCodec checkpoints, as `make lm` writes them
    wav, sr = speech_prompt(tmp_path)                  # a real espeak-ng recording to clone
    with demo_server(tmp_path, "--concurrency", "4") as url:   # apps.demo in a subprocess, tiny models
        ...

The codec keeps the real 12.5 FPS geometry (hop 1764 at 22,050 Hz) with a handful of channels and 2 codebooks of
16 codes; the LM has 2 layers of width 32. The LM's audio-EOS bias is lowered so that an untrained model speaks for
a few seconds instead of stopping after a few frames (random logits give EOS ~1 chance in 9 per frame).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from codec import CodecConfig, NanoCodec
from codec.decoder import DecoderConfig
from codec.encoder import EncoderConfig
from codec.fsq import QuantizerConfig
from tests.speech import synthesize
from text import PhonemeVocab
from tts_lm import AlignmentConfig, KoelLM, LMConfig

REPO = Path(__file__).resolve().parents[1]
PROMPT_TEXT = "This is the voice that the model should imitate, spoken clearly."


def tiny_codec_config() -> CodecConfig:
    return CodecConfig(
        sample_rate=22050,
        latent_dim=4,
        encoder=EncoderConfig(base_channels=2, resblock_kernel_sizes=[3], resblock_dilation_sizes=[1]),
        quantizer=QuantizerConfig(num_groups=2, num_levels_per_group=[4, 4]),
        decoder=DecoderConfig(base_channels=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[1]),
    )


def tiny_lm_config(**overrides) -> LMConfig:
    values = dict(
        num_codebooks=2,
        codebook_size=16,
        phoneme_vocab_size=len(PhonemeVocab.default()),
        d_model=32,
        num_layers=2,
        num_heads=4,
        max_seq_len=512,
        alignment=AlignmentConfig(layers=[1], heads=2),
        cfg_dropout=0.0,
        min_prompt_seconds=1.0,
        max_prompt_seconds=3.0,
    )
    values.update(overrides)
    return LMConfig(**values)


def tiny_models(eos_bias: float = -3.0, seed: int = 0, **lm_overrides) -> tuple[KoelLM, NanoCodec]:
    torch.manual_seed(seed)
    codec = NanoCodec(tiny_codec_config()).eval()
    lm = KoelLM(tiny_lm_config(**lm_overrides)).eval()
    c = lm.config
    with torch.no_grad():
        lm.head.proj.bias.view(c.num_streams, c.vocab_per_codebook)[:, c.audio_eos] += eos_bias
    return lm, codec


def save_tiny_models(directory: Path, **kwargs) -> tuple[Path, Path]:
    """Save a tiny LM (+ its phonemes.json) and codec under `directory`; returns (lm_dir, codec_dir)."""
    lm, codec = tiny_models(**kwargs)
    lm_dir, codec_dir = Path(directory) / "lm", Path(directory) / "codec"
    lm.save_pretrained(lm_dir)
    PhonemeVocab.default().save(lm_dir / "phonemes.json")
    codec.save_pretrained(codec_dir)
    return lm_dir, codec_dir


def speech_prompt(directory: Path, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """A few seconds of real speech (espeak-ng) at 22,050 Hz; also written to directory/prompt_<voice>.wav."""
    return synthesize(PROMPT_TEXT, Path(directory), engine="espeak-ng", voice=voice, name=f"prompt_{voice}")


# ---- a real demo server (apps.demo in a subprocess) -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example_manifest(directory: Path) -> Path:
    """A corpus manifest with two test speakers (espeak-ng voices) and one train speaker, for example voices."""
    from data.manifest import Utterance, write_manifest
    from text import G2P

    directory = Path(directory)
    phonemes = G2P("en-us")(PROMPT_TEXT)
    utts = []
    for voice, split in (("en-us", "test"), ("en-gb", "test"), ("en-us+m3", "train")):
        wav, sr = synthesize(PROMPT_TEXT, directory, engine="espeak-ng", voice=voice, name=f"example_{voice}")
        speaker = f"espeak-{voice}"
        audio = str(directory / f"example_{voice}.wav")
        utts.append(Utterance(speaker, audio, PROMPT_TEXT, phonemes, speaker, wav.size / sr, sr, split))
    return write_manifest(directory / "manifest.jsonl", utts)


@contextlib.contextmanager
def demo_server(directory: Path, *extra_args: str, timeout: float = 180.0) -> Iterator[str]:
    """Run `python -m apps.demo` with tiny models on a free 127.0.0.1 port; yields its URL; stops it after."""
    lm_dir, codec_dir = save_tiny_models(Path(directory))
    port = free_port()
    cmd = [sys.executable, "-m", "apps.demo", "--lm", str(lm_dir), "--codec", str(codec_dir), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env["GRADIO_TEMP_DIR"] = str(Path(directory) / "gradio")
    log_path = Path(directory) / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*cmd, *extra_args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"apps.demo exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"apps.demo did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
