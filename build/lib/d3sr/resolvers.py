"""OmegaConf resolvers the configs use: `${optimizer_steps:...}` derives trainer.max_steps from `iterations`."""

from __future__ import annotations

from omegaconf import OmegaConf


def optimizer_steps(iterations: int, d_steps_per_g_step: int) -> int:
    """Number of optimizer steps Lightning counts for `iterations` generator updates (one per G and per D step)."""
    return int(iterations) * (1 + int(d_steps_per_g_step))


def register_resolvers() -> None:
    """Register the resolvers once per process (importing d3sr does it)."""
    if not OmegaConf.has_resolver("optimizer_steps"):
        OmegaConf.register_new_resolver("optimizer_steps", optimizer_steps)
