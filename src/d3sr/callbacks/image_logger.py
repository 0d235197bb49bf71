"""Logs an LQ (bicubic ×4) | SR | GT image grid of the current training batch to TensorBoard every N iterations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from d3sr.images import upsample_lq

if TYPE_CHECKING:
    from d3sr.models import D3SRModule


class ImageGridLogger(L.Callback):
    """Every `every_n_iterations` generator updates, logs rows LQ | SR | GT for up to `max_images` samples."""

    def __init__(self, every_n_iterations: int = 500, max_images: int = 4) -> None:
        if every_n_iterations < 1 or max_images < 1:
            raise ValueError("callbacks.image_logger: every_n_iterations and max_images must be >= 1")
        self.every_n_iterations, self.max_images = every_n_iterations, max_images
        self._last_logged = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: D3SRModule, outputs, batch: dict, batch_idx: int
    ) -> None:
        iteration = pl_module.iteration
        if iteration % self.every_n_iterations or iteration == self._last_logged or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        self._last_logged = iteration
        lq, gt = batch["lq"][: self.max_images], batch["gt"][: self.max_images].float()
        was_training = pl_module.training
        pl_module.eval()
        sr = pl_module.super_resolve(lq)
        pl_module.train(was_training)
        rows = torch.stack([upsample_lq(lq)[..., : gt.shape[-2], : gt.shape[-1]], sr, gt], dim=1).flatten(0, 1)
        grid = make_grid(rows.clamp(0, 1).cpu(), nrow=3, padding=2)
        for logger in loggers:
            logger.experiment.add_image("train/lq_sr_gt", grid, global_step=iteration)
