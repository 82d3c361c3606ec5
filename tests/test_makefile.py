"""The Makefile's pipeline rules, read with `make -n` (what make would run, nothing is run)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def planned(*args: str) -> str:
    """The commands `make -n` prints for these targets and variables, run from the repository root."""
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


def codec_folder(path: Path, trained_here: bool) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "nanocodec"}))
    if trained_here:
        (path / "train_config.yaml").write_text("max_steps: 1\n")
    (path / "model.safetensors").write_bytes(b"")
    an_hour_ago = time.time() - 3600  # older than the corpus written next
    for f in path.iterdir():
        os.utime(f, (an_hour_ago, an_hour_ago))
    return path


def test_a_given_codec_folder_is_used_as_it_is_and_never_retrained(tmp_path):
    runs = tmp_path / "runs"
    manifest = runs / "data" / "cpu" / "manifest.jsonl"
    given = codec_folder(tmp_path / "converted", trained_here=False)
    ours = codec_folder(tmp_path / "ours", trained_here=True)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("")  # the corpus is newer than both codecs

    plan = planned("tokenize", f"RUNS={runs}", f"CODEC_DIR={given}", f"TOKENS_DIR={tmp_path / 'tokens'}")
    assert "codec.train" not in plan
    assert f"data.tokenize_corpus --codec {given}" in plan

    plan = planned("tokenize", f"RUNS={runs}", f"CODEC_DIR={ours}", f"TOKENS_DIR={tmp_path / 'tokens'}")
    assert f"codec.train configs/codec/cpu_12.5fps.yaml data.manifest={manifest} out_dir={ours}" in plan
