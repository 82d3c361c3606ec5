"""NanoCodec model invariants: FSQ round trips and NeMo numerics, config geometry, streaming == offline,
causality, padding, save/load, weight-norm folding, input errors, the CLI. Tiny configs, CPU, seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from codec import CodecConfig, CodecError, CodecOutput, NanoCodec
from codec.__main__ import main as cli_main
from codec.audio import AudioError
from codec.decoder import DecoderConfig
from codec.encoder import EncoderConfig
from codec.fsq import FiniteScalarQuantizer, GroupFiniteScalarQuantizer, QuantizerConfig
from codec.model import load_codec_config
from codec.streaming import StreamingError
from common.config import ConfigError
from tests.speech import SENTENCE, synthesize

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "codec"


def tiny_config(enc_causal: bool = False, dec_causal: bool = True, pad_mode: str = "replicate") -> CodecConfig:
    """Hop 6, 2 codebooks of [8, 7, 6, 6]: the real architecture in miniature."""
    return CodecConfig(
        sample_rate=22050,
        latent_dim=8,
        encoder=EncoderConfig(down_sample_rates=[2, 3], base_channels=4, causal=enc_causal, pad_mode=pad_mode),
        quantizer=QuantizerConfig(num_groups=2, num_levels_per_group=[8, 7, 6, 6]),
        decoder=DecoderConfig(up_sample_rates=[3, 2], base_channels=16, causal=dec_causal),
    )


def tiny_model(**kw) -> NanoCodec:
    return NanoCodec(tiny_config(**kw)).eval()


def random_codes(model: NanoCodec, batch: int, frames: int) -> torch.Tensor:
    return torch.randint(0, model.codebook_size, (batch, model.num_codebooks, frames))


# ---- FSQ ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [[8, 7, 6, 6], [9, 8, 8, 7]])
def test_fsq_every_index_round_trips_through_codes_and_levels(levels):
    fsq = FiniteScalarQuantizer(levels)
    indices = torch.arange(fsq.codebook_size)[None]  # (1, N)
    codes = fsq.indices_to_codes(indices)  # (1, D, N)
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes).long(), indices)
    digits = fsq.indices_to_levels(indices)[0]  # (D, N)
    for d, n in enumerate(levels):  # every level of every channel occurs, and only those
        assert sorted(digits[d].unique().tolist()) == list(range(n))
    # distinct indices are distinct code vectors
    assert torch.unique(codes[0].T, dim=0).shape[0] == fsq.codebook_size


@pytest.mark.parametrize("levels", [[8, 7, 6, 6], [9, 8, 8, 7]])
def test_fsq_quantize_gives_valid_codes_and_consistent_indices(levels):
    fsq = FiniteScalarQuantizer(levels)
    latents = torch.randn(4, len(levels), 500) * 3
    codes, indices = fsq(latents)
    assert indices.min() >= 0 and indices.max() < fsq.codebook_size
    assert torch.equal(fsq.indices_to_codes(indices), codes)  # codes -> indices -> codes exact
    half = torch.tensor(levels).view(1, -1, 1) // 2
    assert torch.equal(codes * half, torch.round(codes * half))  # codes are k / (L // 2)


def test_fsq_matches_nemo_formula_golden_values():
    """NeMo: bound = (L-1)/2*(1-eps) * tanh(x + tan(offset/scale)) - offset; code = round(bound) / (L // 2)."""
    fsq = FiniteScalarQuantizer([8, 7, 6, 6])
    x = torch.tensor([0.0, 50.0, -50.0, 0.3]).view(1, 1, 4).expand(1, 4, 4).clone()  # columns: 4 latents
    codes, indices = fsq(x)
    # zero latent -> levels (4, 3, 3, 3) -> 4 + 3*8 + 3*56 + 3*336 = 1204; saturated -> 2015 / 0
    assert indices[0, :3].tolist() == [1204, 2015, 0]
    # x = 0.3 by hand in float64: level = round(scale * tanh(x + shift) - offset) + L // 2
    expected = 0
    for d, (n, base) in enumerate(zip([8, 7, 6, 6], [1, 8, 56, 336], strict=True)):
        scale = (n - 1) / 2 * (1 - 1e-3)
        offset = 0.5 if n % 2 == 0 else 0.0
        level = round(scale * math.tanh(0.3 + math.tan(offset / scale)) - offset) + n // 2
        expected += level * base
        assert codes[0, d, 3].item() == pytest.approx((level - n // 2) / (n // 2))
    assert indices[0, 3].item() == expected


def test_fsq_straight_through_gradient_and_float32():
    fsq = GroupFiniteScalarQuantizer(2, [8, 7, 6, 6])
    latents = (torch.randn(2, 8, 10) * 0.5).requires_grad_()
    out = fsq(latents)
    out.dequantized.sum().backward()
    assert latents.grad is not None and (latents.grad > 0).all()  # d/dx of scale*tanh(x+shift) / (L//2) > 0
    assert out.dequantized.dtype == torch.float32 and out.indices.dtype == torch.long
    assert out.indices.shape == (2, 2, 10)
    assert torch.equal(fsq.decode(out.indices), out.dequantized.detach())  # latents -> indices -> codes
    assert torch.equal(fsq.codes_to_indices(out.dequantized.detach()), out.indices)  # codes -> indices exact
    assert torch.equal(fsq.codes_to_indices(fsq.decode(out.indices)), out.indices)


def test_group_fsq_groups_own_their_channel_slices():
    fsq = GroupFiniteScalarQuantizer(3, [5, 5])
    latents = torch.zeros(1, 6, 1)
    latents[0, 2:4] = 50.0  # saturate only group 1
    assert fsq.encode(latents)[0, :, 0].tolist() == [12, 24, 12]  # centre (2 + 2*5) vs top (4 + 4*5)


# ---- config geometry ------------------------------------------------------------------------------------------

GEOMETRY = {  # file: (frame_rate, samples_per_frame, codebooks, codebook_size, kbps)
    "nanocodec_12.5fps_1.1kbps.yaml": (12.5, 1764, 8, 2016, 1.1),
    "nanocodec_12.5fps_0.6kbps.yaml": (12.5, 1764, 4, 4032, 0.6),
    "nanocodec_12.5fps_1.78kbps.yaml": (12.5, 1764, 13, 2016, 1.78),
    "nanocodec_21.5fps_1.89kbps.yaml": (21.533, 1024, 8, 2016, 1.89),
    "cpu_12.5fps.yaml": (12.5, 1764, 8, 2016, 1.1),
    "cpu_21.5fps.yaml": (21.533, 1024, 8, 2016, 1.89),
    "quick_12.5fps.yaml": (12.5, 1764, 8, 2016, 1.1),
    "quick_21.5fps.yaml": (21.533, 1024, 8, 2016, 1.89),
}


@pytest.mark.parametrize("name", sorted(GEOMETRY))
def test_config_geometry_and_bitrate(name):
    fps, hop, k, size, kbps = GEOMETRY[name]
    cfg = load_codec_config(CONFIGS / name)
    assert cfg.sample_rate == 22050 and cfg.samples_per_frame == hop
    assert cfg.frame_rate == pytest.approx(fps, abs=1e-3)
    assert cfg.quantizer.num_groups == k and cfg.quantizer.codebook_size == size
    assert cfg.bitrate / 1000 == pytest.approx(kbps, abs=0.01)
    assert cfg.bitrate == pytest.approx(cfg.frame_rate * k * math.log2(size))


def test_paper_scale_parameter_counts():
    """Paper: ~30 M encoder, ~31.5 M decoder (counted with weight norm folded, on the meta device: no memory)."""
    with torch.device("meta"):
        model = NanoCodec.from_config(CONFIGS / "nanocodec_12.5fps_1.1kbps.yaml")
    model.remove_weight_norm()
    enc = sum(p.numel() for p in model.audio_encoder.parameters())
    dec = sum(p.numel() for p in model.audio_decoder.parameters())
    assert 29.5e6 < enc < 31e6 and 31e6 < dec < 32e6, (enc, dec)


@pytest.mark.parametrize("name", ["quick_12.5fps.yaml", "quick_21.5fps.yaml"])
def test_real_geometry_shapes(name):
    model = NanoCodec.from_config(CONFIGS / name).eval()
    hop = model.samples_per_frame
    codes = model.encode(torch.randn(2, 2 * hop + 1) * 0.1)
    assert codes.shape == (2, model.num_codebooks, 3) and codes.dtype == torch.long
    assert model.decode(codes).shape == (2, 3 * hop)


def test_config_overrides_and_errors(tmp_path):
    cfg = load_codec_config(CONFIGS / "cpu_12.5fps.yaml", ["decoder.base_channels=128", "model.encoder.causal=true"])
    assert cfg.decoder.base_channels == 128 and cfg.encoder.causal
    with pytest.raises(ConfigError, match="base_chanels"):
        load_codec_config(CONFIGS / "cpu_12.5fps.yaml", ["decoder.base_chanels=128"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_codec_config(CONFIGS / "cpu_12.5fps.yaml", ["decoder.base_channels=100"])
    with pytest.raises(ConfigError, match="latent_dim"):
        load_codec_config(CONFIGS / "cpu_12.5fps.yaml", ["latent_dim=16"])
    with pytest.raises(ConfigError, match="must match"):
        load_codec_config(CONFIGS / "cpu_12.5fps.yaml", ["decoder.up_sample_rates=[8,8,4,2,2]"])
    other = tmp_path / "x.yaml"
    other.write_text("data:\n  manifest: m.jsonl\n")
    with pytest.raises(ConfigError, match="model"):
        load_codec_config(other)
    # other top-level sections (the training engineer's) are ignored
    other.write_text((CONFIGS / "quick_12.5fps.yaml").read_text() + "trainer_notes:\n  lr: 0.1\n")
    assert load_codec_config(other) == load_codec_config(CONFIGS / "quick_12.5fps.yaml")


# ---- streaming, causality --------------------------------------------------------------------------------------


# float64 shows the streamed computation is the offline one (agreement to ~1e-14); float32 leaves the rounding of a
# deep conv stack, whose summation order depends on the input length and the CPU's kernels (up to 1.6e-5 of a
# full-scale 1.0 signal measured on an AVX-512 machine, < 1e-5 on AVX2 ones).
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 5e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("source", ["tiny", "quick_12.5fps.yaml", "quick_21.5fps.yaml"])
def test_streaming_decode_equals_offline(source, dtype, atol):
    model = tiny_model() if source == "tiny" else NanoCodec.from_config(CONFIGS / source).eval()
    model = model.to(dtype)
    hop, frames = model.samples_per_frame, 7
    codes = random_codes(model, 2, frames)
    offline = model.decode(codes)
    assert offline.abs().max() > 1e-3  # not a trivially silent decoder
    with model.streaming(batch_size=2):
        per_frame = [model.decode(codes[:, :, i : i + 1]) for i in range(frames)]
    assert all(c.shape == (2, hop) for c in per_frame) and offline.dtype == dtype
    torch.testing.assert_close(torch.cat(per_frame, -1), offline, atol=atol, rtol=0)
    with model.streaming(batch_size=2):
        bounds = [0, 3, 3, 4, 6, 7]  # chunks of 3, 0, 1, 2, 1 frames
        chunks = [model.decode(codes[:, :, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert [c.shape[-1] for c in chunks] == [3 * hop, 0, hop, 2 * hop, hop]
    torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=atol, rtol=0)
    # leaving the block clears the state: offline again
    torch.testing.assert_close(model.decode(codes), offline, atol=0, rtol=0)


def test_streaming_state_is_per_block_and_checked():
    model = tiny_model()
    codes = random_codes(model, 1, 4)
    with model.streaming(batch_size=1):
        first = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(4)], -1)
        model.reset_streaming()  # a new utterance in the same block starts from zeros again
        second = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(4)], -1)
        with pytest.raises(StreamingError, match="batch size"):
            model.decode(random_codes(model, 2, 1))
        with pytest.raises(StreamingError, match="nest"):
            with model.streaming(batch_size=1):
                pass
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    with pytest.raises(CodecError, match="non-causal"):
        with tiny_model(dec_causal=False).streaming(batch_size=1):
            pass


def test_fused_snake_is_bit_identical_and_follows_alpha():
    from codec.activations import HalfSnake, snake

    torch.manual_seed(0)
    act = HalfSnake(17)  # odd: 8 snake channels, 9 leaky ReLU
    x = torch.randn(2, 17, 30) * 3

    def reference() -> torch.Tensor:  # the training formula, with autograd
        return torch.cat([snake(x[:, :8], act.snake_act.alpha), F.leaky_relu(x[:, 8:])], dim=1).detach()

    for scale in (0.5, 3.0):  # 1 / (alpha + eps) is cached: changing alpha in place must reach the fused path
        with torch.no_grad():
            act.snake_act.alpha.uniform_(0.1, scale)
        with torch.inference_mode():
            assert torch.equal(act(x), reference())
    with torch.no_grad():
        assert torch.equal(act(x[:, :, 1::2]), reference()[:, :, 1::2])  # a strided input too
    assert torch.equal(act(x).detach(), reference())  # autograd path unchanged


@pytest.mark.parametrize("channels_last", [False, True])
def test_half_snake_training_function_equals_autograd(channels_last, monkeypatch):
    """The training path (_HalfSnakeFunction: leaky ReLU over all channels, the snake half computed in its own
    block, gradients written out) against autograd of the formula: the same output bits, gradients to float
    rounding, and the input's memory layout kept for the output and the input gradient."""
    from codec.activations import HalfSnake

    torch.manual_seed(0)
    for channels, length in ((17, 30), (8, 500)):
        act = HalfSnake(channels)
        with torch.no_grad():
            act.snake_act.alpha.uniform_(0.2, 3.0)
        x0 = torch.randn(3, channels, 1, length) * 2
        grad = torch.randn(3, channels, 1, length)
        if channels_last:  # [B, C, T] stored time-major, as the channels-last convs hand it over
            x0, grad = (t.to(memory_format=torch.channels_last) for t in (x0, grad))
        x0, grad = x0.squeeze(2), grad.squeeze(2)
        results = []
        for fused in (True, False):
            monkeypatch.setattr(HalfSnake, "fused_backward", fused)
            x = x0.clone().requires_grad_(True)
            act.zero_grad()
            out = act(x)
            out.backward(grad)
            results.append((out.detach(), x.grad, act.snake_act.alpha.grad.clone()))
        (out, grad_x, grad_alpha), (ref, ref_x, ref_alpha) = results
        assert torch.equal(out, ref)
        torch.testing.assert_close(grad_x, ref_x, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grad_alpha, ref_alpha, rtol=1e-5, atol=1e-5 * float(ref_alpha.abs().max()))
        assert out.stride() == x0.stride() and grad_x.stride() == x0.stride()


@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 3), (2, 1)])
def test_gemm_conv_equals_torch_conv(stride, dilation):
    from codec.conv import columns_conv1d, gemm_conv1d, gemm_weight

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 5, 4, stride=stride, dilation=dilation)
    x = torch.randn(3, 6, 23)
    with torch.no_grad():
        expected = conv(x)
        got = gemm_conv1d(x, gemm_weight(conv.weight), conv.bias, 4, stride, dilation)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        for b in range(3):  # the column layout takes one input at a time
            got = columns_conv1d(x[b : b + 1], conv.weight.reshape(5, -1), conv.bias, 4, stride, dilation)
            torch.testing.assert_close(got, expected[b : b + 1], atol=1e-6, rtol=1e-6)
            got = columns_conv1d(x[b : b + 1], conv.weight.reshape(5, -1), None, 4, stride, dilation)
            torch.testing.assert_close(got, expected[b : b + 1] - conv.bias[:, None], atol=1e-6, rtol=1e-6)


