"""Sampling an LM on (text, speaker prompt) items and scoring the speech: ASR CER and speaker similarity.

    items = corpus_items(tokens, lm.config, "train", limit=256, seed=0)        # + challenge_items(...)
    scorer = Scorer(codec, ScoringConfig())
    result = sample_and_score(lm, scorer, items[0], num=6, sampling=SamplingConfig(), seed=7)
    result.codes[i]  int16 [K, F_i];  result.cer[i], result.similarity[i], result.transcripts[i]

An item is a text with its phoneme ids (PhonemeVocab ids of the token set) and the speaker-prompt codes it is
spoken with. Items come from a token set (data.tokenize_corpus output, read through tts_lm.dataset): train
utterances with a 3-5 s crop of another utterance of their speaker (as in LM training), held-out utterances
with meta.json's fixed prompt of the same unseen speaker, and challenging texts (alignment.challenge_texts)
phonemised with G2P and given prompts of the split's speakers in turn.

Scoring: the codes are decoded with the codec, transcribed by the ASR of evaluation.asr (CER after
evaluation.text_metrics normalisation, against the item's text), and embedded by the speaker model of
evaluation.speaker; similarity is the cosine to the decoded speaker prompt (the voice the LM was asked to
clone). A candidate with no audio (the LM ended at once) or silent audio scores CER 1 and similarity -1.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from alignment.challenge_texts import challenge_texts
from alignment.config import AlignConfig, SamplingConfig, ScoringConfig
from codec import NanoCodec
from codec.audio import AudioError
from evaluation.asr import default_asr_spec, load_asr
from evaluation.speaker import load_speaker_model
from evaluation.speaker import similarity as cosine
from evaluation.text_metrics import error_rates
from text.g2p import G2P
from text.normalize import TextError
from text.vocab import PhonemeVocab
from tts_lm.config import LMConfig
from tts_lm.dataset import DataConfig, PromptedUtterances
from tts_lm.model import KoelLM
from tts_lm.synthesizer import load_codec

NO_AUDIO_CER, NO_AUDIO_SIMILARITY = 1.0, -1.0
MIN_SCORED_SECONDS = 0.1  # shorter audio is not worth transcribing


@dataclass
class PromptedText:
    """One (text, speaker prompt) item: phoneme_ids without BOS/EOS, prompt_codes int16 [K, P]."""

    id: str
    kind: str  # "corpus", "heldout", or a challenge kind (repetition, long_words, numbers, rare_words)
    text: str
    phoneme_ids: list[int]
    prompt_codes: np.ndarray
    speaker: str  # the prompt's speaker

    def fingerprint(self) -> str:
        """A hash of everything the item's samples depend on."""
        h = hashlib.sha256(f"{self.id}|{self.kind}|{self.text}|{self.speaker}|".encode())
        h.update(np.asarray(self.phoneme_ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.prompt_codes, dtype=np.int16).tobytes())
        return h.hexdigest()


# ---- items ---------------------------------------------------------------------------------------------------
def _prompted(ds, meta: dict, split: str, lm_cfg: LMConfig, train: bool) -> PromptedUtterances:
    """One split of the token set with speaker prompts as the LM saw them (3-5 s crops) or fixed (held out)."""
    return PromptedUtterances(ds, meta, split, lm_cfg, DataConfig(), seed=0, train=train)


def corpus_items(
    ds, meta: dict, lm_cfg: LMConfig, split: str, limit: int, seed: int, train: bool = True
) -> list[PromptedText]:
    """Up to `limit` utterances of `split` (a seeded sample, in corpus order) with their speaker prompts."""
    if limit <= 0:
        return []
    data = _prompted(ds, meta, split, lm_cfg, train)
    rows = data.usable
    if len(rows) > limit:
        picked = np.random.default_rng([seed, 17]).choice(len(rows), size=limit, replace=False)
        rows = [rows[k] for k in sorted(picked)]
    texts = ds.select_columns(["id", "text"]).to_dict()
    text_of = dict(zip(texts["id"], texts["text"], strict=True))
    items = []
    for i in rows:
        prompt = data.prompt(i, np.random.default_rng([seed, i, 3]))
        items.append(
            PromptedText(
                id=data.ids[i],
                kind="corpus" if train else "heldout",
                text=text_of[data.ids[i]],
                phoneme_ids=data.phonemes[i].tolist(),
                prompt_codes=prompt,
                speaker=data.speakers[i],
            )
        )
    return items


