"""Does the TTS LM read its text? Teacher-forced measures on a token set.

    python -m evaluation.text_use --lm runs/tts_lm/cpu_12.5fps --tokens runs/tokens/cpu_12.5fps \
        [--codec runs/codec/cpu_12.5fps --asr faster-whisper:base] [--split test] [--num 20] [--out text_use.json]

The LM is fed each utterance's true audio frames (teacher forcing, no guidance), three ways: with its own text,
with another selected utterance's text (same prompt, same audio), and with neither text nor prompt (the guidance
branch). No attention prior by default; `--prior-weight 1` adds the training prior (the beta-binomial diagonal
from the true lengths) to the alignment heads, which asks: given the right alignment, does the LM read its text?
Reported:

- cross-entropy per code for each of the three; `text_gain` = ce(another text) - ce(own text), the same measure
  as the `val/text_gain` that `tts_lm.train` logs;
- with `--codec`: every step's argmax frame, decoded and transcribed, with the own text and with another text,
  beside the true codes' reconstruction (the codec's floor). Each frame is predicted from the true frames before
  it, so this isolates what the LM takes from the text from what free-running sampling adds.

An LM that reads its text has a clearly lower ce, and a much lower CER, with its own text. One that continues
audio from audio says the same words either way: its teacher-forced CER is as low with another utterance's text.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.fileio import write_json_atomic
from tts_lm.dataset import DataConfig, PromptedUtterances, read_tokens
from tts_lm.model import KoelLM, LMBatch
from tts_lm.sequence import unstack_frames


def _with_text_of(batch: LMBatch, donor: LMBatch) -> LMBatch:
    return replace(batch, phoneme_ids=donor.phoneme_ids, phoneme_lens=donor.phoneme_lens)


def argmax_frames(model: KoelLM, batch: LMBatch, logits: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Teacher-forced argmax codes per row: long [K, F_b] for each row (specials excluded).

    `logits` [B, Q, S*K, V]: the batch's teacher-forced logits when already computed (else one forward here).
    """
    c = model.config
    if logits is None:
        with torch.no_grad():
            logits = model(batch, return_logits=True).logits
    best = logits[..., : c.codebook_size].argmax(-1).transpose(1, 2)  # (B, S*K, Q)
    frames = unstack_frames(best, c.frames_per_step)  # (B, K, Q*S)
    return [frames[b, :, : int(n)] for b, n in enumerate(batch.code_lens)]


def measure(
    model: KoelLM,
    data: PromptedUtterances,
    rows: list[int],
    batch_size: int = 8,
    decode=None,
    progress: bool = True,
    prior_weight: float = 0.0,
) -> dict:
    """Teacher-forced ce (own text, another text, nothing) over `rows`, token-weighted; with `decode` (codes
    long [K, F] -> float waveform), also the waveforms of the argmax frames and of the true codes per row.
    `prior_weight` > 0 adds the training attention prior at that weight (from each row's true lengths).

    Row k's "another text" is row k+1's (cyclically), so at least two rows are needed.
    """
    if len(rows) < 2:
        raise ValueError(f"text_use: {len(rows)} utterance(s) selected; another utterance's text needs at least 2")
    model.eval()
    donors = rows[1:] + rows[:1]
    sums = {"own_text": 0.0, "other_text": 0.0, "no_text_no_prompt": 0.0}
    tokens = 0
    waves: dict[str, list[np.ndarray]] = {"floor": [], "own_text": [], "other_text": []}
    for start in tqdm(range(0, len(rows), batch_size), desc="text use", unit="batch", disable=not progress):
        idx = rows[start : start + batch_size]
        batch = data.collate(idx)
        batch = replace(batch, uncond=torch.zeros_like(batch.uncond))
        other = _with_text_of(batch, data.collate(donors[start : start + batch_size]))
        keep = decode is not None  # the argmax frames come from the same forwards
        with torch.no_grad():
            outs = {
                "own_text": model(batch, prior_weight=prior_weight, return_logits=keep),
                "other_text": model(other, prior_weight=prior_weight, return_logits=keep),
                "no_text_no_prompt": model(
                    replace(batch, uncond=torch.ones_like(batch.uncond)), prior_weight=prior_weight
                ),
            }
        for name, out in outs.items():
            sums[name] += float(out.ce_loss) * out.num_tokens
        tokens += outs["own_text"].num_tokens
        if decode is not None:
            waves["floor"] += [decode(batch.codes[b, :, : int(n)]) for b, n in enumerate(batch.code_lens)]
            for name, rows_batch in (("own_text", batch), ("other_text", other)):
                frames = argmax_frames(model, rows_batch, outs[name].logits)
                waves[name] += [decode(codes) for codes in frames]
    ce = {name: total / tokens for name, total in sums.items()}
    result = {"utterances": len(rows), "ce": ce, "text_gain": ce["other_text"] - ce["own_text"]}
    if decode is not None:
        result["waves"] = waves
    return result