def test_gemm_layout_takes_the_wide_side():
    """A streamed frame of the CPU decoder: its last stage (8 channels, 1764 samples) as W @ columns, its first
    (128 channels, 7 samples) as rows @ W^T; a batch of long inputs and long offline inputs stay with torch."""
    from codec.conv import GEMM_MAX_COLUMNS, gemm_layout

    assert gemm_layout(1, 1764, 8) == "columns"
    assert gemm_layout(1, 7, 128) == "rows"
    assert gemm_layout(8, 7, 128) == "rows"
    assert gemm_layout(8, 1764, 8) is None and gemm_layout(8, 49, 64) is None
    assert gemm_layout(1, GEMM_MAX_COLUMNS + 1, 8) is None


def test_streaming_one_row_uses_both_layouts_and_equals_offline(monkeypatch):
    """Batch 1 (the demo, `Synthesizer.stream`) streams through both matmul layouts; the frames equal offline."""
    import codec.conv

    used, choose = [], codec.conv.gemm_layout
    monkeypatch.setattr(codec.conv, "gemm_layout", lambda *a: used.append(choose(*a)) or used[-1])
    model = NanoCodec.from_config(CONFIGS / "quick_12.5fps.yaml").eval()
    codes = random_codes(model, 1, 5)
    with torch.no_grad():
        offline = model.decode(codes)
        with model.streaming(batch_size=1):
            streamed = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(5)], -1)
    assert {"columns", "rows"} <= set(used)
    torch.testing.assert_close(streamed, offline, atol=5e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_residual_branches_side_by_side_give_the_same_bits(batch, monkeypatch):
    """A streamed frame runs each residual layer's three branches side by side (stacked activations and adds, each
    conv its own module): bit for bit what the branches give one after the other, frame by frame and offline,
    also after the alphas change."""
    from codec.residual import HiFiGANResLayer

    model = NanoCodec.from_config(CONFIGS / "quick_12.5fps.yaml").eval()
    model.remove_weight_norm()
    codes = random_codes(model, batch, 4)
    layers = [m for m in model.modules() if isinstance(m, HiFiGANResLayer)]

    def decode() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            with model.streaming(batch_size=batch):
                streamed = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(4)], -1)
            return streamed, model.decode(codes[:, :, :2])

    calls: list[int] = []
    for layer in layers:
        monkeypatch.setattr(layer, "_forward_stacked", lambda x, f=layer._forward_stacked: calls.append(1) or f(x))
    for _ in range(2):
        calls.clear()
        side_by_side = decode()
        assert len(calls) >= 4 * sum(m.stackable for m in layers)  # the path ran for every streamed frame
        monkeypatch.setattr(HiFiGANResLayer, "stack_branches", False)
        one_by_one = decode()
        monkeypatch.setattr(HiFiGANResLayer, "stack_branches", True)
        assert all(torch.equal(a, b) for a, b in zip(side_by_side, one_by_one, strict=True))
        with torch.no_grad():  # new alphas (a training step): the stacked copies must follow
            for name, p in model.audio_decoder.named_parameters():
                if name.endswith("alpha"):
                    p.uniform_(0.5, 2.0)


