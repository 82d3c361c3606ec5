"""Train NanoCodec: a GAN on waveform crops, on HF accelerate (CPU, one GPU, DDP; DeepSpeed config in configs/).

    python -m codec.train configs/codec/cpu_12.5fps.yaml data.manifest=runs/data/cpu/manifest.jsonl out_dir=runs/codec/x
    torchrun --nproc_per_node 2 -m codec.train CONFIG ...        # DDP (gloo on CPU, NCCL on GPUs)
    accelerate launch --multi_gpu -m codec.train CONFIG ...      # or through accelerate's launcher

One step (`train_step`), after NanoCodec (Casanova et al. 2025) and NVIDIA's low-frame-rate codec recipe:
    fake = G(real)                                           real, fake: [B, T] crops of ~1.1 s
    every `disc_update_every`-th step:  D <- LSGAN loss on D(real), D(fake.detach())
    G <- mel L1 + 20 x log-STFT L1 + LSGAN(D(fake)) + feature matching + 0.1 x (1 - cos(spk(real), spk(fake)))
Adam (lr 2e-4, betas 0.8 / 0.99) for both; the learning rate decays by 0.998 once per epoch-equivalent (the steps
that draw as much audio as the training split holds, unless optim.decay_every says otherwise), like the
paper's per-epoch ExponentialLR. Gradients are clipped by norm. Every `val_every` steps the codec is scored on
held-out (unseen-speaker) utterances: mel distance, STOI, PESQ (codec/metrics.py), with audio samples in
tensorboard. Checkpoints every `ckpt_every` steps (codec/checkpointing.py); a run whose out_dir holds a
checkpoint resumes from it automatically and continues exactly as if it had not stopped: data and randomness
are functions of (seed, step). A non-finite loss stops the run before any weight update, naming the loss, and
leaves the last good checkpoint in place. The final model is written last: out_dir/model.safetensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codec.audio import AudioError
from codec.checkpointing import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from codec.conv import set_channels_last
from codec.dataset import CropDataset, DataConfig, ManifestError, read_audio_manifest, split_items, validation_set
from codec.discriminators import Discriminator, DiscriminatorConfig
from codec.losses import (
    LossConfig,
    ReconstructionLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    split_batch,
)
from codec.model import WEIGHTS_NAME, CodecConfig, CodecError, NanoCodec, calibrate_latents
from codec.speaker import SpeakerConsistencyLoss, build_speaker_encoder
from common.config import ConfigError, config_to_dict, load_config, mixed_precision, save_config
from common.optim import adam


@dataclass
class OptimConfig:
    lr: float = 2e-4  # generator and discriminator
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    lr_decay: float = 0.998  # multiplied in once per `decay_every` steps
    decay_every: int = 0  # steps; 0 = one epoch-equivalent of the training split
    grad_clip: float = 10.0  # max gradient norm, each network; 0 = no clipping
    encoder_lr_scale: float = 1.0  # the encoder's lr = lr x this (< 1 slows it; see generator_param_groups)
    warmup_steps: int = 0  # linear warmup from lr / warmup_steps (0 = none, the paper's recipe)


@dataclass
class TrainConfig:
    """Everything `python -m codec.train` reads: the YAML file's sections + key=value overrides."""

    model: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    out_dir: str = "runs/codec/run"
    seed: int = 0
    max_steps: int = 100_000
    batch_size: int = 16  # per process
    segment_seconds: float = 1.1  # crop length, rounded to whole codec frames
    disc_update_every: int = 2  # the discriminator steps on every N-th step
    gan_start_step: int = 0  # reconstruction losses only before this step (0 = GAN from the start, as the paper)
    latent_init_std: float = 0.0  # > 0: scale the fresh encoder's output so step 0's latents have this std
    log_every: int = 10
    val_every: int = 1000
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    val_audio_samples: int = 2  # reconstructions written to tensorboard at each validation
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (accelerate)
    # speed switches that do not change what is learnt (equal losses to float rounding; tests/test_codec_speed.py):
    channels_last: bool = True  # convs in channels-last memory (codec/conv.py): 1.3-2x faster convs on CPU
    compile: bool = False  # torch.compile generator, discriminators and reconstruction loss (pays off on GPUs)
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    cpu: bool = False  # force CPU even when a GPU is present
    # stop when >= 99 % of the output samples sit at the clamp's +-1 for this many steps in a row: such a decoder
    # gets no gradient and never recovers (0 = never stop)
    dead_output_steps: int = 20


