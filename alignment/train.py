"""Preference alignment, step 2 (`train`): DPO / RPO of the LM on its own (chosen, rejected) pairs.

    out = train(cfg)          # AlignConfig; OUT/pairs -> OUT/model.safetensors + config.json (+ phonemes.json)

Policy and reference both start as the LM that made the pairs (cfg.lm); the reference stays frozen (eval mode,
requires_grad False, never handed to the optimizer). One micro-batch of B pairs is ONE teacher-forced forward of
2B rows (chosen rows, then rejected rows, the prompt and phonemes of the pair's item, conditional: no guidance
drop) through each model; a row's log-probability is the sum over its audio steps and codebooks of
log p(code), the audio EOS after the last frame included (alignment.losses.sequence_logprobs), and
alignment.losses turns the four sums into the DPO / RPO loss and the implicit rewards
beta * (log pi - log ref), whose margins and accuracies are logged (tensorboard OUT/tb/, progress bar).

The loop is tts_lm.train's, piece by piece: `BatchStream` (resumable position in seeded epochs; PairData
offers the `batches(epoch)` / `collate(indices, epoch)` it needs), `learning_rate` (warmup + cosine),
`param_groups`, and `save_checkpoint` / `load_checkpoint` (OUT/checkpoint: weights, optimizer, torch RNG, step;
atomic). Rerunning the same command resumes, and an interrupted run ends with the weights of an uninterrupted
one; a checkpoint made from other pairs or another LM (OUT/checkpoint_source.json) is refused, not continued.
Runs on HF accelerate like the LM trainer (mixed precision, DDP via `accelerate launch`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from alignment.config import AlignConfig, LossConfig
from alignment.losses import PreferenceLoss, dpo_loss, rpo_loss, sequence_logprobs
from alignment.pairs import load_pairs
from alignment.scoring import weights_hash
from common.config import mixed_precision, save_config
from common.fileio import write_json_atomic
from common.optim import adam
from text.vocab import PhonemeVocab
from tts_lm.model import KoelLM, LMBatch
from tts_lm.synthesizer import VOCAB_NAME
from tts_lm.train import BatchStream, TrainState, learning_rate, load_checkpoint, param_groups, save_checkpoint

SOURCE_NAME = "checkpoint_source.json"  # which LM and pairs OUT/checkpoint was trained from


class PairData:
    """The pairs of one split in memory; `batches(epoch)` and `collate(indices, epoch)` as tts_lm.train expects.

    A batch of B pairs collates to an LMBatch of 2B rows: rows 0..B-1 the chosen samples, B..2B-1 the rejected.
    """

    def __init__(self, ds: datasets.Dataset, split: str, batch_size: int, seed: int = 0, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"train.batch_size={batch_size} must be at least 1")
        rows = [i for i, s in enumerate(ds["split"]) if s == split]
        sub = ds.select(rows).with_format("numpy")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.ids = [str(x) for x in sub["id"]]
        self.phonemes = [np.asarray(p, dtype=np.int64) for p in sub["phoneme_ids"]]
        self.prompts = [np.stack(p).astype(np.int64) for p in sub["prompt_codes"]]  # [K, P] each
        self.chosen = [_codes(c, self.prompts[i].shape[0]) for i, c in enumerate(sub["chosen_codes"])]
        self.rejected = [_codes(c, self.prompts[i].shape[0]) for i, c in enumerate(sub["rejected_codes"])]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of an epoch: a seeded permutation of the pairs (or their order) cut into batch_size runs."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self)) if self.shuffle else range(len(self))
        order = [int(i) for i in order]
        return [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]

    def collate(self, indices: list[int], epoch: int = 0) -> LMBatch:
        """Pairs -> LMBatch of 2B rows (chosen..., rejected...), right-padded, conditional."""
        rows = [*indices, *indices]
        codes = [self.chosen[i] for i in indices] + [self.rejected[i] for i in indices]
        return LMBatch(
            phoneme_ids=_pad([self.phonemes[i] for i in rows]),
            phoneme_lens=torch.tensor([len(self.phonemes[i]) for i in rows]),
            prompt_codes=_pad([self.prompts[i] for i in rows]),
            prompt_lens=torch.tensor([self.prompts[i].shape[1] for i in rows]),
            codes=_pad(codes),
            code_lens=torch.tensor([c.shape[1] for c in codes]),
            uncond=torch.zeros(len(rows), dtype=torch.bool),
        )


def _codes(value, num_codebooks: int) -> np.ndarray:
    """A stored [K, F] column value (F may be 0) -> int64 [K, F]."""
    rows = [np.asarray(r, dtype=np.int64) for r in value]
    return np.stack(rows) if rows and rows[0].size else np.zeros((num_codebooks, 0), dtype=np.int64)


def _pad(rows: list[np.ndarray]) -> torch.Tensor:
    """[..., n_i] arrays -> long [B, ..., max n] right-padded with zeros (at least one column)."""
    width = max(1, max(r.shape[-1] for r in rows))
    out = torch.zeros(len(rows), *rows[0].shape[:-1], width, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, ..., : r.shape[-1]] = torch.from_numpy(r)
    return out


# ---- the loss of one batch -----------------------------------------------------------------------------------
def batch_logprobs(model, lm: KoelLM, batch: LMBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed audio-token log-probabilities and token counts per row: (float [R], long [R]).

    `model` is what to run (the policy as accelerate wrapped it, or the reference); `lm` the bare KoelLM.
    """
    out = model(batch, return_logits=True)
    target, _ = lm.audio_targets(batch.codes, batch.code_lens)  # (R, C, Q)
    target = target.transpose(1, 2)[:, : out.logits.shape[1]]  # (R, Q, C)
    return sequence_logprobs(out.logits, target, ignore_index=lm.config.audio_pad)


