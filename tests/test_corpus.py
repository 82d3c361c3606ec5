"""The embedded corpus, end to end with the real Debian synthesizers: profiles, texts, the smoke corpus,
unseen test speakers, resume after a kill (same manifest and audio, nothing regenerated)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from common.config import ConfigError
from data.audio import loudness_db, peak_db, save_audio
from data.corpus import CorpusError, build_corpus, load_profile, main, plan_corpus, utterances_for
from data.manifest import check_speaker_disjoint, read_manifest
from data.synthesizers import SynthesisError, VoiceSpec, check_available
from data.texts import text_pool
from text.vocab import PhonemeVocab

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("espeak-ng", "flite", "festival", "sox", "bible")),
    reason="needs espeak-ng, flite, festival, sox and bible-kjv (scripts/setup.sh installs them)",
)


def finished(root: Path) -> list[Path]:
    """Audio files in place (atomic_path's temporaries are hidden files)."""
    return [p for p in root.rglob("*.flac") if not p.name.startswith(".")]


def audio_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in finished(root)}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The smoke corpus, built once with 2 worker processes."""
    out = tmp_path_factory.mktemp("smoke")
    result = build_corpus(load_profile("smoke"), out, workers=2)
    assert result.rendered == result.utterances == 12 and result.reused == 0
    return out


def test_profiles_are_sized_as_documented():
    cpu, quick, smoke_cfg = (load_profile(p) for p in ("cpu", "quick", "smoke"))
    for cfg in (cpu, quick, smoke_cfg):
        for spec in cfg.voices:
            check_available(spec)  # every voice of every profile is installed here
        assert {s.engine for s in cfg.voices} == {"espeak-ng", "flite", "festival"}
        held_out = set(cfg.validation_voices) | set(cfg.test_voices)
        assert held_out <= {s.voice for s in cfg.voices} and {s.voice for s in cfg.voices} - held_out
    assert len(cpu.voices) >= 30 and len({s.voice for s in cpu.voices}) >= 15
    assert 12 <= len(quick.voices) <= 18
    # cpu 8-10 h, quick about 1 h
    per_sentence = 6.7  # measured: the cpu build gave 8.41 h for 4522 sentences
    cpu_hours = sum(utterances_for(cpu, s) for s in cpu.voices) * per_sentence / 3600
    quick_hours = sum(utterances_for(quick, s) for s in quick.voices) * per_sentence / 3600
    assert 8 <= cpu_hours <= 10 and 0.8 <= quick_hours <= 1.3


def test_profile_errors_name_the_problem():
    with pytest.raises(ConfigError, match="utterances_per_speakr"):
        load_profile("smoke", ["utterances_per_speakr=3"])
    with pytest.raises(CorpusError, match="unknown corpus profile 'huge'"):
        load_profile("huge")
    with pytest.raises(SynthesisError, match="unknown engine 'say'"):
        VoiceSpec(engine="say", name="x", voice="x")
    with pytest.raises(SynthesisError, match="flite voice 'nobody' is not installed"):
        check_available(VoiceSpec(engine="flite", name="nobody", voice="x"))


@pytest.mark.skipif(shutil.which("mbrola") is not None, reason="mbrola is installed here")
def test_mbrola_is_opt_in_with_a_clear_error():
    cfg = load_profile("cpu")
    assert all(not s.name.startswith("mb-") for s in cfg.voices)
    with pytest.raises(SynthesisError, match="apt-get install mbrola mbrola-us1"):
        check_available(cfg.mbrola_voices[0])


def test_text_pool_is_normalised_unique_and_deterministic():
    pool = text_pool(seed=0, min_chars=55, max_chars=230, limit=400)
    assert len(pool) == 400 and pool == text_pool(seed=0, min_chars=55, max_chars=230, limit=400)
    assert pool != text_pool(seed=1, min_chars=55, max_chars=230, limit=400)
    assert all(55 <= len(t.text) <= 230 for t in pool)
    assert len({t.text.lower() for t in pool}) == 400
    assert not any(ch.isdigit() for t in pool for ch in t.text)  # numbers are written out
    sources = [t.source.split("/")[0] for t in pool]
    assert abs(sources.count("fortunes") - sources.count("bible")) <= 20  # interleaved


def test_plan_is_deterministic_with_unique_sentences():
    cfg = load_profile("quick")
    plan = plan_corpus(cfg)
    assert plan == plan_corpus(cfg)
    assert len(plan) == sum(utterances_for(cfg, s) for s in cfg.voices)
    assert len({p.text for p in plan}) == len(plan) and len({p.id for p in plan}) == len(plan)
    vocab = PhonemeVocab.default()
    assert all(vocab.encode(p.phonemes) for p in plan)
    # a bigger profile keeps every planned utterance (so a rebuild renders only the new ones)
    cfg.utterances_per_speaker += 3
    bigger = plan_corpus(cfg)
    assert len(bigger) == len(plan) + 3 * sum(
        s.voice not in cfg.test_voices + cfg.validation_voices for s in cfg.voices
    )
    assert {p.key for p in plan} <= {p.key for p in bigger}


def test_smoke_corpus_end_to_end(smoke):
    utts = read_manifest(smoke / "manifest.jsonl")
    cfg = load_profile("smoke")
    assert len(utts) == 12 and {u.speaker for u in utts} == {s.speaker for s in cfg.voices}
    vocab = PhonemeVocab.load(smoke / "phonemes.json")
    for u in utts:
        wav, sr = sf.read(u.audio, dtype="float32")
        info = sf.info(u.audio)
        assert (info.format, info.subtype, info.channels, sr) == ("FLAC", "PCM_16", 1, 22050)
        assert u.sample_rate == 22050 and u.duration == pytest.approx(len(wav) / sr, abs=1e-3)
        assert cfg.min_seconds <= u.duration <= cfg.max_seconds
        # speech level at the target, unless the peak ceiling (-1 dBFS) held it lower
        level, peak = loudness_db(wav, sr), peak_db(wav)
        assert peak <= -1.0 + 0.01 and level <= cfg.loudness_db + 0.1
        assert level == pytest.approx(cfg.loudness_db, abs=0.1) or peak == pytest.approx(-1.0, abs=0.01)
        assert vocab.encode(u.phonemes) and u.text == u.text.strip()
    # unseen speakers: whole voices held out, the sox variant of slt stays with slt
    check_speaker_disjoint(utts)
    split_of = {u.speaker: u.split for u in utts}
    assert split_of["flite-rms"] == "test" and split_of["espeak-en-gb-f2"] == "validation"
    assert split_of["flite-slt-p+300-t1.1"] == split_of["flite-slt"] == "train"
    info = json.loads((smoke / "corpus_info.json").read_text())
    assert info["speakers"] == 6 and info["voices"] == 5 and set(info["engines"]) == {"espeak-ng", "flite", "festival"}
    assert info["splits"]["test"]["speaker_names"] == ["flite-rms"]
    assert info["hours"] == pytest.approx(sum(u.duration for u in utts) / 3600, abs=1e-3)
    assert (smoke / "corpus_config.yaml").is_file()


def test_rerun_regenerates_only_what_is_missing_or_stale(smoke, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke, out)
    manifest = (smoke / "manifest.jsonl").read_bytes()
    result = build_corpus(load_profile("smoke"), out, workers=1)
    assert (result.rendered, result.reused) == (0, 12)  # a complete corpus: nothing regenerated
    runs = json.loads((out / "corpus_info.json").read_text())["runs"]
    assert [(r["rendered"], r["reused"]) for r in runs] == [(12, 0), (0, 12)]  # the build history is kept
    files = sorted(finished(out))
    deleted, tampered = files[0], files[5]
    deleted.unlink()
    wav, sr = sf.read(tampered, dtype="float32")
    save_audio(tampered, wav, sr, comment="made from another text")  # a stale file: its key does not match
    (out / "manifest.jsonl").unlink()
    before = {p: p.stat().st_mtime_ns for p in files if p not in (deleted, tampered)}
    result = build_corpus(load_profile("smoke"), out, workers=1)
    assert (result.rendered, result.reused) == (2, 10)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # untouched
    assert (out / "manifest.jsonl").read_bytes() == manifest
    assert audio_hashes(out) == audio_hashes(smoke)


def test_killed_run_resumes_to_the_same_corpus(smoke, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data.corpus", "--profile", "smoke", "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen([*cmd, "chunk_size=1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(finished(out)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(finished(out))
    assert 4 <= done < 12, "the run finished before it could be killed"
    assert not (out / "manifest.jsonl").exists()  # the manifest is written last
    result = build_corpus(load_profile("smoke"), out, workers=2)
    assert result.reused == done and result.rendered == 12 - done
    assert (out / "manifest.jsonl").read_bytes() == (smoke / "manifest.jsonl").read_bytes()
    assert audio_hashes(out) == audio_hashes(smoke)  # resumed == uninterrupted, sample for sample
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporaries left behind


def test_cli(tmp_path, capsys):
    assert main(["--profile", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown corpus profile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    help_text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "--profile" in help_text and "--workers" in help_text
    assert not os.listdir(tmp_path)
