"""KoelLM: KV-cache decoding == full forward, guidance, sampling, overfitting, stream == generate, checkpoints,
training resume == uninterrupted, input errors. Tiny models, CPU, seconds each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tts_lm import AlignmentConfig, KoelLM, LMBatch, LMConfig
from tts_lm.generate import cfg_combine, sample_tokens, stream_frames
from tts_lm.sequence import stack_frames, unstack_frames

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides) -> LMConfig:
    values = dict(
        num_codebooks=2,
        codebook_size=16,
        phoneme_vocab_size=24,
        d_model=32,
        num_layers=2,
        num_heads=4,
        max_seq_len=128,
        alignment=AlignmentConfig(layers=[1], heads=2, prior_anneal_start=50, prior_anneal_end=100),
        cfg_dropout=0.0,
        min_prompt_seconds=0.3,
    )
    values.update(overrides)
    return LMConfig(**values)


def batch_from(model: KoelLM, codes: torch.Tensor, lengths: torch.Tensor, phonemes, prompts, uncond=False) -> LMBatch:
    """A teacher-forcing batch from generated codes [B, K, F] (NO_FRAME padding) and the generation inputs."""
    batch = len(phonemes)
    phon = torch.zeros(batch, max(len(p) for p in phonemes), dtype=torch.long)
    for b, p in enumerate(phonemes):
        phon[b, : len(p)] = torch.tensor(p)
    prompt = torch.zeros(batch, model.config.num_codebooks, max(p.shape[1] for p in prompts), dtype=torch.long)
    for b, p in enumerate(prompts):
        prompt[b, :, : p.shape[1]] = p
    return LMBatch(
        phoneme_ids=phon,
        phoneme_lens=torch.tensor([len(p) for p in phonemes]),
        prompt_codes=prompt,
        prompt_lens=torch.tensor([p.shape[1] for p in prompts]),
        codes=codes.clamp(min=0),
        code_lens=lengths,
        uncond=torch.full((batch,), uncond),
    )


PHONEMES = [[3, 5, 7, 9, 11], [4, 6, 8]]


def prompts_for(cfg: LMConfig) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, cfg.codebook_size, (cfg.num_codebooks, n), generator=g) for n in (6, 9)]


def step_logits(model: KoelLM, prompts, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    steps = list(stream_frames(model, PHONEMES, prompts, **options))
    codes = torch.cat([s.frame for s in steps], dim=2)  # (B, K, F)
    lengths = torch.stack([s.active for s in steps], 1).sum(1)
    return codes, lengths, torch.stack([s.logits for s in steps], dim=1), steps  # logits (B, F, K, V)


def real_columns(cfg: LMConfig) -> list[int]:
    """The codes and audio EOS (BOS and PAD are masked to -inf before sampling)."""
    return [*range(cfg.codebook_size), cfg.audio_eos]


def full_logits(model: KoelLM, batch: LMBatch) -> torch.Tensor:
    """Teacher-forced logits per frame: (B, F, K, V) (steps unstacked into frames)."""
    with torch.no_grad():
        out = model(batch, return_logits=True)
    b, q, c, v = out.logits.shape
    s, k = model.config.frames_per_step, model.config.num_codebooks
    return out.logits.view(b, q, s, k, v).flatten(1, 2)  # (B, Q*S, K, V)


@pytest.mark.parametrize(
    "variant",
    [{}, {"frames_per_step": 2}, {"local_transformer_layers": 1, "local_transformer_dim": 16}, {"num_layers": 3}],
    ids=["parallel", "stacked", "local", "alignment-off-layer"],
)
def test_kv_cache_steps_equal_full_forward(variant):
    torch.manual_seed(0)
    model = KoelLM(tiny_config(**variant)).eval()
    prompts = prompts_for(model.config)
    codes, lengths, logits, _ = step_logits(
        model, prompts, cfg_scale=1.0, temperature=1.0, top_k=0, seed=1, max_frames=9, min_frames=9
    )
    assert lengths.tolist() == [9, 9]
    full = full_logits(model, batch_from(model, codes, lengths, PHONEMES, prompts))
    real = real_columns(model.config)
    for b in range(2):
        n = int(lengths[b])
        torch.testing.assert_close(logits[b, :n, :, real], full[b, :n, :, real], atol=2e-5, rtol=1e-4)


def test_cfg_combination_formula_and_one_batched_forward():
    cond, uncond = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    torch.testing.assert_close(cfg_combine(torch.cat([cond, uncond]), 2.5), uncond + 2.5 * (cond - uncond))
    torch.testing.assert_close(cfg_combine(torch.cat([cond, uncond]), 2.5), -1.5 * uncond + 2.5 * cond)

    torch.manual_seed(0)
    model = KoelLM(tiny_config()).eval()
    prompts = prompts_for(model.config)
    codes, lengths, logits, _ = step_logits(
        model, prompts, cfg_scale=2.5, temperature=0.0, seed=0, max_frames=7, min_frames=7
    )
    c = full_logits(model, batch_from(model, codes, lengths, PHONEMES, prompts, uncond=False))
    u = full_logits(model, batch_from(model, codes, lengths, PHONEMES, prompts, uncond=True))
    assert (c - u).abs().max() > 1e-3, "the unconditional branch must differ from the conditional one"
    real = real_columns(model.config)
    for b in range(2):
        n = int(lengths[b])
        expected = u[b, :n, :, real] + 2.5 * (c[b, :n, :, real] - u[b, :n, :, real])
        torch.testing.assert_close(logits[b, :n, :, real], expected, atol=5e-5, rtol=1e-4)


def test_sample_tokens_topk_topp_greedy_per_codebook():
    logits = torch.tensor([[[0.0, 5.0, 4.9, -1.0], [3.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]]).expand(400, -1, -1)
    g = torch.Generator().manual_seed(0)
    tokens = sample_tokens(
        logits, torch.tensor([1.0, 1.0, 0.0]), torch.tensor([2, 0, 0]), torch.tensor([1.0, 0.5, 1.0]), g
    )
    assert set(tokens[:, 0].tolist()) == {1, 2}  # top-2 only
    assert set(tokens[:, 1].tolist()) == {0}  # nucleus 0.5 keeps the dominant token
    assert set(tokens[:, 2].tolist()) == {3}  # temperature 0 = greedy
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    one = torch.ones(3)
    a = sample_tokens(logits, one, torch.zeros(3, dtype=torch.long), one, g1)
    b = sample_tokens(logits, one, torch.zeros(3, dtype=torch.long), one, g2)
    assert torch.equal(a, b)


def test_frame_stacking_round_trip():
    codes = torch.arange(2 * 3 * 5).view(2, 3, 5)
    stacked = stack_frames(codes, 2, pad=-7)
    assert stacked.shape == (2, 6, 3)
    assert torch.equal(stacked[0, :3, 1], codes[0, :, 2]) and torch.equal(stacked[0, 3:, 1], codes[0, :, 3])
    assert torch.equal(unstack_frames(stacked, 2)[:, :, :5], codes)
    assert (unstack_frames(stacked, 2)[:, :, 5] == -7).all()


def overfit_batch(cfg: LMConfig) -> tuple[LMBatch, list[list[int]], list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    phonemes = [torch.randint(3, cfg.phoneme_vocab_size, (n,), generator=g).tolist() for n in (9, 6)]
    targets = [torch.randint(0, cfg.codebook_size, (cfg.num_codebooks, f), generator=g) for f in (24, 17)]
    prompts = [torch.randint(0, cfg.codebook_size, (cfg.num_codebooks, p), generator=g) for p in (8, 10)]
    codes = torch.zeros(2, cfg.num_codebooks, 24, dtype=torch.long)
    codes[0], codes[1, :, :17] = targets[0], targets[1]
    phon = torch.zeros(2, 9, dtype=torch.long)
    phon[0], phon[1, :6] = torch.tensor(phonemes[0]), torch.tensor(phonemes[1])
    prompt = torch.zeros(2, cfg.num_codebooks, 10, dtype=torch.long)
    prompt[0, :, :8], prompt[1] = prompts[0], prompts[1]
    batch = LMBatch(
        phon,
        torch.tensor([9, 6]),
        prompt,
        torch.tensor([8, 10]),
        codes,
        torch.tensor([24, 17]),
        torch.tensor([False, False]),
    )
    return batch, phonemes, prompts, targets


@pytest.mark.parametrize("variant", [{}, {"frames_per_step": 2}], ids=["parallel", "stacked"])
def test_tiny_lm_overfits_two_utterances_and_regenerates_them_greedily(variant):
    torch.manual_seed(0)
    cfg = tiny_config(codebook_size=32, d_model=64, max_seq_len=96, **variant)
    model = KoelLM(cfg)
    batch, phonemes, prompts, targets = overfit_batch(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        out = model(batch, prior_weight=max(0.0, 1 - step / 100))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.accuracy > 0.99, f"did not overfit: ce {out.ce_loss:.3f}, accuracy {out.accuracy:.3f}"
    model.eval()
    for b in range(2):
        gen = model.generate_output(phonemes[b], prompts[b], cfg_scale=1.0, temperature=0.0)
        codes = gen.codes[0]
        assert gen.stop_reasons == ["eos"], gen.stop_reasons
        frames = min(codes.shape[1], targets[b].shape[1])
        equal = (codes[:, :frames] == targets[b][:, :frames]).sum().item()
        assert equal / targets[b].numel() >= 0.95 and codes.shape[1] == targets[b].shape[1]
        assert gen.alignment[0, -1] >= len(phonemes[b]), "the tracked alignment should reach the last phoneme"
