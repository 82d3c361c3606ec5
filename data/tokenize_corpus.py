"""Stage 2 (`make tokenize`): encode a corpus once with a trained codec -> a sharded Hugging Face dataset.

    python -m data.tokenize_corpus --codec runs/codec/cpu_12.5fps --manifest runs/data/cpu/manifest.jsonl \\
        --out runs/tokens/cpu_12.5fps [--workers 2]            # CPU: a local pool of 1-thread processes
    accelerate launch -m data.tokenize_corpus ...               # or torchrun: one rank per GPU (or CPU process)

    ds, meta = load_tokens("runs/tokens/cpu_12.5fps")         # == datasets.load_from_disk(...), + meta.json

Output (one row per usable utterance, in manifest order): id, speaker, text, phoneme_ids (PhonemeVocab ids,
no BOS/EOS), codes (int16 [K, F]), num_frames (F = ceil(samples / samples_per_frame)), duration, split.
OUT/meta.json holds the codec's config and hash, the frame geometry, the phoneme vocabulary, counts,
skips per reason, the speaker index (split -> speaker -> ids) and, for validation/test, a fixed voice
prompt per utterance (another utterance of the same speaker); OUT/skipped.jsonl names every skipped file.

Layout and the merge. Each process writes whole shards under OUT/shards/ (data.token_shards: fixed runs of
the manifest, named by a hash of their inputs, written to a temp name and renamed). When every shard exists,
rank 0 writes the index: a `state.json` + `dataset_info.json` in OUT listing the shards' Arrow files in
shard order (the same files `datasets.concatenate_datasets` would chain), so `load_from_disk(OUT)`
memory-maps them without copying, and the result does not depend on how many processes wrote them.
meta.json is written last: it marks the output complete. A rerun skips finished shards, so a killed run
resumes; an OUT made with another codec (hash) is refused, never mixed (or, with --replace-other-codec,
deleted and redone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm import tqdm

from codec import CodecError, NanoCodec
from common.config import config_to_dict
from common.fileio import write_json_atomic
from common.parallel import run_spawned_pool
from data.manifest import VOCAB_NAME, ManifestError, read_manifest
from data.token_index import META_NAME, SHARDS_DIR, load_tokens, merge, plan_fingerprint, speaker_prompts
from data.token_shards import (
    FORMAT_VERSION,
    EncodeSettings,
    Shard,
    ShardResult,
    TokenizeError,
    encode_shard,
    plan_shards,
    shard_done,
)
from text.vocab import PhonemeVocab

__all__ = ["TokenizeError", "load_tokens", "resolve_codec", "speaker_prompts", "tokenize_corpus", "main"]

log = logging.getLogger("data.tokenize_corpus")

CODEC_NAME = "codec.json"  # written before the first shard, so an interrupted OUT is also guarded


# ---- the codec -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecSource:
    """Where the codec came from and what identifies it: sha256 of its weights file + its config."""

    source: str  # as given on the command line
    path: str  # local folder (model.safetensors + config.json) or .nemo file
    hash: str
    config: dict[str, Any]


def resolve_codec(source: str) -> CodecSource:
    """A folder saved by `save_pretrained`, a `.nemo` file, or a hub id (from the local cache when offline)."""
    path = Path(source)
    if path.suffix == ".nemo":
        if not hasattr(NanoCodec, "from_nemo"):
            raise TokenizeError(
                f"--codec {source}: loading NVIDIA .nemo checkpoints is not supported yet (issue 4); pass a folder "
                "written by NanoCodec.save_pretrained (model.safetensors + config.json) instead"
            )
        if not path.is_file():
            raise TokenizeError(f"--codec {source}: no such .nemo file")
        config = _config_dict(NanoCodec.from_nemo(str(path)))
        return CodecSource(source, str(path.resolve()), _hash_codec(path, config), config)
    if not path.exists() and "/" in source and not source.startswith((".", "/")):
        path = _download(source)
        nemo = sorted(path.glob("*.nemo"))
        if not (path / "model.safetensors").is_file() and nemo:
            return resolve_codec(str(nemo[0]))
    weights, config_file = path / "model.safetensors", path / "config.json"
    if not (weights.is_file() and config_file.is_file()):
        raise TokenizeError(
            f"--codec {source}: expected a codec folder with model.safetensors and config.json "
            "(train one with `make codec`), a .nemo file or a hub id"
        )
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return CodecSource(source, str(path.resolve()), _hash_codec(weights, config), config)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["model.safetensors", "config.json", "*.nemo"]))
    except Exception as e:
        raise TokenizeError(f"--codec {repo_id}: not a local folder and not downloadable from the hub ({e})") from e


def _hash_codec(weights: Path, config: dict[str, Any]) -> str:
    h = hashlib.sha256()
    with weights.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()


def _config_dict(model: NanoCodec) -> dict[str, Any]:
    return config_to_dict(model.cfg)


def load_codec(src: CodecSource, device: str | torch.device = "cpu") -> NanoCodec:
    """The codec in eval mode on `device`."""
    if src.path.endswith(".nemo"):
        model = NanoCodec.from_nemo(src.path)
    else:
        model = NanoCodec.from_pretrained(src.path)
    return model.to(device).eval()


# ---- the output folder -------------------------------------------------------------------------------------


def _claim_out(out: Path, src: CodecSource, replace_other_codec: bool = False) -> None:
    """Refuse an OUT written with another codec (or not a token folder at all); else record our codec.

    With `replace_other_codec` a token folder of another codec is deleted instead and encoded anew (what
    `make tokenize` wants after the codec was retrained: the old codes are stale by construction).
    """
    for name in (META_NAME, CODEC_NAME):
        if (out / name).is_file():
            theirs = json.loads((out / name).read_text(encoding="utf-8")).get("codec_hash")
            if theirs != src.hash and replace_other_codec and isinstance(theirs, str):  # a token folder only
                log.info("%s holds tokens of another codec (hash %s): deleting them", out, str(theirs)[:12])
                shutil.rmtree(out)
                break
            if theirs != src.hash:
                raise TokenizeError(
                    f"{out} holds tokens of another codec (hash {str(theirs)[:12]}, this one {src.hash[:12]}); "
                    f"codes of two codecs are never mixed: choose a new --out (e.g. runs/tokens/<codec-name>), "
                    f"delete {out}, or pass --replace-other-codec"
                )
    if out.is_dir() and any(out.iterdir()) and not (out / CODEC_NAME).is_file():
        raise TokenizeError(f"{out} exists and is not a token dataset folder; choose a new or empty --out")
    if not (out / CODEC_NAME).is_file():
        write_json_atomic(out / CODEC_NAME, {"codec_hash": src.hash, "codec_dir": src.path, "codec_config": src.config})


def default_shard_size(num_utterances: int) -> int:
    """About 64 shards for small corpora (so processes share work), 16..1000 utterances each."""
    return max(16, min(1000, -(-num_utterances // 64)))


def load_vocab(manifest: Path) -> PhonemeVocab:
    """The manifest's own `phonemes.json` if present, else the fixed default inventory."""
    path = manifest.parent / VOCAB_NAME
    if not path.is_file():
        return PhonemeVocab.default()
    try:
        return PhonemeVocab.load(path)
    except ValueError as e:
        raise TokenizeError(f"{e}; rebuild it with the corpus (make data) or delete it to use the default") from e


