"""codec.metrics on real synthesized speech: perfect scores for identical signals,
monotonically worse scores for more noise, SI-SDR scale invariance, code usage on known distributions."""

import math

import numpy as np
import pytest
import torch

from codec.metrics import (
    MetricError,
    bitrate,
    code_usage,
    mel_distance,
    pesq_wb,
    si_sdr,
    stoi,
)
from tests.speech import SENTENCE, synthesize


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    return synthesize(SENTENCE, tmp_path_factory.mktemp("speech"), engine="espeak-ng", voice="en-us")  # 22,050 Hz


def add_noise(wav: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(wav.size)
    noise *= np.sqrt(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (wav + noise).astype(np.float32)


# --- identical signals ------------------------------------------------------------------------------------------


def test_identical_signals_score_perfectly(speech):
    wav, sr = speech
    assert pesq_wb(wav, wav, sr) == pytest.approx(4.644, abs=0.01)
    assert stoi(wav, wav, sr) == pytest.approx(1.0, abs=1e-6)
    assert stoi(wav, wav, sr, extended=True) == pytest.approx(1.0, abs=1e-6)
    assert mel_distance(wav, wav, sr) == 0.0
    assert si_sdr(wav, wav) > 100


def test_more_noise_is_monotonically_worse(speech):
    wav, sr = speech
    snrs = [40, 25, 15, 5]
    noisy = [add_noise(wav, snr) for snr in snrs]
    pesqs = [pesq_wb(wav, d, sr) for d in noisy]
    stois = [stoi(wav, d, sr) for d in noisy]
    estois = [stoi(wav, d, sr, extended=True) for d in noisy]
    mels = [mel_distance(wav, d, sr) for d in noisy]
    sdrs = [si_sdr(wav, d) for d in noisy]
    assert np.all(np.diff(pesqs) < 0), pesqs
    assert np.all(np.diff(stois) < 0), stois
    assert np.all(np.diff(estois) < 0), estois
    assert np.all(np.diff(mels) > 0), mels
    # white noise independent of the signal: SI-SDR is the SNR
    np.testing.assert_allclose(sdrs, snrs, atol=0.3)


def test_torch_and_numpy_inputs_agree(speech):
    wav, sr = speech
    deg = add_noise(wav, 20)
    assert mel_distance(torch.from_numpy(wav), torch.from_numpy(deg)[None], sr) == pytest.approx(
        mel_distance(wav, deg, sr)
    )


# --- SI-SDR -----------------------------------------------------------------------------------------------------


def test_si_sdr_is_scale_invariant(speech):
    wav, _ = speech
    deg = add_noise(wav, 10)
    base = si_sdr(wav, deg)
    for gain in (0.01, 0.5, 3.0, -2.0):
        assert si_sdr(wav, gain * deg) == pytest.approx(base, abs=1e-6)
    assert si_sdr(wav, deg + 0.1) == pytest.approx(base, abs=1e-6)  # and offset invariant (zero-mean first)
    assert si_sdr(wav, add_noise(wav, 0)) < base


def test_si_sdr_refuses_constant_reference():
    with pytest.raises(MetricError, match="silent"):
        si_sdr(np.ones(1000), np.random.default_rng(0).standard_normal(1000))


# --- lengths and bad input --------------------------------------------------------------------------------------


def test_codec_padding_is_trimmed(speech):
    wav, sr = speech
    deg = add_noise(wav, 20)
    padded = np.concatenate([deg, np.zeros(1764, dtype=np.float32)])  # a codec pads to whole frames
    assert pesq_wb(wav, padded, sr) == pesq_wb(wav, deg, sr)
    assert stoi(wav, padded, sr) == stoi(wav, deg, sr)
    assert mel_distance(wav, padded, sr) == mel_distance(wav, deg, sr)


def test_too_short_or_bad_audio_gives_clear_errors(speech):
    wav, sr = speech
    short = wav[8000 : 8000 + int(0.2 * sr)]
    with pytest.raises(MetricError, match=r"pesq_wb: audio is 0\.200 s .* at least 0\.25 s"):
        pesq_wb(short, short, sr)
    with pytest.raises(MetricError, match=r"stoi: audio is 0\.200 s .* at least 0\.42 s"):
        stoi(short, short, sr)
    bad = wav.copy()
    bad[100] = np.nan
    with pytest.raises(MetricError, match="deg contains NaN"):
        mel_distance(wav, bad, sr)
    with pytest.raises(MetricError, match="mono"):
        si_sdr(np.zeros((2, 100)), np.zeros((2, 100)))


def test_unscorable_pairs_give_nan(speech):
    wav, sr = speech
    assert math.isnan(pesq_wb(wav, np.zeros_like(wav), sr))  # silent reconstruction
    assert math.isnan(pesq_wb(np.zeros_like(wav), wav, sr))  # no speech in the reference
    quiet_tail = np.concatenate([np.zeros(sr, dtype=np.float32), wav[:2000]])  # 0.09 s of speech after silence
    assert math.isnan(stoi(quiet_tail, quiet_tail, sr))


# --- code usage -------------------------------------------------------------------------------------------------


def test_code_usage_on_known_distributions():
    size = 16
    uniform = np.tile(np.arange(size), 4)  # every code 4 times
    constant = np.full(64, 3)
    skewed = np.array([0, 0, 1, 2] * 16)  # p = 1/2, 1/4, 1/4 -> H = 1.5 bits
    usage = code_usage(np.stack([uniform, constant, skewed]), size)  # [K=3, F=64]
    np.testing.assert_allclose(usage.usage, [1.0, 1 / size, 3 / size])
    np.testing.assert_allclose(usage.perplexity, [size, 1.0, 2**1.5])
    np.testing.assert_allclose(usage.normalized_entropy, [1.0, 0.0, 1.5 / 4])
    assert usage.num_frames == 64 and usage.counts.sum() == 3 * 64


def test_code_usage_batches_and_ragged_lists_agree():
    codes = torch.randint(0, 32, (3, 8, 20))  # [B, K, F]
    batched = code_usage(codes, 32)
    ragged = code_usage([codes[0], codes[1, :, :7], codes[1, :, 7:], codes[2]], 32)
    np.testing.assert_array_equal(batched.counts, ragged.counts)
    assert batched.num_frames == 60 and batched.usage.shape == (8,)
    with pytest.raises(MetricError, match="outside the codebook"):
        code_usage(codes, 16)


def test_bitrate_matches_the_paper():
    assert bitrate(8, 2016, 22050 / 1764) == pytest.approx(1100, rel=0.01)  # "1.1 kbps"
    assert bitrate(8, 2016, 22050 / 1024) == pytest.approx(1890, rel=0.01)  # 21.5 FPS baseline "1.89 kbps"
    assert bitrate(4, 4032, 22050 / 1764) == pytest.approx(600, rel=0.01)  # "0.6 kbps"
