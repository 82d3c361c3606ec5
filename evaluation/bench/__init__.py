"""nanokoel's benchmarks (`make bench`, `python -m evaluation.bench`): speed, never pass/fail. CPU, one thread.

    __main__.py      the CLI: runs the three, writes OUT/results.json + results.md
    e2e.py           1. streaming TTS end to end, 12.5 vs 21.5 FPS, same LM architecture
    codec_speed.py   2. NanoCodec against Mimi / EnCodec / DAC (random weights), interleaved rounds
    throughput.py    3. tokenisation, codec and LM training throughput of the CPU profiles
    harness.py       settings, timing, espeak-ng speech input, the machine's description

Part of evaluation/: imports what the package does (common, text, codec, data, tts_lm).
"""
