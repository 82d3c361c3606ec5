"""The codec training's speed paths learn what the plain paths learn: shared STFTs in the reconstruction loss,
channels-last convs, torch.compile (tests/test_codec_train.py holds the tiny corpus and config)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from codec.activations import HalfSnake
from codec.conv import set_channels_last
from codec.dataset import CropDataset, read_audio_manifest, split_items
from codec.discriminators import Discriminator
from codec.losses import LossConfig, ReconstructionLoss
from codec.model import NanoCodec
from codec.spectral import MelConfig, MelSpectrogram, stft
from codec.train import train
from tests.test_codec_train import corpus, tiny_config, tiny_disc_config  # noqa: F401 (corpus is a fixture)


def plain_reconstruction_loss(cfg: LossConfig, sr: int, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The loss as written before the STFT was shared: a mel spectrogram and a separate log |STFT| per signal."""
    mel_l1, stft_l1 = [], []
    for (n_fft, hop, win), bands in zip(cfg.resolutions, cfg.mel_bands, strict=True):
        mel = MelSpectrogram(MelConfig(sr, n_fft, hop, win, bands, power=1.0, norm=None, log="log"))
        mel_l1.append((mel(fake) - mel(real)).abs().mean())
        window = torch.hann_window(win)
        log_mag = [
            torch.log(stft(x, n_fft, hop, win, window).abs().square().add(1e-12).sqrt() + 1) for x in (fake, real)
        ]
        stft_l1.append((log_mag[0] - log_mag[1]).abs().mean())
    return sum(mel_l1) / len(mel_l1) + 20 * sum(stft_l1) / len(stft_l1)


def test_shared_stft_loss_equals_the_plain_loss():
    cfg = LossConfig(resolutions=[[64, 16, 64], [256, 64, 256], [1024, 256, 1024]], mel_bands=[10, 40, 80])
    real = torch.randn(2, 6000) * 0.1
    fake = (real + 0.05 * torch.randn(2, 6000)).requires_grad_(True)
    rec = ReconstructionLoss(cfg, 22050)(real, fake)
    (rec.mel + 20 * rec.stft).backward()
    ours, grad = (rec.mel + 20 * rec.stft).detach(), fake.grad.clone()
    fake.grad = None
    plain = plain_reconstruction_loss(cfg, 22050, real, fake)
    plain.backward()
    torch.testing.assert_close(ours, plain.detach(), rtol=1e-6, atol=1e-7)
    # float32 rounding of the gradient, scaled to its largest element (per-element it reaches 2e-9 of a 0.024 max
    # on an AVX-512 machine, where a fixed atol=1e-9 failed): a different loss would differ at the 1e-3 level
    torch.testing.assert_close(grad, fake.grad, rtol=1e-5, atol=1e-6 * float(fake.grad.abs().max()))


