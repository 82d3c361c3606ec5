"""NVIDIA NeMo's own codec modules as the reference for codec/nemo.py (imported only where NeMo is installed).

    ref = NemoReference.from_config("tests/fixtures/nemo/configs/<name>.yaml", seed=0, audio=wav)
    ref.save_nemo(path)                 # a .nemo in NeMo's layout: tar of ./model_config.yaml + ./model_weights.ckpt
    codes = ref.encode(wav)             # float [B, T] -> long [B, K, F]   (AudioCodecModel.encode's steps)
    audio = ref.decode(codes)           # long [B, K, F] -> float [B, F * hop]  (AudioCodecModel.decode's steps)

The encoder, quantizer and decoder are NeMo's classes (`nemo.collections.tts.modules.audio_codec_modules`), built
from the config's `_target_` and arguments as NeMo's `AudioCodecModel` builds them; the .nemo tar is written by
NeMo's `SaveRestoreConnector`, the state dict keys are NeMo's (`audio_encoder.*`, `vector_quantizer.*`,
`audio_decoder.*`). Weights are random but every tensor is made distinct (weight-norm gains, snake alphas), so a
swapped or mis-mapped tensor shows; the encoder's output and the decoder's pre-clamp output are rescaled on the
given audio so the FSQ codes spread over many levels and the waveform is not clamped flat (a comparison that
could not fail otherwise). Used by tests/test_nemo_reference.py and scripts/make_nemo_golden.py.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from einops import rearrange
from nemo.collections.tts.modules import audio_codec_modules as acm

NEMO_PREFIX = "nemo.collections.tts.modules.audio_codec_modules."


def build(section: dict[str, Any]) -> torch.nn.Module:
    """NeMo module from a config section with `_target_` (what NeMo's safe_instantiate does for these classes)."""
    kwargs = dict(section)
    target = kwargs.pop("_target_")
    assert target.startswith(NEMO_PREFIX), target
    return getattr(acm, target[len(NEMO_PREFIX) :])(**kwargs)


def _randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Distinct random gains (weight-norm g = |v| x U(0.5, 1.5)) and snake alphas (U(0.5, 1.5))."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("original0"):
                v = dict(module.named_parameters())[name[: -len("original0")] + "original1"]
                norm = v.flatten(1).norm(dim=1).view_as(p)
                p.copy_(norm * (0.5 + torch.rand(p.shape, generator=gen)))
            elif name.endswith("alpha"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))


