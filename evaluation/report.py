"""`make eval`: evaluate a trained codec (and a TTS LM over it) on held-out speakers; write a report.

    result = run_evaluation(EvalConfig(codec="runs/codec/cpu_12.5fps", lm="runs/tts_lm/cpu_12.5fps",
                                       manifest="runs/data/cpu/manifest.jsonl", out="runs/eval/cpu"))
    python -m evaluation --codec DIR [--lm DIR] --manifest M --out DIR [--split test] [--num 40] [--seed 0]

Steps: pick `num` utterances of the split (default: the unseen-speaker test split) with a numpy generator seeded by
`seed` -> load them at the codec's rate -> codec metrics (evaluation/codec_eval.py) -> when the LM exists, TTS
metrics with each utterance's text spoken in the voice of ANOTHER utterance of its speaker (the fixed prompt rule
of the token sets, data.token_index.speaker_prompts; evaluation/tts_eval.py) -> OUT/:
    report.md        tables of the headline numbers, the backends that produced them, the plots
    metrics.json     everything: setup, summaries, per-utterance records (NaN written as null)
    plots/           spectrograms (original | reconstructed | generated), metric bars, distributions, code usage
    examples/<id>/   original.wav, reconstructed.wav, prompt.wav, generated.wav of the first `examples` utterances
Everything but wall-clock timings (RTF, TTFA, stage seconds) is a deterministic function of the inputs and seed.
When `lm` is not given or holds no trained model yet, only the codec is evaluated and the report says why.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from codec.audio import load_audio
from common.fileio import atomic_path, write_json_atomic
from data.manifest import Utterance, read_manifest
from data.token_index import speaker_prompts
from evaluation import plots
from evaluation.asr import load_asr
from evaluation.bench.harness import machine_info
from evaluation.codec_eval import EvalUtterance, evaluate_codec
from evaluation.report_text import render_report
from evaluation.speaker import load_speaker_model
from evaluation.tts_eval import TIMING_KEYS, compare_to_codec, evaluate_tts


class EvalError(ValueError):
    """Inputs the evaluation cannot use (no utterances in the split, a missing codec); says what to do."""


@dataclass
class EvalConfig:
    codec: str
    manifest: str
    out: str
    lm: str | None = None
    split: str = "test"
    num: int = 40  # utterances (0 = all of the split)
    seed: int = 0
    asr: str = "auto"  # "auto" | "faster-whisper[:MODEL]" | "pocketsphinx" | "transformers:MODEL"
    speaker: str = "auto"  # "auto" | "resemblyzer" | "wavlm[:MODEL]"
    examples: int = 3
    max_seconds: float = 15.0  # longer utterances are left out of the selection
    cfg_scale: float = 2.5
    temperature: float = 0.6
    top_k: int = 80
    monotonic_prior: bool = False  # the inference-time alignment window prior (tts_lm.generate)
    threads: int = 1
    device: str = "cpu"  # torch device of the codec and the LM ("cuda" on a GPU); ASR / speaker models stay on CPU
    progress: bool = True


def parse_backend(spec: str) -> tuple[str, str | None]:
    """Backend spec -> (backend, model): "faster-whisper:tiny.en" -> ("faster-whisper", "tiny.en")."""
    backend, _, model = spec.partition(":")
    return backend, model or None


# ---- what to evaluate ---------------------------------------------------------------------------------------
def select_utterances(
    utts: list[Utterance], split: str, num: int, seed: int, max_seconds: float
) -> tuple[list[Utterance], dict[str, Utterance]]:
    """`num` utterances of `split` picked by `seed` (in id order), and a prompt utterance for each that has one."""
    in_split = sorted((u for u in utts if u.split == split), key=lambda u: u.id)
    if not in_split:
        splits = sorted({u.split for u in utts})
        raise EvalError(f"the manifest has no {split!r} utterances (splits: {', '.join(splits)}); pass --split")
    candidates = [u for u in in_split if u.duration <= max_seconds]
    if not candidates:
        raise EvalError(f"every {split!r} utterance is longer than --max-seconds {max_seconds}")
    rng = np.random.default_rng(seed)
    count = len(candidates) if num <= 0 else min(num, len(candidates))
    chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False))]
    columns = {
        "id": [u.id for u in in_split],
        "speaker": [u.speaker for u in in_split],
        "split": [u.split for u in in_split],
        "duration": [u.duration for u in in_split],
    }
    _, prompt_ids = speaker_prompts(columns, splits=(split,))  # --split train too: the fit on seen speakers
    by_id = {u.id: u for u in in_split}
    prompts = {u.id: by_id[prompt_ids[u.id]] for u in chosen if u.id in prompt_ids}
    return chosen, prompts


def codec_speaker_loss(codec_dir: str) -> dict[str, Any]:
    """The speaker encoder of the codec's speaker-consistency loss, from its train_config.yaml (if beside it)."""
    path = Path(codec_dir) / "train_config.yaml"
    if not path.is_file():
        return {"known": False, "encoder": None, "weight": None, "source": None}
    from omegaconf import OmegaConf

    loss = OmegaConf.to_container(OmegaConf.load(path)).get("loss") or {}
    encoder, weight = loss.get("speaker_encoder"), float(loss.get("speaker_weight", 0.0))
    active = encoder not in (None, "none") and weight > 0
    return {"known": True, "encoder": encoder if active else None, "weight": weight, "source": str(path)}


