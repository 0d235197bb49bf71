"""SRDataModule: HQ crops from CPU workers, degraded into LQ/HQ pairs on the device.

Dataset workers do the cheap per-image work (decode, crop, flip, draw degradation parameters);
`on_after_batch_transfer` runs the batched degradation on the device under no-grad, so a GPU never waits on the
workers for the heavy part. Batches hold `gt` (B, 3, H, W) and `lq` (B, 3, H/scale, W/scale) in [0, 1] and `index`;
with USM (`degradation.usm.enabled`) also `gt_usm`, the sharpened `gt` that `lq` is made from. The loaders' batches
also carry `image_index` (the source image of each crop), counted by `BrokenImages` before the transfer.

Resume is exact: the training loader is checkpointed by Lightning (`ResumableDataLoader.state_dict`: epoch and batches
consumed), every sample is a function of (seed, epoch, index), and no loader draws from the global RNGs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from d3sr.data.datasets import BrokenImages, SRSamples


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


class _SkipFirst:
    """The batches of a batch sampler after the first `count`, once: index lists only, no image is read for them."""

    def __init__(self, batches: Iterable[list[int]], count: int) -> None:
        self.batches, self.count = batches, count

    def __len__(self) -> int:
        return len(self.batches)  # the epoch's length: Lightning counts the skipped batches as already fetched

    def __iter__(self) -> Iterator[list[int]]:
        count, self.count = self.count, 0
        return itertools.islice(iter(self.batches), count, None)


def set_sampler_epoch(loader: DataLoader, epoch: int) -> None:
    """Call `set_epoch(epoch)` on the loader's sampler and its batch sampler's sampler (each once) where they have it.

    A DistributedSampler (and our own samplers) shuffle by epoch; Lightning calls the same public hook each epoch.
    """
    samplers = {id(s): s for s in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)) if s is not None}
    for sampler in samplers.values():
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)


class ResumableDataLoader(DataLoader):
    """A DataLoader that resumes mid-epoch: Lightning stores its `state_dict` in checkpoints and loads it on resume.

    State: the sampler's epoch and the batches of it already consumed. After `load_state_dict` the next iteration sets
    the sampler's epoch (before any worker prefetches; Lightning's own `set_epoch` comes after the iterator exists) and
    skips the consumed batches' indices. Lightning's fetcher does not prefetch from a loader with a length, so the
    batches handed out are the batches trained on. The skip is applied to the batch sampler, so under DDP each rank
    skips its own shard's batches.
    """

    _skip = 0  # batches to skip at the next iteration (set by load_state_dict)
    _consumed = 0  # batches handed out in the current epoch

    def _epoch(self) -> int:
        return int(getattr(self.batch_sampler.sampler, "epoch", 0))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch(), "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved after the last batch of an epoch: the next one starts from its beginning
            epoch, batches = epoch + 1, 0
        set_sampler_epoch(self, epoch)
        self._skip = batches

    @property
    def _index_sampler(self):
        # torch's DataLoader iterators draw their batches of indices from `_index_sampler`.
        batches = super()._index_sampler
        return _SkipFirst(batches, self._skip) if self._skip else batches

    def __iter__(self) -> Iterator:
        self._consumed = self._skip
        iterator = super().__iter__()
        self._skip = 0
        for batch in iterator:
            self._consumed += 1
            yield batch


class SRDataModule(L.LightningDataModule):
    """Train/val HQ sources + a degradation → batches {'gt', 'lq', 'index'} (+ 'gt_usm' with USM) on the device.

    train, val: HQ sources (ImageFiles, EmbeddedPhotos, ...) returning (3, H, W) in [0, 1]; val may be None.
    degradation: an object with `sample(rng)` (CPU, per image) and `__call__(batch)` (device, batched).
    min_image_size: training images whose shorter side is below this are broken (null: smaller images are padded).
    max_broken_fraction: broken training images (unreadable or too small) are skipped and listed once per epoch; the
    run stops once more than this fraction of them is broken.
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
        min_image_size: int | None = None,
        max_broken_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.degradation = degradation
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.train_set = SRSamples(train, crop_size, flip, crops_per_image, degradation.sample, seed,
                                   min_size=min_image_size)  # fmt: skip
        self.train_set.first_usable()  # a training set with no usable image stops here, not in a loader worker
        self.broken = BrokenImages(self.train_set, max_broken_fraction)
        self._reported_epoch: int | None = None
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

    def _loader(
        self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool, cls: type = DataLoader
    ) -> DataLoader:
        # A loader's own generator seeds its workers, so creating an iterator draws nothing from the global RNG (the
        # stream behind the discriminator's t and ε, restored on resume).
        return cls(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers, drop_last=drop_last,
            pin_memory=self.pin_memory and torch.cuda.is_available(), persistent_workers=False,
            generator=torch.Generator().manual_seed(self.seed),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(len(self.train_set), self.seed, shuffle=True)
        return self._loader(EpochIndexed(self.train_set), self.batch_size, sampler, True, ResumableDataLoader)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, None, drop_last=False)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count the broken images a training batch skipped (on the host, before the transfer: no device sync)."""
        if self.trainer is not None and self.trainer.training and "image_index" in batch:
            epoch = self.trainer.current_epoch
            if self._reported_epoch is not None and epoch != self._reported_epoch:
                self.broken.report(self._reported_epoch)  # the first batch of a new epoch: report the last one
            self._reported_epoch = epoch
            self.broken.add(batch["index"], batch["image_index"])
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Degrade the HQ batch on its device (no-grad); `image_index` has been counted and is dropped."""
        batch = {key: value for key, value in batch.items() if key != "image_index"}
        with torch.no_grad():
            return self.degradation(batch)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self._reported_epoch is not None:
            self.broken.report(self._reported_epoch)  # the last (often partial) epoch
            self._reported_epoch = None
