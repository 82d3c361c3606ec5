"""Readers for real speech corpora: a corpus layout -> a stream of `SourceUtterance` (audio, text, speaker).

    for u in read_corpus("libritts", "/data/LibriTTS_R/train-clean-100"):
        u.id, u.audio, u.text, u.speaker          # audio: a path, or u.audio_bytes for HF datasets

Layouts (`data.import_corpus` turns any of them into a manifest):
  folder    ROOT/**/name.{wav,flac,ogg,mp3} + name.txt (or .lab) beside it; speaker = first folder under ROOT
  ljspeech  ROOT/metadata.csv ("id|text|normalized text") + ROOT/wavs/<id>.wav; one speaker "LJ"
  libritts  ROOT/**/<speaker>/<chapter>/<id>.wav + <id>.normalized.txt (LibriTTS and LibriTTS-R)
  vctk      ROOT/txt/<speaker>/<id>.txt + ROOT/wav48/<speaker>/<id>.wav (0.80) or
            ROOT/wav48_silence_trimmed/<speaker>/<id>_mic1.flac (0.92)
  nemo      a JSONL manifest: {"audio_filepath", "text", "speaker"?...}; relative paths are relative to it
  hf        a Hugging Face dataset: in memory, a folder from `save_to_disk`, or a hub name for `load_dataset`
            (audio, text and speaker columns found by type and name, or given)
Problems with the layout itself (missing metadata.csv, a bad JSONL line) raise `CorpusLayoutError` naming
the file; problems with single utterances (missing transcript) are reported as skips by the importer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TEXT_COLUMNS = ("text", "normalized_text", "sentence", "transcription", "transcript", "text_normalized")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id")


class CorpusLayoutError(ValueError):
    """The corpus does not have the layout its adapter expects; the message names the file and the fix."""


@dataclass
class SourceUtterance:
    """One utterance as a corpus provides it. Exactly one of `audio` (a path) and `audio_bytes` is set."""

    id: str
    text: str
    speaker: str
    audio: str | None = None
    audio_bytes: bytes | None = None

    @property
    def name(self) -> str:
        """How errors refer to the audio."""
        return self.audio or f"{self.id} (in-memory audio)"


def _root(path: str | os.PathLike, kind: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise CorpusLayoutError(f"{root}: not a folder; `{kind}` expects the corpus root folder")
    return root


def read_folder(path: str | os.PathLike) -> Iterator[SourceUtterance]:
    """Audio files with a same-named .txt/.lab transcript; speaker = the first folder below ROOT (or ROOT's name)."""
    root = _root(path, "folder")
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        text_file = next((t for t in (audio.with_suffix(".txt"), audio.with_suffix(".lab")) if t.is_file()), None)
        rel = audio.relative_to(root)
        speaker = rel.parts[0] if len(rel.parts) > 1 else root.resolve().name
        text = text_file.read_text(encoding="utf-8").strip() if text_file else ""
        yield SourceUtterance(id="_".join(rel.with_suffix("").parts), text=text, speaker=speaker, audio=str(audio))


def read_ljspeech(path: str | os.PathLike) -> Iterator[SourceUtterance]:
    """LJSpeech-1.1: metadata.csv lines "LJ001-0001|raw text|normalized text", audio in wavs/."""
    root = _root(path, "ljspeech")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CorpusLayoutError(f"{meta}: missing; an LJSpeech folder holds metadata.csv and wavs/")
    for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < 2:
            raise CorpusLayoutError(f"{meta}:{lineno}: expected 'id|text|normalized text', got {line[:80]!r}")
        text = cols[2] if len(cols) > 2 and cols[2].strip() else cols[1]
        yield SourceUtterance(id=cols[0], text=text.strip(), speaker="LJ", audio=str(root / "wavs" / f"{cols[0]}.wav"))


def read_libritts(path: str | os.PathLike) -> Iterator[SourceUtterance]:
    """LibriTTS(-R): <speaker>/<chapter>/<id>.wav with <id>.normalized.txt (or .original.txt), any depth."""
    root = _root(path, "libritts")
    wavs = sorted(root.rglob("*.wav"))
    if not wavs:
        raise CorpusLayoutError(f"{root}: no .wav files; expected <speaker>/<chapter>/<id>.wav (LibriTTS layout)")
    for wav in wavs:
        stem = wav.with_suffix("")
        text_file = next(
            (t for t in (Path(f"{stem}.normalized.txt"), Path(f"{stem}.original.txt")) if t.is_file()), None
        )
        text = text_file.read_text(encoding="utf-8").strip() if text_file else ""
        yield SourceUtterance(id=wav.stem, text=text, speaker=wav.parent.parent.name, audio=str(wav))


def read_vctk(path: str | os.PathLike) -> Iterator[SourceUtterance]:
    """VCTK 0.80 (wav48/) or 0.92 (wav48_silence_trimmed/, mic1 preferred) with transcripts in txt/."""
    root = _root(path, "vctk")
    audio_dir = next((root / d for d in ("wav48_silence_trimmed", "wav48", "wav") if (root / d).is_dir()), None)
    if not (root / "txt").is_dir() or audio_dir is None:
        raise CorpusLayoutError(f"{root}: expected txt/<speaker>/ and wav48/<speaker>/ (or wav48_silence_trimmed/)")
    for txt in sorted((root / "txt").glob("*/*.txt")):
        speaker, uid = txt.parent.name, txt.stem
        names = [f"{uid}_mic1", f"{uid}_mic2", uid]
        candidates = [audio_dir / speaker / f"{n}{s}" for n in names for s in AUDIO_SUFFIXES]
        audio = next((c for c in candidates if c.is_file()), candidates[-1])
        yield SourceUtterance(id=uid, text=txt.read_text(encoding="utf-8").strip(), speaker=speaker, audio=str(audio))


def read_nemo(path: str | os.PathLike) -> Iterator[SourceUtterance]:
    """A NeMo JSONL manifest: audio_filepath, text (or normalized_text), optional speaker; one object per line."""
    path = Path(path)
    if not path.is_file():
        raise CorpusLayoutError(f"{path}: no such NeMo manifest (a .json/.jsonl file, one object per line)")
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusLayoutError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict) or "audio_filepath" not in obj:
            raise CorpusLayoutError(f"{where}: expected an object with 'audio_filepath' and 'text'")
        text = obj.get("normalized_text") or obj.get("text")
        if not isinstance(text, str):
            raise CorpusLayoutError(f"{where}: no 'text' (or 'normalized_text') string")
        audio = Path(obj["audio_filepath"])
        audio = audio if audio.is_absolute() else path.parent / audio
        speaker = str(obj.get("speaker", obj.get("speaker_id", path.stem)))
        uid = audio.stem
        seen[uid] = seen.get(uid, 0) + 1
        if seen[uid] > 1:
            uid = f"{uid}-{seen[uid]}"
        yield SourceUtterance(id=uid, text=text.strip(), speaker=speaker, audio=str(audio))


