"""The LM's config schema: backbone sizes, token vocabularies, alignment prior, guidance, generation limits.

    cfg = LMConfig(d_model=256, num_layers=6, num_heads=4)
    cfg = cfg.with_tokens(meta)      # vocab sizes, number of codebooks and the codec reference from meta.json

Vocabulary sizes are never hard-coded: `num_codebooks`, `codebook_size` and `phoneme_vocab_size` come from the
token set's meta.json (`with_tokens`), and the config saved with the weights records which codec (directory,
hash, frame rate) made the tokens, so a checkpoint cannot silently be paired with another codec.

Per codebook the output vocabulary is `codebook_size` codes + 3 specials (audio BOS, EOS, PAD):

    0 .. codebook_size-1   codec codes
    codebook_size          AUDIO_BOS   (input only: the frame before the first target frame)
    codebook_size + 1      AUDIO_EOS   (target only: the frame after the last one)
    codebook_size + 2      AUDIO_PAD   (never predicted; ignored by the loss)

With frame stacking (`frames_per_step = S`) one LM step carries S consecutive frames; internally they are
`S * num_codebooks` "streams" (virtual codebooks), so embedding, head and sampling code does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from text.vocab import PhonemeVocab

NUM_AUDIO_SPECIALS = 3  # BOS, EOS, PAD
# PhonemeVocab's fixed special ids (text/vocab.py, CONTRACTS.md)
PHONEME_PAD, PHONEME_BOS, PHONEME_EOS = 0, 1, 2


@dataclass
class CodecRef:
    """Which codec the training tokens came from (copied from the tokens' meta.json)."""

    codec_dir: str = ""
    codec_hash: str = ""
    sample_rate: int = 22050
    frame_rate: float = 12.5
    samples_per_frame: int = 1764


@dataclass
class AlignmentConfig:
    """Koel alignment: beta-binomial prior + forward-sum/CTC loss on dedicated alignment heads.

    In each layer of `layers` the first `heads` heads are alignment heads: for audio positions they attend to
    the text positions only (cross-attention inside the decoder), their scores get the log prior while it is
    on, and their attention log-probabilities feed the forward-sum loss and the inference-time alignment
    tracking. All other heads are ordinary causal heads.
    """

    layers: list[int] = field(default_factory=lambda: [1])
    heads: int = 1
    prior_scaling: float = 0.5  # beta-binomial scaling factor
    prior_anneal_start: int = 8000  # full prior until this optimizer step ...
    prior_anneal_end: int = 12000  # ... linearly gone by this one
    ctc_weight: float = 0.002
    blank_logprob: float = -1.0
    # CTC time steps per LM step: at 12.5 FPS espeak-ng IPA runs ~1.5 symbols per frame, and CTC needs at least
    # one time step per symbol (tts_lm.forward_sum). Raise it with frame stacking.
    ctc_audio_repeat: int = 3


@dataclass
class LMConfig:
    # token vocabularies (filled from the tokens' meta.json by `with_tokens`)
    num_codebooks: int = 8
    codebook_size: int = 2016
    phoneme_vocab_size: int = 256
    codec: CodecRef = field(default_factory=CodecRef)
    # backbone (transformers' Llama: RoPE, RMSNorm, SwiGLU, SDPA, KV cache)
    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 0  # 0 = num_heads (no grouped-query attention)
    ffn_dim: int = 0  # 0 = the Llama-style round(8/3 * d_model) up to a multiple of 64
    rope_theta: float = 10000.0
    max_seq_len: int = 1024  # prompt + text + audio positions
    attention_dropout: float = 0.0
    # text front end: 0 = the bare phoneme embeddings go into the prefix; N > 0 = a non-causal N-layer text
    # encoder (Koel-TTS's: self-attention + conv feed-forward of kernel `text_encoder_kernel`) reads them first.
    # Measured at the cpu profile (docs/experiments.md, issue 19): 3 layers aligned better but read the text less; off.
    text_encoder_layers: int = 0
    text_encoder_kernel: int = 3
    # frame input embedding: "sum" or "mean" of the per-codebook embeddings
    frame_embedding: str = "sum"
    # codes as their FSQ levels (tts_lm/code_levels.py): [] = each code its own embedding row and logit; the
    # codec's levels (e.g. [8, 7, 6, 6]) = embeddings and logits built from per-channel level rows
    code_levels: list[int] = field(default_factory=list)
    # options from NVIDIA's later work
    frames_per_step: int = 1  # frame stacking: frames predicted per LM step (1 or 2)
    local_transformer_layers: int = 0  # 0 = one parallel head; > 0 = a tiny transformer over the codebooks
    local_transformer_dim: int = 128
    local_transformer_heads: int = 2
    # alignment and guidance
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    cfg_dropout: float = 0.1  # p(drop text + speaker prompt together) in training
    # p(an input audio frame is blanked) in training: the next frame must then come from the text, not the audio.
    # Measured at the cpu profile (docs/experiments.md, issue 19): 0.3 and 0.6 did not raise the text's use; off.
    audio_input_dropout: float = 0.0
    # speaker prompt and generation limits (seconds, so the same config serves every frame rate)
    min_prompt_seconds: float = 1.0
    max_prompt_seconds: float = 5.0
    max_seconds_per_phoneme: float = 0.2  # generation cap: ~3x the ~0.06 s of an espeak-ng IPA symbol ...
    extra_seconds: float = 1.0  # ... plus this
    min_room_seconds_per_phoneme: float = 0.1  # a text that leaves less room than this per symbol is refused

    def __post_init__(self) -> None:
        if self.frame_embedding not in ("sum", "mean"):
            raise ValueError(f"LMConfig.frame_embedding={self.frame_embedding!r}: use 'sum' or 'mean'")
        if self.text_encoder_layers < 0:
            raise ValueError(f"LMConfig.text_encoder_layers={self.text_encoder_layers} must be >= 0")
        if self.code_levels and self.local_transformer_layers:
            raise ValueError("LMConfig: code_levels and local_transformer_layers cannot be combined")
        if self.frames_per_step < 1:
            raise ValueError(f"LMConfig.frames_per_step={self.frames_per_step} must be >= 1")
        if self.d_model % self.num_heads:
            raise ValueError(f"LMConfig: d_model={self.d_model} is not a multiple of num_heads={self.num_heads}")
        bad = [i for i in self.alignment.layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"LMConfig.alignment.layers {bad} outside 0..{self.num_layers - 1}")
        if not 0 <= self.alignment.heads <= self.num_heads:
            raise ValueError(f"LMConfig.alignment.heads={self.alignment.heads} must be in 0..{self.num_heads}")
        if self.alignment.layers and self.alignment.heads and self.kv_heads != self.num_heads:
            raise ValueError("LMConfig: alignment heads need num_kv_heads == num_heads (no grouped-query attention)")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"LMConfig.cfg_dropout={self.cfg_dropout} must be in [0, 1)")
        if not 0.0 <= self.audio_input_dropout < 1.0:
            raise ValueError(f"LMConfig.audio_input_dropout={self.audio_input_dropout} must be in [0, 1)")

    def check_code_levels(self, codec_levels: list[int] | None = None) -> None:
        """`code_levels` must describe the codebook (checked once the vocabularies are known, i.e. with the
        tokens or at model construction), and be the codec's own levels when those are known."""
        if not self.code_levels:
            return
        if any(int(n) < 2 for n in self.code_levels) or math.prod(self.code_levels) != self.codebook_size:
            raise ValueError(
                f"LMConfig.code_levels={self.code_levels} give {math.prod(self.code_levels)} codes, the codebook has "
                f"{self.codebook_size}: use the codec's quantizer.num_levels_per_group"
            )
        if codec_levels is not None and list(codec_levels) != list(self.code_levels):
            raise ValueError(
                f"LMConfig.code_levels={self.code_levels} are not the codec's levels {list(codec_levels)} "
                "(the tokens' meta.json codec_config.quantizer.num_levels_per_group): use those"
            )

    # ---- derived sizes ------------------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.ffn_dim or 64 * math.ceil(8 * self.d_model / 3 / 64)

    @property
    def vocab_per_codebook(self) -> int:
        return self.codebook_size + NUM_AUDIO_SPECIALS

    @property
    def audio_bos(self) -> int:
        return self.codebook_size

    @property
    def audio_eos(self) -> int:
        return self.codebook_size + 1

    @property
    def audio_pad(self) -> int:
        return self.codebook_size + 2

    @property
    def num_streams(self) -> int:
        """Codebooks per LM step: num_codebooks * frames_per_step."""
        return self.num_codebooks * self.frames_per_step

    @property
    def alignment_enabled(self) -> bool:
        return bool(self.alignment.layers) and self.alignment.heads > 0

    def seconds_to_frames(self, seconds: float) -> int:
        return max(1, round(seconds * self.codec.frame_rate))

    @property
    def min_prompt_frames(self) -> int:
        return self.seconds_to_frames(self.min_prompt_seconds)

    @property
    def max_prompt_frames(self) -> int:
        return self.seconds_to_frames(self.max_prompt_seconds)

    def max_frames_for(self, num_phonemes: int) -> int:
        """The generation cap for `num_phonemes` phonemes: generous speaking time plus a little slack."""
        seconds = num_phonemes * self.max_seconds_per_phoneme + self.extra_seconds
        return math.ceil(seconds * self.codec.frame_rate)

    def min_frames_for(self, num_phonemes: int) -> int:
        """The least room (frames) a text of `num_phonemes` phonemes must have left in max_seq_len."""
        return math.ceil(num_phonemes * self.min_room_seconds_per_phoneme * self.codec.frame_rate)

    def with_tokens(self, meta: dict[str, Any]) -> LMConfig:
        """A copy whose vocabularies and codec reference come from a token set's meta.json."""
        missing = [k for k in ("num_codebooks", "codebook_size", "frame_rate") if k not in meta]
        if missing:
            raise ValueError(f"tokens meta.json lacks {missing}; re-run data.tokenize_corpus")
        codec = CodecRef(
            codec_dir=str(meta.get("codec_dir", "")),
            codec_hash=str(meta.get("codec_hash", "")),
            sample_rate=int(meta.get("sample_rate", self.codec.sample_rate)),
            frame_rate=float(meta["frame_rate"]),
            samples_per_frame=int(meta.get("samples_per_frame", self.codec.samples_per_frame)),
        )
        config = replace(
            self,
            num_codebooks=int(meta["num_codebooks"]),
            codebook_size=int(meta["codebook_size"]),
            phoneme_vocab_size=phoneme_vocab_size(meta),
            codec=codec,
        )
        config.check_code_levels(codec_levels(meta))
        return config


def codec_levels(meta: dict[str, Any]) -> list[int] | None:
    """The FSQ levels per codebook of a token set's codec (meta.json codec_config.quantizer), None if not given."""
    levels = meta.get("codec_config", {}).get("quantizer", {}).get("num_levels_per_group")
    return None if levels is None else [int(n) for n in levels]


def phoneme_vocab_size(meta: dict[str, Any]) -> int:
    """The number of phoneme ids (specials included) of the PhonemeVocab saved in a tokens meta.json."""
    if "phoneme_vocab" not in meta:
        raise ValueError("tokens meta.json has no phoneme_vocab; re-run data.tokenize_corpus")
    return len(PhonemeVocab.from_dict(meta["phoneme_vocab"], source="tokens meta.json phoneme_vocab"))
