"""Loading NVIDIA NeMo `.nemo` codec checkpoints without NeMo (codec/nemo.py, codec/nemo_archive.py).

The goldens in tests/fixtures/nemo/ were made by NeMo itself (scripts/make_nemo_golden.py: NeMo's encoder, FSQ
and causal decoder with random weights, its .nemo writer, its encode/decode): converting tiny.nemo must give
NeMo's codes exactly and NeMo's decoded audio within 1e-5, offline and frame by frame. Then every way a file can
be bad (not a tar, traversal paths, links, missing members, pickled objects, missing / unexpected / misshapen
tensors, configs nanokoel cannot represent) must give one clear error. Full-size comparisons against NeMo
(the three released configurations) are tests/test_nemo_reference.py, run where NeMo is installed.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from codec import CodecError, NanoCodec
from codec.__main__ import main as cli_main
from codec.fsq import GroupFiniteScalarQuantizer
from codec.nemo import NemoError, codec_config_from_nemo, load_nemo
from codec.nemo_archive import read_nemo_archive

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nemo"
GOLDEN = FIXTURES / "tiny.nemo"
CONFIGS = FIXTURES / "configs"


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    archive = read_nemo_archive(GOLDEN)
    audio = torch.from_numpy(np.load(FIXTURES / "audio.npy").astype(np.float32) / 32768)[None]  # (1, T)
    codes = torch.from_numpy(np.load(FIXTURES / "codes.npy").astype(np.int64))[None]  # (1, K, F)
    decoded = torch.from_numpy(np.load(FIXTURES / "decoded.npy"))[None]  # (1, F * hop)
    return {"config": archive.config, "state": archive.state, "audio": audio, "codes": codes, "decoded": decoded}


def write_nemo(
    path: Path,
    config: dict[str, Any] | str,
    state: dict[str, torch.Tensor] | None,
    members: tuple[tuple[str, bytes], ...] = (),
    prefix: str = "./",
    compress: bool = False,
) -> Path:
    """A .nemo in NeMo's layout (tar of ./model_config.yaml + ./model_weights.ckpt), plus any extra members."""
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    files = [(prefix + "model_config.yaml", text.encode())]
    if state is not None:
        buf = io.BytesIO()
        torch.save(state, buf)
        files.append((prefix + "model_weights.ckpt", buf.getvalue()))
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in [*members, *files]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_matches_golden(model: NanoCodec, golden: dict[str, Any], atol: float = 1e-5) -> None:
    assert torch.equal(model.encode(golden["audio"]), golden["codes"])
    assert (model.decode(golden["codes"]) - golden["decoded"]).abs().max() <= atol


# ---- the golden: NeMo's own numbers --------------------------------------------------------------------------


def test_golden_codes_offline_and_streaming_decode_match_nemo(golden):
    model = NanoCodec.from_nemo(GOLDEN)
    codes = model.encode(golden["audio"])
    assert torch.equal(codes, golden["codes"])  # identical tokens
    spread = (codes[0] != torch.mode(codes[0], dim=1).values[:, None]).float().mean()
    assert spread > 0.5  # the comparison means something: codes vary over frames and levels
    offline = model.decode(golden["codes"])
    assert offline.shape == golden["decoded"].shape
    assert (offline - golden["decoded"]).abs().max() <= 1e-5
    assert golden["decoded"].std() > 0.1 and (golden["decoded"].abs() >= 1).float().mean() < 0.01  # not clamped flat
    with model.streaming(batch_size=1):
        chunks = [model.decode(golden["codes"][:, :, i : i + 1]) for i in range(golden["codes"].shape[-1])]
    assert all(c.shape[-1] == model.samples_per_frame for c in chunks)
    assert (torch.cat(chunks, dim=-1) - golden["decoded"]).abs().max() <= 1e-5


