"""One streaming base class for every causal layer of the codec (after kyutai's moshi `StreamingModule`).

    with model.streaming(batch_size=B):        # zero state on every streaming submodule
        for i in range(F):
            chunk = model.decode(codes[:, :, i : i + 1])   # each layer carries its own state forward
    # leaving the block clears every state

A streaming layer subclasses `StreamingModule[S]`, where `S` is a small dataclass holding what the layer
must remember between calls (a causal conv: its last input samples; a causal transposed conv: the overlap-add
tail it has not emitted yet). It implements `init_state(batch_size)` (the state of a layer that has seen only
silence before the start, i.e. zeros) and writes its `forward` as ONE step:

    state = self.get_state(batch_size)        # the live streaming state, or a fresh zero state offline
    y, new_state = step(x, state)
    self.set_state(new_state)                  # kept only inside `streaming()`; dropped offline

So offline forward is exactly streaming from a zero state with the whole input as one chunk, and streaming
in any chunking agrees with it by construction (tests/test_codec_model.py checks it). There is no lookahead:
a layer emits all the output its input so far determines.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Generic, TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

S = TypeVar("S")


class StreamingError(RuntimeError):
    """Streaming used wrongly (nested `streaming()`, a batch size other than the one the state was made for)."""


class StreamingModule(nn.Module, Generic[S]):
    """Base of every module that can run chunk by chunk. Containers subclass it without a state of their own.

    Subclasses with state override `init_state`; `streaming()` on any module (usually the root) sets the zero
    state of every streaming submodule, itself included, and clears them all on exit (also on error).
    """

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: S | None = None
        self._streaming_batch: int | None = None

    # -- what a stateful layer implements -------------------------------------------------------------------
    def init_state(self, batch_size: int) -> S | None:
        """The state before any input (zeros). `None` for stateless containers."""
        return None

    # -- helpers for `forward` --------------------------------------------------------------------------------
    @property
    def is_streaming(self) -> bool:
        return self._streaming_batch is not None

    def get_state(self, batch_size: int) -> S:
        """The streaming state when streaming (checked against `batch_size`), else a fresh zero state."""
        if self._streaming_batch is None:
            state = self.init_state(batch_size)
            assert state is not None, f"{type(self).__name__} has no streaming state"
            return state
        if batch_size != self._streaming_batch:
            raise StreamingError(
                f"{type(self).__name__}: input batch size {batch_size} differs from the streaming batch size "
                f"{self._streaming_batch}; open `streaming(batch_size={batch_size})` instead"
            )
        assert self._streaming_state is not None
        return self._streaming_state

    def set_state(self, state: S) -> None:
        """Keep `state` for the next call when streaming; offline it is dropped."""
        if self._streaming_batch is not None:
            self._streaming_state = state

    def _param_like(self) -> torch.Tensor:
        """A tensor with this module's device and float dtype (to build zero states)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p
        return torch.zeros(())

    # -- the context manager ---------------------------------------------------------------------------------
    def streaming_modules(self) -> list[StreamingModule]:
        return [m for m in self.modules() if isinstance(m, StreamingModule)]

    @contextlib.contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Stream inside the block: every streaming submodule starts from its zero state, states are cleared after.

        Parametrized weights (weight norm) are computed once per block, not once per call (`parametrize.cached`):
        do not change the weights inside the block.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise StreamingError(f"streaming(batch_size={batch_size!r}): batch_size must be a positive int")
        modules = self.streaming_modules()
        if any(m.is_streaming for m in modules):
            raise StreamingError(f"{type(self).__name__} is already streaming; `streaming()` blocks do not nest")
        try:
            for m in modules:
                m._streaming_state = m.init_state(batch_size)
                m._streaming_batch = batch_size
            with parametrize.cached():
                yield
        finally:
            for m in modules:
                m._streaming_state = None
                m._streaming_batch = None

    def reset_streaming(self) -> None:
        """Back to the zero state without leaving the `streaming()` block (a new utterance, same batch size)."""
        for m in self.streaming_modules():
            if m._streaming_batch is not None:
                m._streaming_state = m.init_state(m._streaming_batch)


class StaticStreamingStep:
    """A streaming step with fixed shapes and fixed buffers (input, output, every layer's state), CUDA-graph ready.

            with decoder.streaming(B):
                step = StaticStreamingStep(decoder, example)     # example: one chunk [B, C, T] (e.g. one frame)
                for chunk in chunks:
                    audio = step(chunk)                           # == decoder(chunk), as streaming would give it

    On CUDA (`graph=True`, the default there) the whole step, including writing each layer's new state back into
    its buffer, is captured once as a CUDA graph and replayed per chunk: one launch instead of hundreds of small
    kernels with Python between them. Elsewhere the same buffers run eagerly (the protocol tests/ check on CPU).
    A chunk of another shape (a last, shorter chunk) runs eagerly from the same state. `reset()` zeroes the state
    (a new utterance) and keeps the graph. The step must not contain host synchronisation (pass decoder inputs,
    not codes to validate).
    """

    def __init__(self, module: StreamingModule, example: torch.Tensor, graph: bool | None = None) -> None:
        self.module = module
        self.layers = [m for m in module.streaming_modules() if m._streaming_state is not None]
        if not module.is_streaming:
            raise StreamingError("StaticStreamingStep needs the module inside `streaming()`")
        self.input = example.clone()
        self.states = [_clone_state(m._streaming_state) for m in self.layers]  # the buffers each step reads
        self.graph = None
        self.output: torch.Tensor | None = None
        if graph if graph is not None else example.is_cuda:
            self._capture()

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """module(x) from the state buffers; new states are copied back into them (in place)."""
        for m, state in zip(self.layers, self.states, strict=True):
            m._streaming_state = state
        out = self.module(x)
        for m, state in zip(self.layers, self.states, strict=True):
            new = m._streaming_state
            for f in dataclasses.fields(state):
                buffer, value = getattr(state, f.name), getattr(new, f.name)
                if buffer.shape != value.shape:
                    raise StreamingError(f"{type(m).__name__}: state shape changed; chunks must keep one shape")
                buffer.copy_(value)
            m._streaming_state = state
        return out

    def _capture(self) -> None:
        saved = [_clone_state(s) for s in self.states]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up (allocations, lazy caches) outside the graph
            for _ in range(2):
                self._step(self.input)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._step(self.input)
        for state, kept in zip(self.states, saved, strict=True):  # the warm-up advanced the state: undo it
            _copy_state(state, kept)

    def fresh_block(self) -> bool:
        """True when the module is in a new `streaming()` block since this step last ran (its states are not ours)."""
        return any(m._streaming_state is not state for m, state in zip(self.layers, self.states, strict=True))

    def reset(self) -> None:
        """Back to the zero state (a new utterance), keeping the buffers and the graph."""
        batch = self.module._streaming_batch
        for m, state in zip(self.layers, self.states, strict=True):
            _copy_state(state, m.init_state(batch))
            m._streaming_state = state

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is None or x.shape != self.input.shape:
            return self._step(x)
        self.input.copy_(x)
        self.graph.replay()
        return self.output.clone()


def _clone_state(state):  # noqa: ANN001, ANN202 (a layer's state dataclass)
    return dataclasses.replace(state, **{f.name: getattr(state, f.name).clone() for f in dataclasses.fields(state)})


def _copy_state(target, source) -> None:  # noqa: ANN001
    for f in dataclasses.fields(target):
        getattr(target, f.name).copy_(getattr(source, f.name))
