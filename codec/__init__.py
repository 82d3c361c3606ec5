"""nanokoel's codec: NanoCodec (12.5 FPS FSQ audio codec, causal streaming decoder), its config and IO helpers.

    from codec import NanoCodec, CodecConfig
    model = NanoCodec.from_pretrained("runs/codec/cpu_12.5fps")
    codes = model.encode(wav)      # float [B, T] -> long [B, K, F]
    wav = model.decode(codes)      # long [B, K, F] -> float [B, F * samples_per_frame]

Holds the model (encoder, FSQ, causal streaming decoder), its training (discriminators, losses, speaker
consistency), audio IO and checks (audio.py, used by every stage that reads audio), signal metrics, and the
NeMo checkpoint converter. Importing it builds nothing (no work at import time).

Imports: common (config loading, atomic writes) and nothing else of the project; never the LM.
"""

from codec.model import CodecConfig, CodecError, CodecOutput, NanoCodec

__all__ = ["CodecConfig", "CodecError", "CodecOutput", "NanoCodec"]
