"""Time to first audio and real-time factor of streaming synthesis (tts_lm.Synthesizer), per codec frame rate.

    python scripts/bench_streaming.py                                    # CPU-profile architectures, 12.5 vs 21.5 FPS
    python scripts/bench_streaming.py --lm runs/tts_lm/cpu_12.5fps --codec runs/codec/cpu_12.5fps   # trained models

Without --lm/--codec it builds randomly initialised models of the configured architectures (speed does not depend
on the weights) with audio EOS disabled, so every request generates exactly --seconds of audio whatever the frame
rate; trained models stop where they stop (the numbers then include their own lengths). Each setting runs
--repeats requests after one warm-up; the table gives the median and the best (least disturbed) request.
TTFA = compute from the call to the first chunk (prompt trim + encode, G2P, LM prefix, first chunk decoded);
RTF = compute seconds / audio seconds. One torch thread unless --threads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

TEXT = "The birch canoe slid on the smooth planks, and the sheet was glued to the dark blue background."
PROMPT_TEXT = "This is the voice that the model should imitate, spoken clearly and slowly."


def random_synthesizer(codec_config: str, lm_config: str):
    """A Synthesizer over random-init models of the given configs, audio EOS disabled."""
    from alignment import PhonemeVocab
    from codec import NanoCodec
    from codec.configuration import config_from_dict
    from tts_lm import KoelLM, LMConfig, Synthesizer

    torch.manual_seed(0)
    codec = NanoCodec.from_config(codec_config).eval()
    codec.remove_weight_norm()
    meta = dict(
        num_codebooks=codec.num_codebooks,
        codebook_size=codec.codebook_size,
        frame_rate=codec.frame_rate,
        sample_rate=codec.sample_rate,
        samples_per_frame=codec.samples_per_frame,
        phoneme_vocab=PhonemeVocab.default().to_dict(),
    )
    values = OmegaConf.to_container(OmegaConf.load(lm_config).model)
    lm = KoelLM(config_from_dict(LMConfig, values).with_tokens(meta)).eval()
    c = lm.config
    with torch.no_grad():
        lm.head.proj.bias.view(c.num_streams, c.vocab_per_codebook)[:, c.audio_eos] = -1e4
    return Synthesizer(lm, codec)


def espeak_prompt(directory: Path) -> tuple:
    from codec.audio import load_audio

    path = directory / "prompt.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), PROMPT_TEXT], check=True)
    return load_audio(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="TTFA and RTF of streaming synthesis (see the module docstring).")
    p.add_argument("--lm", help="trained LM directory (with --codec); default: random-init --lm-config")
    p.add_argument("--codec", help="trained codec directory or .nemo (with --lm)")
    p.add_argument("--lm-config", default="configs/lm/cpu.yaml")
    p.add_argument(
        "--codec-configs", nargs="+", default=["configs/codec/cpu_12.5fps.yaml", "configs/codec/cpu_21.5fps.yaml"]
    )
    p.add_argument("--seconds", type=float, default=6.0, help="audio per request (random-init models)")
    p.add_argument("--chunk-frames", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tts_lm import Synthesizer

    if bool(args.lm) != bool(args.codec):
        p.error("--lm and --codec go together")
    setups = (
        [(f"{args.lm} + {args.codec}", lambda: Synthesizer.from_pretrained(lm=args.lm, codec=args.codec))]
        if args.lm
        else [(Path(c).stem, lambda c=c: random_synthesizer(c, args.lm_config)) for c in args.codec_configs]
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav, sr = espeak_prompt(Path(tmp))
        for name, build in setups:
            tts = build()
            options = {} if args.lm else dict(max_frames=round(args.seconds * tts.frame_rate), stop_on_alignment=False)
            tts.synthesize("Warm up.", wav, sr, max_frames=3)
            for chunk_frames in args.chunk_frames:
                stats = []
                for seed in range(args.repeats):
                    stream = tts.stream(TEXT, wav, sr, seed=seed, chunk_frames=chunk_frames, **options)
                    stream.read_all()
                    stats.append(stream.stats)
                row = dict(
                    setup=name,
                    fps=round(tts.frame_rate, 2),
                    chunk_frames=chunk_frames,
                    audio_s=round(statistics.median(s.audio_seconds for s in stats), 2),
                    ttfa_ms=round(1000 * statistics.median(s.ttfa_s for s in stats)),
                    best_ttfa_ms=round(1000 * min(s.ttfa_s for s in stats)),
                    rtf=round(statistics.median(s.rtf for s in stats), 3),
                    best_rtf=round(min(s.rtf for s in stats), 3),
                )
                rows.append(row)
                print(
                    f"{name:>14} {row['fps']:>5} FPS  chunk {chunk_frames}  {row['audio_s']:.2f} s audio  "
                    f"TTFA {row['ttfa_ms']} ms (best {row['best_ttfa_ms']})  RTF {row['rtf']:.3f} "
                    f"(best {row['best_rtf']:.3f})",
                    flush=True,
                )
    if args.json:
        from codec.fileio import write_json_atomic

        write_json_atomic(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
