"""Audio utilities: loading (formats, mono, resampling), one clear error per bad file, normalisation, crops."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data.audio import (
    AudioError,
    audio_comment,
    audio_info,
    load_audio,
    loudness_db,
    normalize_loudness,
    peak_db,
    peak_normalize,
    random_crop,
    save_audio,
    trim_silence,
)
from tests.speech import SENTENCE, synthesize

SR = 22050


def tone(seconds: float = 1.0, sr: int = SR, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_load_formats_mixes_to_mono_and_resamples(tmp_path, fmt):
    stereo = np.stack([tone(1.0, 16000, 220), tone(1.0, 16000, 220)], axis=1)  # [T, 2]
    path = tmp_path / f"x.{fmt}"
    sf.write(path, stereo, 16000)
    wav, sr = load_audio(path, sample_rate=SR)
    assert sr == SR and wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.size - SR) < 0.02 * SR  # mp3/ogg codecs add a little padding
    # the content survives: a 220 Hz tone keeps its dominant frequency
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * SR / wav.size - 220) < 3


def test_resample_keeps_speech_duration(tmp_path):
    wav16, sr16 = synthesize(SENTENCE, tmp_path, engine="flite", voice="slt")
    path = tmp_path / "flite_slt.wav"  # tests/speech.py names the file engine_voice.wav
    wav, sr = load_audio(path, sample_rate=SR)
    assert sr16 == 16000 and sr == SR
    assert abs(wav.size / SR - wav16.size / 16000) < 1e-3


def _write_bad(tmp_path, kind: str):
    path = tmp_path / f"{kind}.wav"
    if kind == "unreadable":
        path.write_bytes(b"this is not audio at all" * 10)
    elif kind == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif kind == "silent":
        sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    elif kind == "nan":
        wav = tone()
        wav[100] = np.nan
        sf.write(path, wav, SR, subtype="FLOAT")
    elif kind == "long":
        sf.write(path, tone(3.0), SR)
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("unreadable", "unreadable audio"),
        ("empty", "empty audio"),
        ("silent", "silent"),
        ("nan", "NaN or inf"),
        ("long", "too long"),
        ("missing", "no such audio file"),
    ],
)
def test_bad_files_give_one_clear_error_naming_the_file(tmp_path, kind, message):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as err:
        load_audio(path, sample_rate=SR, max_seconds=2.0)
    assert str(path) in str(err.value) and message in str(err.value)


def test_silent_file_allowed_on_request(tmp_path):
    wav, _ = load_audio(_write_bad(tmp_path, "silent"), allow_silent=True)
    assert wav.size == SR and not wav.any()


def test_audio_info_reads_header_and_refuses_bad_files(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(1.5, 16000), 16000)
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (16000, 24000, 1) and info.duration == 1.5
    for kind in ("unreadable", "empty", "missing"):
        with pytest.raises(AudioError, match=kind if kind != "missing" else "no such"):
            audio_info(_write_bad(tmp_path, kind))


def test_peak_and_loudness_normalisation():
    loud, quiet = tone(amp=0.9), tone(amp=0.01)
    assert peak_db(peak_normalize(quiet, -3.0)) == pytest.approx(-3.0, abs=1e-3)
    a, b = normalize_loudness(loud, SR, -20.0), normalize_loudness(quiet, SR, -20.0)
    assert loudness_db(a, SR) == pytest.approx(-20.0, abs=0.05)
    assert loudness_db(b, SR) == pytest.approx(-20.0, abs=0.05)
    # a very peaky signal is limited to the peak ceiling instead of clipping
    spiky = np.zeros(SR, dtype=np.float32)
    spiky[::2205] = 0.5
    out = normalize_loudness(spiky, SR, -10.0, max_peak_db=-1.0)
    assert peak_db(out) == pytest.approx(-1.0, abs=1e-3) and loudness_db(out, SR) < -10.0
    with pytest.raises(AudioError, match="silent"):
        normalize_loudness(np.zeros(SR, dtype=np.float32), SR)


def test_loudness_ignores_pauses():
    speech = tone(1.0)
    with_pause = np.concatenate([speech, np.zeros(3 * SR, dtype=np.float32), speech])
    assert loudness_db(with_pause, SR) == pytest.approx(loudness_db(speech, SR), abs=0.1)


def test_trim_silence_keeps_padding_and_the_speech(tmp_path):
    speech, _ = synthesize(SENTENCE, tmp_path, sample_rate=SR)
    core = trim_silence(speech, SR, pad_s=0.0)
    padded = np.concatenate([np.zeros(SR), core, np.zeros(2 * SR)]).astype(np.float32)
    out = trim_silence(padded, SR, pad_s=0.1)
    assert abs(out.size - (core.size + 0.2 * SR)) <= 0.04 * SR  # one 20 ms frame of slack each side
    assert np.abs(out).max() == np.abs(core).max()  # nothing of the speech was cut
    silent = np.zeros(SR, dtype=np.float32)
    assert trim_silence(silent, SR).size == SR


def test_random_crop_is_a_window_and_pads_short_input():
    rng = np.random.default_rng(0)
    wav = np.arange(1000, dtype=np.float32)
    starts = set()
    for _ in range(20):
        crop = random_crop(wav, 100, rng)
        assert crop.size == 100 and np.all(np.diff(crop) == 1)  # contiguous
        starts.add(int(crop[0]))
    assert len(starts) > 5  # actually random
    short = random_crop(wav[:30], 100, rng)
    assert short.size == 100 and np.array_equal(short[:30], wav[:30]) and not short[30:].any()
    with pytest.raises(ValueError):
        random_crop(wav, 0, rng)


def test_save_audio_round_trip_with_comment(tmp_path):
    wav = tone(0.5)
    path = save_audio(tmp_path / "sub" / "x.flac", wav, SR, comment="key123")
    back, sr = load_audio(path)
    assert sr == SR and np.abs(back - wav).max() < 1e-4  # 16-bit
    assert audio_comment(path) == "key123" and audio_comment(tmp_path / "nope.flac") is None
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "bad.flac", np.full(10, np.nan, dtype=np.float32), SR)
    assert not (tmp_path / "bad.flac").exists()


def test_failing_writer_leaves_nothing(tmp_path, monkeypatch):
    """A writer that dies mid-file leaves neither the target nor a temporary file behind."""
    import data.audio as audio_mod

    real = audio_mod.sf.SoundFile

    class Dying(real):
        def write(self, data):
            super().write(data[: len(data) // 2])
            raise OSError("disk full")

    monkeypatch.setattr(audio_mod.sf, "SoundFile", Dying)
    with pytest.raises(OSError, match="disk full"):
        save_audio(tmp_path / "x.flac", tone(), SR)
    assert list(tmp_path.iterdir()) == []
