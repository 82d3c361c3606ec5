"""Manifest schema: round trip, one clear error per bad line (file:line), speaker-disjoint splits."""

from __future__ import annotations

import json

import pytest

from data.manifest import (
    ManifestError,
    Utterance,
    check_speaker_disjoint,
    read_manifest,
    speaker_disjoint_split,
    split_summary,
    utterance_split,
    write_manifest,
)


def utt(i: int, speaker: str = "a", voice: str = "", duration: float = 2.0, audio: str = "") -> Utterance:
    return Utterance(
        id=f"{speaker}-{i}",
        audio=audio or f"/abs/{speaker}-{i}.flac",
        text="Hello there.",
        phonemes="həlˈoʊ ðˈɛɹ.",
        speaker=speaker,
        voice=voice,
        duration=duration,
        sample_rate=22050,
    )


def test_round_trip_relative_audio_paths(tmp_path):
    (tmp_path / "audio").mkdir()
    utts = []
    for i in range(3):
        audio = tmp_path / "audio" / f"{i}.flac"
        audio.write_bytes(b"x")
        utts.append(utt(i, audio=str(audio)))
    outside = tmp_path.parent / "outside.flac"
    utts.append(utt(9, audio=str(outside)))
    path = write_manifest(tmp_path / "manifest.jsonl", utts)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["audio"] == "audio/0.flac"  # relative inside the folder
    assert lines[3]["audio"] == str(outside)  # absolute outside it
    assert lines[0]["voice"] == "a"  # voice defaults to the speaker
    back = read_manifest(path, check_files=False)
    assert back == utts  # audio made absolute again
    assert [u.audio for u in back[:3]] == [str(tmp_path / "audio" / f"{i}.flac") for i in range(3)]
    with pytest.raises(ManifestError, match=r"manifest.jsonl:4: audio file .*outside.flac does not exist"):
        read_manifest(path)


GOOD = {
    "id": "x",
    "audio": "/a.flac",
    "text": "Hi.",
    "phonemes": "hˈaɪ.",
    "speaker": "s",
    "duration": 1.5,
    "sample_rate": 22050,
    "split": "train",
}


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "phonemes"}), "missing key(s) phonemes"),
        (json.dumps(GOOD | {"speakr": "s"}), "unknown key(s) speakr"),
        (json.dumps(GOOD | {"duration": "1.5"}), "'duration' must be a number"),
        (json.dumps(GOOD | {"duration": -1}), "'duration' must be a positive number"),
        (json.dumps(GOOD | {"sample_rate": 22050.0}), "'sample_rate' must be an integer"),
        (json.dumps(GOOD | {"split": "dev"}), "'split' must be one of train, validation, test"),
        (json.dumps(GOOD | {"text": "  "}), "'text' is empty"),
    ],
)
def test_bad_line_error_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path, check_files=False)
    assert f"{path}:3:" in str(err.value) and message in str(err.value)


def test_duplicate_ids_missing_and_empty_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: duplicate id 'x' \(first on line 1\)"):
        read_manifest(path, check_files=False)
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "nope.jsonl")
    path.write_text("\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(path)


def test_write_refuses_invalid_utterance_and_leaves_nothing(tmp_path):
    bad = utt(0)
    bad.split = "dev"
    with pytest.raises(ManifestError, match="'split' must be one of"):
        write_manifest(tmp_path / "m.jsonl", [utt(1), bad])
    assert list(tmp_path.iterdir()) == []


def corpus() -> list[Utterance]:
    """Ten voices, some with several identities (pitch variants), different amounts of audio."""
    utts = []
    for v in range(10):
        for variant in ("", "-p+300", "-p-300")[: 1 + v % 3]:
            for i in range(3 + v):
                utts.append(utt(i, speaker=f"voice{v}{variant}", voice=f"voice{v}", duration=1.0 + v % 4))
    return utts


def test_speaker_disjoint_split_holds_out_whole_voices():
    utts = corpus()
    split = speaker_disjoint_split(utts, validation=0.1, test=0.1, seed=3)
    check_speaker_disjoint(split)
    voice_splits: dict[str, set[str]] = {}
    for u in split:
        voice_splits.setdefault(u.voice, set()).add(u.split)
    assert all(len(s) == 1 for s in voice_splits.values())  # every variant of a voice in one split
    summary = split_summary(split)
    total = sum(u.duration for u in utts)
    for name in ("validation", "test"):
        assert summary[name]["utterances"] > 0
        assert sum(u.duration for u in split if u.split == name) >= 0.1 * total
    assert summary["train"]["hours"] > summary["test"]["hours"]
    assert [u.id for u in split] == [u.id for u in utts] and all(u.split == "train" for u in utts)  # input untouched
    # deterministic for a seed, different for another
    assert speaker_disjoint_split(utts, 0.1, 0.1, seed=3) == split
    others = {
        tuple(sorted(split_summary(speaker_disjoint_split(utts, 0.1, 0.1, seed=s))["test"]["voices"])) for s in range(6)
    }
    assert len(others) > 1


def test_explicit_holdout_and_errors():
    utts = corpus()
    split = speaker_disjoint_split(utts, holdout={"test": ["voice2"], "validation": ["voice5"]})
    summary = split_summary(split)
    assert summary["test"]["voices"] == ["voice2"] and summary["validation"]["voices"] == ["voice5"]
    assert summary["test"]["speakers"] == ["voice2", "voice2-p+300", "voice2-p-300"]
    with pytest.raises(ValueError, match="'nobody' is not in the corpus"):
        speaker_disjoint_split(utts, holdout={"test": ["nobody"]})
    with pytest.raises(ValueError, match="at least 3 voices"):
        speaker_disjoint_split([utt(0, "a"), utt(1, "b")])
    leaky = [utt(0, "a"), utt(1, "a")]
    leaky[1].split = "test"
    with pytest.raises(ValueError, match="voice 'a' is in both 'train' and 'test'"):
        check_speaker_disjoint(leaky)


def test_utterance_split_for_single_speaker():
    utts = [utt(i) for i in range(40)]
    split = utterance_split(utts, validation=0.1, test=0.1, seed=0)
    counts = {s: sum(u.split == s for u in split) for s in ("train", "validation", "test")}
    assert counts == {"train": 32, "validation": 4, "test": 4}
