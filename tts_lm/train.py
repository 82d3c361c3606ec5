"""Stage 3 (`make lm`): train the Koel-style TTS LM on a token set.

    python -m tts_lm.train configs/lm/cpu.yaml data.tokens=runs/tokens/cpu_12.5fps out_dir=runs/tts_lm/cpu_12.5fps
    accelerate launch -m tts_lm.train configs/lm/paper.yaml precision=bf16 ...           # DDP, one rank per GPU
    accelerate launch --config_file configs/lm/accelerate_deepspeed_zero2.yaml -m tts_lm.train ...   # ZeRO-2

A plain loop on HF accelerate: per optimizer step `grad_accum` micro-batches (gradients synchronised on the last
one), gradient clipping, AdamW with linear warmup + cosine decay (set by hand every step, so there is no
scheduler state), the attention prior's weight from its annealing schedule (tts_lm.prior.prior_weight).
Every `val_every` steps: validation loss (fixed prompts, no guidance drop) and a few generated validation
utterances (lengths, and audio in tensorboard when the codec the tokens came from is loadable).

OUT_DIR/
    train_config.yaml       the resolved config (model vocabularies filled from the tokens' meta.json)
    checkpoint/             model.safetensors + config.json + optimizer.pt + train_state.json (atomic, latest)
    tb/                     tensorboard logs
    config.json, model.safetensors   the final model (KoelLM.from_pretrained(OUT_DIR)); written last

Exact resume: rerunning the same command continues from checkpoint/ (weights, optimizer moments, step, and
the position in the epoch's batch list; batches, prompts and guidance drops are functions of the seed), so an
interrupted run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn
from tqdm import tqdm

from common.config import load_config, mixed_precision, save_config
from common.fileio import atomic_path, write_json_atomic
from common.optim import adam
from tts_lm.config import LMConfig
from tts_lm.dataset import DataConfig, PromptedUtterances, read_tokens
from tts_lm.model import CONFIG_NAME, KoelLM, LMBatch
from tts_lm.prior import prior_weight


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.01
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    model: LMConfig = field(default_factory=LMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = ""
    max_steps: int = 10000
    grad_accum: int = 1
    precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate mixed precision)
    cpu: bool = False  # force CPU even when a GPU is present
    num_threads: int = 0  # torch intra-op threads (0 = torch's default)
    seed: int = 0
    log_every: int = 25
    val_every: int = 500
    val_batches: int = 16
    val_samples: int = 2  # generated validation utterances per validation
    ckpt_every: int = 500
    # an out_dir trained on another token set (codec hash) is deleted and training starts over, instead of
    # refusing to resume (`make lm` sets it: a retrained codec re-tokenises the corpus, so the old LM is stale)
    restart_on_new_tokens: bool = False


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch this process has consumed
    val_loss: float = float("nan")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to optim.lr, then cosine down to lr * min_lr_ratio at max_steps."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.max_steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: KoelLM, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on norms, biases, embeddings, unconditional vectors)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class BatchStream:
    """This process's batches, epoch after epoch, from a resumable position."""

    def __init__(self, data: PromptedUtterances, state: TrainState, rank: int, world: int):
        self.data, self.state, self.rank, self.world = data, state, rank, world
        self._epoch_batches: list[list[int]] | None = None

    def _mine(self) -> list[list[int]]:
        if self._epoch_batches is None:
            batches = self.data.batches(self.state.epoch)
            per_rank = len(batches) // self.world
            if per_rank == 0:
                raise ValueError(f"{len(batches)} batches per epoch cannot feed {self.world} processes")
            self._epoch_batches = batches[self.rank :: self.world][:per_rank]
        return self._epoch_batches

    def next(self) -> LMBatch:
        mine = self._mine()
        if self.state.batch_in_epoch >= len(mine):
            self.state.epoch, self.state.batch_in_epoch, self._epoch_batches = self.state.epoch + 1, 0, None
            mine = self._mine()
        indices = mine[self.state.batch_in_epoch]
        self.state.batch_in_epoch += 1
        return self.data.collate(indices, self.state.epoch)


