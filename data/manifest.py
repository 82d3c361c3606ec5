"""The corpus manifest: JSONL, one utterance per line, and speaker-disjoint train/validation/test splits.

    {"id": "flite-rms-0007", "audio": "audio/flite-rms/flite-rms-0007.flac", "text": "...", "phonemes": "...",
     "speaker": "flite-rms", "voice": "rms", "duration": 4.21, "sample_rate": 22050, "split": "train"}

    utts = read_manifest("runs/data/cpu/manifest.jsonl")     # list[Utterance], audio paths made absolute
    write_manifest("out/manifest.jsonl", utts)                # atomic; audio paths relative when inside out/

`speaker` is a speaker identity (what the TTS model conditions on); `voice` is the underlying voice it
comes from. In the embedded corpus one voice gives several identities (engines speaking with the same
recorded voice, sox pitch/tempo variants), so splits hold out whole voices: a test speaker's voice is
never heard in training, not even pitch-shifted. For real corpora voice == speaker. Beside the manifest
lives `phonemes.json` (text.PhonemeVocab.save).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common.fileio import write_text_atomic

SPLITS = ("train", "validation", "test")
MANIFEST_NAME = "manifest.jsonl"
VOCAB_NAME = "phonemes.json"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


@dataclass
class Utterance:
    """One manifest line. `audio` is absolute once read; `voice` defaults to `speaker`."""

    id: str
    audio: str
    text: str
    phonemes: str
    speaker: str
    duration: float
    sample_rate: int
    split: str = "train"
    voice: str = field(default="")

    def __post_init__(self) -> None:
        if not self.voice:
            self.voice = self.speaker

    def to_dict(self) -> dict:
        return asdict(self)


_TYPES = {
    "id": str,
    "audio": str,
    "text": str,
    "phonemes": str,
    "speaker": str,
    "voice": str,
    "duration": (int, float),
    "sample_rate": int,
    "split": str,
}
_REQUIRED = ("id", "audio", "text", "phonemes", "speaker", "duration", "sample_rate", "split")


def parse_line(line: str, where: str) -> Utterance:
    """Validate one JSONL line into an Utterance (audio path as written). `where` is "file:line" for errors."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from e
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing key(s) {', '.join(missing)} (needed: {', '.join(_REQUIRED)})")
    unknown = sorted(set(obj) - set(_TYPES))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(_TYPES)})")
    for key, value in obj.items():
        typ = _TYPES[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ManifestError(f"{where}: {key!r} must be {_type_name(typ)}, got {value!r}")
        if isinstance(value, str) and not value.strip() and key != "voice":
            raise ManifestError(f"{where}: {key!r} is empty")
    if not (math.isfinite(obj["duration"]) and obj["duration"] > 0):
        raise ManifestError(f"{where}: 'duration' must be a positive number of seconds, got {obj['duration']!r}")
    if obj["sample_rate"] <= 0:
        raise ManifestError(f"{where}: 'sample_rate' must be positive, got {obj['sample_rate']!r}")
    if obj["split"] not in SPLITS:
        raise ManifestError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {obj['split']!r}")
    obj["duration"] = float(obj["duration"])
    return Utterance(**obj)


def _type_name(typ: type | tuple) -> str:
    return "a number" if isinstance(typ, tuple) else {str: "a string", int: "an integer"}[typ]


def read_manifest(path: str | os.PathLike, check_files: bool = True) -> list[Utterance]:
    """Read and validate a JSONL manifest; audio paths are made absolute (relative ones are relative to its folder).

    Raises:
        ManifestError: missing/empty file, a bad line (naming file:line and the problem), a duplicate id,
            or (with check_files) an audio file that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest; build one with `make data` or `python -m data.import_corpus`")
    root = path.resolve().parent
    utts: list[Utterance] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            utt = parse_line(line, where)
            if utt.id in first_line:
                raise ManifestError(f"{where}: duplicate id {utt.id!r} (first on line {first_line[utt.id]})")
            first_line[utt.id] = lineno
            audio = Path(utt.audio)
            utt.audio = str(audio if audio.is_absolute() else root / audio)
            if check_files and not os.path.isfile(utt.audio):
                raise ManifestError(f"{where}: audio file {utt.audio} does not exist")
            utts.append(utt)
    if not utts:
        raise ManifestError(f"{path}: the manifest has no utterances")
    return utts


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance]) -> Path:
    """Write utterances as JSONL, atomically. Audio paths inside the manifest's folder are stored relative to it."""
    path = Path(path)
    root = path.resolve().parent
    lines = []
    for utt in utts:
        obj = utt.to_dict()
        audio = Path(utt.audio)
        if audio.is_absolute() and audio.resolve().is_relative_to(root):
            obj["audio"] = audio.resolve().relative_to(root).as_posix()
        parse_line(json.dumps(obj), f"{path} (writing id {utt.id!r})")  # never write a line we could not read
        lines.append(json.dumps(obj, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


# ---- splits ------------------------------------------------------------------------------------------------


def speaker_disjoint_split(
    utts: list[Utterance],
    validation: float = 0.05,
    test: float = 0.05,
    seed: int = 0,
    holdout: dict[str, list[str]] | None = None,
) -> list[Utterance]:
    """Assign splits by whole voices, so that validation and test voices (and every speaker made from them) are
    unseen in train. Returns new Utterances with `split` set; the input is not modified.

    Without `holdout`, voices are shuffled with `seed` and handed to test, then validation, until each holds at
    least its fraction of the total duration (at least one voice each). With `holdout={"test": [...],
    "validation": [...]}` exactly those voices are held out.

    Raises:
        ValueError: fewer than 3 voices (use `utterance_split`), or a holdout voice that is not in the corpus.
    """
    durations: dict[str, float] = defaultdict(float)
    for u in utts:
        durations[u.voice] += u.duration
    voices = sorted(durations)
    assignment: dict[str, str] = {}
    if holdout is not None:
        for split, names in holdout.items():
            if split not in ("validation", "test"):
                raise ValueError(f"holdout split must be 'validation' or 'test', got {split!r}")
            for name in names:
                if name not in durations:
                    raise ValueError(f"holdout voice {name!r} is not in the corpus (voices: {', '.join(voices)})")
                assignment[name] = split
    else:
        if len(voices) < 3:
            raise ValueError(
                f"speaker-disjoint splits need at least 3 voices, the corpus has {len(voices)} "
                f"({', '.join(voices)}); use utterance_split for a single-speaker corpus"
            )
        order = voices[:]
        random.Random(seed).shuffle(order)
        total = sum(durations.values())
        for split, fraction in (("test", test), ("validation", validation)):
            taken = 0.0
            while len(order) > 1 and (taken == 0.0 or taken < fraction * total):
                voice = order.pop()
                assignment[voice] = split
                taken += durations[voice]
    if all(assignment.get(v, "train") != "train" for v in voices):
        raise ValueError("every voice was held out; the train split would be empty")
    return [replace(u, split=assignment.get(u.voice, "train")) for u in utts]


def utterance_split(
    utts: list[Utterance], validation: float = 0.05, test: float = 0.05, seed: int = 0
) -> list[Utterance]:
    """Split by utterance (speakers shared across splits): only for corpora with too few voices to hold one out."""
    order = list(range(len(utts)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(test * len(utts))) if len(utts) >= 3 else 0
    n_val = max(1, round(validation * len(utts))) if len(utts) >= 3 else 0
    split_of = {i: "test" for i in order[:n_test]} | {i: "validation" for i in order[n_test : n_test + n_val]}
    return [replace(u, split=split_of.get(i, "train")) for i, u in enumerate(utts)]


def check_speaker_disjoint(utts: Iterable[Utterance]) -> None:
    """Raise ValueError naming the first voice (or speaker) that appears in more than one split."""
    seen: dict[str, dict[str, str]] = {"voice": {}, "speaker": {}}
    for u in utts:
        for kind, name in (("voice", u.voice), ("speaker", u.speaker)):
            first = seen[kind].setdefault(name, u.split)
            if first != u.split:
                raise ValueError(f"{kind} {name!r} is in both {first!r} and {u.split!r} (utterance {u.id!r})")


def split_summary(utts: Iterable[Utterance]) -> dict[str, dict]:
    """Per split: utterances, hours, speakers, voices (sorted names)."""
    utts = list(utts)
    out: dict[str, dict] = {}
    for split in SPLITS:
        part = [u for u in utts if u.split == split]
        out[split] = {
            "utterances": len(part),
            "hours": round(sum(u.duration for u in part) / 3600.0, 3),
            "speakers": sorted({u.speaker for u in part}),
            "voices": sorted({u.voice for u in part}),
        }
    return out


def format_split_lines(splits: dict[str, dict]) -> list[str]:
    """One aligned line per split of a corpus info's "splits" (utterances, hours, speaker count), for CLIs."""
    return [
        f"  {split:10s} {s['utterances']:6d} utterances {s['hours']:7.2f} h {s['speakers']:3d} speakers"
        for split, s in splits.items()
    ]