def _rescale_output_conv(conv: torch.nn.Module, out: torch.Tensor, std: float) -> None:
    """Make `out` (the conv's output [B, C, T]) zero-mean with `std` per channel, through the conv's g and bias.

    The first tenth of the frames is left out of the statistics: a causal stack's start-up transient (zero
    history) would otherwise dominate them.
    """
    out = out[..., out.shape[-1] // 10 :]
    mean = out.mean(dim=(0, 2))
    scale = std / out.std(dim=(0, 2)).clamp_min(1e-8)
    with torch.no_grad():
        conv.conv.parametrizations.weight.original0.mul_(scale.view(-1, 1, 1))
        conv.conv.bias.copy_((conv.conv.bias - mean) * scale)


@dataclass
class NemoReference:
    config: dict[str, Any]
    encoder: torch.nn.Module
    quantizer: torch.nn.Module
    decoder: torch.nn.Module

    @classmethod
    def from_config(
        cls, config: str | Path | dict[str, Any], seed: int = 0, audio: torch.Tensor | None = None
    ) -> NemoReference:
        """NeMo modules from a model_config.yaml (path or dict); `audio` [B, T] calibrates the scales."""
        if not isinstance(config, dict):
            config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        torch.manual_seed(seed)
        ref = cls(config, build(config["audio_encoder"]), build(config["vector_quantizer"]),
                  build(config["audio_decoder"]))  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        for module in (ref.encoder, ref.decoder):
            _randomize(module, gen)
            module.eval()
        if audio is not None:
            ref.calibrate(audio)
        return ref

    @property
    def samples_per_frame(self) -> int:
        return int(self.config["samples_per_frame"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator part of NeMo's AudioCodecModel state dict, NeMo's key names."""
        state: dict[str, torch.Tensor] = {}
        for prefix, module in (("audio_encoder", self.encoder), ("vector_quantizer", self.quantizer),
                               ("audio_decoder", self.decoder)):  # fmt: skip
            state.update({f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()})
        return state

    def save_nemo(self, path: str | Path, extra: dict[str, torch.Tensor] | None = None, config_text: str | None = None
                  ) -> Path:  # fmt: skip
        """Write a .nemo the way NeMo's SaveRestoreConnector does (uncompressed tar of the folder as `.`)."""
        from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            text = config_text if config_text is not None else yaml.safe_dump(self.config, sort_keys=False)
            (Path(tmp) / "model_config.yaml").write_text(text, encoding="utf-8")
            torch.save({**self.state_dict(), **(extra or {})}, Path(tmp) / "model_weights.ckpt")
            SaveRestoreConnector._make_nemo_file_from_folder(str(path), tmp)
        return path

    # -- AudioCodecModel.encode / decode, step by step ----------------------------------------------------------
    def pad(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NeMo's AudioCodecModel.pad_audio: zeros at the end to whole frames."""
        from nemo.collections.tts.models.audio_codec import AudioCodecModel

        audio_len = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        return AudioCodecModel.pad_audio(None, audio, audio_len, self.samples_per_frame)

    @torch.no_grad()
    def latents(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded, padded_len = self.pad(audio)
        return self.encoder(audio=padded, audio_len=padded_len)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        encoded, encoded_len = self.latents(audio)
        with acm.default_precision(torch.float32):
            tokens = self.quantizer.encode(inputs=encoded, input_len=encoded_len)  # (K, B, F)
        return rearrange(tokens, "C B T -> B C T").long()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        tokens_len = torch.full((codes.shape[0],), codes.shape[2], dtype=torch.long)
        with acm.default_precision(torch.float32):
            return self.quantizer.decode(indices=rearrange(codes, "B C T -> C B T"), input_len=tokens_len)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        latents = self.dequantize(codes)
        tokens_len = torch.full((codes.shape[0],), codes.shape[2], dtype=torch.long)
        audio, _ = self.decoder(inputs=latents, input_len=tokens_len)
        return audio

    @torch.no_grad()
    def calibrate(self, audio: torch.Tensor) -> None:
        """Latents ~ N(0, 1.5^2) per channel on `audio` (codes spread); decoder output std 0.3 (not clamped flat)."""
        encoded, _ = self.latents(audio)
        _rescale_output_conv(self.encoder.post_conv, encoded, 1.5)
        codes = self.encode(audio)
        clamp = self.decoder.out_activation
        self.decoder.out_activation = torch.nn.Identity()
        try:
            raw = self.decode(codes)[:, None]  # (B, 1, T) before the clamp
        finally:
            self.decoder.out_activation = clamp
        _rescale_output_conv(self.decoder.post_conv, raw, 0.3)


def code_spread(codes: torch.Tensor) -> float:
    """Fraction of (codebook, frame) codes that differ from the codebook's most common code (0 = constant)."""
    k = codes.shape[1]
    most = [torch.mode(codes[0, i]).values for i in range(k)]
    same = sum(int((codes[0, i] == most[i]).sum()) for i in range(k))
    return 1.0 - same / max(1, codes[0].numel())


def fsq_boundary_inputs(levels: list[int], step: float = 1e-6, width: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents at NeMo's FSQ rounding boundaries and NeMo's indices for them: x [N, D] float32, indices [N] int.

    Every boundary of every channel is located with NeMo's own FiniteScalarQuantizer (grid scan, then float32
    bisection); around each, 2 * width + 1 points `step` apart are taken in that channel (random values in the
    others). Details such as `tan` vs `atanh` in the shift or `1 - eps` vs `1 + eps` in the scale move a boundary
    by 1e-6 .. 1e-3, so the indices of these points tell them apart where random latents almost never would.
    """
    fsq = acm.FiniteScalarQuantizer(num_levels=list(levels))
    dims = len(levels)

    def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (N, D) -> codes (N, D), indices (N,)
        codes, indices = fsq(inputs=x[:, :, None], input_len=None)
        return codes[:, :, 0], indices[0, :, 0]

    grid = torch.arange(-6.0, 6.0, 1e-3)
    lo, hi, dim = [], [], []
    for d in range(dims):
        x = torch.zeros(len(grid), dims)
        x[:, d] = grid
        code = quantize(x)[0][:, d]
        change = torch.nonzero(code[1:] != code[:-1]).flatten()
        lo.append(grid[change]), hi.append(grid[change + 1]), dim.append(torch.full_like(change, d))
    lo, hi, dim = torch.cat(lo), torch.cat(hi), torch.cat(dim)
    rows = torch.arange(len(dim))

    def channel_code(values: torch.Tensor) -> torch.Tensor:  # one value per boundary, in its channel -> its code
        x = torch.zeros(len(dim), dims)
        x[rows, dim] = values
        return quantize(x)[0][rows, dim]

    with torch.no_grad():
        low_code = channel_code(lo)
        for _ in range(40):  # float32 bisection: lo keeps the lower code, hi reaches the first x of the next
            mid = (lo + hi) / 2
            same = channel_code(mid) == low_code
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        offsets = step * torch.arange(-width, width + 1, dtype=torch.float32)
        points = (hi[:, None] + offsets).flatten()  # (B * (2w + 1),)
        which = dim.repeat_interleave(len(offsets))
        gen = torch.Generator().manual_seed(len(levels))
        x = torch.randn(len(points), dims, generator=gen)
        x[torch.arange(len(points)), which] = points
        return x, quantize(x)[1].long()
