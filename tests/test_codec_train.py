"""Codec training: spectral front end, discriminators, losses, speaker loss, crops, and the GAN loop itself
(loss goes down, resume == uninterrupted, NaN guard, 2-process DDP). Tiny configs on real espeak-ng speech."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.dataset import CropDataset, ManifestError, read_audio_manifest, split_items
from codec.discriminators import Discriminator, DiscriminatorConfig, DiscriminatorOutput
from codec.losses import LossConfig, ReconstructionLoss, discriminator_loss, feature_matching_loss, generator_loss
from codec.model import NanoCodec
from codec.speaker import ResemblyzerEncoder, SpeakerConsistencyLoss, normalize_volume
from codec.spectral import MelConfig, MelSpectrogram, Resampler, mel_filterbank
from codec.train import (
    DeadOutputError,
    NonFiniteLossError,
    OptimConfig,
    TrainConfig,
    generator_param_groups,
    learning_rate,
    main,
    train,
)
from common.config import load_config
from tests.speech import synthesize

REPO = Path(__file__).resolve().parents[1]

# A codec of ~0.3 M parameters (hop 42) and small discriminators, including a tiny random WavLM.
TINY_YAML = """
model:
  sample_rate: 22050
  latent_dim: 8
  encoder: {down_sample_rates: [2, 3, 7], base_channels: 8}
  quantizer: {num_groups: 2, num_levels_per_group: [8, 7, 6, 6]}
  decoder: {up_sample_rates: [7, 3, 2], base_channels: 32}
discriminator:
  periods: [2, 3]
  period_channels: [4, 8, 16]
  stft_resolutions: [[128, 32, 128], [512, 128, 512]]
  stft_channels: 4
  slm: true
  slm_model: tiny-random
  slm_channels: 4
loss:
  resolutions: [[64, 16, 64], [256, 64, 256], [1024, 256, 1024]]
  mel_bands: [10, 40, 80]
optim: {lr: 0.003}
batch_size: 2
segment_seconds: 0.7
max_steps: 4
log_every: 2
val_every: 1000
ckpt_every: 1000
data: {val_utterances: 1, val_max_seconds: 1.0}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A manifest of real speech: one short training utterance (shorter than a crop, so every batch is the same
    padded utterance) and one held-out utterance of another voice."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for name, text, voice, split in [
        ("a", "Hi.", "en-us", "train"),
        ("b", "Good morning.", "en-gb+f3", "validation"),
    ]:
        wav, sr = synthesize(text, root, voice=voice, name=name)
        rows.append({"id": name, "audio": f"{name}.wav", "duration": len(wav) / sr, "split": split, "text": text})
    assert rows[0]["duration"] < 0.7
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tiny.yaml").write_text(TINY_YAML)
    return root


def tiny_config(corpus: Path, out_dir: Path, *overrides: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        corpus / "tiny.yaml",
        [f"data.manifest={corpus / 'manifest.jsonl'}", f"out_dir={out_dir}", *overrides],
    )


# ---- spectral front end ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sr,n_fft,n_mels,norm", [(22050, 1024, 80, "slaney"), (16000, 400, 40, "slaney"), (22050, 64, 10, None)]
)
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, norm):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, norm=norm)
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, norm=norm).numpy(), ref, rtol=1e-5, atol=1e-7)


