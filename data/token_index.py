"""Stage 2's merge and its reader: finished shards -> one `datasets` dataset + meta.json, and `load_tokens`.

    meta = merge(out, plan, base_meta, vocab)      # rank 0, once every shard of the plan exists
    ds, meta = load_tokens(out)                    # == datasets.load_from_disk(out), plus meta.json

The index is what `save_to_disk` writes beside its Arrow files: `state.json` (the list of data files, in
order) and `dataset_info.json` (the features). Here the list points at the shards' own Arrow files in shard
order, OUT/shards/<shard>/data-*.arrow: the rows `datasets.concatenate_datasets` of the shards would give,
without copying them. `load_from_disk(OUT)` memory-maps them. The shard order is the plan's, so the
dataset is the same whatever number of processes wrote the shards.

meta.json (written last; its presence marks a finished output) adds what the LM needs beyond the rows:
counts, skips per reason, the phoneme vocabulary, the speaker index {split: {speaker: [ids]}} (the training
loader draws a voice prompt from it) and a fixed prompt {id: another id of the same speaker} for every
validation/test utterance, so evaluations are repeatable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import datasets

from common.fileio import write_json_atomic, write_text_atomic
from data.manifest import VOCAB_NAME
from data.token_shards import SKIP_REASONS, SKIPPED_NAME, Shard, TokenizeError, shard_done
from text.vocab import PhonemeVocab

META_NAME = "meta.json"
SHARDS_DIR = "shards"
PROMPT_SECONDS = (3.0, 10.0)  # preferred length of a fixed validation/test voice prompt


def plan_fingerprint(plan: list[Shard]) -> str:
    return hashlib.sha256("".join(s.key for s in plan).encode()).hexdigest()


def write_index(out: Path, plan: list[Shard]) -> int:
    """OUT/state.json + dataset_info.json listing every shard's Arrow files in plan order; returns how many files.

    A shard whose utterances were all skipped has no Arrow file; with no file at all, nothing is written.
    """
    shards_dir = out / SHARDS_DIR
    missing = [s.name for s in plan if not shard_done(shards_dir, s)]
    if missing:
        raise TokenizeError(f"{len(missing)} shard(s) missing in {shards_dir} (first: {missing[0]}); run again")
    files, state = [], {}
    for shard in plan:
        state = json.loads((shards_dir / shard.name / "state.json").read_text(encoding="utf-8"))
        files += [{"filename": f"{SHARDS_DIR}/{shard.name}/{f['filename']}"} for f in state["_data_files"]]
    if files:
        info = (shards_dir / plan[0].name / "dataset_info.json").read_text(encoding="utf-8")
        write_text_atomic(out / "dataset_info.json", info)
        fingerprint = plan_fingerprint(plan)[:16]
        write_json_atomic(out / "state.json", {**state, "_data_files": files, "_fingerprint": fingerprint})
    return len(files)


def speaker_prompts(
    rows: dict[str, list], splits: tuple[str, ...] = ("validation", "test")
) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """Speaker index {split: {speaker: [ids]}} and a fixed prompt {id: other id, same speaker} for `splits`.

    `rows` holds the columns id, speaker, split, duration. The prompt is another utterance of the same speaker
    and split (held-out speakers are unseen in train), preferably PROMPT_SECONDS long, picked by a hash of the
    id (stable, and spread over the candidates). A speaker with one utterance in a split gives it no prompt.
    """
    index: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    duration = dict(zip(rows["id"], rows["duration"], strict=True))
    for uid, speaker, split in zip(rows["id"], rows["speaker"], rows["split"], strict=True):
        index[split][speaker].append(uid)
    prompts: dict[str, str] = {}
    for split in splits:
        for ids in index.get(split, {}).values():
            for uid in ids:
                others = [o for o in ids if o != uid]
                good = [o for o in others if PROMPT_SECONDS[0] <= duration[o] <= PROMPT_SECONDS[1]] or others
                if good:
                    prompts[uid] = good[int(hashlib.sha1(uid.encode()).hexdigest(), 16) % len(good)]
    return {split: dict(speakers) for split, speakers in index.items()}, prompts


def _counts(rows: dict[str, list], speakers: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    per_split = {}
    for split in sorted(speakers):
        sel = [i for i, s in enumerate(rows["split"]) if s == split]
        per_split[split] = {
            "utterances": len(sel),
            "speakers": len(speakers[split]),
            "hours": round(sum(rows["duration"][i] for i in sel) / 3600, 4),
            "frames": sum(rows["num_frames"][i] for i in sel),
        }
    return {
        "tokenized": len(rows["id"]),
        "hours": round(sum(rows["duration"]) / 3600, 4),
        "frames": sum(rows["num_frames"]),
        "splits": per_split,
    }


def merge(out: Path, plan: list[Shard], base_meta: dict[str, Any], vocab: PhonemeVocab) -> dict[str, Any]:
    """Write the index, skipped.jsonl, phonemes.json and meta.json (last); drop shards no longer in the plan.

    Raises:
        TokenizeError: a shard of the plan is missing, or no utterance at all was usable.
    """
    num_files = write_index(out, plan)
    skipped = []
    for shard in plan:
        skipped += json.loads((out / SHARDS_DIR / shard.name / SKIPPED_NAME).read_text(encoding="utf-8"))
    write_text_atomic(out / "skipped.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped))
    reasons = Counter(s["reason"] for s in skipped)
    if num_files == 0:
        raise TokenizeError(
            f"no usable utterance (skipped: {dict(reasons)}); the files are named in {out}/skipped.jsonl"
        )
    ds = datasets.load_from_disk(str(out))
    rows = ds.select_columns(["id", "speaker", "split", "duration", "num_frames"]).to_dict()
    speakers, prompts = speaker_prompts(rows)
    held_out = sum(1 for s in rows["split"] if s != "train")
    vocab.save(out / VOCAB_NAME)  # the vocabulary of `phoneme_ids`, for the LM
    meta = {
        **base_meta,
        "phoneme_vocab": vocab.to_dict(),
        "counts": {
            "manifest": sum(len(s.utterances) for s in plan),
            **_counts(rows, speakers),
            "skipped": len(skipped),
            "held_out_without_prompt": held_out - len(prompts),
        },
        "skipped": {r: reasons.get(r, 0) for r in SKIP_REASONS},
        "speakers": speakers,
        "prompts": prompts,
    }
    write_json_atomic(out / META_NAME, meta)
    keep = {s.name for s in plan}
    for stale in (out / SHARDS_DIR).iterdir():  # older plans' shards, and temp folders of killed writers
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    return meta


def load_tokens(path: str | os.PathLike) -> tuple[datasets.Dataset, dict[str, Any]]:
    """(dataset, meta) of a finished token folder. `ds.with_format("numpy")[i]["codes"]` is an array [K, F]."""
    path = Path(path)
    if not (path / META_NAME).is_file():
        raise TokenizeError(
            f"{path}: no {META_NAME}, so not a finished token dataset; run "
            f"`python -m data.tokenize_corpus --codec ... --manifest ... --out {path}` (it resumes)"
        )
    meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    return datasets.load_from_disk(str(path)), meta
