"""Autoregressive generation for KoelLM: KV cache, classifier-free guidance, sampling, alignment tracking.

    out = generate(lm, phoneme_ids, prompt_codes, cfg_scale=2.5, temperature=0.6, top_k=80, seed=0)
    out.codes    long [B, K, F] (-1 after a row's end), out.lengths long [B], out.stop_reasons list[str]
    for step in stream_frames(lm, phoneme_ids, prompt_codes, seed=0): step.frame   # long [B, K, 1]

`generate` is the joined `stream_frames`, so streaming and offline generation give the same frames for the
same seed by construction.

One step: the backbone's last hidden state -> logits per stream; with guidance both branches run in ONE
batched forward (rows [cond..., uncond...], 2B rows; the unconditional rows have learned embeddings in place of
the prompt and text, same lengths) and are combined as `uncond + s * (cond - uncond)` (Koel-TTS); audio BOS
and PAD are never sampled; then per-codebook temperature / top-k / top-p sampling with a torch.Generator.
The prefix runs through `lm.run_backbone`; every later step through `backbone_step` (the same layers with fused
projections and without transformers' per-layer machinery; equal to float rounding), or with
`step_backend="onnxruntime"` through the same step as one ONNX Runtime graph (tts_lm/onnx_step.py; the
Synthesizer's choice on a CPU).

End of a row: a frame in which ANY codebook samples audio EOS ends the row (that frame is not emitted); or the
alignment guard: once the tracked alignment has reached the last phoneme, the row stops as soon as the EOS
probability of some codebook exceeds `eos_threshold`, and at the latest `max_seconds_after_text_end` later;
or the frame cap derived from the phoneme count (LMConfig.max_frames_for).

Alignment tracking: the alignment heads' attention over the text (mean over heads and layers) of the cond
rows; its argmax, kept monotonic and moving at most `max_text_jump` positions per step, is the attended text
position. With `monotonic_prior=True` a window around it (tts_lm.prior.monotonic_log_prior) is added to the
alignment heads' scores of the next step, which stops skipping and repeating.

Batches of different lengths are left-padded (sequence.py) with per-row RoPE positions, so each row generates
exactly what it would generate alone (up to floating-point noise).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tts_lm.backbone_step import backbone_step
from tts_lm.config import PHONEME_BOS, PHONEME_EOS, PHONEME_PAD
from tts_lm.kv_cache import preallocated_cache
from tts_lm.onnx_step import onnx_backbone_step
from tts_lm.prior import monotonic_log_prior
from tts_lm.sequence import assemble, text_with_specials

if TYPE_CHECKING:
    from tts_lm.model import KoelLM

STEP_BACKENDS = ("torch", "onnxruntime")
NO_FRAME = -1  # fills the codes of rows that have already ended


class GenerationError(ValueError):
    """Unusable generation input (empty or over-long phonemes, a too-short prompt, wrong codes)."""


@dataclass
class StepOutput:
    """One generated frame.

    Attributes:
        frame: long [B, K, 1], NO_FRAME where `active` is False.
        active: bool [B], rows that produced this frame.
        text_position: long [B], the tracked text position (0 = text BOS, 1..N phonemes, N+1 = text EOS).
        logits: float [B, K, V], the (guidance-combined) logits the frame was sampled from; BOS/PAD are -inf
            (EOS is suppressed after this, before `min_frames`).
    """

    frame: torch.Tensor
    active: torch.Tensor
    text_position: torch.Tensor
    logits: torch.Tensor


@dataclass
class GenerationOutput:
    """codes long [B, K, F] (NO_FRAME after a row's end), lengths long [B], alignment long [B, F] (text positions)."""

    codes: torch.Tensor
    lengths: torch.Tensor
    alignment: torch.Tensor
    stop_reasons: list[str]


# ---- sampling -----------------------------------------------------------------------------------------------
def cfg_combine(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows [cond (B), uncond (B)] -> uncond + scale * (cond - uncond), [B, ...]."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | None = None,
    max_k: int | None = None,
) -> torch.Tensor:
    """Per-stream temperature / top-k / top-p sampling: logits [B, C, V] -> long [B, C].

    temperature, top_k, top_p: [C] each; temperature 0 = greedy, top_k 0 = no top-k, top_p 1 = no nucleus.
    max_k: the largest top_k as an int (saves a host sync; computed when None); see `ranked_probs`.
    """
    batch, streams, _ = logits.shape
    logits = logits.float()
    greedy = temperature <= 0  # (C,)
    probs, order = ranked_probs(logits, temperature, top_k, top_p, max_k)  # (B, C, k) each
    choice = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(batch, streams, 1)
    sampled = order.gather(-1, choice)[..., 0]  # (B, C)
    return torch.where(greedy[None, :], logits.argmax(-1), sampled)


def ranked_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, max_k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling distribution over the best tokens: (probs [B, C, k], token ids [B, C, k]), best first.

    When every stream has a top-k, only the `max_k` best logits are ranked (`torch.topk`), not all V (no full
    sort); the nucleus (top_p) is then taken within them, the same set as over all V since it keeps a prefix
    of the ranking. Without a top-k on some stream, k = V (a full sort).
    """
    vocab = logits.shape[-1]
    scaled = logits.float() / torch.where(temperature <= 0, 1.0, temperature)[None, :, None]
    if max_k is None:
        max_k = int(top_k.max()) if bool((top_k > 0).all()) else 0
    width = min(max_k, vocab) if max_k > 0 else vocab
    if width < vocab:
        ranked, order = scaled.topk(width, dim=-1)  # (B, C, k), best first
    else:
        ranked, order = scaled.sort(dim=-1, descending=True)  # (B, C, V)
    rank = torch.arange(width, device=logits.device)[None, None, :]
    keep = rank < torch.where(top_k > 0, top_k, vocab)[None, :, None]
    probs = ranked.masked_fill(~keep, float("-inf")).softmax(-1)
    keep = keep & ((probs.cumsum(-1) - probs) < top_p[None, :, None])  # smallest set reaching top_p (first kept)
    return ranked.masked_fill(~keep, float("-inf")).softmax(-1), order


def _per_stream(value: float | Sequence[float], num_codebooks: int, frames_per_step: int, name: str) -> torch.Tensor:
    """A scalar or one value per codebook -> float [S*K] (the same per codebook for every stacked frame)."""
    values = [float(value)] * num_codebooks if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != num_codebooks:
        raise GenerationError(f"{name} needs one value or {num_codebooks} (one per codebook), got {len(values)}")
    return torch.tensor(values * frames_per_step)


# ---- inputs -------------------------------------------------------------------------------------------------
def _as_rows(value: Any, dims: int, name: str) -> list[torch.Tensor]:
    """A tensor / list for one item or a batch -> list of per-item long tensors with `dims` dims."""
    if isinstance(value, torch.Tensor):
        if value.dim() == dims:
            return [value.long()]
        if value.dim() == dims + 1:
            return [row.long() for row in value]
        raise GenerationError(f"{name}: expected {dims} or {dims + 1} dims, got shape {tuple(value.shape)}")
    if isinstance(value, Sequence) and len(value) > 0 and not isinstance(value[0], int | torch.Tensor | Sequence):
        raise GenerationError(f"{name}: expected ints, lists or tensors, got {type(value[0]).__name__}")
    if isinstance(value, Sequence) and (len(value) == 0 or isinstance(value[0], int)):
        if dims != 1:
            raise GenerationError(f"{name}: expected a [K, P] tensor or a list of them")
        return [torch.tensor(list(value), dtype=torch.long)]
    if isinstance(value, Sequence):
        rows = [torch.as_tensor(v).long() for v in value]
        if any(r.dim() != dims for r in rows):
            raise GenerationError(f"{name}: every item must have {dims} dims")
        return rows
    raise GenerationError(f"{name}: expected a tensor or a list, got {type(value).__name__}")


def check_inputs(
    lm: KoelLM, phoneme_ids: Any, prompt_codes: Any, max_frames: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Validate and normalise inputs -> (phonemes [N_b] each, prompts [K, P_b] each, max frames per row)."""
    c = lm.config
    phonemes = _as_rows(phoneme_ids, 1, "phoneme_ids")
    prompts = _as_rows(prompt_codes, 2, "prompt_codes")
    if len(prompts) == 1 and len(phonemes) > 1:
        prompts = prompts * len(phonemes)
    if len(prompts) != len(phonemes):
        raise GenerationError(f"{len(phonemes)} phoneme inputs but {len(prompts)} speaker prompts")
    caps = []
    for b, (ids, prompt) in enumerate(zip(phonemes, prompts, strict=True)):
        if ids.numel() == 0:
            raise GenerationError(
                f"phoneme input {b} is empty: give at least one phoneme id (text -> G2P -> PhonemeVocab.encode)"
            )
        if int(ids.min()) <= PHONEME_EOS or int(ids.max()) >= c.phoneme_vocab_size:
            raise GenerationError(
                f"phoneme input {b} has ids outside {PHONEME_EOS + 1}..{c.phoneme_vocab_size - 1} (PAD/BOS/EOS are "
                "added by the model; ids must come from the PhonemeVocab the LM was trained with)"
            )
        if prompt.shape[0] != c.num_codebooks:
            raise GenerationError(
                f"speaker prompt {b} has {prompt.shape[0]} codebooks; this LM was trained on {c.num_codebooks} "
                f"(codec {c.codec.codec_dir or '?'}); encode the prompt with that codec"
            )
        if prompt.numel() and (int(prompt.min()) < 0 or int(prompt.max()) >= c.codebook_size):
            raise GenerationError(f"speaker prompt {b} has codes outside 0..{c.codebook_size - 1}")
        if prompt.shape[1] < c.min_prompt_frames:
            raise GenerationError(
                f"speaker prompt {b} is too short: {prompt.shape[1]} frames "
                f"({prompt.shape[1] / c.codec.frame_rate:.2f} s); the model needs at least {c.min_prompt_frames} "
                f"frames ({c.min_prompt_seconds} s) of the speaker's audio"
            )
        prompts[b] = prompt[:, : c.max_prompt_frames]  # longer prompts: their first max_prompt_seconds
        s = c.frames_per_step
        room = (c.max_seq_len - -(-prompts[b].shape[1] // s) - (len(ids) + 2)) * s - 1  # frames that still fit
        if max_frames is not None:
            cap = max_frames
            if cap > room:
                raise GenerationError(
                    f"max_frames={max_frames} does not fit: with {len(ids)} phonemes and the prompt, input {b} "
                    f"leaves room for {max(room, 0)} frames in the model's {c.max_seq_len} positions"
                )
        else:
            cap = min(c.max_frames_for(len(ids)), room)
            if cap < c.min_frames_for(len(ids)):
                raise GenerationError(
                    f"phoneme input {b} is too long for the model: {len(ids)} phonemes and the prompt leave room "
                    f"for {max(room, 0)} frames in its {c.max_seq_len} positions (needs {c.min_frames_for(len(ids))}"
                    "); split the text into sentences (text.normalize.split_sentences)"
                )
        caps.append(cap)
    return phonemes, prompts, caps


class _Picker:
    """The sampler handed to the output head: guidance combination, special-token masks, per-stream sampling.

    Called once per step (parallel head) or once per stream (local transformer) with the logits of all R rows;
    returns tokens for all R rows (both guidance branches continue with the same tokens) and keeps the
    combined logits of the step in `logits`.
    """

    def __init__(self, cfg, cfg_scale: float | None, temps, ks, ps, generator: torch.Generator | None):
        self.cfg, self.cfg_scale, self.generator = cfg, cfg_scale, generator
        self.temps, self.ks, self.ps = temps, ks, ps
        self.max_k = int(ks.max()) if bool((ks > 0).all()) else 0  # 0: some stream samples from all V
        self.logits: list[torch.Tensor] = []
        self.allow_eos = True

    def begin(self, allow_eos: bool) -> None:
        self.logits, self.allow_eos = [], allow_eos

    def __call__(self, logits: torch.Tensor, first: int) -> torch.Tensor:
        c = self.cfg
        if self.cfg_scale is not None:
            logits = cfg_combine(logits, self.cfg_scale)  # (B, c, V)
        logits = logits.float().clone()
        logits[..., c.audio_bos] = float("-inf")
        logits[..., c.audio_pad] = float("-inf")
        self.logits.append(logits)
        if not self.allow_eos:
            logits = logits.clone()
            logits[..., c.audio_eos] = float("-inf")
        last = first + logits.shape[1]
        ks = self.ks[first:last]
        tokens = sample_tokens(logits, self.temps[first:last], ks, self.ps[first:last], self.generator, self.max_k)
        return torch.cat([tokens, tokens]) if self.cfg_scale is not None else tokens


# ---- the loop -----------------------------------------------------------------------------------------------
@torch.no_grad()
def stream_frames(
    lm: KoelLM,
    phoneme_ids: Any,
    prompt_codes: Any,
    cfg_scale: float = 2.5,
    temperature: float | Sequence[float] = 0.6,
    top_k: int | Sequence[int] = 80,
    top_p: float | Sequence[float] = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    max_frames: int | None = None,
    min_frames: int = 0,
    monotonic_prior: bool = False,
    stop_on_alignment: bool = True,
    eos_threshold: float = 0.2,
    max_seconds_after_text_end: float = 1.5,
    max_text_jump: int = 4,
    stop_reasons: list[str] | None = None,
    step_backend: str = "torch",
) -> Iterator[StepOutput]:
    """Yield one StepOutput per frame, as soon as it is sampled, until every row has ended.

    Args:
        phoneme_ids: PhonemeVocab ids without BOS/EOS: list[int] / long [N] (one item), or a list of those /
            long [B, N] (a batch).
        prompt_codes: speaker-prompt codes long [K, P] or [B, K, P] or a list of [K, P_b] (the same codec as
            training); at least `min_prompt_seconds`, longer prompts are cut to `max_prompt_seconds`.
        cfg_scale: classifier-free guidance scale s (1 = no guidance, one branch only).
        temperature, top_k, top_p: one value, or one per codebook; temperature 0 is greedy.
        seed / generator: fixed seed (or your own torch.Generator) for reproducible sampling.
        max_frames: frame cap per row (default: LMConfig.max_frames_for(number of phonemes), cut to what fits
            in max_seq_len).
        min_frames: audio EOS cannot be sampled (nor the guard stop) before this many frames.
        monotonic_prior: add the inference-time alignment window prior to the alignment heads.
        stop_on_alignment: the alignment guard (see module doc); eos_threshold, max_seconds_after_text_end tune it.
        stop_reasons: a list that receives each row's reason ("eos", "alignment", "max_frames") at the end.
        step_backend: "torch" (`backbone_step`) or "onnxruntime" (`tts_lm.onnx_step`: the backbone step as one
            ONNX Runtime graph, CPU float32, ~2.6x faster; the same hidden states to float rounding, so a sampled
            token can differ in rare near-ties: compare runs of one backend).
    """
    c = lm.config
    device = lm.device
    if step_backend not in STEP_BACKENDS:
        raise GenerationError(f"step_backend {step_backend!r} is not one of {STEP_BACKENDS}")
    phonemes, prompts, caps = check_inputs(lm, phoneme_ids, prompt_codes, max_frames)
    step_fn = onnx_backbone_step(lm) if step_backend == "onnxruntime" else functools.partial(backbone_step, lm)
    batch, num_k, s = len(phonemes), c.num_codebooks, c.frames_per_step
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    temps = _per_stream(temperature, num_k, s, "temperature").to(device)
    ks = _per_stream(top_k, num_k, s, "top_k").long().to(device)
    ps = _per_stream(top_p, num_k, s, "top_p").to(device)
    use_cfg = cfg_scale != 1.0
    rows = 2 * batch if use_cfg else batch

    # prefix: [prompt steps] [text] [audio BOS], left-padded; guidance rows duplicated with uncond = True
    phon_len = torch.tensor([len(p) for p in phonemes], device=device)
    prompt_len = torch.tensor([p.shape[1] for p in prompts], device=device)
    prompt = torch.zeros(batch, num_k, int(prompt_len.max()), dtype=torch.long)
    for b, p in enumerate(prompts):
        prompt[b, :, : p.shape[1]] = p
    steps, step_len = lm.prompt_steps(prompt.to(device), prompt_len)
    text_ids = text_with_specials(phonemes, PHONEME_BOS, PHONEME_EOS, PHONEME_PAD).to(device)
    text_len = phon_len + 2
    uncond = torch.zeros(batch, dtype=torch.bool, device=device)
    if use_cfg:
        steps, step_len, text_ids, text_len = (torch.cat([x, x]) for x in (steps, step_len, text_ids, text_len))
        uncond = torch.cat([uncond, ~uncond])
    prompt_emb, text_emb = lm.embed_prefix(text_ids, text_len, steps, uncond)
    bos_emb = lm.embed_audio(torch.full((rows, c.num_streams, 1), c.audio_bos, device=device))
    ones = torch.ones(rows, dtype=torch.long, device=device)
    layout = assemble([(prompt_emb, step_len), (text_emb, text_len), (bos_emb, ones)], left_pad=True)

    text_pos = torch.zeros(batch, dtype=torch.long, device=device)  # 0 = text BOS, 1..N phonemes, N+1 = EOS

    def window() -> torch.Tensor | None:
        if not (monotonic_prior and c.alignment_enabled):
            return None
        prior = monotonic_log_prior(text_pos, int(text_len.max()), back=1, ahead=3)  # (B, T)
        if use_cfg:
            prior = torch.cat([prior, torch.zeros_like(prior)])  # the unconditional rows get no prior
        return prior[:, None, :]  # (R, 1, T): the same for every query of this forward

    num_steps = -(-(max(caps) + 1) // s)  # enough to emit `cap` frames and then end each row
    prefix_len = layout.embeds.shape[1]
    cache = preallocated_cache(c.num_layers, prefix_len + num_steps)
    masks = torch.cat([layout.attention_mask, layout.attention_mask.new_ones(rows, num_steps)], dim=1)  # (R, L_max)
    ctx = lm.alignment_context(layout, window())
    mask = layout.attention_mask
    hidden = lm.run_backbone(layout.embeds, layout.position_ids, mask, cache, ctx)[:, -1]  # (R, D)
    next_position = layout.position_ids[:, -1] + 1  # (R,)

    picker = _Picker(lm.config, cfg_scale if use_cfg else None, temps, ks, ps, generator)
    caps_t = torch.tensor(caps, device=device)
    after_end_cap = round(max_seconds_after_text_end * c.codec.frame_rate)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    reasons = stop_reasons if stop_reasons is not None else []
    reasons[:] = ["max_frames"] * batch
    emitted = torch.zeros(batch, dtype=torch.long, device=device)
    after_end = torch.zeros(batch, dtype=torch.long, device=device)
    for step in range(num_steps):
        picker.begin(allow_eos=step * s >= min_frames)
        codes = lm.head.sample(hidden, picker)[:batch]  # (B, C)
        step_logits = torch.cat(picker.logits, dim=1)  # (B, C, V)
        p_eos = step_logits.softmax(-1)[..., c.audio_eos].view(batch, s, num_k).max(dim=2).values  # (B, S)

        if ctx is not None and ctx.logprobs:
            attn = torch.stack([lp[:batch, :, -1].exp().mean(1) for lp in ctx.logprobs.values()]).mean(0)  # (B, T)
            attended = attn.argmax(-1)
            text_pos = torch.where(done, text_pos, torch.clamp(attended, text_pos, text_pos + max_text_jump))
        reached_end = text_pos >= phon_len  # the last phoneme or the text EOS
        after_end = torch.where(reached_end & ~done, after_end + 1, after_end)
        guard = (stop_on_alignment & reached_end & (step * s >= min_frames))[:, None] & (
            (p_eos >= eos_threshold) | (after_end * s > after_end_cap)[:, None]
        )  # (B, S): stop at this slot

        frames = codes.view(batch, s, num_k)  # (B, S, K)
        for slot in range(s):
            eos = (frames[:, slot] == c.audio_eos).any(-1)
            guarded = guard[:, slot]
            ends = ~done & (eos | guarded | (emitted >= caps_t))
            for b in ends.nonzero()[:, 0].tolist():
                reasons[b] = "eos" if eos[b] else "alignment" if guarded[b] else "max_frames"
            done |= ends
            if bool(done.all()):
                return
            frame = torch.where(done[:, None], NO_FRAME, frames[:, slot])  # (B, K)
            emitted += (~done).long()
            slot_logits = step_logits[:, slot * num_k : (slot + 1) * num_k]  # (B, K, V)
            yield StepOutput(frame[:, :, None], ~done, text_pos.clone(), slot_logits)

        if step == num_steps - 1:
            break
        feed = torch.cat([codes, codes]) if use_cfg else codes  # (R, C); ended rows feed anything
        mask = masks[:, : prefix_len + step + 1]  # (R, L+1), a view: no per-step concatenation
        if ctx is not None:
            ctx.log_prior = window()
            ctx.logprobs.clear()
        embeds = lm.embed_audio(feed[:, :, None])  # (R, 1, D)
        hidden = step_fn(embeds, next_position[:, None], mask, cache, ctx)[:, -1]  # (R, D)
        next_position = next_position + 1


def generate(lm: KoelLM, phoneme_ids: Any, prompt_codes: Any, **options: Any) -> GenerationOutput:
    """All frames of `stream_frames` joined: codes long [B, K, F] (+ lengths, alignment, stop reasons)."""
    reasons: list[str] = []
    steps = list(stream_frames(lm, phoneme_ids, prompt_codes, stop_reasons=reasons, **options))
    if not steps:
        empty = torch.zeros(len(reasons), lm.config.num_codebooks, 0, dtype=torch.long, device=lm.device)
        return GenerationOutput(empty, torch.zeros(len(reasons), dtype=torch.long), empty[:, 0], reasons)
    codes = torch.cat([st.frame for st in steps], dim=2)  # (B, K, F)
    lengths = torch.stack([st.active for st in steps], dim=1).sum(1).cpu()  # (B,)
    alignment = torch.stack([st.text_position for st in steps], dim=1)  # (B, F)
    return GenerationOutput(codes, lengths, alignment, reasons)
