"""nanokoel: tts_lm, the Koel-style decoder-only TTS language model (stage 3).

from tts_lm import KoelLM
lm = KoelLM.from_pretrained("runs/tts_lm/cpu_12.5fps")
codes = lm.generate(phoneme_ids, prompt_codes, cfg_scale=2.5, temperature=0.6, top_k=80)   # long [B, K, F]

Holds the model, its optional text encoder (text_encoder.py) and its attention (with the alignment heads' math:
the attention prior in prior.py and the forward-sum/CTC loss in forward_sum.py), the token dataset, training,
generation and the Synthesizer (text + voice prompt -> speech, streaming).

Imports: common, text (phoneme ids) and codec (decoding, audio IO). Never data/, evaluation/, alignment/ or
apps/: the token dataset reads the token set data/ writes through `datasets` and its documented format.
"""

from tts_lm.config import AlignmentConfig, CodecRef, LMConfig
from tts_lm.generate import GenerationError, GenerationOutput
from tts_lm.model import KoelLM, LMBatch, LMOutput
from tts_lm.synthesizer import Synthesizer as Synthesizer

__all__ = [
    "AlignmentConfig",
    "CodecRef",
    "GenerationError",
    "GenerationOutput",
    "KoelLM",
    "LMBatch",
    "LMConfig",
    "LMOutput",
]
