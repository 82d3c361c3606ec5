"""Streaming zero-shot TTS: text + a few seconds of a voice -> that voice speaking the text, chunk by chunk.

    tts = Synthesizer.from_pretrained(lm="runs/tts_lm/cpu_12.5fps", codec="runs/codec/cpu_12.5fps")
    stream = tts.stream(text, prompt_wav, prompt_sr, seed=0, cfg_scale=2.5, temperature=0.6, top_k=80)
    for chunk in stream:            # float32 numpy [chunk_frames * samples_per_frame] at tts.sample_rate
        play(chunk)                 # (the last chunk may be shorter; chunk_frames="grow": see below)
    stream.stats.ttfa_s, stream.stats.rtf                # time to first audio, real-time factor of this request
    wav = tts.synthesize(text, prompt_wav, prompt_sr, seed=0)   # float32 [T], the joined chunks

One request:
    text -> split_sentences -> G2P (normalise + espeak-ng IPA) -> PhonemeVocab ids, one piece per sentence
         (a sentence too long for the LM's context is cut further at clause punctuation / word boundaries)
    prompt wav -> resample, trim silence, first max_prompt_seconds (prompt.py) -> codec.encode -> long [K, P]
    for each piece:  lm.stream(ids, prompt codes) -> frames long [1, K, 1]
                     -> codec decoder inside ONE `streaming(1)` block -> float [chunk_frames * hop]
Codec decoding is causal with no lookahead, so the joined chunks equal `codec.decode(lm.generate(...))` of the
same frames (tests/test_synthesizer.py); one torch.Generator seeded with `seed` drives the sampling of every
piece, so a request is reproducible.

Chunk sizes: the decoder's cost per frame falls with the frames decoded per call (CPU profile, 1 thread: 17.8 /
11.1 / 8.0 ms per 80 ms frame at 1 / 2 / 4 frames per call; paper scale 64 / 49 / 44 ms), because a call's
per-layer overhead and the weight reads of its first stages are shared by all its frames. `chunk_frames="grow"`
(the demo's choice) starts with single frames (the first audio as early as `chunk_frames=1` gives it) and then doubles
the chunk, up to `MAX_GROWN_CHUNK` frames, whenever generating the larger chunk at the pace measured so far fits
in the audio already delivered ahead of playback (`ChunkPlan`); otherwise it keeps or halves the size. So a fast
machine soon decodes 8 frames per call (CPU profile: 1, 1, 2, 4, 8, 8, ...), and a slow or busy one stays with
small chunks rather than letting playback run dry. The chunking then depends on the machine's speed, and with it
the decoded audio's last bits (~1e-6: chunks of other lengths round differently), so the default stays
`chunk_frames=1`: the same request gives the same samples everywhere.

Backend (`backend`): on a CPU with float32 models, "auto" runs the two per-frame steps through ONNX Runtime: the
LM's backbone step (tts_lm/onnx_step.py) and the decoder's streaming step (codec/onnx_step.py), each exported once
when the Synthesizer is made (1-4 s) and then one graph call per frame or chunk (CPU profile, 1 thread: LM step
8.0 -> 5.2 ms, decoder 17 -> 9 ms per 1-frame chunk; paper-scale decoder 66 -> 45 ms). The results equal torch's
to float rounding (~1e-6), so a sampled token may differ in a rare near-tie; a request stays reproducible on one
backend. "torch" keeps torch for both (on a GPU the decoder step replays as a CUDA graph); "onnxruntime" insists.

Long-form: every sentence is generated with the same speaker prompt (same voice), and the decoder's streaming
state is KEPT across sentence boundaries: the sentences' frames (with `sentence_pause_s` of the codec's own
silence frames between them) form one continuous code sequence for the causal decoder, so there is no restart
transient and no discontinuity to crossfade: no click.

Concurrency: the weights are shared and read-only. Every request decodes with a decoder replica of its own
(`DecoderPool`: new module objects sharing the parameter tensors, so each has its own streaming state), held
for the whole request and handed back for a later request when it ends (making one costs ~60 ms on the CPU
profile, so they are reused rather than made per request); the LM's KV cache is per call. Per-request numbers
live in the request's `SynthesisStats`; nothing else of a request outlives it, except the codes of its speaker prompt:
the last few prompts' codes are kept (`prompt_codes`), so a voice used again skips the codec encoder.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import itertools
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec import NanoCodec
from codec.onnx_step import onnx_step
from codec.streaming import StaticStreamingStep
from common.derived import DerivedWeight
from common.onnx_runtime import onnx_runtime_available
from text import G2P, PhonemeVocab, TextError, split_sentences
from tts_lm.generate import GenerationError, check_inputs
from tts_lm.model import KoelLM
from tts_lm.onnx_step import onnx_backbone_step
from tts_lm.prompt import PromptClip, PromptError, prepare_prompt

PROMPT_CACHE_SIZE = 16  # speaker prompts whose codes a Synthesizer keeps
VOCAB_NAME = "phonemes.json"  # a PhonemeVocab saved beside the LM weights (else PhonemeVocab.default())
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_GROWN_CHUNK = 8  # frames: the largest chunk of chunk_frames="grow" (640 ms at 12.5 FPS)
BACKENDS = ("auto", "torch", "onnxruntime")


class SynthesisError(ValueError):
    """A request that cannot be synthesised (empty or over-long text, mismatched models); says what to do."""


def check_chunk_frames(chunk_frames: int | str) -> None:
    """SynthesisError unless `chunk_frames` is "grow" or a number of frames >= 1."""
    if chunk_frames == "grow":
        return
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise SynthesisError(f'chunk_frames must be a positive number of frames or "grow", got {chunk_frames!r}')


def next_grown_chunk(previous: int, ahead_s: float, seconds_per_frame: float) -> int:
    """The next chunk of a growing schedule: twice the last one if generating it at `seconds_per_frame` fits in the
    audio already delivered ahead of real-time playback (`ahead_s`), else the last size if that fits, else half
    of it; between 1 and MAX_GROWN_CHUNK frames."""
    for frames in (min(2 * previous, MAX_GROWN_CHUNK), previous):
        if frames * seconds_per_frame <= ahead_s:
            return frames
    return max(1, previous // 2)


class ChunkPlan:
    """How many frames the next streamed chunk gets: `chunk_frames` each for a number; for "grow" single frames
    first, then `next_grown_chunk` after each chunk, from the pace measured on the chunks since the first (whose
    time includes the request's setup) and the audio delivered so far, counting playback from the first chunk.

        plan = ChunkPlan("grow", frame_s=0.08)
        plan.due                                 # frames of the next chunk (1 first)
        plan.delivered(frames, generate_s, now)  # after each chunk: its frames, its generation time, the clock
    """

    def __init__(self, chunk_frames: int | str, frame_s: float) -> None:
        check_chunk_frames(chunk_frames)
        self.grow = chunk_frames == "grow"
        self.due = 1 if self.grow else int(chunk_frames)
        self.frame_s = frame_s
        self.chunks, self.audio_s, self.first_at = 0, 0.0, 0.0

    def delivered(self, frames: int, generate_s: float, now: float) -> None:
        self.chunks += 1
        self.audio_s += frames * self.frame_s
        if self.chunks == 1:
            self.first_at = now  # playback starts with the first chunk
        if self.grow and self.chunks >= 2:  # the first chunk's time includes the prompt, text and prefix
            ahead_s = self.audio_s - (now - self.first_at)
            self.due = next_grown_chunk(frames, ahead_s, generate_s / frames)


def parse_chunk_frames(value: str) -> int | str:
    """A command line's --chunk-frames: "grow" or a number of frames >= 1; SynthesisError (a ValueError) if not."""
    frames = value if value == "grow" else int(value) if value.isdigit() else 0
    check_chunk_frames(frames)
    return frames


@dataclass
class TextPiece:
    """One piece of the text (a sentence or a part of one): its text, IPA phonemes and vocabulary ids."""

    text: str
    phonemes: str
    ids: list[int]


@dataclass
class SynthesisStats:
    """Numbers of one request. Times are compute seconds spent producing audio (not time the consumer took).

    Attributes:
        ttfa_s: time to first audio: text + prompt preparation + generating and decoding the first chunk.
        compute_s: all compute of the request so far; rtf = compute_s / audio_seconds.
        pieces: sentences (pieces) synthesised; stop_reasons: the LM's reason per piece ("eos", ...).
    """

    sample_rate: int
    frame_rate: float
    prompt_seconds: float = 0.0
    pieces: int = 0
    frames: int = 0
    chunks: int = 0
    samples: int = 0
    ttfa_s: float | None = None
    compute_s: float = 0.0
    stop_reasons: list[str] = field(default_factory=list)
    finished: bool = False
    # the prompt's codes were kept from an earlier request or `encode_prompt` call: no codec encoder in the TTFA
    prompt_cached: bool = False

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per second of audio (< 1 is faster than real time)."""
        return self.compute_s / self.audio_seconds if self.samples else float("inf")

    def summary(self) -> str:
        ttfa = "n/a" if self.ttfa_s is None else f"{self.ttfa_s:.3f} s"
        return (
            f"time to first audio {ttfa}, RTF {self.rtf:.3f} ({self.compute_s:.2f} s for {self.audio_seconds:.2f} s "
            f"of audio, {self.frames} frames at {self.frame_rate:g} FPS, {self.pieces} sentence(s))"
        )


class SynthesisStream(Iterator[np.ndarray]):
    """The chunks of one request (an iterator) and its live `stats`. `close()` stops generation early."""

    def __init__(self, chunks: Iterator[np.ndarray], stats: SynthesisStats, started: float) -> None:
        self.stats = stats
        self._chunks = chunks
        self.stats.compute_s = time.perf_counter() - started  # preparation so far

    def __iter__(self) -> SynthesisStream:
        return self

    def __next__(self) -> np.ndarray:
        start = time.perf_counter()
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.stats.compute_s += time.perf_counter() - start
            self.stats.finished = True
            raise
        self.stats.compute_s += time.perf_counter() - start
        self.stats.chunks += 1
        self.stats.samples += chunk.size
        if self.stats.ttfa_s is None:
            self.stats.ttfa_s = self.stats.compute_s
        return chunk

    def read_all(self) -> np.ndarray:
        """The remaining chunks joined: float32 [T] (empty when the model produced no frame)."""
        chunks = list(self)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class Synthesizer:
    """A KoelLM + the NanoCodec its tokens came from + the text front end. See the module docstring.

    Args:
        lm, codec: loaded models (the codec's codebooks and frame rate must be the LM's).
        vocab: the LM's PhonemeVocab (default: PhonemeVocab.default()).
        language: espeak-ng language of the text; g2p: a shared G2P (default: a new one for `language`).
        max_text_chars: longer texts are refused (SynthesisError) rather than tying up the machine.
        sentence_pause_s: codec silence inserted between sentences of a long text (0 = none).
        backend: of the LM step and the streaming decoder: "auto" (ONNX Runtime for float32 models on the CPU when
            it is installed, else torch), "torch" or "onnxruntime" (see the module doc).
    """

    def __init__(
        self,
        lm: KoelLM,
        codec: NanoCodec,
        vocab: PhonemeVocab | None = None,
        language: str = "en-us",
        g2p: G2P | None = None,
        max_text_chars: int = 5000,
        sentence_pause_s: float = 0.2,
        backend: str = "auto",
    ) -> None:
        self.lm = lm.eval()
        self.codec = codec.eval()
        self.vocab = vocab if vocab is not None else PhonemeVocab.default()
        self.g2p = g2p if g2p is not None else G2P(language)
        self.max_text_chars = max_text_chars
        self._check_models()
        self.backend = resolve_backend(backend, lm, codec)
        if self.backend == "onnxruntime":  # export now (seconds), not in the first request's time to first audio
            onnx_backbone_step(lm)
            onnx_step(codec.audio_decoder)
        self.decoders = DecoderPool(codec.audio_decoder)
        # on a GPU each decoder replica replays its streaming step as a CUDA graph (codec.streaming.StaticStreamingStep)
        self.static_decoder_step = codec.device.type == "cuda"
        self._prompt_codes: collections.OrderedDict[bytes, torch.Tensor] = collections.OrderedDict()
        self._prompt_lock = threading.Lock()
        pause_frames = round(sentence_pause_s * codec.frame_rate)
        silence = torch.zeros(1, (pause_frames + 2) * codec.samples_per_frame)
        self.pause_codes = codec.encode(silence)[:, :, 1 : 1 + pause_frames].cpu()  # (1, K, pause) codec silence

    # ---- loading --------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, lm: str | Path | KoelLM, codec: str | Path | NanoCodec, device: str = "cpu", **kwargs: Any
    ) -> Synthesizer:
        """Load the LM (directory or hub id) and the codec (directory, hub id, or an NVIDIA `.nemo` file).

        The LM directory's `phonemes.json` (when present) is its phoneme vocabulary. `kwargs` go to __init__.
        """
        vocab = kwargs.pop("vocab", None)
        if not isinstance(lm, KoelLM):
            lm_dir = _resolve_lm_dir(lm)
            if vocab is None and (lm_dir / VOCAB_NAME).is_file():
                vocab = PhonemeVocab.load(lm_dir / VOCAB_NAME)
            lm = KoelLM.from_pretrained(lm_dir, device=device)
        if not isinstance(codec, NanoCodec):
            codec = load_codec(codec, device)
        return cls(lm, codec.to(device), vocab=vocab, **kwargs)

    def _check_models(self) -> None:
        c, codec = self.lm.config, self.codec
        problems = []
        if c.num_codebooks != codec.num_codebooks or c.codebook_size != codec.codebook_size:
            problems.append(
                f"the LM predicts {c.num_codebooks} codebooks of {c.codebook_size} codes, the codec has "
                f"{codec.num_codebooks} of {codec.codebook_size}"
            )
        if abs(c.codec.frame_rate - codec.frame_rate) > 1e-3 or c.codec.sample_rate != codec.sample_rate:
            problems.append(
                f"the LM was trained on {c.codec.frame_rate:g} FPS / {c.codec.sample_rate} Hz tokens, the codec "
                f"runs at {codec.frame_rate:g} FPS / {codec.sample_rate} Hz"
            )
        if len(self.vocab) > c.phoneme_vocab_size:
            problems.append(f"the phoneme vocabulary has {len(self.vocab)} ids, the LM only {c.phoneme_vocab_size}")
        if not codec.cfg.decoder.causal:
            problems.append("the codec's decoder is non-causal (decoder.causal: false), so it cannot stream")
        if problems:
            where = f" (the LM's tokens came from {c.codec.codec_dir})" if c.codec.codec_dir else ""
            raise SynthesisError(
                "the LM and the codec do not belong together: " + "; ".join(problems) + where + "; load the codec "
                "the LM was trained with"
            )

    # ---- geometry -------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    @property
    def samples_per_frame(self) -> int:
        return self.codec.samples_per_frame

    # ---- inputs ---------------------------------------------------------------------------------------------
    def prepare_prompt(self, wav: np.ndarray, sample_rate: int) -> PromptClip:
        """User audio -> trimmed, capped clip at the codec's rate (PromptError when unusable)."""
        c = self.lm.config
        return prepare_prompt(wav, sample_rate, self.sample_rate, c.min_prompt_seconds, c.max_prompt_seconds)

    def encode_prompt(self, wav: np.ndarray, sample_rate: int) -> torch.Tensor:
        """User audio -> speaker-prompt codes long [K, P] (what `stream` conditions on)."""
        return self.prompt_codes(self.prepare_prompt(wav, sample_rate)).cpu()  # (K, P)

    def prompt_codes(self, clip: PromptClip) -> torch.Tensor:
        """A prepared prompt clip -> its codes long [K, P] on the codec's device.

        The codes of the last PROMPT_CACHE_SIZE distinct clips are kept (keyed by a hash of the samples): a voice
        used again (the demo's usual case) skips the codec encoder, the largest part of the time to first audio.
        Encoding is deterministic, so a kept entry is exactly what encoding again would give.
        """
        return self._kept_or_encoded(clip)[0]

    def _kept_or_encoded(self, clip: PromptClip) -> tuple[torch.Tensor, bool]:
        """(codes [K, P], whether they were kept) for a prepared clip; see `prompt_codes`."""
        key = hashlib.blake2b(clip.wav.tobytes(), digest_size=16).digest()
        with self._prompt_lock:
            codes = self._prompt_codes.get(key)
            if codes is not None:
                self._prompt_codes.move_to_end(key)
                return codes, True
        codes = self.codec.encode(torch.from_numpy(clip.wav)[None])[0]  # (K, P)
        with self._prompt_lock:
            self._prompt_codes[key] = codes
            while len(self._prompt_codes) > PROMPT_CACHE_SIZE:
                self._prompt_codes.popitem(last=False)
        return codes, False

    def forget_prompts(self) -> None:
        """Drop the kept prompt codes (the next request in any voice encodes its prompt again)."""
        with self._prompt_lock:
            self._prompt_codes.clear()

    def check_text(self, text: str) -> None:
        """Refuse empty and over-long text (SynthesisError) before any work is done."""
        if not isinstance(text, str) or not text.strip():
            raise SynthesisError("the text is empty: type what the voice should say")
        if len(text) > self.max_text_chars:
            raise SynthesisError(
                f"the text is too long: {len(text)} characters, the limit is {self.max_text_chars}; shorten it or "
                "split it into several requests"
            )

    def text_pieces(self, text: str, prompt_codes: torch.Tensor | None = None) -> list[TextPiece]:
        """Text -> one TextPiece per sentence, each short enough for the LM with `prompt_codes` [K, P].

        Raises SynthesisError (empty, too long) or TextError (nothing speakable, an unknown phoneme).
        """
        self.check_text(text)
        pieces: list[TextPiece] = []
        first_error: TextError | None = None
        for sentence in split_sentences(text):
            try:
                pieces.extend(self._fit(sentence, prompt_codes))
            except TextError as e:  # an unspeakable fragment ("--") in a longer text is left out
                first_error = first_error or e
        if not pieces:
            raise first_error or SynthesisError("the text is empty: type what the voice should say")
        return pieces

    def _piece(self, text: str) -> TextPiece:
        phonemes = self.g2p(text)
        return TextPiece(text, phonemes, self.vocab.encode(phonemes))

    def _fit(self, sentence: str, prompt_codes: torch.Tensor | None) -> list[TextPiece]:
        """A sentence -> pieces that fit the LM's context (halving at clause/word boundaries as needed)."""
        piece = self._piece(sentence)
        if prompt_codes is None:
            return [piece]
        try:
            check_inputs(self.lm, piece.ids, prompt_codes)
            return [piece]
        except GenerationError:
            halves = split_sentences(sentence, max_chars=max(1, len(sentence) // 2))
            if len(halves) < 2:
                raise
            return [p for half in halves for p in self._fit(half, prompt_codes)]

    # ---- synthesis ------------------------------------------------------------------------------------------
    def stream(
        self,
        text: str,
        prompt_wav: np.ndarray,
        prompt_sr: int,
        seed: int = 0,
        cfg_scale: float = 2.5,
        temperature: float = 0.6,
        top_k: int = 80,
        chunk_frames: int | str = 1,
        **generate_options: Any,
    ) -> SynthesisStream:
        """Start one request; iterate the result for float32 chunks of `chunk_frames` frames at `sample_rate`
        ("grow": single frames, then larger chunks as speed allows; see the module doc).

        Text and prompt are checked here, before the first chunk (SynthesisError, TextError, PromptError);
        `generate_options` go to `lm.stream` (top_p, monotonic_prior, max_frames, ...).
        """
        started = time.perf_counter()
        check_chunk_frames(chunk_frames)  # before any work
        self.check_text(text)
        clip = self.prepare_prompt(prompt_wav, prompt_sr)
        prompt_codes, kept = self._kept_or_encoded(clip)  # (K, P)
        pieces = self.text_pieces(text, prompt_codes)
        stats = SynthesisStats(self.sample_rate, self.frame_rate, prompt_seconds=clip.seconds, prompt_cached=kept)
        options = dict(cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, **generate_options)
        chunks = self._chunks(pieces, prompt_codes, seed, chunk_frames, options, stats)
        return SynthesisStream(chunks, stats, started)

    def synthesize(self, text: str, prompt_wav: np.ndarray, prompt_sr: int, **options: Any) -> np.ndarray:
        """The whole utterance: float32 [T] at `sample_rate`, equal to the joined chunks of `stream`."""
        return self.stream(text, prompt_wav, prompt_sr, **options).read_all()

    def _chunks(
        self,
        pieces: list[TextPiece],
        prompt_codes: torch.Tensor,
        seed: int,
        chunk_frames: int | str,
        options: dict[str, Any],
        stats: SynthesisStats,
    ) -> Iterator[np.ndarray]:
        plan = ChunkPlan(chunk_frames, 1.0 / self.frame_rate)
        generator = torch.Generator(device=self.lm.device).manual_seed(int(seed))
        pending: list[torch.Tensor] = []  # frames [1, K, 1] not decoded yet
        dtype = next(self.codec.audio_decoder.parameters()).dtype

        def decode(frames: list[torch.Tensor]) -> np.ndarray:  # = codec.decode, through this request's decoder
            latents = self.codec.dequantize(torch.cat(frames, dim=2)).to(dtype)  # (1, D, n)
            return self.decode_chunk(decoder, latents)[0].float().cpu().numpy()

        with self.decoders.lease() as decoder, decoder.streaming(1):
            resumed = time.perf_counter()  # generating since (the consumer's time between chunks is not ours)
            for index, piece in enumerate(pieces):
                frames = self._frames(piece, prompt_codes, generator, options, stats)
                if index > 0 and self.pause_codes.shape[2]:
                    frames = itertools.chain(self.pause_codes.to(self.lm.device).split(1, dim=2), frames)
                for frame in frames:  # (1, K, 1)
                    pending.append(frame)
                    stats.frames += 1
                    if len(pending) == plan.due:
                        audio, now = decode(pending), time.perf_counter()
                        plan.delivered(len(pending), now - resumed, now)
                        pending = []
                        yield audio
                        resumed = time.perf_counter()
            if pending:
                yield decode(pending)

    @torch.no_grad()
    def decode_chunk(self, decoder: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
        """`decoder(latents)` [B, D, n] -> [B, n * hop] inside `decoder.streaming(B)`, through this Synthesizer's
        decoder backend: ONNX Runtime, a CUDA graph (on a GPU) or the torch decoder."""
        if self.static_decoder_step:
            return graphed_step(decoder, latents)(latents)
        if self.backend == "onnxruntime":
            return onnx_step(decoder)(latents)
        return decoder(latents)

    def _frames(
        self,
        piece: TextPiece,
        prompt_codes: torch.Tensor,
        generator: torch.Generator,
        options: dict[str, Any],
        stats: SynthesisStats,
    ) -> Iterator[torch.Tensor]:
        reasons: list[str] = []
        options = {"step_backend": self.backend, **options}  # a step_backend in the request's options wins
        yield from self.lm.stream(piece.ids, prompt_codes, generator=generator, stop_reasons=reasons, **options)
        stats.pieces += 1
        stats.stop_reasons.extend(reasons)


def resolve_backend(name: str, lm: KoelLM, codec: NanoCodec) -> str:
    """The backend ("torch" or "onnxruntime") that `backend` `name` means for these models (see the module doc)."""
    if name not in BACKENDS:
        raise SynthesisError(f"backend {name!r} is not one of {BACKENDS}")
    models = {"LM": next(lm.parameters()), "codec": next(codec.audio_decoder.parameters())}
    unfit = [
        f"the {k} is {p.dtype} on {p.device}"
        for k, p in models.items()
        if (p.device.type, p.dtype) != ("cpu", torch.float32)
    ]
    if name == "onnxruntime" and unfit:
        raise SynthesisError(
            f"backend 'onnxruntime' runs float32 models on the CPU, but {' and '.join(unfit)}: use backend='torch'"
        )
    if name == "onnxruntime" and not onnx_runtime_available():
        raise SynthesisError("backend 'onnxruntime' needs the onnx and onnxruntime packages: pip install them")
    if name == "auto":
        return "onnxruntime" if not unfit and onnx_runtime_available() else "torch"
    return name


def graphed_step(decoder: torch.nn.Module, latents: torch.Tensor) -> StaticStreamingStep:
    """The CUDA-graph step of a streaming decoder replica for chunks shaped like `latents` [B, D, n].

    Captured on the replica's first chunk of that shape and kept on the replica: later requests reset its state
    instead of capturing again (a capture costs two warm-up steps). Must be called inside `decoder.streaming()`.
    """
    steps: dict[tuple, StaticStreamingStep] = decoder.__dict__.setdefault("_static_steps", {})
    key = (tuple(latents.shape), latents.dtype, latents.device)
    step = steps.get(key)
    if step is None:
        step = steps[key] = StaticStreamingStep(decoder, latents)
    elif step.fresh_block():
        step.reset()
    return step


class DecoderPool:
    """Replicas of a streaming decoder that share its weights; `with pool.lease() as decoder:` for one request.

    A replica is a deep copy whose parameters and buffers are the original's tensors (no weight is copied), so it
    has its own module objects and therefore its own streaming state. A leased replica belongs to one request
    until the block ends (also on error or when the request's generator is closed); idle replicas are reused.
    """

    def __init__(self, decoder: torch.nn.Module, warm: int = 1) -> None:
        self._source = decoder
        self._idle: queue.SimpleQueue[torch.nn.Module] = queue.SimpleQueue()
        for _ in range(warm):
            self._idle.put(self._replica())

    def _replica(self) -> torch.nn.Module:
        shared: dict[int, Any] = {id(t): t for t in itertools.chain(self._source.parameters(), self._source.buffers())}
        for m in self._source.modules():  # inference-layout weights are derived from the shared parameters: shared too
            shared.update({id(v): v for v in vars(m).values() if isinstance(v, DerivedWeight)})
        return copy.deepcopy(self._source, memo=shared)

    @contextlib.contextmanager
    def lease(self) -> Iterator[torch.nn.Module]:
        try:
            decoder = self._idle.get_nowait()
        except queue.Empty:
            decoder = self._replica()
        try:
            yield decoder
        finally:
            self._idle.put(decoder)

    @property
    def idle(self) -> int:
        return self._idle.qsize()


# ---- model loading --------------------------------------------------------------------------------------------
def _resolve_lm_dir(name: str | Path) -> Path:
    """An LM directory as is; a hub id fetched (config, weights, phoneme vocabulary) with huggingface_hub."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or not _HUB_ID.match(str(name)):
        raise SynthesisError(f"{name}: no such LM directory (it holds config.json + model.safetensors; `make lm`)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), allow_patterns=["config.json", "model.safetensors", VOCAB_NAME]))
    except Exception as e:
        raise SynthesisError(
            f"{name}: not a local LM directory, and fetching it as a Hugging Face hub id failed "
            f"({type(e).__name__}); check the path, or go online"
        ) from e


def load_codec(name: str | Path, device: str = "cpu") -> NanoCodec:
    """A codec directory / hub id (NanoCodec.from_pretrained), or NVIDIA's NeMo codec: a `.nemo` file or a hub id
    naming one ("nvidia/nemo-nano-codec-22khz-1.78kbps-12.5fps"), through NanoCodec.from_nemo. Weight norm folded."""
    text = str(name)
    is_nemo = text.endswith(".nemo") or (not Path(text).exists() and _HUB_ID.match(text) and "nemo" in text.lower())
    if not is_nemo:
        return NanoCodec.from_pretrained(name, device=device, fold_weight_norm=True)
    from_nemo = getattr(NanoCodec, "from_nemo", None)
    if from_nemo is None:
        raise SynthesisError(
            f"{name}: this build of the codec cannot read NVIDIA .nemo checkpoints (NanoCodec.from_nemo is missing); "
            "pass a codec directory (config.json + model.safetensors) instead"
        )
    return from_nemo(name, device=device, fold_weight_norm=True)


__all__ = [
    "DecoderPool",
    "PromptError",
    "SynthesisError",
    "SynthesisStats",
    "SynthesisStream",
    "Synthesizer",
    "TextPiece",
    "load_codec",
]
