"""The config system: a dataclass is the schema, YAML holds values, the command line overrides them.

    cfg = load_config(TrainConfig, "configs/codec/cpu_12.5fps.yaml", ["optim.lr=1e-4", "max_steps=10"])

OmegaConf merges the YAML file and `key=value` overrides into a structured config built from the
dataclass, so an unknown key or a value of the wrong type is an error that names the key. The result is
a plain dataclass instance again (no OmegaConf objects leak into the code). `save_config` writes the
resolved values beside an artifact so the artifact can always be rebuilt.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.fileio import write_text_atomic

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema (the message names the key)."""


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = (getattr(err, "msg", None) or str(err)).splitlines()[0]
    return f"{msg} (key: {key})" if key else msg


def load_config(
    schema: type[T], path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Build a `schema` instance from defaults <- YAML file at `path` <- `key=value` overrides.

    Raises:
        FileNotFoundError: `path` does not exist.
        ConfigError: unknown key, wrong type, or malformed override, naming the key.
    """
    base = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # YAML syntax errors
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    if overrides:
        try:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as e:
            raise ConfigError(f"bad override: {_describe(e)}") from e
    try:
        merged = OmegaConf.merge(base, *layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"config error{where}: {_describe(e)}") from e


def config_from_dict(schema: type[T], values: dict[str, Any]) -> T:
    """Build a `schema` instance from a plain dict (e.g. a saved config.json), checking keys and types."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(values)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"config error: {_describe(e)}") from e


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain, JSON/YAML-serialisable dict."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (or JSON when `path` ends in .json), atomically."""
    path = Path(path)
    if path.suffix == ".json":
        import json

        write_text_atomic(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")
    else:
        write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


PRECISIONS = ("no", "fp16", "bf16")  # accelerate's mixed_precision values


def mixed_precision(key: str, value: str) -> str:
    """A config's mixed-precision setting as accelerate takes it: no, fp16 or bf16. YAML reads a bare `no` as false,
    which reaches a str field as "False": that means "no" too. Anything else raises ConfigError naming `key`."""
    value = "no" if str(value).lower() in ("false", "no") else str(value).lower()
    if value not in PRECISIONS:
        raise ConfigError(f"{key}={value!r}: use no, fp16 or bf16")
    return value
