"""SRDataModule: HQ crops from CPU workers, degraded into LQ/HQ pairs on the device.

Dataset workers do the cheap per-image work (decode, crop, flip, draw degradation parameters);
`on_after_batch_transfer` runs the batched degradation on the device under no-grad, so a GPU never waits on the
workers for the heavy part. Batches hold `gt` (B, 3, H, W) and `lq` (B, 3, H/scale, W/scale) in [0, 1] and `index`;
with USM (`degradation.usm.enabled`) also `gt_usm`, the sharpened `gt` that `lq` is made from.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from d3sr.data.datasets import SRSamples


class EpochSeededSampler(Sampler):
    """Shuffles with `default_rng([seed, epoch])` and yields (index, epoch) so samples know their epoch.

    Lightning calls `set_epoch` at each epoch (and wraps this sampler for distributed training), so the order and
    every per-sample draw are reproducible whatever the number of workers.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.size) if self.shuffle else range(self.size)
        )
        return iter([(int(i), self.epoch) for i in order])


class EpochIndexed(Dataset):
    """Adapts SRSamples to (index, epoch) keys from EpochSeededSampler."""

    def __init__(self, samples: SRSamples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        self.samples.epoch = epoch
        return self.samples[index]


class SRDataModule(L.LightningDataModule):
    """Train/val HQ sources + a degradation → batches {'gt', 'lq', 'index'} (+ 'gt_usm' with USM) on the device.

    train, val: HQ sources (ImageFiles, EmbeddedPhotos, ...) returning (3, H, W) in [0, 1]; val may be None.
    degradation: an object with `sample(rng)` (CPU, per image) and `__call__(batch)` (device, batched).
    """

    def __init__(
        self,
        train: Dataset,
        degradation,
        val: Dataset | None = None,
        crop_size: int = 512,
        val_crop_size: int | None = None,
        crops_per_image: int = 1,
        val_crops_per_image: int = 1,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        flip: bool = True,
        seed: int = 0,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.degradation = degradation
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.train_set = SRSamples(train, crop_size, flip, crops_per_image, degradation.sample, seed)
        self.val_set = None
        if val is not None:
            # Validation: fixed crops and degradations (epoch 0 always), so scores are comparable across epochs.
            self.val_set = SRSamples(
                val, val_crop_size or crop_size, False, val_crops_per_image, degradation.sample, seed + 1, center=True
            )
        self.seed = seed
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the training set ({len(self.train_set)} crops); "
                "lower it or raise data.crops_per_image"
            )

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers, drop_last=drop_last,
            pin_memory=self.pin_memory and torch.cuda.is_available(), persistent_workers=False,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(len(self.train_set), self.seed, shuffle=True)
        return self._loader(EpochIndexed(self.train_set), self.batch_size, sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, None, drop_last=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Degrade the HQ batch on its device (no-grad)."""
        with torch.no_grad():
            return self.degradation(batch)
