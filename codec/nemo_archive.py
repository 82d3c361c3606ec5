"""Reading NeMo `.nemo` checkpoints safely: a tar -> (model_config.yaml as a dict, model_weights.ckpt tensors).

    archive = read_nemo_archive("codec.nemo")       # NemoArchive(path, config: dict, state: {name: tensor})
    path = resolve_nemo_file("nvidia/nemo-nano-codec-22khz-1.78kbps-12.5fps")   # a local file, or the hub's

`.nemo` files come from the internet, so reading one trusts nothing in it:
  - the tar (plain or gzip) is scanned member by member (at most MAX_MEMBERS); a member path that is absolute
    or climbs out with `..` refuses the whole file;
  - only the two top-level members `model_config.yaml` and `model_weights.ckpt` are extracted, each a regular
    file (not a link), once, under a size cap, with tarfile's `filter="data"` into a private temp folder that is
    removed afterwards; nothing else in the archive is ever written;
  - the config is parsed with `yaml.safe_load` (no tags, no objects, no `${oc.env:...}` resolvers);
  - the weights load with `torch.load(weights_only=True)`: tensors, numbers, strings and containers only,
    never an arbitrary pickled object.
Each refusal is one `NemoError` naming the file and what is wrong. The conversion to NanoCodec is codec/nemo.py.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from codec.model import CodecError

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: NeMo configs are a few kB
MAX_WEIGHTS_BYTES = 8 << 30  # 8 GiB: the released files are 0.3-0.7 GB with their discriminators
MAX_MEMBERS = 10_000


class NemoError(CodecError):
    """A `.nemo` file that cannot be read safely or represented exactly; the message names the file and field."""


@dataclass
class NemoArchive:
    """What a `.nemo` file holds: its model config (plain dict) and its state dict (name -> tensor)."""

    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]


# ---- reading the archive -------------------------------------------------------------------------------------


def _member_key(path: Path, name: str) -> str:
    """The member's path without `.` parts; refuses absolute paths and `..` (path traversal)."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        raise NemoError(
            f"{path}: unsafe member path {name!r} in the archive (absolute or climbing out with '..'); "
            "refusing to read this file. Re-download it from its source"
        )
    return "/".join(p for p in pure.parts if p != ".")


def _find_members(path: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    found: dict[str, tarfile.TarInfo] = {}
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise NemoError(f"{path}: more than {MAX_MEMBERS} archive members; not a NeMo checkpoint")
        key = _member_key(path, member.name)
        if key not in (CONFIG_MEMBER, WEIGHTS_MEMBER):
            continue  # other artifacts (tokenizers, READMEs) are never extracted
        if key in found:
            raise NemoError(f"{path}: the archive holds {key} twice; refusing an ambiguous checkpoint")
        if not member.isfile():
            raise NemoError(f"{path}: {key} is a link or special file in the archive, not a regular file; refusing")
        cap = MAX_CONFIG_BYTES if key == CONFIG_MEMBER else MAX_WEIGHTS_BYTES
        if member.size > cap:
            raise NemoError(f"{path}: {key} is {member.size} bytes, over the {cap}-byte cap; refusing")
        found[key] = member
    missing = [k for k in (CONFIG_MEMBER, WEIGHTS_MEMBER) if k not in found]
    if missing:
        raise NemoError(
            f"{path}: no {' or '.join(missing)} at the top of the archive; a .nemo codec checkpoint holds "
            f"{CONFIG_MEMBER} and {WEIGHTS_MEMBER}"
        )
    return found


def read_nemo_archive(path: str | os.PathLike) -> NemoArchive:
    """Read `model_config.yaml` and `model_weights.ckpt` from a `.nemo` tar, safely (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise NemoError(f"{path}: no such .nemo file")
    if not hasattr(tarfile, "data_filter"):  # extraction filters: Python 3.10.12+ / 3.11.4+
        raise NemoError(f"{path}: reading .nemo files safely needs a Python with tarfile's filter='data'; upgrade")
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise NemoError(f"{path}: not a .nemo file (not a tar archive, plain or compressed: {_line(e)})") from e
    with tar, tempfile.TemporaryDirectory(prefix="nanokoel-nemo-") as tmp:
        try:
            members = _find_members(path, tar)
            for key, member in members.items():
                member.name = key  # extract flat into our private folder, whatever `./` prefix it had
                tar.extract(member, tmp, set_attrs=False, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise NemoError(f"{path}: corrupt or truncated archive ({_line(e)})") from e
        config = _read_config(path, Path(tmp) / CONFIG_MEMBER)
        state = _read_weights(path, Path(tmp) / WEIGHTS_MEMBER)
    return NemoArchive(path=path, config=config, state=state)


def _read_config(source: Path, file: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise NemoError(f"{source}: {CONFIG_MEMBER} is not valid YAML ({_line(e)})") from e
    if not isinstance(config, dict):
        raise NemoError(f"{source}: {CONFIG_MEMBER} is not a mapping of config fields")
    return config


def _read_weights(source: Path, file: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only: tensors, numbers, strings and containers only; any other pickled object is refused
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it pickles the Python object {refused.group(1)}" if refused else f"{type(e).__name__}: {_line(e)}"
        raise NemoError(
            f"{source}: {WEIGHTS_MEMBER} is not a plain tensor state dict that torch.load(weights_only=True) "
            f"accepts ({why}); refusing to unpickle it"
        ) from e
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]  # a Lightning checkpoint rather than NeMo's bare state dict
    if not isinstance(loaded, Mapping):
        raise NemoError(f"{source}: {WEIGHTS_MEMBER} holds a {type(loaded).__name__}, not a state dict")
    bad = [str(k) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise NemoError(f"{source}: {WEIGHTS_MEMBER} has entries that are not named tensors: {_few(bad)}")
    return dict(loaded)


# ---- files and hub ids -------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_nemo_file(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local `.nemo` file as is; otherwise a hub id's `.nemo` file (huggingface_hub: the cache when offline)."""
    path = Path(path_or_hub_id)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.nemo"))
        if len(found) == 1:
            return found[0]
        raise NemoError(f"{path}: a folder with {len(found)} .nemo files; pass the .nemo file itself")
    name = str(path_or_hub_id)
    if name.endswith(".nemo") or not _HUB_ID.match(name):
        raise NemoError(f"{path}: no such .nemo file")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError

        try:  # NVIDIA names the file after the repository
            return Path(hf_hub_download(name, f"{name.split('/')[-1]}.nemo", revision=revision))
        except EntryNotFoundError:
            from huggingface_hub import list_repo_files

            files = [f for f in list_repo_files(name, revision=revision) if f.endswith(".nemo")]
            if len(files) != 1:
                raise NemoError(f"{name}: the hub repository holds {len(files)} .nemo files, expected one") from None
            return Path(hf_hub_download(name, files[0], revision=revision))
    except NemoError:
        raise
    except Exception as e:
        raise NemoError(
            f"{name}: not a local .nemo file, and fetching it as a Hugging Face hub id failed "
            f"({type(e).__name__}: {_line(e)}); check the path, or go online once to fill the cache"
        ) from e


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _line(e: BaseException) -> str:
    """An exception's message on one line (errors here are one line: the CLI prints them as such)."""
    lines = [part.strip() for part in str(e).splitlines() if part.strip()]
    return lines[0] if lines else type(e).__name__
