"""Command line for the codec: audio file <-> token ids.

    python -m codec encode speech.wav codes.npy --model runs/codec/cpu_12.5fps   # -> int16 [K, F]
    python -m codec decode codes.npy speech_out.wav --model runs/codec/cpu_12.5fps
    python -m codec decode codes.npy out.wav --model DIR --streaming             # frame by frame (same samples)
    python -m codec convert-nemo codec.nemo runs/codec/nvidia_1.78kbps           # NVIDIA .nemo -> our checkpoint

`encode` reads any wav/flac/ogg/mp3, mixes to mono and resamples to the codec's rate; the .npy holds the codes
of the K codebooks as int16 [K, F] (F = ceil(samples / samples_per_frame)). `decode` writes 16-bit PCM at the
codec's sample rate, F * samples_per_frame samples. `--model` is a directory from `save_pretrained`
(config.json + model.safetensors) or a Hugging Face hub id when online. `convert-nemo` reads an NVIDIA NeMo
`.nemo` codec checkpoint (a file, or a hub id such as nvidia/nemo-nano-codec-22khz-1.78kbps-12.5fps) without
NeMo and writes config.json + model.safetensors for `--model` / `from_pretrained` (codec/nemo.py).
Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from codec.audio import AudioError, load_audio
from codec.model import CodecError, NanoCodec
from common.config import ConfigError
from common.fileio import atomic_path


def _load_model(name: str, threads: int) -> NanoCodec:
    torch.set_num_threads(threads)
    return NanoCodec.from_pretrained(name, fold_weight_norm=True)


def cmd_encode(args: argparse.Namespace) -> None:
    out = Path(args.output)
    if out.suffix != ".npy":
        raise CodecError(f"{out}: the output must be a .npy file")
    model = _load_model(args.model, args.threads)
    wav, _ = load_audio(args.input, sample_rate=model.sample_rate)  # float32 [T], mono, codec rate
    codes = model.encode(torch.from_numpy(wav)[None])[0]  # (K, F)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, codes.cpu().numpy().astype(np.int16))
    seconds = wav.shape[0] / model.sample_rate
    print(f"{args.input}: {seconds:.2f} s -> {out} codes {tuple(codes.shape)} ({model.frame_rate:g} frames/s)")


def _read_codes(path: Path) -> np.ndarray:
    if not path.is_file():
        raise CodecError(f"{path}: no such codes file")
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as e:
        raise CodecError(f"{path}: not a .npy array of codes ({e})") from e
    if codes.ndim == 3 and codes.shape[0] == 1:
        codes = codes[0]
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise CodecError(f"{path}: expected integer codes [K, F], got {codes.dtype} {codes.shape}")
    return codes


def cmd_decode(args: argparse.Namespace) -> None:
    out = Path(args.output)
    out_format = _format(out)
    codes = _read_codes(Path(args.input))
    model = _load_model(args.model, args.threads)
    try:
        codes_t = model.check_codes(codes.astype(np.int64))  # (1, K, F)
    except CodecError as e:
        raise CodecError(f"{args.input}: {e}") from e
    if args.streaming:
        with model.streaming(batch_size=1):
            chunks = [model.decode(codes_t[:, :, i : i + 1]) for i in range(codes_t.shape[-1])]
        wav = torch.cat(chunks, dim=-1)[0]
    else:
        wav = model.decode(codes_t)[0]  # (F * hop,)
    with atomic_path(out) as tmp:
        sf.write(str(tmp), wav.cpu().numpy(), model.sample_rate, subtype="PCM_16", format=out_format)
    print(f"{args.input}: codes {tuple(codes.shape)} -> {out} ({wav.shape[0] / model.sample_rate:.2f} s)")


def cmd_convert_nemo(args: argparse.Namespace) -> None:
    from codec.nemo import load_nemo

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CodecError(f"{out}: exists and is not a folder; give an output folder")
    torch.set_num_threads(args.threads)
    result = load_nemo(args.input, revision=args.revision)
    model = result.model
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    ignored = ", ".join(f"{name} {n}" for name, n in result.ignored.items()) or "none"
    print(
        f"{args.input} -> {out}: {model.sample_rate} Hz, {model.frame_rate:g} frames/s, {model.num_codebooks} "
        f"codebooks x {model.codebook_size} codes ({model.bitrate / 1000:.2f} kbps), {params / 1e6:.1f} M parameters; "
        f"weight norm stored as {result.weight_norm}; training-only tensors left out: {ignored}"
    )


def _format(path: Path) -> str:
    formats = {".wav": "WAV", ".flac": "FLAC"}
    if path.suffix.lower() not in formats:
        raise CodecError(f"{path}: write .wav or .flac")
    return formats[path.suffix.lower()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m codec", description="NanoCodec: encode audio to token ids and decode them back."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="audio file -> codes .npy (int16 [K, F])")
    enc.add_argument("input", help="audio file (wav, flac, ogg, mp3); resampled to the codec's rate")
    enc.add_argument("output", help="output .npy")
    dec = sub.add_parser("decode", help="codes .npy -> audio file")
    dec.add_argument("input", help=".npy of integer codes [K, F] (or [1, K, F])")
    dec.add_argument("output", help="output .wav or .flac (16-bit PCM)")
    dec.add_argument("--streaming", action="store_true", help="decode frame by frame through the streaming path")
    for p in (enc, dec):
        p.add_argument("--model", required=True, help="codec directory (config.json + model.safetensors) or hub id")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    enc.set_defaults(func=cmd_encode)
    dec.set_defaults(func=cmd_decode)
    conv = sub.add_parser(
        "convert-nemo", help="NVIDIA NeMo .nemo codec checkpoint -> config.json + model.safetensors (no NeMo needed)"
    )
    conv.add_argument("input", help=".nemo file, or a Hugging Face hub id holding one (downloaded when online)")
    conv.add_argument("output", help="output folder (loadable with --model / NanoCodec.from_pretrained)")
    conv.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) for a hub id")
    conv.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    conv.set_defaults(func=cmd_convert_nemo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (AudioError, CodecError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
