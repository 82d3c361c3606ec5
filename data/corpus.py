"""The embedded multi-speaker corpus: Debian synthesizers speak Debian texts -> FLAC + manifest, offline.

    python -m data.corpus --profile cpu --out runs/data/cpu [--workers N] [--mbrola] [key=value ...]
    python -m data.corpus --profile cpu --bench          # how fast each engine is (x real time)

    out/
      audio/<speaker>/<id>.flac    22,050 Hz mono 16-bit, silence trimmed, speech level -20 dBFS
      manifest.jsonl               data.manifest format, split train / validation / test   (written last)
      phonemes.json                text.PhonemeVocab
      corpus_info.json             hours, speakers, engines, per-split counts, generation time
      corpus_config.yaml           the resolved profile
      skipped.json                 utterances dropped (too short/long, silent), so a rerun does not retry them

A profile (configs/data/<name>.yaml, schema `CorpusConfig`) lists speaker identities (engine voice + sox
pitch/tempo, see data.synthesizers) and how many utterances each speaks; every utterance gets its own
sentence from data.texts. Validation and test hold out whole underlying voices (all engines and sox
variants of them), so their speakers are unseen in training. Generation runs in a process pool over
chunks of one speaker's utterances, shows a progress bar, and is resumable: every FLAC is written
atomically and carries a key (hash of speaker, text and processing) in its metadata; a rerun skips files
whose key matches and regenerates the rest. The manifest is written last, atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from common.config import load_config, save_config
from common.fileio import write_json_atomic
from data.audio import (
    AudioError,
    audio_comment,
    audio_info,
    check_array,
    normalize_loudness,
    resample,
    save_audio,
    trim_silence,
)
from data.manifest import (
    MANIFEST_NAME,
    VOCAB_NAME,
    Utterance,
    check_speaker_disjoint,
    format_split_lines,
    speaker_disjoint_split,
    split_summary,
    write_manifest,
)
from data.synthesizers import SynthesisError, VoiceSpec, check_available, synthesize
from data.texts import TextSourceError, iter_texts, text_pool
from text.g2p import G2P
from text.normalize import TextError
from text.vocab import PhonemeVocab

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "data"
PROFILES = ("smoke", "quick", "cpu")


class CorpusError(RuntimeError):
    """The corpus cannot be built as configured; the message says why and what to do."""


@dataclass
class CorpusConfig:
    """A corpus profile (values in configs/data/<name>.yaml)."""

    name: str = "custom"
    seed: int = 0
    sample_rate: int = 22050
    language: str = "en-us"  # G2P language of the manifest phonemes
    voices: list[VoiceSpec] = field(default_factory=list)
    mbrola_voices: list[VoiceSpec] = field(default_factory=list)  # added with --mbrola only (Debian contrib)
    utterances_per_speaker: int = 10
    holdout_utterances_per_speaker: int = 0  # for speakers of validation/test voices; 0 = utterances_per_speaker
    sources: list[str] = field(default_factory=lambda: ["fortunes", "bible"])
    min_chars: int = 55  # sentence length filter, a proxy for min/max_seconds
    max_chars: int = 230
    min_seconds: float = 3.0  # after trimming silence; shorter/longer renderings are skipped
    max_seconds: float = 20.0
    loudness_db: float = -20.0
    trim_pad_s: float = 0.15
    validation_voices: list[str] = field(default_factory=list)  # underlying voices held out whole
    test_voices: list[str] = field(default_factory=list)
    chunk_size: int = 8  # utterances per worker task


@dataclass
class Planned:
    """One utterance to render: who says what, where it goes, and the key that marks its file as done."""

    id: str
    speaker: str
    voice: str
    engine: str
    text: str
    source: str
    phonemes: str
    audio: str  # relative to the output folder
    key: str


@dataclass
class CorpusResult:
    """What a build did."""

    manifest: Path
    utterances: int
    rendered: int  # synthesised in this run
    reused: int  # already complete on disk
    skipped: dict[str, int]  # reason -> count
    seconds: float
    info: dict


def load_profile(profile: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> CorpusConfig:
    """A profile name (smoke, quick, cpu) or a YAML path, with `key=value` overrides -> CorpusConfig."""
    path = Path(profile)
    if not path.suffix:
        path = CONFIG_DIR / f"{profile}.yaml"
        if not path.is_file():
            raise CorpusError(
                f"unknown corpus profile {str(profile)!r}; use one of {', '.join(PROFILES)} or a YAML path"
            )
    return load_config(CorpusConfig, path, list(overrides))


def _key(cfg: CorpusConfig, spec: VoiceSpec, text: str) -> str:
    recipe = [asdict(spec), text, cfg.sample_rate, cfg.loudness_db, cfg.trim_pad_s, cfg.min_seconds, cfg.max_seconds]
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _phonemize(g2p: G2P, vocab: PhonemeVocab, texts: list[str]) -> list[str | None]:
    """Batched G2P; texts it (or the vocabulary) refuses get None. A failing batch is retried text by text."""
    try:
        phonemes: list[str | None] = list(g2p.phonemize(texts))
    except TextError:
        phonemes = []
        for text in texts:
            try:
                phonemes.append(g2p(text))
            except TextError:
                phonemes.append(None)
    for i, p in enumerate(phonemes):
        try:
            if p is not None and p.strip():
                vocab.encode(p)
            else:
                phonemes[i] = None
        except TextError:
            phonemes[i] = None
    return phonemes


def utterances_for(cfg: CorpusConfig, spec: VoiceSpec) -> int:
    """How many sentences `spec` speaks: fewer for held-out voices when the profile says so."""
    held_out = spec.voice in cfg.validation_voices or spec.voice in cfg.test_voices
    return (
        cfg.holdout_utterances_per_speaker
        if held_out and cfg.holdout_utterances_per_speaker > 0
        else (cfg.utterances_per_speaker)
    )


def plan_corpus(cfg: CorpusConfig, g2p: G2P | None = None, vocab: PhonemeVocab | None = None) -> list[Planned]:
    """Deterministic list of utterances for `cfg`: each speaker speaks its own unique sentences.

    Sentences are dealt round-robin (speaker i's k-th sentence is number k * speakers + i of the stream), so
    raising utterances_per_speaker only adds sentences: a rebuild renders just the new ones.
    """
    specs = cfg.voices
    if not specs:
        raise CorpusError(f"profile {cfg.name!r} lists no voices")
    speakers = [s.speaker for s in specs]
    if len(set(speakers)) != len(speakers):
        dupes = sorted(s for s, n in Counter(speakers).items() if n > 1)
        raise CorpusError(f"profile {cfg.name!r} lists speaker(s) twice: {', '.join(dupes)}")
    g2p = g2p or G2P(cfg.language)
    vocab = vocab or PhonemeVocab.default()
    counts = [utterances_for(cfg, spec) for spec in specs]
    stream = iter_texts(cfg.seed, cfg.min_chars, cfg.max_chars, tuple(cfg.sources))
    needed = len(specs) * max(counts)
    chosen: list[tuple[str, str, str]] = []  # (text, source, phonemes)
    while len(chosen) < needed:
        batch = list(itertools.islice(stream, max(64, int((needed - len(chosen)) * 1.05))))
        if not batch:
            break
        for item, phonemes in zip(batch, _phonemize(g2p, vocab, [b.text for b in batch]), strict=True):
            if phonemes is not None and len(chosen) < needed:
                chosen.append((item.text, item.source, phonemes))
    if len(chosen) < needed:
        raise CorpusError(
            f"profile {cfg.name!r} needs {needed} sentences but the text sources give {len(chosen)} of "
            f"{cfg.min_chars}-{cfg.max_chars} characters; lower utterances_per_speaker or widen the length range"
        )
    plan = []
    for i, (spec, count) in enumerate(zip(specs, counts, strict=True)):
        for k in range(count):
            text, source, phonemes = chosen[k * len(specs) + i]
            uid = f"{spec.speaker}-{k:04d}"
            plan.append(
                Planned(
                    id=uid,
                    speaker=spec.speaker,
                    voice=spec.voice,
                    engine=spec.engine,
                    text=text,
                    source=source,
                    phonemes=phonemes,
                    audio=f"audio/{spec.speaker}/{uid}.flac",
                    key=_key(cfg, spec, text),
                )
            )
    return plan


# ---- rendering (runs in worker processes) ------------------------------------------------------------------


def _render_one(cfg: CorpusConfig, wav, sr: int, path: Path, key: str, uid: str) -> str:
    """Resample, trim, check length, normalise, write. -> "ok" or a skip reason."""
    wav = trim_silence(resample(wav, sr, cfg.sample_rate), cfg.sample_rate, pad_s=cfg.trim_pad_s)
    try:
        check_array(wav, name=uid)
    except AudioError:
        return "silent or invalid audio"
    seconds = wav.size / cfg.sample_rate
    if seconds < cfg.min_seconds:
        return f"shorter than {cfg.min_seconds:g} s"
    if seconds > cfg.max_seconds:
        return f"longer than {cfg.max_seconds:g} s"
    save_audio(path, normalize_loudness(wav, cfg.sample_rate, cfg.loudness_db), cfg.sample_rate, comment=key)
    return "ok"


def _render_chunk(task: tuple[CorpusConfig, VoiceSpec, list[tuple[str, str, str, str]]]) -> list[tuple[str, str]]:
    """Synthesise one speaker's chunk [(id, text, abs path, key)] -> [(id, "ok" | reason)]."""
    cfg, spec, items = task
    try:
        waves = synthesize(spec, [text for _, text, _, _ in items])
    except SynthesisError:
        if len(items) == 1:
            raise
        return [r for item in items for r in _render_chunk((cfg, spec, [item]))]  # find the text that fails
    return [
        (uid, _render_one(cfg, wav, sr, Path(path), key, uid))
        for (uid, _, path, key), (wav, sr) in zip(items, waves, strict=True)
    ]


def _render_chunk_safe(task) -> list[tuple[str, str]]:
    try:
        return _render_chunk(task)
    except SynthesisError as e:
        return [(uid, f"synthesis failed: {e}") for uid, *_ in task[2]]


# ---- build -------------------------------------------------------------------------------------------------


def build_corpus(cfg: CorpusConfig, out: str | os.PathLike, workers: int | None = None) -> CorpusResult:
    """Generate (or finish) the corpus of `cfg` in `out`; returns what was done. See the module docstring."""
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in cfg.voices:
        check_available(spec)
    holdout = {"validation": list(cfg.validation_voices), "test": list(cfg.test_voices)}
    voices = {s.voice for s in cfg.voices}
    missing = [v for vs in holdout.values() for v in vs if v not in voices]
    if missing:
        raise CorpusError(
            f"profile {cfg.name!r}: held-out voice(s) {missing} are not among its voices {sorted(voices)}"
        )
    if not cfg.test_voices or voices <= set(cfg.validation_voices) | set(cfg.test_voices):
        raise CorpusError(f"profile {cfg.name!r}: hold out some voices for test and keep at least one for train")

    g2p, vocab = G2P(cfg.language), PhonemeVocab.default()
    print(f"planning {cfg.name}: {len(cfg.voices)} speakers x {cfg.utterances_per_speaker} utterances", flush=True)
    plan = plan_corpus(cfg, g2p, vocab)
    for stale in (out / "audio").glob("*/.*.tmp*"):  # temporaries of a run that was killed mid-write
        stale.unlink()
    skipped_path = out / "skipped.json"
    old_skips = json.loads(skipped_path.read_text()) if skipped_path.is_file() else {}
    skipped: dict[str, dict] = {}  # id -> {"key", "reason"}
    todo: list[Planned] = []
    for p in plan:
        if old_skips.get(p.id, {}).get("key") == p.key:
            skipped[p.id] = old_skips[p.id]
        elif audio_comment(out / p.audio) != p.key:
            todo.append(p)
    reused = len(plan) - len(todo) - len(skipped)

    spec_of = {s.speaker: s for s in cfg.voices}
    tasks = []
    for speaker in spec_of:
        items = [(p.id, p.text, str(out / p.audio), p.key) for p in todo if p.speaker == speaker]
        for i in range(0, len(items), cfg.chunk_size):
            tasks.append((cfg, spec_of[speaker], items[i : i + cfg.chunk_size]))
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    print(f"rendering {len(todo)} utterances ({reused} already done) with {workers} worker(s)", flush=True)
    failures: dict[str, str] = {}
    key_of = {p.id: p.key for p in plan}
    with tqdm(total=len(todo), unit="utt", desc=f"corpus {cfg.name}", disable=not todo) as bar:
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap_unordered(_render_chunk_safe, tasks) if pool else map(_render_chunk_safe, tasks)
            for chunk in results:
                for uid, status in chunk:
                    if status.startswith("synthesis failed"):
                        failures[uid] = status
                    elif status != "ok":
                        skipped[uid] = {"key": key_of[uid], "reason": status}
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.terminate()
    write_json_atomic(skipped_path, dict(sorted(skipped.items())))
    if failures:
        shown = "\n  ".join(f"{k}: {v}" for k, v in list(failures.items())[:5])
        raise CorpusError(f"{len(failures)} utterance(s) failed to synthesise (rerun to retry):\n  {shown}")

    utts = []
    for p in plan:
        if p.id in skipped:
            continue
        info = audio_info(out / p.audio)
        utts.append(
            Utterance(
                id=p.id,
                audio=str((out / p.audio).resolve()),
                text=p.text,
                phonemes=p.phonemes,
                speaker=p.speaker,
                voice=p.voice,
                duration=round(info.duration, 4),
                sample_rate=info.sample_rate,
            )
        )
    utts = speaker_disjoint_split(utts, holdout=holdout)
    check_speaker_disjoint(utts)
    missing_splits = [s for s, v in split_summary(utts).items() if v["utterances"] == 0]
    if missing_splits:
        raise CorpusError(f"profile {cfg.name!r}: split(s) {missing_splits} came out empty; hold out more voices")
    seconds = time.time() - t0
    info = corpus_info(cfg, plan, utts, skipped)
    previous = out / "corpus_info.json"
    runs = json.loads(previous.read_text()).get("runs", []) if previous.is_file() else []
    this_run = {"seconds": round(seconds, 1), "rendered": len(todo), "reused": reused, "workers": workers}
    info["runs"] = [*runs, {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **this_run}]
    info["generation_seconds"] = round(sum(r["seconds"] for r in info["runs"]), 1)  # all runs that built it
    vocab.save(out / VOCAB_NAME)
    save_config(cfg, out / "corpus_config.yaml")
    write_json_atomic(out / "corpus_info.json", info)
    manifest = write_manifest(out / MANIFEST_NAME, utts)
    reasons = Counter(v["reason"] for v in skipped.values())
    return CorpusResult(manifest, len(utts), len(todo), reused, dict(reasons), seconds, info)


def corpus_info(cfg: CorpusConfig, plan: list[Planned], utts: list[Utterance], skipped: dict) -> dict:
    """The summary written to corpus_info.json (build_corpus adds the run history and generation time)."""
    engine_of = {p.id: p.engine for p in plan}
    engines: dict[str, dict] = {}
    for u in utts:
        e = engines.setdefault(engine_of[u.id], {"speakers": set(), "utterances": 0, "hours": 0.0})
        e["speakers"].add(u.speaker)
        e["utterances"] += 1
        e["hours"] += u.duration / 3600
    splits = split_summary(utts)
    return {
        "profile": cfg.name,
        "seed": cfg.seed,
        "sample_rate": cfg.sample_rate,
        "hours": round(sum(u.duration for u in utts) / 3600, 3),
        "utterances": len(utts),
        "speakers": len({u.speaker for u in utts}),
        "voices": len({u.voice for u in utts}),
        "engines": {
            k: {"speakers": len(v["speakers"]), "utterances": v["utterances"], "hours": round(v["hours"], 3)}
            for k, v in sorted(engines.items())
        },
        "splits": {
            s: {
                "utterances": v["utterances"],
                "hours": v["hours"],
                "speakers": len(v["speakers"]),
                "voices": len(v["voices"]),
                "speaker_names": v["speakers"],
                "voice_names": v["voices"],
            }
            for s, v in splits.items()
        },
        "text_sources": dict(Counter(p.source.split("/")[0] for p in plan if p.id not in skipped)),
        "skipped": dict(Counter(v["reason"] for v in skipped.values())),
        "cpu_count": os.cpu_count(),
    }


# ---- engine speed ------------------------------------------------------------------------------------------


def benchmark(cfg: CorpusConfig, texts_per_voice: int = 4) -> list[dict]:
    """Time each distinct engine voice of `cfg` (and the sox + resample/normalise/FLAC steps) on real sentences.

    Returns one row per engine voice: audio seconds, wall seconds, x real time (engine only and end to end).
    """
    import tempfile

    texts = [t.text for t in text_pool(cfg.seed, cfg.min_chars, cfg.max_chars, cfg.sources, limit=texts_per_voice)]
    rows, seen = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for spec in cfg.voices:
            if (spec.engine, spec.name, spec.pitch_cents != 0) in seen:
                continue
            seen.add((spec.engine, spec.name, spec.pitch_cents != 0))
            t0 = time.perf_counter()
            waves = synthesize(spec, texts)
            t1 = time.perf_counter()
            for i, (wav, sr) in enumerate(waves):
                _render_one(cfg, wav, sr, Path(tmp) / f"{i}.flac", "bench", "bench")
            t2 = time.perf_counter()
            audio_s = sum(len(w) / sr for w, sr in waves)
            rows.append(
                {
                    "speaker": spec.speaker,
                    "audio_s": round(audio_s, 1),
                    "synth_x_rt": round(audio_s / (t1 - t0), 1),
                    "total_x_rt": round(audio_s / (t2 - t0), 1),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.corpus",
        description="Generate the embedded multi-speaker corpus from Debian synthesizers (offline, resumable).",
    )
    parser.add_argument("--profile", default="cpu", help=f"{', '.join(PROFILES)} or a YAML path (default: cpu)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/data/<profile>)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cpu count)")
    parser.add_argument("--mbrola", action="store_true", help="add the profile's mbrola voices (Debian contrib)")
    parser.add_argument("--bench", action="store_true", help="measure each engine's speed (x real time) and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. utterances_per_speaker=20")
    args = parser.parse_args(argv)
    try:
        cfg = load_profile(args.profile, args.overrides)
        if args.mbrola:
            cfg.voices = [*cfg.voices, *cfg.mbrola_voices]
        if args.bench:
            for row in benchmark(cfg):
                print(json.dumps(row))
            return 0
        out = args.out or Path("runs/data") / cfg.name
        result = build_corpus(cfg, out, workers=args.workers)
    except (CorpusError, SynthesisError, TextSourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = result.info
    print(
        f"{result.manifest}: {info['hours']:.2f} h, {info['utterances']} utterances, {info['speakers']} speakers "
        f"({info['voices']} voices), engines {', '.join(info['engines'])}, {result.seconds:.0f} s "
        f"({result.rendered} rendered, {result.reused} reused, skipped {result.skipped or 'none'})"
    )
    print("\n".join(format_split_lines(info["splits"])))
    return 0


if __name__ == "__main__":
    from data.corpus import main as _main  # classes live in data.corpus, not __main__ (pickling to workers, OmegaConf)

    sys.exit(_main())
