"""Real speech for tests, synthesised on the spot by the Debian synthesizers (espeak-ng, flite, festival).

    wav, sr = synthesize("Hello world.", tmp_path, engine="espeak-ng", voice="en-us")   # float32 [T], Hz

espeak-ng writes 22,050 Hz, flite and festival 16 kHz; pass `sample_rate` to resample. Tests skip cleanly when the
synthesizer binary is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codec.audio import load_audio

SENTENCE = "The quick brown fox jumps over the lazy dog."


def synthesize(
    text: str,
    out_dir: Path,
    engine: str = "espeak-ng",
    voice: str | None = None,
    sample_rate: int | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng (voice e.g. "en-us", "en-gb+f3"), flite (voice "slt", "rms", "awb", "kal")
    or festival's text2wave (voice "kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")."""
    binary = shutil.which(engine)
    if binary is None:
        pytest.skip(f"{engine} is not installed")
    path = Path(out_dir) / f"{name or engine + '_' + str(voice)}.wav"
    if engine == "espeak-ng":
        cmd = [binary, "-v", voice or "en-us", "-w", str(path), text]
    elif engine == "flite":
        cmd = [binary, "-voice", voice or "slt", "-t", text, "-o", str(path)]
    elif engine == "text2wave":  # festival
        cmd = [binary, "-eval", f"(voice_{voice or 'kal_diphone'})", "-o", str(path)]
    else:
        raise ValueError(f"unknown synthesizer {engine!r}; use espeak-ng, flite or text2wave (festival)")
    subprocess.run(cmd, check=True, capture_output=True, input=text.encode() if engine == "text2wave" else None)
    return load_audio(path, sample_rate=sample_rate)
