"""Import a real speech corpus into the project's manifest format (audio checked, phonemes computed, split).

    python -m data.import_corpus ljspeech /data/LJSpeech-1.1 --out runs/data/ljspeech
    python -m data.import_corpus hf /data/my_saved_dataset --out runs/data/mine --text-column sentence

    out/manifest.jsonl   data.manifest format (audio referenced in place, or converted into out/audio/)
    out/phonemes.json    text.PhonemeVocab
    out/import_info.json counts, hours, skipped files per reason (with examples), splits

Every audio file is read once (`codec.audio.load_audio`: unreadable, empty, silent, NaN/inf or too long
files are skipped, each reported with its reason). Audio that soundfile reads (wav, flac, ogg, mp3) is
referenced where it lies, at its own sample rate (loaders resample to the model rate); `--convert`, and
any in-memory Hugging Face audio, writes 22,050 Hz mono FLAC into out/audio/ instead (atomically; a rerun
reuses finished files). Splits hold out whole speakers; a corpus with fewer than 3 speakers (LJSpeech)
can only be split by utterance, which the importer says loudly and records in import_info.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import multiprocessing
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from common.fileio import write_json_atomic
from data.adapters import ADAPTERS, CorpusLayoutError, SourceUtterance, read_corpus
from data.audio import AudioError, audio_comment, check_array, load_audio, resample, save_audio
from data.manifest import (
    MANIFEST_NAME,
    VOCAB_NAME,
    Utterance,
    check_speaker_disjoint,
    format_split_lines,
    speaker_disjoint_split,
    split_summary,
    utterance_split,
    write_manifest,
)
from text.g2p import G2P
from text.normalize import TextError, normalize_text
from text.vocab import PhonemeVocab

BATCH = 256  # utterances handed to the worker pool at a time (bounds memory for in-memory HF audio)


@dataclass
class ImportOptions:
    """How to import."""

    convert: bool = False  # write 22,050 Hz FLAC copies instead of referencing the audio in place
    sample_rate: int = 22050  # rate of converted audio
    min_seconds: float = 0.5
    max_seconds: float = 30.0
    validation: float = 0.05  # fraction of hours held out (whole speakers)
    test: float = 0.05
    seed: int = 0
    language: str = "en-us"
    workers: int | None = None


@dataclass
class ImportResult:
    manifest: Path
    utterances: int
    skipped: dict[str, int]
    speaker_disjoint: bool
    info: dict


def _check_one(task: tuple[SourceUtterance, str | None, ImportOptions]) -> tuple[str, str, float, int]:
    """Validate (and maybe convert) one utterance -> (id, "ok" | skip reason, duration, sample rate)."""
    src, target, opts = task
    try:
        if src.audio_bytes is not None:
            try:
                data, sr = sf.read(io.BytesIO(src.audio_bytes), dtype="float32", always_2d=True)  # [T, C]
            except Exception as e:
                raise AudioError(f"{src.name}: unreadable audio ({e})") from e
            wav = check_array(data.mean(axis=1), name=src.name)
            if wav.size / sr > opts.max_seconds:
                raise AudioError(f"{src.name}: {wav.size / sr:.0f} s is too long (limit {opts.max_seconds:g} s)")
        elif target is not None and audio_comment(target) == _key(src):
            return src.id, "ok", sf.info(target).duration, opts.sample_rate  # converted by an earlier run
        else:
            wav, sr = load_audio(src.audio, max_seconds=opts.max_seconds)
    except AudioError as e:
        return src.id, str(e), 0.0, 0
    duration = wav.size / sr
    if duration < opts.min_seconds:
        return src.id, f"{src.name}: shorter than {opts.min_seconds:g} s", 0.0, 0
    if target is not None:
        wav = resample(wav, sr, opts.sample_rate)
        save_audio(target, np.clip(wav, -1, 1), opts.sample_rate, comment=_key(src))
        return src.id, "ok", wav.size / opts.sample_rate, opts.sample_rate
    return src.id, "ok", duration, sr


def _key(src: SourceUtterance) -> str:
    """Marks a converted file as made from this source (its bytes, or its path, size and modification time)."""
    if src.audio_bytes is not None:
        raw = src.audio_bytes
    else:
        stat = os.stat(src.audio) if os.path.isfile(src.audio) else None
        raw = f"{src.audio}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}".encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def _reason(message: str) -> str:
    """A skip message without the file name, for counting."""
    return message.split(": ", 1)[-1].split(" (")[0]


def import_corpus(
    kind: str, source: str | os.PathLike | Any, out: str | os.PathLike, opts: ImportOptions | None = None, **hf_options
) -> ImportResult:
    """Read corpus `source` with adapter `kind` and write out/manifest.jsonl (+ phonemes.json, import_info.json).

    `source` is a path (or hub name); for `hf` it may also be an in-memory datasets.Dataset / DatasetDict.
    """
    t0 = time.time()
    name = str(source) if isinstance(source, str | os.PathLike) else f"<in-memory {type(source).__name__}>"
    opts = opts or ImportOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stream = read_corpus(kind, source, **hf_options)
    first = list(itertools.islice(stream, BATCH))  # layout errors surface here, before any work starts
    g2p, vocab = G2P(opts.language), PhonemeVocab.default()
    utts: list[Utterance] = []
    skipped: list[str] = []
    ids: set[str] = set()
    workers = max(1, min(opts.workers or os.cpu_count() or 1, len(first)))
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    stream = itertools.chain(first, stream)
    try:
        with tqdm(unit="utt", desc=f"import {kind}") as bar:
            while batch := list(itertools.islice(stream, BATCH)):
                batch = _with_text(batch, g2p, vocab, skipped, ids)
                tasks = []
                for src, _ in batch:
                    convert = opts.convert or src.audio_bytes is not None
                    target = str(out / "audio" / _safe(src.speaker) / f"{_safe(src.id)}.flac") if convert else None
                    tasks.append((src, target, opts))
                results = pool.map(_check_one, tasks) if pool else list(map(_check_one, tasks))
                for (src, phonemes), (_, target, _), (uid, status, duration, sr) in zip(
                    batch, tasks, results, strict=True
                ):
                    if status != "ok":
                        skipped.append(status)
                        continue
                    utts.append(
                        Utterance(
                            id=uid,
                            audio=str(Path(target or src.audio).resolve()),
                            text=normalize_text(src.text),
                            phonemes=phonemes,
                            speaker=src.speaker,
                            duration=round(duration, 4),
                            sample_rate=sr,
                        )
                    )
                bar.update(len(batch))
    finally:
        if pool is not None:
            pool.terminate()
    if not utts:
        shown = "; ".join(skipped[:3]) or "the adapter found no utterances"
        raise CorpusLayoutError(f"{name}: no usable utterances for `{kind}` ({shown})")
    speakers = {u.speaker for u in utts}
    disjoint = len(speakers) >= 3
    if disjoint:
        utts = speaker_disjoint_split(utts, opts.validation, opts.test, opts.seed)
        check_speaker_disjoint(utts)
    else:
        print(
            f"warning: {name} has {len(speakers)} speaker(s), too few to hold whole speakers out; "
            "validation/test are split by utterance (their speakers are NOT unseen)",
            file=sys.stderr,
        )
        utts = utterance_split(utts, opts.validation, opts.test, opts.seed)
    reasons = Counter(_reason(s) for s in skipped)
    splits = split_summary(utts)
    info = {
        "kind": kind,
        "source": name,
        "utterances": len(utts),
        "hours": round(sum(u.duration for u in utts) / 3600, 3),
        "speakers": len(speakers),
        "speaker_disjoint": disjoint,
        "converted": opts.convert,
        "splits": {s: {k: (len(v) if isinstance(v, list) else v) for k, v in d.items()} for s, d in splits.items()},
        "skipped": dict(reasons),
        "skipped_examples": skipped[:20],
        "seconds": round(time.time() - t0, 1),
    }
    vocab.save(out / VOCAB_NAME)
    write_json_atomic(out / "import_info.json", info)
    manifest = write_manifest(out / MANIFEST_NAME, utts)
    return ImportResult(manifest, len(utts), dict(reasons), disjoint, info)


def _with_text(
    batch: list[SourceUtterance], g2p: G2P, vocab: PhonemeVocab, skipped: list[str], ids: set[str]
) -> list[tuple[SourceUtterance, str]]:
    """Keep utterances with a new id and speakable text; -> [(utterance, phonemes)] (batched G2P)."""
    keep = []
    for src in batch:
        if src.id in ids:
            skipped.append(f"{src.name}: duplicate id {src.id!r}")
        elif not src.text:
            skipped.append(f"{src.name}: no transcript")
        else:
            ids.add(src.id)
            keep.append(src)
    try:
        phonemes = g2p.phonemize([s.text for s in keep])
    except TextError:
        phonemes = []
        for s in keep:
            try:
                phonemes.append(g2p(s.text))
            except TextError:
                phonemes.append(None)
    result = []
    for src, p in zip(keep, phonemes, strict=True):
        try:
            if p is None:
                raise TextError(f"{src.text!r} has no phonemes")
            vocab.encode(p)
            result.append((src, p))
        except TextError as e:
            skipped.append(f"{src.name}: unspeakable text ({e})")
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.import_corpus",
        description="Import a real corpus (folder of wav+txt, LJSpeech, LibriTTS(-R), VCTK, NeMo JSONL, HF dataset) "
        "into manifest.jsonl + phonemes.json with speaker-disjoint splits.",
    )
    parser.add_argument("kind", choices=sorted(ADAPTERS), help="corpus layout")
    parser.add_argument("source", help="corpus folder, NeMo manifest file, or HF dataset folder/name")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--convert", action="store_true", help="write 22,050 Hz FLAC copies into OUT/audio")
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--validation", type=float, default=0.05, help="share of hours held out (whole speakers)")
    parser.add_argument("--test", type=float, default=0.05, help="share of hours held out (whole speakers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language", default="en-us", help="G2P language (espeak-ng code)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cpu count)")
    hf = parser.add_argument_group("hf only")
    hf.add_argument("--hf-split", default="train")
    hf.add_argument("--audio-column", default=None)
    hf.add_argument("--text-column", default=None)
    hf.add_argument("--speaker-column", default=None)
    args = parser.parse_args(argv)
    opts = ImportOptions(
        convert=args.convert,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        validation=args.validation,
        test=args.test,
        seed=args.seed,
        language=args.language,
        workers=args.workers,
    )
    hf_options = {}
    if args.kind == "hf":
        hf_options = {
            "split": args.hf_split,
            "audio_column": args.audio_column,
            "text_column": args.text_column,
            "speaker_column": args.speaker_column,
        }
    try:
        result = import_corpus(args.kind, args.source, args.out, opts, **hf_options)
    except (CorpusLayoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = result.info
    print(
        f"{result.manifest}: {info['utterances']} utterances, {info['hours']:.2f} h, {info['speakers']} speakers, "
        f"skipped {info['skipped'] or 'none'}"
    )
    print("\n".join(format_split_lines(info["splits"])))
    return 0


if __name__ == "__main__":
    from data.import_corpus import (
        main as _main,
    )  # classes live in data.import_corpus, not __main__ (pickling to workers, OmegaConf)

    sys.exit(_main())
