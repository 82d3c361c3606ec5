"""Benchmark 1: streaming TTS end to end at 12.5 vs 21.5 FPS, with the same LM architecture over each codec.

    rows = bench_e2e(settings, trained={"12.5": (codec_dir, lm_dir)} or {})   # -> list of row dicts

What one request is (the product path, `tts_lm.Synthesizer.stream`; a chunk = `chunk_frames` codec frames, default 1):
    prompt wav -> trim, first max_prompt_seconds -> codec.encode -> prompt codes [K, P]
    text -> G2P -> phoneme ids;  LM prefix;  per frame: one LM step (KV cache, CFG = 2 rows) -> codec decoder step
A batch of B > 1 is the same with B rows at once: B prompts encoded together, `tts_lm.generate.stream_frames` with B
rows (2B with guidance), the codec decoder streaming B rows (`codec.streaming(B)`); a chunk holds every row.

Both frame rates get the same text, the same prompt recording (so the same prompt seconds, P = 12.5 or 21.5 x s
frames) and exactly the same audio length: generation runs `frames = seconds x FPS` steps with audio EOS masked
(`min_frames = max_frames`, no alignment stop), whether the weights are random (the default: speed does not depend
on them) or trained (passed in; then the table says so). Measured per request: time to first audio (TTFA: prompt
encode + G2P + LM prefix + first frame decoded; a new voice each time, and at batch 1 also a voice used before,
whose prompt codes the Synthesizer keeps), RTF = compute seconds / seconds of audio per stream, LM steps per
second of audio (= FPS / frames per step) and per wall second. Paper (NanoCodec, Casanova et al. 2025): the LM at
12.5 FPS has a 2.33x lower RTF than at 21.5 FPS. Each row also carries `components`: G2P, prompt encoding, LM
prefix, one LM step and one streamed decoder frame, timed apart (`components`). On a GPU (`settings.device`) the
clock is read after `torch.cuda.synchronize`; without phonemizer / espeak-ng the text gets stand-in phonemes.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from codec import NanoCodec
from common.config import config_from_dict
from evaluation.bench.harness import PROMPT_TEXT, TEXT, BenchSettings, clock, espeak_speech, median, timed
from text import G2P, PhonemeVocab
from tts_lm import KoelLM, LMConfig
from tts_lm.generate import stream_frames
from tts_lm.synthesizer import ChunkPlan, Synthesizer

FPS_KEYS = ("12.5", "21.5")


class StandInG2P:
    """Where phonemizer / espeak-ng are missing (a bare GPU machine): text -> a fixed-seed phoneme string of the
    vocabulary's symbols, ~0.9 phonemes per character (English IPA's rate), so the LM sees a sentence-long input.
    The LM's speed does not depend on which phonemes it reads; results.json notes when this stand-in was used."""

    def __init__(self, vocab: PhonemeVocab) -> None:
        self.symbols = [s for s in vocab.symbols if not s.isspace()]

    def __call__(self, text: str) -> str:
        rng = random.Random(text)
        return "".join(rng.choice(self.symbols) for _ in range(max(1, round(0.9 * len(text)))))


def bench_g2p() -> G2P | StandInG2P:
    """The real G2P (phonemizer + espeak-ng) when installed, else `StandInG2P`."""
    try:
        g2p = G2P("en-us")
        g2p("test")
        return g2p
    except Exception:  # ImportError (phonemizer) or RuntimeError (no espeak-ng library)
        return StandInG2P(PhonemeVocab.default())


