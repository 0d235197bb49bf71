"""Validation of option values, done once where a value enters: choices, bounds, dtypes and devices.

Every check raises `ConfigError` naming the key, so a bad value ends in one clear line however it arrived
(a Hydra config, a command-line flag or a Python argument).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from d3sr.errors import ConfigError

# The one table of dtype names accepted anywhere (configs, CLIs, the Python API).
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def check_choice(key: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ConfigError naming the key and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
    return value


def check_positive(key: str, value: float, *, allow_zero: bool = False) -> float:
    """Return `value` if it is > 0 (or >= 0 with allow_zero), else raise ConfigError naming the key."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")
    return value


def parse_dtype(name: str | torch.dtype, key: str = "dtype") -> torch.dtype:
    """Torch dtype for a name ('float32', 'fp32', 'bf16', 'bfloat16', 'fp16', ...) or a torch.dtype."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ConfigError(f"{key}={name} is not supported; choose float32, bfloat16 or float16")
        return name
    return DTYPES[check_choice(key, str(name).removeprefix("torch."), DTYPES)]


def resolve_device(device: str | torch.device = "auto", key: str = "device") -> torch.device:
    """The torch device for 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; ConfigError otherwise."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"{key}={device!r} is not valid; choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device} but no CUDA device is available; use {key}=cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device, key: str = "precision") -> torch.dtype:
    """Inference dtype for `precision` ('auto': bf16 on CUDA, fp32 on the CPU) on `device`."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = parse_dtype(precision, key)
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError(f"{key}={precision} needs a CUDA device; use fp32 or bf16 on the CPU")
    return dtype
