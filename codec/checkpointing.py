"""Codec training checkpoints: everything needed to resume a GAN run exactly, written atomically, never pickled.

    out_dir/
      model.safetensors, config.json          the FINAL model (NanoCodec.save_pretrained), written when training ends
      train_config.yaml                       the resolved TrainConfig of the run
      logs/                                   tensorboard
      checkpoints/step_00001000/              one directory per checkpoint, moved into place atomically
        model.safetensors, config.json        the generator (loadable with NanoCodec.from_pretrained)
        train_state/
          discriminator.safetensors           trainable discriminator weights (the frozen WavLM is not stored)
          optimizer_generator.pt              Adam states, torch.save of tensors/numbers only
          optimizer_discriminator.pt          (read back with torch.load(weights_only=True))
          state.json                          {"step": ..., "model": CodecConfig as a dict}

The final `out_dir/model.safetensors` is written last, so a Makefile target on it completes only when training
has finished. No RNG state is stored: the training loop reseeds from (seed, step, rank) every step and draws
its data from (seed, step), so restoring the weights, optimizers and step restores the run exactly.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from codec.model import NanoCodec
from common.fileio import atomic_path, write_json_atomic

CHECKPOINTS_DIR = "checkpoints"
STATE_DIR = "train_state"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used to resume; the message names it and says what to do."""


@dataclass
class Checkpoint:
    """What a checkpoint restores (tensors on CPU)."""

    step: int
    generator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor]
    optimizer_generator: dict
    optimizer_discriminator: dict
    model_config: dict


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories under out_dir/checkpoints, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(out_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    generator: NanoCodec,
    discriminator_state: dict[str, torch.Tensor],
    optimizer_generator: torch.optim.Optimizer,
    optimizer_discriminator: torch.optim.Optimizer,
    model_config: dict,
    keep: int = 2,
) -> Path:
    """Write out_dir/checkpoints/step_XXXXXXXX atomically (a temporary directory renamed at the end); keep the
    newest `keep` checkpoints. Call on the main process only. Returns the checkpoint directory."""
    final = Path(out_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"
    with atomic_path(final, suffix="") as tmp:
        tmp.mkdir(parents=True)
        generator.save_pretrained(tmp)
        state_dir = tmp / STATE_DIR
        state_dir.mkdir()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in discriminator_state.items()},
            state_dir / "discriminator.safetensors",
        )
        torch.save(optimizer_generator.state_dict(), state_dir / "optimizer_generator.pt")
        torch.save(optimizer_discriminator.state_dict(), state_dir / "optimizer_discriminator.pt")
        write_json_atomic(state_dir / "state.json", {"step": step, "model": model_config})
    for old in checkpoint_dirs(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint directory written by `save_checkpoint` (safetensors + weights_only torch.load)."""
    directory = Path(directory)
    state_dir = directory / STATE_DIR
    try:
        state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        generator = load_file(directory / "model.safetensors")
        discriminator = load_file(state_dir / "discriminator.safetensors")
        opt_g = torch.load(state_dir / "optimizer_generator.pt", map_location="cpu", weights_only=True)
        opt_d = torch.load(state_dir / "optimizer_discriminator.pt", map_location="cpu", weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{directory}: unreadable checkpoint ({type(e).__name__}: {e}); delete this directory to resume "
            "from the one before it"
        ) from e
    return Checkpoint(int(state["step"]), generator, discriminator, opt_g, opt_d, state["model"])