def random_synthesizer(
    codec_config: str,
    lm_config: str,
    overrides: tuple[str, ...] = (),
    device: str = "cpu",
    g2p: Any = None,
    backend: str = "auto",
) -> Synthesizer:
    """A Synthesizer over random-init models: the codec of `codec_config`, the LM of `lm_config`'s model section."""
    torch.manual_seed(0)
    codec = NanoCodec.from_config(codec_config, list(overrides)).eval()
    codec.remove_weight_norm()
    codec.to(device)
    meta = dict(
        num_codebooks=codec.num_codebooks,
        codebook_size=codec.codebook_size,
        frame_rate=codec.frame_rate,
        sample_rate=codec.sample_rate,
        samples_per_frame=codec.samples_per_frame,
        phoneme_vocab=PhonemeVocab.default().to_dict(),
    )
    values = OmegaConf.to_container(OmegaConf.load(lm_config).model)
    lm = KoelLM(config_from_dict(LMConfig, values).with_tokens(meta)).eval().to(device)
    g2p = g2p if g2p is not None else bench_g2p()
    return Synthesizer(lm, codec, g2p=g2p, backend=backend)


def architecture(lm: KoelLM) -> str:
    """The LM's size in one line, e.g. "13.4 M params: d_model 256, 6 layers, 4 heads, ffn 768, 1 frame/step"."""
    c = lm.config
    return (
        f"{lm.num_parameters() / 1e6:.1f} M params: d_model {c.d_model}, {c.num_layers} layers, {c.num_heads} heads, "
        f"ffn {c.ffn_dim}, {c.frames_per_step} frame/step"
    )


def fixed_length(frames: int) -> dict[str, Any]:
    """Generation options that produce exactly `frames` frames whatever the weights say."""
    return dict(max_frames=frames, min_frames=frames, stop_on_alignment=False)


