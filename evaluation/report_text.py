"""report.md for `make eval`: the metrics dict of evaluation/report.py -> Markdown (tables, notes, plots, audio).

    text = render_report(metrics, figures={"spectrograms": "plots/spectrograms.png", ...}, examples=[...])

Headline tables give mean / median / std over utterances (NaN-scored utterances counted, not averaged) and the
corpus-level CER/WER (total edits over total reference length, the way Koel-TTS and NanoCodec report them).
Every table names the ASR and speaker backends that produced its numbers; when the speaker model is the network
the codec's speaker-consistency loss was trained against, the SECS row says that it is optimistic.
"""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 3, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.{max(0, digits - 2)}f} %" if percent else f"{value:.{digits}g}"


def _row(name: str, s: dict[str, Any], percent: bool = False, note: str = "") -> str:
    nan = f" ({s['nan']} unscored)" if s.get("nan") else ""
    return (
        f"| {name} | {_num(s['mean'], 4, percent)} | {_num(s['median'], 4, percent)} | "
        f"{_num(s['std'], 3, percent)} | {s['count']}{nan} | {note} |"
    )


HEADER = "| metric | mean | median | std | n | note |\n|---|---|---|---|---|---|"


def _speaker_note(setup: dict[str, Any]) -> str:
    loss = setup["codec_speaker_loss"]
    if setup["speaker_shares_codec_loss_encoder"]:
        return (
            f"**optimistic**: {setup['speaker']} is also the encoder of the codec's speaker-consistency loss "
            f"(weight {loss['weight']:g}, {loss['source']}), so the codec was trained to please it"
        )
    if not loss["known"]:
        return "the codec's training config is not beside it: whether its speaker loss used this encoder is unknown"
    return f"independent of the codec's training (its speaker loss: {loss['encoder'] or 'none'})"


def _floor_lines(vs: dict[str, Any], asr: str) -> list[str]:
    """The TTS-vs-codec table: the codec's reconstruction of each utterance is the floor the LM is measured by."""

    def row(name: str, side: dict[str, Any]) -> str:
        outliers = ", ".join(f"{o['id']} {o['cer']:.0%}" for o in side["outliers"]) or "none"
        return (
            f"| {name} | {_num(side['cer_median'], 3, True)} | {_num(side['cer_mean'], 3, True)} | "
            f"{_num(side['failure_share'], 3, True)} | {outliers} |"
        )

    ratio = "n/a" if vs["median_ratio"] is None else f"{vs['median_ratio']:.2f}"
    return [
        "### TTS against the codec's floor",
        "",
        f"The same {vs['utterances']} utterances: the codec's reconstruction of each is the best an LM over this "
        f"codec can sound. CER by {asr}; failure: CER > {vs['failure_cer']:.0%}; outliers: CER > 100 % "
        "(hallucinated transcripts).",
        "",
        "| | CER median | CER mean | failure share | outliers |",
        "|---|---|---|---|---|",
        row("codec reconstruction (floor)", vs["codec"]),
        row("TTS", vs["tts"]),
        "",
        f"TTS median / codec median: **{ratio}** (1.00: the LM loses nothing over its codec).",
        "",
    ]


