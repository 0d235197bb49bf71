"""Config-level helpers shared by the entry points: OmegaConf resolvers, validation and the user-facing error."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import OmegaConf


class D3SRError(RuntimeError):
    """An error caused by the user's setup (missing weights, bad config value): shown as one message, exit code 2."""


def optimizer_steps(iterations: int, d_steps_per_g_step: int) -> int:
    """Number of optimizer steps Lightning counts for `iterations` generator updates (one per G and per D step)."""
    return int(iterations) * (1 + int(d_steps_per_g_step))


def register_resolvers() -> None:
    """Register `${optimizer_steps:...}` so configs derive `trainer.max_steps` from `iterations`."""
    if not OmegaConf.has_resolver("optimizer_steps"):
        OmegaConf.register_new_resolver("optimizer_steps", optimizer_steps)


def check_choice(key: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise ValueError naming the config key and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
    return value


def check_positive(key: str, value: float, *, allow_zero: bool = False) -> float:
    """Return `value` if it is > 0 (or >= 0 with allow_zero), else raise ValueError naming the config key."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{key} must be {bound}, got {value!r}")
    return value