def test_replicate_padding_by_concatenation_equals_torch():
    """Inference pads 'replicate' convs by concatenating the edge samples: torch's values; training keeps F.pad."""
    from codec.conv import pad_edges

    x = torch.randn(2, 3, 40, requires_grad=True)
    expected = torch.nn.functional.pad(x, (5, 5), mode="replicate")
    with torch.no_grad():
        assert torch.equal(pad_edges(x, 5, "replicate"), expected)
        assert torch.equal(pad_edges(x, 5, "reflect"), torch.nn.functional.pad(x, (5, 5), mode="reflect"))
    padded = pad_edges(x, 5, "replicate")
    assert padded.grad_fn is not None and torch.equal(padded, expected)


def test_static_streaming_step_equals_offline_and_resets():
    """The CUDA-graph-ready step (fixed buffers for input, output and every layer's state) run eagerly on CPU: the
    same audio as offline decoding, frame by frame, after a reset, and with a shorter last chunk."""
    from codec.streaming import StaticStreamingStep

    model = tiny_model()
    model.remove_weight_norm()
    decoder = model.audio_decoder
    latents = model.dequantize(random_codes(model, 2, 7))  # (B, D, F)
    with torch.no_grad():
        offline = decoder(latents)
        with decoder.streaming(batch_size=2):
            step = StaticStreamingStep(decoder, latents[:, :, :2], graph=False)
            for _ in range(2):  # the second pass after reset(): a new utterance from the zero state
                chunks = [step(latents[:, :, i : i + 2]) for i in range(0, 7, 2)]  # 2, 2, 2 frames then 1
                torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=1e-5, rtol=0)
                step.reset()
    assert not decoder.is_streaming


