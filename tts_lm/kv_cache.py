"""A key/value cache allocated once per generation: each step writes its keys and values in place, no concatenation.

    cache = preallocated_cache(num_layers, max_len)     # a transformers Cache, passed to the backbone as usual
    lm.run_backbone(embeds, positions, mask, cache)      # layer i: keys [R, H, L, d] = views of one buffer

transformers' DynamicCache grows every layer's keys and values with `torch.cat` at every step, copying the whole
cache each time (quadratic in the length, and a new allocation per layer and step). Here every layer allocates
[R, H, max_len, d] buffers on its first update (prefix) and later steps copy their one new position into them; the
attention sees views of the first L positions, so its inputs (and so its outputs) are the DynamicCache's exactly.
Static buffer addresses also make a step capturable as a CUDA graph.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer  # the layer API of transformers >= 4.56


class PreallocatedLayer(DynamicLayer):
    """One layer's cache: [R, H, max_len, d] buffers, filled left to right; `keys` / `values` are views of them."""

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor | None = None) -> None:
        # value_states optional: older transformers 5.x pass the keys only
        batch, heads, _, key_dim = key_states.shape
        value_dim = value_states.shape[-1] if value_states is not None else key_dim
        self.device, self.dtype = key_states.device, key_states.dtype
        self.key_buffer = key_states.new_zeros(batch, heads, self.max_len, key_dim)
        self.value_buffer = key_states.new_zeros(batch, heads, self.max_len, value_dim)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new positions [R, H, n, d] after the cached ones; return all of them (views)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {end} positions, allocated {self.max_len}")
        self.key_buffer[:, :, start:end].copy_(key_states)
        self.value_buffer[:, :, start:end].copy_(value_states)
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_len


def preallocated_cache(num_layers: int, max_len: int) -> Cache:
    """A transformers Cache of `num_layers` PreallocatedLayers holding up to `max_len` positions each."""
    return Cache(layers=[PreallocatedLayer(max_len) for _ in range(num_layers)])
