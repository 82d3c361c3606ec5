"""Preference alignment, step 1 (`pairs`): sample candidates per item, score them, keep (chosen, rejected) pairs.

    meta = make_pairs(cfg, workers=1)          # AlignConfig -> OUT/pairs/ (a `datasets` dataset + meta.json)
    ds, meta = load_pairs(OUT)

Items (alignment.scoring): `pairs.corpus_items` train utterances of the token set with their 3-5 s
speaker-prompt crops, plus `pairs.challenge_items` generated challenging texts (alignment.challenge_texts) with
train speakers' prompts. Per item, `num_candidates` samples come from the current LM in one batch (a generator
seeded from the item id, so a sample never depends on the shard layout or the process that made it), are
decoded, transcribed and embedded (CER, similarity to the prompt), and alignment.ranking picks the
pair; items without a clear preference are recorded in skipped.jsonl with every candidate's scores.

Rows (one per kept pair): id, kind, split ("train" / "validation": a hash of the id against
`pairs.val_fraction`), text, speaker, phoneme_ids, prompt_codes / chosen_codes / rejected_codes (int16 [K, F]),
the chosen and rejected CER, similarity and transcript, and every candidate's CER, similarity, frame count,
Pareto rank and stop reason.

Resume and parallel work, as in tokenisation: the items are cut into shards of `pairs.shard_size`; a shard's
folder name carries a hash of everything its rows depend on (the items, the LM and codec weights, the sampling,
scoring and selection settings) and is written under a temporary name and renamed, so it exists whole or not
at all and a rerun skips it. `--workers N` shares pending shards among N local processes (1 thread each);
under torchrun / `accelerate launch` rank r makes shards i % world == r. When every shard exists, rank 0
concatenates them into OUT/pairs/ (atomically; meta.json inside, which marks it complete).

OUT/pair_shards/<index>-<key>/   one shard: dataset files + skipped.json
OUT/pairs/                       the merged dataset, skipped.jsonl, meta.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm import tqdm

from alignment.config import AlignConfig, PairsConfig
from alignment.ranking import select_pair
from alignment.scoring import (
    PromptedText,
    Scorer,
    challenge_items,
    codec_source,
    corpus_items,
    item_seed,
    load_models,
    resolved_scoring,
    sample_and_score,
    weights_hash,
)
from common.config import config_to_dict
from common.fileio import atomic_path
from common.parallel import run_spawned_pool
from text.g2p import G2P
from tts_lm.dataset import read_tokens
from tts_lm.generate import GenerationError
from tts_lm.model import KoelLM

log = logging.getLogger("alignment")

FORMAT_VERSION = 1
SHARDS_DIR, PAIRS_DIR, META_NAME, SKIPPED_NAME = "pair_shards", "pairs", "meta.json", "skipped.json"
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "split": datasets.Value("string"),
        "text": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "phoneme_ids": datasets.List(datasets.Value("int32")),
        "prompt_codes": datasets.List(datasets.List(datasets.Value("int16"))),  # [K, P]
        "chosen_codes": datasets.List(datasets.List(datasets.Value("int16"))),  # [K, F_chosen]
        "rejected_codes": datasets.List(datasets.List(datasets.Value("int16"))),  # [K, F_rejected]
        "chosen_cer": datasets.Value("float32"),
        "chosen_similarity": datasets.Value("float32"),
        "chosen_transcript": datasets.Value("string"),
        "rejected_cer": datasets.Value("float32"),
        "rejected_similarity": datasets.Value("float32"),
        "rejected_transcript": datasets.Value("string"),
        "candidate_cer": datasets.List(datasets.Value("float32")),
        "candidate_similarity": datasets.List(datasets.Value("float32")),
        "candidate_frames": datasets.List(datasets.Value("int32")),
        "candidate_ranks": datasets.List(datasets.Value("int32")),
        "candidate_stop_reasons": datasets.List(datasets.Value("string")),
        "seed": datasets.Value("int64"),
    }
)


@dataclass(frozen=True)
class PairShard:
    index: int
    key: str
    items: tuple[PromptedText, ...]

    @property
    def name(self) -> str:
        return f"{self.index:06d}-{self.key[:16]}"


def item_split(item_id: str, val_fraction: float) -> str:
    """ "validation" for a stable `val_fraction` share of the ids (by hash), else "train"."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < val_fraction else "train"


def plan_items(cfg: AlignConfig, ds, meta: dict, lm: KoelLM) -> list[PromptedText]:
    """Train-corpus items then challenging ones; a pure function of the token set, the LM config and cfg.pairs."""
    p = cfg.pairs
    items = corpus_items(ds, meta, lm.config, "train", p.corpus_items, p.seed)
    if p.challenge_items > 0:
        g2p = G2P(meta.get("language", "en-us"))
        items += challenge_items(ds, meta, lm.config, "train", p.challenge_items, p.seed, g2p, p.max_challenge_chars)
    if not items:
        raise ValueError("pairs: no items (pairs.corpus_items and pairs.challenge_items are both 0?)")
    return items


