"""NVIDIA's released NanoCodec `.nemo` checkpoints -> nanokoel's NanoCodec, without NeMo.

    model = NanoCodec.from_nemo("nemo-nano-codec-22khz-1.78kbps-12.5fps.nemo")     # or the hub id
    result = load_nemo("codec.nemo")          # NemoConversion(model, nemo_config, ignored, weight_norm)
    python -m codec convert-nemo IN.nemo OUT_DIR                                   # model.safetensors + config.json

A `.nemo` file is a tar (plain or gzip) holding `model_config.yaml` (NeMo's `AudioCodecModel` config) and
`model_weights.ckpt` (a torch state dict). The released NanoCodecs (Casanova et al. 2025, arXiv 2508.05835) are
`nvidia/nemo-nano-codec-22khz-{0.6kbps,1.78kbps}-12.5fps` and `-1.89kbps-21.5fps`:
    HiFiGANEncoder (non-causal, replicate padding) -> GroupFiniteScalarQuantizer -> CausalHiFiGANDecoder.

Conversion, in three checked steps:
    read_nemo_archive(path)        -> NemoArchive(config: dict, state: {name: tensor})
        safely: codec/nemo_archive.py (no traversal, two members only, size caps, weights_only loading).
    codec_config_from_nemo(config) -> CodecConfig
        every geometry field is read (NeMo's class defaults where a field is absent); a value or a field
        nanokoel cannot represent is refused by its dotted name rather than loading wrong weights.
    nemo_state_to_nanokoel(state)  -> (state dict in our names, ignored training-only keys, weight-norm form)
        our module names are NeMo's, so the map is by name and checked by shape: weight norm stored as
        `weight_g`/`weight_v` (old `nn.utils.weight_norm`) or `parametrizations.weight.original0/1` (current)
        or already folded; discriminator / loss / speaker-encoder tensors are dropped and reported; anything
        else unexpected, anything missing, any wrong shape is one error listing the keys.

Numerics: the modules are checked against NeMo's own (tests/test_nemo_reference.py, run where NeMo is
installed; tests/test_nemo.py checks committed NeMo goldens without it): identical codes, offline and
frame-by-frame streaming decode within 1e-5 of NeMo's offline decode.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codec.activations import ACTIVATIONS
from codec.conv import PAD_MODES
from codec.decoder import DecoderConfig
from codec.encoder import EncoderConfig
from codec.fsq import QuantizerConfig
from codec.model import CodecConfig, NanoCodec, state_dict_problems
from codec.nemo_archive import (
    CONFIG_MEMBER,
    WEIGHTS_MEMBER,
    NemoArchive,
    NemoError,
    read_nemo_archive,
    resolve_nemo_file,
)

__all__ = ["NemoConversion", "NemoError", "codec_config_from_nemo", "convert_nemo", "load_nemo"]

# Top-level NeMo AudioCodecModel submodules that only training uses: dropped (and reported) on conversion.
TRAINING_ONLY_PREFIXES = (
    "discriminator.",
    "mel_loss_fn.",
    "stft_loss_fn.",
    "time_domain_loss_fn.",
    "si_sdr_loss_fn.",
    "gen_loss_fn.",
    "disc_loss_fn.",
    "feature_loss_fn.",
    "commit_loss_fn.",
    "mmd_loss_fn.",
    "mmd_time_loss_fn.",
    "speaker_encoder.",
    "speaker_encoder_resampler.",
    "slm_encoder.",
    "slm_predictor.",
    "slm_loss_fn.",
    "encoder_noise.",
)
MODEL_PREFIXES = ("audio_encoder.", "vector_quantizer.", "audio_decoder.")
_NEMO_MODULES = "nemo.collections.tts.modules.audio_codec_modules."

# NeMo's constructor defaults (audio_codec_modules.py), used where model_config.yaml leaves a field out.
_ENCODER_DEFAULTS: dict[str, Any] = {
    "down_sample_rates": [2, 2, 8, 8],
    "base_channels": 32,
    "in_kernel_size": 7,
    "out_kernel_size": 7,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [1, 3, 5],
    "activation": "lrelu",
}
_DECODER_DEFAULTS: dict[str, Any] = {
    "up_sample_rates": [8, 8, 2, 2],
    "base_channels": 512,
    "in_kernel_size": 7,
    "out_kernel_size": 3,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [1, 3, 5],
    "activation": "lrelu",
    "output_activation": "tanh",
}
# class name -> (causal, default pad_mode[, default n_groups_equal_to_out_channels])
_ENCODERS = {"HiFiGANEncoder": (False, "reflect"), "CausalHiFiGANEncoder": (True, "zeros")}
_DECODERS = {"HiFiGANDecoder": (False, "reflect", False), "CausalHiFiGANDecoder": (True, "zeros", True)}
_QUANTIZERS = ("GroupFiniteScalarQuantizer", "FiniteScalarQuantizer")
# Top-level fields that change what the generator computes and that nanokoel has no counterpart for.
_UNSUPPORTED_TOP = {
    "semantic_codec": "a second (semantic) codec concatenated to the encoder output",
    "semantic_codec_path": "a second (semantic) codec concatenated to the encoder output",
}


@dataclass
class NemoConversion:
    """A converted codec (eval mode) plus what the conversion did.

    ignored: training-only tensors dropped, counted per top-level module (e.g. {"discriminator": 288});
    weight_norm: how the file stored weight norm: "parametrizations", "weight_g/weight_v" or "folded".
    """

    model: NanoCodec
    nemo_config: dict[str, Any]
    ignored: dict[str, int]
    weight_norm: str
    source: Path


# ---- the config ------------------------------------------------------------------------------------------


class _Fields:
    """Typed, named access to one section of the NeMo config; every read is recorded so leftovers are refused."""

    def __init__(self, source: Path, root: dict[str, Any], section: str) -> None:
        self.source, self.root, self.section = source, root, section
        raw = root.get(section)
        if not isinstance(raw, dict):
            raise NemoError(f"{source}: {CONFIG_MEMBER}: `{section}` missing or not a mapping")
        self.values = raw
        self.read = {"_target_"}

    def error(self, name: str, what: str) -> NemoError:
        return NemoError(f"{self.source}: {CONFIG_MEMBER}: {self.section}.{name} {what}")

    def get(self, name: str, default: Any) -> Any:
        self.read.add(name)
        value = _resolve(self.values.get(name, default), self.root)
        if isinstance(value, str) and "${" in value:
            raise self.error(name, f"= {value!r} is an interpolation nanokoel cannot resolve")
        return value

    def int(self, name: str, default: Any, minimum: int = 1) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(name, f"= {value!r} is not an integer >= {minimum}")
        return value

    def ints(self, name: str, default: Any) -> list[int]:
        value = self.get(name, default)
        if not isinstance(value, (list, tuple)) or not value:
            raise self.error(name, f"= {value!r} is not a non-empty list of integers")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise self.error(name, f"= {value!r} is not a list of positive integers")
        return [int(v) for v in value]

    def choice(self, name: str, default: Any, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or value.lower() not in allowed:
            raise self.error(name, f"= {value!r} cannot be represented (nanokoel supports {', '.join(allowed)})")
        return value.lower()

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"= {value!r} is not true or false")
        return value

    def target(self, allowed: tuple[str, ...]) -> str:
        target = self.values.get("_target_")
        name = str(target).rsplit(".", 1)[-1] if isinstance(target, str) else None
        if name not in allowed or not (target == name or target.startswith(_NEMO_MODULES)):
            raise self.error(
                "_target_",
                f"= {target!r} cannot be represented (nanokoel maps {', '.join(allowed)} from NeMo's "
                "audio_codec_modules)",
            )
        return name

    def refuse_unread(self) -> None:
        unknown = sorted(set(self.values) - self.read)
        if unknown:
            raise self.error(
                unknown[0],
                f"is a field nanokoel does not know ({', '.join(unknown)}); refusing rather than "
                "guessing what it changes",
            )


def _resolve(value: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """Resolve a plain `${a.b}` reference against the config root (what OmegaConf would do), nothing else."""
    match = re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", value) if isinstance(value, str) else None
    if match is None or depth > 8:
        return value
    node: Any = root
    for part in match.group(1).split("."):
        if not isinstance(node, dict) or part not in node:
            return value
        node = node[part]
    return _resolve(node, root, depth + 1)


def codec_config_from_nemo(config: dict[str, Any], source: str | os.PathLike = "model_config.yaml") -> CodecConfig:
    """NeMo AudioCodecModel config (the `model_config.yaml` mapping) -> CodecConfig; refuses by field name."""
    source = Path(source)

    def top_error(name: str, what: str) -> NemoError:
        return NemoError(f"{source}: {CONFIG_MEMBER}: {name} {what}")

    target = config.get("target")
    if target is not None and not str(target).endswith("AudioCodecModel"):
        raise top_error("target", f"= {target!r} is not NeMo's AudioCodecModel; only audio codecs convert")
    for name, what in _UNSUPPORTED_TOP.items():
        if config.get(name):
            raise top_error(name, f"is set: {what} cannot be represented in nanokoel")
    if "vector_quantizer" not in config:
        raise top_error("vector_quantizer", "is missing: a codec without a quantizer has no tokens to give")

    sample_rate = _resolve(config.get("sample_rate"), config)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise top_error("sample_rate", f"= {sample_rate!r} is not a positive integer")
    output_rate = _resolve(config.get("output_sample_rate", sample_rate), config)
    if output_rate != sample_rate:
        raise top_error(
            "output_sample_rate",
            f"= {output_rate!r} differs from sample_rate {sample_rate}: a resampling codec cannot be represented",
        )

    enc = _Fields(source, config, "audio_encoder")
    enc_causal, enc_pad = _ENCODERS[enc.target(tuple(_ENCODERS))]
    encoder = EncoderConfig(
        down_sample_rates=enc.ints("down_sample_rates", _ENCODER_DEFAULTS["down_sample_rates"]),
        base_channels=enc.int("base_channels", _ENCODER_DEFAULTS["base_channels"]),
        in_kernel_size=enc.int("in_kernel_size", _ENCODER_DEFAULTS["in_kernel_size"]),
        out_kernel_size=enc.int("out_kernel_size", _ENCODER_DEFAULTS["out_kernel_size"]),
        resblock_kernel_sizes=enc.ints("resblock_kernel_sizes", _ENCODER_DEFAULTS["resblock_kernel_sizes"]),
        resblock_dilation_sizes=enc.ints("resblock_dilation_sizes", _ENCODER_DEFAULTS["resblock_dilation_sizes"]),
        activation=enc.choice("activation", _ENCODER_DEFAULTS["activation"], ACTIVATIONS),
        pad_mode=enc.choice("pad_mode", enc_pad, PAD_MODES),
        causal=enc_causal,
    )
    encoded_dim = enc.int("encoded_dim", None)
    enc.refuse_unread()

    vq = _Fields(source, config, "vector_quantizer")
    if vq.target(_QUANTIZERS) == "FiniteScalarQuantizer":
        num_groups, levels = 1, vq.ints("num_levels", None)
    else:
        num_groups, levels = vq.int("num_groups", None), vq.ints("num_levels_per_group", None)
    if any(n < 2 for n in levels):
        raise vq.error("num_levels_per_group", f"= {levels} has a level count below 2")
    eps = vq.get("eps", 1e-3)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise vq.error("eps", f"= {eps!r} is not a number in [0, 1)")
    vq.refuse_unread()
    quantizer = QuantizerConfig(num_groups=num_groups, num_levels_per_group=levels, eps=float(eps))

    dec = _Fields(source, config, "audio_decoder")
    dec_causal, dec_pad, dec_groups = _DECODERS[dec.target(tuple(_DECODERS))]
    up_rates = dec.ints("up_sample_rates", _DECODER_DEFAULTS["up_sample_rates"])
    base = dec.int("base_channels", _DECODER_DEFAULTS["base_channels"])
    if base % (2 ** len(up_rates)) != 0:
        raise dec.error(
            "base_channels",
            f"= {base} is not divisible by 2^{len(up_rates)} (NeMo rounds odd channel "
            "counts down when halving; nanokoel cannot represent that)",
        )
    decoder = DecoderConfig(
        up_sample_rates=up_rates,
        base_channels=base,
        in_kernel_size=dec.int("in_kernel_size", _DECODER_DEFAULTS["in_kernel_size"]),
        out_kernel_size=dec.int("out_kernel_size", _DECODER_DEFAULTS["out_kernel_size"]),
        resblock_kernel_sizes=dec.ints("resblock_kernel_sizes", _DECODER_DEFAULTS["resblock_kernel_sizes"]),
        resblock_dilation_sizes=dec.ints("resblock_dilation_sizes", _DECODER_DEFAULTS["resblock_dilation_sizes"]),
        activation=dec.choice("activation", _DECODER_DEFAULTS["activation"], ACTIVATIONS),
        output_activation=dec.choice("output_activation", _DECODER_DEFAULTS["output_activation"], ("clamp", "tanh")),
        pad_mode=dec.choice("pad_mode", dec_pad, PAD_MODES),
        causal=dec_causal,
        grouped_upsample=dec.flag("n_groups_equal_to_out_channels", dec_groups),
    )
    input_dim = dec.int("input_dim", None)
    dec.refuse_unread()

    latent_dim = quantizer.latent_dim
    if encoded_dim != latent_dim:
        raise enc.error(
            "encoded_dim",
            f"= {encoded_dim} but the quantizer quantizes {num_groups} x {len(levels)} = {latent_dim} channels",
        )
    if input_dim != latent_dim:
        raise dec.error("input_dim", f"= {input_dim} but the quantizer gives {latent_dim} channels")
    hop = math.prod(encoder.down_sample_rates)
    if math.prod(up_rates) != hop:
        raise dec.error(
            "up_sample_rates",
            f"= {up_rates} (x{math.prod(up_rates)}) does not undo the encoder's "
            f"down_sample_rates {encoder.down_sample_rates} (x{hop})",
        )
    samples_per_frame = _resolve(config.get("samples_per_frame", hop), config)
    if samples_per_frame != hop:
        raise top_error("samples_per_frame", f"= {samples_per_frame!r} but the encoder downsamples by {hop}")
    try:
        return CodecConfig(
            sample_rate=sample_rate, latent_dim=latent_dim, encoder=encoder, quantizer=quantizer, decoder=decoder
        )
    except ValueError as e:  # a CodecConfig check the NeMo config fails
        raise NemoError(f"{source}: {CONFIG_MEMBER}: cannot be represented: {e}") from e


# ---- the weights -----------------------------------------------------------------------------------------


def nemo_state_to_nanokoel(
    state: Mapping[str, torch.Tensor], single_fsq: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, int], list[str], str]:
    """Map a NeMo AudioCodecModel state dict onto NanoCodec's names.

    Returns (mapped state, ignored training-only counts per module, unexpected keys, weight-norm form).
    `single_fsq`: the checkpoint has one `FiniteScalarQuantizer` (`vector_quantizer.num_levels`), which is our
    group quantizer with one group (`vector_quantizer.fsqs.0.num_levels`).
    """
    mapped: dict[str, torch.Tensor] = {}
    ignored: Counter[str] = Counter()
    unexpected: list[str] = []
    forms: set[str] = set()
    for key, tensor in state.items():
        if key.startswith(TRAINING_ONLY_PREFIXES):
            ignored[key.split(".", 1)[0]] += 1
            continue
        if not key.startswith(MODEL_PREFIXES):
            unexpected.append(key)
            continue
        new = key
        if key.endswith(".weight_g") or key.endswith(".weight_v"):
            forms.add("weight_g/weight_v")
            new = key[: -len(".weight_g")] + (
                ".parametrizations.weight.original0" if key.endswith("_g") else ".parametrizations.weight.original1"
            )
        elif ".parametrizations.weight.original" in key:
            forms.add("parametrizations")
        elif key.endswith(".conv.weight"):
            forms.add("folded")
        if single_fsq and new.startswith("vector_quantizer.") and not new.startswith("vector_quantizer.fsqs."):
            new = "vector_quantizer.fsqs.0." + new[len("vector_quantizer.") :]
        mapped[new] = tensor.float() if tensor.is_floating_point() else tensor
    if len(forms) > 1:
        raise NemoError(f"weight norm is stored in mixed forms ({', '.join(sorted(forms))}); expected one")
    return mapped, dict(sorted(ignored.items())), unexpected, forms.pop() if forms else "parametrizations"


def _check_fsq_buffers(source: Path, model: NanoCodec, state: dict[str, torch.Tensor]) -> None:
    """The FSQ buffers carry the levels again: they must say what model_config.yaml says."""
    for name, ours in model.state_dict().items():
        if name.startswith("vector_quantizer.") and name in state and state[name].shape == ours.shape:
            if not torch.equal(state[name].to(ours.dtype), ours):
                raise NemoError(
                    f"{source}: {WEIGHTS_MEMBER}: {name} = {state[name].flatten().tolist()} disagrees with "
                    f"{CONFIG_MEMBER} ({ours.flatten().tolist()}); the file is inconsistent"
                )


def convert_nemo(archive: NemoArchive) -> NemoConversion:
    """A read archive -> a NanoCodec holding its weights (eval mode, float32, CPU)."""
    source = archive.path
    cfg = codec_config_from_nemo(archive.config, source)
    single = str(archive.config["vector_quantizer"].get("_target_", "")).endswith(".FiniteScalarQuantizer")
    try:
        state, ignored, unexpected, form = nemo_state_to_nanokoel(archive.state, single_fsq=single)
    except NemoError as e:
        raise NemoError(f"{source}: {WEIGHTS_MEMBER}: {e}") from e
    model = NanoCodec(cfg)
    if form == "folded":
        model.remove_weight_norm()
    problems = state_dict_problems(model.state_dict(), state, what="file vs config", unexpected=unexpected)
    if problems:
        raise NemoError(f"{source}: {WEIGHTS_MEMBER} does not fit its {CONFIG_MEMBER}: " + "; ".join(problems))
    _check_fsq_buffers(source, model, state)
    model.load_state_dict(state, strict=True)
    return NemoConversion(
        model=model.eval(), nemo_config=archive.config, ignored=ignored, weight_norm=form, source=source
    )


def load_nemo(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> NemoConversion:
    """Read, check and convert a `.nemo` codec checkpoint (a local file or a hub id)."""
    return convert_nemo(read_nemo_archive(resolve_nemo_file(path_or_hub_id, revision)))