@dataclass
class TrainResult:
    """What `train` leaves behind: out_dir (with model.safetensors), the last step, the per-step losses of this
    process (this invocation only), and the unwrapped generator and discriminator."""

    out_dir: Path
    step: int
    history: list[dict[str, float]]
    generator: NanoCodec
    discriminator: Discriminator


class NonFiniteLossError(RuntimeError):
    """A NaN/inf loss: the run stopped before updating any weights with it."""


class DeadOutputError(RuntimeError):
    """The decoder's output sat at the clamp's bounds for `dead_output_steps` steps: it cannot learn any more."""


# Settings a resumed run may change without changing what it learns.
RESUMABLE_KEYS = {
    "out_dir",
    "max_steps",
    "log_every",
    "val_every",
    "ckpt_every",
    "keep_checkpoints",
    "num_threads",
    "val_audio_samples",
    "cpu",
    "data.num_workers",
    "data.manifest",
    "dead_output_steps",
    "channels_last",
    "compile",
}


def recipe_changes(previous: Path, cfg: TrainConfig) -> list[str]:
    """'key: old -> new' for each training setting that differs from the run's saved train_config.yaml.

    A resumed run continues from its checkpoint whatever the config says now (a Makefile re-runs training when the
    config file changes), so an edited recipe would silently mix two recipes in one run.
    """
    if not previous.is_file():
        return []
    try:
        old = load_config(TrainConfig, previous)
    except (ConfigError, OSError):
        return [f"{previous} is unreadable"]

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    before, after = flat(config_to_dict(old)), flat(config_to_dict(cfg))
    return [
        f"{k}: {before.get(k)} -> {after.get(k)}"
        for k in sorted(set(before) | set(after))
        if k not in RESUMABLE_KEYS and before.get(k) != after.get(k)
    ]


def learning_rate(cfg: OptimConfig, step: int, decay_every: int) -> float:
    """lr * lr_decay ** (number of completed decay periods): the paper's per-epoch ExponentialLR (after an
    optional linear warmup)."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    return warmup * cfg.lr * cfg.lr_decay ** (step // max(1, decay_every))


def seed_step(seed: int, step: int, rank: int) -> None:
    """Make every random draw of this step a function of (seed, step, rank), so resuming is exact."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


class Losses(nn.Module):
    """The generator's non-adversarial losses (reconstruction, speaker) and their weights; nothing trainable."""

    def __init__(self, cfg: LossConfig, sample_rate: int):
        super().__init__()
        self.cfg = cfg
        self.reconstruction = ReconstructionLoss(cfg, sample_rate)
        encoder = build_speaker_encoder(cfg.speaker_encoder) if cfg.speaker_weight > 0 else None
        self.speaker = SpeakerConsistencyLoss(encoder, sample_rate) if encoder is not None else None


def speed_up(generator: nn.Module, discriminator: nn.Module, losses: Losses, cfg: TrainConfig) -> None:
    """Apply the config's speed switches in place (before accelerate's prepare); the weights' values are untouched.

    channels_last: the generator's convs run as channels-last 2-D convs and its activations stay time-major
    (codec/conv.py); the discriminators' stored conv weights are made channels-last too, but their weight-normed
    weights are recomputed in torch's default layout every call, so the discriminators run in that layout (a
    channels-last input measured no faster on CPU: 4.10-4.31 vs 4.19-4.36 s per GAN step pair). compile: each network's
    and the reconstruction loss's `__call__` is torch.compile'd in place (module names and state dicts stay the
    same), one graph per input shape (dynamic=False: the discriminator sees 2B and B rows).
    """
    set_channels_last(generator, cfg.channels_last)
    if cfg.channels_last:
        discriminator.to(memory_format=torch.channels_last)
    if cfg.compile:
        for module in (generator, discriminator, losses.reconstruction):
            module.compile(dynamic=False)


