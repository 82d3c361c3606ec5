"""Speaker similarity (SECS) behind one small interface: embeddings of utterances and their cosine similarity.

    spk = load_speaker_model()                       # offline default: resemblyzer
    emb = spk.embed([wav_a, wav_b], sr=22050)        # list of float [T] mono arrays -> float32 [N, D], L2-normalised
    similarity(emb[0], emb[1])                       # cosine in [-1, 1]; rows of [N, D] pairs -> [N]
    spk.name                                         # "resemblyzer" ... : say it in every report

Backends (`load_speaker_model(backend, model)`):
  resemblyzer  GE2E d-vector (Wan et al. 2018), 256-dim, with the weights the `resemblyzer` package ships. The
               network and mel front end are `codec.speaker.ResemblyzerEncoder` (the encoder the codec's speaker
               consistency loss uses; one implementation in the project). Embedding follows resemblyzer's
               `preprocess_wav` + `embed_utterance`: 16 kHz, volume to -30 dBFS, long silences trimmed
               (webrtcvad), 1.6 s partial windows at 1.3 per second, mean of the partial embeddings, L2 norm.
  wavlm        `transformers` WavLMForXVector, any hub id or local folder (default microsoft/wavlm-base-plus-sv,
               the speaker-verification model Koel-TTS and NanoCodec report SECS with; online only).

When the evaluated codec was trained with a speaker-consistency loss on the same encoder (`name` equals the
codec's `loss.speaker_encoder`), its SECS is optimistic: `shares_encoder_with(...)` tells, and reports say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from codec.audio import AudioError, check_array, resample

SPEAKER_RATE = 16000  # both backends embed 16 kHz audio
DEFAULT_WAVLM = "microsoft/wavlm-base-plus-sv"
BACKENDS = ("resemblyzer", "wavlm")


class SpeakerModelError(RuntimeError):
    """A speaker-embedding backend or model that cannot be loaded; the message says what to install or pass."""


def _to_16k(wavs: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
    if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
        raise AudioError("embed: pass a list of waveforms, not one waveform")
    out = []
    for i, wav in enumerate(wavs):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"embed: waveform {i} must be mono [T], got shape {wav.shape}")
        out.append(resample(check_array(wav, name=f"waveform {i}"), sr, SPEAKER_RATE))
    return out


def similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray | float:
    """Cosine similarity: a, b [D] -> float; a, b [N, D] -> [N] (row i of a with row i of b)."""
    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64) for x in (a, b))
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(f"similarity: need two [D] or two [N, D] embeddings, got {a.shape} and {b.shape}")
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return float(cos) if a.ndim == 1 else cos


class SpeakerModel:
    """Base class: `embed(wavs, sr) -> [N, D]` L2-normalised; `name` identifies backend and model for reports."""

    name: str = "speaker"
    training_encoder: str | None = None  # the codec.speaker.SPEAKER_ENCODERS key of the same network, if any

    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        raise NotImplementedError

    def pair_similarity(self, wavs_a: Sequence[np.ndarray], wavs_b: Sequence[np.ndarray], sr: int) -> np.ndarray:
        """Cosine similarity of wavs_a[i] and wavs_b[i] -> [N] (e.g. original vs reconstruction)."""
        if len(wavs_a) != len(wavs_b):
            raise ValueError(f"pair_similarity: {len(wavs_a)} vs {len(wavs_b)} waveforms")
        return np.atleast_1d(similarity(self.embed(wavs_a, sr), self.embed(wavs_b, sr)))

    def shares_encoder_with(self, codec_speaker_encoder: str | None) -> bool:
        """True when the codec's speaker-consistency loss used this same network (then SECS is optimistic)."""
        return self.training_encoder is not None and codec_speaker_encoder == self.training_encoder

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


# ---- resemblyzer -----------------------------------------------------------------------------------------------

