"""The Gradio demo end to end: a real `python -m apps.demo` server with tiny models, driven by gradio_client.

Chunks stream in before the request ends, the whole utterance equals the library's `Synthesizer.synthesize` (the
app is a thin page over it), bad inputs come back as their specific messages while the server keeps serving,
and 4 concurrent requests all finish with audio that depends only on their own inputs (same seed, same audio)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from apps.demo import example_voices, to_int16
from tests.tiny_tts import demo_server, example_manifest, speech_prompt

gradio_client = pytest.importorskip("gradio_client")
Client, handle_file = gradio_client.Client, gradio_client.handle_file
AppError = gradio_client.exceptions.AppError

TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    manifest = example_manifest(directory)
    wav, sr = speech_prompt(directory)
    # prompts a user can get wrong, for the error tests
    (directory / "garbage.wav").write_bytes(b"RIFF not really a wav file at all" * 10)
    sf.write(str(directory / "silence.wav"), np.zeros(22050 * 3, dtype=np.float32), 22050)
    sf.write(str(directory / "short.wav"), wav[: sr // 2], sr)
    args = ["--examples", str(manifest), "--max-text-chars", "300", "--concurrency", "4", "--queue-size", "8"]
    with demo_server(directory, *args) as url:
        yield url, directory


@pytest.fixture(scope="module")
def client(server):
    url, _ = server
    return Client(url, verbose=False, download_files=str(server[1] / "downloads"))


def run(client, text: str, prompt: str | None, seed: int = 0) -> tuple[list, tuple]:
    audio = None if prompt is None else handle_file(prompt)
    job = client.submit(text, audio, 2.5, 0.6, 80, seed, api_name="/synthesize")
    job.result(timeout=240)
    return job.outputs()[:-1], job.outputs()[-1]


def test_page_serves_on_localhost_with_example_voices_of_test_speakers(server):
    url, directory = server
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.loads(response.read())
    page = json.dumps(config)
    assert "Example voices" in page and "voice 1 (espeak-ng, held-out)" in page and "voice 2 (espeak-ng" in page
    assert "example_en-us+m3" not in page and "voice 3" not in page  # a train speaker is not offered
    assert "Example texts" in page and "The birch canoe" in page
    assert [v.speaker for v in example_voices(directory / "manifest.jsonl")] == ["espeak-en-gb", "espeak-en-us"]


def test_example_voices_one_per_held_out_speaker_found_without_flags(tmp_path, monkeypatch):
    """Labels carry no transcript; distinct voices come before variants; the manifest is found from the LM's
    training record or runs/data/*, and `--examples none` turns them off."""
    from data.manifest import Utterance, write_manifest

    speakers = [  # (speaker, underlying voice, split)
        ("flite-awb", "awb", "test"),
        ("flite-awb-p+300-t1.05", "awb", "test"),
        ("espeak-en-gb-scotland-f3", "espeak-f3", "test"),
        ("festival-ked_diphone", "ked", "validation"),
        ("flite-rms", "rms", "train"),
        ("1089", "1089", "test"),  # an imported corpus: no engine in the id
    ]
    utts = []
    for speaker, voice, split in speakers:
        for k, seconds in enumerate((12.0, 4.0)):  # the 3-10 s utterance is preferred
            audio = tmp_path / f"{speaker}-{k}.wav"
            sf.write(str(audio), np.zeros(100, dtype=np.float32), 22050)
            utt_id = f"{speaker}-{k}"
            utts.append(Utterance(utt_id, str(audio), "words", "wɜːdz", speaker, seconds, 22050, split, voice))
    manifest = write_manifest(tmp_path / "corpus" / "manifest.jsonl", utts)
    voices = example_voices(manifest)
    assert [(v.label, Path(v.path).name) for v in voices] == [
        ("voice 1 (held-out)", "1089-1.wav"),
        ("voice 2 (espeak-ng, held-out)", "espeak-en-gb-scotland-f3-1.wav"),
        ("voice 3 (flite, held-out)", "flite-awb-1.wav"),
        ("voice 4 (flite, held-out)", "flite-awb-p+300-t1.05-1.wav"),  # a variant of awb: after the distinct voices
    ]
    assert len(example_voices(manifest, limit=2)) == 2 and example_voices("none") == []
    # the LM directory records its tokens, whose meta.json records the manifest (what `make lm` writes)
    (tmp_path / "lm").mkdir()
    (tmp_path / "tokens").mkdir()
    (tmp_path / "lm" / "train_config.yaml").write_text(f"data:\n  tokens: {tmp_path / 'tokens'}\n")
    (tmp_path / "tokens" / "meta.json").write_text(json.dumps({"manifest": str(manifest)}))
    monkeypatch.chdir(tmp_path)
    assert example_voices(None, lm=tmp_path / "lm") == voices
    assert example_voices(None) == [] and example_voices(None, lm=tmp_path / "no-lm") == []
    quick = tmp_path / "runs" / "data" / "quick"
    quick.mkdir(parents=True)
    (quick / "manifest.jsonl").write_text(manifest.read_text())  # absolute audio paths
    assert example_voices(None) == voices  # no flag, no record: the runs folder (this used to give none)


def test_chunks_stream_in_and_the_whole_utterance_equals_the_library(client, server):
    _, directory = server
    prompt = str(directory / "prompt_en-us.wav")
    updates, final = run(client, TEXT, prompt, seed=3)
    streaming = [u for u in updates if "Streaming" in u[2]]
    assert len(streaming) >= 3  # several chunks before the end
    seconds = [float(u[2].split("**Streaming…** ")[1].split(" s")[0]) for u in streaming]
    assert seconds == sorted(seconds) and seconds[:2] == pytest.approx([0.08, 0.16])  # "grow": single frames first
    playlist = Path(streaming[-1][0]).read_text()
    assert playlist.startswith("#EXTM3U") and "#EXTINF" in playlist  # the streamed audio segments
    _, full_path, stats = final
    assert "Time to first audio" in stats and "real-time factor" in stats
    audio, rate = sf.read(full_path, dtype="int16")
    assert rate == 22050 and audio.size == round(seconds[-1] * rate) and np.abs(audio).max() > 0

    # the page is thin over the library: the same models, prompt and seed give the same samples
    from tts_lm import Synthesizer

    tts = Synthesizer.from_pretrained(lm=directory / "lm", codec=directory / "codec")
    wav, sr = sf.read(prompt, dtype="float32")
    expected = to_int16(tts.synthesize(TEXT, wav, sr, seed=3, chunk_frames="grow"))
    assert audio.shape == expected.shape
    assert np.abs(audio.astype(int) - expected).max() <= 1


def test_a_voice_is_encoded_when_it_is_given_and_generate_starts_from_it(client, server):
    _, directory = server
    wav, sr = sf.read(directory / "prompt_en-us.wav", dtype="float32")
    unseen, given = directory / "prompt_unseen.wav", directory / "prompt_given.wav"
    sf.write(unseen, wav * 0.9, sr)  # voices this server has not encoded yet
    sf.write(given, wav * 0.8, sr)
    _, (_, _, stats) = run(client, "Glue the sheet.", str(unseen))
    assert "Done." in stats and "encoded when it was given" not in stats
    ready = client.predict(handle_file(str(given)), api_name="/prepare_voice")  # what an upload triggers
    assert ready.startswith("Voice ready:") and "s of it encoded" in ready
    _, (_, _, stats) = run(client, "Glue the sheet.", str(given))
    assert "Done." in stats and "encoded when it was given" in stats
    silent = client.predict(handle_file(str(directory / "silence.wav")), api_name="/prepare_voice")
    assert silent.startswith("The voice prompt is silent")  # shown at once, not only on Generate
    garbage = client.predict(handle_file(str(directory / "garbage.wav")), api_name="/prepare_voice")
    assert garbage.startswith("Could not use the voice prompt file")


@pytest.mark.parametrize(
    ("text", "prompt", "message"),
    [
        ("", "prompt_en-us.wav", "text is empty"),
        ("   ", "prompt_en-us.wav", "text is empty"),
        ("word " * 70, "prompt_en-us.wav", "too long"),
        ("!!! ... ---", "prompt_en-us.wav", "cannot phonemise"),
        (TEXT, None, "No voice prompt"),
        (TEXT, "garbage.wav", "Could not use the voice prompt file"),
        (TEXT, "silence.wav", "silent"),
        (TEXT, "short.wav", "too short"),
    ],
    ids=["empty", "blank", "too-long", "unspeakable", "no-audio", "unreadable", "silent", "short-prompt"],
)
def test_bad_inputs_show_their_specific_error_and_the_app_keeps_serving(client, server, text, prompt, message):
    _, directory = server
    with pytest.raises(AppError, match=message):
        run(client, text, None if prompt is None else str(directory / prompt))
    _, final = run(client, "Still here.", str(directory / "prompt_en-us.wav"))  # the server keeps serving
    assert "Done" in final[2]


def test_four_concurrent_requests_all_succeed_and_stay_independent(server):
    url, directory = server
    prompt = str(directory / "prompt_en-us.wav")
    seeds = [5, 6, 5, 6]

    def request(seed: int) -> np.ndarray:
        client = Client(url, verbose=False, download_files=str(directory / f"downloads_{seed}"))
        _, final = run(client, TEXT, prompt, seed=seed)
        return sf.read(final[1], dtype="int16")[0].astype(np.int32)

    with ThreadPoolExecutor(4) as pool:
        audios = list(pool.map(request, seeds))
    assert all(a.size > 0 for a in audios)
    # the same seed gives the same audio: the demo's growing chunks follow each request's own pace, and chunks of
    # other lengths round differently (~1e-6), which can move a sample by one 16-bit step; a shared or leaked
    # state would change it by far more
    assert audios[0].shape == audios[2].shape and audios[1].shape == audios[3].shape
    np.testing.assert_allclose(audios[0], audios[2], atol=1, rtol=0)
    np.testing.assert_allclose(audios[1], audios[3], atol=1, rtol=0)
    assert audios[0].shape != audios[1].shape or not np.array_equal(audios[0], audios[1])


def test_importing_the_app_loads_nothing_and_help_works(capsys):
    probe = "import apps.demo, sys; print(sorted(m for m in ('gradio', 'torch', 'tts_lm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"  # models (and even gradio / torch) are loaded by main(), not at import
    from apps.demo import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--lm" in help_text and "127.0.0.1" in help_text
    args = parse_args(["--lm", "a", "--codec", "b"])
    assert (args.host, args.share) == ("127.0.0.1", "never")


def test_a_bad_chunk_schedule_is_refused_before_any_model_loads(tmp_path, capsys):
    from apps.demo import main

    assert main(["--lm", str(tmp_path / "none"), "--codec", str(tmp_path / "none"), "--chunk-frames", "fast"]) == 2
    assert '--chunk-frames fast: chunk_frames must be a positive number of frames or "grow"' in capsys.readouterr().err
