"""Gradio zero-shot voice cloning demo: type text, give 3-10 s of a voice, hear that voice say it, streamed.

    python -m apps.demo --lm runs/tts_lm/cpu_12.5fps --codec runs/codec/cpu_12.5fps [--host 127.0.0.1] [--port 7860]
    make app

A thin page over `tts_lm.Synthesizer`: the models are loaded once in `main()` (never at import); every request
is one `Synthesizer.stream(...)`, which has its own decoder streaming state and its own stats, so requests share
nothing mutable. The streamed chunks go to a `gr.Audio(streaming=True)` output (it plays while the rest is still
being generated); when the request ends, the whole utterance goes to a second audio output with a download
button, and the request's time to first audio and real-time factor are shown.

Limits (flags): the server listens on 127.0.0.1 unless --host says otherwise and never opens a share link unless
--share is given; uploads are capped in size (--max-file-size) and in duration (--max-prompt-seconds; only the
first few seconds after trimming silence are used anyway), text in characters (--max-text-chars); requests wait
in a bounded queue (--queue-size) and at most --concurrency run at once. Every input error a user can make (no
audio, unreadable file, silent or too short prompt, empty / unspeakable / too long text) is shown in the page as
a specific message (gr.Error); the app keeps serving. Letters of scripts the language cannot read are left out
with a notice (gr.Warning) naming them. A voice prompt is encoded as soon as it is given (the prompt's change
event, api name `prepare_voice`), so Generate starts from its kept codes.

Example voices, out of the box: up to five test-split utterances (held-out voices, unseen in training) of the
corpus the LM was trained on, labelled without their transcript ("voice 1 (flite, held-out)"). The manifest is
--examples (`make app` passes the profile's), else the one the LM's training recorded (train_config.yaml ->
tokens meta.json), else the first of runs/data/{cpu,quick,smoke}. Plus a few example texts. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("apps.demo")

DEFAULT_TEXT = "Hello! This is a zero-shot voice cloning demo. The first words play while the rest is still generated."
EXAMPLE_TEXTS = (
    "The birch canoe slid on the smooth planks.",
    "It is easy to tell the depth of a well.",
    "On the 3rd of May, Dr. Smith paid $3.50 for a cup of tea.",
    "Please call Stella. Ask her to bring these things with her from the store.",
)
ENGINE_NAMES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}  # speaker id prefixes (data.corpus)
ERROR_TITLES = {"TextError": "Text", "SynthesisError": "Request", "PromptError": "Voice prompt"}
MANIFEST_SEARCH = ("runs/data/cpu/manifest.jsonl", "runs/data/quick/manifest.jsonl", "runs/data/smoke/manifest.jsonl")


@dataclass
class DemoLimits:
    """What one request may ask for, and how the stream is cut."""

    max_text_chars: int = 1000
    max_prompt_seconds: float = 60.0  # duration of an uploaded / recorded prompt file
    chunk_frames: int | str = "grow"  # frames per streamed chunk: 1, then up to 8 as speed allows (Synthesizer)


@dataclass
class ExampleVoice:
    path: str
    speaker: str
    label: str  # shown in the page: no transcript, no file name ("voice 1 (flite, held-out)")


def example_voices(manifest: str | Path | None, limit: int = 5, lm: str | Path | None = None) -> list[ExampleVoice]:
    """One test-split utterance per held-out speaker of a corpus manifest (3-10 s ones first), up to `limit`.

    Speakers of different underlying voices come first (then their pitch/tempo variants). `manifest` None: the
    manifest that `lm`'s training recorded, else the first of MANIFEST_SEARCH that exists; "none": no examples.
    A missing or unreadable manifest gives [] with a warning: example voices are a convenience, never a reason
    not to serve.
    """
    if manifest is not None and str(manifest).lower() == "none":
        return []
    if manifest is None:
        found = [recorded_manifest(lm)] if lm is not None else []
        found += [Path(p) for p in MANIFEST_SEARCH]
        manifest = next((p for p in found if p is not None and p.is_file()), None)
        if manifest is None:
            return []
    from data.manifest import read_manifest

    try:
        utts = [u for u in read_manifest(manifest) if u.split == "test"]
    except ValueError as e:  # ManifestError: missing file, bad line, missing audio
        log.warning("no example voices: %s", e)
        return []
    utts.sort(key=lambda u: (u.speaker, not 3.0 <= u.duration <= 10.0, u.id))
    first: dict[str, Any] = {}  # speaker -> its first utterance
    for u in utts:
        first.setdefault(u.speaker, u)
    seen: dict[str, int] = {}  # speakers of each underlying voice so far
    ranked = []
    for u in first.values():
        ranked.append((seen.get(u.voice, 0), u))  # 0 for the first speaker of a voice, 1 for the next ...
        seen[u.voice] = seen.get(u.voice, 0) + 1
    ordered = [u for _, u in sorted(ranked, key=lambda r: r[0])]  # stable: speaker order within a rank
    voices = []
    for i, u in enumerate(ordered[:limit], start=1):
        engine = ENGINE_NAMES.get(u.speaker.split("-")[0])
        voices.append(ExampleVoice(u.audio, u.speaker, f"voice {i} ({engine + ', ' if engine else ''}held-out)"))
    return voices


def recorded_manifest(lm: str | Path) -> Path | None:
    """The corpus manifest an LM directory was trained on: train_config.yaml data.tokens -> meta.json manifest."""
    import json

    import yaml

    try:
        config = yaml.safe_load((Path(lm) / "train_config.yaml").read_text(encoding="utf-8"))
        tokens = Path(config["data"]["tokens"])
        return Path(json.loads((tokens / "meta.json").read_text(encoding="utf-8"))["manifest"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None


def to_int16(chunk: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM (Gradio would peak-normalise every float chunk on its own, changing loudness)."""
    return (np.clip(chunk, -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_bytes(sample_rate: int, pcm: np.ndarray) -> bytes:
    """One streamed chunk as an in-memory 16-bit mono WAV.

    Yielding bytes (not a (rate, array) tuple) keeps Gradio from writing each chunk to its content-addressed file
    cache: two requests streaming identical audio (same text, voice and seed) would write and read the same file at
    once, and one of them would fail on a half-written chunk."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def stats_markdown(stats: Any, done: bool) -> str:
    ttfa = "…" if stats.ttfa_s is None else f"{stats.ttfa_s * 1000:.0f} ms"
    if not done:
        return f"**Streaming…** {stats.audio_seconds:.2f} s of audio so far · time to first audio **{ttfa}**"
    return (
        f"**Done.** Time to first audio **{ttfa}** · real-time factor **{stats.rtf:.3f}** "
        f"({stats.compute_s:.2f} s of compute for {stats.audio_seconds:.2f} s of audio) · {stats.frames} frames at "
        f"{stats.frame_rate:g} FPS · {stats.pieces} sentence(s) · prompt {stats.prompt_seconds:.1f} s"
        + (" (encoded when it was given)" if stats.prompt_cached else "")
    )


def read_prompt(path: str | None, limits: DemoLimits) -> tuple[np.ndarray, int]:
    """The uploaded / recorded prompt file -> (samples, rate); gr.Error saying what is wrong with it."""
    import gradio as gr

    from codec.audio import AudioError, load_audio

    if not path:
        raise gr.Error("No voice prompt: upload or record 3-10 s of the voice to clone.", title="No audio")
    try:
        return load_audio(path, max_seconds=limits.max_prompt_seconds, allow_silent=True)
    except AudioError as e:
        reason = str(e).split(": ", 1)[-1]  # drop the server-side temp path
        raise gr.Error(f"Could not use the voice prompt file: {reason}.", title="Unreadable audio") from e


def make_prompt_handler(tts: Any, limits: DemoLimits):
    """Encode a voice prompt as soon as it is given (upload, recording, example click): the codec encoder is the
    largest part of the time to first audio, and `Synthesizer` keeps the codes, so Generate starts from them.
    Problems with the file are shown in the stats line at once (Generate reports them again)."""
    import gradio as gr

    def prepare_voice(prompt_path: str | None) -> str:
        if not prompt_path:
            return "Time to first audio and real-time factor appear here."
        try:
            wav, sr = read_prompt(prompt_path, limits)
            codes = tts.encode_prompt(wav, sr)
        except gr.Error as e:  # unreadable file
            return str(e.message)
        except ValueError as e:  # PromptError: silent, too short, ... (its message says what to do)
            message = str(e)
            return message[:1].upper() + message[1:]
        except Exception as e:  # a bug: log it; Generate will encode (and report) again
            log.exception("encoding a voice prompt failed")
            return f"Voice prompt: internal error ({type(e).__name__}); the server log has the details."
        return f"Voice ready: {codes.shape[1] / tts.frame_rate:.1f} s of it encoded; Generate starts from it."

    return prepare_voice


def make_handler(tts: Any, limits: DemoLimits):
    """The request handler: (text, prompt file, cfg, temperature, top-k, seed) -> stream of page updates."""
    import gradio as gr

    from text.scripts import describe_dropped, drop_unspeakable

    def synthesize(
        text: str, prompt_path: str | None, cfg_scale: float, temperature: float, top_k: float, seed: float
    ) -> Iterator[tuple[Any, Any, str]]:
        try:
            tts.check_text(text)  # empty / too long: before reading the prompt
            dropped = drop_unspeakable(text, tts.g2p.language)[1]
            if dropped:  # the G2P leaves them out (or finds nothing left: a TextError below)
                gr.Warning(f"Left out what {tts.g2p.language} cannot read: {describe_dropped(dropped)}.")
            wav, sr = read_prompt(prompt_path, limits)
            stream = tts.stream(
                text,
                wav,
                sr,
                seed=int(seed),
                cfg_scale=float(cfg_scale),
                temperature=float(temperature),
                top_k=int(top_k),
                chunk_frames=limits.chunk_frames,
            )
            chunks = []
            try:
                for chunk in stream:
                    chunks.append(chunk)
                    progress = stats_markdown(stream.stats, done=False)
                    yield wav_bytes(tts.sample_rate, to_int16(chunk)), gr.skip(), progress
            finally:  # also when the page goes away mid-stream: stop generating, hand the decoder back
                stream.close()
        except gr.Error:
            raise
        except ValueError as e:  # SynthesisError, TextError, PromptError, GenerationError: the user's input
            raise gr.Error(str(e), title=ERROR_TITLES.get(type(e).__name__, "Cannot synthesise this")) from e
        except Exception as e:  # a bug: log it here, show one line in the page
            log.exception("request failed")
            raise gr.Error(f"Internal error ({type(e).__name__}); the server log has the details.") from e
        if not chunks:
            raise gr.Error("The model ended without producing audio; try another seed or a longer text.")
        full = (tts.sample_rate, to_int16(np.concatenate(chunks)))
        yield gr.skip(), full, stats_markdown(stream.stats, done=True)

    return synthesize


def build_demo(tts: Any, limits: DemoLimits | None = None, examples: list[ExampleVoice] | None = None):
    """The page (gr.Blocks) over a loaded Synthesizer. Nothing is loaded here."""
    import gradio as gr

    limits = limits or DemoLimits()
    with gr.Blocks(title="nanokoel: zero-shot voice cloning") as demo:
        gr.Markdown(
            "# nanokoel: zero-shot voice cloning\n"
            f"NanoCodec at {tts.frame_rate:g} frames per second + a Koel-style decoder-only TTS LM. Type a text, "
            "give 3-10 seconds of any voice, and the audio starts playing while the rest is still being generated."
        )
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text", value=DEFAULT_TEXT, lines=4, max_length=limits.max_text_chars)
                prompt = gr.Audio(
                    label="Voice prompt (3-10 s of speech: upload or record)",
                    sources=["upload", "microphone"],
                    type="filepath",
                    elem_id="prompt",
                )
                if examples:
                    gr.Examples(
                        examples=[[v.path] for v in examples],
                        inputs=[prompt],
                        example_labels=[v.label for v in examples],
                        label="Example voices (held-out speakers, unseen in training): click one",
                        elem_id="example-voices",
                    )
                gr.Examples(
                    examples=[[t] for t in EXAMPLE_TEXTS], inputs=[text], label="Example texts", elem_id="example-texts"
                )
                with gr.Accordion("Sampling", open=False):
                    cfg_scale = gr.Slider(1.0, 5.0, value=2.5, step=0.1, label="CFG scale")
                    temperature = gr.Slider(0.0, 1.5, value=0.6, step=0.05, label="Temperature")
                    top_k = gr.Slider(1, 200, value=80, step=1, label="Top-k")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                streamed = gr.Audio(
                    label="Streaming output", streaming=True, autoplay=True, interactive=False, elem_id="streamed"
                )
                full = gr.Audio(
                    label="Whole utterance (download)", type="numpy", format="wav", interactive=False, elem_id="full"
                )
                stats = gr.Markdown(
                    "Time to first audio and real-time factor appear here.", label="stats", elem_id="stats"
                )
        prompt.change(make_prompt_handler(tts, limits), inputs=[prompt], outputs=[stats], api_name="prepare_voice")
        button.click(
            make_handler(tts, limits),
            inputs=[text, prompt, cfg_scale, temperature, top_k, seed],
            outputs=[streamed, full, stats],
            api_name="synthesize",
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apps.demo", description="Gradio zero-shot voice cloning demo.")
    p.add_argument("--lm", required=True, help="LM directory or hub id (make lm: runs/tts_lm/<profile>_12.5fps)")
    p.add_argument("--codec", required=True, help="codec directory, hub id, or an NVIDIA .nemo file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", choices=["never", "yes"], default="never", help="open a public gradio.live link")
    p.add_argument("--language", default="en-us", help="espeak-ng language of the text (default en-us)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    p.add_argument(
        "--backend",
        default="auto",
        help="LM step and streaming decoder: auto (ONNX Runtime on a CPU, else torch), torch or onnxruntime "
        "(default %(default)s)",
    )
    p.add_argument(
        "--examples",
        default=None,
        help="corpus manifest for example voices (default: the LM's training corpus, else runs/data/*; 'none': none)",
    )
    p.add_argument("--max-text-chars", type=int, default=1000, help="longest accepted text (default 1000)")
    p.add_argument("--max-prompt-seconds", type=float, default=60.0, help="longest accepted prompt file (default 60)")
    p.add_argument("--max-file-size", default="20mb", help="largest accepted upload (default 20mb)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait; more are refused (default 16)")
    p.add_argument("--concurrency", type=int, default=2, help="requests generated at the same time (default 2)")
    p.add_argument(
        "--chunk-frames",
        default="grow",
        help='codec frames per streamed chunk, or "grow": single frames, then up to 8 as speed allows (default grow)',
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from tts_lm import Synthesizer
    from tts_lm.synthesizer import parse_chunk_frames

    torch.set_num_threads(args.threads)
    if shutil.which("ffmpeg") is None:
        print("error: ffmpeg is not on PATH; Gradio needs it to stream audio: apt-get install ffmpeg", file=sys.stderr)
        return 2
    try:
        chunk_frames = parse_chunk_frames(args.chunk_frames)
    except ValueError as e:
        print(f"error: --chunk-frames {args.chunk_frames}: {e}", file=sys.stderr)
        return 2
    limits = DemoLimits(args.max_text_chars, args.max_prompt_seconds, chunk_frames)
    try:
        tts = Synthesizer.from_pretrained(
            lm=args.lm,
            codec=args.codec,
            device=args.device,
            language=args.language,
            max_text_chars=args.max_text_chars,
            backend=args.backend,
        )
        examples = example_voices(args.examples, lm=args.lm)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("models loaded: %s FPS, %d example voice(s)", f"{tts.frame_rate:g}", len(examples))
    demo = build_demo(tts, limits, examples)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    allowed = sorted({str(Path(v.path).resolve().parent) for v in examples})
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share == "yes",
        max_file_size=args.max_file_size,
        allowed_paths=allowed,
        footer_links=["api"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