def test_streaming_with_weight_norm_follows_weight_changes():
    """Weight norm is computed once per streaming block and the matmul layout once per weight: a weight changed
    between blocks (a training step) must be used by the next block, streamed and offline alike."""
    model = tiny_model()
    assert model.has_weight_norm
    codes = random_codes(model, 1, 4)
    for _ in range(2):
        with torch.no_grad():
            offline = model.decode(codes)
            with model.streaming(batch_size=1):
                streamed = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(4)], -1)
        torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)
        with torch.no_grad():  # an optimizer step: in-place updates of the weight-norm magnitudes
            for name, p in model.audio_decoder.named_parameters():
                if name.endswith("original0"):
                    p.mul_(1.5)
    assert not torch.allclose(model.decode(codes), offline)


@pytest.mark.parametrize("causal", [True, False])
def test_decoder_causality(causal):
    model = tiny_model(dec_causal=causal)
    hop = model.samples_per_frame
    codes = random_codes(model, 1, 8)
    changed = codes.clone()
    changed[:, :, 5:] = (changed[:, :, 5:] + 1) % model.codebook_size  # only frames >= 5 differ
    a, b = model.decode(codes), model.decode(changed)
    assert not torch.equal(a[:, 5 * hop :], b[:, 5 * hop :])
    if causal:  # the past is bit-identical: zero lookahead
        assert torch.equal(a[:, : 5 * hop], b[:, : 5 * hop])
    else:  # the non-causal ablation looks ahead
        assert not torch.equal(a[:, : 5 * hop], b[:, : 5 * hop])


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_causality_flag(causal):
    model = tiny_model(enc_causal=causal)
    hop = model.samples_per_frame
    wav = torch.randn(1, 10 * hop) * 0.3
    changed = wav.clone()
    changed[:, 6 * hop :] += 0.5  # only the future of frame 5 differs
    with torch.no_grad():
        a, b = model.audio_encoder(wav), model.audio_encoder(changed)
    assert not torch.equal(a[..., 6:], b[..., 6:])
    if causal:
        assert torch.equal(a[..., :6], b[..., :6])
    else:  # the default encoder looks ahead, at least into the frame before the change
        assert not torch.equal(a[..., :6], b[..., :6])


