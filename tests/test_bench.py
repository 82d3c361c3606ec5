"""`make bench` harness in its seconds-long --smoke mode: results.json with the required keys (positive, finite),
ratios that are the ratios of the numbers, fixed-length requests (EOS masked: frames = seconds x FPS at every batch
size), LM steps per second of audio = the frame rate, trained models used when given, peers built from
transformers configs, the markdown table, CLI errors. Speeds themselves are not asserted (they are wall clock)."""

from __future__ import annotations

import json
import math

import pytest

from codec import NanoCodec
from evaluation.bench.__main__ import main
from evaluation.bench.harness import BenchSettings
from tests.tiny_tts import save_tiny_models

REQUIRED = ("rtf_12_5", "rtf_21_5", "rtf_ratio", "ttfa_12_5_ms", "ttfa_21_5_ms")


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_smoke_bench_writes_results(tmp_path, capsys):
    lm_dir, codec_dir = save_tiny_models(tmp_path / "models")  # a "trained" 12.5 FPS pair, as runs/ would hold
    out = tmp_path / "bench"
    args = ["--smoke", "--out", str(out), "--no-progress", "--codec-12", str(codec_dir), "--lm-12", str(lm_dir)]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())

    assert all(positive(r[k]) for k in REQUIRED), {k: r[k] for k in REQUIRED}
    assert r["rtf_ratio"] == pytest.approx(r["rtf_21_5"] / r["rtf_12_5"])
    assert r["smoke"] is True and r["machine"]["torch_threads"] == 1 and r["machine"]["torch"]

    e2e = {(row["fps"], row["batch"]): row for row in r["e2e"]}
    assert set(e2e) == {("12.5", 1), ("12.5", 2), ("21.5", 1), ("21.5", 2)}
    for (fps, _), row in e2e.items():
        rate = float(fps)
        assert row["frames"] == round(0.5 * row["frame_rate"])  # fixed length, whatever the weights
        assert row["audio_s"] == pytest.approx(row["frames"] / row["frame_rate"])
        assert row["lm_steps_per_audio_s"] == pytest.approx(row["frame_rate"]) and abs(row["frame_rate"] - rate) < 0.1
        assert all(positive(row[k]) for k in ("rtf", "ttfa_ms", "lm_steps_per_s", "audio_s_per_s"))
    assert e2e["12.5", 1]["weights"] == f"trained: {lm_dir} + {codec_dir}"
    assert e2e["21.5", 1]["weights"].startswith("random init")
    assert r["rtf_12_5"] == e2e["12.5", 1]["rtf"] and r["ttfa_21_5_ms"] == e2e["21.5", 1]["ttfa_ms"]

    speed = {row["codec"]: row for row in r["codec_speed"]}
    assert any(n.startswith("Mimi") for n in speed) and any(n.startswith("EnCodec") for n in speed)
    assert any(n.startswith("DAC") for n in speed) and len(speed) == 5
    base = r["codec_speed"][0]
    assert base["codec"].startswith("NanoCodec 12.5") and base["encode_vs_nanocodec"] == 1.0
    smoke = BenchSettings.smoke()
    folded = NanoCodec.from_config(smoke.paper_codecs[0], list(smoke.codec_overrides))
    folded.remove_weight_norm()  # what the benchmark times (inference form), all its weights still Parameters
    assert base["parameters_m"] * 1e6 == pytest.approx(sum(p.numel() for p in folded.parameters()))
    for row in r["codec_speed"]:
        assert positive(row["encode_rtf"]) and positive(row["decode_rtf"])
        assert row["decode_vs_nanocodec"] == pytest.approx(row["decode_rtf"] / base["decode_rtf"])
        assert (row["stream_decode_rtf"] is not None) == row["codec"].startswith("NanoCodec")

    assert [t["fps"] for t in r["tokenize"]] == ["12.5", "21.5"] and r["tokenize"][0]["weights"].startswith("trained")
    assert all(positive(t["audio_s_per_s"]) for t in r["tokenize"])
    assert all(positive(t["gan_steps_per_s"]) and positive(t["recon_steps_per_s"]) for t in r["codec_training"])
    assert all(positive(t["steps_per_s"]) and positive(t["samples_per_s"]) for t in r["lm_training"])

    md = (out / "results.md").read_text()
    assert "SMOKE RUN" in md and "| NanoCodec 12.5 FPS 1.10 kbps |" in md and "1 thread(s)" in md
    assert "results.json" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--smoke", "--out", str(tmp_path), "--lm-12", str(tmp_path)])
    assert "--lm-12 needs --codec-12" in capsys.readouterr().err
    assert main(["--smoke", "--out", str(tmp_path), "--codec-21", str(tmp_path / "none")]) == 2
    assert "no trained model there" in capsys.readouterr().err
    for bad in ("0", "fast"):
        with pytest.raises(SystemExit):
            main(["--smoke", "--out", str(tmp_path), "--chunk-frames", bad])
        assert '--chunk-frames: chunk_frames must be a positive number of frames or "grow"' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])


def test_growing_chunks_in_the_end_to_end_bench(tmp_path):
    """--chunk-frames grow: the end-to-end rows stream growing chunks (batch 1 through the
    Synthesizer, batch 2 through the bench's own loop) and record the schedule."""
    out = tmp_path / "bench"
    assert main(["--smoke", "--out", str(out), "--no-progress", "--sections", "e2e", "--chunk-frames", "grow"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert {row["chunk_frames"] for row in r["e2e"]} == {"grow"} and all(positive(row["rtf"]) for row in r["e2e"])
