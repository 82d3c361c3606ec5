"""`make bench`: what the lower frame rate buys, and what the codec costs next to its peers. CPU, one thread.

    python -m evaluation.bench --out runs/bench [--threads 1] [--smoke]
        [--codec-12 runs/codec/cpu_12.5fps --lm-12 runs/tts_lm/cpu_12.5fps]      # trained models, when there
        [--codec-21 runs/codec/cpu_21.5fps --lm-21 runs/tts_lm/cpu_21.5fps]

1. Streaming TTS end to end, 12.5 vs 21.5 FPS, same LM architecture (configs/lm/cpu.yaml), same text, prompt and
   audio length, batch sizes 1 and 8: RTF, time to first audio, LM steps per second of audio (e2e.py).
2. Codec speed: the paper-scale NanoCodec configs (offline, and streaming decode frame by frame) against Mimi,
   EnCodec and DAC from transformers configs with random weights; interleaved rounds, medians (codec_speed.py).
3. Tokenisation throughput (stage 2's own code path) and codec / LM training throughput of the CPU profiles
   (throughput.py).
OUT/results.json (top-level: rtf_12_5, rtf_21_5, rtf_ratio = 21.5 over 12.5, ttfa_12_5_ms, ttfa_21_5_ms,
codec_speed, e2e, tokenize, codec_training, lm_training, machine, settings) and OUT/results.md (the tables, also
printed). ~10 minutes on this 2-vCPU machine; `--smoke` runs every code path at tiny sizes in seconds (its numbers
mean nothing). Wall-clock numbers move with the machine's load: results.json records the load average before
and after; rerun on a quiet machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common.fileio import write_json_atomic, write_text_atomic
from evaluation.bench.harness import BenchSettings, has_espeak, machine_info
from tts_lm.synthesizer import BACKENDS, parse_chunk_frames

PAPER_RTF_RATIO = 2.33  # NanoCodec paper: LM RTF at 21.5 FPS / at 12.5 FPS


def run_bench(
    settings: BenchSettings, out: str | Path, trained: dict[str, dict[str, str]] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the three benchmarks; write OUT/results.json + results.md; return the results dict.

    trained: {"12.5": {"codec": dir, "lm": dir}, "21.5": {...}}: models from runs/ (either part may be missing).
    """
    from evaluation.bench.codec_speed import bench_codec_speed
    from evaluation.bench.e2e import bench_e2e, headline
    from evaluation.bench.throughput import bench_codec_training, bench_lm_training, bench_tokenize

    torch.set_num_threads(settings.threads)
    trained = trained or {}
    machine = machine_info(settings.threads)
    sections: dict[str, float] = {}

    run = set(settings.sections)
    tic = time.perf_counter()
    pairs = {k: (v["codec"], v["lm"]) for k, v in trained.items() if v.get("codec") and v.get("lm")}
    e2e = bench_e2e(settings, pairs, progress) if "e2e" in run else []
    sections["e2e_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    codec_speed = bench_codec_speed(settings, progress) if "codecs" in run else []
    sections["codec_speed_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    tokenize, codec_training, lm_training = [], [], []
    if "throughput" in run:
        tokenize = bench_tokenize(settings, {k: v.get("codec") for k, v in trained.items()}, progress)
        codec_training = bench_codec_training(settings, progress)
        lm_training = bench_lm_training(settings, progress)
    sections["throughput_s"] = time.perf_counter() - tic

    machine["load_average_end"] = machine_info(settings.threads)["load_average"]
    notes = list(settings.notes)
    if not has_espeak():
        notes.append("espeak-ng is not installed: the prompt and codec inputs are a speech-like stand-in signal")
    if any(row["components"]["g2p"] == "StandInG2P" for row in e2e):
        notes.append("phonemizer / espeak-ng are not installed: the text got stand-in phonemes (same length)")
    sizes = {row["fps"]: row["lm"].split(": ", 1)[1] for row in e2e}
    if sizes and sizes["12.5"] != sizes["21.5"]:  # parameter counts differ anyway (vocabularies): compare shapes
        notes.append(f"the two LMs differ in architecture, so the ratio is not the frame rate's alone: {sizes}")
    results = {
        **(headline(e2e) if e2e else {}),
        "components": [{"fps": row["fps"], **row["components"]} for row in e2e],
        "paper_rtf_ratio": PAPER_RTF_RATIO,
        "smoke": settings.is_smoke,
        "e2e": e2e,
        "codec_speed": codec_speed,
        "tokenize": tokenize,
        "codec_training": codec_training,
        "lm_training": lm_training,
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "sections_s": sections,
        "notes": notes,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", render_markdown(results))
    return results


# ---- the tables ---------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def render_markdown(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["settings"]
    lines = ["# nanokoel benchmarks", ""]
    if r["smoke"]:
        lines += ["**SMOKE RUN: tiny sizes; the numbers only show that the harness works.**", ""]
    device = s.get("device", "cpu")
    on = f"**GPU {m.get('gpu')}** (device {device}), " if device != "cpu" else ""
    lines += [
        f"Machine: {on}{m['cpu']}, {m['logical_cpus']} logical CPUs, load average {m['load_average']} before / "
        f"{m['load_average_end']} after; torch {m['torch']} on **{m['torch_threads']} thread(s)**, transformers "
        f"{m['transformers']}, Python {m['python']}.",
        "",
    ]
    if r["e2e"]:
        lines += _e2e_lines(r, s)
    if r["codec_speed"]:
        lines += _codec_lines(r, s)
    if r["tokenize"] or r["codec_training"] or r["lm_training"]:
        lines += _throughput_lines(r)
    lines += ["", *[f"- {note}" for note in r["notes"]], ""]
    return "\n".join(lines)


def _e2e_lines(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = [
        "## 1. Streaming TTS: 12.5 vs 21.5 FPS (same LM architecture, text, prompt and audio length)",
        "",
        f"Headline (batch 1): RTF {_f(r['rtf_12_5'])} at 12.5 FPS vs {_f(r['rtf_21_5'])} at 21.5 FPS: "
        f"**{_f(r['rtf_ratio'])}x** (paper: {r['paper_rtf_ratio']}x); time to first audio {r['ttfa_12_5_ms']:.0f} vs "
        f"{r['ttfa_21_5_ms']:.0f} ms ({_f(r['ttfa_ratio'])}x) for a new voice, {r['ttfa_warm_voice_12_5_ms']:.0f} vs "
        f"{r['ttfa_warm_voice_21_5_ms']:.0f} ms for a voice used before (prompt codes kept); LM steps per second of "
        f"audio {_f(r['lm_steps_ratio'])}x.",
        "",
        "| FPS | batch | weights | audio s / stream | TTFA ms (best) | RTF (best) | audio s per s | LM steps / "
        "audio s | LM steps / s | RTF 21.5 / 12.5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(r["e2e"], key=lambda x: (x["batch"], x["fps"])):
        ratio = r["rtf_ratio_by_batch"][str(row["batch"])] if row["fps"] == "21.5" else None
        lines.append(
            f"| {row['fps']} | {row['batch']} | {row['weights'].split(':')[0]} | {row['audio_s']:.2f} | "
            f"{row['ttfa_ms']:.0f} ({row['best_ttfa_ms']:.0f}) | {_f(row['rtf'])} ({_f(row['best_rtf'])}) | "
            f"{_f(row['audio_s_per_s'])} | {_f(row['lm_steps_per_audio_s'])} | {_f(row['lm_steps_per_s'])} | "
            f"{_f(ratio) if ratio else ''} |"
        )
    weights = sorted({row["weights"] for row in r["e2e"]})
    lms = sorted({f"{row['fps']} FPS {row['lm']}" for row in r["e2e"]})
    lines += [
        "",
        f"LMs: {'; '.join(lms)}. Weights: {'; '.join(weights)}. "
        "Audio EOS masked so every request makes the same seconds of audio; "
        f"chunk = {s['chunk_frames']} frame(s), steps by {_backends(r['e2e'])}; medians of {s['e2e_repeats']} "
        "interleaved requests (best in "
        "brackets). Batch 1 runs `Synthesizer.stream`; batch B streams B rows through one LM and one decoder; RTF is "
        "compute seconds per second of audio of one stream, 'audio s per s' counts all B streams.",
        "",
        "Where the time goes (ms; timed apart from the requests; G2P and prompt encoding once per request, the "
        "LM prefix once per sentence, an LM step and a decoder frame once per frame):",
        "",
        "| FPS | batch | G2P | prompt encoding (s of prompt) | LM prefix + first step | LM step | decoder frame | "
        "frame length |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(r["components"], key=lambda x: (x["batch"], x["fps"])):
        g2p = f"{_f(c['g2p_ms'])}" + (" (stand-in)" if c["g2p"] == "StandInG2P" else "") if c["g2p_ms"] else ""
        encode = f"{_f(c['prompt_encode_ms'])} ({c['prompt_s']:.1f} s)" if c["prompt_encode_ms"] else ""
        lines.append(
            f"| {c['fps']} | {c['batch']} | {g2p} | {encode} | {_f(c['lm_prefix_ms'])} | {_f(c['lm_step_ms'])} | "
            f"{_f(c['decoder_frame_ms'])} | {c['frame_ms']:.0f} |"
        )
    return lines


def _stream(row: dict[str, Any], rtf: str, frame_ms: str) -> str:
    """A streaming column's cell, RTF (ms per frame), or n/a (a peer; ONNX Runtime off a CPU; older results)."""
    if row.get(rtf) is None:
        return "n/a"
    return f"{_f(row[rtf])} ({_f(row[frame_ms])})" if row.get(frame_ms) is not None else _f(row[rtf])


def _backends(rows: list[dict[str, Any]]) -> str:
    """The backends of the rows' LM steps and decoder, e.g. "onnxruntime" (older results: "torch")."""
    return " / ".join(sorted({row.get("backend", "torch") for row in rows}))


def _codec_lines(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 2. Codec speed vs peers (random weights, same speech, interleaved, medians)",
        "",
        "| codec | sample rate | FPS | kbps | params M | encode RTF | decode RTF | streaming decode RTF (frame by "
        "frame; ms per frame): torch | the same, ONNX Runtime | encode / NanoCodec 12.5 | decode / NanoCodec 12.5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["codec_speed"]:
        lines.append(
            f"| {row['codec']} | {row['sample_rate']} | {row['frame_rate']:.1f} | {row['kbps']:.2f} | "
            f"{row['parameters_m']:.1f} | {_f(row['encode_rtf'])} | {_f(row['decode_rtf'])} | "
            f"{_stream(row, 'stream_decode_rtf', 'stream_frame_ms')} | "
            f"{_stream(row, 'stream_decode_onnx_rtf', 'stream_frame_onnx_ms')} | "
            f"{_f(row['encode_vs_nanocodec'])}x | {_f(row['decode_vs_nanocodec'])}x |"
        )
    lines += [
        "",
        f"{r['codec_speed'][0]['audio_s']:.1f} s of speech (espeak-ng) at each codec's rate, {s['codec_repeats']} "
        "rounds after a warm-up. Peers' streaming: transformers decodes whole sequences only (n/a).",
    ]
    return lines


def _throughput_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 3. Throughput of the CPU profiles",
        "",
        "| stage | profile | weights | throughput |",
        "|---|---|---|---|",
    ]
    for row in r["tokenize"]:
        lines.append(
            f"| tokenise (1 process, 1 thread) | {row['fps']} FPS | {row['weights'].split(':')[0]} | "
            f"{_f(row['audio_s_per_s'])} s of audio per s ({row['audio_s']:.0f} s in {row['wall_s']:.1f} s) |"
        )
    for row in r["codec_training"]:
        recon = (
            f"{_f(row['recon_steps_per_s'])} steps/s ({_f(row['recon_samples_per_s'])} samples/s) before the GAN, "
            if row["recon_steps_per_s"]
            else ""
        )
        lines.append(
            f"| codec training (batch {row['batch_size']} x {row['crop_s']:.2f} s, speaker loss "
            f"{row['speaker_loss']}) | {row['profile']} | random init | {recon}{_f(row['gan_steps_per_s'])} steps/s "
            f"({_f(row['gan_samples_per_s'])} samples/s) with it; {row['max_steps']} steps ~ "
            f"{row['schedule_hours_estimate']:.1f} h |"
        )
    for row in r["lm_training"]:
        lines.append(
            f"| LM training ({row['parameters_m']:.1f} M params, {row['rows']} rows x {row['sequence_positions']} "
            f"positions) | {r['settings']['lm_config']} on {row['frame_rate']:.1f} FPS codes | random init | "
            f"{_f(row['steps_per_s'])} steps/s, "
            f"{_f(row['samples_per_s'])} samples/s, {_f(row['audio_s_per_s'])} s of audio per s |"
        )
    return lines


# ---- command line -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.bench",
        description="Benchmarks: streaming TTS at 12.5 vs 21.5 FPS, codec speed vs Mimi/EnCodec/DAC, tokenisation "
        "and training throughput. Writes OUT/results.json and OUT/results.md.",
    )
    p.add_argument("--out", default="runs/bench", help="output directory (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every measurement (default 1)")
    p.add_argument(
        "--smoke", action="store_true", help="every code path at tiny sizes, in seconds (numbers mean nothing)"
    )
    p.add_argument(
        "--chunk-frames",
        default="1",
        help='codec frames per streamed chunk, or "grow": single frames, then up to 8 as speed allows (default 1)',
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="the LM step and streaming decoder of the end-to-end benchmark: auto = ONNX Runtime on a CPU, else "
        "torch (default %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the timed models: cpu or cuda (default cpu)")
    p.add_argument(
        "--sections",
        help="comma-separated subset of e2e,codecs,throughput (default: all on cpu; e2e,codecs on a GPU, since the "
        "throughput section times the CPU profiles' tokenisation and training)",
    )
    p.add_argument("--lm-config", help="LM config of the end-to-end benchmark (default configs/lm/cpu.yaml)")
    for fps in ("12", "21"):
        rate = "12.5" if fps == "12" else "21.5"
        p.add_argument(f"--codec-{fps}", help=f"trained {rate} FPS codec directory (default: random init)")
        p.add_argument(f"--lm-{fps}", help=f"trained LM on the {rate} FPS codec's tokens (needs --codec-{fps})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    try:
        args.chunk_frames = parse_chunk_frames(args.chunk_frames)
    except ValueError as e:
        p.error(f"--chunk-frames: {e}")
    trained: dict[str, dict[str, str]] = {}
    for fps, rate in (("12", "12.5"), ("21", "21.5")):
        codec, lm = getattr(args, f"codec_{fps}"), getattr(args, f"lm_{fps}")
        if lm and not codec:
            p.error(f"--lm-{fps} needs --codec-{fps} (the codec whose tokens the LM was trained on)")
        for flag, path in ((f"--codec-{fps}", codec), (f"--lm-{fps}", lm)):
            if path and not (Path(path) / "model.safetensors").is_file():
                print(f"error: {flag} {path}: no trained model there (model.safetensors)", file=sys.stderr)
                return 2
        if codec:
            trained[rate] = {"codec": codec, "lm": lm}
    settings = BenchSettings.smoke(args.threads) if args.smoke else BenchSettings.full(args.threads)
    settings.chunk_frames = args.chunk_frames
    settings.backend = args.backend
    settings.device = args.device
    if args.device != "cpu" and not torch.device(args.device).type == "cpu":
        try:
            torch.empty(0, device=args.device)
        except (RuntimeError, AssertionError) as e:
            print(f"error: --device {args.device}: {e}", file=sys.stderr)
            return 2
    default_sections = ("e2e", "codecs", "throughput") if args.device == "cpu" else ("e2e", "codecs")
    settings.sections = tuple(args.sections.split(",")) if args.sections else default_sections
    if not set(settings.sections) <= {"e2e", "codecs", "throughput"}:
        p.error(f"--sections {args.sections}: use a comma-separated subset of e2e,codecs,throughput")
    if args.lm_config:
        settings.lm_config = args.lm_config
    results = run_bench(settings, args.out, trained, progress=not args.no_progress)
    print(render_markdown(results))
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
