"""Reading a run config: the operator hands the pod one of the contract's run configs
(`tauon_runtime.contract`) as a file (`--config PATH` or env `TAUON_RUN_CONFIG`) or inline
(env `TAUON_RUN_CONFIG_JSON`). Torch-free, like the contract.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tauon_runtime.contract import PrepareConfig, ServeConfig, TrainConfig
from tauon_runtime.contract.keys import ENV_CONFIG_JSON, ENV_CONFIG_PATH

__all__ = ["ConfigError", "PrepareConfig", "ServeConfig", "TrainConfig", "load_config"]

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """The run config is missing or invalid; the message names the field."""


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def load_config(kind_model: type[ConfigT], path: str | os.PathLike[str] | None = None) -> ConfigT:
    """Read a run config: `path`, else env TAUON_RUN_CONFIG (a file), else TAUON_RUN_CONFIG_JSON.

    Files may be JSON or YAML. Raises ConfigError naming each invalid field.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG_PATH) or None
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {origin}: {e.strerror}") from None
    elif os.environ.get(ENV_CONFIG_JSON):
        origin, text = f"${ENV_CONFIG_JSON}", os.environ[ENV_CONFIG_JSON]
    else:
        raise ConfigError(
            f"no run config: pass --config PATH or set {ENV_CONFIG_PATH} or {ENV_CONFIG_JSON}"
        )
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config {origin} is not valid JSON/YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {origin} must be a mapping, got {type(data).__name__}")
    try:
        return kind_model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid {kind_model.__name__} in {origin}:\n{_describe(e)}") from None