def plan_shards(items: list[PromptedText], shard_size: int, salt: str) -> list[PairShard]:
    if shard_size < 1:
        raise ValueError(f"pairs.shard_size={shard_size} must be at least 1")
    shards = []
    for index, start in enumerate(range(0, len(items), shard_size)):
        part = tuple(items[start : start + shard_size])
        h = hashlib.sha256(f"v{FORMAT_VERSION}|{salt}|{start}\n".encode())
        for item in part:
            h.update(item.fingerprint().encode())
        shards.append(PairShard(index, h.hexdigest(), part))
    return shards


def shard_done(shards_dir: Path, shard: PairShard) -> bool:
    return (shards_dir / shard.name / SKIPPED_NAME).is_file()


# ---- one shard -----------------------------------------------------------------------------------------------
def make_shard(
    shard: PairShard, lm: KoelLM, scorer: Scorer, cfg: PairsConfig, shards_dir: Path, progress=None
) -> tuple[int, int]:
    """Sample, score and select for every item of `shard`; write its folder atomically. -> (pairs, skipped)."""
    rows: dict[str, list] = {name: [] for name in FEATURES}
    skipped: list[dict[str, Any]] = []
    for item in shard.items:
        seed = item_seed(item.id, cfg.seed)
        try:
            s = sample_and_score(lm, scorer, item, cfg.num_candidates, cfg.sampling, seed)
        except GenerationError as e:
            skipped.append({"id": item.id, "kind": item.kind, "reason": "does_not_fit", "detail": str(e)})
            if progress:
                progress(1)
            continue
        choice = select_pair(s.cer, s.similarity, cfg.cer_tolerance, cfg.min_similarity_gap, cfg.max_chosen_cer)
        if not choice.ok:
            skipped.append(
                {"id": item.id, "kind": item.kind, "reason": choice.reason, "cer": s.cer, "similarity": s.similarity}
            )
        else:
            c, r = choice.chosen, choice.rejected
            values = {
                "id": item.id, "kind": item.kind, "split": item_split(item.id, cfg.val_fraction), "text": item.text,
                "speaker": item.speaker, "phoneme_ids": list(item.phoneme_ids),
                "prompt_codes": item.prompt_codes.tolist(), "chosen_codes": s.codes[c].tolist(),
                "rejected_codes": s.codes[r].tolist(), "chosen_cer": s.cer[c], "chosen_similarity": s.similarity[c],
                "chosen_transcript": s.transcripts[c], "rejected_cer": s.cer[r],
                "rejected_similarity": s.similarity[r], "rejected_transcript": s.transcripts[r],
                "candidate_cer": s.cer, "candidate_similarity": s.similarity,
                "candidate_frames": [x.shape[1] for x in s.codes], "candidate_ranks": choice.ranks,
                "candidate_stop_reasons": s.stop_reasons, "seed": seed,
            }  # fmt: skip
            for name, value in values.items():
                rows[name].append(value)
        if progress:
            progress(1)
    shards_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(shards_dir / shard.name) as tmp:
        datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(tmp))
        (tmp / SKIPPED_NAME).write_text(json.dumps(skipped, indent=1), encoding="utf-8")
    return len(rows["id"]), len(skipped)


# ---- local worker processes ----------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(cfg: AlignConfig, shards_dir: Path, queue: Any) -> None:
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    lm, codec = load_models(cfg, "cpu")
    _WORKER.update(lm=lm, scorer=Scorer(codec, resolved_scoring(cfg.scoring)), cfg=cfg, dir=shards_dir, q=queue)


def _worker_make(shard: PairShard) -> tuple[int, int]:
    w = _WORKER
    return make_shard(shard, w["lm"], w["scorer"], w["cfg"].pairs, w["dir"], progress=w["q"].put)


def _run_pool(pending: list[PairShard], workers: int, cfg: AlignConfig, shards_dir: Path, bar: tqdm) -> None:
    """Make `pending` on `workers` spawned 1-thread processes; the first failure cancels the rest and is raised."""
    run_spawned_pool(_worker_make, pending, workers, _worker_init, (cfg, shards_dir), bar.update)


