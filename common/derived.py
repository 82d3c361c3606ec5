"""Tensors derived from a module's parameters for inference (a matmul layout, a reciprocal), rebuilt when they change.

    layout = DerivedWeight()
    w_t = layout.get(version_key(weight), lambda: weight.t().contiguous())   # made once, again after an update

`version_key` identifies what a tensor holds without reading it: its storage (data_ptr: replaced, moved or cast),
its in-place version counter (an optimizer step) and dtype. A DerivedWeight is a small mutable box, so module
replicas that share their parameters can share it too (tts_lm's DecoderPool).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def version_key(*tensors: torch.Tensor) -> tuple:
    """What the tensors hold right now, cheaply: (data_ptr, in-place version, dtype) of each."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)


class DerivedWeight:
    """A tensor derived from a layer's weights for inference (e.g. its matmul layout), with the key it was made for."""

    def __init__(self) -> None:
        self.entry: tuple[tuple, torch.Tensor] | None = None

    def __reduce__(self) -> tuple:
        """A copy (copy.deepcopy, pickle) starts empty: what it holds is remade from the copy's own weights on first
        use, and may not be copyable at all (an ONNX Runtime session). Replicas that should share the box pass it
        in deepcopy's memo (tts_lm's DecoderPool)."""
        return (type(self), ())

    def get(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        entry = self.entry
        if entry is None or entry[0] != key:
            entry = self.entry = (key, make())
        return entry[1]
