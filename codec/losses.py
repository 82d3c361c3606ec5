"""The codec's training losses: reconstruction (multi-resolution mel + STFT) and adversarial (LSGAN + feature matching).

    recon = ReconstructionLoss(LossConfig(), sample_rate=22050)
    mel, stft = recon(real, fake)                        # float [B, T] each -> two scalars
    d_loss = discriminator_loss(disc(real), disc(fake.detach()))
    g_loss = generator_loss(disc(fake)); fm = feature_matching_loss(disc(real), disc(fake))

Following NanoCodec (Casanova et al. 2025) and NVIDIA's low-frame-rate codec recipe:
- multi-resolution mel L1: 7 resolutions, n_fft 32 .. 2048 (hop n_fft / 4) with 5 .. 320 mel bands, magnitude
  mels compressed as ln(mel + 1), averaged over resolutions (weight 1.0);
- multi-resolution log-magnitude STFT L1 on the same resolutions, ln(|S| + 1) (weight 20 in NVIDIA's config);
- least-squares GAN (Mao et al. 2017): D minimises (1 - D(real))^2 + D(fake)^2, G minimises (1 - D(fake))^2;
- feature matching (Larsen et al. 2016; MelGAN): L1 between the discriminators' hidden activations on real and
  reconstructed audio, averaged over layers and sub-discriminators (weight 1.0).
The speaker consistency loss lives in codec/speaker.py. Identical signals give exactly zero reconstruction loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from codec.discriminators import DiscriminatorOutput
from codec.spectral import MelConfig, MelSpectrogram, stft


@dataclass
class LossConfig:
    """Loss weights and the reconstruction losses' resolutions (defaults: the paper recipe)."""

    # [n_fft, hop_length, win_length] per resolution, shared by the mel and the STFT loss
    resolutions: list[list[int]] = field(
        default_factory=lambda: [
            [32, 8, 32],
            [64, 16, 64],
            [128, 32, 128],
            [256, 64, 256],
            [512, 128, 512],
            [1024, 256, 1024],
            [2048, 512, 2048],
        ]
    )
    mel_bands: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    log_guard: float = 1.0  # ln(x + log_guard) for mels and STFT magnitudes
    mel_weight: float = 1.0
    stft_weight: float = 20.0
    gan_weight: float = 1.0
    feature_weight: float = 1.0
    speaker_weight: float = 0.1
    speaker_encoder: str = "resemblyzer"  # see codec/speaker.py; "none" turns the speaker loss off
    speaker_start_step: int = 0  # the speaker loss joins at this training step (0 = from the start)


@dataclass
class ReconstructionLosses:
    """Unweighted reconstruction losses (scalars)."""

    mel: torch.Tensor
    stft: torch.Tensor


class ReconstructionLoss(nn.Module):
    """(real [B, T], fake [B, T]) -> ReconstructionLosses(mel L1, log-STFT L1), each averaged over resolutions."""

    def __init__(self, config: LossConfig, sample_rate: int):
        super().__init__()
        if len(config.resolutions) != len(config.mel_bands):
            raise ValueError(
                f"LossConfig: {len(config.resolutions)} resolutions but {len(config.mel_bands)} mel_bands; "
                "give one number of mel bands per resolution"
            )
        self.log_guard = config.log_guard
        self.resolutions = [tuple(r) for r in config.resolutions]
        self.mels = nn.ModuleList(
            MelSpectrogram(
                MelConfig(
                    sample_rate=sample_rate,
                    n_fft=n_fft,
                    hop_length=hop,
                    win_length=win,
                    n_mels=n_mels,
                    power=1.0,
                    norm=None,
                    log="log",
                    log_guard=config.log_guard,
                )
            )
            for (n_fft, hop, win), n_mels in zip(self.resolutions, config.mel_bands, strict=True)
        )
        for i, (_, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window{i}", torch.hann_window(win), persistent=False)

    def magnitude(self, wav: torch.Tensor, i: int) -> torch.Tensor:
        """|STFT| of wav [B, T] at resolution i -> [B, F, frames] (guarded: finite gradient at 0)."""
        n_fft, hop, win = self.resolutions[i]
        spec = stft(wav.float(), n_fft, hop, win, getattr(self, f"window{i}"))  # [B, F, frames]
        return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-12)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> ReconstructionLosses:
        if real.shape != fake.shape:
            raise ValueError(f"reconstruction loss: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ")
        # one STFT per signal and resolution, shared by the mel and the log-STFT loss
        mel_l1, stft_l1 = [], []
        for i, mel in enumerate(self.mels):
            mag_fake = self.magnitude(fake, i)  # [B, F, frames]
            with torch.no_grad():
                mag_real = self.magnitude(real, i)
            mel_l1.append((mel.from_spectrum(mag_fake) - mel.from_spectrum(mag_real)).abs().mean())
            log_fake, log_real = torch.log(mag_fake + self.log_guard), torch.log(mag_real + self.log_guard)
            stft_l1.append((log_fake - log_real).abs().mean())
        return ReconstructionLosses(mel=sum(mel_l1) / len(self.mels), stft=sum(stft_l1) / len(self.resolutions))


def discriminator_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    """LSGAN discriminator loss, mean over sub-discriminators of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    losses = [((1 - r) ** 2).mean() + (f**2).mean() for r, f in zip(real.scores, fake.scores, strict=True)]
    return torch.stack(losses).mean()


def generator_loss(fake: DiscriminatorOutput) -> torch.Tensor:
    """LSGAN generator loss, mean over sub-discriminators of mean((1 - D(fake))^2)."""
    return torch.stack([((1 - f) ** 2).mean() for f in fake.scores]).mean()


def feature_matching_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    """Mean over sub-discriminators of the mean over layers of mean |feat(real) - feat(fake)| (real side detached)."""
    per_disc = []
    for feats_real, feats_fake in zip(real.features, fake.features, strict=True):
        layers = [(r.detach() - f).abs().mean() for r, f in zip(feats_real, feats_fake, strict=True)]
        per_disc.append(torch.stack(layers).mean())
    return torch.stack(per_disc).mean()


def split_batch(out: DiscriminatorOutput, n_first: int) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    """Split the output of one discriminator pass over cat([a, b]) into the outputs for a (first n) and b."""
    first = DiscriminatorOutput([s[:n_first] for s in out.scores], [[f[:n_first] for f in fs] for fs in out.features])
    second = DiscriminatorOutput([s[n_first:] for s in out.scores], [[f[n_first:] for f in fs] for fs in out.features])
    return first, second