def test_causal_encoder_streams_in_whole_frames():
    model = tiny_model(enc_causal=True)
    hop = model.samples_per_frame
    wav = torch.randn(2, 9 * hop) * 0.3
    offline = model.encode(wav)
    with model.streaming(batch_size=2):
        chunks = [model.encode(wav[:, a * hop : b * hop]) for a, b in [(0, 2), (2, 3), (3, 7), (7, 9)]]
    assert torch.equal(torch.cat(chunks, -1), offline)


# ---- lengths, padding, training forward -------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 5, 6, 7, 61])
def test_odd_lengths_pad_to_whole_frames(num_samples):
    model = tiny_model()
    hop = model.samples_per_frame
    wav = torch.randn(num_samples) * 0.3  # 1-D input is one utterance
    frames = math.ceil(num_samples / hop)
    codes = model.encode(wav)
    assert codes.shape == (1, model.num_codebooks, frames)
    padded = torch.nn.functional.pad(wav, (0, frames * hop - num_samples))
    assert torch.equal(model.encode(padded[None]), codes)  # encode pads with zeros at the end
    assert model.decode(codes).shape == (1, frames * hop)


def test_training_forward_output_and_gradients():
    model = tiny_model().train()
    wav = torch.randn(2, 40) * 0.3
    out = model(wav)
    assert isinstance(out, CodecOutput)
    assert out.audio.shape == out.input_audio.shape == (2, 42)
    assert torch.equal(out.input_audio[:, :40], wav) and (out.input_audio[:, 40:] == 0).all()
    assert out.codes.shape == (2, 2, 7) and out.latents.shape == out.quantized.shape == (2, 8, 7)
    assert torch.equal(out.codes, model.encode(wav))
    torch.testing.assert_close(out.audio, model.decode(out.codes), atol=1e-6, rtol=0)
    (out.audio - out.input_audio).abs().mean().backward()
    encoder_grads = [p.grad for p in model.audio_encoder.parameters()]
    assert all(g is not None for g in encoder_grads)  # the straight-through estimator reaches the encoder
    assert any(g.abs().sum() > 0 for g in encoder_grads)


