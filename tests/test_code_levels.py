"""Codes as FSQ levels (tts_lm/code_levels.py): the codec's own level numbers, embeddings that are sums of level
rows, logits whose softmax is the product of per-channel softmaxes, and the LM options around them."""

from __future__ import annotations

import math

import pytest
import torch

from codec.fsq import FiniteScalarQuantizer
from text.vocab import PhonemeVocab
from tts_lm import KoelLM, LMConfig
from tts_lm.code_levels import LevelEmbedding, LevelHead, code_levels, expand_levels

LEVELS = [8, 7, 6, 6]


def test_level_numbers_are_the_codecs():
    fsq = FiniteScalarQuantizer(LEVELS)
    indices = torch.arange(math.prod(LEVELS))[None, :]  # (1, V)
    expected = fsq.indices_to_levels(indices)[0].T  # (V, D)
    assert torch.equal(code_levels(LEVELS), expected.long())


def test_expand_levels_sums_each_codes_channel_scores():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(3, n, 5, generator=g) for n in (4, 3, 2)]
    out = expand_levels(parts, dim=1)  # (3, 24, 5)
    digits = code_levels([4, 3, 2])
    expected = torch.stack([sum(parts[d][:, int(digits[v, d])] for d in range(3)) for v in range(24)], dim=1)
    torch.testing.assert_close(out, expected)


def test_embedding_of_a_code_is_the_sum_of_its_level_rows_and_specials_have_their_own():
    torch.manual_seed(0)
    emb = LevelEmbedding(num_streams=2, levels=[4, 3], num_specials=3, dim=6)
    vocab = 12 + 3
    digits = code_levels([4, 3])
    ids = torch.tensor([[0, 5, 11], [vocab + 7, 12, vocab + 14]])  # stream 0 codes, stream 1 code 7, specials
    out = emb(ids)
    w = emb.level_weight
    torch.testing.assert_close(out[0, 1], w[0, int(digits[5, 0])] + w[0, 4 + int(digits[5, 1])])
    torch.testing.assert_close(out[1, 0], w[1, int(digits[7, 0])] + w[1, 4 + int(digits[7, 1])])
    torch.testing.assert_close(out[1, 1], emb.special_weight[0, 0])  # stream 0, first special
    torch.testing.assert_close(out[1, 2], emb.special_weight[1, 2])  # stream 1, last special
    out.sum().backward()
    assert emb.level_weight.grad.abs().sum() > 0 and emb.special_weight.grad.abs().sum() > 0


def test_head_softmax_is_the_product_of_per_channel_softmaxes():
    torch.manual_seed(0)
    head = LevelHead(d_model=8, num_streams=2, levels=[4, 3], num_specials=3)
    hidden = torch.randn(5, 8)
    logits = head(hidden)  # (5, 2, 15)
    assert logits.shape == (5, 2, 15)
    scores = head.proj(hidden).view(5, 2, -1)
    logp = logits.log_softmax(-1)
    # the codes' share of the mass, then each channel's own softmax
    code_mass = torch.logsumexp(logp[..., :12], dim=-1)  # (5, 2)
    digits = code_levels([4, 3])
    p0, p1 = scores[..., :4].log_softmax(-1), scores[..., 4:7].log_softmax(-1)
    for v in (0, 5, 11):
        expected = code_mass + p0[..., digits[v, 0]] + p1[..., digits[v, 1]]
        torch.testing.assert_close(logp[..., v], expected)


def test_config_checks_levels_against_the_codebook_and_the_codec():
    meta = {
        "num_codebooks": 8, "codebook_size": 2016, "frame_rate": 12.5,
        "phoneme_vocab": PhonemeVocab.default().to_dict(),
        "codec_config": {"quantizer": {"num_levels_per_group": LEVELS}},
    }  # fmt: skip
    assert LMConfig(codebook_size=16, code_levels=LEVELS).with_tokens(meta).code_levels == LEVELS
    with pytest.raises(ValueError, match=r"give 1008 codes, the codebook has 2016"):
        LMConfig(code_levels=[8, 7, 6, 3]).with_tokens(meta)
    with pytest.raises(ValueError, match=r"not the codec's levels \[8, 7, 6, 6\]"):
        LMConfig(code_levels=[6, 6, 7, 8]).with_tokens(meta)
    with pytest.raises(ValueError, match=r"give 1008 codes"):
        KoelLM(LMConfig(phoneme_vocab_size=64, code_levels=[8, 7, 6, 3]))
    with pytest.raises(ValueError, match="cannot be combined"):
        LMConfig(codebook_size=2016, code_levels=LEVELS, local_transformer_layers=1)


def test_level_lm_is_smaller_and_its_logits_cover_the_same_vocabulary():
    plain = KoelLM(LMConfig(phoneme_vocab_size=64, d_model=64, num_layers=2))
    levels = KoelLM(LMConfig(phoneme_vocab_size=64, d_model=64, num_layers=2, code_levels=LEVELS))
    assert levels.num_parameters() < plain.num_parameters() - 8 * 2019 * 64 * 1.9  # embeddings and head shrink
    assert levels.head.vocab == plain.config.vocab_per_codebook
