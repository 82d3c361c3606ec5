"""Long audio through the codec: the encoder's receptive field is what `HiFiGANEncoder.receptive_field` says,
chunked encoding gives the offline codes and chunked decoding the offline audio, each pass bounded in size."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from codec import NanoCodec
from codec.chunked import context_frames
from tests.test_codec_model import random_codes, tiny_config, tiny_model


@pytest.mark.parametrize("kw", [{}, {"pad_mode": "zeros"}, {"enc_causal": True}], ids=["replicate", "zeros", "causal"])
def test_encoder_receptive_field_is_exact(kw):
    """The gradient of one latent frame is non-zero exactly on [f * hop - left, f * hop + right]."""
    model = tiny_model(**kw)
    hop = model.samples_per_frame
    left, right = model.audio_encoder.receptive_field()
    frames, f = 2 * (left + right) // hop + 10, (left // hop) + 5  # frame f is far from both edges
    wav = (torch.randn(1, frames * hop) * 0.3).requires_grad_()
    model.audio_encoder(wav)[0, :, f].sum().backward()
    support = wav.grad[0].nonzero()[:, 0]
    assert (int(support.min()), int(support.max())) == (f * hop - left, f * hop + right)


def encoder_passes(model: NanoCodec) -> list[int]:
    """Record the input length of every encoder pass (to prove the chunking happens and is bounded)."""
    lengths: list[int] = []
    model.audio_encoder.register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[-1]))
    return lengths


@pytest.mark.parametrize("num_frames, extra", [(41, 0), (40, 1), (41, 5), (9, 3)])
def test_chunked_encode_equals_offline(num_frames, extra):
    """Lengths that span several chunks, whole frames or not (`extra` samples into one more frame)."""
    model = tiny_model()
    hop, chunk = model.samples_per_frame, 4
    wav = torch.randn(2, num_frames * hop + extra) * 0.3
    offline = model.encode(wav, chunk_frames=10_000)
    passes = encoder_passes(model)
    chunked = model.encode(wav, chunk_frames=chunk)
    assert torch.equal(chunked, offline)
    total = num_frames + (extra > 0)
    before, after = context_frames(model)
    assert len(passes) == -(-total // chunk) > 1
    assert max(passes) <= (chunk + before + after) * hop  # bounded: one chunk plus its context
    assert (before, after) == tuple(-(-r // hop) for r in model.audio_encoder.receptive_field())


def test_chunked_encode_needs_its_context():
    """Without the context frames the codes at the chunk edges change: the context is what makes it exact."""
    model = tiny_model()
    hop = model.samples_per_frame
    wav = torch.randn(1, 40 * hop) * 0.3
    offline = model.encode(wav)
    cut = torch.cat([model.encode(wav[:, : 20 * hop]), model.encode(wav[:, 20 * hop :])], dim=-1)
    assert not torch.equal(cut, offline)


def test_default_chunking_is_automatic_for_long_audio():
    model = NanoCodec(replace(tiny_config(), sample_rate=600)).eval()  # hop 6: 100 FPS, 30 s = 3000 frames
    passes = encoder_passes(model)
    codes = model.encode(torch.randn(1, 6 * 3100) * 0.3)
    assert codes.shape[-1] == 3100 and len(passes) == 2
    assert model.encode(torch.randn(1, 6 * 3000) * 0.3).shape[-1] == 3000 and len(passes) == 3  # 30 s: one pass


def test_causal_encoder_streaming_chunks_carry_the_state():
    model = tiny_model(enc_causal=True)
    hop = model.samples_per_frame
    wav = torch.randn(2, 23 * hop + 2) * 0.3
    offline = model.encode(wav, chunk_frames=10_000)
    with model.streaming(batch_size=2):
        streamed = model.encode(wav, chunk_frames=4)
    assert torch.equal(streamed, offline)


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_decode_equals_offline(chunk):
    model = tiny_model()
    hop = model.samples_per_frame
    codes = random_codes(model, 2, 17)
    offline = model.decode(codes, chunk_frames=10_000)
    lengths: list[int] = []
    model.audio_decoder.register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[-1]))
    chunked = model.decode(codes, chunk_frames=chunk)
    assert chunked.shape == (2, 17 * hop) and max(lengths) == chunk and len(lengths) == -(-17 // chunk)
    torch.testing.assert_close(chunked, offline, atol=1e-5, rtol=0)
    # inside the caller's streaming block, a long decode continues the state
    with model.streaming(batch_size=2):
        first = model.decode(codes[:, :, :7], chunk_frames=chunk)
        rest = model.decode(codes[:, :, 7:], chunk_frames=chunk)
    torch.testing.assert_close(torch.cat([first, rest], -1), offline, atol=1e-5, rtol=0)


def test_non_causal_decoder_decodes_in_one_pass():
    model = tiny_model(dec_causal=False)
    lengths: list[int] = []
    model.audio_decoder.register_forward_pre_hook(lambda _m, args: lengths.append(args[0].shape[-1]))
    model.decode(random_codes(model, 1, 9), chunk_frames=2)
    assert lengths == [9]
