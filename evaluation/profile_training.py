"""Where a training step's time goes: each part of a codec or LM step timed on its own, forward and backward.

    python -m evaluation.profile_training codec configs/codec/cpu_12.5fps.yaml [key=value ...] [--repeats 3]
    python -m evaluation.profile_training lm configs/lm/cpu.yaml [--codec configs/codec/cpu_12.5fps.yaml]

Codec: on one batch of real speech (espeak-ng) at the profile's batch size and crop length, the generator's
encoder, quantizer and decoder, the reconstruction losses, the speaker loss, each sub-discriminator (as the GAN
step uses them: on real + fake with D trainable, on fake with D frozen), the weight-norm recomputation of the
generator and of the discriminators (every parametrized weight, forward and backward), both optimizers, and the
data loader's crop of a batch. Each part runs alone on inputs of its real shapes, with a random output gradient
for its backward, so the parts can be compared; the whole `codec.train.train_step` is timed as well (before and
after the GAN starts), and the sum of the parts lands near it. LM: embeddings + sequence assembly, the Llama
backbone, the output head + cross-entropy, the forward-sum alignment loss, AdamW, one step of the real loop.
Medians of `--repeats` runs after one warm-up, wall milliseconds, torch threads as set (1 by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from common.optim import adam


def _ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _fwd_bwd(fn: Callable[[], Any], params: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    """(forward ms, backward ms) of fn(), whose tensor outputs get a random gradient of their shape."""

    def outputs() -> list[torch.Tensor]:
        out = fn()
        flat = out if isinstance(out, list | tuple) else [out]
        return [t for t in flat if isinstance(t, torch.Tensor) and t.requires_grad]

    def backward() -> None:
        outs = outputs()
        torch.autograd.backward(outs, [torch.randn_like(t) for t in outs])
        for p in params:
            p.grad = None

    fwd = _ms(outputs, repeats)
    return fwd, max(0.0, _ms(backward, repeats) - fwd)


def _flatten(out) -> list[torch.Tensor]:
    return [out.scores[0], *out.features[0]] if hasattr(out, "scores") else out


def _weight_norm_ms(module: nn.Module, repeats: int) -> tuple[float, float]:
    """Recomputing every weight-norm parametrized weight of `module` (what each forward does), fwd and bwd."""
    owners = [m for m in module.modules() if parametrize.is_parametrized(m, "weight")]
    params = [p for m in owners for p in m.parametrizations.weight.parameters()]
    return _fwd_bwd(lambda: [m.weight for m in owners], params, repeats)


def profile_codec(config: str, overrides: list[str], repeats: int = 3) -> list[tuple[str, float, float]]:
    """Rows (part, forward ms, backward ms) of one codec training step at the config's sizes (see module doc)."""
    from accelerate import Accelerator

    from codec.dataset import AudioItem, CropDataset
    from codec.train import train_step
    from evaluation.bench.harness import LONG_TEXT, espeak_speech
    from evaluation.bench.throughput import codec_training_setup

    cfg, real, generator, discriminator, losses = codec_training_setup(config, overrides)
    generator.train(), discriminator.train()
    sr, segment = cfg.model.sample_rate, real.shape[1]
    speech = espeak_speech(LONG_TEXT, sr)
    g_params = list(generator.parameters())
    d_params = [p for p in discriminator.parameters() if p.requires_grad]
    rows: list[tuple[str, float, float]] = []

    with torch.no_grad():
        latents = generator.audio_encoder(generator.pad_to_frames(real))
        dequantized = generator.vector_quantizer(latents).dequantized
    rows.append(("G encoder", *_fwd_bwd(lambda: generator.audio_encoder(real), g_params, repeats)))
    lat = latents.clone().requires_grad_(True)
    rows.append(("G quantizer (FSQ)", *_fwd_bwd(lambda: generator.vector_quantizer(lat).dequantized, g_params, 1)))
    rows.append(("G decoder", *_fwd_bwd(lambda: generator.audio_decoder(dequantized), g_params, repeats)))
    fake = generator.audio_decoder(dequantized).detach().requires_grad_(True)
    rec = losses.reconstruction
    rows.append(("loss: mel + log-STFT (7 res.)", *_fwd_bwd(lambda: sum(vars(rec(real, fake)).values()), [], repeats)))
    if losses.speaker is not None:
        rows.append(("loss: speaker (resemblyzer)", *_fwd_bwd(lambda: losses.speaker(real, fake), [], repeats)))
    both = torch.cat([real, fake.detach()])
    for sub in discriminator.discriminators:
        name = type(sub).__name__.replace("Discriminator", "")
        label = f"D {name} {getattr(sub, 'period', getattr(sub, 'n_fft', ''))}".rstrip()
        discriminator.set_trainable(True)
        fwd_d, bwd_d = _fwd_bwd(lambda s=sub: _flatten(s(both)), d_params, repeats)
        discriminator.set_trainable(False)
        fwd_g, bwd_g = _fwd_bwd(lambda s=sub: _flatten(s(fake)), [], repeats)
        rows.append((f"{label}: D step (real+fake)", fwd_d, bwd_d))
        rows.append((f"{label}: G step (fake)", fwd_g, bwd_g))
    rows.append(("weight norm, G (all weights)", *_weight_norm_ms(generator, repeats)))
    discriminator.set_trainable(True)
    rows.append(("weight norm, D (all weights, x3 per GAN step)", *_weight_norm_ms(discriminator, repeats)))
    for name, params in (("Adam step, G", g_params), ("Adam step, D", d_params)):
        opt = adam(params, lr=1e-4)
        for p in params:
            p.grad = torch.randn_like(p)
        rows.append((name, _ms(opt.step, repeats), 0.0))
        for p in params:
            p.grad = None
    items = [AudioItem(audio="-", duration=speech.size / sr, split="train")]
    crops = CropDataset(items, sr, segment, cfg.batch_size, seed=0)
    crops.cache[0] = speech
    rows.append(("data: crop a batch (cached audio)", _ms(lambda: crops[1], repeats), 0.0))

    accelerator = Accelerator(cpu=True)
    opt_g = adam(g_params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    opt_d = adam(d_params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    args = (generator, discriminator, opt_g, opt_d, losses, cfg, accelerator)
    gan = max(cfg.gan_start_step, 0)
    if gan > 0:
        rows.append(("WHOLE train_step, reconstruction only", _ms(lambda: train_step(0, real, *args), repeats), 0.0))
    first = gan + (-gan % cfg.disc_update_every)
    rows.append(("WHOLE train_step, GAN, D step", _ms(lambda: train_step(first, real, *args), repeats), 0.0))
    if cfg.disc_update_every > 1:
        rows.append(("WHOLE train_step, GAN, no D step", _ms(lambda: train_step(first + 1, real, *args), repeats), 0.0))
    return rows


def profile_lm(config: str, codec_config: str, repeats: int = 3, top: int = 18) -> list[tuple[str, float, float]]:
    """Rows (op, self ms per step, 0) of one LM optimizer step on the bench's full token-budget batch: the whole
    step first, then torch.profiler's ops with the most self CPU time (forward and backward ops apart)."""
    from torch.profiler import ProfilerActivity, profile

    from evaluation.bench.throughput import lm_training_setup

    setup = lm_training_setup(config, codec_config)
    rows: list[tuple[str, float, float]] = [("WHOLE step (fwd + bwd + clip + AdamW)", _ms(setup.step, repeats), 0.0)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            setup.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    rows += [(e.key, e.self_cpu_time_total / 1000 / repeats, 0.0) for e in events[:top]]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.profile_training", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["codec", "lm"])
    parser.add_argument("config", help="configs/codec/*.yaml (codec) or configs/lm/*.yaml (lm)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the codec training config")
    parser.add_argument(
        "--codec",
        default="configs/codec/cpu_12.5fps.yaml",
        help="lm: the training config (YAML) of the codec whose token vocabulary the LM uses "
        "(default configs/codec/cpu_12.5fps.yaml)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for name, path in (("config", args.config), ("--codec", args.codec)):
        if not Path(path).is_file():
            print(f"profile_training: {name} {path} is not a YAML file (a training config from configs/, "
                  f"not a model folder)", file=sys.stderr)  # fmt: skip
            return 2
    torch.set_num_threads(args.threads)
    if args.what == "codec":
        rows = profile_codec(args.config, args.overrides, args.repeats)
    else:
        rows = profile_lm(args.config, args.codec, args.repeats)
    print(f"| {args.what} {args.config} {' '.join(args.overrides)} | forward ms | backward ms |")
    print("|---|---:|---:|")
    for name, fwd, bwd in rows:
        print(f"| {name} | {fwd:.1f} | {bwd:.1f} |" if bwd else f"| {name} | {fwd:.1f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