def read_hf(
    name_or_path: str | os.PathLike | datasets.Dataset | datasets.DatasetDict,
    split: str = "train",
    audio_column: str | None = None,
    text_column: str | None = None,
    speaker_column: str | None = None,
) -> Iterator[SourceUtterance]:
    """A Hugging Face audio dataset (in memory, a save_to_disk folder or a hub name). Audio is read as raw file bytes
    (`Audio(decode=False)`), so no torchcodec is needed; the importer decodes them with soundfile."""
    import datasets

    source = Path(name_or_path) if isinstance(name_or_path, str | os.PathLike) else None
    if source is None:  # an in-memory Dataset / DatasetDict
        ds, default_speaker = name_or_path, "hf"
    elif source.is_dir():
        ds, default_speaker = datasets.load_from_disk(str(source)), source.name
    else:
        try:
            ds, default_speaker = datasets.load_dataset(str(name_or_path), split=split), str(name_or_path)
        except Exception as e:
            raise CorpusLayoutError(f"{name_or_path}: cannot load the Hugging Face dataset ({e})") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise CorpusLayoutError(f"{name_or_path}: no split {split!r} (has {', '.join(ds)}); pass --hf-split")
        ds = ds[split]
    features = ds.features
    audio_column = audio_column or next((c for c, f in features.items() if isinstance(f, datasets.Audio)), None)
    text_column = text_column or next((c for c in TEXT_COLUMNS if c in features), None)
    speaker_column = speaker_column or next((c for c in SPEAKER_COLUMNS if c in features), None)
    for role, column in (("audio", audio_column), ("text", text_column)):
        if column is None or column not in features:
            raise CorpusLayoutError(
                f"{name_or_path}: no {role} column found (columns: {', '.join(features)}); pass --{role}-column"
            )
    if speaker_column is not None and speaker_column not in features:
        raise CorpusLayoutError(f"{name_or_path}: no column {speaker_column!r} (columns: {', '.join(features)})")
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    if not isinstance(ds, datasets.Dataset):
        raise CorpusLayoutError(f"{name_or_path!r}: expected a datasets.Dataset, DatasetDict, folder or hub name")
    default_speaker = default_speaker.replace("/", "_")
    for i, row in enumerate(ds):
        audio = row[audio_column] or {}
        data, file = audio.get("bytes"), audio.get("path")
        uid = str(row["id"]) if "id" in row and row["id"] is not None else f"{i:07d}"
        speaker = str(row[speaker_column]) if speaker_column else default_speaker
        text = str(row[text_column] or "").strip()
        if data:
            yield SourceUtterance(id=uid, text=text, speaker=speaker, audio_bytes=data)
        else:
            yield SourceUtterance(id=uid, text=text, speaker=speaker, audio=file)


ADAPTERS = {
    "folder": read_folder,
    "ljspeech": read_ljspeech,
    "libritts": read_libritts,
    "vctk": read_vctk,
    "nemo": read_nemo,
    "hf": read_hf,
}


def read_corpus(kind: str, source: str | os.PathLike, **options) -> Iterator[SourceUtterance]:
    """Dispatch to the reader of `kind` (options go to read_hf only)."""
    if kind not in ADAPTERS:
        raise CorpusLayoutError(f"unknown corpus kind {kind!r}; use one of {', '.join(ADAPTERS)}")
    if kind != "hf" and any(v is not None for v in options.values()):
        raise CorpusLayoutError(f"options {sorted(options)} only apply to the hf adapter")
    return ADAPTERS[kind](source, **options) if kind == "hf" else ADAPTERS[kind](source)
