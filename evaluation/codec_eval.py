"""Codec quality on held-out utterances: encode -> decode each recording and score the reconstruction.

    result = evaluate_codec(codec, utterances, asr, speaker)     # utterances: list of EvalUtterance (audio loaded)
    result.summary()          # {"pesq_wb": {"mean", "std", "median", "count", "nan"}, ...}
    result.records[i]         # per utterance: pesq_wb, stoi, estoi, si_sdr, mel_distance, cer/wer, secs
    result.usage              # codec.metrics.CodeUsage over all frames (usage and perplexity per codebook)

What is measured, per utterance (original wav [T] at the codec's rate -> codes [K, F] -> reconstruction [F * hop],
cut to T):
  PESQ-WB, STOI, ESTOI, SI-SDR, multi-resolution mel distance (codec/metrics.py; NaN where a metric cannot score
  the pair: too short, no speech found);
  the ASR transcript of BOTH the original and the reconstruction: CER/WER of each against the manifest text (the
  original's is the floor the recogniser itself sets on these voices) and CER of the reconstruction's transcript
  against the original's ("does the codec change what is heard");
  speaker similarity (SECS) of the reconstruction to the original.
Over the whole set: code usage and perplexity per codebook, and the bitrate from the codec's geometry
(NanoCodec paper, Casanova et al. 2025: PESQ, CER, SECS of reconstructions; DAC's mel distance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from codec import NanoCodec
from codec.metrics import CodeUsage, MetricError, bitrate, code_usage, mel_distance, pesq_wb, si_sdr, stoi
from evaluation.asr import ASR
from evaluation.speaker import SpeakerModel
from evaluation.text_metrics import error_rates

SIGNAL_METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr", "mel_distance")


@dataclass
class EvalUtterance:
    """One held-out utterance, audio loaded at the codec's rate: wav float32 [T]."""

    id: str
    speaker: str
    text: str
    wav: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.wav.size / self.sample_rate