def test_mel_spectrogram_equals_librosa():
    librosa = pytest.importorskip("librosa")
    wav = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=512, hop_length=128, n_mels=40, power=1.0)
    cfg = MelConfig(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, norm="slaney", pad_mode="constant")
    ours = MelSpectrogram(cfg)(torch.from_numpy(wav)[None])[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_resampler_keeps_a_tone_and_passes_gradients():
    t = torch.arange(22050) / 22050
    tone = torch.sin(2 * torch.pi * 440 * t)[None].requires_grad_(True)
    out = Resampler(22050, 16000)(tone)
    assert out.shape == (1, 16000)
    expected = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    assert (out[0, 200:-200] - expected[200:-200]).abs().max() < 1e-3  # edges see the zero padding
    out.square().sum().backward()
    assert tone.grad is not None and tone.grad.abs().sum() > 0


# ---- discriminators and losses --------------------------------------------------------------------------------
def tiny_disc_config(**kw) -> DiscriminatorConfig:
    base = dict(
        periods=[2, 3],
        period_channels=[4, 8, 16],
        stft_resolutions=[[128, 32, 128], [512, 128, 512]],
        stft_channels=4,
        slm_model="tiny-random",
        slm_channels=4,
    )
    return DiscriminatorConfig(**{**base, **kw})


def test_discriminator_outputs_and_feature_maps():
    disc = Discriminator(tiny_disc_config(), sample_rate=22050)
    wav = (torch.randn(3, 5000) * 0.1).requires_grad_(True)
    out = disc(wav)
    assert len(out.scores) == len(out.features) == 2 + 2 + 1  # periods + STFT resolutions + SLM
    for p, score, feats in zip([2, 3], out.scores[:2], out.features[:2], strict=True):
        assert score.shape[0] == 3 and score.shape[-1] == p  # [B, 1, frames, period]
        assert [f.shape[1] for f in feats] == [4, 8, 16]
    for (n_fft, hop, _), score, feats in zip(
        [[128, 32, 128], [512, 128, 512]], out.scores[2:4], out.features[2:4], strict=True
    ):
        assert score.shape[:3] == (3, 1, 5000 // hop + 1)  # [B, 1, frames, freq / 8]
        assert feats[0].shape[-1] == n_fft // 2 + 1
    assert out.scores[4].shape[:2] == (3, 1) and len(out.features[4]) == 3  # SLM head on WavLM frames
    sum(s.mean() for s in out.scores).backward()
    assert wav.grad.abs().sum() > 0  # the generator gets gradients through every sub-discriminator

    wavlm_params = [p for n, p in disc.named_parameters() if ".wavlm." in n]
    assert wavlm_params and not any(p.requires_grad for p in wavlm_params)  # frozen
    state = disc.trainable_state_dict()
    assert state and not any(".wavlm." in k for k in state)
    other = Discriminator(tiny_disc_config(), sample_rate=22050)
    other.load_trainable_state_dict(state)
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(disc(x).scores, other(x).scores, strict=True))
    with pytest.raises(ValueError, match="does not fit"):
        Discriminator(tiny_disc_config(periods=[5]), 22050).load_trainable_state_dict(state)


def fake_output(scores: list[float], features: list[float]) -> DiscriminatorOutput:
    return DiscriminatorOutput(
        [torch.full((2, 1, 7), s) for s in scores],
        [[torch.full((2, 3, 5), f), torch.full((2, 4), f)] for f in features],
    )


def test_lsgan_and_feature_matching_known_values():
    perfect_real, perfect_fake = fake_output([1.0, 1.0], [0.0, 0.0]), fake_output([0.0, 0.0], [0.0, 0.0])
    assert discriminator_loss(perfect_real, perfect_fake).item() == 0.0
    assert generator_loss(perfect_fake).item() == 1.0  # (1 - 0)^2
    assert generator_loss(perfect_real).item() == 0.0
    # D(real) = 0.5, D(fake) = 0.5 on every sub-discriminator: 0.25 + 0.25
    assert discriminator_loss(fake_output([0.5, 0.5], [0, 0]), fake_output([0.5, 0.5], [0, 0])).item() == 0.5
    real, fake = fake_output([0, 0], [1.0, 2.0]), fake_output([0, 0], [1.5, 2.0])
    assert feature_matching_loss(real, real).item() == 0.0
    assert feature_matching_loss(real, fake).item() == pytest.approx((0.5 + 0.0) / 2)


def test_reconstruction_loss_zero_for_identical_and_positive_otherwise():
    loss = ReconstructionLoss(LossConfig(), sample_rate=22050)
    wav = torch.randn(2, 22050) * 0.1
    same = loss(wav, wav.clone())
    assert same.mel.item() == 0.0 and same.stft.item() == 0.0
    fake = (wav * 0.5).requires_grad_(True)
    diff = loss(wav, fake)
    assert diff.mel.item() > 0.01 and diff.stft.item() > 0.01
    (diff.mel + diff.stft).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    silent = torch.zeros(1, 4000, requires_grad=True)  # digital silence must not give NaN gradients
    (loss(torch.zeros(1, 4000), silent).mel + loss(wav[:1, :4000], silent).stft).backward()
    assert torch.isfinite(silent.grad).all()


# ---- speaker consistency --------------------------------------------------------------------------------------
def test_speaker_front_end_matches_resemblyzer(tmp_path):
    ra = pytest.importorskip("resemblyzer.audio")
    from resemblyzer import VoiceEncoder

    wav16, _ = synthesize("The quick brown fox jumps over the lazy dog.", tmp_path, sample_rate=16000)
    encoder = ResemblyzerEncoder()
    ours = encoder.mel_frames(normalize_volume(torch.from_numpy(wav16)[None]))[0].numpy()
    ref = ra.wav_to_mel_spectrogram(ra.normalize_volume(wav16, -30, increase_only=True))  # librosa-based
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())
    reference = VoiceEncoder("cpu", verbose=False)  # resemblyzer's own network on the same frames
    with torch.no_grad():
        np.testing.assert_allclose(
            encoder(torch.from_numpy(wav16)[None]).numpy(), reference(torch.from_numpy(ref)[None]).numpy(), atol=1e-5
        )


