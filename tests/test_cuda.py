"""The GPU path, on a machine with CUDA (skipped elsewhere): the CUDA-graph decoder step == eager streaming ==
offline decoding, generation on the GPU (stream == generate for a seed), and the Synthesizer's GPU path == its
offline reference. TF32 is switched off here, so that the comparisons are about the code, not about TF32 rounding.

    python -m pytest -q tests/test_cuda.py        # or, without pytest:  python -m tests.test_cuda
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec import NanoCodec
from codec.streaming import StaticStreamingStep
from evaluation.bench.e2e import StandInG2P
from tests.tiny_tts import tiny_models
from text import PhonemeVocab
from tts_lm import Synthesizer

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def _strict_fp32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("config", ["configs/codec/cpu_12.5fps.yaml", "configs/codec/nanocodec_12.5fps_1.1kbps.yaml"])
def test_cuda_graph_decoder_step_equals_eager_streaming_and_offline(config: str, device: str = "cuda"):
    _strict_fp32()
    torch.manual_seed(0)
    codec = NanoCodec.from_config(config).eval()
    codec.remove_weight_norm()
    codec.to(device)
    decoder, frames = codec.audio_decoder, 12
    latents = codec.dequantize(torch.randint(0, codec.codebook_size, (2, codec.num_codebooks, frames)))  # (B, D, F)
    with torch.no_grad():
        offline = decoder(latents)
        with decoder.streaming(2):
            eager = torch.cat([decoder(latents[:, :, i : i + 1]) for i in range(frames)], -1)
        with decoder.streaming(2):
            step = StaticStreamingStep(decoder, latents[:, :, :1])
            assert (step.graph is not None) == (device == "cuda")
            for _ in range(2):  # the second pass after reset(): the same graph from the zero state
                graphed = torch.cat([step(latents[:, :, i : i + 1]) for i in range(frames)], -1)
                torch.testing.assert_close(graphed, eager, atol=1e-5, rtol=0)
                step.reset()
    torch.testing.assert_close(eager, offline, atol=1e-4, rtol=0)


def test_cuda_generation_stream_equals_generate(device: str = "cuda"):
    _strict_fp32()
    lm, _ = tiny_models()
    lm.to(device)
    c = lm.config
    prompts = torch.randint(0, c.codebook_size, (2, c.num_codebooks, c.min_prompt_frames + 3))
    phonemes = [[5, 6, 7, 8, 9], [10, 11, 12]]
    opts = dict(cfg_scale=2.5, temperature=0.8, top_k=8, max_frames=12)
    codes = lm.generate(phonemes, prompts, seed=11, **opts)
    assert codes.device.type == device
    streamed = torch.cat(list(lm.stream(phonemes, prompts, seed=11, **opts)), dim=2)
    assert torch.equal(streamed, codes)


def test_cuda_synthesizer_stream_equals_offline_decode(device: str = "cuda"):
    _strict_fp32()
    lm, codec = tiny_models()
    tts = Synthesizer(lm.to(device), codec.to(device), g2p=StandInG2P(PhonemeVocab.default()))
    tts.static_decoder_step = True  # the default on a GPU
    t = np.arange(int(2.5 * tts.sample_rate)) / tts.sample_rate
    prompt = (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    opts = dict(cfg_scale=2.5, temperature=0.6, top_k=80, max_frames=12, seed=3)
    for _ in range(2):  # the second request reuses the captured graph
        stream = tts.stream("The birch canoe.", prompt, tts.sample_rate, **opts)
        audio = stream.read_all()
        codes = torch.cat(
            list(
                lm.stream(
                    tts.text_pieces("The birch canoe.")[0].ids,
                    tts.encode_prompt(prompt, tts.sample_rate),
                    generator=torch.Generator(device).manual_seed(3),
                    **{k: v for k, v in opts.items() if k != "seed"},
                )
            ),
            dim=2,
        )
        reference = codec.decode(codes)[0].cpu().numpy()
        np.testing.assert_allclose(audio, reference, atol=1e-4)


if __name__ == "__main__":
    if not CUDA:
        raise SystemExit("no CUDA GPU here")
    for cfg in ("configs/codec/cpu_12.5fps.yaml", "configs/codec/nanocodec_12.5fps_1.1kbps.yaml"):
        test_cuda_graph_decoder_step_equals_eager_streaming_and_offline(cfg)
    test_cuda_generation_stream_equals_generate()
    test_cuda_synthesizer_stream_equals_offline_decode()
    print("tests/test_cuda.py: all passed")