def test_fresh_codec_keeps_the_signal_and_spreads_the_codes(tmp_path):
    """init_weights: a fresh CPU-profile codec's latents follow real speech, so its frames take many FSQ codes.

    Under PyTorch's default conv init the latents' time std was ~3e-4 and every frame got the same code
    (training then collapsed to one code per codebook)."""
    torch.manual_seed(0)
    model = NanoCodec.from_config("configs/codec/cpu_12.5fps.yaml").eval()
    wav, sr = synthesize(SENTENCE, tmp_path, sample_rate=model.sample_rate)
    with torch.no_grad():
        out = model(torch.from_numpy(wav)[None])
    assert 0.05 < out.latents.std(dim=-1).mean() < 2.0  # latents vary over time, FSQ tanh not saturated
    distinct = [len(set(out.codes[0, k].tolist())) for k in range(model.num_codebooks)]
    assert min(distinct) >= out.codes.shape[-1] // 4, distinct
    assert 0.01 < out.audio.std() < 1.0  # audible, inside the output clamp
    for module in model.modules():  # biases start at zero
        if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d) and module.bias is not None:
            assert not module.bias.any()


# ---- checkpoints, weight norm ------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    wav = torch.randn(2, 60) * 0.3
    codes = model.encode(wav)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_state.pt").write_bytes(b"keep me")
    model.save_pretrained(tmp_path / "run")
    assert (tmp_path / "run" / "train_state.pt").read_bytes() == b"keep me"  # other files are left alone
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_type"] == "nanocodec"
    loaded = NanoCodec.from_pretrained(tmp_path / "run")
    assert loaded.cfg == model.cfg and not loaded.training
    assert torch.equal(loaded.encode(wav), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    # a folded model saves plain weights and loads back the same
    loaded.remove_weight_norm()
    loaded.save_pretrained(tmp_path / "folded")
    folded = NanoCodec.from_pretrained(tmp_path / "folded")
    assert not folded.has_weight_norm
    assert torch.equal(folded.decode(codes), loaded.decode(codes))


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CodecError, match="no such codec directory"):
        NanoCodec.from_pretrained(tmp_path / "missing" / "deeper")
    with pytest.raises(CodecError, match="hub id failed"):  # offline (HF_HUB_OFFLINE=1 in conftest)
        NanoCodec.from_pretrained("nobody-here/no-such-codec")
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(CodecError, match="model.safetensors: missing"):
        NanoCodec.from_pretrained(tmp_path / "m")
    (tmp_path / "weights").rename(tmp_path / "m" / "model.safetensors")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["decoder"]["base_chanels"] = 8
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CodecError, match="base_chanels"):
        NanoCodec.from_pretrained(tmp_path / "m")
    del config["decoder"]["base_chanels"]
    config["decoder"]["base_channels"] = 32  # a config that does not fit the weights file
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CodecError, match="different config"):
        NanoCodec.from_pretrained(tmp_path / "m")
    with pytest.raises(CodecError, match=r"audio_decoder\.pre_conv.*\(16, 8, 7\) vs \(32, 8, 7\)|wrong shapes"):
        NanoCodec(load_codec_config_json(config)).load_weights(model.state_dict())