def preference_loss(model, reference: KoelLM, batch: LMBatch, cfg: LossConfig) -> PreferenceLoss:
    """DPO / RPO of one collated batch (chosen rows first, rejected rows second)."""
    policy_logp, tokens = batch_logprobs(model, reference, batch)  # the reference has the policy's config
    with torch.no_grad():
        ref_logp, _ = batch_logprobs(reference, reference, batch)
    pc, pr = policy_logp.chunk(2)  # (B,) each
    rc, rr = ref_logp.chunk(2)
    if cfg.kind == "dpo":
        return dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
    if cfg.kind == "rpo":
        return rpo_loss(pc, pr, rc, rr, tokens.chunk(2)[0], cfg.beta, cfg.rpo_alpha, cfg.label_smoothing)
    raise ValueError(f"loss.kind={cfg.kind!r}: use dpo or rpo")


@torch.no_grad()
def validate(accelerator: Accelerator, model, reference: KoelLM, data: PairData, cfg: LossConfig) -> dict:
    """Pair-weighted means of the loss and implicit-reward metrics over all validation pairs (this rank's share)."""
    model.eval()
    sums, count = {}, 0
    for indices in data.batches(0)[accelerator.process_index :: accelerator.num_processes]:
        with accelerator.autocast():
            result = preference_loss(model, reference, data.collate(indices).to(accelerator.device), cfg)
        for name, value in result.metrics().items():
            sums[name] = sums.get(name, 0.0) + value * len(indices)
        count += len(indices)
    model.train()
    names = sorted(sums)
    totals = accelerator.reduce(torch.tensor([*(sums[n] for n in names), count], device=accelerator.device), "sum")
    return {n: float(totals[k]) / max(1.0, float(totals[-1])) for k, n in enumerate(names)}


# ---- the loop ------------------------------------------------------------------------------------------------
def save_vocab(cfg: AlignConfig, out: Path) -> None:
    """OUT/phonemes.json: the LM's own (or its token set's) vocabulary, so Synthesizer.from_pretrained(OUT) reads
    the ids the LM was trained with."""
    own = Path(cfg.lm) / VOCAB_NAME
    meta = Path(cfg.tokens) / "meta.json"
    if own.is_file():
        shutil.copyfile(own, out / VOCAB_NAME)
    elif cfg.tokens and meta.is_file():
        vocab = json.loads(meta.read_text(encoding="utf-8")).get("phoneme_vocab")
        if vocab is not None:
            PhonemeVocab.from_dict(vocab, source=str(meta)).save(out / VOCAB_NAME)


