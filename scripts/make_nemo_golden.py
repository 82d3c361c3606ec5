"""Regenerate the NeMo golden fixtures in tests/fixtures/nemo/ (checked by tests/test_nemo.py without NeMo).

    tiny.nemo      a small random NeMo-layout checkpoint (NeMo's own HiFiGANEncoder, GroupFiniteScalarQuantizer,
                   CausalHiFiGANDecoder built from configs/tiny-golden-12.5fps.yaml, written by NeMo's
                   SaveRestoreConnector; NeMo's key names; plus a real `mel_loss_fn.*` loss module's buffers,
                   the training-only kind of tensor a released file also carries)
    audio.npy      int16 [T], 3 s of espeak-ng speech at 22,050 Hz (float audio = int16 / 32768)
    codes.npy      int16 [K, F], NeMo's codes for that audio (AudioCodecModel.encode's steps)
    decoded.npy    float32 [F * 1764], NeMo's offline decode of those codes (AudioCodecModel.decode's steps)
    fsq_boundaries.npz   for levels [8, 7, 6, 6] and [9, 8, 8, 7]: latents x_<levels> float32 [N, D] placed at
                   NeMo's FSQ rounding boundaries (20 steps of 1e-6 either side) and NeMo's indices_<levels> int32 [N]
    meta.json      provenance: NeMo / torch versions, seed, text, shapes

NeMo is NOT a dependency of nanokoel; run this in a separate virtualenv (never .venv):

    python3 -m venv /tmp/nemo-venv
    /tmp/nemo-venv/bin/pip install torch==2.13.0
    /tmp/nemo-venv/bin/pip install -c <(echo torch==2.13.0) "nemo-toolkit[tts]==3.0.0" pytest
    /tmp/nemo-venv/bin/python scripts/make_nemo_golden.py            # from the repository root (needs espeak-ng)

The same venv runs the full reference comparison: `/tmp/nemo-venv/bin/python -m pytest -q
tests/test_nemo_reference.py`. Regenerating changes the goldens (new random weights only if --seed changes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "nemo"
CONFIG = FIXTURES / "configs" / "tiny-golden-12.5fps.yaml"
TEXT = "Codecs turn speech into tokens. A causal decoder streams them back, one frame at a time."
SECONDS = 3.0
FSQ_LEVELS = ([8, 7, 6, 6], [9, 8, 8, 7])


def speech(text: str, sample_rate: int = 22050) -> np.ndarray:
    """int16 [T] speech from espeak-ng (which writes 22,050 Hz mono 16-bit WAV)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            assert w.getframerate() == sample_rate and w.getnchannels() == 1 and w.getsampwidth() == 2
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    n = int(SECONDS * sample_rate)
    return np.pad(audio, (0, max(0, n - len(audio))))[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="random weights seed (default 0)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"output folder (default {FIXTURES})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    import nemo
    import yaml
    from nemo.collections.tts.losses.audio_codec_loss import MultiResolutionMelLoss

    from tests.nemo_reference import NemoReference, code_spread, fsq_boundary_inputs

    audio_i16 = speech(TEXT)
    audio = torch.from_numpy(audio_i16.astype(np.float32) / 32768)[None]  # (1, T)
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    ref = NemoReference.from_config(config, seed=args.seed, audio=audio)
    codes = ref.encode(audio)  # (1, K, F)
    decoded = ref.decode(codes)  # (1, F * hop)
    mel_loss = MultiResolutionMelLoss(
        sample_rate=config["sample_rate"], resolutions=config["loss_resolutions"], mel_dims=config["mel_loss_dims"]
    )
    extra = {f"mel_loss_fn.{k}": v for k, v in mel_loss.state_dict().items()}

    args.out.mkdir(parents=True, exist_ok=True)
    ref.save_nemo(args.out / "tiny.nemo", extra=extra)
    np.save(args.out / "audio.npy", audio_i16)
    np.save(args.out / "codes.npy", codes[0].numpy().astype(np.int16))
    np.save(args.out / "decoded.npy", decoded[0].numpy().astype(np.float32))
    boundaries = {}
    for levels in FSQ_LEVELS:
        x, indices = fsq_boundary_inputs(levels)
        name = "_".join(map(str, levels))
        boundaries[f"x_{name}"], boundaries[f"indices_{name}"] = x.numpy(), indices.numpy().astype(np.int32)
    np.savez(args.out / "fsq_boundaries.npz", **boundaries)
    meta = {
        "made_by": "scripts/make_nemo_golden.py",
        "nemo_version": nemo.__version__,
        "torch_version": torch.__version__,
        "seed": args.seed,
        "config": str(CONFIG.relative_to(REPO)),
        "text": TEXT,
        "audio": {"sample_rate": config["sample_rate"], "samples": len(audio_i16), "dtype": "int16"},
        "codes_shape": list(codes[0].shape),
        "decoded_samples": decoded.shape[-1],
        "code_spread": round(code_spread(codes), 4),
        "training_only_tensors": sorted(extra),
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = (args.out / "tiny.nemo").stat().st_size
    shape, spread = tuple(codes[0].shape), meta["code_spread"]
    print(f"wrote {args.out}: tiny.nemo {size / 1024:.0f} KiB, codes {shape}, spread {spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
