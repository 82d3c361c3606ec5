"""Speaker consistency loss with a frozen, pluggable speaker encoder (NanoCodec's SCL).

    loss_fn = SpeakerConsistencyLoss(build_speaker_encoder("resemblyzer"), sample_rate=22050)
    loss = loss_fn(real, fake)     # float [B, T] each -> scalar 1 - mean cos(spk(real), spk(fake)), in [0, 2]

NanoCodec (Casanova et al. 2025) adds -cos(spk(real), spk(reconstructed)) x 0.1 to the generator loss so the
codec keeps the speaker's identity. We minimise 1 - cos (same gradient, 0 when the voices match). The speaker
encoder is frozen and differentiable end to end: resampling, mel front end and network are torch, so the
gradient reaches the reconstructed audio.

A speaker encoder is any `SpeakerEncoder`: wav [B, T] at its `sample_rate` -> L2-normalised embedding [B, D].
Plug another one in by subclassing it and adding it to `SPEAKER_ENCODERS`.

`ResemblyzerEncoder` re-implements Resemblyzer's VoiceEncoder (GE2E, Wan et al. 2018; 3-layer LSTM over 40-band
mel frames at 16 kHz, 256-dim embedding) and loads the weights that the `resemblyzer` package ships
(`pretrained.pt`, read with `torch.load(weights_only=True)`). Its front end reproduces resemblyzer's
librosa-based preprocessing: volume normalised to -30 dBFS (only ever raised), power mel, 25 ms Hann windows,
10 ms hop, 40 Slaney mel bands, zero-padded centered frames (tests/test_codec_train.py checks it against
resemblyzer). Resemblyzer's webrtcvad silence trimming is not differentiable and is skipped: training crops
are ~1 s of speech.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from codec.spectral import MelConfig, MelSpectrogram, Resampler

INT16_MAX = 2**15 - 1


class SpeakerEncoder(nn.Module):
    """Frozen speaker embedding: wav float [B, T] at `self.sample_rate` -> L2-normalised embedding [B, D]."""

    sample_rate: int = 16000

    def forward(self, wav: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def normalize_volume(wav: torch.Tensor, target_dbfs: float = -30.0, max_gain_db: float = 60.0) -> torch.Tensor:
    """Raise each utterance of wav [B, T] to `target_dbfs` RMS (never lowered; gain capped for near-silence).

    Resemblyzer's `normalize_volume(wav, -30, increase_only=True)`; the gain is a constant per utterance (detached).
    """
    rms = (wav.detach() * INT16_MAX).square().mean(dim=-1, keepdim=True).sqrt()  # [B, 1]
    dbfs = 20 * torch.log10(rms.clamp_min(1e-9) / INT16_MAX)
    change_db = (target_dbfs - dbfs).clamp(min=0.0, max=max_gain_db)
    return wav * 10 ** (change_db / 20)


class ResemblyzerEncoder(SpeakerEncoder):
    """Resemblyzer's VoiceEncoder, torch: wav [B, T] at 16 kHz -> mel [B, frames, 40] -> LSTM -> embedding [B, 256]"""

    sample_rate = 16000

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        window = self.sample_rate * 25 // 1000  # 400 samples = 25 ms
        self.mel = MelSpectrogram(
            MelConfig(
                sample_rate=self.sample_rate,
                n_fft=window,
                hop_length=self.sample_rate * 10 // 1000,  # 160 samples = 10 ms
                n_mels=40,
                power=2.0,
                norm="slaney",
                pad_mode="constant",
                log="none",
            )
        )
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.load_weights(weights)
        self.eval()
        self.requires_grad_(False)

    def load_weights(self, weights: str | Path | None) -> None:
        if weights is None:  # the file the resemblyzer package ships (found without importing librosa & co.)
            spec = importlib.util.find_spec("resemblyzer")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(
                    "speaker encoder 'resemblyzer' needs the resemblyzer package for its weights "
                    "(pip install resemblyzer), or set loss.speaker_encoder=none"
                )
            weights = Path(spec.submodule_search_locations[0]) / "pretrained.pt"
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"resemblyzer weights not found: {weights}")
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
        self.load_state_dict(state)

    def train(self, mode: bool = True) -> ResemblyzerEncoder:
        return super().train(False)  # frozen

    def mel_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, T] at 16 kHz (volume already normalised) -> power mel [B, frames, 40], frames = T // 160 + 1."""
        return self.mel(wav).transpose(1, 2)

    def embed_frames(self, mels: torch.Tensor) -> torch.Tensor:
        """mel [B, frames, 40] -> embedding [B, 256]: last hidden state of the top LSTM layer, ReLU, L2 norm."""
        # cuDNN refuses backward through an LSTM in eval mode; the LSTM is frozen, so run it with cuDNN off.
        with torch.backends.cudnn.flags(enabled=False):
            _, (hidden, _) = self.lstm(mels)  # hidden [num_layers, B, 256]
        embeds = F.relu(self.linear(hidden[-1]))  # [B, 256]
        return embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.embed_frames(self.mel_frames(normalize_volume(wav)))


SPEAKER_ENCODERS: dict[str, type[SpeakerEncoder]] = {"resemblyzer": ResemblyzerEncoder}


def build_speaker_encoder(name: str) -> SpeakerEncoder | None:
    """The speaker encoder called `name` (frozen), or None for "none"."""
    if name == "none":
        return None
    if name not in SPEAKER_ENCODERS:
        raise ValueError(f"unknown speaker encoder {name!r}; choose one of {sorted(SPEAKER_ENCODERS)} or 'none'")
    return SPEAKER_ENCODERS[name]()


class SpeakerConsistencyLoss(nn.Module):
    """(real [B, T], fake [B, T]) at `sample_rate` -> 1 - mean cos(spk(real), spk(fake)); gradient flows into fake."""

    def __init__(self, encoder: SpeakerEncoder, sample_rate: int):
        super().__init__()
        self.encoder = encoder
        self.resample = Resampler(sample_rate, encoder.sample_rate)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.resample(wav.float()))

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.embed(real)  # [B, D]
        cos = F.cosine_similarity(self.embed(fake), target, dim=-1)  # [B]
        return 1.0 - cos.mean()


def cosine_to_degrees(cos: float) -> float:
    """Angle between two embeddings, for readable logs."""
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
