"""evaluation.text_use: the teacher-forced "does the LM read its text" measures, on a tiny token set and tiny
models (a real codec decode and a real ASR for the CER columns)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from codec.model import NanoCodec
from common.config import load_config
from evaluation.text_use import argmax_frames, main, measure
from tests.test_lm import TRAIN_OVERRIDES, make_token_set
from tests.tiny_tts import tiny_codec_config
from tts_lm import KoelLM
from tts_lm.dataset import PromptedUtterances, read_tokens
from tts_lm.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def tiny_lm(tokens: Path) -> tuple[KoelLM, PromptedUtterances]:
    ds, meta = read_tokens(tokens)
    cfg = load_config(TrainConfig, REPO / "configs/lm/quick.yaml", TRAIN_OVERRIDES)
    torch.manual_seed(0)
    model = KoelLM(cfg.model.with_tokens(meta)).eval()
    return model, PromptedUtterances(ds, meta, "train", model.config, cfg.data, seed=0)


def test_text_gain_is_zero_exactly_when_the_texts_are_the_same(tmp_path):
    model, data = tiny_lm(make_token_set(tmp_path / "tokens", codebook_size=16))
    rows = list(range(4))
    result = measure(model, data, rows, batch_size=3, progress=False)
    assert result["utterances"] == 4 and result["text_gain"] != 0.0
    assert result["ce"]["no_text_no_prompt"] != result["ce"]["own_text"]
    with torch.no_grad():  # the training prior on the alignment heads: measured with it exactly as training does
        batch = data.collate(rows)
        expected = model(replace(batch, uncond=torch.zeros_like(batch.uncond)), prior_weight=1.0).ce_loss
    with_prior = measure(model, data, rows, batch_size=4, progress=False, prior_weight=1.0)
    assert with_prior["ce"]["own_text"] == pytest.approx(float(expected), rel=1e-6)
    assert with_prior["ce"]["own_text"] != pytest.approx(result["ce"]["own_text"], rel=1e-6)
    data.phonemes = [data.phonemes[0]] * len(data.phonemes)  # every row has one text: another text is the same
    assert measure(model, data, rows, batch_size=3, progress=False)["text_gain"] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        measure(model, data, rows[:1], progress=False)

    batch = data.collate(rows)
    frames = argmax_frames(model, batch)
    assert [f.shape for f in frames] == [(2, int(n)) for n in batch.code_lens]
    assert all(int(f.max()) < model.config.codebook_size for f in frames)  # codes only, never EOS/BOS/PAD
    with torch.no_grad():  # from logits computed once (what measure() does) == a forward of its own
        reused = argmax_frames(model, batch, model(batch, return_logits=True).logits)
    assert all(torch.equal(a, b) for a, b in zip(frames, reused, strict=True))


def test_cli_reports_ce_and_the_cer_of_argmax_frames_beside_the_codec_floor(tmp_path, capsys):
    tokens = make_token_set(tmp_path / "tokens", codebook_size=16)
    model, _ = tiny_lm(tokens)
    model.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    NanoCodec(tiny_codec_config()).save_pretrained(tmp_path / "codec")
    out = tmp_path / "report" / "text_use.json"
    args = ["--lm", str(tmp_path / "lm"), "--tokens", str(tokens), "--split", "train", "--num", "3"]
    codec_args = ["--codec", str(tmp_path / "codec"), "--asr", "faster-whisper:tiny.en", "--no-progress"]
    assert main([*args, *codec_args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| ce per code |" in printed and "codec floor" in printed
    saved = json.loads(out.read_text())
    assert saved["utterances"] == 3 and set(saved["cer"]) == {"floor", "own_text", "other_text"}
    assert all(saved["cer"][k]["median"] >= 0 for k in saved["cer"]) and "waves" not in saved

    assert main([*args, "--prior-weight", "1", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["prior_weight"] == 1.0 and "prior weight 1)" in capsys.readouterr().out
    assert main([*args, "--prior-weight", "2"]) == 2
    assert "--prior-weight 2.0 is outside 0..1" in capsys.readouterr().err

    assert main(["--lm", str(tmp_path / "lm"), "--tokens", str(tmp_path / "missing")]) == 2
    assert "meta.json not found" in capsys.readouterr().err
    other = make_token_set(tmp_path / "other", codebook_size=16, codec_hash="c0ffee")
    assert main(["--lm", str(tmp_path / "lm"), "--tokens", str(other), "--split", "train"]) == 2
    assert "another codec" in capsys.readouterr().err
