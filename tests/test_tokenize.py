"""Stage 2 tokenisation (data.tokenize_corpus): schema, codes == codec.encode, resume, skips, codec guard, workers.

A tiny random-init codec (the quick config with 4 encoder channels) and real espeak-ng speech. A raw random init
maps every frame to one code, which would make "codes equal" vacuous, so the encoder's biases are zeroed and its
output rescaled to spread the latents over the FSQ range (checked: the codes vary). Some clips are cut
mid-speech, where zero padding to a longer batch would change the last frames' codes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from codec import NanoCodec
from codec.audio import load_audio
from data.manifest import Utterance, write_manifest
from data.token_shards import SKIP_REASONS, EncodeSettings
from data.tokenize_corpus import TokenizeError, load_tokens, main, speaker_prompts, tokenize_corpus
from text.g2p import G2P
from text.vocab import PhonemeVocab

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "encoder.base_channels=4",
    "encoder.resblock_kernel_sizes=[3]",
    "encoder.resblock_dilation_sizes=[1]",
    "decoder.base_channels=32",
    "decoder.resblock_kernel_sizes=[3]",
    "decoder.resblock_dilation_sizes=[1]",
]
SETTINGS = EncodeSettings(min_seconds=0.5, max_seconds=6.0, batch_seconds=30.0)
COLUMNS = ["id", "speaker", "text", "phoneme_ids", "codes", "num_frames", "duration", "split"]

# (id, speaker/voice, split, text, cut): keep this fraction (float) or number (int) of samples: ends mid-speech
GOOD = [
    ("a1", "en-us", "train", "The quick brown fox jumps over the lazy dog.", 1.0),
    ("a2", "en-us", "train", "The quick brown fox jumps over the lazy dog.", 30 * 1764 + 1500),
    ("a3", "en-us", "train", "The quick brown fox jumps over the lazy dog.", 30 * 1764 + 200),  # a2's frame count
    ("b1", "en-gb", "train", "She sells sea shells by the sea shore.", 0.75),
    ("b2", "en-gb", "train", "Peter Piper picked a peck of pickled peppers.", 1.0),
    ("c1", "en-us+f3", "validation", "How much wood would a woodchuck chuck?", 1.0),
    ("c2", "en-us+f3", "validation", "Good morning, how are you today?", 0.8),
    ("d1", "en-us+m3", "test", "It was a bright cold day in April.", 1.0),
    ("d2", "en-us+m3", "test", "All happy families are alike.", 1.0),
    ("d3", "en-us+m3", "test", "Call me Ishmael.", 1.0),
]


def _espeak(path: Path, voice: str, text: str, cut: float | int = 1.0) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    if cut != 1.0:
        wav, sr = sf.read(str(path), dtype="float32")
        sf.write(str(path), wav[: cut if isinstance(cut, int) else int(len(wav) * cut)], sr)
    return path


def _utt(uid: str, path: Path, speaker: str, split: str, text: str, phonemes: str) -> Utterance:
    try:
        duration = max(sf.info(str(path)).duration, 0.01)
    except (OSError, RuntimeError):  # the missing and the unreadable file
        duration = 1.0
    return Utterance(uid, str(path), text, phonemes, speaker, duration, 22050, split)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A manifest of 10 good espeak-ng clips and one bad line per skip reason, plus a tiny codec folder."""
    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    audio.mkdir()
    g2p = G2P("en-us")
    utts = []
    for uid, voice, split, text, cut in GOOD:
        utts.append(_utt(uid, _espeak(audio / f"{uid}.wav", voice, text, cut), voice, split, text, g2p(text)))
    bad = {}
    bad["missing"] = _utt("x-missing", audio / "gone.wav", "en-us", "train", "Gone.", g2p("Gone."))
    (audio / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)
    bad["unreadable"] = _utt("x-unreadable", audio / "junk.wav", "en-us", "train", "Junk.", g2p("Junk."))
    sf.write(str(audio / "silent.wav"), np.zeros(22050, np.float32), 22050)
    bad["silent"] = _utt("x-silent", audio / "silent.wav", "en-us", "train", "Quiet.", g2p("Quiet."))
    short = _espeak(audio / "short.wav", "en-us", "Hi.", 0.25)
    bad["too_short"] = _utt("x-short", short, "en-us", "train", "Hi.", g2p("Hi."))
    long_text = "This sentence is long enough to last for more than six seconds when espeak reads it. " * 2
    long = _espeak(audio / "long.wav", "en-us", long_text)
    bad["too_long"] = _utt("x-long", long, "en-us", "train", long_text, g2p(long_text))
    bad["no_phonemes"] = _utt("x-nophon", audio / "a1.wav", "en-us", "train", "...", "ˈ . ,")
    bad["unknown_phoneme"] = _utt("x-unknown", audio / "a1.wav", "en-us", "train", "Snow.", "snˈoʊ ☃")
    assert sorted(bad) == sorted(SKIP_REASONS)
    lines = utts[:4] + [bad["missing"], bad["unreadable"]] + utts[4:7] + [bad[r] for r in SKIP_REASONS[2:]] + utts[7:]
    manifest = write_manifest(root / "manifest.jsonl", lines)
    PhonemeVocab.default().save(root / "phonemes.json")
    return {"manifest": manifest, "codec": _tiny_codec(root / "codec", seed=0), "good": [g[0] for g in GOOD]}


