"""Benchmark 3: tokenisation throughput and codec / LM training throughput of the CPU profiles.

    rows = bench_tokenize(settings, codecs={"12.5": dir or None, ...})   # seconds of audio tokenised per second
    rows = bench_codec_training(settings)                               # steps/s, samples/s, audio s/s
    rows = bench_lm_training(settings)                                  # steps/s, samples/s, audio s/s

Tokenisation runs the real stage-2 path, `data.tokenize_corpus.tokenize_corpus` (manifest -> audio loading ->
batched `codec.encode` -> Arrow shards -> merge), on a small espeak-ng corpus made here (`tokenize_seconds` of
speech), with the trained codec when given, else a random-init codec of the profile's config (the encoder's cost
does not depend on its weights). It uses one process of one thread (its default; `--workers N` scales it).

Codec training times `codec.train.train_step` on the profile's config (configs/codec/cpu_*.yaml: batch, crop length,
discriminators, speaker loss) with real speech crops: reconstruction-only steps (before `gan_start_step`) and
GAN steps (the discriminator steps every 2nd step, so a timed pair holds one of each). From those it estimates the
profile's whole schedule. LM training times one optimizer step (forward, backward, clip, AdamW) of the
configs/lm/cpu.yaml model at each frame rate on a full batch of the profile's token budget: rows of a real
sentence's phonemes + its length in frames + a 4 s prompt (code values random: the cost does not depend on them).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from codec import CodecConfig, NanoCodec
from common.config import config_from_dict, load_config
from common.optim import adam
from evaluation.bench.harness import LONG_TEXT, TEXT, BenchSettings, espeak_speech, median, timed
from text import G2P, PhonemeVocab, split_sentences

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
PROMPT_SECONDS = 4.0


# ---- tokenisation ------------------------------------------------------------------------------------------
def small_corpus(directory: Path, seconds: float) -> tuple[Path, float]:
    """espeak-ng utterances until `seconds` of audio -> directory/manifest.jsonl + phonemes.json; (path, seconds)."""
    from data.manifest import Utterance, write_manifest

    g2p = G2P("en-us")
    sentences = split_sentences(LONG_TEXT)
    utts, total, i = [], 0.0, 0
    while total < seconds:
        text, voice = sentences[i % len(sentences)], VOICES[(i // len(sentences)) % len(VOICES)]
        wav = espeak_speech(text, 22050, voice=voice)
        path = directory / "audio" / f"utt{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wav, 22050)
        utts.append(Utterance(f"utt{i:04d}", str(path), text, g2p(text), f"espeak-{voice}", wav.size / 22050, 22050))
        total += wav.size / 22050
        i += 1
    manifest = write_manifest(directory / "manifest.jsonl", utts)
    PhonemeVocab.default().save(directory / "phonemes.json")
    return manifest, total


def bench_tokenize(
    settings: BenchSettings, codecs: dict[str, str | None], progress: bool = True
) -> list[dict[str, Any]]:
    """Seconds of audio tokenised per wall second, per codec (trained dir, or None = random init of the config)."""
    from data.tokenize_corpus import tokenize_corpus

    configs = {"12.5": settings.codec_12, "21.5": settings.codec_21}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest, seconds = small_corpus(tmp / "corpus", settings.tokenize_seconds)
        for key in tqdm(configs, desc="bench 3/3: tokenisation", disable=not progress):
            codec_dir = codecs.get(key)
            if codec_dir is None:
                torch.manual_seed(0)
                model = NanoCodec.from_config(configs[key], list(settings.codec_overrides))
                codec_dir = str(model.save_pretrained(tmp / f"codec_{key}"))
                weights = f"random init: {configs[key]}"
            else:
                weights = f"trained: {codec_dir}"
            wall = timed(lambda d=codec_dir, k=key: tokenize_corpus(d, manifest, tmp / f"tokens_{k}"))
            rows.append(
                {
                    "fps": key,
                    "weights": weights,
                    "audio_s": seconds,
                    "wall_s": wall,
                    "audio_s_per_s": seconds / wall,
                    "threads": 1,
                    "processes": 1,
                }
            )
    torch.set_num_threads(settings.threads)  # tokenize_corpus sets one thread for itself
    return rows


# ---- codec training ----------------------------------------------------------------------------------------
def bench_codec_training(settings: BenchSettings, progress: bool = True) -> list[dict[str, Any]]:
    """Steps/s of codec.train.train_step for each CPU codec profile: reconstruction-only and GAN steps."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    configs = (settings.codec_12, settings.codec_21)
    return [
        _codec_training(config, settings, accelerator)
        for config in tqdm(configs, desc="bench 3/3: codec training", disable=not progress)
    ]


