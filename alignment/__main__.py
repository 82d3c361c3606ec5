"""Preference alignment of the TTS LM (`make align`): sample pairs, train DPO / RPO, evaluate before and after.

    python -m alignment pairs    configs/align/cpu.yaml lm=runs/tts_lm/cpu_12.5fps \\
        tokens=runs/tokens/cpu_12.5fps out_dir=runs/align/cpu_12.5fps [--workers 2]
    python -m alignment train    configs/align/cpu.yaml lm=... tokens=... out_dir=...
    python -m alignment evaluate configs/align/cpu.yaml lm=... tokens=... out_dir=...

Koel-TTS (Hussain et al. 2025): an LM TTS that already sounds good still mispronounces, skips and babbles on
hard text; aligning it to automatic rewards fixes much of that. For a set of (text, speaker prompt) items, train
texts and generated challenging ones, the LM samples several candidates; ASR CER and speaker similarity to the
prompt rank them (Pareto); the best and the worst form a (chosen, rejected) pair; DPO (or RPO: DPO + NLL on the
chosen) trains the LM against a frozen copy of itself. Then both are scored on held-out texts and unseen speakers.

    pairs     alignment.pairs      -> OUT/pairs/ (datasets + meta.json; resumable, --workers / torchrun)
    train     alignment.train      -> OUT/model.safetensors + config.json + phonemes.json (resumable)
    evaluate  alignment.evaluate   -> OUT/eval/report.json + report.md
The losses are plain functions in alignment.losses, the pair choice in alignment.ranking.
Every step takes the same config file (alignment.config.AlignConfig) and key=value overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys

from alignment.config import AlignConfig
from common.config import ConfigError, load_config

STEPS = ("pairs", "train", "evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignment",
        description="Preference alignment (DPO / RPO) of the TTS LM with ASR and speaker-similarity rewards.",
        epilog="example: python -m alignment pairs configs/align/cpu.yaml lm=runs/tts_lm/cpu_12.5fps "
        "tokens=runs/tokens/cpu_12.5fps out_dir=runs/align/cpu_12.5fps",
    )
    steps = parser.add_subparsers(dest="step", required=True, metavar="{pairs,train,evaluate}")
    helps = {
        "pairs": "sample and score candidates, store (chosen, rejected) pairs in OUT/pairs (resumable)",
        "train": "DPO / RPO of the LM on OUT/pairs against a frozen reference (resumable) -> OUT",
        "evaluate": "CER, speaker similarity and failure share before and after -> OUT/eval/report.{json,md}",
    }
    for name in STEPS:
        p = steps.add_parser(name, help=helps[name], description=helps[name])
        p.add_argument("config", help="YAML config (configs/align/*.yaml)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lm=... pairs.num_candidates=4")
        if name == "pairs":
            p.add_argument("--workers", type=int, default=1, help="local CPU processes, 1 thread each (default 1)")
            p.add_argument(
                "--max-shards", type=int, default=None, help="make at most N shards, then stop (rerun to go on)"
            )
        if name == "evaluate":
            p.add_argument("--after", default=None, help="the aligned LM folder (default: out_dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(AlignConfig, args.config, args.overrides)
        if args.step == "pairs":
            from alignment.pairs import make_pairs

            make_pairs(cfg, workers=args.workers, max_shards=args.max_shards)
        elif args.step == "train":
            from alignment.train import train

            train(cfg)
        else:
            from alignment.evaluate import evaluate

            evaluate(cfg, after=args.after)
    except (FileNotFoundError, ValueError, ConfigError) as err:
        print(f"alignment {args.step}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