# ---- checkpoints --------------------------------------------------------------------------------------------
def save_checkpoint(accelerator: Accelerator, model: KoelLM, optimizer, state: TrainState, directory: Path) -> None:
    """Write the latest checkpoint atomically (a new folder replaces the old one in one rename)."""
    accelerator.wait_for_everyone()
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # ZeRO shards the optimizer: accelerate saves
        accelerator.save_state(str(directory / "accelerate"))
    if accelerator.is_main_process:
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            accelerator.unwrap_model(model).save_pretrained(tmp)
            if accelerator.distributed_type != DistributedType.DEEPSPEED:
                torch.save(
                    {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt"
                )
            elif (directory / "accelerate").exists():
                (directory / "accelerate").rename(tmp / "accelerate")
            write_json_atomic(tmp / "train_state.json", vars(state))
    accelerator.wait_for_everyone()


def drop_stale_run(accelerator: Accelerator, out: Path, codec_hash: str) -> None:
    """Delete `out` when its checkpoint or final model was trained on tokens of another codec."""
    configs = [out / "checkpoint" / CONFIG_NAME, out / CONFIG_NAME]
    saved = [json.loads(p.read_text(encoding="utf-8")) for p in configs if p.is_file()]
    if {c.get("codec", {}).get("codec_hash") for c in saved} - {codec_hash} and accelerator.is_main_process:
        tqdm.write(f"tts_lm.train: {out} holds an LM trained on another codec's tokens: deleting it, starting over")
        shutil.rmtree(out)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, model: KoelLM, optimizer, directory: Path) -> TrainState:
    """Restore weights, optimizer and position from `directory` (nothing is unpickled: weights_only)."""
    saved = KoelLM.from_pretrained(directory)
    if saved.config != model.config:
        other_tokens = saved.config.codec.codec_hash != model.config.codec.codec_hash
        raise ValueError(
            f"{directory}: the checkpoint was trained with another model config or token set "
            f"(codec {saved.config.codec.codec_dir}, hash {saved.config.codec.codec_hash[:12]}); "
            "use a new out_dir, delete the checkpoint to start over"
            + (", or set restart_on_new_tokens=true" if other_tokens else "")
        )
    model.load_state_dict(saved.state_dict())
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.load_state(str(directory / "accelerate"))
    else:
        blob = torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["torch_rng"])
    return TrainState(**json.loads((directory / "train_state.json").read_text(encoding="utf-8")))


# ---- validation ---------------------------------------------------------------------------------------------
def with_other_text(batch: LMBatch) -> LMBatch:
    """The batch with each row's text replaced by the previous row's (prompts and audio unchanged)."""
    return replace(batch, phoneme_ids=batch.phoneme_ids.roll(1, 0), phoneme_lens=batch.phoneme_lens.roll(1, 0))