def test_speaker_loss_is_differentiable_and_tells_voices_apart(tmp_path):
    loss = SpeakerConsistencyLoss(ResemblyzerEncoder(), sample_rate=22050)
    a1, _ = synthesize("The birch canoe slid on the smooth planks.", tmp_path, voice="en-us", name="a1")
    a2, _ = synthesize("Glue the sheet to the dark blue background.", tmp_path, voice="en-us", name="a2")
    b1, _ = synthesize("The birch canoe slid on the smooth planks.", tmp_path, voice="en-us+f3", name="b1")
    n = min(map(len, (a1, a2, b1)))
    a1, a2, b1 = (torch.from_numpy(x[:n])[None] for x in (a1, a2, b1))
    assert loss(a1, a1).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(a1, a2).item() < loss(a1, b1).item()  # same voice, other words: closer than another voice
    fake = b1.clone().requires_grad_(True)
    loss(a1, fake).backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0  # the gradient reaches the audio
    assert not any(p.requires_grad for p in loss.parameters())  # frozen


# ---- data --------------------------------------------------------------------------------------------------------
def test_crops_are_a_function_of_seed_and_step(corpus):
    items = split_items(read_audio_manifest(corpus / "manifest.jsonl"), "validation")  # ~1 s: crops vary
    make = lambda rank=0, world=1, seed=0: CropDataset(items, 22050, 4410, 2, seed, rank, world)  # noqa: E731
    crops = make()
    assert crops[3].shape == (2, 4410) and torch.equal(crops[3], make()[3])
    assert not torch.equal(crops[3], crops[4]) and not torch.equal(crops[3], make(seed=1)[3])
    both = torch.cat([make(0, 2)[3], make(1, 2)[3]])  # DDP: the ranks split one global batch
    assert both.shape == (4, 4410) and not torch.equal(both[:2], both[2:])


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio": "a.wav", "duration": 1.0, "split": "train"}\n{"audio": "b.wav"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_audio_manifest(path)
    with pytest.raises(ManifestError, match="not found"):
        read_audio_manifest(tmp_path / "missing.jsonl")


def test_encoder_learning_rate_scale():
    model = NanoCodec.from_config("configs/codec/quick_12.5fps.yaml")
    rest, encoder = generator_param_groups(model, OptimConfig(lr=1e-3, encoder_lr_scale=0.1))
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.audio_encoder.parameters()}
    assert len(rest["params"]) + len(encoder["params"]) == len(list(model.parameters()))
    assert (rest["lr_scale"], encoder["lr_scale"]) == (1.0, 0.1)


def test_learning_rate_warmup_then_per_epoch_decay():
    lrs = [learning_rate(OptimConfig(lr=1.0, lr_decay=0.5, warmup_steps=4), s, decay_every=10) for s in range(22)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4:10] == [1.0] * 6
    assert lrs[10] == lrs[19] == 0.5 and lrs[20] == 0.25
    plain = [learning_rate(OptimConfig(lr=1.0, lr_decay=0.5), s, decay_every=10) for s in range(22)]
    assert plain[:10] == [1.0] * 10 and plain[10:] == lrs[10:]  # warmup_steps=0: the paper's schedule