# ---- the run ------------------------------------------------------------------------------------------------
def run_evaluation(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate as configured, write OUT/{report.md, metrics.json, plots/, examples/}; returns the metrics dict."""
    from tts_lm.synthesizer import Synthesizer, load_codec

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    timing: dict[str, float] = {}
    tic = time.perf_counter()
    if not Path(cfg.manifest).is_file():
        raise EvalError(f"{cfg.manifest}: no such manifest (make data)")
    try:
        codec = load_codec(cfg.codec, cfg.device)
    except (ValueError, OSError) as e:  # CodecError, SynthesisError (.nemo), missing files
        raise EvalError(f"--codec {cfg.codec}: cannot load it ({e}); train one first (make codec)") from e
    tts, tts_skipped = None, None  # the LM is loaded now, so that a mismatch fails before hours of work
    lm_dir = Path(cfg.lm) if cfg.lm else None
    if lm_dir is None:
        tts_skipped = "no --lm given: codec only"
    elif not (lm_dir / "model.safetensors").is_file():
        tts_skipped = f"{lm_dir} holds no trained LM yet (make lm): codec only"
    else:
        try:
            tts = Synthesizer.from_pretrained(lm=lm_dir, codec=codec, device=cfg.device)
        except ValueError as e:  # SynthesisError: the LM was trained on another codec's tokens, ...
            raise EvalError(f"--lm {lm_dir} with --codec {cfg.codec}: {e}") from e
    chosen, prompts = select_utterances(read_manifest(cfg.manifest), cfg.split, cfg.num, cfg.seed, cfg.max_seconds)
    sr = codec.sample_rate
    loaded: dict[str, EvalUtterance] = {}
    for u in [*chosen, *prompts.values()]:
        if u.id not in loaded:
            wav, _ = load_audio(u.audio, sample_rate=sr, max_seconds=max(cfg.max_seconds, u.duration) + 1)
            loaded[u.id] = EvalUtterance(u.id, u.speaker, u.text, wav, sr)
    targets = [loaded[u.id] for u in chosen]
    asr = load_asr(*parse_backend(cfg.asr))
    speaker = load_speaker_model(*parse_backend(cfg.speaker))
    timing["setup_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    codec_result = evaluate_codec(codec, targets, asr, speaker, progress=cfg.progress)
    timing["codec_s"] = time.perf_counter() - tic

    tts_result = None
    if tts is not None:
        tic = time.perf_counter()
        pairs = [(loaded[u.id], loaded[prompts[u.id].id]) for u in chosen if u.id in prompts]
        tts_result = evaluate_tts(
            tts,
            pairs,
            asr,
            speaker,
            cfg.seed,
            cfg.cfg_scale,
            cfg.temperature,
            cfg.top_k,
            monotonic_prior=cfg.monotonic_prior,
            progress=cfg.progress,
        )
        timing["tts_s"] = time.perf_counter() - tic

    loss = codec_speaker_loss(cfg.codec)
    setup = {
        "codec": str(cfg.codec),
        "lm": str(cfg.lm) if cfg.lm else None,
        "manifest": str(cfg.manifest),
        "split": cfg.split,
        "num_requested": cfg.num,
        "num_evaluated": len(targets),
        "seed": cfg.seed,
        "asr": asr.name,
        "speaker": speaker.name,
        "codec_speaker_loss": loss,
        "speaker_shares_codec_loss_encoder": speaker.shares_encoder_with(loss["encoder"]),
        "machine": machine_info(cfg.threads),
    }
    metrics = {
        "setup": setup,
        "codec": {
            "geometry": codec_result.geometry,
            "summary": codec_result.summary(),
            "utterances": codec_result.records,
        },
        "tts": None
        if tts_result is None
        else {
            "settings": tts_result.settings,
            "summary": tts_result.summary(),
            "vs_codec": compare_to_codec(codec_result.records, tts_result.records),
            "utterances": tts_result.records,
        },
        "tts_skipped": tts_skipped,
    }
    tic = time.perf_counter()
    figures = write_figures(out, metrics, codec_result, tts_result, targets, loaded, prompts, cfg.examples)
    examples = write_examples(out, codec_result, tts_result, targets, loaded, prompts, cfg.examples)
    timing["write_s"] = time.perf_counter() - tic
    metrics["timing"] = timing
    metrics = json_safe(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_report(metrics, figures, examples), encoding="utf-8")
    return metrics


def json_safe(obj: Any) -> Any:
    """numpy scalars -> Python; NaN / inf -> None (strict JSON); floats to 9 significant digits; recursively.

    The rounding hides last-bit noise of vectorised numpy sums (ESTOI differs in the 16th digit between runs on
    differently aligned buffers), so equal inputs give byte-identical metrics.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.9g}") if math.isfinite(obj) else None
    return obj


