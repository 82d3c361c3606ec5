"""Preference alignment: DPO / RPO values and gradients, Pareto pair choice, challenging texts, scoring real speech
with a real ASR and speaker model, the frozen reference, training resume == uninterrupted, pairs resume ==
uninterrupted, and pairs -> train -> evaluate end to end with tiny models. CPU, seconds each."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alignment.__main__ import main
from alignment.challenge_texts import KINDS, challenge_texts
from alignment.config import AlignConfig, LossConfig, ScoringConfig
from alignment.losses import dpo_loss, rpo_loss, sequence_logprobs
from alignment.pairs import FEATURES, PAIRS_DIR, load_pairs, make_pairs
from alignment.ranking import pareto_ranks, select_pair
from alignment.scoring import PromptedText, Scorer, item_seed, sample_and_score, weights_hash
from common.config import load_config
from tests.speech import synthesize
from tests.test_lm import make_token_set
from tests.tiny_tts import save_tiny_models, tiny_models
from tts_lm import KoelLM

pytest.importorskip("pocketsphinx")


# ---- losses ------------------------------------------------------------------------------------------------
def test_dpo_loss_matches_a_hand_computed_example():
    # row 0: log pi/ref = +1 (chosen), -1 (rejected); beta 0.5 -> logit 0.5 * 2 = 1
    # row 1: log pi/ref = 0 (chosen), +1 (rejected)           -> logit 0.5 * -1 = -0.5
    pc, pr = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2  # mean of -log sigmoid(logit)
    assert float(out.loss) == pytest.approx(expected, abs=1e-6)  # 0.643672
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])
    assert out.reward_margins.tolist() == pytest.approx([1.0, -0.5]) and float(out.reward_accuracy) == 0.5
    assert float(out.nll_loss) == 0.0

    smoothed = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1)
    row0 = 0.9 * math.log(1 + math.exp(-1.0)) + 0.1 * math.log(1 + math.exp(1.0))
    row1 = 0.9 * math.log(1 + math.exp(0.5)) + 0.1 * math.log(1 + math.exp(-0.5))
    assert float(smoothed.loss) == pytest.approx((row0 + row1) / 2, abs=1e-6)

    # RPO adds alpha * mean(-log pi(chosen) / tokens): (10 / 5 + 5 / 2) / 2 = 2.25
    rpo = rpo_loss(pc, pr, rc, rr, torch.tensor([5, 2]), beta=0.5, alpha=0.1)
    assert float(rpo.nll_loss) == pytest.approx(2.25) and float(rpo.loss) == pytest.approx(expected + 0.225)
    # the default beta is Koel-TTS's 0.01
    assert float(dpo_loss(pc, pr, rc, rr).loss) == pytest.approx(
        (math.log(1 + math.exp(-0.02)) + math.log(1 + math.exp(0.01))) / 2, abs=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(pc, pr[:1], rc, rr)


def test_sequence_logprobs_sum_the_target_tokens_and_skip_padding():
    # one row, 3 steps of 1 codebook over V = 2 with p = (1/4, 3/4) each; targets 1, 0, pad
    logits = torch.log(torch.tensor([0.25, 0.75])).expand(1, 3, 1, 2)
    logp, tokens = sequence_logprobs(logits, torch.tensor([[[1], [0], [-1]]]), ignore_index=-1)
    assert logp.tolist() == pytest.approx([math.log(0.75) + math.log(0.25)]) and tokens.tolist() == [2]


def test_dpo_gradient_pushes_chosen_up_relative_to_rejected():
    pc, pr = torch.tensor([-3.0, -7.0], requires_grad=True), torch.tensor([-4.0, -2.0], requires_grad=True)
    ref = torch.tensor([-5.0, -5.0])
    for loss in (dpo_loss(pc, pr, ref, ref).loss, rpo_loss(pc, pr, ref, ref, torch.tensor([3, 3])).loss):
        gc, gr = torch.autograd.grad(loss, [pc, pr])
        assert (gc < 0).all() and (gr > 0).all()  # descent raises log pi(chosen), lowers log pi(rejected)

    # on a real (tiny) LM: a few optimizer steps on one pair raise the chosen sample's log-probability relative to
    # the rejected one, measured against the frozen reference
    from alignment.train import batch_logprobs, preference_loss

    lm, _ = tiny_models()
    reference = copy.deepcopy(lm).eval().requires_grad_(False)
    batch = _pair_batch(lm.config)
    opt = torch.optim.Adam(lm.parameters(), lr=1e-3)
    lm.train()
    for _ in range(5):
        out = preference_loss(lm, reference, batch, LossConfig(beta=0.1))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        logp, _ = batch_logprobs(lm, lm, batch)
        ref, _ = batch_logprobs(reference, reference, batch)
    assert float((logp[0] - ref[0]) - (logp[1] - ref[1])) > 0.5
    assert float(preference_loss(lm, reference, batch, LossConfig(beta=0.1)).reward_accuracy) == 1.0


def _pair_batch(cfg):
    """One pair (chosen 12 frames, rejected 9 frames) with a shared 14-frame prompt, collated like PairData."""
    from tts_lm.model import LMBatch

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, cfg.codebook_size, (2, cfg.num_codebooks, 12), generator=g)
    prompt = torch.randint(0, cfg.codebook_size, (1, cfg.num_codebooks, 14), generator=g).expand(2, -1, -1)
    return LMBatch(
        phoneme_ids=torch.tensor([[5, 6, 7, 8]] * 2), phoneme_lens=torch.tensor([4, 4]), prompt_codes=prompt,
        prompt_lens=torch.tensor([14, 14]), codes=codes, code_lens=torch.tensor([12, 9]),
        uncond=torch.tensor([False, False]),
    )  # fmt: skip


# ---- pair choice -------------------------------------------------------------------------------------------
def test_pareto_ranks_and_pair_choice():
    # non-dominated sorting: (CER, similarity)
    assert pareto_ranks([0.0, 0.1, 0.3, 0.2], [0.9, 0.8, 0.2, 0.95]) == [0, 1, 2, 0]
    # clear case: the perfect and the worst
    choice = select_pair([0.5, 0.0, 0.2], [0.4, 0.9, 0.6])
    assert (choice.chosen, choice.rejected, choice.reason) == (1, 0, "ok")
    # several at CER 0: the most similar is chosen; CERs within the tolerance count as 0
    assert select_pair([0.0, 0.0, 0.01, 0.4], [0.70, 0.80, 0.95, 0.9], cer_tolerance=0.02).chosen == 2
    assert select_pair([0.0, 0.0, 0.01, 0.4], [0.70, 0.80, 0.95, 0.9], cer_tolerance=0.0).chosen == 1
    # none at 0: the lowest CER wins even with a lower similarity
    assert select_pair([0.3, 0.1, 0.6], [0.9, 0.5, 0.8]).chosen == 1
    # the rejected comes from the last front: D (0.5, 0.2) is dominated by E (0.3, 0.6); F (0.8, 0.9) is not
    choice = select_pair([0.5, 0.3, 0.8, 0.0], [0.2, 0.6, 0.9, 0.9])
    assert choice.ranks == [2, 1, 1, 0] and (choice.chosen, choice.rejected) == (3, 0)
    # equal CERs: similarity decides, if the gap is large enough
    assert select_pair([0.1, 0.1], [0.5, 0.8]).chosen == 1
    assert select_pair([0.1, 0.1], [0.5, 0.52], min_similarity_gap=0.05).reason == "no_preference"
    # no audio (non-finite scores) is the worst
    assert select_pair([float("nan"), 0.4], [float("nan"), 0.3]).rejected == 0
    # nothing to prefer, a bad best, too few
    assert select_pair([0.2, 0.2], [0.7, 0.7]).reason == "no_preference"
    assert select_pair([0.6, 0.9], [0.7, 0.7], max_chosen_cer=0.5).reason == "chosen_cer_too_high"
    assert select_pair([0.0], [0.9]).reason == "too_few_candidates"


def test_challenge_texts_cover_every_kind_reproducibly():
    corpus = ["The extraordinarily comprehensive encyclopaedia sat on the shelf.", "A quiet fox met a zephyr."] * 3
    texts = challenge_texts(corpus, 12, seed=3, max_chars=90)
    assert [t.kind for t in texts] == [KINDS[i % 4] for i in range(12)]
    assert texts == challenge_texts(corpus, 12, seed=3, max_chars=90) != challenge_texts(corpus, 12, seed=4)
    assert len({t.text for t in texts}) == 12 and all(len(t.text) <= 90 for t in texts)
    for t in texts:
        words = t.text.lower().replace(",", "").replace(".", "").split()
        if t.kind == "repetition":
            assert max(words.count(w) for w in words) >= 3, t.text
        if t.kind == "numbers":
            assert any(ch.isdigit() for ch in t.text), t.text
        if t.kind == "long_words":
            assert sum(len(w) >= 10 for w in words) >= 2, t.text
    assert any("zephyr" in t.text or "quiet" in t.text for t in texts if t.kind == "rare_words")


# ---- scoring real speech -----------------------------------------------------------------------------------
def test_scorer_ranks_real_speech_by_asr_and_speaker(tmp_path):
    """Real speech (flite, espeak-ng) through a real ASR (whisper tiny.en when installed, else pocketsphinx) and
    resemblyzer: the right words in the prompt's voice beat wrong words (CER) and another voice (similarity)."""
    from evaluation.asr import resolve_whisper_model

    text = "Please call Stella and ask her to bring these things."
    rate = 22050
    right, sr = synthesize(text, tmp_path, "flite", "rms", rate, name="right")
    wrong, _ = synthesize("The weather was cold and grey all week long.", tmp_path, "flite", "rms", rate, name="wrong")
    other, _ = synthesize(text, tmp_path, "espeak-ng", "en-us", rate, name="other")
    prompt, _ = synthesize("My voice is the one to copy, so listen to it.", tmp_path, "flite", "rms", rate, name="p")
    _, codec = tiny_models()
    assert sr == codec.sample_rate
    asr = ("faster-whisper", "tiny.en") if resolve_whisper_model("tiny.en")[1] else ("pocketsphinx", "")
    scorer = Scorer(codec, ScoringConfig(asr_backend=asr[0], asr_model=asr[1]))
    cer, sim, heard = scorer.score_audio(text, [right, wrong, other, np.zeros(100, np.float32)], scorer.embed(prompt))
    assert cer[0] < 0.2 and cer[1] > 0.6, (cer, heard)  # measured (tiny.en): 0.0 and 0.71
    assert sim[0] > sim[2] + 0.2, sim  # measured: 0.94 (same speaker) vs 0.43 (espeak-ng)
    assert (cer[3], sim[3], heard[3]) == (1.0, -1.0, "")  # too short to score
    choice = select_pair(cer, sim, cer_tolerance=0.35)  # the two right readings tie on CER: similarity decides
    assert choice.chosen == 0 and choice.rejected in (1, 3), (cer, sim)