def load_codec_config_json(values: dict) -> CodecConfig:
    from common.config import config_from_dict

    return config_from_dict(CodecConfig, {k: v for k, v in values.items() if k != "model_type"})


def test_weight_norm_folding_keeps_outputs():
    model = tiny_model()
    codes = random_codes(model, 2, 5)
    wav = torch.randn(2, 30) * 0.3
    before_audio, before_latents = model.decode(codes), model.audio_encoder(wav).detach()
    assert model.has_weight_norm
    num_weights = sum(1 for k in model.state_dict() if k.endswith("original1"))
    with torch.no_grad():  # folding inside no_grad must still leave Parameters (saved, trainable)
        folded = model.remove_weight_norm()
    assert folded == 2 * (1 + 2 * 3 * 3 * 2 + 2 * 1 + 1) and not model.has_weight_norm  # 2 stages each side
    assert sum(1 for k, _ in model.named_parameters() if k.endswith("conv.weight")) == num_weights == folded
    torch.testing.assert_close(model.decode(codes), before_audio, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.audio_encoder(wav).detach(), before_latents, atol=1e-5, rtol=1e-5)
    with model.streaming(batch_size=2):
        streamed = torch.cat([model.decode(codes[:, :, i : i + 1]) for i in range(5)], -1)
    torch.testing.assert_close(streamed, before_audio, atol=1e-5, rtol=0)


