"""nanokoel: evaluation (imports what it measures; the preference-alignment driver in alignment/ uses its scorers).

    python -m evaluation --codec DIR [--lm DIR] --manifest M --out DIR   # make eval: report.md, metrics.json, plots
    python -m evaluation.bench --out runs/bench [--smoke]                 # make bench: results.json, results.md

Metrics backends: asr.py (faster-whisper / pocketsphinx / transformers), speaker.py (resemblyzer / WavLM),
text_metrics.py (CER/WER); codec/metrics.py holds the signal metrics. The report: report.py (selection, run,
files), codec_eval.py, tts_eval.py, plots.py, report_text.py. Benchmarks: bench.py (CLI, tables), bench_e2e.py
(12.5 vs 21.5 FPS streaming TTS), bench_codecs.py (NanoCodec vs Mimi / EnCodec / DAC), bench_throughput.py
(tokenisation, codec / LM training), bench_utils.py.
"""
