"""`python -m evaluation` (`make eval`): codec + TTS metrics on held-out speakers -> report.md, metrics.json, plots.

    python -m evaluation --codec runs/codec/cpu_12.5fps --lm runs/tts_lm/cpu_12.5fps \\
        --manifest runs/data/cpu/manifest.jsonl --out runs/eval/cpu [--split test] [--num 40] [--seed 0]

See evaluation/report.py for what is measured and written. Exit code 2 on inputs a user can fix (one line).
"""

from __future__ import annotations

import argparse
import os
import sys

from evaluation.report import EvalConfig


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    d = EvalConfig(codec="", manifest="", out="")
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Evaluate a codec (and a TTS LM over it) on held-out speakers: PESQ, STOI, ESTOI, SI-SDR, mel "
        "distance, code usage, bitrate, CER/WER, speaker similarity, RTF, time to first audio. Writes OUT/report.md, "
        "metrics.json, plots/ and examples/.",
    )
    p.add_argument("--codec", required=True, help="trained codec directory (or .nemo file)")
    p.add_argument("--lm", help="trained TTS LM directory; when missing or not trained yet, the codec only")
    p.add_argument("--manifest", required=True, help="corpus manifest.jsonl (data.corpus / data.import_corpus)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default=d.split, help="manifest split to evaluate (default: %(default)s)")
    p.add_argument("--num", type=int, default=d.num, help="utterances, picked by --seed (0 = all; default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="selection and sampling seed (default %(default)s)")
    p.add_argument(
        "--asr",
        default=d.asr,
        help="ASR backend[:model]: auto (best offline), faster-whisper:tiny.en, faster-whisper:base, pocketsphinx, "
        "transformers:<hub id or folder> (default %(default)s)",
    )
    p.add_argument(
        "--speaker",
        default=d.speaker,
        help="speaker model: auto (= resemblyzer), resemblyzer, wavlm[:<hub id or folder>] (default %(default)s)",
    )
    p.add_argument("--examples", type=int, default=d.examples, help="audio examples written (default %(default)s)")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="skip longer utterances (%(default)s)")
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale, help="TTS guidance scale (default %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="TTS temperature (default %(default)s)")
    p.add_argument("--top-k", type=int, default=d.top_k, help="TTS top-k (default %(default)s)")
    p.add_argument(
        "--monotonic-prior",
        action="store_true",
        help="TTS: add the inference-time alignment window prior (keeps the alignment heads moving forward)",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default %(default)s)")
    p.add_argument("--device", default=d.device, help="torch device: cpu or cuda (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    return EvalConfig(
        codec=a.codec,
        manifest=a.manifest,
        out=a.out,
        lm=a.lm,
        split=a.split,
        num=a.num,
        seed=a.seed,
        asr=a.asr,
        speaker=a.speaker,
        examples=a.examples,
        max_seconds=a.max_seconds,
        cfg_scale=a.cfg_scale,
        temperature=a.temperature,
        top_k=a.top_k,
        monotonic_prior=a.monotonic_prior,
        threads=a.threads,
        device=a.device,
        progress=not a.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from codec.audio import AudioError
    from data.manifest import ManifestError
    from evaluation.asr import ASRError
    from evaluation.report import EvalError, run_evaluation
    from evaluation.speaker import SpeakerModelError

    try:
        metrics = run_evaluation(cfg)
    except (EvalError, ASRError, SpeakerModelError, ManifestError, AudioError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = metrics["codec"]["summary"]
    print(f"codec: PESQ-WB {s['pesq_wb']['mean']}, STOI {s['stoi']['mean']}, CER {s['corpus']['cer_reconstructed']}")
    if metrics["tts"]:
        t = metrics["tts"]["summary"]
        print(f"tts: CER {t['corpus']['cer']}, SECS {t['secs_prompt']['mean']}, RTF {t['rtf']['median']}")
    else:
        print(f"tts: not evaluated ({metrics['tts_skipped']})")
    print(f"report: {os.path.join(cfg.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
