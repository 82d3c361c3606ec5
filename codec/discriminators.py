"""The codec's GAN discriminators: multi-period, multi-resolution complex STFT, and WavLM "SLM".

    disc = Discriminator(DiscriminatorConfig(), sample_rate=22050)
    out = disc(wav)          # wav float [B, T] -> DiscriminatorOutput
    out.scores               # one logit map per sub-discriminator (5 periods + 5 STFT resolutions + 1 SLM)
    out.features             # per sub-discriminator, the activations of its hidden layers (feature matching)

Sub-discriminators, as in NanoCodec (Casanova et al. 2025, arXiv:2508.05835) and NVIDIA's low-frame-rate codec:
- PeriodDiscriminator (HiFi-GAN, Kong et al. 2020): the waveform folded into [T / p, p] columns, 2-D convs along
  time; periods (2, 3, 5, 7, 11) see periodic structure at several pitches.
- STFTDiscriminator (EnCodec, Défossez et al. 2022): 2-D convs over the real and imaginary parts of a complex STFT,
  5 resolutions from 128 to 2048 points; sees phase and harmonic detail.
- SLMDiscriminator (StyleTTS 2, Li et al. 2023): a frozen WavLM (HF `transformers`, microsoft/wavlm-base-plus at
  16 kHz) turns the audio into all its hidden layers, stacked; a small trainable conv head scores them. The WavLM
  weights are not trained and not saved with the discriminator. `slm_model: tiny-random` builds a tiny randomly
  initialised WavLM (fixed seed) so tests and offline CPU runs can exercise the code path without the hub.
All convolutions carry weight norm; activations are leaky ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codec.spectral import Resampler, stft

TINY_RANDOM_WAVLM = "tiny-random"


@dataclass
class DiscriminatorConfig:
    """Which sub-discriminators to build and how wide (defaults: the paper's)."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    period_channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024, 1024])
    # [n_fft, hop_length, win_length] per resolution
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[128, 32, 128], [256, 64, 256], [512, 128, 512], [1024, 256, 1024], [2048, 512, 2048]]
    )
    stft_channels: int = 32
    slm: bool = True
    slm_model: str = "microsoft/wavlm-base-plus"  # hub id, local directory, or "tiny-random"
    slm_sample_rate: int = 16000
    slm_channels: int = 64
    lrelu_slope: float = 0.1


@dataclass
class DiscriminatorOutput:
    """scores: per sub-discriminator, logits [B, ...]; features: per sub-discriminator, its hidden activations."""

    scores: list[torch.Tensor]
    features: list[list[torch.Tensor]]


def _conv2d(c_in: int, c_out: int, kernel: tuple[int, int], stride=(1, 1), dilation=(1, 1)) -> nn.Module:
    """Weight-normed Conv2d with 'same' padding along both axes (before striding)."""
    padding = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation, strict=True))
    return weight_norm(nn.Conv2d(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=padding))


