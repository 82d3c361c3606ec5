"""The causal decoder's streaming step as one ONNX Runtime graph: CPU streaming without ~1,000 small torch calls.

    step = onnx_step(codec.audio_decoder)           # exported once per decoder and weights (3-4 s), then kept
    with codec.audio_decoder.streaming(B):
        for chunk in latent_chunks:                  # [B, D, n] decoder inputs, any B and n
            audio = step(chunk)                      # [B, n * hop] == decoder(chunk) to float rounding

Why: a streamed frame of the CPU-profile decoder is ~90 convs of 8-128 channels, each with its half-snake, its
history concatenation and its state copy; in eager torch those ~1,000 calls cost more than their arithmetic
(one thread: 17 ms per 1-frame chunk, of which the matmuls are ~5 ms). ONNX Runtime runs the same graph from
C++ with fused kernels: 8.9 ms per 1-frame chunk, 5.4 ms per frame at 8-frame chunks (torch 6.5); paper scale
66 -> 45 ms per 1-frame chunk (docs/experiments.md, "Inference speed").

How: a copy of the decoder with weight norm folded is traced once (torch's TorchScript-based ONNX exporter) as
a function (latents, state_1..state_S) -> (audio, new_state_1..new_state_S) over every streaming layer's state
(`codec.streaming`), with the batch and the chunk length dynamic, so one graph serves every chunk size. The
states stay where streaming keeps them (each layer's `_streaming_state`): a call reads them and writes the new
ones back, so the step and the torch decoder may take turns inside one `streaming()` block, and leaving the block
clears them as usual. The graph computes the plain formulas (snake, leaky ReLU, conv); the result equals torch's
to float32 rounding (~3e-6 on the CPU profile, 1.4e-5 at paper scale with random weights; tests/test_codec_onnx.py).

CPU and float32 only; `common.onnx_runtime.onnx_runtime_available()` says whether onnx and onnxruntime import
(both are dependencies of nanokoel; without them callers keep the torch decoder). Weights changed after the export
(training) are noticed by their version and re-exported on the next `onnx_step`.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from codec.conv import has_weight_norm, remove_weight_norm
from codec.decoder import HiFiGANDecoder
from codec.streaming import StreamingError, StreamingModule
from common.onnx_runtime import as_array, export_onnx, kept_session

# per decoder instance, its stateful layers (listing them takes ~1 ms); outside the module, so that copies of it do
# not inherit them (no layer refers back to the decoder, so the entry goes with it)
_LAYERS: weakref.WeakKeyDictionary[nn.Module, list[StreamingModule]] = weakref.WeakKeyDictionary()


def stateful_layers(module: StreamingModule) -> list[StreamingModule]:
    """The streaming submodules that carry a state (in module order: the graph's state inputs follow it)."""
    return [m for m in module.streaming_modules() if type(m).init_state is not StreamingModule.init_state]


class _StepFunction(nn.Module):
    """decoder(latents) as a function of the streaming states: (latents, *states) -> (audio, *new_states)."""

    def __init__(self, decoder: StreamingModule) -> None:
        super().__init__()
        self.decoder = decoder
        self.layers = stateful_layers(decoder)

    def forward(self, latents: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for layer, state in zip(self.layers, states, strict=True):
            layer._streaming_state = type(layer.init_state(1))(state)
        audio = self.decoder(latents)  # (B, n * hop)
        return (audio, *(_state_tensor(layer._streaming_state) for layer in self.layers))


def export_step(decoder: HiFiGANDecoder) -> bytes:
    """The ONNX model (bytes) of `decoder`'s streaming step, inputs `latents`, `state_0`.. and outputs `audio`,
    `new_state_0`..; batch and chunk length dynamic. The decoder itself is not changed (a copy is traced)."""
    with torch.inference_mode(False):  # also when called inside inference mode: the copy needs normal tensors
        return _export(decoder)


def _export(decoder: HiFiGANDecoder) -> bytes:
    # a new decoder with the same weights, weight norm folded (a deep copy would share the parametrized class
    # torch makes per module, so folding the copy's weight norm would break the original)
    plain = type(decoder)(decoder.cfg, decoder.input_dim)
    if not has_weight_norm(decoder):  # already folded (a loaded checkpoint): its state has plain weights
        remove_weight_norm(plain)
    plain.load_state_dict(decoder.state_dict())
    remove_weight_norm(plain.float().eval())
    function = _StepFunction(plain)
    batch = 2  # not 1: a size-1 batch could be traced as a constant
    latents = torch.zeros(batch, plain.input_dim, 3)  # (B, D, n), n dynamic
    names = [f"state_{i}" for i in range(len(function.layers))]
    new_names = [f"new_{name}" for name in names]
    dynamic = {"latents": {0: "batch", 2: "frames"}, "audio": {0: "batch", 1: "samples"}}
    dynamic.update({name: {0: "batch"} for name in names + new_names})
    # autograd on: every layer takes its plain formula (the inference shortcuts write into buffers, which ONNX
    # cannot express)
    with plain.streaming(batch), torch.enable_grad():
        states = [_state_tensor(layer._streaming_state).clone() for layer in function.layers]  # zeros
        return export_onnx(function, (latents, *states), ["latents", *names], ["audio", *new_names], dynamic)


class OnnxStreamingStep:
    """`decoder(latents)` inside `decoder.streaming(B)`, run by an ONNX Runtime session (see the module doc)."""

    def __init__(  # noqa: ANN001 (session: an onnxruntime.InferenceSession)
        self, decoder: StreamingModule, session, layers: list[StreamingModule] | None = None
    ) -> None:
        self.decoder = decoder
        self.session = session
        self.layers = layers if layers is not None else stateful_layers(decoder)
        self.input_names = [i.name for i in session.get_inputs()]
        if len(self.input_names) != 1 + len(self.layers):
            raise StreamingError(
                f"ONNX step has {len(self.input_names) - 1} states, the decoder {len(self.layers)} streaming layers"
            )

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, n] float32 on the CPU -> audio [B, n * hop]; reads and advances the layers' states."""
        if not self.decoder.is_streaming:
            raise StreamingError("an ONNX streaming step runs inside `decoder.streaming()`")
        batch = latents.shape[0]
        states = [layer.get_state(batch) for layer in self.layers]
        inputs = [latents, *(_state_tensor(state) for state in states)]
        audio, *new_states = self.session.run(
            None, {n: as_array(t) for n, t in zip(self.input_names, inputs, strict=True)}
        )
        for layer, state, array in zip(self.layers, states, new_states, strict=True):
            layer.set_state(type(state)(torch.from_numpy(array)))  # the state's one field
        return torch.from_numpy(audio)


def _state_tensor(state) -> torch.Tensor:  # noqa: ANN001 (a layer's state dataclass: one tensor field)
    (tensor,) = vars(state).values()
    return tensor


def onnx_step(decoder: HiFiGANDecoder, threads: int | None = None) -> OnnxStreamingStep:
    """The ONNX Runtime step of `decoder` (CPU, float32). The exported session is kept in `decoder.onnx_session`,
    which copies of the decoder that share its weights share (tts_lm's DecoderPool), and remade when a weight
    changes or `threads` (default: torch's intra-op threads) differs (`common.onnx_runtime.kept_session`)."""
    session = kept_session(decoder, decoder.onnx_session, lambda: export_step(decoder), threads)
    layers = _LAYERS.get(decoder)
    if layers is None:
        layers = _LAYERS[decoder] = stateful_layers(decoder)
    return OnnxStreamingStep(decoder, session, layers)