# ---- running shards ---------------------------------------------------------------------------------------


class _Progress:
    """tqdm over hours of audio, with the rate in hours of audio per second of wall time."""

    def __init__(self, seconds: float, desc: str, disable: bool = False) -> None:
        fmt = "{l_bar}{bar}| {n:.3f}/{total:.3f} h audio [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=seconds / 3600, desc=desc, bar_format=fmt, disable=disable, dynamic_ncols=True)
        self.start, self.seconds, self.total = time.monotonic(), 0.0, seconds

    def __call__(self, seconds: float) -> None:
        done = min(self.seconds + seconds, self.total)  # [0, total]: float sums must not overshoot the bar
        rate = done / 3600 / max(time.monotonic() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:.4f} h audio/s = {rate * 3600:.1f}x real time", refresh=False)
        self.seconds = done
        self.bar.n = done / 3600
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


_WORKER: dict[str, Any] = {}


def _worker_init(src: CodecSource, vocab: PhonemeVocab, settings: EncodeSettings, shards_dir: Path, q: Any) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datasets.disable_progress_bars()
    _WORKER.update(codec=load_codec(src), vocab=vocab, settings=settings, shards_dir=shards_dir, queue=q)


def _worker_encode(shard: Shard) -> ShardResult:
    w = _WORKER
    return encode_shard(shard, w["codec"], w["vocab"], w["settings"], w["shards_dir"], progress=w["queue"].put)


