"""NeMo itself as the reference: its codec modules, random weights, the three released NanoCodec configurations.

Skipped unless NeMo is importable (it is not a nanokoel dependency). To run it, in a separate virtualenv:

    python3 -m venv /tmp/nemo-venv && /tmp/nemo-venv/bin/pip install torch==2.13.0
    /tmp/nemo-venv/bin/pip install -c <(echo torch==2.13.0) "nemo-toolkit[tts]==3.0.0" pytest
    /tmp/nemo-venv/bin/python -m pytest -q -s tests/test_nemo_reference.py     # -s prints the max abs errors

For each released configuration (tests/fixtures/nemo/configs/, full size, ~62 M parameters) NeMo's
HiFiGANEncoder / GroupFiniteScalarQuantizer / CausalHiFiGANDecoder are built with random (calibrated) weights
and written as a .nemo by NeMo's SaveRestoreConnector, together with real training-only modules (a
MultiPeriodDiscriminator, a MultiResolutionMelLoss) as a released file carries them. nanokoel converts that
file and, on the same speech, must give NeMo's codes exactly, NeMo's offline decode within 1e-5 (max abs),
and the same within 1e-5 when decoding frame by frame through its streaming decoder. The other module
variants the converter accepts (causal encoder, non-causal decoder, single FSQ, snake / elu, tanh, reflect
padding) are checked the same way in miniature, and the committed goldens are checked to be reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("nemo.collections.tts.modules.audio_codec_modules")

from codec import NanoCodec  # noqa: E402
from codec.fsq import FiniteScalarQuantizer  # noqa: E402
from tests.nemo_reference import NemoReference, code_spread, fsq_boundary_inputs  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nemo"
RELEASED = [
    "nemo-nano-codec-22khz-0.6kbps-12.5fps",
    "nemo-nano-codec-22khz-1.78kbps-12.5fps",
    "nemo-nano-codec-22khz-1.89kbps-21.5fps",
]
TOL = 1e-5


def speech(seconds: float, start: float = 0.0) -> torch.Tensor:
    """The golden's espeak-ng speech, float [1, T] (T not a multiple of the hop: the padding path is exercised)."""
    audio = np.load(FIXTURES / "audio.npy")[int(start * 22050) : int((start + seconds) * 22050)]
    return torch.from_numpy(audio.astype(np.float32) / 32768)[None]


def training_only_modules(config: dict) -> dict[str, torch.Tensor]:
    from nemo.collections.tts.losses.audio_codec_loss import MultiResolutionMelLoss
    from nemo.collections.tts.modules.audio_codec_modules import MultiPeriodDiscriminator

    disc = MultiPeriodDiscriminator(periods=[2, 3])
    mel = MultiResolutionMelLoss(sample_rate=config["sample_rate"], resolutions=[[64, 16, 64]], mel_dims=[10])
    return {**{f"discriminator.{k}": v for k, v in disc.state_dict().items()},
            **{f"mel_loss_fn.{k}": v for k, v in mel.state_dict().items()}}  # fmt: skip


def compare(ref: NemoReference, path: Path, audio: torch.Tensor, stream: bool = True) -> dict[str, float]:
    """Convert `path` with nanokoel and compare with NeMo on `audio`; returns the measured errors."""
    codes_nemo = ref.encode(audio)  # (1, K, F)
    wav_nemo = ref.decode(codes_nemo)  # (1, F * hop)
    model = NanoCodec.from_nemo(path)
    codes = model.encode(audio)
    assert torch.equal(codes, codes_nemo), f"{(codes != codes_nemo).sum()} of {codes.numel()} codes differ"
    assert code_spread(codes) > 0.5  # the codes vary: the comparison could have failed
    offline = model.decode(codes_nemo)
    result = {"frames": codes.shape[-1], "spread": code_spread(codes), "offline": (offline - wav_nemo).abs().max()}
    assert offline.shape == wav_nemo.shape and result["offline"] <= TOL
    if stream:
        with model.streaming(batch_size=1):
            chunks = [model.decode(codes_nemo[:, :, i : i + 1]) for i in range(codes_nemo.shape[-1])]
        result["streaming"] = (torch.cat(chunks, dim=-1) - wav_nemo).abs().max()
        assert result["streaming"] <= TOL
    assert wav_nemo.std() > 0.05  # NeMo's output is a signal, not silence or a clamped square wave
    return {k: float(v) for k, v in result.items()}


