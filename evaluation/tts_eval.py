"""Zero-shot TTS on held-out speakers: synthesize each test text in the voice of ANOTHER utterance of its speaker.

    pairs = [(target, prompt), ...]                       # EvalUtterance each; same speaker, different utterances
    result = evaluate_tts(synthesizer, pairs, asr, speaker, seed=0)
    result.summary()      # cer / wer / secs_prompt / secs_target / secs_reference / rtf / ttfa_s: mean, median, ...
    result.records[i]     # per utterance: transcript, CER/WER, SECS, RTF, time to first audio, stop reason

Per pair (Koel-TTS evaluation, Hussain et al. 2025: unseen speakers, CER by ASR, SECS by a speaker model):
  tts_lm.Synthesizer.stream(target.text, prompt.wav) -> generated float32 [T'] (streamed chunk by chunk, which
      gives the request's time to first audio and real-time factor; sampling seeded by (seed, target id))
  ASR(generated) vs target.text -> CER / WER (both sides normalised; evaluation/text_metrics.py)
  SECS(generated, prompt recording)   the speaker's other audio, which the model was conditioned on
  SECS(generated, target recording)   the speaker saying this text (never shown to the model)
  SECS(target, prompt)                 the same speaker's two real recordings: the ceiling to read the others by
Sampling is seeded per utterance, so the set is deterministic for a seed; RTF and TTFA are wall-clock numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.asr import ASR
from evaluation.codec_eval import EvalUtterance, cosine, embed_each, stats
from evaluation.speaker import SpeakerModel
from evaluation.text_metrics import error_rates
from tts_lm.synthesizer import Synthesizer

TIMING_KEYS = ("rtf", "ttfa_s", "compute_s")  # wall-clock fields: not part of the deterministic results
FAILURE_CER = 0.5  # an utterance above this CER counts as a failure (mostly unintelligible or wrong)
OUTLIER_CER = 1.0  # above this the transcript holds more errors than the text has characters: a hallucination


def utterance_seed(seed: int, utterance_id: str) -> int:
    """The sampling seed of one utterance: a function of (seed, id), so it does not depend on the others."""
    return zlib.crc32(f"{seed}:{utterance_id}".encode()) & 0x7FFFFFFF


@dataclass
class TTSEvaluation:
    """Per-utterance records (failed requests carry an `error`), corpus CER/WER and the generation settings."""

    records: list[dict[str, Any]]
    corpus: dict[str, float]
    settings: dict[str, Any]
    generated: list[np.ndarray] = field(repr=False, default_factory=list)

    def by_id(self) -> dict[str, np.ndarray]:
        """Generated audio float32 [T'] per utterance id (empty for failed requests)."""
        return {r["id"]: wav for r, wav in zip(self.records, self.generated, strict=True)}

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.records if "error" not in r]
        keys = ("cer", "wer", "secs_prompt", "secs_target", "secs_reference", "audio_seconds", *TIMING_KEYS)
        out: dict[str, Any] = {k: stats([r[k] for r in ok]) for k in keys}
        out["corpus"] = dict(self.corpus)
        out["failed"] = len(self.records) - len(ok)
        out["stop_reasons"] = {}
        for r in ok:
            for reason in r["stop_reasons"]:
                out["stop_reasons"][reason] = out["stop_reasons"].get(reason, 0) + 1
        return out


