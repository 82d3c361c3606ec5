"""Preference alignment, step 3 (`evaluate`): the LM before and after alignment on the same held-out set.

    report = evaluate(cfg)           # AlignConfig -> OUT/eval/report.json + report.md

Items: `eval.max_items` utterances of the token set's `eval.split` ("test": texts and speakers unseen in LM
training, each with meta.json's fixed prompt of the same speaker), plus `eval.challenge_items` challenging texts
(alignment.challenge_texts) spoken with those held-out speakers' prompts. Both LMs (cfg.lm, and the aligned one
in OUT) synthesise every item once with the same sampling options and the same per-item seed, and the speech is
scored like the pairs (alignment.scoring): CER of the ASR transcript against the text (corpus
level: total edits / total reference characters; and the mean per utterance), speaker similarity to the
prompt (mean cosine), and the failure share: utterances with CER above `eval.failure_cer` (skipped or repeated
words, babbling; Koel-TTS's hallucination measure). The report names the ASR and speaker models, the number
of pairs, train steps and items, and keeps every utterance's transcript and scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from alignment.config import AlignConfig, EvalConfig
from alignment.pairs import load_pairs
from alignment.scoring import (
    PromptedText,
    Scorer,
    challenge_items,
    corpus_items,
    item_seed,
    load_models,
    resolved_scoring,
    sample_and_score,
)
from common.config import config_to_dict
from common.fileio import write_json_atomic, write_text_atomic
from evaluation.text_metrics import error_rates
from text.g2p import G2P
from tts_lm.dataset import read_tokens
from tts_lm.generate import GenerationError
from tts_lm.model import KoelLM

EVAL_DIR = "eval"


@dataclass
class GroupScores:
    """Scores of one LM on one group of items (held-out corpus texts, or challenging texts)."""

    items: int
    cer: float  # corpus level
    mean_cer: float  # mean of per-utterance CERs
    similarity: float  # mean cosine to the prompt
    failure_share: float  # utterances with CER > failure_cer
    stop_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Utterance:
    id: str
    kind: str
    text: str
    transcript: str
    cer: float
    similarity: float
    frames: int
    stop_reason: str


def eval_items(cfg: AlignConfig, ds, meta: dict, lm: KoelLM) -> list[PromptedText]:
    """Held-out utterances of cfg.eval.split with their fixed prompts, then challenging texts with those prompts."""
    e = cfg.eval
    items = corpus_items(ds, meta, lm.config, e.split, e.max_items, e.seed, train=False)
    if e.challenge_items > 0:
        g2p = G2P(meta.get("language", "en-us"))
        items += challenge_items(ds, meta, lm.config, e.split, e.challenge_items, e.seed, g2p)
    return items


def synthesize_and_score(
    lm: KoelLM, scorer: Scorer, items: list[PromptedText], e: EvalConfig, desc: str
) -> list[Utterance]:
    """One sample per item (seeded by the item id), scored; an item too long for the LM is a failure (CER 1)."""
    out = []
    for item in tqdm(items, desc=desc, unit="utt"):
        try:
            s = sample_and_score(lm, scorer, item, 1, e.sampling, item_seed(item.id, e.seed))
            out.append(
                Utterance(item.id, item.kind, item.text, s.transcripts[0], s.cer[0], s.similarity[0],
                          int(s.codes[0].shape[1]), s.stop_reasons[0])
            )  # fmt: skip
        except GenerationError:
            out.append(Utterance(item.id, item.kind, item.text, "", 1.0, -1.0, 0, "does_not_fit"))
    return out


def group_scores(utterances: list[Utterance], failure_cer: float) -> GroupScores:
    rates = error_rates([u.text for u in utterances], [u.transcript for u in utterances])
    reasons: dict[str, int] = {}
    for u in utterances:
        reasons[u.stop_reason] = reasons.get(u.stop_reason, 0) + 1
    return GroupScores(
        items=len(utterances),
        cer=rates.cer,
        mean_cer=float(np.mean([u.cer for u in utterances])),
        similarity=float(np.mean([u.similarity for u in utterances])),
        failure_share=float(np.mean([u.cer > failure_cer for u in utterances])),
        stop_reasons=dict(sorted(reasons.items())),
    )


def _groups(utterances: list[Utterance]) -> dict[str, list[Utterance]]:
    groups = {"heldout": [u for u in utterances if u.kind == "heldout"]}
    groups["challenge"] = [u for u in utterances if u.kind != "heldout"]
    return {name: us for name, us in groups.items() if us}


def evaluate(cfg: AlignConfig, after: str | None = None) -> dict[str, Any]:
    """Score cfg.lm ("before") and the aligned LM (`after`, default OUT) on the same items; write the report."""
    if not cfg.out_dir:
        raise ValueError("out_dir is not set: pass out_dir=runs/align/NAME")
    out = Path(cfg.out_dir)
    after = after or str(out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ds, meta = read_tokens(cfg.tokens)
    before_lm, codec = load_models(cfg, device, meta)
    after_lm = KoelLM.from_pretrained(after, device=device)
    if after_lm.config != before_lm.config:
        raise ValueError(f"{after}: not an aligned copy of lm={cfg.lm} (the model configs differ)")
    scoring = resolved_scoring(cfg.scoring)
    scorer = Scorer(codec, scoring)
    items = eval_items(cfg, ds, meta, before_lm)
    results = {
        "before": synthesize_and_score(before_lm, scorer, items, cfg.eval, "eval before"),
        "after": synthesize_and_score(after_lm, scorer, items, cfg.eval, "eval after"),
    }
    report: dict[str, Any] = {
        "lm_before": str(cfg.lm),
        "lm_after": after,
        "asr": scorer.names["asr"],
        "speaker": scorer.names["speaker"],
        "eval": config_to_dict(cfg.eval),
        "training": _training_facts(out),
        "groups": {},
    }
    for name in _groups(results["before"]):
        report["groups"][name] = {
            k: asdict(group_scores(_groups(v)[name], cfg.eval.failure_cer)) for k, v in results.items()
        }
    report["utterances"] = {k: [asdict(u) for u in v] for k, v in results.items()}
    write_json_atomic(out / EVAL_DIR / "report.json", report)
    write_text_atomic(out / EVAL_DIR / "report.md", markdown(report))
    tqdm.write(markdown(report))
    return report


def _training_facts(out: Path) -> dict[str, Any]:
    """Pairs and steps behind the aligned model (from OUT/pairs/meta.json and OUT/checkpoint/train_state.json)."""
    facts: dict[str, Any] = {}
    try:
        _, pairs_meta = load_pairs(out)
        facts["pairs"] = pairs_meta["counts"]
        facts["num_candidates"] = pairs_meta["pairs"]["num_candidates"]
    except FileNotFoundError:
        pass
    state = out / "checkpoint" / "train_state.json"
    if state.is_file():
        facts["train_steps"] = json.loads(state.read_text(encoding="utf-8"))["step"]
    config = out / "align_config.yaml"
    if config.is_file():
        facts["align_config"] = str(config)
    return facts


def markdown(report: dict[str, Any]) -> str:
    """The before/after table of a report."""
    t = report["training"]
    pairs = t.get("pairs", {})
    lines = [
        f"Preference alignment: {report['lm_before']} -> {report['lm_after']}",
        f"pairs: {pairs.get('train', '?')} train + {pairs.get('validation', '?')} validation "
        f"({t.get('num_candidates', '?')} candidates per item, {pairs.get('items', '?')} items); "
        f"train steps: {t.get('train_steps', '?')}; ASR {report['asr']}, speaker {report['speaker']}; "
        f"failure = CER > {report['eval']['failure_cer']:.0%}",
        "",
        "| set | items | LM | CER | mean utt. CER | speaker sim. | failures |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, scores in report["groups"].items():
        for which in ("before", "after"):
            s = scores[which]
            lines.append(
                f"| {name} | {s['items']} | {which} | {s['cer']:.2%} | {s['mean_cer']:.2%} | {s['similarity']:.3f} "
                f"| {s['failure_share']:.1%} |"
            )
    return "\n".join(lines) + "\n"
