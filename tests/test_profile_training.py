"""evaluation.profile_training's command line: a model folder where a training config belongs is refused with a
message that names it, before any model is built."""

from __future__ import annotations

from pathlib import Path

from evaluation.profile_training import main

REPO = Path(__file__).resolve().parents[1]


def test_a_folder_instead_of_a_config_is_refused_by_name(tmp_path, capsys):
    folder = tmp_path / "codec_folder"
    folder.mkdir()
    assert main(["lm", str(REPO / "configs/lm/quick.yaml"), "--codec", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"--codec {folder} is not a YAML file" in err and "not a model folder" in err
    assert main(["codec", str(tmp_path / "missing.yaml")]) == 2
    assert "config " + str(tmp_path / "missing.yaml") in capsys.readouterr().err
