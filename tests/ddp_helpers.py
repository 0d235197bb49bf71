"""A callback the DDP test adds to a training run (`+callbacks.rank_weights=...`): each rank saves its weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class RankWeights(L.Callback):
    """Save every rank's trainable weights, before and after training, to `folder`/rank<N>.pt."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.start: dict[str, torch.Tensor] = {}

    @staticmethod
    def _trainable(module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = self._trainable(module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"start": self.start, "end": self._trainable(module), "world_size": trainer.world_size,
                  "strategy": type(trainer.strategy).__name__}  # fmt: skip
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")
