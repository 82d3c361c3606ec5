"""KoelLM: KV-cache decoding == full forward, guidance, sampling, overfitting, stream == generate, checkpoints,
training resume == uninterrupted, input errors. Tiny models, CPU, seconds each."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.config import load_config
from text.vocab import PhonemeVocab
from tts_lm import AlignmentConfig, GenerationError, KoelLM, LMBatch, LMConfig
from tts_lm.dataset import PromptedUtterances, read_tokens
from tts_lm.generate import cfg_combine, ranked_probs, sample_tokens, stream_frames
from tts_lm.sequence import stack_frames, unstack_frames
from tts_lm.train import TrainConfig, main, train

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
    [
        {},
        {"frames_per_step": 2},
        {"local_transformer_layers": 1, "local_transformer_dim": 16},
        {"num_layers": 3},
        {"text_encoder_layers": 2},
        {"code_levels": [4, 4]},
    ],
    ids=["parallel", "stacked", "local", "alignment-off-layer", "text-encoder", "code-levels"],
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


@pytest.mark.parametrize(
    "variant", [{}, {"num_kv_heads": 2, "alignment": AlignmentConfig(layers=[])}], ids=["mha", "gqa"]
)
def test_fused_backbone_step_equals_transformers_layers(variant, monkeypatch):
    """Generation steps through `backbone_step` (fused projections, no transformers layer calls) give the logits,
    alignment tracking and codes of the same steps through `run_backbone`: rows of two prompt lengths (left
    padding), guidance rows, the alignment heads with the inference prior."""
    import tts_lm.generate

    torch.manual_seed(0)
    model = KoelLM(tiny_config(**variant)).eval()
    options = dict(cfg_scale=2.5, temperature=0.8, top_k=0, seed=1, max_frames=9, min_frames=9, monotonic_prior=True)
    codes, lengths, logits, steps = step_logits(model, prompts_for(model.config), **options)
    assert model.step_weights.entry is not None  # the fused path ran
    monkeypatch.setattr(tts_lm.generate, "backbone_step", lambda lm, *args: lm.run_backbone(*args))
    plain_codes, plain_lengths, plain_logits, plain_steps = step_logits(model, prompts_for(model.config), **options)
    torch.testing.assert_close(logits, plain_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(codes, plain_codes) and torch.equal(lengths, plain_lengths)
    assert all(torch.equal(a.text_position, b.text_position) for a, b in zip(steps, plain_steps, strict=True))


@pytest.mark.parametrize(
    "variant, options",
    [
        ({}, dict(cfg_scale=2.5, monotonic_prior=True)),
        ({}, dict(cfg_scale=1.0, rows=1)),
        ({"num_kv_heads": 2, "alignment": AlignmentConfig(layers=[])}, dict(cfg_scale=2.5)),
        ({"num_layers": 3, "frames_per_step": 2}, dict(cfg_scale=2.5)),
    ],
    ids=["mha-prior", "one-row", "gqa", "stacked"],
)
def test_onnx_backbone_step_equals_backbone_step(variant, options):
    """`step_backend="onnxruntime"` (tts_lm/onnx_step.py, the cache's buffers read in place, the new key attended
    beside them) gives the logits, codes and alignment tracking of `backbone_step`: guidance rows, one row, left
    padding, GQA, the alignment heads with and without the inference prior, other shapes than the traced ones."""
    from common.onnx_runtime import onnx_runtime_available

    if not onnx_runtime_available():
        pytest.skip("onnx / onnxruntime not installed")
    torch.manual_seed(0)
    model = KoelLM(tiny_config(**variant)).eval()
    rows = options.pop("rows", 2)
    phonemes, prompts = PHONEMES[:rows], prompts_for(model.config)[:rows]
    options |= dict(temperature=0.8, top_k=0, seed=1, max_frames=9, min_frames=9)
    runs = {}
    for backend in ("torch", "onnxruntime"):
        steps = list(stream_frames(model, phonemes, prompts, step_backend=backend, **options))
        runs[backend] = steps
    plain, graph = runs["torch"], runs["onnxruntime"]
    assert model.onnx_session.entry is not None and len(graph) == len(plain) == 9
    torch.testing.assert_close(torch.stack([s.logits for s in graph]), torch.stack([s.logits for s in plain]))
    assert all(torch.equal(a.frame, b.frame) for a, b in zip(graph, plain, strict=True))
    assert all(torch.equal(a.text_position, b.text_position) for a, b in zip(graph, plain, strict=True))
    with pytest.raises(GenerationError, match="step_backend 'cuda'"):
        next(stream_frames(model, phonemes, prompts, step_backend="cuda"))
    copied = copy.deepcopy(model)  # an exported session is not copied: the copy makes its own when it needs one
    assert copied.onnx_session.entry is None and model.onnx_session.entry is not None


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


def test_top_k_without_a_full_sort_gives_the_full_sort_distribution():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 50) * 3
    temperature, top_p = torch.tensor([0.6, 1.0, 0.0, 1.3]), torch.tensor([1.0, 0.8, 1.0, 0.3])
    top_k = torch.tensor([5, 12, 3, 7])

    def dense(max_k: int) -> torch.Tensor:  # probabilities scattered back to [B, C, V]
        probs, ids = ranked_probs(logits, temperature, top_k, top_p, max_k)
        assert probs.shape[-1] == (max_k or 50)
        return torch.zeros_like(logits).scatter(-1, ids, probs)

    torch.testing.assert_close(dense(12), dense(0), atol=1e-6, rtol=0)  # topk(12) == full sort (max_k 0)
    assert ((dense(12) > 0).sum(-1) <= top_k).all()


def test_wide_head_linear_in_inference_equals_nn_linear():
    """The parallel head's inference layout (x @ W^T, W^T kept contiguous) gives nn.Linear's logits, follows an
    in-place weight update (a training step), and leaves autograd to nn.Linear."""
    from tts_lm.local_transformer import WideLinear

    torch.manual_seed(0)
    layer = WideLinear(16, 300)
    x = torch.randn(2, 3, 16)
    for _ in range(2):
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        with torch.no_grad():
            got = layer(x)
        assert got.shape == (2, 3, 300) and layer.layout.entry is not None
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        with torch.no_grad():
            layer.weight.mul_(-2.0)  # in place: the kept layout must be remade
    y = layer(x)
    assert y.requires_grad and torch.equal(y, torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoints unchanged


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


@pytest.mark.parametrize(
    "variant",
    [{}, {"frames_per_step": 2}, {"text_encoder_layers": 1}, {"code_levels": [4, 8]}],
    ids=["parallel", "stacked", "text-encoder", "code-levels"],
)
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
        # the alignment guard: with any EOS probability counting as "likely", generation stops as soon as the
        # tracked alignment reaches the last phoneme, which must be near (not before) the end of the utterance
        guarded = model.generate_output(phonemes[b], prompts[b], cfg_scale=1.0, temperature=0.0, eos_threshold=0.0)
        assert guarded.stop_reasons == ["alignment"]
        assert targets[b].shape[1] // 2 < guarded.lengths[0] < targets[b].shape[1]


# ---- generation API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant", [{}, {"text_encoder_layers": 1}, {"code_levels": [4, 4]}], ids=["plain", "text-encoder", "code-levels"]
)
def test_stream_equals_generate_for_the_same_seed_and_batches_match_single_rows(variant):
    torch.manual_seed(0)
    model = KoelLM(tiny_config(cfg_dropout=0.1, **variant)).eval()
    prompts = prompts_for(model.config)
    opts = dict(cfg_scale=2.5, temperature=0.8, top_k=8, max_frames=12)
    codes = model.generate(PHONEMES, prompts, seed=11, **opts)
    streamed = list(model.stream(PHONEMES, prompts, seed=11, **opts))
    assert all(f.shape == (2, 2, 1) for f in streamed)
    assert torch.equal(torch.cat(streamed, dim=2), codes)
    assert torch.equal(model.generate(PHONEMES, prompts, seed=11, **opts), codes), "fixed seed must reproduce"
    assert not torch.equal(model.generate(PHONEMES, prompts, seed=12, **opts), codes)

    greedy = dict(cfg_scale=2.5, temperature=0.0, max_frames=10, min_frames=10)
    together = model.generate(PHONEMES, prompts, **greedy)
    for b in range(2):  # left padding + per-row positions: a row generates what it generates alone
        alone = model.generate(PHONEMES[b], prompts[b], **greedy)
        assert torch.equal(together[b : b + 1], alone)


def test_generation_input_errors_are_clear():
    model = KoelLM(tiny_config()).eval()
    prompt = prompts_for(model.config)[1]
    with pytest.raises(GenerationError, match="phoneme input 0 is empty"):
        model.generate([], prompt)
    with pytest.raises(GenerationError, match="phoneme input 1 is empty"):
        model.generate([[5, 6], []], [prompt, prompt])
    with pytest.raises(GenerationError, match="too long for the model"):
        model.generate(list(range(3, 20)) * 6, prompt)
    with pytest.raises(GenerationError, match="max_frames=500 does not fit"):
        model.generate([5, 6], prompt, max_frames=500)
    with pytest.raises(GenerationError, match="prompt 0 is too short: 2 frames"):
        model.generate([5, 6], prompt[:, :2])
    with pytest.raises(GenerationError, match="3 codebooks; this LM was trained on 2"):
        model.generate([5, 6], torch.zeros(3, 8, dtype=torch.long))
    with pytest.raises(GenerationError, match="ids outside"):
        model.generate([1, 5], prompt)
    with pytest.raises(GenerationError, match="too short"):
        next(model.stream([5, 6], prompt[:, :1]))


def test_blanked_audio_inputs_hide_the_audio_and_keep_the_targets():
    torch.manual_seed(0)
    model = KoelLM(tiny_config(audio_input_dropout=0.9999)).eval()
    prompts = prompts_for(model.config)
    g = torch.Generator().manual_seed(5)
    codes = [torch.randint(0, model.config.codebook_size, (2, 2, 7), generator=g) for _ in range(2)]
    batches = [batch_from(model, c, torch.tensor([7, 5]), PHONEMES, prompts) for c in codes]

    def run(batch, blank, seed=1):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(batch, return_logits=True, blank_inputs=blank)

    blanked = [run(b, True) for b in batches]
    # every input after audio BOS is blanked: what the model sees no longer depends on the audio ...
    torch.testing.assert_close(blanked[0].hidden, blanked[1].hidden, rtol=0, atol=0)
    # ... while the targets still do, and without blanking the audio is seen
    assert blanked[0].ce_loss != blanked[1].ce_loss and blanked[0].num_tokens == run(batches[0], False).num_tokens
    assert not torch.equal(run(batches[0], False).hidden, run(batches[1], False).hidden)
    # validation and preference alignment call forward without blank_inputs: deterministic, as before
    torch.testing.assert_close(run(batches[0], False, 1).logits, run(batches[0], False, 2).logits, rtol=0, atol=0)
    plain = KoelLM(tiny_config()).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # audio_input_dropout 0 (the default): blank_inputs changes nothing
        torch.testing.assert_close(plain(batches[0], blank_inputs=True).loss, plain(batches[0]).loss, rtol=0, atol=0)
    with pytest.raises(ValueError, match="audio_input_dropout"):
        tiny_config(audio_input_dropout=1.0)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(frames_per_step=2, local_transformer_layers=1, local_transformer_dim=16, text_encoder_layers=1)
    cfg.codec.codec_dir, cfg.codec.codec_hash, cfg.codec.frame_rate = "runs/codec/x", "abc123", 21.5
    model = KoelLM(cfg).eval()
    model.save_pretrained(tmp_path / "lm")
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "lm" / "config.json").read_text())
    assert saved["codec"] == {"codec_dir": "runs/codec/x", "codec_hash": "abc123", "sample_rate": 22050,
                              "frame_rate": 21.5, "samples_per_frame": 1764}  # fmt: skip
    loaded = KoelLM.from_pretrained(tmp_path / "lm")
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    prompts = prompts_for(cfg)
    opts = dict(cfg_scale=1.0, temperature=0.9, seed=3, max_frames=8)
    assert torch.equal(model.generate(PHONEMES, prompts, **opts), loaded.generate(PHONEMES, prompts, **opts))
    with pytest.raises(FileNotFoundError, match="not a KoelLM checkpoint"):
        KoelLM.from_pretrained(tmp_path / "nothing")


# ---- token set, training, resume -------------------------------------------------------------------------
Utterance = tuple[str, str, str, list[int], list[list[int]]]  # speaker, split, text, phoneme ids, codes [K][F]


def random_utterances(num_codebooks: int, codebook_size: int) -> list[Utterance]:
    """2 train speakers x 3 utterances, 1 validation speaker x 2, random codes."""
    vocab = PhonemeVocab.default()
    g = torch.Generator().manual_seed(0)
    out = []
    for spk, split, count in (("s0", "train", 3), ("s1", "train", 3), ("v0", "validation", 2)):
        for k in range(count):
            frames = int(torch.randint(14, 30, (1,), generator=g))
            codes = torch.randint(0, codebook_size, (num_codebooks, frames), generator=g).tolist()
            out.append((spk, split, "hello world", vocab.encode("həlˈoʊ wˈɜːld"[: 6 + k]), codes))
    return out


def make_token_set(
    path: Path,
    num_codebooks: int = 2,
    codebook_size: int = 32,
    frame_rate: float = 12.5,
    codec_hash: str = "feedbeef",
    utterances: list[Utterance] | None = None,
) -> Path:
    """A tiny token set per CONTRACTS.md: `utterances` or `random_utterances`; ids are speaker_k (k counted per
    speaker); each validation utterance is prompted by another one of its speaker."""
    vocab = PhonemeVocab.default()
    rows = {k: [] for k in ("id", "speaker", "text", "phoneme_ids", "codes", "num_frames", "duration", "split")}
    speakers: dict[str, dict[str, list[str]]] = {"train": {}, "validation": {}}
    counts: dict[str, int] = {}
    for spk, split, text, phonemes, codes in utterances or random_utterances(num_codebooks, codebook_size):
        uid = f"{spk}_{counts.setdefault(spk, 0)}"
        counts[spk] += 1
        rows["id"].append(uid)
        rows["speaker"].append(spk)
        rows["text"].append(text)
        rows["phoneme_ids"].append(list(phonemes))
        rows["codes"].append(codes)
        rows["num_frames"].append(len(codes[0]))
        rows["duration"].append(len(codes[0]) / frame_rate)
        rows["split"].append(split)
        speakers[split].setdefault(spk, []).append(uid)
    prompts = {u: next(v for v in ids if v != u) for ids in speakers["validation"].values() for u in ids}
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "speaker": datasets.Value("string"),
            "text": datasets.Value("string"),
            "phoneme_ids": datasets.List(datasets.Value("int32")),
            "codes": datasets.List(datasets.List(datasets.Value("int16"))),
            "num_frames": datasets.Value("int32"),
            "duration": datasets.Value("float32"),
            "split": datasets.Value("string"),
        }
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    meta = {
        "codec_dir": "runs/codec/test", "codec_hash": codec_hash, "sample_rate": 22050, "frame_rate": frame_rate,
        "samples_per_frame": 1764, "num_codebooks": num_codebooks, "codebook_size": codebook_size,
        "phoneme_vocab": vocab.to_dict(), "speakers": speakers, "prompts": prompts,
    }  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))
    return path


TRAIN_OVERRIDES = [
    "model.d_model=32", "model.num_layers=2", "model.num_heads=4", "model.ffn_dim=64", "model.max_seq_len=160",
    "model.alignment.layers=[1]", "model.alignment.heads=1", "model.alignment.prior_anneal_start=2",
    "model.alignment.prior_anneal_end=4", "model.min_prompt_seconds=0.5", "model.cfg_dropout=0.3",
    "data.max_tokens=300", "data.prompt_min_seconds=0.5", "data.prompt_max_seconds=1.0", "optim.warmup_steps=2",
    "log_every=1", "val_every=3", "val_batches=2", "val_samples=1", "ckpt_every=3", "num_threads=0",
]  # fmt: skip


def test_dataset_prompts_come_from_another_utterance_and_batches_are_deterministic(tmp_path):
    ds, meta = read_tokens(make_token_set(tmp_path / "tokens"))
    cfg = load_config(TrainConfig, REPO / "configs/lm/quick.yaml", TRAIN_OVERRIDES)
    model_cfg = cfg.model.with_tokens(meta)
    sizes = (model_cfg.num_codebooks, model_cfg.codebook_size, model_cfg.phoneme_vocab_size)
    assert sizes == (2, 32, len(PhonemeVocab.default()))
    data = PromptedUtterances(ds, meta, "train", model_cfg, cfg.data, seed=0)
    assert len(data) == 6
    batches = data.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(6)) and batches == data.batches(0)
    assert all(len(b) * max(data.length(i) for i in b) <= cfg.data.max_tokens for b in batches)
    for i in range(6):
        prompt = data.prompt(i, np.random.default_rng(i))
        assert 6 <= prompt.shape[1] <= 13  # 0.5-1.0 s at 12.5 FPS
        assert all(data.speakers[j] == data.speakers[i] and j != i for j in data.prompt_pool[i])
        crops = [data.codes[j][:, s : s + prompt.shape[1]] for j in data.prompt_pool[i] for s in range(30)]
        assert any(c.shape == prompt.shape and (c == prompt).all() for c in crops), "a crop of another utterance"
    val = PromptedUtterances(ds, meta, "validation", model_cfg, cfg.data, train=False)
    assert (val.prompt(0, None) == val.codes[1][:, : val.max_prompt_frames]).all()
    batch = data.collate(batches[0], epoch=0)
    assert torch.equal(batch.codes, data.collate(batches[0], epoch=0).codes)


@pytest.mark.parametrize(
    "extra",
    [[], ["model.audio_input_dropout=0.5"], ["model.text_encoder_layers=1"], ["model.code_levels=[4,8]"]],
    ids=["plain", "blanked-inputs", "text-encoder", "code-levels"],
)
def test_resume_equals_uninterrupted_training(tmp_path, monkeypatch, extra):
    tokens = make_token_set(tmp_path / "tokens")
    base = [*TRAIN_OVERRIDES, f"data.tokens={tokens}", "max_steps=6", *extra]
    straight = train(load_config(TrainConfig, REPO / "configs/lm/quick.yaml", [*base, f"out_dir={tmp_path}/a"]))

    import tts_lm.train as train_module

    calls = {"n": 0}
    real_next = train_module.BatchStream.next

    def dying_next(self):
        calls["n"] += 1
        if calls["n"] == 5:  # killed during step 5: the last checkpoint is step 3's
            raise KeyboardInterrupt
        return real_next(self)

    cfg_b = load_config(TrainConfig, REPO / "configs/lm/quick.yaml", [*base, f"out_dir={tmp_path}/b"])
    monkeypatch.setattr(train_module.BatchStream, "next", dying_next)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b)
    monkeypatch.setattr(train_module.BatchStream, "next", real_next)
    assert json.loads((tmp_path / "b/checkpoint/train_state.json").read_text())["step"] == 3
    assert not (tmp_path / "b/model.safetensors").exists()
    resumed = train(cfg_b)

    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    state = json.loads((resumed / "checkpoint/train_state.json").read_text())
    assert state["step"] == 6 and state["val_loss"] == state["val_loss"]  # validation ran (not NaN)
    lm = KoelLM.from_pretrained(resumed)
    assert lm.config.codec.codec_hash == "feedbeef" and lm.config.codec.frame_rate == 12.5


def test_new_token_set_restarts_only_when_asked(tmp_path):
    old, new = make_token_set(tmp_path / "old"), make_token_set(tmp_path / "new", codec_hash="c0ffee")
    base = [*TRAIN_OVERRIDES, "max_steps=3", "val_samples=0"]
    config = lambda *extra: load_config(TrainConfig, REPO / "configs/lm/quick.yaml", [*base, *extra])  # noqa: E731
    train(config(f"data.tokens={old}", f"out_dir={tmp_path}/lm"))
    with pytest.raises(ValueError, match="another model config or token set.*restart_on_new_tokens"):
        train(config(f"data.tokens={new}", f"out_dir={tmp_path}/lm"))
    restarted = train(config(f"data.tokens={new}", f"out_dir={tmp_path}/lm", "restart_on_new_tokens=true"))
    fresh = train(config(f"data.tokens={new}", f"out_dir={tmp_path}/fresh"))
    a, b = load_file(str(restarted / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the restart is a run from scratch"
    assert KoelLM.from_pretrained(restarted).config.codec.codec_hash == "c0ffee"
    (restarted / "note.txt").write_text("kept")  # same tokens: resumed in place, nothing deleted
    again = train(config(f"data.tokens={new}", f"out_dir={tmp_path}/lm", "restart_on_new_tokens=true", "max_steps=4"))
    assert (again / "note.txt").is_file()
    assert json.loads((again / "checkpoint/train_state.json").read_text())["step"] == 4


def test_train_cli_runs_and_reports_errors(tmp_path, capsys):
    tokens = make_token_set(tmp_path / "tokens", frame_rate=21.5)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_args = [f"data.tokens={tokens}", f"out_dir={tmp_path}/lm", "max_steps=2", "val_samples=0", "num_threads=1"]
    args = [sys.executable, "-m", "tts_lm.train", "configs/lm/quick.yaml", *TRAIN_OVERRIDES, *run_args]
    run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lm = KoelLM.from_pretrained(tmp_path / "lm")
    assert lm.config.codec.frame_rate == 21.5
    assert (tmp_path / "lm/train_config.yaml").is_file() and (tmp_path / "lm/tb").is_dir()

    assert main(["configs/lm/quick.yaml", f"data.tokens={tmp_path}/missing", f"out_dir={tmp_path}/x"]) == 2
    assert "meta.json not found" in capsys.readouterr().err
    assert main(["configs/lm/quick.yaml", "model.d_modle=3"]) == 2
    assert "d_modle" in capsys.readouterr().err


def test_monotonic_prior_keeps_the_tracked_alignment_from_jumping():
    torch.manual_seed(0)
    model = KoelLM(tiny_config(alignment=AlignmentConfig(layers=[0, 1], heads=2))).eval()
    with torch.no_grad():  # sharpen the alignment heads so their untrained argmax jumps around
        for layer in model.backbone.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
    phonemes = list(range(3, 23))
    prompt = prompts_for(model.config)[1]
    opts = dict(cfg_scale=1.0, temperature=1.0, seed=0, max_frames=30, min_frames=30, max_text_jump=100)
    start = torch.zeros(1, dtype=torch.long)  # tracking starts at the text BOS
    free = torch.cat([start, model.generate_output(phonemes, prompt, monotonic_prior=False, **opts).alignment[0]])
    held = torch.cat([start, model.generate_output(phonemes, prompt, monotonic_prior=True, **opts).alignment[0]])
    assert (free.diff() > 3).any(), f"the test needs a jumpy free alignment: {free.tolist()}"
    assert (held.diff() <= 3).all() and (held.diff() >= 0).all(), held.tolist()
    assert held[-1] > held[1], "with the window the alignment still moves along the text"


def test_validation_measures_how_much_the_model_uses_the_text(tmp_path):
    from accelerate import Accelerator

    from tts_lm.train import validate, with_other_text

    ds, meta = read_tokens(make_token_set(tmp_path / "tokens"))
    cfg = load_config(TrainConfig, REPO / "configs/lm/quick.yaml", TRAIN_OVERRIDES)
    model_cfg = cfg.model.with_tokens(meta)
    torch.manual_seed(0)
    model = KoelLM(model_cfg)
    rows = PromptedUtterances(ds, meta, "train", model_cfg, cfg.data, seed=0)  # 6 rows, 3 different texts
    batch = rows.collate([0, 1, 2])
    other = with_other_text(batch)  # row i gets row i-1's text; prompts and audio stay
    assert torch.equal(other.phoneme_ids[1], batch.phoneme_ids[0]) and torch.equal(other.codes, batch.codes)
    assert other.phoneme_lens.tolist() == [batch.phoneme_lens[2], batch.phoneme_lens[0], batch.phoneme_lens[1]]

    accelerator = Accelerator(cpu=True)
    assert all(len(b) > 1 for b in rows.batches(0))
    assert validate(accelerator, model, rows, cfg, weight=0.0)["text_gain"] != 0.0
    rows.phonemes = [rows.phonemes[0]] * len(rows.phonemes)  # one text for every row: nothing to tell apart
    assert validate(accelerator, model, rows, cfg, weight=0.0)["text_gain"] == 0.0
