"""KoelLM: a Koel-style decoder-only TTS language model over parallel codec codebooks (Koel-TTS, Hussain et al. 2025).

    lm = KoelLM(LMConfig(...))                            # or KoelLM.from_pretrained("runs/tts_lm/cpu_12.5fps")
    out = lm(batch, prior_weight=1.0)                     # LMBatch -> LMOutput(loss, ce_loss, align_loss, ...)
    codes = lm.generate(phoneme_ids, prompt_codes, cfg_scale=2.5, temperature=0.6, top_k=80)   # long [B, K, F]
    for frame in lm.stream(phoneme_ids, prompt_codes):   # long [B, K, 1] each, as soon as it is sampled
        ...

Sequence per row (see sequence.py): [speaker-prompt frames] [text BOS, phoneme ids, text EOS] [audio BOS,
target frames..., audio EOS]. A frame's input embedding is the sum (or mean) of its K per-codebook embeddings;
the output is one linear to K x (codebook_size + 3 specials), all codebooks of a frame in parallel (or a tiny
local transformer over them, by config). Cross-entropy is on the audio positions only.

Text: phoneme embeddings, read first by a non-causal text encoder (text_encoder.py; Koel's encoder, as an
option: `text_encoder_layers`, 0 = off) when the config has one.

Backbone: transformers' LlamaModel driven with `inputs_embeds` (RoPE, RMSNorm, SwiGLU, SDPA, DynamicCache).
Alignment heads (attention.py) carry the beta-binomial prior and feed the forward-sum loss. Classifier-free
guidance: rows flagged `uncond` get learned "unconditional" embeddings in place of every prompt and text
position (same lengths), so the conditional and unconditional branches share one layout at inference.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaModel

from common.config import config_from_dict, config_to_dict
from common.derived import DerivedWeight
from common.fileio import atomic_path, write_json_atomic
from tts_lm.attention import AlignmentContext, register_attention
from tts_lm.code_levels import LevelEmbedding, LevelHead
from tts_lm.config import NUM_AUDIO_SPECIALS, PHONEME_BOS, PHONEME_EOS, PHONEME_PAD, LMConfig
from tts_lm.forward_sum import forward_sum_loss
from tts_lm.local_transformer import LocalTransformer, ParallelHead
from tts_lm.prior import log_attention_prior
from tts_lm.sequence import Layout, assemble, stack_frames, text_with_specials
from tts_lm.text_encoder import TextEncoder

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


@dataclass
class LMBatch:
    """One training batch (padded). Codes are codec codes; phoneme ids are PhonemeVocab ids without BOS/EOS.

    Attributes:
        phoneme_ids: long [B, N]; phoneme_lens: long [B].
        prompt_codes: long [B, K, P] speaker-prompt frames; prompt_lens: long [B] (frames).
        codes: long [B, K, F] target frames; code_lens: long [B] (frames).
        uncond: bool [B], rows trained unconditionally (text and prompt dropped together).
    """

    phoneme_ids: torch.Tensor
    phoneme_lens: torch.Tensor
    prompt_codes: torch.Tensor
    prompt_lens: torch.Tensor
    codes: torch.Tensor
    code_lens: torch.Tensor
    uncond: torch.Tensor

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(**{k: v.to(device) for k, v in vars(self).items()})

    @property
    def size(self) -> int:
        return self.codes.shape[0]


@dataclass
class LMOutput:
    """Training forward result. `logits` [B, Q, C, V] and `hidden` [B, Q, D] (audio steps) on request."""

    loss: torch.Tensor
    ce_loss: torch.Tensor
    align_loss: torch.Tensor
    accuracy: torch.Tensor
    num_tokens: int
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def _llama_config(cfg: LMConfig) -> LlamaConfig:
    llama = LlamaConfig(
        vocab_size=1,  # unused: the model is driven with inputs_embeds
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_dropout=cfg.attention_dropout,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    llama._attn_implementation = register_attention()
    return llama


class KoelLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = c = config
        c.check_code_levels()
        vocab, streams = c.vocab_per_codebook, c.num_streams
        self.text_embedding = nn.Embedding(c.phoneme_vocab_size, c.d_model)
        self.text_encoder = (
            TextEncoder(c.d_model, c.text_encoder_layers, c.num_heads, c.ffn_size, c.text_encoder_kernel)
            if c.text_encoder_layers > 0
            else None
        )
        # stream s uses rows s*V .. s*V + V-1
        self.audio_embedding: nn.Module = (
            LevelEmbedding(streams, c.code_levels, NUM_AUDIO_SPECIALS, c.d_model)
            if c.code_levels
            else nn.Embedding(streams * vocab, c.d_model)
        )
        self.uncond_text = nn.Parameter(torch.randn(c.d_model) * 0.02)
        self.uncond_prompt = nn.Parameter(torch.randn(c.d_model) * 0.02)
        self.backbone = LlamaModel(_llama_config(c))
        self.backbone.embed_tokens = None  # inputs come as embeddings; keeps DDP free of unused parameters
        if c.local_transformer_layers > 0:
            self.head: nn.Module = LocalTransformer(
                c.d_model,
                streams,
                vocab,
                c.local_transformer_dim,
                c.local_transformer_layers,
                c.local_transformer_heads,
            )
        elif c.code_levels:
            self.head = LevelHead(c.d_model, streams, c.code_levels, NUM_AUDIO_SPECIALS)
        else:
            self.head = ParallelHead(c.d_model, streams, vocab)
        for emb in (self.text_embedding, self.audio_embedding):
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, std=0.02)
        if isinstance(self.head, ParallelHead | LevelHead):
            nn.init.normal_(self.head.proj.weight, std=0.02)
            nn.init.zeros_(self.head.proj.bias)
        self.register_buffer("stream_offsets", torch.arange(streams) * vocab, persistent=False)
        self.step_weights = DerivedWeight()  # backbone_step's fused projections, made on first use
        self.onnx_session = DerivedWeight()  # tts_lm.onnx_step's exported backbone step, made on first use

    # ---- embeddings -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.uncond_text.device

    def embed_audio(self, steps: torch.Tensor) -> torch.Tensor:
        """long [B, C, L] codes per stream -> float [B, L, D] (sum or mean over streams)."""
        emb = self.audio_embedding(steps + self.stream_offsets[None, :, None])  # (B, C, L, D)
        return emb.mean(1) if self.config.frame_embedding == "mean" else emb.sum(1)

    def embed_prefix(
        self, text_ids: torch.Tensor, text_len: torch.Tensor, prompt_steps: torch.Tensor, uncond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text ids [B, T] (with BOS/EOS), their lengths [B], prompt steps [B, C, P], uncond bool [B]
        -> (prompt [B, P, D], text [B, T, D]); the text through the text encoder when the config has one."""
        prompt = self.embed_audio(prompt_steps)  # (B, P, D)
        text = self.text_embedding(text_ids)  # (B, T, D)
        if self.text_encoder is not None:
            text = self.text_encoder(text, text_len)
        u = uncond[:, None, None]
        return torch.where(u, self.uncond_prompt.to(prompt.dtype), prompt), torch.where(u, self.uncond_text, text)

    def prompt_steps(self, prompt_codes: torch.Tensor, prompt_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt frames [B, K, P] -> (steps [B, C, ceil(P/S)], step lengths [B])."""
        s, pad = self.config.frames_per_step, self.config.audio_pad
        frames = torch.arange(prompt_codes.shape[2], device=prompt_codes.device)
        codes = prompt_codes.masked_fill(frames[None, None, :] >= prompt_lens[:, None, None], pad)
        return stack_frames(codes, s, pad), (prompt_lens + s - 1) // s

    def alignment_context(self, layout: Layout, log_prior: torch.Tensor | None = None) -> AlignmentContext | None:
        a = self.config.alignment
        if not self.config.alignment_enabled:
            return None
        return AlignmentContext(
            frozenset(a.layers), a.heads, layout.text_start, layout.text_len, layout.audio_start, log_prior
        )

    def run_backbone(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        alignment: AlignmentContext | None = None,
    ) -> torch.Tensor:
        """float [B, L, D] -> float [B, L, D] through the Llama layers (appending to `cache` when given)."""
        out = self.backbone(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
            koel_alignment=alignment,
        )
        return out.last_hidden_state

    # ---- training forward -----------------------------------------------------------------------------------
    def forward(
        self, batch: LMBatch, prior_weight: float = 0.0, return_logits: bool = False, blank_inputs: bool = False
    ) -> LMOutput:
        """Teacher-forced forward: cross-entropy on every audio step (+ the alignment loss, weighted).

        `blank_inputs` (the LM's training step only): each input audio step after audio BOS is replaced by a zero
        embedding with probability `config.audio_input_dropout` (torch's RNG), so that predicting a frame cannot
        lean on the frame before it alone and has to read the text. Targets are unchanged.
        """
        c = self.config
        batch_size, num_codebooks, _ = batch.codes.shape
        if num_codebooks != c.num_codebooks:
            raise ValueError(f"KoelLM: batch has {num_codebooks} codebooks, the model {c.num_codebooks}")

        # targets: frames, EOS, PAD -> steps; inputs: audio BOS then the targets shifted by one step
        target, audio_len = self.audio_targets(batch.codes, batch.code_lens)  # (B, C, Q), (B,)
        audio_in = torch.cat([torch.full_like(target[:, :, :1], c.audio_bos), target[:, :, :-1]], dim=2)  # (B, C, Q)

        text_ids = text_with_specials(
            [ids[:n] for ids, n in zip(batch.phoneme_ids.cpu(), batch.phoneme_lens.tolist(), strict=True)],
            PHONEME_BOS,
            PHONEME_EOS,
            PHONEME_PAD,
        ).to(batch.codes.device)
        text_len = batch.phoneme_lens + 2
        prompt_steps, prompt_len = self.prompt_steps(batch.prompt_codes, batch.prompt_lens)
        prompt_emb, text_emb = self.embed_prefix(text_ids, text_len, prompt_steps, batch.uncond)
        audio_emb = self.embed_audio(audio_in)  # (B, Q, D)
        if blank_inputs and c.audio_input_dropout > 0:
            blank = torch.rand(audio_emb.shape[:2], device=audio_emb.device) < c.audio_input_dropout  # (B, Q)
            blank[:, 0] = False  # audio BOS stays: it marks where the audio starts
            audio_emb = audio_emb.masked_fill(blank[..., None], 0.0)
        layout = assemble([(prompt_emb, prompt_len), (text_emb, text_len), (audio_emb, audio_len)], left_pad=False)

        log_prior = None
        if prior_weight > 0 and c.alignment_enabled:
            a = c.alignment
            prior = log_attention_prior(text_len, audio_len, a.prior_scaling, prior_weight)  # (B, Q, T)
            log_prior = prior.new_zeros(batch_size, layout.embeds.shape[1], prior.shape[2])  # (B, L, T)
            for b in range(batch_size):
                if not bool(batch.uncond[b]):
                    start, n = int(layout.audio_start[b]), int(audio_len[b])
                    log_prior[b, start : start + n] = prior[b, :n]
        ctx = self.alignment_context(layout, log_prior)
        hidden = self.run_backbone(layout.embeds, layout.position_ids, alignment=ctx)  # (B, L, D)

        positions, valid = layout.audio_index()  # (B, Q) each
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[2]))  # (B, Q, D)
        target = target.transpose(1, 2)  # (B, Q, C)
        logits = self.head(hidden[valid], target[valid])  # (N, C, V)
        flat_target = target[valid]  # (N, C)
        ce = F.cross_entropy(logits.float().flatten(0, 1), flat_target.flatten(), ignore_index=c.audio_pad)
        counted = flat_target != c.audio_pad
        accuracy = (logits.argmax(-1) == flat_target)[counted].float().mean()

        align = self._alignment_loss(ctx, positions, text_len, audio_len, ~batch.uncond) if ctx else ce.new_zeros(())
        loss = ce + c.alignment.ctc_weight * align
        out = LMOutput(loss, ce.detach(), align.detach(), accuracy.detach(), int(counted.sum()))
        if return_logits:
            full = logits.new_zeros(*valid.shape, *logits.shape[1:])  # (B, Q, C, V)
            full[valid] = logits
            out.logits, out.hidden = full, hidden
        return out

    def audio_targets(self, codes: torch.Tensor, code_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes long [B, K, F] + lengths [B] -> (targets long [B, C, Q], audio steps per row [B], EOS included).

        Per row: its frames, audio EOS after the last one, then PAD; stacked into steps (C = K * frames_per_step,
        Q = ceil((F + 1) / frames_per_step)). The output at audio step q predicts target step q.
        """
        c = self.config
        s, eos, pad = c.frames_per_step, c.audio_eos, c.audio_pad
        frames = torch.arange(codes.shape[2] + 1, device=codes.device)[None, None, :]  # (1, 1, F+1)
        target = F.pad(codes, (0, 1), value=pad)  # (B, K, F+1)
        target = torch.where(frames == code_lens[:, None, None], eos, target)
        target = torch.where(frames > code_lens[:, None, None], pad, target)
        return stack_frames(target, s, pad), (code_lens + 1 + s - 1) // s  # (B, C, Q), (B,)

    def _alignment_loss(
        self,
        ctx: AlignmentContext,
        positions: torch.Tensor,
        text_len: torch.Tensor,
        audio_len: torch.Tensor,
        keep: torch.Tensor,
    ) -> torch.Tensor:
        """Forward-sum loss on the alignment heads (mean attention over heads), averaged over layers."""
        if not bool(keep.any()):
            return ctx.text_len.new_zeros((), dtype=torch.float)
        losses = []
        for logprobs in ctx.logprobs.values():  # (B, h, L, T)
            index = positions[:, None, :, None].expand(-1, logprobs.shape[1], -1, logprobs.shape[3])
            audio = logprobs.gather(2, index)  # (B, h, Q, T)
            mean = torch.logsumexp(audio, dim=1) - math.log(audio.shape[1])  # (B, Q, T), log of the mean prob
            a = self.config.alignment
            losses.append(
                forward_sum_loss(mean[keep], text_len[keep], audio_len[keep], a.blank_logprob, a.ctc_audio_repeat)
            )
        return torch.stack(losses).mean()

    # ---- generation (tts_lm/generate.py) --------------------------------------------------------------------
    def generate(self, phoneme_ids: Any, prompt_codes: Any, **kwargs: Any) -> torch.Tensor:
        """Phonemes + speaker prompt -> codes long [B, K, F]; see `tts_lm.generate.generate` for the options.

        Rows that end earlier are padded with -1 (`generate_output` returns the lengths too).
        """
        return self.generate_output(phoneme_ids, prompt_codes, **kwargs).codes

    def generate_output(self, phoneme_ids: Any, prompt_codes: Any, **kwargs: Any):
        from tts_lm.generate import generate

        return generate(self, phoneme_ids, prompt_codes, **kwargs)

    def stream(self, phoneme_ids: Any, prompt_codes: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
        """Yield long [B, K, 1] frames as soon as they are sampled (same options and result as `generate`)."""
        from tts_lm.generate import stream_frames

        for step in stream_frames(self, phoneme_ids, prompt_codes, **kwargs):
            yield step.frame

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` then `model.safetensors` into `directory`, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / CONFIG_NAME, {"model_type": "nanokoel-lm", **config_to_dict(self.config)})
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> KoelLM:
        """Load a model saved by `save_pretrained` (safetensors; nothing is unpickled)."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} not found: not a KoelLM checkpoint (train one with `make lm` / "
                    "`python -m tts_lm.train`)"
                )
        values = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        if values.pop("model_type", "nanokoel-lm") != "nanokoel-lm":
            raise ValueError(f"{directory / CONFIG_NAME} is not a nanokoel LM config")
        model = cls(config_from_dict(LMConfig, values))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device="cpu"))
        return model.to(device).eval()