def generator_param_groups(generator: NanoCodec, cfg: OptimConfig) -> list[dict]:
    """Two Adam groups: the encoder at lr x encoder_lr_scale (its `lr_scale`), everything else at lr.

    While the decoder still ignores its input, the reconstruction loss pulls a fresh encoder's latents towards a
    constant (one code per codebook). Without `latent_init_std` the latents start at std ~0.3, close to that, and
    a slower encoder (scale 0.1) was needed to keep them apart; with the rescale to std 1 they shrink for ~50
    steps and widen again, and one lr learns faster (CPU profile, 1600 steps: reconstruction CER 131 % -> 71 %).
    """
    encoder = list(generator.audio_encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in generator.parameters() if id(p) not in encoder_ids]
    return [{"params": rest, "lr_scale": 1.0}, {"params": encoder, "lr_scale": cfg.encoder_lr_scale}]


def train_step(
    step: int,
    real: torch.Tensor,
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    losses: Losses,
    cfg: TrainConfig,
    accelerator,
) -> dict[str, float]:
    """One GAN step on real [B, T]: discriminator (every `disc_update_every` steps), then generator.

    Returns the step's losses as floats. Raises NonFiniteLossError before an optimizer step on a NaN/inf loss.
    """
    w = losses.cfg
    gan = step >= cfg.gan_start_step
    disc = accelerator.unwrap_model(discriminator)  # the generator step calls D outside DDP (D is not updated there)
    logs: dict[str, float] = {}

    out = generator(real)
    fake = out.audio  # [B, T]
    logs["latent/std"] = out.latents.detach().float().std().item()  # ~1 spans the FSQ levels; << 1 wastes them
    saturated = (fake.detach().abs() >= 1.0).float().mean()  # at the clamp's bounds: no gradient flows back
    if accelerator.num_processes > 1:
        saturated = accelerator.reduce(saturated, reduction="mean")
    logs["audio/saturated"] = saturated.item()

    # ---- discriminator: LSGAN on real vs detached fake, one pass over both halves of the batch ---------------
    if gan and step % cfg.disc_update_every == 0:
        disc.set_trainable(True)
        with accelerator.autocast():
            scores = discriminator(torch.cat([real, fake.detach()]))  # [2B, ...] per sub-discriminator
        d_real, d_fake = split_batch(scores, real.shape[0])
        loss_d = discriminator_loss(d_real, d_fake)
        check_finite({"discriminator": loss_d}, step, accelerator)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        logs["grad_norm/discriminator"] = clip_grad(discriminator, cfg.optim.grad_clip, accelerator)
        check_finite({"discriminator gradient norm": torch.tensor(logs["grad_norm/discriminator"])}, step, accelerator)
        opt_d.step()
        logs["loss/discriminator"] = loss_d.item()

    # ---- generator: reconstruction + adversarial + feature matching + speaker consistency --------------------
    rec = losses.reconstruction(real, fake)
    terms = {"mel": (w.mel_weight, rec.mel), "stft": (w.stft_weight, rec.stft)}
    if gan:
        disc.set_trainable(False)  # gradients flow through D into the generator only
        with accelerator.autocast():
            with torch.no_grad():
                d_real = disc(real)
            d_fake = disc(fake)
        terms["gan"] = (w.gan_weight, generator_loss(d_fake))
        terms["feature"] = (w.feature_weight, feature_matching_loss(d_real, d_fake))
    if losses.speaker is not None and step >= w.speaker_start_step:
        terms["speaker"] = (w.speaker_weight, losses.speaker(real, fake))
    check_finite({name: value for name, (_, value) in terms.items()}, step, accelerator)
    loss_g = sum(weight * value for weight, value in terms.values())
    opt_g.zero_grad(set_to_none=True)
    accelerator.backward(loss_g)
    logs["grad_norm/generator"] = clip_grad(generator, cfg.optim.grad_clip, accelerator)
    check_finite({"generator gradient norm": torch.tensor(logs["grad_norm/generator"])}, step, accelerator)
    opt_g.step()
    logs["loss/generator"] = loss_g.item()
    logs.update({f"loss/{name}": value.item() for name, (_, value) in terms.items()})
    return logs


