"""The decoder's streaming step exported to ONNX Runtime (codec/onnx_step.py) against the torch decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codec import NanoCodec
from codec.onnx_step import onnx_step
from codec.streaming import StreamingError
from common.onnx_runtime import onnx_runtime_available
from tests.test_codec_model import random_codes, tiny_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "codec"
pytestmark = pytest.mark.skipif(not onnx_runtime_available(), reason="onnx / onnxruntime not installed")
# float32 rounding of a deep conv stack, as torch's own streaming vs offline (test_streaming_decode_equals_offline):
# quick_12.5fps with alphas up to 3, against float64: ONNX Runtime 1.8e-5, torch streamed 1.7e-5, offline 1.2e-5
ATOL = 5e-5


def varied(model: NanoCodec) -> NanoCodec:
    """Snake alphas away from their init of 1, so that a wrong alpha or formula shows."""
    with torch.no_grad():
        for name, p in model.audio_decoder.named_parameters():
            if name.endswith("alpha"):
                p.uniform_(0.3, 3.0)
    return model


@pytest.mark.parametrize("source", ["tiny", "quick_12.5fps.yaml"])
def test_onnx_streaming_equals_offline_for_any_chunking_and_batch(source):
    """One exported graph (batch and chunk length dynamic) streams every chunking, batch size and a fresh block
    like the torch decoder decodes offline; the layers' states are its inputs and outputs."""
    torch.manual_seed(0)
    model = varied(tiny_model() if source == "tiny" else NanoCodec.from_config(CONFIGS / source).eval())
    decoder = model.audio_decoder
    for batch in (1, 3):
        latents = model.dequantize(random_codes(model, batch, 12))  # (B, D, F)
        with torch.no_grad():
            offline = decoder(latents)
            assert offline.abs().max() > 1e-3
            for sizes in ([1] * 12, [1, 1, 2, 4, 4], [5, 7], [12]):
                with decoder.streaming(batch):
                    step = onnx_step(decoder)
                    chunks, start = [], 0
                    for n in sizes:
                        chunks.append(step(latents[:, :, start : start + n]))
                        start += n
                assert [c.shape for c in chunks] == [(batch, n * model.samples_per_frame) for n in sizes]
                torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=ATOL, rtol=0)


def test_onnx_and_torch_steps_take_turns_in_one_block():
    """The states stay on the layers: ONNX Runtime and torch chunks alternate within one block, then reset."""
    torch.manual_seed(1)
    model = varied(tiny_model())
    decoder = model.audio_decoder
    latents = model.dequantize(random_codes(model, 2, 8))
    with torch.no_grad():
        offline = decoder(latents)
        with decoder.streaming(2):
            step = onnx_step(decoder)
            for _ in range(2):  # again after reset_streaming(): a new utterance from zeros
                turns = [step, decoder, step, step, decoder, decoder, step, decoder]
                chunks = [run(latents[:, :, i : i + 1]) for i, run in enumerate(turns)]
                torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=ATOL, rtol=0)
                decoder.reset_streaming()
            with pytest.raises(StreamingError, match="batch size"):
                step(latents[:1, :, :1])
        with pytest.raises(StreamingError, match="inside"):
            step(latents[:, :, :1])


def test_onnx_session_is_kept_shared_by_copies_and_follows_weight_changes(monkeypatch):
    """Exported once per weights: a second step and a copy sharing the weights reuse the session; an in-place
    weight update (a training step) or another thread count makes a new one that decodes with the new weights."""
    import copy

    import codec.onnx_step as onnx_module

    torch.manual_seed(2)
    model = varied(tiny_model())
    decoder = model.audio_decoder
    exports = []
    export = onnx_module.export_step
    monkeypatch.setattr(onnx_module, "export_step", lambda d: exports.append(1) or export(d))
    latents = model.dequantize(random_codes(model, 1, 3))
    first = onnx_step(decoder)
    shared = {id(t): t for t in [*decoder.parameters(), decoder.onnx_session]}
    replica = copy.deepcopy(decoder, memo=shared)  # as tts_lm's DecoderPool makes its replicas
    assert onnx_step(decoder).session is first.session and onnx_step(replica).session is first.session
    assert len(exports) == 1
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if name.endswith("original0"):
                p.mul_(1.5)
        with decoder.streaming(1):
            updated = onnx_step(decoder)(latents)
        torch.testing.assert_close(updated, decoder(latents), atol=ATOL, rtol=0)
    assert updated.abs().max() > 1e-3 and len(exports) == 2
    assert onnx_step(decoder, threads=2).session is not updated and len(exports) == 3


def test_onnx_step_exports_from_inside_inference_mode():
    """The codec benchmark and servers run under torch.inference_mode(); the export (tracing) still works there."""
    torch.manual_seed(3)
    model = varied(tiny_model())
    model.remove_weight_norm()  # a loaded checkpoint's folded weights
    decoder = model.audio_decoder
    latents = model.dequantize(random_codes(model, 1, 4))
    with torch.inference_mode():
        offline = decoder(latents)
        with decoder.streaming(1):
            step = onnx_step(decoder)
            streamed = torch.cat([step(latents[:, :, i : i + 1]) for i in range(4)], -1)
    torch.testing.assert_close(streamed, offline, atol=ATOL, rtol=0)


def test_onnx_step_refuses_what_it_cannot_run():
    model = tiny_model().double()
    with pytest.raises(ValueError, match="float32"):
        onnx_step(model.audio_decoder)
