"""Tiny random-init TTS models for the synthesis, app and browser tests (seconds on one CPU thread).

    lm_dir, codec_dir = save_tiny_models(tmp_path)     # KoelLM + NanoCodec checkpoints, as `make lm` writes them
    wav, sr = speech_prompt(tmp_path)                  # a real espeak-ng recording to clone

The codec keeps the real 12.5 FPS geometry (hop 1764 at 22,050 Hz) with a handful of channels and 2 codebooks of
16 codes; the LM has 2 layers of width 32. The LM's audio-EOS bias is lowered so that an untrained model speaks for
a few seconds instead of stopping after a few frames (random logits give EOS ~1 chance in 9 per frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alignment import PhonemeVocab
from codec import CodecConfig, NanoCodec
from codec.decoder import DecoderConfig
from codec.encoder import EncoderConfig
from codec.fsq import QuantizerConfig
from tests.speech import synthesize
from tts_lm import AlignmentConfig, KoelLM, LMConfig

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