@torch.no_grad()
def request(
    tts: Synthesizer,
    prompt_wav,
    sr: int,
    frames: int,
    batch: int,
    seed: int,
    chunk_frames: int | str = 1,
    warm: bool = False,
) -> dict[str, float]:
    """One streamed request of `batch` rows; returns ttfa_s, compute_s, audio_s (per row), frames, lm_steps.

    The prompt is a new voice (its codes are not kept from an earlier request) unless `warm`.
    """
    device = tts.lm.device
    if not warm:
        tts.forget_prompts()
    if batch == 1:
        stream = tts.stream(TEXT, prompt_wav, sr, seed=seed, chunk_frames=chunk_frames, **fixed_length(frames))
        stream.read_all()
        s = stream.stats
        steps = -(-s.frames // tts.lm.config.frames_per_step)
        return dict(ttfa_s=s.ttfa_s, compute_s=s.compute_s, audio_s=s.audio_seconds, frames=s.frames, lm_steps=steps)
    start = clock(device)
    clip = tts.prepare_prompt(prompt_wav, sr)
    prompts = tts.codec.encode(torch.from_numpy(clip.wav)[None].repeat(batch, 1))  # (B, K, P)
    (piece,) = tts.text_pieces(TEXT, prompts[0])
    generator = torch.Generator(device=device).manual_seed(seed)
    ttfa, samples, emitted, pending = None, 0, 0, []
    options = dict(cfg_scale=2.5, top_k=80, step_backend=tts.backend, **fixed_length(frames))
    steps = stream_frames(tts.lm, [piece.ids] * batch, prompts, generator=generator, **options)
    plan = ChunkPlan(chunk_frames, 1.0 / tts.frame_rate)
    resumed = clock(device)
    decoder = tts.codec.audio_decoder
    with decoder.streaming(batch):
        for step in steps:
            pending.append(step.frame)  # (B, K, 1)
            emitted += 1
            if len(pending) < plan.due and emitted < frames:
                continue
            latents = tts.codec.dequantize(torch.cat(pending, dim=2))  # (B, D, n)
            audio = tts.decode_chunk(decoder, latents)  # (B, n * hop): n frames of every row, the request's backend
            now = clock(device)
            plan.delivered(len(pending), now - resumed, now)
            samples, pending, resumed = samples + audio.shape[-1], [], now
            if ttfa is None:
                ttfa = now - start
    compute = clock(device) - start
    steps = -(-emitted // tts.lm.config.frames_per_step)
    return dict(ttfa_s=ttfa, compute_s=compute, audio_s=samples / tts.sample_rate, frames=emitted, lm_steps=steps)


def first_audio_s(tts: Synthesizer, prompt_wav, sr: int, frames: int, seed: int) -> float:
    """Time to first audio of a batch-1 request in a voice used before (its prompt codes kept): the first chunk only."""
    stream = tts.stream(TEXT, prompt_wav, sr, seed=seed, **fixed_length(frames))
    next(stream)
    stream.close()
    return stream.stats.ttfa_s


@torch.no_grad()
def components(tts: Synthesizer, prompt_wav, sr: int, frames: int, batch: int) -> dict[str, float]:
    """Where a request's time goes, in ms: G2P of the text (a cold G2P), encoding the prompt, the LM prefix (prompt
    + text + first step), one LM step, one streamed decoder frame, at `batch` rows (G2P and prompt: once)."""
    device = tts.lm.device
    clip = tts.prepare_prompt(prompt_wav, sr)
    g2p = type(tts.g2p)("en-us") if isinstance(tts.g2p, G2P) else tts.g2p
    g2p_s = timed(lambda: g2p(TEXT))
    wav = torch.from_numpy(clip.wav)[None]
    tts.codec.encode(wav)  # warm-up
    encode_s = timed(lambda: tts.codec.encode(wav), device)
    prompts = tts.codec.encode(wav.repeat(batch, 1))  # (B, K, P)
    (piece,) = tts.text_pieces(TEXT, prompts[0])
    generator = torch.Generator(device=device).manual_seed(0)
    options = dict(cfg_scale=2.5, top_k=80, step_backend=tts.backend, **fixed_length(frames))
    steps = stream_frames(tts.lm, [piece.ids] * batch, prompts, generator=generator, **options)
    start = clock(device)
    next(steps)
    prefix_s, step_times, codes = clock(device) - start, [], []
    for _ in range(frames - 1):
        tic = clock(device)
        codes.append(next(steps).frame)  # (B, K, 1)
        step_times.append(clock(device) - tic)
    frame_times, decoder = [], tts.codec.audio_decoder
    with decoder.streaming(batch):
        for frame in codes:
            decode = lambda f=frame: tts.decode_chunk(decoder, tts.codec.dequantize(f))  # noqa: E731
            frame_times.append(timed(decode, device))
    return {
        "batch": batch,
        "g2p_ms": 1000 * g2p_s if batch == 1 else None,
        "g2p": type(g2p).__name__,
        "prompt_encode_ms": 1000 * encode_s if batch == 1 else None,
        "prompt_s": clip.seconds,
        "lm_prefix_ms": 1000 * prefix_s,
        "lm_step_ms": 1000 * median(step_times),
        "decoder_frame_ms": 1000 * median(frame_times[1:]),
        "frame_ms": 1000 / tts.frame_rate,
    }


def bench_e2e(
    settings: BenchSettings, trained: dict[str, tuple[str, str]] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Rows per (frame rate, batch size): medians over `e2e_repeats` interleaved requests. See module doc."""
    trained = trained or {}
    configs = {"12.5": settings.codec_12, "21.5": settings.codec_21}
    setups: dict[str, tuple[Synthesizer, str]] = {}
    for key in FPS_KEYS:
        if key in trained:
            codec_dir, lm_dir = trained[key]
            tts = Synthesizer.from_pretrained(
                lm=lm_dir,
                codec=codec_dir,
                device=settings.device,
                g2p=bench_g2p(),
                backend=settings.backend,
            )
            setups[key] = (tts, f"trained: {lm_dir} + {codec_dir}")
        else:
            tts = random_synthesizer(
                configs[key],
                settings.lm_config,
                settings.codec_overrides,
                settings.device,
                backend=settings.backend,
            )
            setups[key] = (tts, f"random init: {settings.lm_config} + {configs[key]}")
    sr = setups["12.5"][0].sample_rate
    prompt = espeak_speech(PROMPT_TEXT, sr)
    for tts, _ in setups.values():  # warm-up: first-call allocations and caches
        for batch in settings.batch_sizes:
            request(tts, prompt, sr, 2, batch, seed=0)

    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    total = settings.e2e_repeats * len(settings.batch_sizes) * len(FPS_KEYS)
    bar = tqdm(total=total, desc="bench 1/3: streaming TTS 12.5 vs 21.5 FPS", disable=not progress)
    for repeat in range(settings.e2e_repeats):
        for batch in settings.batch_sizes:
            for key in FPS_KEYS:  # interleaved: A B A B ...
                tts, _ = setups[key]
                frames = round(settings.e2e_seconds * tts.frame_rate)
                result = request(tts, prompt, sr, frames, batch, seed=repeat, chunk_frames=settings.chunk_frames)
                if batch == 1:  # the same voice again: its prompt codes are kept
                    result["ttfa_warm_s"] = first_audio_s(tts, prompt, sr, frames, seed=repeat)
                runs.setdefault((key, batch), []).append(result)
                bar.update(1)
    bar.close()

    rows = []
    for (key, batch), results in runs.items():
        tts, weights = setups[key]
        audio = median([r["audio_s"] for r in results])
        compute = [r["compute_s"] for r in results]
        rows.append(
            {
                "fps": key,
                "frame_rate": tts.frame_rate,
                "batch": batch,
                "weights": weights,
                "lm": architecture(tts.lm),
                "audio_s": audio,
                "prompt_s": tts.prepare_prompt(prompt, sr).seconds,
                "frames": results[0]["frames"],
                "chunk_frames": settings.chunk_frames,
                "backend": tts.backend,
                "ttfa_ms": 1000 * median([r["ttfa_s"] for r in results]),
                "ttfa_warm_voice_ms": 1000 * median([r["ttfa_warm_s"] for r in results]) if batch == 1 else None,
                "best_ttfa_ms": 1000 * min(r["ttfa_s"] for r in results),
                "rtf": median([r["compute_s"] / r["audio_s"] for r in results]),
                "best_rtf": min(r["compute_s"] / r["audio_s"] for r in results),
                "audio_s_per_s": median([batch * r["audio_s"] / r["compute_s"] for r in results]),
                "lm_steps_per_audio_s": results[0]["lm_steps"] / results[0]["audio_s"],
                "lm_steps_per_s": median([r["lm_steps"] / r["compute_s"] for r in results]),
                "repeats": len(results),
                "compute_s": compute,
                "components": components(tts, prompt, sr, min(frames, 25), batch),
            }
        )
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The top-level keys of results.json: batch-1 RTF / TTFA per frame rate and the ratios 21.5 over 12.5."""
    by = {(r["fps"], r["batch"]): r for r in rows}
    out = {
        "rtf_12_5": by["12.5", 1]["rtf"],
        "rtf_21_5": by["21.5", 1]["rtf"],
        "ttfa_12_5_ms": by["12.5", 1]["ttfa_ms"],
        "ttfa_21_5_ms": by["21.5", 1]["ttfa_ms"],
        "ttfa_warm_voice_12_5_ms": by["12.5", 1]["ttfa_warm_voice_ms"],
        "ttfa_warm_voice_21_5_ms": by["21.5", 1]["ttfa_warm_voice_ms"],
    }
    out["rtf_ratio"] = out["rtf_21_5"] / out["rtf_12_5"]
    out["ttfa_ratio"] = out["ttfa_21_5_ms"] / out["ttfa_12_5_ms"]
    batches = sorted({r["batch"] for r in rows})
    out["rtf_ratio_by_batch"] = {str(b): by["21.5", b]["rtf"] / by["12.5", b]["rtf"] for b in batches}
    out["lm_steps_ratio"] = by["21.5", 1]["lm_steps_per_audio_s"] / by["12.5", 1]["lm_steps_per_audio_s"]
    return out