def train(cfg: AlignConfig) -> Path:
    """DPO / RPO from OUT/pairs (resuming from OUT/checkpoint); returns OUT, where the aligned LM is saved."""
    t = cfg.train
    if not cfg.out_dir or not cfg.lm:
        raise ValueError("lm and out_dir must be set: lm=runs/tts_lm/NAME out_dir=runs/align/NAME")
    precision = mixed_precision("train.precision", t.precision)
    if cfg.loss.kind not in ("dpo", "rpo"):
        raise ValueError(f"loss.kind={cfg.loss.kind!r}: use dpo or rpo")
    out = Path(cfg.out_dir)
    ds, pairs_meta = load_pairs(out)
    if pairs_meta.get("lm_hash") != weights_hash(cfg.lm):
        raise ValueError(
            f"{out}/pairs were sampled from another LM than lm={cfg.lm}; DPO needs pairs of the model it trains "
            f"(rerun `python -m alignment pairs ...` into a new out_dir)"
        )
    accelerator = Accelerator(mixed_precision=precision, cpu=t.cpu)
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    train_data = PairData(ds, "train", t.batch_size, seed=t.seed)
    val_data = PairData(ds, "validation", t.batch_size, shuffle=False)
    if len(train_data) == 0:
        raise ValueError(f"{out}/pairs has no train pairs (all {len(ds)} are validation); lower pairs.val_fraction")

    torch.manual_seed(t.seed)
    policy = KoelLM.from_pretrained(cfg.lm).train()
    reference = KoelLM.from_pretrained(cfg.lm, device=accelerator.device).eval().requires_grad_(False)
    optimizer = adam(param_groups(policy, t.optim.weight_decay), decoupled=True, lr=t.optim.lr, betas=t.optim.betas)
    state, checkpoint = TrainState(), out / "checkpoint"
    source = {"lm_hash": pairs_meta["lm_hash"], "pairs_plan": pairs_meta["plan"]}
    if (checkpoint / "train_state.json").is_file():
        recorded = json.loads((out / SOURCE_NAME).read_text(encoding="utf-8")) if (out / SOURCE_NAME).is_file() else {}
        if recorded != source:
            raise ValueError(
                f"{checkpoint} was trained on other pairs or from another LM than {out}/pairs now holds; delete "
                f"{checkpoint} (and {out}/model.safetensors) to train on the new pairs, or use a new out_dir"
            )
        state = load_checkpoint(accelerator, policy, optimizer, checkpoint)
    elif accelerator.is_main_process:
        write_json_atomic(out / SOURCE_NAME, source)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    stream = BatchStream(train_data, state, accelerator.process_index, accelerator.num_processes)

    writer = None
    if accelerator.is_main_process:
        save_config(cfg, out / "align_config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        tqdm.write(
            f"alignment train: {cfg.loss.kind.upper()} (beta {cfg.loss.beta:g}) on {len(train_data)} "
            f"pairs ({len(val_data)} validation), {t.batch_size} pairs x {t.grad_accum} per step, {t.max_steps} "
            f"steps" + (f"; resuming at step {state.step}" if state.step else "")
        )
    bar = tqdm(total=t.max_steps, initial=state.step, desc="align", disable=not accelerator.is_main_process)
    tic, logged = time.time(), state.step
    while state.step < t.max_steps:
        lr = learning_rate(state.step, t)  # AlignTrainConfig has the `optim` and `max_steps` it reads
        for group in optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = {}
        for micro in range(t.grad_accum):
            batch = stream.next().to(accelerator.device)
            last = micro == t.grad_accum - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(policy), accelerator.autocast():
                result = preference_loss(policy, reference, batch, cfg.loss)
                accelerator.backward(result.loss / t.grad_accum)
            for name, value in result.metrics().items():
                totals[name] = totals.get(name, 0.0) + value / t.grad_accum
        grad_norm = accelerator.clip_grad_norm_(policy.parameters(), t.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        bar.update(1)

        if writer is not None and (state.step % t.log_every == 0 or state.step == t.max_steps):
            rate = (state.step - logged) / max(1e-9, time.time() - tic)
            tic, logged = time.time(), state.step
            scalars = {**totals, "lr": lr, "grad_norm": float(grad_norm), "steps_per_s": rate, "epoch": state.epoch}
            for name, value in scalars.items():
                writer.add_scalar(f"train/{name}", value, state.step)
            bar.set_postfix(
                loss=f"{totals['loss']:.4f}", margin=f"{totals['reward_margin']:.3f}",
                acc=f"{totals['reward_accuracy']:.2f}", ep=state.epoch,
            )  # fmt: skip
        if len(val_data) and (state.step % t.val_every == 0 or state.step == t.max_steps):
            metrics = validate(accelerator, policy, reference, val_data, cfg.loss)
            state.val_loss = metrics["loss"]
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, state.step)
                tqdm.write(
                    f"step {state.step}: val loss {metrics['loss']:.4f}, reward margin {metrics['reward_margin']:.4f}, "
                    f"reward accuracy {metrics['reward_accuracy']:.3f}"
                )
        if state.step % t.ckpt_every == 0 and state.step < t.max_steps:
            save_checkpoint(accelerator, policy, optimizer, state, checkpoint)
    bar.close()

    save_checkpoint(accelerator, policy, optimizer, state, checkpoint)
    if accelerator.is_main_process:
        save_vocab(cfg, out)
        accelerator.unwrap_model(policy).save_pretrained(out)  # model.safetensors last: marks the run complete
        writer.close()
    accelerator.wait_for_everyone()
    return out