def test_geometry_is_read_from_the_checkpoint_config():
    result = load_nemo(GOLDEN)
    cfg = result.model.cfg
    assert (cfg.sample_rate, cfg.samples_per_frame, cfg.frame_rate) == (22050, 1764, 12.5)
    assert cfg.encoder.down_sample_rates == [2, 3, 6, 7, 7] and cfg.decoder.up_sample_rates == [7, 7, 6, 3, 2]
    assert (cfg.encoder.base_channels, cfg.decoder.base_channels, cfg.latent_dim) == (2, 64, 12)
    assert (cfg.encoder.in_kernel_size, cfg.encoder.out_kernel_size, cfg.decoder.in_kernel_size) == (5, 3, 5)
    assert cfg.encoder.resblock_kernel_sizes == [3, 5] and cfg.decoder.resblock_dilation_sizes == [1, 3]
    assert (cfg.encoder.pad_mode, cfg.encoder.causal, cfg.decoder.causal, cfg.decoder.grouped_upsample) == (
        "replicate", False, True, True
    )  # fmt: skip
    assert (cfg.quantizer.num_groups, cfg.quantizer.num_levels_per_group) == (3, [8, 7, 6, 6])
    assert result.ignored == {"mel_loss_fn": 4} and result.weight_norm == "parametrizations"
    assert not result.model.training


@pytest.mark.parametrize("levels", [[8, 7, 6, 6], [9, 8, 8, 7]])
def test_fsq_indices_match_nemo_at_its_rounding_boundaries(levels):
    """Latents within 2e-5 of NeMo's rounding boundaries: `tan` vs `atanh`, `1 - eps` vs `1 + eps` would show."""
    data = np.load(FIXTURES / "fsq_boundaries.npz")
    name = "_".join(map(str, levels))
    x, expected = torch.from_numpy(data[f"x_{name}"]), torch.from_numpy(data[f"indices_{name}"]).long()  # (N, D)
    fsq = GroupFiniteScalarQuantizer(num_groups=1, num_levels_per_group=levels)
    indices = fsq.encode(x[:, :, None])  # (N, 1, 1)
    assert torch.equal(indices[:, 0, 0], expected)
    assert len(expected.unique()) > len(expected) // 2  # both sides of every boundary are there


@pytest.mark.parametrize(
    "name, fps, codebooks, size, kbps",
    [
        ("nemo-nano-codec-22khz-0.6kbps-12.5fps", 12.5, 4, 4032, 0.6),
        ("nemo-nano-codec-22khz-1.78kbps-12.5fps", 12.5, 13, 2016, 1.78),
        ("nemo-nano-codec-22khz-1.89kbps-21.5fps", 22050 / 1024, 8, 2016, 1.89),
    ],
)
def test_released_configs_map_to_their_published_geometry(name, fps, codebooks, size, kbps):
    cfg = codec_config_from_nemo(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()), name)
    assert cfg.frame_rate == pytest.approx(fps) and cfg.quantizer.num_groups == codebooks
    assert cfg.quantizer.codebook_size == size and round(cfg.bitrate / 1000, 2) == pytest.approx(kbps, abs=0.01)
    assert (cfg.encoder.base_channels, cfg.decoder.base_channels, cfg.decoder.activation) == (24, 864, "half_snake")
    assert cfg.encoder.resblock_kernel_sizes == [3, 7, 11] and cfg.decoder.resblock_dilation_sizes == [1, 3, 5]