@pytest.mark.parametrize("name", RELEASED)
def test_released_configuration_matches_nemo(name, tmp_path):
    config = yaml.safe_load((FIXTURES / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
    audio = speech(1.0)
    ref = NemoReference.from_config(config, seed=1, audio=audio)
    path = ref.save_nemo(tmp_path / f"{name}.nemo", extra=training_only_modules(config))
    result = compare(ref, path, audio)
    print(f"\n{name}: codes identical ({result['frames']:.0f} frames, spread {result['spread']:.2f}); max abs error "
          f"offline {result['offline']:.2e}, streaming frame by frame {result['streaming']:.2e}")  # fmt: skip


@pytest.mark.parametrize("levels", [[8, 7, 6, 6], [9, 8, 8, 7], [5, 5, 4, 3]])
def test_fsq_matches_nemo_at_every_rounding_boundary_and_code(levels):
    from nemo.collections.tts.modules.audio_codec_modules import FiniteScalarQuantizer as NemoFSQ

    x, expected = fsq_boundary_inputs(levels)  # (N, D), NeMo's indices (N,)
    ours = FiniteScalarQuantizer(levels)
    codes, indices = ours(x[:, :, None])
    assert torch.equal(indices[:, 0].long(), expected)
    nemo_codes, _ = NemoFSQ(num_levels=levels)(inputs=x[:, :, None], input_len=None)
    assert torch.equal(codes, nemo_codes)  # the dequantized values too, bit for bit
    every = torch.arange(ours.codebook_size)
    nemo_decoded = NemoFSQ(num_levels=levels).decode(indices=every[None, None], input_len=None)  # (1, D, N)
    assert torch.equal(ours.indices_to_codes(every[None]), nemo_decoded)


def _tiny(encoder: dict, quantizer: dict, decoder: dict) -> dict:
    prefix = "nemo.collections.tts.modules.audio_codec_modules."
    enc = {"_target_": prefix + encoder.pop("cls"), "down_sample_rates": [2, 3], "base_channels": 4, **encoder}
    dec = {"_target_": prefix + decoder.pop("cls"), "up_sample_rates": [3, 2], "base_channels": 16, **decoder}
    vq = {"_target_": prefix + quantizer.pop("cls"), **quantizer}
    return {"sample_rate": 22050, "samples_per_frame": 6, "audio_encoder": enc, "vector_quantizer": vq,
            "audio_decoder": dec}  # fmt: skip


VARIANTS = {
    "causal-encoder": _tiny(
        {"cls": "CausalHiFiGANEncoder", "encoded_dim": 8},
        {"cls": "GroupFiniteScalarQuantizer", "num_groups": 2, "num_levels_per_group": [8, 7, 6, 6]},
        {"cls": "CausalHiFiGANDecoder", "input_dim": 8, "activation": "half_snake", "output_activation": "clamp"},
    ),
    "non-causal-decoder": _tiny(
        {"cls": "HiFiGANEncoder", "encoded_dim": 8, "activation": "elu", "pad_mode": "reflect"},
        {"cls": "GroupFiniteScalarQuantizer", "num_groups": 2, "num_levels_per_group": [5, 5, 4, 3], "eps": 0.01},
        {"cls": "HiFiGANDecoder", "input_dim": 8, "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [1, 2]},
    ),
    "single-fsq-snake": _tiny(
        {"cls": "HiFiGANEncoder", "encoded_dim": 4, "pad_mode": "replicate"},
        {"cls": "FiniteScalarQuantizer", "num_levels": [9, 8, 8, 7]},
        {"cls": "CausalHiFiGANDecoder", "input_dim": 4, "activation": "snake", "output_activation": "tanh",
         "n_groups_equal_to_out_channels": False},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_module_variants_match_nemo(name, tmp_path):
    config = json.loads(json.dumps(VARIANTS[name]))
    audio = speech(0.25, start=0.6)  # inside the sentence: little silence
    ref = NemoReference.from_config(config, seed=2, audio=audio)
    result = compare(ref, ref.save_nemo(tmp_path / "v.nemo"), audio, stream=not name.startswith("non-causal"))
    print(f"\n{name}: codes identical; max abs errors {result}")


def test_committed_goldens_are_reproducible(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_nemo_golden", FIXTURES.parents[2] / "scripts" /
                                                  "make_nemo_golden.py")  # fmt: skip
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--out", str(tmp_path)]) == 0
    if not np.array_equal(np.load(tmp_path / "audio.npy"), np.load(FIXTURES / "audio.npy")):
        pytest.skip("this espeak-ng renders the golden sentence differently (the weights are calibrated on it)")
    assert np.array_equal(np.load(tmp_path / "codes.npy"), np.load(FIXTURES / "codes.npy"))
    assert np.abs(np.load(tmp_path / "decoded.npy") - np.load(FIXTURES / "decoded.npy")).max() <= 1e-6