def challenge_items(
    ds,
    meta: dict,
    lm_cfg: LMConfig,
    split: str,
    count: int,
    seed: int,
    g2p: G2P,
    max_chars: int = 160,
) -> list[PromptedText]:
    """`count` challenging texts built from the train texts, each with a prompt of a `split` speaker in turn."""
    if count <= 0:
        return []
    train = split == "train"
    data = _prompted(ds, meta, split, lm_cfg, train)
    columns = ds.select_columns(["text", "split"]).to_dict()
    corpus = [t for t, s in zip(columns["text"], columns["split"], strict=True) if s == "train"]
    vocab = PhonemeVocab.from_dict(meta["phoneme_vocab"], source="tokens meta.json phoneme_vocab")
    texts = challenge_texts(corpus, count, seed=seed, max_chars=max_chars)
    by_speaker: dict[str, list[int]] = {}
    for i in data.usable:
        by_speaker.setdefault(data.speakers[i], []).append(i)
    speakers = sorted(by_speaker)
    items = []
    for k, (challenge, phonemes) in enumerate(zip(texts, g2p.phonemize([t.text for t in texts]), strict=True)):
        try:
            ids = vocab.encode(phonemes)
        except TextError:
            continue  # a symbol outside the vocabulary: leave the text out
        rng = np.random.default_rng([seed, k, 5])
        rows = by_speaker[speakers[k % len(speakers)]]
        row = rows[int(rng.integers(len(rows)))]
        prompt = data.prompt(row, rng)
        items.append(
            PromptedText(
                id=f"challenge-{split}-{seed}-{k:05d}",
                kind=challenge.kind,
                text=challenge.text,
                phoneme_ids=ids,
                prompt_codes=prompt,
                speaker=data.speakers[row],
            )
        )
    return items


# ---- models --------------------------------------------------------------------------------------------------
def codec_source(cfg: AlignConfig, lm_cfg: LMConfig) -> str:
    """The codec to decode with: cfg.codec, else the one the LM's tokens were made with."""
    source = cfg.codec or lm_cfg.codec.codec_dir
    if not source:
        raise ValueError(f"{cfg.lm}: the LM config names no codec; pass codec=<the codec folder of its tokens>")
    return source


def weights_hash(source: str | os.PathLike) -> str:
    """sha256 of a checkpoint: a folder's config.json + model.safetensors, or a single file (.nemo)."""
    path = Path(source)
    files = [path] if path.is_file() else [path / "config.json", path / "model.safetensors"]
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: {source} is not a model folder (config.json + model.safetensors)")
        with f.open("rb") as src:
            while chunk := src.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load_models(cfg: AlignConfig, device: str, meta: dict | None = None) -> tuple[KoelLM, NanoCodec]:
    """The LM to align (cfg.lm) and its codec on `device`, checked against each other and the token set's meta."""
    if not cfg.lm:
        raise ValueError("lm is not set: pass lm=runs/tts_lm/NAME (a `make lm` output folder)")
    lm = KoelLM.from_pretrained(cfg.lm, device=device)
    if meta is not None:
        theirs, ours = str(meta.get("codec_hash", "")), lm.config.codec.codec_hash
        if theirs and ours and theirs != ours:
            raise ValueError(
                f"tokens={cfg.tokens} were made with codec {theirs[:12]}, the LM {cfg.lm} was trained on tokens of "
                f"codec {ours[:12]}; pass the LM's own token set"
            )
    source = codec_source(cfg, lm.config)
    codec = load_codec(source, device)
    check_codec(lm, codec, source)
    return lm, codec


def resolved_scoring(cfg: ScoringConfig) -> ScoringConfig:
    """`auto` backends replaced by what they load here, so runs record (and hash) the real scorer."""
    asr_backend, asr_model = cfg.asr_backend, cfg.asr_model
    if asr_backend == "auto":
        asr_backend, default = default_asr_spec()
        asr_model = asr_model or default or ""
    speaker_backend = "resemblyzer" if cfg.speaker_backend == "auto" else cfg.speaker_backend
    return replace(cfg, asr_backend=asr_backend, asr_model=asr_model, speaker_backend=speaker_backend)


# ---- scoring -------------------------------------------------------------------------------------------------
def check_codec(lm: KoelLM, codec: NanoCodec, codec_name: str) -> None:
    """Refuse a codec the LM's tokens did not come from (codebooks, code count, frame rate)."""
    c = lm.config
    if (c.num_codebooks, c.codebook_size) != (codec.num_codebooks, codec.codebook_size) or abs(
        c.codec.frame_rate - codec.frame_rate
    ) > 1e-3:
        raise ValueError(
            f"codec {codec_name}: {codec.num_codebooks} x {codec.codebook_size} codes at {codec.frame_rate:g} FPS, "
            f"but the LM predicts {c.num_codebooks} x {c.codebook_size} at {c.codec.frame_rate:g} FPS; pass the "
            f"codec the LM's tokens were made with (codec=..., the LM's config says {c.codec.codec_dir or '?'})"
        )


