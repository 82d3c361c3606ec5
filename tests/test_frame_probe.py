"""evaluation.frame_probe: on a synthetic language where the text decides every frame, the probes find the text's
information, beside the previous frame too; codes as ids or as FSQ levels; the CLI and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.frame_probe import main, measure
from tests.test_lm import make_token_set
from tests.test_lm_reads_text import CODEBOOKS, CODES, PHONEME_IDS, speak, texts


def language_tokens(path, levels: bool):
    rng = np.random.default_rng(0)
    utterances = [
        (f"s{s}", split, "", PHONEME_IDS[t].tolist(), speak(t, s).tolist())
        for split, count in (("train", 150), ("validation", 20))
        for s in range(2)
        for t in texts(rng, count)
    ]
    tokens = make_token_set(path, CODEBOOKS, CODES, utterances=utterances)
    if levels:
        meta = json.loads((tokens / "meta.json").read_text())
        meta["codec_config"] = {"quantizer": {"num_levels_per_group": [4, 8]}}
        (tokens / "meta.json").write_text(json.dumps(meta))
    return tokens


@pytest.mark.parametrize("levels", [False, True], ids=["ids", "fsq-levels"])
def test_probes_find_what_the_text_tells_beside_the_previous_frame(tmp_path, levels):
    result = measure(str(language_tokens(tmp_path / "tokens", levels)), epochs=8, progress=False)
    ce = result["ce"]
    assert ce["nothing"] == pytest.approx(np.log(CODES), abs=0.3)  # codes near uniform
    # the text decides every frame: it is worth something alone (blurred by the uniform alignment) and beside the
    # previous frame (which tells the phoneme being said, not the next one). Measured: ids 0.96 / 0.89 nats per
    # code; as levels 0.29 / 0.32 (this language's codes are not FSQ-structured, so a product of per-level
    # softmaxes fits them less well); a probe that ignored the text would give ~0.
    assert result["text_alone"] > 0.2, ce
    assert result["previous_frame_alone"] > 0.5, ce
    assert result["text_beside_previous_frame"] > 0.2, ce


def test_cli_writes_json_and_names_a_missing_token_set(tmp_path, capsys):
    tokens = language_tokens(tmp_path / "tokens", levels=False)
    out = tmp_path / "probe.json"
    assert main(["--tokens", str(tokens), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| previous frame and text |" not in printed and "| both |" in printed and "text alone:" in printed
    assert set(json.loads(out.read_text())["ce"]) == {"nothing", "text", "previous_frame", "both"}
    assert main(["--tokens", str(tmp_path / "none")]) == 2
    assert "meta.json not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