def test_calibrate_latents_spreads_the_codes(corpus):
    """The data-dependent init sets the latents' std, so more FSQ levels come into use; silence is refused."""
    from codec.audio import load_audio
    from codec.model import CodecError, calibrate_latents

    torch.manual_seed(0)
    model = NanoCodec.from_config("configs/codec/quick_12.5fps.yaml")
    wav = torch.from_numpy(load_audio(corpus / "b.wav", sample_rate=model.sample_rate)[0])[None]
    levels_used = lambda: sum(int(ch.unique().numel()) for ch in model(wav).quantized[0])  # noqa: E731
    used = {}
    for target in (0.1, 1.0):
        _, after = calibrate_latents(model, wav, target_std=target)
        latents = model.audio_encoder(model.pad_to_frames(wav))
        assert after == pytest.approx(target, rel=1e-4) and float(latents.std()) == pytest.approx(target, rel=1e-4)
        used[target] = levels_used()
    assert used[1.0] > 1.5 * used[0.1], used
    with pytest.raises(CodecError, match="silence"):
        calibrate_latents(model, torch.zeros(1, 4000))


# ---- the training loop ---------------------------------------------------------------------------------------
def test_training_lowers_the_loss(corpus, tmp_path):
    result = train(tiny_config(corpus, tmp_path / "run", "max_steps=14", "loss.speaker_encoder=none"))
    mel = [h["loss/mel"] for h in result.history]
    assert len(mel) == 14 and "loss/discriminator" in result.history[0] and "loss/feature" in result.history[0]
    assert np.mean(mel[-3:]) < 0.85 * mel[0], mel
    model = NanoCodec.from_pretrained(tmp_path / "run")  # the final model loads and matches the trained weights
    trained = result.generator.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert (tmp_path / "run" / "logs").is_dir() and (tmp_path / "run" / "train_config.yaml").is_file()