def deterministic_part(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without wall-clock numbers: what must be identical for the same inputs and seed."""
    copy = json.loads(json.dumps(metrics))
    copy.pop("timing", None)
    copy["setup"]["machine"].pop("load_average", None)
    if copy.get("tts"):
        for key in TIMING_KEYS:
            copy["tts"]["summary"].pop(key, None)
        for rec in copy["tts"]["utterances"]:
            for key in TIMING_KEYS:
                rec.pop(key, None)
    return copy


# ---- files --------------------------------------------------------------------------------------------------
def _write_wav(path: Path, wav: np.ndarray, sr: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16")
    return str(path)


def write_examples(out: Path, codec_result, tts_result, targets, loaded, prompts, count: int) -> list[dict[str, str]]:
    """examples/<id>/{original,reconstructed,prompt,generated}.wav for the first `count` utterances."""
    rows = []
    generated = tts_result.by_id() if tts_result else {}
    for i, utt in enumerate(targets[:count]):
        folder = out / "examples" / utt.id
        row = {"id": utt.id, "text": utt.text}
        row["original"] = _write_wav(folder / "original.wav", utt.wav, utt.sample_rate)
        row["reconstructed"] = _write_wav(
            folder / "reconstructed.wav", codec_result.reconstructions[i], utt.sample_rate
        )
        if generated.get(utt.id) is not None and generated[utt.id].size:
            row["prompt"] = _write_wav(folder / "prompt.wav", loaded[prompts[utt.id].id].wav, utt.sample_rate)
            row["generated"] = _write_wav(folder / "generated.wav", generated[utt.id], utt.sample_rate)
        rows.append({k: str(Path(v).relative_to(out)) if k not in ("id", "text") else v for k, v in row.items()})
    return rows


def write_figures(out: Path, metrics, codec_result, tts_result, targets, loaded, prompts, count: int) -> dict[str, str]:
    """plots/*.png; returns {name: path relative to out}."""
    sr = codec_result.geometry["sample_rate"]
    generated = tts_result.by_id() if tts_result else {}
    rows = []
    for i, utt in enumerate(targets[: max(1, count)]):
        versions = {"original": utt.wav, "reconstructed": codec_result.reconstructions[i]}
        if tts_result is not None:
            versions["generated"] = generated.get(utt.id, np.zeros(0, dtype=np.float32))
        rows.append((utt.id, versions))
    codec_summary = metrics["codec"]["summary"]
    names = {
        "pesq_wb": "PESQ-WB",
        "stoi": "STOI",
        "estoi": "ESTOI",
        "si_sdr": "SI-SDR dB",
        "mel_distance": "mel dist",
        "cer_original": "CER orig",
        "cer_reconstructed": "CER recon",
        "secs": "SECS",
    }
    groups = {"codec": {label: codec_summary[key] for key, label in names.items()}}
    series = {f"codec {label}": [r[key] for r in codec_result.records] for key, label in names.items()}
    if tts_result is not None:
        tts_summary = metrics["tts"]["summary"]
        tts_names = {"cer": "CER", "wer": "WER", "secs_prompt": "SECS prompt", "secs_target": "SECS target"}
        tts_names |= {"rtf": "RTF", "ttfa_s": "TTFA s"}
        groups["tts"] = {label: tts_summary[key] for key, label in tts_names.items()}
        ok = [r for r in tts_result.records if "error" not in r]
        series |= {f"tts {label}": [r[key] for r in ok] for key, label in tts_names.items()}
    usage = codec_summary["code_usage"]
    paths = {
        "spectrograms": plots.spectrograms(out / "plots" / "spectrograms.png", rows, sr),
        "metric_bars": plots.metric_bars(out / "plots" / "metrics.png", groups),
        "distributions": plots.distributions(out / "plots" / "distributions.png", series),
        "code_usage": plots.code_usage(
            out / "plots" / "code_usage.png",
            usage["usage"],
            usage["perplexity"],
            codec_result.geometry["codebook_size"],
        ),
    }
    return {k: str(p.relative_to(out)) for k, p in paths.items()}
