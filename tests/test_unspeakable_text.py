"""Text the language cannot speak: letters of other scripts are dropped with a warning naming the scripts,
nothing speakable left is a TextError, and generation is capped by the phonemes actually spoken (a random LM
that never emits EOS stops at that cap, not after the minutes of letter names espeak-ng would have read)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.tiny_tts import speech_prompt, tiny_models
from text import G2P, TextError, UnspeakableTextWarning
from text.scripts import drop_unspeakable, language_scripts, script_of
from tts_lm import Synthesizer

MIXED = "Hello مرحبا بالعالم 你好世界 привет мир world."  # Latin, Arabic, CJK, Cyrillic


def test_drop_unspeakable_names_each_script_and_keeps_the_rest():
    kept, dropped = drop_unspeakable(MIXED, "en-us")
    assert kept == "Hello world."
    assert dropped == {"Arabic": "مرحبا بالعالم", "Han": "你好世界", "Cyrillic": "привет мир"}
    assert drop_unspeakable("नमस्ते world", "en-us") == ("world", {"Devanagari": "नमस्ते"})  # marks go with letters
    assert drop_unspeakable("Ｈｅｌｌｏ café, ａ α!", "en-us") == ("Hello café, a !", {"Greek": "α"})  # NFKC first
    assert drop_unspeakable("привет world", "ru") == ("привет world", {})  # a language keeps its script and Latin
    assert drop_unspeakable("日本語とカナ", "ja")[1] == {}
    assert language_scripts("sr-Latn") == language_scripts("sr") == {"Latin", "Cyrillic"}
    assert [script_of(c) for c in "a1 ,你я"] == ["Latin", None, None, None, "Han", "Cyrillic"]


def test_g2p_warns_naming_the_dropped_scripts_and_speaks_the_rest():
    g2p = G2P("en-us", cache_size=0)
    with pytest.warns(UnspeakableTextWarning) as record:
        phonemes = g2p(MIXED)
    message = str(record[0].message)
    assert all(name in message for name in ("Arabic", "Han", "Cyrillic", "你好世界")), message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean text: no warning
        assert phonemes == g2p("Hello world.")


@pytest.mark.parametrize("text", ["你好世界。", "привет, мир!"])
def test_nothing_speakable_left_is_a_text_error_naming_the_script(text):
    with pytest.raises(TextError, match="Han|Cyrillic"):
        G2P("en-us")(text)


def test_generation_stops_at_the_cap_of_the_spoken_phonemes():
    lm, _ = tiny_models(eos_bias=-1e4)  # never samples audio EOS
    prompt = torch.randint(0, lm.config.codebook_size, (lm.config.num_codebooks, 20))
    ids = [5, 6, 7, 8, 9, 10]
    out = lm.generate_output(ids, prompt, seed=0, stop_on_alignment=False)
    assert out.stop_reasons == ["max_frames"]
    assert int(out.lengths[0]) == lm.config.max_frames_for(len(ids))


def test_synthesizer_warns_and_caps_mixed_script_text_by_what_is_spoken(tmp_path):
    lm, codec = tiny_models(eos_bias=-1e4)
    tts = Synthesizer(lm, codec)
    wav, sr = speech_prompt(tmp_path)
    with pytest.warns(UnspeakableTextWarning, match="Arabic.*Han.*Cyrillic"):
        stream = tts.stream(MIXED, wav, sr, seed=0, stop_on_alignment=False)
    audio = stream.read_all()
    spoken = tts.vocab.encode(tts.g2p("Hello world."))
    cap = lm.config.max_frames_for(len(spoken))  # 13 IPA symbols: 3.6 s, where the letter names gave 39 s
    assert stream.stats.stop_reasons == ["max_frames"] and stream.stats.frames == cap
    assert audio.size == cap * codec.samples_per_frame
