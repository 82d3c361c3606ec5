"""The LM's non-causal text encoder: rows independent of padding and neighbours, context in both directions,
off by default (old checkpoints load unchanged), and it carries the text into the LM's prefix."""

from __future__ import annotations

import json

import pytest
import torch

from tts_lm import KoelLM, LMConfig
from tts_lm.text_encoder import TextEncoder, sinusoidal_positions

from .test_lm import PHONEMES, batch_from, prompts_for, tiny_config


def encoder_and_rows(seed: int = 0) -> tuple[TextEncoder, list[torch.Tensor]]:
    torch.manual_seed(seed)
    enc = TextEncoder(d_model=16, num_layers=2, num_heads=2, ffn_dim=32).eval()
    rows = [torch.randn(n, 16) for n in (7, 3, 5)]
    return enc, rows


def padded(rows: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((len(rows), width, rows[0].shape[1]), 9.0)  # padding filled with junk on purpose
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out, torch.tensor([len(r) for r in rows])


def test_a_row_encodes_the_same_alone_and_in_any_padded_batch():
    enc, rows = encoder_and_rows()
    with torch.no_grad():
        batch = enc(*padded(rows, 10))
        for b, r in enumerate(rows):
            alone = enc(r[None], torch.tensor([len(r)]))[0]
            torch.testing.assert_close(batch[b, : len(r)], alone, atol=1e-6, rtol=1e-5)
            assert (batch[b, len(r) :] == 0).all(), "padding must come out zero"
        assert batch.shape == (3, 10, 16)


def test_every_position_sees_the_whole_text_both_ways():
    enc, rows = encoder_and_rows()
    row = rows[0]
    changed_last, changed_first = row.clone(), row.clone()
    changed_last[-1] = torch.randn(row.shape[1])  # a new vector (a constant shift would vanish in LayerNorm)
    changed_first[0] = torch.randn(row.shape[1])
    n = torch.tensor([len(row)])
    with torch.no_grad():
        out, last, first = (enc(r[None], n)[0] for r in (row, changed_last, changed_first))
    assert not torch.allclose(out[0], last[0]), "the first position must depend on the last phoneme"
    assert not torch.allclose(out[-1], first[-1]), "the last position must depend on the first phoneme"
    reversed_out = enc(row.flip(0)[None], n)[0]  # order matters: positions are encoded
    assert not torch.allclose(out, reversed_out.flip(0), atol=1e-4)


def test_sinusoidal_positions_and_kernel_check():
    pos = sinusoidal_positions(5, 8)
    assert pos.shape == (5, 8)
    torch.testing.assert_close(pos[:, 0], torch.sin(torch.arange(5.0)))
    torch.testing.assert_close(pos[:, 1], torch.cos(torch.arange(5.0)))
    with pytest.raises(ValueError, match="kernel_size=2 must be odd"):
        TextEncoder(16, 1, 2, 32, kernel_size=2)
    with pytest.raises(ValueError, match="text_encoder_layers=-1"):
        tiny_config(text_encoder_layers=-1)


def test_off_by_default_and_old_configs_load_without_it(tmp_path):
    torch.manual_seed(0)
    plain = KoelLM(tiny_config()).eval()
    assert plain.text_encoder is None and not any(k.startswith("text_encoder") for k in plain.state_dict())
    plain.save_pretrained(tmp_path / "lm")
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    for key in ("text_encoder_layers", "text_encoder_kernel"):  # a checkpoint written before the option
        config.pop(key)
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    loaded = KoelLM.from_pretrained(tmp_path / "lm")
    assert loaded.config == plain.config and loaded.text_encoder is None
    assert LMConfig().text_encoder_layers == 0


def test_the_encoder_is_what_the_audio_reads_the_text_through():
    """Teacher-forced logits change when the encoder's weights change (it is on the text path), the audio-only
    rows (unconditional) do not (their text is replaced after the encoder)."""
    torch.manual_seed(0)
    model = KoelLM(tiny_config(text_encoder_layers=1)).eval()
    prompts = prompts_for(model.config)
    g = torch.Generator().manual_seed(5)
    codes = torch.randint(0, model.config.codebook_size, (2, 2, 7), generator=g)
    cond = batch_from(model, codes, torch.tensor([7, 5]), PHONEMES, prompts)
    uncond = batch_from(model, codes, torch.tensor([7, 5]), PHONEMES, prompts, uncond=True)
    with torch.no_grad():
        before = [model(b, return_logits=True).logits for b in (cond, uncond)]
        model.text_encoder.layers[0].out.weight.add_(0.5)
        after = [model(b, return_logits=True).logits for b in (cond, uncond)]
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=0)