@torch.no_grad()
def validate(accelerator: Accelerator, model, data: PromptedUtterances, cfg: TrainConfig, weight: float) -> dict:
    """Token-weighted validation cross-entropy / accuracy (+ alignment loss) over val_batches batches.

    `text_gain` is how much the model uses the text: the ce with each row given another row's text minus the ce
    with its own (same prompts and audio), over the batches of 2+ rows. Near 0 means the model predicts the audio
    from the audio alone and will babble when it generates.
    """
    model.eval()
    batches = data.batches(0)  # sorted by length: take val_batches spread over all lengths
    batches = batches[:: max(1, len(batches) // cfg.val_batches)][: cfg.val_batches]
    batches = batches[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(6, device=accelerator.device)  # ce * n, acc * n, align * n, n, text gain * n, n (2+ rows)
    for indices in batches:
        batch = data.collate(indices).to(accelerator.device)
        with accelerator.autocast():
            out = model(batch, prior_weight=weight)
            other = model(with_other_text(batch), prior_weight=weight) if len(indices) > 1 else None
        n = out.num_tokens
        sums += torch.tensor([out.ce_loss * n, out.accuracy * n, out.align_loss * n, n, 0, 0], device=sums.device)
        if other is not None:
            sums[4:] += torch.tensor([(float(other.ce_loss) - float(out.ce_loss)) * n, n], device=sums.device)
    sums = accelerator.reduce(sums, reduction="sum")
    model.train()
    n = max(1.0, float(sums[3]))
    metrics = {"ce": float(sums[0]) / n, "accuracy": float(sums[1]) / n, "align": float(sums[2]) / n}
    metrics["text_gain"] = float(sums[4]) / float(sums[5]) if float(sums[5]) > 0 else float("nan")
    return metrics


class SampleWriter:
    """Generates a few validation utterances; decodes them to audio when the tokens' codec is loadable."""

    def __init__(self, data: PromptedUtterances, meta: dict, count: int):
        self.data, self.meta, self.count = data, meta, count
        self._codec, self._codec_error = None, None

    def codec(self):
        if self._codec is None and self._codec_error is None:
            try:
                from codec import NanoCodec

                self._codec = NanoCodec.from_pretrained(self.meta.get("codec_dir", "")).eval()
            except Exception as err:  # the codec is optional here: lengths are still logged
                self._codec_error = f"validation audio disabled: codec {self.meta.get('codec_dir')!r}: {err}"
                tqdm.write(self._codec_error)
        return self._codec

    @torch.no_grad()
    def write(self, model: KoelLM, writer, step: int) -> None:
        cfg_scale = 2.5 if model.config.cfg_dropout > 0 else 1.0
        for k, i in enumerate(self.data.usable[: self.count]):
            prompt = torch.from_numpy(self.data.prompt(i, None).astype("int64"))
            phonemes = torch.from_numpy(self.data.phonemes[i])
            if prompt.shape[1] < model.config.min_prompt_frames:
                continue
            out = model.generate_output(phonemes, prompt.to(model.device), cfg_scale=cfg_scale, seed=k)
            true = self.data.codes[i].shape[1]
            writer.add_scalar(f"val_sample/{k}_frames_ratio", float(out.lengths[0]) / true, step)
            codec = self.codec()
            if codec is not None and int(out.lengths[0]) > 0:
                wav = codec.decode(out.codes[:, :, : int(out.lengths[0])].cpu())[0]
                writer.add_audio(f"val_sample/{k}", wav.clamp(-1, 1).cpu(), step, sample_rate=codec.sample_rate)


# ---- the loop -----------------------------------------------------------------------------------------------
def lm_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    next_batch: Callable[[], LMBatch],
    cfg: TrainConfig,
    accelerator: Accelerator,
    lr: float,
    prior_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over `cfg.grad_accum` micro-batches (gradients synchronised on the last one).

    Returns (means over the micro-batches of [loss, ce, align, accuracy] as a float tensor [4] on the device, the
    gradient norm before clipping); nothing is copied to the host, so the step never waits for the device.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    totals = torch.zeros(4, device=accelerator.device)  # loss, ce, align, accuracy
    for micro in range(cfg.grad_accum):
        batch = next_batch().to(accelerator.device)
        last = micro == cfg.grad_accum - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
            result = model(batch, prior_weight=prior_weight, blank_inputs=True)
            accelerator.backward(result.loss / cfg.grad_accum)
        totals += torch.stack([result.loss.detach(), result.ce_loss, result.align_loss, result.accuracy]).float()
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return totals / cfg.grad_accum, grad_norm


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) into cfg.out_dir; returns the folder of the final model."""
    if not cfg.out_dir:
        raise ValueError("out_dir is not set: pass out_dir=runs/tts_lm/NAME")
    precision = mixed_precision("precision", cfg.precision)
    out = Path(cfg.out_dir)
    accelerator = Accelerator(mixed_precision=precision, cpu=cfg.cpu)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    ds, meta = read_tokens(cfg.data.tokens)
    cfg = replace(cfg, model=cfg.model.with_tokens(meta))
    train_data = PromptedUtterances(ds, meta, cfg.data.train_split, cfg.model, cfg.data, seed=cfg.seed)
    has_val = any(str(s) == cfg.data.val_split for s in ds["split"])
    val_data = (
        PromptedUtterances(
            ds, meta, cfg.data.val_split, cfg.model, cfg.data, train=False, limit=cfg.data.max_val_utterances
        )
        if has_val
        else None
    )

    torch.manual_seed(cfg.seed)
    model = KoelLM(cfg.model)
    groups = param_groups(model, cfg.optim.weight_decay)
    optimizer = adam(groups, decoupled=True, lr=cfg.optim.lr, betas=cfg.optim.betas)
    state = TrainState()
    checkpoint = out / "checkpoint"
    if cfg.restart_on_new_tokens:
        drop_stale_run(accelerator, out, cfg.model.codec.codec_hash)
    if (checkpoint / "train_state.json").is_file():
        state = load_checkpoint(accelerator, model, optimizer, checkpoint)
    model, optimizer = accelerator.prepare(model, optimizer)
    stream = BatchStream(train_data, state, accelerator.process_index, accelerator.num_processes)

    writer = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        skipped = {k: v for k, v in train_data.skipped.items() if v}
        tqdm.write(
            f"tts_lm.train: {accelerator.unwrap_model(model).num_parameters() / 1e6:.2f} M parameters, "
            f"{len(train_data)} train utterances"
            + (f" (left out: {skipped})" if skipped else "")
            + (f", {len(val_data)} validation" if val_data else ", no validation split")
            + (f"; resuming at step {state.step}" if state.step else "")
        )
    samples = SampleWriter(val_data, meta, cfg.val_samples) if val_data and cfg.val_samples else None
    a = cfg.model.alignment
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="lm", disable=not accelerator.is_main_process)
    tic, logged = time.time(), state.step
    model.train()
    while state.step < cfg.max_steps:
        lr = learning_rate(state.step, cfg)
        weight = prior_weight(state.step, a.prior_anneal_start, a.prior_anneal_end)
        totals, grad_norm = lm_train_step(model, optimizer, stream.next, cfg, accelerator, lr, weight)
        state.step += 1
        bar.update(1)

        if writer is not None and (state.step % cfg.log_every == 0 or state.step == cfg.max_steps):
            loss, ce, align, acc = totals.tolist()
            rate = (state.step - logged) / max(1e-9, time.time() - tic)
            tic, logged = time.time(), state.step
            for name, value in {
                "loss": loss, "ce": ce, "align": align, "accuracy": acc, "lr": lr, "prior_weight": weight,
                "grad_norm": float(grad_norm), "steps_per_s": rate, "epoch": state.epoch,
            }.items():  # fmt: skip
                writer.add_scalar(f"train/{name}", value, state.step)
            bar.set_postfix(ce=f"{ce:.3f}", acc=f"{acc:.2f}", align=f"{align:.2f}", ep=state.epoch)
        if val_data is not None and (state.step % cfg.val_every == 0 or state.step == cfg.max_steps):
            metrics = validate(accelerator, model, val_data, cfg, weight)
            state.val_loss = metrics["ce"]
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, state.step)
                tqdm.write(
                    f"step {state.step}: val ce {metrics['ce']:.4f} acc {metrics['accuracy']:.3f} "
                    f"text gain {metrics['text_gain']:.3f}"
                )
                if samples is not None:
                    samples.write(accelerator.unwrap_model(model).eval(), writer, state.step)
                    model.train()
        if state.step % cfg.ckpt_every == 0 and state.step < cfg.max_steps:
            save_checkpoint(accelerator, model, optimizer, state, checkpoint)
    bar.close()

    save_checkpoint(accelerator, model, optimizer, state, checkpoint)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out)  # model.safetensors last: marks the run complete
        writer.close()
    accelerator.wait_for_everyone()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tts_lm.train",
        description="Train the Koel-style TTS LM on a token set (resumes from OUT_DIR/checkpoint).",
        epilog="example: python -m tts_lm.train configs/lm/cpu.yaml data.tokens=runs/tokens/cpu_12.5fps "
        "out_dir=runs/tts_lm/cpu_12.5fps max_steps=2000",
    )
    parser.add_argument("config", help="YAML config (configs/lm/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=5e-4 model.d_model=128")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        train(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"tts_lm.train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