PARTIAL_FRAMES = 160  # 1.6 s of 10 ms mel frames per partial window (resemblyzer's partials_n_frames)
PARTIAL_RATE = 1.3  # partial windows per second
MIN_COVERAGE = 0.75  # keep a last, zero-padded window only if this much of it is audio
HOP = 160  # samples per mel frame at 16 kHz


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame slices of the partial windows of an utterance (resemblyzer's `compute_partial_slices`)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round(SPEAKER_RATE / PARTIAL_RATE / HOP))  # 77 frames
    starts = range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    slices = [slice(s, s + PARTIAL_FRAMES) for s in starts]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


class ResemblyzerSpeaker(SpeakerModel):
    """GE2E d-vectors through `codec.speaker.ResemblyzerEncoder`, averaged over 1.6 s partial windows."""

    def __init__(self, trim_silence: bool = True):
        try:
            from codec.speaker import ResemblyzerEncoder
        except ImportError as e:
            raise SpeakerModelError(f"codec.speaker.ResemblyzerEncoder is unavailable ({e})") from e
        try:
            self.encoder = ResemblyzerEncoder()
        except (ImportError, FileNotFoundError) as e:
            raise SpeakerModelError(f"resemblyzer weights unavailable ({e}): pip install resemblyzer") from e
        self.trim_silence = trim_silence
        self.name = "resemblyzer"
        self.training_encoder = "resemblyzer"

    def _trim(self, wav: np.ndarray) -> np.ndarray:
        """resemblyzer's webrtcvad-based removal of silences longer than ~0.5 s (skipped if nothing would be left)."""
        if not self.trim_silence:
            return wav
        from resemblyzer.audio import trim_long_silences

        trimmed = trim_long_silences(wav)
        return trimmed if trimmed.size >= HOP * 10 else wav

    @torch.no_grad()
    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        from codec.speaker import normalize_volume

        embeddings = []
        for wav in _to_16k(wavs, sr):
            x = normalize_volume(torch.from_numpy(wav)[None])[0].numpy()  # [T], -30 dBFS (raised only)
            x = self._trim(x)
            slices = partial_slices(x.size)
            x = np.pad(x, (0, max(0, slices[-1].stop * HOP - x.size)))
            mel = self.encoder.mel_frames(torch.from_numpy(x)[None].float())[0]  # [frames, 40]
            partials = torch.stack([mel[s] for s in slices])  # [P, 160, 40]
            emb = self.encoder.embed_frames(partials).mean(0)  # [256]
            embeddings.append((emb / emb.norm().clamp_min(1e-8)).numpy())
        return np.stack(embeddings).astype(np.float32)  # [N, 256]


# ---- WavLM (transformers) --------------------------------------------------------------------------------------


class WavLMSpeaker(SpeakerModel):
    """transformers WavLMForXVector x-vectors (one utterance at a time, so no padding enters an embedding)."""

    def __init__(self, model: str = DEFAULT_WAVLM, device: str = "cpu"):
        from transformers import AutoFeatureExtractor, WavLMForXVector

        try:
            self.features = AutoFeatureExtractor.from_pretrained(model)
            self.model = WavLMForXVector.from_pretrained(model).to(device).eval()
        except Exception as e:
            raise SpeakerModelError(
                f"WavLM speaker model {model!r} could not be loaded ({e}); offline, pass a local folder saved "
                "with save_pretrained (model + feature extractor)"
            ) from e
        self.device = device
        self.name = f"wavlm:{model}"

    @torch.no_grad()
    def embed(self, wavs: Sequence[np.ndarray], sr: int) -> np.ndarray:
        embeddings = []
        for wav in _to_16k(wavs, sr):
            inputs = self.features(wav, sampling_rate=SPEAKER_RATE, return_tensors="pt")
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            emb = out.embeddings[0]  # [D]
            embeddings.append((emb / emb.norm().clamp_min(1e-8)).cpu().numpy())
        return np.stack(embeddings).astype(np.float32)  # [N, D]


def load_speaker_model(backend: str = "auto", model: str | None = None, device: str = "cpu") -> SpeakerModel:
    """backend "auto" (= resemblyzer, offline) | "resemblyzer" | "wavlm" (model: hub id or local folder)."""
    if backend in ("auto", "resemblyzer"):
        if model not in (None, "resemblyzer"):
            raise SpeakerModelError(f"resemblyzer has one built-in model, got model={model!r}")
        return ResemblyzerSpeaker()
    if backend == "wavlm":
        return WavLMSpeaker(model or DEFAULT_WAVLM, device=device)
    raise SpeakerModelError(f"unknown speaker backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")
