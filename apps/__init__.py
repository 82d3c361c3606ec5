"""nanokoel apps: the Gradio demo (`make app`), a thin page over `tts_lm.Synthesizer`.

Imports: common, text, codec, data and tts_lm (the top layer; nothing imports apps/).
"""
