"""The global random states of a process (torch CPU and CUDA, numpy, Python), for exact resume.

A resumed run must draw the same t, ε and posterior samples as an uninterrupted one, so the checkpoint holds every
process's global RNG states and the resumed run sets them back. Only public calls of torch, numpy and `random` are
used. numpy's state is stored as a tensor and plain numbers, so that checkpoints load with `weights_only=True`.
The layout ({"torch", "torch.cuda", "numpy", "python"}) is the one checkpoints written by earlier versions hold.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def collect_rng_states() -> dict[str, Any]:
    """This process's global RNG states: torch (CPU), torch.cuda (one per device, [] without CUDA), numpy, Python."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "python": (version, state, gauss),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Set this process's global RNG states from `collect_rng_states()`'s dict.

    The CUDA states are set only when this process sees as many CUDA devices as they were saved from.
    """
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, position, has_gauss, cached = states["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), int(position), int(has_gauss), float(cached)))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


def rng_states_of_every_rank() -> list[dict[str, Any]]:
    """`collect_rng_states()` of each process, in rank order (one entry without torch.distributed)."""
    states = collect_rng_states()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, states)
        return gathered
    return [states]