def test_resume_equals_uninterrupted(corpus, tmp_path):
    """6 steps in one go == 3 steps, stop, restart the CLI's function with max_steps=6 in the same out_dir.
    Every loss of steps 3..5 and every final weight agree bitwise (1 thread; data and RNG keyed by seed+step)."""
    calibrate = "latent_init_std=1.0"  # the data-dependent init runs on a fresh start only, not on resume
    full = train(tiny_config(corpus, tmp_path / "full", "max_steps=6", "ckpt_every=3", calibrate))
    first = train(tiny_config(corpus, tmp_path / "resumed", "max_steps=3", "ckpt_every=3", calibrate))
    assert (tmp_path / "resumed" / "checkpoints" / "step_00000003").is_dir()
    second = train(tiny_config(corpus, tmp_path / "resumed", "max_steps=6", "ckpt_every=3", calibrate))
    assert [h["step"] for h in second.history] == [3, 4, 5]
    assert first.history + second.history == full.history
    for a, b in ((full.generator, second.generator), (full.discriminator, second.discriminator)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name


def test_resuming_with_another_recipe_is_reported(corpus, tmp_path):
    from codec.train import recipe_changes
    from common.config import save_config

    saved = tmp_path / "train_config.yaml"
    save_config(tiny_config(corpus, tmp_path), saved)
    assert recipe_changes(tmp_path / "missing.yaml", tiny_config(corpus, tmp_path)) == []
    assert recipe_changes(saved, tiny_config(corpus, tmp_path, "max_steps=99", "num_threads=2")) == []  # cadence only
    changed = tiny_config(corpus, tmp_path, "optim.encoder_lr_scale=0.5", "loss.stft_weight=2")
    assert recipe_changes(saved, changed) == ["loss.stft_weight: 20.0 -> 2.0", "optim.encoder_lr_scale: 1.0 -> 0.5"]


def test_a_codec_it_did_not_write_is_never_overwritten(corpus, tmp_path):
    from common.config import ConfigError

    given = tmp_path / "converted"
    NanoCodec(tiny_config(corpus, tmp_path).model).save_pretrained(given)  # weights without train_config.yaml
    before = snapshot(given)
    with pytest.raises(ConfigError, match="did not write"):
        train(tiny_config(corpus, given, "max_steps=1"))
    assert snapshot(given) == before
    assert sorted(p.name for p in given.iterdir()) == ["config.json", "model.safetensors"]  # no logs, no config


def snapshot(out: Path) -> dict[Path, bytes]:
    """Every file a run wrote except its logs and the config of the latest invocation."""
    skip = lambda p: "logs" in p.relative_to(out).parts or p.name == "train_config.yaml"  # noqa: E731
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and not skip(p)}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "nan"
    args = [str(corpus / "tiny.yaml"), f"data.manifest={corpus / 'manifest.jsonl'}", f"out_dir={out}"]
    args += ["ckpt_every=1", "loss.speaker_encoder=none"]
    train(load_config(TrainConfig, args[0], [*args[1:], "max_steps=2"]))  # a good run to step 2
    good = snapshot(out)
    # resume with an absurd learning rate: step 2's discriminator update overflows, so its generator loss is not
    # finite; the run must stop there, before the generator update, and write nothing
    bad = [*args[1:], "max_steps=5", "optim.lr=1e30", "optim.grad_clip=0"]
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite loss \(gan") as err:
        train(load_config(TrainConfig, args[0], bad))
    assert "step_00000002" in str(err.value)  # names the checkpoint to resume from
    after = snapshot(out)
    assert after == good  # the last good checkpoint (step 2) and the model are untouched, no new checkpoint
    assert NanoCodec.from_pretrained(out / "checkpoints" / "step_00000002") is not None
    assert main([args[0], *bad]) == 1
    assert "non-finite loss" in capsys.readouterr().err


def test_a_dead_clamped_output_stops_the_run(corpus, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "dead"
    args = [str(corpus / "tiny.yaml"), f"data.manifest={corpus / 'manifest.jsonl'}", f"out_dir={out}"]
    args += ["ckpt_every=2", "loss.speaker_encoder=none"]
    train(load_config(TrainConfig, args[0], [*args[1:], "max_steps=2"]))
    weights = out / "checkpoints/step_00000002/model.safetensors"
    state = load_file(str(weights))
    state["audio_decoder.post_conv.conv.bias"] += 50.0  # every output sample at +1: the clamp passes no gradient
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(DeadOutputError, match=r"step 4: for 3 steps in a row 100.0% .*optim.warmup_steps"):
        train(load_config(TrainConfig, args[0], [*args[1:], "max_steps=8", "dead_output_steps=3"]))
    assert main([args[0], *args[1:], "max_steps=8", "dead_output_steps=3"]) == 1
    assert "clamp" in capsys.readouterr().err
    result = train(load_config(TrainConfig, args[0], [*args[1:], "max_steps=10", "dead_output_steps=0"]))
    assert [h["audio/saturated"] for h in result.history] == [1.0] * 4  # steps 6-9: it never recovers on its own


def test_cli_help_and_config_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "Resumes automatically" in capsys.readouterr().out
    assert main([str(REPO / "configs/codec/quick_12.5fps.yaml"), "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main([str(REPO / "configs/codec/quick_12.5fps.yaml"), "data.manifest=/no/such/manifest.jsonl"]) == 2
    assert "manifest not found" in capsys.readouterr().err


DDP_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from common.config import load_config
from codec.train import TrainConfig, train
torch.set_num_threads(1)
result = train(load_config(TrainConfig, sys.argv[1], sys.argv[2:]))
rank = torch.distributed.get_rank()
state = {"g." + k: v for k, v in result.generator.state_dict().items()}
state.update({"d." + k: v for k, v in result.discriminator.trainable_state_dict().items()})
save_file({k: v.contiguous() for k, v in state.items()}, f"{result.out_dir}/rank{rank}.safetensors")
torch.save([h["loss/mel"] for h in result.history], f"{result.out_dir}/losses{rank}.pt")
"""


@pytest.mark.slow
def test_ddp_two_processes_end_with_identical_weights(corpus, tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    cmd += [str(corpus / "tiny.yaml"), f"data.manifest={corpus / 'manifest.jsonl'}", f"out_dir={out}", "max_steps=3"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    l0, l1 = torch.load(out / "losses0.pt"), torch.load(out / "losses1.pt")
    assert len(l0) == len(l1) == 3  # both ranks trained every step ...
    trained = load_file(out / "model.safetensors")  # ... and the saved model is the synchronised one
    assert all(torch.equal(trained[k[2:]], w0[k]) for k in w0 if k.startswith("g."))
