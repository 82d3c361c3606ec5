"""nanokoel's codec: NanoCodec (12.5 FPS FSQ audio codec, causal streaming decoder), its config and IO helpers.

    from codec import NanoCodec, CodecConfig
    model = NanoCodec.from_pretrained("runs/codec/cpu_12.5fps")
    codes = model.encode(wav)      # float [B, T] -> long [B, K, F]
    wav = model.decode(codes)      # long [B, K, F] -> float [B, F * samples_per_frame]

`codec` imports nothing else of the project. Importing it builds nothing (no work at import time).
"""

from codec.model import CodecConfig, CodecError, CodecOutput, NanoCodec

__all__ = ["CodecConfig", "CodecError", "CodecOutput", "NanoCodec"]
