"""nanokoel alignment: preference alignment of the TTS LM (stage 4, `make align`), DPO / RPO on its own samples.

    python -m alignment pairs|train|evaluate configs/align/cpu.yaml lm=... tokens=... out_dir=...

Steps: pairs.py (sample, score and keep (chosen, rejected) pairs), train.py (DPO / RPO against a frozen
reference), evaluate.py (before / after on held-out items); scoring.py (ASR CER + speaker similarity of
samples), ranking.py (Pareto choice of the pair), losses.py (DPO / RPO, plain tensor functions),
challenge_texts.py (hard texts made from the corpus's words), config.py (AlignConfig), __main__.py (the CLI).

Imports: common, text, codec, tts_lm and evaluation (it runs the LM and scores it with evaluation's ASR and
speaker models). The top training stage: only apps/ may import it, and nothing does.
"""