def _tiny_codec(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = NanoCodec.from_config(ROOT / "configs/codec/quick_12.5fps.yaml", TINY).eval()
    wav, _ = load_audio(_espeak(directory.parent / f"probe{seed}.wav", "en-us", "Probe."), 22050)
    with torch.no_grad():
        for name, p in model.audio_encoder.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        latents = model.audio_encoder(model.pad_to_frames(torch.from_numpy(wav)[None]))  # (1, D, F)
        model.audio_encoder.post_conv.conv.parametrizations.weight.original0.mul_(1.5 / latents.std())
    return model.save_pretrained(directory)


@pytest.fixture(scope="module")
def reference(corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted single-process run, shards of 4 utterances."""
    out = tmp_path_factory.mktemp("tokens") / "ref"
    meta = tokenize_corpus(str(corpus["codec"]), corpus["manifest"], out, SETTINGS, shard_size=4)
    return {"out": out, "meta": meta, "rows": datasets.load_from_disk(str(out)).to_dict()}


def _same_output(out: Path, reference: dict) -> None:
    ds, meta = load_tokens(out)
    assert ds.to_dict() == reference["rows"]
    assert meta == reference["meta"]
    assert (out / "skipped.jsonl").read_text() == (reference["out"] / "skipped.jsonl").read_text()


def test_schema_shapes_and_codes_equal_codec_encode(corpus: dict, reference: dict) -> None:
    ds, meta = load_tokens(reference["out"])
    assert isinstance(ds, datasets.Dataset) and ds.column_names == COLUMNS
    assert ds.features["codes"].feature.feature.dtype == "int16"
    assert ds["id"] == corpus["good"]  # manifest order, every good clip, no bad one
    codec = NanoCodec.from_pretrained(corpus["codec"])
    vocab = PhonemeVocab.default()
    utts = {json.loads(line)["id"]: json.loads(line) for line in corpus["manifest"].read_text().splitlines()}
    spf, distinct = codec.samples_per_frame, set()
    for row in ds.with_format("numpy"):
        utt = utts[row["id"]]
        wav, _ = load_audio(corpus["manifest"].parent / utt["audio"], codec.sample_rate)
        codes = row["codes"]
        assert codes.shape == (codec.num_codebooks, row["num_frames"])
        assert row["num_frames"] == math.ceil(len(wav) / spf)
        assert row["duration"] == pytest.approx(len(wav) / codec.sample_rate, abs=1e-4)
        np.testing.assert_array_equal(codes, codec.encode(torch.from_numpy(wav)[None])[0].numpy())
        assert list(row["phoneme_ids"]) == vocab.encode(utt["phonemes"])
        assert (row["speaker"], row["split"], row["text"]) == (utt["speaker"], utt["split"], utt["text"])
        distinct.update(codes[0].tolist())
    assert len(distinct) > 10, "the test codec must produce varied codes, or code equality proves nothing"
    frames = dict(zip(ds["id"], ds["num_frames"], strict=True))
    assert frames["a2"] == frames["a3"], "a2/a3 should share a batch of equal frame counts"
    assert meta["codec_hash"] and meta["frame_rate"] == codec.frame_rate == 12.5
    assert (meta["num_codebooks"], meta["codebook_size"]) == (codec.num_codebooks, codec.codebook_size)
    assert meta["samples_per_frame"] == spf and meta["codec_config"]["sample_rate"] == 22050
    assert PhonemeVocab.load(reference["out"] / "phonemes.json").encode("hˈɛloʊ") == vocab.encode("hˈɛloʊ")
    assert meta["counts"]["tokenized"] == len(GOOD) and meta["counts"]["manifest"] == len(GOOD) + len(SKIP_REASONS)
    assert meta["speakers"]["validation"] == {"en-us+f3": ["c1", "c2"]}
    assert meta["speakers"]["train"]["en-gb"] == ["b1", "b2"]
    assert set(meta["prompts"]) == {"c1", "c2", "d1", "d2", "d3"}


def test_bad_files_are_counted_and_skipped(reference: dict) -> None:
    meta = reference["meta"]
    assert meta["skipped"] == {reason: 1 for reason in SKIP_REASONS}
    skipped = [json.loads(line) for line in (reference["out"] / "skipped.jsonl").read_text().splitlines()]
    by_reason = {s["reason"]: s for s in skipped}
    assert by_reason["missing"]["audio"].endswith("gone.wav") and by_reason["silent"]["id"] == "x-silent"
    assert by_reason["unknown_phoneme"]["id"] == "x-unknown" and "☃" in by_reason["unknown_phoneme"]["detail"]


def test_prompts_are_another_utterance_of_the_same_speaker(reference: dict) -> None:
    meta = reference["meta"]
    for uid, prompt in meta["prompts"].items():
        assert prompt != uid
        split = next(s for s, spk in meta["speakers"].items() for ids in spk.values() if uid in ids)
        assert any(uid in ids and prompt in ids for ids in meta["speakers"][split].values())
    rows = {
        "id": ["v1", "v2", "v3", "v4", "t1", "t2", "t3", "lonely", "tr1", "tr2"],
        "speaker": ["s1", "s1", "s1", "s1", "s2", "s2", "s2", "s3", "s4", "s4"],
        "split": ["validation"] * 4 + ["test"] * 4 + ["train"] * 2,
        "duration": [4.0, 1.0, 5.0, 12.0, 2.0, 3.0, 20.0, 4.0, 4.0, 4.0],
    }
    index, prompts = speaker_prompts(rows)
    assert index["test"] == {"s2": ["t1", "t2", "t3"], "s3": ["lonely"]} and index["train"] == {"s4": ["tr1", "tr2"]}
    assert set(prompts) == {"v1", "v2", "v3", "v4", "t1", "t2", "t3"}  # no prompt for a lone speaker, none for train
    assert all(prompts[u] != u and prompts[u][0] == u[0] for u in prompts)
    assert prompts["v2"] in ("v1", "v3") and prompts["t1"] == "t2"  # 3-10 s prompts preferred when there are some
    assert speaker_prompts(rows) == (index, prompts)  # a fixed choice


def test_resume_after_interruption_equals_uninterrupted(corpus: dict, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    assert tokenize_corpus(str(corpus["codec"]), corpus["manifest"], out, SETTINGS, 4, max_shards=1) is None
    shards = sorted(p for p in (out / "shards").iterdir())
    assert len(shards) == 1 and not (out / "meta.json").exists()
    (out / "shards" / ".000001-deadbeef.tmp").mkdir()  # what a writer killed mid-shard leaves behind
    first = shards[0].stat().st_mtime_ns
    tokenize_corpus(str(corpus["codec"]), corpus["manifest"], out, SETTINGS, 4)
    assert shards[0].stat().st_mtime_ns == first, "a finished shard must not be encoded again"
    assert not (out / "shards" / ".000001-deadbeef.tmp").exists()
    _same_output(out, reference)
    assert tokenize_corpus(str(corpus["codec"]), corpus["manifest"], out, SETTINGS, 4) == reference["meta"]


def test_killed_process_resumes_to_the_same_dataset(corpus: dict, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    args = ["--codec", str(corpus["codec"]), "--manifest", str(corpus["manifest"]), "--out", str(out)]
    args += ["--shard-size", "4", "--max-seconds", "6", "--batch-seconds", "1"]
    cmd = [sys.executable, "-m", "data.tokenize_corpus", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "shards").is_dir() or not any(p.name[0] != "." for p in (out / "shards").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first shard"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if (out / "meta.json").exists():
        pytest.skip("the run finished before it could be killed (machine too fast for this check)")
    assert main(args) == 0
    _same_output(out, reference)


def test_two_workers_equal_one(corpus: dict, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    tokenize_corpus(str(corpus["codec"]), corpus["manifest"], out, SETTINGS, shard_size=4, workers=2)
    _same_output(out, reference)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(corpus: dict, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    args = ["--codec", str(corpus["codec"]), "--manifest", str(corpus["manifest"]), "--out", str(out)]
    args += ["--shard-size", "4", "--max-seconds", "6"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run([*cmd, "-m", "data.tokenize_corpus", *args], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 1/2" not in run.stderr  # one progress bar (rank 0's)
    _same_output(out, reference)


def test_other_codec_is_refused(corpus: dict, reference: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = _tiny_codec(tmp_path / "other_codec", seed=1)
    with pytest.raises(TokenizeError, match="another codec.*new --out"):
        tokenize_corpus(str(other), corpus["manifest"], reference["out"], SETTINGS, shard_size=4)
    partial = tmp_path / "partial"  # interrupted before meta.json: still guarded by codec.json
    tokenize_corpus(str(corpus["codec"]), corpus["manifest"], partial, SETTINGS, 4, max_shards=1)
    args = ["--codec", str(other), "--manifest", str(corpus["manifest"]), "--out", str(partial)]
    assert main(args) == 2
    assert "another codec" in capsys.readouterr().err
    assert len(list((partial / "shards").iterdir())) == 1


def test_replace_other_codec_starts_over(corpus: dict, reference: dict, tmp_path: Path) -> None:
    other = _tiny_codec(tmp_path / "other_codec", seed=1)
    out = tmp_path / "tokens"
    tokenize_corpus(str(other), corpus["manifest"], out, SETTINGS, 4, max_shards=2)  # a stale, partial folder
    stale = {p.name for p in (out / "shards").iterdir()}
    args = ["--codec", str(corpus["codec"]), "--manifest", str(corpus["manifest"]), "--out", str(out)]
    settings = ["--min-seconds", "0.5", "--max-seconds", "6.0", "--batch-seconds", "30", "--shard-size", "4"]
    assert main([*args, *settings, "--replace-other-codec"]) == 0
    _same_output(out, reference)  # exactly a fresh run: nothing of the other codec's codes survives
    assert not stale & {p.name for p in (out / "shards").iterdir()}
    lookalike = tmp_path / "not_tokens"  # a folder that only looks like one is never deleted
    lookalike.mkdir()
    (lookalike / "meta.json").write_text('{"name": "mine"}')
    assert main([*args[:5], str(lookalike), "--replace-other-codec"]) == 2
    assert (lookalike / "meta.json").is_file()


NEMO = ROOT / "tests/fixtures/nemo/tiny.nemo"  # a tiny NeMo-layout codec checkpoint (codec.nemo's golden)


@pytest.mark.skipif(not (hasattr(NanoCodec, "from_nemo") and NEMO.is_file()), reason="no .nemo loader or fixture")
def test_nemo_checkpoint_as_codec(corpus: dict, reference: dict, tmp_path: Path) -> None:
    assert tokenize_corpus(str(NEMO), corpus["manifest"], tmp_path / "nemo", SETTINGS, 4) is not None
    ds, meta = load_tokens(tmp_path / "nemo")
    codec = NanoCodec.from_nemo(NEMO)
    assert meta["codec_hash"] != reference["meta"]["codec_hash"] and meta["num_codebooks"] == codec.num_codebooks
    row = ds.with_format("numpy")[0]
    wav, _ = load_audio(corpus["manifest"].parent / "audio" / f"{row['id']}.wav", codec.sample_rate)
    np.testing.assert_array_equal(row["codes"], codec.encode(torch.from_numpy(wav)[None])[0].numpy())


def test_codec_argument_errors(tmp_path: Path) -> None:
    if not hasattr(NanoCodec, "from_nemo"):
        with pytest.raises(TokenizeError, match="not supported yet"):
            tokenize_corpus(str(tmp_path / "x.nemo"), tmp_path / "m.jsonl", tmp_path / "out")
    else:
        with pytest.raises(TokenizeError, match="no such .nemo file"):
            tokenize_corpus(str(tmp_path / "x.nemo"), tmp_path / "m.jsonl", tmp_path / "out")
    with pytest.raises(TokenizeError, match="expected a codec folder with model.safetensors"):
        tokenize_corpus(str(tmp_path / "nocodec"), tmp_path / "m.jsonl", tmp_path / "out")
    with pytest.raises(TokenizeError, match="not downloadable from the hub"):  # offline in tests (conftest)
        tokenize_corpus("nobody/no-such-codec", tmp_path / "m.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()