def stats(values: list[float]) -> dict[str, float | int | None]:
    """mean / std / median / min / max over the finite values; `count` of them and `nan` (unscorable) count."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None, "count": 0, "nan": int(arr.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "count": int(finite.size),
        "nan": int(arr.size - finite.size),
    }


def embed_each(
    speaker: SpeakerModel, wavs: list[np.ndarray], sr: int, desc: str = "speaker", progress: bool = False
) -> list[np.ndarray | None]:
    """Speaker embedding per waveform; None for audio the model refuses (silent, too short)."""
    out: list[np.ndarray | None] = []
    for wav in tqdm(wavs, desc=desc, unit="wav", disable=not progress):
        try:
            out.append(speaker.embed([wav], sr)[0])
        except ValueError:  # AudioError: silent or unusable audio has no speaker
            out.append(None)
    return out


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def transcript_cer(references: list[str], hypotheses: list[str]) -> tuple[float, list[float]]:
    """CER of hypotheses against references that may be empty (an ASR transcript): empty references are NaN."""
    keep = [i for i, r in enumerate(references) if r.strip() and any(ch.isalnum() for ch in r)]
    per = [float("nan")] * len(references)
    if not keep:
        return float("nan"), per
    rates = error_rates([references[i] for i in keep], [hypotheses[i] for i in keep])
    for i, value in zip(keep, rates.utterance_cer, strict=True):
        per[i] = value
    return rates.cer, per


@dataclass
class CodecEvaluation:
    """Per-utterance records, corpus-level CER/WER, code usage and the codec's geometry."""

    records: list[dict[str, Any]]
    corpus: dict[str, float]  # corpus-level cer/wer (edits over all reference characters / words)
    usage: CodeUsage
    geometry: dict[str, Any]
    reconstructions: list[np.ndarray] = field(repr=False, default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = [*SIGNAL_METRICS, "cer_original", "cer_reconstructed", "cer_vs_original", "secs"]
        out: dict[str, Any] = {k: stats([r[k] for r in self.records]) for k in keys}
        out["corpus"] = dict(self.corpus)
        out["code_usage"] = {
            "usage": [float(u) for u in self.usage.usage],
            "perplexity": [float(p) for p in self.usage.perplexity],
            "normalized_entropy": [float(e) for e in self.usage.normalized_entropy],
            "frames": int(self.usage.num_frames),
        }
        return out


def _score(metric, ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    try:
        return float(metric(ref, deg, sr))
    except MetricError:  # too short to score: counted as NaN in the summary
        return float("nan")


@torch.no_grad()
def evaluate_codec(
    codec: NanoCodec, utterances: list[EvalUtterance], asr: ASR, speaker: SpeakerModel, progress: bool = True
) -> CodecEvaluation:
    """Encode -> decode every utterance and score it; see the module docstring for the metrics."""
    if not utterances:
        raise ValueError("evaluate_codec: no utterances to evaluate")
    sr = codec.sample_rate
    records: list[dict[str, Any]] = []
    recons: list[np.ndarray] = []
    all_codes: list[np.ndarray] = []
    for utt in tqdm(utterances, desc="codec: encode/decode + signal metrics", unit="utt", disable=not progress):
        if utt.sample_rate != sr:
            raise ValueError(f"utterance {utt.id} is at {utt.sample_rate} Hz, the codec at {sr} Hz: resample first")
        codes = codec.encode(torch.from_numpy(utt.wav)[None])  # (1, K, F)
        recon = codec.decode(codes)[0, : utt.wav.size].float().cpu().numpy()  # (T,)
        all_codes.append(codes[0].cpu().numpy())
        recons.append(recon)
        records.append(
            {
                "id": utt.id,
                "speaker": utt.speaker,
                "seconds": utt.seconds,
                "frames": int(codes.shape[-1]),
                "pesq_wb": _score(pesq_wb, utt.wav, recon, sr),
                "stoi": _score(stoi, utt.wav, recon, sr),
                "estoi": _score(lambda r, d, s: stoi(r, d, s, extended=True), utt.wav, recon, sr),
                "si_sdr": float(si_sdr(utt.wav, recon)),
                "mel_distance": float(mel_distance(utt.wav, recon, sr)),
            }
        )

    texts = [u.text for u in utterances]
    bar = tqdm(total=2, desc=f"codec: ASR ({asr.name}) on originals and reconstructions", disable=not progress)
    heard_original = asr.transcribe([u.wav for u in utterances], sr)
    bar.update(1)
    heard_recon = asr.transcribe(recons, sr)
    bar.update(1)
    bar.close()
    original = error_rates(texts, heard_original)
    recon_rates = error_rates(texts, heard_recon)
    vs_original, vs_original_per = transcript_cer(heard_original, heard_recon)

    desc = f"codec: speaker ({speaker.name})"
    emb_original = embed_each(speaker, [u.wav for u in utterances], sr, desc + " originals", progress)
    emb_recon = embed_each(speaker, recons, sr, desc + " reconstructions", progress)
    for i, rec in enumerate(records):
        rec.update(
            transcript_original=heard_original[i],
            transcript_reconstructed=heard_recon[i],
            cer_original=original.utterance_cer[i],
            cer_reconstructed=recon_rates.utterance_cer[i],
            wer_original=original.utterance_wer[i],
            wer_reconstructed=recon_rates.utterance_wer[i],
            cer_vs_original=vs_original_per[i],
            secs=cosine(emb_original[i], emb_recon[i]),
        )
    corpus = {
        "cer_original": original.cer,
        "wer_original": original.wer,
        "cer_reconstructed": recon_rates.cer,
        "wer_reconstructed": recon_rates.wer,
        "cer_vs_original": vs_original,
    }
    geometry = {
        "sample_rate": sr,
        "frame_rate": codec.frame_rate,
        "samples_per_frame": codec.samples_per_frame,
        "num_codebooks": codec.num_codebooks,
        "codebook_size": codec.codebook_size,
        "bitrate": bitrate(codec.num_codebooks, codec.codebook_size, codec.frame_rate),
        "parameters": sum(p.numel() for p in codec.parameters()),
    }
    usage = code_usage(all_codes, codec.codebook_size)
    return CodecEvaluation(records, corpus, usage, geometry, recons)
