"""The preference-alignment stage's config schema (`python -m alignment`, configs/align/*.yaml).

    cfg = load_config(AlignConfig, "configs/align/cpu.yaml", ["lm=runs/tts_lm/cpu_12.5fps", "out_dir=..."])

One file configures the three steps, each reading its own section: `pairs` (what to sample and how to pick
pairs), `scoring` (the ASR and speaker-similarity backends of evaluation/), `loss` + `train` (DPO / RPO
training), `eval` (before/after evaluation). `lm`, `tokens`, `codec` and `out_dir` are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.losses import DEFAULT_BETA
from tts_lm.train import OptimConfig


@dataclass
class SamplingConfig:
    """LM sampling options (tts_lm.generate) for candidates and evaluation utterances."""

    cfg_scale: float = 2.5
    temperature: float = 0.7
    top_k: int = 80
    monotonic_prior: bool = False


@dataclass
class PairsConfig:
    corpus_items: int = 256  # train-split utterances (their text + another utterance of the speaker as prompt)
    challenge_items: int = 64  # generated challenging texts (alignment.challenge_texts) with train-speaker prompts
    num_candidates: int = 6  # samples per item
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cer_tolerance: float = 0.0  # CERs at or below count as 0 (alignment.ranking)
    min_similarity_gap: float = 0.0  # equal CERs: chosen must beat rejected on similarity by this much
    max_chosen_cer: float = 1.0  # drop items whose best candidate is still this bad
    val_fraction: float = 0.1  # items held out for the trainer's validation reward accuracy
    shard_size: int = 8  # items per shard (the unit of resume and of parallel work)
    max_challenge_chars: int = 160
    seed: int = 0


@dataclass
class ScoringConfig:
    asr_backend: str = "auto"  # evaluation.asr.load_asr: auto | faster-whisper | pocketsphinx | transformers
    asr_model: str = ""  # "" = the backend's default
    speaker_backend: str = "auto"  # evaluation.speaker.load_speaker_model: auto (resemblyzer) | wavlm
    speaker_model: str = ""
    device: str = "cpu"  # where ASR and the speaker model run


@dataclass
class LossConfig:
    kind: str = "dpo"  # "dpo" | "rpo" (DPO + alpha * length-normalised NLL of the chosen sample)
    beta: float = DEFAULT_BETA
    rpo_alpha: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class AlignTrainConfig:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=10, weight_decay=0.0))
    max_steps: int = 200
    batch_size: int = 8  # pairs per micro-batch (2x rows: chosen and rejected)
    grad_accum: int = 1
    precision: str = "no"  # "no" | "bf16" | "fp16"
    cpu: bool = False
    num_threads: int = 0
    log_every: int = 10
    val_every: int = 50
    ckpt_every: int = 50
    seed: int = 0


@dataclass
class EvalConfig:
    split: str = "test"  # held-out texts spoken by speakers unseen in training, with meta.json's fixed prompts
    max_items: int = 64
    challenge_items: int = 0  # also score this many challenging texts with held-out speakers' prompts
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    failure_cer: float = 0.2  # an utterance with CER above this counts as a failure (skipping, babbling)
    seed: int = 1234


@dataclass
class AlignConfig:
    lm: str = ""  # the LM to align (a `make lm` output folder)
    tokens: str = ""  # its token set (`make tokenize` output): texts, phonemes, prompts, speakers
    codec: str = ""  # "" = the codec the tokens were made with (the LM config's codec_dir)
    out_dir: str = ""
    pairs: PairsConfig = field(default_factory=PairsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: AlignTrainConfig = field(default_factory=AlignTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