def test_convert_cli_writes_a_checkpoint_that_from_pretrained_loads(golden, tmp_path, capsys):
    out = tmp_path / "converted"
    assert cli_main(["convert-nemo", str(GOLDEN), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12.5 frames/s" in printed and "3 codebooks x 2016" in printed and "mel_loss_fn 4" in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["decoder"]["base_channels"] == 64
    model = NanoCodec.from_pretrained(out)
    assert_matches_golden(model, golden)
    # and the converted folder works with the codec's own CLI
    np.save(tmp_path / "codes.npy", golden["codes"][0].numpy().astype(np.int16))
    assert cli_main(["decode", str(tmp_path / "codes.npy"), str(tmp_path / "out.wav"), "--model", str(out)]) == 0


def test_convert_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(b"not a tar at all" * 64)
    assert cli_main(["convert-nemo", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a .nemo file" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ---- weight-norm forms and archive variants ----------------------------------------------------------------


def test_weight_g_weight_v_and_folded_forms_load_to_the_same_model(golden, tmp_path):
    old = {k.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v"): v for k, v in golden["state"].items()}  # fmt: skip
    assert any(k.endswith(".weight_g") for k in old)  # torch.nn.utils.weight_norm's (legacy) names
    result = load_nemo(write_nemo(tmp_path / "legacy.nemo", golden["config"], old))
    assert result.weight_norm == "weight_g/weight_v"
    assert_matches_golden(result.model, golden)

    folded_model = NanoCodec.from_nemo(GOLDEN, fold_weight_norm=True)
    assert not folded_model.has_weight_norm
    folded = {k: v for k, v in folded_model.state_dict().items()}  # NeMo names, plain `.conv.weight`
    result = load_nemo(write_nemo(tmp_path / "folded.nemo", golden["config"], folded))
    assert result.weight_norm == "folded" and not result.model.has_weight_norm
    assert_matches_golden(result.model, golden)

    mixed = dict(golden["state"])
    key = next(k for k in mixed if k.endswith(".original1"))
    mixed[key.replace(".parametrizations.weight.original1", ".weight_v")] = mixed.pop(key)
    with pytest.raises(NemoError, match="mixed forms"):
        load_nemo(write_nemo(tmp_path / "mixed.nemo", golden["config"], mixed))


def test_gzip_archives_without_dot_prefix_and_lightning_state_dicts_load(golden, tmp_path):
    path = write_nemo(tmp_path / "old.nemo", golden["config"], golden["state"], prefix="", compress=True)
    assert_matches_golden(NanoCodec.from_nemo(path), golden)
    path = write_nemo(tmp_path / "pl.nemo", golden["config"], {"state_dict": golden["state"], "epoch": 3})
    assert_matches_golden(NanoCodec.from_nemo(path), golden)


def test_training_only_tensors_are_dropped_and_reported(golden, tmp_path):
    state = {**golden["state"], "discriminator.discriminators.0.conv.bias": torch.zeros(4)}
    state["speaker_encoder.fc.weight"] = torch.zeros(2, 2)
    result = load_nemo(write_nemo(tmp_path / "d.nemo", golden["config"], state))
    assert result.ignored == {"discriminator": 1, "mel_loss_fn": 4, "speaker_encoder": 1}
    assert_matches_golden(result.model, golden)


def test_plain_interpolations_resolve_and_others_are_refused(golden, tmp_path):
    config = {**golden["config"], "encoder_out_dim": 12, "rates": {"up": [7, 7, 6, 3, 2]}}
    config["audio_encoder"] = {**config["audio_encoder"], "encoded_dim": "${encoder_out_dim}"}
    config["audio_decoder"] = {**config["audio_decoder"], "up_sample_rates": "${rates.up}"}
    assert_matches_golden(load_nemo(write_nemo(tmp_path / "i.nemo", config, golden["state"])).model, golden)
    config["audio_decoder"] = {**config["audio_decoder"], "input_dim": "${oc.env:HOME}"}
    with pytest.raises(NemoError, match=r"audio_decoder\.input_dim .*interpolation"):
        load_nemo(write_nemo(tmp_path / "j.nemo", config, golden["state"]))


# ---- hub ids ---------------------------------------------------------------------------------------------


def test_hub_id_resolves_from_the_local_cache_offline(golden, tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--nvidia--nemo-nano-codec-test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(GOLDEN, repo / "snapshots" / commit / "nemo-nano-codec-test.nemo")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_matches_golden(NanoCodec.from_nemo("nvidia/nemo-nano-codec-test"), golden)
    with pytest.raises(NemoError, match="fetching it as a Hugging Face hub id failed"):
        NanoCodec.from_nemo("nvidia/not-in-the-cache")
    with pytest.raises(NemoError, match="no such .nemo file"):
        NanoCodec.from_nemo(tmp_path / "missing.nemo")


# ---- bad files: one clear error each ------------------------------------------------------------------------


def test_not_a_tar_and_truncated_archives(tmp_path):
    (tmp_path / "a.nemo").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(NemoError, match="not a .nemo file"):
        load_nemo(tmp_path / "a.nemo")
    data = GOLDEN.read_bytes()
    (tmp_path / "t.nemo").write_bytes(data[: len(data) // 2])
    with pytest.raises(NemoError, match="t.nemo"):
        load_nemo(tmp_path / "t.nemo")
    gz = tmp_path / "g.nemo"
    gz.write_bytes(gzip.compress(b"plain text, gzip but not tar"))
    with pytest.raises(NemoError, match="not a .nemo file"):
        load_nemo(gz)


@pytest.mark.parametrize("name", ["../escaped.txt", "/tmp/nanokoel-absolute.txt", "./a/../../escaped.txt"])
def test_traversal_paths_refuse_the_whole_file(golden, tmp_path, name):
    inner = tmp_path / "inner"
    inner.mkdir()
    path = write_nemo(inner / "evil.nemo", golden["config"], golden["state"], members=((name, b"pwned"),))
    with pytest.raises(NemoError, match="unsafe member path"):
        load_nemo(path)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/nanokoel-absolute.txt").exists()


def test_links_and_duplicates_in_place_of_the_members_are_refused(golden, tmp_path):
    path = tmp_path / "link.nemo"
    with tarfile.open(path, "w") as tar:
        text = yaml.safe_dump(golden["config"]).encode()
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        link = tarfile.TarInfo("./model_weights.ckpt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(NemoError, match="link or special file"):
        load_nemo(path)
    dup = write_nemo(tmp_path / "dup.nemo", golden["config"], golden["state"], members=(("model_config.yaml", b"x"),))
    with pytest.raises(NemoError, match="model_config.yaml twice"):
        load_nemo(dup)


def test_missing_members_and_size_caps(golden, tmp_path, monkeypatch):
    with pytest.raises(NemoError, match="no model_weights.ckpt"):
        load_nemo(write_nemo(tmp_path / "m.nemo", golden["config"], None))
    nested = write_nemo(tmp_path / "n.nemo", golden["config"], golden["state"], prefix="./mp_rank_00/")
    with pytest.raises(NemoError, match="no model_config.yaml or model_weights.ckpt at the top"):
        load_nemo(nested)
    monkeypatch.setattr("codec.nemo_archive.MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(NemoError, match="model_weights.ckpt is .* bytes, over the 1000-byte cap"):
        load_nemo(GOLDEN)


class _Payload:
    """Unpickling this would create a file: proof that the loader never unpickles arbitrary objects."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_never_unpickled(golden, tmp_path):
    marker = tmp_path / "unpickled"
    state = {**golden["state"], "audio_decoder.extra": _Payload(marker)}
    with pytest.raises(NemoError, match="weights_only"):
        load_nemo(write_nemo(tmp_path / "p.nemo", golden["config"], state))
    assert not marker.exists()
    with pytest.raises(NemoError, match="not a state dict"):
        load_nemo(write_nemo(tmp_path / "l.nemo", golden["config"], [torch.zeros(1)]))  # type: ignore[arg-type]


def test_missing_unexpected_and_misshapen_tensors_are_listed(golden, tmp_path):
    state = dict(golden["state"])
    gone = [k for k in state if k.startswith("audio_decoder.res_layers.1.")][:3]
    for k in gone:
        del state[k]
    state["semantic_codec.encoder.weight"] = torch.zeros(1)
    bias = "audio_encoder.pre_conv.conv.bias"
    state[bias] = torch.zeros(state[bias].numel() + 1)
    with pytest.raises(NemoError) as err:
        load_nemo(write_nemo(tmp_path / "k.nemo", golden["config"], state))
    message = str(err.value)
    assert all(k in message for k in gone) and "unexpected keys semantic_codec.encoder.weight" in message
    assert f"wrong shapes (file vs config) {bias}: (3,) vs (2,)" in message
    assert isinstance(err.value, CodecError)  # callers that catch CodecError (CLI, tokenizer, app) see it


def test_fsq_buffers_must_agree_with_the_config(golden, tmp_path):
    state = dict(golden["state"])
    state["vector_quantizer.fsqs.1.num_levels"] = torch.tensor([8, 7, 6, 5], dtype=torch.int32).view(1, 4, 1)
    with pytest.raises(NemoError, match=r"vector_quantizer\.fsqs\.1\.num_levels = \[8, 7, 6, 5\] disagrees"):
        load_nemo(write_nemo(tmp_path / "f.nemo", golden["config"], state))


def _edit(config: dict[str, Any], section: str | None, **fields: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    target = config if section is None else config[section]
    for k, v in fields.items():
        if v is None:
            target.pop(k)
        else:
            target[k] = v
    return config


@pytest.mark.parametrize(
    "section, fields, message",
    [
        ("audio_decoder", {"activation": "gelu"}, r"audio_decoder\.activation = 'gelu' cannot be represented"),
        ("audio_decoder", {"_target_": "nemo.collections.tts.modules.audio_codec_modules.ResNetDecoder"},
         r"audio_decoder\._target_ = .*ResNetDecoder.* cannot be represented"),
        ("audio_encoder", {"use_weight_norm": False}, r"audio_encoder\.use_weight_norm is a field nanokoel does not"),
        ("audio_encoder", {"pad_mode": "symmetric"}, r"audio_encoder\.pad_mode = 'symmetric' cannot be represented"),
        ("audio_encoder", {"encoded_dim": 16}, r"audio_encoder\.encoded_dim = 16 but the quantizer quantizes"),
        ("audio_decoder", {"base_channels": 48}, r"audio_decoder\.base_channels = 48 is not divisible by 2\^5"),
        ("audio_decoder", {"up_sample_rates": [7, 7, 6, 3, 3]}, r"audio_decoder\.up_sample_rates .* does not undo"),
        ("audio_decoder", {"n_groups_equal_to_out_channels": "yes"}, r"n_groups_equal_to_out_channels = 'yes'"),
        ("vector_quantizer", {"_target_": "nemo.collections.tts.modules.audio_codec_modules.ResidualVectorQuantizer"},
         r"vector_quantizer\._target_ .* cannot be represented"),
        ("vector_quantizer", {"num_groups": 0}, r"vector_quantizer\.num_groups = 0 is not an integer >= 1"),
        (None, {"output_sample_rate": 44100}, r"output_sample_rate = 44100 differs from sample_rate"),
        (None, {"semantic_codec_path": "semantic.nemo"}, r"semantic_codec_path is set"),
        (None, {"samples_per_frame": 1024}, r"samples_per_frame = 1024 but the encoder downsamples by 1764"),
        (None, {"target": "nemo.collections.tts.models.FastPitchModel"}, r"target = .*FastPitchModel"),
        (None, {"vector_quantizer": None}, r"vector_quantizer is missing"),
        (None, {"audio_decoder": None}, r"`audio_decoder` missing"),
    ],
)  # fmt: skip
def test_unsupported_configs_are_refused_by_field_name(golden, tmp_path, section, fields, message):
    config = _edit(golden["config"], section, **fields)
    with pytest.raises(NemoError, match=message):
        load_nemo(write_nemo(tmp_path / "c.nemo", config, golden["state"]))


def test_bad_yaml_is_refused(golden, tmp_path):
    with pytest.raises(NemoError, match="not valid YAML"):
        load_nemo(write_nemo(tmp_path / "y.nemo", "a: [unclosed", golden["state"]))
    with pytest.raises(NemoError, match="not a mapping"):
        load_nemo(write_nemo(tmp_path / "z.nemo", "- just\n- a list\n", golden["state"]))
    with pytest.raises(NemoError, match="not valid YAML"):  # safe_load: no arbitrary Python objects
        load_nemo(write_nemo(tmp_path / "o.nemo", "x: !!python/object/apply:os.getcwd []\n", golden["state"]))
