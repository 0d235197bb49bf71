"""Exponential moving average (EMA) of the generator's trainable weights, kept beside training, stored in checkpoints.

After every generator update: shadow ← decay·shadow + (1 − decay)·weight, over the generator's trainable tensors
(its LoRA, and the embedding when it is learnable). Only the generator is averaged: it is what inference uses, and
an averaged discriminator would not be trained against. Validation runs with the averaged weights (swapped in, then
back). Checkpoints carry them under checkpoint['ema'] = {'decay', 'updates', 'state_dict'} with the module's own
key names, so resume restores them and `python -m d3sr.export use_ema=true` exports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch

from d3sr.errors import ConfigError

if TYPE_CHECKING:
    from d3sr.models import D3SRModule

CHECKPOINT_KEY = "ema"


class EMA(L.Callback):
    """EMA of the generator's trainable weights; `decay=None` turns it off (the default in callbacks/default.yaml)."""

    def __init__(self, decay: float | None = None) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1) or null (off), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self._last_iteration = -1
        self._stashed: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _weights(pl_module: D3SRModule) -> dict[str, torch.Tensor]:
        """The averaged tensors: the generator's trainable parameters, by their names in the module's state_dict."""
        return {f"generator.{n}": p for n, p in pl_module.generator.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: L.Trainer, pl_module: D3SRModule) -> None:
        if self.decay is not None and self.shadow is None:  # not restored from a checkpoint
            self.shadow = {k: v.detach().float().clone() for k, v in self._weights(pl_module).items()}
        self._last_iteration = pl_module.iteration

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: D3SRModule, outputs, batch, batch_idx: int) -> None:
        # Average once per generator update (not per micro-batch under gradient accumulation).
        if self.shadow is None or pl_module.iteration == self._last_iteration:
            return
        self._last_iteration = pl_module.iteration
        for name, weight in self._weights(pl_module).items():
            self.shadow[name].lerp_(weight.detach().float(), 1.0 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def on_validation_start(self, trainer: L.Trainer, pl_module: D3SRModule) -> None:
        # Validate the averaged weights; the trained ones are put back when validation ends.
        if self.shadow is None or trainer.sanity_checking:
            return
        weights = self._weights(pl_module)
        self._stashed = {k: v.detach().clone() for k, v in weights.items()}
        for name, weight in weights.items():
            weight.copy_(self.shadow[name])

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, pl_module: D3SRModule) -> None:
        if self._stashed is None:
            return
        for name, weight in self._weights(pl_module).items():
            weight.copy_(self._stashed[name])
        self._stashed = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: D3SRModule, checkpoint: dict) -> None:
        if self.shadow is not None:
            state = {k: v.detach().cpu().clone() for k, v in self.shadow.items()}
            checkpoint[CHECKPOINT_KEY] = {"decay": self.decay, "updates": self.updates, "state_dict": state}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: D3SRModule, checkpoint: dict) -> None:
        if self.decay is None or CHECKPOINT_KEY not in checkpoint:
            return
        device = next(pl_module.generator.parameters()).device
        stored = checkpoint[CHECKPOINT_KEY]
        self.shadow = {k: v.to(device).float() for k, v in stored["state_dict"].items()}
        self.updates = int(stored.get("updates", 0))