def _run_pool(
    pending: list[Shard],
    workers: int,
    src: CodecSource,
    vocab: PhonemeVocab,
    settings: EncodeSettings,
    shards_dir: Path,
    bar: _Progress,
) -> None:
    """Encode `pending` on a local pool of `workers` single-thread CPU processes (shards handed out in order).

    The first failure cancels the shards not yet started and is re-raised; a worker that dies (killed, out
    of memory) raises BrokenProcessPool instead of hanging the run.
    """
    run_spawned_pool(_worker_encode, pending, workers, _worker_init, (src, vocab, settings, shards_dir), bar)


# ---- the whole run ------------------------------------------------------------------------------------------


def tokenize_corpus(
    codec: str,
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    settings: EncodeSettings = EncodeSettings(),
    shard_size: int | None = None,
    workers: int = 1,
    max_shards: int | None = None,
    device: str | None = None,
    replace_other_codec: bool = False,
) -> dict[str, Any] | None:
    """Tokenise `manifest` into `out`; returns meta (None on ranks > 0, or when `max_shards` stopped early).

    An `out` holding tokens of another codec is refused, or deleted and redone with `replace_other_codec`.

    Under torchrun / `accelerate launch` (WORLD_SIZE > 1) rank r encodes the shards i with i % world == r and
    rank 0 merges after a barrier; otherwise `workers` local CPU processes share the pending shards.
    """
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    out, manifest = Path(out), Path(manifest)
    rank, world, state = 0, 1, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        # ranks may finish hours apart before the merge's barrier: a long timeout
        state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=48))
        rank, world = state.process_index, state.num_processes
        if world != int(os.environ["WORLD_SIZE"]):
            raise TokenizeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate set up {world} process(es)")
        device = device or str(state.device)
        if workers > 1:
            raise TokenizeError("--workers is for one process; under torchrun/accelerate each rank is a worker")
    device = device or ("cuda" if torch.cuda.is_available() and workers == 1 else "cpu")

    src = resolve_codec(codec)
    utts = read_manifest(manifest, check_files=False)  # a missing audio file is skipped and counted, not fatal
    vocab = load_vocab(manifest)
    if rank == 0:
        _claim_out(out, src, replace_other_codec)
    if state is not None:
        state.wait_for_everyone()
        _claim_out(out, src)
    size = shard_size or default_shard_size(len(utts))
    vocab_hash = hashlib.sha256(json.dumps(vocab.to_dict(), sort_keys=True).encode()).hexdigest()
    plan = plan_shards(utts, size, salt=f"{src.hash}|{vocab_hash}|{settings.key()}")
    fingerprint = plan_fingerprint(plan)
    meta_path = out / META_NAME
    if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("plan") == fingerprint:
        log.info("%s is up to date (%d utterances in %d shards)", out, len(utts), len(plan))
        if rank == 0:
            os.utime(meta_path)  # newer than its inputs again, for make
        return json.loads(meta_path.read_text(encoding="utf-8")) if rank == 0 else None

    shards_dir = out / SHARDS_DIR
    pending = [s for s in plan[rank::world] if not shard_done(shards_dir, s)][:max_shards]
    model = load_codec(src, device)
    if model.codebook_size > np.iinfo(np.int16).max + 1:
        raise TokenizeError(f"--codec {codec}: {model.codebook_size} codes per codebook do not fit the int16 column")
    log.info(
        "%s: %d utterances in %d shards of %d; %d shard(s) to encode (%s, %d process(es), %g FPS codec)",
        manifest,
        len(utts),
        len(plan),
        size,
        len(pending),
        device,
        max(world, workers),
        model.frame_rate,
    )
    _encode_pending(pending, model, src, vocab, settings, shards_dir, workers, rank, world)
    if state is not None:
        state.wait_for_everyone()
    if max_shards is not None and not all(shard_done(shards_dir, s) for s in plan):
        log.info("stopped after %d shard(s) (--max-shards); run again to continue", len(pending))
        return None
    if rank != 0:
        return None
    base = {
        "format_version": FORMAT_VERSION,
        "codec_hash": src.hash,
        "codec_dir": src.path,
        "codec_source": src.source,
        "codec_config": src.config,
        "sample_rate": model.sample_rate,
        "frame_rate": model.frame_rate,
        "samples_per_frame": model.samples_per_frame,
        "num_codebooks": model.num_codebooks,
        "codebook_size": model.codebook_size,
        "manifest": str(manifest.resolve()),
        "settings": {"min_seconds": settings.min_seconds, "max_seconds": settings.max_seconds, "shard_size": size},
        "plan": fingerprint,
        "num_shards": len(plan),
    }
    meta = merge(out, plan, base, vocab)
    c = meta["counts"]
    skips = {k: v for k, v in meta["skipped"].items() if v}
    log.info(
        "%s: %d utterances (%.3f h) tokenized, %d skipped %s", out, c["tokenized"], c["hours"], c["skipped"], skips
    )
    return meta


