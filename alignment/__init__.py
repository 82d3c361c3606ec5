"""nanokoel alignment: preference alignment of the TTS LM (stage 4, `make align`), DPO / RPO on its own samples.

    python -m alignment.preference pairs|train|evaluate configs/align/cpu.yaml lm=... tokens=... out_dir=...

Imports: text, codec, tts_lm, evaluation (it runs the LM and scores it with evaluation's ASR and speaker models).
"""