def evaluate_tts(
    tts: Synthesizer,
    pairs: list[tuple[EvalUtterance, EvalUtterance]],
    asr: ASR,
    speaker: SpeakerModel,
    seed: int = 0,
    cfg_scale: float = 2.5,
    temperature: float = 0.6,
    top_k: int = 80,
    monotonic_prior: bool = False,
    progress: bool = True,
) -> TTSEvaluation:
    """Synthesize every (target, prompt) pair and score it; see the module docstring."""
    if not pairs:
        raise ValueError("evaluate_tts: no (target, prompt) pairs: the split needs speakers with 2+ utterances")
    sr = tts.sample_rate
    records: list[dict[str, Any]] = []
    generated: list[np.ndarray] = []
    for target, prompt in tqdm(pairs, desc="tts: synthesize (streaming)", unit="utt", disable=not progress):
        if target.speaker != prompt.speaker or target.id == prompt.id:
            raise ValueError(f"{target.id}: the prompt must be another utterance of the same speaker, got {prompt.id}")
        rec: dict[str, Any] = {"id": target.id, "speaker": target.speaker, "prompt_id": prompt.id, "text": target.text}
        try:
            stream = tts.stream(
                target.text,
                prompt.wav,
                prompt.sample_rate,
                seed=utterance_seed(seed, target.id),
                cfg_scale=cfg_scale,
                temperature=temperature,
                top_k=top_k,
                monotonic_prior=monotonic_prior,
            )
            wav = stream.read_all()
        except ValueError as e:  # SynthesisError, TextError, PromptError, GenerationError: recorded, not fatal
            rec["error"] = f"{type(e).__name__}: {e}"
            records.append(rec)
            generated.append(np.zeros(0, dtype=np.float32))
            continue
        s = stream.stats
        rec.update(
            audio_seconds=s.audio_seconds,
            frames=s.frames,
            stop_reasons=list(s.stop_reasons),
            rtf=s.rtf if s.samples else float("nan"),
            ttfa_s=s.ttfa_s if s.ttfa_s is not None else float("nan"),
            compute_s=s.compute_s,
        )
        records.append(rec)
        generated.append(wav)

    ok = [i for i, r in enumerate(records) if "error" not in r]
    audible = [i for i in ok if generated[i].size > 0]
    heard = dict(zip(audible, asr.transcribe([generated[i] for i in audible], sr) if audible else [], strict=True))
    texts = [records[i]["text"] for i in ok]
    rates = error_rates(texts, [heard.get(i, "") for i in ok]) if ok else None
    emb_gen = embed_each(speaker, [generated[i] for i in ok], sr, f"tts: speaker ({speaker.name})", progress)
    emb_prompt = embed_each(speaker, [pairs[i][1].wav for i in ok], sr)
    emb_target = embed_each(speaker, [pairs[i][0].wav for i in ok], sr)
    for j, i in enumerate(ok):
        records[i].update(
            transcript=heard.get(i, ""),
            cer=rates.utterance_cer[j],
            wer=rates.utterance_wer[j],
            secs_prompt=cosine(emb_gen[j], emb_prompt[j]),
            secs_target=cosine(emb_gen[j], emb_target[j]),
            secs_reference=cosine(emb_target[j], emb_prompt[j]),
        )
    corpus = {"cer": rates.cer, "wer": rates.wer} if rates else {"cer": float("nan"), "wer": float("nan")}
    settings = {"seed": seed, "cfg_scale": cfg_scale, "temperature": temperature, "top_k": top_k}
    settings.update(monotonic_prior=monotonic_prior, chunk_frames=1)
    return TTSEvaluation(records, corpus, settings, generated)


def compare_to_codec(
    codec_records: list[dict[str, Any]], tts_records: list[dict[str, Any]], failure_cer: float = FAILURE_CER
) -> dict[str, Any]:
    """TTS against the codec's floor on the same utterances: what the LM adds on top of the codec.

    The codec's reconstruction of an utterance is the best any LM over that codec can sound, so each TTS CER is
    paired with the reconstruction CER of the same utterance (the codec's records, by id). Returned for both sides:
    CER median and mean (of the scored utterances), the failure share (CER > `failure_cer`; a failed TTS request
    counts as a failure), and the outliers (CER > OUTLIER_CER, hallucinated transcripts, which dominate a mean);
    plus `median_ratio` (TTS median / codec median: 1.0 means the LM loses nothing over the codec) and the
    per-utterance pairs.
    """
    floor = {r["id"]: r["cer_reconstructed"] for r in codec_records}
    pairs = [(r["id"], floor[r["id"]], r.get("cer", float("inf"))) for r in tts_records if r["id"] in floor]

    def side(cers: list[float], ids: list[str]) -> dict[str, Any]:
        arr = np.asarray(cers, dtype=np.float64)
        scored = arr[np.isfinite(arr)]
        return {
            "cer_median": float(np.median(scored)) if scored.size else None,
            "cer_mean": float(scored.mean()) if scored.size else None,
            "failure_share": float(np.mean(~(arr <= failure_cer))) if arr.size else None,
            "outliers": [
                {"id": i, "cer": float(c)} for i, c in zip(ids, cers, strict=True) if OUTLIER_CER < c < float("inf")
            ],
        }

    ids = [i for i, _, _ in pairs]
    codec_side, tts_side = side([c for _, c, _ in pairs], ids), side([t for _, _, t in pairs], ids)
    ratio = None
    if codec_side["cer_median"] and tts_side["cer_median"] is not None:
        ratio = tts_side["cer_median"] / codec_side["cer_median"]
    return {
        "utterances": len(pairs),
        "failure_cer": failure_cer,
        "codec": codec_side,
        "tts": tts_side,
        "median_ratio": ratio,
        "per_utterance": [{"id": i, "cer_codec": c, "cer_tts": t} for i, c, t in pairs],
    }
