"""HQ image sources and the training-sample dataset (CPU side of the BasicSR-style split).

Sources return whole HQ images as float tensors (3, H, W) in [0, 1]. `SRSamples` turns a source into training
samples: a random crop (padded by reflection when the image is smaller), a random flip, and the per-image
degradation parameters drawn by the degradation's `sample(rng)`. Every random draw comes from
`numpy.random.default_rng([seed, epoch, index])`, so a sample does not depend on batch size, order or workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from d3sr.errors import ConfigError
from d3sr.images import EMBEDDED_HELD_OUT, EMBEDDED_TRAIN, IMAGE_EXTENSIONS, UNREADABLE, embedded_photo, read_image
from d3sr.options import check_choice

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """HQ images from folders (searched recursively) and/or text files listing paths, e.g. LSDIR + FFHQ[:10000].

    roots: folders; lists: text files with one path per line (relative paths are relative to the list file);
    limits: the maximum number of images (sorted order) per source, `null` for all: a list with one entry per source
    (roots, then lists), or a mapping from a source's name (its folder or file name, e.g. `FFHQ`, or its path) to a
    number. A mapping's names that match no source are ignored (logged), so replacing `roots` needs no new limits.
    """

    def __init__(
        self,
        roots: Sequence[str] = (),
        lists: Sequence[str] = (),
        limits: Sequence[int | None] | Mapping[str, int | None] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        sources = [("root", Path(r).expanduser()) for r in roots] + [("list", Path(p).expanduser()) for p in lists]
        if not sources:
            raise ValueError("data: ImageFiles needs at least one folder in `roots` or file list in `lists`")
        if isinstance(limits, Mapping):
            limits = _limits_by_name(limits, [source for _, source in sources])
        limits = list(limits) if limits is not None else [None] * len(sources)
        if len(limits) != len(sources):
            raise ValueError(f"data: `limits` has {len(limits)} entries for {len(sources)} sources (roots + lists)")
        exts = tuple(e.lower() for e in extensions)
        self.paths: list[Path] = []
        for (kind, source), limit in zip(sources, limits):
            if kind == "root":
                if not source.is_dir():
                    raise FileNotFoundError(f"data: image folder {source} does not exist")
                found = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
            else:
                if not source.is_file():
                    raise FileNotFoundError(f"data: file list {source} does not exist")
                lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
                found = [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
            if not found:
                raise FileNotFoundError(f"data: no images with extensions {exts} in {source}")
            self.paths.extend(found[:limit])
        self.names = [p.stem for p in self.paths]
        self._reported: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        """The image, or None (reported once) when the file cannot be decoded."""
        path = self.paths[index]
        try:
            return read_image(path)
        except UNREADABLE as error:
            if path not in self._reported:
                self._reported.add(path)
                log.warning("Skipping unreadable image %s (%s)", path, error)
            return None


def _limits_by_name(limits: Mapping[str, int | None], sources: list[Path]) -> list[int | None]:
    """One limit per source from {name or path: limit}; names that match no source are logged and ignored."""
    matched, out = set(), []
    for source in sources:
        keys = [k for k in limits if k in (source.name, str(source))]
        matched.update(keys)
        out.append(limits[keys[0]] if keys else None)
    unused = sorted(set(limits) - matched)
    if unused:
        log.info("data.train.limits: %s match no source (%s); ignored", ", ".join(unused),
                 ", ".join(map(str, sources)))  # fmt: skip
    return out


class EmbeddedPhotos(Dataset):
    """The photos shipped in scikit-image: training and validation with no data set on disk.

    names: 'train' (d3sr.images.EMBEDDED_TRAIN), 'held_out' (EMBEDDED_HELD_OUT, never trained on) or a list of
    skimage.data names.
    """

    def __init__(self, names: Sequence[str] | str = "train") -> None:
        if isinstance(names, str):
            splits = {"train": EMBEDDED_TRAIN, "held_out": EMBEDDED_HELD_OUT}
            names = splits[check_choice("data: EmbeddedPhotos names", names, splits)]
        if not names:
            raise ConfigError("data: EmbeddedPhotos needs at least one name")
        self.names = list(names)
        self._images = [embedded_photo(n) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._images[index]


def random_crop(image: torch.Tensor, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """size×size crop at a random (or, with rng None, central) position; reflect-pads images that are smaller."""
    _, height, width = image.shape
    pad_h, pad_w = max(size - height, 0), max(size - width, 0)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        image = F.pad(image[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        _, height, width = image.shape
    if rng is None:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return image[:, top : top + size, left : left + size]


class SRSamples(Dataset):
    """Training/validation samples {'gt': (3, S, S) in [0, 1], 'index', **degradation params} from a source.

    crops_per_image repeats each source image (useful for a handful of large photos); `center=True` takes central
    crops (first copy) and seeded random ones after; unreadable images are replaced by the next readable one.
    """

    def __init__(
        self,
        source: Dataset,
        crop_size: int = 512,
        flip: bool = True,
        crops_per_image: int = 1,
        sample_degradation: Callable[[np.random.Generator], dict] | None = None,
        seed: int = 0,
        center: bool = False,
    ) -> None:
        if crop_size <= 0 or crop_size % 8:
            raise ValueError(f"data.crop_size must be a positive multiple of 8, got {crop_size}")
        if crops_per_image < 1:
            raise ValueError(f"data.crops_per_image must be >= 1, got {crops_per_image}")
        self.source, self.crop_size, self.flip = source, crop_size, flip
        self.crops_per_image, self.seed, self.center = crops_per_image, seed, center
        self.sample_degradation = sample_degradation
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source) * self.crops_per_image

    def rng(self, index: int) -> np.random.Generator:
        """The generator every random draw of sample `index` in the current epoch comes from."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        image, source_index = None, index // self.crops_per_image
        for offset in range(len(self.source)):
            image = self.source[(source_index + offset) % len(self.source)]
            if image is not None:
                break
        if image is None:
            raise RuntimeError("data: no readable image in the data set")
        central = self.center and index % self.crops_per_image == 0
        gt = random_crop(image, self.crop_size, None if central else rng)
        if self.flip and rng.random() < 0.5:
            gt = gt.flip(-1)
        sample = {"gt": gt.contiguous(), "index": index}
        if self.sample_degradation is not None:
            sample.update(self.sample_degradation(rng))
        return sample
