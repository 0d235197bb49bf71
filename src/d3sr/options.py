"""Validation of option values, done once where a value enters: choices, bounds, dtypes and devices; and what
'auto' precision and memory format resolve to on this hardware.

Every check raises `ConfigError` naming the key, so a bad value ends in one clear line however it arrived
(a Hydra config, a command-line flag or a Python argument).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# CPU feature flags (/proc/cpuinfo) of the units that make bf16 matrix products fast, and of AVX-512.
BF16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16")
AVX512_FLAG = "avx512f"


@functools.cache
def cpu_units(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """Which of the bf16 matrix units (amx_bf16, avx512_bf16) and AVX-512 (avx512f) this CPU has.

    Read from the `flags` line of `cpuinfo` (Linux); where there is no such file, torch's CPU capability tells
    AVX-512 only (so no bf16 units are assumed).
    """
    wanted = {*BF16_MATRIX_FLAGS, AVX512_FLAG}
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    if text is not None:
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        return frozenset(wanted.intersection(flags))
    return frozenset({AVX512_FLAG} if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else ())


@dataclass(frozen=True)
class Choice:
    """A resolved setting and why (the reason shown when it was 'auto')."""

    value: Any
    reason: str = ""


def auto_precision(device: torch.device, units: frozenset[str] | None = None) -> Choice:
    """precision 'auto': bf16 on CUDA (fp32 on a GPU without bf16) and on CPUs with bf16 matrix units, else fp32."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Choice(torch.bfloat16, "CUDA")
        return Choice(torch.float32, "a CUDA device without bf16")
    units = cpu_units() if units is None else units
    if present := sorted(units.intersection(BF16_MATRIX_FLAGS)):
        return Choice(torch.bfloat16, f"bf16 matrix units on this CPU: {', '.join(present)}")
    return Choice(torch.float32, "no bf16 matrix units on this CPU")


def auto_channels_last(device: torch.device, units: frozenset[str] | None = None) -> Choice:
    """channels_last 'auto': on for CUDA and for CPUs with bf16 matrix units or AVX-512, off elsewhere."""
    if device.type == "cuda":
        return Choice(True, "CUDA")
    units = cpu_units() if units is None else units
    if present := sorted(units):
        return Choice(True, f"{', '.join(present)} on this CPU")
    return Choice(False, "no bf16 or AVX-512 units on this CPU")


def resolve_precision(precision: str, device: torch.device, key: str = "precision") -> torch.dtype:
    """Inference dtype for `precision` ('auto': see auto_precision) on `device`."""
    if precision == "auto":
        return auto_precision(device).value
    dtype = parse_dtype(precision, key)
    if dtype == torch.float16 and device.type == "cpu":
        raise ConfigError(f"{key}={precision} needs a CUDA device; use fp32 or bf16 on the CPU")
    return dtype


def resolve_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    """Whether to use the channels-last memory format: `channels_last`, or for 'auto' see auto_channels_last."""
    return auto_channels_last(device).value if channels_last == "auto" else bool(channels_last)
