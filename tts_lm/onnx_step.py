"""The LM's generation step through the Llama backbone as one ONNX Runtime graph (CPU inference).

    step = onnx_backbone_step(lm)      # exported once per weights (~1 s for configs/lm/cpu.yaml), then kept
    hidden = step(embeds, position_ids, mask, cache, alignment)
    # embeds [R, 1, D], position_ids long [R, 1], mask [R, L] (1 = a key this row may see, the new one included),
    # cache: the request's preallocated KV cache (tts_lm/kv_cache.py) -> [R, 1, D], as backbone_step gives it

Why: in a CPU-profile LM step (6 layers, d_model 256, 2 rows with guidance, 1 thread) `backbone_step` takes
5.2 ms, of which the projections' matmuls are ~2.2 ms and the rest is ~25 small torch calls per layer; the same
computation as one graph call takes 2.0 ms (docs/experiments.md, "Inference speed").

The graph (traced once, rows, cache length and text length dynamic):
    inputs   embeds, position_ids, visible [R, M] (which of the cache's M slots this row sees), text_start [R],
             text_len [R], log_prior [R, 1, T] (zeros without the monotonic prior), keys_i / values_i
             [R, H_kv, M, d] of every layer: the cache's whole buffers, read in place (no copy)
    per layer  RMSNorm -> q, k, v -> rotary -> attention over [the visible cached keys, the new key] (the softmax
             over both at once: the same weights as attending to the cache with the new key written into it) ->
             o_proj -> residual -> RMSNorm -> SwiGLU MLP -> residual; alignment layers' first `heads` heads
             attend to the row's text only, with the prior, as `tts_lm.attention` does for an audio query (every
             generation step's query is one)
    outputs  hidden [R, 1, D] after the final norm, new_keys_i / new_values_i [R, H_kv, 1, d] (written into the
             cache here, after the call), logprobs_j [R, heads, 1, T] of each alignment layer (into the context)
So the cache, the prefix (`run_backbone`), the head and the sampling stay in torch, and the result equals
`backbone_step`'s to float rounding (tests/test_lm.py). CPU and float32 only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from common.onnx_runtime import as_array, export_onnx, kept_session
from tts_lm.attention import AlignmentContext, text_attention
from tts_lm.kv_cache import PreallocatedLayer


class _BackboneStepFunction(nn.Module):
    """The backbone's step as a function of the cache buffers (see the module doc for inputs and outputs)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.backbone = lm.backbone
        c = lm.config
        self.alignment_layers = sorted(c.alignment.layers) if c.alignment_enabled else []
        self.alignment_heads = c.alignment.heads

    def forward(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        visible: torch.Tensor,
        text_start: torch.Tensor,
        text_len: torch.Tensor,
        log_prior: torch.Tensor,
        *buffers: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        backbone, rows = self.backbone, embeds.shape[0]
        cos, sin = backbone.rotary_emb(embeds, position_ids=position_ids)
        hidden_visible = ~visible[:, None, None, :]  # (R, 1, 1, M): slots to mask
        x, new, logprobs = embeds, [], []
        for i, layer in enumerate(backbone.layers):
            attn = layer.self_attn
            keys, values = buffers[2 * i], buffers[2 * i + 1]  # (R, H_kv, M, d)
            kv_heads, head_dim = keys.shape[1], attn.head_dim
            h = layer.input_layernorm(x)  # (R, 1, D)
            q, k, v = (
                p(h).view(rows, 1, -1, head_dim).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
            q, k = apply_rotary_pos_emb(q, k, cos, sin)  # q (R, H, 1, d), k and v (R, H_kv, 1, d)
            new += [k, v]
            grouped = q.reshape(
                rows, kv_heads, -1, head_dim
            )  # (R, H_kv, G, d): head j uses kv head j // G, as repeat_kv
            cached = (grouped @ keys.transpose(-1, -2)) * attn.scaling  # (R, H_kv, G, M)
            cached = cached.masked_fill(hidden_visible, float("-inf"))
            own = (grouped * k).sum(-1, keepdim=True) * attn.scaling  # (R, H_kv, G, 1): the new key
            weights = torch.cat([cached, own], dim=-1).softmax(-1)
            out = weights[..., :-1] @ values + weights[..., -1:] * v  # (R, H_kv, G, d)
            out = out.reshape(rows, -1, 1, head_dim)  # (R, H, 1, d)
            if i in self.alignment_layers:  # an audio query: the alignment heads attend to the row's text
                heads = self.alignment_heads
                text_out, logp = text_attention(
                    q[:, :heads],
                    keys[:, :heads],
                    values[:, :heads],
                    text_start,
                    text_len,
                    log_prior.shape[-1],
                    attn.scaling,
                    log_prior,
                )
                logprobs.append(logp)
                out = torch.cat([text_out, out[:, heads:]], dim=1)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(rows, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return (backbone.norm(x), *new, *logprobs)


INPUTS = ["embeds", "position_ids", "visible", "text_start", "text_len", "log_prior"]


def export_backbone_step(lm: nn.Module) -> bytes:
    """The ONNX model (bytes) of `lm`'s backbone step; rows, cache length and text length dynamic."""
    c = lm.config
    rows, slots, num_text, kv_heads, head_dim = 3, 7, 5, c.kv_heads, c.d_model // c.num_heads
    example = (
        torch.zeros(rows, 1, c.d_model),
        torch.full((rows, 1), slots, dtype=torch.long),
        torch.ones(rows, slots, dtype=torch.bool),
        torch.zeros(rows, dtype=torch.long),
        torch.full((rows,), num_text, dtype=torch.long),
        torch.zeros(rows, 1, num_text),
        *(torch.zeros(rows, kv_heads, slots, head_dim) for _ in range(2 * c.num_layers)),
    )
    buffers = [f"{kind}_{i}" for i in range(c.num_layers) for kind in ("keys", "values")]
    function = _BackboneStepFunction(lm)
    outputs = ["hidden", *(f"new_{name}" for name in buffers)]
    outputs += [f"logprobs_{layer}" for layer in function.alignment_layers]
    dynamic = {"embeds": {0: "rows"}, "position_ids": {0: "rows"}, "visible": {0: "rows", 1: "slots"}}
    dynamic |= {"text_start": {0: "rows"}, "text_len": {0: "rows"}, "log_prior": {0: "rows", 2: "text"}}
    dynamic |= {name: {0: "rows", 2: "slots"} for name in buffers}
    dynamic |= {name: {0: "rows"} for name in outputs}
    with torch.no_grad():
        return export_onnx(function, example, [*INPUTS, *buffers], outputs, dynamic)


class OnnxBackboneStep:
    """`backbone_step(lm, ...)` run by an ONNX Runtime session (see the module doc)."""

    def __init__(self, lm: nn.Module, session: Any) -> None:
        self.session = session
        self.input_names = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph ignores
        self.num_layers = lm.config.num_layers
        self.alignment_layers = sorted(lm.config.alignment.layers) if lm.config.alignment_enabled else []

    @torch.no_grad()
    def __call__(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        alignment: AlignmentContext | None = None,
    ) -> torch.Tensor:
        """float [R, 1, D] -> float [R, 1, D], appending one position to `cache` (a preallocated cache)."""
        layers = cache.layers
        if not all(isinstance(layer, PreallocatedLayer) and layer.is_initialized for layer in layers):
            raise TypeError("the ONNX Runtime step needs a filled preallocated KV cache (tts_lm.kv_cache)")
        rows, length, slots = embeds.shape[0], layers[0].length, layers[0].max_len
        visible = torch.zeros(rows, slots, dtype=torch.bool)
        visible[:, :length] = mask[:, :length].bool()
        feeds = {"embeds": embeds, "position_ids": position_ids, "visible": visible}
        if alignment is not None:
            prior = alignment.log_prior
            prior = torch.zeros(rows, 1, alignment.num_text) if prior is None else prior
            feeds |= {"text_start": alignment.text_start, "text_len": alignment.text_len, "log_prior": prior}
        for i, layer in enumerate(layers):
            feeds |= {f"keys_{i}": layer.key_buffer, f"values_{i}": layer.value_buffer}
        hidden, *rest = self.session.run(
            None, {name: as_array(t) for name, t in feeds.items() if name in self.input_names}
        )
        new, logprobs = rest[: 2 * self.num_layers], rest[2 * self.num_layers :]
        for i, layer in enumerate(layers):
            layer.update(torch.from_numpy(new[2 * i]), torch.from_numpy(new[2 * i + 1]))
        if alignment is not None:
            for layer, logp in zip(self.alignment_layers, logprobs, strict=True):
                alignment.logprobs[layer] = torch.from_numpy(logp)
        return torch.from_numpy(hidden)


def onnx_backbone_step(lm: nn.Module, threads: int | None = None) -> OnnxBackboneStep:
    """The ONNX Runtime backbone step of `lm` (CPU, float32), exported on first use and kept in `lm.onnx_session`
    until a weight changes or `threads` (default: torch's intra-op threads) differs."""
    return OnnxBackboneStep(lm, kept_session(lm, lm.onnx_session, lambda: export_backbone_step(lm), threads))
