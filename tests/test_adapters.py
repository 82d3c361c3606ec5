"""Real-corpus adapters on tiny fixtures built here (espeak-ng speech in each corpus' directory layout):
folder, LJSpeech, LibriTTS, VCTK (0.80 and 0.92), NeMo JSONL, Hugging Face datasets; no network."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data.adapters import CorpusLayoutError, read_corpus
from data.import_corpus import ImportOptions, import_corpus, main
from data.manifest import check_speaker_disjoint, read_manifest
from tests.speech import synthesize

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
]
VOICES = ["en-us+m1", "en-gb+f2", "en-us+m3", "en-gb-scotland+f3", "en-029+m4"]
OPTS = ImportOptions(workers=1, validation=0.2, test=0.2)


def speak(path: Path, text: str, voice: str, sample_rate: int = 16000) -> float:
    """Write espeak-ng speech of `text` to `path` (format from the suffix); return its duration in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav, sr = synthesize(text, path.parent, voice=voice, sample_rate=sample_rate, name=f".{path.stem}")
    (path.parent / f".{path.stem}.wav").unlink()
    sf.write(path, wav, sr)
    return len(wav) / sr


def check(out: Path, n: int, speakers: int, disjoint: bool = True) -> list:
    utts = read_manifest(out / "manifest.jsonl")
    assert len(utts) == n and len({u.speaker for u in utts}) == speakers
    assert (out / "phonemes.json").is_file()
    info = json.loads((out / "import_info.json").read_text())
    assert info["speaker_disjoint"] is disjoint and info["utterances"] == n
    if disjoint:
        check_speaker_disjoint(utts)
        assert all(info["splits"][s]["utterances"] > 0 for s in ("train", "validation", "test"))
    for u in utts:
        assert u.phonemes and u.text and u.duration == pytest.approx(sf.info(u.audio).duration, abs=1e-3)
    return utts


def test_folder_in_place_skips_bad_files_and_converts_on_request(tmp_path):
    root = tmp_path / "corpus"
    for s, voice in enumerate(VOICES):
        for i, text in enumerate(SENTENCES[:2]):
            speak(root / f"spk{s}" / f"utt{i}.wav", text, voice)
            (root / f"spk{s}" / f"utt{i}.txt").write_text(text + "\n")
    speak(root / "spk0" / "orphan.wav", "no transcript here", "en-us")  # no .txt: skipped
    (root / "spk1" / "broken.wav").write_bytes(b"RIFF....garbage")  # unreadable: skipped
    (root / "spk1" / "broken.txt").write_text("Broken file.")
    sf.write(root / "spk2" / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)  # silent: skipped
    (root / "spk2" / "quiet.txt").write_text("Silence.")

    out = tmp_path / "out"
    result = import_corpus("folder", root, out, OPTS)
    utts = check(out, 10, 5)
    assert all(Path(u.audio).parent.parent == root for u in utts)  # referenced in place
    assert {u.sample_rate for u in utts} == {16000}
    assert result.skipped == {"no transcript": 1, "unreadable audio": 1, "silent": 1}
    assert "broken.wav" in " ".join(result.info["skipped_examples"])
    u = next(u for u in utts if u.id == "spk0_utt1")
    assert u.text == SENTENCES[1] and u.speaker == "spk0"

    conv = tmp_path / "converted"
    import_corpus("folder", root, conv, ImportOptions(workers=2, convert=True, validation=0.2, test=0.2))
    converted = check(conv, 10, 5)
    assert all(Path(u.audio).is_relative_to(conv / "audio") and u.sample_rate == 22050 for u in converted)
    assert all(sf.info(u.audio).samplerate == 22050 for u in converted)
    mtimes = {u.audio: Path(u.audio).stat().st_mtime_ns for u in converted}
    import_corpus("folder", root, conv, ImportOptions(workers=1, convert=True, validation=0.2, test=0.2))
    assert {a: Path(a).stat().st_mtime_ns for a in mtimes} == mtimes  # a rerun reuses converted files


def test_ljspeech_single_speaker_falls_back_to_utterance_split(tmp_path, capsys):
    root = tmp_path / "LJSpeech-1.1"
    lines = []
    for i, text in enumerate(SENTENCES * 2):
        uid = f"LJ001-{i:04d}"
        speak(root / "wavs" / f"{uid}.wav", text, "en-us+f2", sample_rate=22050)
        lines.append(f"{uid}|{text.upper()} (raw)|{text}")
    lines.append("LJ001-0099|Missing audio.|Missing audio.")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    result = import_corpus("ljspeech", root, tmp_path / "out", OPTS)
    utts = check(tmp_path / "out", 8, 1, disjoint=False)
    assert "NOT unseen" in capsys.readouterr().err
    assert utts[0].text == SENTENCES[0] and utts[0].speaker == "LJ"  # the normalized column
    assert result.skipped == {"no such audio file": 1}
    with pytest.raises(CorpusLayoutError, match="metadata.csv: missing"):
        list(read_corpus("ljspeech", tmp_path))


def test_libritts_layout(tmp_path):
    root = tmp_path / "LibriTTS_R" / "train-clean-100"
    for s, voice in enumerate(VOICES[:4]):
        spk, chapter = str(100 + s), str(2000 + s)
        for i, text in enumerate(SENTENCES[:2]):
            stem = root / spk / chapter / f"{spk}_{chapter}_000001_{i:06d}"
            speak(stem.with_suffix(".wav"), text, voice, sample_rate=24000)
            Path(f"{stem}.normalized.txt").write_text(text)
            Path(f"{stem}.original.txt").write_text(text.upper())
    import_corpus("libritts", tmp_path / "LibriTTS_R", tmp_path / "out", OPTS)
    utts = check(tmp_path / "out", 8, 4)
    assert {u.speaker for u in utts} == {"100", "101", "102", "103"} and {u.sample_rate for u in utts} == {24000}
    assert {u.text for u in utts} == set(SENTENCES[:2])


