"""ONNX Runtime for the CPU inference steps: export a torch function once, run it from C++ call after call.

    model = export_onnx(function, example_args, input_names, output_names, dynamic_axes)   # bytes
    session = make_session(model, threads=1)
    outputs = session.run(None, {name: as_array(tensor) for name, tensor in ...})          # numpy arrays

Why: a streamed decoder frame or an LM step is ~1,000 small torch calls whose per-call cost outweighs their
arithmetic on a CPU; ONNX Runtime runs the same graph with fused kernels and no Python between them (the codec's
streaming decoder 17 -> 9 ms per frame, the LM backbone step 5.2 -> 2.0 ms: codec/onnx_step.py,
tts_lm/onnx_step.py). The graphs are traced by torch's TorchScript-based exporter (`dynamo=False`), which records
tensor sizes symbolically, so axes named in `dynamic_axes` (batch, chunk length, cache length) stay free.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from common.derived import DerivedWeight, version_key

OPSET = 17
# per module instance: its parameters and buffers (listing them takes ~2 ms with weight norm); kept outside the module
# so that copies of it do not inherit the list, and dropped with the module (a tensor does not refer back to it)
_TENSORS: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.Tensor]] = weakref.WeakKeyDictionary()


@functools.cache
def onnx_runtime_available() -> bool:
    """True when `onnx` (the exporter needs it) and `onnxruntime` are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def export_onnx(
    function: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> bytes:
    """The ONNX model of `function(*args)` as bytes (opset OPSET). Works inside torch.inference_mode() too; the
    tracer's warnings about the Python ints it records are silenced (they are what dynamic_axes makes symbolic)."""
    buffer = io.BytesIO()
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            function,
            args,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
        )
    return buffer.getvalue()


def make_session(model: bytes, threads: int) -> Any:
    """An onnxruntime.InferenceSession of `model` on the CPU with `threads` intra-op threads (calls are
    thread-safe: concurrent requests may share one session)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def as_array(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a C-contiguous numpy array for a session's input (no copy when it already is one)."""
    return np.ascontiguousarray(t.detach().numpy())


def require_onnx_runtime() -> None:
    if not onnx_runtime_available():
        raise RuntimeError("ONNX Runtime inference needs the `onnx` and `onnxruntime` packages: pip install them")


def kept_session(module: torch.nn.Module, box: DerivedWeight, export: Callable[[], bytes], threads: int | None) -> Any:
    """The session of `export()`'s model for `module`, kept in `box` (a DerivedWeight of the module, which copies
    sharing its weights may share) and made again when a weight changes (in place, replaced, moved or cast) or the
    thread count (default: torch's intra-op threads) differs. ~0.1 ms when kept. ValueError for a module that is
    not float32 on the CPU."""
    require_onnx_runtime()
    threads = threads or torch.get_num_threads()
    tensors = _TENSORS.get(module)
    if tensors is None:
        tensors = _TENSORS[module] = [*module.parameters(), *module.buffers()]

    def make() -> Any:
        if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
            raise ValueError(f"ONNX Runtime runs a float32 {type(module).__name__} on the CPU; use torch instead")
        return make_session(export(), threads)

    return box.get((threads, *version_key(*tensors)), make)