def check_finite(named_losses: dict[str, torch.Tensor], step: int, accelerator) -> None:
    """Raise NonFiniteLossError on every process when any process saw a NaN/inf value (a loss or a gradient norm)."""
    values = torch.stack([v.detach().float() for v in named_losses.values()])
    bad = (~torch.isfinite(values)).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.any():
        names = [n for n, b in zip(named_losses, bad.tolist(), strict=True) if b]
        raise NonFiniteLossError(
            f"step {step}: non-finite loss ({', '.join(names)} is NaN/inf); stopped before the optimizer step, and "
            "nothing of this step is saved. Lower optim.lr (or set optim.grad_clip) and rerun to resume from the last "
            "good checkpoint"
        )


def clip_grad(model: nn.Module, max_norm: float, accelerator) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    return float(torch.norm(torch.stack([p.grad.detach().norm() for p in params])))


@torch.no_grad()
def validate(model: NanoCodec, utterances: list[np.ndarray]) -> tuple[dict[str, float], list[np.ndarray]]:
    """Encode -> decode each held-out utterance; mean mel distance / STOI / PESQ (NaN-aware) and the audio."""
    from codec.metrics import MetricError, mel_distance, pesq_wb, stoi

    was_training = model.training
    model.eval()
    scores, recons = defaultdict(list), []
    for wav in utterances:
        recon = model.decode(model.encode(torch.from_numpy(wav)[None].to(model.device)))[0, : len(wav)]
        recon = recon.float().cpu().numpy()
        recons.append(recon)
        scores["mel_distance"].append(mel_distance(wav, recon, model.sample_rate))
        for name, fn in (("stoi", stoi), ("pesq", pesq_wb)):
            try:
                scores[name].append(fn(wav, recon, model.sample_rate))
            except MetricError:  # too short to score
                scores[name].append(float("nan"))
    model.train(was_training)
    means = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in scores.items()}
    return means, recons


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; out_dir then holds the final model.safetensors."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    precision = mixed_precision("mixed_precision", cfg.mixed_precision)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(cpu=cfg.cpu or not torch.cuda.is_available(), mixed_precision=precision)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError(
            "codec.train does not run under DeepSpeed: accelerate drives one model per DeepSpeed engine and ZeRO "
            "shards the optimizer state that these checkpoints (safetensors + weights_only) restore whole; the "
            "codec GAN (~60 M parameters with its discriminators) trains with DDP instead: accelerate launch "
            "--config_file configs/accelerate/multi_gpu.yaml -m codec.train CONFIG ..."
        )
    out_dir = Path(cfg.out_dir)
    main = accelerator.is_main_process
    say = tqdm.write if main else (lambda *_: None)
    sr = cfg.model.sample_rate

    # ---- data -------------------------------------------------------------------------------------------------
    items = read_audio_manifest(cfg.data.manifest)
    train_items = split_items(items, cfg.data.train_split, cfg.data.min_duration)
    hours = sum(it.duration for it in train_items) / 3600
    val_items = split_items(items, cfg.data.val_split) or split_items(items, "test")
    model_cfg_dict = config_to_dict(cfg.model)
    hop = cfg.model.samples_per_frame
    segment = max(1, round(cfg.segment_seconds * sr / hop)) * hop  # whole codec frames
    world, rank = accelerator.num_processes, accelerator.process_index
    crops = CropDataset(
        train_items,
        sample_rate=sr,
        segment_samples=segment,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        cache=hours <= cfg.data.cache_max_hours,
        max_steps=cfg.max_steps,
    )
    decay_every = cfg.optim.decay_every or max(1, round(hours * 3600 / (cfg.batch_size * world * segment / sr)))

    # ---- models, losses, optimizers (weights from the latest checkpoint when resuming) -------------------------
    torch.manual_seed(cfg.seed)
    generator = NanoCodec(cfg.model)
    discriminator = Discriminator(cfg.discriminator, sr)
    losses = Losses(cfg.loss, sr).to(accelerator.device)
    speed_up(generator, discriminator, losses, cfg)
    opt_g = adam(generator_param_groups(generator, cfg.optim), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    opt_d = adam(
        [p for p in discriminator.parameters() if p.requires_grad], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas)
    )
    start_step, resumed = 0, latest_checkpoint(out_dir)
    if resumed is None and (out_dir / WEIGHTS_NAME).exists() and not (out_dir / "train_config.yaml").exists():
        raise ConfigError(
            f"{out_dir} holds a codec that codec.train did not write ({WEIGHTS_NAME} without train_config.yaml: "
            "converted or downloaded weights) and training would overwrite it; use another out_dir. To use that "
            "codec as it is, pass it to the later stages (make tokenize CODEC_DIR=...)"
        )
    if resumed is not None:
        ckpt = load_checkpoint(resumed)
        if ckpt.model_config != model_cfg_dict:
            raise ConfigError(
                f"{resumed} was trained with a different model config; use another out_dir, or delete {out_dir} "
                "to start over"
            )
        generator.load_weights(ckpt.generator, source=str(resumed))
        discriminator.load_trainable_state_dict(ckpt.discriminator)
        start_step = ckpt.step
    elif cfg.latent_init_std > 0:
        before, after = calibrate_latents(generator, crops[0], cfg.latent_init_std)
        say(f"codec.train: encoder output rescaled: latent std {before:.3f} -> {after:.3f} on step 0's crops")
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    if resumed is not None:
        opt_g.load_state_dict(ckpt.optimizer_generator)  # after prepare: the state lands on the parameters' device
        opt_d.load_state_dict(ckpt.optimizer_discriminator)
    unwrapped = accelerator.unwrap_model(generator)

    if main:
        if resumed is not None:
            for line in recipe_changes(out_dir / "train_config.yaml", cfg):
                say(f"codec.train: warning: resuming with a different recipe than the run started with: {line}")
        save_config(cfg, out_dir / "train_config.yaml")
        n_g = sum(p.numel() for p in unwrapped.parameters())
        n_d = sum(p.numel() for p in discriminator.parameters() if p.requires_grad)
        say(
            f"codec.train: {len(train_items)} training utterances ({hours:.2f} h), {len(val_items)} held out; "
            f"crops {segment} samples ({segment / sr:.2f} s) x {cfg.batch_size} x {world} process(es); "
            f"G {n_g / 1e6:.1f} M, D {n_d / 1e6:.1f} M params; lr decay every {decay_every} steps; "
            + (f"resuming {resumed.name}" if resumed is not None else "starting from scratch")
        )
    if start_step >= cfg.max_steps:
        say(f"codec.train: {out_dir} already trained to step {start_step} >= max_steps={cfg.max_steps}")
    if crops.cache is not None and cfg.data.num_workers == 0:
        crops.preload(progress=main)
    val_set = validation_set(val_items, sr, cfg.data.val_utterances, cfg.data.val_max_seconds) if main else []
    if main and not val_set:
        say(f"codec.train: no validation: {cfg.data.manifest} has no '{cfg.data.val_split}' or 'test' utterances")
    loader = torch.utils.data.DataLoader(
        crops, batch_size=None, sampler=range(start_step, cfg.max_steps), num_workers=cfg.data.num_workers
    )
    writer = SummaryWriter(str(out_dir / "logs")) if main else None

    # ---- the loop ---------------------------------------------------------------------------------------------
    generator.train()
    discriminator.train()
    sums, count, t0 = defaultdict(float), 0, time.time()
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="codec", disable=not main, dynamic_ncols=True)
    step, logged_real, history, dead = start_step, False, [], 0
    for real in loader:
        seed_step(cfg.seed, step, rank)
        lr = learning_rate(cfg.optim, step, decay_every)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        try:
            logs = train_step(
                step, real.to(accelerator.device), generator, discriminator, opt_g, opt_d, losses, cfg, accelerator
            )
        except NonFiniteLossError as e:
            bar.close()
            last = latest_checkpoint(out_dir)
            raise NonFiniteLossError(f"{e} ({last if last is not None else 'none written yet'})") from None
        dead = dead + 1 if logs["audio/saturated"] >= 0.99 else 0
        if cfg.dead_output_steps and dead >= cfg.dead_output_steps:
            bar.close()
            raise DeadOutputError(
                f"step {step}: for {dead} steps in a row {logs['audio/saturated']:.1%} of the decoder's output samples "
                "sat at the clamp's +-1, where no gradient flows: the generator cannot recover. Start over in a new "
                "out_dir with a learning-rate warmup (optim.warmup_steps=200) or a lower optim.lr"
            )
        history.append({"step": step, **logs})
        step += 1
        bar.update(1)
        for k, v in logs.items():
            sums[k] += v
        count += 1
        if main and (step % cfg.log_every == 0 or step == cfg.max_steps):
            means = {k: v / count for k, v in sums.items()}
            for k, v in means.items():
                writer.add_scalar(k, v, step)
            writer.add_scalar("lr", lr, step)
            writer.add_scalar("steps_per_second", count / (time.time() - t0), step)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in means.items() if k.startswith("loss/")})
            sums, count, t0 = defaultdict(float), 0, time.time()
        if step % cfg.val_every == 0 or step == cfg.max_steps:
            if main and val_set:
                scores, recons = validate(unwrapped, val_set)
                for k, v in scores.items():
                    writer.add_scalar(f"val/{k}", v, step)
                for i, recon in enumerate(recons[: cfg.val_audio_samples]):
                    writer.add_audio(f"val/recon_{i}", recon[None], step, sample_rate=sr)
                    if not logged_real:
                        writer.add_audio(f"val/real_{i}", val_set[i][None], step, sample_rate=sr)
                logged_real = True
                say(f"step {step}: " + ", ".join(f"val {k} {v:.3f}" for k, v in scores.items()))
            accelerator.wait_for_everyone()
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
            if main:
                save_checkpoint(
                    out_dir,
                    step,
                    unwrapped,
                    accelerator.unwrap_model(discriminator).trainable_state_dict(),
                    opt_g,
                    opt_d,
                    model_cfg_dict,
                    cfg.keep_checkpoints,
                )
            accelerator.wait_for_everyone()
    bar.close()

    # ---- the final model, written last (the Makefile's target) ---------------------------------------------------
    if main:
        unwrapped.save_pretrained(out_dir)
        writer.close()
        say(f"codec.train: done at step {max(step, start_step)}; model in {out_dir / WEIGHTS_NAME}")
    accelerator.wait_for_everyone()
    return TrainResult(out_dir, max(step, start_step), history, unwrapped, accelerator.unwrap_model(discriminator))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codec.train",
        description="Train NanoCodec (GAN) on a manifest's audio. Resumes automatically from out_dir/checkpoints.",
        epilog="example: python -m codec.train configs/codec/cpu_12.5fps.yaml data.manifest=runs/data/cpu/"
        "manifest.jsonl out_dir=runs/codec/cpu_12.5fps max_steps=2000 batch_size=8",
    )
    parser.add_argument("config", help="YAML file (configs/codec/*.yaml): model, data, optim, loss, discriminator, ...")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 max_steps=500")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"codec.train: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg)
    except (NonFiniteLossError, DeadOutputError) as e:
        print(f"codec.train: {e}", file=sys.stderr)
        return 1
    except (ConfigError, ManifestError, AudioError, CheckpointError, CodecError, OSError) as e:
        print(f"codec.train: {e}", file=sys.stderr)  # bad manifest, audio, checkpoint, or a missing WavLM
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
