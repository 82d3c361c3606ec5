"""One generation step of the LM's Llama backbone (one new position per row), its projections fused.

    hidden = backbone_step(lm, embeds, position_ids, mask, cache, ctx)
    # embeds [R, 1, D], position_ids long [R, 1], mask [R, L] (1 = a key this row may see, the new one included)
    # -> [R, 1, D], as `lm.run_backbone(embeds, position_ids, mask, cache, ctx)` gives it

The same computation as transformers' LlamaModel with this project's attention, for a single query position:
RMSNorm -> q/k/v as ONE matmul -> rotary -> KV cache -> `koel_alignment_attention` (so the alignment heads, their
prior and the log-probabilities handed back are the same code) -> o_proj -> residual -> RMSNorm -> gate/up as ONE
matmul -> SiLU(gate) x up -> down -> residual; then the final norm. The fused weights are the layers' own,
concatenated and kept transposed (`DerivedWeight`, remade when a weight changes), so the sums are the same up to
float rounding (tests/test_lm.py: equal to `run_backbone` to 1e-5, padded rows and alignment heads included).
The copies cost the backbone's size once more in memory while the model generates (20 MB for configs/lm/cpu.yaml,
450 MB for paper.yaml).

Why: in a step of the CPU-profile LM (6 layers, d_model 256, 2 rows with guidance, 1 thread) the backbone took
6.7 ms through transformers' layers (7 projections, decorators, kwargs and the mask builder per layer) and ~5.1 ms
here (LM step 9.1 -> 7.5-8.0 ms); the prefix and training keep `run_backbone`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from common.derived import DerivedWeight, version_key
from tts_lm.attention import AlignmentContext, koel_alignment_attention


def fused_weights(layer: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """One Llama layer's projections as matmul operands [in, out]: (q|k|v, o, gate|up, down)."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).t().contiguous()
    gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous()
    return qkv, attn.o_proj.weight.t().contiguous(), gate_up, mlp.down_proj.weight.t().contiguous()


def layer_weights(layer: torch.nn.Module) -> list[torch.Tensor]:
    attn, mlp = layer.self_attn, layer.mlp
    linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    if any(m.bias is not None for m in linears):
        raise ValueError("backbone_step: the LM's projections have biases; use run_backbone")
    return [m.weight for m in linears]


@torch.no_grad()
def backbone_step(
    lm: Any,
    embeds: torch.Tensor,
    position_ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    alignment: AlignmentContext | None = None,
) -> torch.Tensor:
    """float [R, 1, D] -> float [R, 1, D] through the Llama layers, appending one position to `cache`."""
    backbone = lm.backbone
    rows = embeds.shape[0]
    store: DerivedWeight = lm.step_weights
    params = [w for layer in backbone.layers for w in layer_weights(layer)]
    weights = store.get(version_key(*params), lambda: [fused_weights(layer) for layer in backbone.layers])
    cos, sin = backbone.rotary_emb(embeds, position_ids=position_ids)
    keys_visible = mask[:, None, None, :].bool()  # (R, 1, 1, L): the padding mask of the one query
    x = embeds
    for layer, (w_qkv, w_o, w_gate_up, w_down) in zip(backbone.layers, weights, strict=True):
        attn = layer.self_attn
        head_dim = attn.head_dim
        q, k, v = (layer.input_layernorm(x).view(rows, -1) @ w_qkv).split(
            [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features], dim=-1
        )
        q, k, v = (t.view(rows, 1, -1, head_dim).transpose(1, 2) for t in (q, k, v))  # (R, heads, 1, d)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = cache.update(k, v, attn.layer_idx)  # (R, kv heads, L, d)
        out, _ = koel_alignment_attention(
            attn, q, k, v, keys_visible, scaling=attn.scaling, koel_alignment=alignment
        )  # (R, 1, heads, d)
        x = x + (out.reshape(rows, -1) @ w_o).view(rows, 1, -1)
        gate, up = (layer.post_attention_layernorm(x).view(rows, -1) @ w_gate_up).chunk(2, dim=-1)
        x = x + ((layer.mlp.act_fn(gate) * up) @ w_down).view(rows, 1, -1)
    return backbone.norm(x)