@pytest.mark.parametrize("version", ["0.80", "0.92"])
def test_vctk_layouts(tmp_path, version):
    root = tmp_path / "VCTK"
    for s, voice in enumerate(VOICES[:3]):
        spk = f"p{225 + s}"
        for i, text in enumerate(SENTENCES[:2]):
            uid = f"{spk}_{i + 1:03d}"
            if version == "0.80":
                speak(root / "wav48" / spk / f"{uid}.wav", text, voice, sample_rate=48000)
            else:
                speak(root / "wav48_silence_trimmed" / spk / f"{uid}_mic1.flac", text, voice, sample_rate=48000)
                speak(root / "wav48_silence_trimmed" / spk / f"{uid}_mic2.flac", "wrong microphone", voice)
            (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
            (root / "txt" / spk / f"{uid}.txt").write_text(text + "\n")
    import_corpus("vctk", root, tmp_path / "out", OPTS)
    utts = check(tmp_path / "out", 6, 3)
    assert {u.speaker for u in utts} == {"p225", "p226", "p227"} and {u.sample_rate for u in utts} == {48000}
    if version == "0.92":
        assert all(u.audio.endswith("_mic1.flac") for u in utts)


def test_nemo_manifest_relative_and_absolute_paths(tmp_path):
    root = tmp_path / "nemo"
    lines = []
    for s, voice in enumerate(VOICES[:3]):
        for i, text in enumerate(SENTENCES[:2]):
            rel = f"audio/s{s}_{i}.wav"
            duration = speak(root / rel, text, voice)
            path = rel if i == 0 else str(root / rel)
            lines.append(json.dumps({"audio_filepath": path, "text": text, "duration": duration, "speaker": s}))
    (root / "train_manifest.json").write_text("\n".join(lines) + "\n")
    import_corpus("nemo", root / "train_manifest.json", tmp_path / "out", OPTS)
    utts = check(tmp_path / "out", 6, 3)
    assert {u.speaker for u in utts} == {"0", "1", "2"}
    (root / "bad.json").write_text(lines[0] + "\n{oops\n")
    with pytest.raises(CorpusLayoutError, match=r"bad.json:2: not valid JSON"):
        import_corpus("nemo", root / "bad.json", tmp_path / "bad", OPTS)
    assert not (tmp_path / "bad" / "manifest.jsonl").exists()


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    rows = {"audio": [], "sentence": [], "speaker_id": []}
    for s, voice in enumerate(VOICES[:3]):
        for text in SENTENCES[:2]:
            wav, sr = synthesize(text, tmp_path, voice=voice, sample_rate=16000, name="tmp")
            buf = io.BytesIO()
            sf.write(buf, wav, sr, format="FLAC")
            rows["audio"].append({"bytes": buf.getvalue(), "path": None})
            rows["sentence"].append(text)
            rows["speaker_id"].append(s)
    # bytes + cast: datasets encodes no audio itself (that would need torchcodec)
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp_path / "hfds"))
    out = tmp_path / "out"
    result = import_corpus("hf", tmp_path / "hfds", out, OPTS)
    utts = check(out, 6, 3)
    assert result.info["converted"] is False  # in-memory audio is written out anyway
    assert all(Path(u.audio).is_relative_to(out / "audio") and u.sample_rate == 22050 for u in utts)
    assert {u.text for u in utts} == set(SENTENCES[:2]) and {u.speaker for u in utts} == {"0", "1", "2"}
    with pytest.raises(CorpusLayoutError, match="no column 'spk'"):
        list(read_corpus("hf", tmp_path / "hfds", speaker_column="spk"))
    # the same rows as an in-memory DatasetDict saved with a validation split only
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hfdict"))
    with pytest.raises(CorpusLayoutError, match="no split 'train' \\(has validation\\)"):
        list(read_corpus("hf", tmp_path / "hfdict"))
    assert len(list(read_corpus("hf", tmp_path / "hfdict", split="validation"))) == 6
    # an in-memory Dataset works the same
    import_corpus("hf", ds, tmp_path / "mem", OPTS)
    assert [u.text for u in check(tmp_path / "mem", 6, 3)] == [u.text for u in utts]


def test_cli_and_layout_errors(tmp_path, capsys):
    args = ["--out", str(tmp_path / "o"), "--workers", "1"]
    assert main(["vctk", str(tmp_path), *args]) == 1
    assert "expected txt/<speaker>/" in capsys.readouterr().err
    assert main(["folder", str(tmp_path / "missing"), *args]) == 1
    assert "not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["folder", str(empty), *args]) == 1
    assert "no usable utterances" in capsys.readouterr().err
    root = tmp_path / "ok"
    for s, voice in enumerate(VOICES[:3]):
        speak(root / f"s{s}" / "a.wav", SENTENCES[s], voice)
        (root / f"s{s}" / "a.txt").write_text(SENTENCES[s])
    assert main(["folder", str(root), *args, "--test", "0.3"]) == 0
    assert "3 utterances" in capsys.readouterr().out and len(read_manifest(tmp_path / "o" / "manifest.jsonl")) == 3
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    help_text = capsys.readouterr().out
    assert exit_.value.code == 0
    for kind in ("folder", "ljspeech", "libritts", "vctk", "nemo", "hf"):
        assert kind in help_text