def cer_table(references: list[str], transcripts: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """{variant: {median, mean}} CER of each variant's transcripts against the references."""
    from evaluation.text_metrics import error_rates

    table = {}
    for name, hyps in transcripts.items():
        per = error_rates(references, hyps).utterance_cer
        table[name] = {"median": float(np.median(per)), "mean": float(np.mean(per))}
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.text_use",
        description="Does the TTS LM read its text? Teacher-forced cross-entropy with the utterance's own text, "
        "another utterance's text and no conditioning; with --codec, the CER of the teacher-forced argmax frames "
        "for both texts beside the codec's reconstruction.",
    )
    p.add_argument("--lm", required=True, help="trained TTS LM directory")
    p.add_argument("--tokens", required=True, help="token set directory (make tokenize) with the LM's codec")
    p.add_argument("--codec", help="codec directory of that token set: adds the CER columns (needs an ASR)")
    p.add_argument("--asr", default="auto", help="ASR backend[:model] for the CER columns (default auto)")
    p.add_argument("--split", default="test", help="token-set split (default test)")
    p.add_argument("--num", type=int, default=20, help="utterances, picked by --seed (default 20)")
    p.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    p.add_argument(
        "--prior-weight",
        type=float,
        default=0.0,
        help="add the training attention prior (true lengths) at this weight, 0..1 (default 0: none)",
    )
    p.add_argument("--out", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.prior_weight <= 1.0:
        print(f"evaluation.text_use: --prior-weight {args.prior_weight} is outside 0..1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        model = KoelLM.from_pretrained(args.lm)
        ds, meta = read_tokens(args.tokens)
        if meta.get("codec_hash") and meta["codec_hash"] != model.config.codec.codec_hash:
            raise ValueError(
                f"{args.tokens} was tokenised with another codec than the one {args.lm} was trained on "
                f"(codec hash {meta['codec_hash'][:12]} vs {model.config.codec.codec_hash[:12]})"
            )
        data = PromptedUtterances(ds, meta, args.split, model.config, DataConfig(), train=args.split == "train")
    except (FileNotFoundError, ValueError) as exc:
        print(f"evaluation.text_use: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    count = min(args.num, len(data.usable)) if args.num > 0 else len(data.usable)
    rows = sorted(rng.choice(data.usable, size=count, replace=False).tolist())
    decode, asr, sample_rate = None, None, 0
    if args.codec:
        from codec.model import NanoCodec
        from evaluation.asr import load_asr
        from evaluation.report import parse_backend

        codec = NanoCodec.from_pretrained(args.codec).eval()
        asr, sample_rate = load_asr(*parse_backend(args.asr)), codec.sample_rate

        def decode(codes: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return codec.decode(codes[None].long()).squeeze().numpy()

    try:
        result = measure(
            model, data, rows, decode=decode, progress=not args.no_progress, prior_weight=args.prior_weight
        )
    except ValueError as exc:
        print(f"evaluation.text_use: {exc}", file=sys.stderr)
        return 2
    ce = result["ce"]
    lines = [
        f"{args.lm} on {result['utterances']} {args.split!r} utterances of {args.tokens} (teacher-forced, "
        f"attention prior weight {args.prior_weight:g})",
        "",
        "| | own text | another utterance's text | no text, no prompt |",
        "|---|---:|---:|---:|",
        f"| ce per code | {ce['own_text']:.4f} | {ce['other_text']:.4f} | {ce['no_text_no_prompt']:.4f} |",
    ]
    if decode is not None:
        texts = dict(zip(ds["id"], ds["text"], strict=True))
        references = [texts[data.ids[r]] for r in rows]
        waves = result.pop("waves")
        transcripts = {name: asr.transcribe(w, sample_rate) for name, w in waves.items()}
        result["cer"] = cer_table(references, transcripts)
        result["asr"] = repr(asr)
        cer = result["cer"]
        lines.append(
            f"| CER of the argmax frames, median / mean | {cer['own_text']['median']:.1%} / "
            f"{cer['own_text']['mean']:.1%} | {cer['other_text']['median']:.1%} / {cer['other_text']['mean']:.1%} "
            f"| |"
        )
        lines += ["", f"codec floor (true codes decoded): CER median {cer['floor']['median']:.1%}, "
                  f"mean {cer['floor']['mean']:.1%} ({asr!r})"]  # fmt: skip
    lines += ["", f"text gain (ce with another text - with its own): {result['text_gain']:.4f} nats per code"]
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            Path(args.out),
            {"lm": args.lm, "tokens": args.tokens, "split": args.split, "prior_weight": args.prior_weight, **result},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