# ---- bad input -----------------------------------------------------------------------------------------------


def test_bad_audio_input_gives_clear_errors():
    model = tiny_model()
    with pytest.raises(AudioError, match="16000 Hz does not match the codec's 22050 Hz"):
        model.encode(torch.randn(1, 100), sample_rate=16000)
    with pytest.raises(AudioError, match="2 channels"):
        model.encode(torch.randn(1, 2, 100))
    with pytest.raises(AudioError, match="empty"):
        model.encode(torch.zeros(1, 0))
    bad = torch.randn(1, 100)
    bad[0, 10] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        model.encode(bad)


def test_bad_codes_give_clear_errors():
    model = tiny_model()
    with pytest.raises(CodecError, match="integer"):
        model.decode(torch.zeros(1, 2, 3))
    with pytest.raises(CodecError, match=r"\[0, 2016\)"):
        model.decode(torch.full((1, 2, 3), 2016))
    with pytest.raises(CodecError, match=r"\[B, 2, F\]"):
        model.decode(torch.zeros(1, 3, 3, dtype=torch.long))


# ---- CLI -----------------------------------------------------------------------------------------------------


def test_cli_encode_decode_real_speech(tmp_path, capsys):
    model = NanoCodec.from_config(CONFIGS / "quick_12.5fps.yaml")
    model.save_pretrained(tmp_path / "codec")
    wav, sr = synthesize(SENTENCE, tmp_path, engine="flite", name="speech")  # 16 kHz: the CLI resamples to 22.05 kHz
    expected_frames = math.ceil(round(len(wav) * 22050 / sr) / model.samples_per_frame)
    wav_path = tmp_path / "speech.wav"
    assert cli_main(["encode", str(wav_path), str(tmp_path / "codes.npy"), "--model", str(tmp_path / "codec")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.dtype == np.int16 and codes.shape == (8, expected_frames)
    out = tmp_path / "out.wav"
    assert cli_main(["decode", str(tmp_path / "codes.npy"), str(out), "--model", str(tmp_path / "codec")]) == 0
    audio, out_sr = sf.read(out)
    assert out_sr == 22050 and len(audio) == expected_frames * model.samples_per_frame
    streamed = tmp_path / "streamed.wav"
    args = ["decode", str(tmp_path / "codes.npy"), str(streamed), "--model", str(tmp_path / "codec"), "--streaming"]
    assert cli_main(args) == 0
    # float32 streaming agrees with offline to 5e-5 (test_streaming_decode_equals_offline), i.e. up to ~1.6 steps
    # of 16-bit audio before rounding, so a sample may land 2 steps away
    np.testing.assert_allclose(sf.read(streamed)[0], audio, atol=2.5 / 32768)
    capsys.readouterr()
    # clear one-line errors, exit status 2
    assert cli_main(["decode", str(tmp_path / "codes.npy"), str(out), "--model", str(tmp_path / "nope")]) == 2
    assert "no such codec directory" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.full((8, 3), 5000, dtype=np.int16))
    assert cli_main(["decode", str(tmp_path / "bad.npy"), str(out), "--model", str(tmp_path / "codec")]) == 2
    assert "bad.npy" in capsys.readouterr().err
    assert (
        cli_main(["encode", str(tmp_path / "missing.wav"), str(tmp_path / "c.npy"), "--model", str(tmp_path / "codec")])
        == 2
    )
    assert "no such audio file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["encode", "--help"], ["decode", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 0 and "usage: python -m codec" in capsys.readouterr().out