def render_report(metrics: dict[str, Any], figures: dict[str, str], examples: list[dict[str, str]]) -> str:
    setup, codec = metrics["setup"], metrics["codec"]
    g, s = codec["geometry"], codec["summary"]
    m = setup["machine"]
    lines = [
        "# nanokoel evaluation report",
        "",
        f"- codec: `{setup['codec']}` ({g['frame_rate']:g} FPS, {g['num_codebooks']} codebooks x "
        f"{g['codebook_size']} codes, {g['bitrate']:.0f} bit/s, {g['parameters'] / 1e6:.1f} M parameters)",
        f"- TTS LM: `{setup['lm']}`" if metrics["tts"] else f"- TTS LM: **not evaluated**: {metrics['tts_skipped']}",
        f"- data: `{setup['manifest']}`, split `{setup['split']}`"
        + (" (speakers unseen in training)" if setup["split"] in ("test", "validation") else "")
        + f", {setup['num_evaluated']} utterances picked with seed {setup['seed']}",
        f"- ASR (CER/WER): **{setup['asr']}**; speaker similarity (SECS): **{setup['speaker']}**; "
        f"SECS: {_speaker_note(setup)}",
        f"- machine: {m['cpu']}, torch {m['torch']}, {m['torch_threads']} thread(s), load average {m['load_average']} "
        "at the start (RTF and time to first audio are wall clock)",
        "",
        "## Codec: reconstruction quality",
        "",
        HEADER,
        _row("PESQ-WB (1.04..4.64, higher is better)", s["pesq_wb"]),
        _row("STOI (0..1)", s["stoi"]),
        _row("ESTOI (0..1)", s["estoi"]),
        _row("SI-SDR (dB)", s["si_sdr"]),
        _row("mel distance (lower is better)", s["mel_distance"]),
        _row(f"CER of the originals ({setup['asr']})", s["cer_original"], True, "the recogniser's own floor"),
        _row("CER of the reconstructions", s["cer_reconstructed"], True),
        _row("CER reconstruction vs original transcript", s["cer_vs_original"], True, "what the codec changed"),
        _row(
            f"SECS reconstruction vs original ({setup['speaker']})",
            s["secs"],
            False,
            "optimistic (see above)" if setup["speaker_shares_codec_loss_encoder"] else "",
        ),
        "",
        f"Corpus-level CER / WER: originals {_num(s['corpus']['cer_original'], 4, True)} / "
        f"{_num(s['corpus']['wer_original'], 4, True)}, reconstructions "
        f"{_num(s['corpus']['cer_reconstructed'], 4, True)} / {_num(s['corpus']['wer_reconstructed'], 4, True)}.",
        "",
        "Code usage per codebook (fraction of the codebook used / perplexity, over "
        f"{s['code_usage']['frames']} frames):",
        "",
        "| codebook | " + " | ".join(str(k) for k in range(len(s["code_usage"]["usage"]))) + " |",
        "|---|" + "---|" * len(s["code_usage"]["usage"]),
        "| used | " + " | ".join(f"{u:.2f}" for u in s["code_usage"]["usage"]) + " |",
        "| perplexity | " + " | ".join(f"{p:.0f}" for p in s["code_usage"]["perplexity"]) + " |",
        "",
    ]
    if metrics["tts"]:
        t, st = metrics["tts"]["summary"], metrics["tts"]["settings"]
        lines += [
            "## TTS: zero-shot synthesis for unseen speakers",
            "",
            "Each test text is spoken in the voice of another utterance of its speaker (the prompt), streamed "
            f"frame by frame; CFG {st['cfg_scale']}, temperature {st['temperature']}, top-k {st['top_k']}"
            + (", inference-time monotonic alignment prior" if st.get("monotonic_prior") else "")
            + ", "
            f"seed {st['seed']} (per utterance: a hash of seed and id).",
            "",
            HEADER,
            _row(f"CER ({setup['asr']})", t["cer"], True),
            _row("WER", t["wer"], True),
            _row(f"SECS generated vs prompt ({setup['speaker']})", t["secs_prompt"], False, "the audio it heard"),
            _row("SECS generated vs the real utterance", t["secs_target"], False, "never shown to the model"),
            _row("SECS real utterance vs prompt", t["secs_reference"], False, "ceiling: same speaker, real audio"),
            _row("RTF (compute s / audio s)", t["rtf"], False, "wall clock, this machine"),
            _row("time to first audio (s)", t["ttfa_s"], False, "prompt encode + G2P + first frame"),
            _row("generated seconds", t["audio_seconds"]),
            "",
            f"Corpus-level CER {_num(t['corpus']['cer'], 4, True)}, WER {_num(t['corpus']['wer'], 4, True)}; "
            f"failed requests: {t['failed']}; stop reasons: {t['stop_reasons']}.",
            "",
        ]
        if metrics["tts"].get("vs_codec"):
            lines += _floor_lines(metrics["tts"]["vs_codec"], setup["asr"])
    lines += ["## Plots", ""]
    titles = {
        "spectrograms": "Log-mel spectrograms (original | reconstructed | generated)",
        "metric_bars": "Metrics (bar: mean, whisker: std, dot: median)",
        "distributions": "Per-utterance distributions",
        "code_usage": "Code usage per codebook",
    }
    for key, path in figures.items():
        lines += [f"### {titles.get(key, key)}", "", f"![{key}]({path})", ""]
    if examples:
        lines += ["## Audio examples", "", "| id | text | files |", "|---|---|---|"]
        for ex in examples:
            files = ", ".join(f"[{k}]({v})" for k, v in ex.items() if k not in ("id", "text"))
            lines.append(f"| {ex['id']} | {ex['text']} | {files} |")
        lines.append("")
    lines += [
        "Per-utterance numbers (transcripts included) are in `metrics.json`; null marks a value a metric could "
        "not score (too short, no speech found). RTF and time to first audio are wall-clock numbers of this "
        "machine; everything else is a deterministic function of the models, the data and the seed.",
        "",
    ]
    return "\n".join(lines)