def test_channels_last_convs_equal_plain_convs(monkeypatch):
    """Generator (encoder, FSQ, causal decoder, grouped transposed convs) and discriminators: outputs and gradients;
    the plain side also takes autograd's half-snake (the training path's written-out gradient is the speed side's)."""
    model = NanoCodec.from_config("configs/codec/quick_12.5fps.yaml", ["encoder.base_channels=4"])
    disc = Discriminator(tiny_disc_config(slm=False), 22050)
    wav = torch.randn(2, 3 * model.samples_per_frame) * 0.1
    results = []
    for channels_last in (False, True):
        monkeypatch.setattr(HalfSnake, "fused_backward", channels_last)
        set_channels_last(model, channels_last)
        disc.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out = model(wav).audio
        scores = disc(out).scores
        (out.square().mean() + sum(s.mean() for s in scores)).backward()
        grads = [p.grad.clone() for p in [*model.parameters(), *disc.parameters()]]
        model.zero_grad(), disc.zero_grad()
        results.append((out.detach(), [s.detach() for s in scores], grads))
    (a, scores_a, grads_a), (b, scores_b, grads_b) = results
    torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)  # float rounding of other conv algorithms
    torch.testing.assert_close(scores_a, scores_b, rtol=1e-4, atol=1e-5)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_equals_the_plain_loop(decoupled):
    """common.optim.adam (torch's fused kernel) against torch's per-tensor loop: 5 steps with param groups, weight
    decay (AdamW) and a group without it; parameters and optimizer state agree to float rounding, and the state
    dict loads into either."""
    from common.optim import adam

    torch.manual_seed(0)
    shapes = [(64, 33), (33,), (7, 5, 3)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    kwargs = dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1 if decoupled else 0.0)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    results = []
    for fused in (True, False):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]
        opt = adam(groups, decoupled=decoupled, **kwargs) if fused else cls(groups, foreach=False, **kwargs)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append((params, opt))
    (fused_params, fused_opt), (plain_params, plain_opt) = results
    assert any(not torch.equal(p, q) for p, q in zip(fused_params, start, strict=True))  # it did move them
    for p, q in zip(fused_params, plain_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    for p, q in zip(fused_params, plain_params, strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fused_opt.state[p][key], plain_opt.state[q][key], rtol=1e-6, atol=1e-9)
    plain_opt.load_state_dict(fused_opt.state_dict())
    fused_opt.load_state_dict(plain_opt.state_dict())


@pytest.mark.slow
def test_optimised_training_matches_the_plain_path(corpus, monkeypatch):  # noqa: F811
    """12 training steps (the GAN from step 4: D updates, LSGAN, feature matching, the tiny WavLM) from the same
    seed: at every step the speed path's train_step (channels-last convs, the half-snake's written-out gradient)
    runs from the plain path's state (torch's layout, autograd's half-snake), and its
    losses and gradient norms equal the plain step's to 1e-4 (golden values made here by the plain path, which then
    continues). Step by step, because Adam's first updates (about lr x sign(gradient)) turn the last-bit rounding
    differences of near-zero gradients into lr-sized weight differences, which a GAN then amplifies."""
    from accelerate import Accelerator

    from codec.train import Losses, speed_up, train_step

    cfg = tiny_config(corpus, corpus / "unused", "gan_start_step=4", "loss.speaker_encoder=none", "channels_last=false")
    crops = CropDataset(split_items(read_audio_manifest(cfg.data.manifest), "train"), 22050, 15414, 2, seed=0)
    torch.manual_seed(0)
    generator, disc = NanoCodec(cfg.model).train(), Discriminator(cfg.discriminator, 22050).train()
    losses, accelerator = Losses(cfg.loss, 22050), Accelerator(cpu=True)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    opt_d = torch.optim.Adam([p for p in disc.parameters() if p.requires_grad], lr=cfg.optim.lr)
    for step in range(12):
        logs = {}
        for fast in (True, False):  # the plain step last: its state is the one that carries on
            g, d, o_g, o_d = copy.deepcopy((generator, disc, opt_g, opt_d)) if fast else (generator, disc, opt_g, opt_d)
            speed_up(g, d, losses, replace(cfg, channels_last=fast))
            monkeypatch.setattr(HalfSnake, "fused_backward", fast)
            logs[fast] = train_step(step, crops[step], g, d, o_g, o_d, losses, cfg, accelerator)
        assert logs[True].keys() == logs[False].keys() and ("loss/gan" in logs[True]) == (step >= 4)
        for key, plain in logs[False].items():
            assert logs[True][key] == pytest.approx(plain, rel=1e-4, abs=1e-6), (step, key)


# ---- the GPU profile, exercised on CPU at tiny size ---------------------------------------------------------
TINY_MODEL = [
    "model.encoder.base_channels=2",
    "model.decoder.base_channels=32",
    "discriminator.period_channels=[4,4,4,4,4]",
    "discriminator.stft_channels=4",
    "batch_size=2",
    "segment_seconds=0.32",
    "val_every=1000",
    "ckpt_every=1000",
]


@pytest.mark.parametrize("fps", ["12.5", "21.5"])
def test_gpu_profile_configs_load_and_follow_the_recipe(fps):
    from codec.train import TrainConfig
    from common.config import load_config
    from tts_lm.train import TrainConfig as LMTrainConfig

    cfg = load_config(TrainConfig, f"configs/codec/gpu_{fps}fps.yaml")
    assert cfg.mixed_precision == "bf16" and cfg.compile and cfg.batch_size >= 64 and cfg.segment_seconds == 0.64
    assert cfg.optim.lr == 1e-3 and 2 * cfg.gan_start_step == cfg.max_steps == 2 * cfg.loss.speaker_start_step
    assert cfg.model.frame_rate == pytest.approx(float(fps), abs=0.05)
    lm = load_config(LMTrainConfig, "configs/lm/gpu.yaml")
    assert lm.precision == "bf16"


def test_make_knows_the_gpu_profile(tmp_path):
    import subprocess

    out = subprocess.run(
        ["make", "-n", "codec", "codec-baseline", "PROFILE=gpu", f"RUNS={tmp_path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "configs/codec/gpu_12.5fps.yaml" in out and "configs/codec/gpu_21.5fps.yaml" in out
    out = subprocess.run(["make", "-n", "lm", "PROFILE=gpu", f"RUNS={tmp_path}"], capture_output=True, text=True).stdout
    assert "configs/lm/gpu.yaml" in out


def test_mixed_precision_setting_reads_yaml_no_and_names_bad_values():
    from common.config import ConfigError, mixed_precision

    assert mixed_precision("precision", "False") == "no"  # `precision=no` on a command line: YAML's false
    assert mixed_precision("precision", "no") == "no" and mixed_precision("precision", "BF16") == "bf16"
    with pytest.raises(ConfigError, match="mixed_precision='fp8': use no, fp16 or bf16"):
        mixed_precision("mixed_precision", "fp8")


@pytest.mark.slow
def test_gpu_profile_trains_tiny_on_cpu(corpus, tmp_path):  # noqa: F811
    """Its recipe on CPU at tiny size: reconstruction only, then the GAN and the speaker loss join at the half."""
    from codec.train import TrainConfig
    from common.config import load_config

    overrides = [*TINY_MODEL, "max_steps=4", "gan_start_step=2", "loss.speaker_start_step=2", "compile=false"]
    overrides += ["mixed_precision=no", f"data.manifest={corpus / 'manifest.jsonl'}", f"out_dir={tmp_path / 'gpu'}"]
    result = train(load_config(TrainConfig, "configs/codec/gpu_12.5fps.yaml", overrides))
    terms = [sorted(k for k in h if k.startswith("loss/")) for h in result.history]
    assert terms[0] == terms[1] == ["loss/generator", "loss/mel", "loss/stft"]
    assert {"loss/gan", "loss/feature", "loss/speaker"} <= set(terms[2]) and "loss/discriminator" in terms[2]


@pytest.mark.slow
def test_compiled_training_equals_eager_on_cpu(corpus, tmp_path, monkeypatch):  # noqa: F811
    """compile=true (generator, discriminators, reconstruction loss compiled in place) vs eager: 3 steps, same losses.

    The suite compiles with the aot_eager backend (TorchDynamo capture + AOTAutograd of the real training path, in
    seconds); inductor's C++ code generation took ~30 min on the loaded 2-vCPU machine, where it gave the same
    losses to 1e-4. Weights are not compared: Adam turns near-zero gradients' rounding into lr-sized steps."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="aot_eager", **kw))
    common = [*TINY_MODEL, "max_steps=3", "gan_start_step=2", "loss.speaker_encoder=none", "discriminator.slm=false"]
    eager = train(tiny_config(corpus, tmp_path / "eager", *common, "compile=false"))
    compiled = train(tiny_config(corpus, tmp_path / "compiled", *common, "compile=true"))
    assert compiled.generator.state_dict().keys() == eager.generator.state_dict().keys()  # same module names
    for e, c in zip(eager.history, compiled.history, strict=True):
        assert e.keys() == c.keys()
        for key in (k for k in e if k.startswith("loss/")):
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), (e["step"], key)
