"""The LM learns to read its text: trained by `tts_lm.train` on a synthetic language, it speaks texts it never saw.

The language: each of 16 phonemes lasts 1-3 frames and has its own codes in each frame; a speaker shifts every
code by a fixed amount (so the prompt is needed too). An LM that reads the text says an unseen phoneme sequence
frame for frame; one that continues audio from audio (what issue 19 found on real speech) cannot, because nothing
in the audio before a phoneme tells which phoneme comes next. Seconds on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from tests.test_lm import make_token_set
from tts_lm import KoelLM
from tts_lm.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
NUM_PHONEMES, CODEBOOKS, CODES, SPEAKERS = 16, 2, 32, 4
PHONEME_IDS = np.arange(40, 40 + NUM_PHONEMES)  # any 16 ids of the default vocabulary

_lang = np.random.default_rng(0)
DURATION = 1 + _lang.integers(0, 3, NUM_PHONEMES)  # frames per phoneme
SOUND = _lang.integers(0, CODES, (NUM_PHONEMES, CODEBOOKS, 3))  # codes of each phoneme's frames


def speak(phonemes: np.ndarray, speaker: int) -> np.ndarray:
    """Phoneme indices -> codes int [K, F] in the synthetic language."""
    frames = [(SOUND[p, :, j] + 7 * speaker) % CODES for p in phonemes for j in range(DURATION[p])]
    return np.stack(frames, axis=1)


def texts(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rng.integers(0, NUM_PHONEMES, rng.integers(4, 14)) for _ in range(count)]


def frame_error_rate(generated: np.ndarray, target: np.ndarray) -> float:
    """Edit distance between the two frame sequences (a frame = its K codes) / the target's frames."""
    a, b = [tuple(f) for f in generated.T], [tuple(f) for f in target.T]
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, row = row, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return row[-1] / len(b)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[KoelLM, dict[int, np.ndarray]]:
    """An LM trained for 500 steps on 4 speakers x 500 utterances; and a prompt per speaker (as long as in training)."""
    tmp = tmp_path_factory.mktemp("reads_text")
    rng = np.random.default_rng(1)
    utterances = [
        (f"s{s}", "train", "", PHONEME_IDS[t].tolist(), speak(t, s).tolist())
        for s in range(SPEAKERS)
        for t in texts(rng, 500)
    ]
    utterances += [("s0", "validation", "", PHONEME_IDS[t].tolist(), speak(t, 0).tolist()) for t in texts(rng, 2)]
    tokens = make_token_set(tmp / "tokens", CODEBOOKS, CODES, utterances=utterances)
    overrides = [
        f"data.tokens={tokens}", f"out_dir={tmp}/lm", "model.d_model=64", "model.num_layers=2", "model.num_heads=4",
        "model.ffn_dim=128", "model.max_seq_len=128", "model.alignment.layers=[1]", "model.alignment.heads=2",
        "model.alignment.prior_anneal_start=150", "model.alignment.prior_anneal_end=300", "model.cfg_dropout=0.0",
        "model.min_prompt_seconds=0.4", "data.prompt_min_seconds=0.4", "data.prompt_max_seconds=0.8",
        "data.max_tokens=1200", "optim.lr=2e-3", "optim.warmup_steps=30", "max_steps=500", "log_every=100",
        "val_every=1000", "ckpt_every=1000", "num_threads=1",
    ]  # fmt: skip
    train(load_config(TrainConfig, REPO / "configs/lm/quick.yaml", overrides))
    prompts = {s: speak(texts(rng, 1)[0], s)[:, :8] for s in range(SPEAKERS)}  # 0.64 s
    return KoelLM.from_pretrained(tmp / "lm").eval(), prompts


def say(model: KoelLM, phonemes: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    out = model.generate_output(
        PHONEME_IDS[phonemes].tolist(), torch.from_numpy(prompt), cfg_scale=1.0, temperature=0.0, max_frames=60
    )
    return out.codes[0, :, : int(out.lengths[0])].numpy()


def test_lm_speaks_unseen_texts_frame_for_frame_and_follows_the_text_it_is_given(trained):
    model, prompts = trained
    rng = np.random.default_rng(2)
    unseen = texts(rng, 12)
    own, swapped = [], []
    for k, text in enumerate(unseen):
        speaker = k % SPEAKERS
        target = speak(text, speaker)
        own.append(frame_error_rate(say(model, text, prompts[speaker]), target))
        other = unseen[(k + 1) % len(unseen)]  # another text: the LM must say that one instead
        swapped.append(frame_error_rate(say(model, other, prompts[speaker]), target))
    assert np.median(own) < 0.25, f"unseen texts not spoken: frame error rates {np.round(own, 2)}"
    assert np.median(swapped) > 0.6, f"the LM says the same whatever its text: {np.round(swapped, 2)}"