def codec_training_setup(config: str, overrides: list[str]) -> tuple[Any, torch.Tensor, nn.Module, nn.Module, Any]:
    """(TrainConfig, a batch of real speech crops [B, segment], generator, discriminator, Losses) of a codec training
    config, with the config's speed switches applied as codec.train applies them (seed 0)."""
    from codec.discriminators import Discriminator
    from codec.train import Losses, TrainConfig, speed_up

    cfg = load_config(TrainConfig, config, overrides)
    sr, hop = cfg.model.sample_rate, cfg.model.samples_per_frame
    segment = max(1, round(cfg.segment_seconds * sr / hop)) * hop
    speech = espeak_speech(LONG_TEXT, sr)
    starts = np.linspace(0, speech.size - segment, cfg.batch_size).astype(int)
    real = torch.from_numpy(np.stack([speech[s : s + segment] for s in starts]))  # (B, segment)
    torch.manual_seed(0)
    generator, discriminator = NanoCodec(cfg.model), Discriminator(cfg.discriminator, sr)
    losses = Losses(cfg.loss, sr)
    speed_up(generator, discriminator, losses, cfg)
    return cfg, real, generator, discriminator, losses


def _codec_training(config: str, settings: BenchSettings, accelerator) -> dict[str, Any]:
    from codec.train import train_step

    cfg, real, generator, discriminator, losses = codec_training_setup(config, list(settings.codec_train_overrides))
    sr, segment = cfg.model.sample_rate, real.shape[1]
    betas, lr = tuple(cfg.optim.betas), cfg.optim.lr
    opt_g = adam(generator.parameters(), lr=lr, betas=betas)  # codec.train's optimizers
    opt_d = adam([p for p in discriminator.parameters() if p.requires_grad], lr=lr, betas=betas)
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    generator.train()
    discriminator.train()

    def step(index: int) -> float:
        models = (generator, discriminator, opt_g, opt_d, losses, cfg, accelerator)
        return timed(lambda: train_step(index, real, *models))

    n, gan = settings.train_steps, max(0, cfg.gan_start_step)
    recon = [step(i) for i in range(n + 1)][1:] if gan > 0 else []  # the first step warms up
    first_gan = gan + (-gan % cfg.disc_update_every)  # warm up on a discriminator step
    gan_times = [step(first_gan + i) for i in range(n + 1)][1:]
    recon_s = median(recon) if recon else None
    gan_s = float(np.mean(gan_times))  # a mean: discriminator steps and generator-only steps alternate
    return {
        "profile": config,
        "frame_rate": cfg.model.frame_rate,
        "batch_size": cfg.batch_size,
        "crop_s": segment / sr,
        "speaker_loss": cfg.loss.speaker_encoder if cfg.loss.speaker_weight > 0 else "none",
        "recon_steps_per_s": 1 / recon_s if recon_s else None,
        "gan_steps_per_s": 1 / gan_s,
        "recon_samples_per_s": cfg.batch_size / recon_s if recon_s else None,
        "gan_samples_per_s": cfg.batch_size / gan_s,
        "gan_audio_s_per_s": cfg.batch_size * segment / sr / gan_s,
        "max_steps": cfg.max_steps,
        "gan_start_step": gan,
        "schedule_hours_estimate": ((recon_s or 0) * gan + gan_s * (cfg.max_steps - gan)) / 3600,
    }


# ---- LM training -------------------------------------------------------------------------------------------
def bench_lm_training(settings: BenchSettings, progress: bool = True) -> list[dict[str, Any]]:
    """Optimizer steps/s of the configs/lm/cpu.yaml model on a full token-budget batch, at 12.5 and 21.5 FPS."""
    ids = PhonemeVocab.default().encode(G2P("en-us")(TEXT))
    seconds = espeak_speech(TEXT, 22050).size / 22050
    configs = (settings.codec_12, settings.codec_21)
    return [
        _lm_training(config, settings, ids, seconds)
        for config in tqdm(configs, desc="bench 3/3: LM training", disable=not progress)
    ]