def _encode_pending(
    pending: list[Shard],
    model: NanoCodec,
    src: CodecSource,
    vocab: PhonemeVocab,
    settings: EncodeSettings,
    shards_dir: Path,
    workers: int,
    rank: int,
    world: int,
) -> None:
    """Encode this process's pending shards (in-process, or on a local pool), with a progress bar."""
    audio = sum(s.seconds for s in pending)
    desc = f"tokenize (rank {rank}/{world})" if world > 1 else "tokenize"
    bar = _Progress(audio, desc, disable=rank != 0 or not pending)
    start = time.monotonic()
    if workers > 1 and len(pending) > 1:
        _run_pool(pending, min(workers, len(pending)), src, vocab, settings, shards_dir, bar)
    else:
        for shard in pending:
            encode_shard(shard, model, vocab, settings, shards_dir, progress=bar)
    bar.close()
    if pending:
        wall = time.monotonic() - start
        log.info("encoded %.3f h of audio in %.1f s: %.2f s of audio per second", audio / 3600, wall, audio / wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data.tokenize_corpus",
        description="Encode every utterance of a manifest with a codec -> sharded HF dataset of codes + meta.json. "
        "Resumable (rerun to continue), multi-process (--workers, or torchrun / accelerate launch).",
    )
    p.add_argument("--codec", required=True, help="codec folder (save_pretrained), hub id, or .nemo file")
    p.add_argument("--manifest", required=True, help="manifest.jsonl (data.manifest); phonemes.json beside it")
    p.add_argument("--out", required=True, help="output folder, one per codec (e.g. runs/tokens/cpu_12.5fps)")
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=EncodeSettings.batch_seconds,
        help="padded audio seconds per encoder call: speed and memory only, never the codes (default %(default)s)",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="utterances per shard (default: ~64 shards, 16..1000 utterances each)",
    )
    p.add_argument("--workers", type=int, default=1, help="local CPU processes, 1 thread each (default 1)")
    p.add_argument("--min-seconds", type=float, default=EncodeSettings.min_seconds, help="skip shorter (%(default)s)")
    p.add_argument("--max-seconds", type=float, default=EncodeSettings.max_seconds, help="skip longer (%(default)s)")
    p.add_argument(
        "--max-shards",
        type=int,
        default=None,
        help="encode at most N shards, then stop without merging (time-limited jobs; rerun to go on)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: the rank's GPU if any, else cpu)")
    p.add_argument(
        "--replace-other-codec",
        action="store_true",
        help="if OUT holds tokens of another codec (e.g. before a retrain), delete them and start over "
        "(default: refuse; `make tokenize` passes this)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = EncodeSettings(args.min_seconds, args.max_seconds, args.batch_seconds)
    try:
        tokenize_corpus(
            args.codec,
            args.manifest,
            args.out,
            settings,
            args.shard_size,
            args.workers,
            args.max_shards,
            args.device,
            args.replace_other_codec,
        )
    except (TokenizeError, ManifestError, CodecError) as e:  # errors a user can fix: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