# ---- the steps on tiny models ------------------------------------------------------------------------------
def align_config(root: Path, out: str = "align", **extra: str) -> AlignConfig:
    overrides = {
        "lm": root / "lm", "codec": root / "codec", "tokens": root / "tokens", "out_dir": root / out,
        "pairs.corpus_items": 3, "pairs.challenge_items": 1, "pairs.num_candidates": 3, "pairs.shard_size": 2,
        "pairs.max_challenge_chars": 40, "pairs.val_fraction": 0.3, "scoring.asr_backend": "pocketsphinx",
        "train.max_steps": 6, "train.batch_size": 2, "train.optim.lr": 2e-3, "train.optim.warmup_steps": 1,
        "train.ckpt_every": 3, "train.val_every": 3, "train.log_every": 1, "eval.split": "validation",
        "eval.max_items": 2, "eval.challenge_items": 0, **extra,
    }  # fmt: skip
    return load_config(AlignConfig, None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Tiny LM + codec (2 codebooks of 16 codes), a token set of their geometry, and finished pairs in root/align."""
    root = tmp_path_factory.mktemp("align")
    save_tiny_models(root)
    make_token_set(root / "tokens", num_codebooks=2, codebook_size=16)
    assert make_pairs(align_config(root)) is not None
    return root


def test_pairs_are_real_samples_with_their_scores_and_resume_to_the_same_dataset(tiny_run):
    ds, meta = load_pairs(tiny_run / "align")
    assert ds.features == FEATURES and len(ds) == meta["counts"]["pairs"] >= 3
    assert meta["counts"]["items"] == 4 and set(meta["counts"]["by_kind"]) <= {"corpus", *KINDS}
    assert meta["lm_hash"] == weights_hash(tiny_run / "lm") and meta["scoring"]["asr_backend"] == "pocketsphinx"
    cfg = align_config(tiny_run)
    lm = KoelLM.from_pretrained(tiny_run / "lm")
    from alignment.scoring import load_models, resolved_scoring

    _, codec = load_models(cfg, "cpu")
    scorer = Scorer(codec, resolved_scoring(cfg.scoring))
    row = ds[0]
    item = PromptedText(row["id"], row["kind"], row["text"], row["phoneme_ids"],
                        np.asarray(row["prompt_codes"], dtype=np.int16), row["speaker"])  # fmt: skip
    # the item's seed regenerates the candidates: the stored codes are the LM's samples, the scores theirs
    again = sample_and_score(lm, scorer, item, cfg.pairs.num_candidates, cfg.pairs.sampling, row["seed"])
    assert row["seed"] == item_seed(row["id"], cfg.pairs.seed)
    assert again.cer == pytest.approx(row["candidate_cer"]) and again.similarity == pytest.approx(
        row["candidate_similarity"], abs=1e-5
    )
    choice = select_pair(again.cer, again.similarity, cfg.pairs.cer_tolerance)
    assert np.array_equal(again.codes[choice.chosen], np.asarray(row["chosen_codes"], dtype=np.int16).reshape(2, -1))
    assert np.array_equal(
        again.codes[choice.rejected], np.asarray(row["rejected_codes"], dtype=np.int16).reshape(2, -1)
    )
    for r in ds:
        assert (r["chosen_cer"], -r["chosen_similarity"]) < (r["rejected_cer"], -r["rejected_similarity"])

    # interrupted after one shard, then resumed: the same dataset as the uninterrupted run
    cfg_b = align_config(tiny_run, out="align_resumed")
    assert make_pairs(cfg_b, max_shards=1) is None
    assert not (tiny_run / "align_resumed" / PAIRS_DIR).exists()
    assert make_pairs(cfg_b) is not None
    resumed, _ = load_pairs(tiny_run / "align_resumed")
    assert resumed.to_dict() == ds.to_dict()


def test_training_resume_equals_uninterrupted_and_the_reference_stays_frozen(tiny_run, monkeypatch):
    import alignment.train as train_module

    lm_before = load_file(str(tiny_run / "lm" / "model.safetensors"))
    references = []
    real_loss = train_module.preference_loss

    def spying_loss(model, reference, batch, cfg):
        references.append(reference)
        return real_loss(model, reference, batch, cfg)

    monkeypatch.setattr(train_module, "preference_loss", spying_loss)
    straight = train_module.train(align_config(tiny_run))
    reference = references[0]
    assert all(r is reference for r in references) and not reference.training
    assert all(not p.requires_grad and p.grad is None for p in reference.parameters())
    for name, tensor in reference.state_dict().items():  # unchanged after every step
        assert torch.equal(tensor, lm_before[name]), name

    # the same run, killed during step 5 (last checkpoint: step 3), then resumed
    shutil_copy_pairs(tiny_run / "align", tiny_run / "align_killed")
    calls = {"n": 0}
    real_next = train_module.BatchStream.next

    def dying_next(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_next(self)

    cfg_b = align_config(tiny_run, out="align_killed")
    monkeypatch.setattr(train_module.BatchStream, "next", dying_next)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg_b)
    monkeypatch.setattr(train_module.BatchStream, "next", real_next)
    assert json.loads((tiny_run / "align_killed/checkpoint/train_state.json").read_text())["step"] == 3
    assert not (tiny_run / "align_killed/model.safetensors").exists()
    resumed = train_module.train(cfg_b)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], lm_before[k]) for k in a), "training changed nothing"
    assert (straight / "phonemes.json").is_file() and (straight / "align_config.yaml").is_file()
    # a checkpoint made from other pairs is refused, not continued
    (tiny_run / "align_killed/checkpoint_source.json").write_text('{"lm_hash": "x", "pairs_plan": "y"}')
    with pytest.raises(ValueError, match="trained on other pairs or from another LM"):
        train_module.train(cfg_b)


def shutil_copy_pairs(src: Path, dst: Path) -> None:
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / PAIRS_DIR, dst / PAIRS_DIR)


def test_train_raises_the_reward_margin_and_evaluate_reports_before_and_after(tiny_run):
    from alignment.evaluate import evaluate
    from alignment.train import PairData, preference_loss, train

    cfg = align_config(tiny_run, out="align_e2e")
    shutil_copy_pairs(tiny_run / "align", tiny_run / "align_e2e")
    out = train(cfg)
    ds, _ = load_pairs(out)
    data = PairData(ds, "train", 16, shuffle=False)
    policy = KoelLM.from_pretrained(out).eval()
    reference = KoelLM.from_pretrained(tiny_run / "lm").eval()
    with torch.no_grad():
        result = preference_loss(policy, reference, data.collate(list(range(len(data)))), cfg.loss)
    assert float(result.reward_margins.mean()) > 0 and float(result.reward_accuracy) >= 0.5

    from tts_lm import Synthesizer

    assert Synthesizer.from_pretrained(lm=out, codec=tiny_run / "codec").lm.config == policy.config  # a drop-in LM
    report = evaluate(cfg)
    assert json.loads((out / "eval/report.json").read_text())["groups"] == report["groups"]
    scores = report["groups"]["heldout"]
    for which in ("before", "after"):
        s = scores[which]
        assert s["items"] == 2 and 0.0 <= s["failure_share"] <= 1.0 and -1.0 <= s["similarity"] <= 1.0
        assert s["cer"] >= 0.0 and sum(s["stop_reasons"].values()) == 2
    assert report["training"]["train_steps"] == 6 and report["training"]["num_candidates"] == 3
    assert "| heldout | 2 | before |" in (out / "eval/report.md").read_text()
    # same seeds, same model: evaluating the unaligned LM as "after" reproduces "before" exactly
    same = evaluate(cfg, after=str(tiny_run / "lm"))
    assert same["utterances"]["before"] == same["utterances"]["after"] == report["utterances"]["before"]


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "pairs" in capsys.readouterr().out
    assert main(["train", "configs/align/quick.yaml", f"lm={tmp_path}/lm", f"out_dir={tmp_path}/x"]) == 2
    assert "no finished preference pairs" in capsys.readouterr().err
    assert main(["pairs", "configs/align/cpu.yaml", "pairs.num_candidtes=3"]) == 2
    assert "num_candidtes" in capsys.readouterr().err
    missing = [f"lm={tmp_path}/lm", "out_dir=x", f"tokens={tmp_path}/none"]
    assert main(["evaluate", "configs/align/quick.yaml", *missing]) == 2
    assert "meta.json not found" in capsys.readouterr().err