@dataclass
class LMTrainingSetup:
    """A configs/lm model, its AdamW and one full batch; `step()` is one optimizer step of tts_lm.train's loop."""

    model: Any
    optimizer: torch.optim.Optimizer
    batch: Any
    config: Any
    utterance_length: int
    step: Callable[[], None]


def lm_training_setup(
    lm_config: str, codec_config: str, rows: int = 0, ids: list[int] | None = None, seconds: float | None = None
) -> LMTrainingSetup:
    """The model of `lm_config` for the tokens of `codec_config`, on a batch of `rows` (0 = the token budget) copies
    of a real sentence's phonemes + its length in frames + a 4 s prompt (code values random)."""
    from accelerate import Accelerator

    from tts_lm import KoelLM, LMBatch
    from tts_lm.train import TrainConfig, lm_train_step, param_groups

    if ids is None:
        ids = PhonemeVocab.default().encode(G2P("en-us")(TEXT))
        seconds = espeak_speech(TEXT, 22050).size / 22050
    train_cfg = load_config(TrainConfig, lm_config)
    codec = config_from_dict(CodecConfig, OmegaConf.to_container(OmegaConf.load(codec_config).model))
    meta = dict(
        num_codebooks=codec.quantizer.num_groups,
        codebook_size=math.prod(codec.quantizer.num_levels_per_group),
        frame_rate=codec.frame_rate,
        sample_rate=codec.sample_rate,
        samples_per_frame=codec.samples_per_frame,
        phoneme_vocab=PhonemeVocab.default().to_dict(),
    )
    lm_cfg = train_cfg.model.with_tokens(meta)
    torch.manual_seed(0)
    model = KoelLM(lm_cfg).train()
    optimizer = adam(param_groups(model, train_cfg.optim.weight_decay), decoupled=True, lr=1e-4)
    frames, prompt = lm_cfg.seconds_to_frames(seconds), lm_cfg.seconds_to_frames(PROMPT_SECONDS)
    length = prompt + len(ids) + 2 + frames + 1  # prompt | BOS text EOS | audio frames + EOS
    b = rows or min(train_cfg.data.max_batch_size, max(1, train_cfg.data.max_tokens // length))
    gen = torch.Generator().manual_seed(0)
    k, v = lm_cfg.num_codebooks, lm_cfg.codebook_size
    batch = LMBatch(
        phoneme_ids=torch.tensor([ids] * b),
        phoneme_lens=torch.full((b,), len(ids)),
        prompt_codes=torch.randint(0, v, (b, k, prompt), generator=gen),
        prompt_lens=torch.full((b,), prompt),
        codes=torch.randint(0, v, (b, k, frames), generator=gen),
        code_lens=torch.full((b,), frames),
        uncond=torch.zeros(b, dtype=torch.bool),
    )
    accelerator = Accelerator(cpu=True)

    def step() -> None:
        lm_train_step(model, optimizer, iter([batch]).__next__, train_cfg, accelerator, lr=1e-4, prior_weight=1.0)

    return LMTrainingSetup(model, optimizer, batch, lm_cfg, length, step)


def _lm_training(config: str, settings: BenchSettings, ids: list[int], seconds: float) -> dict[str, Any]:
    setup = lm_training_setup(settings.lm_config, config, settings.lm_train_rows, ids, seconds)
    b = setup.batch.size
    step_s = median([timed(setup.step) for _ in range(settings.train_steps + 1)][1:])  # the first step warms up
    return {
        "codec_profile": config,
        "frame_rate": setup.config.codec.frame_rate,
        "parameters_m": setup.model.num_parameters() / 1e6,
        "rows": b,
        "sequence_positions": setup.utterance_length,
        "utterance_s": seconds,
        "prompt_s": PROMPT_SECONDS,
        "steps_per_s": 1 / step_s,
        "samples_per_s": b / step_s,
        "audio_s_per_s": b * seconds / step_s,
    }
