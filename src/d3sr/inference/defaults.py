"""The inference defaults, read from their one owner: conf/inference/default.yaml (`inference.*` in infer.yaml and
evaluate.yaml). InferenceOptions and tiling.Tiling take their field defaults from here, so that no value is written
twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONFIG_FILE = Path(__file__).resolve().parents[1] / "conf" / "inference" / "default.yaml"


def _load() -> dict[str, Any]:
    values = OmegaConf.to_container(OmegaConf.load(CONFIG_FILE))  # parsed as Hydra parses it
    if not isinstance(values, dict):
        raise RuntimeError(f"{CONFIG_FILE} must be a mapping of inference options; the installed package is damaged")
    return values


DEFAULTS: dict[str, Any] = _load()


def default(key: str) -> Any:
    """The shipped default of inference option `key`; a KeyError naming the file when the YAML lacks it."""
    try:
        return DEFAULTS[key]
    except KeyError:
        raise KeyError(f"inference.{key} has no default in {CONFIG_FILE}") from None