# ---- the whole step ------------------------------------------------------------------------------------------
def make_pairs(cfg: AlignConfig, workers: int = 1, max_shards: int | None = None) -> dict[str, Any] | None:
    """Make (or finish) OUT/pairs; returns its meta (None on ranks > 0 or when `max_shards` stopped early)."""
    if not cfg.out_dir:
        raise ValueError("out_dir is not set: pass out_dir=runs/align/NAME")
    datasets.disable_progress_bars()
    out = Path(cfg.out_dir)
    rank, world, state = 0, 1, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=48))
        rank, world = state.process_index, state.num_processes
        if workers > 1:
            raise ValueError("--workers is for one process; under torchrun/accelerate each rank is a worker")
    device = str(state.device) if state is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    ds, meta = read_tokens(cfg.tokens)
    lm, codec = load_models(cfg, device if workers == 1 else "cpu", meta)
    scoring = resolved_scoring(cfg.scoring)
    settings = {
        "pairs": config_to_dict(cfg.pairs), "scoring": config_to_dict(scoring),
        "lm_hash": weights_hash(cfg.lm), "codec_hash": weights_hash(codec_source(cfg, lm.config)),
    }  # fmt: skip
    items = plan_items(cfg, ds, meta, lm)
    plan = plan_shards(items, cfg.pairs.shard_size, json.dumps(settings, sort_keys=True))
    fingerprint = hashlib.sha256("".join(s.key for s in plan).encode()).hexdigest()
    meta_path = out / PAIRS_DIR / META_NAME
    if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("plan") == fingerprint:
        log.info("%s is up to date (%d items in %d shards)", out / PAIRS_DIR, len(items), len(plan))
        if rank == 0:
            os.utime(meta_path)  # newer than its inputs again, for make
        return json.loads(meta_path.read_text(encoding="utf-8")) if rank == 0 else None

    shards_dir = out / SHARDS_DIR
    pending = [s for s in plan[rank::world] if not shard_done(shards_dir, s)][:max_shards]
    log.info(
        "pairs: %d items (%d challenging) in %d shards; %d shard(s) to make with %d process(es); %d candidates "
        "each; ASR %s, speaker %s",
        len(items), sum(i.kind not in ("corpus", "heldout") for i in items), len(plan), len(pending),
        max(workers, world), cfg.pairs.num_candidates, scoring.asr_backend, scoring.speaker_backend,
    )  # fmt: skip
    bar = tqdm(total=sum(len(s.items) for s in pending), desc="pairs", unit="item", disable=rank != 0 or not pending)
    if workers > 1 and len(pending) > 1:
        _run_pool(pending, min(workers, len(pending)), cfg, shards_dir, bar)
    else:
        scorer = Scorer(codec, scoring)
        for shard in pending:
            make_shard(shard, lm, scorer, cfg.pairs, shards_dir, progress=bar.update)
    bar.close()
    if state is not None:
        state.wait_for_everyone()
    done = sum(shard_done(shards_dir, s) for s in plan)
    if done < len(plan):
        log.info("pairs: stopped with %d of %d shards done; run again to continue", done, len(plan))
        return None
    if rank != 0:
        return None
    return merge(out, plan, {**settings, "plan": fingerprint, "lm": str(cfg.lm), "tokens": str(cfg.tokens)})


def merge(out: Path, plan: list[PairShard], base: dict[str, Any]) -> dict[str, Any]:
    """Concatenate the plan's shards into OUT/pairs (atomically, meta.json inside) and drop stale shards."""
    shards_dir = out / SHARDS_DIR
    parts = [datasets.load_from_disk(str(shards_dir / s.name)) for s in plan]
    skipped = [x for s in plan for x in json.loads((shards_dir / s.name / SKIPPED_NAME).read_text(encoding="utf-8"))]
    ds = datasets.concatenate_datasets(parts)
    if len(ds) == 0:
        reasons = sorted({x["reason"] for x in skipped})
        raise ValueError(
            f"pairs: no item gave a preference pair ({len(skipped)} skipped: {reasons}; details in "
            f"{shards_dir}/*/skipped.json); sample more candidates or relax pairs.cer_tolerance / max_chosen_cer"
        )
    columns = ds.select_columns(["split", "kind", "chosen_cer", "rejected_cer", "chosen_similarity",
                                 "rejected_similarity"]).to_dict()  # fmt: skip
    splits = columns["split"]
    meta = {
        **base,
        "format_version": FORMAT_VERSION,
        "counts": {
            "items": sum(len(s.items) for s in plan),
            "pairs": len(ds),
            "train": splits.count("train"),
            "validation": splits.count("validation"),
            "by_kind": {k: columns["kind"].count(k) for k in sorted(set(columns["kind"]))},
            "skipped": {r: sum(x["reason"] == r for x in skipped) for r in sorted({x["reason"] for x in skipped})},
        },
        "means": {name: float(np.mean(columns[name])) for name in columns if name not in ("split", "kind")},
    }
    with atomic_path(out / PAIRS_DIR) as tmp:
        ds.save_to_disk(str(tmp))
        (tmp / "skipped.jsonl").write_text("".join(json.dumps(x) + "\n" for x in skipped), encoding="utf-8")
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    keep = {s.name for s in plan}
    for stale in shards_dir.iterdir():  # an older plan's shards and temp folders of killed writers
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    c = meta["counts"]
    log.info("pairs: %d pairs (%d train, %d validation) from %d items; skipped %s", c["pairs"], c["train"],
             c["validation"], c["items"], c["skipped"])  # fmt: skip
    return meta


def load_pairs(out_dir: str | os.PathLike) -> tuple[datasets.Dataset, dict[str, Any]]:
    """(pairs dataset, meta) of a finished `pairs` step in `out_dir`."""
    path = Path(out_dir) / PAIRS_DIR
    if not (path / META_NAME).is_file():
        raise FileNotFoundError(
            f"{path}/{META_NAME} not found: no finished preference pairs; run "
            f"`python -m alignment pairs CONFIG ... out_dir={out_dir}` first (it resumes)"
        )
    return datasets.load_from_disk(str(path)), json.loads((path / META_NAME).read_text(encoding="utf-8"))
