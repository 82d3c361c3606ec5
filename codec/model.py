"""NanoCodec: waveform <-> FSQ token ids at 12.5 frames per second, with a streaming causal decoder.

    model = NanoCodec.from_config("configs/codec/cpu_12.5fps.yaml")    # random init from the `model:` section
    model = NanoCodec.from_pretrained("runs/codec/cpu_12.5fps")        # model.safetensors + config.json
    model = NanoCodec.from_nemo("nvidia/nemo-nano-codec-22khz-1.78kbps-12.5fps")   # NVIDIA .nemo (codec/nemo.py)
    codes = model.encode(wav)          # float [B, T] at model.sample_rate -> long [B, K, F], F = ceil(T / hop)
    wav = model.decode(codes)          # long [B, K, F] -> float [B, F * hop]
    # any length: above 30 s both run in chunks with the offline result and bounded memory (codec/chunked.py)
    with model.streaming(batch_size=B):
        chunk = model.decode(codes[:, :, i : i + 1])                   # [B, hop], equal to the offline slice
    out = model(wav)                   # training: CodecOutput(audio, codes, latents, quantized, input_audio)

Pipeline: zero-pad to whole frames -> HiFiGANEncoder (non-causal) -> latents [B, D, F] -> group FSQ
(K codebooks) -> dequantized [B, D, F] -> HiFiGANDecoder (causal) -> [B, F * hop]. Submodule names
(`audio_encoder`, `vector_quantizer`, `audio_decoder`) are NVIDIA NeMo's `AudioCodecModel`'s, so released
checkpoints map onto this module tensor by tensor. Paper: Casanova et al. 2025, "NanoCodec: Towards
High-Quality Ultra Fast Speech LLM Inference" (arXiv 2508.05835).

Checkpoints: `config.json` (the CodecConfig, schema-checked on load) + `model.safetensors` (which also
carries the same config in its metadata, so a weights file never silently pairs with another config).
Never pickle.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torch.nn.utils import parametrize

from codec.audio import check_waveform
from codec.chunked import decode_in_chunks, default_chunk_frames, encode_in_chunks
from codec.conv import has_weight_norm, remove_weight_norm
from codec.decoder import DecoderConfig, HiFiGANDecoder
from codec.encoder import EncoderConfig, HiFiGANEncoder
from codec.fsq import GroupFiniteScalarQuantizer, QuantizerConfig
from codec.streaming import StreamingModule
from common.config import ConfigError, config_from_dict, config_to_dict
from common.fileio import atomic_path, write_json_atomic

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MODEL_TYPE = "nanocodec"


class CodecError(ValueError):
    """Unusable codec input or checkpoint (bad codes, missing/mismatched files); the message says what to do."""


@dataclass
class CodecConfig:
    """The whole codec: sample rate, latent size, encoder, group FSQ and decoder (the YAML `model:` section)."""

    sample_rate: int = 22050
    latent_dim: int = 32  # encoder output = decoder input = quantizer.num_groups * len(levels)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.latent_dim != self.quantizer.latent_dim:
            raise ValueError(
                f"latent_dim={self.latent_dim} but the quantizer quantizes {self.quantizer.num_groups} groups x "
                f"{len(self.quantizer.num_levels_per_group)} levels = {self.quantizer.latent_dim} channels"
            )
        if self.encoder.hop_length != self.decoder.hop_length:
            raise ValueError(
                f"encoder.down_sample_rates {self.encoder.down_sample_rates} (x{self.encoder.hop_length}) and "
                f"decoder.up_sample_rates {self.decoder.up_sample_rates} (x{self.decoder.hop_length}) must match"
            )

    @property
    def samples_per_frame(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.samples_per_frame

    @property
    def bitrate(self) -> float:
        """Bits per second: frame_rate * num_codebooks * log2(codebook_size)."""
        return self.frame_rate * self.quantizer.num_groups * math.log2(self.quantizer.codebook_size)


def load_codec_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> CodecConfig:
    """Read the `model:` section of a YAML file (other sections are ignored) plus `key=value` overrides.

    Overrides are relative to the model section (`decoder.base_channels=128`; a leading `model.` is accepted).
    Raises FileNotFoundError, or ConfigError naming the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codec config not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not OmegaConf.is_dict(raw) or "model" not in raw:
        raise ConfigError(f"{path}: no `model:` section (the codec's CodecConfig)")
    items = [o[len("model.") :] if o.startswith("model.") else o for o in overrides]
    bad = [o for o in items if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        merged = OmegaConf.merge(raw.model, OmegaConf.from_dotlist(items))
        values = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: bad model section or override: {e}".splitlines()[0]) from e
    try:
        return config_from_dict(CodecConfig, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    except ValueError as e:  # a __post_init__ check
        raise ConfigError(f"{path}: model: {e}") from e


@dataclass
class CodecOutput:
    """Training forward. F frames, T' = F * samples_per_frame (the input zero-padded to whole frames).

    audio: [B, T'] reconstruction in [-1, 1]; input_audio: [B, T'] the padded input (the target);
    codes: [B, K, F] long token ids; latents: [B, D, F] encoder output before FSQ;
    quantized: [B, D, F] FSQ values fed to the decoder (straight-through gradients to `latents`).
    """

    audio: torch.Tensor
    codes: torch.Tensor
    latents: torch.Tensor
    quantized: torch.Tensor
    input_audio: torch.Tensor


# Gains of `init_weights`: relu-like activations (leaky ReLU, half snake) halve a zero-mean signal's power.
RELU_GAIN = math.sqrt(2.0)
RESIDUAL_GAIN = 0.3  # each residual branch starts at ~0.3 x its input, so a residual layer is near identity
ENCODER_INPUT_GAIN = 5.0  # speech has std ~0.1: lift it to ~0.5 at the first layer
DECODER_OUTPUT_GAIN = 0.2  # start quiet, well inside the output clamp


def init_weights(codec: nn.Module) -> None:
    """Variance-preserving (He) init of every conv: the signal keeps its scale through the whole codec.

    PyTorch's default conv init scales the power by ~1/3 per conv, ~1/6 with the activation, so the fresh
    encoder's five strided stages shrank speech to latents with a time std of ~3e-4: every frame rounded to
    the same FSQ code, the decoder learnt the average spectrum from its biases, and training collapsed to one
    code per codebook. Here each conv's weight is N(0, gain^2 / fan_in) (fan_in counts what one output sample
    sees: in_channels / groups x kernel, divided by the stride for a transposed conv), biases start at zero,
    and weight norm's magnitude starts at the direction's norm, so the effective weight is that draw.
    """
    for name, module in codec.named_modules():
        if not isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) or not parametrize.is_parametrized(module, "weight"):
            continue
        fan_in = module.in_channels // module.groups * module.kernel_size[0]
        if isinstance(module, nn.ConvTranspose1d):
            fan_in /= module.stride[0]
        gain = {
            "audio_encoder.pre_conv.conv": ENCODER_INPUT_GAIN,
            "audio_decoder.pre_conv.conv": 1.0,  # its input, the FSQ codes, is not rectified
            "audio_decoder.post_conv.conv": DECODER_OUTPUT_GAIN,
        }.get(name, RELU_GAIN * (RESIDUAL_GAIN if name.endswith("skip_conv.conv") else 1.0))
        weight = module.parametrizations.weight
        with torch.no_grad():
            direction = weight.original1.normal_(0.0, gain / math.sqrt(fan_in))
            weight.original0.copy_(direction.norm(dim=tuple(range(1, direction.dim())), keepdim=True))
            if module.bias is not None:
                module.bias.zero_()


@torch.no_grad()
def calibrate_latents(codec: NanoCodec, wav: torch.Tensor, target_std: float = 1.0) -> tuple[float, float]:
    """Data-dependent init: rescale the encoder's output conv so latents of `wav` [B, T] have std `target_std`.

    The FSQ bound is scale * tanh(x): at the variance-preserving init the latents of speech sit at std ~0.3, where
    rounding reaches 3 of the 6-8 levels per channel, and the encoder (trained at a low lr to keep the codes from
    collapsing) does not widen them within a CPU-length run (measured: std 0.28 at init, 0.30 after 1600 steps,
    codebook perplexity ~150 of 2016). How far a fixed gain lands depends on the architecture (0.3 to 3 across
    the configs here), so the scale is measured. Returns (std before, std after); call before training starts.
    """
    conv = codec.audio_encoder.post_conv.conv
    before = float(codec.audio_encoder(codec.pad_to_frames(wav)).float().std())
    if not math.isfinite(before) or before <= 0:
        raise CodecError(f"calibrate_latents: the encoder's latents have std {before}; pass speech, not silence")
    scale = target_std / before
    if parametrize.is_parametrized(conv, "weight"):
        conv.parametrizations.weight.original0.mul_(scale)  # weight norm: scale the magnitude g
    else:
        conv.weight.mul_(scale)
    if conv.bias is not None:
        conv.bias.mul_(scale)
    after = float(codec.audio_encoder(codec.pad_to_frames(wav)).float().std())
    return before, after


class NanoCodec(StreamingModule):
    """Encoder + group FSQ + causal decoder. See the module docstring for the API."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = HiFiGANEncoder(cfg.encoder, encoded_dim=cfg.latent_dim)
        self.vector_quantizer = GroupFiniteScalarQuantizer.from_config(cfg.quantizer)
        self.audio_decoder = HiFiGANDecoder(cfg.decoder, input_dim=cfg.latent_dim)
        init_weights(self)

    # -- geometry -------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.samples_per_frame

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.cfg.quantizer.num_groups

    @property
    def codebook_size(self) -> int:
        return self.cfg.quantizer.codebook_size

    @property
    def bitrate(self) -> float:
        return self.cfg.bitrate

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_frames(self, num_samples: int) -> int:
        """Frames that encode `num_samples` samples: ceil(T / samples_per_frame)."""
        return -(-num_samples // self.samples_per_frame)

    # -- building and saving ----------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: str | os.PathLike | CodecConfig, overrides: list[str] | tuple[str, ...] = ()
    ) -> NanoCodec:
        """A randomly initialised codec from a YAML file's `model:` section (+ overrides) or a CodecConfig."""
        if isinstance(config, CodecConfig):
            if overrides:
                raise ConfigError("overrides apply to YAML files; edit the CodecConfig instead")
            return cls(config)
        return cls(load_codec_config(config, overrides))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` then `model.safetensors` into `directory`, each atomically; returns the directory.

        Other files in the directory (training state, logs) are left alone. The weights file embeds the config
        too, so a crash between the two writes is detected by `from_pretrained` instead of loading a mismatch.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model_type": MODEL_TYPE, **config_to_dict(self.cfg)}
        write_json_atomic(directory / CONFIG_NAME, config)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "nanokoel_config": json.dumps(config)})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: str | torch.device | None = None,
        fold_weight_norm: bool = False,
        revision: str | None = None,
    ) -> NanoCodec:
        """Load `config.json` + `model.safetensors` from a directory or a Hugging Face hub id (in eval mode).

        Args:
            fold_weight_norm: fold weight norm into plain weights (inference speed; not for further training).
        Raises:
            CodecError: missing directory/files, a config that fails the schema, weights that do not fit it.
        """
        from safetensors import safe_open

        directory = _resolve_model_dir(name_or_path, revision)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise CodecError(f"{p}: missing; a codec directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            values = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CodecError(f"{config_path}: unreadable JSON ({e})") from e
        cfg = _config_from_json(values, config_path)
        try:
            with safe_open(str(weights_path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CodecError(f"{weights_path}: not a readable safetensors file ({e})") from e
        if "nanokoel_config" in meta and _config_from_json(json.loads(meta["nanokoel_config"]), weights_path) != cfg:
            raise CodecError(
                f"{weights_path} was saved with a different config than {config_path} (an interrupted save?); "
                "save the model again"
            )
        model = cls(cfg)
        if not any(".parametrizations.weight." in k for k in state):
            model.remove_weight_norm()  # the weights were saved folded
        model.load_weights(state, source=str(weights_path))
        if fold_weight_norm:
            model.remove_weight_norm()
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def from_nemo(
        cls,
        path_or_hub_id: str | os.PathLike,
        device: str | torch.device | None = None,
        fold_weight_norm: bool = False,
        revision: str | None = None,
    ) -> NanoCodec:
        """Load NVIDIA's NeMo `.nemo` codec checkpoint (a local file or a hub id) into our modules, in eval mode.

        The geometry comes from the file's model_config.yaml; anything nanokoel cannot represent exactly is
        refused by field name. See codec/nemo.py (the conversion) and `python -m codec convert-nemo`.
        Raises:
            codec.nemo.NemoError (a CodecError): unsafe/unreadable archive, unsupported config, unfitting weights.
        """
        from codec.nemo import load_nemo

        model = load_nemo(path_or_hub_id, revision=revision).model
        if fold_weight_norm:
            model.remove_weight_norm()
        if device is not None:
            model = model.to(device)
        return model.eval()

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a state dict strictly: missing/unexpected keys and shape mismatches are one CodecError."""
        problems = state_dict_problems(self.state_dict(), state, what="file vs model")
        if problems:
            raise CodecError(f"{source}: weights do not fit the config: " + "; ".join(problems))
        self.load_state_dict(state, strict=True)

    def remove_weight_norm(self) -> int:
        """Fold weight norm into plain conv weights (same outputs); returns the number of convs folded."""
        return remove_weight_norm(self)

    @property
    def has_weight_norm(self) -> bool:
        return has_weight_norm(self)

    # -- inference ----------------------------------------------------------------------------------------
    def pad_to_frames(self, wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad [B, T] at the end to F * samples_per_frame samples, F = ceil(T / samples_per_frame)."""
        return F.pad(wav, (0, self.num_frames(wav.shape[-1]) * self.samples_per_frame - wav.shape[-1]))

    @torch.no_grad()
    def encode(
        self, wav: torch.Tensor | np.ndarray, sample_rate: int | None = None, chunk_frames: int | None = None
    ) -> torch.Tensor:
        """Waveform float [B, T] (or [T]) at `self.sample_rate` -> codes long [B, K, F], F = ceil(T / hop).

        Audio longer than `chunk_frames` frames (default 30 s) is encoded in chunks with the encoder's receptive
        field as context: the same codes in bounded memory, for any length (codec/chunked.py).
        Raises AudioError for stereo, empty or non-finite input, or a `sample_rate` other than the codec's.
        """
        wav = check_waveform(wav, sample_rate, self.sample_rate).to(self.device)  # (B, T)
        return encode_in_chunks(self, wav, chunk_frames or default_chunk_frames(self))  # (B, K, F); short: 1 pass

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Codes long [B, K, F] -> decoder input [B, D, F] (FSQ values in [-1, 1])."""
        return self.vector_quantizer.decode(self.check_codes(codes))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor | np.ndarray, chunk_frames: int | None = None) -> torch.Tensor:
        """Codes long [B, K, F] (or [K, F]) -> waveform [B, F * hop]; inside `streaming()`, the next chunk.

        More than `chunk_frames` frames (default 30 s) are decoded chunk by chunk through the streaming state
        (the same audio, bounded memory); the non-causal decoder ablation always decodes in one pass.
        """
        latents = self.dequantize(codes)  # (B, D, F)
        latents = latents.to(next(self.audio_decoder.parameters()).dtype)
        chunk_frames = chunk_frames or default_chunk_frames(self)
        if self.cfg.decoder.causal and latents.shape[-1] > chunk_frames:
            return decode_in_chunks(self, latents, chunk_frames)
        return self.audio_decoder(latents)  # (B, F * hop)

    def check_codes(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate token ids: integer, [B, K, F] ([K, F] taken as B = 1), each in [0, codebook_size)."""
        codes = torch.as_tensor(np.asarray(codes)) if not isinstance(codes, torch.Tensor) else codes
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise CodecError(f"codes must be integer token ids, got dtype {codes.dtype}")
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise CodecError(f"codes must have shape [B, {self.num_codebooks}, F], got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise CodecError(
                f"codes must be in [0, {self.codebook_size}), got values in [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long().to(self.device)

    def streaming(self, batch_size: int):  # noqa: ANN201 (a context manager)
        """`with model.streaming(B):` decode chunk by chunk (any number of frames per call), from a zero state."""
        if not self.cfg.decoder.causal:
            raise CodecError("this codec's decoder is non-causal (decoder.causal: false); it cannot stream")
        return super().streaming(batch_size)

    # -- training -------------------------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass on float [B, T] (no sample-rate check): reconstruction with straight-through FSQ."""
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise CodecError(f"NanoCodec.forward expects a waveform batch [B, T], got {tuple(wav.shape)}")
        padded = self.pad_to_frames(wav)  # (B, F * hop)
        latents = self.audio_encoder(padded)  # (B, D, F)
        q = self.vector_quantizer(latents)
        audio = self.audio_decoder(q.dequantized.to(latents.dtype))  # (B, F * hop)
        return CodecOutput(audio=audio, codes=q.indices, latents=latents, quantized=q.dequantized, input_audio=padded)


def state_dict_problems(
    own: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    what: str = "file vs model",
    unexpected: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """What keeps `state` from loading strictly into a module whose state dict is `own`, as short phrases.

    Missing keys, unexpected keys (plus any the caller already found) and shape mismatches, each list cut
    to a few names; empty when `state` fits.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(unexpected) | (set(state) - set(own)))
    wrong = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes ({what}) {_few(wrong)}")
    return problems


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _config_from_json(values: Any, source: Path) -> CodecConfig:
    if not isinstance(values, dict):
        raise CodecError(f"{source}: expected a JSON object with the codec config")
    values = dict(values)
    model_type = values.pop("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise CodecError(f"{source}: model_type {model_type!r} is not {MODEL_TYPE!r}")
    try:
        return config_from_dict(CodecConfig, values)
    except ValueError as e:  # ConfigError (unknown key / wrong type) or a __post_init__ check
        raise CodecError(f"{source}: invalid codec config: {e}") from e


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None) -> Path:
    """A local directory as is; otherwise a hub id downloaded (config + weights only) with huggingface_hub."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise CodecError(f"{path}: expected a codec directory ({CONFIG_NAME} + {WEIGHTS_NAME}), got a file")
    if not _HUB_ID.match(str(name_or_path)):
        raise CodecError(f"{path}: no such codec directory")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=str(name_or_path), revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
        )
    except Exception as e:
        raise CodecError(
            f"{name_or_path}: not a local codec directory, and fetching it as a Hugging Face hub id failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the path, or go online"
        ) from e
    return Path(local)
