"""nanokoel evaluation: measures the codec and the LM (`make eval`) and benchmarks their speed (`make bench`).

    python -m evaluation --codec DIR [--lm DIR] --manifest M --out DIR   # make eval: report.md, metrics.json, plots
    python -m evaluation.bench --out runs/bench [--smoke]                 # make bench: results.json, results.md

Metrics backends: asr.py (faster-whisper / pocketsphinx / transformers), speaker.py (resemblyzer / WavLM),
text_metrics.py (CER/WER); codec/metrics.py holds the signal metrics. The report: report.py (selection, run,
files), codec_eval.py, tts_eval.py, plots.py, report_text.py; text_use.py (teacher-forced: does the LM read
its text). Benchmarks: the bench/ subpackage.

Imports: common, text, codec, data and tts_lm (what it measures). The preference-alignment stage in
alignment/ uses its scorers; evaluation never imports alignment/ or apps/.
"""
