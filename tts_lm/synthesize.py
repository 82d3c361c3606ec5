"""Batch synthesis: one line of text -> one wav in the voice of a prompt, with a progress bar.

    python -m tts_lm.synthesize --text-file lines.txt --prompt voice.wav --out dir/ \
        [--lm runs/tts_lm/cpu_12.5fps] [--codec runs/codec/cpu_12.5fps] [--seed 0] [--cfg-scale 2.5] ...

Every non-blank line of the text file is one request (long lines are split into sentences by the Synthesizer);
line i (counted from 1, blank lines included) is written to `dir/{i:04d}.wav` (16-bit PCM at the codec's rate),
atomically. `dir/results.jsonl` gets one record per line: line, text, file (or error), seconds, time to first
audio, RTF, stop reasons. Outputs that already exist are kept (so an interrupted run resumes) unless
--overwrite. Every line uses the same --seed, so a line's audio does not depend on the others. A line that
cannot be synthesised (unspeakable text) is reported and skipped; the exit code is 1 if any line failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from codec.audio import AudioError, load_audio
from common.fileio import atomic_path, write_text_atomic

DEFAULT_LM = "runs/tts_lm/cpu_12.5fps"
DEFAULT_CODEC = "runs/codec/cpu_12.5fps"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tts_lm.synthesize",
        description="Synthesise every line of a text file in the voice of a prompt recording (zero-shot cloning).",
    )
    p.add_argument("--text-file", required=True, type=Path, help="UTF-8 text, one utterance per line")
    p.add_argument("--prompt", required=True, type=Path, help="3-10 s recording of the voice to clone (wav/flac/...)")
    p.add_argument("--out", required=True, type=Path, help="output directory (NNNN.wav per line + results.jsonl)")
    p.add_argument("--lm", default=DEFAULT_LM, help=f"LM directory or hub id (default {DEFAULT_LM})")
    p.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec directory, hub id or .nemo (default {DEFAULT_CODEC})")
    p.add_argument("--language", default="en-us", help="espeak-ng language of the text (default en-us)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every line (default 0)")
    p.add_argument("--cfg-scale", type=float, default=2.5, help="classifier-free guidance scale (default 2.5)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6)")
    p.add_argument("--top-k", type=int, default=80, help="top-k sampling (default 80)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--backend",
        default="auto",
        help="LM step and streaming decoder: auto (ONNX Runtime on a CPU, else torch), torch or onnxruntime "
        "(default %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="re-synthesise lines whose wav already exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.text_file.is_file():
        print(f"error: --text-file {args.text_file}: no such file", file=sys.stderr)
        return 2
    lines = args.text_file.read_text(encoding="utf-8").splitlines()
    todo = [(i, line.strip()) for i, line in enumerate(lines, start=1) if line.strip()]
    if not todo:
        print(f"error: {args.text_file} has no non-blank line to synthesise", file=sys.stderr)
        return 2

    from tts_lm.synthesizer import Synthesizer  # after argument checks: loading torch models takes seconds

    try:
        prompt, prompt_sr = load_audio(args.prompt, max_seconds=600)
        tts = Synthesizer.from_pretrained(
            lm=args.lm, codec=args.codec, device=args.device, language=args.language, backend=args.backend
        )
        tts.prepare_prompt(prompt, prompt_sr)  # fail now, not on every line
    except (AudioError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    records, failed = [], 0
    for index, text in tqdm(todo, desc="synthesising", unit="line"):
        path = args.out / f"{index:04d}.wav"
        record: dict = {"line": index, "text": text}
        if path.is_file() and not args.overwrite:
            records.append({**record, "file": path.name, "skipped": "exists"})
            continue
        try:
            stream = tts.stream(
                text,
                prompt,
                prompt_sr,
                seed=args.seed,
                cfg_scale=args.cfg_scale,
                temperature=args.temperature,
                top_k=args.top_k,
            )
            audio = stream.read_all()
        except ValueError as e:  # TextError / SynthesisError / GenerationError: this line only
            failed += 1
            tqdm.write(f"line {index}: {e}", file=sys.stderr)
            records.append({**record, "error": str(e)})
            continue
        with atomic_path(path) as tmp:
            sf.write(str(tmp), audio, tts.sample_rate, subtype="PCM_16", format="WAV")
        s = stream.stats
        records.append(
            {
                **record,
                "file": path.name,
                "seconds": round(s.audio_seconds, 3),
                "ttfa_s": None if s.ttfa_s is None else round(s.ttfa_s, 4),
                "rtf": round(s.rtf, 4) if s.samples else None,
                "stop_reasons": s.stop_reasons,
            }
        )
    write_text_atomic(args.out / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    done = [r for r in records if "seconds" in r]
    if done:
        audio_s = sum(r["seconds"] for r in done)
        print(f"wrote {len(done)} file(s), {audio_s:.1f} s of audio, to {args.out}", file=sys.stderr)
    if failed:
        print(f"{failed} line(s) failed; see {args.out / 'results.jsonl'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
