"""Debian speech synthesizers as voices: text -> float32 mono waveform, for the embedded corpus.

    spec = VoiceSpec(engine="flite", name="rms", voice="rms", pitch_cents=-250, tempo=0.95)
    spec.speaker                                   # "flite-rms-p-250-t0.95" (a speaker identity)
    wavs = synthesize(spec, ["Hello there.", ...])  # list of (float32 [T], sample_rate)

Engines (all offline, Debian packages): espeak-ng (formant synthesis; accents x voice variants, e.g.
"en-gb-scotland+m3"; mbrola voices "mb-us1" only when mbrola is installed), flite (rms, slt, awb, kal16),
festival in batch mode (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts): one festival process renders a
whole batch. sox `pitch`/`tempo` turn one voice into several speaker identities. Speed of synthesis alone
on this shared 2-vCPU machine (`python -m data.corpus --bench`, x real time, one process): espeak-ng ~220x,
flite rms/slt/awb 55-80x and kal16 ~600x, festival diphone voices ~70x, festival slt HTS ~25x.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

ENGINES = ("espeak-ng", "flite", "festival")
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
MBROLA_DIR = Path("/usr/share/mbrola")
TIMEOUT_S = 120


class SynthesisError(RuntimeError):
    """A synthesizer that is missing or failed; the message names the engine, voice and what to install."""


@dataclass
class VoiceSpec:
    """One speaker identity: an engine voice, optionally pitch-shifted (cents) and re-timed (tempo factor) by sox.

    `voice` names the underlying voice (the recorded person or espeak variant) shared by every identity made
    from it: flite kal16 and festival kal_diphone are both "kal"; en-us+m3 and en-gb+m3 are both "espeak-m3".
    """

    engine: str = "espeak-ng"
    name: str = "en-us"
    voice: str = ""
    pitch_cents: int = 0
    tempo: float = 1.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SynthesisError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if not self.voice:
            raise SynthesisError(f"{self.engine} voice {self.name!r}: set `voice`, the underlying voice it speaks with")
        if not 0.5 <= self.tempo <= 2.0 or abs(self.pitch_cents) > 1200:
            raise SynthesisError(f"{self.speaker}: tempo must be in [0.5, 2] and |pitch_cents| <= 1200")

    @property
    def speaker(self) -> str:
        engine = "espeak" if self.engine == "espeak-ng" else self.engine
        name = f"{engine}-{self.name.replace('+', '-')}"
        if self.pitch_cents:
            name += f"-p{self.pitch_cents:+d}"
        if self.tempo != 1.0:
            name += f"-t{self.tempo:g}"
        return name


# ---- availability ------------------------------------------------------------------------------------------


def _binary(engine: str) -> str:
    path = shutil.which(engine)
    if path is None:
        raise SynthesisError(f"{engine} is not installed; run `apt-get install espeak-ng flite festival sox`")
    return path


@cache
def _flite_voices() -> tuple[str, ...]:
    out = subprocess.run([_binary("flite"), "-lv"], capture_output=True, text=True, check=True).stdout
    return tuple(out.split(":", 1)[-1].split())


@cache
def _espeak_voices() -> tuple[str, ...]:
    """Language names and variant names (lower case) espeak-ng knows."""
    names = []
    for arg in ("--voices", "--voices=variant"):
        out = subprocess.run([_binary("espeak-ng"), arg], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 5:
                names += [cols[1].lower(), cols[4].split("/")[-1].lower()]
    return tuple(names)


def check_available(spec: VoiceSpec) -> None:
    """Raise SynthesisError naming the voice and the package to install when `spec` cannot be synthesised."""
    _binary(spec.engine)
    if spec.pitch_cents or spec.tempo != 1.0:
        _binary("sox")
    if spec.engine == "flite" and spec.name not in _flite_voices():
        raise SynthesisError(f"flite voice {spec.name!r} is not installed (`flite -lv` lists {_flite_voices()})")
    if spec.engine == "festival" and not list(FESTIVAL_VOICE_DIR.glob(f"*/{spec.name}")):
        raise SynthesisError(
            f"festival voice {spec.name!r} is not in {FESTIVAL_VOICE_DIR}/*/; install its package "
            "(`apt-cache search festvox`; kal, ked and slt: festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)"
        )
    if spec.engine == "espeak-ng":
        language, _, variant = spec.name.partition("+")
        if language.startswith("mb-"):
            db = MBROLA_DIR / language[3:] / language[3:]
            if shutil.which("mbrola") is None or not db.exists():
                raise SynthesisError(
                    f"espeak-ng voice {language!r} needs mbrola and {db}; they are in Debian contrib/non-free: "
                    f"`apt-get install mbrola mbrola-{language[3:]}` (or leave --mbrola off)"
                )
        for part in (language, variant):
            if part and part.lower() not in _espeak_voices():
                raise SynthesisError(f"espeak-ng has no voice or variant {part!r} (see `espeak-ng --voices`)")


# ---- synthesis ---------------------------------------------------------------------------------------------


def _run(cmd: list[str], spec: VoiceSpec, stdin: str | None = None) -> None:
    try:
        subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True, timeout=TIMEOUT_S)
    except subprocess.CalledProcessError as e:
        raise SynthesisError(f"{spec.speaker}: {Path(cmd[0]).name} failed ({e.stderr.strip()[-300:]})") from e
    except subprocess.TimeoutExpired as e:
        raise SynthesisError(f"{spec.speaker}: {Path(cmd[0]).name} timed out after {TIMEOUT_S} s") from e


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _engine_to_files(spec: VoiceSpec, texts: list[str], tmp: Path) -> list[Path]:
    """Run the engine; one wav per text in `tmp`."""
    paths = [tmp / f"{i}.wav" for i in range(len(texts))]
    if spec.engine == "espeak-ng":
        for text, path in zip(texts, paths, strict=True):
            _run([_binary("espeak-ng"), "-v", spec.name, "-w", str(path), "--stdin"], spec, stdin=text)
    elif spec.engine == "flite":
        for text, path in zip(texts, paths, strict=True):
            (tmp / "text.txt").write_text(text, encoding="utf-8")
            _run([_binary("flite"), "-voice", spec.name, "-f", str(tmp / "text.txt"), "-o", str(path)], spec)
    else:  # festival, batch mode: one process renders every text
        lines = [f"(voice_{spec.name})"]
        lines += [
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(t)})) {_scheme_string(str(p))} 'riff)"
            for t, p in zip(texts, paths, strict=True)
        ]
        (tmp / "batch.scm").write_text("\n".join(lines) + "\n", encoding="utf-8")
        _run([_binary("festival"), "--batch", str(tmp / "batch.scm")], spec)
    for path in paths:
        if not path.is_file() or path.stat().st_size <= 44:
            raise SynthesisError(f"{spec.speaker}: {spec.engine} wrote no audio for a text (see {path})")
    return paths


def synthesize(spec: VoiceSpec, texts: list[str]) -> list[tuple[np.ndarray, int]]:
    """Speak each text with `spec` (sox pitch/tempo applied); -> [(float32 mono [T], engine sample rate)]."""
    with tempfile.TemporaryDirectory(prefix="nanokoel-synth-") as tmp_dir:
        tmp = Path(tmp_dir)
        out = []
        for path in _engine_to_files(spec, texts, tmp):
            if spec.pitch_cents or spec.tempo != 1.0:
                shifted = path.with_suffix(".sox.wav")
                effects = ["pitch", str(spec.pitch_cents)] if spec.pitch_cents else []
                effects += ["tempo", "-s", f"{spec.tempo:g}"] if spec.tempo != 1.0 else []
                # -R: repeatable; float output: no dither noise, so a rerun gives the same samples
                _run(
                    [_binary("sox"), "-R", str(path), "-e", "floating-point", "-b", "32", str(shifted), *effects], spec
                )
                path = shifted
            wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
            out.append((wav.mean(axis=1), int(sr)))
        return out