class PeriodDiscriminator(nn.Module):
    """wav [B, T] -> folded [B, 1, T / p, p] -> 2-D convs (kernel 5 x 1, stride 3 in time) -> logits [B, 1, T', p]."""

    def __init__(self, period: int, channels: list[int], lrelu_slope: float = 0.1):
        super().__init__()
        self.period, self.lrelu_slope = period, lrelu_slope
        c_in = [1, *channels[:-1]]
        strides = [3] * (len(channels) - 1) + [1]
        self.convs = nn.ModuleList(
            [_conv2d(i, o, (5, 1), stride=(s, 1)) for i, o, s in zip(c_in, channels, strides, strict=True)]
        )
        self.post = _conv2d(channels[-1], 1, (3, 1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pad = (-wav.shape[-1]) % self.period
        x = F.pad(wav[:, None], (0, pad), mode="reflect" if pad < wav.shape[-1] else "constant")  # [B, 1, T + pad]
        x = rearrange(x, "b c (t p) -> b c t p", p=self.period)  # [B, 1, T / p, p]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)  # [B, C, T / p / 3^i, p]
            features.append(x)
        return self.post(x), features


class STFTDiscriminator(nn.Module):
    """wav [B, T] -> complex STFT as [B, 2 (re, im), frames, freqs] -> 2-D convs (stride 2 along freq) -> logits."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, channels: int = 32, lrelu_slope: float = 0.1):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length, self.lrelu_slope = n_fft, hop_length, win_length, lrelu_slope
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.convs = nn.ModuleList(
            [
                _conv2d(2, channels, (3, 9)),
                _conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(1, 1)),
                _conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(2, 1)),
                _conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(4, 1)),
                _conv2d(channels, channels, (3, 3)),
            ]
        )
        self.post = _conv2d(channels, 1, (3, 3))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        wav = wav.float()  # the STFT runs in float32 under mixed precision
        spec = stft(wav, self.n_fft, self.hop_length, self.win_length, self.window, normalized=True)  # [B, F, T']
        x = torch.stack([spec.real, spec.imag], dim=1)  # [B, 2, F, T']
        x = rearrange(x, "b c f t -> b c t f")  # [B, 2, T', F]: time along H, frequency along W
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)  # [B, C, T', F / 2^i]
            features.append(x)
        return self.post(x), features


def load_wavlm(name: str) -> nn.Module:
    """A frozen `transformers.WavLMModel`: hub id or local directory, or "tiny-random" (2 layers, 32 dims, seed 0)."""
    from transformers import WavLMConfig, WavLMModel

    if name == TINY_RANDOM_WAVLM:
        config = WavLMConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32, 32, 32, 32, 32, 32, 32),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            num_buckets=32,
            max_bucket_distance=100,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same "pretrained" model in every process and after every resume
            model = WavLMModel(config)
    else:
        try:
            model = WavLMModel.from_pretrained(name)
        except OSError as e:
            raise OSError(
                f"SLM discriminator: cannot load WavLM {name!r} ({str(e).splitlines()[0]}). Download it once "
                f"(huggingface-cli download {name}) or pass a local directory as discriminator.slm_model=..., "
                "or turn the SLM discriminator off with discriminator.slm=false"
            ) from e
    model.eval()
    model.requires_grad_(False)
    return model


class SLMDiscriminator(nn.Module):
    """wav [B, T] at `sample_rate` -> 16 kHz -> frozen WavLM, all L hidden layers [B, L * H, T'] -> conv head -> logits.

    Gradients flow through the frozen WavLM into the generator's audio; only the head is trained.
    """

    def __init__(self, config: DiscriminatorConfig, sample_rate: int):
        super().__init__()
        self.lrelu_slope = config.lrelu_slope
        self.resample = Resampler(sample_rate, config.slm_sample_rate)
        self.wavlm = load_wavlm(config.slm_model)
        num_layers = self.wavlm.config.num_hidden_layers + 1  # the CNN features + every transformer layer
        c = config.slm_channels
        self.pre = weight_norm(nn.Conv1d(num_layers * self.wavlm.config.hidden_size, c, 1))
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv1d(c, 2 * c, 5, padding=2)),
                weight_norm(nn.Conv1d(2 * c, 4 * c, 5, padding=2)),
                weight_norm(nn.Conv1d(4 * c, 4 * c, 5, padding=2)),
            ]
        )
        self.post = weight_norm(nn.Conv1d(4 * c, 1, 3, padding=1))

    def train(self, mode: bool = True) -> SLMDiscriminator:
        super().train(mode)
        self.wavlm.eval()  # frozen: no dropout, ever
        return self

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.wavlm(self.resample(wav), output_hidden_states=True).hidden_states  # L x [B, T', H]
        x = rearrange(torch.stack(hidden, dim=1), "b l t h -> b (l h) t")  # [B, L * H, T']
        x = self.pre(x)  # [B, C, T']
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.lrelu_slope)
            features.append(x)
        return self.post(x), features


class Discriminator(nn.Module):
    """All sub-discriminators: wav [B, T] -> DiscriminatorOutput (scores and features, one per sub-discriminator)."""

    def __init__(self, config: DiscriminatorConfig, sample_rate: int):
        super().__init__()
        self.config = config
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p, list(config.period_channels), config.lrelu_slope) for p in config.periods]
            + [STFTDiscriminator(*res, config.stft_channels, config.lrelu_slope) for res in config.stft_resolutions]
        )
        if config.slm:
            self.discriminators.append(SLMDiscriminator(config, sample_rate))
        if len(self.discriminators) == 0:
            raise ValueError("DiscriminatorConfig: no discriminator left (periods and stft_resolutions empty, slm off)")

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        scores, features = [], []
        for disc in self.discriminators:
            score, feats = disc(wav)
            scores.append(score)
            features.append(feats)
        return DiscriminatorOutput(scores, features)

    def set_trainable(self, trainable: bool) -> None:
        """Switch gradients of the trainable parameters on or off (the frozen WavLM stays frozen)."""
        for name, p in self.named_parameters():
            p.requires_grad_(trainable and ".wavlm." not in name)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state to checkpoint: everything except the frozen WavLM (reloaded from its source)."""
        return {k: v for k, v in self.state_dict().items() if ".wavlm." not in k}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"discriminator checkpoint does not fit this DiscriminatorConfig (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}); resume with the run's own config"
            )
        self.load_state_dict(state, strict=False)
