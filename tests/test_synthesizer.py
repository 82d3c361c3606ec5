"""Synthesizer: stream == synthesize == offline codec.decode(lm.generate(...)), chunking, long-form sentences with the
decoder state kept across them, per-request stats (TTFA, RTF), request independence, input errors, the batch CLI.
Tiny random-init models saved to disk and loaded back the way the app loads them; real espeak-ng prompt audio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec import NanoCodec
from tests.tiny_tts import save_tiny_models, speech_prompt, tiny_models
from text import TextError
from tts_lm import Synthesizer
from tts_lm.generate import check_inputs
from tts_lm.prompt import PromptError
from tts_lm.synthesizer import SynthesisError

REPO = Path(__file__).resolve().parents[1]
TEXT = "The birch canoe slid on the smooth planks."
LONG_TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well! Is that so?"
OPTIONS = dict(cfg_scale=2.5, temperature=0.6, top_k=80, max_frames=12)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_tts")
    lm_dir, codec_dir = save_tiny_models(directory)
    wav, sr = speech_prompt(directory)
    return lm_dir, codec_dir, wav, sr, directory


@pytest.fixture(scope="module")
def tts(models) -> Synthesizer:
    lm_dir, codec_dir, *_ = models
    return Synthesizer.from_pretrained(lm=lm_dir, codec=codec_dir)


def offline(tts: Synthesizer, text: str, wav: np.ndarray, sr: int, seed: int, **options) -> tuple[np.ndarray, list]:
    """The reference: every piece generated offline with one generator, pause frames between, decoded in one go."""
    prompt = tts.encode_prompt(wav, sr)
    generator = torch.Generator().manual_seed(seed)
    codes = []
    for i, piece in enumerate(tts.text_pieces(text, prompt)):
        if i:
            codes.append(tts.pause_codes)
        codes.append(tts.lm.generate(piece.ids, prompt, generator=generator, step_backend=tts.backend, **options))
    codes = torch.cat(codes, dim=2)
    return tts.codec.decode(codes)[0].numpy(), codes


def test_stream_equals_synthesize_equals_offline_generate_and_decode(tts, models):
    *_, wav, sr, _ = models
    stream = tts.stream(TEXT, wav, sr, seed=7, chunk_frames=1, **OPTIONS)
    chunks = list(stream)
    streamed = np.concatenate(chunks)
    whole = tts.synthesize(TEXT, wav, sr, seed=7, **OPTIONS)
    reference, codes = offline(tts, TEXT, wav, sr, seed=7, **OPTIONS)
    assert codes.shape[2] > 0 and (codes >= 0).all()
    assert len(chunks) == codes.shape[2]  # chunk_frames=1: one chunk per frame, as soon as it is decoded
    assert all(c.dtype == np.float32 and c.shape == (tts.samples_per_frame,) for c in chunks)
    assert streamed.shape == whole.shape == reference.shape == (codes.shape[2] * tts.samples_per_frame,)
    np.testing.assert_allclose(streamed, reference, atol=1e-5)
    np.testing.assert_array_equal(streamed, whole)
    assert np.abs(streamed).max() > 0


def test_static_decoder_step_gives_the_same_audio_request_after_request(models):
    """The GPU path's decoder step (fixed buffers, replayed as a CUDA graph there) run eagerly on CPU: equal to the
    offline reference, in a second request that reuses the step (reset, not captured again), with a shorter last
    chunk (chunk_frames=2)."""
    lm_dir, codec_dir, wav, sr, _ = models
    tts = Synthesizer.from_pretrained(lm=lm_dir, codec=codec_dir)
    tts.static_decoder_step = True
    reference, _ = offline(tts, TEXT, wav, sr, seed=3, **OPTIONS)
    for _ in range(2):
        streamed = tts.synthesize(TEXT, wav, sr, seed=3, chunk_frames=2, **OPTIONS)
        np.testing.assert_allclose(streamed, reference, atol=1e-5)
    decoder = tts.decoders._idle.get_nowait()
    assert len(decoder._static_steps) >= 1  # kept on the replica for later requests


def test_backends_give_the_same_audio(tts, models):
    """The default on a CPU runs the LM step and the streaming decoder through ONNX Runtime (tts_lm/onnx_step.py,
    codec/onnx_step.py); torch gives the same request's audio to float rounding; the decoder pool's replicas share
    the one exported decoder session."""
    from common.onnx_runtime import onnx_runtime_available

    lm_dir, codec_dir, wav, sr, _ = models
    assert tts.backend == ("onnxruntime" if onnx_runtime_available() else "torch")
    plain = Synthesizer.from_pretrained(lm=lm_dir, codec=codec_dir, backend="torch")
    assert plain.backend == "torch"
    for chunk_frames in (1, 3):
        reference = plain.synthesize(TEXT, wav, sr, seed=5, chunk_frames=chunk_frames, **OPTIONS)
        streamed = tts.synthesize(TEXT, wav, sr, seed=5, chunk_frames=chunk_frames, **OPTIONS)
        np.testing.assert_allclose(streamed, reference, atol=1e-5)
    with pytest.raises(SynthesisError, match="backend 'cuda' is not one of"):
        Synthesizer.from_pretrained(lm=lm_dir, codec=codec_dir, backend="cuda")
    lm, codec = tiny_models()
    with pytest.raises(SynthesisError, match="the codec is torch.float64 on cpu: use backend='torch'"):
        Synthesizer(lm, codec.double(), backend="onnxruntime")
    lm, codec = tiny_models()
    assert Synthesizer(lm.double(), codec).backend == "torch"  # auto: torch where ONNX Runtime does not apply
    if onnx_runtime_available():
        decoder = tts.codec.audio_decoder
        with tts.decoders.lease() as first, tts.decoders.lease() as second:  # two requests at once: two replicas
            assert first is not second and first.onnx_session is second.onnx_session is decoder.onnx_session
        assert decoder.onnx_session.entry is not None and tts.lm.onnx_session.entry is not None  # exported when made


def test_seed_reproducible_and_matters(tts, models):
    *_, wav, sr, _ = models
    a = tts.synthesize(TEXT, wav, sr, seed=1, **OPTIONS)
    b = tts.synthesize(TEXT, wav, sr, seed=1, **OPTIONS)
    c = tts.synthesize(TEXT, wav, sr, seed=2, **OPTIONS)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.allclose(a, c)


@pytest.mark.parametrize("chunk_frames", [2, 5])
def test_chunk_sizes_and_chunking_does_not_change_audio(tts, models, chunk_frames):
    *_, wav, sr, _ = models
    stream = tts.stream(TEXT, wav, sr, seed=3, chunk_frames=chunk_frames, **OPTIONS)
    chunks = list(stream)
    hop = tts.samples_per_frame
    assert all(c.size == chunk_frames * hop for c in chunks[:-1])
    assert 0 < chunks[-1].size <= chunk_frames * hop and chunks[-1].size % hop == 0
    assert stream.stats.chunks == len(chunks) and stream.stats.frames * hop == sum(c.size for c in chunks)
    one_by_one = tts.synthesize(TEXT, wav, sr, seed=3, chunk_frames=1, **OPTIONS)
    np.testing.assert_allclose(np.concatenate(chunks), one_by_one, atol=1e-5)
    with pytest.raises(SynthesisError, match="chunk_frames"):
        tts.stream(TEXT, wav, sr, chunk_frames=0)


def test_growing_chunks_start_with_one_frame_and_do_not_change_audio(tts, models):
    """chunk_frames="grow": single frames first, chunks of at most MAX_GROWN_CHUNK, the same audio."""
    from tts_lm.synthesizer import MAX_GROWN_CHUNK

    *_, wav, sr, _ = models
    options = {**OPTIONS, "max_frames": 20, "min_frames": 20}
    stream = tts.stream(TEXT, wav, sr, seed=3, chunk_frames="grow", **options)
    chunks = list(stream)
    sizes = [c.size // tts.samples_per_frame for c in chunks]
    assert sizes[:2] == [1, 1] and max(sizes) <= MAX_GROWN_CHUNK and sum(sizes) == 20 == stream.stats.frames
    assert max(sizes) > 1  # a tiny model on any machine runs far faster than real time: the chunks grew
    one_by_one = tts.synthesize(TEXT, wav, sr, seed=3, chunk_frames=1, **options)
    np.testing.assert_allclose(np.concatenate(chunks), one_by_one, atol=1e-5)
    for bad in ("fast", 1.5, True):
        with pytest.raises(SynthesisError, match='"grow"'):
            tts.stream(TEXT, wav, sr, chunk_frames=bad)


def test_chunk_plan_grows_while_playback_stays_ahead():
    """The growing schedule from the measured pace: doubles to 8 frames when generation is 4x faster than real time,
    keeps single frames at real time, halves when it falls behind; fixed sizes stay fixed."""
    from tts_lm.synthesizer import ChunkPlan, next_grown_chunk

    frame_s = 0.08

    def schedule(rtf: float, chunks: int) -> list[int]:
        plan, now, sizes = ChunkPlan("grow", frame_s), 0.3, []  # the first chunk after 0.3 s of setup
        for _ in range(chunks):
            sizes.append(plan.due)
            now += 0 if not sizes[:-1] else plan.due * frame_s * rtf
            plan.delivered(sizes[-1], sizes[-1] * frame_s * rtf, now)
        return sizes

    assert schedule(0.25, 7) == [1, 1, 2, 4, 8, 8, 8]
    assert schedule(1.0, 5) == [1, 1, 1, 1, 1]  # real time: no slack to spend on a larger chunk
    assert next_grown_chunk(4, ahead_s=0.1, seconds_per_frame=0.04) == 2  # behind: halve
    assert next_grown_chunk(1, ahead_s=0.0, seconds_per_frame=0.04) == 1
    fixed = ChunkPlan(3, frame_s)
    fixed.delivered(3, 10.0, 10.0)
    assert fixed.due == 3


def test_long_form_splits_sentences_same_voice_continuous_decoder_state(tts, models):
    *_, wav, sr, _ = models
    pieces = tts.text_pieces(LONG_TEXT)
    assert [p.text for p in pieces] == [
        "Glue the sheet to the dark blue background.",
        "It is easy to tell the depth of a well!",
        "Is that so?",
    ]
    stream = tts.stream(LONG_TEXT, wav, sr, seed=11, chunk_frames=3, **OPTIONS)
    streamed = stream.read_all()
    assert stream.stats.pieces == 3 and len(stream.stats.stop_reasons) == 3
    # one continuous code sequence through one decoder state: equal to decoding all codes offline in one call
    reference, codes = offline(tts, LONG_TEXT, wav, sr, seed=11, **OPTIONS)
    assert stream.stats.frames == codes.shape[2]
    np.testing.assert_allclose(streamed, reference, atol=1e-5)
    # restarting the decoder at each sentence (what keeping the state avoids) gives a different signal there
    prompt = tts.encode_prompt(wav, sr)
    first = tts.lm.generate(pieces[0].ids, prompt, generator=torch.Generator().manual_seed(11), **OPTIONS)
    assert 0 < first.shape[2] < codes.shape[2]
    boundary = first.shape[2] * tts.samples_per_frame  # where the pause after sentence 1 starts
    restarted = tts.codec.decode(codes[:, :, first.shape[2] :])[0].numpy()
    assert not np.allclose(restarted[: tts.samples_per_frame], streamed[boundary : boundary + tts.samples_per_frame])


def test_sentence_too_long_for_the_lm_is_cut_into_pieces_that_fit(models):
    lm, codec = tiny_models(max_seq_len=160)
    tts = Synthesizer(lm, codec)
    *_, wav, sr, _ = models
    prompt = tts.encode_prompt(wav, sr)
    text = "A large size in stockings is hard to sell, and the boy was there when the sun rose, and it was cold."
    pieces = tts.text_pieces(text, prompt)
    assert len(pieces) > 1
    assert " ".join(p.text for p in pieces) == text
    for piece in pieces:
        check_inputs(lm, piece.ids, prompt)  # raises if a piece does not fit


def test_stats_report_time_to_first_audio_and_rtf(tts, models):
    *_, wav, sr, _ = models
    stream = tts.stream(TEXT, wav, sr, seed=5, chunk_frames=2, **OPTIONS)
    assert stream.stats.ttfa_s is None and stream.stats.compute_s > 0  # preparation is counted
    first = next(stream)
    ttfa = stream.stats.ttfa_s
    assert first.size > 0 and ttfa is not None and ttfa > 0
    rest = list(stream)
    s = stream.stats
    assert s.finished and s.ttfa_s == ttfa and s.compute_s >= ttfa
    assert s.samples == first.size + sum(c.size for c in rest)
    assert s.audio_seconds == pytest.approx(s.frames / tts.frame_rate)
    assert s.rtf == pytest.approx(s.compute_s / s.audio_seconds) and 0 < s.rtf < float("inf")
    assert 1.0 <= s.prompt_seconds <= tts.lm.config.max_prompt_seconds + 1e-6
    assert "time to first audio" in s.summary()
    print(f"tiny models, 12.5 FPS, 1 thread: {s.summary()}")


def test_a_prompt_given_before_is_not_encoded_again_and_gives_the_same_audio(models):
    lm_dir, codec_dir, wav, sr, _ = models
    tts = Synthesizer.from_pretrained(lm=lm_dir, codec=codec_dir)  # nothing kept yet
    first = tts.stream(TEXT, wav, sr, seed=5, **OPTIONS)
    audio = first.read_all()
    assert not first.stats.prompt_cached
    again = tts.stream(TEXT, wav, sr, seed=5, **OPTIONS)
    assert again.stats.prompt_cached and np.array_equal(again.read_all(), audio)
    other = (wav * 0.5).astype(np.float32)  # another clip: encoded in the request ...
    assert not tts.stream(TEXT, other, sr, seed=5, **OPTIONS).stats.prompt_cached
    tts.forget_prompts()
    codes = tts.encode_prompt(wav, sr)  # ... unless it was encoded when it was given (the demo's upload)
    ahead = tts.stream(TEXT, wav, sr, seed=5, **OPTIONS)
    assert ahead.stats.prompt_cached and np.array_equal(ahead.read_all(), audio)
    assert torch.equal(codes, tts.encode_prompt(wav, sr))


def test_interleaved_requests_keep_their_own_state(tts, models):
    *_, wav, sr, _ = models
    alone = tts.synthesize(LONG_TEXT, wav, sr, seed=4, **OPTIONS)
    a = tts.stream(LONG_TEXT, wav, sr, seed=4, **OPTIONS)
    b = tts.stream(LONG_TEXT, wav, sr, seed=4, **OPTIONS)
    got_a, got_b = [], []
    for chunk_a, chunk_b in zip(a, b, strict=False):  # alternate: each step of one request between two of the other
        got_a.append(chunk_a)
        got_b.append(chunk_b)
    got_a += list(a)
    got_b += list(b)
    np.testing.assert_array_equal(np.concatenate(got_a), alone)
    np.testing.assert_array_equal(np.concatenate(got_b), alone)
    assert not tts.codec.is_streaming  # the shared codec is never put into streaming mode
    # the two requests used two decoder replicas, handed back idle (not streaming) and sharing the codec's weights
    assert tts.decoders.idle >= 2
    with tts.decoders.lease() as one, tts.decoders.lease() as two:
        assert one is not two and not one.is_streaming and not two.is_streaming
        params = zip(one.parameters(), two.parameters(), tts.codec.audio_decoder.parameters(), strict=True)
        assert all(a.data_ptr() == b.data_ptr() == c.data_ptr() for a, b, c in params)


def test_prompt_is_resampled_trimmed_and_capped(tts, models):
    *_, wav, sr, _ = models
    padded = np.concatenate([np.zeros(sr), wav, np.zeros(sr)]).astype(np.float32)  # 1 s of silence each side
    clip = tts.prepare_prompt(padded, sr)
    assert clip.seconds <= tts.lm.config.max_prompt_seconds + 1e-6
    assert clip.input_seconds == pytest.approx(padded.size / sr)
    assert np.abs(clip.wav[: int(0.05 * sr)]).max() < 1e-3  # starts near the speech, not 1 s before it
    assert np.abs(clip.wav).max() > 0.05
    # 16 kHz int16 stereo (what a microphone widget hands over) works and gives the same length
    import soxr

    mic = soxr.resample(padded, sr, 16000)
    stereo = (np.stack([mic, mic], axis=1) * 32767).astype(np.int16)  # (T, 2)
    clip16 = tts.prepare_prompt(stereo, 16000)
    assert abs(clip16.seconds - clip.seconds) < 0.05 and clip16.sample_rate == tts.sample_rate


def test_bad_inputs_raise_specific_errors(tts, models):
    *_, wav, sr, _ = models
    with pytest.raises(SynthesisError, match="text is empty"):
        tts.stream("   ", wav, sr)
    with pytest.raises(TextError, match="cannot phonemise"):
        tts.stream("... !!! --", wav, sr)
    with pytest.raises(SynthesisError, match="too long"):
        tts.stream("word " * 2000, wav, sr)
    with pytest.raises(PromptError, match="no voice prompt"):
        tts.stream(TEXT, None, sr)
    with pytest.raises(PromptError, match="silent"):
        tts.stream(TEXT, np.zeros(sr * 3, dtype=np.float32), sr)
    with pytest.raises(PromptError, match="too short"):
        tts.stream(TEXT, wav[: sr // 2], sr)
    with pytest.raises(PromptError, match="empty"):
        tts.stream(TEXT, np.zeros(0, dtype=np.float32), sr)
    # an unspeakable fragment inside a longer text is left out, the rest is spoken
    assert [p.text for p in tts.text_pieces("Hello there. -- . Goodbye now.")] == ["Hello there.", "Goodbye now."]


def test_models_that_do_not_belong_together_are_refused(tmp_path):
    lm, _ = tiny_models()
    from tests.tiny_tts import tiny_codec_config

    cfg = tiny_codec_config()
    cfg.quantizer.num_levels_per_group = [4, 5]
    with pytest.raises(SynthesisError, match="do not belong together"):
        Synthesizer(lm, NanoCodec(cfg))
    with pytest.raises(SynthesisError, match="no such LM directory"):
        Synthesizer.from_pretrained(lm=tmp_path / "missing", codec=tmp_path / "missing")


NEMO_FIXTURE = REPO / "tests" / "fixtures" / "nemo" / "tiny.nemo"  # NeMo's own modules, random weights (codec tests)


def test_an_nvidia_nemo_codec_loads_through_from_nemo_and_streams(models, tmp_path):
    if not NEMO_FIXTURE.is_file():
        pytest.skip(f"{NEMO_FIXTURE} is missing (written by scripts/make_nemo_golden.py)")
    from codec.nemo import NemoError

    codec = NanoCodec.from_nemo(NEMO_FIXTURE)
    lm, _ = tiny_models(num_codebooks=codec.num_codebooks, codebook_size=codec.codebook_size)
    lm.save_pretrained(tmp_path / "lm")
    tts = Synthesizer.from_pretrained(lm=tmp_path / "lm", codec=NEMO_FIXTURE)
    assert not tts.codec.has_weight_norm  # folded for inference
    *_, wav, sr, _ = models
    streamed = tts.stream(TEXT, wav, sr, seed=2, chunk_frames=2, **OPTIONS).read_all()
    reference, _ = offline(tts, TEXT, wav, sr, seed=2, **OPTIONS)
    assert streamed.size > 0
    np.testing.assert_allclose(streamed, reference, atol=1e-5)
    with pytest.raises(NemoError, match="no such .nemo file"):
        Synthesizer.from_pretrained(lm=tmp_path / "lm", codec=tmp_path / "missing.nemo")


def test_batch_cli_writes_one_wav_per_line_with_results(models, tmp_path):
    lm_dir, codec_dir, wav, sr, directory = models
    lines = tmp_path / "lines.txt"
    lines.write_text("Hello there.\n\n...\nIt is a fine day. Is it not?\n", encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tts_lm.synthesize", "--text-file", str(lines), "--prompt"]
    cmd += [str(directory / "prompt_en-us.wav"), "--out", str(out), "--lm", str(lm_dir), "--codec", str(codec_dir)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr  # line 3 ("...") cannot be spoken
    assert "line 3" in run.stderr and "synthesising" in run.stderr  # the error and the progress bar
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 3, 4]
    assert "error" in records[1]
    for r in (records[0], records[2]):
        audio, rate = sf.read(str(out / r["file"]))
        assert rate == 22050 and audio.size > 0 and r["ttfa_s"] > 0 and r["rtf"] > 0
    assert not (out / "0003.wav").exists()
    bad = subprocess.run([*cmd, "--backend", "cuda"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "backend 'cuda' is not one of" in bad.stderr


def test_batch_cli_help(capsys):
    from tts_lm.synthesize import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--text-file" in capsys.readouterr().out
