"""Benchmark 2: codec speed, NanoCodec (paper-scale configs) against Mimi, EnCodec and DAC.

    rows = bench_codec_speed(settings)       # one row per codec: encode / decode RTF, streaming decode RTF, ratios

Candidates (random weights: speed does not depend on them), each at its own sample rate on the same speech
(espeak-ng, resampled; `codec_seconds` long), torch inference mode, `threads` threads:
    NanoCodec 12.5 FPS 1.1 kbps and 21.5 FPS 1.89 kbps: configs/codec/nanocodec_*.yaml (weight norm folded, as
        for inference); also streaming decode frame by frame (`with codec.streaming(1)`, one frame per call), by
        torch and (on a CPU) by ONNX Runtime (codec/onnx_step.py, the Synthesizer's default there)
    Mimi (Kyutai, 24 kHz, 12.5 Hz, 8 of its codebooks = 1.1 kbps): transformers MimiConfig() defaults
    EnCodec (Meta, 24 kHz, 75 Hz, 6 kbps): transformers EncodecConfig() defaults
    DAC (Descript, 44.1 kHz, 86 Hz, 9 codebooks = 7.7 kbps): transformers DacConfig(sampling_rate=44100)
transformers' implementations of the peers decode whole sequences only (no conv state), so their streaming
column is empty. Runs are interleaved (every codec once per round, `codec_repeats` rounds after a warm-up round)
and the table gives medians; ratios are against NanoCodec 12.5 FPS (> 1 = slower than NanoCodec).
RTF = compute seconds / audio seconds (< 1 is faster than real time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from codec import NanoCodec
from codec.audio import resample
from codec.onnx_step import onnx_step
from common.onnx_runtime import onnx_runtime_available
from evaluation.bench.harness import LONG_TEXT, BenchSettings, espeak_speech, median, timed


@dataclass
class CodecUnderTest:
    """A codec as the benchmark sees it: encode float [1, T] -> codes, decode codes -> audio (offline/streaming)."""

    name: str
    sample_rate: int
    frame_rate: float
    bitrate: float
    parameters: int
    encode: Callable[[torch.Tensor], Any]
    decode: Callable[[Any], torch.Tensor]
    stream_decode: Callable[[Any], torch.Tensor] | None = None
    stream_decode_onnx: Callable[[Any], torch.Tensor] | None = None


def nanocodec(config: str, overrides: tuple[str, ...] = (), device: str = "cpu") -> CodecUnderTest:
    model = NanoCodec.from_config(config, list(overrides)).eval()
    model.remove_weight_norm()
    model.to(device)

    def stream_decode(codes: torch.Tensor) -> torch.Tensor:
        with model.streaming(codes.shape[0]):
            return torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(codes.shape[-1])], dim=-1)

    decoder = model.audio_decoder

    def stream_decode_onnx(codes: torch.Tensor) -> torch.Tensor:
        latents = model.dequantize(codes)  # (B, D, F)
        with decoder.streaming(codes.shape[0]):
            step = onnx_step(decoder)
            return torch.cat([step(latents[:, :, i : i + 1]) for i in range(codes.shape[-1])], dim=-1)

    onnx = device == "cpu" and onnx_runtime_available()
    if onnx:
        onnx_step(decoder)  # exported here, outside the timed rounds
    name = f"NanoCodec {model.frame_rate:.1f} FPS {model.bitrate / 1000:.2f} kbps"
    params = sum(p.numel() for p in model.parameters())
    return CodecUnderTest(
        name,
        model.sample_rate,
        model.frame_rate,
        model.bitrate,
        params,
        model.encode,
        model.decode,
        stream_decode,
        stream_decode_onnx if onnx else None,
    )


def _tiny(kind: str) -> dict[str, Any]:
    """A few channels / one layer: the same code paths in milliseconds (smoke runs)."""
    return {
        "mimi": dict(
            hidden_size=64,
            num_hidden_layers=1,
            num_filters=4,
            intermediate_size=128,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            upsample_groups=64,
            codebook_dim=16,
            vector_quantization_hidden_dimension=16,
            codebook_size=64,
        ),
        "encodec": dict(num_filters=4, hidden_size=16, codebook_dim=16, num_lstm_layers=1, codebook_size=64),
        "dac": dict(encoder_hidden_size=4, decoder_hidden_size=32, hidden_size=16, codebook_size=64),
    }[kind]


def peer(kind: str, scale: str = "full", device: str = "cpu") -> CodecUnderTest:
    """Mimi / EnCodec / DAC from transformers configs with random weights (see the module docstring)."""
    import transformers as tf

    extra = _tiny(kind) if scale == "tiny" else {}
    torch.manual_seed(0)
    if kind == "mimi":
        cfg = tf.MimiConfig(**extra)
        model = tf.MimiModel(cfg).eval().to(device)
        k = 8  # Moshi uses 8 of Mimi's 32 codebooks (1.1 kbps)

        def encode(x):
            return model.encode(x[:, None], num_quantizers=k).audio_codes  # (B, K, F)

        def decode(codes):
            return model.decode(codes).audio_values

        rate, bits, name = cfg.frame_rate, k * math.log2(cfg.codebook_size) * cfg.frame_rate, "Mimi"
    elif kind == "encodec":
        cfg = tf.EncodecConfig(**extra)
        model = tf.EncodecModel(cfg).eval().to(device)
        bandwidth = 6.0  # kbps: 8 codebooks at 75 Hz

        def encode(x):
            out = model.encode(x[:, None], bandwidth=bandwidth)
            return out.audio_codes, out.audio_scales

        def decode(codes):
            return model.decode(*codes).audio_values

        rate, bits, name = cfg.frame_rate, bandwidth * 1000, "EnCodec"
    elif kind == "dac":
        cfg = tf.DacConfig(sampling_rate=44100, **extra)
        model = tf.DacModel(cfg).eval().to(device)

        def encode(x):
            return model.encode(x[:, None]).audio_codes  # (B, K, F)

        def decode(codes):
            return model.decode(audio_codes=codes).audio_values

        rate = cfg.sampling_rate / cfg.hop_length
        bits, name = cfg.n_codebooks * math.log2(cfg.codebook_size) * rate, "DAC"
    else:
        raise ValueError(f"unknown peer codec {kind!r}; use mimi, encodec or dac")
    params = sum(p.numel() for p in model.parameters())
    return CodecUnderTest(f"{name} (transformers)", cfg.sampling_rate, float(rate), float(bits), params, encode, decode)


def bench_codec_speed(settings: BenchSettings, progress: bool = True) -> list[dict[str, Any]]:
    """Encode / decode RTF per codec (medians of interleaved rounds) and the ratios to NanoCodec 12.5 FPS."""
    # built outside inference mode: weight-norm folding there would leave plain tensors, not Parameters
    codecs = [nanocodec(c, settings.codec_overrides, settings.device) for c in settings.paper_codecs]
    codecs += [peer(kind, settings.peer_scale, settings.device) for kind in settings.peers]
    with torch.inference_mode():
        times, inputs = _interleaved_rounds(codecs, settings, progress)
    rows = []
    for c in codecs:
        seconds = inputs[c.name].shape[-1] / c.sample_rate
        t = times[c.name]
        stream = median(t["stream"]) / seconds if c.stream_decode else None
        stream_onnx = median(t["stream_onnx"]) / seconds if c.stream_decode_onnx else None
        frames = inputs[c.name].shape[-1] / c.sample_rate * c.frame_rate
        rows.append(
            {
                "codec": c.name,
                "sample_rate": c.sample_rate,
                "frame_rate": c.frame_rate,
                "kbps": c.bitrate / 1000,
                "parameters_m": c.parameters / 1e6,
                "audio_s": seconds,
                "encode_rtf": median(t["encode"]) / seconds,
                "decode_rtf": median(t["decode"]) / seconds,
                "stream_decode_rtf": stream,
                "stream_decode_onnx_rtf": stream_onnx,
                "stream_frame_ms": 1000 * median(t["stream"]) / frames if c.stream_decode else None,
                "stream_frame_onnx_ms": 1000 * median(t["stream_onnx"]) / frames if c.stream_decode_onnx else None,
                "encode_s": t["encode"],
                "decode_s": t["decode"],
            }
        )
    base = rows[0]
    for row in rows:
        row["encode_vs_nanocodec"] = row["encode_rtf"] / base["encode_rtf"]
        row["decode_vs_nanocodec"] = row["decode_rtf"] / base["decode_rtf"]
        if row["stream_decode_rtf"] is not None:
            row["stream_decode_vs_nanocodec"] = row["stream_decode_rtf"] / base["stream_decode_rtf"]
    return rows


def _interleaved_rounds(
    codecs: list[CodecUnderTest], settings: BenchSettings, progress: bool
) -> tuple[dict[str, dict[str, list[float]]], dict[str, torch.Tensor]]:
    """Seconds per call {codec: {"encode", "decode", "stream": [per round]}} and the inputs [1, T] per codec."""
    speech = espeak_speech(LONG_TEXT, 22050, settings.codec_seconds)
    inputs = {
        c.name: torch.from_numpy(resample(speech, 22050, c.sample_rate))[None].to(settings.device) for c in codecs
    }  # (1, T)
    times: dict[str, dict[str, list[float]]] = {
        c.name: {"encode": [], "decode": [], "stream": [], "stream_onnx": []} for c in codecs
    }
    rounds = settings.codec_repeats + 1  # the first round warms up and is not counted
    bar = tqdm(total=rounds * len(codecs), desc="bench 2/3: codec speed vs peers", disable=not progress)
    for r in range(rounds):
        for c in codecs:  # interleaved
            x = inputs[c.name]
            codes = c.encode(x)
            t = times[c.name]
            dev = settings.device
            enc, dec = timed(lambda c=c, x=x: c.encode(x), dev), timed(lambda c=c, codes=codes: c.decode(codes), dev)
            stream = timed(lambda c=c, codes=codes: c.stream_decode(codes), dev) if c.stream_decode else float("nan")
            onnx = c.stream_decode_onnx
            stream_onnx = timed(lambda codes=codes, f=onnx: f(codes), dev) if onnx else float("nan")
            if r > 0:
                t["encode"].append(enc)
                t["decode"].append(dec)
                t["stream"].append(stream)
                t["stream_onnx"].append(stream_onnx)
            bar.update(1)
    bar.close()

    return times, inputs