class Scorer:
    """Decodes codes with the codec and scores them: CER by ASR, cosine similarity by a speaker model."""

    def __init__(self, codec: NanoCodec, cfg: ScoringConfig):
        self.codec = codec.eval()
        self.asr = load_asr(cfg.asr_backend, cfg.asr_model or None, device=cfg.device)
        self.speaker = load_speaker_model(cfg.speaker_backend, cfg.speaker_model or None, device=cfg.device)
        self._prompt_embeddings: dict[str, np.ndarray] = {}

    @property
    def names(self) -> dict[str, str]:
        return {"asr": self.asr.name, "speaker": self.speaker.name}

    @torch.no_grad()
    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """codes [K, F] -> float32 [F * samples_per_frame] (empty for F = 0)."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if codes.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        return self.codec.decode(codes[None].to(self.codec_device))[0].float().cpu().numpy()

    @property
    def codec_device(self) -> torch.device:
        return next(self.codec.parameters()).device

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        """Speaker embedding [D] of float32 [T] audio at the codec's rate; None when too short or silent."""
        if wav.size < MIN_SCORED_SECONDS * self.sr:
            return None
        try:
            return self.speaker.embed([wav], self.sr)[0]
        except AudioError:  # silent audio
            return None

    def prompt_embedding(self, item: PromptedText) -> np.ndarray | None:
        """The speaker embedding [D] of the decoded prompt (cached per prompt), None if it is silent."""
        codes = np.ascontiguousarray(item.prompt_codes, dtype=np.int16)
        key = f"{codes.shape}|{hashlib.sha1(codes.tobytes()).hexdigest()}"
        if key not in self._prompt_embeddings:
            self._prompt_embeddings[key] = self.embed(self.decode(codes))
        return self._prompt_embeddings[key]

    @property
    def sr(self) -> int:
        return self.codec.sample_rate

    def score(self, item: PromptedText, codes: list[np.ndarray]) -> tuple[list[float], list[float], list[str]]:
        """Candidates' codes [K, F_i] -> (CER [N], similarity [N], transcripts [N]), against the item's prompt."""
        return self.score_audio(item.text, [self.decode(c) for c in codes], self.prompt_embedding(item))

    def score_audio(
        self, text: str, wavs: list[np.ndarray], reference: np.ndarray | None
    ) -> tuple[list[float], list[float], list[str]]:
        """float32 [T_i] waveforms at the codec's rate that should say `text` -> (CER [N], similarity [N] to the
        `reference` speaker embedding [D], transcripts [N]); unusable audio scores CER 1, similarity -1."""
        cer = [NO_AUDIO_CER] * len(wavs)
        similarity = [NO_AUDIO_SIMILARITY] * len(wavs)
        transcripts = [""] * len(wavs)
        usable = [i for i, w in enumerate(wavs) if w.size >= MIN_SCORED_SECONDS * self.sr]
        if not usable:
            return cer, similarity, transcripts
        heard = self.asr.transcribe([wavs[i] for i in usable], self.sr)
        rates = error_rates([text] * len(usable), heard)
        for k, i in enumerate(usable):
            cer[i], transcripts[i] = rates.utterance_cer[k], heard[k]
            emb = self.embed(wavs[i]) if reference is not None else None
            if emb is not None:
                similarity[i] = float(cosine(emb, reference))
        return cer, similarity, transcripts


@dataclass
class ScoredSamples:
    """N samples of one item: codes int16 [K, F_i] each, stop reasons, CER, similarity and transcripts."""

    codes: list[np.ndarray]
    stop_reasons: list[str]
    cer: list[float]
    similarity: list[float]
    transcripts: list[str]


@torch.no_grad()
def sample_and_score(
    lm: KoelLM, scorer: Scorer, item: PromptedText, num: int, sampling: SamplingConfig, seed: int
) -> ScoredSamples:
    """Sample `num` utterances of `item` in one batch (one generator seeded with `seed`) and score each.

    Raises tts_lm.GenerationError when the item does not fit the LM (too long for its context).
    """
    prompt = torch.from_numpy(item.prompt_codes.astype(np.int64)).to(lm.device)
    out = lm.generate_output(
        [item.phoneme_ids] * num,
        prompt,
        cfg_scale=sampling.cfg_scale,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        monotonic_prior=sampling.monotonic_prior,
        seed=seed,
    )
    codes = [out.codes[i, :, : int(out.lengths[i])].cpu().numpy().astype(np.int16) for i in range(num)]
    cer, similarity, transcripts = scorer.score(item, codes)
    return ScoredSamples(codes, list(out.stop_reasons), cer, similarity, transcripts)


def item_seed(item_id: str, seed: int) -> int:
    """A sampling seed for an item: stable across runs, processes and shard layouts."""
    return int(hashlib.sha256(f"{seed}|{item_id}".encode()).hexdigest()[:8], 16)
